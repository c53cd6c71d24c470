"""Studies: the grid, the results file and its resume, and the same records on every backend —
a real process pool, a real local Dask cluster and a real local Ray instance."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fastmlp import Network
from fastmlp.sweep import (SweepError, _start_local_pool, estimated_work, expand, read_records,
                           summarize, sweep, trial_key)

GRID = {"hidden": [(16,), (32,)], "seed": [0, 1]}
BASE = {"epochs": 6, "batch_size": 32, "optimizer": "adam"}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return (X[:1400], y[:1400]), (X[1400:], y[1400:])


@pytest.fixture(scope="module")
def sequential(digits):
    return sweep(GRID, data=digits, base=BASE, backend="sequential")


def _same(a, b):
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for x, y in zip(a, b):
        assert x["test_accuracy"] == y["test_accuracy"] and x["test_loss"] == y["test_loss"]
        assert x["history"]["loss"] == y["history"]["loss"]


def test_records_hold_every_setting_and_the_results(sequential):
    assert len(sequential) == 4
    r = sequential[0]
    assert r["hidden"] == [16] and r["seed"] == 0 and r["epochs"] == 6
    assert r["optimizer"] == "adam" and 0.5 < r["test_accuracy"] <= 1
    assert r["train_seconds"] > 0 and len(r["history"]["loss"]) == 6
    stats = summarize(sequential, "hidden")
    assert set(map(tuple, stats)) == {(16,), (32,)} and all(n == 2 for _, _, n in stats.values())


def test_local_pool_gives_the_sequential_records(digits, sequential):
    _same(sweep(GRID, data=digits, base=BASE, backend="local", n_jobs=2), sequential)


def test_threads_give_the_sequential_records_from_two_threads(digits, sequential, monkeypatch):
    import threading

    import fastmlp.sweep
    threads_seen = set()
    run_trial = fastmlp.sweep.run_trial

    def noting_the_thread(*args, **kwargs):
        threads_seen.add(threading.get_ident())
        return run_trial(*args, **kwargs)

    monkeypatch.setattr(fastmlp.sweep, "run_trial", noting_the_thread)
    _same(sweep(GRID, data=digits, base=BASE, backend="threads", n_jobs=2), sequential)
    assert len(threads_seen) == 2 and threading.get_ident() not in threads_seen
    from fastmlp import kernels as K  # what lets the trials' compiled steps run at once
    assert K.train_steps.targetoptions["nogil"] and K.forward.targetoptions["nogil"]


def test_threads_refuse_a_threading_layer_that_is_not_thread_safe(digits, monkeypatch):
    import numba
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    with pytest.raises(ValueError, match="backend='threads' needs a thread-safe .* 'workqueue'"):
        sweep({"seed": [0]}, data=digits, base=BASE, backend="threads", log=lambda m: None)


def test_dask_local_cluster_gives_the_same_records(digits, sequential):
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        _same(sweep(GRID, data=digits, base=BASE, backend="dask", n_jobs=2), sequential)


def test_ray_local_instance_gives_the_same_records(digits, sequential):
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _same(sweep(GRID, data=digits, base=BASE, backend="ray", n_jobs=2), sequential)
    finally:
        ray.shutdown()


def test_a_rerun_skips_finished_trials_and_survives_a_cut_line(digits, tmp_path, sequential):
    out = tmp_path / "log.jsonl"
    sweep({"hidden": [(16,)], "seed": [0, 1]}, data=digits, base=BASE, backend="sequential",
          out=out)
    with open(out, "a") as f:
        f.write('{"key": "cut in the mid')  # what a crash during a write leaves
    messages = []
    records = sweep(GRID, data=digits, base=BASE, backend="sequential", out=out,
                    log=messages.append)
    assert "2 of 4 trials already in" in messages[0]
    _same(records, sequential)
    assert len(read_records(out)) == 4


def _mutate_results(rng, lines):
    """One structure-aware mutation of a results file's lines (bytes, newline-terminated)."""
    from test_fuzz_formats import SPECIAL, _edit_value
    lines = list(lines)
    i = int(rng.integers(len(lines)))
    kind = rng.integers(6)
    if kind == 0:  # a value anywhere in one record
        lines[i] = json.dumps(_edit_value(rng, json.loads(lines[i]))).encode() + b"\n"
    elif kind == 1:  # one byte replaced by a special character or any byte
        b = bytearray(lines[i])
        b[rng.integers(len(b) - 1)] = (SPECIAL[rng.integers(len(SPECIAL))] if rng.random() < 0.5
                                       else int(rng.integers(256)))
        lines[i] = bytes(b)
    elif kind == 2:  # a line cut, with or without its newline
        cut = lines[i][:rng.integers(len(lines[i]))]
        lines[i] = cut + (b"\n" if rng.random() < 0.5 else b"")
    elif kind == 3:  # a line lost or doubled
        lines[i:i + 1] = [] if rng.random() < 0.5 else [lines[i], lines[i]]
    elif kind == 4:  # the key's settings edited inside its string
        record = json.loads(lines[i])
        record["key"] = json.dumps(_edit_value(rng, json.loads(record["key"])))
        lines[i] = json.dumps(record).encode() + b"\n"
    else:  # bytes that are not UTF-8, or an empty or blank line inserted
        lines.insert(i, [b"\xff\xfe\x00\n", b"\n", b"  \n"][rng.integers(3)])
    return lines


