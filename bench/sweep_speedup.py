"""How much faster a sweep of small trials runs on 2 workers (a local pool of processes, or
this process's threads) than the same trials one after another (backend="sequential", with one
and with two Numba threads per trial), in one run, the JIT cache warm for all. The backends
alternate over rounds, so that a slow spell of a shared machine slows one round, not one
backend; the first local sweep starts the pool's workers, the later ones reuse them.

    FASTMLP_DATA=../shared/data/mnist python bench/sweep_speedup.py [rounds]
"""
import json
import statistics
import sys
import time

from fastmlp.bench import machine
from fastmlp.datasets import load_mnist
from fastmlp.sweep import sweep

rounds = int(sys.argv[1]) if sys.argv[1:] else 3
(X, y), (Xt, yt) = load_mnist()
data = ((X, y), (Xt, yt))
grid = {"hidden": [(64,), (128,)], "seed": [0, 1, 2, 3]}
base = {"epochs": 3, "batch_size": 64, "optimizer": "adam"}
sweep({"hidden": [(16,)], "seed": [0]}, data=data, base=dict(base, epochs=1),
      backend="sequential", log=lambda message: None)  # warm the JIT cache and this process
seconds, per_round = {}, []
runs = (("sequential", 1, 1), ("sequential", 1, 2), ("local", 2, 1), ("threads", 2, 1))
for _ in range(rounds):
    this_round = {}
    for backend, n_jobs, threads in runs:
        name = backend if backend != "sequential" else f"sequential-{threads}-thread"
        if backend == "local":
            name = "local-new-workers" if "local-new-workers" not in seconds else "local-reused"
        t0 = time.perf_counter()
        records = sweep(grid, data=data, base=base, backend=backend, n_jobs=n_jobs,
                        threads=threads, log=lambda message: None)
        seconds.setdefault(name, []).append(time.perf_counter() - t0)
        this_round[backend] = min(this_round.get(backend, 1e9), seconds[name][-1])
        assert len(records) == 8
    per_round.append({b: this_round["sequential"] / this_round[b] for b in ("local", "threads")})
sequential = min(min(seconds["sequential-1-thread"]), min(seconds["sequential-2-thread"]))
result = {"machine": machine(), "trials": 8, "grid": {"hidden": [64, 128], "seed": [0, 1, 2, 3]},
          "base": base, "train_images": len(y), "rounds": rounds, "seconds": seconds,
          "speedup_best": {name: sequential / min(seconds[name])
                           for name in ("local-new-workers", "local-reused", "threads")
                           if name in seconds},
          "speedup_per_round": per_round,
          "speedup_median_round": {b: statistics.median(r[b] for r in per_round)
                                   for b in ("local", "threads")}}
print(json.dumps(result))
