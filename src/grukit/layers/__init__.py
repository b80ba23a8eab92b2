"""grukit layers, with Keras's names and arguments."""
from .base import Layer
from .bidirectional import Bidirectional
from .masking import Masking
from .core import Activation, Dense, Dropout, Input, InputLayer
from .embedding import Embedding
from .gru import GRU, GRUCell
from .lstm import LSTM, LSTMCell
from .recurrent import Recurrent
from .simple_rnn import SimpleRNN, SimpleRNNCell

__all__ = ["Layer", "Bidirectional", "Masking", "Activation", "Dense", "Dropout", "Input", "InputLayer", "Embedding", "GRU",
           "GRUCell", "LSTM", "LSTMCell", "Recurrent", "SimpleRNN", "SimpleRNNCell"]