def test_fuzzed_results_files_give_only_valid_records(digits, tmp_path):
    """10,000 mutated results files: reading one never raises, and every record it yields is
    whole and valid, so that a rerun either keeps a trial's record or runs the trial again."""
    from fastmlp.sweep import expand, trial_key
    out = tmp_path / "base.jsonl"
    sweep(GRID, data=digits, base=dict(BASE, epochs=2), backend="sequential", out=out)
    lines = out.read_bytes().splitlines(keepends=True)
    keys = {trial_key(t) for t in expand(GRID, dict(BASE, epochs=2))}
    rng = np.random.default_rng(0)
    fuzzed = tmp_path / "fuzzed.jsonl"
    for _ in range(10_000):
        fuzzed.write_bytes(b"".join(_mutate_results(rng, lines)))
        damaged = []
        records = read_records(fuzzed, damaged)
        done = {r["key"]: r for r in records}  # as a rerun indexes them
        assert len(done) + len(damaged) <= len(fuzzed.read_bytes().splitlines())
        for r in records:
            settings = json.loads(r["key"])  # a key of no trial is never used by a rerun
            assert all(r[k] == v for k, v in settings.items())
            assert r["key"] not in keys or r["seed"] == settings["seed"]
            assert type(r["test_accuracy"]) in (int, float) and 0 <= r["test_accuracy"] <= 1
            assert all(isinstance(v, list) for v in r["history"].values())


def test_a_rerun_runs_the_trials_of_damaged_lines_again(digits, tmp_path, sequential):
    out = tmp_path / "log.jsonl"
    sweep(GRID, data=digits, base=BASE, backend="sequential", out=out)
    lines = out.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:40] + b"\xff" + lines[1][41:]          # not UTF-8
    lines[2] = lines[2].replace(b'"test_accuracy": ', b'"test_accuracy": 1')  # out of range
    out.write_bytes(b"".join(lines))
    messages = []
    records = sweep(GRID, data=digits, base=BASE, backend="sequential", out=out,
                    log=messages.append)
    assert "lines 2, 3 are not valid records" in messages[0]
    assert "2 of 4 trials already in" in messages[1]
    _same(records, sequential)


def test_a_killed_worker_is_reported_and_its_trial_retried(digits, tmp_path):
    marker = tmp_path / "killed-once"

    def kill_the_first_worker(epoch):  # runs in the worker, inside fit
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return 1e-3

    messages = []
    records = sweep({"seed": [0, 1, 2]}, data=digits, base=dict(BASE, hidden=(16,),
                    lr_schedule=kill_the_first_worker), backend="local", n_jobs=2,
                    log=messages.append)
    assert marker.exists() and len(records) == 3
    assert all("test_accuracy" in r for r in records)
    assert any("a worker failed" in m for m in messages)

    def always_kill(epoch):
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(SweepError, match="could not be run"):
        sweep({"seed": [0]}, data=digits, base=dict(BASE, hidden=(16,), lr_schedule=always_kill),
              backend="local", n_jobs=1, log=lambda m: None)


