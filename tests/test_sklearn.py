"""FastMLPClassifier: scikit-learn's own estimator checks, and the estimator in use."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmlp.sklearn import FastMLPClassifier

# The checks that scikit-learn itself runs on MLPClassifier with solver="lbfgs" (its
# PER_ESTIMATOR_CHECK_PARAMS): weight 2 equals a repeated sample for a full-batch solver, never
# under shuffled minibatches.
LBFGS_CHECKS = ("check_sample_weight_equivalence_on_dense_data",
                "check_sample_weight_equivalence_on_sparse_data")


@parametrize_with_checks([FastMLPClassifier(max_iter=60, random_state=0),
                          FastMLPClassifier(solver="lbfgs", max_iter=200, random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name in LBFGS_CHECKS:
        estimator = clone(estimator).set_params(solver="lbfgs", max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_lbfgs_learns_digits_and_its_weights_equal_repeated_samples(digits, tmp_path):
    X, Xt, y, yt = digits
    clf = FastMLPClassifier(hidden_layer_sizes=(32,), solver="lbfgs", max_iter=300,
                            random_state=0).fit(X, y)
    assert clf.score(Xt, yt) > 0.93
    assert clf.net_.dtype == np.float64 and clf.n_iter_ == len(clf.loss_curve_) <= 300
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] and clf.loss_ == pytest.approx(
        clf.loss_curve_[-1])
    clf.save(tmp_path / "lbfgs.npz")
    again = FastMLPClassifier.load(tmp_path / "lbfgs.npz")
    np.testing.assert_array_equal(again.predict_proba(Xt), clf.predict_proba(Xt))
    assert not hasattr(clf, "partial_fit")  # as MLPClassifier's lbfgs
    with pytest.raises(ValueError, match="dropout"):
        FastMLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, len(y))
    weighted = FastMLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=50,
                                 random_state=0).fit(X, y, sample_weight=weights)
    repeated = FastMLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=50,
                                 random_state=0).fit(X.repeat(weights, axis=0),
                                                     y.repeat(weights))
    np.testing.assert_allclose(weighted.predict_proba(Xt), repeated.predict_proba(Xt),
                               rtol=1e-5, atol=1e-7)


def test_lbfgs_gradient_matches_finite_differences():
    """The compiled step's full-batch gradient, weighted, with the L2 term, is the derivative
    of the loss L-BFGS-B is given."""
    from scipy.optimize import check_grad
    rng = np.random.default_rng(3)
    X = rng.random((40, 12))
    y = rng.integers(0, 3, 40)
    weights = rng.integers(0, 4, 40).astype(float)
    clf = FastMLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=1, alpha=0.1,
                            random_state=0)
    captured = {}
    import scipy.optimize

    def capture(fun, x0, **kwargs):
        captured["fun"], captured["x0"] = fun, x0.copy()
        return original(fun, x0, **kwargs)

    original = scipy.optimize.minimize
    scipy.optimize.minimize = capture
    try:
        clf.fit(X, y, sample_weight=weights)
    finally:
        scipy.optimize.minimize = original
    fun, x0 = captured["fun"], captured["x0"]
    error = check_grad(lambda t: fun(t)[0], lambda t: fun(t)[1], x0, epsilon=1e-6)
    assert error < 1e-5 * max(1.0, np.linalg.norm(fun(x0)[1]))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0)


def test_learns_digits_with_string_labels_and_attributes(digits):
    X, Xt, y, yt = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    clf = FastMLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0)
    clf.fit(X, names[y])
    assert clf.score(Xt, names[yt]) > 0.95
    assert list(clf.classes_) == sorted(names)
    assert clf.n_features_in_ == 64 and clf.n_iter_ == len(clf.loss_curve_) <= 100
    assert [w.shape for w in clf.coefs_] == [(64, 64), (64, 10)]
    assert [b.shape for b in clf.intercepts_] == [(64,), (10,)]
    assert clf.best_loss_ == min(clf.loss_curve_)
    p = clf.predict_proba(Xt)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xt)), p, rtol=1e-6)


def test_early_stopping_and_noncontiguous_labels(digits):
    X, Xt, y, yt = digits
    clf = FastMLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                            max_iter=200, random_state=1)
    clf.fit(X, y * 10 + 5)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert set(clf.predict(Xt)) <= set(y * 10 + 5)


def test_pipeline_grid_search_cross_val_and_pickle(digits):
    X, Xt, y, yt = digits
    pipe = make_pipeline(MinMaxScaler(), FastMLPClassifier(max_iter=30, random_state=0))
    grid = GridSearchCV(pipe, {"fastmlpclassifier__hidden_layer_sizes": [(16,), (48,)]},
                        cv=3, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["fastmlpclassifier__hidden_layer_sizes"] in [(16,), (48,)]
    assert grid.score(Xt, yt) > 0.9
    scores = cross_val_score(FastMLPClassifier(max_iter=30, random_state=0), X, y, cv=3)
    assert scores.mean() > 0.9
    clone = pickle.loads(pickle.dumps(grid.best_estimator_))
    np.testing.assert_array_equal(clone.predict(Xt), grid.predict(Xt))


def test_partial_fit_class_weight_and_bad_settings(digits):
    X, Xt, y, yt = digits
    clf = FastMLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be given"):
        clf.partial_fit(X, y)
    for _ in range(20):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert clf.n_iter_ == 20 and clf.score(Xt, yt) > 0.9
    # class weights: class 0 weighted up is predicted more often
    plain = FastMLPClassifier((8,), max_iter=5, random_state=0, solver="sgd",
                              learning_rate_init=0.05).fit(X, y)
    heavy = FastMLPClassifier((8,), max_iter=5, random_state=0, solver="sgd",
                              learning_rate_init=0.05, class_weight={0: 20.0}).fit(X, y)
    assert (heavy.predict(Xt) == 0).sum() > (plain.predict(Xt) == 0).sum()
    for bad, message in (({"solver": "newton"}, "solver must be one of"),
                         ({"activation": "softplus"}, "activation must be one of"),
                         ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be"),
                         ({"alpha": -1.0}, "alpha must be"),
                         ({"dtype": "float3,2"}, "dtype must be 'float32' or 'float64'"),
                         ({"dtype": "int8"}, "dtype must be 'float32' or 'float64'")):
        with pytest.raises(ValueError, match=message):
            FastMLPClassifier(**bad).fit(X, y)


def _fitted_attributes(clf):
    return {k: getattr(clf, k) for k in ("n_features_in_", "loss_curve_", "validation_scores_",
                                         "best_loss_", "best_validation_score_", "n_iter_")}


@pytest.mark.parametrize("case", ["string-labels-and-names", "early-stopping-class-weight"])
def test_save_and_load_without_pickle(digits, tmp_path, case):
    import pandas as pd

    from fastmlp import Network
    from fastmlp.errors import ModelFormatError
    X, Xt, y, yt = digits
    columns = [f"pixel{i}" for i in range(64)]
    if case == "string-labels-and-names":
        labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                           "eight", "nine"])
        X, Xt, y, yt = (pd.DataFrame(X, columns=columns), pd.DataFrame(Xt, columns=columns),
                        labels[y], labels[yt])
        clf = FastMLPClassifier((32,), max_iter=15, random_state=0)
    else:
        y, yt = y * 10 + 5, yt * 10 + 5
        clf = FastMLPClassifier((16, 8), activation="tanh", solver="sgd", early_stopping=True,
                                class_weight={5: 2.0, 95: 0.5}, dtype="float64", max_iter=15,
                                random_state=np.random.RandomState(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    path = tmp_path / "clf.npz"
    clf.save(path)
    with np.load(path, allow_pickle=False) as members:  # no member needs pickle to read
        assert all(members[name] is not None for name in members.files)
    back = FastMLPClassifier.load(path)
    np.testing.assert_array_equal(back.predict(Xt), clf.predict(Xt))
    np.testing.assert_array_equal(back.predict_proba(Xt), clf.predict_proba(Xt))
    assert back.score(Xt, yt) == clf.score(Xt, yt)
    assert list(back.classes_) == list(clf.classes_)
    assert _fitted_attributes(back) == _fitted_attributes(clf)
    params = clf.get_params()
    if case != "string-labels-and-names":
        params["random_state"] = None  # a RandomState object is not saved
    assert back.get_params() == params
    if case == "string-labels-and-names":
        assert list(back.feature_names_in_) == columns
        with pytest.raises(ValueError, match="feature names"):
            back.predict(Xt.rename(columns={"pixel0": "x"}))
    with warnings.catch_warnings():  # it goes on training from where it was
        warnings.simplefilter("ignore")
        back.set_params(warm_start=True, max_iter=2).fit(X, y)
    assert back.n_iter_ == clf.n_iter_ + 2
    Network([4, 3]).save(tmp_path / "net.npz")
    with pytest.raises(ModelFormatError, match="not a FastMLPClassifier file"):
        FastMLPClassifier.load(tmp_path / "net.npz")
