"""The choice of the ``cnn-bn-aug`` recipe (#44): a handful of variants of a small CNN with batch
normalization and on-the-fly augmentation, each trained on the first 55,000 MNIST training
images and scored on the last 5,000 (the validation split); the test accuracy at the end is
recorded, but plays no part in the choice (runs before 2026-12-06 15:45 did not record it). Each
variant's settings, validation accuracy per epoch and seconds go to the JSON file.

    python bench/cnn_bn_variants.py --variants A,B,C,D,E,F --json bench/results/DATE-CPU-cnn-bn-variants.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from fastmlp import Network, load_mnist
from fastmlp.augment import Augment
from fastmlp.optimizers import Adam
from fastmlp.recipes import _bn_cnn
from fastmlp.schedules import CosineDecay

AFFINE = dict(shift=2.0, rotate=10.0, scale=0.1)
ELASTIC = dict(elastic_alpha=34.0, elastic_sigma=4.0, interpolation="nearest")
# (epoch times measured first, 2-core Xeon: 20/40 filters 18 s per 60,000 images, 32/32 26 s,
# 32/64 with dense 256 40 s; the cnn recipe's network 13 s: 30 epochs of the first fit in 15
# minutes with room to spare)
VARIANTS = {
    # 20 and 40 filters, dense 128; shifts, rotations and scaling; Adam 3e-3 cosine-decayed
    "A": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": AFFINE},
    # the same with Simard's elastic distortions instead (as the augmented-mlp recipe)
    "B": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": ELASTIC},
    # wider: 32 and 64 filters, dense 256, fewer epochs in about the same time
    "C": {"filters": (32, 64), "dense": 256, "dropout": 0.4, "lr": 3e-3, "epochs": 20,
          "batch_size": 100, "augment": AFFINE},
    # C's width with B's elastic distortions
    "D": {"filters": (32, 64), "dense": 256, "dropout": 0.4, "lr": 3e-3, "epochs": 20,
          "batch_size": 100, "augment": ELASTIC},
    # B's network and distortions with the affine ones on top, 30 epochs
    "E": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": dict(AFFINE, **ELASTIC)},
    # B trained half as long again (the cosine schedule stretched to 45 epochs)
    "F": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 45,
          "batch_size": 100, "augment": ELASTIC},
    # B, then its weights (and batch normalization's moving statistics) averaged over the last
    # epochs, from each of these epochs on: the same training as B, scored three more ways
    "G": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": ELASTIC, "average_from": (16, 21, 26)},
    # B, then scored with test-time augmentation too: the mean of the predicted probabilities
    # over each image and its copies shifted by one pixel (4 copies: up, down, left, right; 8:
    # the diagonals too); the same training as B
    "H": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": ELASTIC, "tta_shifts": (4, 8)},
    # B trained against smoothed labels (0.9 on the label, 0.01 on every class)
    "I": {"filters": (20, 40), "dense": 128, "dropout": 0.4, "lr": 3e-3, "epochs": 30,
          "batch_size": 100, "augment": ELASTIC, "label_smoothing": 0.1},
    # deeper: two 3x3 convolutions (unpadded) before each pooling, 32 then 64 filters, each
    # batch-normalized before its ReLU; dense 256; B's distortions and schedule
    "J": {"filters": (32, 64), "convs_per_pool": 2, "kernel": 3, "padding": "valid",
          "dense": 256, "dropout": 0.4, "lr": 3e-3, "epochs": 30, "batch_size": 100,
          "augment": ELASTIC},
}


def network_layers(settings):
    """The variant's layers (``recipes._bn_cnn``): one 5x5 'same' convolution per pooling, or
    ``convs_per_pool`` convolutions of ``kernel`` with ``padding`` before each pooling."""
    return _bn_cnn(settings["filters"], settings["dense"], settings["dropout"],
                   settings.get("convs_per_pool", 1), settings.get("kernel", 5),
                   settings.get("padding", "same"))


SHIFTS = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def shifted(X, dy, dx):
    """Images X (n, 784) moved by (dy, dx) pixels, zeros shifted in."""
    images = X.reshape(-1, 28, 28)
    out = np.zeros_like(images)
    out[:, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
        images[:, max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)]
    return out.reshape(X.shape)


def tta_accuracy(net, X, y, copies):
    """Accuracy of the mean predicted probabilities over X and ``copies`` shifted copies."""
    total = net.predict_proba(X).astype(np.float64)
    for dy, dx in SHIFTS[:copies]:
        total += net.predict_proba(shifted(X, dy, dx))
    return float(np.mean(np.argmax(total, axis=1) == y))


def run(name, settings, splits, seed):
    (X, y), (Xv, yv), (Xt, yt) = splits
    net = Network(network_layers(settings), input_shape=(28, 28, 1), init="he", seed=seed)
    curve = []
    starts = settings.get("average_from", ())
    sums = {start: None for start in starts}  # per first epoch averaged: the running sums

    def check(epoch, metrics):
        curve.append({"epoch": epoch, "epoch_time": round(metrics["epoch_time"], 2),
                      "val_accuracy": net.evaluate(Xv, yv)["accuracy"]})
        for start in starts:
            if epoch >= start:
                arrays = [a.astype("float64") for a in net.weights + net.biases]
                sums[start] = arrays if sums[start] is None else [
                    s + a for s, a in zip(sums[start], arrays)]
        print(f"{name} epoch {epoch}: {metrics['epoch_time']:.1f} s, validation "
              f"{curve[-1]['val_accuracy']:.4f}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    net.fit(X, y, epochs=settings["epochs"], batch_size=settings["batch_size"],
            optimizer=Adam(lr=settings["lr"]), lr_schedule=CosineDecay(settings["epochs"]),
            augment=Augment(**settings["augment"]), callbacks=[check], verbose=0,
            label_smoothing=settings.get("label_smoothing", 0.0))
    seconds = round(time.perf_counter() - t0, 1)
    result = {"variant": name, "settings": settings, "seed": seed, "seconds": seconds,
              "curve": curve, "val_accuracy": curve[-1]["val_accuracy"],
              "test_accuracy_reported_only": net.evaluate(Xt, yt)["accuracy"]}
    for copies in settings.get("tta_shifts", ()):
        result.setdefault("tta", {})[copies] = {
            "val_accuracy": tta_accuracy(net, Xv, yv, copies),
            "test_accuracy_reported_only": tta_accuracy(net, Xt, yt, copies)}
        print(f"{name} with {copies} shifted copies: validation "
              f"{result['tta'][copies]['val_accuracy']:.4f}", file=sys.stderr, flush=True)
    final = [a.copy() for a in net.weights + net.biases]
    averaged = {}
    for start in starts:
        count = settings["epochs"] - start + 1
        for dst, total in zip(net.weights + net.biases, sums[start]):
            dst[...] = total / count
        averaged[start] = {"val_accuracy": net.evaluate(Xv, yv)["accuracy"],
                           "test_accuracy_reported_only": net.evaluate(Xt, yt)["accuracy"]}
        print(f"{name} averaged from epoch {start}: validation "
              f"{averaged[start]['val_accuracy']:.4f}", file=sys.stderr, flush=True)
    for dst, src in zip(net.weights + net.biases, final):
        dst[...] = src
    if starts:
        result["averaged"] = averaged
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    splits = load_mnist(os.environ.get("FASTMLP_DATA"), download=False, validation_size=5000)
    results = []  # a run of other variants adds to the file
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)
    for name in args.variants.split(","):
        results = [r for r in results if (r["variant"], r["seed"]) != (name, args.seed)]
        results.append(run(name, VARIANTS[name], splits, args.seed))
        print(f"{name}: validation {results[-1]['val_accuracy']:.4f} in "
              f"{results[-1]['seconds']:.0f} s", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
