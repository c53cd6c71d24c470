"""The training loop: everything one fit needs is made once, then epochs run in chunks of
steps inside the compiled ``train_steps`` (or its NumPy twin)."""
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from . import checkpoint, inference
from . import kernels as K
from .compiling import (NO_THREADED_DENSE, PATH_PROBE_ROUNDS, PATH_PROBE_ROWS,  # noqa: F401
                        SMALL_BATCH_ROWS, SPARSE_EVAL_BATCH, SPARSE_INPUT_DENSITY,
                        THREADED_BATCH_ROWS, CompileBeside,
                        ThreadTuner, compile_ahead, first_layer_path_key, forced_first_layer_path,
                        input_density, kernel_input, one_blas_thread, record_first_layer_path,
                        recorded_first_layer_path, step_description, step_ready,
                        uses_sparse_input, weighs_first_layer_paths, worth_weighing)
from .errors import TrainingDivergedError
from .kernels.optim import BETA1, LR
from .validation import check_int

# A chunk of steps whose mean loss exceeds this many times ln(classes) (a uniform guess's
# cross-entropy, where a fit starts) has diverged, as a NaN loss has: three orders of magnitude.
LOSS_GROWTH_LIMIT = 1000.0


class GradientStep:
    """Every parameter's loss gradient from the training step itself: one step of SGD with
    momentum 0 and lr 0 from zeroed state leaves the weights as they were and the velocity equal
    to the gradient. The plan's optimizer and max-norm are set aside; its sample weights and
    dropout stay."""

    def __init__(self, net, params, plan, batch_size, reference=False):
        self.params, self.batch_size = params, batch_size
        self.plan = plan._replace(max_norm=np.zeros_like(plan.max_norm))
        self.state = K.make_state(params, (0.0,) * 7, net.dtype)
        self.rule = K.optimizer_rule(K.OPTIMIZER_CODES["sgd"])
        self.ws = K.make_workspace(params, self.plan, net.n_features, batch_size, net.dtype)
        self.step = K.train_steps_ref if reference or net.backend != "numba" else K.train_steps
        self.args = K.step_args(params, self.plan)

    def __call__(self, X, y, order, batch, epoch=0):
        """(weight gradients, bias gradients), one array per layer, on minibatch ``batch`` of
        ``order``: the state's own arrays, overwritten by the next call."""
        self.step(X, y, order, self.batch_size, batch, batch + 1, epoch, self.params,
                  self.state, self.rule, self.ws, *self.args)
        return self.state.s1W, self.state.s1b


