"""Layers, named as in Keras. A Network is a sequence of them; each layer kind is one row of
the compiled step's layer table (``kernels/network.py``)."""
import math

import numpy as np

from . import kernels as K
from .validation import check_choice, check_int

MAX_SIZE = 2 ** 31 - 1  # any size or count of a layer (kernels index with 32 bits)

ACTIVATIONS = sorted(set(K.ACTIVATION_CODES) - {"identity"})
# Keras' name for no activation; a layer given it has none (activation None)
LINEAR = "linear"


def _activation(value, name):
    """A layer's activation: None for none ("linear" or None), else one of ACTIVATIONS."""
    if value is None or value == LINEAR:
        return None
    return check_choice(value, name, ACTIVATIONS + [LINEAR])


def _pair(value, name):
    """An int or a pair of ints (height, width), each >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair (height, width), got {value!r}")
        return tuple(check_int(v, name, 1, MAX_SIZE) for v in value)
    v = check_int(value, name, 1, MAX_SIZE)
    return (v, v)


def _shape_text(shape):
    return "(" + ", ".join(map(str, shape)) + ")"


class Layer:
    """One row of the layer table: ``output_shape`` says what it makes of an input shape (and
    refuses shapes it cannot take, naming itself); layers with parameters also give the 2-D
    shape of their weights (``param_shape``) and their multiply-adds per sample."""
    kind = ""
    has_params = False
    activation = None

    def output_shape(self, shape):
        return shape

    def param_shape(self, shape):
        return None

    def geometry(self, shape):
        return None

    def macs(self, shape):
        return 0

    def config(self):
        raise NotImplementedError

    @property
    def label(self):
        """The layer in a few words, e.g. "Dense 128 relu" (``Network.architecture``)."""
        return type(self).__name__


class Dense(Layer):
    """A fully connected layer: f(x W + b)."""
    kind = "dense"
    has_params = True

    def __init__(self, units, activation=None):
        self.units = check_int(units, "Dense units", 1, MAX_SIZE)
        self.activation = _activation(activation, "Dense activation")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise ValueError(f"{self!r} needs a flat input but gets {_shape_text(shape)}: put "
                             f"Flatten() before it")
        return (self.units,)

    def param_shape(self, shape):
        return (shape[0], self.units)

    def macs(self, shape):
        return shape[0] * self.units

    def config(self):
        return {"kind": "dense", "units": self.units, "activation": self.activation}

    @property
    def label(self):
        return f"Dense {self.units}" + (f" {self.activation}" if self.activation else "")

    def __repr__(self):
        return f"Dense({self.units}, activation={self.activation!r})"


class Conv2D(Layer):
    """A 2-D convolution over channels-last images (Keras' Conv2D): ``filters`` kernels of
    ``kernel_size``, moved by ``strides``; padding "valid" (no padding) or "same" (zeros around,
    output size ceil(input / stride)). Its weights are shown as (kh, kw, c_in, filters)."""
    kind = "conv2d"
    has_params = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None):
        self.filters = check_int(filters, "Conv2D filters", 1, MAX_SIZE)
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.strides = _pair(strides, "Conv2D strides")
        if self.strides[0] != self.strides[1]:
            raise ValueError(f"Conv2D strides must be equal in height and width, got {strides!r}")
        self.padding = check_choice(padding, "Conv2D padding", ("valid", "same"))
        self.activation = _activation(activation, "Conv2D activation")

    def geometry(self, shape):
        if len(shape) != 3:
            raise ValueError(f"{self!r} needs (height, width, channels) images but gets "
                             f"{_shape_text(shape)}: give Network input_shape=(h, w, c)")
        kh, kw = self.kernel_size
        if self.padding == "valid" and (kh > shape[0] or kw > shape[1]):
            raise ValueError(f"{self!r}: the kernel {kh}x{kw} is larger than its input "
                             f"{_shape_text(shape)}")
        return K.conv_geometry(shape, self.filters, self.kernel_size, self.strides[0],
                               self.padding)

    def output_shape(self, shape):
        g = self.geometry(shape)
        return (int(g[3]), int(g[4]), self.filters)

    def param_shape(self, shape):
        return (self.kernel_size[0] * self.kernel_size[1] * shape[2], self.filters)

    def macs(self, shape):
        oh, ow, f = self.output_shape(shape)
        return oh * ow * f * self.param_shape(shape)[0]

    def config(self):
        return {"kind": "conv2d", "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": self.activation}

    @property
    def label(self):
        kh, kw = self.kernel_size
        return (f"Conv2D {self.filters} {kh}x{kw}"
                + (f" stride {self.strides[0]}" if self.strides != (1, 1) else "")
                + (" same" if self.padding == "same" else "")
                + (f" {self.activation}" if self.activation else ""))

    def __repr__(self):
        k = self.kernel_size
        return (f"Conv2D({self.filters}, {k[0] if k[0] == k[1] else k}, "
                f"strides={self.strides[0]}, padding={self.padding!r}, "
                f"activation={self.activation!r})")


class MaxPool2D(Layer):
    """The maximum of each ``pool_size`` window, moved by ``strides`` (default: the pool
    size); windows that do not fit are dropped ("valid")."""
    kind = "maxpool2d"

    def __init__(self, pool_size=2, strides=None):
        self.pool_size = _pair(pool_size, "MaxPool2D pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "MaxPool2D strides")
        if self.strides[0] != self.strides[1]:
            raise ValueError(f"MaxPool2D strides must be equal in height and width, got "
                             f"{strides!r}")

    def geometry(self, shape):
        if len(shape) != 3:
            raise ValueError(f"{self!r} needs (height, width, channels) images but gets "
                             f"{_shape_text(shape)}")
        if self.pool_size[0] > shape[0] or self.pool_size[1] > shape[1]:
            raise ValueError(f"{self!r}: the window {self.pool_size[0]}x{self.pool_size[1]} is "
                             f"larger than its input {_shape_text(shape)}")
        return K.conv_geometry(shape, None, self.pool_size, self.strides[0], "valid")

    def output_shape(self, shape):
        g = self.geometry(shape)
        return (int(g[3]), int(g[4]), shape[2])

    def config(self):
        return {"kind": "maxpool2d", "pool_size": list(self.pool_size),
                "strides": list(self.strides)}

    @property
    def label(self):
        return "MaxPool2D {}x{}".format(*self.pool_size)

    def __repr__(self):
        return f"MaxPool2D({self.pool_size[0]}, strides={self.strides[0]})"


class Flatten(Layer):
    """(h, w, c) images as flat rows of h·w·c values (row-major: free, no copy)."""
    kind = "flatten"

    def output_shape(self, shape):
        return (math.prod(shape),)

    def config(self):
        return {"kind": "flatten"}

    def __repr__(self):
        return "Flatten()"


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

    @property
    def label(self):
        return f"Dropout {self.rate:g}"

    def __repr__(self):
        return f"Dropout({self.rate})"


def _real(value, name, low, high):
    """A real number in (low, high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not low < value < high:
        raise ValueError(f"{name} must be in ({low:g}, {high:g}), got {value!r}")
    return float(value)


class BatchNormalization(Layer):
    """Batch normalization (Keras' BatchNormalization): each channel (the last axis: a dense
    layer's units, a conv layer's filters) normalized to mean 0 and variance 1 over the
    minibatch in training, then scaled by γ and shifted by β, which are learned; inference
    uses the moving mean and variance, which training updates as
    ``moving = momentum · moving + (1 - momentum) · batch`` (the variance biased), and
    ``epsilon`` is added to the variance. Its weights are the rows (γ, moving mean, moving
    variance) of a (3, channels) array, its bias β; it has no activation: follow it with
    ``Activation``."""
    kind = "batchnorm"
    has_params = True

    def __init__(self, momentum=0.99, epsilon=1e-3):
        self.momentum = _real(momentum, "BatchNormalization momentum", 0, 1)
        self.epsilon = _real(epsilon, "BatchNormalization epsilon", 0, math.inf)

    def param_shape(self, shape):
        return (3, shape[-1])

    def initial_weights(self, shape, dtype):
        """(W, b): γ = 1, moving mean 0, moving variance 1; β = 0 (Keras' defaults)."""
        channels = shape[-1]
        return (np.stack([np.ones(channels), np.zeros(channels), np.ones(channels)]).astype(dtype),
                np.zeros(channels, dtype))

    def config(self):
        return {"kind": "batchnorm", "momentum": self.momentum, "epsilon": self.epsilon}

    def __repr__(self):
        return f"BatchNormalization(momentum={self.momentum}, epsilon={self.epsilon})"


class Activation(Layer):
    """An activation applied to its input (Keras' Activation): relu, sigmoid, tanh or linear
    (the identity)."""
    kind = "activation"

    def __init__(self, activation):
        self.activation = _activation(activation, "Activation activation")

    def config(self):
        return {"kind": "activation", "activation": self.activation or LINEAR}

    @property
    def label(self):
        return f"Activation {self.activation or LINEAR}"

    def __repr__(self):
        return f"Activation({self.activation or LINEAR!r})"


KINDS = {"dense": Dense, "dropout": Dropout, "conv2d": Conv2D, "maxpool2d": MaxPool2D,
         "flatten": Flatten, "batchnorm": BatchNormalization, "activation": Activation}
LEARNED_KINDS = ("dense", "conv2d")  # the layers whose weights the initializers fill


def from_config(config):
    if not isinstance(config, dict) or config.get("kind") not in KINDS:
        raise ValueError(f"not a layer description: {config!r}")
    args = {k: v for k, v in config.items() if k != "kind"}
    try:
        return KINDS[config["kind"]](**args)
    except TypeError as exc:
        raise ValueError(f"not a layer description: {config!r} ({exc})") from None


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


def build_layers(sizes, activation, dropout, input_dropout, input_shape):
    """(layers, input shape) of a Network: ``sizes`` is a list of layers (with ``input_shape``)
    or of widths (inputs, hidden..., classes; dense layers of one ``activation``)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 1:
        raise ValueError(f"sizes must list at least two layer sizes (inputs, ..., classes) or "
                         f"be a list of layers, got {sizes!r}")
    if all(isinstance(s, Layer) for s in sizes):
        if input_shape is None:
            raise ValueError("input_shape is required with a list of layers, e.g. (784,) or "
                             "(28, 28, 1)")
        shape = tuple(input_shape) if hasattr(input_shape, "__len__") else (input_shape,)
        if len(shape) not in (1, 3):
            raise ValueError(f"input_shape must be (features,) or (height, width, channels), "
                             f"got {input_shape!r}")
        layers = list(sizes)
        shape = tuple(check_int(s, "input_shape", 1, MAX_SIZE) for s in shape)
    else:
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least two layer sizes (inputs, ..., "
                             f"classes), got {sizes!r}")
        sizes = tuple(check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes))
        layers, shape = from_sizes(sizes, activation, dropout, input_dropout), (sizes[0],)
    if not layers or layers[-1].kind != "dense":
        raise ValueError(f"the last layer must be Dense (it feeds the output and loss), got "
                         f"{layers[-1] if layers else 'no layers'}")
    if layers[-1].activation is not None:
        raise ValueError("the last Dense layer takes no activation: the output activation is "
                         "Network(output=...)")
    return layers, shape
