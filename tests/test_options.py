"""Recurrent options, by their meaning: masks and padding, state, direction, dropout statistics,
regularizers and constraints in training."""
import numpy as np
import pytest

from grukit import constraints, regularizers
from grukit.layers import GRU, LSTM, Bidirectional, Dense, Embedding, Masking, SimpleRNN
from grukit.models import Sequential
from grukit.utils import set_random_seed

MAKERS = {"gru": lambda **kw: GRU(4, **kw), "gru_v1": lambda **kw: GRU(4, reset_after=False, **kw),
          "lstm": lambda **kw: LSTM(4, **kw), "rnn": lambda **kw: SimpleRNN(4, **kw)}


def ragged_batch(rng, lengths, T, D, left=False):
    seqs = [rng.standard_normal((n, D)).astype(np.float32) for n in lengths]
    x = np.zeros((len(seqs), T, D), np.float32)
    mask = np.zeros((len(seqs), T), bool)
    for i, s in enumerate(seqs):
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        x[i, sl], mask[i, sl] = s, True
    return seqs, x, mask


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("cell", list(MAKERS))
def test_padded_batch_equals_each_sequence_alone(cell, go_backwards, left, rng):
    layer = MAKERS[cell](return_state=True, go_backwards=go_backwards)
    seqs, x, mask = ragged_batch(rng, [6, 2, 4, 1], T=6, D=3, left=left)
    _, *states = layer(x, mask=mask)
    for i, s in enumerate(seqs):
        _, *alone = layer(s[None])
        for a, b in zip(states, alone):
            assert np.allclose(a[i], b[0], atol=1e-6)


def test_masked_steps_repeat_the_previous_output(rng):
    layer = GRU(3, return_sequences=True)
    x = rng.standard_normal((1, 5, 2))
    mask = np.array([[True, True, False, False, True]])
    y = layer(x, mask=mask)
    assert np.array_equal(y[0, 2], y[0, 1]) and np.array_equal(y[0, 3], y[0, 1])
    assert not np.array_equal(y[0, 4], y[0, 3])


def test_masks_travel_through_the_stack(rng):
    """Masking -> GRU(seq) -> LSTM: the LSTM skips the padded steps it is handed."""
    seqs, x, mask = ragged_batch(rng, [5, 3], T=5, D=2)
    model = Sequential([Masking(0.0, input_shape=(None, 2)), GRU(4, return_sequences=True), LSTM(3)])
    model.build()
    full = model.predict(x)
    alone = model.predict(seqs[1][None])
    assert np.allclose(full[1], alone[0], atol=1e-6)
    # Embedding(mask_zero=True) gives the same masks from ids
    emb = Sequential([Embedding(9, 3, mask_zero=True, input_shape=(None,)), SimpleRNN(4)])
    emb.build()
    ids = np.array([[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 8]])
    assert np.allclose(emb.predict(ids)[0], emb.predict(ids[:1, :3])[0], atol=1e-6)


def test_masked_loss_ignores_padded_steps(rng):
    seqs, x, mask = ragged_batch(rng, [4, 2], T=4, D=2)
    model = Sequential([Masking(0.0, input_shape=(4, 2)), GRU(3, return_sequences=True), Dense(1)])
    model.compile("sgd", "mse")
    y = rng.standard_normal((2, 4, 1))
    base = model.evaluate(x, y, verbose=0)
    y2 = y.copy()
    y2[1, 2:] += 100.0   # targets at padded steps do not count
    assert model.evaluate(x, y2, verbose=0) == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("cell", list(MAKERS))
def test_stateful_continues_across_batches(cell, rng):
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    whole = MAKERS[cell](return_state=True)
    ref, *ref_states = whole(x)
    part = MAKERS[cell](stateful=True)
    part.build((2, 6, 3))
    part.set_weights(whole.get_weights())
    part(x[:, :3])
    second = part(x[:, 3:])
    assert np.allclose(second, ref, atol=1e-6)
    part.reset_states()
    assert np.allclose(part(x[:, :3]), whole(x[:, :3])[0], atol=1e-6)
    with pytest.raises(ValueError, match="needs stateful=True"):
        whole.reset_states()


def test_go_backwards_returns_reversed_order(rng):
    x = rng.standard_normal((2, 5, 3))
    fwd = GRU(4, return_sequences=True)
    bwd = GRU(4, return_sequences=True, go_backwards=True)
    fwd(x)
    bwd.build((None, 5, 3))
    bwd.set_weights(fwd.get_weights())
    assert np.allclose(bwd(x), fwd(x[:, ::-1]), atol=1e-6)


def test_unroll_changes_nothing(rng):
    x = rng.standard_normal((2, 5, 3))
    a, b = LSTM(4), LSTM(4, unroll=True)
    a(x)
    b.build((None, 5, 3))
    b.set_weights(a.get_weights())
    assert np.array_equal(a(x), b(x))


