"""Many processes at once: a cold JIT cache compiled by four processes together (numba issues
4807, 10128), the cache guard deleting files while other processes load them, and Ctrl-C
during a sweep."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ctrl_c_when

FIT = """
import hashlib, json, numpy as np
from fastmlp import Network
rng = np.random.default_rng(0)
X = rng.random((256, 40)).astype(np.float32)
X[X < 0.8] = 0
y = rng.integers(0, 4, 256)
digest = hashlib.sha256()
net = Network([40, 16, 4], seed=1)  # one fit per process is enough for the cache's races
net.fit(X, y, epochs=2, batch_size=32, verbose=0)
for w in net.weights:
    digest.update(w.tobytes())
print(json.dumps(digest.hexdigest()))
"""


def test_four_processes_compile_a_cold_cache_at_once(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", FIT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    digests = {json.loads(out.strip().splitlines()[-1]) for out, _ in outs}
    assert len(digests) == 1
    assert list((tmp_path / "cache").rglob("*.nbi")), "the cache was written"
    warm = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True,
                          timeout=900, check=True)
    assert json.loads(warm.stdout.strip().splitlines()[-1]) in digests


GATHER = """
import numpy as np
from fastmlp.kernels.data import gather_rows
X = np.arange(12.0).reshape(4, 3)
out = np.zeros((2, 3))
gather_rows(X, np.array([3, 1]), out)
assert (out == X[[3, 1]]).all(), out
print("ok")
"""


def test_cache_guard_deletes_safely_while_other_processes_load(tmp_path, monkeypatch):
    """One thread keeps making the cache stale and letting the guard drop it, while processes
    start, run the guard themselves, load (or compile) a cached kernel and write the cache."""
    from fastmlp.kernels._cache_guard import _cache_dirs, invalidate_stale_cache

    from fastmlp import kernels

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", GATHER], env=env, check=True, timeout=300)
    here = Path(os.path.abspath(Path(kernels.__file__).parent))
    cache = _cache_dirs(here)[0]  # $NUMBA_CACHE_DIR's folder, never the package's own
    assert str(cache).startswith(str(tmp_path))
    assert list(cache.glob("*.nbi")), "the first process wrote the cache"
    stop, deletions = threading.Event(), []

    def keep_dropping():
        while not stop.is_set():
            (cache / "fastmlp-kernels.stamp").write_text("stale")
            had = len(list(cache.glob("*.nb*")))
            invalidate_stale_cache(here)
            deletions.append(had)
            time.sleep(0.005)

    dropper = threading.Thread(target=keep_dropping)
    dropper.start()
    try:
        for _ in range(4):
            procs = [subprocess.Popen([sys.executable, "-c", GATHER], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
            for p in procs:
                out, err = p.communicate(timeout=300)
                assert p.returncode == 0 and out.strip() == "ok", err
    finally:
        stop.set()
        dropper.join()
    assert sum(1 for had in deletions if had) >= 4, "the guard dropped files while they loaded"
    assert (cache / "fastmlp-kernels.stamp").read_text() != "stale"


TANH_KERNEL = """
import sys
sys.path.insert(0, {pkg!r})
import numpy as np
import kernels
from kernels.activations import TANH
from kernels.dense import dense_forward
assert kernels.__file__.startswith({pkg!r}), kernels.__file__
if {wait}:
    print("imported", flush=True)
    sys.stdin.readline()
out = np.empty((1, 1))
dense_forward(np.full((1, 1), 0.5), np.ones((1, 1)), np.zeros(1), TANH, out)
print(float(out[0, 0]), sum(dense_forward.stats.cache_hits.values()), flush=True)
"""


def test_a_process_never_loads_kernels_compiled_from_other_sources(tmp_path):
    """Process A imports the kernels; then a callee's source changes (tanh, inlined into
    dense_forward from activations.py: dense.py's own timestamp, which Numba checks, stays), and
    process B, on the new sources, drops the cache, compiles and writes it. A then runs its
    kernel: it must run the code of its own sources, not load B's; the next process on the new
    sources loads B's entry; and with the old sources back, a process computes the old value."""
    import math
    import shutil

    from fastmlp import kernels
    pkg = tmp_path / "pkg"
    shutil.copytree(Path(kernels.__file__).parent, pkg / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def start(wait=False):
        return subprocess.Popen([sys.executable, "-c", TANH_KERNEL.format(pkg=str(pkg), wait=wait)],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def result(proc, stdin=None):
        out, err = proc.communicate(stdin, timeout=600)
        assert proc.returncode == 0, err
        value, hits = out.split()[-2:]
        return float(value), int(hits)

    a = start(wait=True)
    assert a.stdout.readline().strip() == "imported"
    activations = pkg / "kernels" / "activations.py"
    old_text = activations.read_text()
    assert old_text.count("return np.tanh(z)\n") == 1
    activations.write_text(old_text.replace("return np.tanh(z)\n", "return np.tanh(z) + 1\n"))
    new_value, hits = result(start())
    assert new_value == math.tanh(0.5) + 1 and hits == 0
    assert list((tmp_path / "cache").rglob("dense.dense_forward*.nbi")), "B wrote its entry"
    old_value, _ = result(a, "go\n")
    assert old_value == math.tanh(0.5), "A ran code compiled from B's sources"
    assert result(start()) == (new_value, 1), "the next process loads B's entry"
    activations.write_text(old_text)
    assert result(start())[0] == old_value


def test_ctrl_c_during_a_sweep_keeps_finished_records_and_exits_130(tmp_path):
    cmd = [sys.executable, "-m", "fastmlp", "sweep", "--dataset", "digits", "--hidden",
           "8,16,32,64", "--seeds", "0-9", "--epochs", "30", "--batch-size", "16", "--jobs", "2",
           "--out", "s.csv"]
    code, out, err = ctrl_c_when(cmd, tmp_path, "stderr", "sweep: 2/40")
    assert code == 130, err
    assert "Traceback" not in err
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert 2 <= len(lines) < 40
    assert all(json.loads(line)["test_accuracy"] > 0 for line in lines)
    time.sleep(1)
    again = subprocess.run(cmd[:-2] + ["--out", "s.csv", "--seeds", "0-0", "--hidden", "8"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
