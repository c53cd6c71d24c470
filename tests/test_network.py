"""The Network API: backends agree, training is deterministic, files round-trip, MNIST learns."""
import numpy as np
import pytest

import fastmlp.compiling as compiling_module
from fastmlp import History, Network


def weights_of(net):
    return [a.copy() for a in net.weights + net.biases]


def fit_steps(backend, dtype, data, steps=20, batch=32, **kw):
    X, y = data
    net = Network([X.shape[1], 24, 16, 10], seed=5, dtype=dtype, backend=backend, **kw)
    n = steps * batch
    net.fit(X[:n], y[:n], epochs=1, batch_size=batch, lr=0.1, momentum=0.9, weight_decay=1e-4,
            verbose=0)
    return net


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_backends_agree_after_20_steps(toy_data, dtype, tol, activation):
    a = fit_steps("numba", dtype, toy_data, activation=activation)
    b = fit_steps("numpy", dtype, toy_data, activation=activation)
    moved = fit_steps("numpy", dtype, toy_data, steps=1, activation=activation)
    for wa, wb, w1 in zip(weights_of(a), weights_of(b), weights_of(moved)):
        np.testing.assert_allclose(wa, wb, rtol=tol, atol=tol)
        assert not np.allclose(wa, w1), "20 steps should move the weights beyond one step"


def test_sparse_and_dense_first_layer_agree(toy_data, monkeypatch):
    sparse = fit_steps("numba", "float64", toy_data)
    monkeypatch.setattr(compiling_module, "SPARSE_INPUT_DENSITY", 0.0)  # never sparse
    dense = fit_steps("numba", "float64", toy_data)
    for a, b in zip(weights_of(sparse), weights_of(dense)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_same_seed_same_run(toy_data, backend):
    X, y = toy_data
    runs = []
    for _ in range(2):
        net = Network([64, 32, 10], seed=11, backend=backend)
        h = net.fit(X, y, epochs=2, batch_size=50, verbose=0)
        runs.append((weights_of(net), h.history["loss"]))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]
    other = Network([64, 32, 10], seed=12)
    assert not np.array_equal(other.weights[0], runs[0][0][0])


def test_same_seed_same_initial_weights_and_order_on_both_backends():
    a = Network([30, 20, 10], seed=3, backend="numba")
    b = Network([30, 20, 10], seed=3, backend="numpy")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.epoch_order(4, 100), b.epoch_order(4, 100))
    assert not np.array_equal(a.epoch_order(4, 100), a.epoch_order(5, 100))
    np.testing.assert_array_equal(a.epoch_order(0, 7, shuffle=False), np.arange(7))


@pytest.mark.parametrize("init,expected_std", [
    ("normal", lambda n_in, n_out: 1 / np.sqrt(n_in)),
    ("he", lambda n_in, n_out: np.sqrt(2 / n_in)),
    ("xavier", lambda n_in, n_out: np.sqrt(2 / (n_in + n_out))),  # U(±√(6/(in+out)))
    ("large", lambda n_in, n_out: 1.0),
])
def test_initialisations(init, expected_std):
    net = Network([400, 300, 10], init=init, seed=0, dtype="float64")
    w = net.weights[0]
    assert w.std() == pytest.approx(expected_std(400, 300), rel=0.02)
    assert abs(w.mean()) < 0.01 * expected_std(400, 300) * 10
    if init == "xavier":
        assert np.abs(w).max() <= np.sqrt(6 / 700)
    assert all((b == 0).all() for b in net.biases)


def test_predict_proba_predict_evaluate(toy_data):
    X, y = toy_data
    net = Network([64, 32, 10], seed=1)
    net.fit(X, y, epochs=15, batch_size=32, lr=0.1, verbose=0)
    p = net.predict_proba(X)
    assert p.shape == (len(X), 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(net.predict(X), p.argmax(axis=1))
    result = net.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] == pytest.approx(np.mean(net.predict(X) == y))
    assert result["accuracy"] > 0.9
    expected_loss = -np.mean(np.log(p[np.arange(len(y)), y].astype(np.float64)))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_history_records_every_epoch(toy_data):
    X, y = toy_data
    net = Network([64, 16, 10], seed=0)
    h = net.fit(X, y, epochs=3, batch_size=64, validation_data=(X[:100], y[:100]), verbose=0)
    assert isinstance(h, History)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time", "lr"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert all(t > 0 for t in h.history["epoch_time"])
    assert h.epoch == [1, 2, 3]


