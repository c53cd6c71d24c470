"""First layer that skips zero inputs (MNIST pixels are ~80 % zero).

Forward: out <- f(X[rows] @ W + b), reading the rows straight from X (the minibatch gather is
fused) and recording each row's nonzeros for the backward pass.
Backward: the weight gradient xᵀδ is folded into the optimizer's update row by row, so dW is
never stored: for each input j, g <- Σ_i x[i, j] δ[i] in a scratch row, then one optimizer step
on row j of W and of its state.
"""
import numpy as np
from numba import njit, prange

from .activations import activate_ref, activate_row
from .data import thread_block
from .optim import optimizer_update_ref, update_span


@njit(cache=True, inline="always")  # inlined where it is called: as fast as writing it out
def add_scaled_rows(dst, src, rows, scales, begin, end):
    """dst += Σ scales[k] * src[rows[k]] for k in [begin, end): the inner loop of both the
    zero-skipping forward (rows of W) and the fused gradient (rows of δ)."""
    n = dst.shape[0]
    k = begin
    while k + 4 <= end:  # four source rows per pass: fewer loads and stores of dst
        r0, r1, r2, r3 = rows[k], rows[k + 1], rows[k + 2], rows[k + 3]
        c0, c1, c2, c3 = scales[k], scales[k + 1], scales[k + 2], scales[k + 3]
        for h in range(n):
            dst[h] += c0 * src[r0, h] + c1 * src[r1, h] + c2 * src[r2, h] + c3 * src[r3, h]
        k += 4
    while k < end:
        r0 = rows[k]
        c0 = scales[k]
        for h in range(n):
            dst[h] += c0 * src[r0, h]
        k += 1


@njit(cache=True)
def forward_row(x, W, b, act, o, nz_idx, nz_val):
    """o <- f(x @ W + b) for one input row x, skipping its zeros; returns how many nonzeros
    it recorded in nz_idx / nz_val."""
    n_in, n_out = W.shape
    nnz = 0
    for j in range(n_in):
        if x[j] != 0:
            nz_idx[nnz] = j
            nz_val[nnz] = x[j]
            nnz += 1
    for h in range(n_out):
        o[h] = b[h]
    add_scaled_rows(o, W, nz_idx, nz_val, 0, nnz)
    activate_row(o, act)
    return nnz


# Numba can segfault when a cached function calls a parallel one and is loaded from the cache
# (numba issues 8578, 4807): so every prange loop lives in the top-level kernel that is called
# from Python, here and in mlp.train_steps, and the helpers they call are serial.
@njit(cache=True, parallel=True)
def sparse_input_forward(X, rows, W, b, act, out, nz_idx, nz_val, nz_cnt):
    for i in prange(rows.shape[0]):
        nz_cnt[i] = forward_row(X[rows[i]], W, b, act, out[i], nz_idx[i], nz_val[i])


def sparse_input_forward_ref(X, rows, W, b, act, out, nz_idx, nz_val, nz_cnt):
    x = X[rows]
    n = rows.shape[0]
    for i in range(n):
        (idx,) = np.nonzero(x[i])
        nz_cnt[i] = idx.size
        nz_idx[i, : idx.size] = idx
        nz_val[i, : idx.size] = x[i, idx]
    np.dot(x, W, out=out[:n])
    out[:n] += b
    activate_ref(out[:n], act)


@njit(cache=True, inline="always")  # inlined into the prange loops: no call per row
def fused_update_row(j, W, S1, S2, delta, col_ptr, col_row, col_val, rule, h, c1, c2, g):
    """g <- Σ x[i, j] δ[i] over column j's nonzeros (row j of the weight gradient, never stored
    whole), then one step of the optimizer ``rule`` on row j of W and of its state S1, S2.

    g is a per-thread scratch row that stays in L1: the rows of W and of the state are then
    read and written in a single pass (W and the state do not fit in L2)."""
    for k in range(g.shape[0]):
        g[k] = 0
    add_scaled_rows(g, delta, col_row, col_val, col_ptr[j], col_ptr[j + 1])
    update_span(rule, W[j], g, S1[j], S2[j], h, c1, c2, True)


@njit(cache=True)
def count_columns(nz_idx, nz_cnt, i0, i1, counts):
    """counts[j] <- how many of rows i0..i1-1 have input j nonzero."""
    for j in range(counts.shape[0]):
        counts[j] = 0
    for i in range(i0, i1):
        for k in range(nz_cnt[i]):
            counts[nz_idx[i, k]] += 1


