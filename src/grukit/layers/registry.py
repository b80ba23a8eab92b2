"""Layer classes by name, for configs (and, later, for reading other frameworks' files)."""
from .bidirectional import Bidirectional
from .core import Activation, Dense, Dropout
from .embedding import Embedding
from .gru import GRU
from .lstm import LSTM
from .masking import Masking
from .simple_rnn import SimpleRNN

LAYERS = {cls.__name__: cls for cls in (Dense, Activation, Dropout, Embedding, GRU, LSTM, SimpleRNN,
                                         Masking, Bidirectional)}


def class_name(layer) -> str:
    return type(layer).__name__


def layer_from_config(name: str, config: dict):
    if name not in LAYERS:
        raise ValueError(f"Unsupported layer class {name!r}; grukit knows {', '.join(sorted(LAYERS))}.")
    return LAYERS[name].from_config(dict(config))
