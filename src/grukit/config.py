"""Global numeric settings: the float type every layer, loss and optimizer works in.

>>> import grukit
>>> grukit.config.set_floatx("float64")   # gradient checks use this
>>> grukit.config.floatx()
'float64'
"""
import numpy as np

_FLOATX = "float32"
_ALLOWED = ("float32", "float64")
_DTYPES = {name: np.dtype(name) for name in _ALLOWED}


def floatx() -> str:
    """The current float type's name: "float32" (default) or "float64"."""
    return _FLOATX


def set_floatx(value: str) -> None:
    """Set the float type for layers built, data fed and losses computed from now on."""
    global _FLOATX
    if value not in _ALLOWED:
        raise ValueError(f"set_floatx: unknown float type {value!r}; use one of {_ALLOWED}.")
    _FLOATX = value


def dtype() -> np.dtype:
    """The current float type as a NumPy dtype."""
    return _DTYPES[_FLOATX]