def test_initial_state_checked(rng):
    with pytest.raises(ValueError, match=r"initial_state needs 2 array\(s\) \(\[h0, c0\]\)"):
        LSTM(3)(np.zeros((2, 4, 1)), initial_state=[np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"shape \(batch, units\) = \(2, 3\)"):
        GRU(3)(np.zeros((2, 4, 1)), initial_state=[np.zeros((3, 3))])


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_masks_statistics(rate):
    """One mask per sequence, drawn at the dropout rate, scaled by 1 / (1 - rate)."""
    layer = GRU(64, dropout=rate, recurrent_dropout=rate, seed=3)
    din, drec = layer.dropout_masks(500, 40, np.dtype(np.float32))
    for m, width in ((din, 40), (drec, 64)):
        assert m.shape == (500, width)
        dropped = float(np.mean(m == 0))
        sigma = np.sqrt(rate * (1 - rate) / m.size)
        assert abs(dropped - rate) < 4 * sigma
        assert np.allclose(m[m > 0], 1 / (1 - rate))


def test_dropout_only_in_training_and_reproducible(rng):
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    layer = LSTM(5, dropout=0.5, recurrent_dropout=0.5)
    layer(x)
    ev1, ev2 = layer(x), layer(x, training=False)
    assert np.array_equal(ev1, ev2)
    tr1, tr2 = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(tr1, ev1) and not np.allclose(tr1, tr2)

    def run():
        set_random_seed(11)
        model = Sequential([GRU(4, dropout=0.3, recurrent_dropout=0.3, input_shape=(6, 3)), Dense(1)])
        model.compile("adam", "mse")
        return model.fit(x, np.ones(4), epochs=3, verbose=0).history["loss"], model.get_weights()
    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2 and all(np.array_equal(a, b) for a, b in zip(w1, w2))


def test_dropout_mask_is_the_same_at_every_step():
    """With an all-ones input and zero weights except an identity-like kernel, the input mask shows
    up in the projection of every step identically."""
    seq = SimpleRNN(3, activation="linear", use_bias=False, dropout=0.5, seed=0,
                    return_sequences=True)
    seq.build((None, 4, 3))
    seq.set_weights([np.eye(3, dtype=np.float32), np.zeros((3, 3), np.float32)])
    out = seq(np.ones((8, 4, 3), np.float32), training=True)
    assert all(np.array_equal(out[:, t], out[:, 0]) for t in range(4))
    assert set(np.unique(out)) <= {0.0, 2.0}


def test_regularizers_count_in_the_loss():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3, 2)), rng.standard_normal(5)
    plain = Sequential([GRU(3, input_shape=(3, 2)), Dense(1)])
    plain.compile("sgd", "mse")
    reg = Sequential([GRU(3, input_shape=(3, 2), kernel_regularizer=regularizers.L2(0.5),
                          recurrent_regularizer=regularizers.L1(0.25)), Dense(1)])
    reg.compile("sgd", "mse")
    reg.set_weights(plain.get_weights())
    W, U = reg.layers[0].params["kernel"], reg.layers[0].params["recurrent_kernel"]
    penalty = 0.5 * np.sum(W.astype(np.float64) ** 2) + 0.25 * np.sum(np.abs(U))
    assert reg.evaluate(x, y, verbose=0) == pytest.approx(plain.evaluate(x, y, verbose=0) + penalty,
                                                          rel=1e-5)


def test_constraints_hold_after_each_update():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3, 2)), 10 * rng.standard_normal(8)
    model = Sequential([LSTM(4, input_shape=(3, 2), kernel_constraint=constraints.MaxNorm(0.5),
                             recurrent_constraint="unit_norm", bias_constraint="non_neg"),
                        Dense(1, kernel_constraint=constraints.MinMaxNorm(0.2, 0.3))])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    lstm, dense = model.layers
    assert np.all(np.linalg.norm(lstm.params["kernel"], axis=0) <= 0.5 + 1e-5)
    assert np.allclose(np.linalg.norm(lstm.params["recurrent_kernel"], axis=0), 1.0, atol=1e-5)
    assert np.all(lstm.params["bias"] >= 0)
    n = np.linalg.norm(dense.params["kernel"], axis=0)
    assert np.all((n >= 0.2 - 1e-5) & (n <= 0.3 + 1e-5))


def test_unknown_penalty_names():
    with pytest.raises(ValueError, match="Unknown regularizer 'l3'"):
        GRU(3, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="Unknown constraint 'maxnorm'"):
        GRU(3, kernel_constraint="maxnorm")
    with pytest.raises(ValueError, match="dropout must be in"):
        GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        Bidirectional(GRU(3), merge_mode="max")


def test_bidirectional_in_a_model_roundtrip(rng):
    model = Sequential([Bidirectional(GRU(3, return_sequences=True), input_shape=(4, 2)),
                        Bidirectional(LSTM(2), merge_mode="sum"), Dense(1)])
    model.compile("adam", "mse")
    x, y = rng.standard_normal((6, 4, 2)), rng.standard_normal(6)
    model.fit(x, y, epochs=2, verbose=0)
    clone = Sequential.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert np.array_equal(clone.predict(x), model.predict(x))
    assert len(model.get_weights()) == 2 * 3 + 2 * 3 + 2   # forward then backward, per layer


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_follows_a_new_bias_array(reset_after, rng):
    """A GRU keeps views of its bias rows between calls; a new bias array (a model moving the
    weights into its flat buffer makes one) must be the one the next call uses."""
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    layer = GRU(4, reset_after=reset_after, bias_initializer="ones")
    before = layer(x)
    layer.params["bias"] = layer.params["bias"] * 0.5
    ref = GRU(4, reset_after=reset_after)
    ref(x)
    ref.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x), ref(x))
    assert not np.array_equal(layer(x), before)
