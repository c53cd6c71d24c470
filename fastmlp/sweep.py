"""Studies: many trainings over a grid of settings, on a local process pool, threads, Dask or Ray.

>>> from fastmlp.sweep import sweep
>>> records = sweep({"hidden": [(128,), (256,)], "seed": range(3)}, data="mnist",
...                 base={"epochs": 10, "optimizer": "adam"}, backend="local", n_jobs=2)

Every backend runs through joblib (``loky`` processes, ``sequential``, ``threading``, its Dask
backend, Ray's joblib backend), so the same grid gives the same records everywhere. Each record
is written to ``out`` (JSONL, append + fsync) as soon as its trial finishes, and a rerun skips
the trials the file already holds: a crash loses at most the trials that were running. A worker
that dies is reported and its unfinished trials are run once more. Trials are sent out longest
first (``estimated_work``: epochs × an epoch's FLOPs), and sweep() returns the records in grid
order.
"""
import contextlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .validation import is_finite_number

NETWORK_KEYS = {"activation", "init", "dtype", "dropout", "input_dropout", "max_norm", "output",
                "loss", "seed", "backend"}
FIT_KEYS = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "shuffle",
            "validation_split", "lr_schedule", "momentum_schedule"}
SWEEP_KEYS = {"hidden", "train_size"}
ALL_KEYS = NETWORK_KEYS | FIT_KEYS | SWEEP_KEYS
BACKENDS = ("local", "threads", "sequential", "dask", "ray")
# joblib's loky backend keeps idle workers this long (loky's own default: 10 s), so that the
# sweeps of a study reuse theirs rather than start and import new ones
IDLE_WORKER_SECONDS = 300
# loky restarts a worker whose memory grew this much past what it held after its first task,
# taking the growth for a leak (loky's own setting)
LOKY_LEAK_ALLOWANCE = int(3e8)
THREADSAFE_LAYERS = ("omp", "tbb")  # workqueue aborts when two threads launch parallel loops
DEFAULTS = {"hidden": (300,), "epochs": 10, "batch_size": 128, "seed": 0}


class SweepError(RuntimeError):
    """Trials that could not be run (their workers died twice)."""


# ---- the grid ----------------------------------------------------------------------------------
def expand(grid, base=None):
    """The list of trials (dicts of settings): the Cartesian product of ``grid`` over ``base``,
    every key checked before anything runs."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError("grid must be a non-empty dict mapping settings to lists of values")
    base = dict(base or {})
    for key in list(grid) + list(base):
        if key not in ALL_KEYS:
            raise ValueError(f"unknown grid key {key!r}: expected one of {sorted(ALL_KEYS)}")
    both = set(grid) & set(base)
    if both:
        raise ValueError(f"{sorted(both)} are both in grid and in base: put each in one")
    values = {}
    for key, options in grid.items():
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise ValueError(f"grid[{key!r}] must be a list of values, got {options!r}")
        values[key] = list(options)
        if not values[key]:
            raise ValueError(f"grid[{key!r}] is empty")
    keys = list(values)
    trials = []
    for combo in itertools.product(*(values[k] for k in keys)):
        trial = dict(DEFAULTS)
        trial.update(base)
        trial.update(zip(keys, combo))
        trial["hidden"] = _hidden(trial["hidden"])
        trials.append(trial)
    return trials


def _hidden(value):
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f"hidden must be a tuple of hidden layer sizes such as (300,), got {value!r}")


def trial_key(trial):
    """A stable identity of a trial's settings (what a rerun recognises)."""
    return json.dumps({k: _plain(v) for k, v in sorted(trial.items())}, sort_keys=True)


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if hasattr(value, "config") and hasattr(value, "name"):  # an optimizer object
        return {"name": value.name, **value.config()}
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__qualname__"):  # a function: its name, not its address
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if hasattr(value, "__dict__"):  # a schedule object: its class and settings
        return {"class": type(value).__name__, **{k: _plain(v) for k, v in vars(value).items()}}
    return repr(value)


def _split(trial):
    net = {k: v for k, v in trial.items() if k in NETWORK_KEYS}
    fit = {k: v for k, v in trial.items() if k in FIT_KEYS}
    return net, fit


def estimated_work(trial, n_features, n_classes, n_train):
    """A trial's FLOPs (``Network.flops`` times its epochs), to start the longest trials first.
    All trials of a sweep train on the same data, so its density (the zero-skipping path's
    share) scales them alike; batch size and optimizer are left out."""
    net = _network(trial, n_features, n_classes, initialise=False)
    return trial["epochs"] * net.flops(trial.get("train_size") or n_train)


