"""Metrics, accumulated over an epoch as Keras does: the mean of per-sample values.

Each metric has ``update(y_true, y_pred)``, ``result()`` and ``reset()``. ``"accuracy"`` resolves as
in Keras: binary_accuracy when the model has one output unit, sparse_categorical_accuracy when the
labels have one axis fewer than the predictions (or a last axis of 1), else categorical_accuracy.
"""
import warnings

import numpy as np

from .losses import same_rank
from .utils import resolve


class Metric:
    name = "metric"

    def __init__(self, name=None):
        if name is not None:
            self.name = name
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0

    def values(self, y, p):
        """Per-element values of shape y.shape (reduced over the last axis by update)."""
        raise NotImplementedError

    def update(self, y_true, y_pred):
        p = np.asarray(y_pred)
        y = same_rank(np.asarray(y_true).astype(p.dtype, copy=False), p)
        v = self.values(y, p)
        v = v.reshape(v.shape[0], -1).mean(axis=1) if v.ndim > 1 else v
        self.total += float(v.sum())
        self.count += v.shape[0]

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanAbsoluteError(Metric):
    name = "mae"

    def values(self, y, p):
        return np.abs(p - y)


class MeanSquaredError(Metric):
    name = "mse"

    def values(self, y, p):
        return (p - y) ** 2


class RootMeanSquaredError(MeanSquaredError):
    name = "rmse"

    def result(self):
        return float(np.sqrt(super().result()))


class BinaryAccuracy(Metric):
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def values(self, y, p):
        return (y == (p > self.threshold)).astype(np.float64)


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def values(self, y, p):
        return (np.argmax(y, -1) == np.argmax(p, -1)).astype(np.float64)[..., None]


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"

    def update(self, y_true, y_pred):
        p = np.asarray(y_pred)
        y = np.asarray(y_true)
        if y.ndim == p.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        v = (np.argmax(p, -1) == y).astype(np.float64)
        v = v.reshape(v.shape[0], -1).mean(axis=1)
        self.total += float(v.sum())
        self.count += v.shape[0]


_REGISTRY = {
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError,
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
}
_REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error")


def get(identifier, y_true_shape, y_pred_shape, loss_name=None) -> Metric:
    """A metric object; ``"accuracy"``/``"acc"`` is resolved from the shapes, as Keras does."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Unknown metric {identifier!r}: give a name such as 'mae'.")
    if identifier.lower() in ("accuracy", "acc"):
        if loss_name in _REGRESSION_LOSSES:
            warnings.warn(f"metric {identifier!r} with loss {loss_name!r}: accuracy means little "
                          "for regression (it counts predictions that round, at 0.5, to the "
                          "target); use 'mae' or 'rmse'.", UserWarning, stacklevel=3)
        is_binary = y_pred_shape[-1] == 1
        is_sparse = (len(y_true_shape) < len(y_pred_shape)
                     or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1))
        cls = BinaryAccuracy if is_binary else (
            SparseCategoricalAccuracy if is_sparse else CategoricalAccuracy)
        return cls(name=identifier)
    return resolve("metric", _REGISTRY, identifier)(name=identifier)
