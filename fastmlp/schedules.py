"""Learning-rate (and momentum) schedules for ``fit(lr_schedule=..., momentum_schedule=...)``.

A schedule gives the value in force during each epoch (numbered from 0). Any
``callable(epoch) -> value`` works too. Every schedule here is a pure function of the epoch and
of the history so far, so a resumed run follows the same schedule as an uninterrupted one.
"""
import math

from .optimizers import _real


class Schedule:
    """Base: ``value(epoch, base, history)``: the value for ``epoch``, from the optimizer's own
    value ``base`` and the metrics of the epochs done (``History.history``)."""
    initial = None

    def _start(self, base):
        return base if self.initial is None else self.initial

    def value(self, epoch, base, history):
        raise NotImplementedError


class StepDecay(Schedule):
    """initial · drop^⌊epoch / every⌋."""

    def __init__(self, drop=0.5, every=10, initial=None):
        self.drop = _real("drop", drop)
        if not 0 < self.drop <= 1:
            raise ValueError(f"drop must be in (0, 1], got {drop!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every, self.initial = every, initial

    def value(self, epoch, base, history):
        return self._start(base) * self.drop ** (epoch // self.every)


class ExponentialDecay(Schedule):
    """initial · rate^epoch."""

    def __init__(self, rate=0.95, initial=None):
        self.rate = _real("rate", rate)
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        self.initial = initial

    def value(self, epoch, base, history):
        return self._start(base) * self.rate ** epoch


class CosineDecay(Schedule):
    """Linear warm-up over ``warmup`` epochs, then a cosine from initial down to ``final`` at
    epoch ``epochs``."""

    def __init__(self, epochs, warmup=0, final=0.0, initial=None):
        for name, v in (("epochs", epochs), ("warmup", warmup)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if epochs <= warmup:
            raise ValueError(f"epochs ({epochs}) must be more than warmup ({warmup})")
        self.epochs, self.warmup, self.final, self.initial = epochs, warmup, _real("final", final), initial

    def value(self, epoch, base, history):
        top = self._start(base)
        if epoch < self.warmup:
            return top * (epoch + 1) / (self.warmup + 1)
        t = min(1.0, (epoch - self.warmup) / (self.epochs - self.warmup))
        return self.final + (top - self.final) * 0.5 * (1 + math.cos(math.pi * t))


class ReduceLROnPlateau(Schedule):
    """Multiply by ``factor`` whenever ``monitor`` has not improved for ``patience`` epochs
    (Nielsen: halve η when the validation accuracy stalls); never below ``min_lr``."""

    def __init__(self, monitor="val_accuracy", factor=0.5, patience=5, min_lr=0.0, min_delta=0.0,
                 initial=None):
        if monitor not in ("loss", "accuracy", "val_loss", "val_accuracy"):
            raise ValueError(f"monitor must be loss, accuracy, val_loss or val_accuracy, got "
                             f"{monitor!r}")
        self.factor = _real("factor", factor)
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.monitor, self.patience = monitor, patience
        self.min_lr, self.min_delta = _real("min_lr", min_lr), _real("min_delta", min_delta)
        self.initial = initial

    def value(self, epoch, base, history):
        lr = self._start(base)
        values = history.get(self.monitor, [])
        better = (lambda a, b: a < b - self.min_delta) if "loss" in self.monitor else \
            (lambda a, b: a > b + self.min_delta)
        best, wait = None, 0
        for v in values:
            if v is None or v != v:
                raise ValueError(f"ReduceLROnPlateau monitors {self.monitor!r}, which fit does "
                                 f"not measure: give validation data")
            if best is None or better(v, best):
                best, wait = v, 0
            else:
                wait += 1
                if wait >= self.patience:
                    lr, wait = max(lr * self.factor, self.min_lr), 0
        return lr


class LinearRamp(Schedule):
    """From ``start`` to ``end`` over ``epochs`` epochs, then ``end`` (the dropout paper ramps
    momentum from 0.5 to 0.99)."""

    def __init__(self, start, end, epochs):
        self.start, self.end = _real("start", start), _real("end", end)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.epochs = epochs

    def value(self, epoch, base, history):
        t = min(1.0, epoch / self.epochs)
        return self.start + (self.end - self.start) * t


def evaluate(schedule, name, epoch, base, history):
    """The schedule's value for ``epoch``, checked: a finite number."""
    value = schedule.value(epoch, base, history) if isinstance(schedule, Schedule) \
        else schedule(epoch)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} returned {value!r} for epoch {epoch}: expected a finite number")
    return float(value)
