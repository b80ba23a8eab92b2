"""Global numeric settings: the float type every layer, loss and optimizer works in.

>>> import grukit
>>> grukit.config.set_floatx("float64")   # gradient checks use this
>>> grukit.config.floatx()
'float64'
"""
import numpy as np

_FLOATX = "float32"
_ALLOWED = ("float32", "float64")


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
    return np.dtype(_FLOATX)


_KERNELS = "auto"
_KERNEL_CHOICES = ("auto", "numpy", "numba")


def set_kernels(value: str) -> None:
    """Choose the step kernels: "numba" (compiled, needs numba), "numpy", or "auto" (numba when
    it is installed). Both compute the same equations; see grukit.fused."""
    global _KERNELS
    if value not in _KERNEL_CHOICES:
        raise ValueError(f"set_kernels: unknown choice {value!r}; use one of {_KERNEL_CHOICES}.")
    if value == "numba":
        from . import fused
        if not fused.AVAILABLE:
            raise ValueError("set_kernels('numba') needs numba: pip install 'grukit[fast]'.")
    _KERNELS = value


def kernels() -> str:
    """The kernels in use now: "numba" or "numpy"."""
    if _KERNELS == "numpy":
        return "numpy"
    from . import fused
    return "numba" if fused.AVAILABLE else "numpy"