def _network(trial, n_features, n_classes, initialise=True):
    from .network import Network
    net_args, _ = _split(trial)
    return Network([n_features, *trial["hidden"], n_classes], **net_args,
                   _initialise=initialise)


def fit_config(trial):
    """The trial's fit settings, checked (a :class:`fastmlp.fit_config.FitConfig`)."""
    from .fit_config import FitConfig
    return FitConfig(**_split(trial)[1], verbose=0)


def check_trials(trials, n_features, n_classes, n_train):
    """Build each trial's network and validate its fit settings (no training), so that a bad
    value is refused, naming its key, before any trial starts."""
    for trial in trials:
        size = trial.get("train_size")
        if size is not None and (isinstance(size, bool) or not isinstance(
                size, (int, np.integer)) or not 1 <= size <= n_train):
            raise ValueError(f"train_size must be an integer in [1, {n_train}], got {size!r}")
        try:
            _network(trial, n_features, n_classes, initialise=False)
            fit_config(trial).batch_size_for(size or n_train)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"trial {trial_key(trial)} is refused: {exc}") from None


# ---- one trial, in a worker ----------------------------------------------------------------------
_DATA_CACHE = {}


def _load(data, data_dir):
    if not isinstance(data, str):
        return data
    if data not in _DATA_CACHE:
        from .datasets import load_dataset
        name, splits = load_dataset(data, data_dir)
        _DATA_CACHE[data] = splits
    return _DATA_CACHE[data]


def run_trial(trial, data, data_dir=None, threads=1, key=None):
    """Train one trial and return its record: the settings plus test_loss, test_accuracy,
    train_seconds and history."""
    import numba
    (X, y), (Xt, yt) = _load(data, data_dir)
    if trial.get("train_size"):
        X, y = X[:trial["train_size"]], y[:trial["train_size"]]
    previous_threads = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        record = _train(trial, X, y, Xt, yt)
        record["key"] = key or record["key"]
        return record
    finally:
        numba.set_num_threads(previous_threads)


def _train(trial, X, y, Xt, yt):
    from threadpoolctl import threadpool_limits

    import numba

    from .training import fit
    n_classes = int(max(y.max(), yt.max())) + 1
    record = {k: _plain(v) for k, v in trial.items()}
    record["key"] = trial_key(trial)
    with threadpool_limits(numba.get_num_threads(), user_api="blas"):
        net = _network(trial, X.shape[1], n_classes)
        t0 = time.perf_counter()
        try:
            history = fit(net, X, y, fit_config(trial))
        except Exception as exc:  # a diverged trial is a result too, not the end of the sweep
            record.update(error=f"{type(exc).__name__}: {exc}", train_seconds=time.perf_counter()
                          - t0)
            return record
        seconds = time.perf_counter() - t0
        test = net.evaluate(Xt, yt)
    record.update(test_loss=test["loss"], test_accuracy=test["accuracy"], train_seconds=seconds,
                  history={k: [_finite(v) for v in vals]
                           for k, vals in history.history.items()})
    return record


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


# ---- results file --------------------------------------------------------------------------------
def read_records(path, damaged=None):
    """The records of a results file (JSONL). A line that is not a whole, valid record (the last
    line cut by a crash, a damaged byte) is left out: its trial runs again. ``damaged``: a list
    that gets the number of each line left out."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                record = None
            if _valid_record(record):
                records.append(record)
            elif line.strip() and damaged is not None:
                damaged.append(number)
    return records


def _valid_record(record):
    """A record as a trial writes it: a key naming the settings the record holds, and finite
    results (or the error that ended the trial)."""
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return False
    try:
        settings = json.loads(record["key"])
    except (ValueError, RecursionError):
        return False
    missing = object()
    if not isinstance(settings, dict) or any(record.get(k, missing) != v
                                             for k, v in settings.items()):
        return False
    if not is_finite_number(record.get("train_seconds")) or record["train_seconds"] < 0:
        return False
    if "error" in record:
        return isinstance(record["error"], str)
    accuracy, history = record.get("test_accuracy"), record.get("history")
    return (is_finite_number(accuracy) and 0 <= accuracy <= 1
            and is_finite_number(record.get("test_loss")) and isinstance(history, dict)
            and all(isinstance(values, list)
                    and all(v is None or is_finite_number(v) for v in values)
                    for values in history.values()))


def _drop_partial_line(path):
    """Cut what an interrupted write left after the last complete line, so that the next record
    starts a line of its own."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_csv(records, path):
    """A flat table of the records (no history), written atomically."""
    import csv
    import io

    from .serialization import atomic_write_bytes
    columns = []
    for r in records:
        columns += [k for k in r if k not in columns and k not in ("history", "key")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for r in records:
        writer.writerow({k: json.dumps(r[k]) if isinstance(r.get(k), (list, dict)) else r.get(k)
                         for k in columns})
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))


