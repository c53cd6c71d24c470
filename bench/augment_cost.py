"""Epoch seconds with and without augmentation (784-800-10 b128, 784-300-10 b256,
784-1024-1024-10 b256, Adam): the cost of on-the-fly distortions through Network.fit, on MNIST
or (``fashion``) Fashion-MNIST, with bilinear (the default) and nearest-neighbour resampling;
each ratio against the faster of the two runs without distortions.

    FASTMLP_DATA=../shared/data/mnist python bench/augment_cost.py [fashion]
"""
import json, sys
from fastmlp import Network, load_fashion_mnist, load_mnist
from fastmlp.augment import Augment
from fastmlp.optimizers import Adam
(X, y), _ = load_fashion_mnist() if sys.argv[1:] == ["fashion"] else load_mnist()
affine = dict(shift=2, rotate=8, scale=0.08)
elastic = dict(affine, elastic_alpha=34, elastic_sigma=4)
out = {}
for sizes, batch in (([784, 800, 10], 128), ([784, 300, 10], 256), ([784, 1024, 1024, 10], 256)):
    net_name = f"{'-'.join(map(str, sizes[1:-1]))}-b{batch}"
    for name, aug in (("none", None), ("affine", Augment(**affine)),
                      ("elastic", Augment(**elastic)),
                      ("affine-nearest", Augment(**affine, interpolation="nearest")),
                      ("elastic-nearest", Augment(**elastic, interpolation="nearest")),
                      ("none-again", None)):
        net = Network(sizes, seed=0)
        h = net.fit(X, y, epochs=3, batch_size=batch, optimizer=Adam(1e-3), augment=aug, verbose=0)
        out[f"{net_name}-{name}"] = round(min(h.history["epoch_time"][1:]), 3)
        print(f"{net_name}-{name}", out[f"{net_name}-{name}"], flush=True)
    without = min(out[f"{net_name}-none"], out[f"{net_name}-none-again"])
    for name in ("affine", "elastic", "affine-nearest", "elastic-nearest"):
        out[f"{net_name}-{name}-ratio"] = round(out[f"{net_name}-{name}"] / without, 2)
print(json.dumps(out))
