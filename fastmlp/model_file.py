"""The model file: a network's layers, settings and history as JSON metadata, its parameters as
arrays, written atomically by :func:`fastmlp.serialization.save_arrays` and never unpickled.
Checkpoints (:mod:`fastmlp.checkpoint`) and the estimator's files add to the same layout."""
import math

import numpy as np

from ._version import __version__
from .errors import ModelFormatError
from .serialization import load_arrays, save_arrays
from .validation import check_int

FORMAT_REVISION = 2  # meta "revision": 1 = sizes + activation + momentum velocities; 2 = layers


def meta(net):
    """The metadata a model file stores for ``net``."""
    return {"library": "fastmlp", "version": __version__, "revision": FORMAT_REVISION,
            "sizes": list(net.sizes), "input_shape": list(net.input_shape),
            "layers": [layer.config() for layer in net.layers],
            "activation": net.activation, "init": net.init, "dtype": net.dtype.name,
            "output": net.output, "loss": net.loss, "max_norm": net.max_norm,
            "seed": net.seed, "epochs_done": net.epochs_done,
            "train_config": net.train_config, "history": finite_json(net.history.to_dict())}


def arrays(net):
    """The parameters by file name: W0, b0, W1, ... (conv kernels as stored, (kh·kw·c_in,
    filters): every weight is 2-D in the file)."""
    out = {f"W{i}": W for i, W in enumerate(net._stored_weights())}
    out.update({f"b{i}": b for i, b in enumerate(net.biases)})
    return out


def save(net, path, kind="model", extra_arrays=None, **extra_meta):
    """Write ``net`` to ``path`` atomically: a failed save keeps the previous file."""
    save_arrays(path, dict(arrays(net), **(extra_arrays or {})),
                dict(meta(net), kind=kind, **extra_meta))


def load(cls, path, backend="numba"):
    """(network of class ``cls``, arrays, metadata) read from ``path``: a model, a checkpoint
    or an estimator's file."""
    stored, info = load_arrays(path)
    net = from_meta(cls, info, path, backend)
    take_arrays(net, stored, path)
    return net, stored, info


def from_meta(cls, info, path, backend):
    """The network ``info`` describes, parameters not yet set; any inconsistency is a
    :class:`ModelFormatError` naming ``path``."""
    from .callbacks import History
    from .layers import from_config
    try:
        revision = info.get("revision", 1)
        if revision not in (1, FORMAT_REVISION):
            raise ModelFormatError(
                f"{path}: saved by fastmlp {info.get('version')!r} in model revision "
                f"{revision!r}; this fastmlp {__version__} reads revisions 1 to "
                f"{FORMAT_REVISION}")
        common = dict(init=info["init"], dtype=info["dtype"], backend=backend,
                      seed=info["seed"], _initialise=False)
        if revision == 1:  # sizes + one activation, softmax cross-entropy
            sizes = info["sizes"]
            if not isinstance(sizes, list) or len(sizes) > 64:
                raise ValueError(f"sizes {sizes!r}")
            net = cls(sizes, activation=info["activation"], **common)
        else:
            layers = info["layers"]
            if not isinstance(layers, list) or not 0 < len(layers) <= 256:
                raise ValueError(f"layers {layers!r}")
            net = cls([from_config(c) for c in layers], activation=info["activation"],
                      input_shape=tuple(info["input_shape"]), output=info["output"],
                      loss=info["loss"], max_norm=info["max_norm"], **common)
        if info["sizes"] != list(net.sizes):
            raise ValueError(f"sizes {info['sizes']!r} do not match the layers "
                             f"{list(net.sizes)}")
        net.epochs_done = check_int(info.get("epochs_done", 0), "epochs_done", 0)
        h = info.get("history") or {}
        net.history = History(h.get("history"), h.get("epoch"), h.get("params"))
        net.train_config = dict(info.get("train_config") or {})
    except ModelFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFormatError(f"{path}: inconsistent model metadata ({exc})") from None
    return net


def take_arrays(net, stored, path):
    """Set ``net``'s parameters from ``stored``, every array checked against the architecture."""
    weights, biases = [], []
    for i, shape in enumerate(net._stored_shapes()):
        weights.append(checked_array(stored, f"W{i}", shape, net.dtype, path, net.sizes))
        biases.append(checked_array(stored, f"b{i}", shape[1:], net.dtype, path, net.sizes))
    net._set_parameters(weights, biases)


def checked_array(stored, name, shape, dtype, path, sizes, missing="array"):
    """``stored[name]``, refused unless present, of ``shape`` and ``dtype``, and finite."""
    if name not in stored:
        raise ModelFormatError(f"{path}: {missing} {name} is missing" if missing == "array"
                               else f"{path}: {missing} {name}")
    arr = stored[name]
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ModelFormatError(f"{path}: {name} is {arr.dtype} {arr.shape}, expected {dtype} "
                               f"{tuple(shape)} for sizes {list(sizes)}")
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{path}: {name} contains NaN or infinite values")
    return arr


def finite_json(obj):
    """JSON has no NaN: missing metrics (no validation data) are stored as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
