"""FastMLPClassifier beside scikit-learn's MLPClassifier on the same MNIST data, in one run:
test accuracy and fit time (same architecture, solver, batch size and number of epochs).

    python bench/sklearn_compare.py --hidden 100 --epochs 10
"""
import argparse
import time
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from fastmlp import load_mnist
from fastmlp.sklearn import FastMLPClassifier


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1")
    args = p.parse_args()
    (X, y), (Xt, yt) = load_mnist(download=False)
    common = dict(hidden_layer_sizes=(args.hidden,), solver="adam", batch_size=200,
                  learning_rate_init=1e-3, max_iter=args.epochs, n_iter_no_change=args.epochs + 1,
                  tol=0.0)
    print(f"MNIST 60,000 train / 10,000 test, 784-{args.hidden}-10 ReLU, Adam 1e-3, batch 200, "
          f"{args.epochs} epochs")
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, cls in (("MLPClassifier", MLPClassifier), ("FastMLPClassifier",
                                                             FastMLPClassifier)):
            clf = cls(random_state=seed, **common)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                clf.fit(X, y)
                seconds = time.perf_counter() - t0
            print(f"seed {seed} {name:<18} fit {seconds:7.2f} s   test accuracy "
                  f"{clf.score(Xt, yt):.4f}", flush=True)


if __name__ == "__main__":
    main()
