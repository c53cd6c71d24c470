"""The training loop: everything one fit needs is made once, then epochs run in chunks of
steps inside the compiled ``train_steps`` (or its NumPy twin)."""
import math
import os
import sys
import time
from contextlib import nullcontext

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls: loaded before it is limited)
from threadpoolctl import threadpool_limits

from . import kernels as K
from .errors import TrainingDivergedError

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
# Minibatches of at most this many rows run the large dense layers on Numba's threads with
# kernels of their own (kernels/dense.py); larger ones are BLAS's, on its own threads.
# Measured on 2 cores, Fashion-MNIST 784-300-10, seconds per epoch (threads / BLAS): batch 10
# 1.7-1.8 / 2.2-2.5, batch 16 a tie, batch 24-64 BLAS ahead by 10-30 %.
SMALL_BATCH_ROWS = 16
NO_THREADED_DENSE = 1 << 62
# A chunk of steps whose mean loss exceeds this many times ln(classes) (a uniform guess's
# cross-entropy, where a fit starts) has diverged, as a NaN loss has: three orders of magnitude.
LOSS_GROWTH_LIMIT = 1000.0


def uses_sparse_input(net, X, batch_size):
    """Whether the Numba path runs the first layer, if it is dense, on X's nonzeros (Numba's
    threads), for minibatches of ``batch_size`` rows."""
    first = next(layer for layer in net.layers if layer.has_params)
    if net.backend != "numba" or first.kind != "dense":
        return False
    if batch_size >= BLAS_BATCH_ROWS:
        weights = [W.size for W in net.weights]
        if sum(weights[1:]) >= DENSE_REST_SHARE * weights[0]:
            return False
    return bool(np.count_nonzero(X) < SPARSE_INPUT_DENSITY * X.size)


def one_blas_thread(active=True):
    """While Numba's threads work, BLAS gets one thread: BLAS threads spinning beside them
    (OpenBLAS spins ~0.1 s after each call) would starve both on a small machine."""
    return threadpool_limits(1, user_api="blas") if active else nullcontext()


def _in_disk_cache(dispatcher, sig):
    """Whether Numba's disk cache holds ``dispatcher`` compiled for ``sig`` on this machine."""
    try:
        index = dispatcher._cache._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
    except Exception:  # Numba's internals moved: assume a compile, which only adds a message
        return False
    return any(key[0] == sig and key[1] == magic for key in index)


def _compile_times_path():
    from .datasets import default_cache_dir
    return default_cache_dir() / "compile-times.json"


