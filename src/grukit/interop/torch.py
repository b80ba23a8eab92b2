"""PyTorch interchange: state dicts of ``nn.GRU``, ``nn.LSTM`` and ``nn.RNN`` <-> grukit layers.

torch's layout. A multi-layer torch RNN names its tensors by layer k and direction suffix s
("" reads forwards, "_reverse" backwards). With G gates, u = hidden_size and D_k the width that
layer k reads (input_size for k = 0, u * num_directions above it):

    weight_ih_l{k}{s}   (G*u, D_k)   input weights, one gate block after another down axis 0
    weight_hh_l{k}{s}   (G*u, u)     recurrent weights
    bias_ih_l{k}{s}     (G*u,)       added to the input projection     } both absent
    bias_hh_l{k}{s}     (G*u,)       added to the recurrent projection } with bias=False

    gate blocks: GRU r, z, n (G = 3)    LSTM i, f, g, o (G = 4)    RNN a single block (G = 1)

grukit's (Keras's) layout. One layer per torch layer; a bidirectional torch layer becomes
``Bidirectional(layer, merge_mode="concat")`` whose forward_layer holds suffix "" and whose
backward_layer holds "_reverse":

    kernel              (D_k, G*u)   the same gate blocks side by side along axis 1
    recurrent_kernel    (u, G*u)
    bias                GRU (2, G*u): row 0 input bias, row 1 recurrent bias; LSTM, SimpleRNN (G*u,)

    gate blocks: GRU z, r, h    LSTM i, f, c, o    SimpleRNN a single block

The mapping, with P the permutation that swaps the first two gate blocks (r, z, n <-> z, r, h; P is
its own inverse) and ^T a transpose:

    GRU   kernel = P(W_ih)^T   recurrent_kernel = P(W_hh)^T   bias = [P(b_ih), P(b_hh)]
    LSTM  kernel = W_ih^T      recurrent_kernel = W_hh^T      bias = b_ih + b_hh
    RNN   kernel = W_ih^T      recurrent_kernel = W_hh^T      bias = b_ih + b_hh

torch's GRU keeps the recurrent bias inside the reset product, n = tanh(x W_in + b_in + r * (h W_hn
+ b_hn)): that is grukit's ``GRU(reset_after=True)``. LSTM's g block is Keras's c block. An RNN's
nonlinearity ("tanh" or "relu") becomes the SimpleRNN's activation.

LSTM and RNN biases only ever act as the sum b_ih + b_hh, and grukit stores that sum. So
:func:`to_torch` writes bias_ih = bias and bias_hh = 0: the same module outputs, not the same
tensors. A GRU round-trips tensor for tensor in both directions.

Only :func:`to_torch` with ``as_tensors=True`` and :func:`from_torch` on a ``.pt``/``.pth`` file
import torch; ``.safetensors`` files need the ``safetensors`` package. Nothing is imported before it
is needed.
"""
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import config
from ..layers import GRU, LSTM, Bidirectional, SimpleRNN

__all__ = ["from_torch", "to_torch"]

CELLS = ("gru", "lstm", "rnn", "rnn_relu")
_GATES = {"gru": 3, "lstm": 4, "rnn": 1, "rnn_relu": 1}
_TORCH_NAMES = {"gru": "nn.GRU", "lstm": "nn.LSTM", "rnn": "nn.RNN (tanh)",
                "rnn_relu": "nn.RNN (relu)"}
_MODES = {"GRU": "gru", "LSTM": "lstm", "RNN_TANH": "rnn", "RNN_RELU": "rnn_relu"}  # module.mode
_DIRECTIONS = ("", "_reverse")
_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")


def _keys(num_layers, num_directions, bias):
    """torch's tensor names for a stack, in torch's own order."""
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    return [f"{n}_l{k}{s}" for k in range(num_layers) for s in _DIRECTIONS[:num_directions]
            for n in names]


