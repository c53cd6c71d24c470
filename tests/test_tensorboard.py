"""The TensorBoard callback: event files read back with TensorBoard's own reader, every scalar
compared with the History; one run per folder; the CLI flag; the missing-extra error."""
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastmlp import Network
from fastmlp.callbacks import TensorBoard
from fastmlp.optimizers import Adam


def read_run(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                        "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_equal_the_history_and_runs_never_share_a_folder(tmp_path, toy_data):
    X, y = toy_data
    net = Network([64, 32, 10], seed=0, backend="numpy")
    board = TensorBoard(tmp_path / "logs", loss_every=5, histograms=True)
    history = net.fit(X[:480], y[:480], epochs=3, batch_size=32, optimizer=Adam(3e-3),
                      validation_data=(X[480:], y[480:]), verbose=0, callbacks=[board])
    acc = read_run(board.run_dir)
    for key, tag in TensorBoard.TAGS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in events], history.history[key], rtol=1e-6)
    # 15 steps an epoch, a point every 5 steps: steps 5, 10, ..., 45
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(5, 46, 5))
    assert {"weights/layer0", "biases/layer1", "gradients/layer1"} <= set(acc.Tags()["histograms"])
    text = acc.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"units": 32' in text and '"optimizer": "adam"' in text

    again = TensorBoard(tmp_path / "logs", run_name=board.run_dir.name)
    Network([64, 32, 10], seed=1).fit(X, y, epochs=1, verbose=0, callbacks=[again])
    assert again.run_dir != board.run_dir and again.run_dir.parent == board.run_dir.parent
    assert [e.step for e in read_run(board.run_dir).Scalars("epoch/loss")] == [1, 2, 3]


def test_step_losses_average_the_steps_they_cover(tmp_path, toy_data):
    X, y = toy_data
    board = TensorBoard(tmp_path, loss_every=4)
    net = Network([64, 16, 10], seed=2, backend="numpy")
    history = net.fit(X[:256], y[:256], epochs=1, batch_size=32, verbose=0, shuffle=False,
                      callbacks=[board])
    losses = [e.value for e in read_run(board.run_dir).Scalars("step/loss")]
    assert len(losses) == 2  # 8 steps, every 4
    assert np.mean(losses) == pytest.approx(history.history["loss"][0], rel=1e-6)


def test_cli_flag_writes_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--dataset", "digits",
                          "--hidden", "16", "--epochs", "2", "--tensorboard", str(tmp_path),
                          "--quiet"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [e.step for e in read_run(run).Scalars("epoch/val_accuracy")] == [1, 2]
    assert str(run) in out.stdout


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"fastmlp\[tensorboard\]"):
        TensorBoard("logs")
