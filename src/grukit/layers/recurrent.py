"""The ONE time loop of grukit: a recurrent layer scans a cell forward, and back through time.

A cell (GRUCell, LSTMCell, SimpleRNNCell) supplies the per-step math; this module owns everything
around it: the input projection for all steps at once, the state buffers, return_sequences /
return_state / go_backwards, and the weight gradients as one matmul each after the loop.

Buffers are time-major. ``S[k]`` has shape (T+1, B, units): ``S[k][0]`` is the initial value of
state k and ``S[k][t+1]`` its value after step t, so the output sequence is ``S[0][1:]``.

The cell contract (see :class:`Cell`):
    ``project_inputs(x)``            x (T*B, D) -> xp (T*B, G): x @ kernel (+ input bias), all steps
    ``workspace(T, B)``              the per-step caches the cell fills, preallocated
    ``step(t, xp, S, ws)``           reads S[k][t], writes S[k][t+1] and ws[...][t]
    ``step_backward(t, xp, S, ws, dS)``
                                     dS[k] holds dL/dS[k][t+1]; writes dL/dxp into ws["dxp"][t]
                                     and leaves dL/dS[k][t] in dS[k] (in place)
    ``recurrent_grads(S, ws)``       dL/d recurrent_kernel (and the recurrent bias), after the loop
"""
import numpy as np

from .. import activations, initializers
from ..utils import check_finite
from .base import Layer


class Cell:
    """One recurrence step. Subclasses set ``n_states``, ``gates`` and the math."""
    n_states = 1   # h (GRU, SimpleRNN) or h, c (LSTM)
    gates = 1      # G = gates * units columns in kernel and recurrent_kernel

    def __init__(self, units, activation, recurrent_activation, use_bias):
        self.units = units
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        for role, act in (("activation", self.activation),
                          ("recurrent_activation", self.recurrent_activation)):
            if not act.elementwise:
                raise ValueError(f"{role}={act.name!r} is not elementwise; a recurrent cell needs "
                                 "an elementwise function such as 'tanh' or 'sigmoid'.")
        self.use_bias = use_bias
        self.params = None   # the layer's params dict, set by bind()

    def bind(self, params):
        self.params = params

    def bias_shape(self):
        return (self.gates * self.units,)

    def input_bias(self):
        return self.params.get("bias")

    def project_inputs(self, x2):
        xp = x2 @ self.params["kernel"]
        b = self.input_bias()
        if b is not None:
            xp += b
        return xp

    def input_bias_grad(self, dxp2, grads):
        """Fill grads["bias"] from dL/dxp (T*B, G), plus whatever the cell adds."""
        grads["bias"] = dxp2.sum(axis=0)

    def workspace(self, T, B, dtype):
        raise NotImplementedError

    def step(self, t, xp, S, ws):
        raise NotImplementedError

    def step_backward(self, t, xp, S, ws, dS):
        raise NotImplementedError

    def recurrent_grads(self, S, ws, grads):
        raise NotImplementedError


