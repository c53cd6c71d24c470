"""BatchNormalization and Activation layers (#44): PyTorch's BatchNorm1d/BatchNorm2d autograd
in float64 for SGD steps in training mode, inference from the moving statistics, central
differences of the training-mode loss, both backends, files, resume and ONNX.

Every network here is one stack of eight layers in float64 (conv, norm, activation, flatten,
dense, norm, activation, dense), so Numba compiles the step once for all of them."""
import numpy as np
import pytest

from fastmlp import Network
from fastmlp import kernels as K
from fastmlp.layers import Activation, BatchNormalization, Conv2D, Dense, Flatten
from fastmlp.optimizers import SGD, Adam

from conftest import optional_torch

torch = optional_torch()

SHAPE = (6, 6, 2)
MOMENTA, EPSILONS = (0.9, 0.8), (1e-3, 1e-5)


def bn_net(seed=0, backend="numba", activation="relu", classes=3):
    layers = [Conv2D(4, 3, padding="same", activation="linear"),
              BatchNormalization(MOMENTA[0], EPSILONS[0]), Activation(activation), Flatten(),
              Dense(8, activation="linear"), BatchNormalization(MOMENTA[1], EPSILONS[1]),
              Activation("tanh"), Dense(classes)]
    return Network(layers, input_shape=SHAPE, seed=seed, dtype="float64", backend=backend)


