"""What a new user tripped over in a fresh clone, each with the behaviour they expect: explicit
folders used, resumes that need no flags, arguments checked before training, real drawings,
sweeps grouped by every varied setting, plots that say what they show, layers described by kind,
garbage inputs named, and the estimator's lbfgs solver."""
import inspect
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastmlp import Network, datasets
from fastmlp.errors import TrainingDivergedError


def fastmlp(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "fastmlp", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env or os.environ.copy(),
                          timeout=900)


# ---- explicit data folders ----------------------------------------------------------------------
@pytest.mark.mnist
def test_train_with_a_missing_data_dir_fails_naming_it(tmp_path, mnist):
    missing = tmp_path / "nonexistent"
    proc = fastmlp("train", "--data-dir", missing, "--epochs", "1", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert str(missing) in proc.stderr and "Epoch" not in proc.stdout
    assert not (tmp_path / "model.npz").exists()


@pytest.mark.mnist
def test_evaluate_on_a_data_dir_of_another_dataset_fails_naming_it(tmp_path, mnist):
    (X, y), _ = mnist
    net = Network([784, 8, 10], seed=0)
    net.fit(X[:500], y[:500], epochs=1, verbose=0)
    net.train_config["dataset"] = "mnist"
    net.save(tmp_path / "m.npz")
    fashion = Path(os.environ[datasets.ENV_VAR]).resolve().parent / "fashion-mnist"
    proc = fastmlp("evaluate", "m.npz", "--data-dir", fashion, cwd=tmp_path)
    assert proc.returncode == 2
    assert "holds fashion-mnist, not mnist" in proc.stderr and str(fashion) in proc.stderr
    proc = fastmlp("evaluate", "m.npz", "--data-dir", fashion, "--dataset", "fashion-mnist",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test set: fashion-mnist" in proc.stdout


# ---- resuming -------------------------------------------------------------------------------
def test_resume_takes_the_network_and_optimizer_from_the_checkpoint(tmp_path):
    first = ["train", "--dataset", "digits", "--hidden", "50", "--optimizer", "adam",
             "--batch-size", "64", "--quiet"]
    assert fastmlp(*first, "--epochs", "1", "--checkpoint", "ck.npz", "--out", "a.npz",
                   cwd=tmp_path).returncode == 0
    proc = fastmlp("train", "--dataset", "digits", "--resume", "ck.npz", "--epochs", "2",
                   "--quiet", "--out", "b.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert fastmlp(*first, "--epochs", "2", "--out", "c.npz", cwd=tmp_path).returncode == 0
    resumed, full = Network.load(tmp_path / "b.npz"), Network.load(tmp_path / "c.npz")
    assert resumed.epochs_done == 2 and resumed.sizes == (64, 50, 10)
    for a, b in zip(resumed.weights, full.weights):
        np.testing.assert_array_equal(a, b)
    proc = fastmlp("train", "--dataset", "digits", "--resume", "ck.npz", "--hidden", "16",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "the checkpoint is a 64-50-10 MLP (relu) network" in proc.stderr
    assert "--hidden 16" in proc.stderr


def test_a_cnn_checkpoint_is_described_by_its_layers(tmp_path):
    from fastmlp.layers import Conv2D, Dense, Flatten, MaxPool2D
    net = Network([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10)],
                  input_shape=(8, 8, 1), seed=0)
    text = net.summary(print_fn=None)
    assert "8x8x1 > Conv2D 4 3x3 relu > MaxPool2D 2x2 > Flatten > Dense 10" in text
    assert "[64," not in text
    assert Network([784, 300, 10]).architecture == "784-300-10 MLP (relu)"


# ---- arguments and output paths, before the first epoch ------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--out", "/nonexistent/m.npz"], "--out /nonexistent/m.npz: the folder /nonexistent"),
    (["--plot", "/nonexistent/c.png"], "--plot /nonexistent/c.png: the folder /nonexistent"),
    (["--checkpoint", "/nonexistent/ck.npz"], "--checkpoint /nonexistent/ck.npz"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--log", "x.xlsx"], "--log must end in .csv or .jsonl"),
    (["--resume", "missing.npz"], "--resume missing.npz: no such file"),
    (["--lr", "-1"], "lr must be > 0"),
])
def test_bad_arguments_and_paths_fail_before_the_data_loads(tmp_path, flags, message):
    proc = fastmlp("train", "--dataset", "digits", "--epochs", "1", *flags, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Data:" not in proc.stdout and "Epoch" not in proc.stdout


def test_a_save_that_fails_after_training_keeps_the_model_in_a_named_file(tmp_path, monkeypatch,
                                                                           capsys):
    from fastmlp import cli
    from fastmlp.network import Network as Net
    original = Net.save

    def failing(self, path):
        if Path(path).name == "m.npz":
            raise OSError(28, "No space left on device")
        return original(self, path)

    monkeypatch.setattr(Net, "save", failing)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet",
                       "--out", "m.npz"])
    err = capsys.readouterr().err
    assert status == 1
    saved = list(tmp_path.glob("fastmlp-model-*.npz"))
    assert len(saved) == 1 and f"saved it to {saved[0]}" in err
    assert "No space left on device" in err
    assert Network.load(saved[0]).epochs_done == 1


# ---- predict on real drawings -------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory, mnist):
    (X, y), _ = mnist
    net = Network([784, 128, 10], seed=0)
    net.fit(X[:30000], y[:30000], epochs=2, batch_size=64, verbose=0)
    net.train_config["dataset"] = "mnist"
    path = tmp_path_factory.mktemp("model") / "m.npz"
    net.save(path)
    return path


def _stroke_png(path, transparent=True):
    """A "1" as a drawing app saves it: black strokes on a transparent (or white) canvas."""
    from PIL import Image, ImageDraw
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0) if transparent else (255, 255, 255, 255))
    ImageDraw.Draw(image).line([(140, 40), (140, 240)], fill=(0, 0, 0, 255), width=24)
    image.save(path)


