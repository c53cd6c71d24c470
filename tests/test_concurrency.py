"""Many processes at once: a cold JIT cache compiled by four processes together (numba issues
4807, 10128), and Ctrl-C during a sweep."""
import json
import os
import subprocess
import sys
import time

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
