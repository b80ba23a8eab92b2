"""layer.trace(x): the gate values recomputed here from the weights, step by step, in float64."""
import numpy as np
import pytest

from grukit.layers import GRU, LSTM, SimpleRNN


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_trace_from_the_weights(reset_after, go_backwards, float64, rng):
    layer = GRU(4, reset_after=reset_after, go_backwards=go_backwards)
    x = rng.standard_normal((2, 5, 3))
    layer(x)
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.5
    tr = layer.trace(x)
    W, U, b = layer.get_weights()
    bx, bh = (b[0], b[1]) if reset_after else (b, np.zeros_like(b))
    u = 4
    h = np.zeros((2, u))
    steps = range(4, -1, -1) if go_backwards else range(5)
    for t in steps:
        xw = x[:, t] @ W + bx
        z = sigmoid(xw[:, :u] + h @ U[:, :u] + bh[:u])
        r = sigmoid(xw[:, u:2 * u] + h @ U[:, u:2 * u] + bh[u:2 * u])
        if reset_after:
            hh = np.tanh(xw[:, 2 * u:] + r * (h @ U[:, 2 * u:] + bh[2 * u:]))
        else:
            hh = np.tanh(xw[:, 2 * u:] + (r * h) @ U[:, 2 * u:])
        h = z * h + (1 - z) * hh
        for name, want in (("z", z), ("r", r), ("candidate", hh), ("h", h)):
            assert np.allclose(tr[name][:, t], want, atol=1e-12), (name, t)
    assert all(v.shape == (2, 5, 4) for v in tr.values())


def test_lstm_trace_from_the_weights(float64, rng):
    layer = LSTM(3)
    x = rng.standard_normal((2, 4, 2))
    layer(x)
    tr = layer.trace(x)
    W, U, b = layer.get_weights()
    h, c, u = np.zeros((2, 3)), np.zeros((2, 3)), 3
    for t in range(4):
        pre = x[:, t] @ W + h @ U + b
        i, f, g, o = (sigmoid(pre[:, :u]), sigmoid(pre[:, u:2 * u]), np.tanh(pre[:, 2 * u:3 * u]),
                      sigmoid(pre[:, 3 * u:]))
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, want in (("i", i), ("f", f), ("g", g), ("c", c), ("o", o), ("h", h)):
            assert np.allclose(tr[name][:, t], want, atol=1e-12), (name, t)


def test_simple_rnn_trace_is_its_output_sequence(rng):
    layer = SimpleRNN(3, return_sequences=True)
    x = rng.standard_normal((2, 4, 2))
    assert np.array_equal(layer.trace(x)["h"], layer(x))
