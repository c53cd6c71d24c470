"""Compile ahead: what a fit and a predict of a given network will run, compiled into Numba's
disk cache before it is needed (for CI, Docker images, a cluster's workers), so that the first
real fit starts at once. ``fastmlp warmup`` runs it from the command line."""
import time

import numpy as np

from . import kernels as K
from .training import Trainer, compile_ahead, step_description, uses_sparse_input

DENSITIES = {"mnist": 0.2, "dense": 0.6}  # MNIST-like inputs skip zeros, denser ones do not


def _configs(recipe_names, dtype):
    """(label, network, fit settings) of each network to compile for."""
    from .network import Network
    from .optimizers import SGD
    from .recipes import build
    configs = []
    if not recipe_names:
        configs.append(("default 784-300-10 SGD", Network([784, 300, 10], seed=0, dtype=dtype),
                        {"batch_size": 256, "optimizer": SGD()}))
    for name in recipe_names:
        net, fit = build(name, 784, 10, seed=0, dtype=dtype)
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
    trainer = Trainer(net, X, y, batch_size, optimizer, augment=tables)
    seconds = trainer.compile(verbose=False)
    plan = net._plan(sparse_input=uses_sparse_input(net, X, 512))
    ws = K.make_workspace(net._params(), plan, net.n_features, 4, net.dtype, training=False)
    rows = np.arange(4, dtype=np.int64)
    seconds += compile_ahead(K.forward, (X, rows, net._params(), plan, ws,
                                         *K.forward_codes(plan)),
                             step_description(plan, net.dtype, "inference"), verbose=False)
    net.evaluate(X[:4], y[:4])  # the output kernels
    return seconds


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
