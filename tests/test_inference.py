"""Inference's two paths (the row-by-row kernel for a few rows and mostly-zero inputs, the
layer table's forward in batches) agree with the NumPy twins whichever a call takes; their
cached sessions follow the weights, survive threads and pickling."""
import copy
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastmlp import Network, inference
from fastmlp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D


def twin_of(net):
    """The same network and weights on the NumPy backend."""
    twin = copy.deepcopy(net)
    twin.backend = "numpy"
    inference.forget_sessions(twin)
    return twin


NETWORKS = {
    "mlp": lambda: Network([64, 32, 10], seed=1),
    "dropout-sigmoid": lambda: Network([64, 48, 24, 10], activation="tanh", dropout=0.3,
                                       output="sigmoid", loss="quadratic", seed=2),
    "cnn": lambda: Network([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Dropout(0.2),
                            Flatten(), Dense(10)], input_shape=(8, 8, 1), seed=3),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_call_size_agrees_with_the_twin(toy_data, name, monkeypatch):
    X, y = toy_data
    X = X.astype(np.float32)
    net = NETWORKS[name]()
    net.fit(X, y, epochs=2, batch_size=32, lr=0.05, verbose=0)
    twin = twin_of(net)
    expected = twin.predict_proba(X)
    for n in (1, 2, 3, 64, 65, 640):  # a row per thread, the rows kernel's batches, larger
        np.testing.assert_allclose(net.predict_proba(X[:n]), expected[:n], atol=2e-6)
    # dense inputs: large calls take the batched path, small ones the rows kernel
    dense = np.ascontiguousarray(np.clip(X + 0.3, 0, 1))
    np.testing.assert_allclose(net.predict_proba(dense), twin.predict_proba(dense), atol=2e-6)
    monkeypatch.setattr(inference, "ROWS_MAX_WEIGHTS", 0)  # every call of many rows batched
    inference.forget_sessions(net)
    np.testing.assert_allclose(net.predict_proba(X), expected, atol=2e-6)
    assert net.evaluate(X, y) == pytest.approx(twin.evaluate(X, y), rel=1e-5)


def test_the_cached_sessions_follow_the_weights(toy_data, tmp_path):
    X, y = toy_data
    X = X.astype(np.float32)
    net = Network([64, 32, 10], seed=0)
    before = net.predict_proba(X[:5])
    net.fit(X, y, epochs=1, batch_size=32, verbose=0)  # trains the arrays in place
    after = net.predict_proba(X[:5])
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, twin_of(net).predict_proba(X[:5]), atol=2e-6)
    net.save(tmp_path / "m.npz")
    other = Network([64, 32, 10], seed=5)
    other.predict_proba(X[:5])
    loaded = Network.load(tmp_path / "m.npz")
    np.testing.assert_allclose(loaded.predict_proba(X[:5]), after, atol=0)
    clone = pickle.loads(pickle.dumps(net))  # sessions hold locks: they stay behind
    np.testing.assert_allclose(clone.predict_proba(X[:5]), after, atol=0)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_threads_predicting_at_once_each_get_their_own_answer(toy_data, name):
    X, y = toy_data
    X = X.astype(np.float32)
    net = NETWORKS[name]()
    net.fit(X, y, epochs=1, batch_size=32, verbose=0)
    expected = [net.predict_proba(X[i:i + 200]) for i in range(0, 600, 100)]
    failures = []

    def worker(k):
        for _ in range(20):
            i = (k % 6) * 100
            got = net.predict_proba(X[i:i + 200])
            if not np.array_equal(got, expected[k % 6]):
                failures.append(k)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert not failures
