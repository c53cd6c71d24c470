"""Bad input, corrupt files, divergence and interruption: clear errors, nothing lost."""
import gzip
import io
import json
import os
import pickle
import signal
import struct
import sys
import threading
import zipfile

import numpy as np
from conftest import ctrl_c_when
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmlp import Network, kernels as K, read_idx
from fastmlp.errors import DataFormatError, ModelFormatError, TrainingDivergedError
from fastmlp.serialization import FORMAT_VERSION, META_KEY

# ---- input validation --------------------------------------------------------------------------
GOOD_X = np.random.default_rng(0).random((50, 8))
GOOD_Y = np.arange(50) % 3


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(sizes=[8]), ValueError, "sizes must list at least two"),
    (dict(sizes="8,3"), ValueError, "sizes must list"),
    (dict(sizes=[8, 0, 3]), ValueError, r"sizes\[1\] must be >= 1"),
    (dict(sizes=[8, -4, 3]), ValueError, r"sizes\[1\] must be >= 1"),
    (dict(sizes=[8, 2.5, 3]), TypeError, r"sizes\[1\] must be an integer"),
    (dict(activation="softplus"), ValueError, "activation must be one of"),
    (dict(init="zeros"), ValueError, "init must be one of"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
    (dict(dtype="float16"), ValueError, "dtype must be one of"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed="x"), TypeError, "seed must be an integer"),
])
def test_network_arguments_are_checked(kwargs, error, message):
    args = dict(sizes=[8, 4, 3])
    args.update(kwargs)
    with pytest.raises(error, match=message):
        Network(args.pop("sizes"), **args)


X_NAN = GOOD_X.copy()
X_NAN[3, 2] = np.nan
X_INF = GOOD_X.copy()
X_INF[7, 0] = np.inf