def _killing_once(marker):
    def kill_the_first_worker(epoch):  # runs in the worker, inside fit
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return 1e-3
    return kill_the_first_worker


def _no_record_lost_or_twice(out, records, seeds):
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["seed"] for r in lines) == sorted(seeds)  # each trial once in the file
    assert sorted(r["seed"] for r in records) == sorted(seeds)
    assert all("test_accuracy" in r for r in records)


def test_a_worker_killed_on_a_dask_cluster_loses_no_trial(digits, tmp_path):
    from distributed import Client, LocalCluster
    marker, out, messages = tmp_path / "killed-once", tmp_path / "out.jsonl", []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster, Client(cluster):
        records = sweep({"seed": [0, 1, 2]}, data=digits, out=out, backend="dask", n_jobs=2,
                        base=dict(BASE, hidden=(16,), lr_schedule=_killing_once(marker)),
                        log=messages.append)
    assert marker.exists()  # the scheduler ran the killed worker's trial again
    _no_record_lost_or_twice(out, records, [0, 1, 2])


def test_a_worker_killed_on_ray_loses_no_trial(digits, tmp_path):
    import ray
    marker, out, messages = tmp_path / "killed-once", tmp_path / "out.jsonl", []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        records = sweep({"seed": [0, 1, 2]}, data=digits, out=out, backend="ray", n_jobs=2,
                        base=dict(BASE, hidden=(16,), lr_schedule=_killing_once(marker)),
                        log=messages.append)
    finally:
        ray.shutdown()
    assert marker.exists()
    assert any("a worker failed" in m for m in messages), messages
    _no_record_lost_or_twice(out, records, [0, 1, 2])


def test_a_later_sweep_reuses_the_idle_workers(digits, tmp_path):
    def record_pid(epoch):  # runs in the worker, inside fit
        (tmp_path / f"{os.getpid()}.pid").touch()
        return 1e-3

    def pool_workers():  # the pool a sweep of 2 jobs would use now
        return set(_start_local_pool(2)._processes)

    base = dict(BASE, hidden=(16,), epochs=1, lr_schedule=record_pid)
    sweep({"seed": [0, 1, 2, 3]}, data=digits, base=base, backend="local", n_jobs=2,
          log=lambda m: None)
    workers = pool_workers()
    # one worker may run all four short trials while the other still imports
    assert len(workers) == 2 and {f"{p}.pid" for p in workers} >= {
        p.name for p in tmp_path.glob("*.pid")}
    time.sleep(12)  # idle longer than loky's own default timeout (10 s)
    for p in tmp_path.glob("*.pid"):
        p.unlink()
    sweep({"seed": [4, 5, 6, 7]}, data=digits, base=base, backend="local", n_jobs=2,
          log=lambda m: None)
    ran = {p.name for p in tmp_path.glob("*.pid")}
    assert ran and ran <= {f"{p}.pid" for p in workers}
    assert pool_workers() == workers


def test_workers_that_map_more_data_than_lokys_leak_allowance_keep_running(tmp_path):
    # 336 MB of images: read by every epoch, they count in the workers' memory, which loky
    # took for a leak (over 300 MB), restarting them
    X = np.full((105_000, 800), 0.5, np.float32)
    y = np.arange(len(X)) % 2

    def record_pid(epoch):  # runs in the worker, inside fit
        (tmp_path / f"{os.getpid()}.pid").touch()
        return 1e-3

    messages = []
    # trials of over a second: loky checks a worker's memory after a task at most once a second
    records = sweep({"seed": list(range(6))}, data=((X, y), (X[:100], y[:100])),
                    base={"hidden": (2,), "epochs": 6, "batch_size": 1024,
                          "lr_schedule": record_pid}, backend="local", n_jobs=2,
                    log=messages.append)
    assert len(records) == 6 and all("test_accuracy" in r for r in records)
    assert len(list(tmp_path.glob("*.pid"))) <= 2  # no worker restarted
    assert not any("a worker failed" in m for m in messages)


