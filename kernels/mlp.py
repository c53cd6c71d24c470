"""Whole-network kernels: inference forward, and a run of training steps in one call.

``train_steps`` runs minibatch steps [step_begin, step_end) of an epoch entirely inside
compiled code, so small batches pay no Python per step. Its NumPy twin runs the same
steps as a plain Python loop over the reference kernels: textbook backprop.

Parameters and buffers travel as tuples with one array per layer (layer l maps
sizes[l] -> sizes[l + 1]); all hidden layers share one activation, the last is identity
followed by softmax cross-entropy.
"""
from collections import namedtuple

import numba
import numpy as np
from numba import njit, prange

from .activations import IDENTITY
from .data import gather_rows, gather_rows_ref
from .dense import dense_backward, dense_backward_ref, dense_forward, dense_forward_ref
from .loss import softmax_cross_entropy, softmax_cross_entropy_ref
from .optim import momentum_update, momentum_update_ref
from .sparse_input import (bias_update, build_columns, column_cursors, count_columns,
                           fill_columns, forward_row, update_row)

# From this many rows on, a minibatch's column lists are built on all threads (same result as
# the serial build; below it, the two extra parallel regions cost more than they save).
PARALLEL_COLUMNS_MIN_ROWS = 64

Workspace = namedtuple(
    "Workspace",
    "acts deltas grad_W grad_b xb yb nz_idx nz_val nz_cnt col_ptr col_row col_val col_counts")


def make_workspace(sizes, batch_size, dtype):
    """Every buffer one fit needs, made once: nothing is allocated per step."""
    dtype = np.dtype(dtype)
    outs = sizes[1:]
    n_in = sizes[0]
    return Workspace(
        acts=tuple(np.zeros((batch_size, m), dtype) for m in outs),
        deltas=tuple(np.zeros((batch_size, m), dtype) for m in outs),
        grad_W=tuple(np.zeros((a, b), dtype) for a, b in zip(sizes[:-1], sizes[1:])),
        grad_b=tuple(np.zeros(m, dtype) for m in outs),
        xb=np.zeros((batch_size, n_in), dtype),
        yb=np.zeros(batch_size, np.int64),
        nz_idx=np.zeros((batch_size, n_in), np.int32),
        nz_val=np.zeros((batch_size, n_in), dtype),
        nz_cnt=np.zeros(batch_size, np.int32),
        col_ptr=np.zeros(n_in + 1, np.int64),
        col_row=np.zeros(batch_size * n_in, np.int32),
        col_val=np.zeros(batch_size * n_in, dtype),
        # one block of rows per thread when the minibatch's columns are built in parallel
        col_counts=np.zeros((numba.get_num_threads(), n_in), np.int64),
    )


def layer_activation(layer, n_layers, act):
    return act if layer < n_layers - 1 else IDENTITY


# ---- inference ---------------------------------------------------------------------------
@njit(cache=True)
def forward_above_first(Ws, bs, act, acts, n):
    """Layers 1.. for n rows, once acts[0][:n] holds the first layer's output."""
    last = len(Ws) - 1
    for l in range(1, last + 1):
        dense_forward(acts[l - 1][:n], Ws[l], bs[l], act if l < last else IDENTITY, acts[l][:n])


@njit(cache=True)
def forward(x, Ws, bs, act, acts):
    """acts[l][:n] <- output of layer l for the rows of x; acts[-1] holds the logits."""
    n = x.shape[0]
    dense_forward(x, Ws[0], bs[0], act if len(Ws) > 1 else IDENTITY, acts[0][:n])
    forward_above_first(Ws, bs, act, acts, n)


def forward_ref(x, Ws, bs, act, acts):
    n = x.shape[0]
    inp = x
    for l in range(len(Ws)):
        dense_forward_ref(inp, Ws[l], bs[l], layer_activation(l, len(Ws), act), acts[l][:n])
        inp = acts[l][:n]


@njit(cache=True, parallel=True)  # its own prange loop: see the note in sparse_input.py
def forward_sparse_input(X, rows, Ws, bs, act, acts, nz_idx, nz_val):
    """forward() of the rows X[rows], with the zero-skipping first layer; nz_idx and nz_val
    (len(rows), n_in) are scratch."""
    W0, b0, a0 = Ws[0], bs[0], acts[0]
    act0 = act if len(Ws) > 1 else IDENTITY
    for i in prange(rows.shape[0]):
        forward_row(X[rows[i]], W0, b0, act0, a0[i], nz_idx[i], nz_val[i])
    forward_above_first(Ws, bs, act, acts, rows.shape[0])


def forward_sparse_input_ref(X, rows, Ws, bs, act, acts, nz_idx, nz_val):
    forward_ref(X[rows], Ws, bs, act, acts)


