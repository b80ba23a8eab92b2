"""The Layer contract.

``build(input_shape)`` creates ``self.params`` (Keras names: ``kernel``, ``recurrent_kernel``,
``bias``...). ``forward(x, training) -> (y, cache)``; ``backward(dy, cache) -> (dx, grads)`` where
``grads`` has the keys of ``params``. A cache is a value passed back in, never hidden state.
Layers are callable on arrays, as in Keras: ``Dense(3)(np.ones((2, 4)))`` builds and runs.
"""
import itertools
import threading
from collections import defaultdict

import numpy as np

from .. import config
from .. import constraints, regularizers
from ..utils import reject_unknown

_NAME_COUNTERS = defaultdict(itertools.count)
_held = threading.local()


class inputs_held:
    """Within this block the caller keeps every layer's input unchanged until that layer's
    backward pass has run (a model's training step does): a layer may then keep a view of its
    input in the cache instead of a copy. (A class rather than a generator: it is entered once
    per training step, where contextlib's machinery costs microseconds.)"""
    __slots__ = ("old",)

    def __enter__(self):
        self.old = getattr(_held, "on", False)
        _held.on = True

    def __exit__(self, *exc):
        _held.on = self.old


def inputs_are_held():
    """Whether the caller is inside :func:`inputs_held`."""
    return getattr(_held, "on", False)


def _snake(name: str) -> str:
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out.replace("g_r_u", "gru").replace("l_s_t_m", "lstm").replace("simple_r_n_n", "simple_rnn")


