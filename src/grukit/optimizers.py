"""Optimizers with Keras 3's update rules and defaults. They own their state; layers do not.

An optimizer updates one flat parameter vector from one flat gradient vector (the model keeps every
weight as a view into such a buffer), so a step is a few vectorised calls whatever the model's size.
``segments`` (slices into the vector, one per weight) serve ``clipnorm``, which Keras applies to
each weight's gradient on its own.

    Adam     m += (1 - b1)(g - m);  v += (1 - b2)(g^2 - v)
             w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    SGD      m = momentum m - lr g;  w += m  (nesterov: w += momentum m - lr g);  no momentum: w -= lr g
    RMSprop  v = rho v + (1 - rho) g^2;  w -= lr g / sqrt(v + eps)  (with momentum: m = mu m + step)
"""
import numpy as np

from . import _native
from .utils import reject_unknown, resolve


class Optimizer:
    name = "optimizer"

    def __init__(self, learning_rate=0.001, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None, **kwargs):
        reject_unknown(type(self).__name__, kwargs)
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Give only one of clipnorm, clipvalue and global_clipnorm.")
        if not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
        self.learning_rate = float(learning_rate)
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.iterations = 0
        self._slots = None

    # ---- state ------------------------------------------------------------------------------
    slot_names = ()

    def build(self, size, dtype):
        self._slots = {k: np.zeros(size, dtype) for k in self.slot_names}
        self.iterations = 0

    def get_state(self):
        """The state needed to resume: iterations and the slot vectors."""
        return {"iterations": self.iterations, "learning_rate": self.learning_rate,
                "slots": {k: v.copy() for k, v in (self._slots or {}).items()}}

    def set_state(self, state):
        self.iterations = int(state["iterations"])
        self.learning_rate = float(state["learning_rate"])
        self._slots = {k: np.array(v) for k, v in state["slots"].items()}

    # ---- step -------------------------------------------------------------------------------
    def clip(self, g, segments):
        if self.clipnorm:
            for s in segments:
                n = float(np.sqrt(np.dot(g[s], g[s])))
                if n > self.clipnorm:
                    g[s] *= self.clipnorm / n
        elif self.global_clipnorm:
            n = float(np.sqrt(np.dot(g, g)))
            if n > self.global_clipnorm:
                g *= self.global_clipnorm / n
        elif self.clipvalue:
            np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        return g

    def apply(self, w, g, segments=()):
        """Update the flat vector ``w`` in place from the flat gradient ``g`` (which may be clipped
        in place)."""
        if self._slots is None or next(iter(self._slots.values()), w).shape != w.shape:
            self.build(w.shape, w.dtype)
        self.clip(g, segments)
        self.iterations += 1
        self._update(w, g)

    def _update(self, w, g):
        raise NotImplementedError

    def get_config(self):
        cfg = {"name": self.name, "learning_rate": self.learning_rate}
        for k in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, k) is not None:
                cfg[k] = getattr(self, k)
        return cfg


class Adam(Optimizer):
    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        if amsgrad:
            self.slot_names = ("m", "v", "vhat")
        self._consts = (None,)

    def _constants(self, dtype):
        """(1, beta_1, beta_2) in ``dtype``'s float type, and the compiled update's constants
        [alpha, 1 - beta_1, 1 - beta_2, epsilon] (alpha written per step): made again only
        when the dtype or a hyperparameter changes."""
        key = (dtype, self.beta_1, self.beta_2, self.epsilon)
        if self._consts[0] != key:
            dt = dtype.type
            self._consts = (key, dt(1), dt(self.beta_1), dt(self.beta_2),
                            np.array([0, 1 - self.beta_1, 1 - self.beta_2, self.epsilon], dtype))
        return self._consts[1:]

    def _update(self, w, g):
        m, v = self._slots["m"], self._slots["v"]
        t = self.iterations
        dt = w.dtype.type
        one, beta_1, beta_2, consts = self._constants(w.dtype)
        # Keras's arithmetic, in the weights' float type: alpha = lr sqrt(1 - b2^t) / (1 - b1^t)
        alpha = dt(self.learning_rate) * np.sqrt(one - beta_2 ** t) / (one - beta_1 ** t)
        fast = None if self.amsgrad else _native.loops(w.dtype, build=False)
        if fast is not None and w.flags.c_contiguous:   # the same update in one compiled pass
            consts[0] = alpha
            fast.adam_update((w.size,), (w, g, m, v, consts))
            return
        m += (g - m) * dt(1 - self.beta_1)
        v += (g * g - v) * dt(1 - self.beta_2)
        if self.amsgrad:
            vhat = self._slots["vhat"]
            np.maximum(vhat, v, out=vhat)
            v = vhat
        w -= (m * alpha) / (np.sqrt(v) + dt(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum!r}.")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slot_names = ("m",) if self.momentum else ()

    def _update(self, w, g):
        dt = w.dtype.type
        lr = dt(self.learning_rate)
        if not self.momentum:
            w -= g * lr
            return
        m, mu = self._slots["m"], dt(self.momentum)
        m *= mu
        m -= g * lr
        if self.nesterov:
            w += m * mu - g * lr
        else:
            w += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        self.slot_names = ("v",) + (("m",) if momentum else ()) + (("mg",) if centered else ())

    def _update(self, w, g):
        dt = w.dtype.type
        rho = dt(self.rho)
        v = self._slots["v"]
        v *= rho
        v += (dt(1) - rho) * g * g
        if self.centered:
            mg = self._slots["mg"]
            mg *= rho
            mg += (dt(1) - rho) * g
            denom = v - mg * mg + dt(self.epsilon)
        else:
            denom = v + dt(self.epsilon)
        step = dt(self.learning_rate) * g / np.sqrt(denom)
        if self.momentum:
            m = self._slots["m"]
            m *= dt(self.momentum)
            m += step
            w -= m
        else:
            w -= step

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


_REGISTRY = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop}


def from_config(config: dict) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.get_config`."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"Unknown optimizer {name!r} in a saved config; known: {sorted(_REGISTRY)}.")
    return _REGISTRY[name](**config)


def get(identifier) -> Optimizer:
    """An optimizer from its name (``"adam"``) or an :class:`Optimizer`."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return resolve("optimizer", _REGISTRY, identifier)()
    raise ValueError(f"Unknown optimizer {identifier!r}: give 'adam', 'sgd', 'rmsprop' or an "
                     "Optimizer object.")
