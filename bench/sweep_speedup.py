"""How much faster a sweep of small trials runs on a local pool of 2 workers than the same
trials one after another (backend="sequential"), in one run, the JIT cache warm for both.

    FASTMLP_DATA=../shared/data/mnist python bench/sweep_speedup.py
"""
import json
import time

from fastmlp.datasets import load_mnist
from fastmlp.sweep import sweep

(X, y), (Xt, yt) = load_mnist()
data = ((X, y), (Xt, yt))
grid = {"hidden": [(64,), (128,)], "seed": [0, 1, 2, 3]}
base = {"epochs": 3, "batch_size": 64, "optimizer": "adam"}
sweep({"hidden": [(16,)], "seed": [0]}, data=data, base=dict(base, epochs=1),
      backend="sequential")  # warm the JIT cache and this process
seconds = {}
for backend, n_jobs in (("sequential", 1), ("local", 2), ("sequential", 1), ("local", 2)):
    t0 = time.perf_counter()
    records = sweep(grid, data=data, base=base, backend=backend, n_jobs=n_jobs,
                    log=lambda message: None)
    seconds.setdefault(backend, []).append(time.perf_counter() - t0)
    assert len(records) == 8
result = {"trials": 8, "grid": {"hidden": [64, 128], "seed": [0, 1, 2, 3]}, "base": base,
          "train_images": len(y), "seconds": seconds,
          "speedup_best": min(seconds["sequential"]) / min(seconds["local"])}
print(json.dumps(result))
