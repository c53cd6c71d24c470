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


def _kernel_signatures():
    from fastmlp import kernels as K
    return {name: len(K.KERNELS[name].fast.overloads)
            for name in ("forward", "dense_rows_forward", "output_loss", "output_activation")
            } | {"train_steps": len(K.train_steps.overloads)}


def test_a_memory_mapped_or_read_only_x_compiles_nothing_more_and_is_not_copied(tmp_path):
    """#43: Numba types a read-only array apart; fit, predict and evaluate on np.load(...,
    mmap_mode="r") or a read-only array run the kernels compiled for writeable X, read the
    mapped memory in place, and give the very same weights."""
    rng = np.random.default_rng(0)
    X = rng.random((3000, 30), dtype=np.float32)
    X[X < 0.85] = 0  # the zero-skipping first layer, and the rows kernel at inference
    y = rng.integers(0, 5, 3000)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    reference = Network([30, 24, 5], seed=0, dropout=0.2)
    reference.fit(X, y, epochs=2, batch_size=32, verbose=0)
    expected = reference.predict_proba(X)
    before = _kernel_signatures()
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    frozen = X.copy()
    frozen.flags.writeable = False
    for data, labels in ((mapped, np.load(tmp_path / "y.npy", mmap_mode="r")), (frozen, y)):
        net = Network([30, 24, 5], seed=0, dropout=0.2)
        net.fit(data, labels, epochs=2, batch_size=32, verbose=0,
                validation_data=(data[:500], labels[:500]))
        for a, b in zip(net.weights, reference.weights):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(net.predict_proba(data), expected)
        np.testing.assert_array_equal(net.predict_proba(data[:3]), expected[:3])
        assert net.evaluate(data, labels) == reference.evaluate(X, y)
    assert _kernel_signatures() == before
    np.testing.assert_array_equal(np.load(tmp_path / "X.npy"), X)  # never written


def test_an_epoch_over_a_memory_map_adds_no_copy_of_it(tmp_path):
    """The process's own memory (RssAnon, not the file's cached pages) grows by far less than
    X while fit, predict and evaluate stream a 190 MB memory-mapped X."""
    import subprocess
    import sys
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(60_000, 784))
    rng = np.random.default_rng(0)
    for start in range(0, len(X), 10_000):
        block = rng.random((10_000, 784), dtype=np.float32)
        block[block < 0.8] = 0
        X[start:start + 10_000] = block
    X.flush()
    del X
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 60_000))
    code = f"""
import numpy as np
from fastmlp import Network
def anon():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon")) * 1024
X = np.load({str(tmp_path / "X.npy")!r}, mmap_mode="r")
y = np.load({str(tmp_path / "y.npy")!r})
net = Network([784, 64, 10], seed=0)
net.fit(X[:256], y[:256], epochs=1, batch_size=128, verbose=0)  # compile or load first
start = anon()
net.fit(X, y, epochs=1, batch_size=128, verbose=0)
net.predict(X)
net.evaluate(X, y)
print(anon() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    growth = int(out.stdout.strip().splitlines()[-1])
    assert growth < 40e6, growth  # X is 188 MB
