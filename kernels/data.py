"""Minibatch gather from a shuffled index."""
import numpy as np
from numba import njit


@njit(cache=True)
def gather_rows(X, rows, out):
    """out[i] <- X[rows[i]] for i < len(rows). (A loop: the slice assignment ``out[i, :] = ...``
    makes Numba compile its shape-mismatch error, string formatting and all: 4 s.)"""
    for i in range(rows.shape[0]):
        src, dst = X[rows[i]], out[i]
        for j in range(dst.shape[0]):
            dst[j] = src[j]


def gather_rows_ref(X, rows, out):
    np.take(X, rows, axis=0, out=out[: rows.shape[0]])


@njit(cache=True)
def copy_rows(src, out):
    """out[:n] <- src, n = len(src) (a plain loop: in a parallel function Numba's parfor pass
    mishandled the slice assignment ``out[:n] = src``)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            out[i, j] = src[i, j]


@njit(cache=True, inline="always")
def thread_block(n, T, t, align=1):
    """(lo, hi): thread t's contiguous block when T threads share n items (rows, samples,
    columns); each block but the last holds a multiple of ``align`` items (``align=16``:
    whole cache lines of float32 columns, which two threads would otherwise share)."""
    span = ((n + T - 1) // T + align - 1) // align * align
    return min(n, t * span), min(n, t * span + span)
