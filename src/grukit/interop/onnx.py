"""ONNX interchange: write a grukit Sequential as an ONNX graph, and read such graphs back.

    export(model, "model.onnx")        grukit Sequential -> ONNX file (opset 17 by default)
    model = load("model.onnx")         ONNX file (or ModelProto) -> grukit Sequential, weights set

The graph. One input "input", batch-first like grukit: float32 [batch, time, features] (or
[batch, features] for a model without a time axis), or int64 ids [batch, time] when the first layer
is an Embedding. "batch" is a symbolic dimension; so is "time" when the model's input shape leaves
it as None. One output "output". Weights are stored as float32 initializers, whatever floatx is.

Recurrent layers become the native ONNX ``GRU``, ``LSTM`` and ``RNN`` operators. Those read
time-major data, so the graph transposes into time-major before a recurrent layer and back only
when it must (a stack of recurrent layers stays time-major in between):

    X [time, batch, D]   W [dirs, G*u, D]   R [dirs, G*u, u]   B [dirs, 2*G*u] = [Wb | Rb]
    Y [time, dirs, batch, u]               Y_h [dirs, batch, u]

grukit (Keras) keeps the same gates side by side in columns: kernel (D, G*u), recurrent_kernel
(u, G*u). So W = kernel^T and R = recurrent_kernel^T, with the gate blocks reordered where the two
orders differ:

    GRU        grukit z, r, h     ONNX z, r, h      (same order)
    LSTM       grukit i, f, c, o  ONNX i, o, f, c   (ONNX block k = grukit block [0, 3, 1, 2][k])
    SimpleRNN  one block          RNN, one block

GRU biases. ONNX's candidate is g(x Wh^T + Wbh + r * (h Rh^T + Rbh)) with linear_before_reset=1:
grukit's reset_after=True cell, so Wb = bias[0] and Rb = bias[1]. With linear_before_reset=0 it is
g(x Wh^T + Wbh + Rbh + (r * h) Rh^T): reset_after=False, whose single bias (3u,) is Wb + Rb, so the
export writes Wb = bias, Rb = 0 (and the reader sums them). LSTM and RNN biases only act as
Wb + Rb, so they too are written as Wb = bias, Rb = 0. Without use_bias, B is left out.

Activations go in the ``activations`` attribute (GRU: f for z and r = recurrent_activation, g for
the candidate = activation; LSTM: f, g, h = recurrent_activation, activation, activation; RNN: f =
activation), the forward direction's list first. The ONNX names: sigmoid Sigmoid, tanh Tanh, relu
Relu, hard_sigmoid HardSigmoid (alpha 1/6, beta 1/2: Keras 3's form), softsign Softsign, softplus
Softplus, elu Elu (alpha 1), linear Affine (alpha 1, beta 0). ONNX recurrent ops have no selu or
softmax: export refuses them. ``activation_alpha`` / ``activation_beta`` list the parameters of
only the functions that take them, in order (the reading onnxruntime implements).

Directions and output order:
  * ``go_backwards=True`` is direction="reverse". ONNX writes a reverse direction's Y in the
    original time order, grukit (Keras) in the order it read the steps, so a Slice with step -1
    reverses the time axis of Y. Its final state Y_h needs nothing.
  * ``return_sequences=True`` reads Y (Squeeze away the dirs axis), False reads Y_h.
  * Bidirectional is direction="bidirectional": its reverse direction's Y is already in forward
    time, as Bidirectional's merge wants. merge "concat" is Transpose + Reshape of the dirs axis
    into the features; "sum" / "mul" / "ave" take the two directions with Gather and combine them
    with Add / Mul / Add then Mul by 0.5. merge_mode=None (a list of two outputs) cannot be one
    Sequential output and is refused.

Other layers: Dense is Gemm on 2-D input, MatMul + Add on 3-D, then its activation as an ONNX
operator (Tanh, Sigmoid, Relu, Softmax(axis=-1), HardSigmoid, Elu, Selu, Softplus, Softsign;
linear adds nothing). Activation is that operator alone. Dropout is the identity at inference and
writes nothing. Embedding is a Gather of the embeddings table by the int64 ids.
Refused with a ValueError naming the layer: Masking and Embedding(mask_zero=True) (ONNX recurrent
ops take sequence lengths, not step masks), return_state=True (several outputs), stateful=True
(state carried between calls), Bidirectional around a go_backwards layer, merge_mode=None.

Reading (:func:`load`) walks the graph from its input and turns node patterns back into layers:
the graphs :func:`export` writes, and those of ``torch.onnx.export(..., dynamo=False)`` (the
TorchScript exporter; the dynamo exporter needs onnxscript, which grukit does not use) for
``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` with ``batch_first=True`` (one or more layers, either
direction), optionally followed by the last step (``y[:, -1]`` or ``h_n[-1]`` of a one-direction
layer: return_sequences=False) and ``nn.Linear`` (Gemm, or MatMul + Add) with an optional
activation. Besides those patterns it accepts zero initial states (torch builds them from the
input's shape with Shape / ConstantOfShape), Identity and Dropout nodes, and nodes whose inputs
are all constants, which it evaluates. An activation node right after a Dense without one becomes
that Dense's activation, so Dense + Activation come back as one Dense (Dropout and linear
activations write nothing and do not come back). The graph must be a single chain of layers;
anything else (an unsupported op, a branch, the last step of a bidirectional sequence, peepholes,
clip, sequence_lens, an activation grukit lacks) raises a ValueError naming the node and its op.

onnx is an optional dependency, imported inside the functions: ``pip install onnx`` (and
onnxruntime to run the exported file).

>>> import numpy as np
>>> from grukit.models import Sequential
>>> from grukit.layers import GRU, Dense
>>> from grukit.interop import onnx as gonnx
>>> model = Sequential([GRU(8, input_shape=(None, 3)), Dense(1)])
>>> x = np.zeros((2, 5, 3), np.float32)
>>> path = gonnx.export(model, "gru.onnx")                     # doctest: +SKIP
>>> np.allclose(gonnx.load(path).predict(x), model.predict(x)) # doctest: +SKIP
True
"""
import importlib
import os
import re
import uuid

import numpy as np

from .. import config
from ..layers import (GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Input,
                      Masking, Recurrent, SimpleRNN)

__all__ = ["export", "load"]

MIN_OPSET = 13          # Squeeze with an axes input; Softmax over one axis
_INT64_MIN = np.iinfo(np.int64).min