class Recurrent(Layer):
    """A recurrent layer: a cell scanned over time. GRU, LSTM and SimpleRNN pick the cell.

    Input (batch, time, features); output (batch, units), or (batch, time, units) with
    ``return_sequences=True``; with ``return_state=True`` a list ``[output, *final_states]``.
    ``go_backwards=True`` reads the sequence from the end and returns the output sequence in that
    (reversed) order, as Keras does.
    """
    input_ndim = 3
    param_names = ("kernel", "recurrent_kernel", "bias")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", return_sequences=False, return_state=False,
                 go_backwards=False, unroll=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{type(self).__name__}: units must be a positive integer, got "
                             f"{units!r}.")
        self.units = int(units)
        self.cell = self._make_cell(activation, recurrent_activation, use_bias)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._init_names = (kernel_initializer, recurrent_initializer, bias_initializer)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)   # accepted for Keras compatibility; the loop is the same

    def _make_cell(self, activation, recurrent_activation, use_bias):
        raise NotImplementedError

    # ---- building ---------------------------------------------------------------------------
    def build(self, input_shape):
        super().build(input_shape)
        d, u, g = input_shape[-1], self.units, self.cell.gates
        if d is None:
            raise ValueError(f"{self.name}: the feature size (last axis of the input) must be known.")
        dt = self._float()
        self.params = {"kernel": self.kernel_initializer((d, g * u), dt),
                       "recurrent_kernel": self.recurrent_initializer((u, g * u), dt)}
        if self.use_bias:
            self.params["bias"] = self._init_bias(dt)
        self.cell.bind(self.params)

    def _init_bias(self, dt):
        return self.bias_initializer(self.cell.bias_shape(), dt)

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        out = (b, t, self.units) if self.return_sequences else (b, self.units)
        if self.return_state:
            return [out] + [(b, self.units)] * self.cell.n_states
        return out

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x, training=False, initial_state=None):
        """x (B, T, D) -> output, and the cache for :meth:`backward`."""
        B, T, D = x.shape
        if T == 0:
            raise ValueError(f"{self.name}: the input has no time steps (shape {x.shape}).")
        cell, u, dt = self.cell, self.units, self.params["recurrent_kernel"].dtype
        x_tm = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dt)     # (T, B, D)
        if self.go_backwards:
            x_tm = x_tm[::-1].copy()
        xp = cell.project_inputs(x_tm.reshape(T * B, D)).reshape(T, B, -1)
        S = [np.empty((T + 1, B, u), dt) for _ in range(cell.n_states)]
        for k in range(cell.n_states):
            if initial_state is None:
                S[k][0] = 0.0
            else:
                S[k][0] = initial_state[k]
        ws = cell.workspace(T, B, dt)
        for t in range(T):
            cell.step(t, xp, S, ws)
        cache = (x_tm, xp, S, ws)
        return self._outputs(S), cache

    def _outputs(self, S):
        h = S[0]
        y = h[1:].transpose(1, 0, 2) if self.return_sequences else h[-1]
        if self.return_state:
            return [y] + [s[-1] for s in S]
        return y

    # ---- backward ---------------------------------------------------------------------------
    def backward(self, dy, cache):
        """dy like the output -> (dx (B, T, D), grads). With return_state, dy is a list."""
        dx, grads, _ = self.backward_states(dy, cache)
        return dx, grads

    def backward_states(self, dy, cache):
        """As :meth:`backward`, plus the gradients with respect to the initial states."""
        x_tm, xp, S, ws = cache
        cell = self.cell
        T, B, D = x_tm.shape
        if self.return_state:
            dy, *dfinal = dy
        else:
            dfinal = [None] * cell.n_states
        dS = [np.zeros((B, self.units), S[0].dtype) for _ in range(cell.n_states)]
        for k, d in enumerate(dfinal):
            if d is not None:
                dS[k] += d
        if self.return_sequences:
            dy_tm = dy.transpose(1, 0, 2)
        else:
            dS[0] += dy
        for t in range(T - 1, -1, -1):
            if self.return_sequences:
                dS[0] += dy_tm[t]
            cell.step_backward(t, xp, S, ws, dS)
        # weight gradients: one matmul each, over all steps
        dxp2 = ws["dxp"].reshape(T * B, -1)
        x2 = x_tm.reshape(T * B, D)
        grads = {"kernel": x2.T @ dxp2}
        if self.use_bias:
            cell.input_bias_grad(dxp2, grads)
        cell.recurrent_grads(S, ws, grads)
        dx_tm = (dxp2 @ self.params["kernel"].T).reshape(T, B, D)
        if self.go_backwards:
            dx_tm = dx_tm[::-1]
        return dx_tm.transpose(1, 0, 2), grads, dS

    # ---- config -----------------------------------------------------------------------------
    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.cell.activation.name,
                   recurrent_activation=self.cell.recurrent_activation.name,
                   use_bias=self.use_bias, return_sequences=self.return_sequences,
                   return_state=self.return_state, go_backwards=self.go_backwards,
                   unroll=self.unroll)
        for key, value in zip(("kernel_initializer", "recurrent_initializer", "bias_initializer"),
                              self._init_names):
            if isinstance(value, str):
                cfg[key] = value
        return cfg

    def __call__(self, x, training=False, initial_state=None):
        x = self._prepare(x)
        check_finite(f"{self.name} input", x)
        y, _ = self.forward(x, training=training, initial_state=initial_state)
        return y
