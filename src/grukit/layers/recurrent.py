"""The ONE time loop of grukit: a recurrent layer scans a cell forward, and back through time.

A cell (GRUCell, LSTMCell, SimpleRNNCell) supplies the per-step math; this module owns everything
around it: the input projection for all steps at once, the state buffers, return_sequences /
return_state / go_backwards / stateful / initial_state, masks, dropout masks, and the weight
gradients as one matmul each after the loop.

Buffers are time-major and, inside a step, feature-major: ``S[k]`` has shape (T+1, units, B),
``S[k][0]`` is the initial value of state k and ``S[k][t+1]`` its value after step t, so the output
sequence is ``S[0][1:]``; the projected inputs ``xp`` are (T, G, B) with one block of ``units``
rows per gate. Every per-step slice (a gate, a state) is then one contiguous block, which keeps
the elementwise work of a step fast; the transposes happen once per sequence, outside the loop.

Masks (Keras's semantics): where ``mask[b, t]`` is False, step t leaves every state of sequence b
as it was, so its output repeats the previous one (zeros instead with ``zero_output_for_mask``):

    S[k][t+1] = m_t * cell(x_t, S[t])[k] + (1 - m_t) * S[k][t]

Dropout (Keras's semantics: one mask per sequence, drawn per batch, reused at every step, only in
training): the input mask multiplies x before the projection, the recurrent mask multiplies the
previous state h where it enters the recurrent matmul (not where it is carried through a gate).

The cell contract (see :class:`Cell`):
    ``input_weights()``              (W (D, G), b (G,) or None) in the loop's gate order: the loop
                                     projects every step at once, xp = x W + b, in (T, G, B)
    ``workspace(T, B)``              the per-step caches the cell fills, preallocated, (T, ., B)
    ``step(t, xp, S, ws)``           reads S[k][t], writes S[k][t+1] and ws[...][t]
    ``step_backward(t, S, ws, dS)``  dS[k] holds dL/dS[k][t+1]; writes dL/dxp into ws["dxp"][t]
                                     and leaves dL/dS[k][t] in dS[k] (in place). ws["dxp"] is
                                     xp's buffer: the step math never reads xp going back, so a
                                     cache serves ONE backward pass
    ``recurrent_grads(S, ws, grads)``  dL/d recurrent_kernel (and recurrent bias), after the loop

The compiled path (grukit._native, kernels.c): when it is available and both activations are ones
it knows, a cell runs the whole loop in one call instead. Its buffers that span all steps are
feature-major over time, xp (G, T*B) and states (u, T+1, B) (``ws["Sn"]``; ``S[k]`` is a view of
them in the usual (T+1, u, B) order), so that each weight gradient is one matrix product; for a
batch of one they are time-major instead (:meth:`Cell.span_shape`):
    ``native_workspace(T, B, dt)``   the buffers the loops fill (new ones: a workspace is built
                                     once per shape and reused, see below)
    ``forward_native(fast, x_in, xp, Sn, ws, keep, gates)``   every step forward, x_t W + b
                                     included; with ``gates`` the GRU and LSTM loops leave each
                                     step's gates in xp for the backward pass (and trace)
    ``backward_native(fast, x_in, ws, dS, dy_tm, keep, dx, out)``  every step back, and the
                                     weight gradients (into out's arrays, by name, where given):
                                     returns grads; dL/dxp overwrites ws["xp"]; its own scratch
                                     it keeps in ws (:meth:`Cell.buffer`)
x_in is time-major (T, B, D), or, where ``ws["xbm"]``, the caller's batch-major rows (B, T, D),
which the loops read in place; ``ws["dims"]`` is (T, B, D) either way.
With two cores, a batch of 16 or more runs as two halves on two threads
(:func:`grukit._native.batch_parts`), each through these same calls; they must leave their
results to the kernel call, which :func:`grukit._native.run_parts` collects and runs later.
A part's workspace ``ws`` (a dict of its buffers) is made once for its shapes and kept by the
layer: a released cache (:meth:`Recurrent.release`) gives it back, and the next call of those
shapes runs in it again.
``keep`` is the mask as (T, B) bool or None; ``dy_tm`` (T, u, B) or None. The NumPy loop stays
the reference: tests run both paths on every option and compare them.
"""
import itertools

import numpy as np

