"""Registers every kernel pair, with a case generator used by the tests and the benches."""
import numpy as np

from . import activations as A
from .data import argmax_rows, argmax_rows_ref, gather_rows, gather_rows_ref
from .dense import dense_backward, dense_backward_ref, dense_forward, dense_forward_ref
from .loss import softmax, softmax_cross_entropy, softmax_cross_entropy_ref, softmax_ref
from .mlp import (forward, forward_ref, forward_sparse_input, forward_sparse_input_ref,
                  make_workspace, train_steps, train_steps_ref)
from .optim import momentum_update, momentum_update_ref
from .registry import register
from .sparse_input import (sparse_input_backward_momentum, sparse_input_backward_momentum_ref,
                           sparse_input_forward, sparse_input_forward_ref)


def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _sparse_images(rng, n, d, dtype, density=0.2):
    """MNIST-like rows: mostly zeros, the rest in (0, 1]."""
    x = rng.random((n, d))
    x[rng.random((n, d)) > density] = 0
    return x.astype(dtype)


def _activated(rng, shape, dtype, act):
    z = _normal(rng, shape, dtype)
    A.activate_ref(z, act)
    return z


def _dense_forward_case(rng, c):
    return (_normal(rng, (c.batch, c.n_in), c.dtype), _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1),
            _normal(rng, c.n_out, c.dtype), c.act, np.zeros((c.batch, c.n_out), c.dtype))


def _dense_backward_case(rng, c):
    return (_activated(rng, (c.batch, c.n_in), c.dtype, c.act),
            _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1), _normal(rng, (c.batch, c.n_out), c.dtype),
            c.act, np.zeros((c.n_in, c.n_out), c.dtype), np.zeros(c.n_out, c.dtype),
            np.zeros((c.batch, c.n_in), c.dtype))


def _nonzeros(x):
    n, d = x.shape
    idx = np.zeros((n, d), np.int32)
    val = np.zeros((n, d), x.dtype)
    cnt = np.zeros(n, np.int32)
    for i in range(n):
        (nz,) = np.nonzero(x[i])
        cnt[i] = nz.size
        idx[i, :nz.size] = nz
        val[i, :nz.size] = x[i, nz]
    return idx, val, cnt


def _sparse_forward_case(rng, c):
    X = _sparse_images(rng, 2 * c.batch + 3, c.n_in, c.dtype)
    rows = rng.permutation(X.shape[0])[:c.batch].astype(np.int64)
    return (X, rows, _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1), _normal(rng, c.n_out, c.dtype),
            c.act, np.zeros((c.batch, c.n_out), c.dtype), np.zeros((c.batch, c.n_in), np.int32),
            np.zeros((c.batch, c.n_in), c.dtype), np.zeros(c.batch, np.int32))


def _sparse_backward_case(rng, c):
    idx, val, cnt = _nonzeros(_sparse_images(rng, c.batch, c.n_in, c.dtype))
    t = np.dtype(c.dtype).type
    return (idx, val, cnt, _normal(rng, (c.batch, c.n_out), c.dtype),
            _normal(rng, (c.n_in, c.n_out), c.dtype, 0.1), _normal(rng, c.n_out, c.dtype),
            _normal(rng, (c.n_in, c.n_out), c.dtype, 0.01), _normal(rng, c.n_out, c.dtype, 0.01),
            t(0.1), t(0.9), t(1e-3), np.zeros(c.n_in + 1, np.int64),
            np.zeros(c.batch * c.n_in, np.int32), np.zeros(c.batch * c.n_in, c.dtype),
            np.zeros((1, c.n_in), np.int64))


def _loss_case(rng, c):
    logits = _normal(rng, (c.batch, c.n_out), c.dtype, 3.0)
    return (logits, rng.integers(0, c.n_out, c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_out), c.dtype))


def _softmax_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype, 3.0), np.zeros((c.batch, c.n_out), c.dtype))


def _momentum_case(rng, c):
    t = np.dtype(c.dtype).type
    shape = (c.n_in, c.n_out)
    return (_normal(rng, shape, c.dtype), _normal(rng, shape, c.dtype, 0.1),
            _normal(rng, shape, c.dtype, 0.1), t(0.1), t(0.9), t(5e-4))


def _gather_case(rng, c):
    X = _normal(rng, (3 * c.batch + 1, c.n_in), c.dtype)
    return (X, rng.integers(0, X.shape[0], c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_in), c.dtype))


def _argmax_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype), np.zeros(c.batch, np.int64))


def _activate_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype, 3.0), c.act)


def _derivative_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype),
            _activated(rng, (c.batch, c.n_out), c.dtype, c.act), c.act)


