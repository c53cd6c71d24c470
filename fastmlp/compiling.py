"""Which compiled code a call runs, and compiling it ahead: the zero-skipping first layer and
the threaded dense layers for given data and batch size, BLAS's threads beside Numba's (and the
thread tuner that chooses Numba's), and ``compile_ahead``, which compiles before a fit or a
predict and says so whenever the code is not in Numba's disk cache."""
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls: loaded before it is limited)
from threadpoolctl import ThreadpoolController

from . import kernels as K

# Fraction of nonzero inputs under which the first layer skips zeros. Measured on 2 cores with
# 784-300-10: skipping zeros wins below ~30 % nonzero (MNIST: 19 %) and loses above, at batch
# 64 and at 256 alike (Fashion-MNIST, ~50 % nonzero, takes the dense sgemm path).
SPARSE_INPUT_DENSITY = 0.3
# While the zero-skipping layer runs on Numba's threads, BLAS gets one thread for the layers
# above it. From this many rows a minibatch's products use two BLAS threads well, and when those
# layers hold at least DENSE_REST_SHARE of the first layer's weights the dense path wins.
# Measured on 2 cores, MNIST, seconds per 30,000 images (zero-skipping / dense): 784-800-800-10
# batch 128 2.57 / 1.98, batch 256 2.40-2.55 / 1.71-1.81; 784-1024-1024-10 batch 128 4.37 /
# 3.13, batch 256 3.56-3.90 / 2.65-3.71; 784-500-300-10 (0.38 of the first layer) batch 256
# 0.80 / 0.67-0.77; 784-800-10 and 784-1024-10 at 256: zero-skipping ahead by 1.2-1.6x.
BLAS_BATCH_ROWS = 128
DENSE_REST_SHARE = 0.5
# Up to this many rows the large dense layers always run on Numba's threads (a step there is
# ~3x faster than BLAS's: their code repays itself at once); above it a dense first layer on
# mostly-zero inputs is timed both ways (below).
SMALL_BATCH_ROWS = 16
# Minibatches of at most this many rows run the large dense layers on Numba's threads, each
# thread a block of W's rows from step to step (kernels/dense.py: its share of the forward by
# BLAS on one thread, the gradient folded into the update), so that each core keeps its rows of
# W and their optimizer state in its own cache; larger minibatches run them as BLAS's sgemm on
# BLAS's threads. Measured on 2 cores (Intel Xeon, AVX-512), 784-300-10, SGD, µs a step: the
# threads are ahead up to 1024 rows (there 3467-3626 against BLAS's 3858-4131 on Fashion-MNIST)
# and level at 2048 and 4096; the history in bench/NOTES.md. That code costs a cold first fit
# 3-4 s more (784-300-10 at batch 64: 13.2 s against 10.5), so above SMALL_BATCH_ROWS a fit
# takes it where it is compiled already or the fit is long enough to repay compiling it
# (worth_weighing).
THREADED_BATCH_ROWS = 1024
SPARSE_EVAL_BATCH = 512  # rows per inference call of the zero-skipping first layer (its scratch)
NO_THREADED_DENSE = 1 << 62
def uses_sparse_input(net, X, batch_size, density=None):
    """Whether the Numba path runs the first layer, if it is dense, on X's nonzeros (Numba's
    threads), for minibatches of ``batch_size`` rows, by rule (a fit measures instead where
    ``weighs_first_layer_paths``). ``density``: X's, if known."""
    first = next(layer for layer in net.layers if layer.has_params)
    if net.backend != "numba" or first.kind != "dense":
        return False
    if batch_size >= BLAS_BATCH_ROWS:
        weights = [W.size for W in net._stored_weights()]
        if sum(weights[1:]) >= DENSE_REST_SHARE * weights[0]:
            return False
    return bool((input_density(X) if density is None else density) < SPARSE_INPUT_DENSITY)


