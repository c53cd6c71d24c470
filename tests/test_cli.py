"""The fastmlp command, driven as a user would: a subprocess on the real MNIST files."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastmlp import Network
from fastmlp.metrics import classification_report, confusion_matrix


def fastmlp(*args, cwd, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "fastmlp", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env or os.environ.copy(),
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    """One short training run shared by the tests below."""
    d = tmp_path_factory.mktemp("cli")
    proc = fastmlp("train", "--dataset", "mnist", "--hidden", "128", "--epochs", "2",
                   "--batch-size", "128", "--validation-size", "5000", "--out", "model.npz",
                   "--plot", "curves.png", "--log", "metrics.csv", cwd=d)
    return d, proc


@pytest.mark.mnist
def test_train_prints_summary_epochs_and_test_accuracy(trained):
    d, proc = trained
    out = proc.stdout
    assert "Data: mnist: train 55000, test 10000, validation 5000" in out
    assert "Total params: 101,770" in out  # 784*128+128 + 128*10+10
    lines = [l for l in out.splitlines() if l.startswith("Epoch ")]
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - ")
    assert re.search(r"val_accuracy: 0\.9\d{3}", lines[1])
    acc = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert acc > 0.95


@pytest.mark.mnist
def test_train_writes_model_log_and_plot(trained, mnist):
    d, proc = trained
    net = Network.load(d / "model.npz")
    assert net.sizes == (784, 128, 10) and net.epochs_done == 2
    assert net.train_config["dataset"] == "mnist"
    reported = float(re.search(r"test accuracy: ([\d.]+)", proc.stdout).group(1))
    _, (Xt, yt) = mnist
    assert net.evaluate(Xt, yt)["accuracy"] == pytest.approx(reported, abs=1e-4)
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[1]["val_accuracy"]) == pytest.approx(net.history.history["val_accuracy"][1])
    with Image.open(d / "curves.png") as im:
        assert im.size[0] > 400 and im.size[1] > 200


@pytest.mark.mnist
def test_jsonl_log(tmp_path):
    fastmlp("train", "--dataset", "mnist", "--hidden", "32", "--epochs", "1", "--quiet",
            "--out", "m.npz", "--log", "m.jsonl", cwd=tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert len(rows) == 1 and set(rows[0]) >= {"epoch", "loss", "accuracy", "val_loss"}


@pytest.mark.mnist
def test_evaluate_report_matches_scikit_learn(trained, mnist):
    from sklearn.metrics import classification_report as sk_report
    d, _ = trained
    proc = fastmlp("evaluate", "model.npz", "--plot-confusion", "cm.png", "--plot-errors",
                   "errors.png", cwd=d)
    _, (Xt, yt) = mnist
    pred = Network.load(d / "model.npz").predict(Xt)
    expected = sk_report(yt, pred, output_dict=True, zero_division=0)
    out = proc.stdout
    for k in range(10):
        row = re.search(rf"^\s+{k}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", out, re.M)
        assert row, f"no report row for class {k}"
        p, r, f1, support = map(float, row.groups())
        assert p == pytest.approx(expected[str(k)]["precision"], abs=6e-5)
        assert r == pytest.approx(expected[str(k)]["recall"], abs=6e-5)
        assert f1 == pytest.approx(expected[str(k)]["f1-score"], abs=6e-5)
        assert support == expected[str(k)]["support"]
    assert "Confusion matrix" in out
    cm_rows = re.findall(r"^\s+(\d)((?:\s+\d+){10})$", out, re.M)
    printed = np.array([[int(v) for v in row[1].split()] for row in cm_rows])
    from sklearn.metrics import confusion_matrix as sk_cm
    np.testing.assert_array_equal(printed, sk_cm(yt, pred))
    for name in ("cm.png", "errors.png"):
        with Image.open(d / name) as im:
            assert im.size[0] > 200


def test_metrics_match_scikit_learn_on_random_predictions():
    from sklearn.metrics import classification_report as sk_report
    from sklearn.metrics import confusion_matrix as sk_cm
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 7, 500))
    pred[pred == 6] = 5  # class 6 never predicted: precision 0 by convention
    np.testing.assert_array_equal(confusion_matrix(y, pred, 7), sk_cm(y, pred, labels=range(7)))
    ours = classification_report(y, pred, 7)
    theirs = sk_report(y, pred, output_dict=True, zero_division=0, labels=range(7))
    for key in [str(k) for k in range(7)] + ["macro avg", "weighted avg"]:
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[key][metric] == pytest.approx(theirs[key][metric]), (key, metric)
    assert ours["accuracy"] == pytest.approx(np.mean(y == pred))


@pytest.mark.mnist
def test_predict_reads_back_test_digits(trained, mnist):
    d, _ = trained
    _, (Xt, yt) = mnist
    net = Network.load(d / "model.npz")
    picks = [i for i in range(200) if net.predict(Xt[i:i + 1])[0] == yt[i]][:6]
    paths = []
    for i in picks:
        path = d / f"digit{i}.png"
        Image.fromarray((Xt[i].reshape(28, 28) * 255).round().astype(np.uint8)).save(path)
        paths.append(path.name)
    # the first one again, dark on light, larger and off centre, as a phone photo would be
    big = Image.fromarray((255 - Xt[picks[0]].reshape(28, 28) * 255).astype(np.uint8)).resize((70, 70))
    canvas = Image.new("L", (120, 100), 255)
    canvas.paste(big, (40, 5))
    canvas.save(d / "photo.jpg")
    np.save(d / "digit.npy", Xt[picks[1]].reshape(28, 28))
    proc = fastmlp("predict", "model.npz", *paths, "photo.jpg", "digit.npy", "--top-k", "2", cwd=d)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(picks) + 2
    expected = [yt[i] for i in picks] + [yt[picks[0]], yt[picks[1]]]
    for line, label in zip(lines, expected):
        assert re.match(rf"^\S+: {label}\s+top-2: {label} \(", line), line


@pytest.mark.parametrize("args,message", [
    (["train", "--hidden", "abc"], "--hidden takes sizes"),
    (["train", "--dataset", "digits", "--lr", "-1", "--quiet"], "lr must be > 0"),
    (["train", "--dataset", "digits", "--momentum", "1.5", "--quiet"], "momentum must be in [0, 1)"),
    (["train", "--dataset", "digits", "--batch-size", "0", "--quiet"], "--batch-size must be >= 1"),
    (["train", "--dataset", "digits", "--batch-size", "100000", "--quiet"], "batch_size must be in"),
    (["train", "--dataset", "digits", "--weight-decay", "-0.1", "--quiet"], "weight_decay must be"),
    (["train", "--dataset", "digits", "--log", "x.txt", "--quiet"], "--log must end in"),
    (["evaluate", "missing.npz"], "missing.npz: no such model file"),
    (["predict", "missing.npz", "x.png"], "no such model file"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, message):
    proc = fastmlp(*args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last, proc.stderr


def test_digits_dataset_trains_offline(tmp_path):
    proc = fastmlp("train", "--dataset", "digits", "--hidden", "64", "--epochs", "30",
                   "--batch-size", "32", "--lr", "0.05", "--out", "d.npz", cwd=tmp_path)
    acc = float(re.search(r"test accuracy: ([\d.]+)", proc.stdout).group(1))
    assert acc > 0.9
    proc = fastmlp("evaluate", "d.npz", cwd=tmp_path)
    assert "test set: digits, 360 samples" in proc.stdout


def test_main_command_falls_back_loudly_without_mnist(tmp_path):
    env = os.environ.copy()
    env.pop("FASTMLP_DATA", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["FASTMLP_MIRRORS"] = "http://127.0.0.1:9/"
    proc = fastmlp("train", "--epochs", "2", "--hidden", "32", "--batch-size", "64", "--out",
                   "m.npz", cwd=tmp_path, env=env)
    assert "falling back to the 8x8 UCI digits" in proc.stderr
    assert "Data: digits" in proc.stdout
    proc = fastmlp("train", "--dataset", "mnist", "--epochs", "1", cwd=tmp_path, env=env,
                   check=False)
    assert proc.returncode == 2 and "Looked in" in proc.stderr


@pytest.mark.mnist
def test_bench_quick_smoke(tmp_path):
    # the zero-skipping path, not the one a timing on this machine would choose at batch 64
    env = dict(os.environ, FASTMLP_FIRST_LAYER="sparse")
    proc = fastmlp("bench", "--quick", "--batch-sizes", "64", "--runners",
                   "fastmlp-numba,fastmlp-numpy", "--json", "b.json", cwd=tmp_path, env=env)
    assert "batch 64" in proc.stdout and "fastmlp-numpy" in proc.stdout
    result = json.load(open(tmp_path / "b.json"))
    entry = result["batches"]["64"]
    assert set(entry["median_s"]) == {"fastmlp-numba", "fastmlp-numpy"}
    assert all(t > 0 for t in entry["median_s"].values()) and entry["floor_s"] > 0
    assert result["sgemm_gflops"] > 0
    # the floor: the epoch's FLOPs at the best GEMM rate measured before or after the epochs
    best = max([*result["gemm_gflops"].values(), *result["gemm_gflops_after"].values()])
    epoch_flops = Network([784, 300, 10], _initialise=False).flops(result["samples"])
    assert entry["floor_s"] == pytest.approx(epoch_flops / (best * 1e9))
    assert result["machine"]["threading_layer"] in ("omp", "tbb", "workqueue")
    assert f"Numba threading layer: {result['machine']['threading_layer']}" in proc.stdout
    assert entry["first_layer_path"] == ["zero-skipping"]
    assert "fastmlp-numba's first layer: zero-skipping" in proc.stdout
    assert 0 < entry["sparse_floor_s"] < entry["floor_s"]  # MNIST: the zero-skipping path
    # ... on Numba's threads, whose count the ThreadTuner chose in each process
    runs = entry["thread_tuning"]["fastmlp-numba"]
    assert runs and all(run["threads"] >= 1 and run["switches"] >= 0 for run in runs)
    assert "fastmlp-numpy" not in entry["thread_tuning"]
    assert "fastmlp-numba's thread tuner, per process: ended on" in proc.stdout


def test_bench_on_dense_fashion_mnist_with_two_hidden_layers_in_separate_processes(tmp_path):
    from pathlib import Path
    fashion = Path(os.environ.get("FASTMLP_DATA", "../shared/data/mnist")).resolve().parent \
        / "fashion-mnist"
    assert fashion.is_dir(), f"the real Fashion-MNIST files are expected in {fashion}"
    proc = fastmlp("bench", "--quick", "--dataset", "fashion-mnist", "--data-dir", fashion,
                   "--hidden", "32,16", "--batch-sizes", "64", "--runners",
                   "fastmlp-numba,torch", "--json", "b.json", cwd=tmp_path)
    result = json.load(open(tmp_path / "b.json"))
    assert result["data"] == "Fashion-MNIST" and result["hidden"] == [32, 16]
    assert 0.3 < result["nonzero"] < 0.7  # dense: no zero-skipping floor
    assert result["timing"].startswith("each runner in its own process")
    entry = result["batches"]["64"]
    assert set(entry["median_s"]) == {"fastmlp-numba", "torch"} and "sparse_floor_s" not in entry
    # batch 64 of dense data: the 784x32 layer (over THREADED_MIN_WEIGHTS) runs on Numba's
    # threads, a block of its rows each, whose count the thread tuner chooses
    tuning, = entry["thread_tuning"]["fastmlp-numba"]
    assert tuning["threads"] in (1, 2)
    assert entry["first_layer_path"] == ["dense"]
    assert "torch" in result["versions"]["torch"] and result["gemm_gflops"]["blas"] > 0
    assert "784-32-16-10" in proc.stdout
    bad = fastmlp("bench", "--hidden", "32,x", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "--hidden must be widths" in bad.stderr
    bad = fastmlp("bench", "--tta-seeds", "0,one", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "--tta-seeds must be integers" in bad.stderr


def test_time_to_accuracy_summary_takes_the_median_over_seeds():
    from fastmlp.cli import bench_harness
    tta_summary = bench_harness().tta_summary
    runs = [{"recipe": {"lr": 0.1}, "target": 0.98, "seconds": s, "epochs": e, "seed": seed}
            for seed, (s, e) in enumerate([(2.0, 2.5), (1.0, 2.0), (3.0, 2.9)])]
    summary = tta_summary(runs)
    assert (summary["seconds"], summary["epochs"], summary["seeds"]) == (2.0, 2.5, [0, 1, 2])
    assert summary["runs"] == runs and summary["target"] == 0.98
    runs[1] = dict(runs[1], seconds=None, epochs=30)  # a run that never reached the target ...
    summary = tta_summary(runs)  # ... counts as the slowest: the median is the middle of the rest
    assert (summary["seconds"], summary["epochs"]) == (3.0, 2.9)
    runs[0] = dict(runs[0], seconds=None, epochs=30)
    assert tta_summary(runs)["seconds"] is None and tta_summary(runs)["epochs"] is None


def test_plot_without_matplotlib_fails_before_training(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastmlp.cli import main\n"
            "sys.exit(main(['train', '--dataset', 'digits', '--plot', 'c.png', '--out', 'm.npz']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "pip install 'fastmlp[plot]'" in proc.stderr and "Traceback" not in proc.stderr
    assert "Epoch" not in proc.stdout and not (tmp_path / "m.npz").exists()


def test_train_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    common = ["train", "--dataset", "digits", "--hidden", "32", "--batch-size", "32", "--quiet"]
    fastmlp(*common, "--epochs", "2", "--checkpoint", "ck.npz", "--out", "a.npz", cwd=tmp_path)
    proc = fastmlp(*common, "--epochs", "4", "--resume", "ck.npz", "--out", "b.npz", cwd=tmp_path)
    fastmlp(*common, "--epochs", "4", "--out", "c.npz", cwd=tmp_path)
    resumed, full = Network.load(tmp_path / "b.npz"), Network.load(tmp_path / "c.npz")
    assert resumed.epochs_done == 4 and "test accuracy" in proc.stdout
    for a, b in zip(resumed.weights + resumed.biases, full.weights + full.biases):
        np.testing.assert_array_equal(a, b)
    proc = fastmlp("train", "--dataset", "digits", "--hidden", "16", "--resume", "ck.npz",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "the checkpoint is a 64-32-10 MLP (relu) network" in proc.stderr


def test_time_to_accuracy_decays_the_lr_and_stops_at_the_target(mnist):
    from fastmlp.cli import bench_harness
    harness = bench_harness()
    LR_FLOOR, TTA_RECIPE, decayed_lr, time_to_accuracy = (
        harness.LR_FLOOR, harness.TTA_RECIPE, harness.decayed_lr, harness.time_to_accuracy)
    recipe = dict(TTA_RECIPE, decay_epochs=2.0, lr=0.2)
    assert decayed_lr(recipe, 0.0) == 0.2
    assert decayed_lr(recipe, 1.0) == pytest.approx(0.1)
    assert decayed_lr(recipe, 5.0) == pytest.approx(0.2 * LR_FLOOR)
    assert decayed_lr(dict(recipe, decay_epochs=None), 5.0) == 0.2
    (X, y), (Xt, yt) = mnist
    result = time_to_accuracy(X[:6000], y[:6000], Xt[:2000], yt[:2000], target=0.9,
                              max_epochs=3)
    assert result["accuracy"] >= 0.9 and result["seconds"] > 0
    epochs, _, accuracy = result["curve"][-1]
    assert result["epochs"] == epochs and accuracy == result["accuracy"]
    assert all(acc < 0.9 for _, _, acc in result["curve"][:-1])
