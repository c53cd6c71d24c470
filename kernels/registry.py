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


@dataclass(frozen=True)
class KernelPair:
    name: str
    fast: Callable
    reference: Callable
    make_case: Callable  # (rng, Case) -> tuple of arguments
    outputs: tuple  # indices of the arguments the kernel writes (compared by tests)
    flops: Callable = None  # (Case) -> floating-point operations of one call, for benches
    compares_return: bool = False


KERNELS: dict = {}


def register(name, *, fast, reference, make_case, outputs, flops=None, compares_return=False):
    if name in KERNELS:
        raise ValueError(f"kernel {name!r} is registered twice")
    KERNELS[name] = KernelPair(name, fast, reference, make_case, tuple(outputs), flops,
                               compares_return)
    return KERNELS[name]


def copy_args(args):
    """Deep copy of arrays, and of tuples of arrays, so both sides get identical inputs."""
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            out.append(a.copy())
        elif isinstance(a, tuple):
            out.append(tuple(x.copy() if isinstance(x, np.ndarray) else x for x in a))
        else:
            out.append(a)
    return tuple(out)