# grukit activation -> (ONNX recurrent activation name, alpha, beta); alpha/beta None: takes none
_RNN_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "linear": ("Affine", 1.0, 0.0),
}
# ONNX recurrent activations that take parameters: their default (alpha, beta); None: no beta
_RNN_ACT_PARAMS = {"affine": (1.0, 0.0), "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None),
                   "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, None)}

# grukit activation -> (ONNX operator, attributes) for Dense and Activation layers
_SELU_ALPHA, _SELU_GAMMA = 1.6732632423543772, 1.0507009873554805
_OPS = {
    "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}), "relu": ("Relu", {}),
    "softmax": ("Softmax", {"axis": -1}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
    "elu": ("Elu", {"alpha": 1.0}), "selu": ("Selu", {"alpha": _SELU_ALPHA, "gamma": _SELU_GAMMA}),
    "softplus": ("Softplus", {}), "softsign": ("Softsign", {}),
}

_LSTM_TO_ONNX = (0, 3, 1, 2)   # ONNX i, o, f, c from grukit i, f, c, o
_LSTM_TO_GRUKIT = (0, 2, 3, 1)  # grukit i, f, c, o from ONNX i, o, f, c
_ONNX_OP = {GRU: "GRU", LSTM: "LSTM", SimpleRNN: "RNN"}
_LAYER_OF_OP = {op: cls for cls, op in _ONNX_OP.items()}
_GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}


def _onnx():
    try:
        return importlib.import_module("onnx")
    except ImportError as e:
        raise ImportError("grukit.interop.onnx needs the 'onnx' package to write and read ONNX "
                          "files; install it with: pip install onnx") from e


# ================================================================================================
# export
# ================================================================================================
def export(model, path, *, opset=17):
    """Write ``model`` (a grukit Sequential; built first if needed) to ``path`` as an ONNX model.

    The input is "input" [batch, time, features] float32 (int64 ids [batch, time] for an Embedding
    first layer), the output "output". The file is written to a temporary name beside ``path`` and
    moved into place, so a failed export never leaves a half-written file. Returns ``path``.
    """
    onnx = _onnx()
    from ..models import Sequential
    if not isinstance(model, Sequential):
        raise ValueError(f"export: expected a grukit Sequential model, got {type(model).__name__}.")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"export: opset must be an integer from {MIN_OPSET} to {newest} (the "
                         f"newest this onnx knows), got {opset!r}.")
    model._ensure_built()
    proto = _Writer(onnx, model, opset).write()
    onnx.checker.check_model(proto, full_check=True)
    _write_atomically(os.fspath(path), proto.SerializeToString())
    return path


