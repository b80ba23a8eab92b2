"""GRU: the gated recurrent unit, in Keras's weight layout (gate order z, r, h).

With a = recurrent_activation (sigmoid), f = activation (tanh), x_t the input, h the previous state,
kernel W = [Wz | Wr | Wh] (D, 3u) and recurrent_kernel U = [Uz | Ur | Uh] (u, 3u):

    z  = a(x Wz + bz + h Uz + bz')          update gate
    r  = a(x Wr + br + h Ur + br')          reset gate
    h~ = f(x Wh + bh + r * (h Uh + bh'))    candidate, reset_after=True  (Keras default, PyTorch,
                                                         cuDNN, ONNX linear_before_reset=1)
    h~ = f(x Wh + bh + (r * h) Uh)          candidate, reset_after=False (the 2014 cell, ONNX default)
    h_t = z * h + (1 - z) * h~

With reset_after=True the bias is (2, 3u): row 0 is added to x W, row 1 to h U (the primed b').
With reset_after=False it is (3u,). The seed's update gate u is 1 - z: h_t = u * h~ + (1 - u) * h.

>>> import numpy as np
>>> from grukit.layers import GRU
>>> GRU(8)(np.zeros((2, 5, 3))).shape
(2, 8)
"""
import numpy as np

from ..utils import aligned_empty
from .recurrent import Cell, Recurrent


