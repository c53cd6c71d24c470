"""Best and median epoch seconds of 784-300-10 on MNIST (SGD 0.1/0.9, float32) at batch 10, 64
and 256, through Network.fit: run it alternately with two installs of fastmlp (say, the code
before and after a change, each in its own virtual environment) to compare them in one session.

    FASTMLP_DATA=../shared/data/mnist python bench/mlp_epoch_ab.py
"""
import json

import numpy as np

from fastmlp import Network, load_mnist

(X, y), _ = load_mnist()
out = {}
for batch in (10, 64, 256):
    net = Network([784, 300, 10], seed=0)
    h = net.fit(X, y, epochs=5 if batch > 10 else 3, batch_size=batch, verbose=0)
    t = h.history["epoch_time"][1:]  # the first epoch compiles or loads the JIT cache
    out[batch] = {"best": min(t), "median": float(np.median(t))}
print(json.dumps(out))