def _compile_times():
    import json
    try:
        with open(_compile_times_path()) as f:
            times = json.load(f)
        return times if isinstance(times, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_compile_time(what, seconds):
    """Remember how long compiling ``what`` took here, for the next message's estimate."""
    import json
    times = _compile_times()
    times[what] = round(seconds, 1)
    path = _compile_times_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(times, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder costs the estimate, never the fit


def compile_ahead(dispatcher, args, what, verbose=True):
    """Compile ``dispatcher`` for ``args`` (or load it from Numba's disk cache) before they run,
    so that compiling is never counted as training. When it is not cached, say so on stderr
    first, with how long it took on this machine last time. Returns the seconds it spent
    compiling, 0.0 when the code was already compiled or cached."""
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    except Exception:
        return 0.0  # the call itself will say what is wrong with its arguments
    if sig in dispatcher.overloads:
        return 0.0
    cached = _in_disk_cache(dispatcher, sig)
    if not cached and verbose:
        last = _compile_times().get(what)
        if not isinstance(last, (int, float)):
            how_long = "up to a minute on 2 cores"
        elif last < 1:
            how_long = "under a second last time on this machine"
        else:
            how_long = f"{last:.0f} s last time on this machine"
        print(f"Compiling {what} ({how_long}; kept in the disk cache for later runs) ...",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    dispatcher.compile(sig)
    seconds = time.perf_counter() - t0
    if cached:
        return 0.0
    _record_compile_time(what, seconds)
    return seconds


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
                 "sample weights or max-norm")


def step_description(plan, dtype, what="the training step", params=None):
    """What a compiled step is specialised for, in words (the key of its compile time)."""
    codes = K.step_codes(params, plan) if params is not None else K.forward_codes(plan)
    used = [name for name, code in zip(FEATURE_NAMES, codes) if code]
    return f"{what} for dense layers{''.join(', ' + u for u in used)} ({np.dtype(dtype).name})"


class Trainer:
    """Parameters, optimizer state, the layer table and every buffer of one fit.

    ``run_epoch`` runs the steps of one epoch in chunks; between chunks it keeps a copy of the
    parameters and optimizer state so that a non-finite loss can be rolled back to the last
    finite state, and it asks ``should_stop`` whether to return early (Ctrl-C) at a step
    boundary.
    """

    def __init__(self, net, X, y, batch_size, optimizer, shuffle=True, chunks_per_epoch=8,
                 sample_weight=None, augment=None):
        self.net, self.X, self.y = net, X, y
        self.batch_size, self.shuffle = batch_size, shuffle
        self.n = X.shape[0]
        self.steps = -(-self.n // batch_size)
        self.chunk = max(1, -(-self.steps // chunks_per_epoch))
        self.optimizer = optimizer
        self.sparse = uses_sparse_input(net, X, batch_size)
        # Numba's threads run the zero-skipping layer, the large dense layers, dropout...:
        # BLAS then gets one thread
        self.params = net._params()
        self.plan = net._plan(optimizer.code, self.sparse, sample_weight, augment,
                              K.THREADED_MIN_WEIGHTS if batch_size <= SMALL_BATCH_ROWS
                              else NO_THREADED_DENSE)
        numba_threads = net.backend == "numba" and K.layers_use_threads(self.params, self.plan)
        self.limit_blas = numba_threads
        self.state = K.make_state(self.params, optimizer.code, optimizer.hyper(), net.dtype)
        self.ws = K.make_workspace(self.params, self.plan, net.n_features, batch_size, net.dtype)
        self.train_steps = K.train_steps if net.backend == "numba" else K.train_steps_ref
        self.codes = K.step_codes(self.params, self.plan)
        self.thread_tuner = ThreadTuner(active=numba_threads)
        self._saved = None
        # a chunk's mean loss above this is divergence, as NaN is
        self.loss_limit = LOSS_GROWTH_LIMIT * max(1.0, math.log(net.n_classes))

    def slot_arrays(self):
        """{slot name: (per-layer W states, per-layer b states)} of the optimizer in use."""
        s = self.state
        slots = {}
        for i, name in enumerate(self.optimizer.slots):
            slots[name] = (s.s1W, s.s1b) if i == 0 else (s.s2W, s.s2b)
        return slots

    def _live(self):
        """What a rollback restores: the parameters and the state slots the optimizer uses."""
        state = sum((sW + sb for sW, sb in self.slot_arrays().values()), ())
        return self.params.W + self.params.b + state + (self.state.t,)

    def compile(self, verbose=True):
        """Compile the training step for this fit ahead of its first epoch (Numba backend);
        returns the seconds spent compiling (0.0 when cached)."""
        if self.net.backend != "numba":
            return 0.0
        order = np.zeros(self.n, np.int64)
        args = (self.X, self.y, order, self.batch_size, 0, 0, 0, self.params, self.state,
                self.ws, self.plan, *self.codes)
        return compile_ahead(K.train_steps, args,
                             step_description(self.plan, self.net.dtype, params=self.params),
                             verbose)

    def gradients(self, epoch):
        """Each layer's weight gradient at the current weights on ``epoch``'s last minibatch:
        one step of the NumPy twin (SGD, momentum 0, lr 0: the velocity is the gradient) on
        copies. The fast step never stores the zero-skipping first layer's gradient."""
        dtype = self.net.dtype
        order = self.net.epoch_order(epoch, self.n, self.shuffle)
        params = K.Params(tuple(w.copy() for w in self.params.W),
                          tuple(b.copy() for b in self.params.b))
        state = K.make_state(params, 0, (0.0,) * 7, dtype)
        plan = self.plan._replace(optimizer=0, sparse_layer=-1,
                                  max_norm=np.zeros_like(self.plan.max_norm))
        ws = K.make_workspace(params, plan, self.net.n_features, self.batch_size, dtype)
        last = self.steps - 1
        K.train_steps_ref(self.X, self.y, order, self.batch_size, last, last + 1, epoch, params,
                          state, ws, plan, *K.step_codes(params, plan))
        return state.s1W

    def run_epoch(self, epoch, step=0, totals=(0.0, 0, 0, 0.0), should_stop=None, on_chunk=None,
                  until=None):
        """Run steps [step, until or steps) of ``epoch``; returns (loss_sum, correct, seen, step,
        seconds) accumulated onto ``totals``. ``step < self.steps`` on return means the epoch is
        not finished (stopped, or ``until`` reached). After each chunk of steps,
        ``on_chunk(step, mean loss of the epoch so far, mean loss of the chunk)``."""
        end = self.steps if until is None else min(until, self.steps)
        live = self._live()
        if self._saved is None:
            self._saved = [np.empty_like(a) for a in live]
        order = self.net.epoch_order(epoch, self.n, self.shuffle)
        loss_sum, correct, seen, elapsed = totals
        with one_blas_thread(self.limit_blas):
            t0 = time.perf_counter()
            while step < end and not (should_stop and should_stop()):
                for src, dst in zip(live, self._saved):
                    np.copyto(dst, src)
                stop = min(step + self.chunk, end)
                ls, c, s = self.thread_tuner.run(
                    lambda first, last: self.train_steps(
                        self.X, self.y, order, self.batch_size, first, last, epoch, self.params,
                        self.state, self.ws, self.plan, *self.codes),
                    step, stop)
                mean = ls / max(s, 1)
                if not math.isfinite(mean) or mean > self.loss_limit:
                    for src, dst in zip(self._saved, live):
                        np.copyto(dst, src)
                    grew = "" if not math.isfinite(mean) else (
                        f" (over {self.loss_limit:.4g}, {LOSS_GROWTH_LIMIT:g} times a uniform "
                        f"guess's: it grew by orders of magnitude)")
                    raise TrainingDivergedError(
                        f"the training loss became {mean:.6g}{grew} in epoch {epoch + 1}, steps "
                        f"{step + 1}..{stop}; the network keeps its weights from before step "
                        f"{step + 1}. Try a smaller lr (now {self.state.hyper[0]:g}) or another "
                        f"init (now {self.net.init!r}).")
                loss_sum, correct, seen = loss_sum + ls, correct + c, seen + s
                step = stop
                if on_chunk is not None:
                    on_chunk(step, loss_sum / seen, ls / s)
            elapsed += time.perf_counter() - t0
        return loss_sum, correct, seen, step, elapsed
