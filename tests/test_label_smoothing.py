"""Label smoothing (``fit(label_smoothing=ε)``) against PyTorch's ``cross_entropy(...,
label_smoothing=ε)``: the loss and its gradient, and whole fits step for step (float64, same
weights, same batches) on both backends; bad settings."""
import numpy as np
import pytest

from fastmlp import Network
from fastmlp.kernels import KERNELS, loss_rule
from fastmlp.optimizers import SGD, Adam

from conftest import optional_torch
from test_optimizers import data, torch_run

torch = optional_torch()
SOFTMAX_CE = 0


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("side", ["fast", "reference"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_loss_and_gradient_match_pytorchs(side, smoothing):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (7, 10))
    labels = rng.integers(0, 10, 7)
    dlogits = np.zeros_like(logits)
    loss, correct = getattr(KERNELS["output_loss"], side)(
        loss_rule(SOFTMAX_CE, smoothing=smoothing), logits, labels, dlogits)
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(z, torch.tensor(labels),
                                                 label_smoothing=smoothing)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(dlogits, z.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert correct == np.count_nonzero(logits.argmax(axis=1) == labels)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("opt", [SGD(lr=0.05, momentum=0.9), Adam(lr=0.01)], ids=["sgd", "adam"])
def test_fits_match_pytorch_step_for_step(backend, opt):
    X, y = data()
    net = Network([20, 16, 12, 4], seed=1, dtype="float64", backend=backend)
    start = Network([20, 16, 12, 4], seed=1, dtype="float64")
    net.fit(X, y, epochs=3, batch_size=10, optimizer=opt, verbose=0,
                      label_smoothing=0.2)
    tW, tb = torch_run(start, X, y, opt, 10, 3, label_smoothing=0.2)
    for ours, theirs in zip(net.weights + net.biases, tW + tb):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)
    plain, _ = torch_run(start, X, y, opt, 10, 3)
    assert max(np.abs(a - b).max() for a, b in zip(net.weights, plain)) > 1e-4
    assert net.train_config["label_smoothing"] == 0.2


def test_smoothing_keeps_the_predicted_probabilities_off_0_and_1():
    """The point of it: a smoothed fit's most confident probability stays near 1 - ε + ε / k
    rather than going to 1."""
    X, y = data(n=200)
    confident = {}
    for smoothing in (0.0, 0.3):
        net = Network([20, 64, 4], seed=0)
        net.fit(X, y, epochs=200, batch_size=20, optimizer=Adam(lr=0.01), verbose=0,
                label_smoothing=smoothing)
        confident[smoothing] = float(np.median(net.predict_proba(X).max(axis=1)))
    assert confident[0.0] > 0.99
    assert confident[0.3] < 0.85


@pytest.mark.parametrize("kwargs,message", [
    (dict(label_smoothing=1.0), r"label_smoothing must be a fraction in \[0, 1\), got 1.0"),
    (dict(label_smoothing=-0.1), r"label_smoothing must be a fraction in \[0, 1\)"),
    (dict(label_smoothing="0.1"), r"label_smoothing must be a fraction in \[0, 1\)"),
])
def test_bad_label_smoothing_is_refused(kwargs, message):
    X, y = data()
    with pytest.raises(ValueError, match=message):
        Network([20, 4], seed=0).fit(X, y, verbose=0, **kwargs)


def test_label_smoothing_needs_softmax_and_cross_entropy():
    X, y = data()
    net = Network([20, 4], output="sigmoid", loss="quadratic", seed=0)
    with pytest.raises(ValueError, match="label_smoothing needs a softmax output"):
        net.fit(X, y, batch_size=10, verbose=0, label_smoothing=0.1)
