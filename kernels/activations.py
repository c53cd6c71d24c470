"""Activation functions and their derivatives, as a small table (scikit-learn style).

Every derivative is written in terms of the activation's *output* a = f(z), so the
backward pass never needs the pre-activation z to be kept.
"""
import numpy as np
from numba import njit

IDENTITY, RELU, SIGMOID, TANH = 0, 1, 2, 3
ACTIVATION_CODES = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}


def _identity(z):
    return z


def _relu(z):
    return np.maximum(z, 0, out=z)


def _sigmoid(z):
    # exp(-z) may overflow to inf for very negative z: 1/(1+inf) is the right limit, 0.
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)
    return z


def _tanh(z):
    return np.tanh(z, out=z)


# In-place activations: z is overwritten with f(z) and returned.
ACTIVATIONS = {IDENTITY: _identity, RELU: _relu, SIGMOID: _sigmoid, TANH: _tanh}

# f'(z) expressed through a = f(z).
DERIVATIVES = {
    IDENTITY: lambda a: np.ones_like(a),
    RELU: lambda a: (a > 0).astype(a.dtype),
    SIGMOID: lambda a: a * (1 - a),
    TANH: lambda a: 1 - a * a,
}


def activate_ref(z, code):
    """NumPy twin of :func:`activate`: z <- f(z) in place."""
    ACTIVATIONS[code](z)


def derivative_mul_ref(delta, a, code):
    """NumPy twin of :func:`derivative_mul`: delta <- delta * f'(z), f'(z) taken from a."""
    if code != IDENTITY:
        delta *= DERIVATIVES[code](a)


@njit(cache=True, inline="always")
def _act_scalar(z, code):
    if code == RELU:
        return z if z > 0 else z * 0
    if code == SIGMOID:
        return 1 / (1 + np.exp(-z))
    if code == TANH:
        return np.tanh(z)
    return z


@njit(cache=True, inline="always")
def _dact_scalar(a, code):
    if code == RELU:
        return a * 0 + (1 if a > 0 else 0)
    if code == SIGMOID:
        return a * (1 - a)
    if code == TANH:
        return 1 - a * a
    return a * 0 + 1


# The row kernels below test ``code`` once, outside the loop, and pass _act_scalar a constant:
# a loop that tests a run-time code on each element is not vectorized (~9× slower for ReLU).
@njit(cache=True)
def activate_row(o, code):
    """o <- f(o) in place, for a 1-D array."""
    if code == RELU:
        for j in range(o.shape[0]):
            o[j] = _act_scalar(o[j], RELU)
    elif code == SIGMOID:
        for j in range(o.shape[0]):
            o[j] = _act_scalar(o[j], SIGMOID)
    elif code == TANH:
        for j in range(o.shape[0]):
            o[j] = _act_scalar(o[j], TANH)


@njit(cache=True)
def derivative_mul_row(d, a, code):
    """d <- d * f'(z) in place, f'(z) taken from the output a = f(z), for 1-D arrays."""
    if code == RELU:  # d·[a > 0], as the twin (_dact_scalar's int 0/1 would make it float64)
        for j in range(d.shape[0]):
            x = d[j]
            d[j] = x if a[j] > 0 else x * 0
    elif code == SIGMOID:
        for j in range(d.shape[0]):
            d[j] *= _dact_scalar(a[j], SIGMOID)
    elif code == TANH:
        for j in range(d.shape[0]):
            d[j] *= _dact_scalar(a[j], TANH)


@njit(cache=True)
def activate(z, code):
    """z <- f(z) in place, for a 2-D array."""
    if code == IDENTITY:
        return
    for i in range(z.shape[0]):
        activate_row(z[i], code)


@njit(cache=True)
def derivative_mul(delta, a, code):
    """delta <- delta * f'(z), f'(z) computed from the output a = f(z)."""
    if code == RELU:  # (as derivative_mul_row's, without a call per row: ~40 % faster)
        for i in range(delta.shape[0]):
            for j in range(delta.shape[1]):
                x = delta[i, j]
                delta[i, j] = x if a[i, j] > 0 else x * 0
        return
    for i in range(delta.shape[0]):
        derivative_mul_row(delta[i], a[i], code)
