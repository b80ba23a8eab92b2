"""Gradient checks in float64 for the recurrent options: masks, direction, states, Bidirectional,
dropout with fixed masks, regularizers; and the model-level combinations."""
import itertools

import numpy as np
import pytest

from grukit import regularizers
from grukit.layers import GRU, LSTM, Bidirectional, Dense, Embedding, Masking, SimpleRNN
from grukit.models import Sequential
from gradcheck import check_layer, numeric_grad, rel_error

TOL = 1e-6
CELLS = {"gru": lambda **kw: GRU(3, **kw), "gru_v1": lambda **kw: GRU(3, reset_after=False, **kw),
         "lstm": lambda **kw: LSTM(3, **kw), "rnn": lambda **kw: SimpleRNN(3, **kw)}


def randomize(layer, rng):
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.5


def padded_mask(rng, B=3, T=5):
    """Right-padded, left-padded and a hole in the middle: every pattern the loop must carry."""
    m = np.ones((B, T), bool)
    m[0, 3:] = False
    m[1, :2] = False
    m[2, 2] = False
    return m


@pytest.mark.parametrize("cell,go_backwards,return_state,return_sequences",
                         list(itertools.product(CELLS, [False, True], [False, True], [False, True])))
def test_masked_recurrent(cell, go_backwards, return_state, return_sequences, float64, rng):
    layer = CELLS[cell](go_backwards=go_backwards, return_state=return_state,
                        return_sequences=return_sequences)
    x = rng.standard_normal((3, 5, 2))
    layer(x)
    randomize(layer, rng)
    check_layer(layer, x, rng, TOL, mask=padded_mask(rng))


@pytest.mark.parametrize("cell,merge_mode,return_state,return_sequences,masked",
                         [(c, m, s, r, k) for c in CELLS for m in ["concat", "sum", "mul", "ave", None]
                          for s in [False, True] for r in [False, True] for k in [False, True]
                          if (m in ("concat", None) or not s)])
def test_bidirectional(cell, merge_mode, return_state, return_sequences, masked, float64, rng):
    layer = Bidirectional(CELLS[cell](return_state=return_state, return_sequences=return_sequences),
                          merge_mode=merge_mode)
    x = rng.standard_normal((3, 5, 2))
    layer(x)
    randomize(layer, rng)
    errors = check_layer(layer, x, rng, TOL, mask=padded_mask(rng) if masked else None)
    assert any(k.startswith("backward_") for k in errors)


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_with_fixed_masks(cell, float64, rng):
    layer = CELLS[cell](dropout=0.3, recurrent_dropout=0.4, return_sequences=True)
    x = rng.standard_normal((3, 4, 2))
    layer(x)
    randomize(layer, rng)
    masks = layer.dropout_masks(3, 2, np.dtype(np.float64))
    assert masks[0] is not None and masks[1] is not None
    check_layer(layer, x, rng, TOL, training=True, dropout_masks=masks, mask=padded_mask(rng, T=4))


@pytest.mark.parametrize("cell", list(CELLS))
def test_initial_state_with_mask_and_backwards(cell, float64, rng):
    layer = CELLS[cell](go_backwards=True, return_sequences=True)
    x = rng.standard_normal((3, 5, 2))
    layer(x)
    randomize(layer, rng)
    states = [rng.standard_normal((3, 3)) for _ in range(layer.cell.n_states)]
    mask = padded_mask(rng)
    y, cache = layer.forward(x, mask=mask, initial_state=states)
    G = rng.standard_normal(y.shape)
    _, _, dstates = layer.backward_states(G, cache)
    for s, ds in zip(states, dstates):
        num = numeric_grad(lambda: float(np.sum(layer.forward(x, mask=mask, initial_state=states)[0] * G)), s)
        assert rel_error(ds, num) < TOL


def test_model_with_masks_regularizers_and_bidirectional(float64, rng):
    """The whole training gradient: Embedding(mask_zero) -> Bidirectional -> GRU -> Dense,
    with every kind of penalty, a masked sequence loss, and the penalties in the loss."""
    model = Sequential([
        Embedding(6, 3, mask_zero=True, input_shape=(5,), embeddings_regularizer="l2"),
        Bidirectional(LSTM(3, return_sequences=True, kernel_regularizer=regularizers.l1(0.01))),
        GRU(3, return_sequences=True, reset_after=False, recurrent_regularizer="l1_l2",
            bias_regularizer=regularizers.L2(0.1), activity_regularizer="l2"),
        Dense(2, activation="tanh", kernel_regularizer=regularizers.L1L2(0.02, 0.03))])
    model.compile("sgd", "mse")
    model.build()
    model._flat[:] = rng.standard_normal(model._flat.shape) * 0.5
    ids = np.array([[1, 2, 3, 0, 0], [0, 0, 4, 5, 1], [2, 2, 2, 2, 2]])
    y = rng.standard_normal((3, 5, 2))

    def total():
        y_pred, caches, mask = model._forward(ids, False)
        return float(model._loss(y, y_pred, mask, caches)[0])

    y_pred, caches, mask = model._forward(ids, True)
    assert mask is not None and mask.tolist()[0] == [True, True, True, False, False]
    loss, dy = model._loss(y, y_pred, mask, caches)
    model._backward(dy, caches)
    assert rel_error(model._gflat, numeric_grad(total, model._flat)) < TOL
    # the penalties count in the loss
    plain = model.loss(y, y_pred, mask)
    assert loss > plain


def test_masking_layer_gradient(float64, rng):
    model = Sequential([Masking(0.0, input_shape=(5, 2)), SimpleRNN(3), Dense(1)])
    model.compile("sgd", "mse")
    model.build()
    model._flat[:] = rng.standard_normal(model._flat.shape) * 0.5
    x = rng.standard_normal((3, 5, 2))
    x[0, 3:] = 0.0
    x[1, :2] = 0.0
    y = rng.standard_normal((3, 1))
    y_pred, caches, mask = model._forward(x, True)
    _, dy = model._loss(y, y_pred, mask, caches)
    model._backward(dy, caches)
    num = numeric_grad(lambda: float(model._loss(y, model._forward(x, False)[0], None, [])[0]),
                       model._flat)
    assert rel_error(model._gflat, num) < TOL
