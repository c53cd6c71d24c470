import functools
import http.server
import os
import signal
import subprocess
import threading

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import ENV_VAR, load_mnist

# The README's command passes a relative path (FASTMLP_DATA=../shared/data/mnist); the CLI tests
# run in temporary folders, where it would no longer resolve: make it absolute once, here.
if os.environ.get(ENV_VAR):
    os.environ[ENV_VAR] = os.path.abspath(os.environ[ENV_VAR])


@pytest.fixture(autouse=True, scope="session")
def first_layer_paths_of_this_session(tmp_path_factory):
    """The first layers' paths timed in this session, not those an earlier run left in the user
    cache: each configuration is timed once per test session, so the tests never depend on what
    ran before them (the CLI's subprocesses use the user cache, as a user's would)."""
    from fastmlp import compiling
    folder = tmp_path_factory.mktemp("records")
    original = compiling._record_path
    compiling._record_path = lambda name: (folder / name if name == compiling.FIRST_LAYER_PATHS
                                           else original(name))
    yield
    compiling._record_path = original


def optional_torch():
    """PyTorch, the reference of the optimizer and layer tests, or None where it is not
    installed; CI installs it (and sets CI): there a missing torch fails instead of skipping."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            raise
        return None
    return torch


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST files through $FASTMLP_DATA. Missing data fails the test, never skips."""
    if not os.environ.get(ENV_VAR):
        pytest.fail(f"${ENV_VAR} is not set: point it at the MNIST IDX files "
                    f"(.ci/run sets it to ../shared/data/mnist)")
    return load_mnist(os.environ[ENV_VAR], download=False)


def sparse_images(rng, n, d, dtype=np.float32, density=0.2):
    x = rng.random((n, d))
    x[rng.random((n, d)) > density] = 0
    return x.astype(dtype)


@pytest.fixture
def toy_data():
    """A small learnable problem: 10 classes separated by which block of pixels is lit."""
    rng = np.random.default_rng(123)
    n, d = 640, 64
    y = rng.integers(0, 10, n)
    X = sparse_images(rng, n, d, np.float64, density=0.1)
    for c in range(10):
        X[y == c, c * 6:(c + 1) * 6] += 0.8
    return np.clip(X, 0, 1), y


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    """An empty user cache, no $FASTMLP_DATA and no reachable mirror."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(datasets, "default_cache_dir", lambda: cache)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("FASTMLP_MIRRORS", "http://127.0.0.1:9/")  # discard port: refused at once
    return cache


@pytest.fixture
def http_server(tmp_path):
    """(folder, URL) of a real HTTP server on localhost serving that folder."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(backend, calls): fit's compiled step (or, for "numpy", its twin) sends
    this process a SIGINT — a Ctrl-C — right after its ``calls``-th call. Returns the undo."""
    from fastmlp import kernels as K

    def arm(backend, calls):
        name = "train_steps" if backend == "numba" else "train_steps_ref"
        original, done = getattr(K, name), []

        def interrupting(*args):
            result = original(*args)
            done.append(1)
            if len(done) == calls:
                os.kill(os.getpid(), signal.SIGINT)
            return result

        monkeypatch.setattr(K, name, interrupting)
        return monkeypatch.undo
    return arm


def ctrl_c_when(cmd, cwd, stream, prefix, timeout=300):
    """Run ``cmd``, send it SIGINT (a Ctrl-C) when a line of its ``stream`` ("stdout" or
    "stderr") starts with ``prefix``; returns (exit code, stdout, stderr). The command starts
    with SIGINT's default action and unblocked, as from a terminal: a child inherits an ignored
    or blocked SIGINT, and something in a long test process (a library it loaded) can leave it
    so (seen in full runs of the suite: the sweep ignored the Ctrl-C and ran to its end)."""
    def as_from_a_terminal():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=as_from_a_terminal)
    for line in getattr(proc, stream):
        if line.startswith(prefix):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


DISK_TESTS_REQUIRED = os.environ.get("FASTMLP_DISK_TESTS") == "required"  # set by .ci/run


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 512 KiB (a tmpfs mounted at tmp_path/"disk"), for disk-full tests
    without patched writes. Mounting needs root: where it fails, the test fails when
    FASTMLP_DISK_TESTS=required (as in CI) and is skipped elsewhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a small tmpfs here: {mounted.stderr.strip()}"
        if DISK_TESTS_REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill_disk(disk):
    """Write a file into ``disk`` until no byte more fits; returns its path."""
    import errno
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler
