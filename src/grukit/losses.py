"""Losses with Keras's formulas and its default reduction (the mean over samples).

Each loss reduces the last axis to one value per row (a row is a sample, or a time step of a
sequence output) and averages the rows. With e = p - y, F the size of the last axis:

    mse     row = sum(e^2) / F
    mae     row = sum(|e|) / F
    huber   row = sum(e^2/2 if |e| <= d else d |e| - d^2/2) / F
    binary_crossentropy        q = clip(p, eps, 1 - eps); row = -sum(y log q + (1 - y) log(1 - q)) / F
    categorical_crossentropy   q = clip(p / sum(p), eps, 1 - eps); row = -sum(y log q)
    sparse_categorical_crossentropy   as categorical, with integer labels

    L = mean of rows,  or with a mask m over rows (padded time steps):  sum(m row) / (sum(m) + eps)
eps = 1e-7, as Keras's backend epsilon. Clipped entries get no gradient, as in Keras.
``value_and_grad(y_true, y_pred, mask=None) -> (L, dL/dy_pred)``.

>>> from grukit import losses
>>> float(losses.get("mse")(np.array([1.0]), np.array([[0.5]])))
0.25
"""
import numpy as np

from .utils import operand, resolve

EPSILON = 1e-7


def same_rank(y, p):
    """Keras's squeeze-or-expand: reshape y to p's shape when they differ by a trailing axis of 1."""
    ys, ps = y.shape, p.shape
    if ys == ps:
        return y
    if y.size == p.size and ((ys[:-1] == ps and ys[-1] == 1) or (ps[:-1] == ys and ps[-1] == 1)):
        return y.reshape(ps)
    raise ValueError(f"y_true of shape {ys} does not match y_pred of shape {ps}; give targets "
                     "with the model's output shape.")


class Loss:
    name = "loss"

    def __call__(self, y_true, y_pred, mask=None):
        return self.value_and_grad(y_true, y_pred, mask)[0]

    def targets(self, y_true, p):
        y = np.asarray(y_true)
        if y.dtype != p.dtype:
            y = y.astype(p.dtype)
        return same_rank(y, p)

    def value_and_grad(self, y_true, y_pred, mask=None):
        p = np.asarray(y_pred)
        y = self.targets(y_true, p)
        rows, drows = self._rows(y, p)
        if mask is None:
            w = 1.0 / rows.size
            return np.add.reduce(rows, axis=None) * w, drows * operand(w, p.dtype)   # rows.sum()
        m = np.broadcast_to(np.asarray(mask, p.dtype), rows.shape)
        scale = 1.0 / (float(m.sum()) + EPSILON)
        return (rows * m).sum() * scale, drows * (m * p.dtype.type(scale))[..., None]

    def _rows(self, y, p):
        """(per-row values, gradient of their sum with respect to p)."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def _rows(self, y, p):
        e = p - y
        f = p.shape[-1]
        return (np.add.reduce(e * e, axis=-1) / operand(f, p.dtype),
                e * operand(2.0 / f, p.dtype))


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def _rows(self, y, p):
        e = p - y
        return np.abs(e).mean(axis=-1), np.sign(e) / p.shape[-1]


class Huber(Loss):
    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = float(delta)

    def _rows(self, y, p):
        e = p - y
        a, d = np.abs(e), self.delta
        vals = np.where(a <= d, 0.5 * e * e, d * a - 0.5 * d * d)
        return vals.mean(axis=-1), np.clip(e, -d, d) / p.shape[-1]

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"

    def _rows(self, y, p):
        q = np.clip(p, EPSILON, 1.0 - EPSILON)
        f = p.shape[-1]
        vals = -(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)).mean(axis=-1)
        inside = (p >= EPSILON) & (p <= 1.0 - EPSILON)
        dp = -(y / q - (1.0 - y) / (1.0 - q)) / f * inside
        return vals, dp.astype(p.dtype, copy=False)


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"

    def _rows(self, y, p):
        s = p.sum(axis=-1, keepdims=True)
        q = p / s
        qc = np.clip(q, EPSILON, 1.0 - EPSILON)
        vals = -(y * np.log(qc)).sum(axis=-1)
        dq = -y / qc * ((q >= EPSILON) & (q <= 1.0 - EPSILON))
        # q = p / s: dL/dp_j = (dq_j - sum_i dq_i q_i) / s
        dp = (dq - (dq * q).sum(axis=-1, keepdims=True)) / s
        return vals, dp.astype(p.dtype, copy=False)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    name = "sparse_categorical_crossentropy"

    def targets(self, y_true, p):
        y = np.asarray(y_true)
        if y.ndim == p.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        if y.shape != p.shape[:-1]:
            raise ValueError(f"sparse_categorical_crossentropy: integer labels of shape {y.shape} "
                             f"do not match predictions of shape {p.shape}; labels need shape "
                             f"{p.shape[:-1]}.")
        ids = y.astype(np.intp)
        if np.any(ids != y) or (ids.size and (ids.min() < 0 or ids.max() >= p.shape[-1])):
            raise ValueError("sparse_categorical_crossentropy: labels must be integers in "
                             f"[0, {p.shape[-1]}).")
        onehot = np.zeros(p.shape, p.dtype)
        np.put_along_axis(onehot, ids[..., None], 1.0, axis=-1)
        return onehot


_REGISTRY = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def from_config(config: dict) -> Loss:
    """Rebuild a loss from :meth:`Loss.get_config`."""
    config = dict(config)
    loss = get(config.pop("name"))
    if config:
        loss = type(loss)(**config)
    return loss


def get(identifier) -> Loss:
    """A loss from its Keras name (``"mse"``) or a :class:`Loss`."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        return resolve("loss", _REGISTRY, identifier)()
    raise ValueError(f"Unknown loss {identifier!r}: give a name such as 'mse' or a Loss object.")
