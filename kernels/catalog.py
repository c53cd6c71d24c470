"""Registers every kernel pair, with a case generator used by the tests and the benches."""
import numpy as np

from . import activations as A
from .data import gather_rows, gather_rows_ref
from .dense import dense_backward, dense_backward_ref, dense_forward, dense_forward_ref
from .dropout import (dropout_backward, dropout_backward_ref, dropout_forward, dropout_forward_ref,
                      keep_threshold, stream_key)
from .loss import output_activation, output_activation_ref, output_loss, output_loss_ref
from .network import (DENSE, DROPOUT, Params, forward, forward_ref, forward_sparse_input,
                      forward_sparse_input_ref, make_plan, make_state, make_workspace, train_steps,
                      train_steps_ref)
from .optim import (ADAM, N_HYPER, ONE, OPTIMIZER_CODES, max_norm_columns, max_norm_columns_ref,
                    optimizer_update, optimizer_update_ref)
from .registry import register
from .sparse_input import (sparse_input_backward_update, sparse_input_backward_update_ref,
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


def _hyper(c, nesterov=1, decoupled=0):
    """Every optimizer's hyper-parameters at once, with weight decay on (see optim.LR...)."""
    h = np.zeros(N_HYPER, c.dtype)
    h[:7] = (0.05, 0.9, 0.99, 1e-6, 1e-3, nesterov, decoupled)
    h[ONE] = 1
    return h


def _corrections(c):
    t = np.dtype(c.dtype).type
    return (t(1 - 0.9 ** 3), t(1 - 0.99 ** 3)) if c.optimizer == ADAM else (t(1), t(1))


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
    import numba
    idx, val, cnt = _nonzeros(_sparse_images(rng, c.batch, c.n_in, c.dtype))
    shape = (c.n_in, c.n_out)
    return (idx, val, cnt, _normal(rng, (c.batch, c.n_out), c.dtype),
            _normal(rng, shape, c.dtype, 0.1), np.abs(_normal(rng, shape, c.dtype, 0.01)),
            np.abs(_normal(rng, shape, c.dtype, 0.01)), c.optimizer, _hyper(c), *_corrections(c),
            np.zeros(c.n_in + 1, np.int64), np.zeros(c.batch * c.n_in, np.int32),
            np.zeros(c.batch * c.n_in, c.dtype), np.zeros((1, c.n_in), np.int64),
            np.zeros((numba.get_num_threads(), c.n_out), c.dtype))


def _loss_case(rng, c):
    logits = _normal(rng, (c.batch, c.n_out), c.dtype, 3.0)
    return (c.loss, logits, rng.integers(0, c.n_out, c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_out), c.dtype))


def _output_activation_case(rng, c):
    return (c.loss, _normal(rng, (c.batch, c.n_out), c.dtype, 3.0),
            np.zeros((c.batch, c.n_out), c.dtype))


def _optimizer_case(rng, c, decay=True):
    shape = (c.n_in, c.n_out)
    # state slots are non-negative: RMSprop's and Adagrad's hold squares
    return (c.optimizer, _normal(rng, shape, c.dtype), _normal(rng, shape, c.dtype, 0.1),
            np.abs(_normal(rng, shape, c.dtype, 0.1)), np.abs(_normal(rng, shape, c.dtype, 0.1)),
            _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2), *_corrections(c), decay)


def _max_norm_case(rng, c):
    t = np.dtype(c.dtype).type
    # the limit is about the median column norm: some columns are rescaled, some are not
    return (_normal(rng, (c.n_in, c.n_out), c.dtype, 0.2), t(0.2 * np.sqrt(c.n_in)),
            np.zeros(c.n_out, c.dtype))


def _gather_case(rng, c):
    X = _normal(rng, (3 * c.batch + 1, c.n_in), c.dtype)
    return (X, rng.integers(0, X.shape[0], c.batch).astype(np.int64),
            np.zeros((c.batch, c.n_in), c.dtype))


def _activate_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype, 3.0), c.act)


def _derivative_case(rng, c):
    return (_normal(rng, (c.batch, c.n_out), c.dtype),
            _activated(rng, (c.batch, c.n_out), c.dtype, c.act), c.act)


def _dropout_forward_case(rng, c):
    t = np.dtype(c.dtype).type
    return (_normal(rng, (c.batch, c.n_out), c.dtype), np.uint64(stream_key(7, 2, c.batch, 1)),
            keep_threshold(0.3), t(1 / 0.7), np.zeros((c.batch, c.n_out), c.dtype),
            np.zeros((c.batch, c.n_out), c.dtype))


def _dropout_backward_case(rng, c):
    mask = np.where(rng.random((c.batch, c.n_out)) < 0.5, 2.0, 0.0).astype(c.dtype)
    return (_normal(rng, (c.batch, c.n_out), c.dtype), mask,
            _activated(rng, (c.batch, c.n_out), c.dtype, c.act), c.act,
            np.zeros((c.batch, c.n_out), c.dtype))