@dataclass(frozen=True)
class _Stack:
    """What a torch RNN module is: its constructor arguments, and the tensor shapes they imply."""
    cell: str
    hidden_size: int
    input_size: int
    num_layers: int
    bidirectional: bool
    bias: bool

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def input_dim(self, k):
        """The width layer k reads: the input for k = 0, the concatenated directions above."""
        return self.input_size if k == 0 else self.hidden_size * self.num_directions

    def shape(self, key):
        name, k, _ = _KEY.fullmatch(key).groups()
        rows = _GATES[self.cell] * self.hidden_size
        if name == "weight_ih":
            return (rows, self.input_dim(int(k)))
        return (rows, self.hidden_size) if name == "weight_hh" else (rows,)

    def describe(self):
        bi = "bidirectional " if self.bidirectional else ""
        return (f"{self.num_layers}-layer {bi}{_TORCH_NAMES[self.cell]} with input_size "
                f"{self.input_size}, hidden_size {self.hidden_size}, bias={self.bias}")


# ---- the per-direction weight mapping --------------------------------------------------------
def _swap_rz(a):
    """Swap the first two of three gate blocks along axis 0: r, z, n <-> z, r, h."""
    u = a.shape[0] // 3
    return np.concatenate([a[u:2 * u], a[:u], a[2 * u:]])


def _grukit_weights(cell, w_ih, w_hh, b_ih=None, b_hh=None):
    """One direction's torch arrays -> grukit [kernel, recurrent_kernel(, bias)]."""
    if cell == "gru":
        out = [_swap_rz(w_ih).T, _swap_rz(w_hh).T]
        if b_ih is not None:
            out.append(np.stack([_swap_rz(b_ih), _swap_rz(b_hh)]))
    else:
        out = [w_ih.T, w_hh.T]
        if b_ih is not None:
            out.append(b_ih + b_hh)
    return out


def _torch_weights(cell, params):
    """One direction's grukit params -> torch [weight_ih, weight_hh(, bias_ih, bias_hh)]."""
    W, U, b = params["kernel"], params["recurrent_kernel"], params.get("bias")
    if cell == "gru":
        out = [_swap_rz(W.T), _swap_rz(U.T)]
        if b is not None:
            out += [_swap_rz(b[0]), _swap_rz(b[1])]
    else:
        out = [W.T, U.T]
        if b is not None:
            out += [b, np.zeros_like(b)]     # torch adds both; grukit keeps their sum
    return [np.ascontiguousarray(a).copy() for a in out]


def _grukit_layer(cell, units, bias, **kwargs):
    if cell == "gru":
        return GRU(units, use_bias=bias, reset_after=True, return_sequences=True, **kwargs)
    if cell == "lstm":
        return LSTM(units, use_bias=bias, return_sequences=True, **kwargs)
    return SimpleRNN(units, activation="relu" if cell == "rnn_relu" else "tanh", use_bias=bias,
                     return_sequences=True, **kwargs)


