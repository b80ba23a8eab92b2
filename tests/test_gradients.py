"""Gradient checks in float64: every layer and loss against central differences, with a random
upstream gradient, w.r.t. the input, the initial state and every parameter (rel. error < 1e-6)."""
import numpy as np
import pytest

from grukit import losses
from grukit.layers import GRU, LSTM, Dense, Embedding, SimpleRNN
from gradcheck import check_layer, numeric_grad, rel_error

TOL = 1e-6


def randomize(layer, rng, scale=0.5):
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape) * scale


RECURRENT = [
    ("gru_reset_after", lambda **kw: GRU(3, **kw)),
    ("gru_reset_before", lambda **kw: GRU(3, reset_after=False, **kw)),
    ("gru_no_bias", lambda **kw: GRU(3, use_bias=False, **kw)),
    ("lstm", lambda **kw: LSTM(3, **kw)),
    ("lstm_no_bias", lambda **kw: LSTM(3, use_bias=False, **kw)),
    ("simple_rnn", lambda **kw: SimpleRNN(3, **kw)),
    ("gru_relu_hard_sigmoid", lambda **kw: GRU(3, activation="relu",
                                               recurrent_activation="hard_sigmoid", **kw)),
    ("lstm_softsign_sigmoid", lambda **kw: LSTM(3, activation="softsign", **kw)),
    ("rnn_elu", lambda **kw: SimpleRNN(3, activation="elu", **kw)),
    ("rnn_selu", lambda **kw: SimpleRNN(3, activation="selu", **kw)),
    ("rnn_softplus", lambda **kw: SimpleRNN(3, activation="softplus", **kw)),
]


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("name,make", RECURRENT, ids=[r[0] for r in RECURRENT])
def test_recurrent_layers(name, make, return_sequences, float64, rng):
    layer = make(return_sequences=return_sequences)
    x = rng.standard_normal((2, 4, 3))
    layer(x)
    randomize(layer, rng)
    check_layer(layer, x, rng, TOL)


@pytest.mark.parametrize("make", [lambda: GRU(3, return_state=True, return_sequences=True),
                                  lambda: LSTM(3, return_state=True),
                                  lambda: GRU(3, go_backwards=True, return_sequences=True),
                                  lambda: LSTM(2, go_backwards=True)])
def test_recurrent_state_and_direction(make, float64, rng):
    layer = make()
    x = rng.standard_normal((2, 5, 2))
    layer(x)
    randomize(layer, rng)
    check_layer(layer, x, rng, TOL)


@pytest.mark.parametrize("make", [lambda: GRU(3), lambda: GRU(3, reset_after=False),
                                  lambda: LSTM(3), lambda: SimpleRNN(3)])
def test_gradient_wrt_initial_state(make, float64, rng):
    layer = make()
    x = rng.standard_normal((2, 4, 2))
    layer(x)
    randomize(layer, rng)
    states = [rng.standard_normal((2, 3)) for _ in range(layer.cell.n_states)]
    y, cache = layer.forward(x, initial_state=states)
    G = rng.standard_normal(y.shape)
    _, _, dstates = layer.backward_states(G, cache)
    for s, ds in zip(states, dstates):
        def loss():
            return float(np.sum(layer.forward(x, initial_state=states)[0] * G))
        assert rel_error(ds, numeric_grad(loss, s)) < TOL


@pytest.mark.parametrize("activation", ["linear", "tanh", "sigmoid", "relu", "softmax", "elu",
                                        "selu", "softplus", "softsign", "hard_sigmoid"])
def test_dense(activation, float64, rng):
    layer = Dense(4, activation=activation)
    x = rng.standard_normal((3, 5))
    layer(x)
    randomize(layer, rng)
    check_layer(layer, x, rng, TOL)


def test_dense_on_sequences(float64, rng):
    layer = Dense(2, activation="tanh")
    x = rng.standard_normal((2, 3, 4))
    layer(x)
    check_layer(layer, x, rng, TOL)


def test_embedding(float64, rng):
    layer = Embedding(7, 3)
    ids = rng.integers(0, 7, size=(4, 5))
    layer(ids)
    errors = check_layer(layer, ids, rng, TOL)
    assert set(errors) == {"embeddings"}


LOSS_CASES = {
    "mse": lambda r: (r.standard_normal((4, 3)), r.standard_normal((4, 3))),
    "mae": lambda r: (r.standard_normal((4, 3)), r.standard_normal((4, 3))),
    "huber": lambda r: (r.standard_normal((4, 3)), 2 * r.standard_normal((4, 3))),
    "binary_crossentropy": lambda r: (r.integers(0, 2, (4, 3)).astype(float),
                                      r.uniform(0.05, 0.95, (4, 3))),
    "categorical_crossentropy": lambda r: (np.eye(3)[r.integers(0, 3, 4)],
                                           r.uniform(0.1, 1.0, (4, 3))),
    "sparse_categorical_crossentropy": lambda r: (r.integers(0, 3, 4), r.uniform(0.1, 1.0, (4, 3))),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_losses(name, float64, rng):
    y, p = LOSS_CASES[name](rng)
    loss = losses.get(name)
    value, dp = loss.value_and_grad(y, p)
    assert rel_error(dp, numeric_grad(lambda: float(loss(y, p)), p)) < TOL
    assert np.isfinite(value)


def test_mse_with_keras_shapes(float64, rng):
    """y of shape (B,) against predictions (B, 1), as in the seed's program."""
    y, p = rng.standard_normal(5), rng.standard_normal((5, 1))
    value, dp = losses.get("mse").value_and_grad(y, p)
    assert dp.shape == p.shape
    assert value == pytest.approx(np.mean((p[:, 0] - y) ** 2))


def test_model_stack_end_to_end(float64, rng):
    """The gradient a training step hands the optimizer: loss through a mixed stack."""
    from grukit.models import Sequential
    model = Sequential([GRU(4, return_sequences=True, input_shape=(5, 2)),
                        LSTM(3, return_sequences=True), SimpleRNN(3), Dense(2, activation="tanh")])
    model.compile("sgd", "mse")
    model.build()
    model._flat[:] = rng.standard_normal(model._flat.shape) * 0.5
    x, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 2))
    y_pred, caches, _ = model._forward(x, True)
    _, dy = model.loss.value_and_grad(y, y_pred)
    model._backward(dy, caches)
    numeric = numeric_grad(lambda: float(model.loss(y, model._forward(x, False)[0])), model._flat)
    assert rel_error(model._gflat, numeric) < TOL


@pytest.mark.parametrize("name,make", RECURRENT[:6], ids=[r[0] for r in RECURRENT[:6]])
def test_wide_batches_take_the_batched_projection(name, make, float64, rng):
    """From 8 sequences on, the input projection is one batched matmul straight into the loop's
    layout; it must give what the plain matmul gives (and the right gradients)."""
    layer = make(return_sequences=True)
    x = rng.standard_normal((9, 3, 2))
    layer(x)
    randomize(layer, rng)
    check_layer(layer, x, rng, TOL)
    one_by_one = np.concatenate([layer(x[i:i + 1]) for i in range(9)])
    assert np.allclose(layer(x), one_by_one, atol=1e-12)
