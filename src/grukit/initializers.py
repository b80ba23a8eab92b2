"""Weight initializers with Keras's names and defaults.

Kernels default to ``glorot_uniform``, recurrent kernels to ``orthogonal``, biases to ``zeros``.
Each initializer is ``init(shape, dtype) -> ndarray`` and draws from grukit's generator
(:func:`grukit.utils.rng`), or from its own when constructed with ``seed``.
"""
import numpy as np

from .utils import make_rng, resolve


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    name = "initializer"

    def __init__(self, seed=None):
        self.seed = seed

    def _rng(self):
        return make_rng(self.seed)

    def __call__(self, shape, dtype="float32"):
        raise NotImplementedError


class Zeros(Initializer):
    name = "zeros"

    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    name = "ones"

    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype)


class Constant(Initializer):
    name = "constant"

    def __init__(self, value=0.0):
        super().__init__()
        self.value = value

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.value, dtype)


class RandomUniform(Initializer):
    name = "random_uniform"

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype="float32"):
        return self._rng().uniform(self.minval, self.maxval, shape).astype(dtype)


class RandomNormal(Initializer):
    name = "random_normal"

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype="float32"):
        return self._rng().normal(self.mean, self.stddev, shape).astype(dtype)


class VarianceScaling(Initializer):
    """Keras's family: scale / fan, uniform or truncated normal."""
    name = "variance_scaling"

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        var = self.scale / max(1.0, fan)
        g = self._rng()
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * var)
            return g.uniform(-limit, limit, shape).astype(dtype)
        # truncated normal at two standard deviations; 0.8796... is its standard deviation
        std = np.sqrt(var) / 0.87962566103423978
        out = g.normal(0.0, std, shape)
        bad = np.abs(out) > 2 * std
        while bad.any():
            out[bad] = g.normal(0.0, std, int(bad.sum()))
            bad = np.abs(out) > 2 * std
        return out.astype(dtype)


def _scaling(name, scale, mode, distribution):
    """A named member of the VarianceScaling family (Keras's definitions)."""
    def make(seed=None):
        init = VarianceScaling(scale, mode, distribution, seed)
        init.name = name
        return init
    make.__name__ = name
    return make


GlorotUniform = _scaling("glorot_uniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _scaling("glorot_normal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _scaling("he_uniform", 2.0, "fan_in", "uniform")
HeNormal = _scaling("he_normal", 2.0, "fan_in", "truncated_normal")
LecunNormal = _scaling("lecun_normal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one, times ``gain``."""
    name = "orthogonal"

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype="float32"):
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        a = self._rng().normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return np.ascontiguousarray(self.gain * q.reshape(shape), dtype=dtype)


_REGISTRY = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_uniform": RandomUniform, "uniform": RandomUniform,
    "random_normal": RandomNormal, "normal": RandomNormal,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "variance_scaling": VarianceScaling,
}


def get(identifier) -> Initializer:
    """An initializer from its name (``"orthogonal"``) or an :class:`Initializer`/callable."""
    if isinstance(identifier, str):
        return resolve("initializer", _REGISTRY, identifier)()
    if callable(identifier):
        return identifier
    raise ValueError(f"Unknown initializer {identifier!r}: give a name such as 'glorot_uniform'.")
