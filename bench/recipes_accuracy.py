"""Test accuracy of each named recipe on MNIST over several seeds (a benchmark, run by hand:
the dropout recipe takes several minutes a seed on 2 cores).

    python bench/recipes_accuracy.py --seeds 0,1,2 --json bench/results/recipes.json
"""
import argparse
import json
import statistics
import time

from fastmlp import load_mnist, recipes


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(recipes.names()))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json", default=None)
    p.add_argument("--validation-size", type=int, default=0,
                   help="hold out the last N training images and report their accuracy too "
                        "(what settings are chosen on; the test set only reports)")
    args = p.parse_args()
    splits = load_mnist(download=False, validation_size=args.validation_size)
    (X, y), (Xt, yt) = splits[0], splits[-1]
    val = splits[1] if args.validation_size else None
    results = {}
    for name in args.recipes.split(","):
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            net, fit = recipes.build(name, seed=seed)
            t0 = time.perf_counter()
            net.fit(X, y, verbose=0, **fit)
            seconds = time.perf_counter() - t0
            acc = net.evaluate(Xt, yt)["accuracy"]
            runs.append({"seed": seed, "test_accuracy": acc, "seconds": seconds})
            if val is not None:
                runs[-1]["val_accuracy"] = net.evaluate(*val)["accuracy"]
            print(f"{name} seed {seed}: test accuracy {acc:.4f} in {seconds:.0f} s"
                  + (f", validation {runs[-1]['val_accuracy']:.4f}" if val else ""), flush=True)
        mean = statistics.mean(r["test_accuracy"] for r in runs)
        results[name] = {"runs": runs, "mean_test_accuracy": mean}
        print(f"{name}: mean {mean:.4f}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
