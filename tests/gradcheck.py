"""Central-difference gradient checking in float64, shared by the gradient tests."""
import numpy as np


def numeric_grad(f, a, eps=1e-6):
    """d f() / d a by central differences, perturbing ``a`` in place."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|, tiny): relative error over the whole array."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))


def check_layer(layer, x, rng, tol=1e-6, **call):
    """Check dL/dx and dL/dparam of ``layer`` at x, with L = sum(forward(x) * G), G random."""
    y, _ = layer.forward(x, **call)
    outs = y if isinstance(y, list) else [y]
    G = [rng.standard_normal(o.shape) for o in outs]

    def loss():
        yy, _ = layer.forward(x, **call)
        yy = yy if isinstance(yy, list) else [yy]
        return sum(float(np.sum(a * g)) for a, g in zip(yy, G))

    _, cache = layer.forward(x, **call)
    dx, grads = layer.backward(G if isinstance(y, list) else G[0], cache)
    errors = {}
    if dx is not None:
        errors["x"] = rel_error(dx, numeric_grad(loss, x))
    for k, p in layer.params.items():
        errors[k] = rel_error(grads[k], numeric_grad(loss, p))
    bad = {k: e for k, e in errors.items() if not e < tol}
    assert not bad, f"gradient check failed for {layer.name}: {bad}"
    return errors