def input_density(X):
    """The share of X's entries that are nonzero."""
    return np.count_nonzero(X) / max(X.size, 1)


# ---- the first layer's path, measured on the machine ---------------------------------------
# Above SMALL_BATCH_ROWS, a dense first layer on mostly-zero inputs can run either way: skipping
# zeros on Numba's threads, or as BLAS's sgemm on the gathered minibatch. Which is faster depends
# on the CPU: 784-300-10 on MNIST, seconds per 20,000 images (zero-skipping / BLAS), Intel Xeon
# with AVX-512 batch 128 0.27 / 0.18-0.20, batch 256 0.153-0.179 / 0.143; on AMD Zen 3
# zero-skipping won at 64 and 256, for 784-800-10 and 784-1024-10 at 256 by 1.2-1.6x. So the
# first fit of a configuration on a machine that is long enough to repay compiling the
# zero-skipping code (``worth_weighing``) times both (one compiled step runs either), takes the
# faster and records it in the user cache folder; later fits on the machine read it, so only the
# fit that timed them depends on timings of its own run.
FIRST_LAYER_ENV = "FASTMLP_FIRST_LAYER"  # "sparse" or "dense": that path, nothing measured
FIRST_LAYER_PATHS = "first-layer-paths.json"
PATH_PROBE_ROWS = 2048  # rows per timed run of each path (at least one minibatch)
PATH_PROBE_ROUNDS = 3  # timed runs of each path, after one untimed; the fastest counts


# Timing the two paths needs the zero-skipping code compiled: about 4 s more of a cold first fit
# of 784-300-10 on the 2-core Xeon (9.2 s against 5.3). A path 1.2-1.6x faster repays that only
# over a fit of some 15 s or more: 3e12 FLOPs at the ~200 GFLOP/s of that network's BLAS path at
# batch 256 there (784-300-10 on MNIST: 50 epochs; 784-800-10: 20). A shorter fit with nothing
# recorded runs BLAS's path and times nothing, unless the zero-skipping code is compiled already.
PATH_WEIGH_MIN_FLOPS = 3e12


def worth_weighing(net, fit_samples):
    """Whether a fit on ``fit_samples`` samples (epochs x rows; None: unknown, as in a warm-up)
    is long enough to repay compiling the zero-skipping code to time it."""
    return fit_samples is None or net.flops(fit_samples) >= PATH_WEIGH_MIN_FLOPS


def weighs_first_layer_paths(net, batch_size, density):
    """Whether the first layer's path is chosen by a measurement (see above) rather than by
    ``uses_sparse_input``'s rule."""
    first = next(layer for layer in net.layers if layer.has_params)
    return (net.backend == "numba" and first.kind == "dense" and batch_size > SMALL_BATCH_ROWS
            and density < SPARSE_INPUT_DENSITY)


def forced_first_layer_path():
    """The path FASTMLP_FIRST_LAYER names ("sparse" or "dense"), or None."""
    value = os.environ.get(FIRST_LAYER_ENV, "").strip().lower()
    if value and value not in ("sparse", "dense"):
        raise ValueError(f"{FIRST_LAYER_ENV} must be 'sparse' or 'dense', got {value!r}")
    return value or None


def cpu_name():
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def first_layer_path_key(net, batch_size, density, optimizer_name, dense_on_threads):
    """What the recorded choice depends on: the CPU and threads, the dtype, the batch size, the
    layers' weight shapes, the inputs' density (to 0.05), the optimizer and whether the dense
    path runs its large layers on Numba's threads or BLAS's (THREADED_BATCH_ROWS)."""
    shapes = ",".join("x".join(map(str, W.shape)) for W in net._stored_weights())
    dense = "Numba's threads" if dense_on_threads else "BLAS"
    return (f"{cpu_name()}|threads {numba.get_num_threads()}|{net.dtype.name}|batch "
            f"{batch_size}|{shapes}|density {round(density * 20) / 20:.2f}|{optimizer_name}|"
            f"dense on {dense}")


