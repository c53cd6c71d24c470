"""Data larger than memory: fit (one epoch), predict and evaluate on a memory-mapped X of n
MNIST-shaped rows (float32, 784 values, 19 % nonzero like MNIST), each n in a fresh process.
Reports the process's own memory (peak RssAnon, not the file's cached pages) and the seconds
of each, against n. The files are written once into --folder (5,000,000 rows: 15.7 GB).

    python bench/large_memmap.py --folder /tmp/large [--sizes 100000,1000000,5000000]
        [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = """
import json, sys, threading, time
import numpy as np
from fastmlp import Network

def anon():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon")) * 1024

peak = [0]
def watch():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.01)
threading.Thread(target=watch, daemon=True).start()
X = np.load(sys.argv[1], mmap_mode="r")
y = np.load(sys.argv[2], mmap_mode="r")
n = int(sys.argv[3])
X, y = X[:n], y[:n]
net = Network([784, 300, 10], seed=0)
net.fit(X[:512], y[:512], epochs=1, batch_size=256, verbose=0)  # compile or load first
net.evaluate(X[:512], y[:512])
time.sleep(0.05)
base = anon()
peak[0] = base
out = {"n": n, "baseline_anon_mb": base / 1e6}
for what, call in (("fit", lambda: net.fit(X, y, epochs=1, batch_size=256, verbose=0)),
                   ("predict", lambda: net.predict(X)),
                   ("evaluate", lambda: net.evaluate(X, y))):
    time.sleep(0.05)
    start = peak[0] = anon()
    t0 = time.perf_counter()
    result = call()
    out[what + "_s"] = time.perf_counter() - t0
    time.sleep(0.05)
    out[what + "_peak_anon_growth_mb"] = (peak[0] - start) / 1e6
    del result
print(json.dumps(out))
"""


def make_files(folder, n):
    x_path, y_path = os.path.join(folder, "X.npy"), os.path.join(folder, "y.npy")
    if os.path.exists(x_path) and np.load(x_path, mmap_mode="r").shape[0] >= n:
        return x_path, y_path
    os.makedirs(folder, exist_ok=True)
    X = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(n, 784))
    rng = np.random.default_rng(0)
    for start in range(0, n, 100_000):
        block = rng.random((min(100_000, n - start), 784), dtype=np.float32)
        block[block < 0.81] = 0
        X[start:start + len(block)] = block
    X.flush()
    del X
    np.save(y_path, rng.integers(0, 10, n))
    return x_path, y_path


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    x_path, y_path = make_files(args.folder, max(sizes))
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, "-c", CHILD, x_path, y_path, str(n)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"X": "float32 (n, 784), 19 % nonzero, np.load(mmap_mode='r')",
                       "network": "784-300-10, batch 256", "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
