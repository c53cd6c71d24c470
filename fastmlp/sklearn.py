"""``FastMLPClassifier``: fastmlp as a scikit-learn estimator, with MLPClassifier's parameter
names where they mean the same, plus dropout, class weights, dtype and backend.

It pickles (for joblib, GridSearchCV) like any estimator; ``save``/``load`` write and read
fastmlp's own pickle-free model file instead, with the estimator's parameters, classes and
fitted attributes in its metadata.
"""
import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .callbacks import EarlyStopping
from .errors import ModelFormatError
from .fit_config import FitConfig
from . import model_file, training
from .model_file import finite_json
from .network import Network
from .serialization import load_arrays
from .validation import is_finite_number
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

SOLVERS = ("lbfgs", "sgd", "adam", "adamw", "rmsprop", "adagrad")


def _stochastic_solver(estimator):
    if estimator.solver == "lbfgs":
        raise AttributeError(f"partial_fit is only available for stochastic optimizers; "
                             f"solver={estimator.solver!r} is not one")
    return True


class FastMLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier trained by fastmlp's fused kernels.

    Parameters as in :class:`sklearn.neural_network.MLPClassifier`: ``hidden_layer_sizes``,
    ``activation`` ("relu", "logistic", "tanh"), ``solver`` ("sgd", "adam", "adamw",
    "rmsprop", "adagrad"), ``alpha`` (L2 penalty), ``batch_size`` ("auto" = min(200, n)),
    ``learning_rate_init``, ``momentum``, ``nesterovs_momentum``, ``max_iter`` (epochs),
    ``shuffle``, ``random_state``, ``early_stopping``, ``validation_fraction``,
    ``n_iter_no_change``, ``tol``, ``warm_start``, ``verbose``, ``max_fun``; and fastmlp's own
    ``dropout``, ``dtype``, ``backend``, ``class_weight`` (None, "balanced" or {class: weight}).

    ``solver="lbfgs"`` (MLPClassifier's choice for small data) minimises the full-batch loss
    with SciPy's L-BFGS-B, the loss and gradient computed by the compiled training step, in
    float64 whatever ``dtype`` says (L-BFGS-B's own precision); ``max_iter`` counts its
    iterations, ``max_fun`` its loss evaluations, ``tol`` its gradient tolerance. Its sample
    weights are equivalent to repeating samples, as MLPClassifier's are.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=1e-4,
                 batch_size="auto", learning_rate_init=1e-3, momentum=0.9,
                 nesterovs_momentum=True, max_iter=200, shuffle=True, random_state=None,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4,
                 warm_start=False, verbose=False, dropout=0.0, dtype="float32", backend="numba",
                 class_weight=None, max_fun=15000):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.verbose = verbose
        self.dropout = dropout
        self.dtype = dtype
        self.backend = backend
        self.class_weight = class_weight
        self.max_fun = max_fun

    # ---- settings, validated before any training -------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
               for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        acts = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh"}
        if self.activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, got {self.solver!r}")
        for name in ("alpha", "tol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if isinstance(self.max_fun, bool) or not isinstance(self.max_fun, (int, np.integer)) \
                or self.max_fun < 1:
            raise ValueError(f"max_fun must be an integer >= 1, got {self.max_fun!r}")
        if self.solver == "lbfgs" and self.dropout:
            raise ValueError(f"dropout={self.dropout!r} needs a stochastic solver; "
                             f"solver='lbfgs' minimises one deterministic full-batch loss")
        if not isinstance(self.n_iter_no_change, (int, np.integer)) or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be an integer >= 1, got "
                             f"{self.n_iter_no_change!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(
                self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1, got "
                             f"{self.batch_size!r}")
        try:  # (np.dtype parses some strings with ast: "float3,2" is a SyntaxError)
            dtype = np.dtype(self.dtype)
        except Exception:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return [int(s) for s in sizes], acts[self.activation]

    def _optimizer(self, batch_size):
        lr = self.learning_rate_init
        decay = self.alpha / batch_size  # scikit-learn's L2 term alpha/(2 n_batch) ||W||^2
        if self.solver == "sgd":
            return SGD(lr, self.momentum, nesterov=bool(self.nesterovs_momentum and
                                                        self.momentum > 0), weight_decay=decay)
        if self.solver == "adam":
            return Adam(lr, weight_decay=decay)
        if self.solver == "adamw":
            return AdamW(lr, weight_decay=decay)
        return (RMSprop if self.solver == "rmsprop" else Adagrad)(lr, weight_decay=decay)

    def _net_dtype(self):
        return "float64" if self.solver == "lbfgs" else self.dtype

    def _seed(self):
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().generate_state(1)[0])
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2 ** 31 - 1))
        return int(rs)

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        return self._fit(X, y, sample_weight, epochs=self.max_iter, incremental=False)

    @available_if(_stochastic_solver)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y); the first call needs ``classes`` (all the labels there are).
        Each call starts the optimizer's state afresh. Not with ``solver="lbfgs"``."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self.classes_ = np.unique(classes)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {np.unique(classes)!r} differ from the first call's "
                             f"{self.classes_!r}")
        return self._fit(X, y, sample_weight, epochs=1, incremental=True)

    def _fit(self, X, y, sample_weight, epochs, incremental):
        sizes, activation = self._check_params()
        first = not (incremental and hasattr(self, "net_")) and not (
            self.warm_start and hasattr(self, "net_"))
        X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if not incremental:
            classes = np.unique(y)
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"warm_start: y has classes {classes!r}, the model "
                                 f"{self.classes_!r}")
            self.classes_ = classes
        if not np.isin(y, self.classes_).all():
            raise ValueError(f"y holds labels outside classes_ {self.classes_!r}")
        y_index = np.searchsorted(self.classes_, y)
        n = X.shape[0]
        n_train = n - int(round(n * self.validation_fraction)) if (
            self.early_stopping and not incremental) else n
        if n_train < 1 or n_train == n and self.early_stopping and not incremental:
            raise ValueError(f"early_stopping with validation_fraction="
                             f"{self.validation_fraction} needs more than {n} samples")
        batch = min(200 if self.batch_size == "auto" else int(self.batch_size), n_train)
        weights = None
        if sample_weight is not None or self.class_weight is not None:
            weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
            if weights.shape != (n,):
                raise ValueError(f"sample_weight must have shape ({n},), got {weights.shape}")
            if self.class_weight is not None:
                weights = weights * compute_sample_weight(self.class_weight, y)
            if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() == 0:
                raise ValueError("sample_weight must be finite, >= 0 and not all zero")
        if first:
            n_classes = max(len(self.classes_), 2)
            self.net_ = Network([X.shape[1], *sizes, n_classes], activation=activation,
                                init="xavier" if activation != "relu" else "he",
                                dtype=self._net_dtype(), backend=self.backend,
                                seed=self._seed(), dropout=self.dropout)
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_loss_ = np.inf if not self.early_stopping else None
            self.best_validation_score_ = None
            self.n_iter_ = 0
        if self.solver == "lbfgs":
            return self._fit_lbfgs(X, y_index, weights)
        callbacks, kwargs = [], {}
        if self.early_stopping and not incremental:
            stop = EarlyStopping("val_accuracy", patience=self.n_iter_no_change,
                                 min_delta=self.tol, restore_best=True)
            callbacks.append(stop)
            kwargs["validation_split"] = self.validation_fraction
        elif not incremental:
            stop = EarlyStopping("loss", patience=self.n_iter_no_change, min_delta=self.tol,
                                 restore_best=False)
            callbacks.append(stop)
        config = FitConfig(epochs=epochs, batch_size=batch, optimizer=self._optimizer(batch),
                           shuffle=bool(self.shuffle), verbose=2 if self.verbose else 0,
                           callbacks=callbacks, **kwargs)
        history = training.fit(self.net_, X, y_index, config, sample_weight=weights)
        h = history.history
        self.loss_curve_ += list(h["loss"])
        self.n_iter_ += len(history.epoch)
        if self.early_stopping and not incremental:
            self.validation_scores_ += list(h["val_accuracy"])
            self.best_validation_score_ = max(self.validation_scores_)
        else:
            self.best_loss_ = min(self.loss_curve_)
        if not incremental and history.stopped is None and epochs == self.max_iter:
            warnings.warn(f"FastMLPClassifier: max_iter={self.max_iter} reached and the "
                          f"optimization has not converged yet.", ConvergenceWarning)
        return self

    def _fit_lbfgs(self, X, y_index, sample_weight):
        """Full-batch L-BFGS-B over the compiled step's loss and gradient (float64, through
        ``training.GradientStep``). Loss and gradient are weighted as MLPClassifier's:
        sum(w_i loss_i) / sum(w) + alpha/2 ||W||^2 / sum(w)."""
        import scipy.optimize
        from . import kernels as K
        from .training import GradientStep, one_blas_thread
        net = self.net_
        n = X.shape[0]
        X = np.ascontiguousarray(X, np.float64)
        y_index = np.ascontiguousarray(y_index, np.int64)
        weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        total = float(weights.sum())
        params = net._params()
        # the step divides the gradient by n: weights * n / total make it sum(w g) / sum(w)
        plan = net._plan(sample_weight=weights * (n / total))
        gradient_step = GradientStep(net, params, plan, n)
        order = np.arange(n, dtype=np.int64)
        layers = net._param_layers
        arrays = [params.W[l] for l in layers] + [params.b[l] for l in layers]
        sizes = np.cumsum([0] + [a.size for a in arrays])
        last = len(net.layers) - 1
        rows = np.arange(n)
        curve = []

        def loss_grad(theta):
            for a, lo, hi in zip(arrays, sizes[:-1], sizes[1:]):
                a.reshape(-1)[:] = theta[lo:hi]
            gW, gb = gradient_step(X, y_index, order, 0)
            grads = [gW[l] for l in layers] + [gb[l] for l in layers]
            logits = gradient_step.ws.acts[last][:n]
            top = logits.max(axis=1)
            log_sum = np.log(np.exp(logits - top[:, None]).sum(axis=1)) + top
            loss = float(weights @ (log_sum - logits[rows, y_index])) / total
            grad = np.concatenate([g.reshape(-1) for g in grads])
            for k, l in enumerate(layers):  # L2 on the weights, never the biases
                W = params.W[l]
                loss += 0.5 * self.alpha * float(np.dot(W.reshape(-1), W.reshape(-1))) / total
                grad[sizes[k]:sizes[k + 1]] += (self.alpha / total) * W.reshape(-1)
            return loss, grad

        start = np.concatenate([a.reshape(-1) for a in arrays])
        with one_blas_thread(net.backend == "numba" and K.layers_use_threads(params, plan)):
            result = scipy.optimize.minimize(
                loss_grad, start, method="L-BFGS-B", jac=True,
                callback=lambda intermediate_result: curve.append(float(intermediate_result.fun)),
                options={"maxfun": int(self.max_fun), "maxiter": int(self.max_iter),
                         "gtol": float(self.tol)})
        for a, lo, hi in zip(arrays, sizes[:-1], sizes[1:]):
            a.reshape(-1)[:] = result.x[lo:hi]
        net._set_parameters([params.W[l] for l in layers], [params.b[l] for l in layers])
        self.loss_ = float(result.fun)
        self.loss_curve_ += curve
        self.n_iter_ += len(curve)
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else self.loss_
        if result.status != 0:
            warnings.warn(f"FastMLPClassifier: lbfgs stopped before converging "
                          f"({result.message}); increase max_iter or max_fun, or scale the "
                          f"data", ConvergenceWarning)
        return self

    # ---- inference -----------------------------------------------------------------------------
    def _input(self, X):
        check_is_fitted(self, "net_")
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def predict_proba(self, X):
        X = self._input(X)
        proba = self.net_.predict_proba(X).astype(np.float64)
        return proba[:, :len(self.classes_)] if len(self.classes_) > 1 else proba[:, :1] * 0 + 1

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        X = self._input(X)
        if len(self.classes_) == 1:
            return np.full(X.shape[0], self.classes_[0])
        return self.classes_[self.net_.predict(X)]

    def to_onnx(self, path=None, opset=None):
        """The fitted estimator as an ONNX model with outputs ``label`` and ``probabilities``
        (as skl2onnx exports MLPClassifier with ``zipmap=False``), written atomically to
        ``path`` when given; needs ``pip install 'fastmlp[onnx]'``."""
        check_is_fitted(self, "net_")
        from .onnx_export import export_classifier
        return export_classifier(self, path, opset)

    # ---- files --------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted estimator to ``path`` (.npz) atomically, without pickle: the
        network's model file plus the parameters, ``classes_`` and fitted attributes."""
        check_is_fitted(self, "net_")
        params = self.get_params()
        if params["random_state"] is not None and not isinstance(params["random_state"],
                                                                  (int, np.integer)):
            params["random_state"] = None  # a RandomState object is not part of the file
        weights = params["class_weight"]
        if isinstance(weights, dict):
            params["class_weight"] = {"classes": [_label(k) for k in weights],
                                      "weights": [float(v) for v in weights.values()]}
        params["hidden_layer_sizes"] = np.atleast_1d(params["hidden_layer_sizes"]).tolist()
        names = getattr(self, "feature_names_in_", None)
        fitted = {"classes": [_label(c) for c in self.classes_],
                  "n_features_in": int(self.n_features_in_),
                  "feature_names_in": None if names is None else [str(n) for n in names],
                  "loss_curve": [float(v) for v in self.loss_curve_],
                  "validation_scores": None if self.validation_scores_ is None
                  else [float(v) for v in self.validation_scores_],
                  "best_loss": finite_json(self.best_loss_),
                  "best_validation_score": finite_json(self.best_validation_score_),
                  "n_iter": int(self.n_iter_)}
        model_file.save(self.net_, path, kind="estimator",
                        estimator={"class": type(self).__name__, "params": params,
                                   "fitted": fitted})

    @classmethod
    def load(cls, path, backend=None):
        """Read an estimator written by :meth:`save` (never unpickles); every field is checked
        and a bad one is a ``ModelFormatError`` naming it. ``backend`` overrides the saved
        one."""
        arrays, meta = load_arrays(path)
        if meta.get("kind") != "estimator":
            raise ModelFormatError(f"{path}: not a FastMLPClassifier file (kind "
                                   f"{meta.get('kind')!r})")
        try:
            saved = meta["estimator"]
            params, fitted = dict(saved["params"]), dict(saved["fitted"])
            params.setdefault("max_fun", 15000)  # files from before solver="lbfgs"
            if saved["class"] != cls.__name__ or set(params) != set(cls().get_params()):
                raise ValueError(f"estimator {saved['class']!r} with parameters "
                                 f"{sorted(params)!r}")
            weights = params["class_weight"]
            if isinstance(weights, dict):
                if len(weights["classes"]) != len(weights["weights"]):
                    raise ValueError("class_weight: as many classes as weights")
                params["class_weight"] = dict(zip(map(_checked_label, weights["classes"]),
                                                  weights["weights"]))
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
            clf = cls(**params)
            if backend is not None:
                clf.backend = backend
            sizes, activation = clf._check_params()
            net = model_file.from_meta(Network, meta, path, clf.backend)
            classes = [_checked_label(c) for c in fitted["classes"]]
            kinds = {type(c) for c in classes}
            if not classes or len(kinds) > 1 or sorted(set(classes)) != classes:
                raise ValueError("classes must be sorted, unique labels of one type")
            n_features = fitted["n_features_in"]
            expected = [n_features, *sizes, max(len(classes), 2)]
            if (list(net.sizes) != expected or net.activation != activation
                    or net.dtype != np.dtype(clf._net_dtype())):
                raise ValueError(f"network {list(net.sizes)} {net.activation} {net.dtype}, the "
                                 f"parameters and classes give {expected} {activation} "
                                 f"{clf._net_dtype()}")
            names = fitted["feature_names_in"]
            if names is not None and (not isinstance(names, list) or len(names) != n_features
                                      or not all(isinstance(n, str) for n in names)):
                raise ValueError(f"feature_names_in: {n_features} names expected")
            curve, scores = fitted["loss_curve"], fitted["validation_scores"]
            n_iter = fitted["n_iter"]
            if (not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 0
                    or not _numbers(curve) or len(curve) != n_iter
                    or scores is not None and (not _numbers(scores) or len(scores) != n_iter)):
                raise ValueError("n_iter, loss_curve and validation_scores must agree")
            best_loss, best_score = fitted["best_loss"], fitted["best_validation_score"]
            if not all(v is None or _numbers([v]) for v in (best_loss, best_score)):
                raise ValueError("best_loss and best_validation_score must be numbers or null")
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ModelFormatError(f"{path}: inconsistent estimator metadata ({exc})") from None
        model_file.take_arrays(net, arrays, path)
        clf.net_ = net
        clf.classes_ = np.array(classes)
        clf.n_features_in_ = n_features
        if names is not None:
            clf.feature_names_in_ = np.array(names, dtype=object)
        clf.loss_curve_ = list(curve)
        clf.validation_scores_ = None if scores is None else list(scores)
        clf.best_loss_ = best_loss
        clf.best_validation_score_ = best_score
        clf.n_iter_ = n_iter
        return clf

    # ---- scikit-learn's names for the parameters ---------------------------------------------
    @property
    def coefs_(self):
        check_is_fitted(self, "net_")
        return [w.astype(np.float64) for w in self.net_.weights]

    @property
    def intercepts_(self):
        check_is_fitted(self, "net_")
        return [b.astype(np.float64) for b in self.net_.biases]

    @property
    def n_layers_(self):
        return len(self.net_.sizes)

    @property
    def n_outputs_(self):
        return self.net_.n_classes

    out_activation_ = "softmax"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _label(value):
    """A class label as JSON holds it (numpy scalars as Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _checked_label(value):
    if not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"class label {value!r}: a string, an integer or a finite number")
    return value


def _numbers(values):
    return isinstance(values, list) and all(is_finite_number(v) for v in values)