from .. import _native, activations, initializers
from ..utils import aligned, aligned_empty, check_finite, make_rng
from .base import Layer, inputs_are_held


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

    def input_weights(self):
        """The input projection's weights and bias, in the loop's gate order."""
        return self.params["kernel"], self.input_bias()

    def project_inputs(self, x_tm):
        """x (T, B, D) -> xp = x W + b for every step at once, in the loop's layout (T, G, B)."""
        W, b = self.input_weights()
        T, B, D = x_tm.shape
        if B >= 8:   # one batched matmul writes the layout directly
            xp = np.matmul(np.ascontiguousarray(W.T), x_tm.transpose(0, 2, 1))
            if b is not None:
                xp += b[:, None]
            return xp
        xp = x_tm.reshape(T * B, D) @ W   # tiny batches: one matmul, then a (cheap) transpose
        if b is not None:
            xp += b
        return np.ascontiguousarray(xp.reshape(T, B, -1).transpose(0, 2, 1))

    # the previous state as it enters the recurrent matmul (recurrent dropout applies here)
    @staticmethod
    def rec_input(t, S, ws):
        mr = ws.get("rmask")
        if mr is None:
            return S[0][t]
        return np.multiply(S[0][t], mr, out=ws["hd"][t])

    @staticmethod
    def add_rec_grad(dh, dhin, ws):
        """dh += dL/d(rec input) routed back through the recurrent dropout mask."""
        mr = ws.get("rmask")
        if mr is None:
            dh += dhin
        else:
            dh += dhin * mr

    @staticmethod
    def rec_inputs(S, ws, T):
        """All steps' recurrent-matmul inputs, (T, units, B)."""
        return ws["hd"] if ws.get("rmask") is not None else S[0][:T]

    def gradients_by_column(self, dxp):
        """dL/dxp as (T*B, G) with the columns in the kernel's (Keras's) gate order."""
        return self.step_major(dxp)

    @staticmethod
    def step_major(a):
        """(T, F, B) -> (T*B, F): rows (step, sample), for a weight gradient as one matmul."""
        T, F, B = a.shape
        return a.transpose(0, 2, 1).reshape(T * B, F)

    @staticmethod
    def feature_major(a):
        """(T, F, B) -> (F, T*B)."""
        T, F, B = a.shape
        return a.transpose(1, 0, 2).reshape(F, T * B)

    def weight_T(self, ws):
        """recurrent_kernel transposed, (G, units), contiguous: h U as U^T h in this layout."""
        if "U_T" not in ws:
            ws["U_T"] = np.ascontiguousarray(self.params["recurrent_kernel"].T)
        return ws["U_T"]

    def native_loops(self, dtype):
        """kernels.c's loops for ``dtype``, or None: compiled path off or unavailable, a dtype
        other than float32/float64, or an activation that kernels.c does not have."""
        codes = self.__dict__.get("_codes")
        if codes is None:   # the activations are fixed at construction: look them up once
            codes = self._codes = (_native.activation_code(self.activation),
                                   _native.activation_code(self.recurrent_activation))
        if None in codes:
            return None
        return _native.loops(dtype)

    def native_codes(self):
        return self._codes

    def native_weights(self):
        """(recurrent_kernel, kernel) as the compiled loops take them: C-contiguous."""
        return (np.ascontiguousarray(self.params["recurrent_kernel"]),
                np.ascontiguousarray(self.params["kernel"]))

    @staticmethod
    def buffer(ws, name, shape, dt):
        """ws[name]: an uninitialised buffer of this shape and type, which the workspace keeps from
        one call to the next."""
        a = ws.get(name)
        if a is None or a.shape != shape or a.dtype != dt:
            a = ws[name] = aligned_empty(shape, dt)
        return a

    def native_buffers(self, x_in, keep, carried_rows, ws, out=None):
        """What the compiled backward writes: dL/dW (D, G), dL/dU (u, G), dL/db (the bias's shape)
        or None, in the arrays of ``out`` (every parameter's, by name) or else in new ones; and
        its scratch, kept in ws: one step's dL/dxp (G, B), and the (carried_rows, B) buffer that
        masked steps need (None without a mask)."""
        T, B, D = ws["dims"]
        G, dt = self.gates * self.units, x_in.dtype
        s = ws.get("scratch")   # the forward's one-step scratch, free by now, where it fits
        ws["d"] = s if s is not None and s.shape == (G, B) else self.buffer(ws, "dL", (G, B), dt)
        ws["carried"] = (None if keep is None
                         else self.buffer(ws, "carried_rows", (carried_rows, B), dt))
        if out is None:
            out = {"kernel": np.empty((D, G), dt),
                   "recurrent_kernel": np.empty((self.units, G), dt)}
            if self.use_bias:
                out["bias"] = np.empty(self.bias_shape(), dt)
        return out["kernel"], out["recurrent_kernel"], out.get("bias"), ws["d"], ws["carried"]

    @staticmethod
    def native_grads(dW, dU, db):
        """The compiled backward's gradients by parameter name (db is None without a bias)."""
        grads = {"kernel": dW, "recurrent_kernel": dU}
        if db is not None:
            grads["bias"] = db
        return grads

    @staticmethod
    def span_shape(rows, steps, B):
        """The compiled loop's layout of a buffer over all steps: feature-major over time,
        (rows, steps, B), so that the weight gradients are one product each; for B = 1
        time-major, (steps, rows, 1), so that a step's rows are contiguous."""
        return (rows, steps, B) if B > 1 else (steps, rows, 1)

    def workspace(self, T, B, dtype):
        raise NotImplementedError

    def native_workspace(self, T, B, dtype):
        raise NotImplementedError

    def step(self, t, xp, S, ws):
        raise NotImplementedError

    def step_backward(self, t, S, ws, dS):
        raise NotImplementedError

    def recurrent_grads(self, S, ws, grads):
        raise NotImplementedError

    def trace(self, S, ws):
        """Per-step values by name, each (T, units, B) in processing order."""
        return {"h": S[0][1:]}