# ---- torch -> grukit ---------------------------------------------------------------------------
def from_torch(source, *, cell=None, batch_first=True):
    """grukit layers holding the weights of a torch ``nn.GRU``, ``nn.LSTM`` or ``nn.RNN``.

    ``source``: the module itself, its ``state_dict()`` (values torch tensors or NumPy arrays), or
    the path of a ``.safetensors`` file or of a ``.pt``/``.pth`` file written with
    ``torch.save(module.state_dict(), path)``. num_layers, bidirectional, bias, hidden_size and
    input_size are read from the tensor names and shapes; so is the cell type (weight_hh has 3u
    rows for a GRU, 4u for an LSTM, u for an RNN). ``cell`` ("gru", "lstm", "rnn" or "rnn_relu")
    is needed only for an RNN with nonlinearity="relu" given as a state dict or file; a module
    says so itself.

    Returns one layer per torch layer: GRU (reset_after=True), LSTM or SimpleRNN, wrapped in
    ``Bidirectional(..., merge_mode="concat")`` when the module is bidirectional, built and
    holding the weights in grukit's float type (``grukit.config.floatx()``). Every layer has
    ``return_sequences=True``, so ``Sequential(layers)(x)`` is torch's ``output`` (batch, time,
    num_directions * hidden_size). For the last step take ``y[:, -1]`` (torch's
    ``output[:, -1]``), or set ``return_sequences = False`` on the last layer before the first
    call: on a one-way layer that is the same thing (torch's ``h_n[-1]``); on a Bidirectional (set
    it on the wrapper and on its forward_layer and backward_layer) it gives each direction's final
    state, torch's ``h_n[-2:]`` side by side, as Keras does.

    grukit layers read (batch, time, features) arrays. ``batch_first`` does not change the
    weights; with ``batch_first=False`` (a time-major torch module) give the grukit layers
    ``x.transpose(1, 0, 2)``.

    >>> import torch
    >>> from grukit.models import Sequential
    >>> gru = torch.nn.GRU(3, 8, num_layers=2, batch_first=True)
    >>> model = Sequential(from_torch(gru))
    >>> model(np.zeros((4, 5, 3), "float32")).shape
    (4, 5, 8)
    """
    if not isinstance(batch_first, bool):
        raise ValueError(f"from_torch: batch_first must be True or False, got {batch_first!r}.")
    state, module_cell = _read_source(source)
    cell = _check_cell(cell, module_cell)
    arrays, stack = _parse_state(state, cell)
    layers = []
    for k in range(stack.num_layers):
        first = {"input_shape": (None, stack.input_size)} if k == 0 else {}
        layer = _grukit_layer(stack.cell, stack.hidden_size, stack.bias, **first)
        if stack.bidirectional:
            layer = Bidirectional(layer, merge_mode="concat")
        layer.build((None, None, stack.input_dim(k)))
        weights = []
        for s in _DIRECTIONS[:stack.num_directions]:
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if stack.bias else ())
            weights += _grukit_weights(stack.cell, *(arrays[f"{n}_l{k}{s}"] for n in names))
        layer.set_weights(weights)
        layers.append(layer)
    return layers


def _read_source(source):
    """(a mapping of name -> tensor, the cell a module declares or None)."""
    if isinstance(source, (str, os.PathLike)):
        return _load_file(os.fspath(source)), None
    if isinstance(source, Mapping):
        return source, None
    if callable(getattr(source, "state_dict", None)):
        mode = getattr(source, "mode", None)
        if mode not in _MODES:
            raise ValueError(
                f"from_torch: got a {type(source).__name__} module, expected an nn.GRU, nn.LSTM or "
                "nn.RNN. Pass the recurrent sub-module itself (for example model.rnn) or its "
                "state_dict().")
        return source.state_dict(), _MODES[mode]
    raise ValueError(
        f"from_torch: got a {type(source).__name__}, expected an nn.GRU/nn.LSTM/nn.RNN module, "
        "its state_dict(), or the path of a .safetensors, .pt or .pth file.")


def _check_cell(cell, module_cell):
    if cell is not None and cell not in CELLS:
        raise ValueError(f"from_torch: cell must be one of {CELLS} or None, got {cell!r}.")
    if cell is not None and module_cell is not None and cell != module_cell:
        raise ValueError(
            f"from_torch: cell={cell!r} but the module is an {_TORCH_NAMES[module_cell]}; drop "
            "cell= (a module says what it is) or pass the matching module.")
    return cell or module_cell


def _import(module, package, purpose):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"grukit.interop.torch needs the {package!r} package {purpose}; "
                          f"install it with: pip install {package}") from e


