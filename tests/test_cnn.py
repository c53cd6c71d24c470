"""Networks of layers with Conv2D and MaxPool2D: gradients against finite differences and
PyTorch's autograd, both backends, files, resume, shapes and the errors for stacks that do not
fit. Every network here has the six layers of the kernel tests' CNN (conv, pool, dropout, conv,
flatten, dense) in float64, so Numba compiles the step once for all of them."""
import numpy as np
import pytest

from fastmlp import Network, recipes
from fastmlp.errors import ModelFormatError
from fastmlp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from fastmlp.optimizers import SGD, Adam

from conftest import optional_torch

torch = optional_torch()

SHAPE = (10, 10, 1)


def small_cnn(seed=0, backend="numba", dropout=0.0, activation="relu", classes=3):
    """10x10x1 -> conv 4@3x3 same -> pool 2 -> dropout -> conv 3@3x3 stride 2 valid -> 12 ->
    dense."""
    layers = [Conv2D(4, 3, padding="same", activation=activation), MaxPool2D(2),
              Dropout(dropout), Conv2D(3, 3, strides=2, activation=activation), Flatten(),
              Dense(classes)]
    return Network(layers, input_shape=SHAPE, seed=seed, dtype="float64", backend=backend)


def quadrant_images(n=120, seed=0, classes=3):
    """Class k lights quadrant k of a 10x10 image; noise elsewhere."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.random((n, 10, 10)) * 0.3
    X[rng.random(X.shape) < 0.5] = 0
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        X[i, r * 5:r * 5 + 5, c * 5:c * 5 + 5] += 0.7
    return np.clip(X, 0, 1).reshape(n, 100), y


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cnn_gradient_matches_finite_differences(backend, activation):
    X, y = quadrant_images(12, seed=3)
    net = small_cnn(seed=1, backend=backend, activation=activation)
    for b in net.biases:  # biases away from zero: ReLU's kinks stay away from the probes
        b[...] = np.random.default_rng(5).standard_normal(b.shape) * 0.1
    before = [p.copy() for p in net.weights + net.biases]
    net.fit(X, y, epochs=1, batch_size=12, optimizer=SGD(lr=1.0, momentum=0.0), verbose=0,
            shuffle=False)
    grads = [b - a for a, b in zip(net.weights + net.biases, before)]  # w1 = w0 - 1.0 * g
    probe = small_cnn(seed=1, backend="numpy", activation=activation)
    params = probe.weights + probe.biases
    for p, b in zip(params, before):
        p[...] = b
    rng, eps = np.random.default_rng(0), 1e-6
    for p, g in zip(params, grads):
        for flat in rng.choice(p.size, size=min(p.size, 10), replace=False):
            idx = np.unravel_index(flat, p.shape)
            old = p[idx]
            p[idx] = old + eps
            up = probe.evaluate(X, y)["loss"]
            p[idx] = old - eps
            down = probe.evaluate(X, y)["loss"]
            p[idx] = old
            assert g[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def torch_cnn_steps(net, X, y, lr, momentum, batch_size, epochs):
    """The same CNN in PyTorch (NCHW, its flatten made channels-last), same batches."""
    F = torch.nn.functional
    W1, W2, W3 = (torch.tensor(w.copy(), requires_grad=True) for w in net.weights)
    b1, b2, b3 = (torch.tensor(b.copy(), requires_grad=True) for b in net.biases)
    opt = torch.optim.SGD([W1, b1, W2, b2, W3, b3], lr=lr, momentum=momentum)
    images = torch.tensor(X.reshape(-1, 10, 10, 1)).permute(0, 3, 1, 2)
    labels = torch.tensor(y)
    for epoch in range(epochs):
        order = net.epoch_order(epoch, len(y))
        for start in range(0, len(y), batch_size):
            idx = torch.tensor(order[start:start + batch_size])
            h = F.relu(F.conv2d(images[idx], W1.permute(3, 2, 0, 1), b1, padding=1))
            h = F.max_pool2d(h, 2)
            h = F.relu(F.conv2d(h, W2.permute(3, 2, 0, 1), b2, stride=2))
            h = h.permute(0, 2, 3, 1).reshape(len(idx), -1) @ W3 + b3
            loss = F.cross_entropy(h, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [t.detach().numpy() for t in (W1, W2, W3, b1, b2, b3)]


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_sgd_steps_match_pytorch_autograd(backend):
    X, y = quadrant_images(40, seed=4)
    net = small_cnn(seed=2, backend=backend)
    start = small_cnn(seed=2)
    net.fit(X, y, epochs=2, batch_size=16, optimizer=SGD(lr=0.05, momentum=0.9), verbose=0)
    theirs = torch_cnn_steps(start, X, y, 0.05, 0.9, 16, 2)  # 6 steps, ragged last batches
    for ours, t in zip(net.weights + net.biases, theirs):
        np.testing.assert_allclose(ours, t, rtol=1e-9, atol=1e-11)
    assert max(np.abs(a - b).max() for a, b in zip(net.weights, start.weights)) > 1e-3


def test_backends_agree_and_the_cnn_learns():
    X, y = quadrant_images(240)
    nets = {b: small_cnn(seed=3, backend=b, dropout=0.25) for b in ("numba", "numpy")}
    for net in nets.values():
        net.fit(X, y, epochs=6, batch_size=16, optimizer=Adam(lr=0.01), verbose=0)
    for a, b in zip(nets["numba"].weights, nets["numpy"].weights):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    Xt, yt = quadrant_images(200, seed=9)
    assert nets["numba"].evaluate(Xt, yt)["accuracy"] > 0.9
    np.testing.assert_allclose(nets["numba"].predict_proba(Xt), nets["numpy"].predict_proba(Xt),
                               rtol=1e-7, atol=1e-9)


def test_images_flat_or_shaped_and_weights_in_keras_layout():
    X, _ = quadrant_images(30)
    net = small_cnn()
    p = net.predict_proba(X)
    np.testing.assert_array_equal(net.predict_proba(X.reshape(30, 10, 10, 1)), p)
    np.testing.assert_array_equal(net.predict_proba(X.reshape(30, 10, 10)), p)
    assert [w.shape for w in net.weights] == [(3, 3, 1, 4), (3, 3, 4, 3), (12, 3)]
    net.weights[0][1, 1, 0, :] += 1.0  # a view: the model changes
    assert not np.array_equal(net.predict_proba(X), p)
    assert net.count_params() == 9 * 4 + 4 + 36 * 3 + 3 + 12 * 3 + 3


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_save_load_and_mid_epoch_resume_bitwise(tmp_path, interrupt_after, backend):
    X, y = quadrant_images(96)
    kw = dict(epochs=3, batch_size=8, optimizer=Adam(lr=0.003), verbose=0)
    full = small_cnn(seed=4, backend=backend, dropout=0.3)
    full.fit(X, y, **kw)
    undo = interrupt_after(backend, 8 + 3)  # chunks of 2 steps: inside epoch two
    net = small_cnn(seed=4, backend=backend, dropout=0.3)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    undo()
    resumed = small_cnn(seed=0, backend=backend, dropout=0.3)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)

    full.save(tmp_path / "m.npz")
    loaded = Network.load(tmp_path / "m.npz", backend=backend)
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in full.layers]
    assert loaded.input_shape == SHAPE
    np.testing.assert_array_equal(loaded.predict_proba(X), full.predict_proba(X))
    other = Network([Conv2D(4, 5, padding="same", activation="relu"), MaxPool2D(2),
                     Dropout(0.3), Conv2D(3, 3, strides=2, activation="relu"), Flatten(),
                     Dense(3)], input_shape=SHAPE, dtype="float64")
    with pytest.raises(ValueError, match="resume"):
        other.fit(X, y, resume=ck, **kw)


def test_blog_cnns_have_the_blogs_parameter_and_multiply_counts():
    for name, params, macs in (("cnn-v1", "20,350", "2,361,800"),
                               ("cnn-v2", "109,650", "2,451,000")):
        net, fit = recipes.build(name)
        text = net.summary(print_fn=None)
        assert f"Total params: {params}" in text and f"Multiply-adds per sample: {macs}" in text
        assert "(None, 7, 7, 20)" in text and fit["batch_size"] == 100
    net, _ = recipes.build("cnn")
    assert net.input_shape == (28, 28, 1) and net.count_params() == 109_650


@pytest.mark.parametrize("layers, shape, message", [
    ([Conv2D(4, 5), Flatten(), Dense(3)], (4, 4, 1), r"Conv2D\(4, 5.*larger than its input"),
    ([Conv2D(4, 3), Dense(3)], (8, 8, 1), r"Dense\(3.*Flatten"),
    ([Conv2D(4, 3), Flatten(), Dense(3)], (64,), r"Conv2D.*\(height, width, channels\)"),
    ([MaxPool2D(3), Flatten(), Dense(3)], (2, 8, 1), r"MaxPool2D\(3.*larger than its input"),
    ([Flatten(), Dense(3)], (8, 8), "input_shape must be"),
])
def test_stacks_that_do_not_fit_are_refused_naming_the_layer(layers, shape, message):
    with pytest.raises(ValueError, match=message):
        Network(layers, input_shape=shape)


def test_input_that_does_not_match_input_shape_is_refused():
    net = small_cnn()
    with pytest.raises(ValueError, match=r"input_shape is \(10, 10, 1\)"):
        net.fit(np.zeros((4, 10, 10, 2)), np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match="100"):
        net.predict(np.zeros((4, 99)))
    with pytest.raises(ValueError, match="Conv2D padding"):
        Conv2D(4, 3, padding="full")


def test_a_layer_file_with_an_unknown_or_broken_layer_is_a_format_error(tmp_path):
    import json
    import zipfile
    net = small_cnn()
    path = tmp_path / "m.npz"
    net.save(path)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    meta_name = next(n for n in members if n.endswith(".json"))
    meta = json.loads(members[meta_name])
    for broken in ({"kind": "conv2d", "filters": 4}, {"kind": "conv3d"},
                   {"kind": "conv2d", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                    "padding": "full", "activation": "relu"}):
        meta["layers"][0] = broken
        members[meta_name] = json.dumps(meta).encode()
        bad = tmp_path / "bad.npz"
        with zipfile.ZipFile(bad, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
        with pytest.raises(ModelFormatError):
            Network.load(bad)
