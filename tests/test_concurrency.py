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
for data, opt in ((X, "adam"), (X + 0.5, "sgd")):  # the zero-skipping and the dense path
    net = Network([40, 16, 4], seed=1, dropout=0.2)
    net.fit(data, y, epochs=2, batch_size=32, optimizer=opt, verbose=0)
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
