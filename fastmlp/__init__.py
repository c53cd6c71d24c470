"""fastmlp: train multilayer perceptrons on the CPU with fused Numba kernels.

Every kernel has a NumPy twin (``backend="numpy"``) that the fast path is checked against.
"""
import importlib.util as _importlib_util

from ._cpu import choose_blas_kernels as _choose_blas_kernels

_choose_blas_kernels()  # before NumPy (and its OpenBLAS) loads: see _cpu.py

if _importlib_util.find_spec("fastmlp.kernels") is None:  # imported from a source tree, not installed
    raise ImportError("fastmlp is not installed: its kernels (the repository's kernels/ folder) are "
                      "installed as fastmlp.kernels. Run `pip install -e .` in the repository root, "
                      "then import fastmlp from that environment.")

from . import kernels  # noqa: E402
from ._version import __version__
from .datasets import load_cifar10, load_fashion_mnist, load_mnist, read_idx
from .errors import (DataFormatError, DataNotFoundError, ExportError, FastMLPError,
                     ModelFormatError, TrainingDivergedError)
from .network import History, Network
from .optimizers import SGD

__all__ = ["Network", "History", "SGD", "kernels", "load_mnist", "load_fashion_mnist",
           "load_cifar10", "read_idx",
           "FastMLPError", "DataFormatError", "DataNotFoundError", "ExportError", "ModelFormatError",
           "TrainingDivergedError", "__version__"]
