"""Epoch seconds with and without augmentation (784-800-10 b128, 784-300-10 b256,
784-1024-1024-10 b256, and the augmented-mlp recipe's 784-1600-10 b128; Adam): the cost of
on-the-fly distortions through Network.fit, on MNIST or (``fashion``) Fashion-MNIST, with
bilinear (the default) and nearest-neighbour resampling. The recipe's network also runs the
recipe's own distortion (elastic only, no shift, rotation or scaling) with either sampling
("recipe-bilinear", "recipe-nearest"; the recipe samples nearest since 2026-12-01).
"affine-copy" trains without augmentation on a copy of the training set distorted once
beforehand (bilinear shift + rotation + scaling): images as dense as the distorted ones, no
distortion in the epoch, so the distortions' own cost is the gap between it and "affine"
(printed as affine-over-copy), and the rest is the denser images'. The configurations of a
network alternate over rounds of two-epoch fits (more rounds for the shorter fits), and each
one's time is its fastest second epoch: on a shared machine a slow spell then slows one fit of a
configuration, not all of it; each ratio is also given as the median of the rounds' ratios.
Prints the share of nonzero pixels with and without distortion, the machine (CPU, ISA,
BLAS), the best fp32 GEMM rate measured in a fresh process, and each network's floor (its
epoch's FLOPs at that rate; for sparse data also the zero-skipping path's useful FLOPs).

    FASTMLP_DATA=../shared/data/mnist python bench/augment_cost.py [fashion] [--only 1600-b128]
"""
import argparse, json, statistics
import numpy as np
from fastmlp import Network, load_fashion_mnist, load_mnist
from harness import gemm_rates, machine
from fastmlp.compiling import SPARSE_INPUT_DENSITY
from fastmlp.augment import Augment
from fastmlp.optimizers import Adam
from fastmlp.recipes import RECIPES
NETWORKS = (([784, 800, 10], 128, 4), ([784, 300, 10], 256, 6), ([784, 1024, 1024, 10], 256, 3),
            ([784, 1600, 10], 128, 3))  # sizes, batch, rounds


def name_of(sizes, batch):
    return f"{'-'.join(map(str, sizes[1:-1]))}-b{batch}"


parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?", choices=["mnist", "fashion"], default="mnist")
parser.add_argument("--only", choices=[name_of(s, b) for s, b, _ in NETWORKS],
                    help="run this network only")
args = parser.parse_args()
(X, y), _ = load_fashion_mnist() if args.data == "fashion" else load_mnist()
affine = dict(shift=2, rotate=8, scale=0.08)
elastic = dict(affine, elastic_alpha=34, elastic_sigma=4)
rates = gemm_rates()
rate = max(rates.values())
out = {"machine": machine(), "gemm_gflops": {k: round(v / 1e9, 1) for k, v in rates.items()}}
nonzero = np.count_nonzero(X) / X.size
X_affine = Augment(**affine).apply(np.ascontiguousarray(X, np.float32), (28, 28, 1), seed=0)
out["nonzero"] = {"none": round(nonzero, 3),
                  "affine": round(np.count_nonzero(X_affine) / X_affine.size, 3)}
print(json.dumps(out), flush=True)
for sizes, batch, rounds in NETWORKS:
    net_name = name_of(sizes, batch)
    if args.only and net_name != args.only:
        continue
    mlp = Network(sizes, seed=0, _initialise=False)
    out[f"{net_name}-floor"] = round(mlp.flops(len(y)) / rate, 3)
    if nonzero < SPARSE_INPUT_DENSITY:  # fit may take the zero-skipping path
        out[f"{net_name}-zero-skipping-floor"] = round(mlp.flops(len(y), nonzero) / rate, 3)
    configs = {"none": None, "affine-copy": "copy", "affine": Augment(**affine),
               "elastic": Augment(**elastic),
               "affine-nearest": Augment(**affine, interpolation="nearest"),
               "elastic-nearest": Augment(**elastic, interpolation="nearest")}
    if sizes == [784, 1600, 10]:  # the recipe's distortion, with either sampling
        recipe = RECIPES["augmented-mlp"]["fit"]["augment"].config()
        configs["recipe-bilinear"] = Augment(**dict(recipe, interpolation="bilinear"))
        configs["recipe-nearest"] = Augment(**dict(recipe, interpolation="nearest"))
    times = {name: [] for name in configs}
    for _ in range(rounds):
        for name, aug in configs.items():
            net = Network(sizes, seed=0)
            h = net.fit(X_affine if aug == "copy" else X, y, epochs=2, batch_size=batch,
                        optimizer=Adam(1e-3), augment=None if aug == "copy" else aug, verbose=0)
            times[name].append(round(h.history["epoch_time"][1], 3))
    for name in configs:
        out[f"{net_name}-{name}"] = min(times[name])
        out[f"{net_name}-{name}-rounds"] = times[name]
        print(f"{net_name}-{name}", times[name], flush=True)
    for name in configs:
        if name != "none":
            out[f"{net_name}-{name}-ratio"] = round(out[f"{net_name}-{name}"]
                                                    / out[f"{net_name}-none"], 2)
            out[f"{net_name}-{name}-ratio-median-round"] = round(statistics.median(
                t / t0 for t, t0 in zip(times[name], times["none"])), 2)
    out[f"{net_name}-affine-over-copy"] = round(out[f"{net_name}-affine"]
                                                / out[f"{net_name}-affine-copy"], 2)
print(json.dumps(out))
