"""scikit-learn estimator: a binarized network as a ``ClassifierMixin`` / ``BaseEstimator``.

:class:`BNNClassifier` wraps :func:`bnn_tune.fit` so a BNN can sit in a ``Pipeline``, be
cross-validated with ``cross_val_score`` and searched with ``GridSearchCV`` or
``optuna_integration.OptunaSearchCV``. Its constructor arguments are the flat config keys that
matter for a tabular problem (``optimizer``, ``model``, ``epochs``, ``batch_size``, ``lr``,
``width``, ``depth``, ``seed``...) plus ``optimizer_params``, a dict of the binary optimizer's
hyperparameters (e.g. ``{"gamma": 1e-3, "threshold": 1e-6}`` for Bop); every key is validated by
:class:`bnn_tune.TrialConfig`, so a misspelled hyperparameter raises at ``fit``.

:func:`arrays_to_splits` is the data helper behind ``fit``: it turns ``(X, y)`` arrays into a
:class:`bnn_tune.data.DataSplits` (inputs as ``(D,)`` vectors or a given ``input_shape``,
standardized with training statistics, a seeded validation split).

:class:`BNNClassifier` passes every check of scikit-learn 1.9's ``check_estimator`` (the test suite
runs them with ``parametrize_with_checks``); the sample-weight checks do not apply because ``fit``
takes no ``sample_weight``, and sklearn itself skips the array-API check unless
``SCIPY_ARRAY_API=1`` is set (inputs are converted to NumPy, then to torch).

Example:
    >>> from sklearn.datasets import load_digits
    >>> from bnn_tune.plugins.sklearn import BNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = BNNClassifier(epochs=2, width=0.25).fit(X[:400], y[:400])
    >>> clf.predict(X[:3]).shape
    (3,)

References:
    Hubara et al. 2016, "Binarized Neural Networks" (STE training, ``latent_adam``);
    Helwegen et al. 2019, "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
    Optimization" (Bop).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bnn_tune.data import DataSplits

__all__ = ["BNNClassifier", "arrays_to_splits"]

_SPLIT_SEED_OFFSET = 7_919  # the validation split's RNG is seeded with seed + this offset


def _effective_batch_size(n_train: int, batch_size: int) -> int:
    """The batch size actually used: ``batch_size`` unless a 1-sample last batch would remain.

    Batch norm cannot normalize a batch of one sample in training mode, so when
    ``n_train % batch_size == 1`` the next larger size without that remainder is used.
    """
    b = max(1, min(batch_size, n_train))
    while b < n_train and n_train % b == 1:
        b += 1
    return b


def _split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and validation splits (identical when too small to split)."""
    perm = np.random.default_rng(seed + _SPLIT_SEED_OFFSET).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    if n_val == 0 or n - n_val < 2:
        return perm, perm
    return perm[: n - n_val], perm[n - n_val:]


