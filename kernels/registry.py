"""One registry pairs every Numba kernel with its NumPy twin.

Tests and benchmarks iterate over :data:`KERNELS`. Each pair carries a ``make_case`` that
builds the arguments for a given shape and dtype, and names which arguments the kernel writes,
so a generic harness can run both sides on copies of the same inputs and compare.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    batch: int
    n_in: int
    n_out: int
    dtype: type = np.float32
    act: int = 1  # activations.RELU
    sparse_input: bool = True
    optimizer: int = 0  # optim.SGD
    loss: int = 0  # loss.SOFTMAX_CE


@dataclass(frozen=True)
class KernelPair:
    name: str
    fast: Callable
    reference: Callable
    make_case: Callable  # (rng, Case) -> tuple of arguments
    # what the kernel writes (compared by tests), by parameter name: "out", or "ws.acts" for one
    # field of a bundle (a Workspace's activations)
    outputs: tuple
    flops: Callable = None  # (Case) -> floating-point operations of one call, for benches
    compares_return: bool = False
    variants: tuple = ()  # Case fields the tests sweep over all codes: "optimizer", "loss"
    parallel: bool = False  # runs prange loops: BLAS is held to one thread beside it
    output_layer: bool = False  # acts on the 10-class output rather than on 784 -> hidden
    # how much the result magnifies last-bit differences between the two sides (sums taken in
    # another order): the tests' float64 tolerances are multiplied by it (float32's are wide
    # enough for the kernels' own rounding)
    conditioning: float = 1.0


KERNELS: dict = {}


def register(name, *, fast, reference, make_case, outputs, flops=None, compares_return=False,
             variants=(), parallel=False, output_layer=False, conditioning=1.0):
    if name in KERNELS:
        raise ValueError(f"kernel {name!r} is registered twice")
    params = parameters(fast)
    if params != parameters(reference):
        raise ValueError(f"kernel {name!r}: the twin's parameters {parameters(reference)} are not "
                         f"the kernel's {params}")
    for output in outputs:
        if output.split(".")[0] not in params:
            raise ValueError(f"kernel {name!r} has no parameter {output.split('.')[0]!r} "
                             f"(outputs: {outputs})")
    KERNELS[name] = KernelPair(name, fast, reference, make_case, tuple(outputs), flops,
                               compares_return, tuple(variants), parallel, output_layer,
                               conditioning)
    return KERNELS[name]


def parameters(kernel):
    """The names of a kernel's (or a twin's) parameters, in order."""
    import inspect
    return list(inspect.signature(getattr(kernel, "py_func", kernel)).parameters)


def written(pair, args):
    """[(name, value)] of what ``pair`` writes among ``args``."""
    params = parameters(pair.fast)
    out = []
    for output in pair.outputs:
        name, _, field = output.partition(".")
        value = args[params.index(name)]
        out.append((output, getattr(value, field) if field else value))
    return out


def copy_value(a):
    """Deep copy of arrays, and of tuples or namedtuples holding arrays."""
    if isinstance(a, np.ndarray):
        return a.copy()
    if isinstance(a, tuple):
        items = [copy_value(x) for x in a]
        return type(a)(*items) if hasattr(a, "_fields") else tuple(items)
    return a


def copy_args(args):
    """Deep copies of the arguments, so both sides get identical inputs."""
    return tuple(copy_value(a) for a in args)
