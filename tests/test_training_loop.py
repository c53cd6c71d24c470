"""The training loop of issue 'Training recipes': Keras epochs, validation_split, schedules,
early stopping, dropout, costs, named recipes."""
import math
import subprocess
import sys

import numpy as np
import pytest

from fastmlp import Network, recipes
from fastmlp.callbacks import EarlyStopping
from fastmlp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from fastmlp.optimizers import SGD, Adam
from fastmlp.schedules import (CosineDecay, ExponentialDecay, LinearRamp, ReduceLROnPlateau,
                               StepDecay)


def test_epochs_means_more_epochs_and_each_call_has_its_history(toy_data):
    X, y = toy_data
    net = Network([64, 16, 10], seed=0)
    first = net.fit(X, y, epochs=2, batch_size=64, verbose=0)
    second = net.fit(X, y, epochs=3, batch_size=64, verbose=0)
    assert first.epoch == [1, 2] and second.epoch == [3, 4, 5]
    assert net.epochs_done == 5 and net.history.epoch == [1, 2, 3, 4, 5]
    third = net.fit(X, y, epochs=7, initial_epoch=5, batch_size=64, verbose=0)
    assert third.epoch == [6, 7] and net.epochs_done == 7


def test_validation_split_is_the_last_fraction(toy_data):
    X, y = toy_data
    a = Network([64, 16, 10], seed=0)
    ha = a.fit(X, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
    b = Network([64, 16, 10], seed=0)
    hb = b.fit(X[:480], y[:480], epochs=2, batch_size=32, validation_data=(X[480:], y[480:]),
               verbose=0)
    assert ha.history["val_loss"] == hb.history["val_loss"]
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    with pytest.raises(ValueError, match="validation_split must be a fraction"):
        a.fit(X, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="not both"):
        a.fit(X, y, validation_split=0.1, validation_data=(X, y), verbose=0)


def test_schedule_values():
    assert [StepDecay(0.5, 2).value(e, 1.0, {}) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert ExponentialDecay(0.9, initial=2.0).value(2, 1.0, {}) == pytest.approx(2 * 0.81)
    cos = CosineDecay(10, warmup=2, final=0.1)
    assert cos.value(0, 1.0, {}) == pytest.approx(1 / 3) and cos.value(1, 1.0, {}) == \
        pytest.approx(2 / 3)
    assert cos.value(2, 1.0, {}) == pytest.approx(1.0) and cos.value(10, 1.0, {}) == \
        pytest.approx(0.1)
    assert cos.value(6, 1.0, {}) == pytest.approx(0.1 + 0.9 * 0.5)
    plateau = ReduceLROnPlateau("val_accuracy", factor=0.5, patience=2)
    history = {"val_accuracy": [0.5, 0.6, 0.6, 0.59, 0.7, 0.7, 0.7]}
    assert plateau.value(7, 0.4, history) == pytest.approx(0.1)  # two stalls of 2 epochs
    assert plateau.value(2, 0.4, {"val_accuracy": [0.5, 0.6]}) == pytest.approx(0.4)
    assert LinearRamp(0.5, 0.99, 10).value(5, 0, {}) == pytest.approx(0.745)
    assert LinearRamp(0.5, 0.99, 10).value(50, 0, {}) == pytest.approx(0.99)


@pytest.mark.parametrize("make,message", [
    (lambda: StepDecay(drop=0), r"drop must be in \(0, 1\]"),
    (lambda: StepDecay(every=0), "every must be an integer"),
    (lambda: CosineDecay(5, warmup=5), "must be more than warmup"),
    (lambda: ReduceLROnPlateau(monitor="f1"), "monitor must be"),
    (lambda: ReduceLROnPlateau(factor=1.0), r"factor must be in \(0, 1\)"),
    (lambda: EarlyStopping(patience=0), "patience must be an integer"),
    (lambda: EarlyStopping(monitor="acc"), "monitor must be"),
])
def test_bad_schedule_and_callback_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_lr_schedule_is_in_force_and_recorded(toy_data, backend):
    X, y = toy_data
    net = Network([64, 16, 10], seed=0, backend=backend)
    h = net.fit(X, y, epochs=4, batch_size=64, verbose=0, lr_schedule=StepDecay(0.5, 1))
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    # the schedule changes the trajectory: the same run at a constant lr ends elsewhere
    flat = Network([64, 16, 10], seed=0, backend=backend)
    flat.fit(X, y, epochs=4, batch_size=64, verbose=0)
    assert not np.allclose(flat.weights[0], net.weights[0])
    # a callable(epoch) -> lr, and a momentum schedule
    seen = []
    net2 = Network([64, 16, 10], seed=0, backend=backend)
    net2.fit(X, y, epochs=3, batch_size=64, verbose=0, lr_schedule=lambda e: 0.1 / (e + 1),
             momentum_schedule=lambda e: seen.append(e) or 0.5)
    assert net2.history.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3]) and seen == [0, 1, 2]


