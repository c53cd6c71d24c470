"""Seconds per training epoch of fastmlp-numba through the public API (``Network.fit``), on
MNIST (sparse inputs) and Fashion-MNIST (dense inputs), over a few shapes and batch sizes.

Used to compare the code before and after a change, in one session on one machine:

    python bench/epoch_times.py --json before.json
    python bench/epoch_times.py --json after.json --compare before.json

Each configuration trains ``--epochs`` epochs (the first compiles or loads the JIT cache and is
not counted) and reports the median of the others.
"""
import argparse
import json
import os
import platform
import statistics

from fastmlp import Network
from fastmlp.datasets import load_fashion_mnist, load_mnist

CONFIGS = [  # (dataset, hidden sizes, batch size)
    ("mnist", (300,), 10), ("mnist", (300,), 64), ("mnist", (300,), 256),
    ("fashion-mnist", (300,), 10), ("fashion-mnist", (300,), 64), ("fashion-mnist", (300,), 256),
    ("mnist", (1024, 1024), 256), ("fashion-mnist", (1024, 1024), 256),
]


def data_dir(name):
    base = os.environ.get("FASTMLP_DATA")
    if base and name == "fashion-mnist":
        return os.path.join(os.path.dirname(os.path.abspath(base)), "fashion-mnist")
    return base


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--compare", default=None, help="an earlier --json file to compare with")
    args = p.parse_args()
    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
    data = {name: loaders[name](data_dir(name), download=False)[0] for name in loaders}
    before = json.load(open(args.compare))["seconds"] if args.compare else {}
    results = {}
    for name, hidden, batch in CONFIGS:
        X, y = data[name]
        net = Network([784, *hidden, 10], seed=0)
        history = net.fit(X, y, epochs=args.epochs, batch_size=batch, lr=0.05, momentum=0.9,
                          verbose=0)
        key = f"{name} 784-{'-'.join(map(str, hidden))}-10 b{batch}"
        results[key] = statistics.median(history.history["epoch_time"][1:])
        line = f"{key:<40}{results[key]:8.3f} s"
        if key in before:
            line += f"   before {before[key]:.3f} s   after/before {results[key] / before[key]:.2f}"
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(),
                       "seconds": results}, f, indent=2)


if __name__ == "__main__":
    main()