class Trainer:
    """Parameters, optimizer state, the layer table and every buffer of one fit.

    ``run_epoch`` runs the steps of one epoch in chunks; between chunks it keeps a copy of the
    parameters and optimizer state so that a non-finite loss can be rolled back to the last
    finite state, and it asks ``should_stop`` whether to return early (Ctrl-C) at a step
    boundary. ``fit_samples``: how many samples the fit trains on (epochs x rows), if known;
    a fit too short to repay timing the first layer's two paths runs the dense path
    (``compiling.worth_weighing``). ``label_smoothing``: softmax + cross-entropy's
    (``Network.fit``).
    """

    def __init__(self, net, X, y, batch_size, optimizer, shuffle=True, chunks_per_epoch=8,
                 sample_weight=None, augment=None, fit_samples=None, label_smoothing=0.0):
        self.net, self.X, self.y = net, kernel_input(X), kernel_input(y)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.n = X.shape[0]
        self.steps = -(-self.n // batch_size)
        self.chunk = max(1, -(-self.steps // chunks_per_epoch))
        self.optimizer = optimizer
        density = input_density(X) if net.backend == "numba" else 1.0
        sparse = uses_sparse_input(net, X, batch_size, density)
        self.params = net._params()
        self.state = K.make_state(self.params, optimizer.hyper(), net.dtype)
        self.rule = K.optimizer_rule(optimizer.code)  # the step compiles its update alone
        self.train_steps = K.train_steps if net.backend == "numba" else K.train_steps_ref

        # the plan the step is compiled for: with the zero-skipping code where that path runs,
        # made to run the first layer either way where both paths are still to be timed, and
        # with the large dense layers on Numba's threads (``threads``) or BLAS's
        def plan(zero_skipping, threads, either=False):
            return net._plan(zero_skipping, sample_weight, augment,
                             K.THREADED_MIN_WEIGHTS if threads else NO_THREADED_DENSE, either,
                             label_smoothing)
        long_fit = worth_weighing(net, fit_samples)
        weighs = weighs_first_layer_paths(net, batch_size, density)
        # the steps that could run this fit: its path's, or one made for either path
        kinds = ([(False, False)] + ([(True, False)] if weighs or sparse else [])
                 + ([(True, True)] if weighs else []))
        # up to SMALL_BATCH_ROWS rows the large dense layers run on Numba's threads; up to
        # THREADED_BATCH_ROWS where that code is compiled already or the fit is long enough to
        # repay compiling it (compiling.worth_weighing, as for timing the paths below)
        threads = batch_size <= SMALL_BATCH_ROWS or batch_size <= THREADED_BATCH_ROWS and (
            long_fit or any(self.is_compiled(plan(zero_skipping, True, either))
                            for zero_skipping, either in kinds))
        # where the first layer could run either way, a measurement on this machine chooses
        # (compiling.weighs_first_layer_paths): recorded, forced, or timed once compiled; a fit
        # too short to repay compiling the step for both paths to time them takes the dense path
        self._path_key = None
        if weighs:
            key = first_layer_path_key(net, batch_size, density, type(optimizer).__name__,
                                       threads)
            known = forced_first_layer_path() or recorded_first_layer_path(key)
            if known:
                sparse = known == "sparse"
            elif long_fit or self.is_compiled(plan(True, threads, True)):
                self._path_key = key
            else:
                sparse = False
        timing = self._path_key is not None
        self._step_plan = plan(sparse or timing, threads, timing)
        if weighs and not timing:
            # the path is known. The step made for either path (an earlier fit timed both with
            # it) runs it too: where that one is compiled and this path's own is not, looking
            # in this process first, then in the disk cache, that one
            either = plan(True, threads, True)
            for in_process in (True, False):
                if self.is_compiled(self._step_plan, in_process, not in_process):
                    break
                if self.is_compiled(either, in_process, not in_process):
                    self._step_plan = either
                    break
        self.ws = K.make_workspace(self.params, self._step_plan, net.n_features, batch_size,
                                   net.dtype)
        self.codes = K.step_codes(self.params, self._step_plan)
        self._new_tuner = None  # (see _use_path)
        self._use_path(sparse)
        self._saved = None
        # a chunk's mean loss above this is divergence, as NaN is
        self.loss_limit = LOSS_GROWTH_LIMIT * max(1.0, math.log(net.n_classes))

    def _step_args(self, plan=None, ws=None):
        """Arguments of the compiled step as this fit calls it (``plan``: another step plan)."""
        if plan is None:
            plan, ws, codes = self.plan, self.ws, self.codes
        else:
            codes = K.step_codes(self.params, plan)
        return (self.X, self.y, np.zeros(0, np.int64), self.batch_size, 0, 0, 0, self.params,
                self.state, self.rule, ws, K.layer_table(plan), *codes)

    def is_compiled(self, plan=None, in_process=True, on_disk=True):
        """Whether the compiled step for ``plan`` (this fit's, by default) is in this process
        (``in_process``) or Numba's disk cache (``on_disk``)."""
        if self.train_steps is not K.train_steps:
            return False
        ws = None if plan is None else K.make_workspace(self.params, plan, self.net.n_features,
                                                        1, self.net.dtype)
        return step_ready(K.train_steps, self._step_args(plan, ws), in_process, on_disk)

    def _use_path(self, sparse):
        """Run the first layer on the zero-skipping path or not, with BLAS's threads and the
        thread tuner that go with it."""
        self.sparse = sparse
        self.plan = self._path_plan(sparse)
        # Numba's threads run the zero-skipping layer, the large dense layers, dropout...:
        # BLAS then gets one thread
        self.limit_blas = self._numba_threads(self.plan)
        # one tuner per kind of fit of this network, kept from one fit call to the next
        tuners = self.net.__dict__.setdefault("_thread_tuners", {})
        kind = (self.batch_size, sparse, self.limit_blas,
                tuple(code is not None for code in self.codes))
        # a tuner this fit made for a path that its timing then left, before it ran, goes
        if self._new_tuner is not None and self._new_tuner != kind:
            tuners.pop(self._new_tuner, None)
        self._new_tuner = None
        if kind not in tuners:
            tuners[kind] = ThreadTuner(active=self.limit_blas)
            self._new_tuner = kind
        self.thread_tuner = tuners[kind]
        self.thread_tuner.begin_fit()

    @property
    def layers(self):
        """The plan's Layers, as the compiled step takes them (``kernels.layer_table``)."""
        return K.layer_table(self.plan)

    def _path_plan(self, sparse):
        return self._step_plan if sparse else self._step_plan._replace(sparse_layer=-1)

    def _numba_threads(self, plan):
        return self.net.backend == "numba" and K.layers_use_threads(self.params, plan)

    @property
    def first_layer_path(self):
        """"zero-skipping" or "dense" for a dense first layer (None for others)."""
        first = next(layer for layer in self.net.layers if layer.has_params)
        if first.kind != "dense":
            return None
        return "zero-skipping" if self.sparse else "dense"

    def choose_first_layer_path(self, verbose=False):
        """Where this fit's first layer could run either way and nothing is recorded for it on
        this machine: time a few steps of each path (on copies of the parameters and state, the
        fastest of a few runs counting), take the faster and record it."""
        if self._path_key is None:
            return
        params = K.Params(tuple(w.copy() for w in self.params.W),
                          tuple(b.copy() for b in self.params.b))
        state = K.OptState(*(tuple(a.copy() for a in f) if isinstance(f, tuple) else f.copy()
                             for f in self.state))
        order = self.net.epoch_order(0, self.n, self.shuffle)
        steps = max(1, min(self.steps, PATH_PROBE_ROWS // self.batch_size))
        best = {"sparse": math.inf, "dense": math.inf}
        # one path's runs back to back, the first untimed: right after the other path's, its
        # threads (OpenBLAS's, OpenMP's) still spin for a while and would slow this one
        for path in best:
            plan = self._path_plan(path == "sparse")
            layers = K.layer_table(plan)
            with one_blas_thread(self._numba_threads(plan)):
                for run in range(1 + PATH_PROBE_ROUNDS):
                    t0 = time.perf_counter()
                    self.train_steps(self.X, self.y, order, self.batch_size, 0, steps, 0, params,
                                     state, self.rule, self.ws, layers, *self.codes)
                    if run:
                        best[path] = min(best[path], time.perf_counter() - t0)
        path = "sparse" if best["sparse"] <= best["dense"] else "dense"
        record_first_layer_path(self._path_key, path,
                                {k: round(v / steps, 6) for k, v in best.items()})
        self._path_key = None
        self._use_path(path == "sparse")
        if verbose:
            print(f"First layer: {self.first_layer_path} path on this machine "
                  f"({best['sparse'] / steps * 1e3:.2f} ms a step skipping zeros, "
                  f"{best['dense'] / steps * 1e3:.2f} ms as a dense layer; kept for later fits)",
                  flush=True)

    def slot_arrays(self):
        """{slot name: (per-layer W states, per-layer b states)} of the optimizer in use."""
        s = self.state
        slots = {}
        for i, name in enumerate(self.optimizer.slots):
            slots[name] = (s.s1W, s.s1b) if i == 0 else (s.s2W, s.s2b)
        return slots

    def state_dict(self):
        """The fit's state: {"arrays": parameters and optimizer slots by file name ("W0", "b0",
        "velocity.W0", ...), "optimizer": its name, config, slot names and step count, "seed":
        dropout's seed}. The arrays are the trainer's own, not copies."""
        opt = self.optimizer
        return {"arrays": self._named_arrays(), "seed": int(self.plan.seed),
                "optimizer": {"name": opt.name, "config": opt.config(), "slots": list(opt.slots),
                              "t": int(self.state.t[0])}}

    def load_state_dict(self, state, source="state_dict"):
        """Copy a :meth:`state_dict` (e.g. read from a checkpoint) into this fit's parameters
        (the network's own arrays) and optimizer state, each array checked first."""
        from .model_file import checked_array
        net, arrays = self.net, state["arrays"]
        targets = self._named_arrays()
        checked = {name: checked_array(arrays, name, dst.shape, net.dtype, source, net.sizes,
                                       "array" if "." not in name else "checkpoint lacks a valid")
                   for name, dst in targets.items()}
        for name, dst in targets.items():
            np.copyto(dst, checked[name])
        self.state.t[0] = check_int(state["optimizer"].get("t", 0), "optimizer step", 0)
        self.plan = self.plan._replace(seed=check_int(state["seed"], "seed", 0))

    def _named_arrays(self):
        """The parameters and optimizer slots by their names in files: W0, b0, velocity.W0..."""
        layers = self.net._param_layers
        named = {}
        for i, l in enumerate(layers):
            named[f"W{i}"], named[f"b{i}"] = self.params.W[l], self.params.b[l]
        for slot, (sW, sb) in self.slot_arrays().items():
            for i, l in enumerate(layers):
                named[f"{slot}.W{i}"], named[f"{slot}.b{i}"] = sW[l], sb[l]
        return named

    @property
    def lr(self):
        """The learning rate in force."""
        return float(self.state.hyper[LR])

    @property
    def momentum(self):
        """The momentum (Adam's beta1) in force."""
        return float(self.state.hyper[BETA1])

    def set_hyper(self, lr=None, momentum=None):
        """Change the learning rate and/or momentum (Adam's beta1) from the next step on."""
        if lr is not None:
            self.state.hyper[LR] = lr
        if momentum is not None:
            self.state.hyper[BETA1] = momentum

    def _live(self):
        """What a rollback restores: the parameters and the state slots the optimizer uses."""
        state = sum((sW + sb for sW, sb in self.slot_arrays().values()), ())
        return self.params.W + self.params.b + state + (self.state.t,)

    def compile(self, verbose=True, beside=None):
        """Compile the training step for this fit ahead of its first epoch (Numba backend);
        returns the seconds spent compiling (0.0 when cached). ``beside``: a
        :class:`CompileBeside` at work on another core, waited for before anything is timed."""
        if self.net.backend != "numba":
            return 0.0
        seconds = compile_ahead(K.train_steps, self._step_args(),
                                step_description(self.plan, self.net.dtype, params=self.params,
                                                 optimizer=type(self.optimizer).__name__),
                                verbose)
        if beside is not None:
            seconds += beside.wait()
        self.choose_first_layer_path(verbose)
        return seconds

    def gradients(self, epoch):
        """Each layer's weight gradient at the current weights on ``epoch``'s last minibatch,
        from the NumPy twin on copies (the fast step never stores the zero-skipping first
        layer's gradient)."""
        params = K.Params(tuple(w.copy() for w in self.params.W),
                          tuple(b.copy() for b in self.params.b))
        probe = GradientStep(self.net, params, self.plan._replace(sparse_layer=-1),
                             self.batch_size, reference=True)
        order = self.net.epoch_order(epoch, self.n, self.shuffle)
        return probe(self.X, self.y, order, self.steps - 1, epoch)[0]

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
        layers = self.layers
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
                        self.state, self.rule, self.ws, layers, *self.codes),
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


# ---- the fit: data checked once, then the epoch loop ------------------------------------------
SMOKE_TEST_ENV = "FASTMLP_SMOKE_TEST"


def smoke_test_samples():
    """With $FASTMLP_SMOKE_TEST=N (N > 0), every fit trains at most one epoch on at most its
    first N samples: how CI runs the documentation's snippets, whatever epochs they ask for."""
    value = os.environ.get(SMOKE_TEST_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 0


class FitData:
    """A fit's training data and validation data, checked against the network and config:
    ``validation`` is (X_val, y_val, zero-skipping decision) or None."""

    def __init__(self, net, X, y, config, validation_data=None, sample_weight=None):
        from .validation import check_features, check_labels, warn_if_unscaled
        warn_if_unscaled(X, net.input_shape)
        X = check_features(X, net.n_features, net.dtype, input_shape=net.input_shape)
        y = check_labels(y, X.shape[0], net.n_classes)
        if sample_weight is not None:
            sample_weight = np.array(sample_weight, dtype=np.float64)  # small; ours, writeable
            if sample_weight.shape != (X.shape[0],) or not np.isfinite(sample_weight).all() \
                    or (sample_weight < 0).any():
                raise ValueError(f"sample_weight must hold one finite weight >= 0 per sample "
                                 f"({X.shape[0]}), got shape {sample_weight.shape}")
        if config.validation_split:
            if validation_data is not None:
                raise ValueError("pass validation_data or validation_split, not both")
            cut = X.shape[0] - int(round(X.shape[0] * config.validation_split))
            if not 0 < cut < X.shape[0]:
                raise ValueError(f"validation_split={config.validation_split} leaves no training "
                                 f"or no validation sample of {X.shape[0]}")
            validation_data = (X[cut:], y[cut:])
            X, y = X[:cut], y[:cut]
            sample_weight = None if sample_weight is None else sample_weight[:cut]
        smoke = smoke_test_samples()
        if smoke:  # the documentation's snippets in CI: one short epoch
            X, y = X[:smoke], y[:smoke]
            sample_weight = None if sample_weight is None else sample_weight[:smoke]
        config.batch_size_for(X.shape[0])
        self.validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            Xv = check_features(validation_data[0], net.n_features, net.dtype, "X_val",
                                net.input_shape)
            yv = check_labels(validation_data[1], Xv.shape[0], net.n_classes, "y_val")
            self.validation = (Xv, yv, uses_sparse_input(net, Xv, SPARSE_EVAL_BATCH))
        self.X, self.y, self.sample_weight = X, y, sample_weight


def fit(net, X, y, config, validation_data=None, sample_weight=None):
    """Train ``net`` on X, y as ``config`` (a :class:`fastmlp.fit_config.FitConfig`) says;
    returns this call's History (``net.history`` keeps every epoch). Callbacks are ended on
    every exit: the last epoch, early stopping, Ctrl-C, divergence or an error."""
    augment = augment_tables(net, config.augment)  # the settings against the network first
    if config.label_smoothing and (net.output, net.loss) != ("softmax", "cross_entropy"):
        raise ValueError(f"label_smoothing needs a softmax output with cross-entropy loss; this "
                         f"network has output={net.output!r}, loss={net.loss!r}")
    data = FitData(net, X, y, config, validation_data, sample_weight)
    progress = config.verbose == 1 and sys.stderr.isatty()
    trainer = Trainer(net, data.X, data.y, config.batch_size, config.opt, config.shuffle,
                      chunks_per_epoch=50 if progress else 8, sample_weight=data.sample_weight,
                      augment=augment, fit_samples=config.epochs * data.X.shape[0],
                      label_smoothing=config.label_smoothing)
    first, last, history, resume_at = _epoch_range(net, trainer, config)
    compile_time = _start(net, trainer, config, history, last, data.X)
    callbacks = _Callbacks(config.callbacks, net, trainer)
    base_momentum = trainer.momentum
    try:
        callbacks.begin()
        with _sigint_flag() as sigint, one_blas_thread(trainer.limit_blas):
            for epoch in range(first, last):
                _apply_schedules(trainer, config, epoch, base_momentum, net.history.history)
                step = resume_at.pop("step", 0)
                totals = tuple(resume_at.pop("partial", (0.0, 0, 0, 0.0)))
                loss_sum, correct, seen, step, elapsed = _run_epoch(
                    trainer, epoch, last, step, totals, progress, callbacks,
                    lambda: sigint["hit"])
                if step < trainer.steps:  # Ctrl-C
                    _interrupted(net, trainer, config, history, epoch, step,
                                 (loss_sum, correct, seen, elapsed))
                    break
                metrics = {"loss": loss_sum / seen, "accuracy": correct / seen,
                           "epoch_time": elapsed, "lr": trainer.lr}
                if epoch == first and compile_time:
                    metrics["compile_time"] = compile_time
                if data.validation is not None:
                    Xv, yv, sparse = data.validation
                    val = inference.evaluate(net, Xv, yv, sparse)
                    metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                _record_epoch(net, history, epoch + 1, last, metrics, config.verbose)
                if config.checkpoint is not None:
                    checkpoint.save(config.checkpoint, net, trainer)
                if callbacks.after_epoch(epoch + 1, metrics):
                    _stopped(net, history, "early")
                    break
    except TrainingDivergedError:
        _stopped(net, history, "diverged")
        raise
    finally:
        callbacks.end()
    return history


def augment_tables(net, augment):
    """The augmentation's per-fit tables for ``net``'s images, or None."""
    if augment is None or not augment.active:
        return None
    from .augment import image_shape_of
    return augment.tables(image_shape_of(net))


def _epoch_range(net, trainer, config):
    """(first epoch, end epoch, the History this call fills, where to go on in the first)."""
    from .callbacks import History
    if config.resume is not None:
        resume_at = checkpoint.restore(config.resume, net, trainer, config.batch_size,
                                       config.shuffle)
        first, last, history = net.epochs_done, config.epochs, net.history
    elif config.initial_epoch is not None:
        first, last, history, resume_at = config.initial_epoch, config.epochs, History(), {}
    else:
        first, last = net.epochs_done, net.epochs_done + config.epochs
        history, resume_at = History(), {}
    if smoke_test_samples():
        last = min(last, first + 1)
    return first, last, history, resume_at


def compile_for_fit(trainer, X, verbose=True):
    """Compile (or load) the trainer's step and what predict and evaluate run on data like X;
    returns the seconds spent compiling. Inference compiles on another core while this one
    compiles the step (with the step compiled already, a new process would only add its
    start)."""
    jobs = inference.inference_compiles(trainer.net, X)
    with CompileBeside([] if trainer.is_compiled() else jobs, verbose) as beside:
        seconds = trainer.compile(verbose, beside)
        return seconds + sum(compile_ahead(*job, verbose, beside) for job in jobs)


def _start(net, trainer, config, history, last, X):
    """Record the fit's settings, compile ahead (training step, then inference on data like
    X), print the optimizer line; returns the seconds spent compiling."""
    net.train_config = config.record(last, net.backend)
    history.params = dict(net.train_config, samples=trainer.n)
    _stopped(net, history, None)
    verbose = config.verbose > 0
    compile_time = compile_for_fit(trainer, X, verbose)
    history.params["compile_time"] = compile_time
    history.params["first_layer_path"] = trainer.first_layer_path
    if verbose and config.default_sgd:
        print(f"Optimizer: SGD, lr {config.lr:g}, momentum {config.momentum:g}"
              + (" (the default: pass momentum=0 for plain SGD)" if config.momentum == 0.9 else "")
              + f", weight decay {config.weight_decay:g}", flush=True)
    return compile_time


def _apply_schedules(trainer, config, epoch, base_momentum, past):
    from .schedules import evaluate
    if config.lr_schedule is not None:
        lr = evaluate(config.lr_schedule, "lr_schedule", epoch, config.opt.lr, past)
        if lr <= 0:
            raise ValueError(f"lr_schedule returned {lr!r} for epoch {epoch}: the learning rate "
                             f"must be > 0")
        trainer.set_hyper(lr=lr)
    if config.momentum_schedule is not None:
        mu = evaluate(config.momentum_schedule, "momentum_schedule", epoch, base_momentum, past)
        if not 0 <= mu < 1:
            raise ValueError(f"momentum_schedule returned {mu!r} for epoch {epoch}: expected a "
                             f"value in [0, 1)")
        trainer.set_hyper(momentum=mu)


def _run_epoch(trainer, epoch, epochs, step, totals, progress, callbacks, should_stop):
    """One epoch's steps from ``step``, with the progress bar and the step-loss watchers fed
    after each chunk; returns what :meth:`Trainer.run_epoch` does."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=trainer.steps, initial=step, desc=f"Epoch {epoch + 1}/{epochs}",
                   unit="step", leave=False, dynamic_ncols=True)
    watchers = callbacks.step_watchers
    on_chunk = None
    if bar is not None or watchers:
        def on_chunk(done, loss, chunk_loss):
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(done - bar.n)
            for watcher in watchers:
                watcher.on_steps(epoch * trainer.steps + done, chunk_loss)
    try:
        return trainer.run_epoch(epoch, step, totals, should_stop, on_chunk)
    finally:
        if bar is not None:
            bar.close()


def _interrupted(net, trainer, config, history, epoch, step, partial):
    _stopped(net, history, "interrupted")
    if config.checkpoint is not None:
        checkpoint.save(config.checkpoint, net, trainer, epoch_step=step, partial=partial)
    if config.verbose:
        print(f"Interrupted in epoch {epoch + 1} after step {step}/{trainer.steps}: the network "
              f"holds the weights of that step."
              + (f" Checkpoint: {config.checkpoint}" if config.checkpoint else ""), flush=True)


def _record_epoch(net, history, epoch, epochs, metrics, verbose):
    history._append(epoch, metrics)
    if history is not net.history:
        net.history._append(epoch, metrics)
    net.epochs_done = epoch
    if verbose:
        print(format_epoch_line(epoch, epochs, metrics), flush=True)


def _stopped(net, history, why):
    """Why the fit ended early (None while it runs): "early", "interrupted" or "diverged"."""
    history.stopped = net.history.stopped = why


class _Callbacks:
    """A fit's callbacks: ``on_train_begin(net)``, ``callback(epoch, metrics)`` after each epoch,
    ``on_steps(step, loss)`` for those that watch the step losses, ``on_train_end(net)``."""

    def __init__(self, callbacks, net, trainer):
        self.callbacks, self.net, self.trainer = callbacks, net, trainer
        self.step_watchers = [c for c in callbacks if hasattr(c, "on_steps")]
        if self.step_watchers:  # chunks of the (shortest) interval the step losses are wanted at
            trainer.chunk = min(getattr(c, "loss_every", trainer.chunk)
                                for c in self.step_watchers)

    def begin(self):
        net, trainer = self.net, self.trainer

        def last_gradients():  # one twin step, every layer (TensorBoard's histograms)
            gradients = trainer.gradients(net.epochs_done - 1)
            return [gradients[l] for l in net._param_layers]
        net._last_gradients = last_gradients
        for callback in self.callbacks:
            if hasattr(callback, "on_train_begin"):
                callback.on_train_begin(net)

    def after_epoch(self, epoch, metrics):
        """Call every callback; returns whether one of them asks to stop."""
        for callback in self.callbacks:
            callback(epoch, metrics)
        return any(getattr(callback, "stop_training", False) for callback in self.callbacks)

    def end(self):
        try:
            for callback in self.callbacks:
                if hasattr(callback, "on_train_end"):
                    callback.on_train_end(self.net)
        finally:
            self.net.__dict__.pop("_last_gradients", None)  # it holds the trainer's buffers


def format_epoch_line(epoch, epochs, metrics):
    took = f"{metrics['epoch_time']:.2f}s"
    if metrics.get("compile_time"):
        took += f" (+{metrics['compile_time']:.1f}s compiling, once)"
    parts = [f"Epoch {epoch}/{epochs}", took,
             f"loss: {metrics['loss']:.4f}", f"accuracy: {metrics['accuracy']:.4f}"]
    if "val_loss" in metrics:
        parts += [f"val_loss: {metrics['val_loss']:.4f}",
                  f"val_accuracy: {metrics['val_accuracy']:.4f}"]
    if "lr" in metrics:
        parts.append(f"lr: {metrics['lr']:.4g}")
    return " - ".join(parts)


@contextmanager
def _sigint_flag():
    """While training, the first Ctrl-C asks to stop at the next step boundary; a second one
    interrupts at once."""
    state = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["hit"]:
            raise KeyboardInterrupt
        state["hit"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