@njit(cache=True)
def column_cursors(col_counts, n_in, col_ptr):
    """From per-block counts, col_ptr and each block's first slot in every column (written over
    col_counts), so that blocks filled in parallel keep the rows of a column in order."""
    col_ptr[0] = 0
    for j in range(n_in):
        p = col_ptr[j]
        for t in range(col_counts.shape[0]):
            c = col_counts[t, j]
            col_counts[t, j] = p
            p += c
        col_ptr[j + 1] = p


@njit(cache=True)
def fill_column_range(nz_idx, nz_val, nz_cnt, n, j0, j1, cursor, col_row, col_val):
    """The lists of input columns j0..j1-1 from rows 0..n-1, rows in increasing order; cursor[j]:
    column j's next free slot (col_ptr[j] at first, see ``column_cursors``). Each row's nonzeros
    are in increasing column order, so a binary search finds the row's first column >= j0.
    Threads filling disjoint ranges of columns write disjoint slots: each thread fills its
    columns in the parallel region that then updates their rows of W, with no region of its own."""
    for i in range(n):
        idx, cnt = nz_idx[i], nz_cnt[i]
        lo, hi = 0, cnt
        while lo < hi:
            mid = (lo + hi) >> 1
            if idx[mid] < j0:
                lo = mid + 1
            else:
                hi = mid
        k = lo
        while k < cnt and idx[k] < j1:
            j = idx[k]
            p = cursor[j]
            col_row[p] = i
            col_val[p] = nz_val[i, k]
            cursor[j] = p + 1
            k += 1


@njit(cache=True)
def count_column_blocks(nz_idx, nz_cnt, n, col_counts):
    """col_counts[t] <- count_columns over the t-th of col_counts.shape[0] blocks of rows 0..n-1,
    as ``train_steps``' threads count them in its forward region, a block each."""
    blocks = col_counts.shape[0]
    for t in range(blocks):
        lo, hi = thread_block(n, blocks, t)
        count_columns(nz_idx, nz_cnt, lo, hi, col_counts[t])


@njit(cache=True)
def fill_and_update_rows(j0, j1, nz_idx, nz_val, nz_cnt, n, W, S1, S2, delta, col_ptr, col_row,
                         col_val, cursor, rule, h, c1, c2, g):
    """Rows j0..j1-1 of the zero-skipping layer's W (one thread's): their columns' lists from the
    minibatch's nonzeros, then each row's gradient folded into the optimizer's update."""
    fill_column_range(nz_idx, nz_val, nz_cnt, n, j0, j1, cursor, col_row, col_val)
    for j in range(j0, j1):
        fused_update_row(j, W, S1, S2, delta, col_ptr, col_row, col_val, rule, h, c1, c2, g)


@njit(cache=True, parallel=True)
def sparse_input_backward_update(nz_idx, nz_val, nz_cnt, delta, W, S1, S2, rule, h, c1, c2,
                                 col_ptr, col_row, col_val, col_counts, scratch):
    """The weight gradient of the zero-skipping layer folded into the optimizer's update, as
    ``train_steps`` runs it: delta (n, d_out) is the gradient at the layer's pre-activation;
    col_ptr (d_in + 1,), col_row and col_val (n * d_in,), col_counts (k, d_in) and scratch
    (threads, d_out) are scratch."""
    n = delta.shape[0]
    count_column_blocks(nz_idx, nz_cnt, n, col_counts)
    column_cursors(col_counts, W.shape[0], col_ptr)
    T = scratch.shape[0]
    for t in prange(T):  # thread t: a contiguous block of rows (interleaved rows share lines)
        j0, j1 = thread_block(W.shape[0], T, t)
        fill_and_update_rows(j0, j1, nz_idx, nz_val, nz_cnt, n, W, S1, S2, delta, col_ptr,
                             col_row, col_val, col_counts[0], rule, h, c1, c2, scratch[t])


def sparse_input_backward_update_ref(nz_idx, nz_val, nz_cnt, delta, W, S1, S2, rule, h, c1, c2,
                                     col_ptr, col_row, col_val, col_counts, scratch):
    n = delta.shape[0]
    x = np.zeros((n, W.shape[0]), dtype=W.dtype)
    for i in range(n):
        x[i, nz_idx[i, : nz_cnt[i]]] = nz_val[i, : nz_cnt[i]]
    optimizer_update_ref(rule, W, x.T @ delta, S1, S2, h, c1, c2, True)
