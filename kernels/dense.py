"""Dense layer: fused forward out = f(x @ W + b) and fused backward, side by side."""
import numpy as np
from numba import njit

from .activations import (IDENTITY, RELU, _act_scalar, activate_ref, derivative_mul,
                          derivative_mul_ref)


# ---- forward ---------------------------------------------------------------------------
@njit(cache=True)
def dense_forward(x, W, b, act, out):
    """out <- f(x @ W + b); x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out)."""
    np.dot(x, W, out)
    n, m = out.shape
    if act == RELU:
        for i in range(n):
            for j in range(m):
                v = out[i, j] + b[j]
                out[i, j] = v if v > 0 else v * 0
    elif act == IDENTITY:
        for i in range(n):
            for j in range(m):
                out[i, j] += b[j]
    else:
        for i in range(n):
            for j in range(m):
                out[i, j] = _act_scalar(out[i, j] + b[j], act)


def dense_forward_ref(x, W, b, act, out):
    np.dot(x, W, out=out)
    out += b
    activate_ref(out, act)


# ---- backward --------------------------------------------------------------------------
@njit(cache=True)
def dense_backward(x, W, delta, x_act, dW, db, delta_prev):
    """dW <- xᵀ δ, db <- Σ δ, and, when delta_prev has rows, δ_prev <- (δ Wᵀ) ⊙ f'(x).

    x is the layer's input, itself the output of the previous layer's activation x_act.
    Pass delta_prev with zero rows for the first layer, whose input needs no gradient.
    """
    np.dot(x.T, delta, dW)
    n, m = delta.shape
    for j in range(m):
        db[j] = 0
    for i in range(n):
        for j in range(m):
            db[j] += delta[i, j]
    if delta_prev.shape[0] > 0:
        np.dot(delta, W.T, delta_prev)
        derivative_mul(delta_prev, x, x_act)


def dense_backward_ref(x, W, delta, x_act, dW, db, delta_prev):
    np.dot(x.T, delta, out=dW)
    np.sum(delta, axis=0, out=db)
    if delta_prev.shape[0] > 0:
        np.dot(delta, W.T, out=delta_prev)
        derivative_mul_ref(delta_prev, x, x_act)