class _InputDims:
    """What a compiled forward's cache keeps of its input in place of the array: the time-major
    shape (T, B, D) and the type (each part of the batch holds its own input)."""
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


class Recurrent(Layer):
    """A recurrent layer: a cell scanned over time. GRU, LSTM and SimpleRNN pick the cell.

    Input (batch, time, features); output (batch, units), or (batch, time, units) with
    ``return_sequences=True``; with ``return_state=True`` a list ``[output, *final_states]``.
    ``go_backwards=True`` reads the sequence from the end and returns the output sequence in that
    (reversed) order, as Keras does. ``stateful=True`` starts each batch from the final states of
    the previous one (``reset_states()`` zeroes them). ``initial_state`` is a call argument.
    """
    input_ndim = 3
    supports_masking = True
    param_names = ("kernel", "recurrent_kernel", "bias")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, **kwargs):
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
        self._set_penalties(kernel=(kernel_regularizer, kernel_constraint),
                            recurrent_kernel=(recurrent_regularizer, recurrent_constraint),
                            bias=(bias_regularizer, bias_constraint))
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{type(self).__name__}: {name} must be in [0, 1), got {rate!r}.")
        self.dropout, self.recurrent_dropout = float(dropout), float(recurrent_dropout)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.states = None   # the carried states of a stateful layer
        self.unroll = bool(unroll)   # accepted for Keras compatibility; the loop is the same
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self._pool = {}   # shapes -> free workspaces of released caches (compiled path)
        self._tags = itertools.count(1)   # numbers the parts that hold a workspace

    def _make_cell(self, activation, recurrent_activation, use_bias):
        raise NotImplementedError

    # ---- building ---------------------------------------------------------------------------
    def build(self, input_shape):
        super().build(input_shape)
        d, u, g = input_shape[-1], self.units, self.cell.gates
        if d is None:
            raise ValueError(f"{self.name}: the feature size (last axis of the input) must be known.")
        dt = self._float()
        self.params = {"kernel": aligned(self.kernel_initializer((d, g * u), dt)),
                       "recurrent_kernel": aligned(self.recurrent_initializer((u, g * u), dt))}
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

    def compute_mask(self, x, mask=None):
        """The input mask passes on unchanged with return_sequences, as in Keras; even after
        go_backwards, whose output sequence is in reversed order (Keras does not flip the mask)."""
        if mask is None or not self.return_sequences:
            return None
        return mask

    # ---- state ------------------------------------------------------------------------------
    def reset_states(self, states=None):
        """Zero the carried states of a stateful layer, or set them to ``states``."""
        if not self.stateful:
            raise ValueError(f"{self.name}: reset_states() needs stateful=True.")
        if states is None:
            self.states = None
        else:
            states = states if isinstance(states, (list, tuple)) else [states]
            self.states = [np.array(s, dtype=self._float()) for s in states]

    def _initial_states(self, initial_state, B):
        if initial_state is None and self.stateful and self.states is not None:
            initial_state = self.states
        if initial_state is None:
            return None
        states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
        n = self.cell.n_states
        if len(states) != n:
            raise ValueError(f"{self.name}: initial_state needs {n} array(s) "
                             f"({'[h0, c0]' if n == 2 else '[h0]'}), got {len(states)}.")
        for s in states:
            if np.shape(s) != (B, self.units):
                raise ValueError(f"{self.name}: each initial state must have shape "
                                 f"(batch, units) = {(B, self.units)}, got {np.shape(s)}.")
        return states

    def dropout_masks(self, B, D, dtype):
        """Draw (input mask (B, D) or None, recurrent mask (B, units) or None) for one batch."""
        g = self._rng if self._rng is not None else make_rng(None)

        def draw(rate, width):
            if rate == 0.0:
                return None
            return (g.random((B, width)) >= rate).astype(dtype) / dtype.type(1.0 - rate)
        return draw(self.dropout, D), draw(self.recurrent_dropout, self.units)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x, training=False, mask=None, initial_state=None, dropout_masks=None,
                _gates=True):
        """x (B, T, D) -> output, and the cache for :meth:`backward`.

        ``mask`` (B, T) marks valid steps; ``dropout_masks`` = (input, recurrent) fixes the masks
        that training would draw (tests use it). ``_gates=False`` (:meth:`infer`): the compiled
        loop does not keep each step's gates, so the cache serves no backward pass or trace.
        """
        B, T, D = x.shape
        if T == 0:
            raise ValueError(f"{self.name}: the input has no time steps (shape {x.shape}).")
        cell, u, dt = self.cell, self.units, self.params["recurrent_kernel"].dtype
        m_tm = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (B, T):
                raise ValueError(f"{self.name}: mask must have shape (batch, time) = {(B, T)}, "
                                 f"got {mask.shape}.")
            m_tm = np.ascontiguousarray(mask.T)[:, :, None]               # (T, B, 1)
        if self.go_backwards:
            m_tm = None if m_tm is None else m_tm[::-1]
        if dropout_masks is None and training and (self.dropout or self.recurrent_dropout):
            dropout_masks = self.dropout_masks(B, D, dt)
        din = drec = None
        if dropout_masks is not None:
            din, drec = dropout_masks
            for name, m, shape in (("input", din, (B, D)), ("recurrent", drec, (B, u))):
                if m is not None and np.shape(m) != shape:
                    raise ValueError(f"{self.name}: the {name} dropout mask must have shape "
                                     f"{shape}, got {np.shape(m)}.")
            din = None if din is None else np.asarray(din, dt)
            drec = None if drec is None else np.asarray(drec, dt)
        init = self._initial_states(initial_state, B)
        keep = None
        if m_tm is not None:
            m_tm = m_tm.transpose(0, 2, 1)                                 # (T, 1, B)
            keep = np.ascontiguousarray(m_tm[:, 0, :])                     # (T, B)
        fast = cell.native_loops(dt)
        if fast is not None:
            return self._forward_native(fast, x, dt, init, keep, drec, m_tm, din, _gates)
        x_in = self._part_input(x, 0, B, din, dt, False)[0]               # (T, B, D)
        S = [np.empty((T + 1, u, B), dt) for _ in range(cell.n_states)]
        for k in range(cell.n_states):
            S[k][0] = 0.0 if init is None else np.asarray(init[k]).T
        xp = cell.project_inputs(x_in)                                     # (T, G, B)
        ws = cell.workspace(T, B, dt)
        if drec is not None:
            ws["rmask"], ws["hd"] = np.ascontiguousarray(drec.T), np.empty((T, u, B), dt)
        for t in range(T):
            cell.step(t, xp, S, ws)
            if m_tm is not None:
                for s in S:
                    np.copyto(s[t + 1], s[t], where=~m_tm[t])
        if self.stateful:
            self.states = [s[-1].T.copy() for s in S]
        cache = (x_in, xp, S, ws, m_tm, din, None, None)
        return self._outputs(S, m_tm), cache

    def infer(self, x, mask=None, initial_state=None):
        y, cache = self.forward(x, training=False, mask=mask, initial_state=initial_state,
                                _gates=False)
        self.release(cache)
        return y

    def _part_input(self, x, b0, b1, din, dt, borrow, ws=None):
        """(input, xbm): sequences [b0, b1) of x (B, T, D) as the loops read them. borrow: x's
        own rows, batch-major (xbm True). Else a time-major (T, b1 - b0, D) copy, in reverse
        time order with go_backwards, cast to dt, times the input dropout mask: one pass over x,
        into the workspace's buffer (compiled path) or a new array, then the mask in place."""
        part = x if b1 - b0 == len(x) else x[b0:b1]
        if borrow:
            return part, True
        src = part.transpose(1, 0, 2)
        if self.go_backwards:
            src = src[::-1]
        if ws is not None:
            out = Cell.buffer(ws, "x", src.shape, dt)
            np.copyto(out, src, casting="unsafe")
        else:
            out = np.ascontiguousarray(src, dtype=dt)
            if out.base is not None:   # x's own memory (one step or one sequence, contiguous
                out = out.copy()       # already; or a view of a subclass): a copy all the same
        if din is not None:
            out *= din[b0:b1]
        return out, False

    def _forward_native(self, fast, x, dt, init, keep, drec, m_tm, din, gates=True):
        """The compiled loop, over the whole batch or over two halves at once (see
        grukit._native.batch_parts); the cache holds one part per half. A part's input is x's
        rows themselves, batch-major, where the loop reads them in place (``borrow``), or else
        a time-major copy (:meth:`_part_input`): the cache's x_in is only a stand-in of the
        input's shape and type."""
        B, T, D = x.shape
        x_in = _InputDims((T, B, D), dt)
        bounds = _native.batch_parts(B)
        # in place: rows enough for the loop's tiled input products (where it reads x_t's rows,
        # at any stride, as it packs them), x as it is (no dropout, reversal or cast), and x
        # sure to stay unchanged while the cache lives (inference; or a model's training step)
        borrow = (B // len(bounds) >= (self._borrow_rows or 64 // dt.itemsize)
                  and din is None and not self.go_backwards and x.dtype == dt
                  and x.flags.c_contiguous and x.flags.aligned
                  and (not gates or inputs_are_held()))
        if len(bounds) == 1:   # the common case, without the machinery below
            ws = self._workspace(T, B, D, dt, drec is not None)
            part = self._forward_part(fast, ws, *self._part_input(x, 0, B, din, dt, borrow, ws),
                                      keep, drec,
                                      None if init is None else [np.asarray(s) for s in init],
                                      gates)
            part["b"] = (0, B)
            if self.stateful:
                self.states = [s[-1].T.copy() for s in part["S"]]
            return self._outputs(part["S"], m_tm), (x_in, [part], None, None, m_tm, din, fast,
                                                    keep)

        def run(b0, b1):
            def cut(a, axis):   # this part's slice of a batch axis, contiguous
                if a is None:
                    return a
                return np.ascontiguousarray(a[(slice(None),) * axis + (slice(b0, b1),)])
            ws = self._workspace(T, b1 - b0, D, dt, drec is not None)
            return self._forward_part(fast, ws, *self._part_input(x, b0, b1, din, dt, borrow, ws),
                                      cut(keep, 1), cut(drec, 0),
                                      None if init is None else [cut(np.asarray(s), 0)
                                                                 for s in init], gates)
        parts = _native.run_parts([lambda b0=b0, b1=b1: run(b0, b1) for b0, b1 in bounds])
        for p, b in zip(parts, bounds):
            p["b"] = b
        if self.stateful:
            self.states = [np.concatenate([p["S"][k][-1].T for p in parts])
                           for k in range(self.cell.n_states)]
        outs = [self._outputs(p["S"], None if m_tm is None else m_tm[:, :, p["b"][0]:p["b"][1]])
                for p in parts]
        out = ([np.concatenate(o) for o in zip(*outs)] if self.return_state
               else np.concatenate(outs))
        return out, (x_in, parts, None, None, m_tm, din, fast, keep)

    def _forward_part(self, fast, ws, x_in, xbm, keep, drec, init, gates=True):
        """One part of the batch through the compiled loop, in the workspace ws
        (:meth:`_workspace`); returns the part's dict (``gates``: whether the GRU and LSTM loops
        keep each step's gates, for a backward pass or a trace). x_in is time-major (T, B, D),
        a copy in ws["x"], or (xbm) rows of the caller's x, (B, T, D), read in place."""
        S = ws["S"]
        if init is not None:
            for k in range(self.cell.n_states):
                S[k][0] = init[k].T
        elif not ws.get("zero_start"):   # (the loops never write step 0: zeros stay zeros)
            for k in range(self.cell.n_states):
                S[k][0] = 0.0
        ws["zero_start"] = init is None
        ws["xbm"] = xbm
        if drec is not None:   # (a copy: the workspace outlives the caller's mask)
            np.copyto(Cell.buffer(ws, "rmask", drec.T.shape, drec.dtype), drec.T)
        self.cell.forward_native(fast, x_in, ws["xp"], ws["Sn"], ws, keep, gates)
        ws["owner"] = tag = next(self._tags)   # the part that holds it (release() checks)
        return {"x": x_in, "keep": keep, "S": S, "ws": ws, "tag": tag}

    def _outputs(self, S, m_tm):
        if self.return_sequences:
            h = S[0][1:]                                                    # (T, u, B)
            if self.zero_output_for_mask and m_tm is not None:
                h = h * m_tm
            y = np.array(h.transpose(2, 0, 1), order="C")                   # (B, T, u)
        else:
            y = S[0][-1].T.copy()
        if self.return_state:
            return [y] + [np.array(s[-1].T, order="C") for s in S]
        return y

    # ---- workspaces of the compiled path ------------------------------------------------------
    #: the fewest sequences of a part whose input the compiled loop reads in place (None: a vector
    #: register's worth, where it packs x_t's rows for its tiles; fewer take one product per step
    #: there, which the tests reach by setting this lower)
    _borrow_rows = None

    def _workspace(self, T, B, D, dt, rec_dropout):
        """The buffers of one part of the batch, in a dict: a workspace that a released cache gave
        back (fresh buffers of this size come as new pages from the OS, and faulting them in
        costs more than the arithmetic at the medium sizes), or a new one. Two threads calling
        the layer may ask at once: list.pop is atomic, the test before it is not. A workspace
        holds the states ``Sn`` (and ``S``, their (T+1, u, B) views), the projection ``xp``, the
        cell's own buffers (:meth:`Cell.native_workspace`), those its backward pass adds
        (:meth:`Cell.buffer`) and, with recurrent dropout, ``hd`` and ``rmask`` (the mask,
        copied in per call); per call, ``xbm``, ``d`` and ``carried``. Every buffer starts on a
        cache line (utils.ALIGN): the loops move whole vectors of a step's rows, and one across
        two lines costs two."""
        key = (T, B, D, dt, rec_dropout)
        free = self._pool.get(key)
        if free:
            try:
                ws = free.pop()
            except IndexError:
                pass
            else:
                if not free:   # release() puts the key back last: the oldest goes first
                    self._pool.pop(key, None)
                return ws
        cell, u = self.cell, self.units
        ws = cell.native_workspace(T, B, dt)
        Sn = [aligned_empty(cell.span_shape(u, T + 1, B), dt) for _ in range(cell.n_states)]
        ws.update(key=key, dims=(T, B, D), Sn=Sn,
                  S=Sn if B == 1 else [s.transpose(1, 0, 2) for s in Sn],
                  xp=aligned_empty((cell.gates * u, T * B) if B > 1 else (T, cell.gates * u), dt))
        if rec_dropout:
            ws["hd"] = aligned_empty(cell.span_shape(u, T, B), dt)
        return ws

    def release(self, cache):
        """Give the workspaces of a spent cache back for the next call of the same shapes. Outputs
        are always copies, never these buffers. A cache released twice, or after its workspace
        went to another call, gives nothing back."""
        if cache is None or cache[6] is None:
            return
        pool = self._pool
        # the last part first: the pool hands workspaces out last-in first-out and the parts ask
        # in order, so each half of a split batch gets back the one its own thread (core) used
        for part in reversed(cache[1]):
            ws = part["ws"]
            if ws.get("owner") != part["tag"]:
                continue
            ws["owner"] = None
            free = pool.get(ws["key"])
            if free is None:
                pool[ws["key"]] = [ws]
            elif len(free) < 2:                     # a split batch's two halves
                free.append(ws)
        while len(pool) > 8:                        # shapes that stopped coming: forget them
            pool.pop(next(iter(pool)))

    def held_bytes(self):
        """The bytes of the buffers that the layer keeps for reuse between calls."""
        seen, total = set(), 0
        for free in self._pool.values():
            for ws in free:
                for a in list(ws.values()) + ws["Sn"]:
                    if isinstance(a, np.ndarray):
                        owner = a if a.base is None else a.base   # (NumPy keeps the owner there)
                        if id(owner) not in seen:
                            seen.add(id(owner))
                            total += owner.nbytes
        return total

    # ---- backward ---------------------------------------------------------------------------
    def backward(self, dy, cache):
        """dy like the output -> (dx (B, T, D), grads). With return_state, dy is a list."""
        return self._backward(dy, cache, True)[:2]

    def backward_params(self, dy, cache):
        """The weight gradients alone: dL/dx, a (T*B, D) x (D, G) product, is not computed."""
        return self._backward(dy, cache, False)[1]

    def _backward_out(self, dy, cache, out, input_grad):
        return self._backward(dy, cache, input_grad, out)[:2]

    def backward_states(self, dy, cache, input_grad=True):
        """As :meth:`backward`, plus the gradients with respect to the initial states
        (dx is None when ``input_grad`` is False)."""
        dx, grads, dS = self._backward(dy, cache, input_grad)
        return dx, grads, [d.T for d in dS]

    def _backward(self, dy, cache, input_grad, out=None):
        """(dx, grads, dL/d(initial states) as (units, B) arrays). The compiled loop over an
        unsplit batch writes the weight gradients into the arrays of ``out`` (by name) where
        given."""
        # the compiled loop's cache holds its batch parts where the NumPy loop's holds xp
        x_in, xp, S, ws, m_tm, din, fast, keep = cache
        cell = self.cell
        T, B, D = x_in.shape
        u = self.units
        dfinal = ()
        if self.return_state:
            dy, *dfinal = dy
        want = (B, T, u) if self.return_sequences else (B, u)
        if (dy.shape if isinstance(dy, np.ndarray) else np.shape(dy)) != want:
            raise ValueError(f"{self.name}: the output gradient must have the output's shape "
                             f"{want}, got {np.shape(dy)}.")
        for d in dfinal:
            if d is not None and np.shape(d) != (B, u):
                raise ValueError(f"{self.name}: a final state's gradient must have shape "
                                 f"{(B, u)}, got {np.shape(d)}.")
        dS = [np.zeros((u, B), x_in.dtype) for _ in range(cell.n_states)]
        for k, d in enumerate(dfinal):
            if d is not None:
                dS[k] += d.T
        if self.return_sequences:
            dy_tm = np.ascontiguousarray(dy.transpose(1, 2, 0), dtype=x_in.dtype)  # (T, u, B)
            if self.zero_output_for_mask and m_tm is not None:
                dy_tm = dy_tm * m_tm          # a new array: dy_tm may be a view of the caller's
        else:   # the transpose copied first: an add across memory layouts costs more
            dS[0] += np.ascontiguousarray(dy.T)
            dy_tm = None
        if fast is not None:
            dx_tm, grads, dS = self._backward_native(fast, xp, dS, dy_tm, input_grad, out)
        else:
            dx_tm, grads = self._backward_numpy(x_in, xp, S, ws, m_tm, dS, dy_tm, input_grad)
        if not input_grad:
            return None, grads, dS
        if din is not None:
            dx_tm *= din
        if self.go_backwards:
            dx_tm = dx_tm[::-1]
        return dx_tm.transpose(1, 0, 2), grads, dS

    def _backward_native(self, fast, parts, dS, dy_tm, input_grad, out=None):
        """The compiled backward of each part of the batch (two at once when it was split);
        returns dL/dx (T, B, D) or None, the weight gradients (in the arrays of ``out``, by
        name, where given), dL/d(initial states) (u, B)."""
        cell = self.cell
        if len(parts) == 1:
            p = parts[0]
            dx = np.empty(p["ws"]["dims"], p["x"].dtype) if input_grad else None
            return dx, cell.backward_native(fast, p["x"], p["ws"], dS, dy_tm, p["keep"], dx,
                                            out), dS

        def run(p, out_p):
            b0, b1 = p["b"]
            x = p["x"]

            def cut(a):
                return None if a is None else np.ascontiguousarray(a[..., b0:b1])
            dS_p = [cut(d) for d in dS]
            dx = np.empty(p["ws"]["dims"], x.dtype) if input_grad else None
            grads = cell.backward_native(fast, x, p["ws"], dS_p, cut(dy_tm), p["keep"], dx,
                                         out_p)
            return dx, grads, dS_p
        # the first half writes into out's arrays (or new ones), the second into new ones, added
        # in place after
        (dx0, grads, dS0), (dx1, grads1, dS1) = _native.run_parts(
            [lambda: run(parts[0], out), lambda: run(parts[1], None)])
        for k in grads:
            np.add(grads[k], grads1[k], out=grads[k])
        dx = None if dx0 is None else np.concatenate([dx0, dx1], axis=1)
        return dx, grads, [np.concatenate([a, b], axis=1) for a, b in zip(dS0, dS1)]

    def _backward_numpy(self, x_in, xp, S, ws, m_tm, dS, dy_tm, input_grad=True):
        """The reference backward: the NumPy loop, then the weight gradients as one matmul each."""
        cell = self.cell
        T, B, D = x_in.shape
        ws["dxp"] = xp       # dL/dxp overwrites xp, step by step, going back
        for t in range(T - 1, -1, -1):
            if dy_tm is not None:
                dS[0] += dy_tm[t]
            if m_tm is None:
                cell.step_backward(t, S, ws, dS)
                continue
            # a masked step passes its gradient straight to the previous state
            keep = m_tm[t]
            carried = [np.where(keep, 0.0, d) for d in dS]
            for d in dS:
                d *= keep
            cell.step_backward(t, S, ws, dS)
            for d, c in zip(dS, carried):
                d += c
        # weight gradients: one matmul each, over all steps
        dxp2 = ws["dxp2"] = cell.gradients_by_column(ws["dxp"])           # (T*B, G)
        grads = {"kernel": x_in.reshape(T * B, D).T @ dxp2}
        if self.use_bias:
            grads["bias"] = dxp2.sum(axis=0)
        cell.recurrent_grads(S, ws, grads)
        if not input_grad:
            return None, grads
        return (dxp2 @ self.params["kernel"].T).reshape(T, B, D), grads

    # ---- explanation ------------------------------------------------------------------------
    def trace(self, x, mask=None, initial_state=None):
        """The gate values at every step, for inference on ``x`` (B, T, D).

        Returns a dict of arrays of shape (batch, time, units), time in the input's order (also
        with go_backwards): GRU ``z`` (update gate), ``r`` (reset gate), ``candidate`` (h~) and
        ``h``; LSTM ``i``, ``f``, ``g`` (candidate cell), ``c`` (cell state), ``o`` and ``h``;
        SimpleRNN ``h``.

        >>> from grukit.layers import GRU
        >>> sorted(GRU(4).trace(np.zeros((2, 3, 1))))
        ['candidate', 'h', 'r', 'z']
        """
        x = self._prepare(x)
        check_finite(f"{self.name} input", x)
        _, cache = self.forward(x, training=False, mask=mask, initial_state=initial_state)
        if cache[6] is None:
            values = [self.cell.trace(cache[2], cache[3])]
        else:   # the compiled loop: one dict per part of the batch
            G = self.cell.gates * self.units
            for p in cache[1]:   # the GRU and LSTM loops leave each step's gates in xp
                (T, B, _), xp = p["ws"]["dims"], p["ws"]["xp"]
                p["ws"]["gates"] = (xp.reshape(G, T, B).transpose(1, 0, 2) if B > 1
                                    else xp.reshape(T, G, 1))           # (T, G, B)
            values = [self.cell.trace(p["S"], p["ws"]) for p in cache[1]]
        out = {}
        for name in values[0]:   # concatenate copies: the buffers can go back to the pool
            v = np.concatenate([d[name] for d in values], axis=2).transpose(2, 0, 1)  # (B, T, u)
            out[name] = np.ascontiguousarray(v[:, ::-1] if self.go_backwards else v)
        self.release(cache)
        return out

    # ---- config -----------------------------------------------------------------------------
    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.cell.activation.name,
                   recurrent_activation=self.cell.recurrent_activation.name,
                   use_bias=self.use_bias, return_sequences=self.return_sequences,
                   return_state=self.return_state, go_backwards=self.go_backwards,
                   stateful=self.stateful, unroll=self.unroll, dropout=self.dropout,
                   recurrent_dropout=self.recurrent_dropout, seed=self.seed)
        for key, value in zip(("kernel_initializer", "recurrent_initializer", "bias_initializer"),
                              self._init_names):
            if isinstance(value, str):
                cfg[key] = value
        return self._penalty_config(
            cfg, kernel_regularizer=("kernel", "reg"), recurrent_regularizer=("recurrent_kernel", "reg"),
            bias_regularizer=("bias", "reg"), kernel_constraint=("kernel", "con"),
            recurrent_constraint=("recurrent_kernel", "con"), bias_constraint=("bias", "con"))

    def __call__(self, x, training=False, mask=None, initial_state=None):
        x = self._prepare(x)
        check_finite(f"{self.name} input", x)
        if not training:
            return self.infer(x, mask=mask, initial_state=initial_state)
        y, _ = self.forward(x, training=training, mask=mask, initial_state=initial_state)
        return y
