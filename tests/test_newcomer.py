"""What a new user tripped over, following the README in a fresh clone (issue: newcomer defects)."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmlp import Network, datasets
from fastmlp.errors import DataNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=600)


def test_readme_relative_data_path_is_made_absolute_for_subprocesses():
    value = os.environ.get(datasets.ENV_VAR)
    assert value and os.path.isabs(value), "conftest must resolve $FASTMLP_DATA once"


def test_importing_from_the_source_tree_without_install_says_what_to_do(tmp_path):
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "import fastmlp\n")
    proc = run(["-c", code], cwd=tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "fastmlp is not installed" in last and "pip install -e ." in last
    assert "circular import" not in proc.stderr


def test_saved_files_respect_the_umask(tmp_path):
    net = Network([4, 3, 2], seed=0)
    old = os.umask(0o022)
    try:
        net.save(tmp_path / "a.npz")
        os.umask(0o077)
        net.save(tmp_path / "b.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.npz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.npz").stat().st_mode) == 0o600


@pytest.mark.parametrize("args", [["train", "--hidden", "abc"], ["train", "--epochs", "x"],
                                  ["predict"], ["nonsense"]])
def test_every_bad_flag_is_one_line(tmp_path, args):
    proc = run(["-m", "fastmlp", *args], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastmlp") and "error:" in lines[0]


def test_help_has_no_raw_markup_and_every_option_is_explained(tmp_path):
    from fastmlp.cli import build_parser
    parser = build_parser()
    assert "``" not in parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("predict", "evaluate", "bench"):
        for action in sub.choices[name]._actions:
            if action.dest != "help":
                assert action.help, f"fastmlp {name}: {action.dest} has no help text"


def test_download_failure_message_is_short_and_whole_words(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(datasets, "default_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("FASTMLP_MIRRORS", "http://127.0.0.1:9/ http://127.0.0.1:9/other/")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        datasets.load_mnist(tmp_path / "nowhere")
    reason = str(info.value).split("download failed: ")[1].splitlines()[0]
    assert len(reason) < 400, reason
    assert "127.0.0.1:9/other/" in reason
    for part in reason.split("; "):
        assert not part.rstrip(")").endswith(("...", "…")) or part.rstrip(")").endswith(" ...")
    out, err = capfd.readouterr()
    assert "Downloading data from" not in out + err


@pytest.mark.mnist
def test_evaluate_needs_only_the_test_files(tmp_path, mnist):
    src = Path(os.environ[datasets.ENV_VAR])
    only_test = tmp_path / "testonly"
    only_test.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (only_test / name).symlink_to(src / name)
    (X, y), _ = mnist
    net = Network([784, 16, 10], seed=0)
    net.fit(X[:2000], y[:2000], epochs=1, verbose=0)
    net.train_config["dataset"] = "mnist"
    net.save(tmp_path / "m.npz")
    env = os.environ.copy()
    env.pop(datasets.ENV_VAR)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["FASTMLP_MIRRORS"] = "http://127.0.0.1:9/"
    proc = run(["-m", "fastmlp", "evaluate", "m.npz", "--data-dir", str(only_test)], cwd=tmp_path,
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert "test set: mnist, 10000 samples" in proc.stdout


def test_uci_digits_preparation_round_trips_a_real_digit(tmp_path):
    """An 8x8 UCI digit drawn large (as a person would photograph it) comes back as close to
    itself as the thresholded block counts allow, and the 8x8 model reads it right."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from fastmlp.images import prepare
    digits = load_digits()
    close = 0
    for i in range(20):
        small = digits.images[i] / 16.0
        big = np.kron(small, np.ones((16, 16)))  # 128x128, dark background
        path = tmp_path / f"d{i}.png"
        Image.fromarray((big * 255).astype(np.uint8)).save(path)
        prepared = prepare(path, 64, "uci-digits").reshape(8, 8)
        close += np.abs(prepared - small).mean() < 0.2
    assert close >= 15


def test_fallback_model_is_named_and_predict_prepares_8x8(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits
    env = os.environ.copy()
    env.pop(datasets.ENV_VAR, None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["FASTMLP_MIRRORS"] = "http://127.0.0.1:9/"
    proc = run(["-m", "fastmlp", "train", "--epochs", "30", "--hidden", "64", "--batch-size", "32",
                "--lr", "0.05", "--quiet"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "takes 8x8 images" in proc.stderr and "8x8 digits: it takes 8x8 images" in proc.stdout
    digits = load_digits()
    paths = []
    for i in range(1500, 1510):  # drawn large, dark on light, as a user's picture would be
        big = np.kron(digits.images[i] / 16.0, np.ones((12, 12)))
        Image.fromarray((255 - big * 255).astype(np.uint8)).save(tmp_path / f"x{i}.png")
        paths.append(f"x{i}.png")
    proc = run(["-m", "fastmlp", "predict", "model.npz", *paths], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "trained on the 8x8 UCI digits" in proc.stderr
    predicted = [int(line.split(":")[1].split()[0]) for line in proc.stdout.strip().splitlines()]
    assert np.mean(np.array(predicted) == digits.target[1500:1510]) >= 0.7


def test_generated_files_are_ignored_by_git():
    ignore = (ROOT / ".gitignore").read_text().split()
    for pattern in ("/*.npz", "/*.png", "/*.csv", "/*.jsonl"):
        assert pattern in ignore


def test_bench_says_which_peers_were_skipped(monkeypatch):
    from fastmlp.cli import bench_harness
    bench = bench_harness()
    monkeypatch.setattr(bench, "_installed", lambda module: False)
    lines = []
    bench.run(batch_sizes=(), samples=500, runner_names=["torch", "jax-scan"], tta=False,
              memory=False, log=lines.append)
    text = "\n".join(lines)
    assert "skipped torch: torch is not installed" in text
    assert "skipped jax-scan: jax is not installed" in text