@pytest.mark.parametrize("bad", [lambda e: -0.1, lambda e: float("nan"), lambda e: "0.1"])
def test_a_schedule_returning_a_bad_lr_stops_before_training(toy_data, bad):
    X, y = toy_data
    net = Network([64, 16, 10], seed=0)
    before = net.weights[0].copy()
    with pytest.raises(ValueError, match="lr_schedule returned"):
        net.fit(X, y, epochs=2, verbose=0, lr_schedule=bad)
    np.testing.assert_array_equal(before, net.weights[0])
    with pytest.raises(TypeError, match="lr_schedule must be"):
        net.fit(X, y, epochs=2, verbose=0, lr_schedule=0.1)


def test_early_stopping_restores_the_best_epoch(toy_data):
    X, y = toy_data
    rng = np.random.default_rng(0)
    y_val = rng.permutation(y[:200])  # labels unrelated to the inputs: val_loss soon rises
    net = Network([64, 64, 10], seed=0)
    stop = EarlyStopping(monitor="val_loss", patience=3, restore_best=True)
    h = net.fit(X, y, epochs=200, batch_size=16, lr=0.2, validation_data=(X[:200], y_val),
                callbacks=[stop], verbose=0)
    assert h.stopped == "early" and len(h.epoch) < 200
    assert len(h.epoch) == stop.best_epoch + 3
    best = min(h.history["val_loss"])
    assert net.evaluate(X[:200], y_val)["loss"] == pytest.approx(best, rel=1e-5)
    with pytest.raises(ValueError, match="give validation data"):
        Network([64, 10], seed=0).fit(X, y, epochs=2, callbacks=[EarlyStopping()], verbose=0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dropout_trains_with_masks_and_is_off_at_inference(toy_data, backend):
    X, y = toy_data
    net = Network([64, 32, 32, 10], seed=0, dropout=[0.5, 0.2], input_dropout=0.1,
                  backend=backend)
    assert [layer.kind for layer in net.layers] == ["dropout", "dense", "dropout", "dense",
                                                    "dropout", "dense"]
    h = net.fit(X, y, epochs=15, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    np.testing.assert_array_equal(net.predict_proba(X), net.predict_proba(X))
    assert net.evaluate(X, y)["accuracy"] > 0.8
    same = Network([Dropout(0.1), Dense(32, "relu"), Dropout(0.5), Dense(32, "relu"),
                    Dropout(0.2), Dense(10)], input_shape=(64,), seed=0, backend=backend)
    same.fit(X, y, epochs=15, batch_size=32, verbose=0)
    np.testing.assert_array_equal(same.weights[0], net.weights[0])


def test_dropout_masks_keep_the_right_fraction_and_scale():
    from fastmlp.kernels.dropout import dropout_forward, keep_threshold, stream_key
    x = np.ones((500, 300), np.float32)
    for rate in (0.2, 0.5):
        mask, out = np.zeros_like(x), np.zeros_like(x)
        dropout_forward(x, np.uint64(stream_key(1, 2, 3, 4)), keep_threshold(rate),
                        np.float32(1 / (1 - rate)), mask, out)
        kept = (mask > 0).mean()
        assert abs(kept - (1 - rate)) < 0.01
        assert out.mean() == pytest.approx(1.0, abs=0.02)  # inverted dropout keeps the mean
        other = np.zeros_like(x)
        dropout_forward(x, np.uint64(stream_key(1, 2, 4, 4)), keep_threshold(rate),
                        np.float32(1 / (1 - rate)), other, np.zeros_like(x))
        assert (other != mask).mean() > 0.2  # the next step draws other masks


def test_max_norm_caps_every_hidden_unit(toy_data):
    X, y = toy_data
    net = Network([64, 32, 10], seed=0, max_norm=0.5, init="large")
    net.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert np.sqrt((net.weights[0] ** 2).sum(axis=0)).max() <= 0.5 + 1e-5
    assert np.sqrt((net.weights[1] ** 2).sum(axis=0)).max() > 0.5  # not on the output layer


def test_sigmoid_outputs_and_bad_combinations(toy_data):
    X, y = toy_data
    net = Network([64, 30, 10], activation="sigmoid", output="sigmoid", loss="quadratic",
                  init="large", seed=0)
    net.fit(X, y, epochs=20, batch_size=10, optimizer=SGD(lr=3.0, momentum=0.0), verbose=0)
    p = net.predict_proba(X)
    assert ((p > 0) & (p < 1)).all() and not np.allclose(p.sum(axis=1), 1)
    assert net.evaluate(X, y)["accuracy"] > 0.8
    with pytest.raises(ValueError, match="not supported"):
        Network([64, 10], output="softmax", loss="quadratic")
    with pytest.raises(ValueError, match="output must be one of"):
        Network([64, 10], output="tanh")
    with pytest.raises(ValueError, match=r"dropout rates must be in \[0, 1\)"):
        Network([64, 10, 10], dropout=1.0)
    with pytest.raises(ValueError, match="dropout must be one rate or a list of 2"):
        Network([64, 10, 10, 10], dropout=[0.5])
    with pytest.raises(ValueError, match="max_norm must be"):
        Network([64, 10], max_norm=-1)


def test_mid_epoch_interrupt_resumes_bitwise_with_adam_and_dropout(toy_data, tmp_path,
                                                                     interrupt_after):
    X, y = toy_data
    X = X.astype(np.float32)
    kw = dict(epochs=3, batch_size=8, optimizer=Adam(lr=0.003), verbose=0)
    full = Network([64, 32, 10], seed=4, backend="numpy", dropout=0.3, input_dropout=0.1)
    full.fit(X, y, **kw)
    undo = interrupt_after("numpy", 8 + 3)  # chunks of 8 steps: inside epoch two
    net = Network([64, 32, 10], seed=4, backend="numpy", dropout=0.3, input_dropout=0.1)
    ck = tmp_path / "ck.npz"
    assert net.fit(X, y, checkpoint=ck, **kw).stopped == "interrupted"
    undo()
    resumed = Network([64, 32, 10], seed=0, backend="numpy", dropout=0.3, input_dropout=0.1)
    resumed.fit(X, y, resume=ck, **kw)
    for a, b in zip(full.weights + full.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)


def test_recipes_are_listed_and_build():
    assert {"nielsen", "nielsen-improved", "momentum-300", "adam-wide", "dropout-mlp"} <= \
        set(recipes.names())
    net, fit = recipes.build("nielsen", n_features=64)
    assert net.sizes == (64, 30, 10) and (net.output, net.loss) == ("sigmoid", "quadratic")
    assert fit["batch_size"] == 10 and fit["optimizer"].lr == 3.0
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipes.get("resnet")


def test_cli_recipe_with_an_override(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--recipe", "nielsen",
                           "--dataset", "digits", "--epochs", "3", "--hidden", "20", "--out",
                           "m.npz"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 3/3" in proc.stdout and "lr: 3" in proc.stdout
    assert "test accuracy" in proc.stdout
    net = Network.load(tmp_path / "m.npz")
    assert net.sizes == (64, 20, 10) and net.output == "sigmoid" and net.loss == "quadratic"
    assert net.train_config["optimizer"] == "sgd" and net.train_config["batch_size"] == 10
    listing = subprocess.run([sys.executable, "-m", "fastmlp", "recipes"], capture_output=True,
                             text=True, timeout=300)
    assert "dropout-mlp" in listing.stdout and "nielsen-improved" in listing.stdout


@pytest.mark.parametrize("batch_size", [10, 64, 256])
def test_large_dense_layers_on_dense_inputs_match_the_twin(batch_size):
    # dense inputs (no zero-skipping): up to THREADED_BATCH_ROWS the 784x300 and 300x100 layers
    # run on Numba's threads with their own kernels, above it on BLAS; both agree with the twin
    from fastmlp import kernels as K
    from fastmlp.optimizers import SGD
    from fastmlp.training import THREADED_BATCH_ROWS, Trainer
    rng = np.random.default_rng(3)
    X = rng.random((300, 784), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    weights = {}
    for backend in ("numba", "numpy"):
        net = Network([784, 300, 100, 10], seed=1, backend=backend)
        trainer = Trainer(net, X, y, batch_size, SGD(0.05, 0.9, nesterov=True))
        assert not trainer.sparse
        threaded = K.threaded_dense_layers(trainer.params, trainer.plan)
        assert threaded == ([0, 1] if batch_size <= THREADED_BATCH_ROWS else [])
        net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=SGD(0.05, 0.9, nesterov=True),
                verbose=0)
        weights[backend] = [w.copy() for w in net._W if w.size]
    for fast, ref in zip(weights["numba"], weights["numpy"]):
        np.testing.assert_allclose(fast, ref, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("hidden,batch_size,sparse", [
    ((800,), 256, True),          # the first layer is nearly all the work: skip its zeros
    ((1024, 1024), 32, True),     # small minibatches: BLAS gains little from a second thread
    ((1024, 1024), 256, False),   # large layers above the first: BLAS on both threads wins
    ((800, 800), 128, False),
])
def test_mostly_zero_inputs_skip_zeros_unless_the_layers_above_need_both_blas_threads(
        hidden, batch_size, sparse):
    from fastmlp.training import uses_sparse_input
    rng = np.random.default_rng(0)
    X = rng.random((64, 784), dtype=np.float32)
    X[X < 0.8] = 0
    net = Network([784, *hidden, 10], seed=0)
    assert uses_sparse_input(net, X, batch_size) == sparse
    assert not uses_sparse_input(net, X + 1, batch_size)  # dense inputs never skip zeros
    assert not uses_sparse_input(Network([784, *hidden, 10], seed=0, backend="numpy"), X,
                                 batch_size)


def test_thread_tuner_keeps_the_faster_thread_count_and_probes_less_while_it_wins():
    from fastmlp.training import ThreadTuner
    tuner = ThreadTuner()
    tuner.record(0, 9.0, 1)  # the first segment (compilation) is not measured
    tuner.record(0, 0.001, 1)  # nor one too short to judge by: it only sizes the next
    assert tuner.seconds_per_step == [None, None]
    assert tuner.segment_steps == int(ThreadTuner.SEGMENT_SECONDS / 0.001)
    assert tuner.next_choice() == 0
    tuner.record(0, 1.0, 1)
    assert tuner.next_choice() == 1  # the other count, once measured ...
    tuner.record(1, 0.95, 1)  # ... is not faster by enough: keep all threads, probe later
    assert (tuner.current, tuner.switches, tuner.probe_every) == (0, 0, 16)
    for _ in range(16):
        assert tuner.next_choice() == 0
        tuner.record(0, 1.0, 1)
    assert tuner.next_choice() == 1
    tuner.record(1, 0.5, 1)  # one thread now twice as fast: switch, and probe soon again
    assert (tuner.current, tuner.switches, tuner.probe_every) == (1, 1, 8)
    for _ in range(8):
        assert tuner.next_choice() == 1
        tuner.record(1, 0.5, 1)
    tuner.record(0, 1.2, 1)
    tuner.record(1, 1.5, 1)  # one slow segment on the current count: a blip, kept
    assert (tuner.current, tuner.switches) == (1, 1)
    tuner.record(1, 1.5, 1)  # two: it slowed down past the last probe, switch back
    assert (tuner.current, tuner.switches) == (0, 2)
    for _ in range(10):  # losing probes: the wait doubles up to its cap
        while tuner.next_choice() == 0:
            tuner.record(0, 1.0, 1)
        tuner.record(1, 2.0, 1)
    assert tuner.probe_every == ThreadTuner.PROBE_EVERY[1]


def test_repeated_fits_go_on_with_their_thread_tuner(toy_data):
    """#38: fit called again with the same settings (a Keras-style loop) keeps what its thread
    tuner learnt instead of learning it again; other settings get a tuner of their own; the
    tuner never changes a result, and copies of the network leave it behind."""
    import pickle
    X, y = toy_data
    kw = dict(epochs=1, batch_size=16, verbose=0)
    net = Network([64, 32, 10], seed=0, dropout=0.2)  # dropout runs on Numba's threads
    net.fit(X, y, **kw)
    (tuner,) = net._thread_tuners.values()
    assert tuner.active and tuner.warm
    tuner.current, tuner.probe_every = 1, 64  # as if one thread had won for a long while
    net.fit(X, y, **kw)
    assert list(net._thread_tuners.values()) == [tuner]
    assert tuner.counts[tuner.current] == 1 or tuner.switches > 0
    net.fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert len(net._thread_tuners) == 2
    assert "_thread_tuners" not in pickle.loads(pickle.dumps(net)).__dict__
    fresh = Network([64, 32, 10], seed=0, dropout=0.2)
    for batch_size in (16, 16, 32):
        fresh.__dict__.pop("_thread_tuners", None)
        fresh.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
    for a, b in zip(net.weights + net.biases, fresh.weights + fresh.biases):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hidden,density", [((64,), 0.2), ((300,), 1.0)])
def test_switching_thread_counts_mid_fit_does_not_change_the_result(hidden, density):
    # zero-skipping first layer, and large dense layers on Numba's threads (batch 10)
    import numba

    from fastmlp.optimizers import Adam
    from fastmlp.training import Trainer
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: there is no other thread count to switch to")
    rng = np.random.default_rng(5)
    X = rng.random((400, 784), dtype=np.float32)
    X[X > density] = 0
    y = rng.integers(0, 10, 400)
    weights = []
    for alternate in (False, True):
        net = Network([784, *hidden, 10], seed=2)
        trainer = Trainer(net, X, y, 10, Adam(1e-3))
        tuner = trainer.thread_tuner
        assert tuner.active
        if alternate:  # a segment of one step each, every one on the other thread count
            tuner.SEGMENT_SECONDS, tuner.PROBE_EVERY, tuner.SWITCH_BELOW = 0.0, (0, 0), np.inf
            tuner.SHORTEST_MEASURE = 0.0
        else:
            tuner.active = False
        for epoch in range(2):
            trainer.run_epoch(epoch)
        assert tuner.switches > (30 if alternate else -1)
        weights.append([w.copy() for w in net._W if w.size])
    for steady, switching in zip(*weights):
        np.testing.assert_array_equal(steady, switching)


def mostly_zero_digits(n=1536, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 196), dtype=np.float32)
    X[X < 0.8] = 0  # 20 % nonzero, as MNIST's 19 %
    return X, rng.integers(0, 10, n)


def test_the_first_layer_path_is_timed_once_per_machine_and_then_read(tmp_path, monkeypatch):
    """Above SMALL_BATCH_ROWS on mostly-zero inputs, the first fit of a configuration times the
    zero-skipping and the BLAS path and records the faster for this machine; a later fit of the
    same configuration takes what is recorded, without timing anything."""
    import json

    from fastmlp import compiling
    monkeypatch.setattr(compiling, "_record_path", lambda name: tmp_path / name)
    monkeypatch.setattr(compiling, "PATH_WEIGH_MIN_FLOPS", 0)  # a fit long enough to time them
    monkeypatch.delenv("FASTMLP_FIRST_LAYER", raising=False)
    X, y = mostly_zero_digits()
    history = Network([196, 64, 10], seed=0).fit(X, y, epochs=1, batch_size=64, verbose=0)
    record = json.loads((tmp_path / compiling.FIRST_LAYER_PATHS).read_text())
    assert len(record) == 1
    (key, entry), = record.items()
    assert "batch 64|196x64,64x10|density 0.20|SGD|dense on Numba's threads" in key
    assert set(entry["seconds"]) == {"sparse", "dense"} and min(entry["seconds"].values()) > 0
    faster = min(entry["seconds"], key=entry["seconds"].get)
    assert entry["path"] == faster
    assert history.params["first_layer_path"] == ("zero-skipping" if faster == "sparse"
                                                  else "dense")
    # the record decides the next fit: written the other way, the next fit goes the other way
    other = "dense" if faster == "sparse" else "sparse"
    entry["path"] = other
    (tmp_path / compiling.FIRST_LAYER_PATHS).write_text(json.dumps({key: entry}))
    history = Network([196, 64, 10], seed=1).fit(X, y, epochs=1, batch_size=64, verbose=0)
    assert history.params["first_layer_path"] == ("zero-skipping" if other == "sparse"
                                                  else "dense")
    assert json.loads((tmp_path / compiling.FIRST_LAYER_PATHS).read_text())[key] == entry


def test_a_fit_too_short_to_repay_timing_the_paths_runs_blas_and_records_nothing(tmp_path,
                                                                                monkeypatch):
    """With nothing recorded, timing the two paths needs the zero-skipping code compiled: a fit
    too short to repay that (compiling.worth_weighing) runs BLAS's path, with no zero-skipping
    code in its step, and records nothing. A fit long enough, of unknown length (a warm-up), or
    whose zero-skipping step is compiled already, times them."""
    from fastmlp import compiling, training
    from fastmlp.optimizers import SGD
    monkeypatch.setattr(compiling, "_record_path", lambda name: tmp_path / name)
    monkeypatch.delenv("FASTMLP_FIRST_LAYER", raising=False)
    compiled = {"zero-skipping": False}
    monkeypatch.setattr(training.Trainer, "is_compiled",
                        lambda self, plan=None, in_process=True, on_disk=True:
                        plan is not None and plan.sparse_layer >= 0 and compiled["zero-skipping"])
    X, y = mostly_zero_digits()
    net = Network([196, 64, 10], seed=0)
    long_enough = math.ceil(compiling.PATH_WEIGH_MIN_FLOPS / net.flops(1))

    def trainer(samples):
        return training.Trainer(net, X, y, 64, SGD(), fit_samples=samples)

    short = trainer(long_enough - 1)
    assert short._path_key is None and not short.sparse
    assert short.codes[1] is None  # step_codes' "sparse": no zero-skipping code compiled
    for samples in (long_enough, None):
        timed = trainer(samples)
        assert timed._path_key is not None and timed.codes[1] is True
    compiled["zero-skipping"] = True
    assert trainer(long_enough - 1)._path_key is not None
    compiled["zero-skipping"] = False
    history = net.fit(X, y, epochs=1, batch_size=64, verbose=0)
    assert history.params["first_layer_path"] == "dense"
    assert not (tmp_path / compiling.FIRST_LAYER_PATHS).exists()


def test_a_short_fit_runs_the_large_dense_layers_on_threads_only_where_compiled(monkeypatch):
    """From SMALL_BATCH_ROWS to THREADED_BATCH_ROWS rows, the large dense layers run on Numba's
    threads where that code repays compiling it: a long fit, one of unknown length, or one whose
    threaded step is compiled already; a short fit with nothing compiled runs them on BLAS. Below
    SMALL_BATCH_ROWS and above THREADED_BATCH_ROWS the batch size alone decides."""
    from fastmlp import compiling, training
    from fastmlp.kernels import threaded_dense_layers
    from fastmlp.optimizers import SGD
    compiled = {"threads": False}
    monkeypatch.setattr(training.Trainer, "is_compiled",
                        lambda self, plan=None, in_process=True, on_disk=True:
                        plan is not None and plan.threaded_min < compiling.NO_THREADED_DENSE
                        and compiled["threads"])
    rng = np.random.default_rng(4)
    X = rng.random((300, 784), dtype=np.float32)  # dense inputs: no zero-skipping path
    y = rng.integers(0, 10, 300)
    net = Network([784, 300, 10], seed=0)
    long_enough = math.ceil(compiling.PATH_WEIGH_MIN_FLOPS / net.flops(1))

    def on_threads(batch_size, samples):
        trainer = training.Trainer(net, X, y, batch_size, SGD(), fit_samples=samples)
        return threaded_dense_layers(trainer.params, trainer.plan) == [0]

    assert not on_threads(64, long_enough - 1)
    assert on_threads(64, long_enough) and on_threads(64, None)
    assert on_threads(compiling.SMALL_BATCH_ROWS, long_enough - 1)
    assert not on_threads(compiling.THREADED_BATCH_ROWS + 1, None)
    compiled["threads"] = True
    assert on_threads(64, long_enough - 1)
    # a CNN's dense layers alike (it has no zero-skipping variant to look for)
    cnn = Network([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(),
                   Dense(128, activation="relu"), Dense(10)], input_shape=(28, 28, 1), seed=0)
    for threads in (True, False):
        compiled["threads"] = threads
        trainer = training.Trainer(cnn, X, y, 64, SGD(), fit_samples=300)
        assert threaded_dense_layers(trainer.params, trainer.plan) == ([3] if threads else [])


def test_the_dense_path_of_a_step_made_for_either_path_runs_its_large_first_layer_on_threads(
        tmp_path, monkeypatch):
    """The dense path that a fit times against zero-skipping, or runs after an earlier fit chose
    it, is the one a fit on dense inputs runs: the large first layer on Numba's threads up to
    THREADED_BATCH_ROWS (the step made for either path holds that code, its workspace the
    buffers), not on BLAS held to one thread."""
    from fastmlp import compiling, training
    from fastmlp.kernels import threaded_dense_layers
    from fastmlp.optimizers import SGD
    monkeypatch.setattr(compiling, "_record_path", lambda name: tmp_path / name)
    monkeypatch.delenv("FASTMLP_FIRST_LAYER", raising=False)
    X, y = mostly_zero_digits(300)
    X = np.tile(X, (1, 4))  # 784 features: 784 x 300 weights, a large layer
    net = Network([784, 300, 10], seed=0)

    def dense_path(trainer):
        plan = trainer._path_plan(False)
        return threaded_dense_layers(trainer.params, plan), trainer._numba_threads(plan)

    timed = training.Trainer(net, X, y, 64, SGD(), fit_samples=None)
    assert timed._path_key is not None and timed._step_plan.either_path
    assert dense_path(timed) == ([0], True)
    assert timed.codes[1] is True and timed.codes[3] is not None  # zero-skipping and threads
    assert timed.ws.parts.shape[1] == 64 * 300 and timed.ws.nz_idx.shape[1] == 784
    # a later fit whose path is recorded: the step made for either path where only it is compiled
    monkeypatch.setattr(training.Trainer, "is_compiled",
                        lambda self, plan=None, in_process=True, on_disk=True:
                        plan is not None and plan.either_path)
    for path in ("dense", "sparse"):
        compiling.record_first_layer_path(timed._path_key, path, {})
        known = training.Trainer(net, X, y, 64, SGD(), fit_samples=None)
        assert known._path_key is None and known._step_plan.either_path
        assert known.first_layer_path == ("dense" if path == "dense" else "zero-skipping")
        assert dense_path(known) == ([0], True)

@pytest.mark.parametrize("batch_size", [64, 200])
def test_both_first_layer_paths_train_as_the_twin_does(batch_size, monkeypatch):
    """One compiled step runs either path of the first layer on mostly-zero inputs (the plan
    says which); both agree with the NumPy twin."""
    X, y = mostly_zero_digits(600, seed=2)
    weights = {}
    for backend, path in (("numpy", None), ("numba", "sparse"), ("numba", "dense")):
        if path:
            monkeypatch.setenv("FASTMLP_FIRST_LAYER", path)
        net = Network([196, 48, 24, 10], seed=4, backend=backend)
        history = net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=Adam(3e-3),
                          verbose=0)
        if path:
            assert history.params["first_layer_path"] == ("zero-skipping" if path == "sparse"
                                                          else "dense")
        weights[path] = [w.copy() for w in net._W]
    for path in ("sparse", "dense"):
        for fast, ref in zip(weights[path], weights[None]):
            np.testing.assert_allclose(fast, ref, rtol=1e-3, atol=1e-5)


def test_a_wrong_first_layer_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTMLP_FIRST_LAYER", "gpu")
    X, y = mostly_zero_digits(128)
    with pytest.raises(ValueError, match="FASTMLP_FIRST_LAYER must be 'sparse' or 'dense'"):
        Network([196, 16, 10], seed=0).fit(X, y, epochs=1, batch_size=32, verbose=0)