@pytest.mark.mnist
def test_predict_reads_transparent_drawings_and_reports_each_bad_file(tmp_path, mnist_model):
    from PIL import Image
    _stroke_png(tmp_path / "one.png")
    Image.new("RGB", (50, 50), (255, 255, 255)).save(tmp_path / "blank.png")
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).random((3, 5)))
    proc = fastmlp("predict", mnist_model, "one.png", "blank.png", "noise.npy", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("one.png: 1 ")
    assert "blank.png: the image is blank" in proc.stderr
    assert "noise.npy: an array of shape (3, 5)" in proc.stderr and "(28, 28)" in proc.stderr
    assert "2 of 3 images could not be classified" in proc.stderr


# ---- sweeps --------------------------------------------------------------------------------
def test_summaries_group_by_every_varied_setting():
    from fastmlp.sweep import summarize
    records = [{"hidden": [w], "seed": s, "train_size": 5000, "test_accuracy": 0.9 + w / 1000}
               for w in (32, 64) for s in (0, 1)]
    stats = summarize(records, "hidden")
    assert stats == {(32,): (pytest.approx(0.932), 0.0, 2), (64,): (pytest.approx(0.964), 0.0, 2)}
    grouped = summarize(records + [dict(r, train_size=100) for r in records], "train_size",
                        group=("hidden",))
    assert set(grouped) == {((32,), 5000), ((64,), 5000), ((32,), 100), ((64,), 100)}
    assert all(n == 2 for _, _, n in grouped.values())


def test_cli_sweep_over_widths_with_one_training_size_keeps_the_widths_apart(tmp_path):
    proc = fastmlp("sweep", "--dataset", "digits", "--hidden", "8,32", "--seeds", "0-1",
                   "--train-sizes", "600", "--epochs", "1", "--batch-size", "64", "--backend",
                   "sequential", "--out", "s.csv", "--plot", "s.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "test accuracy" in line]
    assert len(lines) == 2
    assert lines[0].startswith("hidden 8:") and lines[1].startswith("hidden 32:")
    assert all("(2 seeds)" in line for line in lines)


# ---- plots ---------------------------------------------------------------------------------
def test_learning_curves_name_the_cost_the_held_out_set_and_whole_epochs(monkeypatch, tmp_path):
    from fastmlp import plotting
    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figures.append(fig))
    history = {"loss": [0.5, 0.3, 0.2], "accuracy": [0.8, 0.9, 0.95],
               "val_loss": [0.6, 0.4, 0.3], "val_accuracy": [0.7, 0.85, 0.9]}
    plotting.plot_history(history, tmp_path / "c.png", loss_name="quadratic",
                          validation_label="test")
    loss_ax, acc_ax = figures[0].axes
    assert loss_ax.get_ylabel() == "quadratic cost"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "test"]
    ticks = [t for t in loss_ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


# ---- garbage in ------------------------------------------------------------------------------
@pytest.mark.mnist
def test_unscaled_images_warn_and_an_exploding_loss_is_divergence(mnist):
    (X, y), _ = mnist
    X, y = X[:2000], y[:2000]
    with pytest.warns(UserWarning, match="scaled to \\[0, 1\\]"):
        with pytest.raises(TrainingDivergedError):
            Network([784, 30, 10], seed=0).fit((X * 255).astype(np.uint8), y, epochs=1,
                                               verbose=0)
    with pytest.warns(UserWarning, match="values up to 255"):
        with pytest.raises(TrainingDivergedError, match="grew by orders of magnitude"):
            Network([784, 30, 10], seed=0).fit(X * 255, y, epochs=1, verbose=0)
    net = Network([784, 30, 10], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scaled images: no warning
        with pytest.raises(TrainingDivergedError, match="grew by orders of magnitude|nan|inf"):
            net.fit(X, y, epochs=1, lr=1e4, verbose=0)
    assert all(np.isfinite(w).all() for w in net.weights)  # the last finite weights are kept


def test_plain_lr_says_which_momentum_it_used(toy_data, capsys):
    X, y = toy_data
    Network([64, 16, 10], seed=0).fit(X, y, epochs=1, lr=3.0, verbose=2)
    out = capsys.readouterr().out
    assert "lr 3, momentum 0.9 (the default: pass momentum=0 for plain SGD)" in out


def test_the_compile_message_claims_nothing_untrue():
    source = (Path(__file__).resolve().parents[1] / "fastmlp" / "network.py").read_text()
    assert "first run only" not in source


# ---- TensorBoard, augmentation ----------------------------------------------------------------
def test_tensorboard_histograms_hold_the_zero_skipping_layers_gradient(tmp_path, toy_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fastmlp.callbacks import TensorBoard
    from fastmlp.training import uses_sparse_input
    X, y = toy_data
    net = Network([64, 32, 10], seed=0)
    assert uses_sparse_input(net, X, 32)  # the layer whose gradient the fast step never stores
    board = TensorBoard(tmp_path / "logs", histograms=True)
    net.fit(X, y, epochs=2, batch_size=32, verbose=0, callbacks=[board])
    acc = EventAccumulator(str(board.run_dir), size_guidance={"histograms": 0})
    acc.Reload()
    assert {"gradients/layer0", "gradients/layer1"} <= set(acc.Tags()["histograms"])
    events = acc.Histograms("gradients/layer0")
    assert [e.step for e in events] == [1, 2]
    assert events[-1].histogram_value.sum_squares > 0


def test_augment_apply_returns_the_shape_it_was_given():
    from fastmlp.augment import Augment
    images = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    out = Augment(shift=2).apply(images, (28, 28, 1))
    assert out.shape == (3, 28, 28)
    flat = Augment(shift=2).apply(images.reshape(3, -1), (28, 28, 1))
    np.testing.assert_array_equal(out.reshape(3, -1), flat)


# ---- compiling: said, timed apart, done ahead ------------------------------------------------
def test_fit_compiles_ahead_and_reports_it_apart_from_the_first_epoch(toy_data):
    """The step is compiled (or loaded) before the first epoch: its seconds are in History and
    never in epoch_time; a second fit of the same kind of network compiles nothing."""
    from fastmlp import kernels as K
    X, y = toy_data
    history = Network([64, 24, 10], seed=0).fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert history.params["compile_time"] >= 0.0
    again = Network([64, 24, 10], seed=1).fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert again.params["compile_time"] == 0.0
    from fastmlp.kernels.registry import parameters  # every argument, the features' too
    assert any(len(sig) == len(parameters(K.train_steps)) for sig in K.train_steps.overloads)


def test_warm_network_compiles_the_signature_fit_will_use(toy_data):
    from fastmlp import kernels as K
    from fastmlp.optimizers import Adam
    from fastmlp.training import Trainer
    from fastmlp.warmup import warm_network
    X, y = toy_data
    net = Network([64, 20, 10], dropout=0.3, seed=0)
    warm_network(net, 32, Adam(), density=0.1)
    trainer = Trainer(net, X.astype(np.float32), y, 32, Adam())
    args = (trainer.X, trainer.y, np.zeros(trainer.n, np.int64), 32, 0, 0, 0, trainer.params,
            trainer.state, trainer.rule, trainer.ws, trainer.layers, *trainer.codes)
    assert tuple(K.train_steps.typeof_pyval(a) for a in args) in K.train_steps.overloads
    assert trainer.compile(verbose=False) == 0.0


def test_warmup_command_compiles_a_recipe(tmp_path):
    proc = fastmlp("warmup", "--recipe", "nielsen", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "recipe nielsen, mnist inputs:" in proc.stdout
    assert "Compiled 2 configurations" in proc.stdout


def test_the_compile_message_names_the_configuration(toy_data, capsys, monkeypatch):
    """Whenever the step is not in the disk cache, one line says so before compiling."""
    from fastmlp import compiling, training
    monkeypatch.setattr(compiling, "_in_disk_cache", lambda dispatcher, sig: False)
    from fastmlp import kernels as K
    monkeypatch.setattr(K.train_steps, "overloads", {})  # as in a new process
    compiled = []
    monkeypatch.setattr(K.train_steps, "compile", lambda sig: compiled.append(sig))
    monkeypatch.setenv("FASTMLP_FIRST_LAYER", "sparse")  # no timing of the step, never compiled
    X, y = toy_data
    trainer = training.Trainer(Network([64, 8, 10], seed=0), X.astype(np.float32), y, 32,
                               __import__("fastmlp.optimizers").optimizers.SGD())
    seconds = trainer.compile(verbose=True)
    err = capsys.readouterr().err
    assert compiled and seconds >= 0
    assert err.startswith("Compiling the training step for dense layers, zero-skipping first "
                          "layer, SGD (float32)")
    assert "first run only" not in err


def test_a_first_layer_known_to_run_on_blas_compiles_no_zero_skipping_code(toy_data,
                                                                           monkeypatch):
    """Where the first layer's path is known (recorded or forced) to be BLAS's, the step leaves
    out the zero-skipping code, unless a step with it is compiled or cached already (it runs
    either path): compiling a second variant would cost more than it saves."""
    from numba import types

    from fastmlp import compiling, training
    from fastmlp import kernels as K
    from fastmlp.optimizers import SGD
    monkeypatch.setenv("FASTMLP_FIRST_LAYER", "dense")
    monkeypatch.setattr(K.train_steps, "overloads", {})
    X, y = toy_data
    X = X.astype(np.float32)  # mostly zeros: at batch 32 either path could run
    sparse_code = list(inspect.signature(K.train_steps.py_func).parameters).index("sparse")

    def trainer(cached):
        monkeypatch.setattr(compiling, "_in_disk_cache", lambda dispatcher, sig: cached(sig))
        return training.Trainer(Network([64, 8, 10], seed=0), X, y, 32, SGD())

    alone = trainer(lambda sig: False)
    assert alone.codes[1] is None and not alone.sparse
    either = trainer(lambda sig: sig[sparse_code] != types.none)
    assert either.codes[1] is True and not either.sparse
    assert either.plan.sparse_layer == -1  # the zero-skipping code is there, unused
    monkeypatch.setenv("FASTMLP_FIRST_LAYER", "sparse")
    assert trainer(lambda sig: False).codes[1] is True


def test_a_compile_with_no_parallel_loop_left_warns_nothing(monkeypatch):
    """A configuration whose parallel loops are all pruned (dense inputs at a large batch) used
    to print Numba's "parallel=True ... no transformation" warning to a new user."""
    import warnings

    import numba

    from fastmlp import compiling
    monkeypatch.setattr(compiling, "_in_disk_cache", lambda dispatcher, sig: False)

    @numba.njit(parallel=True)
    def add_one(x):  # no prange: Numba would warn
        return x + 1.0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiling.compile_ahead(add_one, (1.0,), "a kernel", verbose=False)
    assert add_one.signatures
    assert not [w for w in caught if issubclass(w.category, numba.NumbaPerformanceWarning)]
    with warnings.catch_warnings(record=True) as caught:  # the test can fail: Numba does warn
        warnings.simplefilter("always")
        add_one.compile((numba.int64,))
    assert [w for w in caught if issubclass(w.category, numba.NumbaPerformanceWarning)]


def test_warmup_builds_every_recipe_with_its_own_input():
    from fastmlp.recipes import names
    from fastmlp.warmup import _configs
    configs = _configs(names(), "float32")
    assert len(configs) == len(names())
    shapes = {label: net.input_shape for label, net, _ in configs}
    assert shapes["recipe course-cifar-cnn"] == (32, 32, 3)
    assert shapes["recipe cnn"] == (28, 28, 1)


BESIDE_CHILD = """
import json, sys
import numpy as np
from fastmlp import Network
from fastmlp import kernels as K
rng = np.random.default_rng(0)
X = (rng.random((256, 64)) < 0.15).astype(np.float32)
y = rng.integers(0, 10, 256)
net = Network([64, 16, 10], seed=0)
net.fit(X, y, epochs=1, batch_size=32, verbose=1)
from fastmlp.inference import _dense_layers
rows = K.KERNELS["dense_rows_forward"]
Ws, bs, acts = _dense_layers(net)[:3]
fast, ref = (np.zeros((256, 10), np.float32) for _ in range(2))
rows.fast(X, Ws, bs, acts, fast, 2)
rows.reference(X, Ws, bs, acts, ref, 2)
stats = rows.fast.stats
print(json.dumps({"hits": len(stats.cache_hits), "misses": len(stats.cache_misses),
                  "max_error": float(np.abs(fast - ref).max())}))
"""


def test_inference_compiles_on_another_core_while_the_step_compiles(tmp_path):
    """In a new process with an empty cache, a child process compiles inference while the
    training step compiles; this process loads it from the cache (no compile of its own) and
    runs it right; a second process finds everything in the cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="2")
    env.pop("FASTMLP_COMPILE_BESIDE", None)
    runs = [subprocess.run([sys.executable, "-c", BESIDE_CHILD], capture_output=True, text=True,
                           env=env, timeout=900) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, again = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert ("inference row by row (float32) and the output layer (float32) on another core "
            "meanwhile") in runs[0].stderr
    assert first["hits"] == 1 and first["misses"] == 0
    assert first["max_error"] < 1e-5
    assert "Compiling" not in runs[1].stderr and again["misses"] == 0


def test_compiling_beside_is_off_on_request(monkeypatch):
    from fastmlp import compiling
    from fastmlp import kernels as K
    monkeypatch.setattr(compiling, "_in_disk_cache", lambda dispatcher, sig: False)
    x = np.zeros((2, 10), np.float32)
    jobs = [(K.KERNELS["output_activation"].fast, (0, x, x.copy()), "the output layer")]
    monkeypatch.setattr(K.KERNELS["output_activation"].fast, "overloads", {})
    monkeypatch.setenv("FASTMLP_COMPILE_BESIDE", "0")
    with compiling.CompileBeside(jobs, verbose=False) as beside:
        assert beside.process is None
    monkeypatch.delenv("FASTMLP_COMPILE_BESIDE")
    with compiling.CompileBeside(jobs, verbose=False) as beside:
        assert beside.process is not None and beside.folder is not None
        folder = beside.folder
    assert not os.path.exists(folder)
