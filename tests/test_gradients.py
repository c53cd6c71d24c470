"""Finite-difference checks of the hand-derived backpropagation, in float64.

One training step from zero velocity with momentum 0 leaves v = g, the gradient of the
minibatch loss at the starting weights: so the whole fused step (both backends, both first-
layer paths) is checked against central differences of the loss.
"""
import numpy as np
import pytest

from fastmlp import kernels as K

SIZES = (12, 9, 7, 5)  # two hidden layers


def make_net(rng, act):
    Ws = tuple(rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(SIZES[:-1], SIZES[1:]))
    bs = tuple(rng.standard_normal(b) * 0.1 for b in SIZES[1:])
    return Ws, bs


def loss_of(Ws, bs, X, y, act):
    ws = K.make_workspace(SIZES, X.shape[0], np.float64)
    K.forward_ref(X, Ws, bs, act, ws.acts)
    loss, _ = K.KERNELS["softmax_cross_entropy"].reference(ws.acts[-1], y, ws.deltas[-1])
    return loss


def one_step_gradient(train_steps, Ws, bs, X, y, act, sparse):
    n = X.shape[0]
    Ws = tuple(w.copy() for w in Ws)
    bs = tuple(b.copy() for b in bs)
    vWs = tuple(np.zeros_like(w) for w in Ws)
    vbs = tuple(np.zeros_like(b) for b in bs)
    ws = K.make_workspace(SIZES, n, np.float64)
    train_steps(X, y, np.arange(n, dtype=np.int64), n, 0, 1, Ws, bs, vWs, vbs, ws.acts, ws.deltas,
                ws.grad_W, ws.grad_b, ws.xb, ws.yb, ws.nz_idx, ws.nz_val, ws.nz_cnt, ws.col_ptr,
                ws.col_row, ws.col_val, ws.col_counts, act, 1e-3, 0.0, 0.0, sparse)
    return vWs, vbs


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("sparse", [True, False])
def test_backprop_matches_finite_differences(backend, activation, sparse):
    rng = np.random.default_rng(7)
    act = K.ACTIVATION_CODES[activation]
    X = rng.random((6, SIZES[0]))
    X[rng.random(X.shape) > 0.5] = 0
    y = rng.integers(0, SIZES[-1], 6).astype(np.int64)
    Ws, bs = make_net(rng, act)
    step = K.train_steps if backend == "numba" else K.train_steps_ref
    gW, gb = one_step_gradient(step, Ws, bs, X, y, act, sparse)
    eps = 1e-6
    for layer in range(len(Ws)):
        for params, grads, kind in ((Ws, gW, "W"), (bs, gb, "b")):
            p = params[layer]
            for flat in rng.choice(p.size, size=min(p.size, 12), replace=False):
                idx = np.unravel_index(flat, p.shape)
                old = p[idx]
                p[idx] = old + eps
                up = loss_of(Ws, bs, X, y, act)
                p[idx] = old - eps
                down = loss_of(Ws, bs, X, y, act)
                p[idx] = old
                numeric = (up - down) / (2 * eps)
                assert grads[layer][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    f"{kind}{layer}{idx}"