# ---- the sweep -------------------------------------------------------------------------------------
def _warm_cache(trials):
    """Compile (or load) the kernels once in this process before the workers start, so that
    they all load the cache instead of compiling it at the same time."""
    from .network import Network
    for dtype in sorted({t.get("dtype", "float32") for t in trials}):
        rng = np.random.default_rng(0)
        X = rng.random((64, 16)).astype(dtype)
        X[X < 0.8] = 0  # the zero-skipping path
        Network([16, 8, 3], seed=0, dtype=dtype).fit(X, np.arange(64) % 3, epochs=1,
                                                     batch_size=16, verbose=0)
        Network([16, 8, 3], seed=0, dtype=dtype).fit(X + 0.5, np.arange(64) % 3, epochs=1,
                                                     batch_size=16, verbose=0)


_WORKER_DATA = {}


def _init_worker():
    """Each worker imports the training code as it starts: while the parent still writes the
    data and warms the JIT cache."""
    from . import network  # noqa: F401 (numpy, numba, the kernels)


def _worker_data(folder):
    """The arrays the parent wrote to ``folder``, mapped copy-on-write (a read-only array is
    another type to Numba: a compilation of its own), once per worker."""
    if _WORKER_DATA.get("folder") != folder:
        _WORKER_DATA.update(folder=folder, payload=tuple(
            (np.load(Path(folder) / f"{split}-X.npy", mmap_mode="c"),
             np.load(Path(folder) / f"{split}-y.npy", mmap_mode="c"))
            for split in ("train", "test")))
        _allow_for_data(sum(a.nbytes for pair in _WORKER_DATA["payload"] for a in pair))
    return _WORKER_DATA["payload"]


def _allow_for_data(nbytes):
    """A worker's first task is the pool's start (``_start_local_pool``), so loky measures its
    memory before the trials read the data. The pages they read then count as the worker's
    (MNIST: 219 MB) and, with a wide network's buffers, passed loky's 300 MB: loky took that
    for a leak and restarted the worker, which booted and loaded the JIT cache again, once per
    sweep. So loky's allowance, a private setting of its own (were it renamed, only those
    restarts would come back), grows by the data this worker maps."""
    from joblib.externals.loky import process_executor
    process_executor._MAX_MEMORY_LEAK_SIZE = LOKY_LEAK_ALLOWANCE + nbytes


def _run_pickled(task):
    import cloudpickle
    trial, folder, data_dir, threads, key = cloudpickle.loads(task)
    return run_trial(trial, _worker_data(folder), data_dir, threads, key)


def _start_local_pool(n_jobs):
    """loky's process pool, as joblib's default backend uses it: the user's script is not
    re-imported, and the workers of an earlier sweep of as many jobs are reused (already
    imported, their JIT cache loaded) unless they died or sat idle for IDLE_WORKER_SECONDS.
    Its workers are started at once."""
    from joblib.externals.loky import get_reusable_executor
    pool = get_reusable_executor(max_workers=n_jobs, timeout=IDLE_WORKER_SECONDS,
                                 initializer=_init_worker, reuse="auto")
    for _ in range(n_jobs):  # loky starts a worker only for a task to run
        pool.submit(int)
    return pool


def _local_pool(trials, payload, data_dir, threads, n_jobs, pool=None):
    """Run ``trials`` on ``pool`` (or a new one). The arrays reach the workers as files they
    map (one copy in the page cache, shared), not pickled into each of them; each task is only
    its trial's settings. A worker that dies breaks the pool: every unfinished future fails with
    TerminatedWorkerError at once, and sweep() runs those trials again in a new pool."""
    import shutil
    import tempfile
    from concurrent.futures import as_completed

    import cloudpickle
    if pool is None:
        pool = _start_local_pool(n_jobs)
    folder = tempfile.mkdtemp(prefix="fastmlp-sweep-")
    try:
        for split, (X, y) in zip(("train", "test"), payload):
            np.save(Path(folder) / f"{split}-X.npy", np.ascontiguousarray(X))
            np.save(Path(folder) / f"{split}-y.npy", np.ascontiguousarray(y))
        futures = [pool.submit(_run_pickled, cloudpickle.dumps((t, folder, data_dir, threads,
                                                                trial_key(t))))
                   for t in trials]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_completed(backend, trials, payload, data_dir, threads, n_jobs, pool=None):
    """The records of ``trials`` in the order they finish (``pool``: the local backend's, if
    already started)."""
    from joblib import Parallel, delayed
    if backend == "local":
        return _local_pool(trials, payload, data_dir, threads, n_jobs, pool)
    if backend != "ray":
        return Parallel(return_as="generator_unordered")(
            delayed(run_trial)(t, payload, data_dir, threads, trial_key(t)) for t in trials)
    # Ray's joblib backend returns only whole lists: use Ray's own futures to stream records
    import ray
    # a dead worker surfaces here (WorkerCrashedError), to be reported and retried like the
    # other backends', rather than retried silently by Ray
    remote = ray.remote(num_cpus=threads, max_retries=0)(run_trial)
    shared = ray.put(payload)
    refs = [remote.remote(t, shared, data_dir, threads, trial_key(t)) for t in trials]

    def stream(refs):
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            yield ray.get(ready[0])
    return stream(refs)


