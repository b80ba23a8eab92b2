"""grukit: GRU, LSTM and SimpleRNN from first principles on NumPy, with a Keras-compatible API.

>>> from grukit.models import Sequential
>>> from grukit.layers import GRU, Dense
"""
from . import activations, callbacks, config, initializers, layers, losses, metrics, models
from . import optimizers, utils
from .models import Sequential

__version__ = "0.1.0"
__all__ = ["activations", "callbacks", "config", "initializers", "layers", "losses", "metrics",
           "models", "optimizers", "utils", "Sequential", "__version__"]
