"""Inverted dropout: kept units scaled by 1/(1-rate) in training, nothing at inference.

Masks come from a counter-based hash (splitmix64) of (seed, epoch, step, layer, element), so
both backends draw the same masks, and a resumed run draws the ones the uninterrupted run did.
Each 64-bit hash gives the keep decisions of two neighbouring elements (32 bits each).
"""
import numpy as np
from numba import njit

from .activations import derivative_mul, derivative_mul_ref

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def stream_key(seed, epoch, step, layer):
    """The key of one layer's masks in one step: a hash of the four counters."""
    k = mix64(np.uint64(seed) + _GOLDEN)
    k = mix64(k ^ (np.uint64(epoch) + _GOLDEN))
    k = mix64(k ^ (np.uint64(step) + _GOLDEN))
    return mix64(k ^ (np.uint64(layer) + _GOLDEN))


def keep_threshold(rate):
    """A unit is dropped when its 32 random bits are below this."""
    return np.uint64(min(int(round(rate * 2.0 ** 32)), 2 ** 32))


@njit(cache=True, inline="always")
def dropout_row(x, key, row, threshold, scale, mask, out):
    """mask <- 0 or scale per element of row ``row``, out <- x * mask."""
    m = x.shape[0]
    half = (m + 1) // 2
    base = np.uint64(row) * np.uint64(half)
    zero = scale - scale
    for p in range(m // 2):  # no branch in this loop: LLVM vectorizes it
        h = mix64(key + (base + np.uint64(p)) * _GOLDEN)
        m0 = scale if (h >> _S32) >= threshold else zero
        m1 = scale if (h & _LOW32) >= threshold else zero
        mask[2 * p] = m0
        mask[2 * p + 1] = m1
        out[2 * p] = x[2 * p] * m0
        out[2 * p + 1] = x[2 * p + 1] * m1
    if m % 2:
        h = mix64(key + (base + np.uint64(m // 2)) * _GOLDEN)
        mask[m - 1] = scale if (h >> _S32) >= threshold else zero
        out[m - 1] = x[m - 1] * mask[m - 1]


@njit(cache=True)
def dropout_forward(x, key, threshold, scale, mask, out):
    """out <- x * mask for every row, with a fresh mask (scale = 1/(1-rate), in x's dtype)."""
    for i in range(x.shape[0]):
        dropout_row(x[i], key, i, threshold, scale, mask[i], out[i])


def _hashes(key, n, m):
    half = (m + 1) // 2
    counters = (np.arange(n, dtype=np.uint64)[:, None] * np.uint64(half)
                + np.arange(half, dtype=np.uint64)[None, :])
    z = key + counters * _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def dropout_forward_ref(x, key, threshold, scale, mask, out):
    n, m = x.shape
    h = _hashes(np.uint64(key), n, m)
    bits = np.empty((n, 2 * h.shape[1]), np.uint64)
    bits[:, 0::2] = h >> _S32
    bits[:, 1::2] = h & _LOW32
    mask[...] = np.where(bits[:, :m] >= threshold, scale, 0).astype(mask.dtype)
    np.multiply(x, mask, out=out)


@njit(cache=True)
def dropout_backward(delta_out, mask, a_in, in_act, delta_in):
    """delta_in <- delta_out * mask * f'(z) of the layer that produced the dropout's input
    (f' taken from that layer's output a_in)."""
    n, m = delta_out.shape
    for i in range(n):
        for j in range(m):
            delta_in[i, j] = delta_out[i, j] * mask[i, j]
    derivative_mul(delta_in, a_in, in_act)


def dropout_backward_ref(delta_out, mask, a_in, in_act, delta_in):
    np.multiply(delta_out, mask, out=delta_in)
    derivative_mul_ref(delta_in, a_in, in_act)
