"""fastmlp: train multilayer perceptrons on the CPU with fused Numba kernels.

Every kernel has a NumPy twin (``backend="numpy"``) that the fast path is checked against.
"""
from . import kernels
from ._version import __version__
from .datasets import load_fashion_mnist, load_mnist, read_idx
from .errors import (DataFormatError, DataNotFoundError, FastMLPError, ModelFormatError,
                     TrainingDivergedError)
from .network import History, Network
from .optimizers import SGD

__all__ = ["Network", "History", "SGD", "kernels", "load_mnist", "load_fashion_mnist", "read_idx",
           "FastMLPError", "DataFormatError", "DataNotFoundError", "ModelFormatError",
           "TrainingDivergedError", "__version__"]
