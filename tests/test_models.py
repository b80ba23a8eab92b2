"""The Sequential API: bad input, Keras semantics of fit/evaluate/predict, callbacks, seeds."""
import io
import contextlib

import numpy as np
import pytest

import grukit
from grukit import callbacks, config, optimizers
from grukit.layers import GRU, LSTM, Dense, Dropout, Embedding, Input, SimpleRNN, Activation
from grukit.models import Sequential
from grukit.utils import set_random_seed


def seed_model(**compile_kw):
    model = Sequential([GRU(8, input_shape=[4, 1]), Dense(1, activation="tanh")])
    model.compile(optimizer=compile_kw.pop("optimizer", "adam"), loss=compile_kw.pop("loss", "mse"),
                  **compile_kw)
    return model


def data(n=12, rng=None):
    rng = rng or np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 4, 1)), rng.uniform(0, 1, n)


# ---- bad input: each a ValueError whose message names the problem ------------------------------
def test_wrong_input_rank():
    model = seed_model()
    x, y = data()
    with pytest.raises(ValueError, match=r"rank 3.*\(batch, time, features\)"):
        model.fit(x[..., 0], y, verbose=0)
    with pytest.raises(ValueError, match="expects input of rank 3"):
        GRU(4)(np.zeros((2, 3)))


def test_x_and_y_of_different_lengths():
    x, y = data()
    with pytest.raises(ValueError, match=r"different lengths \(12 and 11 samples\)"):
        seed_model().fit(x, y[:-1], verbose=0)


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(where, bad):
    x, y = data()
    (x if where == "x" else y).flat[3] = bad
    with pytest.raises(ValueError, match=rf"fit: {where} holds 1 NaN or infinite value"):
        seed_model().fit(x, y, verbose=0)


def test_unknown_names():
    with pytest.raises(ValueError, match="Unknown optimizer 'adamm'.*adam"):
        seed_model(optimizer="adamm")
    with pytest.raises(ValueError, match="Unknown loss 'msee'.*mse"):
        seed_model(loss="msee")
    with pytest.raises(ValueError, match="Unknown activation 'tanhh'.*tanh"):
        GRU(4, activation="tanhh")
    with pytest.raises(ValueError, match="Unknown metric 'acuracy'"):
        seed_model(metrics=["acuracy"])
    with pytest.raises(ValueError, match="unknown option.*retrun_sequences"):
        GRU(4, retrun_sequences=True)


@pytest.mark.parametrize("units", [0, -3, 2.5, True])
def test_units_must_be_positive(units):
    with pytest.raises(ValueError, match="units must be a positive integer"):
        GRU(units)
    with pytest.raises(ValueError, match="units must be a positive integer"):
        Dense(units)


def test_predict_before_build_without_input_shape():
    model = Sequential([GRU(4), Dense(1)])
    with pytest.raises(ValueError, match="has not been built and its input shape is unknown"):
        model.predict(np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="input shape is unknown"):
        model.count_params()


def test_softmax_is_refused_as_a_gate():
    with pytest.raises(ValueError, match="not elementwise"):
        GRU(3, recurrent_activation="softmax")


# ---- Keras semantics ------------------------------------------------------------------------
def test_layers_callable_on_arrays():
    x = np.zeros((2, 5, 3))
    assert GRU(8)(x).shape == (2, 8)
    assert LSTM(4, return_sequences=True)(x).shape == (2, 5, 4)
    assert SimpleRNN(2)(x).dtype == np.float32
    assert Dense(3)(np.ones((2, 4))).shape == (2, 3)
    assert Embedding(10, 3)(np.array([[1, 2]])).shape == (1, 2, 3)
    y, h = GRU(3, return_state=True)(x)
    assert np.array_equal(y, h)


def test_sequential_add_and_input():
    a = Sequential()
    a.add(Input(shape=(4, 1)))
    a.add(GRU(8))
    a.add(Dense(1))
    b = Sequential([GRU(8, input_shape=(4, 1)), Dense(1)])
    assert a.count_params() == b.count_params()
    assert len(a.layers) == 2 and a.output_shape == (None, 1)


def test_history_and_validation_split_takes_the_last_samples():
    x, y = data(10)
    model = seed_model(metrics=["mae"])
    hist = model.fit(x, y, epochs=3, validation_split=0.2, verbose=0)
    assert sorted(hist.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert all(len(v) == 3 for v in hist.history.values())
    # the validation loss is the loss on the last 2 samples, untouched by shuffling
    assert hist.history["val_loss"][-1] == pytest.approx(
        model.evaluate(x[8:], y[8:], verbose=0)[0], rel=1e-6)


def test_fit_with_validation_data_and_initial_epoch():
    x, y = data()
    hist = seed_model().fit(x, y, epochs=5, initial_epoch=3, validation_data=(x[:4], y[:4]),
                            verbose=0)
    assert hist.epoch == [3, 4] and len(hist.history["val_loss"]) == 2


def test_epoch_loss_is_the_sample_weighted_mean_of_batch_losses():
    """Keras's loss tracker: each batch's mean loss weighted by its size."""
    x, y = data(10)
    model = seed_model()
    w0 = model.get_weights()
    hist = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    ref = seed_model()
    ref.set_weights(w0)
    losses = [ref.train_on_batch(x[i:i + 4], y[i:i + 4]) for i in (0, 4, 8)]
    assert hist.history["loss"][0] == pytest.approx((4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10, rel=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), ref.get_weights()))


