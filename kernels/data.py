"""Minibatch gather from a shuffled index."""
import numpy as np
from numba import njit


@njit(cache=True)
def gather_rows(X, rows, out):
    """out[i] <- X[rows[i]] for i < len(rows)."""
    for i in range(rows.shape[0]):
        out[i, :] = X[rows[i]]


def gather_rows_ref(X, rows, out):
    np.take(X, rows, axis=0, out=out[: rows.shape[0]])
