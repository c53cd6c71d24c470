"""Finite-difference checks of the hand-derived backpropagation, in float64.

One training step of SGD with momentum 0 from zero state leaves the velocity equal to g, the
gradient of the minibatch loss at the starting weights: so the whole fused step (both backends,
both first-layer paths, every output/loss pair) is checked against central differences.
"""
import numpy as np
import pytest

from fastmlp import kernels as K

SIZES = (12, 9, 7, 5)  # two hidden layers


def make_net(rng, act, loss, sparse):
    W = tuple(rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(SIZES[:-1], SIZES[1:]))
    b = tuple(rng.standard_normal(m) * 0.1 for m in SIZES[1:])
    plan = K.make_plan([K.DENSE] * 3, [act, act, 0], [0.0] * 3, [0.0] * 3, loss, sparse, 0,
                       np.float64)
    return K.make_params(W, b, np.float64), plan


def loss_of(params, plan, X, y):
    ws = K.make_workspace(params, plan, SIZES[0], X.shape[0], np.float64)
    layers, *codes = K.forward_args(plan)
    K.forward_ref(X, np.arange(X.shape[0]), params, layers, ws, *codes)
    last = len(plan.kind) - 1
    loss, _ = K.KERNELS["output_loss"].reference(plan.loss, ws.acts[last], y, ws.deltas[last])
    return loss


def one_step_gradient(train_steps, params, plan, X, y):
    n = X.shape[0]
    params = K.Params(tuple(w.copy() for w in params.W), tuple(b.copy() for b in params.b))
    state = K.make_state(params, (1e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), np.float64)
    ws = K.make_workspace(params, plan, SIZES[0], n, np.float64)
    train_steps(X, y, np.arange(n, dtype=np.int64), n, 0, 1, 0, params, state,
                K.optimizer_rule(K.OPTIMIZER_CODES["sgd"]), ws, *K.step_args(params, plan))
    return state.s1W, state.s1b


@pytest.mark.parametrize("loss", sorted(K.OUTPUT_LOSS_CODES.values()))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("sparse", [True, False])
def test_backprop_matches_finite_differences(backend, activation, sparse, loss):
    rng = np.random.default_rng(7)
    act = K.ACTIVATION_CODES[activation]
    X = rng.random((6, SIZES[0]))
    X[rng.random(X.shape) > 0.5] = 0
    y = rng.integers(0, SIZES[-1], 6).astype(np.int64)
    params, plan = make_net(rng, act, loss, sparse and backend == "numba")
    step = K.train_steps if backend == "numba" else K.train_steps_ref
    gW, gb = one_step_gradient(step, params, plan, X, y)
    eps = 1e-6
    for layer in range(len(SIZES) - 1):
        for arrays, grads, kind in ((params.W, gW, "W"), (params.b, gb, "b")):
            p = arrays[layer]
            for flat in rng.choice(p.size, size=min(p.size, 12), replace=False):
                idx = np.unravel_index(flat, p.shape)
                old = p[idx]
                p[idx] = old + eps
                up = loss_of(params, plan, X, y)
                p[idx] = old - eps
                down = loss_of(params, plan, X, y)
                p[idx] = old
                numeric = (up - down) / (2 * eps)
                assert grads[layer][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    f"{kind}{layer}{idx}"
