"""Activation functions, each with its derivative written in terms of its OUTPUT y = f(x).

Writing f'(x) through y lets a layer keep only the activation outputs for the backward pass:

    linear      y = x                          f' = 1
    tanh        y = tanh x                     f' = 1 - y^2
    sigmoid     y = 1 / (1 + e^-x)             f' = y (1 - y)      (x clamped below at -87 in
                                                 float32, -708 in float64, so that e^-x cannot
                                                 overflow; the tails keep full relative precision)
    hard_sigmoid y = clip(x/6 + 1/2, 0, 1)     f' = 1/6 where 0 < y < 1   (the Keras 3 form)
    relu        y = max(x, 0)                  f' = [y > 0]
    elu         y = x or e^x - 1               f' = 1 or y + 1
    selu        y = s x or s a (e^x - 1)       f' = s or y + s a
    softplus    y = log(1 + e^x)               f' = 1 - e^-y
    softsign    y = x / (1 + |x|)              f' = (1 - |y|)^2
    softmax     y = e^x / sum e^x (last axis)  vjp: dx = y (dy - sum(dy y))

>>> from grukit import activations
>>> activations.get("tanh")(np.zeros(2))
array([0., 0.])
"""
import numpy as np

from .utils import resolve

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


class Activation:
    """An elementwise activation: ``f(x, out)`` and ``df(y)``, its derivative from its output."""
    name = "linear"
    elementwise = True

    def __call__(self, x, out=None):
        return self.f(x, out)

    def f(self, x, out=None):
        if out is None:
            return x.copy()
        np.copyto(out, x)
        return out

    def df(self, y):
        return np.ones_like(y)

    def backward(self, y, dy):
        """Gradient with respect to the input, given the output y and the upstream gradient dy."""
        return dy * self.df(y)

    def __repr__(self):
        return f"<activation {self.name}>"


class Linear(Activation):
    name = "linear"

    def backward(self, y, dy):
        return dy


class Tanh(Activation):
    name = "tanh"

    def f(self, x, out=None):
        return np.tanh(x, out=out)

    def df(self, y):
        return 1.0 - y * y


class Sigmoid(Activation):
    name = "sigmoid"

    def f(self, x, out=None):
        out = np.maximum(x, -87.0 if x.dtype == np.float32 else -708.0, out=out)
        np.negative(out, out=out)
        np.exp(out, out=out)
        out += 1.0
        return np.reciprocal(out, out=out)

    def df(self, y):
        return y * (1.0 - y)


class HardSigmoid(Activation):
    name = "hard_sigmoid"

    def f(self, x, out=None):
        out = np.multiply(x, 1.0 / 6.0, out=out)
        out += 0.5
        return np.clip(out, 0.0, 1.0, out=out)

    def df(self, y):
        return ((y > 0.0) & (y < 1.0)).astype(y.dtype) * (1.0 / 6.0)


class Relu(Activation):
    name = "relu"

    def f(self, x, out=None):
        return np.maximum(x, 0.0, out=out)

    def df(self, y):
        return (y > 0.0).astype(y.dtype)


class Elu(Activation):
    name = "elu"

    def f(self, x, out=None):
        y = np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
        if out is None:
            return y
        np.copyto(out, y)
        return out

    def df(self, y):
        return np.where(y > 0, 1.0, y + 1.0).astype(y.dtype)


class Selu(Activation):
    name = "selu"

    def f(self, x, out=None):
        y = _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
        if out is None:
            return y.astype(x.dtype, copy=False)
        np.copyto(out, y)
        return out

    def df(self, y):
        return np.where(y > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA).astype(y.dtype)


class Softplus(Activation):
    name = "softplus"

    def f(self, x, out=None):
        # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow
        y = np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
        if out is None:
            return y
        np.copyto(out, y)
        return out

    def df(self, y):
        return -np.expm1(-y)


class Softsign(Activation):
    name = "softsign"

    def f(self, x, out=None):
        return np.divide(x, 1.0 + np.abs(x), out=out)

    def df(self, y):
        a = 1.0 - np.abs(y)
        return a * a


class Softmax(Activation):
    """Softmax over the last axis; not elementwise, so it offers only ``backward``."""
    name = "softmax"
    elementwise = False

    def f(self, x, out=None):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        if out is None:
            return e
        np.copyto(out, e)
        return out

    def df(self, y):
        raise ValueError("softmax is not elementwise: it cannot be used as a gate or cell "
                         "activation of a recurrent layer; use it in Dense or Activation.")

    def backward(self, y, dy):
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


_REGISTRY = {a.name: a for a in (Linear(), Tanh(), Sigmoid(), HardSigmoid(), Relu(), Elu(), Selu(),
                                  Softplus(), Softsign(), Softmax())}


def get(identifier) -> Activation:
    """An activation from its name (``"tanh"``), None (linear) or an :class:`Activation`."""
    if identifier is None:
        return _REGISTRY["linear"]
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        return resolve("activation", _REGISTRY, identifier)
    raise ValueError(f"Unknown activation {identifier!r}: give a name such as 'tanh' or 'sigmoid'.")

