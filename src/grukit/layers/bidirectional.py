"""Bidirectional: one recurrent layer reads the sequence forwards, a copy reads it backwards.

    y_f = forward_layer(x)             y_b = backward_layer(x)  (go_backwards flipped)
    with return_sequences, y_b is put back in forward time order before merging;
    merge_mode: "concat" [y_f, y_b] | "sum" y_f + y_b | "mul" y_f * y_b | "ave" (y_f + y_b) / 2
                | None: the list [y_f, y_b]
With return_state the output is [merged, *forward_states, *backward_states]; ``initial_state``
takes the forward layer's states then the backward layer's. Weights: the forward layer's, then
the backward layer's, as in Keras.
"""
import numpy as np

from ..utils import check_finite
from .base import Layer
from .recurrent import Recurrent

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Keras ``Bidirectional`` around a GRU, LSTM or SimpleRNN.

    >>> from grukit.layers import GRU
    >>> Bidirectional(GRU(4))(np.zeros((2, 5, 3))).shape
    (2, 8)
    """
    input_ndim = 3
    supports_masking = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        if not isinstance(layer, Recurrent):
            raise ValueError("Bidirectional wraps a recurrent layer (GRU, LSTM or SimpleRNN), got "
                             f"{type(layer).__name__}.")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {MERGE_MODES}, got "
                             f"{merge_mode!r}.")
        kwargs.setdefault("input_shape", layer.input_shape_arg)
        super().__init__(**kwargs)
        cfg = layer.get_config()
        self.forward_layer = layer
        if backward_layer is None:
            cfg.update(name="backward_" + layer.name, go_backwards=not layer.go_backwards)
            cfg.pop("input_shape", None)
            backward_layer = type(layer).from_config(cfg)
        elif not isinstance(backward_layer, Recurrent):
            raise ValueError("Bidirectional: backward_layer must be a recurrent layer.")
        elif backward_layer.go_backwards == layer.go_backwards:
            raise ValueError("Bidirectional: backward_layer must have go_backwards opposite to the "
                             "forward layer's.")
        elif (backward_layer.return_sequences != layer.return_sequences
              or backward_layer.return_state != layer.return_state):
            raise ValueError("Bidirectional: backward_layer must match the forward layer's "
                             "return_sequences and return_state.")
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        for sub in (self.forward_layer, self.backward_layer):
            # as Keras does: masked steps give zeros when returning sequences
            sub.zero_output_for_mask = sub.return_sequences

    @property
    def param_names(self):
        return tuple(f"forward_{k}" for k in self.forward_layer.param_names
                     if k in self.forward_layer.params) + \
            tuple(f"backward_{k}" for k in self.backward_layer.param_names
                  if k in self.backward_layer.params)

    def _sub(self, key):
        side, name = key.split("_", 1)
        return (self.forward_layer if side == "forward" else self.backward_layer), name

    def build(self, input_shape):
        super().build(input_shape)
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(input_shape)
        self.params = {f"{side}_{k}": v
                       for side, sub in (("forward", self.forward_layer),
                                         ("backward", self.backward_layer))
                       for k, v in sub.params.items()}
        self.param_regularizers = {f"{side}_{k}": v
                                   for side, sub in (("forward", self.forward_layer),
                                                     ("backward", self.backward_layer))
                                   for k, v in sub.param_regularizers.items()}
        self.param_constraints = {f"{side}_{k}": v
                                  for side, sub in (("forward", self.forward_layer),
                                                    ("backward", self.backward_layer))
                                  for k, v in sub.param_constraints.items()}

    def params_rebound(self):
        """The model moved the weights into its flat buffer: point the inner layers at them."""
        for key, value in self.params.items():
            sub, name = self._sub(key)
            sub.params[name] = value

    def compute_output_shape(self, input_shape):
        out = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            out, *states = out
            states = states * 2
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (2 * out[-1],)
        elif self.merge_mode is None:
            out = [out, out]
        if self.return_state:
            return ([out] if self.merge_mode else out) + states
        return out

    def compute_mask(self, x, mask=None):
        return mask if (mask is not None and self.return_sequences) else None

    def _merge(self, yf, yb):
        m = self.merge_mode
        if m == "concat":
            return np.concatenate([yf, yb], axis=-1)
        if m == "sum":
            return yf + yb
        if m == "mul":
            return yf * yb
        if m == "ave":
            return (yf + yb) * 0.5
        return [yf, yb]

    def forward(self, x, training=False, mask=None, initial_state=None):
        init_f = init_b = None
        if initial_state is not None:
            n = self.forward_layer.cell.n_states
            if len(initial_state) != 2 * n:
                raise ValueError(f"{self.name}: initial_state needs {2 * n} arrays (the forward "
                                 f"layer's {n}, then the backward layer's), got "
                                 f"{len(initial_state)}.")
            init_f, init_b = list(initial_state[:n]), list(initial_state[n:])
        yf, cf = self.forward_layer.forward(x, training, mask=mask, initial_state=init_f)
        yb, cb = self.backward_layer.forward(x, training, mask=mask, initial_state=init_b)
        sf = sb = []
        if self.return_state:
            (yf, *sf), (yb, *sb) = yf, yb
        if self.return_sequences:
            yb = yb[:, ::-1]
        y = self._merge(yf, yb)
        if self.return_state:
            y = ([y] if self.merge_mode else y) + sf + sb
        return y, (cf, cb, yf, yb)

    def release(self, cache):
        if cache is not None:
            self.forward_layer.release(cache[0])
            self.backward_layer.release(cache[1])

    def backward(self, dy, cache):
        cf, cb, yf, yb = cache
        n = self.forward_layer.cell.n_states
        ds_f = ds_b = []
        if self.return_state:
            if self.merge_mode is None:
                dyf, dyb, *rest = dy
            else:
                dy, *rest = dy
            ds_f, ds_b = rest[:n], rest[n:]
        m = self.merge_mode
        if m == "concat":
            u = yf.shape[-1]
            dyf, dyb = dy[..., :u], dy[..., u:]
        elif m == "sum":
            dyf = dyb = dy
        elif m == "mul":
            dyf, dyb = dy * yb, dy * yf
        elif m == "ave":
            dyf = dyb = dy * 0.5
        elif not self.return_state:
            dyf, dyb = dy
        if self.return_sequences:
            dyb = dyb[:, ::-1]
        if self.return_state:
            dyf, dyb = [dyf] + list(ds_f), [dyb] + list(ds_b)
        dxf, gf = self.forward_layer.backward(dyf, cf)
        dxb, gb = self.backward_layer.backward(dyb, cb)
        grads = {f"forward_{k}": v for k, v in gf.items()}
        grads.update({f"backward_{k}": v for k, v in gb.items()})
        return dxf + dxb, grads

    def get_config(self):
        from . import registry
        cfg = super().get_config()
        cfg.update(merge_mode=self.merge_mode,
                   layer={"class_name": registry.class_name(self.forward_layer),
                          "config": self.forward_layer.get_config()},
                   backward_layer={"class_name": registry.class_name(self.backward_layer),
                                   "config": self.backward_layer.get_config()})
        return cfg

    @classmethod
    def from_config(cls, config):
        from . import registry
        config = dict(config)
        layer = registry.layer_from_config(**_entry(config.pop("layer")))
        back = config.pop("backward_layer", None)
        back = None if back is None else registry.layer_from_config(**_entry(back))
        return cls(layer, backward_layer=back, **config)

    def __call__(self, x, training=False, mask=None, initial_state=None):
        x = self._prepare(x)
        check_finite(f"{self.name} input", x)
        return self.forward(x, training=training, mask=mask, initial_state=initial_state)[0]


def _entry(e):
    return {"name": e["class_name"], "config": e["config"]}
