"""Dense layer: fused forward out = f(x @ W + b) and fused backward, side by side."""
import numpy as np
from numba import get_num_threads, njit, prange

from .activations import (activate_ref, activate_row, derivative_mul_row,
                          derivative_mul, derivative_mul_ref)
from .blas import NO_TRANS, TRANS, gemm, gemm_beta, row_stride
from .data import thread_block
from .optim import (BETA1, gemm_makes_velocity, momentum_step, optimizer_update,
                    optimizer_update_ref)

# A dense layer with at least this many weights runs on Numba's threads in the training step, a
# block of W's rows each (forward, δ below, gradient and update); a smaller one is one BLAS call
# on one thread (waking the other costs more than it saves). The plan carries it
# (Plan.threaded_min), so tests can lower it.
THREADED_MIN_WEIGHTS = 1 << 14
# From this many rows the forward's block product is BLAS's (see dense_partial_product).
# Fashion-MNIST 784-300-10 on 2 cores, microseconds per step (BLAS / without): batch 10
# 125-137 / 107-121, batch 16 149-158 / 151-169, batch 32 216-252 / 229-262.
BLAS_BLOCK_MIN_ROWS = 16
# The weight gradient is made a block of rows at a time, each block updated while it is still
# in cache: about this many bytes of it per block. Each block's product packs all of δ anew, so
# from BLAS_BLOCK_MIN_ROWS rows on the blocks are large (64 KiB blocks cost ~10 % at batch 256,
# 784-300-10 on 2 cores), and below it small (1 MiB blocks cost ~8 % at batch 10).
GRAD_BLOCK_BYTES = 1 << 20
SMALL_GRAD_BLOCK_BYTES = 1 << 16


