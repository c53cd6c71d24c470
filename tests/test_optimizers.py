"""Every optimizer against PyTorch's of the same name, step for step (float64, same weights,
same batches), on both backends; hand-derived values where PyTorch is absent; bad settings."""
import numpy as np
import pytest

from fastmlp import Network
from fastmlp.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop, get

from conftest import optional_torch

torch = optional_torch()

CASES = {
    "sgd": SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-plain": SGD(lr=0.1, momentum=0.0),
    "nesterov": SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": Adam(lr=0.01, weight_decay=1e-3),
    "adamw": AdamW(lr=0.01, weight_decay=0.05),
    "rmsprop": RMSprop(lr=0.01, rho=0.9, eps=1e-7, weight_decay=1e-3),
    "adagrad": Adagrad(lr=0.05, weight_decay=1e-3),
}


def torch_optimizer(opt, params_w, params_b):
    groups = [{"params": params_w, "weight_decay": opt.weight_decay},
              {"params": params_b, "weight_decay": 0.0}]
    if isinstance(opt, SGD):
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov)
    if isinstance(opt, Adam):
        cls = torch.optim.AdamW if opt.decoupled else torch.optim.Adam
        return cls(groups, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    if isinstance(opt, RMSprop):
        return torch.optim.RMSprop(groups, lr=opt.lr, alpha=opt.rho, eps=opt.eps)
    return torch.optim.Adagrad(groups, lr=opt.lr, eps=opt.eps)


def data(n=96, d=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    X[rng.random((n, d)) < 0.6] = 0  # sparse enough for the zero-skipping first layer
    return X, rng.integers(0, classes, n)


def torch_run(net, X, y, opt, batch_size, epochs, label_smoothing=0.0):
    """The same network, batches, optimizer (and label smoothing) in PyTorch."""
    Ws = [torch.tensor(w.astype(np.float64), requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b.astype(np.float64), requires_grad=True) for b in net.biases]
    topt = torch_optimizer(opt, Ws, bs)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for epoch in range(epochs):
        order = net.epoch_order(epoch, len(y))
        for start in range(0, len(y), batch_size):
            idx = torch.tensor(order[start:start + batch_size])
            h = Xt[idx]
            for i, (W, b) in enumerate(zip(Ws, bs)):
                h = h @ W + b
                if i < len(Ws) - 1:
                    h = torch.relu(h)
            loss = torch.nn.functional.cross_entropy(h, yt[idx],
                                                     label_smoothing=label_smoothing)
            topt.zero_grad()
            loss.backward()
            topt.step()
    return [w.detach().numpy() for w in Ws], [b.detach().numpy() for b in bs]


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_pytorch_step_for_step(name, backend):
    X, y = data()
    opt = CASES[name]
    net = Network([20, 16, 12, 4], seed=1, dtype="float64", backend=backend)
    start = Network([20, 16, 12, 4], seed=1, dtype="float64")
    net.fit(X, y, epochs=3, batch_size=10, optimizer=opt, verbose=0)  # 30 steps, ragged last
    tW, tb = torch_run(start, X, y, opt, 10, 3)
    for ours, theirs in zip(net.weights + net.biases, tW + tb):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)
    moved = max(np.abs(a - b).max() for a, b in zip(net.weights, start.weights))
    assert moved > 1e-3


def one_step(opt, backend):
    """One step from zero state on a 1-input, 2-class net whose gradient is known by hand."""
    net = Network([1, 2], seed=0, dtype="float64", backend=backend, init="normal")
    net.weights[0][...] = [[0.5, -0.5]]
    X, y = np.array([[2.0]]), np.array([0])
    p = np.exp([1.0, -1.0]) / np.exp([1.0, -1.0]).sum()  # softmax of the logits (1, -1)
    g_w = 2.0 * (p - [1, 0])  # x * (softmax - onehot)
    net.fit(X, y, epochs=1, batch_size=1, optimizer=opt, verbose=0, shuffle=False)
    return net.weights[0][0], np.array([0.5, -0.5]), g_w


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_hand_derived_first_steps(backend):
    w, w0, g = one_step(SGD(lr=0.1, momentum=0.9, weight_decay=0.01), backend)
    np.testing.assert_allclose(w, w0 - 0.1 * (g + 0.01 * w0))
    w, w0, g = one_step(SGD(lr=0.1, momentum=0.9, nesterov=True), backend)
    np.testing.assert_allclose(w, w0 - 0.1 * (g + 0.9 * g))
    # Adam's first step is lr * sign(g) (up to eps), whatever the gradient's size
    w, w0, g = one_step(Adam(lr=0.01), backend)
    np.testing.assert_allclose(w, w0 - 0.01 * np.sign(g), rtol=1e-6)
    w, w0, g = one_step(AdamW(lr=0.01, weight_decay=0.1), backend)
    np.testing.assert_allclose(w, w0 * (1 - 0.001) - 0.01 * np.sign(g), rtol=1e-6)
    w, w0, g = one_step(RMSprop(lr=0.01, rho=0.9, eps=0.0 + 1e-12), backend)
    np.testing.assert_allclose(w, w0 - 0.01 * g / np.sqrt(0.1 * g * g), rtol=1e-6)
    w, w0, g = one_step(Adagrad(lr=0.1, eps=1e-12), backend)
    np.testing.assert_allclose(w, w0 - 0.1 * np.sign(g), rtol=1e-6)


def test_names_give_defaults():
    assert get("sgd") == SGD() and get("nesterov") == SGD(nesterov=True)
    assert get("adam") == Adam() and get("adamw") == Adam(weight_decay=0.01, decoupled=True)
    assert get("rmsprop") == RMSprop() and get("adagrad") == Adagrad()


@pytest.mark.parametrize("make,message", [
    (lambda: get("lbfgs"), "optimizer must be one of"),
    (lambda: Adam(lr=-1), "lr must be > 0"),
    (lambda: Adam(beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (lambda: Adam(eps=float("nan")), "eps must be finite"),
    (lambda: RMSprop(rho=-0.1), r"rho must be in \[0, 1\)"),
    (lambda: Adagrad(weight_decay=-1), "weight_decay must be >= 0"),
    (lambda: SGD(nesterov=True, momentum=0), "nesterov=True needs momentum > 0"),
    (lambda: SGD(lr="0.1"), "lr must be a real number"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_optimizer_and_sgd_arguments_together_are_an_error():
    X, y = data()
    with pytest.raises(ValueError, match="pass either optimizer= or lr="):
        Network([20, 4], seed=0).fit(X, y, optimizer="adam", lr=0.5, verbose=0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_resumes_every_optimizer_bitwise_from_mid_epoch(tmp_path, name, backend,
                                                                   interrupt_after):
    X, y = data(200)
    opt = CASES[name]
    kw = dict(epochs=3, batch_size=16, optimizer=opt, verbose=0)
    full = Network([20, 16, 4], seed=2, backend=backend, dropout=0.3)
    full.fit(X, y, **kw)

    # 13 steps an epoch, in chunks of 2: the 10th chunk ends inside epoch two
    undo = interrupt_after(backend, 7 + 3)
    net = Network([20, 16, 4], seed=2, backend=backend, dropout=0.3)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    undo()
    assert net.epochs_done == 1
    resumed = Network([20, 16, 4], seed=9, backend=backend, dropout=0.3)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    other = "adam" if opt.name == "sgd" else "sgd"
    with pytest.raises(ValueError, match="was trained with optimizer"):
        Network([20, 16, 4], seed=2, backend=backend, dropout=0.3).fit(
            X, y, resume=ck, epochs=3, batch_size=16, optimizer=other, verbose=0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_mid_epoch_resume_is_bitwise_with_dropout_schedules_and_augmentation(tmp_path, name,
                                                                             backend,
                                                                             interrupt_after):
    """#43: every optimizer, with dropout, an lr schedule (cosine with warm-up), a momentum
    schedule and on-the-fly augmentation, interrupted inside its second epoch, resumes from
    the checkpoint to the uninterrupted run's weights, bit for bit."""
    from test_augment import quadrant_data

    from fastmlp.augment import Augment
    from fastmlp.schedules import CosineDecay, LinearRamp
    X, y = quadrant_data(160)
    kw = dict(epochs=3, batch_size=16, optimizer=CASES[name], verbose=0,
              augment=Augment(shift=1, rotate=8, elastic_alpha=4, elastic_sigma=2),
              lr_schedule=CosineDecay(epochs=3, warmup=1))
    if CASES[name].name == "sgd" and CASES[name].momentum > 0:
        kw["momentum_schedule"] = LinearRamp(0.5, 0.9, epochs=2)

    def network(seed):
        return Network([144, 24, 4], seed=seed, dropout=0.2, backend=backend)
    full = network(5)
    full.fit(X, y, **kw)
    undo = interrupt_after(backend, 5 + 3)  # 10 steps an epoch in chunks of 2: inside epoch two
    net = network(5)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    undo()
    assert net.epochs_done == 1
    resumed = network(0)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.history["lr"] == full.history.history["lr"]


@pytest.mark.parametrize("code", [0, 1, 2, 3], ids=["sgd", "adam", "rmsprop", "adagrad"])
@pytest.mark.parametrize("kernel", ["optimizer_update", "dense_grad_update_rows"])
def test_update_loops_compile_to_vector_code(kernel, code):
    """Adam's, RMSprop's and Adagrad's update loops (a square root and a division each) are
    vectorised where they run outside Numba's parallel bodies (see optim.update_span). The
    kernel is compiled afresh from its source with its own options (code loaded from the cache
    cannot be inspected), for the optimizer's rule (SGD's compiles its loop alone: no square root
    at all; the adaptive optimizers' compiles their three loops) and for the rule that compiles
    all four."""
    import re

    from numba import njit

    from fastmlp.kernels import dense, optim

    dispatcher = getattr(optim if kernel == "optimizer_update" else dense, kernel)
    options = {k: v for k, v in dispatcher.targetoptions.items() if k != "nopython"}
    options["cache"] = False
    fresh = njit(**options)(dispatcher.py_func)
    h = np.zeros(optim.N_HYPER, np.float32)
    h[optim.ONE] = 1
    w = np.zeros((4, 4), np.float32)
    for rule in (optim.optimizer_rule(code), optim.optimizer_rule(code, any_code=True)):
        if kernel == "optimizer_update":
            fresh(rule, w, w.copy(), w.copy(), w.copy(), h, 1.0, 1.0, True)
        else:
            x, d = np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32)
            fresh(x, d, 0, 4, w, w.copy(), w.copy(), w.copy(), rule, h, 1.0, 1.0)
        ir = fresh.inspect_llvm(fresh.signatures[-1])
        vector_sqrt = re.findall(r"call (?:\w+ )*<\d+ x float> @llvm\.sqrt\.v\d+f32", ir)
        if code == optim.SGD and type(rule) is optim.SGDRule:
            assert "@llvm.sqrt" not in ir, f"{kernel}, SGD: other optimizers' code compiled"
        else:
            assert len(vector_sqrt) >= 3, f"{kernel}, {rule}: {len(vector_sqrt)}"


@pytest.mark.parametrize("nesterov", [0, 1])
def test_sgd_velocity_is_made_in_the_weight_gradients_product(nesterov):
    """A large dense layer's backward on threads: with SGD without Nesterov the weight
    gradient's product makes the velocity itself (BLAS's beta = momentum) and leaves the
    gradient buffer as it was; with Nesterov the gradient is made first. Either way W, b, the
    velocities and δ below are the textbook update's (the twin's), in float64."""
    from fastmlp.kernels import activations, dense, optim
    rng = np.random.default_rng(0)
    n, d_in, d_out = 24, 40, 30
    x = np.maximum(rng.normal(size=(n, d_in)), 0)
    W, delta = rng.normal(size=(d_in, d_out)), rng.normal(size=(n, d_out)) / n
    b = rng.normal(size=d_out)
    h = np.zeros(optim.N_HYPER)
    h[:7] = (0.05, 0.9, 0.0, 0.0, 1e-3, nesterov, 0)
    h[optim.ONE], h[optim.TINY] = 1, np.finfo(np.float64).tiny
    rule = optim.optimizer_rule(optim.SGD)
    S1, s1b = rng.normal(size=W.shape), rng.normal(size=d_out)
    runs = {}
    for kernel in (dense.dense_backward_update, dense.dense_backward_update_ref):
        args = [x, W.copy(), b.copy(), delta, activations.RELU, np.full(W.shape, 7.0),
                np.zeros(d_out), np.zeros((n, d_in)), S1.copy(), np.zeros(W.shape),
                s1b.copy(), np.zeros(d_out), rule, h, 1.0, 1.0]
        kernel(*args)
        runs[kernel] = args
    fast, ref = runs[dense.dense_backward_update], runs[dense.dense_backward_update_ref]
    for i in (1, 2, 6, 7, 8, 10):  # W, b, gb, δ below, S1, s1b
        np.testing.assert_allclose(fast[i], ref[i], rtol=1e-12, atol=1e-14)
    gradient_left = np.all(fast[5] == 7.0)
    assert gradient_left == (not nesterov)
    np.testing.assert_allclose(ref[5], x.T @ delta, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [0, 1, 2, 3], ids=["sgd", "adam", "rmsprop", "adagrad"])
@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_decaying_state_is_flushed_below_the_smallest_normal(backend, code, dtype):
    """A velocity or moment whose gradient is zero decays geometrically; once under the dtype's
    smallest normal number it is stored as zero (denormal operands cost Intel cores a microcode
    assist each), on both backends alike. A state at or above it decays as before, and NaN stays
    NaN (divergence must still be seen)."""
    from fastmlp.kernels import KERNELS, optim
    tiny = np.finfo(dtype).tiny
    h = np.zeros(optim.N_HYPER, dtype)
    h[:7] = (0.01, 0.5, 0.5, 1e-8, 0.0, 0.0, 0.0)
    h[optim.ONE], h[optim.TINY] = 1, tiny
    update = getattr(KERNELS["optimizer_update"], backend)
    s1 = np.array([1.5 * tiny, 4.0 * tiny, np.nan, 1.0, 3.0 * tiny], dtype)
    s2 = s1.copy()
    g = np.zeros(5, dtype)
    w = np.ones(5, dtype)
    for _ in range(2):
        update(optim.optimizer_rule(code), w, g, s1, s2, h, dtype(1), dtype(1), True)
    states = [s1, s2] if code == optim.ADAM else [s1]
    for s in states:
        finite = s[np.isfinite(s)]
        assert not ((finite != 0) & (np.abs(finite) < tiny)).any(), f"denormal left: {s}"
        assert np.isnan(s[2])
    if code in (optim.SGD, optim.ADAM):  # decays by 0.5 per step: 1.5 tiny -> 0, 4 tiny -> tiny
        assert s1[0] == 0 and s1[1] == tiny and s1[3] == 0.25


@pytest.mark.mnist
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_long_batch_10_run_on_mnist_leaves_no_denormal_optimizer_state(mnist, tmp_path,
                                                                          optimizer):
    """After a batch-10 epoch on 20,000 MNIST images the velocities of pixels a minibatch does
    not touch and of units ReLU switched off have decayed for thousands of steps: without the
    flush, 54 % of the first layer's velocities were denormal at this point."""
    from fastmlp.serialization import load_arrays
    (X, y), _ = mnist
    net = Network([784, 300, 10], seed=0)
    kwargs = {"optimizer": "adam"} if optimizer == "adam" else {"lr": 0.05, "momentum": 0.9}
    net.fit(X[:20000], y[:20000], epochs=1, batch_size=10, verbose=0,
            checkpoint=tmp_path / "ck.npz", **kwargs)
    arrays, meta = load_arrays(tmp_path / "ck.npz")
    tiny = np.finfo(np.float32).tiny
    states = {k: v for k, v in arrays.items() if "." in k}
    assert states, "the checkpoint holds the optimizer's state"
    zero = 0
    for name, state in states.items():
        assert not ((state != 0) & (np.abs(state) < tiny)).any(), name
        zero += np.count_nonzero(state == 0)
    assert zero > 0  # the pixels no image lights are exact zeros
