"""Minibatch gather from a shuffled index, and row-wise argmax."""
import numpy as np
from numba import njit


@njit(cache=True)
def gather_rows(X, rows, out):
    """out[i] <- X[rows[i]] for i < len(rows)."""
    for i in range(rows.shape[0]):
        out[i, :] = X[rows[i]]


def gather_rows_ref(X, rows, out):
    np.take(X, rows, axis=0, out=out[: rows.shape[0]])


@njit(cache=True)
def argmax_rows(P, out):
    n, k = P.shape
    for i in range(n):
        best = 0
        for j in range(1, k):
            if P[i, j] > P[i, best]:
                best = j
        out[i] = best


def argmax_rows_ref(P, out):
    np.argmax(P, axis=1, out=out)
