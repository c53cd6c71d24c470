"""Layers, named as in Keras. A Network is a sequence of them; each layer kind is one row of
the compiled step's layer table (``kernels/network.py``)."""
import math

from . import kernels as K
from .validation import check_choice, check_int

ACTIVATIONS = sorted(set(K.ACTIVATION_CODES) - {"identity"})


class Layer:
    kind = ""
    has_params = False

    def output_width(self, width):
        return width

    def config(self):
        raise NotImplementedError


class Dense(Layer):
    """A fully connected layer: f(x W + b)."""
    kind = "dense"
    has_params = True

    def __init__(self, units, activation=None):
        self.units = check_int(units, "Dense units", 1)
        if activation is not None:
            check_choice(activation, "Dense activation", ACTIVATIONS)
        self.activation = activation

    def output_width(self, width):
        return self.units

    def config(self):
        return {"kind": "dense", "units": self.units, "activation": self.activation}

    def __repr__(self):
        return f"Dense({self.units}, activation={self.activation!r})"


class Dropout(Layer):
    """Inverted dropout of its input: each unit kept with probability 1 - rate and scaled by
    1/(1 - rate) in training, the identity at inference."""
    kind = "dropout"

    def __init__(self, rate):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
            raise TypeError(f"Dropout rate must be a real number, got {rate!r}")
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def config(self):
        return {"kind": "dropout", "rate": self.rate}

    def __repr__(self):
        return f"Dropout({self.rate})"


KINDS = {"dense": Dense, "dropout": Dropout}


def from_config(config):
    if not isinstance(config, dict) or config.get("kind") not in KINDS:
        raise ValueError(f"not a layer description: {config!r}")
    args = {k: v for k, v in config.items() if k != "kind"}
    return KINDS[config["kind"]](**args)


def _rates(value, name, count):
    """A dropout rate for each of ``count`` places, from one number or a list."""
    rates = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(rates) != count:
        raise ValueError(f"{name} must be one rate or a list of {count} (one per hidden layer), "
                         f"got {value!r}")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise TypeError(f"{name} must hold real numbers, got {value!r}")
        if not 0 <= r < 1:
            raise ValueError(f"{name} rates must be in [0, 1), got {value!r}")
    return [float(r) for r in rates]


def from_sizes(sizes, activation, dropout=0.0, input_dropout=0.0):
    """Today's MLP description as layers: [Dropout(input_dropout)], then per hidden size
    Dense(size, activation) [+ Dropout(rate)], then Dense(n_classes)."""
    hidden = sizes[1:-1]
    rates = _rates(dropout, "dropout", len(hidden))
    (input_rate,) = _rates(input_dropout, "input_dropout", 1)
    layers = [Dropout(input_rate)] if input_rate > 0 else []
    for units, rate in zip(hidden, rates):
        layers.append(Dense(units, activation))
        if rate > 0:
            layers.append(Dropout(rate))
    layers.append(Dense(sizes[-1]))
    return layers