class GRUCell(Cell):
    n_states = 1
    gates = 3

    def __init__(self, units, activation, recurrent_activation, use_bias, reset_after):
        super().__init__(units, activation, recurrent_activation, use_bias)
        self.reset_after = reset_after

    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def biases(self):
        """(input bias, recurrent bias): with reset_after the bias's two rows, else (bias, None).
        The row views are made once per bias array (a model moving the weights into its flat
        buffer gives the layer a new one, and the views follow)."""
        b = self.params.get("bias")
        rows = self.__dict__.get("_bias_rows")
        if rows is None or rows[0] is not b:
            rows = self._bias_rows = (b, *((b[0], b[1]) if (b is not None and self.reset_after)
                                           else (b, None)))
        return rows[1:]

    def input_bias(self):
        return self.biases()[0]

    def recurrent_bias(self):
        return self.biases()[1]

    def input_weights(self):
        """W and b, and with reset_after b'_z, b'_r added to b (they add to the same sums)."""
        W, b = super().input_weights()
        b2 = self.recurrent_bias()
        if b2 is not None:
            b = b.copy()
            b[:2 * self.units] += b2[:2 * self.units]
        return W, b

    def workspace(self, T, B, dt):
        u = self.units
        ws = {"a": np.empty((T, 3 * u, B), dt)}        # gate values z, r, h~
        if self.reset_after:
            ws["hu"] = np.empty((T, u, B), dt)         # h Uh + bh'
            ws["scratch"] = np.empty((3 * u, B), dt)   # h U, then dL/d(h U), one step
            b2 = self.recurrent_bias()
            ws["b2"] = None if b2 is None else np.ascontiguousarray(b2[2 * u:, None])
        else:
            ws["scratch"] = np.empty((2 * u, B), dt)   # h [Uz|Ur], one step
            ws["rh"] = np.empty((T, u, B), dt)         # r * h
            U = self.params["recurrent_kernel"]
            ws["U_zr"] = np.ascontiguousarray(U[:, :2 * u])
            ws["U_h"] = np.ascontiguousarray(U[:, 2 * u:])
            ws["U_zr_T"] = np.ascontiguousarray(ws["U_zr"].T)
            ws["U_h_T"] = np.ascontiguousarray(ws["U_h"].T)
        return ws

    def step(self, t, xp, S, ws):
        u = self.units
        h, h_new = S[0][t], S[0][t + 1]                 # (u, B)
        x_t, a, hu = xp[t], ws["a"][t], ws["scratch"]   # (3u, B) ...
        zr, hh = a[:2 * u], a[2 * u:]
        # update and reset gates (b'_z, b'_r are in x_t already)
        h_in = self.rec_input(t, S, ws)     # h, or h times the recurrent dropout mask
        if self.reset_after:
            np.dot(self.weight_T(ws), h_in, out=hu)
        else:
            np.dot(ws["U_zr_T"], h_in, out=hu)
        np.add(x_t[:2 * u], hu[:2 * u], out=zr)
        self.recurrent_activation.f(zr, out=zr)
        z, r = a[:u], a[u:2 * u]
        # candidate
        if self.reset_after:
            hu_h = ws["hu"][t]
            if ws["b2"] is None:
                np.copyto(hu_h, hu[2 * u:])
            else:
                np.add(hu[2 * u:], ws["b2"], out=hu_h)
            np.multiply(r, hu_h, out=hh)
        else:
            rh = ws["rh"][t]
            np.multiply(r, h_in, out=rh)
            np.dot(ws["U_h_T"], rh, out=hh)
        hh += x_t[2 * u:]
        self.activation.f(hh, out=hh)
        # new state: z * h + (1 - z) * h~ = h~ + z * (h - h~)
        np.subtract(h, hh, out=h_new)
        h_new *= z
        h_new += hh

    def step_backward(self, t, S, ws, dS):
        u = self.units
        dh = dS[0]
        h = S[0][t]
        a, dxp = ws["a"][t], ws["dxp"][t]
        z, r, hh = a[:u], a[u:2 * u], a[2 * u:]
        dz, dr, dc = dxp[:u], dxp[u:2 * u], dxp[2 * u:]
        dzr = self.recurrent_activation.df(a[:2 * u])   # both gates' derivatives at once
        # candidate: dL/d(pre-activation of h~)
        np.subtract(1.0, z, out=dc)
        dc *= dh
        dc *= self.activation.df(hh)
        # update gate
        np.subtract(h, hh, out=dz)
        dz *= dh
        dz *= dzr[:u]
        if self.reset_after:
            # reset gate: r multiplies (h Uh + bh')
            np.multiply(dc, ws["hu"][t], out=dr)
            dr *= dzr[u:]
            dhu = ws["scratch"]                         # dL/d(h U + b')
            dhu[:2 * u] = dxp[:2 * u]
            np.multiply(dc, r, out=dhu[2 * u:])
            # previous state: through z * h and through h U
            dh *= z
            self.add_rec_grad(dh, np.dot(self.params["recurrent_kernel"], dhu), ws)
        else:
            # reset gate: r multiplies h before Uh
            h_in = h if ws.get("rmask") is None else ws["hd"][t]
            drh = np.dot(ws["U_h"], dc)
            np.multiply(drh, h_in, out=dr)
            dr *= dzr[u:]
            # previous state: through z * h, through r * h and through h [Uz|Ur]
            dh *= z
            drh *= r
            drh += np.dot(ws["U_zr"], dxp[:2 * u])
            self.add_rec_grad(dh, drh, ws)

    def native_workspace(self, T, B, dt):
        u = self.units
        ws = {"a": aligned_empty((3 * u, B), dt),            # one step's
              "scratch": aligned_empty((3 * u, B), dt)}
        if not self.reset_after:   # (with reset_after, backward_native computes h Uh again)
            ws["rh"] = aligned_empty(self.span_shape(u, T, B), dt)   # r * h, every step
        return ws

    def forward_native(self, fast, x_in, xp, Sn, ws, keep, gates=True):
        T, B, D = ws["dims"]
        U, W = self.native_weights()
        b_in, b_rec = self.biases()
        fast.gru_forward((T, B, self.units, int(self.reset_after), *self.native_codes(), D,
                          int(gates), int(ws["xbm"])),
                         (U, b_rec, xp, Sn[0], ws["a"], ws.get("rh"), ws["scratch"],
                          ws.get("rmask"), ws.get("hd"), keep, x_in, W, b_in))

    def backward_native(self, fast, x_in, ws, dS, dy_tm, keep, dx, out=None):
        T, B, D = ws["dims"]
        u = self.units
        dW, dU, db, d, carried = self.native_buffers(x_in, keep, u, ws, out)
        self.buffer(ws, "tmp", (u, B), x_in.dtype)
        if self.reset_after:
            self.buffer(ws, "hu", (u, B), x_in.dtype)   # one step's h Uh
        fast.gru_backward((T, B, u, D, int(self.reset_after), *self.native_codes(),
                           int(ws["xbm"])),
                          (*self.native_weights(), ws["xp"], ws["Sn"][0], ws["a"],
                           ws.get("hu"), ws.get("rh"), d, ws["tmp"], carried,
                           ws.get("rmask"), ws.get("hd"), keep, dy_tm, dS[0], x_in, dx, dW, dU,
                           db, self.recurrent_bias()))
        return self.native_grads(dW, dU, db)   # db (2, 3u) with reset_after

    def recurrent_grads(self, S, ws, grads):
        u = self.units
        dxp, a = ws["dxp"], ws["a"]
        T = a.shape[0]
        h_prev = self.feature_major(self.rec_inputs(S, ws, T))         # (u, T*B)
        dzr = self.step_major(dxp[:, :2 * u])                          # (T*B, 2u)
        dU = np.empty_like(self.params["recurrent_kernel"])
        dU[:, :2 * u] = h_prev @ dzr
        if self.reset_after:
            # dL/d(h Uh + bh') = dc * r
            dhh = self.step_major(dxp[:, 2 * u:] * a[:, u:2 * u])      # (T*B, u)
            dU[:, 2 * u:] = h_prev @ dhh
            if "bias" in grads:
                grads["bias"] = np.stack([grads["bias"],
                                          np.concatenate([dzr.sum(axis=0), dhh.sum(axis=0)])])
        else:
            dU[:, 2 * u:] = self.feature_major(ws["rh"]) @ self.step_major(dxp[:, 2 * u:])
        grads["recurrent_kernel"] = dU

    def trace(self, S, ws):
        u, a = self.units, ws.get("gates", ws["a"])   # compiled loop: the gates kept in xp
        return {"z": a[:, :u], "r": a[:, u:2 * u], "candidate": a[:, 2 * u:], "h": S[0][1:]}


class GRU(Recurrent):
    """Gated recurrent unit layer (Keras ``GRU``). See the module docstring for the equations.

    Args: units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
    kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
    bias_initializer="zeros", return_sequences=False, return_state=False, go_backwards=False,
    reset_after=True, input_shape=None.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 reset_after=True, **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, **kwargs)

    def _make_cell(self, activation, recurrent_activation, use_bias):
        return GRUCell(self.units, activation, recurrent_activation, use_bias, self.reset_after)

    def get_config(self):
        cfg = super().get_config()
        cfg["reset_after"] = self.reset_after
        return cfg
