"""Checks at the public entry points: every message names the argument and what was expected."""
import math
import numbers

import numpy as np


def _numeric_array(value, name, what):
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be {what}, could not convert it: {exc}")
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {what}, got dtype {value.dtype}")
    return value


def check_features(X, n_features, dtype, name="X", input_shape=None):
    """X as a C-contiguous float array of shape (n, n_features), finite, not empty. With an
    image ``input_shape`` (h, w, c), X may also be (n, h, w, c) images — or (n, h, w) when
    c is 1 — read row-major (channels last)."""
    X = _numeric_array(X, name, "a 2-D numeric array (float or integer)")
    if input_shape is not None and len(input_shape) > 1 and X.ndim > 2:
        shape = tuple(input_shape)
        if X.shape[1:] not in (shape, shape[:-1] if shape[-1] == 1 else shape):
            raise ValueError(f"{name} holds samples of shape {X.shape[1:]} but the network's "
                             f"input_shape is {shape}: expected shape (n_samples, "
                             f"{', '.join(map(str, shape))}) or (n_samples, {n_features})")
        X = X.reshape(X.shape[0], n_features)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, {n_features}), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features per sample but the network's input "
                         f"layer has {n_features}: expected shape (n_samples, {n_features})")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=dtype)
    for start in range(0, X.shape[0], 4096):  # in blocks: no temporary the size of X
        block = X[start:start + 4096]
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"{name} contains NaN or infinite values (first in row {row})")
    return X


def check_labels(y, n_samples, n_classes, name="y"):
    """y as int64 labels in [0, n_classes), one per sample."""
    y = _numeric_array(y, name, "a 1-D array that holds integer class labels")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels for {n_samples} samples")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{name} must hold integer class labels; found non-integer values")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} labels must be in [0, {n_classes}) for a network with "
                         f"{n_classes} outputs; found {y.min()}..{y.max()}")
    return np.ascontiguousarray(y, dtype=np.int64)


def is_finite_number(value):
    """A real int or float (not a bool), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def check_int(value, name, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def warn_if_unscaled(X, input_shape, name="X"):
    """Warn, once per place, when image inputs look unscaled: an integer dtype holding values
    over 1 (0-255 pixels), or floats over 1 where the network takes images (an image
    input_shape, or a square number of inputs: 8x8 digits, 28x28 MNIST). Looks at the first
    rows only: X may be a memory map far larger than memory."""
    import warnings
    sample = np.asarray(X[:1000]) if hasattr(X, "__getitem__") else np.asarray(X)
    if sample.size == 0 or sample.dtype.kind not in "biuf":
        return
    top = sample.max()
    n = math.prod(input_shape)
    side = math.isqrt(n)
    images = len(input_shape) == 3 or (n >= 64 and side * side == n)
    if top > 1 and (sample.dtype.kind in "biu" or images):
        warnings.warn(f"{name} holds values up to {top:g} ({sample.dtype}): networks train on "
                      f"inputs scaled to [0, 1] (pixels / 255); unscaled, training stalls or "
                      f"diverges", UserWarning, stacklevel=3)
