# ruff: noqa
# fmt: off
"""The seed notebook "Vanishing Gradient in Deep Learning" (California Housing), as it stands.

Changes to the notebook's code, each marked ``# gradprobe:``:
1. ``tf.keras.losses.mean_squared_error`` no longer exists in Keras 3; ``mse`` is the same function.
2. The notebook never trains; a real ``fit`` on the same 512 rows and 5 epochs, with a
   :class:`gradprobe.keras.GradientMonitor`, records the gradients fit applies.
3. At the end the monitors are saved as a run directory (records and plots), for
   ``gradprobe plot`` and ``gradprobe.load_run``.

Run: ``python examples/seeds/seed_california_housing.py [OUT_DIR]`` (California Housing from
scikit-learn's cache; set ``SCIKIT_LEARN_DATA`` offline). ``plt.show()`` does nothing under a
non-interactive matplotlib backend (``MPLBACKEND=Agg``).
"""

import sys

import gradprobe.keras  # gradprobe:

# 🧠 Vanishing Gradient in Deep Learning (Practical Example)
# ## 🔍 Step 1: Load Dataset
from sklearn.datasets import fetch_california_housing
from sklearn.preprocessing import StandardScaler
from sklearn.model_selection import train_test_split
import numpy as np
import tensorflow as tf
import matplotlib.pyplot as plt

# Load dataset
data = fetch_california_housing()
X, y = data.data, data.target

# Preprocess
scaler = StandardScaler()
X_scaled = scaler.fit_transform(X)
y = y.reshape(-1, 1)  # ensure it's column vector

X_train, X_test, y_train, y_test = train_test_split(X_scaled, y, test_size=0.2, random_state=42)

# ## 🏗️ Step 2: Build Deep Model with Sigmoid (to show vanishing gradient)
model_sigmoid = tf.keras.Sequential()
model_sigmoid.add(tf.keras.Input(shape=(X_train.shape[1],)))
for _ in range(10):
    model_sigmoid.add(tf.keras.layers.Dense(64, activation='sigmoid'))
model_sigmoid.add(tf.keras.layers.Dense(1))
model_sigmoid.compile(optimizer='sgd', loss='mse')
model_sigmoid.summary()

# ## 🎯 Step 3: Train Model and Log Gradients using GradientTape
epochs = 5
all_gradients = []

for epoch in range(epochs):
    with tf.GradientTape() as tape:
        preds = model_sigmoid(X_train[:512], training=True)
        loss = tf.keras.losses.mse(y_train[:512], preds)  # gradprobe: was mean_squared_error

    grads = tape.gradient(loss, model_sigmoid.trainable_variables)
    grad_norms = [tf.norm(g).numpy() if g is not None else 0 for g in grads if len(g.shape) > 1]
    all_gradients.append(grad_norms)

monitor_sigmoid = gradprobe.keras.GradientMonitor()  # gradprobe: a real training call
model_sigmoid.fit(X_train[:512], y_train[:512], epochs=epochs, batch_size=512,
                  callbacks=[monitor_sigmoid], verbose=0)

# ## 📉 Step 4: Visualize Gradient Norms to Detect Vanishing
plt.figure(figsize=(10,5))
for i, norms in enumerate(all_gradients):
    plt.plot(norms, label=f"Epoch {i+1}", marker='o')

plt.title("Gradient Norms across Layers (Sigmoid)")
plt.xlabel("Layer Index (from output to input)")
plt.ylabel("Gradient L2 Norm")
plt.legend()
plt.grid(True)
plt.show()

# ## ⚡ Step 5: Build and Compare with ReLU Model
model_relu = tf.keras.Sequential()
model_relu.add(tf.keras.Input(shape=(X_train.shape[1],)))
for _ in range(10):
    model_relu.add(tf.keras.layers.Dense(64, activation='relu'))
model_relu.add(tf.keras.layers.Dense(1))
model_relu.compile(optimizer='sgd', loss='mse')

all_gradients_relu = []
for epoch in range(epochs):
    with tf.GradientTape() as tape:
        preds = model_relu(X_train[:512], training=True)
        loss = tf.keras.losses.mse(y_train[:512], preds)  # gradprobe: was mean_squared_error

    grads = tape.gradient(loss, model_relu.trainable_variables)
    grad_norms = [tf.norm(g).numpy() if g is not None else 0 for g in grads if len(g.shape) > 1]
    all_gradients_relu.append(grad_norms)

monitor_relu = gradprobe.keras.GradientMonitor()  # gradprobe: a real training call
model_relu.fit(X_train[:512], y_train[:512], epochs=epochs, batch_size=512,
               callbacks=[monitor_relu], verbose=0)

plt.figure(figsize=(10,5))
for i, norms in enumerate(all_gradients_relu):
    plt.plot(norms, label=f"Epoch {i+1}", marker='x')

plt.title("Gradient Norms across Layers (ReLU)")
plt.xlabel("Layer Index (from output to input)")
plt.ylabel("Gradient L2 Norm")
plt.legend()
plt.grid(True)
plt.show()

# gradprobe: the run directory (records, summary and plots)
out = sys.argv[1] if len(sys.argv) > 1 else "runs/seed-california"
run = gradprobe.keras.save_run({"sigmoid": monitor_sigmoid, "relu": monitor_relu}, out,
                               experiment="california")
print(f"gradprobe run directory: {run.path}")
