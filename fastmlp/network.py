"""The Network: a thin, validated API over the kernels in :mod:`fastmlp.kernels`. Training runs
in :mod:`fastmlp.training`, inference in :mod:`fastmlp.inference`, files in
:mod:`fastmlp.model_file` and :mod:`fastmlp.checkpoint`."""
import math

import numpy as np

from . import inference, model_file, training
from . import kernels as K
from .callbacks import History
from .fit_config import FitConfig
from .initializers import INITS
from .layers import LEARNED_KINDS, build_layers
from .validation import check_choice, check_features, check_int, check_labels

DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = ("numba", "numpy")
OUTPUTS = ("softmax", "sigmoid")
LOSSES = ("cross_entropy", "quadratic")
FORMAT_REVISION = model_file.FORMAT_REVISION
__all__ = ["Network", "History"]


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
        self.activation = check_choice(activation, "activation",
                                       set(K.ACTIVATION_CODES) - {"identity"})
        self.layers, shape = build_layers(sizes, self.activation, dropout, input_dropout,
                                          input_shape)
        self.input_shape = shape
        # each layer's input and output shapes: a layer that cannot take its input says so
        self._in_shapes, self._shapes = [], []
        for layer in self.layers:
            self._in_shapes.append(shape)
            shape = layer.output_shape(shape)
            self._shapes.append(shape)
        self.n_features = math.prod(self.input_shape)
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
        self.sizes = (self.n_features,) + tuple(w for l, w in zip(self.layers, self._widths)
                                                if l.kind in LEARNED_KINDS)
        self._W = [np.zeros((0, 0), self.dtype)] * len(self.layers)
        self._b = [np.zeros(0, self.dtype)] * len(self.layers)
        if _initialise:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
            for l, shape in self._param_shapes():
                if self.layers[l].kind not in LEARNED_KINDS:  # batch normalization
                    self._W[l], self._b[l] = self.layers[l].initial_weights(shape, self.dtype)
                    continue
                fan_in, fan_out = self._fans(l)
                self._W[l] = INITS[init](rng, shape, fan_in, fan_out).astype(self.dtype)
                self._b[l] = np.zeros(shape[1], self.dtype)
        self.epochs_done = 0
        self.history = History()
        self.train_config = {}

    # ---- parameters and the layer table ------------------------------------------------------
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
        place; a conv kernel as (kh, kw, c_in, filters), Keras' layout; a BatchNormalization
        layer's as rows (γ, moving mean, moving variance)."""
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

    def _stored_weights(self):
        """The weights as the kernels and model files hold them: 2-D, (fan_in, units)."""
        return [self._W[l] for l in self._param_layers]

    def _stored_shapes(self):
        return [shape for _, shape in self._param_shapes()]

    def _set_parameters(self, weights, biases):
        """Take (contiguous copies of) 2-D ``weights`` and ``biases``, one per parameter layer."""
        for l, W, b in zip(self._param_layers, weights, biases):
            self._W[l], self._b[l] = np.ascontiguousarray(W), np.ascontiguousarray(b)
        inference.forget_sessions(self)

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
                inference.forget_sessions(self)
        return K.make_params(self._W, self._b, self.dtype)

    def __getstate__(self):  # pickle, copy: inference sessions (locks, buffers), thread tuners
        state = dict(self.__dict__)  # stay behind
        state.pop("_inference_sessions", None)
        state.pop("_thread_tuners", None)
        return state

    def _plan(self, sparse_input=False, sample_weight=None, augment=None,
              threaded_min=K.THREADED_MIN_WEIGHTS, either_path=False, label_smoothing=0.0):
        kinds = [K.LAYER_KINDS[layer.kind] for layer in self.layers]
        acts = [K.ACTIVATION_CODES[getattr(layer, "activation", None) or "identity"]
                for layer in self.layers]
        rates = [getattr(layer, "rate", 0.0) for layer in self.layers]
        max_norms = [self.max_norm if self.max_norm and layer.kind in LEARNED_KINDS and
                     l != len(self.layers) - 1 else 0.0 for l, layer in enumerate(self.layers)]
        geoms = [layer.geometry(shape) for layer, shape in zip(self.layers, self._in_shapes)]
        norms = [(layer.momentum, layer.epsilon) if layer.kind == "batchnorm" else None
                 for layer in self.layers]
        loss = K.loss_rule(self._loss_code, smoothing=label_smoothing)
        return K.make_plan(kinds, acts, rates, max_norms, loss, sparse_input,
                           self.seed, self.dtype, sample_weight,
                           widths=self._widths, geoms=geoms, augment=augment,
                           threaded_min=threaded_min, norms=norms, either_path=either_path)

    def __repr__(self):
        return (f"Network({list(self.sizes)}, layers={self.layers!r}, init={self.init!r}, "
                f"dtype={self.dtype.name!r}, backend={self.backend!r}, seed={self.seed})")

    # ---- inference ---------------------------------------------------------------------------
    def _input(self, X):
        return check_features(X, self.n_features, self.dtype, input_shape=self.input_shape)

    def predict_proba(self, X):
        """The output layer's activations, shape (n, n_classes): softmax rows sum to 1;
        sigmoid outputs are one probability per class."""
        return inference.predict_proba(self, self._input(X))

    def predict(self, X):
        """Predicted class labels, shape (n,), int64."""
        return inference.predict(self, self._input(X))

    def evaluate(self, X, y):
        """{"loss": the mean training loss, "accuracy": fraction classified right}."""
        X = self._input(X)
        return inference.evaluate(self, X, check_labels(y, X.shape[0], self.n_classes))

    # ---- training ----------------------------------------------------------------------------
    def epoch_order(self, epoch, n, shuffle=True):
        """The sample order of a given epoch: a function of (seed, epoch) only, so a resumed
        run sees exactly the minibatches an uninterrupted one would."""
        if not shuffle:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch]))
        return rng.permutation(n).astype(np.int64, copy=False)

    def fit(self, X, y, epochs=10, batch_size=256, lr=0.1, momentum=0.9, weight_decay=0.0,
            validation_data=None, shuffle=True, verbose=1, checkpoint=None, resume=None,
            callbacks=(), optimizer=None, initial_epoch=None, validation_split=0.0,
            lr_schedule=None, momentum_schedule=None, sample_weight=None, augment=None,
            label_smoothing=0.0):
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
        ``label_smoothing`` (ε in [0, 1), softmax + cross-entropy only) trains against targets
        of 1 - ε on the label plus ε / classes on every class, as PyTorch's
        ``CrossEntropyLoss(label_smoothing=ε)`` and Keras' ``CategoricalCrossentropy``; the
        training loss is the smoothed one, ``evaluate`` and the validation loss stay plain.

        The settings are checked first, as a :class:`fastmlp.fit_config.FitConfig`.
        """
        config = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                           weight_decay=weight_decay, shuffle=shuffle, verbose=verbose,
                           checkpoint=checkpoint, resume=resume, callbacks=callbacks,
                           optimizer=optimizer, initial_epoch=initial_epoch,
                           validation_split=validation_split, lr_schedule=lr_schedule,
                           momentum_schedule=momentum_schedule, augment=augment,
                           label_smoothing=label_smoothing)
        return training.fit(self, X, y, config, validation_data, sample_weight)

    # ---- files -------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to path (.npz) atomically: a failed save keeps the previous file."""
        try:
            model_file.save(self, path)
        except OSError as exc:
            raise OSError(exc.errno, f"model {path} could not be saved ({exc.strerror or exc}); "
                                     f"the previous file there, if any, is kept") from exc

    @classmethod
    def load(cls, path, backend="numba"):
        """Read a model (or checkpoint) written by :meth:`save`; never unpickles."""
        return model_file.load(cls, path, backend)[0]

    def to_onnx(self, path=None, opset=None, flat_input=False):
        """The network as an ONNX model (an ``onnx.ModelProto``), written atomically to ``path``
        when given; needs ``pip install 'fastmlp[onnx]'``. Input ``input``: (N, features), or
        for an image network (N, height, width, channels) unless ``flat_input``; outputs
        ``probabilities`` and ``logits``. See :mod:`fastmlp.onnx_export`."""
        from .onnx_export import export_network
        return export_network(self, path, opset, flat_input)

    # ---- description -------------------------------------------------------------------------
    def _structure(self):
        """What a checkpoint must share with the network that resumes it."""
        from .checkpoint import structure
        return structure(self)

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
            rates = [layer.rate for layer in self.layers if layer.kind == "dropout"]
            details = [", ".join(sorted(acts))] if acts else []
            if rates:
                details.append("dropout " + "/".join(f"{r:g}" for r in rates))
            return ("-".join(map(str, self.sizes)) + " MLP"
                    + (f" ({'; '.join(details)})" if details else ""))
        return " > ".join(["x".join(map(str, self.input_shape))]
                          + [layer.label for layer in self.layers])

    def summary(self, print_fn=print):
        """A Keras-style table of layers, output shapes, parameters and multiply-adds."""
        rows, counts = [], {}
        for l, layer in enumerate(self.layers):
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            kind = type(layer).__name__
            if layer.kind in LEARNED_KINDS:
                act = layer.activation or (self.output if l == len(self.layers) - 1 else "linear")
                kind += f", {act}"
            elif layer.kind == "activation":
                kind += f" {layer.activation or 'linear'}"
            elif layer.kind == "dropout":
                kind += f" {layer.rate:g}"
            shape = "(None, " + ", ".join(map(str, self._shapes[l])) + ")"
            p = layer.param_shape(self._in_shapes[l])
            params = p[0] * p[1] + p[1] if p else 0
            rows.append((f"{layer.kind}_{counts[layer.kind]} ({kind})", shape, params,
                         layer.macs(self._in_shapes[l])))
        widths = (34, 22, 12, 16)
        header = ("Layer (type)", "Output Shape", "Param #", "MACs / sample")
        line = "=" * sum(widths)
        out = [f"Network: {self.architecture}, {self.dtype.name}, backend {self.backend}, "
               f"{self.output} + {self.loss.replace('_', '-')}", line,
               "".join(h.ljust(w) for h, w in zip(header, widths)), line]
        out += ["".join(str(c).ljust(w) for c, w in zip((r[0], r[1], f"{r[2]:,}", f"{r[3]:,}"),
                                                         widths)) for r in rows]
        out += [line, f"Total params: {sum(r[2] for r in rows):,}",
                f"Multiply-adds per sample: {sum(r[3] for r in rows):,}", line]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def count_params(self):
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases))

    def flops(self, n=1, input_density=1.0):
        """FLOPs of training on ``n`` samples (an epoch of n): per layer with parameters, the
        forward product and the weight gradient, and for all but the first the input gradient,
        2 FLOPs per multiply-add. ``input_density`` (the share of nonzero inputs) scales the
        first layer's two, the useful work of the zero-skipping first layer."""
        macs = [layer.macs(shape) for layer, shape in zip(self.layers, self._in_shapes)
                if layer.kind in LEARNED_KINDS]
        return 2 * n * (2 * input_density * macs[0] + 3 * sum(macs[1:]))
