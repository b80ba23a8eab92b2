"""Sequential: a stack of layers with Keras's training API (compile / fit / evaluate / predict).

>>> import numpy as np
>>> from grukit.models import Sequential
>>> from grukit.layers import GRU, Dense
>>> model = Sequential([GRU(8, input_shape=[4, 1]), Dense(1)])
>>> model.compile(optimizer="adam", loss="mse")
>>> history = model.fit(np.zeros((6, 4, 1)), np.zeros(6), epochs=2, verbose=0)
>>> sorted(history.history)
['loss']

All weights of a built model live in one flat buffer; each layer's ``params`` are views into it,
and the gradients of a step fill a second flat buffer, so the optimizer updates everything in a
few vectorised calls.
"""
import math

import numpy as np

from . import callbacks as callbacks_module
from . import config, losses, metrics as metrics_module, optimizers
from .layers import Input, Layer
from .layers.base import inputs_held
from .utils import ALIGN, aligned_empty, check_finite, rng, using_rng


class Sequential:
    """A linear stack of layers, built from a list or with :meth:`add`."""

    def __init__(self, layers=None, name=None):
        self.name = name or "sequential"
        self.layers = []
        self._input_shape = None     # without the batch axis
        self.built = False
        self.optimizer = self.loss = None
        self.compiled_metrics = []
        self._metric_ids = []
        self.stop_training = False
        self.history = None
        self.epochs_trained = 0     # epochs completed over all fits (saved with the model)
        self._train_rng = None      # the model's own generator for shuffling and dropout in fit
        for layer in layers or []:
            self.add(layer)

    # ---- structure --------------------------------------------------------------------------
    def add(self, layer):
        """Append a layer (or an :class:`~grukit.layers.Input` as the first element)."""
        if isinstance(layer, Input):
            if self.layers:
                raise ValueError("Input must come first in a Sequential model.")
            self._input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise ValueError(f"Sequential.add expects a grukit layer, got {type(layer).__name__}.")
        if not self.layers and self._input_shape is None and layer.input_shape_arg is not None:
            self._input_shape = layer.input_shape_arg
        self.layers.append(layer)
        self.built = False

    def build(self, input_shape=None):
        """Build every layer for ``input_shape`` (with the batch axis, as in Keras)."""
        if input_shape is not None:
            self._input_shape = tuple(input_shape)[1:]
        if self._input_shape is None:
            raise ValueError(
                f"Model {self.name!r} has not been built and its input shape is unknown. Give the "
                "first layer input_shape=..., start with Input(shape=...), call "
                "model.build((None, time, features)), or fit it on data first.")
        if not self.layers:
            raise ValueError(f"Model {self.name!r} has no layers; add some before using it.")
        shape = (None,) + tuple(self._input_shape)
        self._shapes = []
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self._shapes.append(shape)
        self._flatten()
        self.built = True

    def _flatten(self):
        """Move every weight into one flat buffer; params become views into it. Each weight
        starts on a cache line (utils.ALIGN), the gaps between them zeros that no gradient
        reaches, so the optimizer leaves them zero."""
        entries = [(layer, k) for layer in self.layers for k in layer.param_names
                   if k in layer.params]
        dt = config.dtype()
        step = max(1, ALIGN // dt.itemsize)
        starts, start = [], 0
        for layer, k in entries:
            starts.append(start)
            start += -(-layer.params[k].size // step) * step
        self._flat = aligned_empty((start,), dt)
        self._flat[...] = 0
        self._gflat = aligned_empty((start,), dt)
        self._gflat[...] = 0
        self._segments, self._gviews = [], []
        for (layer, k), start in zip(entries, starts):
            p = layer.params[k]
            seg = slice(start, start + p.size)
            self._flat[seg] = p.ravel()
            layer.params[k] = self._flat[seg].reshape(p.shape)
            self._gviews.append((layer, k, self._gflat[seg].reshape(p.shape)))
            self._segments.append(seg)
        for layer in self.layers:
            if hasattr(layer, "params_rebound"):
                layer.params_rebound()
        # the layers whose weights are constrained after each update; whether any has a weight
        # penalty (its own regularization_loss counts as one)
        self._constrained = [layer for layer in self.layers if layer.param_constraints]
        self._weight_penalties = any(
            layer.param_regularizers
            or type(layer).regularization_loss is not Layer.regularization_loss
            for layer in self.layers)
        # per layer, where its gradients go ({param name: view into _gflat}) and the
        # regularizers that add to them ([(param name, regularizer)])
        slots = {id(layer): ({}, []) for layer in self.layers}
        for layer, k, view in self._gviews:
            out, regs = slots[id(layer)]
            out[k] = view
            if k in layer.param_regularizers:
                regs.append((k, layer.param_regularizers[k]))
        self._grad_slots = [slots[id(layer)] for layer in self.layers]

    def _ensure_built(self, x=None):
        if self.built:
            return
        if self._input_shape is None and x is not None:
            self._input_shape = tuple(np.shape(x)[1:])
        self.build()

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + tuple(self._input_shape)

    @property
    def output_shape(self):
        self._ensure_built()
        return self._shapes[-1]

    # ---- weights ----------------------------------------------------------------------------
    @property
    def weights(self):
        self._ensure_built()
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self):
        """All weights as a list of arrays, in Keras's order (layer by layer)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Load a list in :meth:`get_weights` order, such as the one a Keras model returns."""
        self._ensure_built()
        weights = list(weights)
        want = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != want:
            raise ValueError(f"Model {self.name!r} has {want} weight arrays, got {len(weights)}.")
        i = 0
        for layer in self.layers:
            n = len(layer.weights)
            layer.set_weights(weights[i:i + n])
            i += n

    def count_params(self):
        self._ensure_built()
        return int(sum(layer.count_params() for layer in self.layers))

    # ---- compile ----------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Set the optimizer, loss and metrics (strings or objects, as in Keras)."""
        self.optimizer = optimizers.get(optimizer)
        if loss is None:
            raise ValueError("compile: give a loss, such as loss='mse'.")
        self.loss = losses.get(loss)
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self._metric_ids = list(metrics or [])
        for m in self._metric_ids:   # reject unknown names now, not at the first batch
            if isinstance(m, str) and m.lower() not in ("accuracy", "acc"):
                metrics_module.get(m, (1,), (1,))
        self.compiled_metrics = []

    def _make_metrics(self, y, y_pred_shape):
        if len(self.compiled_metrics) != len(self._metric_ids):
            self.compiled_metrics = [metrics_module.get(m, y.shape, y_pred_shape, self.loss.name)
                                     for m in self._metric_ids]
        return self.compiled_metrics

    def _require_compiled(self, what):
        if self.loss is None:
            raise ValueError(f"{what}: the model is not compiled; call model.compile(optimizer, "
                             "loss) first.")

    # ---- data checks ------------------------------------------------------------------------
    def _check_x(self, x, what):
        x = np.asarray(x)
        first = self.layers[0] if self.layers else None
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{what}: x must be numeric, got dtype {x.dtype}.")
        if not (first is not None and first.integer_input) and x.dtype != config.dtype():
            x = x.astype(config.dtype())
        check_finite(f"{what}: x", x)
        want = None
        if first is not None and first.input_ndim is not None:
            want = first.input_ndim
        elif self._input_shape is not None:
            want = len(self._input_shape) + 1
        if want is not None and x.ndim != want:
            hint = first._rank_hint() if first is not None and first.input_ndim else ""
            raise ValueError(f"{what}: x has shape {x.shape} (rank {x.ndim}); the model expects "
                             f"rank {want} {hint}. Reshape it, e.g. x[..., None] to add a "
                             "feature axis.")
        if self._input_shape is not None and x.shape[1:] != tuple(self._input_shape):
            ok = all(a is None or a == b for a, b in zip(self._input_shape, x.shape[1:]))
            if not ok:
                raise ValueError(f"{what}: x has shape {x.shape}; the model expects "
                                 f"(batch, {', '.join(map(str, self._input_shape))}).")
        if len(x) == 0:
            raise ValueError(f"{what}: x is empty.")
        return x

    def _check_xy(self, x, y, what):
        x = self._check_x(x, what)
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{what}: y must be numeric, got dtype {y.dtype}.")
        if y.dtype.kind == "f" and y.dtype != config.dtype():
            y = y.astype(config.dtype())
        check_finite(f"{what}: y", y)
        if len(x) != len(y):
            raise ValueError(f"{what}: x and y have different lengths ({len(x)} and {len(y)} "
                             "samples); give one target per input sequence.")
        return x, y

    # ---- the passes -------------------------------------------------------------------------
    def _forward(self, x, training):
        """Run the stack; returns (output, caches, output mask). Masks travel layer to layer."""
        caches, mask = [], None
        for layer in self.layers:
            out_mask = layer.compute_mask(x, mask)
            y, cache = layer.forward(x, training=training, mask=mask)
            caches.append((cache, y if layer.activity_regularizer is not None else None))
            x, mask = y, out_mask
        return x, caches, mask

    def _penalty(self, caches):
        """The regularization terms Keras adds to the loss: weights, and activity / batch size."""
        total, weights = 0.0, self._weight_penalties
        for layer, (_, y) in zip(self.layers, caches):
            if weights:
                total += layer.regularization_loss()
            if y is not None:
                total += layer.activity_regularizer(y) / len(y)
        return total

    def _backward(self, dy, caches):
        first = self.layers[0]
        for layer, (cache, y), (out, regs) in zip(reversed(self.layers), reversed(caches),
                                                  reversed(self._grad_slots)):
            if y is not None:
                dy = dy + layer.activity_regularizer.grad(y) / y.dtype.type(len(y))
            input_grad = layer is not first   # the data needs no gradient
            if not layer.trainable:
                dy = layer.backward(dy, cache)[0] if input_grad else None
                for view in out.values():
                    view[...] = 0.0
                continue
            dy = layer.backward_into(dy, cache, out, input_grad)
            for k, reg in regs:
                out[k] += reg.grad(layer.params[k])

    def _loss(self, y, y_pred, mask, caches):
        """(total loss with penalties, dL/dy_pred); a sequence output's mask weights its steps."""
        if mask is not None and (not isinstance(y_pred, np.ndarray) or y_pred.ndim != 3):
            mask = None
        loss, dy = self.loss.value_and_grad(y, y_pred, mask)
        return loss + self._penalty(caches), dy

    def _release(self, caches):
        """Tell each layer its cache is spent, so that it may reuse the buffers."""
        for layer, (cache, _) in zip(self.layers, caches):
            layer.release(cache)

    def _train_step(self, x, y):
        with inputs_held():   # nothing changes x or a layer's output before the backward pass
            y_pred, caches, mask = self._forward(x, training=True)
            loss, dy = self._loss(y, y_pred, mask, caches)
            self._backward(dy, caches)
        self._release(caches)
        self.optimizer.apply(self._flat, self._gflat, self._segments)
        for layer in self._constrained:
            layer.apply_constraints()
        return loss, y_pred

    def reset_states(self):
        """Zero the carried states of every stateful layer."""
        for layer in self.layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()

    def __call__(self, x, training=False):
        x = self._check_x(x, "call")
        self._ensure_built(x)
        return self._forward(x, training)[0]

    # ---- training ---------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for ``epochs`` epochs; returns a :class:`~grukit.callbacks.History`."""
        self._require_compiled("fit")
        x, y = self._check_xy(x, y, "fit")
        if batch_size is None:
            batch_size = 32
        if int(batch_size) <= 0:
            raise ValueError(f"fit: batch_size must be positive, got {batch_size!r}.")
        batch_size = int(batch_size)
        self._ensure_built(x)
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}.")
        if validation_data is None and validation_split > 0:
            split_at = int(math.floor(len(x) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves no samples for "
                                 f"training or validation out of {len(x)}.")
            x, xv = x[:split_at], x[split_at:]
            y, yv = y[:split_at], y[split_at:]
            validation_data = (xv, yv)
        elif validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val).")
            validation_data = self._check_xy(*validation_data, "fit validation_data")
        if verbose == "auto":
            verbose = 1
        n = len(x)
        steps = -(-n // batch_size)
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgressLine())
        cbs.append(history)
        params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        for cb in cbs:
            cb.set_model(self)
            cb.set_params(params)
        self.stop_training = False
        if self._train_rng is None:   # drawn from grukit's generator: one seed, one run
            self._train_rng = np.random.default_rng(int(rng().integers(2 ** 63)))
        with using_rng(self._train_rng):
            self._fit_loop(x, y, batch_size, epochs, initial_epoch, steps, shuffle,
                           validation_data, cbs)
        self.history = history
        return history

    def _fit_loop(self, x, y, batch_size, epochs, initial_epoch, steps, shuffle, validation_data,
                  cbs):
        n = len(x)
        g = rng()
        # only callbacks that look at batches are called per batch (and at epoch starts, those
        # that look at them): those whose hook is not Callback's no-op
        def hooked(hook):
            base = getattr(callbacks_module.Callback, hook)
            return [cb for cb in cbs if getattr(getattr(cb, hook), "__func__", None) is not base]
        batch_cbs, begin_cbs = hooked("on_train_batch_end"), hooked("on_epoch_begin")
        for cb in cbs:
            cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for cb in begin_cbs:
                cb.on_epoch_begin(epoch)
            order = g.permutation(n) if shuffle else None
            mets = self._make_metrics(y, self._shapes[-1])
            for m in mets:
                m.reset()
            loss_sum = 0.0
            for b in range(steps):
                if order is None:
                    xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
                else:
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    xb, yb = x.take(idx, axis=0), y.take(idx, axis=0)   # x[idx], at less cost
                loss, y_pred = self._train_step(xb, yb)
                loss_sum += float(loss) * len(xb)
                for m in mets:
                    m.update(yb, y_pred)
                for cb in batch_cbs:
                    cb.on_train_batch_end(b, {"loss": float(loss)})
                if self.stop_training:
                    break
            logs = {"loss": loss_sum / n if not self.stop_training else float(loss)}
            for m in mets:
                logs[m.name] = m.result()
            if validation_data is not None:
                val = self._evaluate(*validation_data, batch_size)   # checked once, in fit
                logs.update({"val_" + k: v for k, v in val.items()})
            self.epochs_trained += 1
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) on it."""
        if self.loss is None:
            self._require_compiled("train_on_batch")
        x, y = self._check_xy(x, y, "train_on_batch")
        if not self.built:
            self._ensure_built(x)
        loss, y_pred = self._train_step(x, y)
        return self._results(float(loss), y, y_pred, return_dict)

    def _results(self, loss, y, y_pred, return_dict):
        if not (self._metric_ids or return_dict):
            return loss
        mets = self._make_metrics(y, y_pred.shape)
        out = {"loss": loss}
        for m in mets:
            m.reset()
            m.update(y, y_pred)
            out[m.name] = m.result()
        if return_dict:
            return out
        return loss if len(out) == 1 else list(out.values())

    # ---- inference --------------------------------------------------------------------------
    def predict(self, x, batch_size=32, verbose="auto"):
        """Outputs for ``x``, computed ``batch_size`` samples at a time."""
        x = self._check_x(x, "predict")
        self._ensure_built(None)
        batch_size = int(batch_size or 32)
        outs = [self._infer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _infer(self, x):
        """The stack's output alone: each layer's :meth:`~grukit.layers.Layer.infer`."""
        mask = None
        for layer in self.layers:
            out_mask = layer.compute_mask(x, mask)
            x, mask = layer.infer(x, mask=mask), out_mask
        return x

    def predict_on_batch(self, x):
        x = self._check_x(x, "predict_on_batch")
        self._ensure_built(None)
        return self._infer(x)

    def evaluate(self, x=None, y=None, batch_size=32, verbose="auto", return_dict=False):
        """The loss (and metrics) on ``x, y``, as a float or a list; float64 in float64 mode."""
        self._require_compiled("evaluate")
        x, y = self._check_xy(x, y, "evaluate")
        self._ensure_built(None)
        out = self._evaluate(x, y, int(batch_size or 32))
        if return_dict:
            return out
        return out["loss"] if len(out) == 1 else list(out.values())

    def _evaluate(self, x, y, batch_size):
        """Loss and metrics on checked data, as a dict (fit's validation comes here directly)."""
        mets = self._make_metrics(y, self._shapes[-1])
        for m in mets:
            m.reset()
        total = 0.0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            y_pred, caches, mask = self._forward(xb, False)
            total += float(self._loss(yb, y_pred, mask, caches)[0]) * len(xb)
            self._release(caches)
            for m in mets:
                m.update(yb, y_pred)
        out = {"loss": total / len(x)}
        for m in mets:
            out[m.name] = m.result()
        return out

    def test_on_batch(self, x, y, return_dict=False):
        return self.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=return_dict)

    # ---- description ------------------------------------------------------------------------
    def summary(self, print_fn=print):
        """Print a Keras-like table of layers, output shapes and parameter counts."""
        self._ensure_built()
        rows = [(f"{layer.name} ({type(layer).__name__})", str(shape), f"{layer.count_params():,}")
                for layer, shape in zip(self.layers, self._shapes)]
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in
             enumerate(("Layer (type)", "Output Shape", "Param #"))]
        line = "+-" + "-+-".join("-" * n for n in w) + "-+"
        fmt = lambda r: "| " + " | ".join((r[0].ljust(w[0]), r[1].ljust(w[1]), r[2].rjust(w[2]))) + " |"
        total = self.count_params()
        trainable = sum(l.count_params() for l in self.layers if l.trainable)
        text = [f'Model: "{self.name}"', line, fmt(("Layer (type)", "Output Shape", "Param #")), line]
        text += [fmt(r) for r in rows] + [line, f" Total params: {total:,}",
                                            f" Trainable params: {trainable:,}",
                                            f" Non-trainable params: {total - trainable:,}"]
        print_fn("\n".join(text))

    # ---- files ------------------------------------------------------------------------------
    def save(self, filepath, include_optimizer=True):
        """Save the model: ``.keras`` and ``.h5`` in Keras's formats (needs h5py), anything else
        (``.grukit`` by convention) in grukit's native single-file format."""
        path = str(filepath)
        if path.endswith((".keras", ".h5")):
            from .interop import keras as keras_io
            keras_io.save_model(self, path)
        else:
            from . import saving
            saving.save_model(self, path, include_optimizer=include_optimizer)

    def save_weights(self, filepath):
        """Write the weights in Keras 3's ``.weights.h5`` layout (needs h5py)."""
        from .interop import keras as keras_io
        keras_io.save_weights(self, str(filepath))

    def load_weights(self, filepath):
        """Read weights from a Keras ``.weights.h5``/``.h5`` file or a ``.grukit`` file."""
        path = str(filepath)
        if path.endswith(".h5"):
            from .interop import keras as keras_io
            keras_io.load_weights(self, path)
        else:
            self.set_weights(load_model(path, compile=False).get_weights())

    def get_config(self):
        from .layers import registry
        return {"name": self.name,
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [{"class_name": registry.class_name(layer), "config": layer.get_config()}
                           for layer in self.layers]}

    @classmethod
    def from_config(cls, cfg):
        from .layers import registry
        model = cls(name=cfg.get("name"))
        if cfg.get("input_shape") is not None:
            model.add(Input(shape=tuple(cfg["input_shape"])))
        for entry in cfg["layers"]:
            model.add(registry.layer_from_config(entry["class_name"], entry["config"]))
        return model


def load_model(filepath, compile=True):
    """Open a model file: Keras 3 ``.keras``, legacy Keras ``.h5`` (both need h5py), or grukit's
    native format (any other name, ``.grukit`` by convention)."""
    path = str(filepath)
    if path.endswith((".keras", ".h5")):
        from .interop import keras as keras_io
        return keras_io.load_model(path, compile=compile)
    from . import saving
    return saving.load_model(path, compile=compile)
