"""grukit layers, with Keras's names and arguments."""
from .base import Layer
from .core import Activation, Dense, Dropout, Input, InputLayer
from .embedding import Embedding
from .gru import GRU, GRUCell
from .lstm import LSTM, LSTMCell
from .recurrent import Recurrent
from .simple_rnn import SimpleRNN, SimpleRNNCell

__all__ = ["Layer", "Activation", "Dense", "Dropout", "Input", "InputLayer", "Embedding", "GRU",
           "GRUCell", "LSTM", "LSTMCell", "Recurrent", "SimpleRNN", "SimpleRNNCell"]