@contextlib.contextmanager
def _threads_context(n_jobs, threads):
    """Trials on this process's threads: no worker to start, nothing to copy, the JIT cache
    already loaded. The compiled steps release the GIL; each trial's thread sets its own Numba
    thread count (Numba keeps it per thread), and BLAS, whose thread count is per process, is
    held at ``threads`` for the whole sweep."""
    import joblib
    import numba
    from threadpoolctl import threadpool_limits
    numba.get_num_threads()  # loads the threading layer, if nothing has run in parallel yet
    layer = numba.threading_layer()
    if layer not in THREADSAFE_LAYERS:
        raise ValueError(f"backend='threads' needs a thread-safe Numba threading layer "
                         f"({' or '.join(THREADSAFE_LAYERS)}); this Numba uses {layer!r}: use "
                         f"backend='local', or install tbb (pip install tbb)")
    with threadpool_limits(threads, user_api="blas"), \
            joblib.parallel_config(backend="threading", n_jobs=n_jobs):
        yield


def _backend_context(backend, n_jobs, scheduler, address, threads=1):
    import joblib
    if backend == "sequential":
        return joblib.parallel_config(backend="sequential")
    if backend == "local":
        return contextlib.nullcontext()  # a process pool of its own: see _local_pool
    if backend == "threads":
        return _threads_context(n_jobs, threads)
    if backend == "dask":
        try:
            from distributed import Client, get_client
        except ImportError:
            raise ImportError("backend='dask' needs dask.distributed: pip install "
                              "'fastmlp[dask]'") from None
        if scheduler is not None:
            Client(scheduler)
        else:
            try:
                get_client()
            except ValueError:
                raise ValueError("backend='dask' needs a dask.distributed Client: start one "
                                 "(Client() or Client(LocalCluster())) or pass scheduler="
                                 "ADDRESS") from None
        return joblib.parallel_config(backend="dask", n_jobs=n_jobs)
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        raise ImportError("backend='ray' needs Ray: pip install 'fastmlp[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto", log_to_driver=False)
        except ConnectionError:
            raise ValueError("backend='ray' found no running Ray instance: call ray.init() or "
                             "pass address=") from None
    register_ray()
    return joblib.parallel_config(backend="ray", n_jobs=n_jobs)  # Ray runs what is submitted


