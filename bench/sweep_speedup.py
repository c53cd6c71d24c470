"""How much faster a sweep of small trials runs on 2 workers (a local pool of processes, or
this process's threads) than the same trials one after another (backend="sequential", with one
and with two Numba threads per trial), in one run, the JIT cache warm for all.

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
runs = (("sequential", 1, 1), ("sequential", 1, 2), ("local", 2, 1), ("threads", 2, 1))
for backend, n_jobs, threads in runs + runs:
    name = backend if backend != "sequential" else f"sequential-{threads}-thread"
    if backend == "local":  # the first local sweep starts its workers, later ones reuse them
        name = "local-new-workers" if "local-new-workers" not in seconds else "local-reused"
    t0 = time.perf_counter()
    records = sweep(grid, data=data, base=base, backend=backend, n_jobs=n_jobs, threads=threads,
                    log=lambda message: None)
    seconds.setdefault(name, []).append(time.perf_counter() - t0)
    assert len(records) == 8
sequential = min(min(seconds["sequential-1-thread"]), min(seconds["sequential-2-thread"]))
result = {"trials": 8, "grid": {"hidden": [64, 128], "seed": [0, 1, 2, 3]}, "base": base,
          "train_images": len(y), "seconds": seconds,
          "speedup_best": {name: sequential / min(seconds[name])
                           for name in ("local-new-workers", "local-reused", "threads")}}
print(json.dumps(result))
