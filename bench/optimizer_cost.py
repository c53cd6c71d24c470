"""Seconds per epoch of 784-H-10 on MNIST (and Fashion-MNIST) by optimizer and with dropout,
each configuration in its own process, alternating, medians: what each recipe ingredient costs
beside SGD with momentum.

    python bench/optimizer_cost.py --batch-sizes 128 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, statistics, sys
from fastmlp import Network
from fastmlp.datasets import load_idx_dataset
name, hidden, batch, optimizer, dropout = sys.argv[1:6]
(X, y), _ = load_idx_dataset(name, sys.argv[6], download=False)
net = Network([784, int(hidden), 10], seed=0, dropout=float(dropout))
kw = {} if optimizer == "momentum" else {"optimizer": optimizer}
h = net.fit(X, y, epochs=3, batch_size=int(batch), verbose=0, **kw)
print(json.dumps(statistics.median(h.history["epoch_time"][1:])))
"""

VARIANTS = [("momentum", 0.0), ("nesterov", 0.0), ("adam", 0.0), ("rmsprop", 0.0),
            ("adagrad", 0.0), ("momentum", 0.5)]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--hidden", default="300")
    p.add_argument("--batch-sizes", default="128")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    base = os.path.dirname(os.path.abspath(os.environ.get("FASTMLP_DATA", "data/mnist")))
    results = {}
    for name in args.datasets.split(","):
        for batch in args.batch_sizes.split(","):
            times = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for optimizer, dropout in VARIANTS:
                    out = subprocess.run([sys.executable, "-c", CHILD, name, args.hidden, batch,
                                          optimizer, str(dropout), os.path.join(base, name)],
                                         capture_output=True, text=True, check=True)
                    times[optimizer, dropout].append(json.loads(out.stdout.strip()))
            ref = statistics.median(times["momentum", 0.0])
            for (optimizer, dropout), t in times.items():
                med = statistics.median(t)
                key = f"{name} b{batch} {optimizer}" + (f" dropout {dropout}" if dropout else "")
                results[key] = med
                print(f"{key:<40}{med:8.3f} s   x{med / ref:.2f} of momentum", flush=True)
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