def recorded_first_layer_path(key):
    entry = _read_record(FIRST_LAYER_PATHS).get(key)
    path = entry.get("path") if isinstance(entry, dict) else None
    return path if path in ("sparse", "dense") else None


def record_first_layer_path(key, path, seconds):
    _write_record(FIRST_LAYER_PATHS, key, {"path": path, "seconds": seconds})


def kernel_input(X):
    """X as the compiled kernels take it: X itself when writeable; else (a read-only array, a
    memory map opened with mode "r") a writeable alias of the same memory, without a copy.
    Numba types read-only arrays apart, so X as it is would compile a second copy of every
    kernel; the kernels never write their input, so the alias is only ever read. It holds X,
    so the memory outlives it."""
    if X.flags.writeable or X.size == 0:
        return X
    import ctypes
    memory = (ctypes.c_char * X.nbytes).from_address(X.ctypes.data)
    memory._keep = X  # the alias keeps the mapping alive
    alias = np.frombuffer(memory, dtype=X.dtype).reshape(X.shape)
    assert alias.flags.c_contiguous and alias.ctypes.data == X.ctypes.data
    return alias


_BLAS_LIBRARIES = []


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded (NumPy's and SciPy's, which
    Numba calls), found once: finding them costs ~0.6 ms, setting their threads ~2 us."""
    if not _BLAS_LIBRARIES:
        controller = ThreadpoolController().select(user_api="blas")
        _BLAS_LIBRARIES.extend(controller.lib_controllers or [None])
    return [lib for lib in _BLAS_LIBRARIES if lib is not None]


@contextmanager
def _blas_threads(count):
    libraries = _blas_libraries()
    before = [lib.num_threads for lib in libraries]
    try:
        for lib in libraries:
            lib.set_num_threads(count)
        yield
    finally:
        for lib, threads in zip(libraries, before):
            lib.set_num_threads(threads)


def one_blas_thread(active=True):
    """While Numba's threads work, BLAS gets one thread: BLAS threads spinning beside them
    (OpenBLAS spins ~0.1 s after each call) would starve both on a small machine."""
    return _blas_threads(1) if active else nullcontext()


def _in_disk_cache(dispatcher, sig):
    """Whether Numba's disk cache holds ``dispatcher`` compiled for ``sig`` on this machine."""
    try:
        index = dispatcher._cache._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
    except Exception:  # Numba's internals moved: assume a compile, which only adds a message
        return False
    return any(key[0] == sig and key[1] == magic for key in index)


def _record_path(name):
    from .datasets import default_cache_dir
    return default_cache_dir() / name


