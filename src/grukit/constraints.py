"""Weight constraints, applied to a weight after each optimizer update (Keras's definitions).

    max_norm(max_value=2, axis=0):   w * clip(n, 0, max) / (eps + n)        n = ||w|| along axis
    non_neg():                        w * (w >= 0)
    unit_norm(axis=0):                w / (eps + n)
    min_max_norm(min_value=0, max_value=1, rate=1, axis=0):
                                      w * (rate clip(n, min, max) + (1 - rate) n) / (eps + n)
eps = 1e-7.
"""
import numpy as np

from .utils import resolve

EPS = 1e-7


class Constraint:
    name = "constraint"

    def __call__(self, w):
        return w

    def get_config(self):
        return {}


class MinMaxNorm(Constraint):
    name = "min_max_norm"

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def _norms(self, w):
        return np.sqrt(np.sum(w * w, axis=self.axis, keepdims=True))

    def __call__(self, w):
        n = self._norms(w)
        desired = self.rate * np.clip(n, self.min_value, self.max_value) + (1 - self.rate) * n
        return w * (desired / (EPS + n))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class MaxNorm(MinMaxNorm):
    name = "max_norm"

    def __init__(self, max_value=2.0, axis=0):
        super().__init__(0.0, max_value, 1.0, axis)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class UnitNorm(MinMaxNorm):
    name = "unit_norm"

    def __init__(self, axis=0):
        super().__init__(1.0, 1.0, 1.0, axis)

    def __call__(self, w):
        return w / (EPS + self._norms(w))

    def get_config(self):
        return {"axis": self.axis}


class NonNeg(Constraint):
    name = "non_neg"

    def __call__(self, w):
        return w * (w >= 0.0)


_REGISTRY = {"max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm,
             "min_max_norm": MinMaxNorm}
max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm


def get(identifier):
    """None, a name ("max_norm"), ``{"class_name": name, "config": {...}}``, or a
    :class:`Constraint`."""
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = resolve("constraint", _REGISTRY, identifier["class_name"])
        return cls(**identifier.get("config", {}))
    if isinstance(identifier, str):
        return resolve("constraint", _REGISTRY, identifier)()
    raise ValueError(f"Unknown constraint {identifier!r}: give 'max_norm', 'non_neg', 'unit_norm', "
                     "'min_max_norm' or an object from grukit.constraints.")
