"""Epoch seconds with and without augmentation (784-800-10 b128, 784-300-10 b256,
784-1024-1024-10 b256, Adam): the cost of on-the-fly distortions through Network.fit, on MNIST
or (``fashion``) Fashion-MNIST, with bilinear (the default) and nearest-neighbour resampling.
The configurations of a network alternate over rounds of two-epoch fits (more rounds for the
shorter fits), and each one's time is its fastest second epoch: on a shared machine a slow
spell then slows one fit of a configuration, not all of it. Prints the machine (CPU, ISA,
BLAS), the best fp32 GEMM rate measured in a fresh process, and each network's floor (its
epoch's FLOPs at that rate; for sparse data also the zero-skipping path's useful FLOPs).

    FASTMLP_DATA=../shared/data/mnist python bench/augment_cost.py [fashion]
"""
import json, sys
import numpy as np
from fastmlp import Network, load_fashion_mnist, load_mnist
from fastmlp.bench import epoch_flops, gemm_rates, machine
from fastmlp.training import SPARSE_INPUT_DENSITY
from fastmlp.augment import Augment
from fastmlp.optimizers import Adam
(X, y), _ = load_fashion_mnist() if sys.argv[1:] == ["fashion"] else load_mnist()
affine = dict(shift=2, rotate=8, scale=0.08)
elastic = dict(affine, elastic_alpha=34, elastic_sigma=4)
rates = gemm_rates()
rate = max(rates.values())
out = {"machine": machine(), "gemm_gflops": {k: round(v / 1e9, 1) for k, v in rates.items()}}
nonzero = np.count_nonzero(X) / X.size
print(json.dumps(out), flush=True)
for sizes, batch, rounds in (([784, 800, 10], 128, 4), ([784, 300, 10], 256, 6),
                             ([784, 1024, 1024, 10], 256, 3)):
    net_name = f"{'-'.join(map(str, sizes[1:-1]))}-b{batch}"
    out[f"{net_name}-floor"] = round(epoch_flops(sizes, len(y)) / rate, 3)
    if nonzero < SPARSE_INPUT_DENSITY:  # fit may take the zero-skipping path
        out[f"{net_name}-zero-skipping-floor"] = round(epoch_flops(sizes, len(y), nonzero) / rate,
                                                       3)
    configs = {"none": None, "affine": Augment(**affine), "elastic": Augment(**elastic),
               "affine-nearest": Augment(**affine, interpolation="nearest"),
               "elastic-nearest": Augment(**elastic, interpolation="nearest")}
    times = {name: [] for name in configs}
    for _ in range(rounds):
        for name, aug in configs.items():
            net = Network(sizes, seed=0)
            h = net.fit(X, y, epochs=2, batch_size=batch, optimizer=Adam(1e-3), augment=aug,
                        verbose=0)
            times[name].append(round(h.history["epoch_time"][1], 3))
    for name in configs:
        out[f"{net_name}-{name}"] = min(times[name])
        out[f"{net_name}-{name}-rounds"] = times[name]
        print(f"{net_name}-{name}", times[name], flush=True)
    for name in configs:
        if name != "none":
            out[f"{net_name}-{name}-ratio"] = round(out[f"{net_name}-{name}"]
                                                    / out[f"{net_name}-none"], 2)
print(json.dumps(out))
