"""LSTM: long short-term memory, in Keras's layout (gate order i, f, c, o; the loop keeps i, f, o, g).

With a = recurrent_activation (sigmoid), f = activation (tanh), kernel W = [Wi|Wf|Wc|Wo] (D, 4u),
recurrent_kernel U (u, 4u) and bias b (4u,):

    i = a(x Wi + h Ui + bi)        input gate
    f = a(x Wf + h Uf + bf)        forget gate (bias starts at 1 with unit_forget_bias=True)
    g = f(x Wc + h Uc + bc)        candidate cell
    o = a(x Wo + h Uo + bo)        output gate
    c_t = f * c + i * g
    h_t = o * f(c_t)

>>> import numpy as np
>>> from grukit.layers import LSTM
>>> LSTM(4, return_sequences=True)(np.zeros((2, 5, 3))).shape
(2, 5, 4)
"""
import numpy as np

from .. import _native
from ..utils import aligned_empty
from .recurrent import Cell, Recurrent


class LSTMCell(Cell):
    """Inside the NumPy loop the gates are kept in the order i, f, o, g (the kernel's columns are
    i, f, g, o, as in Keras), so that the three gates with the recurrent activation are one block:
    one call computes them all. The projection and the recurrent kernel are permuted to match
    once per sequence; the gradients go back to the kernel's order once, after the loop. The
    compiled loop (kernels.c) works in Keras's order directly."""
    n_states = 2
    gates = 4

    def _order(self):
        """Column indices: kernel order (i, f, g, o) -> loop order (i, f, o, g)."""
        u = self.units
        return np.r_[0:2 * u, 3 * u:4 * u, 2 * u:3 * u]

    def input_weights(self):
        order = self._order()
        b = self.params["bias"][order] if self.use_bias else None
        return self.params["kernel"][:, order], b

    def workspace(self, T, B, dt):
        u = self.units
        U = self.params["recurrent_kernel"][:, self._order()]
        return {"a": np.empty((T, 4 * u, B), dt),     # gate values i, f, o, g
                "tc": np.empty((T, u, B), dt),        # f(c_t)
                "ig": np.empty((u, B), dt),           # i * g, one step
                "U": np.ascontiguousarray(U), "U_T": np.ascontiguousarray(U.T)}

    def native_workspace(self, T, B, dt):
        u = self.units
        return {"a": aligned_empty((4 * u, B), dt), "tc": aligned_empty((T, u, B), dt),
                "keras_order": True}

    # the compiled loop keeps Keras's gate order: no permuted copies of the weights per call
    def forward_native(self, fast, x_in, xp, Sn, ws, keep, gates=True):
        T, B, D = ws["dims"]
        U, W = self.native_weights()
        threads = _native.step_threads() if B == 1 else 1
        args = ((T, B, self.units, *self.native_codes(), D, int(gates), threads,
                 int(ws["xbm"])),
                (U, xp, Sn[0], Sn[1], ws["a"], ws["tc"], ws.get("rmask"), ws.get("hd"), keep,
                 x_in, W, self.params.get("bias")))
        if threads > 1:
            _native.one_blas_thread(fast.lstm_forward, *args)
        else:
            fast.lstm_forward(*args)

    def backward_native(self, fast, x_in, ws, dS, dy_tm, keep, dx, out=None):
        T, B, D = ws["dims"]
        u = self.units
        dW, dU, db, d, carried = self.native_buffers(x_in, keep, 2 * u, ws, out)
        Sh, Sc = ws["Sn"]
        fast.lstm_backward((T, B, u, D, *self.native_codes(), int(ws["xbm"])),
                           (*self.native_weights(), ws["xp"], Sc, Sh, ws["a"],
                            ws["tc"], d, carried, ws.get("rmask"), ws.get("hd"), keep, dy_tm,
                            dS[0], dS[1], x_in, dx, dW, dU, db))
        return self.native_grads(dW, dU, db)

    def step(self, t, xp, S, ws):
        u = self.units
        c = S[1][t]
        h_new, c_new = S[0][t + 1], S[1][t + 1]
        a, tc = ws["a"][t], ws["tc"][t]
        # all four pre-activations: x W + b + h U
        np.dot(ws["U_T"], self.rec_input(t, S, ws), out=a)
        a += xp[t]
        i, f, o, g = a[:u], a[u:2 * u], a[2 * u:3 * u], a[3 * u:]
        # gates
        self.recurrent_activation.f(a[:3 * u], out=a[:3 * u])
        self.activation.f(g, out=g)
        # cell and hidden state
        np.multiply(f, c, out=c_new)
        c_new += np.multiply(i, g, out=ws["ig"])
        self.activation.f(c_new, out=tc)
        np.multiply(o, tc, out=h_new)

    def step_backward(self, t, S, ws, dS):
        u = self.units
        dh, dc = dS
        c = S[1][t]
        a, tc, dxp = ws["a"][t], ws["tc"][t], ws["dxp"][t]
        i, f, o, g = a[:u], a[u:2 * u], a[2 * u:3 * u], a[3 * u:]
        di, df, do, dg = dxp[:u], dxp[u:2 * u], dxp[2 * u:3 * u], dxp[3 * u:]
        ds = self.recurrent_activation.df(a[:3 * u])   # the three gates' derivatives at once
        # output gate
        np.multiply(dh, tc, out=do)
        do *= ds[2 * u:]
        # cell state: from the future and through h_t = o * f(c_t)
        dc += dh * o * self.activation.df(tc)
        # input gate, candidate, forget gate
        np.multiply(dc, g, out=di)
        di *= ds[:u]
        np.multiply(dc, c, out=df)
        df *= ds[u:2 * u]
        np.multiply(dc, i, out=dg)
        dg *= self.activation.df(g)
        # previous states
        dc *= f
        np.dot(ws["U"], dxp, out=dh)
        if ws.get("rmask") is not None:
            dh *= ws["rmask"]

    def gradients_by_column(self, dxp):
        # the reordering swaps two blocks: it is its own inverse
        return self.step_major(dxp[:, self._order()])

    def recurrent_grads(self, S, ws, grads):
        T = ws["a"].shape[0]
        grads["recurrent_kernel"] = (self.feature_major(self.rec_inputs(S, ws, T)) @ ws["dxp2"])

    def trace(self, S, ws):
        u, a = self.units, ws.get("gates", ws["a"])   # compiled loop: the gates kept in xp
        g, o = (2, 3) if ws.get("keras_order") else (3, 2)   # compiled loop / NumPy loop
        return {"i": a[:, :u], "f": a[:, u:2 * u], "g": a[:, g * u:(g + 1) * u],
                "c": S[1][1:], "o": a[:, o * u:(o + 1) * u], "h": S[0][1:]}


class LSTM(Recurrent):
    """Long short-term memory layer (Keras ``LSTM``). See the module docstring for the equations.

    Args as GRU, plus unit_forget_bias=True (forget-gate bias initialised to 1); no reset_after.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 unit_forget_bias=True, **kwargs):
        self.unit_forget_bias = bool(unit_forget_bias)
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, **kwargs)

    def _make_cell(self, activation, recurrent_activation, use_bias):
        return LSTMCell(self.units, activation, recurrent_activation, use_bias)

    def _init_bias(self, dt):
        b = super()._init_bias(dt)
        if self.unit_forget_bias:
            b[self.units:2 * self.units] = 1.0
        return b

    def get_config(self):
        cfg = super().get_config()
        cfg["unit_forget_bias"] = self.unit_forget_bias
        return cfg
