"""Slow, obvious references for the Keras monitor: eager GradientTape on an explicit MLP."""

from __future__ import annotations

import math

import numpy as np

SAT = {
    "sigmoid": (0.5 - math.sqrt(0.2475), 0.5 + math.sqrt(0.2475)),
    "tanh": (-(0.99**0.5), 0.99**0.5),
}


def mlp(acts=("sigmoid", "relu", "tanh", None), width=16, n_in=5, lr=0.1, seed=0):
    """A Dense-only Sequential, compiled with SGD and mse."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((n_in,))]
    layers += [keras.layers.Dense(width, activation=a) for a in acts[:-1]]
    layers.append(keras.layers.Dense(1, activation=acts[-1]))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def reference(model, x, y):
    """Per layer of a Dense-only Sequential (mse loss): gradients, activations and dL/dz."""
    import tensorflow as tf

    dense = model.layers
    ws = [(tf.constant(d.kernel.numpy()), tf.constant(d.bias.numpy())) for d in dense]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t for pair in ws for t in pair])
        h, zs, acts, inputs = tf.constant(x), [], [], []
        for d, (k, b) in zip(dense, ws, strict=True):
            inputs.append(h)
            z = h @ k + b
            tape.watch(z)
            zs.append(z)
            h = d.activation(z)
            acts.append(h)
        loss = tf.reduce_mean(tf.square(h - y))
    out = []
    for (k, b), z, a, xin, d in zip(ws, zs, acts, inputs, dense, strict=True):
        gk, gb, gz = tape.gradient(loss, [k, b, z])
        gz, xin, a = gz.numpy().astype(np.float64), xin.numpy().astype(np.float64), a.numpy()
        name = d.activation.__name__
        row = {
            "kernel": gk.numpy().astype(np.float64),
            "bias": gb.numpy().astype(np.float64),
            "act_mean": a.astype(np.float64).mean(),
            "act_std": a.astype(np.float64).std(),
            "act_rms": np.sqrt(np.mean(np.square(a.astype(np.float64)))),
            "backward_norm": np.linalg.norm(gz),
            "pe_grad_rms": np.sqrt(np.mean(np.sum(gz**2, 1) * np.sum(xin**2, 1))),
            "activation": "" if name == "linear" else name,
            "saturated_frac": math.nan,
            "dead_frac": math.nan,
        }
        if name in SAT:
            lo, hi = SAT[name]
            row["saturated_frac"] = np.mean((a < lo) | (a > hi))
        if name == "relu":
            row["dead_frac"] = 1 - np.mean(a.max(axis=0) > 0)
        out.append(row)
    return out
