"""The choice of the ``cnn-bn-aug`` recipe (#44): a handful of variants of a small CNN with batch
normalization and on-the-fly augmentation, each trained on the first 55,000 MNIST training
images and scored on the last 5,000 (the validation split); the test set plays no part. Each
variant's settings, validation accuracy per epoch and seconds go to the JSON file.

    python bench/cnn_bn_variants.py --variants A,B --json bench/results/DATE-CPU-cnn-bn-variants.json
"""
import argparse
import json
import os
import sys
import time

from fastmlp import Network, load_mnist
from fastmlp.augment import Augment
from fastmlp.optimizers import Adam
from fastmlp.recipes import _bn_cnn
from fastmlp.schedules import CosineDecay

AFFINE = dict(shift=2.0, rotate=10.0, scale=0.1)
VARIANTS = {
    # the recipe's shape: 20 and 40 filters, dense 128, affine distortions, Adam 3e-3 cosine
    "A": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 15,
          "batch_size": 100, "augment": AFFINE},
    # and with mild elastic distortions on top
    "B": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 15,
          "batch_size": 100, "augment": dict(AFFINE, elastic_alpha=8.0, elastic_sigma=3.0)},
    # the blog's width (20, 20): cheaper epochs
    "C": {"filters": (20, 20), "dense": 100, "dropout": 0.4, "lr": 3e-3, "epochs": 15,
          "batch_size": 100, "augment": AFFINE},
    # a larger learning rate, which normalization is said to allow
    "D": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 6e-3, "epochs": 15,
          "batch_size": 100, "augment": AFFINE},
}


def run(name, settings, splits, seed):
    (X, y), (Xv, yv) = splits[0], splits[1]
    net = Network(_bn_cnn(settings["filters"], settings["dense"], settings["dropout"]),
                  input_shape=(28, 28, 1), init="he", seed=seed)
    curve = []

    def check(epoch, metrics):
        curve.append({"epoch": epoch + 1, "epoch_time": round(metrics["epoch_time"], 2),
                      "val_accuracy": net.evaluate(Xv, yv)["accuracy"]})
        print(f"{name} epoch {epoch + 1}: {metrics['epoch_time']:.1f} s, validation "
              f"{curve[-1]['val_accuracy']:.4f}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    net.fit(X, y, epochs=settings["epochs"], batch_size=settings["batch_size"],
            optimizer=Adam(lr=settings["lr"]), lr_schedule=CosineDecay(settings["epochs"]),
            augment=Augment(**settings["augment"]), callbacks=[check], verbose=0)
    return {"variant": name, "settings": settings, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1), "curve": curve,
            "val_accuracy": curve[-1]["val_accuracy"]}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    splits = load_mnist(os.environ.get("FASTMLP_DATA"), download=False, validation_size=5000)
    results = []
    for name in args.variants.split(","):
        results.append(run(name, VARIANTS[name], splits, args.seed))
        print(f"{name}: validation {results[-1]['val_accuracy']:.4f} in "
              f"{results[-1]['seconds']:.0f} s", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
