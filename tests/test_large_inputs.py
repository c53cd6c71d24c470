"""Inference on a million rows runs in batches: memory beyond the inputs and the outputs stays
bounded (tracemalloc sees NumPy's allocations)."""
import tracemalloc

import numpy as np
import pytest

from fastmlp import Network


@pytest.mark.parametrize("density", [0.1, 1.0])  # the zero-skipping and the dense path
def test_a_million_rows_in_bounded_memory(density):
    rng = np.random.default_rng(0)
    n, d = 1_000_000, 20
    X = rng.random((n, d), dtype=np.float32)
    if density < 1:
        X[X > density] = 0
    y = rng.integers(0, 10, n)
    net = Network([d, 16, 10], seed=0)
    net.fit(X[:2000], y[:2000], epochs=1, verbose=0)
    net.evaluate(X[:1000], y[:1000])  # load the compiled kernels (their cache is unpickled)
    tracemalloc.start()
    try:
        pred = net.predict(X)
        _, peak_predict = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        held, _ = tracemalloc.get_traced_memory()  # the predictions, still alive
        result = net.evaluate(X, y)
        peak_evaluate = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    assert pred.shape == (n,) and 0 <= result["accuracy"] <= 1
    # the output (8 MB of labels) plus buffers of a few thousand rows: not a copy of X (80 MB)
    assert peak_predict < pred.nbytes + 4e6, peak_predict
    assert peak_evaluate < 4e6, peak_evaluate
