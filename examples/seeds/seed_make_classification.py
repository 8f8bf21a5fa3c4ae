# ruff: noqa
# fmt: off
"""The seed notebook "Vanishing Gradient Problem" (make_classification), as it stands.

Changes to the notebook's code, each marked ``# gradprobe:``: a
:class:`gradprobe.keras.GradientMonitor` in each ``fit``, and at the end the monitors saved as a
run directory (records and plots) for ``gradprobe plot`` and ``gradprobe.load_run``.

Run: ``python examples/seeds/seed_make_classification.py [OUT_DIR]``.
"""

import sys

import gradprobe.keras  # gradprobe:

from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
import tensorflow
from tensorflow import keras
from tensorflow.keras import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.optimizers import Adam
import numpy as np

X,y=make_classification(n_samples=100,n_features=2,n_classes=2,n_redundant=0,n_repeated=0,n_clusters_per_class=1,random_state=2121)

# ### Having too many deep layers causes Vanishing gradient problem
test_nn=Sequential(
[Dense(8,activation="sigmoid",input_shape=(2,)),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(8,activation="sigmoid"),
Dense(1,activation="sigmoid")]
)
inital_wt=np.array(test_nn.weights[0])
X_train,X_test,y_train,y_test=train_test_split(X,y,random_state=2121)
optimizer=Adam(learning_rate=0.1)
test_nn.compile(    optimizer=optimizer,
    loss='binary_crossentropy',
    metrics=['accuracy'])
test_nn.summary()
monitor_deep = gradprobe.keras.GradientMonitor()  # gradprobe:
test_nn.fit(X_train,y_train,epochs=1,callbacks=[monitor_deep])  # gradprobe: callbacks
final_weigts=np.array(test_nn.weights[0])
lr=test_nn.optimizer.get_config()["learning_rate"]
gradient=(inital_wt-final_weigts)/lr
print(gradient)

# <h3>Solution 1: Reduce No of layers</h3>
test_nn=Sequential(
[Dense(8,activation="sigmoid",input_shape=(2,)),
Dense(8,activation="sigmoid"),
Dense(1,activation="sigmoid")]
)
inital_wt=np.array(test_nn.weights[0])
optimizer=Adam(learning_rate=0.1)
test_nn.compile(    optimizer=optimizer,
    loss='binary_crossentropy',
    metrics=['accuracy'])
monitor_shallow = gradprobe.keras.GradientMonitor()  # gradprobe:
test_nn.fit(X_train,y_train,epochs=1,callbacks=[monitor_shallow])  # gradprobe: callbacks
final_weigts=np.array(test_nn.weights[0])
diff=final_weigts-inital_wt
lr=test_nn.optimizer.get_config()["learning_rate"]
gradient=(inital_wt-final_weigts)/lr
print(gradient)

# ### Solution 2: Using Relu as activation function
test_nn=Sequential(
[Dense(8,activation="relu",input_shape=(2,)),
Dense(8,activation="relu"),
Dense(8,activation="relu"),
Dense(8,activation="relu"),
Dense(8,activation="relu"),
Dense(8,activation="relu"),
Dense(8,activation="relu"),
Dense(1,activation="sigmoid")]
)
inital_wt=np.array(test_nn.weights[0])
optimizer=Adam(learning_rate=0.1)
test_nn.compile(    optimizer=optimizer,
    loss='binary_crossentropy',
    metrics=['accuracy'])
monitor_relu = gradprobe.keras.GradientMonitor()  # gradprobe:
test_nn.fit(X_train,y_train,epochs=1,callbacks=[monitor_relu])  # gradprobe: callbacks
final_weigts=np.array(test_nn.weights[0])
lr=test_nn.optimizer.get_config()["learning_rate"]
gradient=(inital_wt-final_weigts)/lr
print(gradient)

# gradprobe: the run directory (records, summary and plots)
out = sys.argv[1] if len(sys.argv) > 1 else "runs/seed-make-classification"
monitors = {"deep-sigmoid": monitor_deep, "shallow-sigmoid": monitor_shallow,
            "deep-relu": monitor_relu}
run = gradprobe.keras.save_run(monitors, out, experiment="classification")
print(f"gradprobe run directory: {run.path}")
