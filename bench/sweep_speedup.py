"""How much faster a sweep of small trials runs on 2 workers (a local pool of processes, or
this process's threads) than the same trials one after another (backend="sequential", with one
and with two Numba threads per trial), in one run, the JIT cache warm for all. The backends
alternate over rounds, so that a slow spell of a shared machine slows one round, not one
backend. Each round runs two local sweeps: the first on a new pool (its workers start, import
and load the JIT cache), the second on that pool's workers. ``epochs`` sets each trial's length
(3 by default: about 1.5 s a trial).

Each round also measures what the machine itself allows: the grid's largest trial run in one
process alone, then in two processes at once (each started, its data loaded and its JIT cache
warm before the clock starts; one Numba and one BLAS thread each, as a sweep's workers have).
Two cores give two such processes ``machine_scaling`` = 2 × alone ÷ the slower of the pair:
2.0 on two free cores, less where the two vCPUs share a physical core or the host is busy. A
sweep's speedup over the sequential trials cannot exceed it by much.

    FASTMLP_DATA=../shared/data/mnist python bench/sweep_speedup.py [rounds] [epochs]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastmlp.datasets import load_mnist
from fastmlp.sweep import _start_local_pool, estimated_work, expand, sweep
from harness import machine

rounds = int(sys.argv[1]) if sys.argv[1:] else 3
epochs = int(sys.argv[2]) if sys.argv[2:] else 3
(X, y), (Xt, yt) = load_mnist()
data = ((X, y), (Xt, yt))
grid = {"hidden": [(64,), (128,)], "seed": [0, 1, 2, 3]}
base = {"epochs": epochs, "batch_size": 64, "optimizer": "adam"}
sweep({"hidden": [(16,)], "seed": [0]}, data=data, base=dict(base, epochs=1),
      backend="sequential", log=lambda message: None)  # warm the JIT cache and this process
seconds, per_round = {}, []

LARGEST_TRIAL = max(expand(grid, base),  # the first of the longest: the grid's first seed
                    key=lambda trial: estimated_work(trial, X.shape[1], 10, len(y)))
TRIAL_IN_A_PROCESS = """
import json, sys, time
from pathlib import Path
from fastmlp.datasets import load_mnist
from fastmlp.sweep import run_trial
data = load_mnist()
folder, name, trial = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
run_trial(dict(trial, epochs=1), data)  # the JIT cache loaded, the pages read
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
t0 = time.perf_counter()
run_trial(trial, data)
print(time.perf_counter() - t0)
"""


def trials_in_processes(count):
    """Seconds each of ``count`` processes took for the same trial, run at once."""
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, "-c", TRIAL_IN_A_PROCESS, folder, str(k),
                                   json.dumps(LARGEST_TRIAL)], stdout=subprocess.PIPE, text=True,
                                  env=env)
                 for k in range(count)]
        while len(list(Path(folder).glob("ready-*"))) < count:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a trial process ended before it was ready")
            time.sleep(0.01)
        (Path(folder) / "go").touch()
        return [float(p.communicate()[0].split()[-1]) for p in procs]


scaling = []
runs = (("sequential", 1, 1), ("sequential", 1, 2), ("local-new-workers", 2, 1),
        ("local-reused", 2, 1), ("threads", 2, 1))
for _ in range(rounds):
    this_round = {}
    for name, n_jobs, threads in runs:
        backend = name.split("-")[0]
        name = name if backend != "sequential" else f"sequential-{threads}-thread"
        if name == "local-new-workers":
            _start_local_pool(n_jobs).shutdown(wait=True)  # the next sweep starts new workers
        t0 = time.perf_counter()
        records = sweep(grid, data=data, base=base, backend=backend, n_jobs=n_jobs,
                        threads=threads, log=lambda message: None)
        seconds.setdefault(name, []).append(time.perf_counter() - t0)
        key = name if backend == "local" else backend  # "sequential": the faster of two
        this_round[key] = min(this_round.get(key, 1e9), seconds[name][-1])
        assert len(records) == 8
    per_round.append({b: this_round["sequential"] / this_round[b]
                      for b in ("local-new-workers", "local-reused", "threads")})
    alone, pair = trials_in_processes(1), trials_in_processes(2)
    scaling.append({"alone": alone[0], "pair": pair, "machine_scaling": 2 * alone[0] / max(pair)})
sequential = min(min(seconds["sequential-1-thread"]), min(seconds["sequential-2-thread"]))
result = {"machine": machine(), "trials": 8, "grid": {"hidden": [64, 128], "seed": [0, 1, 2, 3]},
          "base": base, "train_images": len(y), "rounds": rounds, "seconds": seconds,
          "speedup_best": {name: sequential / min(seconds[name])
                           for name in ("local-new-workers", "local-reused", "threads")
                           if name in seconds},
          "speedup_per_round": per_round,
          "speedup_median_round": {b: statistics.median(r[b] for r in per_round)
                                   for b in ("local-new-workers", "local-reused", "threads")},
          "machine_scaling_per_round": scaling,
          "machine_scaling_best": max(r["machine_scaling"] for r in scaling),
          "machine_scaling_median_round": statistics.median(r["machine_scaling"] for r in scaling)}
print(json.dumps(result))