@pytest.mark.parametrize("X,y,kwargs,error,message", [
    (GOOD_X[0], GOOD_Y, {}, ValueError, "X must be 2-D"),
    (GOOD_X[:, :5], GOOD_Y, {}, ValueError, "X has 5 features per sample but .* has 8"),
    (GOOD_X.astype(object), GOOD_Y, {}, TypeError, "X must be a 2-D numeric array"),
    (np.full((50, 8), "a"), GOOD_Y, {}, TypeError, "X must be a 2-D numeric array"),
    (X_NAN, GOOD_Y, {}, ValueError, r"X contains NaN or infinite values \(first in row 3\)"),
    (X_INF, GOOD_Y, {}, ValueError, r"X contains NaN or infinite values \(first in row 7\)"),
    (GOOD_X[:0], GOOD_Y[:0], {}, ValueError, "X is empty"),
    (GOOD_X, GOOD_Y + 0.5, {}, ValueError, "y must hold integer class labels"),
    (GOOD_X, GOOD_Y + 1, {}, ValueError, r"y labels must be in \[0, 3\)"),
    (GOOD_X, GOOD_Y - 1, {}, ValueError, r"y labels must be in \[0, 3\)"),
    (GOOD_X, GOOD_Y[:40], {}, ValueError, "y has 40 labels for 50 samples"),
    (GOOD_X, GOOD_Y[:, None], {}, ValueError, "y must be 1-D"),
    (GOOD_X, GOOD_Y.astype(str), {}, TypeError, "y must be a 1-D array that holds integer"),
    (GOOD_X, GOOD_Y, dict(batch_size=0), ValueError, r"batch_size must be in \[1, 50\]"),
    (GOOD_X, GOOD_Y, dict(batch_size=51), ValueError, r"batch_size must be in \[1, 50\]"),
    (GOOD_X, GOOD_Y, dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (GOOD_X, GOOD_Y, dict(lr=0), ValueError, "lr must be > 0"),
    (GOOD_X, GOOD_Y, dict(lr=-0.1), ValueError, "lr must be > 0"),
    (GOOD_X, GOOD_Y, dict(lr=float("nan")), ValueError, "lr must be finite"),
    (GOOD_X, GOOD_Y, dict(lr=float("inf")), ValueError, "lr must be finite"),
    (GOOD_X, GOOD_Y, dict(lr="0.1"), TypeError, "lr must be a real number"),
    (GOOD_X, GOOD_Y, dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
    (GOOD_X, GOOD_Y, dict(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
    (GOOD_X, GOOD_Y, dict(weight_decay=-1e-4), ValueError, "weight_decay must be >= 0"),
    (GOOD_X, GOOD_Y, dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (GOOD_X, GOOD_Y, dict(verbose=5), ValueError, "verbose must be in"),
    (GOOD_X, GOOD_Y, dict(shuffle="yes"), TypeError, "shuffle must be True or False"),
    (GOOD_X, GOOD_Y, dict(validation_data=GOOD_X), ValueError, "validation_data must be a pair"),
    (GOOD_X, GOOD_Y, dict(validation_data=(GOOD_X[:, :3], GOOD_Y)), ValueError, "X_val has 3"),
    (GOOD_X, GOOD_Y, dict(validation_data=(GOOD_X, GOOD_Y + 5)), ValueError, "y_val labels"),
])
def test_fit_arguments_are_checked(X, y, kwargs, error, message):
    net = Network([8, 4, 3], seed=0)
    before = [w.copy() for w in net.weights]
    with pytest.raises(error, match=message):
        net.fit(X, y, **{"verbose": 0, "batch_size": 10, **kwargs})
    for a, b in zip(before, net.weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "evaluate"])
def test_inference_arguments_are_checked(method):
    net = Network([8, 4, 3], seed=0)
    call = getattr(net, method)
    extra = (GOOD_Y,) if method == "evaluate" else ()
    with pytest.raises(ValueError, match="X has 7 features"):
        call(GOOD_X[:, :7], *extra)
    with pytest.raises(ValueError, match="NaN"):
        call(X_NAN, *extra)
    if method == "evaluate":
        with pytest.raises(ValueError, match="y labels"):
            call(GOOD_X, GOOD_Y + 3)


# ---- divergence --------------------------------------------------------------------------------
def test_divergence_stops_with_last_finite_weights(toy_data):
    X, y = toy_data
    net = Network([64, 32, 10], init="large", seed=0)
    with pytest.raises(TrainingDivergedError, match="keeps its weights from before step"):
        net.fit(X, y, epochs=50, batch_size=16, lr=1e10, momentum=0.9, verbose=0)
    assert net.history.stopped == "diverged"
    assert all(np.isfinite(w).all() for w in net.weights + net.biases)
    assert np.isfinite(net.predict_proba(X)).all()


def test_without_the_guard_the_same_run_would_end_in_nan(toy_data):
    """The run above really diverges: the raw kernel, unguarded, leaves non-finite weights."""
    from fastmlp import SGD
    from fastmlp.training import Trainer
    X, y = toy_data
    X = X.astype(np.float32)
    net = Network([64, 32, 10], init="large", seed=0)
    t = Trainer(net, X, y, 16, SGD(1e10, 0.9))
    for epoch in range(5):
        K.train_steps(X, y, net.epoch_order(epoch, len(y)), 16, 0, len(y) // 16, epoch, t.params,
                      t.state, t.rule, t.ws, t.layers, *t.codes)
    assert not all(np.isfinite(w).all() for w in t.params.W)


# ---- model files -------------------------------------------------------------------------------
@pytest.fixture
def model_file(tmp_path):
    net = Network([20, 8, 3], seed=1)
    rng = np.random.default_rng(0)
    net.fit(rng.random((60, 20)), rng.integers(0, 3, 60), epochs=2, batch_size=20, verbose=0)
    path = tmp_path / "model.npz"
    net.save(path)
    return net, path


def _rewrite(path, meta_edit=None, drop=None, replace=None):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members[META_KEY])
    if meta_edit:
        meta_edit(meta)
    members[META_KEY] = json.dumps(meta).encode()
    if drop:
        del members[drop]
    if replace:
        members.update(replace)
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def test_model_round_trip(model_file, tmp_path):
    net, path = model_file
    loaded = Network.load(path)
    assert (loaded.sizes, loaded.activation, loaded.dtype, loaded.seed) == \
        (net.sizes, net.activation, net.dtype, net.seed)
    for a, b in zip(net.weights + net.biases, loaded.weights + loaded.biases):
        np.testing.assert_array_equal(a, b)
    assert loaded.history.history["loss"] == net.history.history["loss"]
    assert loaded.train_config["batch_size"] == 20


def _set_version(meta):
    meta["format_version"] = FORMAT_VERSION + 98


def _set_shape(meta):
    meta["arrays"]["W0"]["shape"] = [20, 9]


def _set_sizes(meta):
    meta["sizes"] = [20, 9, 3]
    meta["layers"][0]["units"] = 9


def _huge(meta):
    meta["arrays"]["W0"]["shape"] = [10 ** 9, 10 ** 9]


@pytest.mark.parametrize("edit,message", [
    (dict(meta_edit=_set_version), "format version 99"),
    (dict(meta_edit=_set_shape), "W0.npy holds float32 \\(20, 8\\), the metadata says"),
    (dict(meta_edit=_set_sizes), "W0 is float32 \\(20, 8\\), expected float32 \\(20, 9\\)"),
    (dict(meta_edit=_huge), "declares .* bytes of arrays but the file has"),
    (dict(meta_edit=lambda m: m.pop("sizes")), "inconsistent model metadata"),
    (dict(meta_edit=lambda m: m.update(format="other")), "not a fastmlp model file"),
    (dict(drop="b1.npy"), "array 'b1' is missing"),
    (dict(drop=META_KEY), "no meta.json inside"),
    (dict(meta_edit=lambda m: m["arrays"].pop("b1")), "array b1 is missing"),
])
def test_inconsistent_model_files(model_file, edit, message):
    _, path = model_file
    _rewrite(path, **edit)
    with pytest.raises(ModelFormatError, match=message):
        Network.load(path)


def test_truncated_and_bit_flipped_model_files(model_file):
    _, path = model_file
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            Network.load(path)
    for offset in (200, len(data) // 2, len(data) - 200):
        path.write_bytes(data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:])
        with pytest.raises(ModelFormatError):
            Network.load(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


@pytest.mark.parametrize("how", ["pickle file", "npz with object array", "pickled member"])
def test_a_pickle_disguised_as_a_model_never_runs(model_file, tmp_path, how):
    _, path = model_file
    _Exploit.marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit())
    if how == "pickle file":
        path.write_bytes(payload)
    elif how == "npz with object array":
        with open(path, "wb") as f:
            np.savez(f, W0=np.array([_Exploit()], dtype=object))
    else:
        buf = io.BytesIO()
        np.save(buf, np.array([_Exploit()], dtype=object), allow_pickle=True)
        _rewrite(path, replace={"W0.npy": buf.getvalue()})
    with pytest.raises(ModelFormatError):
        Network.load(path)
    assert not _Exploit.marker.exists()


@pytest.mark.parametrize("member", ["meta.json", "W0.npy"])
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_compression_method_flipped_on_stored_data(model_file, member, method):
    """Found by fuzzing: a stored member whose method field says compressed sends its bytes to
    zlib (meta.json + DEFLATED raises zlib.error), bz2 or lzma."""
    _, path = model_file
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    data[local + 8:local + 10] = method.to_bytes(2, "little")  # method field, local header
    pos = data.find(b"PK\x01\x02")
    while pos != -1:  # and in the member's central directory entry
        name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
        if data[pos + 46:pos + 46 + name_len] == member.encode():
            data[pos + 10:pos + 12] = method.to_bytes(2, "little")
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError):
        Network.load(path)


def test_a_model_with_nan_weights_is_refused(model_file):
    net, path = model_file
    net.weights[0][0, 0] = np.nan
    net.save(path)
    with pytest.raises(ModelFormatError, match="W0 contains NaN"):
        Network.load(path)


def test_a_failed_save_keeps_the_previous_file(model_file, monkeypatch):
    net, path = model_file
    before = path.read_bytes()
    net.weights[0] += 1

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]  # no temp file left
    monkeypatch.undo()
    net.save(path)
    np.testing.assert_array_equal(Network.load(path).weights[0], net.weights[0])


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_model_files_raise_only_documented_errors(tmp_path_factory, data):
    path = _fuzz_base(tmp_path_factory)
    good = path.read_bytes()
    mutated = _mutate(data, good)
    target = path.parent / "fuzzed.npz"
    target.write_bytes(mutated)
    try:
        Network.load(target)
    except ModelFormatError:
        pass


_BASE = {}


def _fuzz_base(factory):
    if "model" not in _BASE:
        d = factory.mktemp("fuzz")
        net = Network([6, 4, 3], seed=0)
        net.save(d / "base.npz")
        raw = d / "labels.idx"
        labels = np.arange(40, dtype=np.uint8) % 10
        raw.write_bytes(struct.pack(">HBBI", 0, 8, 1, 40) + labels.tobytes())
        _BASE.update(model=d / "base.npz", idx=raw)
    return _BASE["model"]


def _mutate(data, good):
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    b = bytearray(good)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        b = b[:data.draw(st.integers(0, len(b) - 1))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(b) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        b[i:i + len(chunk)] = chunk
    return bytes(b)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), compress=st.booleans())
