"""Callbacks for ``fit(callbacks=[...])``. A plain function is called as ``f(epoch, metrics)``
after every epoch; an object may also have ``on_train_begin(net)``, ``on_train_end(net)`` and a
``stop_training`` attribute that fit reads after every epoch."""
import math
from contextlib import contextmanager


class History:
    """What fit() measured: ``history`` maps each metric to one value per completed epoch;
    ``stopped`` says why a fit ended early: None, "early", "interrupted" or "diverged"."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time", "lr")

    def __init__(self, history=None, epoch=None, params=None):
        self.history = {k: list((history or {}).get(k, [])) for k in self.KEYS}
        self.epoch = list(epoch or [])
        self.params = dict(params or {})
        self.stopped = None

    def _append(self, epoch, metrics):
        self.epoch.append(epoch)
        for k in self.KEYS:
            self.history[k].append(metrics.get(k, float("nan")))

    def to_dict(self):
        return {"history": self.history, "epoch": self.epoch, "params": self.params}

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, stopped={self.stopped!r})"


class Callback:
    stop_training = False

    def on_train_begin(self, net):
        pass

    def __call__(self, epoch, metrics):
        pass

    def on_train_end(self, net):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best``, the network ends with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", patience=10, restore_best=True, min_delta=0.0):
        if monitor not in ("loss", "accuracy", "val_loss", "val_accuracy"):
            raise ValueError(f"monitor must be loss, accuracy, val_loss or val_accuracy, got "
                             f"{monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience = monitor, patience
        self.restore_best, self.min_delta = bool(restore_best), float(min_delta)

    def on_train_begin(self, net):
        self.net, self.best, self.best_epoch, self.wait = net, None, None, 0
        self.best_weights, self.stop_training = None, False

    def __call__(self, epoch, metrics):
        value = metrics.get(self.monitor)
        if value is None or value != value:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not "
                             f"measure: give validation data")
        lower = "loss" in self.monitor
        improved = self.best is None or (value < self.best - self.min_delta if lower
                                         else value > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = [a.copy() for a in self.net.weights + self.net.biases]
        else:
            self.wait += 1
            self.stop_training = self.wait >= self.patience

    def on_train_end(self, net):
        if self.restore_best and self.best_weights is not None:
            for dst, src in zip(net.weights + net.biases, self.best_weights):
                dst[...] = src


class TensorBoard(Callback):
    """TensorBoard event files of a fit, written as training goes (``tensorboard --logdir
    LOG_DIR`` shows the run live): per epoch ``epoch/loss``, ``epoch/accuracy``,
    ``epoch/val_loss``, ``epoch/val_accuracy``, ``epoch/lr``, ``epoch/time`` (step = epoch
    number); the training loss of every ``loss_every`` steps as ``step/loss`` (step = steps
    done); with ``histograms``, each layer's weights and last gradient per epoch; the run's
    settings as text. Each fit writes one new run folder below ``log_dir`` (``run_name``, or
    the time it started), never into another run's.

    Needs the ``tensorboard`` extra: ``pip install fastmlp[tensorboard]``.
    """

    TAGS = {"loss": "epoch/loss", "accuracy": "epoch/accuracy", "val_loss": "epoch/val_loss",
            "val_accuracy": "epoch/val_accuracy", "lr": "epoch/lr", "epoch_time": "epoch/time"}

    def __init__(self, log_dir, run_name=None, loss_every=100, histograms=False):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ImportError("the TensorBoard callback needs the tensorboard extra: pip install "
                              "'fastmlp[tensorboard]'") from None
        from pathlib import Path
        if isinstance(loss_every, bool) or not isinstance(loss_every, int) or loss_every < 1:
            raise ValueError(f"loss_every must be an integer >= 1, got {loss_every!r}")
        self.log_dir = Path(log_dir)
        self.run_name, self.loss_every, self.histograms = run_name, loss_every, bool(histograms)
        self.writer, self.run_dir = None, None

    def _new_run_dir(self):
        import time
        base = self.run_name or time.strftime("run-%Y%m%d-%H%M%S")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            candidate = self.log_dir / (base if k == 0 else f"{base}-{k}")
            try:
                candidate.mkdir()  # atomic: two runs never share a folder
                return candidate
            except FileExistsError:
                continue
        raise FileExistsError(f"{self.log_dir}: no free run folder named {base}-N")

    def on_train_begin(self, net):
        import json
        from tensorboardX.summary import text
        self.net, self.epoch = net, 0
        self.run_dir = self._new_run_dir()
        settings = {"layers": [layer.config() for layer in net.layers],
                    "input_shape": list(net.input_shape), "output": net.output,
                    "loss": net.loss, "dtype": net.dtype.name, "backend": net.backend,
                    "seed": net.seed, "fit": net.train_config}
        with self._writing():
            self.writer = _EventFile(self.run_dir)
            self.writer.add(text("settings", "```\n" + json.dumps(settings, indent=2,
                                                                  default=str) + "\n```"), 0)
            self.writer.flush()

    def on_steps(self, step, loss):
        """The mean training loss of the steps just run, at ``step`` steps done in all."""
        from tensorboardX.summary import scalar
        with self._writing():
            self.writer.add(scalar("step/loss", loss), step)

    def __call__(self, epoch, metrics):
        from tensorboardX.summary import histogram, scalar
        with self._writing():
            for key, tag in self.TAGS.items():
                value = metrics.get(key)
                if value is not None and value == value:
                    self.writer.add(scalar(tag, value), epoch)
            if self.histograms:
                for i, (w, b) in enumerate(zip(self.net.weights, self.net.biases)):
                    self.writer.add(histogram(f"weights/layer{i}", w, _BINS), epoch)
                    self.writer.add(histogram(f"biases/layer{i}", b, _BINS), epoch)
                gradients = getattr(self.net, "_last_gradients", None)  # set by fit while it runs
                for i, g in enumerate(gradients() if gradients else []):
                    if g is not None:
                        self.writer.add(histogram(f"gradients/layer{i}", g, _BINS), epoch)
            self.writer.flush()
        self.epoch = epoch

    @contextmanager
    def _writing(self):
        """An event file that cannot be written (disk full, folder gone or read-only) stops the
        fit with an error that names it; what was written before stays readable."""
        try:
            yield
        except OSError as e:
            if self.writer is not None:
                self.writer.abandon()
                self.writer = None
            raise OSError(e.errno, f"the TensorBoard log in {self.run_dir} could not be "
                                   f"written ({e.strerror or e}); the fit stopped after "
                                   f"{self.epoch} completed epochs") from e

    def on_train_end(self, net):
        if self.writer is not None:
            with self._writing():
                writer, self.writer = self.writer, None
                writer.close()


def _default_bins():
    """TensorBoard's histogram buckets, as tensorboardX's SummaryWriter makes them: from 1e-12,
    10 % wider each, up to 1e20; their negatives; and 0."""
    v, buckets = 1e-12, []
    while v < 1e20:
        buckets.append(v)
        v *= 1.1
    return [-v for v in reversed(buckets)] + [0] + buckets


_BINS = _default_bins()


class _EventFile:
    """One TensorBoard event file, written in the caller's thread. (tensorboardX's
    SummaryWriter writes from a thread of its own, which dies on a write error: its next
    ``flush`` then waits forever, and a fit on a full disk would hang.)"""

    def __init__(self, run_dir):
        import os

        from tensorboardX.event_file_writer import EventsWriter
        self._events = EventsWriter(os.path.join(run_dir, "events"))

    def add(self, summary, step):
        import time

        from tensorboardX.proto.event_pb2 import Event
        self._events.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self):
        self._events.flush()

    def close(self):
        self._events.close()

    def abandon(self):
        """Close the file after a failed write, dropping what could not be written."""
        try:
            self._events.close()
        except OSError:
            pass
