"""The Network: a thin, validated API over the kernels in :mod:`fastmlp.kernels`."""
import math
import signal
import sys
import threading
from contextlib import contextmanager

import numpy as np

from . import kernels as K
from ._version import __version__
from .errors import ModelFormatError, TrainingDivergedError
from .optimizers import SGD
from .serialization import load_arrays, save_arrays
from .training import Trainer, one_blas_thread, uses_sparse_input
from .validation import check_choice, check_features, check_int, check_labels

DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = {
    "numba": {"train_steps": K.train_steps, "forward": K.forward, "softmax": K.KERNELS["softmax"].fast},
    "numpy": {"train_steps": K.train_steps_ref, "forward": K.forward_ref,
              "softmax": K.KERNELS["softmax"].reference},
}
EVAL_BATCH = 4096
SPARSE_EVAL_BATCH = 512  # rows per call of the zero-skipping first layer (its scratch grows with it)


def _init_normal(rng, n_in, n_out):
    return rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)


def _init_xavier(rng, n_in, n_out):
    limit = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, (n_in, n_out))


def _init_he(rng, n_in, n_out):
    return rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)


def _init_large(rng, n_in, n_out):
    return rng.standard_normal((n_in, n_out))


# Weight initialisations; biases start at zero.
INITS = {"normal": _init_normal, "xavier": _init_xavier, "he": _init_he, "large": _init_large}