def _write_atomically(path, data):
    """Write ``data`` to a new file beside ``path``, then rename it over ``path`` in one step."""
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class _Writer:
    """Builds the graph layer by layer. ``self.x`` is the current tensor: rank ``self.rank``,
    time-major when ``self.time_major`` (recurrent layers want that; others do not care)."""

    def __init__(self, onnx, model, opset):
        self.onnx, self.h = onnx, onnx.helper
        self.model, self.opset = model, opset
        self.nodes, self.inits, self._names, self._consts = [], [], set(), {}
        self.x, self.rank, self.time_major = "input", len(model.input_shape), False

    # ---- naming and constants ---------------------------------------------------------------
    def name(self, base):
        """A fresh tensor name from ``base``."""
        name, k = base, 1
        while name in self._names or name in ("input", "output"):
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def weight(self, name, array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        name = self.name(name)
        self.inits.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values):
        """A shared int64 constant (axes, shapes, slice bounds)."""
        key = ("i",) + tuple(values)
        if key not in self._consts:
            arr = np.array(values, dtype=np.int64)
            text = "_".join("int64_min" if v == _INT64_MIN else str(v) for v in values)
            self._consts[key] = self.name("const_" + text.replace("-", "m"))
            self.inits.append(self.onnx.numpy_helper.from_array(arr, self._consts[key]))
        return self._consts[key]

    def scalar(self, value):
        key = ("f", value)
        if key not in self._consts:
            self._consts[key] = self.name(f"const_{value:g}".replace(".", "_"))
            self.inits.append(self.onnx.numpy_helper.from_array(np.array(value, np.float32),
                                                               self._consts[key]))
        return self._consts[key]

    def node(self, op, inputs, name, outputs=1, **attrs):
        """Append a node; returns its output name (or names, when ``outputs`` is a list)."""
        outs = [self.name(f"{name}/{o}") if o else "" for o in outputs] \
            if isinstance(outputs, list) else [self.name(f"{name}/{op}")]
        self.nodes.append(self.h.make_node(op, inputs, outs, name=self.name(name), **attrs))
        return outs if isinstance(outputs, list) else outs[0]

    def transpose_time(self, name):
        """Swap the batch and time axes of the current (rank-3) tensor."""
        target = "batch" if self.time_major else "time"
        self.x = self.node("Transpose", [self.x], f"{name}/to_{target}_major", perm=[1, 0, 2])
        self.time_major = not self.time_major

    # ---- the whole graph --------------------------------------------------------------------
    def write(self):
        h, model = self.h, self.model
        first = model.layers[0]
        for i, layer in enumerate(model.layers):
            self.layer(layer, i)
        if self.time_major and self.rank == 3:
            self.transpose_time("output")
        if self.x == "input":       # nothing but identities: ONNX still needs a node
            self.x = self.node("Identity", ["input"], "output")
        for node in self.nodes:     # the last tensor is the graph output
            node.output[:] = ["output" if o == self.x else o for o in node.output]
        types = self.onnx.TensorProto
        in_type = types.INT64 if first.integer_input else types.FLOAT
        graph = h.make_graph(
            self.nodes, model.name,
            [h.make_tensor_value_info("input", in_type, _dims(model.input_shape))],
            [h.make_tensor_value_info("output", types.FLOAT, _dims(model.output_shape))],
            self.inits)
        opsets = [h.make_opsetid("", self.opset)]
        from .. import __version__
        proto = h.make_model(graph, opset_imports=opsets, producer_name="grukit",
                             producer_version=__version__)
        proto.ir_version = h.find_min_ir_version_for(opsets)
        return proto

    def layer(self, layer, index):
        kind = type(layer).__name__
        if isinstance(layer, Recurrent):
            self.recurrent(layer)
        elif isinstance(layer, Bidirectional):
            self.bidirectional(layer)
        elif isinstance(layer, Dense):
            self.dense(layer)
        elif isinstance(layer, Activation):
            self.activation(layer.activation.name, layer.name)
        elif isinstance(layer, Dropout):
            pass    # the identity at inference
        elif isinstance(layer, Embedding):
            self.embedding(layer, index)
        elif isinstance(layer, Masking):
            raise ValueError(f"export: layer {layer.name!r} (Masking) is not supported: ONNX "
                             "recurrent ops take per-sequence lengths, not per-step masks. Remove "
                             "the Masking layer (a model exported without it treats padding as "
                             "data) or export a model without padding.")
        else:
            raise ValueError(f"export: layer {layer.name!r} ({kind}) has no ONNX mapping; "
                             "supported: GRU, LSTM, SimpleRNN, Bidirectional, Dense, Activation, "
                             "Dropout, Embedding.")

    # ---- layers -----------------------------------------------------------------------------
    def dense(self, layer):
        kernel = self.weight(f"{layer.name}/kernel", layer.params["kernel"])
        bias = self.weight(f"{layer.name}/bias", layer.params["bias"]) if layer.use_bias else None
        if self.rank == 2:
            self.x = self.node("Gemm", [self.x, kernel] + ([bias] if bias else []), layer.name)
        else:
            self.x = self.node("MatMul", [self.x, kernel], layer.name)
            if bias:
                self.x = self.node("Add", [self.x, bias], f"{layer.name}/bias_add")
        self.activation(layer.activation.name, f"{layer.name}/{layer.activation.name}")

    def activation(self, name, node_name):
        if name == "linear":
            return
        if name not in _OPS:
            raise ValueError(f"export: {node_name!r} uses the activation {name!r}, which has no "
                             f"ONNX mapping; use one of linear, {', '.join(sorted(_OPS))}.")
        op, attrs = _OPS[name]
        self.x = self.node(op, [self.x], node_name, **attrs)

    def embedding(self, layer, index):
        if index != 0:
            raise ValueError(f"export: Embedding {layer.name!r} must be the first layer (it reads "
                             f"integer ids), found it at position {index}.")
        if layer.mask_zero:
            raise ValueError(f"export: Embedding {layer.name!r} has mask_zero=True; masks are not "
                             "supported by the ONNX export (ONNX recurrent ops take sequence "
                             "lengths, not step masks). Build it with mask_zero=False.")
        table = self.weight(f"{layer.name}/embeddings", layer.params["embeddings"])
        self.x = self.node("Gather", [table, self.x], layer.name, axis=0)
        self.rank += 1

    def _check_recurrent(self, layer, where):
        for option in ("return_state", "stateful"):
            if getattr(layer, option):
                raise ValueError(
                    f"export: {where} has {option}=True, which the ONNX export does not support "
                    "(the graph has one output and no state kept between runs). Export a copy "
                    f"built with {option}=False and the same weights.")

    def _rnn_node(self, layers, direction, name):
        """One ONNX GRU / LSTM / RNN node for one layer (or two: forward, backward); returns the
        names of its Y and Y_h (one of them "", as only the one needed is written)."""
        first = layers[0]
        op = _ONNX_OP[type(first)]
        parts = [_onnx_weights(layer) for layer in layers]
        W = self.weight(f"{name}/W", np.stack([p[0] for p in parts]))
        R = self.weight(f"{name}/R", np.stack([p[1] for p in parts]))
        inputs = [self.x, W, R]
        if any(layer.use_bias for layer in layers):
            G = _GATES[op] * first.units
            B = [p[2] if p[2] is not None else np.zeros(2 * G, np.float32) for p in parts]
            inputs.append(self.weight(f"{name}/B", np.stack(B)))
        funcs = [f for layer in layers for f in _onnx_activations(layer)]
        attrs = {"hidden_size": first.units, "direction": direction,
                 "activations": [f[0] for f in funcs]}
        alphas = [f[1] for f in funcs if f[1] is not None]
        betas = [f[2] for f in funcs if f[2] is not None]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
        if op == "GRU":
            attrs["linear_before_reset"] = int(first.reset_after)
        outputs = ["Y", ""] if first.return_sequences else ["", "Y_h"]
        y, y_h = self.node(op, inputs, name, outputs=outputs, **attrs)
        return y or y_h

    def _to_time_major(self, name):
        if not self.time_major:
            self.transpose_time(name)

    def recurrent(self, layer):
        self._check_recurrent(layer, f"layer {layer.name!r} ({type(layer).__name__})")
        self._to_time_major(layer.name)
        direction = "reverse" if layer.go_backwards else "forward"
        out = self._rnn_node([layer], direction, layer.name)
        if layer.return_sequences:                       # Y [T, 1, B, u] -> [T, B, u]
            self.x = self.node("Squeeze", [out, self.ints([1])], f"{layer.name}/squeeze")
            if layer.go_backwards:                       # grukit's order: the order it read in
                self.x = self.node("Slice", [self.x, self.ints([-1]), self.ints([_INT64_MIN]),
                                             self.ints([0]), self.ints([-1])],
                                   f"{layer.name}/reverse_time")
        else:                                            # Y_h [1, B, u] -> [B, u]
            self.x = self.node("Squeeze", [out, self.ints([0])], f"{layer.name}/squeeze")
            self.rank = 2

    def bidirectional(self, layer):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        where = f"layer {layer.name!r} (Bidirectional)"
        self._check_recurrent(fwd, where)
        self._check_recurrent(bwd, f"{where}, its backward layer,")
        if layer.merge_mode is None:
            raise ValueError(f"export: {where} has merge_mode=None, whose output is a list of two "
                             "tensors; a Sequential exports one output. Use merge_mode 'concat', "
                             "'sum', 'mul' or 'ave'.")
        if fwd.go_backwards:
            raise ValueError(f"export: {where} wraps a layer with go_backwards=True; ONNX's "
                             "bidirectional direction reads forwards first. Wrap a layer with "
                             "go_backwards=False.")
        if type(fwd) is not type(bwd) or fwd.units != bwd.units or \
                getattr(fwd, "reset_after", None) != getattr(bwd, "reset_after", None):
            raise ValueError(f"export: {where} has a backward_layer of a different kind or size "
                             f"({type(bwd).__name__}({bwd.units}) vs {type(fwd).__name__}"
                             f"({fwd.units})); ONNX's bidirectional op needs the same cell both "
                             "ways.")
        self._to_time_major(layer.name)
        out = self._rnn_node([fwd, bwd], "bidirectional", layer.name)
        seq = fwd.return_sequences          # Y [T, 2, B, u] or Y_h [2, B, u]
        dirs_axis = 1 if seq else 0
        if layer.merge_mode == "concat":    # dirs next to features, then one feature axis
            perm, shape = ([0, 2, 1, 3], [0, 0, -1]) if seq else ([1, 0, 2], [0, -1])
            y = self.node("Transpose", [out], f"{layer.name}/dirs_last", perm=perm)
            self.x = self.node("Reshape", [y, self.ints(shape)], f"{layer.name}/concat")
        else:
            yf, yb = (self.node("Gather", [out, self._index(k)],
                                f"{layer.name}/{side}", axis=dirs_axis)
                      for k, side in ((0, "forward"), (1, "backward")))
            op = {"sum": "Add", "ave": "Add", "mul": "Mul"}[layer.merge_mode]
            self.x = self.node(op, [yf, yb], f"{layer.name}/{layer.merge_mode}")
            if layer.merge_mode == "ave":
                self.x = self.node("Mul", [self.x, self.scalar(0.5)], f"{layer.name}/half")
        self.rank = 3 if seq else 2

    def _index(self, k):
        """A scalar int64 index (Gather with it drops the axis)."""
        key = ("s", k)
        if key not in self._consts:
            self._consts[key] = self.name(f"index_{k}")
            self.inits.append(self.onnx.numpy_helper.from_array(np.array(k, np.int64),
                                                               self._consts[key]))
        return self._consts[key]


def _dims(shape):
    """A grukit shape (None for unknown) as ONNX dims: "batch", then "time" / "dim<i>"."""
    dims = []
    for i, d in enumerate(shape):
        if d is not None:
            dims.append(int(d))
        else:
            dims.append("batch" if i == 0 else "time" if i == 1 else f"dim{i}")
    return dims


def _gate_blocks(a, units, order):
    """Regroup the gate blocks along the last axis of ``a`` in ``order``."""
    return np.concatenate([a[..., k * units:(k + 1) * units] for k in order], axis=-1)


