"""The compiled kernels (numba) and the NumPy path give the same results, forward and backward,
for every cell, activation and option that reaches them."""
import numpy as np
import pytest

from grukit import config, fused
from grukit.layers import GRU, LSTM, SimpleRNN, Bidirectional

assert fused.AVAILABLE, "the test extras install numba: the compiled path must be tested"

MAKERS = [
    lambda: GRU(5, return_sequences=True, return_state=True),
    lambda: GRU(5, reset_after=False, return_sequences=True),
    lambda: GRU(5, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True),
    lambda: GRU(5, activation="softsign", recurrent_activation="tanh", reset_after=False),
    lambda: LSTM(5, return_sequences=True, return_state=True),
    lambda: LSTM(5, activation="elu", recurrent_activation="hard_sigmoid"),
    lambda: LSTM(5, activation="selu", recurrent_activation="softplus", go_backwards=True),
    lambda: SimpleRNN(5, activation="linear", return_sequences=True),
    lambda: Bidirectional(GRU(5, return_sequences=True)),
]


def run_both(layer, x, **kw):
    out = {}
    for k in ("numpy", "numba"):
        config.set_kernels(k)
        try:
            y, cache = layer.forward(x, **kw)
            ys = y if isinstance(y, list) else [y]
            G = [np.random.default_rng(1).standard_normal(v.shape).astype(v.dtype) for v in ys]
            dx, grads = layer.backward(G if isinstance(y, list) else G[0], cache)
            out[k] = (ys, dx, grads)
        finally:
            config.set_kernels("auto")
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", MAKERS)
def test_both_paths_agree(make, dtype, rng):
    config.set_floatx(dtype)
    layer = make()
    x = rng.standard_normal((4, 6, 3)).astype(dtype)
    layer(x)
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.5
    mask = np.ones((4, 6), bool)
    mask[0, 4:] = False
    kw = {"mask": mask}
    if not isinstance(layer, Bidirectional):
        kw["training"] = True
        kw["dropout_masks"] = (None, (rng.random((4, 5)) > 0.3).astype(dtype) / 0.7)
    res = run_both(layer, x, **kw)
    tol = 1e-5 if dtype == "float32" else 1e-12

    def close(a, b):   # relative to the array's scale: unbounded activations make large values
        return np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(a)))
    (ya, dxa, ga), (yb, dxb, gb) = res["numpy"], res["numba"]
    assert all(close(a, b) for a, b in zip(ya, yb))
    assert close(dxa, dxb)
    for k in ga:
        assert close(ga[k], gb[k]), k


def test_set_kernels_checks_its_argument():
    with pytest.raises(ValueError, match="unknown choice 'gpu'"):
        config.set_kernels("gpu")
    config.set_kernels("numpy")
    assert config.kernels() == "numpy"
    config.set_kernels("auto")
    assert config.kernels() == "numba"
