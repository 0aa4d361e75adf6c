"""bnn_tune.plugins.sklearn.BNNClassifier: the sklearn estimator contract, label encoding, errors, search."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from bnn_tune import ConfigError
from bnn_tune.plugins.sklearn import BNNClassifier, _effective_batch_size, arrays_to_splits

# Small settings keep the ~55 sklearn checks at ~20 s; check_classifiers_train still demands
# > 83% training accuracy on blobs, which the binary MLP reaches in 5 epochs.
SMALL = dict(epochs=5, width=0.25)


@parametrize_with_checks([BNNClassifier(**SMALL)])
def test_sklearn_compatible_estimator(estimator, check):
    # every check passes; none is listed as an expected failure
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600], X[600:900], y[600:900]


def test_learns_digits_and_encodes_arbitrary_labels(digits):
    X, y, Xt, yt = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = BNNClassifier(epochs=6, width=0.5).fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    pred = clf.predict(Xt)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert clf.score(Xt, names[yt]) > 0.8
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xt)), proba, rtol=1e-10)
    # per-epoch metrics of the validation split are kept, flip rate included
    assert len(clf.history_) == 6 and {"val_acc", "flip_rate", "log_flip_rate"} <= set(clf.history_[-1])
    assert clf.fit_status_ == "completed"
    # the fitted estimator pickles and predicts the same afterwards
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict(Xt), pred)


def test_binary_weights_stay_binary_and_optimizer_params_reach_the_optimizer(digits):
    X, y, _, _ = digits
    clf = BNNClassifier(epochs=1, width=0.25, optimizer_params={"weight_decay": 0.01, "clip_value": 0.05})
    clf.fit(X, y)
    assert clf.config_.optimizer_params["weight_decay"] == 0.01
    assert clf.config_.optimizer_params["clip_value"] == 0.05
    assert clf.get_params()["optimizer_params"] == {"weight_decay": 0.01, "clip_value": 0.05}
    # the latent weights obey clip_value=0.05 (unclipped they reach ~0.1 in this epoch: the value reached
    # LatentAdam), and the binary layers compute with +-1 weights
    import torch

    from bnn_tune.nn import BinaryLinear, is_binary_parameter

    binary = [p for p in clf.model_.parameters() if is_binary_parameter(p)]
    assert binary and all(float(p.abs().max()) <= 0.05 + 1e-7 for p in binary)
    layers = [m for m in clf.model_.modules() if isinstance(m, BinaryLinear) and m.weight_quantizer is not None]
    assert layers
    for m in layers:
        wq = m.weight_quantizer(m.weight.detach())
        assert set(torch.unique(wq).tolist()) <= {-1.0, 1.0}


def test_pipeline_and_cross_validation(digits):
    X, y, _, _ = digits
    pipe = make_pipeline(MinMaxScaler(), BNNClassifier(epochs=8, batch_size=32, width=0.25))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.5


def test_set_params_and_clone():
    clf = BNNClassifier().set_params(epochs=3, optimizer_params={"weight_decay": 0.1})
    c = clone(clf)
    assert c.get_params()["epochs"] == 3 and c.get_params()["optimizer_params"] == {"weight_decay": 0.1}
    assert c is not clf


def test_conv_model_with_input_shape(digits):
    X, y, Xt, yt = digits
    clf = BNNClassifier(model="binarynet", input_shape=(1, 8, 8), width=0.0625, epochs=2, max_steps_per_epoch=5)
    clf.fit(X, y)
    assert clf.predict(Xt).shape == (len(Xt),)


def test_bad_values_raise_clear_errors(digits):
    X, y, _, _ = digits
    with pytest.raises(ConfigError, match="Unknown key 'weight_decy'"):
        BNNClassifier(epochs=1, optimizer_params={"weight_decy": 0.1}).fit(X, y)
    with pytest.raises(ValueError, match="are constructor arguments"):
        BNNClassifier(epochs=1, optimizer_params={"epochs": 2}).fit(X, y)
    with pytest.raises(ConfigError, match="`epochs` must be an integer >= 1"):
        BNNClassifier(epochs=0).fit(X, y)
    with pytest.raises(ValueError, match="`val_fraction` must be in"):
        BNNClassifier(val_fraction=1.0).fit(X, y)
    with pytest.raises(ValueError, match="`input_shape` must hold n_features=64"):
        BNNClassifier(epochs=1, input_shape=(1, 4, 4)).fit(X, y)
    with pytest.raises(ValueError, match="only 1 class"):
        BNNClassifier(epochs=1).fit(X[:10], np.zeros(10))


def test_effective_batch_size_never_leaves_a_single_sample_batch():
    for n in range(2, 200):
        for b in (1, 2, 7, 32, 64, 500):
            eff = _effective_batch_size(n, b)
            assert eff >= 1 and (n % eff != 1 or eff == 1 == n), (n, b, eff)
            if b > 1 and n % min(b, n) != 1:
                assert eff == min(b, n)


def test_arrays_to_splits_standardizes_with_training_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(100, 5))
    X[:, 4] = 7.0  # a constant feature maps to 0, not NaN
    s = arrays_to_splits(X, np.arange(100) % 3, num_classes=3, val_fraction=0.2, seed=1)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (80, 20, 0)
    np.testing.assert_allclose(s.x_train.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(s.x_train[:, :4].std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert (s.x_train[:, 4] == 0).all()
    # the same seed picks the same validation rows; a tiny set validates on its training rows
    t = arrays_to_splits(X, np.arange(100) % 3, num_classes=3, val_fraction=0.2, seed=1)
    assert (s.x_val == t.x_val).all()
    tiny = arrays_to_splits(X[:2], np.array([0, 1]), num_classes=2, val_fraction=0.5)
    assert len(tiny.y_train) == len(tiny.y_val) == 2


def test_optuna_search_cv_on_digits(digits):
    optuna = pytest.importorskip("optuna")
    optuna_integration = pytest.importorskip("optuna_integration")
    X, y, Xt, yt = digits
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = optuna_integration.OptunaSearchCV(
        BNNClassifier(epochs=6, batch_size=32, width=0.25),
        {
            "lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True),
            "depth": optuna.distributions.IntDistribution(1, 2),
        },
        cv=2, n_trials=3, random_state=0, refit=True,
    )
    search.fit(X, y)
    assert len(search.study_.trials) == 3
    assert set(search.best_params_) == {"lr", "depth"}
    assert search.best_score_ > 0.5
    assert search.score(Xt, yt) > 0.5