def _onnx_weights(layer):
    """(W (G*u, D), R (G*u, u), B (2*G*u,) or None) of one layer, in ONNX's gate order."""
    p, u = layer.params, layer.units
    order = _LSTM_TO_ONNX if isinstance(layer, LSTM) else tuple(range(layer.cell.gates))
    W = _gate_blocks(p["kernel"], u, order).T
    R = _gate_blocks(p["recurrent_kernel"], u, order).T
    if not layer.use_bias:
        return W, R, None
    b = p["bias"]
    wb, rb = (b[0], b[1]) if b.ndim == 2 else (b, np.zeros_like(b))   # see the module docstring
    return W, R, np.concatenate([_gate_blocks(wb, u, order), _gate_blocks(rb, u, order)])


def _onnx_activations(layer):
    """[(ONNX name, alpha, beta)] for one direction of a recurrent layer, in ONNX's order."""
    cell = layer.cell
    roles = {GRU: ("recurrent_activation", "activation"),
             LSTM: ("recurrent_activation", "activation", "activation"),
             SimpleRNN: ("activation",)}[type(layer)]
    out = []
    for role in roles:
        name = getattr(cell, role).name
        if name not in _RNN_ACTIVATIONS:
            raise ValueError(
                f"export: layer {layer.name!r} ({type(layer).__name__}) has {role}={name!r}, which "
                "ONNX recurrent ops do not offer; they take "
                f"{', '.join(sorted(_RNN_ACTIVATIONS))}. Use one of those.")
        out.append(_RNN_ACTIVATIONS[name])
    return out


# ================================================================================================
# load
# ================================================================================================
def load(path_or_model):
    """Read an ONNX model (a path, bytes or an ``onnx.ModelProto``) into a grukit Sequential.

    Accepts the graphs :func:`export` writes and those of ``torch.onnx.export(dynamo=False)`` of
    torch RNNs (batch_first=True) followed by an optional last step and Linear layers; see the
    module docstring. Raises ValueError naming the node for anything else.
    """
    onnx = _onnx()
    proto = _read(onnx, path_or_model)
    return _Reader(onnx, proto).read()


def _read(onnx, source):
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        where, read = "the given bytes", lambda: onnx.load_from_string(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"load: no ONNX file at {where!r}.")
        read = lambda: onnx.load(where)     # noqa: E731
    else:
        raise ValueError(f"load: expected a path, bytes or an onnx.ModelProto, got "
                         f"{type(source).__name__}.")
    try:
        proto = read()
    except Exception as e:   # protobuf's DecodeError and friends
        raise ValueError(f"load: {where} is not a readable ONNX model ({type(e).__name__}: {e}). "
                         "Expected a file written by grukit's export or torch.onnx.export.") from e
    if not proto.graph.node:
        raise ValueError(f"load: {where} holds no ONNX graph nodes; expected an ONNX model file.")
    return proto


_UNSET = object()


class _Spec:
    """A layer found in the graph, before it exists: its class, arguments and weights. Later nodes
    may still settle arguments (return_sequences, merge_mode, a Dense's bias and activation)."""

    def __init__(self, cls, weights, **kwargs):
        self.cls, self.weights, self.kwargs = cls, weights, kwargs

    def settle(self, key, value, node):
        old = self.kwargs.get(key, _UNSET)
        if old is not _UNSET and old != value:
            raise ValueError(f"load: node {node.name!r} ({node.op_type}) uses a layer's outputs "
                             f"both as {key}={old!r} and {key}={value!r}; only a single chain of "
                             "layers can be read.")
        self.kwargs[key] = value

    def make(self):
        kwargs = {k: (v.make() if isinstance(v, _Spec) else v) for k, v in self.kwargs.items()}
        return self.cls(**kwargs)


class _Const:
    def __init__(self, value):
        self.value = value


class _Aux:
    """A value computed at run time from shapes (torch's zero initial states); ``zero``: all 0."""

    def __init__(self, zero=False):
        self.zero = zero


class _Chain:
    """The running value of the Sequential: the output of the layers read so far, possibly with
    the batch and time axes swapped (``time_major``) or its time axis reversed (``reversed``).
    ``source`` is the _Spec whose output it is, unchanged since (None after a reshuffle)."""

    def __init__(self, rank, time_major=False, reversed=False, source=None, ids=False):
        self.rank, self.time_major, self.reversed = rank, time_major, reversed
        self.source, self.ids = source, ids

    def like(self, **changes):
        c = _Chain(self.rank, self.time_major, self.reversed, self.source, self.ids)
        for k, v in changes.items():
            setattr(c, k, v)
        return c


class _RnnOut:
    """Y (kind "Y"), Y_h or Y_c of a recurrent node; ``transposed``: dirs moved next to features."""

    def __init__(self, spec, kind, dirs, reverse, transposed=False):
        self.spec, self.kind, self.dirs, self.reverse = spec, kind, dirs, reverse
        self.transposed = transposed


class _Half:
    """One direction (``index`` 0 forward, 1 backward) of a bidirectional node's Y or Y_h."""

    def __init__(self, spec, kind, index):
        self.spec, self.kind, self.index = spec, kind, index


_ZERO_KEEPING = {"Slice", "Gather", "Reshape", "Squeeze", "Unsqueeze", "Expand", "Identity",
                 "Cast", "Transpose", "Concat", "Tile"}
_PASS_THROUGH = {"Identity", "Dropout"}
_GRUKIT_RNN_ACTS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softsign": "softsign",
                    "softplus": "softplus"}


