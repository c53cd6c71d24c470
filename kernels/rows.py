"""Inference of a network of dense layers row by row, in one call with few arguments: for small
batches (the layer-table ``forward`` types its ~130 arrays at every call, ~20 us of a single
image's ~25) and for mostly-zero inputs. Each row goes through every layer as a vector, each
layer skipping its input's zeros (the image's background, ReLU's zeros), the rows split among
Numba's threads."""
import numpy as np
from numba import njit, prange

from .activations import activate_ref
from .data import thread_block
from .sparse_input import forward_row


@njit(cache=True)
def _rows_forward(X, begin, end, Ws, bs, acts, out, a, b, nz_idx, nz_val):
    """out[r] <- the network's logits of row X[r] for r in [begin, end); a, b: activation
    vectors of the widest layer; nz_idx, nz_val: the widest fan-in."""
    last = len(Ws) - 1
    for r in range(begin, end):
        src = X[r]
        for l in range(last + 1):
            W = Ws[l]
            dst = out[r] if l == last else (a if l % 2 == 0 else b)[:W.shape[1]]
            forward_row(src, W, bs[l], acts[l], dst, nz_idx, nz_val)
            src = dst


@njit(cache=True)
def _widest(Ws):
    fan_in, width = 0, 0
    for l in range(len(Ws)):
        fan_in = max(fan_in, Ws[l].shape[0])
        width = max(width, Ws[l].shape[1])
    return fan_in, width


@njit(cache=True, parallel=True)
def dense_rows_forward(X, Ws, bs, acts, out, blocks):
    """out <- the logits of every row of X through dense layers Ws[l], bs[l] with activation
    codes acts[l]; the rows in ``blocks`` blocks on Numba's threads (one block: this thread
    only, at no cost over a serial function)."""
    fan_in, width = _widest(Ws)
    n = X.shape[0]
    T = max(1, min(n, blocks))
    for t in prange(T):
        begin, end = thread_block(n, T, t)
        a, b = np.empty(width, X.dtype), np.empty(width, X.dtype)
        nz_idx, nz_val = np.empty(fan_in, np.int32), np.empty(fan_in, X.dtype)
        _rows_forward(X, begin, end, Ws, bs, acts, out, a, b, nz_idx, nz_val)


def dense_rows_forward_ref(X, Ws, bs, acts, out, blocks):
    """NumPy twin of :func:`dense_rows_forward` (the blocks change nothing)."""
    h = X
    for W, b, act in zip(Ws, bs, acts):
        h = h @ W + b
        activate_ref(h, act)
    out[...] = h