class Layer:
    """Base class: name, params, build-on-first-call, weights in Keras order, config round trip."""

    #: parameter names in Keras's ``get_weights()`` order
    param_names: tuple = ()
    #: the input rank the layer accepts, counting the batch axis (None: any rank >= 2)
    input_ndim = None

    #: whether the layer accepts a mask (batch, time) and passes it on (see compute_mask)
    supports_masking = False

    def __init__(self, name=None, input_shape=None, input_dim=None, trainable=True, dtype=None,
                 activity_regularizer=None, batch_size=None, batch_input_shape=None, **kwargs):
        reject_unknown(type(self).__name__, kwargs)
        if name is None:
            base = _snake(type(self).__name__)
            n = next(_NAME_COUNTERS[base])
            name = base if n == 0 else f"{base}_{n}"
        self.name = name
        if input_shape is None and input_dim is not None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            batch_size, input_shape = batch_input_shape[0], batch_input_shape[1:]
        self.input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.batch_size = batch_size
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.param_regularizers = {}   # param name -> Regularizer
        self.param_constraints = {}    # param name -> Constraint
        self.trainable = trainable
        self.dtype = dtype
        self.params = {}
        self.built = False
        self.input_shape = None   # with the batch axis, once built

    # ---- building -------------------------------------------------------------------------
    def build(self, input_shape):
        """Create ``self.params`` for inputs of ``input_shape`` (with the batch axis)."""
        self.input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _float(self):
        return np.dtype(self.dtype or config.floatx())

    def _check_input(self, x):
        if self.input_ndim is not None and x.ndim != self.input_ndim:
            raise ValueError(
                f"{self.name} ({type(self).__name__}) expects input of rank {self.input_ndim} "
                f"{self._rank_hint()}, got shape {x.shape} (rank {x.ndim}).")
        if self.input_ndim is None and x.ndim < 2:
            raise ValueError(f"{self.name} ({type(self).__name__}) expects input of rank >= 2 "
                             f"(batch, ..., features), got shape {x.shape}.")
        if self.built and self.input_shape is not None and not self.integer_input:
            want = self.input_shape[-1]
            if want is not None and x.shape[-1] != want:
                raise ValueError(f"{self.name} ({type(self).__name__}) was built for {want} "
                                 f"features on the last axis, got input of shape {x.shape}.")

    def _rank_hint(self):
        return "(batch, features)" if self.input_ndim == 2 else "(batch, time, features)"

    def _prepare(self, x):
        """Check the input, build on first use, and return it as an array of the layer's type."""
        x = np.asarray(x)
        if x.dtype.kind in "fiub" and not (x.dtype.kind in "iu" and self.integer_input):
            x = x.astype(self._float(), copy=False)
        self._check_input(x)
        if not self.built:
            self.build((None,) + x.shape[1:])
        return x

    integer_input = False

    def __call__(self, x, training=False, mask=None):
        x = self._prepare(x)
        y, _ = self.forward(x, training=training, mask=mask)
        return y

    # ---- the math (subclasses) --------------------------------------------------------------
    def forward(self, x, training=False, mask=None):
        """x -> (y, cache). ``mask`` (batch, time) of booleans marks the valid steps."""
        raise NotImplementedError

    def infer(self, x, mask=None):
        """The output alone, for inference: :meth:`forward` without training, its cache released
        at once (a layer may skip what only a backward pass would need)."""
        y, cache = self.forward(x, training=False, mask=mask)
        self.release(cache)
        return y

    def release(self, cache):
        """The caller is done with ``cache`` (its backward ran, or none will): a layer may reuse
        its buffers for the next call. Only the owner of a cache calls this (Sequential does)."""

    def compute_mask(self, x, mask=None):
        """The mask of this layer's output: the input's when the layer supports masking."""
        return mask if self.supports_masking else None

    # ---- penalties and constraints ----------------------------------------------------------
    def _set_penalties(self, **by_param):
        """Register ``<param>=(regularizer, constraint)`` pairs, given as names or objects."""
        for k, (reg, con) in by_param.items():
            reg, con = regularizers.get(reg), constraints.get(con)
            if reg is not None:
                self.param_regularizers[k] = reg
            if con is not None:
                self.param_constraints[k] = con

    def regularization_loss(self):
        if not self.param_regularizers:
            return 0
        return sum(reg(self.params[k]) for k, reg in self.param_regularizers.items()
                   if k in self.params)

    def apply_constraints(self):
        for k, con in self.param_constraints.items():
            if k in self.params:
                self.params[k][...] = con(self.params[k])

    def backward(self, dy, cache):
        raise NotImplementedError

    def backward_params(self, dy, cache):
        """Only the parameter gradients: for a first layer, whose input (the data) needs no
        gradient. A layer may skip computing dL/dx here."""
        return self.backward(dy, cache)[1]

    def backward_into(self, dy, cache, out, input_grad=True):
        """The model's backward: returns dL/dx (None without ``input_grad``) and leaves the
        parameter gradients in ``out`` (name -> array: views of the model's flat gradient
        vector), which :meth:`_backward_out` may have written directly."""
        dx, grads = self._backward_out(dy, cache, out, input_grad)
        for k, a in out.items():
            g = grads[k]
            if g is not a:
                a[...] = g
        return dx

    def _backward_out(self, dy, cache, out, input_grad):
        """(dx, grads) for :meth:`backward_into`; a layer that can compute its gradients into
        the arrays of ``out`` overrides this."""
        if input_grad:
            return self.backward(dy, cache)
        return None, self.backward_params(dy, cache)

    # ---- weights ----------------------------------------------------------------------------
    @property
    def weights(self):
        return [self.params[k] for k in self.param_names if k in self.params]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        names = [k for k in self.param_names if k in self.params]
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on an "
                             "input or give it input_shape first.")
        if len(weights) != len(names):
            raise ValueError(f"{self.name} ({type(self).__name__}) has {len(names)} weight(s) "
                             f"{names}, got a list of {len(weights)}.")
        for k, w in zip(names, weights):
            w = np.asarray(w)
            if w.shape != self.params[k].shape:
                raise ValueError(f"{self.name}: weight {k!r} has shape {self.params[k].shape}, "
                                 f"got {w.shape}.")
            # write in place: the model's flat buffer may hold these arrays as views
            self.params[k][...] = w

    def count_params(self):
        if not self.built:
            raise ValueError(f"{self.name} is not built yet: it has no weights to count. Give it "
                             "input_shape or call it on an input first.")
        return int(sum(w.size for w in self.weights))

    # ---- config -----------------------------------------------------------------------------
    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.input_shape_arg is not None:
            cfg["input_shape"] = list(self.input_shape_arg)
        if self.batch_size is not None:
            cfg["batch_size"] = self.batch_size
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = self.activity_regularizer.get_config()
        return cfg

    def _penalty_config(self, cfg, **names):
        """Add ``<option>: config`` for each regularizer/constraint option set on a param."""
        for option, (param, kind) in names.items():
            obj = (self.param_regularizers if kind == "reg" else self.param_constraints).get(param)
            if obj is not None:
                cfg[option] = obj.get_config() if kind == "reg" else \
                    {"class_name": obj.name, "config": obj.get_config()}
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"