def _standardization(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 for constant features) of the training rows."""
    x_train = np.asarray(x_train, dtype=np.float32)
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    return mean.astype(np.float32), np.where(scale > 1e-6, scale, 1.0).astype(np.float32)


def arrays_to_splits(
    X: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    name: str = "arrays",
) -> DataSplits:
    """Turn ``(X, y)`` arrays into :class:`~bnn_tune.data.DataSplits` for :func:`bnn_tune.fit`.

    Rows are shuffled with ``seed`` and the last ``round(val_fraction * n)`` of them become the
    validation split (at least one row). When ``val_fraction`` is 0, or the data is too small to
    leave two training rows, the validation split *is* the training split (the validation
    metrics are then training metrics). Inputs are standardized per feature with the training
    rows' mean and standard deviation (constant features map to 0), unless ``mean``/``scale``
    are given. The test split is empty: scikit-learn evaluates on its own held-out data.

    Args:
        X: ``(n, D)`` numeric array.
        y: ``(n,)`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes.
        val_fraction: fraction of rows held out for validation, in ``[0, 1)``.
        seed: seeds the shuffle that picks the validation rows.
        input_shape: shape of one input for the model (default ``(D,)``); ``prod(input_shape)``
            must equal ``D`` (e.g. ``(1, 8, 8)`` for the 64 digits pixels with a conv model).
        mean, scale: standardization statistics (default: computed on the training rows).
        name: the ``DataSplits.name``.

    Returns:
        ``DataSplits`` with float32 inputs of shape ``(n, *input_shape)`` and int64 labels.

    Example:
        >>> import numpy as np
        >>> s = arrays_to_splits(np.random.rand(50, 4), np.arange(50) % 2, num_classes=2)
        >>> len(s.y_train), len(s.y_val), s.input_shape
        (45, 5, (4,))
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a 2-D array (n_samples, n_features), but got X.shape={X.shape}.")
    if len(X) != len(y):
        raise ValueError(f"`X` and `y` must have the same number of rows, but got {len(X)} and {len(y)}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in [0, 1), but got val_fraction={val_fraction}.")
    n, d = X.shape
    shape = (d,) if input_shape is None else tuple(int(s) for s in input_shape)
    if int(np.prod(shape)) != d:
        raise ValueError(f"`input_shape` must hold n_features={d} values, but got input_shape={shape}.")
    tr, va = _split_rows(n, val_fraction, seed)
    if mean is None or scale is None:
        mean, scale = _standardization(X[tr])
    Xs = ((X - mean) / scale).astype(np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(Xs)).reshape(-1, *shape)
    yt = torch.from_numpy(np.ascontiguousarray(y))
    empty_x = xt[:0].clone()
    empty_y = yt[:0].clone()
    return DataSplits(name, xt[tr].clone(), yt[tr].clone(), xt[va].clone(), yt[va].clone(), empty_x, empty_y,
                      num_classes=int(num_classes), input_shape=shape)


class BNNClassifier(ClassifierMixin, BaseEstimator):
    """A binarized neural network classifier with the scikit-learn estimator API.

    ``fit`` encodes arbitrary labels (``classes_``), standardizes the features, holds out
    ``val_fraction`` of the rows for the per-epoch validation metrics (``history_``), and trains
    with :func:`bnn_tune.fit` for ``epochs`` epochs. The model after the last epoch is kept
    (``model_``, in eval mode); ``predict_proba`` is the softmax of its logits. Training is
    deterministic for a given ``seed`` on CPU, so refitting gives identical predictions.

    The batch size is ``batch_size`` except when the last batch would hold a single sample
    (batch norm cannot train on one): then the next larger size without that remainder is used
    (``batch_size_``). A run whose loss becomes NaN/inf stops early; ``fit_status_`` says
    ``"diverged"`` and a ``RuntimeWarning`` is issued.

    Args:
        optimizer: binary optimizer registry name (``bnn_tune.optim.list_optimizers()``).
        model: model zoo name; ``mlp`` takes any flat input, conv models need ``input_shape``.
        epochs: training epochs.
        batch_size: mini-batch size.
        lr: Adam learning rate of the real-valued parameters (batch norm, first/last layers).
        width: width multiplier of the model (``mlp``: ``256 * width`` hidden units).
        depth: number of binary hidden layers of ``mlp``.
        seed: seeds the weights, the batch order and the validation split.
        optimizer_params: the binary optimizer's hyperparameters and schedules as flat config keys
            (``{"gamma": 1e-3, "threshold": 1e-6, "gamma_schedule": {...}}``); None = defaults.
        activation: activation quantizer (``ste_sign``, ``approx_sign``, ``swish_sign``, ``none``).
        val_fraction: fraction of the training rows held out for validation metrics, in [0, 1).
        input_shape: shape of one input for the model, e.g. ``(1, 8, 8)``; None = ``(n_features,)``.
        max_steps_per_epoch: cap on optimizer steps per epoch (0 = whole epoch).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Attributes:
        classes_: the sorted class labels seen in ``fit``.
        n_features_in_: number of features seen in ``fit``.
        model_: the trained ``torch.nn.Module``.
        config_: the validated :class:`bnn_tune.TrialConfig` used for training.
        history_: one dict of epoch metrics per epoch (``val_acc``, ``flip_rate``, ...).
        fit_status_: ``"completed"`` or ``"diverged"``.
        batch_size_: the batch size actually used.
        mean_, scale_: the standardization statistics.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> from sklearn.model_selection import cross_val_score
        >>> X, y = load_digits(return_X_y=True)
        >>> clf = BNNClassifier(optimizer="latent_adam", epochs=2, width=0.25)
        >>> scores = cross_val_score(clf, X[:300], y[:300], cv=2)
        >>> len(scores)
        2

    References:
        Hubara et al. 2016, "Binarized Neural Networks"; Helwegen et al. 2019, "Latent Weights
        Do Not Exist: Rethinking Binarized Neural Network Optimization".
    """

    def __init__(
        self,
        optimizer: str = "latent_adam",
        model: str = "mlp",
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        width: float = 1.0,
        depth: int = 2,
        seed: int = 0,
        optimizer_params: Mapping[str, Any] | None = None,
        *,
        activation: str = "ste_sign",
        val_fraction: float = 0.1,
        input_shape: tuple[int, ...] | None = None,
        max_steps_per_epoch: int = 0,
        device: str = "cpu",
    ) -> None:
        self.optimizer = optimizer
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.width = width
        self.depth = depth
        self.seed = seed
        self.optimizer_params = optimizer_params
        self.activation = activation
        self.val_fraction = val_fraction
        self.input_shape = input_shape
        self.max_steps_per_epoch = max_steps_per_epoch
        self.device = device

    # ------------------------------------------------------------------ sklearn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device not in ("cpu",)
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _config(self, batch_size: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "optimizer": self.optimizer, "model": self.model, "epochs": self.epochs, "batch_size": batch_size,
            "lr": self.lr, "width": self.width, "depth": self.depth, "seed": self.seed,
            "activation": self.activation, "max_steps_per_epoch": self.max_steps_per_epoch,
            "device": self.device, "augment": False,
        }
        params = dict(self.optimizer_params or {})
        clash = sorted(set(params) & set(cfg))
        if clash:
            raise ValueError(
                f"`optimizer_params` holds the binary optimizer's hyperparameters; {clash} are constructor "
                f"arguments of BNNClassifier, set them there (got optimizer_params={self.optimizer_params!r})."
            )
        cfg.update(params)
        return cfg

    # ------------------------------------------------------------------ API
    def fit(self, X, y) -> BNNClassifier:
        """Train on ``X`` (``(n_samples, n_features)``) and labels ``y``; returns ``self``."""
        import warnings

        from bnn_tune import TrialConfig, fit

        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], ensure_min_samples=2)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"BNNClassifier needs samples of at least 2 classes, but the data contains only 1 class: {classes[0]!r}."
            )
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"`val_fraction` must be in [0, 1), but got val_fraction={self.val_fraction!r}.")
        config = TrialConfig.from_dict(self._config(self.batch_size))  # validates every value
        tr, _ = _split_rows(len(y), self.val_fraction, config.seed)
        batch_size = _effective_batch_size(len(tr), config.batch_size)
        if batch_size != config.batch_size:
            config = config.replace(batch_size=batch_size)
        mean, scale = _standardization(X[tr])
        splits = arrays_to_splits(X, y_enc, num_classes=len(classes), val_fraction=self.val_fraction,
                                  seed=config.seed, input_shape=self.input_shape, mean=mean, scale=scale)
        result = fit(config, data=splits)
        if result.status == "diverged":
            warnings.warn(f"BNNClassifier: training diverged ({result.message}).", RuntimeWarning, stacklevel=2)
        self.classes_ = classes
        self.mean_ = mean
        self.scale_ = scale
        self.batch_size_ = batch_size
        self.config_ = result.config
        self.history_ = [m.as_dict() for m in result.history]
        self.fit_status_ = result.status
        self.model_ = result.model.cpu().eval()
        return self

    @torch.no_grad()
    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        Xs = ((X.astype(np.float32) - self.mean_) / self.scale_).astype(np.float32)
        shape = (X.shape[1],) if self.input_shape is None else tuple(self.input_shape)
        x = torch.from_numpy(np.ascontiguousarray(Xs)).reshape(-1, *shape)
        self.model_.eval()
        out = [self.model_(x[i: i + 1024]).double() for i in range(0, len(x), 1024)]
        if not out:
            return np.zeros((0, len(self.classes_)))
        return torch.cat(out).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ``(n_samples, n_classes)`` in the order of ``classes_``."""
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """The most probable class label of each row."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]