@njit(cache=True)
def grad_block_rows(n_in, n_out, itemsize, rows):
    """Rows of the weight gradient per block (dense_grad_update_rows), for ``rows`` rows of
    δ."""
    size = GRAD_BLOCK_BYTES if rows >= BLAS_BLOCK_MIN_ROWS else SMALL_GRAD_BLOCK_BYTES
    return max(1, min(n_in, size // (n_out * itemsize)))


# ---- forward ---------------------------------------------------------------------------
@njit(cache=True)
def dense_forward(x, W, b, act, out):
    """out <- f(x @ W + b); x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out)."""
    np.dot(x, W, out)
    for i in range(out.shape[0]):
        o = out[i]
        for j in range(o.shape[0]):
            o[j] += b[j]
        activate_row(o, act)


def dense_forward_ref(x, W, b, act, out):
    np.dot(x, W, out=out)
    out += b
    activate_ref(out, act)


@njit(cache=True)
def partial_product_rows(x, W, k0, k1, part):
    """part (n, d_out) <- x[:, k0:k1] @ W[k0:k1], without BLAS, for a few rows (a small
    minibatch), where BLAS's packing of W's block costs more than the product. Four rows of W
    at a time are read once, from L1, for every row of x, along whole rows of W; four inputs
    that are all zero are skipped."""
    n = x.shape[0]
    for i in range(n):
        p = part[i]
        for h in range(p.shape[0]):
            p[h] = 0
    k = k0
    while k + 4 <= k1:
        w0, w1, w2, w3 = W[k], W[k + 1], W[k + 2], W[k + 3]
        for i in range(n):
            c0, c1, c2, c3 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
            if c0 != 0 or c1 != 0 or c2 != 0 or c3 != 0:
                p = part[i]
                for h in range(p.shape[0]):
                    p[h] += c0 * w0[h] + c1 * w1[h] + c2 * w2[h] + c3 * w3[h]
        k += 4
    while k < k1:
        w0 = W[k]
        for i in range(n):
            c0 = x[i, k]
            if c0 != 0:
                p = part[i]
                for h in range(p.shape[0]):
                    p[h] += c0 * w0[h]
        k += 1


@njit(cache=True)
def dense_partial_product(x, W, k0, k1, part):
    """part (n, d_out) <- x[:, k0:k1] @ W[k0:k1]: one thread's share of a dense layer's
    forward, by BLAS on one thread from BLAS_BLOCK_MIN_ROWS rows of x on, reading x's block of
    columns where it lies. The same thread updates the same rows of W
    (dense_grad_update_rows), so they stay in its core's cache from step to step, and BLAS packs
    just this block of W."""
    n, m = part.shape
    if n < BLAS_BLOCK_MIN_ROWS:
        partial_product_rows(x, W, k0, k1, part)
    elif k1 == k0:
        part[:] = 0
    else:  # part^T = W[k0:k1]^T x[:, k0:k1]^T, column-major
        gemm(NO_TRANS, NO_TRANS, m, n, k1 - k0, W[k0:], m, x[:, k0:], row_stride(x), part, m)


@njit(cache=True)
def dense_sum_partials(parts, b, act, out, lo, hi):
    """Rows lo..hi-1 of out (n, d_out) <- f(Σ_t parts[t] + b), parts[t] holding (n, d_out)
    values row-major (a block of rows per thread)."""
    m = out.shape[1]
    for i in range(lo, hi):
        o = out[i]
        for h in range(m):
            o[h] = b[h]
        for t in range(parts.shape[0]):
            p = parts[t][i * m:i * m + m]
            for h in range(m):
                o[h] += p[h]
        activate_row(o, act)


@njit(cache=True, parallel=True)
def dense_forward_threaded(x, W, b, act, out, parts):
    """dense_forward as ``train_steps`` runs a large layer on Numba's threads: a block of W's
    rows per thread, each thread's partial product in its own parts[t] (at least n·d_out
    values), then their sum, a block of rows per thread."""
    n, m = out.shape
    T = parts.shape[0]
    for t in prange(T):
        k0, k1 = thread_block(W.shape[0], T, t)
        dense_partial_product(x, W, k0, k1, parts[t][:n * m].reshape(n, m))
    for t in prange(T):
        lo, hi = thread_block(n, T, t)
        dense_sum_partials(parts, b, act, out, lo, hi)


def dense_forward_threaded_ref(x, W, b, act, out, parts):
    dense_forward_ref(x, W, b, act, out)


# ---- backward --------------------------------------------------------------------------
@njit(cache=True)
def dense_backward(x, W, delta, x_act, dW, db, delta_prev):
    """dW <- xᵀ δ, db <- Σ δ, and, when delta_prev has rows, δ_prev <- (δ Wᵀ) ⊙ f'(x).

    x is the layer's input, itself the output of the previous layer's activation x_act.
    Pass delta_prev with zero rows for the first layer, whose input needs no gradient.
    """
    np.dot(x.T, delta, dW)
    column_sums(delta, db)
    if delta_prev.shape[0] > 0:
        dense_delta_below(delta, W, x, x_act, delta_prev)


def dense_backward_ref(x, W, delta, x_act, dW, db, delta_prev):
    np.dot(x.T, delta, out=dW)
    np.sum(delta, axis=0, out=db)
    if delta_prev.shape[0] > 0:
        np.dot(delta, W.T, out=delta_prev)
        derivative_mul_ref(delta_prev, x, x_act)


@njit(cache=True)
def column_sums(delta, out):
    """out <- Σ_i delta[i] (the bias gradient)."""
    for h in range(out.shape[0]):
        out[h] = 0
    for i in range(delta.shape[0]):
        for h in range(out.shape[0]):
            out[h] += delta[i, h]


# ---- backward on threads, the weight gradient folded into the optimizer's update -----------
@njit(cache=True)
def dense_delta_below(delta, W, x, x_act, delta_prev):
    """δ_prev <- (δ Wᵀ) ⊙ f'(x), on any block of rows (x is the layer's input, x_act the
    activation that made it)."""
    np.dot(delta, W.T, delta_prev)
    derivative_mul(delta_prev, x, x_act)


@njit(cache=True)
def dense_grad_update_rows(x, delta, j0, j1, W, gW, S1, S2, rule, h, c1, c2):
    """Rows j0..j1-1 of the weight gradient, gW <- xᵀδ, made a block of rows at a time, each
    block then taking one step of the optimizer ``rule`` on the same rows of W and its state S1,
    S2 while it is in cache. SGD without Nesterov makes its velocity S1 <- μS1 + xᵀδ in the
    product itself (optim.gemm_makes_velocity), and leaves gW as it was."""
    n, m = delta.shape
    block = grad_block_rows(W.shape[0], m, W.itemsize, n)
    into_velocity = gemm_makes_velocity(rule, h)
    for r0 in range(j0, j1, block):
        r1 = min(j1, r0 + block)
        # gW[r0:r1]^T = δ^T x[:, r0:r1], column-major
        if into_velocity:
            gemm_beta(NO_TRANS, TRANS, m, r1 - r0, n, delta, m, x[:, r0:], row_stride(x),
                      h[BETA1], S1[r0:], m)
            momentum_step(W[r0:r1].reshape(-1), S1[r0:r1].reshape(-1), h, np.bool_(True))
            continue
        gemm(NO_TRANS, TRANS, m, r1 - r0, n, delta, m, x[:, r0:], row_stride(x), gW[r0:], m)
        # (the step's own optimizer_update, with the step's argument types: compiled once)
        optimizer_update(rule, W[r0:r1].reshape(-1), gW[r0:r1].reshape(-1),
                         S1[r0:r1].reshape(-1), S2[r0:r1].reshape(-1), h, c1, c2, np.bool_(True))


@njit(cache=True)
def dense_backward_update_rows(x, delta, j0, j1, W, gW, S1, S2, rule, h, c1, c2, x_act,
                               delta_prev):
    """One thread's share of a dense layer's backward on threads: where delta_prev has rows,
    its columns j0..j1-1, δ_prev <- (δ W[j0:j1]ᵀ) ⊙ f'(x), from rows j0..j1-1 of W before they
    change; then those rows' gradient and update (dense_grad_update_rows). Each thread reads and
    writes only its own rows of W."""
    n, m = delta.shape
    if delta_prev.shape[0] > 0 and j1 > j0:
        # δ_prev[:, j0:j1]^T = W[j0:j1] δ^T, column-major
        gemm(TRANS, NO_TRANS, j1 - j0, n, m, W[j0:], m, delta, m, delta_prev[:, j0:],
             row_stride(delta_prev))
        for i in range(n):
            derivative_mul_row(delta_prev[i, j0:j1], x[i, j0:j1], x_act)
    dense_grad_update_rows(x, delta, j0, j1, W, gW, S1, S2, rule, h, c1, c2)


# Numba can segfault when a cached function calls a parallel one loaded from the cache (see
# sparse_input.py): this top-level kernel, for the tests and benches, and train_steps each
# hold their own prange loops over the serial helpers above.
@njit(cache=True, parallel=True)
def dense_backward_update(x, W, b, delta, x_act, gW, gb, delta_prev, S1, S2, s1b, s2b, rule, h,
                          c1, c2):
    """dense_backward and the optimizer's update of W and b, as ``train_steps`` runs a layer
    of at least THREADED_MIN_WEIGHTS weights: a block of W's rows per thread, its columns of
    δ_prev first (dense_backward_update_rows). gW is scratch (SGD's velocity is made without
    it)."""
    T = get_num_threads()
    for t in prange(T):
        j0, j1 = thread_block(W.shape[0], T, t)
        dense_backward_update_rows(x, delta, j0, j1, W, gW, S1, S2, rule, h, c1, c2, x_act,
                                   delta_prev)
    column_sums(delta, gb)
    optimizer_update(rule, b, gb, s1b, s2b, h, c1, c2, np.bool_(False))  # as train_steps


def dense_backward_update_ref(x, W, b, delta, x_act, gW, gb, delta_prev, S1, S2, s1b, s2b, rule,
                              h, c1, c2):
    dense_backward_ref(x, W, delta, x_act, gW, gb, delta_prev)
    optimizer_update_ref(rule, W, gW, S1, S2, h, c1, c2, True)
    optimizer_update_ref(rule, b, gb, s1b, s2b, h, c1, c2, False)