@pytest.mark.parametrize("grid,base,message", [
    ({"width": [1]}, {}, "unknown grid key 'width'"),
    ({}, {}, "grid must be a non-empty dict"),
    ({"seed": []}, {}, r"grid\['seed'\] is empty"),
    ({"seed": [0]}, {"seed": 1}, "both in grid and in base"),
    ({"hidden": ["wide"]}, {}, "hidden must be a tuple"),
    ({"dropout": [0.5, 1.5]}, {}, "dropout rates must be in"),
    ({"optimizer": ["lbfgs"]}, {}, "optimizer must be one of"),
    ({"train_size": [10 ** 7]}, {}, "train_size must be an integer in"),
    ({"batch_size": [0]}, {}, "batch_size must be in"),
])
def test_bad_grids_are_refused_before_any_trial(digits, grid, base, message):
    ran = []
    with pytest.raises(ValueError, match=message):
        sweep(grid, data=digits, base={**{k: v for k, v in BASE.items() if k not in grid},
                                       **base}, backend="sequential", log=ran.append)
    assert not ran


@pytest.mark.parametrize("arg,value", [("n_jobs", 0), ("threads", 0), ("threads", "2"),
                                       ("backend", "processes")])
def test_bad_sweep_arguments_are_named(digits, arg, value):
    with pytest.raises(ValueError, match=arg):
        sweep({"seed": [0]}, data=digits, base=BASE, log=lambda m: None, **{arg: value})


