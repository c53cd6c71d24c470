"""The course notebook's two comparisons, as figures (a benchmark, run by hand):

- one learning curve per optimizer (SGD, momentum, Nesterov, Adam, RMSprop, Adagrad);
- overfitting: a wide MLP on 5,000 training images with and without dropout or L2, train
  against validation.

    FASTMLP_DATA=../shared/data/mnist python bench/curves.py --out bench/results/
"""
import argparse
from pathlib import Path

from fastmlp import Network, load_mnist
from fastmlp.optimizers import SGD, Adagrad, Adam, RMSprop
from fastmlp.plotting import plot_compare


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".")
    p.add_argument("--prefix", default="curves")
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    out = Path(args.out)
    (X, y), (Xv, yv), _ = load_mnist(validation_size=10000)  # the test set is not looked at
    optimizers = {"sgd 0.1": SGD(0.1, 0.0), "momentum 0.9": SGD(0.05, 0.9),
                  "nesterov": SGD(0.05, 0.9, nesterov=True), "adam": Adam(1e-3),
                  "rmsprop": RMSprop(1e-3), "adagrad": Adagrad(0.05)}
    runs = {}
    for name, opt in optimizers.items():
        net = Network([784, 300, 10], seed=0)
        runs[name] = net.fit(X, y, epochs=args.epochs, batch_size=128, optimizer=opt,
                             validation_data=(Xv, yv), verbose=0)
        print(f"{name}: val accuracy {runs[name].history['val_accuracy'][-1]:.4f}", flush=True)
    plot_compare(runs, out / f"{args.prefix}-optimizers.png",
                 title="784-300-10 on MNIST (50,000 train / 10,000 validation), batch 128")
    small = (X[:5000], y[:5000])
    runs = {}
    for name, kw, fit_kw in (("no regularisation", {}, {}),
                             ("dropout 0.5", {"dropout": 0.5}, {}),
                             ("L2 1e-4", {}, {"weight_decay": 1e-4})):
        net = Network([784, 1024, 10], seed=0, **kw)
        runs[name] = net.fit(*small, epochs=3 * args.epochs, batch_size=64, lr=0.05,
                             momentum=0.9, validation_data=(Xv, yv), verbose=0, **fit_kw)
        print(f"{name}: train {runs[name].history['accuracy'][-1]:.4f} val "
              f"{runs[name].history['val_accuracy'][-1]:.4f}", flush=True)
    plot_compare(runs, out / f"{args.prefix}-overfitting.png",
                 title="784-1024-10 on 5,000 MNIST images: train (dashed) vs validation")


if __name__ == "__main__":
    main()
