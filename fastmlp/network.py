"""The Network: a thin, validated API over the kernels in :mod:`fastmlp.kernels`."""
import json
import math
import os
import signal
import sys
import threading
from contextlib import contextmanager

import numpy as np

from . import kernels as K
from ._version import __version__
from .errors import ModelFormatError, TrainingDivergedError
from .layers import MAX_SIZE
from .serialization import load_arrays, save_arrays
from .kernels.optim import BETA1
from .schedules import Schedule
from .schedules import evaluate as evaluate_schedule
from .training import (Trainer, compile_ahead, one_blas_thread, step_description,
                       uses_sparse_input)
from .validation import check_choice, check_features, check_int, check_labels, warn_if_unscaled

DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = ("numba", "numpy")
OUTPUTS = ("softmax", "sigmoid")
LOSSES = ("cross_entropy", "quadratic")
EVAL_BATCH = 4096
EVAL_BUFFER_VALUES = 16 * 2 ** 20  # inference buffers: at most this many values per batch
SPARSE_EVAL_BATCH = 512  # rows per call of the zero-skipping first layer (its scratch grows with it)
FIT_DEFAULTS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
SMOKE_TEST_ENV = "FASTMLP_SMOKE_TEST"
FORMAT_REVISION = 2  # meta "revision": 1 = sizes + activation + momentum velocities; 2 = layers