def _load_file(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        load = _import("safetensors.numpy", "safetensors", "to read .safetensors files").load_file
    elif ext in (".pt", ".pth"):
        torch = _import("torch", "torch", "to read .pt/.pth files")

        def load(p):
            return torch.load(p, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"from_torch: cannot tell the format of {path!r} (extension {ext!r}); "
                         "expected a .safetensors, .pt or .pth file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"from_torch: no file at {path!r}.")
    try:
        state = load(path)
    except Exception as e:   # the loaders raise many types for a file they cannot parse
        raise ValueError(
            f"from_torch: could not read {path!r} ({type(e).__name__}: {e}). Write the module's "
            "state dict: torch.save(module.state_dict(), path) or "
            "safetensors.torch.save_file(module.state_dict(), path).") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"from_torch: {path!r} holds a {type(state).__name__}, expected a state "
                         "dict; save module.state_dict() rather than the module.")
    return state


def _to_numpy(key, value):
    """A torch tensor or array-like -> a NumPy array of grukit's float type (a copy)."""
    if hasattr(value, "detach"):    # a torch tensor, read without importing torch
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError:           # bfloat16 has no NumPy type
            value = value.float().numpy()
    a = np.asarray(value)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"from_torch: {key} has dtype {a.dtype}, expected a floating-point "
                         "tensor.")
    a = a.astype(config.floatx())
    if not np.isfinite(a).all():
        raise ValueError(f"from_torch: {key} holds NaN or infinite values; the weights are "
                         "corrupt or the module diverged in training.")
    return a


def _unknown_keys(unknown):
    if any(re.fullmatch(r"weight_hr_l\d+(_reverse)?", k) for k in unknown):
        return ValueError("from_torch: an LSTM with proj_size > 0 (key weight_hr_l*) has no "
                          "grukit equivalent; only proj_size=0 converts.")
    hint = ""
    for k in unknown:
        prefix, _, last = k.rpartition(".")
        if prefix and _KEY.fullmatch(last):
            hint = (f" They look prefixed by {prefix + '.'!r}: pass that sub-module, or "
                    f"{{k.removeprefix({prefix + '.'!r}): v for k, v in state.items() "
                    f"if k.startswith({prefix + '.'!r})}}.")
            break
    return ValueError(
        f"from_torch: unexpected key(s) {sorted(unknown)}; the state dict of one nn.GRU, nn.LSTM "
        f"or nn.RNN has only weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, bias_hh_l<k> (and "
        f"_reverse).{hint}")


def _parse_state(state, cell):
    """Check a state dict; return (name -> array in grukit's float type, its _Stack)."""
    if not state:
        raise ValueError("from_torch: the state dict is empty; pass the state_dict() of an "
                         "nn.GRU, nn.LSTM or nn.RNN.")
    state = {str(k): v for k, v in state.items()}
    found = {k: _KEY.fullmatch(k) for k in state}
    unknown = [k for k, m in found.items() if m is None]
    if unknown:
        raise _unknown_keys(unknown)
    num_layers = 1 + max(int(m.group(2)) for m in found.values())
    num_directions = 2 if any(m.group(3) for m in found.values()) else 1
    bias = any(m.group(1).startswith("bias") for m in found.values())
    want = _keys(num_layers, num_directions, bias)
    missing = [k for k in want if k not in state]
    if missing:
        raise ValueError(
            f"from_torch: missing key(s) {missing}: a {num_layers}-layer "
            f"{'bidirectional ' if num_directions == 2 else ''}RNN{' with biases' if bias else ''} "
            f"has {want}, found {sorted(state)}. Pass the complete state_dict() of one module.")
    arrays = {k: _to_numpy(k, state[k]) for k in want}
    stack = _Stack(_infer_cell(arrays, cell), arrays["weight_hh_l0"].shape[1],
                   _input_size(arrays["weight_ih_l0"]), num_layers, num_directions == 2, bias)
    for k in want:
        if arrays[k].shape != stack.shape(k):
            raise ValueError(
                f"from_torch: {k} has shape {arrays[k].shape}, expected {stack.shape(k)} for a "
                f"{stack.describe()} (as weight_hh_l0 and weight_ih_l0 say). Check that every "
                "tensor comes from the same module.")
    return arrays, stack