class History:
    """What fit() measured: ``history`` maps each metric to one value per completed epoch."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time")

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
    """A multilayer perceptron: dense layers, one hidden activation, softmax cross-entropy.

    >>> net = Network([784, 300, 10], activation="relu", init="he", seed=0)
    >>> history = net.fit(X, y, epochs=10, batch_size=256, lr=0.1, momentum=0.9)
    """

    def __init__(self, sizes, activation="relu", init="he", dtype="float32", backend="numba",
                 seed=None):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
            raise ValueError(f"sizes must list at least two layer sizes (inputs, ..., classes), "
                             f"got {sizes!r}")
        self.sizes = tuple(check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes))
        self.activation = check_choice(activation, "activation",
                                       set(K.ACTIVATION_CODES) - {"identity"})
        self.init = check_choice(init, "init", INITS)
        self.dtype = np.dtype(DTYPES[check_choice(str(np.dtype(dtype)) if not isinstance(dtype, str)
                                                  else dtype, "dtype", DTYPES)])
        self.backend = check_choice(backend, "backend", BACKENDS)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.seed = check_int(seed, "seed", 0)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        self.weights = [INITS[init](rng, a, b).astype(self.dtype)
                        for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        self.biases = [np.zeros(b, self.dtype) for b in self.sizes[1:]]
        self.epochs_done = 0
        self.history = History()
        self.train_config = {}

    # ---- properties --------------------------------------------------------------------------
    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_classes(self):
        return self.sizes[-1]

    @property
    def _act_code(self):
        return K.ACTIVATION_CODES[self.activation]

    def _ops(self):
        return BACKENDS[self.backend]

    def __repr__(self):
        return (f"Network({list(self.sizes)}, activation={self.activation!r}, init={self.init!r}, "
                f"dtype={self.dtype.name!r}, backend={self.backend!r}, seed={self.seed})")

    # ---- inference ---------------------------------------------------------------------------
    def _logits_batches(self, X, sparse=None):
        """Yield (start, stop, logits view) over X in batches, with buffers made once.

        On the Numba backend, mostly-zero inputs go through the zero-skipping first layer,
        like training does (``sparse``: that decision, if already made for this X)."""
        n = X.shape[0]
        if sparse is None:
            sparse = uses_sparse_input(self, X)
        batch = min(n, SPARSE_EVAL_BATCH if sparse else EVAL_BATCH)
        acts = tuple(np.empty((batch, m), self.dtype) for m in self.sizes[1:])
        Ws, bs = tuple(self.weights), tuple(self.biases)
        if sparse:
            rows = np.arange(n, dtype=np.int64)
            nz_idx = np.empty((batch, self.n_features), np.int32)
            nz_val = np.empty((batch, self.n_features), self.dtype)
        with one_blas_thread(sparse):
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                if sparse:
                    K.forward_sparse_input(X, rows[start:stop], Ws, bs, self._act_code, acts,
                                           nz_idx, nz_val)
                else:
                    self._ops()["forward"](X[start:stop], Ws, bs, self._act_code, acts)
                yield start, stop, acts[-1][:stop - start]

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes); rows sum to 1."""
        X = check_features(X, self.n_features, self.dtype)
        out = np.empty((X.shape[0], self.n_classes), self.dtype)
        softmax = self._ops()["softmax"]
        for start, stop, logits in self._logits_batches(X):
            softmax(logits, out[start:stop])
        return out

    def predict(self, X):
        """Predicted class labels, shape (n,), int64."""
        X = check_features(X, self.n_features, self.dtype)
        out = np.empty(X.shape[0], np.int64)
        for start, stop, logits in self._logits_batches(X):
            out[start:stop] = np.argmax(logits, axis=1)
        return out

    def evaluate(self, X, y):
        """{"loss": mean cross-entropy, "accuracy": fraction classified right}."""
        X = check_features(X, self.n_features, self.dtype)
        y = check_labels(y, X.shape[0], self.n_classes)
        return self._evaluate(X, y)

    def _evaluate(self, X, y, sparse=None):
        loss_fn = K.KERNELS["softmax_cross_entropy"]
        loss_fn = loss_fn.fast if self.backend == "numba" else loss_fn.reference
        scratch = np.empty((min(X.shape[0], EVAL_BATCH), self.n_classes), self.dtype)
        total, correct = 0.0, 0
        for start, stop, logits in self._logits_batches(X, sparse):
            loss, c = loss_fn(logits, y[start:stop], scratch[:stop - start])
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
            callbacks=()):
        """Train with minibatch SGD + momentum; returns a :class:`History`.

        ``epochs`` counts from the network's first epoch: a network resumed from a checkpoint
        after epoch 3 trains epochs 4..epochs. ``checkpoint`` is saved atomically at every
        epoch end (and on Ctrl-C); ``resume`` continues a checkpoint to the very weights an
        uninterrupted run would reach. Ctrl-C stops at a step boundary and returns.
        Each of ``callbacks`` is called as ``callback(epoch, metrics)`` after every epoch.
        """
        X = check_features(X, self.n_features, self.dtype)
        y = check_labels(y, X.shape[0], self.n_classes)
        n = X.shape[0]
        epochs = check_int(epochs, "epochs", 0)
        batch_size = check_int(batch_size, "batch_size", 1, n)
        opt = SGD(lr, momentum, weight_decay)
        verbose = check_int(verbose, "verbose", 0, 2)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            Xv = check_features(validation_data[0], self.n_features, self.dtype, "X_val")
            yv = check_labels(validation_data[1], Xv.shape[0], self.n_classes, "y_val")
            val_sparse = uses_sparse_input(self, Xv)  # decided once, used every epoch

        trainer = Trainer(self, X, y, batch_size, opt, shuffle,
                          chunks_per_epoch=50 if verbose == 1 and sys.stderr.isatty() else 8)
        resume_state = {}
        if resume is not None:
            resume_state = self._restore_checkpoint(resume, trainer.vW, trainer.vb, batch_size,
                                                    shuffle)
        config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                  "weight_decay": weight_decay, "shuffle": shuffle, "backend": self.backend}
        self.train_config = config
        history = self.history
        history.params = dict(config, samples=n)
        history.stopped = None
        progress = verbose == 1 and sys.stderr.isatty()

        with _sigint_flag() as sigint, one_blas_thread(trainer.sparse):
            for epoch in range(self.epochs_done, epochs):
                step = resume_state.pop("step", 0)
                totals = tuple(resume_state.pop("partial", (0.0, 0, 0, 0.0)))
                bar = _progress_bar(trainer.steps, step, epoch, epochs) if progress else None
                on_chunk = None
                if bar is not None:
                    def on_chunk(done, loss, bar=bar):
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                        bar.update(done - bar.n)
                try:
                    loss_sum, correct, seen, step, elapsed = trainer.run_epoch(
                        epoch, step, totals, lambda: sigint["hit"], on_chunk)
                except TrainingDivergedError:
                    history.stopped = "diverged"
                    raise
                finally:
                    if bar is not None:
                        bar.close()
                if step < trainer.steps:  # Ctrl-C
                    history.stopped = "interrupted"
                    if checkpoint is not None:
                        self._save_checkpoint(checkpoint, trainer.vW, trainer.vb, epoch_step=step,
                                              partial=(loss_sum, correct, seen, elapsed))
                    if verbose:
                        print(f"Interrupted in epoch {epoch + 1} after step {step}/"
                              f"{trainer.steps}: the network holds the weights of that step."
                              + (f" Checkpoint: {checkpoint}" if checkpoint else ""), flush=True)
                    break
                metrics = {"loss": loss_sum / seen, "accuracy": correct / seen,
                           "epoch_time": elapsed}
                if validation_data is not None:
                    val = self._evaluate(Xv, yv, val_sparse)
                    metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                history._append(epoch + 1, metrics)
                self.epochs_done = epoch + 1
                if verbose:
                    print(format_epoch_line(epoch + 1, epochs, metrics), flush=True)
                if checkpoint is not None:
                    self._save_checkpoint(checkpoint, trainer.vW, trainer.vb)
                for callback in callbacks:
                    callback(epoch + 1, metrics)
        return history

    # ---- files -------------------------------------------------------------------------------
    def _meta(self):
        return {"library": "fastmlp", "version": __version__, "sizes": list(self.sizes),
                "activation": self.activation, "init": self.init, "dtype": self.dtype.name,
                "seed": self.seed, "epochs_done": self.epochs_done,
                "train_config": self.train_config, "history": _finite_json(self.history.to_dict())}

    def _arrays(self):
        arrays = {f"W{i}": w for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        return arrays

    def save(self, path):
        """Write the model to path (.npz) atomically: a failed save keeps the previous file."""
        save_arrays(path, self._arrays(), dict(self._meta(), kind="model"))

    def _save_checkpoint(self, path, vW, vb, epoch_step=0, partial=None):
        arrays = self._arrays()
        arrays.update({f"vW{i}": v for i, v in enumerate(vW)})
        arrays.update({f"vb{i}": v for i, v in enumerate(vb)})
        meta = dict(self._meta(), kind="checkpoint", step=epoch_step,
                    partial=list(partial) if partial else None)
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
        try:
            net = cls(meta["sizes"], activation=meta["activation"], init=meta["init"],
                      dtype=meta["dtype"], backend=backend, seed=meta["seed"])
            net.epochs_done = check_int(meta.get("epochs_done", 0), "epochs_done", 0)
            h = meta.get("history") or {}
            net.history = History(h.get("history"), h.get("epoch"), h.get("params"))
            net.train_config = dict(meta.get("train_config") or {})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"{path}: inconsistent model metadata ({exc})") from None
        return net

    def _take_arrays(self, arrays, path, velocities=None):
        n_layers = len(self.sizes) - 1
        expected = {}
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            expected[f"W{i}"] = (a, b)
            expected[f"b{i}"] = (b,)
        for name, shape in expected.items():
            if name not in arrays:
                raise ModelFormatError(f"{path}: array {name} is missing")
            arr = arrays[name]
            if arr.shape != shape or arr.dtype != self.dtype:
                raise ModelFormatError(f"{path}: {name} is {arr.dtype} {arr.shape}, expected "
                                       f"{self.dtype} {shape} for sizes {list(self.sizes)}")
            if not np.isfinite(arr).all():
                raise ModelFormatError(f"{path}: {name} contains NaN or infinite values")
        self.weights = [np.ascontiguousarray(arrays[f"W{i}"]) for i in range(n_layers)]
        self.biases = [np.ascontiguousarray(arrays[f"b{i}"]) for i in range(n_layers)]
        if velocities is not None:
            vW, vb = velocities
            for i in range(n_layers):
                for key, dst in ((f"vW{i}", vW[i]), (f"vb{i}", vb[i])):
                    if key not in arrays or arrays[key].shape != dst.shape:
                        raise ModelFormatError(f"{path}: checkpoint lacks a valid {key}")
                    np.copyto(dst, arrays[key])

    def _restore_checkpoint(self, path, vW, vb, batch_size, shuffle):
        arrays, meta = load_arrays(path)
        if meta.get("kind") != "checkpoint":
            raise ModelFormatError(f"{path}: a model file, not a checkpoint: it has no optimizer "
                                   f"state to resume from")
        other = self._from_meta(meta, path, self.backend)
        if (other.sizes, other.activation, other.dtype) != (self.sizes, self.activation, self.dtype):
            raise ValueError(f"resume: {path} holds a {list(other.sizes)} {other.activation} "
                             f"{other.dtype} network, this one is {list(self.sizes)} "
                             f"{self.activation} {self.dtype}")
        step = meta.get("step", 0)
        old = other.train_config
        if step and (old.get("batch_size"), old.get("shuffle")) != (batch_size, shuffle):
            raise ValueError(f"resume: {path} stopped inside an epoch with batch_size="
                             f"{old.get('batch_size')} shuffle={old.get('shuffle')}; resume with "
                             f"the same values")
        self.seed = other.seed
        self._take_arrays(arrays, path, velocities=(vW, vb))
        self.epochs_done, self.history = other.epochs_done, other.history
        state = {}
        if step:
            state = {"step": int(step), "partial": tuple(meta["partial"])}
        return state

    # ---- description -------------------------------------------------------------------------
    def summary(self, print_fn=print):
        """A Keras-style table of layers, output shapes, parameters and multiply-adds."""
        rows = []
        n_layers = len(self.sizes) - 1
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            act = self.activation if i < n_layers - 1 else "softmax"
            rows.append((f"dense_{i + 1} (Dense, {act})", f"(None, {b})", a * b + b, a * b))
        total = sum(r[2] for r in rows)
        macs = sum(r[3] for r in rows)
        widths = (34, 14, 12, 16)
        header = ("Layer (type)", "Output Shape", "Param #", "MACs / sample")
        line = "=" * sum(widths)
        out = [f"Network: {list(self.sizes)}, {self.dtype.name}, backend {self.backend}", line,
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


def format_epoch_line(epoch, epochs, metrics):
    parts = [f"Epoch {epoch}/{epochs}", f"{metrics['epoch_time']:.2f}s",
             f"loss: {metrics['loss']:.4f}", f"accuracy: {metrics['accuracy']:.4f}"]
    if "val_loss" in metrics:
        parts += [f"val_loss: {metrics['val_loss']:.4f}",
                  f"val_accuracy: {metrics['val_accuracy']:.4f}"]
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