def data(n=20, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.random((n, *SHAPE)) * 0.5
    for i, k in enumerate(y):
        X[i, k * 2:k * 2 + 2, :, k % 2] += 0.5
    return X.reshape(n, -1), y


def torch_steps(net, X, y, lr, momentum, batch_size, epochs=1):
    """The same network in PyTorch (NCHW, its flatten made channels-last), same batches;
    returns its parameters and its two BatchNorm modules."""
    F = torch.nn.functional
    Wc, _, Wd, _, Wo = (torch.tensor(w.copy()) for w in net.weights)
    bc, beta1, bd, beta2, bo = (torch.tensor(b.copy()) for b in net.biases)
    norms = []
    for k, (module, channels) in enumerate(((torch.nn.BatchNorm2d, 4),
                                            (torch.nn.BatchNorm1d, 8))):
        table = net.weights[1 + 2 * k]
        bn = module(channels, eps=EPSILONS[k], momentum=1 - MOMENTA[k], dtype=torch.float64)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(table[0]))
            bn.bias.copy_(torch.tensor(net.biases[1 + 2 * k]))
            bn.running_mean.copy_(torch.tensor(table[1]))
            bn.running_var.copy_(torch.tensor(table[2]))
        norms.append(bn)
    params = [Wc, bc, Wd, bd, Wo, bo]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params + [p for bn in norms for p in bn.parameters()], lr=lr,
                          momentum=momentum)
    images = torch.tensor(X.reshape(-1, *SHAPE)).permute(0, 3, 1, 2)
    labels = torch.tensor(y)
    batch_variances = ([], [])  # each normalization's input, per step: its biased variance

    def forward(x):
        h = F.conv2d(x, Wc.permute(3, 2, 0, 1), bc, padding=1)
        if norms[0].training:
            batch_variances[0].append(h.detach().var(dim=(0, 2, 3), unbiased=False).numpy())
        h = F.relu(norms[0](h))
        h = h.permute(0, 2, 3, 1).reshape(len(x), -1) @ Wd + bd
        if norms[1].training:
            batch_variances[1].append(h.detach().var(dim=0, unbiased=False).numpy())
        return torch.tanh(norms[1](h)) @ Wo + bo

    for epoch in range(epochs):
        order = net.epoch_order(epoch, len(y))
        for start in range(0, len(y), batch_size):
            idx = torch.tensor(order[start:start + batch_size])
            loss = F.cross_entropy(forward(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [p.detach().numpy() for p in params], norms, batch_variances, forward, images


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_training_steps_and_inference_match_pytorch(backend):
    X, y = data(20, seed=1)
    net, start = bn_net(seed=2, backend=backend), bn_net(seed=2)
    # three steps of a minibatch of 8, the last one ragged (4 rows)
    net.fit(X, y, epochs=1, batch_size=8, optimizer=SGD(lr=0.1, momentum=0.9), verbose=0)
    theirs, norms, batch_variances, forward, images = torch_steps(start, X, y, 0.1, 0.9, 8)
    assert len(batch_variances[0]) == 3
    learned = [(net.weights[i], net.biases[i]) for i in (0, 2, 4)]
    for a, b in zip([p for pair in learned for p in pair], theirs):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    for k, bn in enumerate(norms):
        table, beta = net.weights[1 + 2 * k], net.biases[1 + 2 * k]
        np.testing.assert_allclose(table[0], bn.weight.detach().numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(beta, bn.bias.detach().numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(table[1], bn.running_mean.numpy(), rtol=1e-9, atol=1e-11)
        # PyTorch's running variance takes the unbiased batch variance, Keras' the biased one:
        # Keras' rule, replayed on the batch variances of PyTorch's forward
        moving = np.ones_like(table[2])
        for variance in batch_variances[k]:
            moving = MOMENTA[k] * moving + (1 - MOMENTA[k]) * variance
        np.testing.assert_allclose(table[2], moving, rtol=1e-9, atol=1e-11)
    assert max(np.abs(a - b).max() for a, b in zip(net.weights, start.weights)) > 1e-3

    # inference: PyTorch's eval mode with our moving statistics
    for k, bn in enumerate(norms):
        with torch.no_grad():
            bn.running_var.copy_(torch.tensor(net.weights[1 + 2 * k][2]))
        bn.eval()
    with torch.no_grad():
        probabilities = torch.softmax(forward(images), dim=1).numpy()
    np.testing.assert_allclose(net.predict_proba(X), probabilities, rtol=1e-9, atol=1e-12)


def training_loss_and_gradient(net, X, y, step):
    """The minibatch loss in training mode (the batch's statistics) and, from one SGD step
    without momentum from zero state (the velocity is then the gradient), its gradient."""
    n = X.shape[0]
    params = K.make_params([w.copy() for w in net._W], [b.copy() for b in net._b], np.float64)
    plan = net._plan()
    state = K.make_state(params, (1e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), np.float64)
    ws = K.make_workspace(params, plan, net.n_features, n, np.float64)
    loss_sum, _, seen = step(X, y, np.arange(n, dtype=np.int64), n, 0, 1, 0, params, state,
                             K.optimizer_rule(K.OPTIMIZER_CODES["sgd"]), ws,
                             *K.step_args(params, plan))
    return loss_sum / seen, state.s1W, state.s1b


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_gradient_matches_finite_differences(backend):
    X, y = data(12, seed=3)
    net = bn_net(seed=1, activation="tanh")
    for b in net.biases + [w[0] for w in net.weights[1::2]]:  # β and γ away from 0 and 1
        b += np.random.default_rng(5).standard_normal(b.shape) * 0.3
    step = K.train_steps if backend == "numba" else K.train_steps_ref
    _, gW, gb = training_loss_and_gradient(net, X, y, step)
    rng, eps = np.random.default_rng(0), 1e-6
    checked = 0
    for l in net._param_layers:
        for arrays, grads, name in ((net._W, gW, "W"), (net._b, gb, "b")):
            p = arrays[l]
            rows = 1 if name == "W" and net.layers[l].kind == "batchnorm" else p.shape[0]
            for flat in rng.choice(p[:rows].size, size=min(p[:rows].size, 8), replace=False):
                idx = np.unravel_index(flat, p[:rows].shape)
                old = p[idx]
                p[idx] = old + eps
                up = training_loss_and_gradient(net, X, y, K.train_steps_ref)[0]
                p[idx] = old - eps
                down = training_loss_and_gradient(net, X, y, K.train_steps_ref)[0]
                p[idx] = old
                assert grads[l][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5,
                                                      abs=1e-8), f"{name}{l}{idx}"
                checked += 1
    assert checked > 50  # every parameter array probed


def test_backends_agree_files_and_mid_epoch_resume_bitwise(tmp_path, interrupt_after):
    X, y = data(96, seed=4)
    kw = dict(epochs=3, batch_size=8, optimizer=Adam(lr=0.01), verbose=0)
    nets = {b: bn_net(seed=4, backend=b) for b in ("numba", "numpy")}
    for net in nets.values():
        net.fit(X, y, **kw)
    for a, b in zip(nets["numba"].weights + nets["numba"].biases,
                    nets["numpy"].weights + nets["numpy"].biases):
        # 36 Adam steps on normalized layers: the sums' order shows in the 8th digit
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    full = nets["numba"]
    Xt, yt = data(200, seed=9)
    assert full.evaluate(Xt, yt)["accuracy"] > 0.9
    np.testing.assert_allclose(full.predict_proba(Xt), nets["numpy"].predict_proba(Xt),
                               rtol=1e-7, atol=1e-9)

    undo = interrupt_after("numba", 12 + 3)  # inside epoch two
    net = bn_net(seed=4)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    undo()
    resumed = bn_net(seed=0)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)  # the moving statistics too

    full.save(tmp_path / "m.npz")
    loaded = Network.load(tmp_path / "m.npz")
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in full.layers]
    np.testing.assert_array_equal(loaded.predict_proba(Xt), full.predict_proba(Xt))


def test_layers_validate_and_describe_themselves():
    net = bn_net()
    assert [w.shape for w in net.weights][1::2] == [(3, 4), (3, 8)]
    table = net.weights[1]
    np.testing.assert_array_equal(table, [[1] * 4, [0] * 4, [1] * 4])  # γ, moving mean, var
    assert net.count_params() == (18 * 4 + 4) + 4 * 4 + (144 * 8 + 8) + 4 * 8 + (8 * 3 + 3)
    assert "BatchNormalization" in net.summary(print_fn=None)
    assert "Activation relu" in net.architecture
    assert Dense(5, activation="linear").activation is None
    assert repr(Activation("linear")) == "Activation('linear')"
    for bad, match in (({"momentum": 1.0}, "momentum must be in"),
                       ({"epsilon": 0}, "epsilon must be in"),
                       ({"momentum": "0.9"}, "momentum must be a real number")):
        with pytest.raises((ValueError, TypeError), match=match):
            BatchNormalization(**bad)
    with pytest.raises(ValueError, match="Activation activation must be one of"):
        Activation("softplus")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_export_runs_the_normalization_as_predict_does(dtype):
    import onnxruntime as ort
    X, y = data(64, seed=6)
    net = bn_net(seed=6)
    net.fit(X, y, epochs=2, batch_size=16, optimizer=Adam(lr=0.01), verbose=0)
    if dtype == "float32":  # the same weights in float32 (the float64 step stays the only one)
        net32 = Network(net.layers, input_shape=SHAPE, dtype="float32", seed=6)
        net32._set_parameters([w.astype(np.float32) for w in net._stored_weights()],
                              [b.astype(np.float32) for b in net.biases])
        net = net32
    model = net.to_onnx()
    assert "BatchNormalization" in {node.op_type for node in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = X.reshape(-1, *SHAPE).astype(dtype)
    got = session.run(["probabilities"], {"input": images})[0]
    np.testing.assert_allclose(got, net.predict_proba(images),
                               atol=1e-5 if dtype == "float32" else 1e-10, rtol=0)