def _infer_cell(arrays, cell):
    """The cell type from weight_hh_l0 (G*u, u): G = 3 GRU, 4 LSTM, 1 RNN."""
    hh = arrays["weight_hh_l0"]
    by_gates = {3: "gru", 4: "lstm", 1: cell if cell in ("rnn", "rnn_relu") else "rnn"}
    if hh.ndim == 2 and hh.shape[1] > 0 and hh.shape[0] % hh.shape[1] == 0:
        g, u = hh.shape[0] // hh.shape[1], hh.shape[1]
        if cell is not None and g != _GATES[cell]:
            raise ValueError(
                f"from_torch: weight_hh_l0 has shape {hh.shape}, expected "
                f"{(_GATES[cell] * u, u)} for cell={cell!r} ({_GATES[cell]} gate blocks of "
                f"hidden_size {u}); it looks like a {by_gates.get(g, '?')!r} module. Fix cell=.")
        if g in by_gates:
            return cell or by_gates[g]
    raise ValueError(
        f"from_torch: weight_hh_l0 has shape {hh.shape}, expected (G*hidden_size, hidden_size) "
        "with G = 3 (GRU), 4 (LSTM) or 1 (RNN), for example (3*u, u).")


def _input_size(ih):
    if ih.ndim != 2:
        raise ValueError(f"from_torch: weight_ih_l0 has shape {ih.shape}, expected a 2-D "
                         "(G*hidden_size, input_size) matrix.")
    return ih.shape[1]


# ---- grukit -> torch ---------------------------------------------------------------------------
def to_torch(layers, *, as_tensors=False):
    """The state dict of the torch module that computes what a stack of grukit layers computes.

    ``layers``: a list (or a Sequential) of built GRU (reset_after=True), LSTM or SimpleRNN
    (activation "tanh" or "relu") layers, or Bidirectional(..., merge_mode="concat") around
    them, stacked as torch stacks its layers: one cell type, one number of units, all or none
    bidirectional, all with or all without bias. Keys are torch's (weight_ih_l0, weight_hh_l0,
    bias_ih_l0, bias_hh_l0, ..._reverse) in torch's order; values NumPy arrays, or CPU torch
    tensors with ``as_tensors=True``. LSTM and SimpleRNN keep one bias where torch keeps two:
    ``bias_ih`` gets it and ``bias_hh`` is zeros.

    Anything torch cannot express is refused with a ValueError: reset_after=False,
    recurrent_activation other than sigmoid, activation other than tanh (relu for SimpleRNN),
    go_backwards outside a Bidirectional, merge_mode other than "concat", mixed cell types,
    units or bias.

    >>> from grukit.layers import GRU
    >>> gru = GRU(8, return_sequences=True)
    >>> gru.build((None, None, 3))
    >>> sd = to_torch([gru])
    >>> [(k, v.shape) for k, v in sd.items()][:2]
    [('weight_ih_l0', (24, 3)), ('weight_hh_l0', (24, 8))]

    Load it with ``nn.GRU(3, 8, num_layers=1, batch_first=True).load_state_dict(
    {k: torch.from_numpy(v) for k, v in sd.items()})`` (or ``as_tensors=True``).
    """
    if hasattr(layers, "layers") and not isinstance(layers, (list, tuple)):
        layers = layers.layers     # a Sequential
    layers = list(layers)
    if not layers:
        raise ValueError("to_torch: got no layers; pass a list of GRU, LSTM, SimpleRNN or "
                         "Bidirectional layers.")
    stack = _stack_of(layers)
    out = {}
    for k, layer in enumerate(layers):
        subs = (layer.forward_layer, layer.backward_layer) if stack.bidirectional else (layer,)
        for s, sub in zip(_DIRECTIONS, subs):
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if stack.bias else ())
            for n, a in zip(names, _torch_weights(stack.cell, sub.params)):
                out[f"{n}_l{k}{s}"] = a
    if as_tensors:
        torch = _import("torch", "torch", "for as_tensors=True")
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def _stack_of(layers):
    """Check that the layers form one torch module; return its _Stack."""
    seen = []    # (cell, units, use_bias, bidirectional) per layer
    for i, layer in enumerate(layers):
        where = f"layer {i} ({getattr(layer, 'name', type(layer).__name__)})"
        if isinstance(layer, Bidirectional):
            if layer.merge_mode != "concat":
                raise ValueError(
                    f"to_torch: {where} is Bidirectional with merge_mode={layer.merge_mode!r}; "
                    "torch concatenates the two directions. Use merge_mode='concat'.")
            subs = [(layer.forward_layer, False), (layer.backward_layer, True)]
        else:
            subs = [(layer, False)]
        kinds = []
        for sub, backwards in subs:
            cell = _cell_of(where, sub)
            if sub.go_backwards != backwards:
                role = ("" if sub is layer
                        else " backward_layer" if backwards else " forward_layer")
                raise ValueError(
                    f"to_torch: {where}{role} has go_backwards={sub.go_backwards}; torch reads "
                    "a layer forwards, and backwards only as the second direction of a "
                    "bidirectional module. Reverse the input yourself (x[:, ::-1]) or wrap the "
                    "layer in Bidirectional.")
            kinds.append((cell, sub.units, sub.use_bias))
        if len(set(kinds)) > 1:
            raise ValueError(f"to_torch: {where} has directions that differ in (cell, units, "
                             f"use_bias): {kinds}; torch's two directions share all three.")
        seen.append(kinds[0] + (len(subs) == 2,))
    fields = ("cell type", "units", "use_bias", "Bidirectional")
    show = (_TORCH_NAMES.get, repr, repr, repr)
    for i, this in enumerate(seen[1:], start=1):
        for field, f, mine, first in zip(fields, show, this, seen[0]):
            if mine != first:
                raise ValueError(
                    f"to_torch: layer {i} has {field} {f(mine)} but layer 0 has {f(first)}; one "
                    "torch module shares its cell type, hidden_size, bias and bidirectional "
                    "flags across all its layers. Export each run of like layers separately.")
    cell, units, bias, bi = seen[0]
    inner = [layer.forward_layer if bi else layer for layer in layers]
    stack = _Stack(cell, units, inner[0].params["kernel"].shape[0], len(layers), bi, bias)
    for k, sub in enumerate(inner):
        width = sub.params["kernel"].shape[0]
        if width != stack.input_dim(k):
            raise ValueError(
                f"to_torch: layer {k} ({layers[k].name}) reads {width} features, expected "
                f"{stack.input_dim(k)} (the output width of layer {k - 1}).")
    return stack


