"""fastmlp.kernels: Numba kernels and their NumPy twins, registered in pairs.

This folder is installed as ``fastmlp.kernels`` (see ``package-dir`` in pyproject.toml).
"""
# ruff: noqa: E402
from ._cache_guard import invalidate_stale_cache, stamp_entries_with_sources

# before any kernel module is imported and its cache consulted
stamp_entries_with_sources(__path__[0], invalidate_stale_cache())

from . import augment, catalog  # noqa: F401  (catalog fills the registry)
from .activations import ACTIVATION_CODES, IDENTITY, RELU, SIGMOID, TANH
from .loss import OUTPUT_LOSS_CODES, loss_rule
from .network import (ACTIVATION, BATCHNORM, CONV, DENSE, DROPOUT, FLATTEN, LAYER_KINDS, POOL, DropoutRates,
                      Distortions, Extras, Layers, OptState, Params, Plan, Workspace, forward, forward_args,
                      forward_codes, forward_ref, layer_table, step_args, step_codes, layer_widths, make_params,
                      make_plan, make_state,
                      make_workspace, layers_use_threads, threaded_dense_layers, train_steps, train_steps_ref)
from .conv import conv_geometry
from .dense import THREADED_MIN_WEIGHTS
from .dropout import stream_key
from .optim import OPTIMIZER_CODES, optimizer_rule
from .registry import KERNELS, Case, KernelPair, copy_args

__all__ = ["KERNELS", "augment", "stream_key", "Case", "KernelPair", "copy_args", "ACTIVATION_CODES", "IDENTITY", "RELU",
           "conv_geometry", "SIGMOID", "TANH", "OUTPUT_LOSS_CODES", "OPTIMIZER_CODES", "optimizer_rule", "loss_rule", "LAYER_KINDS", "DENSE",
           "DROPOUT", "CONV", "POOL", "FLATTEN", "BATCHNORM", "ACTIVATION", "Plan", "Layers", "DropoutRates",
           "Extras", "Distortions", "Params", "OptState", "Workspace", "layer_table", "step_args", "forward_args",
           "make_params", "make_plan", "make_state", "make_workspace", "layer_widths", "forward", "forward_ref",
           "forward_codes", "step_codes",
           "layers_use_threads", "threaded_dense_layers", "THREADED_MIN_WEIGHTS", "train_steps", "train_steps_ref"]