def _read_record(name):
    """The JSON object kept in the user cache folder under ``name``; {} if none or unreadable."""
    import json
    try:
        with open(_record_path(name)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(name, key, value):
    """Set ``key`` in that object, replacing the file whole (a reader never sees half of it)."""
    import json
    record = _read_record(name)
    record[key] = value
    path = _record_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder costs the record, never the fit


COMPILE_TIMES = "compile-times.json"


def _compile_times():
    return _read_record(COMPILE_TIMES)


def _record_compile_time(what, seconds):
    """Remember how long compiling ``what`` took here, for the next message's estimate."""
    _write_record(COMPILE_TIMES, what, round(seconds, 1))


def _signature(dispatcher, args):
    """The Numba types of ``args`` as ``dispatcher`` would compile for them, or None."""
    try:
        return tuple(dispatcher.typeof_pyval(a) for a in args)
    except Exception:
        return None  # the call itself will say what is wrong with its arguments


def _how_long(what):
    last = _compile_times().get(what)
    if not isinstance(last, (int, float)):
        return "up to a minute on 2 cores"
    if last < 1:
        return "under a second last time on this machine"
    return f"{last:.0f} s last time on this machine"


def step_ready(dispatcher, args, in_process=True, on_disk=True):
    """Whether ``dispatcher`` for ``args`` is compiled in this process (``in_process``) or in
    the disk cache (``on_disk``)."""
    sig = _signature(dispatcher, args)
    return sig is not None and ((in_process and sig in dispatcher.overloads)
                                or (on_disk and _in_disk_cache(dispatcher, sig)))


def compile_ahead(dispatcher, args, what, verbose=True, beside=None):
    """Compile ``dispatcher`` for ``args`` (or load it from Numba's disk cache) before they run,
    so that compiling is never counted as training. When it is not cached, say so on stderr
    first, with how long it took on this machine last time. ``beside``: a
    :class:`CompileBeside` that may have compiled it already on another core. Returns the
    seconds it spent compiling (or waiting for the other core), 0.0 when the code was already
    compiled or cached."""
    sig = _signature(dispatcher, args)
    if sig is None or sig in dispatcher.overloads:
        return 0.0
    cached = _in_disk_cache(dispatcher, sig)
    if not cached and beside is not None:
        t0 = time.perf_counter()
        if beside.take(dispatcher, sig):
            return time.perf_counter() - t0
    if not cached and verbose:
        print(f"Compiling {what} ({_how_long(what)}; kept in the disk cache for later runs) ...",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # a configuration whose parallel loops were all left out (every feature that runs on
        # Numba's threads is None) is not a problem to report to the user
        warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning,
                                message="(?s).*parallel=True")
        dispatcher.compile(sig)
    seconds = time.perf_counter() - t0
    if cached:
        return 0.0
    _record_compile_time(what, seconds)
    return seconds


# ---- compiling beside: a second core compiles what runs later ---------------------------------
# A cold fit compiles its training step, then inference (predict and evaluate's code): one
# after the other, on one core (Numba compiles in the calling thread, holding the GIL). So while
# this process compiles the step, a child process compiles inference on another core. The child
# writes a cache folder of its own (two processes writing one folder could race on Numba's index
# files), from which this process loads the compiled code into its dispatchers and saves it in
# its own cache folder: each folder has one writer.
COMPILE_BESIDE_ENV = "FASTMLP_COMPILE_BESIDE"  # "0": compile everything in this process
_CHILD = "from fastmlp.compiling import compile_jobs_from_stdin; compile_jobs_from_stdin()"


class CompileBeside:
    """Compiles ``jobs`` [(dispatcher, args, what)] in a child process, started at once, unless
    they are compiled or cached already, the machine or Numba has one thread, or
    FASTMLP_COMPILE_BESIDE=0. ``take(dispatcher, sig)`` waits for the child and loads its
    result; ``close()`` stops the child if it still runs and removes its folder."""

    def __init__(self, jobs, verbose=True):
        import pickle
        import subprocess
        import tempfile
        self.sigs, self.process, self.folder = set(), None, None
        if (os.environ.get(COMPILE_BESIDE_ENV, "").strip() == "0"
                or (os.cpu_count() or 1) < 2 or numba.get_num_threads() < 2):
            return
        todo, whats = [], {}
        for dispatcher, args, what in jobs:
            sig = _signature(dispatcher, args)
            if sig is None or sig in dispatcher.overloads or _in_disk_cache(dispatcher, sig):
                continue
            todo.append((dispatcher.py_func.__module__, dispatcher.py_func.__qualname__, sig))
            self.sigs.add((dispatcher.py_func, sig))
            whats.setdefault(what, _how_long(what))
        if not todo:
            return
        if verbose:
            print(f"Compiling {' and '.join(whats)} on another core meanwhile "
                  f"({'; '.join(whats.values())}) ...", file=sys.stderr, flush=True)
        try:
            payload = pickle.dumps(todo)
            self.folder = tempfile.mkdtemp(prefix="fastmlp-compile-")
            env = dict(os.environ, NUMBA_CACHE_DIR=self.folder)
            self.process = subprocess.Popen([sys.executable, "-c", _CHILD], env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            self.process.stdin.write(payload)
            self.process.stdin.close()
        except Exception:  # no child: this process compiles it all, as without one
            self.close()

    def wait(self):
        """Wait for the child to finish; returns the seconds waited."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        t0 = time.perf_counter()
        self.process.wait()
        return time.perf_counter() - t0

    def take(self, dispatcher, sig):
        """Load ``dispatcher`` compiled for ``sig`` by the child (waiting for it to finish)
        into this process and its disk cache; False when the child did not compile it."""
        if self.process is None or (dispatcher.py_func, sig) not in self.sigs:
            return False
        self.wait()
        if self.process.returncode != 0:
            return False
        try:
            from numba.core.caching import FunctionCache
            from numba.core.compiler_lock import global_compiler_lock
            with global_compiler_lock:  # no compile in another thread sees the child's folder
                before = numba.config.CACHE_DIR
                numba.config.CACHE_DIR = self.folder
                try:
                    theirs = FunctionCache(dispatcher.py_func)
                finally:
                    numba.config.CACHE_DIR = before
            key = theirs._index_key(sig, dispatcher.targetctx.codegen())
            data = theirs._cache_file.load(key)
            if data is None:
                return False
            # the entry as the child wrote it, into this process's cache folder, from which
            # Numba loads it as any cached code
            dispatcher._cache._cache_file.save(key, data)
        except Exception:  # Numba's internals moved, or the folder is read-only: compile here
            return False
        if not _in_disk_cache(dispatcher, sig):
            return False
        dispatcher.compile(sig)
        return True

    def close(self):
        import shutil
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.process, self.folder = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def compile_jobs_from_stdin():
    """The child of :class:`CompileBeside`: compile each pickled (module, name, signature)."""
    import importlib
    import pickle
    jobs = pickle.loads(sys.stdin.buffer.read())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning)
        for module, name, sig in jobs:
            dispatcher = importlib.import_module(module)
            for part in name.split("."):
                dispatcher = getattr(dispatcher, part)
            dispatcher.compile(sig)


class ThreadTuner:
    """Chooses, while a fit runs, whether the compiled step uses all of Numba's threads or one.

    On a VM two vCPUs can share one physical core for seconds at a time, and another program may
    take one of them. Measured on the 2-core Zen 3 VM: the same independent per-thread work took
    0.8–1.1× its one-thread time on two threads in some phases and 1.4–1.8× in others, phases
    lasting seconds; a Fashion-MNIST batch-10 epoch took 1.8 s or 4.2 s on two threads (2.3 s
    on one).

    So the steps run in segments of about ``SEGMENT_SECONDS``, and now and then a shorter one
    (``PROBE_SHARE``) runs on the other thread count; the faster count is kept. A probe that loses
    doubles the wait for the next one (``PROBE_EVERY``: from 8 to 64 segments); a switch resets
    it. Results do not depend on the choice: the work is split into the workspace's blocks, made
    once per fit, whichever threads run them. (BLAS's own threads are left alone: OpenBLAS's
    sums differ in the last bits between one thread and two, and a fit must not depend on
    timing.)
    """
    SEGMENT_SECONDS = 0.05
    PROBE_EVERY = (8, 64)
    PROBE_SHARE = 0.25  # a probe's length, as a share of a segment's
    SHORTEST_MEASURE = 0.004  # seconds: a shorter segment only sizes the next one
    SWITCH_BELOW = 0.9  # switch when the other count's time per step is under this share of ours

    def __init__(self, active=True):
        self.full = numba.get_num_threads()
        self.active = active and self.full > 1
        self.counts = (self.full, 1)
        self.current = 0  # index into counts
        self.seconds_per_step = [None, None]
        self.segments = 0  # since the last probe
        self.probe_every = self.PROBE_EVERY[0]
        self.segment_steps = 4
        self.warm = False  # the first segment (compilation, cold caches) is not measured
        self.last_current = None  # the last segment's seconds per step on the current count
        self.switches = 0

    def begin_fit(self):
        """Go on in a new fit of the same kind (a Keras-style loop of ``fit`` calls, or
        ``partial_fit``) from what the last one learnt: its thread count, its measurements and
        how long to wait before the next probe. Only the new fit's first segment, which warms
        the caches, is not measured."""
        self.warm = False
        self.last_current = None

    def next_choice(self):
        """Index into ``counts`` of the thread count the next segment runs on."""
        other = 1 - self.current
        if not self.warm or self.seconds_per_step[self.current] is None:
            return self.current
        if self.seconds_per_step[other] is None or self.segments >= self.probe_every:
            return other
        return self.current

    def run(self, steps, begin, end):
        """``steps(begin, end)`` -> (loss sum, correct, seen), over [begin, end) in segments."""
        if not self.active:
            return steps(begin, end)
        loss_sum, correct, seen = 0.0, 0, 0
        try:
            while begin < end:
                choice = self.next_choice()
                probe_share = 1 if choice == self.current else self.PROBE_SHARE
                stop = min(begin + max(1, int(self.segment_steps * probe_share)), end)
                numba.set_num_threads(self.counts[choice])
                t0 = time.perf_counter()
                ls, c, s = steps(begin, stop)
                seconds = time.perf_counter() - t0
                loss_sum, correct, seen = loss_sum + ls, correct + c, seen + s
                if not math.isfinite(ls):
                    break
                self.record(choice, seconds, stop - begin)
                begin = stop
        finally:
            numba.set_num_threads(self.full)
        return loss_sum, correct, seen

    def record(self, choice, seconds, steps):
        """A segment of ``steps`` steps took ``seconds`` on ``counts[choice]`` threads."""
        per_step = seconds / steps
        self.segment_steps = max(1, min(4096, int(self.SEGMENT_SECONDS / max(per_step, 1e-9))))
        if not self.warm:
            self.warm = True
            return
        if seconds < self.SHORTEST_MEASURE:  # too short to judge by (the first ones of a fit)
            return
        probed = choice != self.current
        if probed:
            self.seconds_per_step[choice] = per_step
        else:  # the better of its last two: one segment slowed by a blip does not switch
            last = self.last_current
            self.seconds_per_step[choice] = per_step if last is None else min(per_step, last)
            self.last_current = per_step
        self.segments = 0 if probed else self.segments + 1
        other, mine = self.seconds_per_step[1 - self.current], self.seconds_per_step[self.current]
        if other is not None and mine is not None and other < self.SWITCH_BELOW * mine:
            self.current = 1 - self.current
            self.switches += 1
            self.probe_every = self.PROBE_EVERY[0]
            self.last_current = None
        elif probed:
            self.probe_every = min(2 * self.probe_every, self.PROBE_EVERY[1])


FEATURE_NAMES = ("image layers", "zero-skipping first layer", "dropout", "threaded dense layers",
                 "sample weights or max-norm", "batch normalization or activation layers",
                 "augmentation")
FORWARD_FEATURE_NAMES = tuple(FEATURE_NAMES[i] for i in (0, 1, 5))  # forward_codes' order


def step_description(plan, dtype, what="the training step", params=None, optimizer=None):
    """What a compiled step is specialised for, in words (the key of its compile time):
    its features, and the optimizer whose update it holds (``optimizer``, a name)."""
    codes = K.step_codes(params, plan) if params is not None else K.forward_codes(plan)
    names = FEATURE_NAMES if params is not None else FORWARD_FEATURE_NAMES
    used = [name for name, code in zip(names, codes) if code is not None]
    by = f", {optimizer}" if optimizer else ""
    return (f"{what} for dense layers{''.join(', ' + u for u in used)}{by} "
            f"({np.dtype(dtype).name})")