def _cell_of(where, layer):
    """The torch cell name for a built recurrent layer, or a ValueError for one torch lacks."""
    if not isinstance(layer, (GRU, LSTM, SimpleRNN)):
        raise ValueError(f"to_torch: {where} is a {type(layer).__name__}; only GRU, LSTM, "
                         "SimpleRNN and Bidirectional layers map to a torch RNN module.")
    if not layer.built:
        raise ValueError(f"to_torch: {where} is not built and has no weights; call it on an "
                         "input or build it first.")
    act, rec = layer.cell.activation.name, layer.cell.recurrent_activation.name
    if isinstance(layer, SimpleRNN):
        if act not in ("tanh", "relu"):
            raise ValueError(f"to_torch: {where} has activation={act!r}; nn.RNN offers "
                             "nonlinearity 'tanh' or 'relu' only.")
        return "rnn" if act == "tanh" else "rnn_relu"
    kind = "GRU" if isinstance(layer, GRU) else "LSTM"
    if kind == "GRU" and not layer.reset_after:
        raise ValueError(f"to_torch: {where} is a GRU with reset_after=False; torch's nn.GRU "
                         "is the reset_after=True cell. Train with GRU(reset_after=True).")
    if rec != "sigmoid":
        raise ValueError(f"to_torch: {where} has recurrent_activation={rec!r}; torch's "
                         f"nn.{kind} uses 'sigmoid' only.")
    if act != "tanh":
        raise ValueError(f"to_torch: {where} has activation={act!r}; torch's nn.{kind} uses "
                         "'tanh' only.")
    return kind.lower()
