"""Masking: marks the time steps whose features all equal ``mask_value`` as padding.

    mask[b, t] = any(x[b, t, :] != mask_value)        y = x * mask
Layers that follow receive the mask; a recurrent layer carries its state over masked steps.
"""
import numpy as np

from .base import Layer


class Masking(Layer):
    """Keras ``Masking``: skip the time steps that are entirely ``mask_value``.

    >>> m = Masking(0.0)
    >>> m.compute_mask(np.array([[[1.0], [0.0]]])).tolist()
    [[True, False]]
    """
    supports_masking = True
    input_ndim = 3

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def compute_mask(self, x, mask=None):
        m = np.any(x != self.mask_value, axis=-1)
        return m if mask is None else (m & mask)

    def forward(self, x, training=False, mask=None):
        keep = self.compute_mask(x, mask)[..., None].astype(x.dtype)
        return x * keep, keep

    def backward(self, dy, cache):
        return dy * cache, {}

    def get_config(self):
        cfg = super().get_config()
        cfg["mask_value"] = self.mask_value
        return cfg