def test_evaluate_and_predict_shapes_and_types():
    x, y = data()
    model = seed_model(metrics=["mae", "rmse"])
    model.fit(x, y, epochs=1, verbose=0)
    loss, mae, rmse = model.evaluate(x, y, verbose=0)
    pred = model.predict(x, batch_size=5)
    assert pred.shape == (12, 1) and pred.dtype == np.float32
    assert mae == pytest.approx(np.mean(np.abs(pred[:, 0] - y)), rel=1e-5)
    assert rmse == pytest.approx(np.sqrt(np.mean((pred[:, 0] - y) ** 2)), rel=1e-5)
    assert loss == pytest.approx(rmse ** 2, rel=1e-5)
    assert np.allclose(model.predict_on_batch(x), pred, rtol=0, atol=1e-6)


def test_float64_everywhere(float64):
    x, y = data()
    model = seed_model()
    model.fit(x, y, epochs=2, verbose=0)
    assert all(w.dtype == np.float64 for w in model.get_weights())
    assert model.predict(x).dtype == np.float64
    # the loss evaluate returns was computed in float64: it equals a float64 recomputation
    pred = model.predict(x).astype(np.float64)[:, 0]
    assert model.evaluate(x, y, verbose=0) == np.mean((pred - y) ** 2)
    assert config.floatx() == "float64"
    with pytest.raises(ValueError, match="unknown float type"):
        config.set_floatx("float16")


def test_same_seed_same_run():
    def run():
        set_random_seed(7)
        x, y = data()
        model = Sequential([GRU(8, input_shape=[4, 1]), Dropout(0.2), Dense(1)])
        model.compile("adam", "mse")
        h = model.fit(x, y, epochs=3, batch_size=4, verbose=0)
        return h.history["loss"], model.get_weights()
    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2 and all(np.array_equal(a, b) for a, b in zip(w1, w2))
    set_random_seed(8)
    assert not np.array_equal(GRU(4)(np.ones((1, 2, 1))), GRU(4)(np.ones((1, 2, 1))))


def test_initializers_follow_keras_defaults():
    layer = GRU(16)
    layer.build((None, 5, 8))
    U = layer.params["recurrent_kernel"]
    # orthogonal recurrent kernel: U (16, 48) has orthonormal rows
    assert np.allclose(U @ U.T, np.eye(16), atol=1e-5)
    # glorot_uniform kernel: |W| <= sqrt(6 / (fan_in + fan_out))
    assert np.abs(layer.params["kernel"]).max() <= np.sqrt(6 / (8 + 48))
    assert not layer.params["bias"].any() and layer.params["bias"].shape == (2, 48)
    lstm = LSTM(4)
    lstm.build((None, 3, 2))
    assert np.array_equal(lstm.params["bias"], np.r_[np.zeros(4), np.ones(4), np.zeros(8)])


def test_train_on_batch_returns_loss_and_metrics():
    x, y = data()
    model = seed_model(metrics=["mae"])
    out = model.train_on_batch(x, y)
    assert isinstance(out, list) and len(out) == 2
    assert set(model.train_on_batch(x, y, return_dict=True)) == {"loss", "mae"}


def test_accuracy_resolves_like_keras():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 2))
    clf = Sequential([GRU(4, input_shape=(3, 2)), Dense(3, activation="softmax")])
    clf.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    y = rng.integers(0, 3, 8)
    _, acc = clf.evaluate(x, y, verbose=0)
    assert acc == pytest.approx(np.mean(np.argmax(clf.predict(x), -1) == y))
    clf.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    _, acc2 = clf.evaluate(x, np.eye(3)[y], verbose=0)
    assert acc2 == pytest.approx(acc)
    binary = Sequential([GRU(4, input_shape=(3, 2)), Dense(1, activation="sigmoid")])
    binary.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    yb = rng.integers(0, 2, 8).astype(float)
    _, accb = binary.evaluate(x, yb, verbose=0)
    assert accb == pytest.approx(np.mean((binary.predict(x)[:, 0] > 0.5) == yb))


def test_summary_and_count_params():
    model = Sequential([GRU(32, input_shape=[4, 1]), Dense(1, activation="tanh")])
    out = io.StringIO()
    model.summary(print_fn=lambda s: out.write(s))
    text = out.getvalue()
    assert "gru" in text and "(None, 32)" in text and "(None, 1)" in text
    assert f"Total params: {model.count_params():,}" in text


