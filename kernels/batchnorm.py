"""Batch normalization (Ioffe & Szegedy 2015), with Keras' semantics.

A layer's input is read as rows of C channels: (samples, features) after a dense layer, or
(samples · height · width, channels) after a conv layer (channels-last), the same memory.

Its parameter table W is (3, C): the learned scale γ, then the moving mean and the moving
variance, which training updates (``moving = momentum · moving + (1 - momentum) · batch``, the
batch variance biased, as Keras) and inference uses; its bias b is the learned shift β. In
training: y = γ (x - mean) / sqrt(var + ε) + β with the minibatch's mean and variance per
channel, summed in float64 (around the moving mean: one pass, no cancellation).

``stats`` (4, C) float64 carries from forward to backward: mean, 1/sqrt(var + ε), Σδ, Σδ·x̂.
``sums`` (threads, 2C) float64: each thread's partial sums over its block of rows.
"""
import numpy as np
from numba import njit, prange

from .activations import _dact_scalar, derivative_mul_ref
from .data import thread_block

GAMMA, MOVING_MEAN, MOVING_VAR = 0, 1, 2  # the rows of a BatchNormalization layer's W
MOMENTUM, EPSILON = 0, 1  # its settings (Plan.norm[layer])
MEAN, INV_STD, SUM_D, SUM_D_XHAT = 0, 1, 2, 3  # the rows of stats


# ---- the pieces the training step runs, a block of rows per thread --------------------------
@njit(cache=True)
def norm_sums_block(x, shift, lo, hi, sums):
    """sums[:C] <- Σ (x[r] - shift), sums[C:] <- Σ (x[r] - shift)² over rows [lo, hi)."""
    C = x.shape[1]
    for c in range(2 * C):
        sums[c] = 0.0
    for r in range(lo, hi):
        for c in range(C):
            v = np.float64(x[r, c]) - np.float64(shift[c])
            sums[c] += v
            sums[C + c] += v * v


@njit(cache=True)
def norm_statistics(sums, count, W, setting, stats):
    """The minibatch's mean and 1/sqrt(var + ε) per channel into stats, from the threads'
    partial sums over ``count`` rows (taken around the moving mean); then the moving mean and
    variance move towards them."""
    C = stats.shape[1]
    momentum, eps = setting[MOMENTUM], setting[EPSILON]
    for c in range(C):
        s1, s2 = 0.0, 0.0
        for t in range(sums.shape[0]):
            s1 += sums[t, c]
            s2 += sums[t, C + c]
        shift = np.float64(W[MOVING_MEAN, c])
        d = s1 / count
        mean = shift + d
        var = max(s2 / count - d * d, 0.0)
        stats[MEAN, c] = mean
        stats[INV_STD, c] = 1.0 / np.sqrt(var + eps)
        W[MOVING_MEAN, c] = momentum * shift + (1.0 - momentum) * mean
        W[MOVING_VAR, c] = momentum * np.float64(W[MOVING_VAR, c]) + (1.0 - momentum) * var


@njit(cache=True)
def norm_apply_block(x, W, b, stats, lo, hi, out):
    """out[r] <- γ (x[r] - mean) / std + β for rows [lo, hi)."""
    C = x.shape[1]
    for r in range(lo, hi):
        for c in range(C):
            xhat = (np.float64(x[r, c]) - stats[MEAN, c]) * stats[INV_STD, c]
            out[r, c] = W[GAMMA, c] * xhat + b[c]


@njit(cache=True)
def norm_grad_sums_block(x, d, stats, lo, hi, sums):
    """sums[:C] <- Σ δ[r], sums[C:] <- Σ δ[r] · x̂[r] over rows [lo, hi)."""
    C = x.shape[1]
    for c in range(2 * C):
        sums[c] = 0.0
    for r in range(lo, hi):
        for c in range(C):
            g = np.float64(d[r, c])
            sums[c] += g
            sums[C + c] += g * (np.float64(x[r, c]) - stats[MEAN, c]) * stats[INV_STD, c]


@njit(cache=True)
def norm_grad_statistics(sums, stats, gW, gb):
    """Σδ (β's gradient) and Σδ·x̂ (γ's) per channel, from the threads' partial sums."""
    C = stats.shape[1]
    for c in range(C):
        s1, s2 = 0.0, 0.0
        for t in range(sums.shape[0]):
            s1 += sums[t, c]
            s2 += sums[t, C + c]
        stats[SUM_D, c] = s1
        stats[SUM_D_XHAT, c] = s2
        gb[c] = s1
        gW[GAMMA, c] = s2
        gW[MOVING_MEAN, c] = 0  # the moving statistics are not learned
        gW[MOVING_VAR, c] = 0


