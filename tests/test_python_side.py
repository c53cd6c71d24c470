"""The Python side: one validated fit configuration, the epoch loop in training.py with its
callbacks ended on every exit, the trainer's state through state_dict / load_state_dict only,
and the benchmark harness out of the installed package."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import Network, TrainingDivergedError, training
from fastmlp.fit_config import FitConfig
from fastmlp.optimizers import Adam
from fastmlp.sweep import check_trials, expand

PACKAGE = Path(fastmlp.__file__).parent


class Recorder:
    """A callback that notes each call, and raises at ``fail_at`` epoch when asked."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def on_train_begin(self, net):
        self.calls.append("begin")

    def __call__(self, epoch, metrics):
        self.calls.append(epoch)
        if epoch == self.fail_at:
            raise RuntimeError("a callback failed")

    def on_train_end(self, net):
        self.calls.append("end")


def test_callbacks_end_when_the_fit_diverges(toy_data):
    X, y = toy_data
    recorder = Recorder()
    with pytest.raises(TrainingDivergedError):
        Network([64, 16, 10], seed=0).fit(X, y, epochs=20, batch_size=16, lr=1e10, verbose=0,
                                          callbacks=[recorder])
    assert recorder.calls[0] == "begin" and recorder.calls[-1] == "end"


def test_callbacks_end_when_a_callback_raises(toy_data):
    X, y = toy_data
    recorder, net = Recorder(fail_at=2), Network([64, 16, 10], seed=0)
    with pytest.raises(RuntimeError, match="a callback failed"):
        net.fit(X, y, epochs=5, batch_size=64, verbose=0, callbacks=[recorder])
    assert recorder.calls == ["begin", 1, 2, "end"]
    assert not hasattr(net, "_last_gradients")  # the trainer's buffers are let go


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(optimizer="adam", lr=0.5), ValueError, "pass either optimizer= or lr="),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(verbose=3), ValueError, "verbose must be in"),
    (dict(shuffle="yes"), TypeError, "shuffle must be True or False"),
    (dict(lr_schedule=0.1), TypeError, "lr_schedule must be a schedule"),
    (dict(callbacks=[1]), TypeError, "callbacks must be callables"),
    (dict(validation_split=1.0), ValueError, "validation_split must be a fraction"),
    (dict(augment="shift"), TypeError, "augment must be a fastmlp.augment.Augment"),
])
def test_a_bad_setting_is_refused_before_the_data_is_looked_at(kwargs, error, message):
    with pytest.raises(error, match=message):
        FitConfig(**kwargs)
    # fit checks its settings first: X and y are not even arrays here
    with pytest.raises(error, match=message):
        Network([8, 4, 3], seed=0).fit("not data", None, **kwargs)


def test_the_batch_size_is_checked_against_the_samples_once_they_are_known():
    config = FitConfig(batch_size=64, optimizer=Adam(lr=1e-3))
    assert config.batch_size_for(64) == 64 and config.opt == Adam(lr=1e-3)
    for n, batch in ((63, 64), (100, 0)):
        with pytest.raises(ValueError, match=rf"batch_size must be in \[1, {n}\]"):
            config.replace(batch_size=batch).batch_size_for(n)
    assert config.replace(epochs=3).opt == config.opt  # replace checks again, keeps the rest
    assert FitConfig(lr=0.05, momentum=0.0).record(4, "numba")["optimizer_config"] == \
        {"lr": 0.05, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}


def test_a_sweep_checks_its_trials_without_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a trial was trained while checking")
    monkeypatch.setattr(training.Trainer, "__init__", no_training)
    good = expand({"batch_size": [16, 64], "optimizer": ["adam", "sgd"]}, {"epochs": 1})
    check_trials(good, n_features=64, n_classes=10, n_train=64)
    for grid, message in (({"batch_size": [65]}, r"batch_size must be in \[1, 64\]"),
                          ({"lr_schedule": [0.5]}, "lr_schedule must be a schedule")):
        with pytest.raises(ValueError, match=message):
            check_trials(expand(grid, {"epochs": 1}), 64, 10, 64)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_trainer_loaded_from_a_state_dict_goes_on_bitwise(toy_data, backend):
    X, y = toy_data
    X = X.astype(np.float32)

    def trainer(seed):
        net = Network([64, 16, 10], seed=seed, dropout=0.2, backend=backend)
        return net, training.Trainer(net, X, y, 32, Adam(lr=1e-2))

    net_a, a = trainer(0)
    a.run_epoch(0)
    state = a.state_dict()
    saved = {"arrays": {k: v.copy() for k, v in state["arrays"].items()},
             "optimizer": dict(state["optimizer"]), "seed": state["seed"]}
    assert saved["optimizer"]["t"] == a.steps and "m.W0" in saved["arrays"]
    net_b, b = trainer(7)  # other initial weights and dropout seed: the state dict brings both
    b.load_state_dict(saved)
    net_b.seed = net_a.seed  # the epoch order is the network's (checkpoint.restore sets it)
    a.run_epoch(1)
    b.run_epoch(1)
    for wa, wb in zip(net_a.weights + net_a.biases, net_b.weights + net_b.biases):
        np.testing.assert_array_equal(wa, wb)
    broken = dict(saved, arrays={**saved["arrays"], "m.W0": saved["arrays"]["m.W0"][:3]})
    with pytest.raises(fastmlp.ModelFormatError, match="m.W0 is float32"):
        b.load_state_dict(broken, source="the saved state")


def _python_files(folder):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_the_training_loop_and_checkpoints_touch_the_trainers_fields():
    internals = {"params", "state", "plan", "ws", "codes", "_saved", "thread_tuner"}
    offenders = []
    for path in _python_files(PACKAGE):
        if path.name in ("training.py", "checkpoint.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in internals and \
                    isinstance(node.value, ast.Name) and "trainer" in node.value.id:
                offenders.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not offenders


def test_the_library_imports_nothing_from_the_benchmark_harness():
    assert not (PACKAGE / "bench.py").exists()
    for path in _python_files(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[-1] in ("bench", "harness") for n in names), path
    modules = [p.stem for p in _python_files(PACKAGE) if p.stem not in ("__main__",)]
    code = ("import sys, importlib\n"
            + "".join(f"importlib.import_module('fastmlp.{m}')\n" for m in modules
                      if m != "__init__")
            + "print(sorted(m for m in sys.modules if 'harness' in m or 'torch' in m"
              " or m == 'jax'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fastmlp_bench_without_the_repository_says_what_it_needs(tmp_path, monkeypatch,
                                                                  capsys):
    from fastmlp import cli
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "fastmlp" / "cli.py"))
    monkeypatch.chdir(tmp_path)
    assert cli.bench_harness() is None
    assert cli.main(["bench", "--batch-sizes", "10"]) == 2
    assert "bench/harness.py of fastmlp's repository" in capsys.readouterr().err
    monkeypatch.undo()
    harness = cli.bench_harness()  # in this checkout
    assert harness is not None and Path(harness.__file__).parent.name == "bench"