class _Reader:
    def __init__(self, onnx, proto):
        self.onnx, self.proto, self.graph = onnx, proto, proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        self.specs = []
        self.values = {}
        self.used_names = set()
        self.T = None

    # ---- errors and small readers -----------------------------------------------------------
    @staticmethod
    def fail(node, message):
        raise ValueError(f"load: node {node.name!r} ({node.op_type}): {message}")

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, node, value, what):
        if not isinstance(value, _Const):
            self.fail(node, f"expected {what} to be a constant, found a value computed at run "
                            "time.")
        return value.value

    def chain(self, node, value, what="its input"):
        if not isinstance(value, _Chain):
            self.fail(node, f"expected {what} to be the running sequence of layers, found "
                            f"{_describe(value)}; grukit reads only a single chain of layers.")
        if self.consumers.get(id(value), 0) > 1:
            self.fail(node, "the graph branches here (a tensor feeds several nodes); grukit reads "
                            "only a single chain of layers.")
        return value

    def layer_name(self, node):
        name = node.name
        if name and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) and name not in self.used_names:
            self.used_names.add(name)
            return name
        return None

    def add(self, spec, node):
        name = self.layer_name(node)
        if name is not None:
            spec.kwargs["name"] = name
        self.specs.append(spec)
        return spec

    # ---- the walk ---------------------------------------------------------------------------
    def read(self):
        graph = self.graph
        for domain in {n.domain for n in graph.node} - {"", "ai.onnx"}:
            node = next(n for n in graph.node if n.domain == domain)
            self.fail(node, f"operators of domain {domain!r} are not supported; grukit reads the "
                            "standard ONNX operators only.")
        if self.opset is None:
            raise ValueError("load: the model imports no standard ONNX opset; expected an ONNX "
                             "model from grukit's export or torch.onnx.export.")
        for init in graph.initializer:
            self.values[init.name] = _Const(self.onnx.numpy_helper.to_array(init))
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"load: the graph has {len(inputs)} input(s) and {len(graph.output)} "
                             "output(s); a Sequential has exactly one of each.")
        input_shape, ids = self.read_input(inputs[0])
        self.values[inputs[0].name] = _Chain(len(input_shape) + 1, ids=ids)
        # how many nodes read each tensor (Shape nodes aside: they read only its size)
        reads = {}
        for node in graph.node:
            if node.op_type != "Shape":
                for name in node.input:
                    reads[name] = reads.get(name, 0) + 1
        reads[graph.output[0].name] = reads.get(graph.output[0].name, 0) + 1
        self.consumers = {}
        for node in graph.node:
            ins = []
            for name in node.input:
                if name == "":
                    ins.append(None)
                elif name not in self.values:
                    self.fail(node, f"its input {name!r} is not produced by any earlier node; the "
                                    "graph is not in topological order or is incomplete.")
                else:
                    value = self.values[name]
                    self.consumers[id(value)] = reads.get(name, 0)
                    ins.append(value)
            outs = self.visit(node, ins)
            for name, value in zip(node.output, outs):
                if name:
                    self.values[name] = value
        out_name = graph.output[0].name
        if out_name not in self.values:
            raise ValueError(f"load: the graph output {out_name!r} is not produced by any node.")
        out = self.values[out_name]
        if not isinstance(out, _Chain) or out.ids or (out.rank == 3 and out.time_major) \
                or out.reversed:
            raise ValueError(f"load: the graph output {out_name!r} is {_describe(out)}, not the "
                             "batch-first output of a chain of layers grukit can express.")
        return self.build(input_shape)

    def read_input(self, value):
        t = value.type.tensor_type
        elem = t.elem_type
        ids = elem in (self.onnx.TensorProto.INT64, self.onnx.TensorProto.INT32)
        if not ids and elem != self.onnx.TensorProto.FLOAT:
            raise ValueError(f"load: the graph input {value.name!r} has element type "
                             f"{self.onnx.TensorProto.DataType.Name(elem)}; expected float "
                             "(features) or int64 (token ids).")
        if not t.HasField("shape"):
            raise ValueError(f"load: the graph input {value.name!r} has no shape; expected "
                             "[batch, time, features].")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in t.shape.dim]
        want = 2 if ids else 3
        if len(dims) not in ((2,) if ids else (2, 3)):
            raise ValueError(f"load: the graph input {value.name!r} has rank {len(dims)}; "
                             f"expected {'[batch, time] ids' if ids else '[batch, time, features]'}"
                             ".")
        if not ids and dims[-1] is None:
            raise ValueError(f"load: the graph input {value.name!r} has an unknown feature size "
                             "(last axis); grukit needs it to size the weights.")
        if len(dims) == want:
            self.T = dims[1]
        return tuple(dims[1:]), ids

    def build(self, input_shape):
        from ..models import Sequential
        for spec in self.specs:
            missing = [k for k, v in spec.kwargs.items() if v is _UNSET]
            missing += [k for v in spec.kwargs.values() if isinstance(v, _Spec)
                        for k, w in v.kwargs.items() if w is _UNSET]
            if missing:
                raise ValueError(f"load: the outputs of the {spec.cls.__name__} layer are used in "
                                 f"a way grukit cannot express ({', '.join(missing)} stays open).")
        if not self.specs:
            raise ValueError("load: the graph holds no layer grukit can express (only identities "
                             "between input and output).")
        layers = [spec.make() for spec in self.specs]
        name = self.graph.name if self.graph.name and self.graph.name != "main_graph" else None
        model = Sequential([Input(shape=input_shape)] + layers, name=name)
        model.build()
        dt = config.dtype()
        for layer, spec in zip(layers, self.specs):
            layer.set_weights([np.asarray(w, dtype=dt) for w in spec.weights])
        return model

    # ---- one node ---------------------------------------------------------------------------
    def visit(self, node, ins):
        op = node.op_type
        n_out = len(node.output)
        if op == "Constant":
            return [_Const(self._constant(node))]
        if op == "Shape":
            return [_Aux()]
        if op in _PASS_THROUGH:
            return [ins[0]] + [_Aux()] * (n_out - 1)
        present = [v for v in ins if v is not None]
        if all(isinstance(v, (_Const, _Aux)) for v in present):
            return self.fold(node, ins)
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            self.fail(node, "this operator is not supported by grukit's ONNX reader (it reads "
                            "GRU, LSTM, RNN, Gemm, MatMul, Add, Mul, Div, Concat, Gather, "
                            "Transpose, Squeeze, Reshape, Slice and activation operators).")
        out = handler(node, ins)
        return out if isinstance(out, list) else [out]

    def _constant(self, node):
        a = node.attribute[0]
        value = self.onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return self.onnx.numpy_helper.to_array(value)
        if a.name in ("value_float", "value_int"):
            return np.array(value, np.float32 if a.name == "value_float" else np.int64)
        if a.name in ("value_floats", "value_ints"):
            return np.array(value, np.float32 if a.name == "value_floats" else np.int64)
        self.fail(node, f"a constant given as {a.name!r} is not supported.")

    def fold(self, node, ins):
        """A node that reads only constants and run-time shapes: evaluate it, or track zeros."""
        n_out = len(node.output)
        if any(isinstance(v, _Aux) for v in ins):
            first = ins[0] if ins else None
            zero = False
            if node.op_type == "ConstantOfShape":
                value = self.attrs(node).get("value")
                zero = value is None or not np.any(self.onnx.numpy_helper.to_array(value))
            elif node.op_type in _ZERO_KEEPING:
                zero = _is_zero(first) and (node.op_type != "Concat" or all(
                    _is_zero(v) for v in ins))
            return [_Aux(zero)] * n_out
        from onnx.reference import ReferenceEvaluator
        feeds = {name: v.value for name, v in zip(node.input, ins) if name}
        try:
            outs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as e:
            self.fail(node, f"could not evaluate this constant expression ({type(e).__name__}: "
                            f"{e}); the operator is not supported here.")
        return [_Const(np.asarray(o)) for o in outs]

    # ---- recurrent nodes --------------------------------------------------------------------
    def op_GRU(self, node, ins):
        return self.recurrent(node, ins)

    op_LSTM = op_RNN = op_GRU

    def recurrent(self, node, ins):
        op, a = node.op_type, self.attrs(node)
        ins = ins + [None] * (8 - len(ins))
        x = self.chain(node, ins[0], "its input X")
        if x.ids or x.rank != 3 or not x.time_major:
            self.fail(node, f"expected X to be a time-major [time, batch, features] sequence, "
                            f"found {_describe(x)}.")
        if a.get("layout", 0) != 0:
            self.fail(node, "layout=1 (batch-first recurrent op) is not supported; use the "
                            "default layout 0 with Transpose nodes, as torch.onnx.export does.")
        if "clip" in a:
            self.fail(node, "the clip attribute has no grukit equivalent.")
        if a.get("input_forget", 0):
            self.fail(node, "input_forget=1 (coupled input and forget gates) has no grukit "
                            "equivalent.")
        if ins[4] is not None:
            self.fail(node, "sequence_lens is not supported (grukit models the padding with "
                            "masks); export without sequence lengths.")
        for k, what in ((5, "initial_h"), (6, "initial_c"), (7, "the peepholes P")):
            if ins[k] is not None and not _is_zero(ins[k]):
                self.fail(node, f"{what} must be absent or all zeros; grukit's layers start from "
                                "zero states and have no peepholes.")
        W = self.const(node, ins[1], "W").astype(np.float64)
        R = self.const(node, ins[2], "R").astype(np.float64)
        B = None if ins[3] is None else self.const(node, ins[3], "B").astype(np.float64)
        direction = a.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        dirs = 2 if direction == "bidirectional" else 1
        G = _GATES[op]
        u = int(a.get("hidden_size", R.shape[-1]))
        if W.ndim != 3 or W.shape[:2] != (dirs, G * u) or R.shape != (dirs, G * u, u) or \
                (B is not None and B.shape != (dirs, 2 * G * u)):
            self.fail(node, f"weights of shapes W {W.shape}, R {R.shape}, B "
                            f"{None if B is None else B.shape} do not fit {dirs} direction(s), "
                            f"{G} gate(s) and hidden_size {u}.")
        acts = self.rnn_activations(node, a, dirs)
        reset_after = bool(a.get("linear_before_reset", 0)) if op == "GRU" else None
        cls = _LAYER_OF_OP[op]
        sides = []
        for d in range(dirs):
            kwargs = {"units": u}
            kwargs.update(acts[d])
            if op == "GRU":
                kwargs["reset_after"] = reset_after
            kwargs["use_bias"] = B is not None
            weights = _grukit_weights(op, u, W[d], R[d], None if B is None else B[d], reset_after)
            sides.append((kwargs, weights))
        if dirs == 1:
            kwargs, weights = sides[0]
            back = (direction == "reverse") != x.reversed
            spec = self.add(_Spec(cls, weights, go_backwards=back, return_sequences=_UNSET,
                                  **kwargs), node)
        else:
            if x.reversed:
                self.fail(node, "a bidirectional node reading a time-reversed sequence has no "
                                "grukit equivalent.")
            fwd = _Spec(cls, [], return_sequences=_UNSET, **sides[0][0])
            bwd = _Spec(cls, [], return_sequences=_UNSET, go_backwards=True, **sides[1][0])
            spec = self.add(_Spec(Bidirectional, sides[0][1] + sides[1][1], layer=fwd,
                                  backward_layer=bwd, merge_mode=_UNSET), node)
        reverse = direction == "reverse"
        outs = [_RnnOut(spec, "Y", dirs, reverse), _RnnOut(spec, "Y_h", dirs, reverse)]
        if op == "LSTM":
            outs.append(_RnnOut(spec, "Y_c", dirs, reverse))
        return outs[:len(node.output)]

    def rnn_activations(self, node, a, dirs):
        """Per direction, the grukit activation arguments from ONNX's activations attributes."""
        op = node.op_type
        defaults = {"GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"],
                    "RNN": ["Tanh"]}[op]
        names = [n.decode() if isinstance(n, bytes) else n for n in a.get("activations", [])]
        if not names:
            names = defaults * dirs
        if len(names) != len(defaults) * dirs:
            self.fail(node, f"activations lists {len(names)} functions; expected "
                            f"{len(defaults) * dirs} ({len(defaults)} per direction).")
        alphas, betas = list(a.get("activation_alpha", [])), list(a.get("activation_beta", []))
        funcs = []
        for n in names:     # alpha / beta are consumed only by the functions that take them
            key = n.lower()
            alpha = beta = None
            if key in _RNN_ACT_PARAMS:
                da, db = _RNN_ACT_PARAMS[key]
                alpha = alphas.pop(0) if alphas else da
                if db is not None:
                    beta = betas.pop(0) if betas else db
            funcs.append(self.rnn_activation(node, n, alpha, beta))
        per = len(defaults)
        out = []
        for d in range(dirs):
            f = funcs[d * per:(d + 1) * per]
            if op == "GRU":
                out.append({"recurrent_activation": f[0], "activation": f[1]})
            elif op == "LSTM":
                if f[1] != f[2]:
                    self.fail(node, f"LSTM with different cell-input ({f[1]}) and cell-output "
                                    f"({f[2]}) activations has no grukit equivalent.")
                out.append({"recurrent_activation": f[0], "activation": f[1]})
            else:
                out.append({"activation": f[0]})
        return out

    def rnn_activation(self, node, name, alpha, beta):
        key = name.lower()
        if key in _GRUKIT_RNN_ACTS:
            return _GRUKIT_RNN_ACTS[key]
        close = lambda v, want: v is not None and abs(v - want) < 1e-6     # noqa: E731
        if key == "hardsigmoid" and close(alpha, 1 / 6) and close(beta, 0.5):
            return "hard_sigmoid"
        if key == "elu" and close(alpha, 1.0):
            return "elu"
        if key == "affine" and close(alpha, 1.0) and close(beta, 0.0):
            return "linear"
        params = f" (alpha={alpha}, beta={beta})" if alpha is not None else ""
        self.fail(node, f"the recurrent activation {name}{params} has no grukit equivalent; "
                        "grukit has Sigmoid, Tanh, Relu, Softsign, Softplus, Elu(alpha=1), "
                        "HardSigmoid(alpha=1/6, beta=0.5) and Affine(alpha=1, beta=0).")

    # ---- reshaping the outputs of recurrent nodes -------------------------------------------
    def _rnn_out(self, node, value):
        if not isinstance(value, _RnnOut) or value.kind == "Y_c":
            return None
        limit = 2 if value.dirs == 2 else 1
        if self.consumers.get(id(value), 0) > limit:
            self.fail(node, f"the {value.kind} output of a recurrent node feeds several nodes; "
                            "grukit reads only a single chain of layers.")
        return value

    def _from_rnn(self, node, r, index):
        """The chain value for direction ``index`` of a one-direction node's Y or Y_h."""
        seq = r.kind == "Y"
        r.spec.settle("return_sequences", seq, node)
        if seq:
            return _Chain(3, time_major=True, reversed=r.reverse, source=r.spec)
        return _Chain(2, source=r.spec)

    def op_Squeeze(self, node, ins):
        r = self._rnn_out(node, ins[0])
        if r is None or r.dirs != 1 or r.transposed:
            self.fail(node, f"expected to squeeze the direction axis of a one-direction "
                            f"recurrent output, found {_describe(ins[0])}.")
        axes = self.attrs(node).get("axes") if len(ins) < 2 or ins[1] is None else \
            self.const(node, ins[1], "axes")
        rank = 4 if r.kind == "Y" else 3
        want = 1 if r.kind == "Y" else 0
        if axes is None or [int(v) % rank for v in np.ravel(axes)] != [want]:
            self.fail(node, f"expected to squeeze axis {want} (the direction axis) of {r.kind}, "
                            f"got axes {None if axes is None else np.ravel(axes).tolist()}.")
        return self._from_rnn(node, r, 0)

    def op_Transpose(self, node, ins):
        perm = list(self.attrs(node).get("perm", []))
        r = self._rnn_out(node, ins[0])
        if r is not None and r.dirs == 2 and not r.transposed:
            want = [0, 2, 1, 3] if r.kind == "Y" else [1, 0, 2]
            if perm == want:
                return _RnnOut(r.spec, r.kind, r.dirs, r.reverse, transposed=True)
        x = self.chain(node, ins[0])
        if x.rank == 3 and not x.ids and perm == [1, 0, 2]:
            return x.like(time_major=not x.time_major)
        self.fail(node, f"perm {perm} on {_describe(ins[0])} is not supported; grukit reads "
                        "only the batch/time swap [1, 0, 2] of a sequence (and the direction "
                        "moves of a bidirectional output).")

    def op_Reshape(self, node, ins):
        r = self._rnn_out(node, ins[0])
        if r is None or not r.transposed:
            self.fail(node, f"expected to reshape a bidirectional output whose directions were "
                            f"moved next to its features, found {_describe(ins[0])}.")
        shape = [int(v) for v in np.ravel(self.const(node, ins[1], "the shape"))]
        u = _spec_units(r.spec)
        lead = [0, 0] if r.kind == "Y" else [0]
        if shape[:-1] != lead or shape[-1] not in (-1, 2 * u):
            self.fail(node, f"expected shape {lead + [-1]} (the two directions side by side), "
                            f"got {shape}.")
        return self._merge(node, r.spec, r.kind, "concat")

    def _merge(self, node, spec, kind, mode):
        spec.settle("merge_mode", mode, node)
        seq = kind == "Y"
        for side in ("layer", "backward_layer"):
            spec.kwargs[side].settle("return_sequences", seq, node)
        if seq:
            return _Chain(3, time_major=True, source=spec)
        return _Chain(2, source=spec)

    def _index(self, node, value):
        idx = np.asarray(self.const(node, value, "the index"))
        if idx.ndim != 0:
            self.fail(node, f"expected a scalar index, got shape {idx.shape}.")
        return int(idx)

    def op_Gather(self, node, ins):
        a = self.attrs(node)
        axis = a.get("axis", 0)
        data, indices = ins[0], ins[1]
        if isinstance(data, _Const) and isinstance(indices, _Chain):
            return self.embedding(node, data.value, self.chain(node, indices), axis)
        r = self._rnn_out(node, data)
        if r is not None and not r.transposed:
            dirs_axis = 1 if r.kind == "Y" else 0
            k = self._index(node, indices)
            if axis % (4 if r.kind == "Y" else 3) != dirs_axis or k not in range(-r.dirs, r.dirs):
                self.fail(node, f"expected to take one direction (axis {dirs_axis}) of {r.kind}.")
            if r.dirs == 1:
                return self._from_rnn(node, r, 0)
            return _Half(r.spec, r.kind, k % 2)
        x = self.chain(node, data, "its data")
        if x.rank == 3 and not x.ids:
            return self.last_step(node, x, axis, self._index(node, indices))
        self.fail(node, f"Gather on {_describe(data)} is not supported.")

    def last_step(self, node, x, axis, k):
        """``y[:, -1]`` right after a one-way recurrent layer is its return_sequences=False."""
        time_axis = 0 if x.time_major else 1
        T = self.T
        last = (0, -T if T else 0) if x.reversed else (-1, T - 1 if T else -1)
        spec = x.source
        if axis % 3 != time_axis or k not in last:
            self.fail(node, "taking a step other than the last one of a sequence has no grukit "
                            "equivalent.")
        if spec is None or spec.cls not in _LAYER_OF_OP.values():
            self.fail(node, "taking the last step maps to grukit only right after a one-way "
                            "recurrent layer (as its return_sequences=False).")
        spec.kwargs["return_sequences"] = False
        return _Chain(2, source=spec)

    def embedding(self, node, table, ids, axis):
        if ids.source is not None or self.specs or not ids.ids or axis != 0 or table.ndim != 2:
            self.fail(node, "expected an embedding lookup (Gather on axis 0 of a 2-D table) of "
                            "the integer graph input.")
        spec = self.add(_Spec(Embedding, [table], input_dim=table.shape[0],
                              output_dim=table.shape[1]), node)
        return _Chain(ids.rank + 1, time_major=ids.time_major, source=spec)

    def op_Slice(self, node, ins):
        x = self.chain(node, ins[0])
        if x.rank != 3 or x.ids or len(ins) < 3:
            self.fail(node, f"expected to reverse the time axis of a sequence, found "
                            f"{_describe(x)}.")
        starts, ends = (np.ravel(self.const(node, v, w)).tolist()
                        for v, w in ((ins[1], "starts"), (ins[2], "ends")))
        axes = [0, 1, 2][:len(starts)] if len(ins) < 4 or ins[3] is None else \
            np.ravel(self.const(node, ins[3], "axes")).tolist()
        steps = [1] * len(starts) if len(ins) < 5 or ins[4] is None else \
            np.ravel(self.const(node, ins[4], "steps")).tolist()
        time_axis = 0 if x.time_major else 1
        T = self.T
        whole_start = starts == [-1] or (T is not None and starts[0] >= T - 1) or \
            starts[0] >= 2 ** 31 - 1
        whole_end = ends[0] <= -2 ** 31 or (T is not None and ends[0] <= -T - 1)
        if [a % 3 for a in axes] != [time_axis] or steps != [-1] or not whole_start or \
                not whole_end:
            self.fail(node, f"only the reversal of the whole time axis is supported (starts "
                            f"[-1], ends [INT64_MIN], axes [{time_axis}], steps [-1]); got starts "
                            f"{starts}, ends {ends}, axes {axes}, steps {steps}.")
        return x.like(reversed=not x.reversed)

    # ---- Dense -------------------------------------------------------------------------------
    def op_MatMul(self, node, ins):
        x = self.chain(node, ins[0])
        if x.ids or not isinstance(ins[1], _Const) or ins[1].value.ndim != 2:
            self.fail(node, "expected the running sequence times a constant 2-D kernel.")
        kernel = ins[1].value
        spec = self.add(_Spec(Dense, [kernel], units=kernel.shape[1], use_bias=False,
                              activation="linear"), node)
        return x.like(source=spec)

    def op_Gemm(self, node, ins):
        a = self.attrs(node)
        x = self.chain(node, ins[0])
        if x.ids or x.rank != 2 or a.get("transA", 0):
            self.fail(node, f"expected a 2-D input (not transposed), found {_describe(x)}.")
        kernel = self.const(node, ins[1], "B") * a.get("alpha", 1.0)
        if kernel.ndim != 2:
            self.fail(node, f"expected a 2-D kernel, got shape {kernel.shape}.")
        if a.get("transB", 0):
            kernel = kernel.T
        weights = [kernel]
        if len(ins) > 2 and ins[2] is not None:
            bias = np.asarray(self.const(node, ins[2], "C") * a.get("beta", 1.0))
            weights.append(self._bias(node, bias, kernel.shape[1]))
        spec = self.add(_Spec(Dense, weights, units=kernel.shape[1], use_bias=len(weights) == 2,
                              activation="linear"), node)
        return x.like(source=spec)

    def _bias(self, node, bias, units):
        if bias.size == units and bias.shape[-1:] == (units,):
            return bias.reshape(units)
        if bias.size == 1:
            return np.full(units, float(bias.ravel()[0]))
        self.fail(node, f"a bias of shape {bias.shape} does not fit {units} units.")

    def op_Add(self, node, ins):
        if all(isinstance(v, _Half) for v in ins):
            return self._halves(node, ins, "sum")
        consts = [v for v in ins if isinstance(v, _Const)]
        chains = [v for v in ins if isinstance(v, _Chain)]
        if len(consts) == 1 and len(chains) == 1:
            x = self.chain(node, chains[0])
            spec = x.source
            if spec is not None and spec.cls is Dense and not spec.kwargs["use_bias"] and \
                    spec.kwargs["activation"] == "linear":
                spec.weights.append(self._bias(node, np.asarray(consts[0].value),
                                               spec.kwargs["units"]))
                spec.kwargs["use_bias"] = True
                return x
        self.fail(node, f"expected a Dense bias (the output of MatMul plus a constant) or the "
                        f"sum of a bidirectional output's two directions, found "
                        f"{', '.join(_describe(v) for v in ins)}.")

    def op_Mul(self, node, ins):
        if all(isinstance(v, _Half) for v in ins):
            return self._halves(node, ins, "mul")
        return self._average(node, ins, 0.5, "Mul")

    def op_Div(self, node, ins):
        return self._average(node, ins, 2.0, "Div")

    def _average(self, node, ins, factor, op):
        x, c = ins[0], ins[1]
        if op == "Mul" and isinstance(x, _Const):
            x, c = c, x
        if isinstance(x, _Chain) and isinstance(c, _Const) and np.size(c.value) == 1 and \
                abs(float(np.ravel(c.value)[0]) - factor) < 1e-7:
            x = self.chain(node, x)
            spec = x.source
            if spec is not None and spec.cls is Bidirectional and \
                    spec.kwargs["merge_mode"] == "sum":
                spec.kwargs["merge_mode"] = "ave"
                return x.like(source=None)
        self.fail(node, f"{op} is read only as the average of a bidirectional output's two "
                        "directions ((forward + backward) * 0.5 or / 2).")

    def op_Concat(self, node, ins):
        if len(ins) == 2 and all(isinstance(v, _Half) for v in ins):
            rank = 3 if ins[0].kind == "Y" else 2
            if self.attrs(node).get("axis") % rank == rank - 1 and \
                    [ins[0].index, ins[1].index] == [0, 1]:
                return self._halves(node, ins, "concat")
        self.fail(node, "Concat is read only as the forward then backward directions of a "
                        "bidirectional output, joined on the feature axis.")

    def _halves(self, node, ins, mode):
        a, b = ins
        if a.spec is not b.spec or a.kind != b.kind or {a.index, b.index} != {0, 1}:
            self.fail(node, "expected the two directions of one bidirectional output.")
        for v in ins:
            if self.consumers.get(id(v), 0) > 1:
                self.fail(node, "the graph branches here; grukit reads only a chain of layers.")
        return self._merge(node, a.spec, a.kind, mode)

    # ---- activations -------------------------------------------------------------------------
    def activation(self, node, ins, name):
        x = self.chain(node, ins[0])
        if x.ids:
            self.fail(node, "an activation of integer ids is not supported.")
        spec = x.source
        if spec is not None and spec.cls is Dense and spec.kwargs["activation"] == "linear":
            spec.kwargs["activation"] = name
            return x.like(source=None)
        spec = self.add(_Spec(Activation, [], activation=name), node)
        return x.like(source=spec)

    def op_Softmax(self, node, ins):
        x = ins[0]
        axis = self.attrs(node).get("axis", -1 if self.opset >= 13 else 1)
        rank = getattr(x, "rank", 0)
        if not isinstance(x, _Chain) or axis % max(rank, 1) != rank - 1 or \
                (self.opset < 13 and rank != 2):
            self.fail(node, f"only a softmax over the last axis is supported (axis {axis} on "
                            f"{_describe(x)}, opset {self.opset}).")
        return self.activation(node, ins, "softmax")

    def _simple(name):
        def handler(self, node, ins):
            return self.activation(node, ins, name)
        return handler

    op_Tanh, op_Sigmoid, op_Relu = _simple("tanh"), _simple("sigmoid"), _simple("relu")
    op_Softplus, op_Softsign = _simple("softplus"), _simple("softsign")
    del _simple

    def op_HardSigmoid(self, node, ins):
        a = self.attrs(node)
        if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
            self.fail(node, f"HardSigmoid(alpha={a.get('alpha', 0.2)}, beta={a.get('beta', 0.5)})"
                            " differs from grukit's hard_sigmoid (alpha=1/6, beta=0.5, Keras 3's "
                            "form).")
        return self.activation(node, ins, "hard_sigmoid")

    def op_Elu(self, node, ins):
        if abs(self.attrs(node).get("alpha", 1.0) - 1.0) > 1e-6:
            self.fail(node, "Elu with alpha other than 1 has no grukit equivalent.")
        return self.activation(node, ins, "elu")

    def op_Selu(self, node, ins):
        a = self.attrs(node)
        if abs(a.get("alpha", _SELU_ALPHA) - _SELU_ALPHA) > 1e-5 or \
                abs(a.get("gamma", _SELU_GAMMA) - _SELU_GAMMA) > 1e-5:
            self.fail(node, "Selu with non-standard alpha / gamma has no grukit equivalent.")
        return self.activation(node, ins, "selu")