def test_verbose_prints_a_line_per_epoch():
    x, y = data()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        seed_model().fit(x, y, epochs=2)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert "loss:" in lines[1]


# ---- callbacks -------------------------------------------------------------------------------
def test_early_stopping_restores_best_weights():
    x, y = data()
    model = seed_model(optimizer=optimizers.SGD(learning_rate=5.0))   # diverges: val_loss rises
    seen = []

    class Keep(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], model.get_weights()))

    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    hist = model.fit(x, y, epochs=50, validation_data=(x, y), callbacks=[Keep(), stop], verbose=0)
    best = int(np.argmin([v for v, _ in seen]))
    assert len(hist.epoch) == best + 3   # stopped `patience` epochs after the best
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), seen[best][1]))


def test_reduce_lr_on_plateau():
    x, y = data()
    model = seed_model(optimizer=optimizers.Adam(learning_rate=0.01))
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
    hist = model.fit(x, y, epochs=4, callbacks=[cb], verbose=0)
    # nothing after the first epoch improves by 1e9: the rate halves at the end of each later
    # epoch; the logs carry the rate the epoch ran with, as Keras's do
    assert hist.history["learning_rate"] == [0.01, 0.01, 0.005, 0.0025]
    assert model.optimizer.learning_rate == 0.00125


def test_terminate_on_nan():
    x, y = data()
    model = seed_model(optimizer=optimizers.SGD(learning_rate=1e38), loss="mse")
    model.layers[-1].activation = grukit.activations.get("linear")
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        hist = model.fit(x, y * 1e20, epochs=20, batch_size=2, callbacks=[callbacks.TerminateOnNaN()],
                         verbose=0)
    assert len(hist.epoch) < 20


def test_optimizer_options_are_checked():
    with pytest.raises(ValueError, match="only one of clipnorm"):
        optimizers.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="unknown option.*lr"):
        optimizers.Adam(lr=0.1)


def test_adam_hyperparameters_changed_between_steps_take_effect():
    """Adam keeps its constants for the float type between steps; a changed beta or epsilon
    must still apply from the next step on, as in a fresh optimizer that resumes the state."""
    x, y = data()

    def first_step():
        set_random_seed(3)
        model = seed_model()
        model.train_on_batch(x, y)
        return model
    changed = first_step()
    opt = changed.optimizer
    opt.beta_1, opt.beta_2, opt.epsilon = 0.5, 0.9, 1e-3
    changed.train_on_batch(x, y)
    ref = first_step()
    state = ref.optimizer.get_state()
    ref.optimizer = optimizers.Adam(beta_1=0.5, beta_2=0.9, epsilon=1e-3)
    ref.optimizer.set_state(state)
    ref.train_on_batch(x, y)
    unchanged = first_step()
    unchanged.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(changed.get_weights(), ref.get_weights()))
    assert not np.array_equal(changed.get_weights()[0], unchanged.get_weights()[0])


def test_activation_layer_and_config_roundtrip():
    model = Sequential([LSTM(4, input_shape=(3, 2), return_sequences=True), GRU(3, reset_after=False),
                        Dense(2), Activation("softmax")])
    model.build()
    clone = Sequential.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).standard_normal((2, 3, 2))
    assert np.array_equal(clone.predict(x), model.predict(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_start_on_cache_lines_and_the_gaps_stay_zero(dtype):
    """A built model keeps every weight in one flat buffer, each starting on a 64-byte boundary
    (the compiled loops' vector loads); the gaps between them take no gradient, so training
    leaves them zero, and the weights are what get_weights/set_weights see."""
    config.set_floatx(dtype)
    try:
        model = Sequential([Input((6, 3)), GRU(5, return_sequences=True), LSTM(3), Dense(1)])
        model.compile(optimizers.Adam(clipnorm=1.0), "mse")
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((8, 6, 3)), rng.standard_normal((8, 1))
        model.fit(x, y, epochs=2, verbose=0)
        for layer in model.layers:
            for name, w in layer.params.items():
                assert w.ctypes.data % 64 == 0, (layer.name, name)
                assert np.shares_memory(w, model._flat), (layer.name, name)
        gap = np.ones(model._flat.size, bool)
        for seg in model._segments:
            gap[seg] = False
        assert gap.any()                                  # 5 and 3 units leave gaps to fill
        assert not model._flat[gap].any() and not model._gflat[gap].any()
        weights = model.get_weights()
        assert sum(w.size for w in weights) == (~gap).sum()
        model.set_weights([w + 1 for w in weights])
        np.testing.assert_array_equal(model.get_weights()[0], weights[0] + 1)
        assert not model._flat[gap].any()
    finally:
        config.set_floatx("float32")