def test_fuzzed_idx_files_raise_only_documented_errors(tmp_path_factory, data, compress):
    _fuzz_base(tmp_path_factory)
    good = _BASE["idx"].read_bytes()
    if compress:
        good = gzip.compress(good)
    target = _BASE["idx"].parent / ("fuzzed.gz" if compress else "fuzzed.idx")
    target.write_bytes(_mutate(data, good))
    try:
        arr = read_idx(target)
    except DataFormatError:
        return
    assert isinstance(arr, np.ndarray) and arr.ndim >= 1


# ---- interruption and resume -------------------------------------------------------------------
def _interrupt_after_first_epoch(epoch, metrics):
    if epoch == 1:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_ctrl_c_returns_and_resume_reaches_the_same_weights(toy_data, tmp_path, backend):
    X, y = toy_data
    kw = dict(epochs=4, batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-4, verbose=0)
    full = Network([64, 32, 10], seed=3, backend=backend)
    full.fit(X, y, **kw)

    net = Network([64, 32, 10], seed=3, backend=backend)
    ck = tmp_path / "ck.npz"
    history = net.fit(X, y, checkpoint=ck, callbacks=[_interrupt_after_first_epoch], **kw)
    assert history.stopped == "interrupted" and history.epoch == [1]
    assert net.epochs_done == 1 and ck.exists()

    resumed = Network([64, 32, 10], seed=99, backend=backend)  # seed comes from the checkpoint
    history = resumed.fit(X, y, resume=ck, **kw)
    assert history.epoch == [1, 2, 3, 4] and history.stopped is None
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_inside_an_epoch_resumes_bitwise(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.random((4000, 100)).astype(np.float32)
    X[X < 0.7] = 0
    y = rng.integers(0, 10, 4000)
    kw = dict(batch_size=8, lr=0.01, momentum=0.9, verbose=0)

    original = K.train_steps_ref
    calls = []

    def ctrl_c_in_the_third_chunk_of_epoch_two(*args):
        calls.append(args[4])  # step_begin
        result = original(*args)
        if len(calls) == 8 + 3:  # 8 chunks per epoch
            os.kill(os.getpid(), signal.SIGINT)  # delivered to fit's handler, as a real Ctrl-C
        return result

    monkeypatch.setattr(K, "train_steps_ref", ctrl_c_in_the_third_chunk_of_epoch_two)
    net = Network([100, 64, 10], seed=4, backend="numpy")
    ck = tmp_path / "ck.npz"
    history = net.fit(X, y, epochs=5, checkpoint=ck, **kw)
    monkeypatch.undo()
    assert history.stopped == "interrupted" and history.epoch == [1]
    meta = json.loads(zipfile.ZipFile(ck).read(META_KEY))
    assert meta["epochs_done"] == 1 and meta["step"] == calls[-1] + 63  # three chunks of 63 steps
    assert all(np.isfinite(w).all() for w in net.weights)

    resumed = Network([100, 64, 10], seed=4, backend="numpy")
    resumed.fit(X, y, epochs=3, resume=ck, **kw)
    full = Network([100, 64, 10], seed=4, backend="numpy")
    full.fit(X, y, epochs=3, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.history["loss"] == pytest.approx(full.history.history["loss"],
                                                            rel=1e-12)


def test_ctrl_c_from_another_thread_stops_at_a_step_boundary(toy_data):
    """A real asynchronous Ctrl-C: fit returns, with finite weights, instead of raising."""
    X, y = toy_data
    net = Network([64, 32, 10], seed=0, backend="numpy")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    history = net.fit(X, y, epochs=100_000, batch_size=4, verbose=0)
    timer.join()
    assert history.stopped == "interrupted" and net.epochs_done < 100_000
    assert all(np.isfinite(w).all() for w in net.weights + net.biases)


def test_resume_refuses_a_model_file_and_a_different_network(model_file, tmp_path):
    _, path = model_file
    rng = np.random.default_rng(0)
    X, y = rng.random((60, 20)), rng.integers(0, 3, 60)
    with pytest.raises(ModelFormatError, match="not a checkpoint"):
        Network([20, 8, 3], seed=1).fit(X, y, batch_size=20, resume=path, verbose=0)
    ck = tmp_path / "ck.npz"
    Network([20, 8, 3], seed=1).fit(X, y, epochs=1, batch_size=20, checkpoint=ck, verbose=0)
    with pytest.raises(ValueError, match=r"holds a 20-8-3 MLP \(relu\) float32 network, this "
                                         r"one is 20-5-3 MLP \(relu\) float32"):
        Network([20, 5, 3], seed=1).fit(X, y, epochs=2, batch_size=20, resume=ck, verbose=0)


@pytest.mark.mnist
def test_cli_ctrl_c_saves_the_model_and_exits_130(tmp_path):
    code, out, err = ctrl_c_when([sys.executable, "-m", "fastmlp", "train", "--dataset",
                                  "mnist", "--epochs", "200", "--hidden", "64", "--out", "m.npz"],
                                 tmp_path, "stdout", "Epoch 1/200")
    assert code == 130, err
    assert "Interrupted in epoch" in out and "Traceback" not in err
    net = Network.load(tmp_path / "m.npz")
    assert 1 <= net.epochs_done < 200


# ---- numerics ----------------------------------------------------------------------------------
def test_float32_and_float64_agree_on_a_short_training(toy_data):
    X, y = toy_data
    runs = {}
    for dtype in ("float32", "float64"):
        net = Network([64, 32, 10], seed=2, dtype=dtype)
        runs[dtype] = (net, net.fit(X, y, epochs=3, batch_size=32, lr=0.05, verbose=0))
    np.testing.assert_allclose(runs["float32"][1].history["loss"],
                               runs["float64"][1].history["loss"], rtol=1e-4)
    for a, b in zip(runs["float32"][0].weights, runs["float64"][0].weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_two_processes_saving_to_one_path_leave_one_whole_model(tmp_path):
    """Each save writes its own temporary file and renames it over the path: two processes
    saving different models to the same path at once, over and over, leave one of the two
    models whole, and a reader meanwhile only ever sees whole models."""
    import subprocess
    target = tmp_path / "shared.npz"
    writer = ("import sys, numpy as np\n"
              "from fastmlp import Network\n"
              "net = Network([30, 20, 4], seed=int(sys.argv[1]))\n"
              "for _ in range(60):\n"
              "    net.save(sys.argv[2])\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(seed), str(target)])
             for seed in (1, 2)]
    expected = {seed: Network([30, 20, 4], seed=seed).weights[0] for seed in (1, 2)}
    seen = set()
    while any(p.poll() is None for p in procs):
        if target.exists():
            w = Network.load(target).weights[0]  # a mix or a torn file would raise or differ
            seen.update(s for s, e in expected.items() if np.array_equal(w, e))
    assert all(p.wait() == 0 for p in procs)
    final = Network.load(target).weights[0]
    assert any(np.array_equal(final, e) for e in expected.values())
    assert seen, "the reader saw no whole model"
    assert not list(tmp_path.glob(".shared.npz.*.tmp"))  # no temporary file left behind


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_one_and_the_weights(toy_data,
                                                                               tmp_path,
                                                                               monkeypatch):
    """#43, disk full while a fit checkpoints: a clear error naming the file, the previous
    checkpoint intact (and resumable to the uninterrupted run's weights), the network at the
    last completed epoch."""
    import errno
    X, y = toy_data
    kw = dict(epochs=3, batch_size=64, verbose=0)
    full = Network([64, 16, 10], seed=0)
    full.fit(X, y, **kw)
    from fastmlp import serialization
    ck = tmp_path / "ck.npz"
    saves = {"n": 0}
    atomic_write_bytes = serialization.atomic_write_bytes

    def full_disk_on_the_second_save(path, write):
        saves["n"] += 1
        if saves["n"] != 2:
            return atomic_write_bytes(path, write)

        def part_then_full(f):
            f.write(b"PK\x03\x04 the first bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_write_bytes(path, part_then_full)

    monkeypatch.setattr(serialization, "atomic_write_bytes", full_disk_on_the_second_save)
    net = Network([64, 16, 10], seed=0)
    with pytest.raises(OSError, match=r"checkpoint .*ck.npz could not be saved .*No space left"
                                      r".* the previous checkpoint there, if any, is kept"):
        net.fit(X, y, checkpoint=ck, **kw)
    monkeypatch.undo()
    assert net.epochs_done == 2 and Network.load(ck).epochs_done == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no temporary file left
    resumed = Network([64, 16, 10], seed=5)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)


# ---- a real full disk (a small tmpfs) ------------------------------------------------------
def test_a_model_save_on_a_full_disk_keeps_the_previous_file(small_disk):
    from conftest import fill_disk
    path = small_disk / "model.npz"
    old = Network([64, 16, 10], seed=1)
    old.save(path)
    fill_disk(small_disk)
    with pytest.raises(OSError, match=r"model.npz.*No space left"):
        Network([64, 300, 10], seed=2).save(path)
    kept = Network.load(path)
    for a, b in zip(old.weights + old.biases, kept.weights + kept.biases):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "model.npz"]


def test_a_checkpoint_on_a_full_disk_stops_the_fit_and_the_last_one_resumes(small_disk,
                                                                           toy_data):
    """The disk fills up after the first epoch's checkpoint: the second fails with an error
    naming it, the first stays whole and resumes to the uninterrupted run's weights."""
    from conftest import fill_disk
    X, y = toy_data
    kw = dict(epochs=3, batch_size=64, verbose=0)
    whole = Network([64, 16, 10], seed=0)
    whole.fit(X, y, **kw)
    ck = small_disk / "ck.npz"
    net = Network([64, 16, 10], seed=0)

    def fill_after_the_first_epoch(epoch, metrics):
        if epoch == 1:
            fill_disk(small_disk)

    with pytest.raises(OSError, match=r"checkpoint .*ck.npz could not be saved .*No space left"):
        net.fit(X, y, checkpoint=ck, callbacks=[fill_after_the_first_epoch], **kw)
    assert Network.load(ck).epochs_done == 1
    assert sorted(p.name for p in small_disk.iterdir()) == ["ck.npz", "filler"]
    (small_disk / "filler").unlink()
    resumed = Network([64, 16, 10], seed=5)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)


def test_a_tensorboard_log_on_a_full_disk_stops_the_fit_with_an_error(small_disk, toy_data):
    """tensorboardX's writer thread dies on a failed write and its next flush waits forever: a
    fit logging to a full disk used to hang. Now it stops with an error naming the run folder,
    and what was logged before stays readable."""
    import threading

    from conftest import fill_disk
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fastmlp.callbacks import TensorBoard
    X, y = toy_data
    board = TensorBoard(small_disk / "logs", run_name="run", histograms=True)
    net = Network([64, 300, 10], seed=0)
    outcome = {}

    def fill_after_the_first_epoch(epoch, metrics):
        if epoch == 1:
            fill_disk(small_disk)

    def fit():
        try:
            net.fit(X, y, epochs=5, batch_size=32, verbose=0,
                    callbacks=[board, fill_after_the_first_epoch])
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the fit hung on the full disk"
    assert "TensorBoard log in" in str(outcome["error"]) and "No space left" in str(
        outcome["error"])
    assert str(small_disk / "logs" / "run") in str(outcome["error"])
    assert net.epochs_done in (1, 2)
    (small_disk / "filler").unlink()
    events = EventAccumulator(str(small_disk / "logs" / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("epoch/loss")][:1] == [1]


def test_a_read_only_folder_refuses_every_save_with_a_clear_error(small_disk, toy_data):
    """#43: the output folder turns read-only (a real remount of the tmpfs): a model save, a
    checkpoint during a fit and a TensorBoard log each fail with an error naming the path, the
    files already there stay whole, and the network keeps its last completed epoch."""
    import errno
    import subprocess

    from fastmlp.callbacks import TensorBoard
    X, y = toy_data
    model, ck = small_disk / "model.npz", small_disk / "ck.npz"
    net = Network([64, 16, 10], seed=0)
    net.fit(X, y, epochs=1, batch_size=64, verbose=0, checkpoint=ck)
    net.save(model)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(OSError, match=r"model .*model.npz could not be saved") as e:
            net.save(model)
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError, match=r"checkpoint .*ck.npz could not be saved .*Read-only"):
            net.fit(X, y, epochs=2, batch_size=64, verbose=0, checkpoint=ck)
        assert net.epochs_done == 2  # the epoch before the failed checkpoint
        with pytest.raises(OSError, match=r"Read-only file system: .*logs"):
            net.fit(X, y, epochs=1, batch_size=64, verbose=0,
                    callbacks=[TensorBoard(small_disk / "logs")])
        assert Network.load(model).epochs_done == 1 and Network.load(ck).epochs_done == 1
        assert sorted(p.name for p in small_disk.iterdir()) == ["ck.npz", "model.npz"]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