def sweep(grid, data="mnist", base=None, backend="local", n_jobs=2, out=None, scheduler=None,
          address=None, threads=1, retries=1, data_dir=None, log=None):
    """Run every trial of ``grid`` (over ``base``) and return their records, in grid order.

    ``backend``: "local" (a pool of loky processes), "threads" (this process's threads: no
    worker to start, best for short trials), "sequential", "dask" or "ray".
    ``data``: a dataset name ("mnist", "fashion-mnist", "digits") loaded in each worker, or
    ``((X, y), (X_test, y_test))``. ``out``: a JSONL results file, appended to as trials finish
    and read back by a rerun to skip the trials already done. ``threads``: Numba and BLAS
    threads per worker (one, unless asked). ``retries``: how many times trials whose worker
    died are run again.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1, got {n_jobs!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    trials = expand(grid, base)
    (X, y), (Xt, yt) = _load(data, data_dir)
    sizes = (X.shape[1], int(max(y.max(), yt.max())) + 1, X.shape[0])  # features, classes, images
    check_trials(trials, *sizes)
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if out:
        _drop_partial_line(out)
    damaged = []
    done = {r["key"]: r for r in read_records(out, damaged)} if out else {}
    if damaged:
        log(f"sweep: {out} lines {', '.join(map(str, damaged))} are not valid records; their "
            f"trials run again")
    # the longest trials first (a stable sort: equals in grid order), so that no worker is left
    # alone with a long one at the end while the other idles
    pending = sorted((t for t in trials if trial_key(t) not in done),
                     key=lambda t: -estimated_work(t, *sizes))
    if done:
        log(f"sweep: {len(trials) - len(pending)} of {len(trials)} trials already in {out}")
    # the local pool's workers start (and import) while this process warms the JIT cache
    pool = _start_local_pool(n_jobs) if backend == "local" and pending else None
    if pending:
        _warm_cache(pending)
    # local workers map the arrays loaded here; remote ones load a named dataset themselves
    payload = data if isinstance(data, str) and backend != "local" else ((X, y), (Xt, yt))
    attempts = 0
    while pending:
        try:
            with _backend_context(backend, n_jobs, scheduler, address, threads):
                results = _as_completed(backend, pending, payload, data_dir, threads, n_jobs,
                                        pool)
                pool = None  # a retry starts a pool of its own
                for record in results:
                    done[record["key"]] = record
                    if out:
                        try:
                            _append(out, record)
                        except OSError as exc:
                            raise SweepError(
                                f"{out}: the record of a finished trial could not be written "
                                f"({exc}); the records written before it are kept: run the "
                                f"sweep again to go on from there") from exc
                    log(f"sweep: {len(done)}/{len(trials)} "
                        + (f"test accuracy {record['test_accuracy']:.4f}"
                           if "test_accuracy" in record else f"failed: {record['error']}"))
            pending = [t for t in pending if trial_key(t) not in done]
        except Exception as exc:
            if not _worker_died(exc):
                raise
            pending = [t for t in pending if trial_key(t) not in done]
            attempts += 1
            if attempts > retries:
                raise SweepError(f"{len(pending)} trials could not be run: their worker died "
                                 f"{attempts} times ({type(exc).__name__})") from exc
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log(f"sweep: a worker failed ({type(exc).__name__}: {reason}); running the "
                f"{len(pending)} unfinished trials again")
    return [done[trial_key(t)] for t in trials]


# how loky, concurrent.futures, dask and ray say that a worker process died
_DEATHS = ("TerminatedWorkerError", "BrokenProcessPool", "KilledWorker", "WorkerCrashedError",
           "RayActorError", "ActorDiedError", "NodeDiedError", "RaySystemError",
           "CommClosedError")


def _worker_died(exc):
    while exc is not None:
        if any(c.__name__ in _DEATHS for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _value(value):
    return tuple(value) if isinstance(value, list) else value


def summarize(records, by, group=()):
    """{value of ``by``: (mean, std, n)} of test_accuracy over the records (seeds averaged).
    With ``group`` (other varied keys), {(value of each group key..., value of by): ...}: the
    records of different widths, sizes or optimizers are never averaged together."""
    keys = (*group, by)
    groups = {}
    for r in records:
        if "test_accuracy" in r:
            groups.setdefault(json.dumps([r.get(k) for k in keys]), []).append(r["test_accuracy"])

    def key(text):
        values = tuple(_value(v) for v in json.loads(text))
        return values if group else values[0]

    return {key(k): (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def _label(value):
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _sort_key(value):
    if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
        return (0, sum(value), "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def plot(records, by, path, log_x=False, title=None, group=()):
    """Test accuracy against ``by`` (width, training-set size, ...) with error bars over seeds;
    one line per value of the ``group`` keys (the other settings the sweep varied)."""
    from .plotting import _pyplot, _save
    plt = _pyplot()
    stats = summarize(records, by, group)
    series = {}
    for k in stats:
        series.setdefault(k[:-1] if group else (), []).append(k)
    x_values = sorted({k[-1] if group else k for k in stats}, key=_sort_key)
    numeric = all(_sort_key(v)[0] == 0 for v in x_values)
    position = {v: (sum(v) if isinstance(v, tuple) else v) if numeric else i
                for i, v in enumerate(x_values)}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted(series, key=lambda g: [_sort_key(v) for v in g]):
        keys = sorted(series[name], key=lambda k: _sort_key(k[-1] if group else k))
        xs = [position[k[-1] if group else k] for k in keys]
        label = ", ".join(f"{g} {_label(v)}" for g, v in zip(group, name)) or None
        ax.errorbar(xs, [100 * stats[k][0] for k in keys], yerr=[100 * stats[k][1] for k in keys],
                    fmt="o-", capsize=4, label=label)
    ax.set_xlabel(by + (" (log scale)" if log_x else ""))
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks([position[v] for v in x_values])
    ax.set_xticklabels([_label(v) for v in x_values])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)
