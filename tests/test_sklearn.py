"""FastMLPClassifier: scikit-learn's own estimator checks, and the estimator in use."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmlp.sklearn import FastMLPClassifier

# Checks that a minibatch-SGD estimator cannot pass by design, with the reason.
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data":
        "weight 2 is not the same as a duplicated sample under shuffled minibatch SGD "
        "(MLPClassifier has no sample_weight at all)",
    "check_sample_weight_equivalence_on_sparse_data": "as above",
}


@parametrize_with_checks([FastMLPClassifier(max_iter=60, random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


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
    for bad, message in (({"solver": "lbfgs"}, "solver must be one of"),
                         ({"activation": "softplus"}, "activation must be one of"),
                         ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be"),
                         ({"alpha": -1.0}, "alpha must be")):
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
