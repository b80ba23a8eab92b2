"""Weight and activity penalties (Keras ``l1``, ``l2``, ``l1_l2``), each with its gradient.

    L1(l1):      l1 * sum |w|              grad  l1 * sign(w)
    L2(l2):      l2 * sum w^2              grad  2 l2 w
    L1L2(l1,l2): both
The strings "l1", "l2" and "l1_l2" give factors of 0.01 (for "l1_l2", 0.01 each, as Keras documents).
An activity penalty is divided by the batch size, as in Keras 3.
"""
import numpy as np

from .utils import resolve


class Regularizer:
    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        out = 0.0
        if self.l1:
            out += self.l1 * float(np.abs(w).sum())
        if self.l2:
            out += self.l2 * float(np.dot(w.ravel(), w.ravel()))
        return out

    def grad(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += self.l1 * np.sign(w)
        if self.l2:
            g += (2.0 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"<regularizer l1={self.l1} l2={self.l2}>"


def L1(l1=0.01):
    return Regularizer(l1=l1)


def L2(l2=0.01):
    return Regularizer(l2=l2)


def L1L2(l1=0.0, l2=0.0):
    return Regularizer(l1=l1, l2=l2)


l1, l2 = L1, L2


def l1_l2(l1=0.01, l2=0.01):
    return Regularizer(l1=l1, l2=l2)


_REGISTRY = {"l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": l1_l2}


def get(identifier):
    """None, a name ("l2"), a dict from a config, or a :class:`Regularizer`."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return Regularizer(**identifier)
    if isinstance(identifier, str):
        return resolve("regularizer", _REGISTRY, identifier)()
    raise ValueError(f"Unknown regularizer {identifier!r}: give 'l1', 'l2', 'l1_l2' or an object "
                     "from grukit.regularizers.")
