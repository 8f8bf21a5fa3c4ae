"""Import boundaries, and the same design on Keras's torch backend (in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")


def _run(code: str, backend: str = "tensorflow") -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_import_gradprobe_imports_neither_torch_nor_tensorflow():
    r = _run("""
        import sys, gradprobe
        print(sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_import_gradprobe_keras_never_imports_torch():
    r = _run("""
        import sys, gradprobe, gradprobe.keras, gradprobe.experiments.keras_backend
        print("torch" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


PARITY = """
    import json, numpy as np, keras
    from gradprobe.keras import GradientMonitor
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    w = rng.normal(size=(5, 16)).astype("float32"), rng.normal(size=(16, 16)).astype("float32") / 4
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="sigmoid"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.set_weights([w[0], np.zeros(16), w[1], np.zeros(16), w[1][:, :1], np.zeros(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    mon = GradientMonitor(every=2, per_example=True)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, callbacks=[mon], verbose=0)
    cols = ["grad_norm", "grad_mean", "grad_max_abs", "weight_norm", "update_norm", "pe_grad_rms"]
    lcols = ["act_mean", "act_std", "saturated_frac", "dead_frac", "backward_norm"]
    p, l = mon.to_pandas(), mon.to_pandas("layers")
    print(json.dumps({"steps": sorted(set(p["step"].tolist())), "p": p[cols].values.tolist(),
                      "l": l[lcols].values.tolist(), "depth": p["depth"].tolist()}))
"""


@pytest.mark.slow
def test_torch_backend_of_keras_gives_the_tensorflow_numbers():
    pytest.importorskip("torch", reason="Keras's torch backend needs torch")
    out = {}
    for backend in ("tensorflow", "torch"):
        r = _run(PARITY, backend)
        assert r.returncode == 0, r.stderr[-2000:]
        out[backend] = json.loads(r.stdout.strip().splitlines()[-1])
    tf_, th = out["tensorflow"], out["torch"]
    assert tf_["steps"] == th["steps"] == [0, 2]
    assert tf_["depth"] == th["depth"]
    np.testing.assert_allclose(np.array(th["p"], float), np.array(tf_["p"], float), rtol=1e-5)
    np.testing.assert_allclose(np.array(th["l"], float), np.array(tf_["l"], float), rtol=1e-5)
