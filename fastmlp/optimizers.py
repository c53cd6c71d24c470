"""Optimizers, validated up front. Each names its kernel code, its hyper-parameters and the
state slots it keeps per parameter (which checkpoints store by name); the update itself is the
fused kernel ``kernels/optim.py:update_span``. Formulas are PyTorch's, and the tests check each
against ``torch.optim`` step for step. Weight decay never applies to biases."""
import math
from dataclasses import asdict, dataclass, replace

from . import kernels as K


def _real(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check(opt, positive=(), unit=(), nonnegative=()):
    for name in positive + unit + nonnegative:
        _real(name, getattr(opt, name))
    for name in positive:
        if getattr(opt, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(opt, name)!r}")
    for name in unit:
        if not 0 <= getattr(opt, name) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(opt, name)!r}")
    for name in nonnegative:
        if getattr(opt, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(opt, name)!r}")


class Optimizer:
    name = ""
    slots = ()

    @property
    def code(self):
        return K.OPTIMIZER_CODES[self.kernel]

    def config(self):
        return asdict(self)

    def with_lr(self, lr):
        return replace(self, lr=lr)

    def hyper(self):
        """(lr, beta1 or momentum, beta2 or rho, eps, weight_decay, nesterov, decoupled)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """Minibatch SGD with momentum (PyTorch's definition): g += λw; v = μv + g;
    w -= lr·(g + μv) with Nesterov momentum, else w -= lr·v."""
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    name = "sgd"
    kernel = "sgd"
    slots = ("velocity",)

    def __post_init__(self):
        _check(self, positive=("lr",), unit=("momentum",), nonnegative=("weight_decay",))
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def hyper(self):
        return (self.lr, self.momentum, 0.0, 0.0, self.weight_decay, float(self.nesterov), 0.0)


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam; with ``decoupled=True`` AdamW (w -= lr·λ·w before the step) instead of L2."""
    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    kernel = "adam"
    slots = ("m", "v")

    @property
    def name(self):
        return "adamw" if self.decoupled else "adam"

    def __post_init__(self):
        _check(self, positive=("lr", "eps"), unit=("beta1", "beta2"),
               nonnegative=("weight_decay",))
        if not isinstance(self.decoupled, bool):
            raise TypeError(f"decoupled must be True or False, got {self.decoupled!r}")

    def hyper(self):
        return (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, 0.0,
                float(self.decoupled))


def AdamW(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """Adam with decoupled weight decay (PyTorch's AdamW, its default decay 0.01)."""
    return Adam(lr, beta1, beta2, eps, weight_decay, decoupled=True)


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """s = ρs + (1-ρ)g²; w -= lr·g/(√s + ε) (Keras' defaults: ρ 0.9, ε 1e-7)."""
    lr: float = 0.001
    rho: float = 0.9
    eps: float = 1e-7
    weight_decay: float = 0.0
    name = "rmsprop"
    kernel = "rmsprop"
    slots = ("square_avg",)

    def __post_init__(self):
        _check(self, positive=("lr", "eps"), unit=("rho",), nonnegative=("weight_decay",))

    def hyper(self):
        return (self.lr, 0.0, self.rho, self.eps, self.weight_decay, 0.0, 0.0)


@dataclass(frozen=True)
class Adagrad(Optimizer):
    """s += g²; w -= lr·g/(√s + ε)."""
    lr: float = 0.01
    eps: float = 1e-10
    weight_decay: float = 0.0
    name = "adagrad"
    kernel = "adagrad"
    slots = ("sum",)

    def __post_init__(self):
        _check(self, positive=("lr", "eps"), nonnegative=("weight_decay",))

    def hyper(self):
        return (self.lr, 0.0, 0.0, self.eps, self.weight_decay, 0.0, 0.0)


OPTIMIZERS = {"sgd": SGD, "nesterov": lambda: SGD(nesterov=True), "adam": Adam, "adamw": AdamW,
              "rmsprop": RMSprop, "adagrad": Adagrad}


def get(optimizer):
    """An optimizer object from itself or from its name (for its defaults)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        return OPTIMIZERS[optimizer]()
    raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} or an optimizer object from "
                     f"fastmlp.optimizers, got {optimizer!r}")


def from_config(name, config):
    """The optimizer a checkpoint describes (its name and config)."""
    classes = {"sgd": SGD, "adam": Adam, "adamw": Adam, "rmsprop": RMSprop, "adagrad": Adagrad}
    if name not in classes or not isinstance(config, dict):
        raise ValueError(f"unknown optimizer {name!r}")
    return classes[name](**config)