def smoke_test_samples():
    """With $FASTMLP_SMOKE_TEST=N (N > 0), every fit trains at most one epoch on at most its
    first N samples: how CI runs the documentation's snippets, whatever epochs they ask for."""
    value = os.environ.get(SMOKE_TEST_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 0


def _init_normal(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape) / math.sqrt(fan_in)


def _init_xavier(rng, shape, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def _init_he(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def _init_large(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape)


# Weight initialisations (rng, 2-D shape, fan_in, fan_out) -> weights; biases start at zero.
INITS = {"normal": _init_normal, "xavier": _init_xavier, "he": _init_he, "large": _init_large}


class History:
    """What fit() measured: ``history`` maps each metric to one value per completed epoch."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time", "lr")

    def __init__(self, history=None, epoch=None, params=None):
        self.history = {k: list((history or {}).get(k, [])) for k in self.KEYS}
        self.epoch = list(epoch or [])
        self.params = dict(params or {})
        self.stopped = None  # None, "interrupted" or "diverged"

    def _append(self, epoch, metrics):
        self.epoch.append(epoch)
        for k in self.KEYS:
            self.history[k].append(metrics.get(k, float("nan")))

    def to_dict(self):
        return {"history": self.history, "epoch": self.epoch, "params": self.params}

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, stopped={self.stopped!r})"


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


class Network:
    """A neural network: a sequence of layers, an output activation and a loss.

    >>> net = Network([784, 300, 10], activation="relu", init="he", seed=0)
    >>> history = net.fit(X, y, epochs=10, batch_size=256, lr=0.1, momentum=0.9)

    ``sizes`` lists every layer's width (dense layers with one hidden ``activation``, and
    ``dropout`` / ``input_dropout`` rates), or is a list of layers from
    :mod:`fastmlp.layers` with ``input_shape`` giving the input's size.
    """

    def __init__(self, sizes, activation="relu", init="he", dtype="float32", backend="numba",
                 seed=None, dropout=0.0, input_dropout=0.0, max_norm=None, output="softmax",
                 loss="cross_entropy", input_shape=None, _initialise=True):
        from .layers import Layer, from_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 1:
            raise ValueError(f"sizes must list at least two layer sizes (inputs, ..., classes) or "
                             f"be a list of layers, got {sizes!r}")
        self.activation = check_choice(activation, "activation",
                                       set(K.ACTIVATION_CODES) - {"identity"})
        if all(isinstance(s, Layer) for s in sizes):
            if input_shape is None:
                raise ValueError("input_shape is required with a list of layers, e.g. (784,) or "
                                 "(28, 28, 1)")
            shape = tuple(input_shape) if hasattr(input_shape, "__len__") else (input_shape,)
            if len(shape) not in (1, 3):
                raise ValueError(f"input_shape must be (features,) or (height, width, channels), "
                                 f"got {input_shape!r}")
            shape = tuple(check_int(s, "input_shape", 1, MAX_SIZE) for s in shape)
            n_in = math.prod(shape)
            self.layers = list(sizes)
        else:
            if len(sizes) < 2:
                raise ValueError(f"sizes must list at least two layer sizes (inputs, ..., "
                                 f"classes), got {sizes!r}")
            sizes = tuple(check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes))
            n_in = sizes[0]
            shape = (n_in,)
            self.layers = from_sizes(sizes, self.activation, dropout, input_dropout)
        if not self.layers or self.layers[-1].kind != "dense":
            raise ValueError(f"the last layer must be Dense (it feeds the output and loss), got "
                             f"{self.layers[-1] if self.layers else 'no layers'}")
        if self.layers[-1].activation is not None:
            raise ValueError("the last Dense layer takes no activation: the output activation is "
                             "Network(output=...)")
        self.input_shape = shape
        # each layer's input and output shapes: a layer that cannot take its input says so
        self._in_shapes, self._shapes = [], []
        for layer in self.layers:
            self._in_shapes.append(shape)
            shape = layer.output_shape(shape)
            self._shapes.append(shape)
        self.n_features = n_in
        self.init = check_choice(init, "init", INITS)
        self.dtype = np.dtype(DTYPES[check_choice(str(np.dtype(dtype)) if not isinstance(dtype, str)
                                                  else dtype, "dtype", DTYPES)])
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.output = check_choice(output, "output", OUTPUTS)
        self.loss = check_choice(loss, "loss", LOSSES)
        if (output, loss) not in K.OUTPUT_LOSS_CODES:
            raise ValueError(f"output={output!r} with loss={loss!r} is not supported; use one of "
                             f"{sorted(K.OUTPUT_LOSS_CODES)}")
        if max_norm is not None:
            if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) \
                    or not math.isfinite(max_norm) or max_norm <= 0:
                raise ValueError(f"max_norm must be a finite number > 0 or None, got {max_norm!r}")
            max_norm = float(max_norm)
        self.max_norm = max_norm
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.seed = check_int(seed, "seed", 0)
        self._widths = [math.prod(shape) for shape in self._shapes]
        self.sizes = (n_in,) + tuple(w for l, w in zip(self.layers, self._widths) if l.has_params)
        self._W = [np.zeros((0, 0), self.dtype)] * len(self.layers)
        self._b = [np.zeros(0, self.dtype)] * len(self.layers)
        if _initialise:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
            for l, shape in self._param_shapes():
                fan_in, fan_out = self._fans(l)
                self._W[l] = INITS[init](rng, shape, fan_in, fan_out).astype(self.dtype)
                self._b[l] = np.zeros(shape[1], self.dtype)
        self.epochs_done = 0
        self.history = History()
        self.train_config = {}

    # ---- properties --------------------------------------------------------------------------
    def _param_shapes(self):
        """(layer index, 2-D weight shape) of each layer with parameters."""
        for l, layer in enumerate(self.layers):
            if layer.has_params:
                yield l, layer.param_shape(self._in_shapes[l])

    def _fans(self, l):
        """(fan_in, fan_out) of layer l's weights, as Keras counts them for a conv kernel."""
        layer = self.layers[l]
        fan_in, units = layer.param_shape(self._in_shapes[l])
        if layer.kind == "conv2d":
            return fan_in, units * layer.kernel_size[0] * layer.kernel_size[1]
        return fan_in, units

    @property
    def _param_layers(self):
        return [l for l, layer in enumerate(self.layers) if layer.has_params]

    @property
    def weights(self):
        """Each parameter layer's weights, in order: views of the arrays the kernels update in
        place; a conv kernel as (kh, kw, c_in, filters), Keras' layout."""
        out = []
        for l in self._param_layers:
            layer = self.layers[l]
            if layer.kind == "conv2d":
                kh, kw = layer.kernel_size
                out.append(self._W[l].reshape(kh, kw, self._in_shapes[l][2], layer.filters))
            else:
                out.append(self._W[l])
        return out

    @property
    def biases(self):
        return [self._b[l] for l in self._param_layers]

    @property
    def n_classes(self):
        return self._widths[-1]

    @property
    def _loss_code(self):
        return K.OUTPUT_LOSS_CODES[self.output, self.loss]

    def _params(self):
        for l in self._param_layers:  # e.g. read-only after unpickling from a memory map
            if not (self._W[l].flags.writeable and self._b[l].flags.writeable):
                self._W[l], self._b[l] = self._W[l].copy(), self._b[l].copy()
        return K.make_params(self._W, self._b, self.dtype)

    def _plan(self, optimizer_code=0, sparse_input=False, sample_weight=None, augment=None,
              threaded_min=K.THREADED_MIN_WEIGHTS):
        kinds = [K.LAYER_KINDS[layer.kind] for layer in self.layers]
        acts = [K.ACTIVATION_CODES[getattr(layer, "activation", None) or "identity"]
                for layer in self.layers]
        rates = [getattr(layer, "rate", 0.0) for layer in self.layers]
        max_norms = [self.max_norm if self.max_norm and layer.has_params and
                     l != len(self.layers) - 1 else 0.0 for l, layer in enumerate(self.layers)]
        geoms = [layer.geometry(shape) for layer, shape in zip(self.layers, self._in_shapes)]
        return K.make_plan(kinds, acts, rates, max_norms, self._loss_code, optimizer_code,
                           sparse_input, self.seed, self.dtype, sample_weight,
                           widths=self._widths, geoms=geoms, augment=augment,
                           threaded_min=threaded_min)

    def __repr__(self):
        return (f"Network({list(self.sizes)}, layers={self.layers!r}, init={self.init!r}, "
                f"dtype={self.dtype.name!r}, backend={self.backend!r}, seed={self.seed})")

    # ---- inference ---------------------------------------------------------------------------
    def _logits_batches(self, X, sparse=None):
        """Yield (start, stop, logits view) over X in batches, with buffers made once.

        On the Numba backend, mostly-zero inputs go through the zero-skipping first layer,
        like training does (``sparse``: that decision, if already made for this X)."""
        n = X.shape[0]
        if sparse is None:
            sparse = uses_sparse_input(self, X, SPARSE_EVAL_BATCH)
        # the batch's activations stay within ~64 MB (a CNN's are large per sample)
        per_sample = sum(self._widths) + self.n_features
        batch = max(1, min(n, SPARSE_EVAL_BATCH if sparse else EVAL_BATCH,
                           EVAL_BUFFER_VALUES // per_sample))
        params, plan = self._params(), self._plan(sparse_input=sparse)
        ws = K.make_workspace(params, plan, self.n_features, batch, self.dtype, training=False)
        offsets = np.arange(batch, dtype=np.int64)
        rows = np.empty(batch, np.int64)  # the rows of one batch: no index the size of X
        forward = K.forward if self.backend == "numba" else K.forward_ref
        codes = K.forward_codes(plan)
        ready = self.__dict__.setdefault("_inference_ready", set())
        if self.backend == "numba" and (codes, X.dtype) not in ready:  # once, not per predict
            compile_ahead(K.forward, (X, rows, params, plan, ws, *codes),
                          step_description(plan, self.dtype, "inference"))
            ready.add((codes, X.dtype))
        with one_blas_thread(self.backend == "numba" and K.layers_use_threads(None, plan)):
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                np.add(offsets[:stop - start], start, out=rows[:stop - start])
                forward(X, rows[:stop - start], params, plan, ws, *codes)
                yield start, stop, ws.acts[len(self.layers) - 1][:stop - start]

    def _compile_inference(self, X, verbose=True):
        """Compile (or load) what predict and evaluate run on data like X; returns the seconds
        spent compiling (0.0 when cached or on the NumPy backend)."""
        if self.backend != "numba":
            return 0.0
        sparse = uses_sparse_input(self, X, SPARSE_EVAL_BATCH)
        params, plan = self._params(), self._plan(sparse_input=sparse)
        ws = K.make_workspace(params, plan, self.n_features, 2, self.dtype, training=False)
        rows = np.arange(2, dtype=np.int64)
        seconds = compile_ahead(K.forward, (X, rows, params, plan, ws, *K.forward_codes(plan)),
                                step_description(plan, self.dtype, "inference"), verbose)
        logits = np.zeros((2, self.n_classes), self.dtype)
        labels = np.zeros(2, np.int64)
        what = f"the output layer ({self.dtype.name})"
        seconds += compile_ahead(K.KERNELS["output_activation"].fast,
                                 (self._loss_code, logits, logits.copy()), what, verbose)
        seconds += compile_ahead(K.KERNELS["output_loss"].fast,
                                 (self._loss_code, logits, labels, logits.copy()), what, verbose)
        return seconds

    def _kernel(self, name):
        pair = K.KERNELS[name]
        return pair.fast if self.backend == "numba" else pair.reference

    def predict_proba(self, X):
        """The output layer's activations, shape (n, n_classes): softmax rows sum to 1;
        sigmoid outputs are one probability per class."""
        X = check_features(X, self.n_features, self.dtype, input_shape=self.input_shape)
        out = np.empty((X.shape[0], self.n_classes), self.dtype)
        activation = self._kernel("output_activation")
        for start, stop, logits in self._logits_batches(X):
            activation(self._loss_code, logits, out[start:stop])
        return out

    def predict(self, X):
        """Predicted class labels, shape (n,), int64."""
        X = check_features(X, self.n_features, self.dtype, input_shape=self.input_shape)
        out = np.empty(X.shape[0], np.int64)
        for start, stop, logits in self._logits_batches(X):
            out[start:stop] = np.argmax(logits, axis=1)
        return out

    def evaluate(self, X, y):
        """{"loss": the mean training loss, "accuracy": fraction classified right}."""
        X = check_features(X, self.n_features, self.dtype, input_shape=self.input_shape)
        y = check_labels(y, X.shape[0], self.n_classes)
        return self._evaluate(X, y)

    def _evaluate(self, X, y, sparse=None):
        loss_fn = self._kernel("output_loss")
        scratch = np.empty((min(X.shape[0], EVAL_BATCH), self.n_classes), self.dtype)
        total, correct = 0.0, 0
        for start, stop, logits in self._logits_batches(X, sparse):
            loss, c = loss_fn(self._loss_code, logits, y[start:stop], scratch[:stop - start])
            total += loss * (stop - start)
            correct += c
        return {"loss": total / X.shape[0], "accuracy": correct / X.shape[0]}

    # ---- training ----------------------------------------------------------------------------
    def epoch_order(self, epoch, n, shuffle=True):
        """The sample order of a given epoch: a function of (seed, epoch) only, so a resumed
        run sees exactly the minibatches an uninterrupted one would."""
        if not shuffle:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch]))
        return rng.permutation(n).astype(np.int64)

    def fit(self, X, y, epochs=10, batch_size=256, lr=0.1, momentum=0.9, weight_decay=0.0,
            validation_data=None, shuffle=True, verbose=1, checkpoint=None, resume=None,
            callbacks=(), optimizer=None, initial_epoch=None, validation_split=0.0,
            lr_schedule=None, momentum_schedule=None, sample_weight=None, augment=None):
        """Train ``epochs`` more epochs (Keras' meaning); returns this call's :class:`History`
        (``net.history`` keeps every epoch).

        ``optimizer`` is an object from :mod:`fastmlp.optimizers` or its name; without it,
        ``lr``/``momentum``/``weight_decay`` mean SGD with momentum (momentum 0.9 unless given:
        pass ``momentum=0`` for plain SGD, as in Nielsen's book). ``initial_epoch`` numbers
        epochs absolutely: epochs ``initial_epoch .. epochs-1`` are trained. ``validation_split``
        holds out the last fraction of X, y (as Keras). ``checkpoint`` is saved atomically at
        every epoch end (and on Ctrl-C); ``resume`` continues a checkpoint, with ``epochs`` the
        total the interrupted run was to reach, to the very weights an uninterrupted run would
        reach. Ctrl-C stops at a step boundary and returns. Each of ``callbacks`` is called as
        ``callback(epoch, metrics)`` after every epoch (see :mod:`fastmlp.callbacks`, e.g.
        ``EarlyStopping``). ``lr_schedule`` / ``momentum_schedule`` (see
        :mod:`fastmlp.schedules`, or any ``callable(epoch) -> value``) set the learning rate and
        the momentum (Adam's beta1) in force in each epoch. ``sample_weight`` (one finite
        weight >= 0 per sample) scales each sample's share of the gradient. ``augment`` (an
        :class:`fastmlp.augment.Augment`) distorts every training image anew each epoch, on the
        fly (the network's input_shape, or square images, says how to read X).
        """
        from . import optimizers
        warn_if_unscaled(X, self.input_shape)
        X = check_features(X, self.n_features, self.dtype, input_shape=self.input_shape)
        y = check_labels(y, X.shape[0], self.n_classes)
        epochs = check_int(epochs, "epochs", 0)
        verbose = check_int(verbose, "verbose", 0, 2)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        augment_tables = None
        if augment is not None:
            from .augment import Augment, image_shape_of
            if not isinstance(augment, Augment):
                raise TypeError(f"augment must be a fastmlp.augment.Augment, got {augment!r}")
            if augment.active:
                augment_tables = augment.tables(image_shape_of(self))
        if optimizer is None:
            opt = optimizers.SGD(lr, momentum, weight_decay=weight_decay)
        else:
            given = {k: v for k, v in (("lr", lr), ("momentum", momentum),
                                       ("weight_decay", weight_decay)) if v != FIT_DEFAULTS[k]}
            if given:
                raise ValueError(f"pass either optimizer= or {', '.join(given)}=, not both: set "
                                 f"them on the optimizer, e.g. Adam(lr=...)")
            opt = optimizers.get(optimizer)
        for name, sched in (("lr_schedule", lr_schedule), ("momentum_schedule", momentum_schedule)):
            if sched is not None and not callable(sched) and not isinstance(sched, Schedule):
                raise TypeError(f"{name} must be a schedule from fastmlp.schedules or a "
                                f"callable(epoch) -> value, got {sched!r}")
        for callback in callbacks:
            if not callable(callback):
                raise TypeError(f"callbacks must be callables or Callback objects, got "
                                f"{callback!r}")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be a fraction in [0, 1), got "
                             f"{validation_split!r}")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (X.shape[0],) or not np.isfinite(sample_weight).all() \
                    or (sample_weight < 0).any():
                raise ValueError(f"sample_weight must hold one finite weight >= 0 per sample "
                                 f"({X.shape[0]}), got shape {sample_weight.shape}")
        if validation_split:
            if validation_data is not None:
                raise ValueError("pass validation_data or validation_split, not both")
            cut = X.shape[0] - int(round(X.shape[0] * validation_split))
            if not 0 < cut < X.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no training or no "
                                 f"validation sample of {X.shape[0]}")
            validation_data = (X[cut:], y[cut:])
            X, y = X[:cut], y[:cut]
            if sample_weight is not None:
                sample_weight = sample_weight[:cut]
        smoke = smoke_test_samples()
        if smoke:  # the documentation's snippets in CI: one short epoch
            X, y = X[:smoke], y[:smoke]
            if sample_weight is not None:
                sample_weight = sample_weight[:smoke]
        n = X.shape[0]
        batch_size = check_int(batch_size, "batch_size", 1, n)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            Xv = check_features(validation_data[0], self.n_features, self.dtype, "X_val",
                                self.input_shape)
            yv = check_labels(validation_data[1], Xv.shape[0], self.n_classes, "y_val")
            val_sparse = uses_sparse_input(self, Xv, SPARSE_EVAL_BATCH)  # decided once

        trainer = Trainer(self, X, y, batch_size, opt, shuffle,
                          chunks_per_epoch=50 if verbose == 1 and sys.stderr.isatty() else 8,
                          sample_weight=sample_weight, augment=augment_tables)
        resume_state = {}
        if resume is not None:
            resume_state = self._restore_checkpoint(resume, trainer, batch_size, shuffle)
            first, last = self.epochs_done, epochs
            history = self.history
        else:
            if initial_epoch is not None:
                first = check_int(initial_epoch, "initial_epoch", 0)
                last = epochs
            else:
                first, last = self.epochs_done, self.epochs_done + epochs
            history = History()
        if smoke:
            last = min(last, first + 1)
        config = {"epochs": last, "batch_size": batch_size, "optimizer": opt.name,
                  "optimizer_config": opt.config(), "shuffle": shuffle, "backend": self.backend}
        if augment_tables is not None:
            config["augment"] = augment.config()
        if optimizer is None:
            config.update(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.train_config = config
        history.params = dict(config, samples=n)
        history.stopped = None
        self.history.stopped = None
        progress = verbose == 1 and sys.stderr.isatty()
        compile_time = trainer.compile(verbose=verbose > 0)
        compile_time += self._compile_inference(X, verbose > 0)  # evaluate and predict after it
        history.params["compile_time"] = compile_time
        if verbose and optimizer is None:
            print(f"Optimizer: SGD, lr {lr:g}, momentum {momentum:g}"
                  + (" (the default: pass momentum=0 for plain SGD)" if momentum == 0.9 else "")
                  + f", weight decay {weight_decay:g}", flush=True)

        step_watchers = [c for c in callbacks if hasattr(c, "on_steps")]
        if step_watchers:  # chunks of the (shortest) interval the step losses are wanted at
            trainer.chunk = min(getattr(c, "loss_every", trainer.chunk) for c in step_watchers)
        def last_gradients():
            gradients = trainer.gradients(self.epochs_done - 1)  # one twin step, every layer
            return [gradients[l] for l in self._param_layers]
        self._last_gradients = last_gradients
        for callback in callbacks:
            if hasattr(callback, "on_train_begin"):
                callback.on_train_begin(self)
        base_momentum = float(trainer.state.hyper[BETA1])
        with _sigint_flag() as sigint, one_blas_thread(trainer.limit_blas):
            for epoch in range(first, last):
                if lr_schedule is not None:
                    lr_now = evaluate_schedule(lr_schedule, "lr_schedule", epoch, opt.lr,
                                               self.history.history)
                    if lr_now <= 0:
                        raise ValueError(f"lr_schedule returned {lr_now!r} for epoch {epoch}: "
                                         f"the learning rate must be > 0")
                    trainer.state.hyper[0] = lr_now
                if momentum_schedule is not None:
                    mu = evaluate_schedule(momentum_schedule, "momentum_schedule", epoch,
                                           base_momentum, self.history.history)
                    if not 0 <= mu < 1:
                        raise ValueError(f"momentum_schedule returned {mu!r} for epoch {epoch}: "
                                         f"expected a value in [0, 1)")
                    trainer.state.hyper[BETA1] = mu
                step = resume_state.pop("step", 0)
                totals = tuple(resume_state.pop("partial", (0.0, 0, 0, 0.0)))
                bar = _progress_bar(trainer.steps, step, epoch, last) if progress else None
                on_chunk = None
                if bar is not None or step_watchers:
                    def on_chunk(done, loss, chunk_loss, bar=bar, epoch=epoch):
                        if bar is not None:
                            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                            bar.update(done - bar.n)
                        for watcher in step_watchers:
                            watcher.on_steps(epoch * trainer.steps + done, chunk_loss)
                try:
                    loss_sum, correct, seen, step, elapsed = trainer.run_epoch(
                        epoch, step, totals, lambda: sigint["hit"], on_chunk)
                except TrainingDivergedError:
                    history.stopped = self.history.stopped = "diverged"
                    raise
                finally:
                    if bar is not None:
                        bar.close()
                if step < trainer.steps:  # Ctrl-C
                    history.stopped = self.history.stopped = "interrupted"
                    if checkpoint is not None:
                        self._save_checkpoint(checkpoint, trainer, epoch_step=step,
                                              partial=(loss_sum, correct, seen, elapsed))
                    if verbose:
                        print(f"Interrupted in epoch {epoch + 1} after step {step}/"
                              f"{trainer.steps}: the network holds the weights of that step."
                              + (f" Checkpoint: {checkpoint}" if checkpoint else ""), flush=True)
                    break
                metrics = {"loss": loss_sum / seen, "accuracy": correct / seen,
                           "epoch_time": elapsed, "lr": float(trainer.state.hyper[0])}
                if epoch == first and compile_time:
                    metrics["compile_time"] = compile_time
                if validation_data is not None:
                    val = self._evaluate(Xv, yv, val_sparse)
                    metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                history._append(epoch + 1, metrics)
                if history is not self.history:
                    self.history._append(epoch + 1, metrics)
                self.epochs_done = epoch + 1
                if verbose:
                    print(format_epoch_line(epoch + 1, last, metrics), flush=True)
                if checkpoint is not None:
                    self._save_checkpoint(checkpoint, trainer)
                for callback in callbacks:
                    callback(epoch + 1, metrics)
                if any(getattr(callback, "stop_training", False) for callback in callbacks):
                    history.stopped = self.history.stopped = "early"
                    break
        for callback in callbacks:
            if hasattr(callback, "on_train_end"):
                callback.on_train_end(self)
        del self._last_gradients  # it holds the trainer's buffers
        return history

    # ---- files -------------------------------------------------------------------------------
    def _meta(self):
        return {"library": "fastmlp", "version": __version__, "revision": FORMAT_REVISION,
                "sizes": list(self.sizes), "input_shape": list(self.input_shape),
                "layers": [layer.config() for layer in self.layers],
                "activation": self.activation, "init": self.init, "dtype": self.dtype.name,
                "output": self.output, "loss": self.loss, "max_norm": self.max_norm,
                "seed": self.seed, "epochs_done": self.epochs_done,
                "train_config": self.train_config, "history": _finite_json(self.history.to_dict())}

    def _arrays(self):
        # conv kernels as stored, (kh·kw·c_in, filters): every weight is 2-D in the file
        arrays = {f"W{i}": self._W[l] for i, l in enumerate(self._param_layers)}
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        return arrays

    def save(self, path):
        """Write the model to path (.npz) atomically: a failed save keeps the previous file."""
        save_arrays(path, self._arrays(), dict(self._meta(), kind="model"))

    def _save_checkpoint(self, path, trainer, epoch_step=0, partial=None):
        arrays = self._arrays()
        layers = self._param_layers
        for slot, (sW, sb) in trainer.slot_arrays().items():
            arrays.update({f"{slot}.W{i}": sW[l] for i, l in enumerate(layers)})
            arrays.update({f"{slot}.b{i}": sb[l] for i, l in enumerate(layers)})
        opt = trainer.optimizer
        meta = dict(self._meta(), kind="checkpoint", step=epoch_step,
                    partial=list(partial) if partial else None,
                    optimizer={"name": opt.name, "config": opt.config(),
                               "slots": list(opt.slots), "t": int(trainer.state.t[0])})
        save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path, backend="numba"):
        """Read a model (or checkpoint) written by :meth:`save`; never unpickles."""
        arrays, meta = load_arrays(path)
        net = cls._from_meta(meta, path, backend)
        net._take_arrays(arrays, path)
        return net

    @classmethod
    def _from_meta(cls, meta, path, backend):
        from .layers import from_config
        try:
            revision = meta.get("revision", 1)
            if revision not in (1, FORMAT_REVISION):
                raise ModelFormatError(
                    f"{path}: saved by fastmlp {meta.get('version')!r} in model revision "
                    f"{revision!r}; this fastmlp {__version__} reads revisions 1 to "
                    f"{FORMAT_REVISION}")
            common = dict(init=meta["init"], dtype=meta["dtype"], backend=backend,
                          seed=meta["seed"], _initialise=False)
            if revision == 1:  # sizes + one activation, softmax cross-entropy
                sizes = meta["sizes"]
                if not isinstance(sizes, list) or len(sizes) > 64:
                    raise ValueError(f"sizes {sizes!r}")
                net = cls(sizes, activation=meta["activation"], **common)
            else:
                layers = meta["layers"]
                if not isinstance(layers, list) or not 0 < len(layers) <= 256:
                    raise ValueError(f"layers {layers!r}")
                net = cls([from_config(c) for c in layers], activation=meta["activation"],
                          input_shape=tuple(meta["input_shape"]), output=meta["output"],
                          loss=meta["loss"], max_norm=meta["max_norm"], **common)
            if meta["sizes"] != list(net.sizes):
                raise ValueError(f"sizes {meta['sizes']!r} do not match the layers "
                                 f"{list(net.sizes)}")
            net.epochs_done = check_int(meta.get("epochs_done", 0), "epochs_done", 0)
            h = meta.get("history") or {}
            net.history = History(h.get("history"), h.get("epoch"), h.get("params"))
            net.train_config = dict(meta.get("train_config") or {})
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ModelFormatError(f"{path}: inconsistent model metadata ({exc})") from None
        return net

    def _take_arrays(self, arrays, path):
        """Set the parameters from ``arrays``, every one checked against the architecture."""
        for i, (l, shape) in enumerate(self._param_shapes()):
            for name, expected in ((f"W{i}", shape), (f"b{i}", shape[1:])):
                arr = _checked(arrays, name, expected, self.dtype, path, self.sizes)
                (self._W if name[0] == "W" else self._b)[l] = np.ascontiguousarray(arr)

    def _restore_checkpoint(self, path, trainer, batch_size, shuffle):
        arrays, meta = load_arrays(path)
        if meta.get("kind") != "checkpoint":
            raise ModelFormatError(f"{path}: a model file, not a checkpoint: it has no optimizer "
                                   f"state to resume from")
        other = self._from_meta(meta, path, self.backend)
        if other._structure() != self._structure():
            raise ValueError(f"resume: {path} holds a {other._describe()} {other.dtype} network, "
                             f"this one is {self._describe()} {self.dtype}")
        saved = meta.get("optimizer") or {"name": "sgd", "slots": ["velocity"], "t": 0}
        opt = trainer.optimizer
        if saved.get("name") != opt.name:
            raise ValueError(f"resume: {path} was trained with optimizer {saved.get('name')!r}, "
                             f"this fit uses {opt.name!r}; its state cannot carry over")
        step = meta.get("step", 0)
        old = other.train_config
        if step and (old.get("batch_size"), old.get("shuffle")) != (batch_size, shuffle):
            raise ValueError(f"resume: {path} stopped inside an epoch with batch_size="
                             f"{old.get('batch_size')} shuffle={old.get('shuffle')}; resume with "
                             f"the same values")
        self.seed = other.seed
        trainer.plan = trainer.plan._replace(seed=self.seed)  # dropout's seed
        self._take_arrays(arrays, path)
        # the trainer's parameter tuples must hold the arrays just read
        for l in self._param_layers:
            np.copyto(trainer.params.W[l], self._W[l])
            np.copyto(trainer.params.b[l], self._b[l])
            self._W[l], self._b[l] = trainer.params.W[l], trainer.params.b[l]
        legacy = "vW0" in arrays  # revision 1: momentum velocities as vW{i} / vb{i}
        for slot, (sW, sb) in trainer.slot_arrays().items():
            for i, l in enumerate(self._param_layers):
                for kind, dst in (("W", sW[l]), ("b", sb[l])):
                    key = f"v{kind}{i}" if legacy else f"{slot}.{kind}{i}"
                    np.copyto(dst, _checked(arrays, key, dst.shape, self.dtype, path, self.sizes,
                                            "checkpoint lacks a valid"))
        t = saved.get("t", 0)
        trainer.state.t[0] = check_int(t, "optimizer step", 0) if not legacy else 0
        self.epochs_done, self.history = other.epochs_done, other.history
        state = {}
        if step:
            state = {"step": check_int(step, "step", 0), "partial": tuple(meta["partial"])}
        return state

    def _structure(self):
        """What a checkpoint must share with the network that resumes it."""
        return (json.dumps([layer.config() for layer in self.layers]), tuple(self.input_shape),
                self.output, self.loss, self.dtype)

    def _describe(self):
        text = self.architecture
        if (self.output, self.loss) != ("softmax", "cross_entropy"):
            text += f" {self.output}/{self.loss}"
        return text

    @property
    def architecture(self):
        """The layers by kind and shape, on one line: "784-300-10 MLP (relu)" for a network of
        dense layers, else each layer in turn from the input shape, e.g. "28x28x1 > Conv2D 32
        3x3 relu > MaxPool2D 2x2 > Flatten > Dense 128 relu > Dense 10"."""
        if all(layer.kind in ("dense", "dropout") for layer in self.layers):
            acts = {layer.activation for layer in self.layers[:-1] if layer.kind == "dense"}
            text = "-".join(map(str, self.sizes)) + " MLP"
            rates = [layer.rate for layer in self.layers if layer.kind == "dropout"]
            details = [", ".join(sorted(acts))] if acts else []
            if rates:
                details.append("dropout " + "/".join(f"{r:g}" for r in rates))
            return text + (f" ({'; '.join(details)})" if details else "")
        parts = ["x".join(map(str, self.input_shape))]
        for layer in self.layers:
            if layer.kind == "dense":
                parts.append(f"Dense {layer.units}" + (f" {layer.activation}"
                                                        if layer.activation else ""))
            elif layer.kind == "conv2d":
                kh, kw = layer.kernel_size
                parts.append(f"Conv2D {layer.filters} {kh}x{kw}"
                             + (f" stride {layer.strides[0]}" if layer.strides != (1, 1) else "")
                             + (" same" if layer.padding == "same" else "")
                             + (f" {layer.activation}" if layer.activation else ""))
            elif layer.kind == "maxpool2d":
                parts.append("MaxPool2D {}x{}".format(*layer.pool_size))
            elif layer.kind == "dropout":
                parts.append(f"Dropout {layer.rate:g}")
            else:
                parts.append("Flatten")
        return " > ".join(parts)

    # ---- description -------------------------------------------------------------------------
    def summary(self, print_fn=print):
        """A Keras-style table of layers, output shapes, parameters and multiply-adds."""
        rows = []
        counts = {}
        names = {"dense": "Dense", "conv2d": "Conv2D", "maxpool2d": "MaxPool2D",
                 "flatten": "Flatten", "dropout": "Dropout"}
        for l, layer in enumerate(self.layers):
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            name = f"{layer.kind}_{counts[layer.kind]}"
            kind = names[layer.kind]
            if layer.has_params:
                act = layer.activation or (self.output if l == len(self.layers) - 1 else "linear")
                kind += f", {act}"
            elif layer.kind == "dropout":
                kind += f" {layer.rate:g}"
            shape = "(None, " + ", ".join(map(str, self._shapes[l])) + ")"
            p = layer.param_shape(self._in_shapes[l])
            params = p[0] * p[1] + p[1] if p else 0
            rows.append((f"{name} ({kind})", shape, params, layer.macs(self._in_shapes[l])))
        total = sum(r[2] for r in rows)
        macs = sum(r[3] for r in rows)
        widths = (34, 22, 12, 16)
        header = ("Layer (type)", "Output Shape", "Param #", "MACs / sample")
        line = "=" * sum(widths)
        out = [f"Network: {self.architecture}, {self.dtype.name}, backend {self.backend}, "
               f"{self.output} + {self.loss.replace('_', '-')}", line,
               "".join(h.ljust(w) for h, w in zip(header, widths)), line]
        out += ["".join(str(c).ljust(w) for c, w in zip((r[0], r[1], f"{r[2]:,}", f"{r[3]:,}"),
                                                         widths)) for r in rows]
        out += [line, f"Total params: {total:,}", f"Multiply-adds per sample: {macs:,}", line]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def count_params(self):
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases))


def _checked(arrays, name, shape, dtype, path, sizes, missing="array"):
    if name not in arrays:
        raise ModelFormatError(f"{path}: {missing} {name} is missing" if missing == "array"
                               else f"{path}: {missing} {name}")
    arr = arrays[name]
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ModelFormatError(f"{path}: {name} is {arr.dtype} {arr.shape}, expected {dtype} "
                               f"{tuple(shape)} for sizes {list(sizes)}")
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{path}: {name} contains NaN or infinite values")
    return arr


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


def _progress_bar(total, initial, epoch, epochs):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=f"Epoch {epoch + 1}/{epochs}", unit="step",
                leave=False, dynamic_ncols=True)


def _finite_json(obj):
    """JSON has no NaN: missing metrics (no validation data) are stored as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj
