"""Initial weights drawn with numpy, so every framework starts from the very same numbers.

Kernels have Keras's shape ``(fan_in, fan_out)``; the torch builder transposes them. Each
scheme's variance (``fan_in`` = inputs, ``fan_out`` = outputs of the layer):

================  =====================================================  ===================
glorot_uniform    U(-l, l), l = sqrt(6 / (fan_in + fan_out))              Keras default
glorot_normal     truncated N, std sqrt(2 / (fan_in + fan_out))
he_uniform        U(-l, l), l = sqrt(6 / fan_in)
he_normal         truncated N, std sqrt(2 / fan_in)
lecun_normal      truncated N, std sqrt(1 / fan_in)
orthogonal        a random orthogonal matrix (gain 1)
torch_default     U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias  PyTorch's nn.Linear
================  =====================================================  ===================

Biases are zero except under ``torch_default``. Truncated normals cut at two standard
deviations and rescale by 1/0.87962566 as Keras does, so the variance is the one named.
"""

from __future__ import annotations

import numpy as np

from gradprobe.errors import UnknownChoiceError
from gradprobe.theory.init import INITS  # one list of schemes for drawing and for predicting

__all__ = ["INITS", "bias", "kernel", "mlp_weights"]
_TRUNC = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def _truncated(rng: np.random.Generator, std: float, shape: tuple[int, int]) -> np.ndarray:
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * (std / _TRUNC)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


def kernel(rng: np.random.Generator, init: str, fan_in: int, fan_out: int) -> np.ndarray:
    """A ``(fan_in, fan_out)`` float32 kernel drawn from ``rng`` by scheme ``init``."""
    shape = (fan_in, fan_out)
    if init == "glorot_uniform":
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-lim, lim, shape)
    elif init == "glorot_normal":
        w = _truncated(rng, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif init == "he_uniform":
        lim = np.sqrt(6.0 / fan_in)
        w = rng.uniform(-lim, lim, shape)
    elif init == "he_normal":
        w = _truncated(rng, np.sqrt(2.0 / fan_in), shape)
    elif init == "lecun_normal":
        w = _truncated(rng, np.sqrt(1.0 / fan_in), shape)
    elif init == "orthogonal":
        w = _orthogonal(rng, shape)
    elif init == "torch_default":
        lim = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-lim, lim, shape)
    else:
        raise UnknownChoiceError("init", init, INITS)
    return w.astype(np.float32)


def bias(rng: np.random.Generator, init: str, fan_in: int, fan_out: int) -> np.ndarray:
    """The layer's bias: zeros, or U(+-1/sqrt(fan_in)) under ``torch_default``."""
    if init == "torch_default":
        lim = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-lim, lim, fan_out).astype(np.float32)
    return np.zeros(fan_out, dtype=np.float32)


def mlp_weights(seed: int, widths: list[int], init: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each layer of an MLP with ``widths`` = [inputs, hidden..., outputs]."""
    if init not in INITS:
        raise UnknownChoiceError("init", init, INITS)
    rng = np.random.default_rng(seed)
    out = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        out.append((kernel(rng, init, fan_in, fan_out), bias(rng, init, fan_in, fan_out)))
    return out