def _grukit_weights(op, u, W, R, B, reset_after):
    """Keras-order weights [kernel, recurrent_kernel, (bias)] of one ONNX direction."""
    order = _LSTM_TO_GRUKIT if op == "LSTM" else tuple(range(_GATES[op]))
    kernel = _gate_blocks(W.T, u, order)
    recurrent = _gate_blocks(R.T, u, order)
    if B is None:
        return [kernel, recurrent]
    half = len(B) // 2
    wb, rb = _gate_blocks(B[:half], u, order), _gate_blocks(B[half:], u, order)
    bias = np.stack([wb, rb]) if reset_after else wb + rb     # see the module docstring
    return [kernel, recurrent, bias]


def _spec_units(spec):
    inner = spec.kwargs.get("layer", spec)
    return inner.kwargs["units"]


def _is_zero(value):
    if isinstance(value, _Aux):
        return value.zero
    if isinstance(value, _Const):
        return not np.any(value.value)
    return False


def _describe(value):
    if isinstance(value, _Chain):
        if value.ids:
            return "the integer ids of the input"
        order = "time-major" if value.time_major else "batch-first"
        rev = ", time reversed" if value.reversed else ""
        return f"a rank-{value.rank} {order} sequence{rev}" if value.rank == 3 else \
            f"a rank-{value.rank} tensor"
    if isinstance(value, _RnnOut):
        return f"the {value.kind} output of a recurrent node"
    if isinstance(value, _Half):
        return f"one direction of a bidirectional {value.kind}"
    if isinstance(value, _Const):
        return f"a constant of shape {np.shape(value.value)}"
    if isinstance(value, _Aux):
        return "a value computed from shapes at run time"
    return "nothing"