# ---- whole networks: input dropout, two hidden layers with dropout between ------------------
def network_case(rng, c, batch_size=None, input_dropout=True):
    """(Params, Plan) of n_in -> n_out -> n_out/2 -> 10 with dropout before each dense layer
    but the last, plus the workspace for batch_size rows."""
    sizes = (c.n_in, c.n_out, max(c.n_out // 2, 3), 10)
    kinds, acts, rates, W, b = [], [], [], [], []
    empty2, empty1 = np.zeros((0, 0), c.dtype), np.zeros(0, c.dtype)
    for l, (a, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        if l < 2 and (l > 0 or input_dropout):
            kinds.append(DROPOUT), acts.append(0), rates.append(0.2 if l == 0 else 0.5)
            W.append(empty2), b.append(empty1)
        kinds.append(DENSE), acts.append(c.act if l < 2 else 0), rates.append(0.0)
        W.append(_normal(rng, (a, m), c.dtype, 1 / np.sqrt(a))), b.append(_normal(rng, m, c.dtype, 0.1))
    max_norms = [3.0 if k == DENSE and i == len(kinds) - 3 else 0.0 for i, k in enumerate(kinds)]
    plan = make_plan(kinds, acts, rates, max_norms, c.loss, c.optimizer, c.sparse_input, 11, c.dtype)
    params = Params(W=tuple(W), b=tuple(b))
    ws = make_workspace(params, plan, c.n_in, batch_size or c.batch, c.dtype)
    return params, plan, ws


def _forward_case(rng, c):
    params, plan, ws = network_case(rng, c)
    return (_normal(rng, (c.batch, c.n_in), c.dtype), params, plan, ws.acts)


def _forward_sparse_input_case(rng, c):
    params, plan, ws = network_case(rng, c._replace(sparse_input=True) if hasattr(c, "_replace")
                                    else c, input_dropout=False)
    plan = plan._replace(sparse_layer=plan.first_param)
    X = _sparse_images(rng, 2 * c.batch + 3, c.n_in, c.dtype)
    rows = rng.permutation(X.shape[0])[:c.batch].astype(np.int64)
    nz_idx = np.zeros((c.batch, c.n_in), np.int32)
    nz_val = np.zeros((c.batch, c.n_in), c.dtype)
    return (X, rows, params, plan, ws.acts, nz_idx, nz_val)


def _train_steps_case(rng, c):
    """Three steps, the last one ragged, from a state that has already taken steps."""
    params, plan, ws = network_case(rng, c, input_dropout=c.batch % 2 == 1)
    h = _hyper(c, nesterov=c.batch % 2, decoupled=c.batch % 2)
    state = make_state(params, c.optimizer, h[:7], c.dtype)
    for s in state.s1W + state.s1b + state.s2W + state.s2b:
        s[...] = np.abs(_normal(rng, s.shape, c.dtype, 0.01))
    state.t[0] = 5
    n = 2 * c.batch + max(c.batch // 2, 1)
    X = _sparse_images(rng, n, c.n_in, c.dtype)
    y = rng.integers(0, 10, n).astype(np.int64)
    if c.batch % 2 == 0:  # weighted samples
        plan = plan._replace(sample_weight=(2 * rng.random(n)).astype(c.dtype))
    return (X, y, rng.permutation(n).astype(np.int64), c.batch, 0, 3, 4, params, state, ws, plan)


def _mlp_flops(c):
    return 2 * c.batch * c.n_in * c.n_out


OPTIMIZERS = ("optimizer",)
LOSSES = ("loss",)
register("activate", fast=A.activate, reference=A.activate_ref, make_case=_activate_case,
         outputs=(0,))
register("derivative_mul", fast=A.derivative_mul, reference=A.derivative_mul_ref,
         make_case=_derivative_case, outputs=(0,))
register("dense_forward", fast=dense_forward, reference=dense_forward_ref,
         make_case=_dense_forward_case, outputs=(4,), flops=_mlp_flops)
register("dense_backward", fast=dense_backward, reference=dense_backward_ref,
         make_case=_dense_backward_case, outputs=(4, 5, 6), flops=lambda c: 2 * _mlp_flops(c))
register("sparse_input_forward", fast=sparse_input_forward, reference=sparse_input_forward_ref,
         make_case=_sparse_forward_case, outputs=(5, 6, 7, 8), flops=_mlp_flops, parallel=True)
register("sparse_input_backward_update", fast=sparse_input_backward_update,
         reference=sparse_input_backward_update_ref, make_case=_sparse_backward_case,
         outputs=(4, 5, 6), flops=_mlp_flops, variants=OPTIMIZERS, parallel=True)
register("output_loss", fast=output_loss, reference=output_loss_ref, make_case=_loss_case,
         outputs=(3,), compares_return=True, variants=LOSSES, output_layer=True)
register("output_activation", fast=output_activation, reference=output_activation_ref,
         make_case=_output_activation_case, outputs=(2,), variants=LOSSES, output_layer=True)
register("optimizer_update", fast=optimizer_update, reference=optimizer_update_ref,
         make_case=_optimizer_case, outputs=(1, 3, 4), variants=OPTIMIZERS)
register("max_norm_columns", fast=max_norm_columns, reference=max_norm_columns_ref,
         make_case=_max_norm_case, outputs=(0,))
register("dropout_forward", fast=dropout_forward, reference=dropout_forward_ref,
         make_case=_dropout_forward_case, outputs=(4, 5))
register("dropout_backward", fast=dropout_backward, reference=dropout_backward_ref,
         make_case=_dropout_backward_case, outputs=(4,))
register("gather_rows", fast=gather_rows, reference=gather_rows_ref, make_case=_gather_case,
         outputs=(2,))
register("forward", fast=forward, reference=forward_ref, make_case=_forward_case, outputs=(3,))
register("forward_sparse_input", fast=forward_sparse_input, reference=forward_sparse_input_ref,
         make_case=_forward_sparse_input_case, outputs=(4,), parallel=True)
register("train_steps", fast=train_steps, reference=train_steps_ref, make_case=_train_steps_case,
         outputs=(7, 8), compares_return=True, variants=OPTIMIZERS + LOSSES, parallel=True)

assert set(OPTIMIZER_CODES.values()) == {0, 1, 2, 3}