@njit(cache=True)
def norm_delta_below_block(x, d, W, stats, count, x_act, lo, hi, dx):
    """dx[r] <- γ/std · (δ[r] - Σδ/n - x̂[r] Σδx̂/n) · f'(x[r]) for rows [lo, hi), n = count;
    f' of the activation ``x_act`` that produced x."""
    C = x.shape[1]
    per_row = 1.0 / count  # (Σδ/n and Σδx̂/n: a multiply per element, not two divisions)
    for r in range(lo, hi):
        for c in range(C):
            inv = stats[INV_STD, c]
            xhat = (np.float64(x[r, c]) - stats[MEAN, c]) * inv
            g = (np.float64(d[r, c]) - stats[SUM_D, c] * per_row
                 - xhat * stats[SUM_D_XHAT, c] * per_row) * W[GAMMA, c] * inv
            dx[r, c] = g * _dact_scalar(x[r, c], x_act)


@njit(cache=True)
def norm_inference_block(x, W, b, eps, lo, hi, out):
    """out[r] <- γ (x[r] - moving mean) / sqrt(moving var + ε) + β for rows [lo, hi)."""
    C = x.shape[1]
    for r in range(lo, hi):
        for c in range(C):
            inv = 1.0 / np.sqrt(np.float64(W[MOVING_VAR, c]) + eps)
            out[r, c] = W[GAMMA, c] * ((np.float64(x[r, c]) - W[MOVING_MEAN, c]) * inv) + b[c]


# ---- whole layers, as the training step runs them (tests and benches) -----------------------
# (Numba can segfault when a cached function calls a parallel one loaded from the cache, see
# sparse_input.py: train_steps holds these prange loops itself, over the same pieces.)
@njit(cache=True, parallel=True)
def batchnorm_forward(x, W, b, setting, stats, sums, out):
    """Training: out <- the normalized x, from the minibatch's statistics (x and out read as
    (rows, C)); stats keeps them for the backward; the moving statistics in W move."""
    T, n = sums.shape[0], x.shape[0]
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        norm_sums_block(x, W[MOVING_MEAN], lo, hi, sums[t])
    norm_statistics(sums, n, W, setting, stats)
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        norm_apply_block(x, W, b, stats, lo, hi, out)


def batchnorm_forward_ref(x, W, b, setting, stats, sums, out):
    x64 = x.astype(np.float64)
    shift = W[MOVING_MEAN].astype(np.float64)  # the kernel's sums, around the moving mean
    d = (x64 - shift).mean(axis=0)
    mean, var = shift + d, np.maximum(((x64 - shift) ** 2).mean(axis=0) - d * d, 0)
    stats[MEAN], stats[INV_STD] = mean, 1 / np.sqrt(var + setting[EPSILON])
    momentum = setting[MOMENTUM]
    W[MOVING_MEAN] = momentum * W[MOVING_MEAN] + (1 - momentum) * mean
    W[MOVING_VAR] = momentum * W[MOVING_VAR] + (1 - momentum) * var
    out[...] = W[GAMMA] * ((x64 - stats[MEAN]) * stats[INV_STD]) + b


@njit(cache=True, parallel=True)
def batchnorm_backward(x, d, W, x_act, stats, sums, gW, gb, dx):
    """From δ of the output: the gradients of γ (gW's first row) and β (gb), and, unless dx
    has no rows (no layer below learns), the δ of the input times f' of ``x_act``."""
    T, n = sums.shape[0], x.shape[0]
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        norm_grad_sums_block(x, d, stats, lo, hi, sums[t])
    norm_grad_statistics(sums, stats, gW, gb)
    if dx.shape[0] > 0:
        for t in prange(T):
            lo, hi = thread_block(n, T, t)
            norm_delta_below_block(x, d, W, stats, n, x_act, lo, hi, dx)


def batchnorm_backward_ref(x, d, W, x_act, stats, sums, gW, gb, dx):
    n = x.shape[0]
    d64 = d.astype(np.float64)
    xhat = (x.astype(np.float64) - stats[MEAN]) * stats[INV_STD]
    stats[SUM_D], stats[SUM_D_XHAT] = d64.sum(axis=0), (d64 * xhat).sum(axis=0)
    gb[...] = stats[SUM_D]
    gW[...] = 0
    gW[GAMMA] = stats[SUM_D_XHAT]
    if dx.shape[0]:
        dx[...] = W[GAMMA] * stats[INV_STD] * (d64 - stats[SUM_D] / n - xhat * stats[SUM_D_XHAT] / n)
        derivative_mul_ref(dx, x, x_act)


@njit(cache=True, parallel=True)
def batchnorm_inference(x, W, b, eps, out):
    """Inference: out <- x normalized with the moving statistics."""
    for r in prange(x.shape[0]):
        norm_inference_block(x, W, b, eps, r, r + 1, out)


def batchnorm_inference_ref(x, W, b, eps, out):
    inv = 1 / np.sqrt(W[MOVING_VAR].astype(np.float64) + eps)
    out[...] = W[GAMMA] * ((x.astype(np.float64) - W[MOVING_MEAN]) * inv) + b