# ---- training ----------------------------------------------------------------------------
@njit(cache=True, parallel=True)  # its own prange loops: see the note in sparse_input.py
def train_steps(X, y, order, batch_size, step_begin, step_end, Ws, bs, vWs, vbs,
                acts, deltas, grad_W, grad_b, xb, yb, nz_idx, nz_val, nz_cnt,
                col_ptr, col_row, col_val, col_counts, act, lr, momentum, weight_decay,
                sparse_input):
    """SGD-with-momentum steps over order[step*batch : (step+1)*batch] for each step.

    Returns (sum over samples of the loss, number classified right, number of samples),
    measured on each minibatch before its update.
    """
    n_layers = len(Ws)
    last = n_layers - 1
    n = order.shape[0]
    loss_sum = 0.0
    correct = 0
    seen = 0
    for step in range(step_begin, step_end):
        start = step * batch_size
        stop = min(start + batch_size, n)
        nb = stop - start
        rows = order[start:stop]
        for i in range(nb):
            yb[i] = y[rows[i]]

        act0 = act if n_layers > 1 else IDENTITY
        if sparse_input:
            W0, b0, a0 = Ws[0], bs[0], acts[0]
            for i in prange(nb):
                nz_cnt[i] = forward_row(X[rows[i]], W0, b0, act0, a0[i], nz_idx[i], nz_val[i])
        else:
            gather_rows(X, rows, xb)
            dense_forward(xb[:nb], Ws[0], bs[0], act0, acts[0][:nb])
        forward_above_first(Ws, bs, act, acts, nb)

        loss, c = softmax_cross_entropy(acts[last][:nb], yb[:nb], deltas[last][:nb])
        loss_sum += loss * nb
        correct += c
        seen += nb

        for l in range(last, 0, -1):
            # δ of layer l-1 is computed from W[l] before W[l] is updated
            dense_backward(acts[l - 1][:nb], Ws[l], deltas[l][:nb], act, grad_W[l], grad_b[l],
                           deltas[l - 1][:nb])
            momentum_update(Ws[l], vWs[l], grad_W[l], lr, momentum, weight_decay)
            momentum_update(bs[l], vbs[l], grad_b[l], lr, momentum, weight_decay * 0)
        if sparse_input:
            W0, vW0, d0 = Ws[0], vWs[0], deltas[0][:nb]
            blocks = col_counts.shape[0]
            if nb >= PARALLEL_COLUMNS_MIN_ROWS and blocks > 1:
                span = (nb + blocks - 1) // blocks
                for t in prange(blocks):
                    count_columns(nz_idx, nz_cnt, min(t * span, nb), min(t * span + span, nb),
                                  col_counts[t])
                column_cursors(col_counts, W0.shape[0], col_ptr)
                for t in prange(blocks):
                    fill_columns(nz_idx, nz_val, nz_cnt, min(t * span, nb),
                                 min(t * span + span, nb), col_counts[t], col_row, col_val)
            else:
                build_columns(nz_idx, nz_val, nz_cnt, nb, col_counts, col_ptr, col_row, col_val)
            for j in prange(W0.shape[0]):
                update_row(j, W0, vW0, d0, col_ptr, col_row, col_val, lr, momentum, weight_decay)
            bias_update(bs[0], vbs[0], d0, lr, momentum)
        else:
            dense_backward(xb[:nb], Ws[0], deltas[0][:nb], IDENTITY, grad_W[0], grad_b[0],
                           deltas[0][:0])
            momentum_update(Ws[0], vWs[0], grad_W[0], lr, momentum, weight_decay)
            momentum_update(bs[0], vbs[0], grad_b[0], lr, momentum, weight_decay * 0)
    return loss_sum, correct, seen


def train_steps_ref(X, y, order, batch_size, step_begin, step_end, Ws, bs, vWs, vbs,
                    acts, deltas, grad_W, grad_b, xb, yb, nz_idx, nz_val, nz_cnt,
                    col_ptr, col_row, col_val, col_counts, act, lr, momentum, weight_decay,
                    sparse_input):
    n_layers = len(Ws)
    last = n_layers - 1
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(step_begin, step_end):
        rows = order[step * batch_size:(step + 1) * batch_size]
        nb = rows.shape[0]
        gather_rows_ref(X, rows, xb)
        x = xb[:nb]
        labels = y[rows]

        forward_ref(x, Ws, bs, act, acts)

        loss, c = softmax_cross_entropy_ref(acts[last][:nb], labels, deltas[last][:nb])
        loss_sum += loss * nb
        correct += c
        seen += nb

        for l in range(last, -1, -1):
            layer_input = acts[l - 1][:nb] if l > 0 else x
            delta_prev = deltas[l - 1][:nb] if l > 0 else deltas[0][:0]
            dense_backward_ref(layer_input, Ws[l], deltas[l][:nb], act, grad_W[l], grad_b[l],
                               delta_prev)
            momentum_update_ref(Ws[l], vWs[l], grad_W[l], lr, momentum, weight_decay)
            momentum_update_ref(bs[l], vbs[l], grad_b[l], lr, momentum, 0)
    return loss_sum, correct, seen
