"""Embedding: integer ids -> dense vectors (Keras ``Embedding``).

    y[b, t] = E[x[b, t]]            E (input_dim, output_dim)
    dE[i]   = sum of dy[b, t] over all (b, t) with x[b, t] = i
"""
import numpy as np

from .. import initializers
from .base import Layer


class Embedding(Layer):
    """Looks up rows of ``embeddings`` for integer inputs of any shape.

    >>> Embedding(10, 3)(np.array([[1, 2, 0]])).shape
    (1, 3, 3)
    """
    param_names = ("embeddings",)
    integer_input = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, embeddings_regularizer=None, embeddings_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._set_penalties(embeddings=(embeddings_regularizer, embeddings_constraint))
        for name, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Embedding: {name} must be a positive integer, got {v!r}.")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self._init_name = embeddings_initializer
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        if self.input_shape_arg is None and input_length is not None:
            self.input_shape_arg = (input_length,)

    def _check_input(self, x):
        if x.ndim < 1:
            raise ValueError(f"{self.name}: expects integer ids of shape (batch, ...), got a scalar.")

    def build(self, input_shape):
        super().build(input_shape)
        self.params = {"embeddings": self.embeddings_initializer(
            (self.input_dim, self.output_dim), self._float())}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _ids(self, x):
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
                raise ValueError(f"{self.name}: Embedding inputs must be integer ids.")
        ids = x.astype(np.intp, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            raise ValueError(f"{self.name}: ids must lie in [0, {self.input_dim}), got values in "
                             f"[{ids.min()}, {ids.max()}]; raise input_dim or re-index the data.")
        return ids

    def compute_mask(self, x, mask=None):
        """With mask_zero=True, id 0 is padding: the mask is ``x != 0``."""
        return (np.asarray(x) != 0) if self.mask_zero else None

    def forward(self, x, training=False, mask=None):
        ids = self._ids(x)
        return self.params["embeddings"][ids], ids

    def backward(self, dy, cache):
        ids = cache
        dE = np.zeros_like(self.params["embeddings"])
        np.add.at(dE, ids.ravel(), dy.reshape(-1, self.output_dim))
        return None, {"embeddings": dE}

    def get_config(self):
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero)
        if isinstance(self._init_name, str):
            cfg["embeddings_initializer"] = self._init_name
        return self._penalty_config(cfg, embeddings_regularizer=("embeddings", "reg"),
                                    embeddings_constraint=("embeddings", "con"))
