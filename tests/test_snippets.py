"""Every code block of the README and the docs runs as written.

Each page's Python blocks run in order in one fresh interpreter (a page reads like a notebook),
and each command of its shell blocks runs in the same working folder, with
``FASTMLP_SMOKE_TEST=2000``: every fit then trains one epoch on at most 2,000 samples, whatever
the snippet asks (documented in CONTRIBUTING.md). Not run: the install lines (``pip install``,
``python3 -m venv``) and the README's test command, which are what CI itself runs. The data:
the real MNIST and Fashion-MNIST, and a small CIFAR-10 in the official binary format written
here (the real one cannot be downloaded on CI's machines).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)
NOT_RUN = ("pip install", "python3 -m venv", "FASTMLP_DATA=../shared/data/mnist python -m pytest")


def blocks(page):
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / page).read_text())]


def commands(code):
    """The shell commands of a block, one per line, without comments and what CI itself runs."""
    for line in code.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#") and not line.startswith(NOT_RUN):
            yield line


def test_the_pages_have_code_to_run():
    assert len(PAGES) >= 10
    assert sum(len(blocks(page)) for page in PAGES) >= 15


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mnist):
    work = tmp_path_factory.mktemp("snippets")
    mnist_dir = Path(os.environ["FASTMLP_DATA"]).resolve()
    data = work / "data"
    data.mkdir()
    (data / "mnist").symlink_to(mnist_dir)
    (data / "fashion-mnist").symlink_to(mnist_dir.parent / "fashion-mnist")
    cifar = data / "cifar10" / "cifar-10-batches-bin"
    cifar.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (40, 1 + 3 * 32 * 32), dtype=np.uint8)
        records[:, 0] = np.arange(40) % 10
        (cifar / name).write_bytes(records.tobytes())
    from PIL import Image

    from fastmlp import load_mnist
    _, (X_test, _) = load_mnist(mnist_dir, download=False)
    digit = (255 - X_test[0].reshape(28, 28) * 255).astype(np.uint8)  # dark on white, a 7
    Image.fromarray(np.kron(digit, np.ones((8, 8), np.uint8))).save(work / "my-digit.png")
    return work


@pytest.mark.mnist
@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page, workdir):
    env = dict(os.environ, FASTMLP_SMOKE_TEST="2000", MPLBACKEND="Agg",
               FASTMLP_DATA=str(workdir / "data" / "mnist"))
    python = "\n\n".join(code for lang, code in blocks(page) if lang == "python")
    if python:
        proc = subprocess.run([sys.executable, "-c", python], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{page}: its Python blocks failed:\n{proc.stderr[-3000:]}"
    for lang, code in blocks(page):
        if lang != "bash":
            continue
        for command in commands(code):
            proc = subprocess.run(command, shell=True, cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, f"{page}: `{command}` failed:\n{proc.stderr[-3000:]}"


EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.mnist
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_runs(example, workdir):
    env = dict(os.environ, FASTMLP_SMOKE_TEST="2000", MPLBACKEND="Agg",
               FASTMLP_DATA=str(workdir / "data" / "mnist"))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"examples/{example} failed:\n{proc.stderr[-3000:]}"