def _network(rng, sizes, dtype):
    Ws = tuple(_normal(rng, (a, b), dtype, 1 / np.sqrt(a)) for a, b in zip(sizes[:-1], sizes[1:]))
    bs = tuple(_normal(rng, b, dtype, 0.1) for b in sizes[1:])
    return Ws, bs


def _forward_case(rng, c):
    sizes = (c.n_in, c.n_out, max(c.n_out // 2, 3), 10)
    Ws, bs = _network(rng, sizes, c.dtype)
    ws = make_workspace(sizes, c.batch, c.dtype)
    return (_normal(rng, (c.batch, c.n_in), c.dtype), Ws, bs, c.act, ws.acts)


def _forward_sparse_input_case(rng, c):
    sizes = (c.n_in, c.n_out, max(c.n_out // 2, 3), 10)
    Ws, bs = _network(rng, sizes, c.dtype)
    ws = make_workspace(sizes, c.batch, c.dtype)
    X = _sparse_images(rng, 2 * c.batch + 3, c.n_in, c.dtype)
    rows = rng.permutation(X.shape[0])[:c.batch].astype(np.int64)
    return (X, rows, Ws, bs, c.act, ws.acts, ws.nz_idx, ws.nz_val)


def _train_steps_case(rng, c):
    """Two hidden layers, three steps, the last one ragged."""
    sizes = (c.n_in, c.n_out, max(c.n_out // 2, 3), 10)
    t = np.dtype(c.dtype).type
    Ws, bs = _network(rng, sizes, c.dtype)
    vWs = tuple(np.zeros_like(w) for w in Ws)
    vbs = tuple(np.zeros_like(b) for b in bs)
    n = 2 * c.batch + max(c.batch // 2, 1)
    X = _sparse_images(rng, n, c.n_in, c.dtype)
    y = rng.integers(0, 10, n).astype(np.int64)
    ws = make_workspace(sizes, c.batch, c.dtype)
    return (X, y, rng.permutation(n).astype(np.int64), c.batch, 0, 3, Ws, bs, vWs, vbs,
            ws.acts, ws.deltas, ws.grad_W, ws.grad_b, ws.xb, ws.yb, ws.nz_idx, ws.nz_val,
            ws.nz_cnt, ws.col_ptr, ws.col_row, ws.col_val, ws.col_counts, c.act, t(0.05), t(0.9),
            t(1e-4), c.sparse_input)


def _mlp_flops(c):
    return 2 * c.batch * c.n_in * c.n_out


register("activate", fast=A.activate, reference=A.activate_ref, make_case=_activate_case,
         outputs=(0,))
register("derivative_mul", fast=A.derivative_mul, reference=A.derivative_mul_ref,
         make_case=_derivative_case, outputs=(0,))
register("dense_forward", fast=dense_forward, reference=dense_forward_ref,
         make_case=_dense_forward_case, outputs=(4,), flops=_mlp_flops)
register("dense_backward", fast=dense_backward, reference=dense_backward_ref,
         make_case=_dense_backward_case, outputs=(4, 5, 6), flops=lambda c: 2 * _mlp_flops(c))
register("sparse_input_forward", fast=sparse_input_forward, reference=sparse_input_forward_ref,
         make_case=_sparse_forward_case, outputs=(5, 6, 7, 8), flops=_mlp_flops)
register("sparse_input_backward_momentum", fast=sparse_input_backward_momentum,
         reference=sparse_input_backward_momentum_ref, make_case=_sparse_backward_case,
         outputs=(4, 5, 6, 7), flops=_mlp_flops)
register("softmax_cross_entropy", fast=softmax_cross_entropy, reference=softmax_cross_entropy_ref,
         make_case=_loss_case, outputs=(2,), compares_return=True)
register("softmax", fast=softmax, reference=softmax_ref, make_case=_softmax_case, outputs=(1,))
register("momentum_update", fast=momentum_update, reference=momentum_update_ref,
         make_case=_momentum_case, outputs=(0, 1))
register("gather_rows", fast=gather_rows, reference=gather_rows_ref, make_case=_gather_case,
         outputs=(2,))
register("argmax_rows", fast=argmax_rows, reference=argmax_rows_ref, make_case=_argmax_case,
         outputs=(1,))
register("forward", fast=forward, reference=forward_ref, make_case=_forward_case, outputs=(4,))
register("forward_sparse_input", fast=forward_sparse_input, reference=forward_sparse_input_ref,
         make_case=_forward_sparse_input_case, outputs=(5,))
register("train_steps", fast=train_steps, reference=train_steps_ref, make_case=_train_steps_case,
         outputs=(6, 7, 8, 9), compares_return=True)
