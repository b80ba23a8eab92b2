"""Keras files: read and write Keras 3 ``.keras`` archives and ``.weights.h5`` files, and read legacy
(Keras 2 style) ``.h5`` full-model files. HDF5 goes through h5py, an optional extra
(``pip install grukit[keras]``); Keras itself is never needed.

Layouts (what this module reads and writes):

    .keras        a zip of metadata.json, config.json and model.weights.h5
    config.json   {"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer",
                   "config": {"batch_shape": [null, T, D]}}, {"class_name": "GRU", "config": {...}},
                   ...]}}; grukit uses Keras's option names, so a layer config maps key for key
    weights.h5    layers/<key>/cell/vars/<i>      a recurrent layer's i-th weight
                  layers/<key>/vars/<i>           Dense, Embedding
                  layers/<key>/forward_layer/cell/vars/<i>, .../backward_layer/...   Bidirectional
                  <key> is the class in snake case, numbered per class in model order:
                  gru, gru_1, simple_rnn, dense ...
    legacy .h5    attrs model_config (JSON); model_weights/<layer>/ with attrs weight_names listing
                  the layer's datasets in get_weights() order

Weights are the same arrays in the same order in both libraries (kernel, recurrent_kernel, bias).
"""
import io
import json
import os
import re
import zipfile

import numpy as np

from ..saving import atomic_write

# Keras options grukit has no use for: dtype policies, backend implementation switches, and
# initializers (a loaded model's weights come from the file).
IGNORED = {"dtype", "implementation", "time_major", "use_cudnn", "zero_output_for_mask",
           "kernel_initializer", "recurrent_initializer", "bias_initializer",
           "embeddings_initializer", "lora_rank", "lora_alpha", "quantization_config", "sparse",
           "input_length", "synchronized", "autocast", "module", "registered_name"}
SUPPORTED = ("GRU", "LSTM", "SimpleRNN", "Dense", "Embedding", "Dropout", "Activation", "Masking",
             "Bidirectional")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("Reading and writing Keras files needs h5py: pip install h5py "
                          "(or pip install grukit[keras]).") from None
    return h5py


# ---- configs ------------------------------------------------------------------------------------
def _regularizer_from_keras(obj):
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    cfg = obj.get("config", {})
    return {"l1": float(cfg.get("l1", 0.0)), "l2": float(cfg.get("l2", 0.0))}


def _constraint_from_keras(obj):
    if obj is None or isinstance(obj, str):
        return obj
    snake = {"MaxNorm": "max_norm", "NonNeg": "non_neg", "UnitNorm": "unit_norm",
             "MinMaxNorm": "min_max_norm"}
    name = obj.get("class_name")
    if name not in snake:
        raise ValueError(f"Unsupported Keras constraint {name!r}; grukit has {sorted(snake)}.")
    return {"class_name": snake[name], "config": dict(obj.get("config", {}))}


def layer_config_from_keras(class_name, cfg, where="layer"):
    """A grukit (class name, config) for a Keras layer entry; raises for layers grukit lacks."""
    if class_name not in SUPPORTED:
        raise ValueError(f"Unsupported layer {cfg.get('name', where)!r} of class {class_name!r}: "
                         f"grukit reads {', '.join(SUPPORTED)}.")
    out = {}
    for k, v in cfg.items():
        if k in IGNORED:
            continue
        if k.endswith("_regularizer"):
            v = _regularizer_from_keras(v)
        elif k.endswith("_constraint"):
            v = _constraint_from_keras(v)
        elif k == "activation" and isinstance(v, dict):
            v = v.get("config", {}).get("name", v.get("class_name"))
        elif k == "batch_input_shape":
            out["input_shape"] = list(v[1:])
            continue
        elif k == "batch_shape":
            out["input_shape"] = list(v[1:])
            continue
        elif k in ("layer", "backward_layer") and v is not None:
            name, sub = layer_config_from_keras(v["class_name"], v["config"], where)
            sub["name"] = sub["name"].removeprefix("forward_") if k == "layer" else sub["name"]
            v = {"class_name": name, "config": sub}
        out[k] = v
    return class_name, out


