"""Compile ahead: what a fit and a predict of a given network will run, compiled into Numba's
disk cache before it is needed (for CI, Docker images, a cluster's workers), so that the first
real fit starts at once. ``fastmlp warmup`` runs it from the command line."""
import time

import numpy as np

from .training import Trainer, compile_for_fit

DENSITIES = {"mnist": 0.2, "dense": 0.6}  # MNIST-like inputs skip zeros, denser ones do not


def _configs(recipe_names, dtype):
    """(label, network, fit settings) of each network to compile for."""
    from .network import Network
    from .optimizers import SGD
    import math

    from .recipes import build, get
    configs = []
    if not recipe_names:
        configs.append(("default 784-300-10 SGD", Network([784, 300, 10], seed=0, dtype=dtype),
                        {"batch_size": 256, "optimizer": SGD()}))
    for name in recipe_names:
        shape = get(name)["network"].get("input_shape")  # CIFAR-10's recipe: 32x32x3
        net, fit = build(name, math.prod(shape) if shape else 784, 10, seed=0, dtype=dtype)
        configs.append((f"recipe {name}", net, fit))
    return configs


def warm_network(net, batch_size, optimizer, augment=None, density=0.2):
    """Compile the training step and inference of ``net`` for inputs of ``density`` (the share
    of nonzero values: it decides the zero-skipping first layer). Returns the seconds spent
    compiling (0.0 when everything was cached)."""
    rng = np.random.default_rng(0)
    n = 2 * batch_size
    X = rng.random((n, net.n_features)).astype(net.dtype)
    X[rng.random(X.shape) > density] = 0
    y = np.zeros(n, np.int64)
    tables = None
    if augment is not None and augment.active:
        from .augment import image_shape_of
        tables = augment.tables(image_shape_of(net))
    return compile_for_fit(Trainer(net, X, y, batch_size, optimizer, augment=tables), X,
                           verbose=False)


def warm_up(recipe_names=(), dtype="float32", densities=("mnist", "dense"), progress=True):
    """Compile ahead for the default network (no ``recipe_names``) or the given recipes, on
    MNIST-like and denser inputs; returns [(label, seconds compiling)]."""
    from .optimizers import get
    jobs = [(label, net, fit, density) for label, net, fit in _configs(recipe_names, dtype)
            for density in densities]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc="Compiling", unit="configuration")
    done = []
    try:
        for label, net, fit, density in jobs:
            if bar is not None:
                bar.set_postfix_str(f"{label}, {density} inputs", refresh=True)
            t0 = time.perf_counter()
            optimizer = get(fit.get("optimizer", "sgd"))
            warm_network(net, min(fit.get("batch_size", 256), 256), optimizer,
                         fit.get("augment"), DENSITIES[density])
            done.append((f"{label}, {density} inputs", time.perf_counter() - t0))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return done