def test_any_number_of_hidden_layers(toy_data):
    X, y = toy_data
    for sizes in ([64, 10], [64, 40, 30, 20, 10]):
        net = Network(sizes, seed=0)
        h = net.fit(X, y, epochs=8, batch_size=32, lr=0.05, verbose=0)
        assert h.history["loss"][-1] < h.history["loss"][0]
        assert net.evaluate(X, y)["accuracy"] > 0.5


def test_epoch_line_is_printed(toy_data, capsys):
    X, y = toy_data
    Network([64, 16, 10], seed=0).fit(X, y, epochs=2, batch_size=64,
                                      validation_data=(X, y), verbose=2)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith("Optimizer: SGD, lr 0.1, momentum 0.9")
    out = out[1:]
    assert out[1].startswith("Epoch 2/2 - ")
    for key in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: "):
        assert key in out[1]


@pytest.mark.mnist
def test_mnist_784_300_10_reaches_97_5_percent(mnist):
    (X, y), (Xt, yt) = mnist
    net = Network([784, 300, 10], activation="relu", init="he", seed=0)
    net.fit(X, y, epochs=4, batch_size=128, lr=0.1, momentum=0.9, verbose=0)
    accuracy = net.evaluate(Xt, yt)["accuracy"]
    assert accuracy >= 0.975, f"test accuracy {accuracy:.4f}"


ALLOCATION_PROBE = """
import json, os, numpy as np
from numba.core.runtime import rtsys
from fastmlp import Network, SGD
from fastmlp.optimizers import Adam
import fastmlp.compiling as compiling
from fastmlp.training import Trainer
rng = np.random.default_rng(0)
X = rng.random((2400, 100)).astype(np.float32)
X[X < 0.8] = 0
y = rng.integers(0, 10, 2400)
out = {}
for batch in (8, 240):
    for sparse in (True, False):
        for name, opt in (("sgd", SGD(0.1, 0.9)), ("adam", Adam(1e-3))):
            compiling.SPARSE_INPUT_DENSITY = 1.0 if sparse else 0.0
            os.environ["FASTMLP_FIRST_LAYER"] = "sparse" if sparse else "dense"
            trainer = Trainer(Network([100, 32, 16, 10], seed=0, dropout=0.3), X, y, batch,
                              opt, chunks_per_epoch=1)
            assert trainer.sparse == sparse
            # one train_steps call per epoch: the ThreadTuner's segments (one call per ~50 ms,
            # each unboxing the arrays once) would make the count depend on timing
            trainer.thread_tuner.active = False
            trainer.run_epoch(0)
            before = rtsys.get_allocation_stats().alloc
            trainer.run_epoch(1)
            out[f"{batch}-{sparse}-{name}"] = rtsys.get_allocation_stats().alloc - before

def leaves(a):
    return sum(map(leaves, a)) if isinstance(a, tuple) else int(isinstance(a, np.ndarray))

# the arrays one train_steps call receives: Numba counts one allocation per array it unboxes
out["arrays"] = leaves((X, y, trainer.params, trainer.state, trainer.ws, trainer.layers,
                        trainer.codes)) + 1
print(json.dumps(out))
"""


def test_no_allocation_per_training_step():
    """Numba's own allocation counter over one epoch: the same for 300 steps as for 10."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, "-c", ALLOCATION_PROBE], env=env, capture_output=True,
                          text=True, check=True)
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for sparse in (True, False):
        for name in ("sgd", "adam"):
            many, few = counts[f"8-{sparse}-{name}"], counts[f"240-{sparse}-{name}"]
            assert many == few, f"sparse={sparse} {name}: {many} allocations in 300 steps, " \
                                f"{few} in 10"
            assert many <= counts["arrays"], f"{many} allocations for {counts['arrays']} arrays"


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_an_epoch_run_in_parts_equals_one_run(toy_data, backend):
    from fastmlp import SGD
    from fastmlp.training import Trainer
    X, y = toy_data
    whole = Trainer(Network([64, 16, 10], seed=2, backend=backend), X.astype(np.float32), y, 32,
                    SGD(0.1, 0.9))
    parts = Trainer(Network([64, 16, 10], seed=2, backend=backend), X.astype(np.float32), y, 32,
                    SGD(0.1, 0.9))
    loss, correct, seen, step, _ = whole.run_epoch(0)
    first = parts.run_epoch(0, until=7)
    assert first[3] == 7 and first[2] == 7 * 32
    second = parts.run_epoch(0, step=7, totals=first[:3] + (0.0,))
    assert second[3] == step == whole.steps
    assert second[:3] == pytest.approx((loss, correct, seen))
    for a, b in zip(whole.net.weights + whole.net.biases, parts.net.weights + parts.net.biases):
        np.testing.assert_array_equal(a, b)
