"""SimpleRNN: the plain (Elman) recurrent layer.

    h_t = f(x W + b + h U)        f = activation (tanh)

>>> import numpy as np
>>> from grukit.layers import SimpleRNN
>>> SimpleRNN(4)(np.zeros((2, 5, 3))).shape
(2, 4)
"""
import numpy as np

from ..utils import aligned_empty
from .recurrent import Cell, Recurrent


class SimpleRNNCell(Cell):
    n_states = 1
    gates = 1

    def workspace(self, T, B, dt):
        return {"T": T}

    def native_workspace(self, T, B, dt):
        return {"T": T, "scratch": aligned_empty((self.units, B), dt)}

    def forward_native(self, fast, x_in, xp, Sn, ws, keep, gates=True):   # keeps no gates
        T, B, D = ws["dims"]
        U, W = self.native_weights()
        fast.rnn_forward((T, B, self.units, self.native_codes()[0], D, int(ws["xbm"])),
                         (U, xp, Sn[0], ws["scratch"], ws.get("rmask"), ws.get("hd"), keep, x_in,
                          W, self.params.get("bias")))

    def backward_native(self, fast, x_in, ws, dS, dy_tm, keep, dx, out=None):
        T, B, D = ws["dims"]
        u = self.units
        dW, dU, db, d, carried = self.native_buffers(x_in, keep, u, ws, out)
        fast.rnn_backward((T, B, u, D, self.native_codes()[0], int(ws["xbm"])),
                          (*self.native_weights(), ws["xp"], ws["Sn"][0], d, carried,
                           ws.get("rmask"), ws.get("hd"), keep, dy_tm, dS[0], x_in, dx, dW, dU,
                           db))
        return self.native_grads(dW, dU, db)

    def step(self, t, xp, S, ws):
        h_new = S[0][t + 1]
        np.dot(self.weight_T(ws), self.rec_input(t, S, ws), out=h_new)
        h_new += xp[t]
        self.activation.f(h_new, out=h_new)

    def step_backward(self, t, S, ws, dS):
        dpre = ws["dxp"][t]
        np.multiply(dS[0], self.activation.df(S[0][t + 1]), out=dpre)
        np.dot(self.params["recurrent_kernel"], dpre, out=dS[0])
        if ws.get("rmask") is not None:
            dS[0] *= ws["rmask"]

    def recurrent_grads(self, S, ws, grads):
        T = ws["T"]
        grads["recurrent_kernel"] = (self.feature_major(self.rec_inputs(S, ws, T))
                                     @ self.step_major(ws["dxp"]))


class SimpleRNN(Recurrent):
    """Fully connected recurrent layer (Keras ``SimpleRNN``); no recurrent_activation is used."""

    def __init__(self, units, activation="tanh", use_bias=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation="sigmoid",
                         use_bias=use_bias, **kwargs)

    def _make_cell(self, activation, recurrent_activation, use_bias):
        return SimpleRNNCell(self.units, activation, recurrent_activation, use_bias)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("recurrent_activation")
        return cfg
