"""Dense, Activation, Dropout and Input.

    Dense:      y = f(x W + b)     x (..., D), W (D, units), b (units,); on the last axis
    Activation: y = f(x)
    Dropout:    y = x * m / (1 - rate), m ~ Bernoulli(1 - rate), in training only
"""
import numpy as np

from .. import activations, initializers
from ..utils import make_rng
from .base import Layer


class Dense(Layer):
    """Fully connected layer on the last axis (Keras ``Dense``).

    >>> Dense(3, activation="tanh")(np.ones((2, 4))).shape
    (2, 3)
    """
    param_names = ("kernel", "bias")

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self._set_penalties(kernel=(kernel_regularizer, kernel_constraint),
                            bias=(bias_regularizer, bias_constraint))
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}.")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self._init_names = (kernel_initializer, bias_initializer)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        d, dt = input_shape[-1], self._float()
        if d is None:
            raise ValueError(f"{self.name}: the feature size (last axis of the input) must be known.")
        self.params = {"kernel": self.kernel_initializer((d, self.units), dt)}
        if self.use_bias:
            self.params["bias"] = self.bias_initializer((self.units,), dt)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False, mask=None):
        y = x @ self.params["kernel"]
        if self.use_bias:
            y += self.params["bias"]
        y = self.activation.f(y, out=y)
        return y, (x, y)

    def backward(self, dy, cache):
        x, y = cache
        dz = self.activation.backward(y, dy)          # dL/d(x W + b)
        W = self.params["kernel"]
        x2, dz2 = x, dz
        if x.ndim != 2:   # (..., D): the weight gradients sum over every leading axis
            x2, dz2 = x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1])
        grads = {"kernel": x2.T @ dz2}
        if self.use_bias:
            grads["bias"] = np.add.reduce(dz2, axis=0)   # dz2.sum(axis=0), one call fewer
        return dz @ W.T, grads

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation.name, use_bias=self.use_bias)
        for key, value in zip(("kernel_initializer", "bias_initializer"), self._init_names):
            if isinstance(value, str):
                cfg[key] = value
        return self._penalty_config(cfg, kernel_regularizer=("kernel", "reg"),
                                    bias_regularizer=("bias", "reg"),
                                    kernel_constraint=("kernel", "con"),
                                    bias_constraint=("bias", "con"))


class Activation(Layer):
    """Applies an activation function (Keras ``Activation``)."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, x, training=False, mask=None):
        y = self.activation.f(x)
        return y, y

    def backward(self, dy, cache):
        return self.activation.backward(cache, dy), {}

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = self.activation.name
        return cfg


class Dropout(Layer):
    """Inverted dropout (Keras ``Dropout``): in training, zero a fraction ``rate`` of the inputs
    and scale the rest by 1 / (1 - rate); at inference, the identity."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}.")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def forward(self, x, training=False, mask=None):
        if not training or self.rate == 0.0:
            return x, None
        shape = x.shape
        if self.noise_shape is not None:
            shape = tuple(s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        g = self._rng if self._rng is not None else make_rng(None)
        keep = (g.random(shape) >= self.rate).astype(x.dtype) / (1.0 - self.rate)
        return x * keep, keep

    def backward(self, dy, cache):
        return (dy if cache is None else dy * cache), {}

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, seed=self.seed)
        if self.noise_shape is not None:
            cfg["noise_shape"] = list(self.noise_shape)
        return cfg


class Input:
    """Declares the input shape (without the batch axis) at the head of a Sequential model.

    >>> from grukit.models import Sequential
    >>> from grukit.layers import Input, GRU
    >>> Sequential([Input(shape=(4, 1)), GRU(8)]).count_params()
    264
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, **kwargs):
        from ..utils import reject_unknown
        reject_unknown("Input", kwargs)
        if shape is None:
            raise ValueError("Input: give shape=(time, features) or (features,), without the "
                             "batch axis.")
        self.shape = tuple(shape)
        self.batch_size = batch_size
        self.dtype = dtype
        self.name = name or "input"

    def __repr__(self):
        return f"<Input shape={self.shape}>"


InputLayer = Input
