"""One fit's settings, checked once, before any data is touched.

``Network.fit``'s keyword arguments, a recipe's ``"fit"`` entry, the CLI's flags, the
scikit-learn estimator's parameters and a sweep trial all become a :class:`FitConfig`; the
training loop (:func:`fastmlp.training.fit`) reads nothing else. What depends on the data
(``batch_size`` in [1, the number of samples], ``validation_split`` leaving samples on
both sides) is checked by :meth:`FitConfig.batch_size_for` and the loop, when the data's size
is known: the CLI and sweeps know it before they load anything.
"""
import dataclasses
from dataclasses import dataclass, field

from .schedules import Schedule
from .validation import check_int

# fit's SGD settings when no optimizer is given (also how "not given" is recognised)
SGD_DEFAULTS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}


@dataclass
class FitConfig:
    """The settings of one fit; see :meth:`fastmlp.Network.fit` for each one's meaning.

    >>> config = FitConfig(epochs=5, batch_size=64, optimizer="adam")
    >>> config.opt.name   # the optimizer object the fit runs
    'adam'

    Invalid settings raise ``ValueError`` or ``TypeError`` here, naming the argument.
    """
    epochs: int = 10
    batch_size: int = 256
    lr: float = SGD_DEFAULTS["lr"]
    momentum: float = SGD_DEFAULTS["momentum"]
    weight_decay: float = SGD_DEFAULTS["weight_decay"]
    shuffle: bool = True
    verbose: int = 1
    checkpoint: object = None
    resume: object = None
    callbacks: tuple = ()
    optimizer: object = None
    initial_epoch: object = None
    validation_split: float = 0.0
    lr_schedule: object = None
    momentum_schedule: object = None
    augment: object = None
    label_smoothing: float = 0.0
    opt: object = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        from . import optimizers
        self.epochs = check_int(self.epochs, "epochs", 0)
        # an integer here; in [1, samples] once the data's size is known (batch_size_for)
        self.batch_size = check_int(self.batch_size, "batch_size", -2 ** 63)
        self.verbose = check_int(self.verbose, "verbose", 0, 2)
        if not isinstance(self.shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {self.shuffle!r}")
        if self.initial_epoch is not None:
            self.initial_epoch = check_int(self.initial_epoch, "initial_epoch", 0)
        if self.augment is not None:
            from .augment import Augment
            if not isinstance(self.augment, Augment):
                raise TypeError(f"augment must be a fastmlp.augment.Augment, got "
                                f"{self.augment!r}")
        if self.optimizer is None:
            self.opt = optimizers.SGD(self.lr, self.momentum, weight_decay=self.weight_decay)
        else:
            given = [k for k, default in SGD_DEFAULTS.items() if getattr(self, k) != default]
            if given:
                raise ValueError(f"pass either optimizer= or {', '.join(given)}=, not both: set "
                                 f"them on the optimizer, e.g. Adam(lr=...)")
            self.opt = optimizers.get(self.optimizer)
        for name in ("lr_schedule", "momentum_schedule"):
            schedule = getattr(self, name)
            if schedule is not None and not callable(schedule) \
                    and not isinstance(schedule, Schedule):
                raise TypeError(f"{name} must be a schedule from fastmlp.schedules or a "
                                f"callable(epoch) -> value, got {schedule!r}")
        self.callbacks = tuple(self.callbacks)
        for callback in self.callbacks:
            if not callable(callback):
                raise TypeError(f"callbacks must be callables or Callback objects, got "
                                f"{callback!r}")
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) \
                or not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be a fraction in [0, 1), got {smoothing!r}")
        split = self.validation_split
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split < 1:
            raise ValueError(f"validation_split must be a fraction in [0, 1), got {split!r}")

    @property
    def default_sgd(self):
        """Whether the optimizer is fit's SGD from ``lr``/``momentum``/``weight_decay``."""
        return self.optimizer is None

    def replace(self, **changes):
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def batch_size_for(self, n):
        """``batch_size``, checked against ``n`` training samples."""
        return check_int(self.batch_size, "batch_size", 1, n)

    def record(self, epochs, backend):
        """What the model file keeps of this fit (``Network.train_config``)."""
        record = {"epochs": epochs, "batch_size": self.batch_size, "optimizer": self.opt.name,
                  "optimizer_config": self.opt.config(), "shuffle": self.shuffle,
                  "backend": backend}
        if self.augment is not None and self.augment.active:
            record["augment"] = self.augment.config()
        if self.label_smoothing:
            record["label_smoothing"] = self.label_smoothing
        if self.default_sgd:
            record.update(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return record