def model_config_from_keras(config):
    """grukit Sequential config from a Keras model config (Keras 3 or Keras 2)."""
    if config.get("class_name") != "Sequential":
        raise ValueError(f"Only Sequential Keras models can be read, this one is "
                         f"{config.get('class_name')!r}.")
    cfg = config["config"]
    layers_cfg = cfg["layers"] if isinstance(cfg, dict) else cfg
    input_shape, layers = None, []
    for entry in layers_cfg:
        if entry["class_name"] == "InputLayer":
            c = entry["config"]
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            input_shape = list(shape[1:])
            continue
        name, c = layer_config_from_keras(entry["class_name"], entry["config"])
        if input_shape is None and "input_shape" in c:
            input_shape = c.pop("input_shape")
        c.pop("input_shape", None)
        layers.append({"class_name": name, "config": c})
    if input_shape is None:
        build = config.get("build_config") or {}
        if build.get("input_shape"):
            input_shape = list(build["input_shape"][1:])
    return {"name": cfg.get("name", "sequential") if isinstance(cfg, dict) else "sequential",
            "input_shape": input_shape, "layers": layers}


def _to_keras_layer(layer, cfg):
    out = {}
    for k, v in cfg.items():
        if k in ("input_shape", "batch_size"):
            continue
        if k.endswith("_regularizer") and isinstance(v, dict):
            v = {"module": "keras.regularizers", "class_name": "L1L2", "config": v,
                 "registered_name": None}
        elif k.endswith("_constraint") and isinstance(v, dict):
            names = {"max_norm": "MaxNorm", "non_neg": "NonNeg", "unit_norm": "UnitNorm",
                     "min_max_norm": "MinMaxNorm"}
            v = {"module": "keras.constraints", "class_name": names[v["class_name"]],
                 "config": v["config"], "registered_name": None}
        elif k in ("layer", "backward_layer"):
            sub = layer.forward_layer if k == "layer" else layer.backward_layer
            v = _keras_entry(sub, v["config"])
        out[k] = v
    if hasattr(layer, "cell"):
        out["seed"] = cfg.get("seed")
    return out


def _keras_entry(layer, cfg=None):
    cfg = layer.get_config() if cfg is None else cfg
    return {"module": "keras.layers", "class_name": type(layer).__name__,
            "config": _to_keras_layer(layer, cfg), "registered_name": None}


def model_config_to_keras(model):
    model._ensure_built()
    shape = [None] + list(model._input_shape)
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": shape, "dtype": str(model._flat.dtype),
                          "name": "input_layer"}, "registered_name": None}]
    layers += [_keras_entry(layer) for layer in model.layers]
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "layers": layers},
            "registered_name": None, "build_config": {"input_shape": shape}}


# ---- weights --------------------------------------------------------------------------------------
def _layer_groups(layer):
    """The h5 sub-paths of a layer's weights, in get_weights() order, in Keras 3's layout."""
    from ..layers import Bidirectional
    if isinstance(layer, Bidirectional):
        return [("forward_layer/cell/vars", len(layer.forward_layer.weights)),
                ("backward_layer/cell/vars", len(layer.backward_layer.weights))]
    if hasattr(layer, "cell"):
        return [("cell/vars", len(layer.weights))]
    return [("vars", len(layer.weights))]