def test_missing_extras_name_the_extra(digits, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[ray\]'"):
        sweep({"seed": [0]}, data=digits, base=BASE, backend="ray", log=lambda m: None)


def test_cli_width_sweep_writes_table_log_and_plot(tmp_path):
    cmd = [sys.executable, "-m", "fastmlp", "sweep", "--dataset", "digits", "--hidden", "8,32",
           "--seeds", "0-1", "--epochs", "3", "--batch-size", "32", "--out", "w.csv", "--plot",
           "w.png"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "hidden 8: test accuracy" in proc.stdout and "(2 seeds)" in proc.stdout
    rows = (tmp_path / "w.csv").read_text().splitlines()
    assert len(rows) == 5 and "test_accuracy" in rows[0]
    assert len((tmp_path / "w.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "w.png").stat().st_size > 5000
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "4 of 4 trials already in" in again.stderr
    assert json.loads((tmp_path / "w.jsonl").read_text().splitlines()[0])["epochs"] == 3


def test_trials_start_longest_first_and_come_back_in_grid_order(digits, tmp_path):
    out = tmp_path / "order.jsonl"
    grid, base = {"hidden": [(4,), (16,)], "epochs": [1, 2], "seed": [0, 1]}, {"batch_size": 64}
    records = sweep(grid, data=digits, base=base, backend="sequential", out=out,
                    log=lambda m: None)
    assert [r["key"] for r in records] == [trial_key(t) for t in expand(grid, base)]
    # 64 inputs, 10 classes: 2 epochs of 16 hidden > 1 of 16 > 2 of 4 > 1 of 4; seeds in order
    finished = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["hidden"], r["epochs"], r["seed"]) for r in finished] == [
        ([16], 2, 0), ([16], 2, 1), ([16], 1, 0), ([16], 1, 1),
        ([4], 2, 0), ([4], 2, 1), ([4], 1, 0), ([4], 1, 1)]


def test_estimated_work_counts_epochs_images_and_weights():
    trial = {"hidden": (16, 8), "epochs": 3}
    per_image = 2 * (2 * 64 * 16 + 3 * (16 * 8 + 8 * 10))  # the first layer has no input gradient
    assert estimated_work(trial, 64, 10, 1400) == 3 * 1400 * per_image
    assert estimated_work(dict(trial, train_size=100), 64, 10, 1400) == 3 * 100 * per_image


def test_network_flops_count_a_cnn_from_its_layers():
    from fastmlp.layers import Conv2D, Dense, Flatten, MaxPool2D
    net = Network([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10)],
                  input_shape=(8, 8, 1), seed=0)
    conv = 6 * 6 * 4 * 3 * 3 * 1  # output positions x filters x kernel window x channels
    dense = 3 * 3 * 4 * 10
    assert net.flops(50) == 2 * 50 * (2 * conv + 3 * dense)
    assert net.flops(50, input_density=0.5) == 2 * 50 * (2 * 0.5 * conv + 3 * dense)


def test_grid_expansion_order():
    trials = expand({"hidden": [(8,), (16,)], "seed": [0, 1]}, {"epochs": 2})
    assert [(t["hidden"], t["seed"]) for t in trials] == [((8,), 0), ((8,), 1), ((16,), 0),
                                                          ((16,), 1)]
    assert all(t["epochs"] == 2 for t in trials)


def test_grid_keys_are_network_and_fit_keywords():
    import inspect

    from fastmlp import Network
    from fastmlp.sweep import FIT_KEYS, NETWORK_KEYS
    assert NETWORK_KEYS <= set(inspect.signature(Network.__init__).parameters)
    assert FIT_KEYS <= set(inspect.signature(Network.fit).parameters)


def test_a_results_file_that_cannot_be_written_stops_the_sweep_and_a_rerun_goes_on(
        digits, tmp_path, monkeypatch, sequential):
    """#43, disk full under a sweep's results file: a clear error, the records written so far
    kept whole, and a rerun runs only the rest, none twice."""
    import errno
    out = tmp_path / "out.jsonl"
    fsync, calls = os.fsync, {"n": 0}

    def disk_full_at_the_third_record(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_at_the_third_record)
    with pytest.raises(SweepError, match=r"out.jsonl: the record of a finished trial could not "
                                         r"be written .*No space left.* run the sweep again"):
        sweep(GRID, data=digits, base=BASE, backend="sequential", out=out, log=lambda m: None)
    monkeypatch.undo()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert 2 <= len(written) <= 3  # the third line may have reached the disk before fsync failed
    messages = []
    records = sweep(GRID, data=digits, base=BASE, backend="sequential", out=out,
                    log=messages.append)
    keys = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(records)
    _same(records, sequential)


def test_a_sweep_whose_results_disk_fills_up_stops_and_a_rerun_goes_on(small_disk, digits):
    """#43 on a real full disk (a small tmpfs): the sweep stops with an error naming its results
    file; a rerun on free space runs every trial once."""
    from conftest import fill_disk
    grid = {"hidden": [(8,), (16,), (32,)], "seed": [0]}
    base = dict(epochs=2, batch_size=32, lr=0.1)
    out = small_disk / "out.jsonl"
    fill_disk(small_disk)  # (a record appended into the file's last page needs no free space)
    with pytest.raises(SweepError, match=r"out.jsonl: the record of a finished trial could not "
                                         r"be written .*No space left"):
        sweep(grid, data=digits, base=base, backend="sequential", out=out, log=lambda m: None)
    (small_disk / "filler").unlink()
    records = sweep(grid, data=digits, base=base, backend="sequential", out=out,
                    log=lambda m: None)
    keys = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(records) == 3


def test_a_sweep_into_a_read_only_folder_stops_with_an_error_naming_its_file(small_disk,
                                                                              digits):
    import subprocess
    grid = {"hidden": [(8,)], "seed": [0]}
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(SweepError, match=r"out.jsonl: the record of a finished trial could not "
                                             r"be written .*Read-only file system"):
            sweep(grid, data=digits, base=dict(epochs=1, batch_size=32, lr=0.1),
                  backend="sequential", out=small_disk / "out.jsonl", log=lambda m: None)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert list(small_disk.iterdir()) == []