def _snake(class_name):
    """Keras's snake case of a class name: GRU -> gru, SimpleRNN -> simple_rnn."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_paths(model):
    """Keras 3 stores a Sequential's layers under layers/<class in snake case>[_<n>], numbered
    per class in model order (not under the layers' names)."""
    used, paths = {}, []
    for layer in model.layers:
        name = _snake(type(layer).__name__)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        paths.append("layers/" + name)
    return paths


def _write_weights_h5(model, f):
    h5py = _h5py()
    model._ensure_built()
    with h5py.File(f, "w") as h:
        for layer, path in zip(model.layers, _layer_paths(model)):
            g = h.create_group(path)
            g.create_group("vars")
            weights = iter(layer.get_weights())
            for sub, n in _layer_groups(layer):
                vg = g.require_group(sub)
                for i in range(n):
                    vg.create_dataset(str(i), data=next(weights))
        h.create_group("vars")


def _assign_weights(model, h5, path):
    """Read each grukit layer's weights from the group Keras 3 keeps them in."""
    model._ensure_built()
    for layer, where in zip(model.layers, _layer_paths(model)):
        if not layer.weights:
            continue
        want = [w.shape for w in layer.weights]
        weights = []
        for sub, n in _layer_groups(layer):
            full = f"{where}/{sub}"
            if full not in h5 or len(h5[full]) != n:
                raise ValueError(f"{path}: no weights for layer {layer.name!r} "
                                 f"({type(layer).__name__}) at {full!r}; the file was written for "
                                 "a model with different layers.")
            weights += [np.asarray(h5[full][str(i)]) for i in range(n)]
        if [w.shape for w in weights] != want:
            raise ValueError(f"{path}: the weights at {where!r} have shapes "
                             f"{[w.shape for w in weights]}, layer {layer.name!r} needs {want}.")
        layer.set_weights(weights)


def save_weights(model, path):
    """Write Keras 3's ``.weights.h5`` layout (atomically)."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"{path}: Keras weight files end in .weights.h5.")
    atomic_write(path, lambda f: _write_weights_h5(model, f))


def load_weights(model, path):
    """Read a Keras 3 ``.weights.h5`` file, or the weights of a legacy ``.h5`` model file."""
    h5py = _h5py()
    with _open_h5(h5py, path) as h:
        if "model_weights" in h or "layer_names" in h.attrs:
            _assign_legacy(model, h.get("model_weights", h), path)
        else:
            _assign_weights(model, h, path)


def _open_h5(h5py, path_or_file):
    try:
        return h5py.File(path_or_file, "r")
    except OSError as e:
        raise ValueError(f"{path_or_file}: not a readable HDF5 file ({e}).") from None


def _legacy_layer_weights(group):
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
    return [np.asarray(group[n]) for n in names]


def _assign_legacy(model, mw, path):
    model._ensure_built()
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in mw.attrs["layer_names"]]
    with_weights = [n for n in names if len(mw[n].attrs.get("weight_names", []))]
    layers = [layer for layer in model.layers if layer.weights]
    if len(with_weights) != len(layers):
        raise ValueError(f"{path}: the file has {len(with_weights)} layers with weights, the model "
                         f"{len(layers)}.")
    for layer, name in zip(layers, with_weights):
        layer.set_weights(_legacy_layer_weights(mw[name]))


# ---- whole models -----------------------------------------------------------------------------------
def save_model(model, path):
    """Write ``model`` as a Keras 3 ``.keras`` archive that ``keras.models.load_model`` opens."""
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: grukit writes Keras models as .keras archives (legacy .h5 "
                         "full-model files are read only).")
    from .. import __version__
    buf = io.BytesIO()
    _write_weights_h5(model, buf)
    meta = {"keras_version": "3.0.0", "date_saved": "", "producer": f"grukit {__version__}"}

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr("metadata.json", json.dumps(meta))
            z.writestr("config.json", json.dumps(model_config_to_keras(model)))
            z.writestr("model.weights.h5", buf.getvalue())

    atomic_write(path, write)


def load_model(path, compile=True):
    """Read a Keras ``.keras`` archive or legacy ``.h5`` model file into a grukit Sequential."""
    from ..models import Sequential
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    h5py = _h5py()
    if path.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
                weights = z.read("model.weights.h5")
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable .keras archive ({e}).") from None
        model = Sequential.from_config(model_config_from_keras(config))
        with _open_h5(h5py, io.BytesIO(weights)) as h:
            _assign_weights(model, h, path)
        return model
    with _open_h5(h5py, path) as h:
        if "model_config" not in h.attrs:
            raise ValueError(f"{path}: an HDF5 file without a model config; for a weights file use "
                             "model.load_weights(path).")
        raw = h.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        model = Sequential.from_config(model_config_from_keras(config))
        _assign_legacy(model, h["model_weights"], path)
        training = h.attrs.get("training_config")
        if compile and training is not None:
            _compile_from_legacy(model, training)
    return model


def _compile_from_legacy(model, raw):
    try:
        tc = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        opt = tc["optimizer_config"]
        name = opt["class_name"].lower()
        cfg = {k: v for k, v in opt["config"].items()
               if k in ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "momentum",
                        "nesterov", "rho", "centered", "clipnorm", "clipvalue")}
        from .. import optimizers
        loss = tc["loss"]
        model.compile(optimizer=optimizers.from_config({"name": name, **cfg}),
                      loss=loss if isinstance(loss, str) else loss.get("class_name", "mse"))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        pass   # the training config is optional: the model loads uncompiled
