"""Live parity with real Keras 3 (torch backend): same weights in, same numbers out.

Every test builds the Keras object and the grukit object, puts the SAME weights into both (Keras's
own random initialisation, with the biases replaced by random values so that every bias path is
exercised), runs both and compares. Keras is a hard requirement here: if it is missing, this module
fails to import instead of skipping.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from grukit import layers as gl  # noqa: E402
from grukit import optimizers as gopt  # noqa: E402
from grukit.models import Sequential  # noqa: E402
from kerashelp import randomize_biases  # noqa: E402

B, T, D, U = 3, 5, 4, 6
FWD_TOL = 1e-5      # forward outputs, float32
STEP_TOL = 1e-6     # weights after optimizer steps, float32
KERAS_SEED = 0


@pytest.fixture(autouse=True)
def _keras_seed():
    """Keras draws its initial weights from its own global seed: fix it so every run is the same."""
    keras.utils.set_random_seed(KERAS_SEED)


def to_np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def max_abs(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def max_abs_list(wa, wb):
    assert len(wa) == len(wb)
    return max(max_abs(a, b) for a, b in zip(wa, wb))


def rand_x(rng, shape=(B, T, D)):
    return rng.standard_normal(shape).astype(np.float32)


# ---- single recurrent layers --------------------------------------------------------------------
RNN_CASES = [
    ("GRU", dict(reset_after=True)),
    ("GRU", dict(reset_after=False)),
    ("GRU", dict(reset_after=True, use_bias=False)),
    ("GRU", dict(reset_after=False, use_bias=False)),
    ("GRU", dict(reset_after=True, activation="relu", recurrent_activation="hard_sigmoid")),
    ("GRU", dict(reset_after=False, activation="relu", recurrent_activation="hard_sigmoid")),
    ("GRU", dict(activation="softsign", recurrent_activation="tanh")),
    ("GRU", dict(activation="elu", recurrent_activation="hard_sigmoid")),
    ("GRU", dict(reset_after=False, activation="softplus", recurrent_activation="sigmoid")),
    ("GRU", dict(activation="selu", recurrent_activation="sigmoid")),
    ("GRU", dict(activation="linear", recurrent_activation="sigmoid")),
    ("LSTM", dict()),
    ("LSTM", dict(use_bias=False)),
    ("LSTM", dict(unit_forget_bias=False)),
    ("LSTM", dict(activation="relu", recurrent_activation="hard_sigmoid")),
    ("LSTM", dict(activation="softsign", recurrent_activation="sigmoid")),
    ("SimpleRNN", dict()),
    ("SimpleRNN", dict(use_bias=False)),
    ("SimpleRNN", dict(activation="relu")),
    ("SimpleRNN", dict(activation="sigmoid")),
]


def _case_id(case):
    name, kw = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


def _pair_layer(name, rng, x, **kw):
    kl = getattr(keras.layers, name)(U, **kw)
    kl(x)                                         # build
    ws = randomize_biases(kl, rng)
    gk = getattr(gl, name)(U, **kw)
    gk.build((None,) + x.shape[1:])
    gk.set_weights(ws)
    return kl, gk, ws


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("case", RNN_CASES, ids=_case_id)
def test_recurrent_layer_matches_keras(case, return_sequences, rng):
    name, kw = case
    x = rand_x(rng)
    kl, gk, ws = _pair_layer(name, rng, x, return_sequences=return_sequences, **kw)
    assert max_abs_list(gk.get_weights(), ws) == 0.0
    yk, yg = to_np(kl(x)), gk(x)
    assert yg.dtype == np.float32
    err = max_abs(yk, yg)
    assert err < FWD_TOL, f"{_case_id(case)} rs={return_sequences}: max abs diff {err:.3g}"
    # the output is not trivially constant: the comparison means something
    assert np.std(yk) > 1e-3


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("name", ["GRU", "LSTM", "SimpleRNN"])
def test_return_state_and_go_backwards_match_keras(name, go_backwards, rng):
    x = rand_x(rng)
    kl, gk, _ = _pair_layer(name, rng, x, return_sequences=True, return_state=True,
                            go_backwards=go_backwards)
    outk, outg = kl(x), gk(x)
    assert isinstance(outg, list) and len(outg) == len(outk) == (3 if name == "LSTM" else 2)
    for a, b in zip(outk, outg):
        err = max_abs(to_np(a), b)
        assert err < FWD_TOL, f"{name} go_backwards={go_backwards}: {err:.3g}"


def test_initial_state_matches_keras(rng):
    x = rand_x(rng)
    h0 = rng.standard_normal((B, U)).astype(np.float32)
    c0 = rng.standard_normal((B, U)).astype(np.float32)
    for name, states in (("GRU", [h0]), ("LSTM", [h0, c0]), ("SimpleRNN", [h0])):
        kl, gk, _ = _pair_layer(name, rng, x, return_sequences=True)
        yk = to_np(kl(x, initial_state=states))
        yg = gk(x, initial_state=states)
        err = max_abs(yk, yg)
        assert err < FWD_TOL, f"{name} with initial_state: {err:.3g}"


# ---- Dense --------------------------------------------------------------------------------------
DENSE_ACTS = ["linear", "tanh", "softmax", "relu", "sigmoid", "hard_sigmoid", "elu", "selu",
              "softplus", "softsign"]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", DENSE_ACTS)
def test_dense_matches_keras(activation, use_bias, rng):
    for shape in ((7, D), (B, T, D)):                   # 2-D and on the last axis of 3-D
        x = 2.0 * rand_x(rng, shape)
        kl = keras.layers.Dense(5, activation=activation, use_bias=use_bias)
        kl(x)
        ws = randomize_biases(kl, rng)
        gd = gl.Dense(5, activation=activation, use_bias=use_bias)
        gd.build((None,) + shape[1:])
        gd.set_weights(ws)
        err = max_abs(to_np(kl(x)), gd(x))
        assert err < FWD_TOL, f"Dense({activation}) on {shape}: {err:.3g}"


# ---- models -------------------------------------------------------------------------------------
STACK = [("GRU", dict(units=8, return_sequences=True)),
         ("LSTM", dict(units=6, return_sequences=True)),
         ("SimpleRNN", dict(units=5)),
         ("Dense", dict(units=1, activation="tanh"))]
GRU_DENSE = [("GRU", dict(units=6)), ("Dense", dict(units=1))]
EMB_STACK = [("Embedding", dict(input_dim=20, output_dim=4)),
             ("GRU", dict(units=6, return_sequences=True)),
             ("GRU", dict(units=5, reset_after=False)),
             ("Dense", dict(units=1))]


def make_pair(spec, input_shape, seed=0):
    """The same Sequential in Keras and in grukit, with identical (Keras-initialised, random-bias)
    weights."""
    keras.utils.set_random_seed(seed)
    km = keras.Sequential([keras.Input(shape=input_shape)]
                          + [getattr(keras.layers, n)(**kw) for n, kw in spec])
    gm = Sequential([gl.Input(shape=input_shape)] + [getattr(gl, n)(**kw) for n, kw in spec])
    gm.build()
    ws = randomize_biases(km, np.random.default_rng(seed + 1))
    gm.set_weights(ws)
    assert max_abs_list(gm.get_weights(), km.get_weights()) == 0.0
    return km, gm


def test_stack_keras_weights_into_grukit(rng):
    km, gm = make_pair(STACK, (T, D))
    x = rand_x(rng, (7, T, D))
    gm.set_weights(km.get_weights())
    pk, pg = km.predict(x, verbose=0), gm.predict(x, verbose=0)
    assert pk.shape == pg.shape == (7, 1)
    err = max_abs(pk, pg)
    assert err < FWD_TOL, f"stack predict: {err:.3g}"
    assert np.std(pk) > 1e-3


def test_stack_grukit_weights_into_keras(rng):
    gm = Sequential([gl.Input(shape=(T, D))] + [getattr(gl, n)(**kw) for n, kw in STACK])
    gm.build()
    names = [k for layer in gm.layers for k in layer.param_names if k in layer.params]
    ws = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) if k == "bias" else w
          for k, w in zip(names, gm.get_weights())]   # random biases (grukit inits them to 0 / 1)
    gm.set_weights(ws)
    km = keras.Sequential([keras.Input(shape=(T, D))]
                          + [getattr(keras.layers, n)(**kw) for n, kw in STACK])
    km.set_weights(gm.get_weights())
    assert max_abs_list(km.get_weights(), ws) == 0.0
    x = rand_x(rng, (7, T, D))
    err = max_abs(km.predict(x, verbose=0), gm.predict(x, verbose=0))
    assert err < FWD_TOL, f"reverse stack predict: {err:.3g}"


def test_embedding_gru_stack_integer_inputs(rng):
    km, gm = make_pair(EMB_STACK, (T,))
    x = rng.integers(0, 20, (7, T))
    pk, pg = km.predict(x, verbose=0), gm.predict(x, verbose=0)
    err = max_abs(pk, pg)
    assert err < FWD_TOL, f"embedding stack predict: {err:.3g}"
    assert np.std(pk) > 1e-4


# ---- optimizer steps ----------------------------------------------------------------------------
OPT_CASES = [
    ("Adam", dict()),
    ("Adam", dict(clipnorm=0.1)),
    ("Adam", dict(clipvalue=0.01)),
    ("Adam", dict(global_clipnorm=0.1)),
    ("Adam", dict(amsgrad=True, learning_rate=0.01)),
    ("SGD", dict()),
    ("SGD", dict(momentum=0.9)),
    ("SGD", dict(momentum=0.9, nesterov=True)),
    ("SGD", dict(learning_rate=0.1, clipnorm=0.1)),
    ("SGD", dict(learning_rate=0.1, clipvalue=0.01)),
    ("RMSprop", dict()),
    ("RMSprop", dict(momentum=0.9)),
    ("RMSprop", dict(centered=True)),
]


def _data(rng, n=8, shape=(T, D)):
    return rand_x(rng, (n,) + shape), rng.standard_normal((n, 1)).astype(np.float32)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("opt", OPT_CASES, ids=_case_id)
def test_optimizer_steps_match_keras(opt, steps, rng):
    name, kw = opt
    km, gm = make_pair(GRU_DENSE, (T, D))
    km.compile(optimizer=getattr(keras.optimizers, name)(**kw), loss="mse")
    gm.compile(optimizer=getattr(gopt, name)(**kw), loss="mse")
    x, y = _data(rng)
    w0 = gm.get_weights()
    for s in range(steps):
        lk, lg = km.train_on_batch(x, y), gm.train_on_batch(x, y)
        assert abs(float(lk) - float(lg)) < 1e-6, f"step {s} loss {lk} vs {lg}"
    err = max_abs_list(km.get_weights(), gm.get_weights())
    assert err < STEP_TOL, f"{_case_id(opt)} after {steps} step(s): max abs diff {err:.3g}"
    assert max_abs_list(w0, gm.get_weights()) > 1e-5   # the step did move the weights


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_optimizer_steps_on_embedding_stack(name, rng):
    km, gm = make_pair(EMB_STACK, (T,))
    km.compile(optimizer=getattr(keras.optimizers, name)(), loss="mse")
    gm.compile(optimizer=getattr(gopt, name)(), loss="mse")
    x = rng.integers(0, 20, (8, T))
    y = rng.standard_normal((8, 1)).astype(np.float32)
    for _ in range(2):
        lk, lg = km.train_on_batch(x, y), gm.train_on_batch(x, y)
        assert abs(float(lk) - float(lg)) < 1e-6
    err = max_abs_list(km.get_weights(), gm.get_weights())
    assert err < STEP_TOL, f"{name} on embedding stack: {err:.3g}"


# ---- losses -------------------------------------------------------------------------------------
def _loss_problem(loss, rng, n=8):
    """(model spec, y) for ``loss``: the head the loss expects and targets of the right kind."""
    if loss in ("mse", "mae", "huber"):
        head, y = dict(units=2), rng.standard_normal((n, 2)).astype(np.float32) * 2.0
    elif loss == "binary_crossentropy":
        head = dict(units=3, activation="sigmoid")
        y = rng.integers(0, 2, (n, 3)).astype(np.float32)
    elif loss == "categorical_crossentropy":
        head = dict(units=4, activation="softmax")
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    elif loss == "sparse_categorical_crossentropy":
        head, y = dict(units=4, activation="softmax"), rng.integers(0, 4, n)
    else:
        raise AssertionError(loss)
    return [("GRU", dict(units=6)), ("Dense", head)], y


LOSSES = ["mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy"]


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_values_match_keras(loss, rng):
    spec, y = _loss_problem(loss, rng)
    km, gm = make_pair(spec, (T, D))
    x = rand_x(rng, (len(y), T, D))
    km.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=loss)
    gm.compile(optimizer=gopt.SGD(learning_rate=0.1), loss=loss)
    ek, eg = km.evaluate(x, y, verbose=0), gm.evaluate(x, y, verbose=0)
    assert abs(ek - eg) < 1e-6, f"{loss} evaluate: keras {ek} grukit {eg}"
    assert eg > 1e-3
    # in batches of 3 (the last one short): the sample-weighted mean of the batch losses
    ek3, eg3 = (m.evaluate(x, y, batch_size=3, verbose=0) for m in (km, gm))
    assert abs(ek3 - eg3) < 1e-6, f"{loss} evaluate(batch_size=3): keras {ek3} grukit {eg3}"
    for _ in range(2):
        tk, tg = km.train_on_batch(x, y), gm.train_on_batch(x, y)
        assert abs(float(tk) - float(tg)) < 1e-6, f"{loss} train_on_batch: {tk} vs {tg}"
    # the loss gradient drove the same update
    err = max_abs_list(km.get_weights(), gm.get_weights())
    assert err < STEP_TOL, f"{loss} weights after 2 SGD steps: {err:.3g}"


def _identity_dense(activation, n):
    """Dense(n), kernel = I and bias = 0, in both libraries: the pre-activations are the input."""
    km = keras.Sequential([keras.Input(shape=(n,)), keras.layers.Dense(n, activation=activation)])
    gm = Sequential([gl.Input(shape=(n,)), gl.Dense(n, activation=activation)])
    ws = [np.eye(n, dtype=np.float32), np.zeros(n, np.float32)]
    km.set_weights(ws)
    gm.set_weights(ws)
    return km, gm


def test_sigmoid_tails_match_keras():
    """Keras (torch) computes the sigmoid to full relative precision in float32 even far in the
    negative tail; small probabilities feed log() in binary_crossentropy, so they must match
    relatively, not just to 1e-5 absolutely."""
    z = np.linspace(-16.0, 16.0, 33, dtype=np.float32)
    km, gm = _identity_dense("sigmoid", 33)
    pk, pg = km.predict(z[None], verbose=0)[0], gm.predict(z[None], verbose=0)[0]
    rel = np.abs(pk - pg) / pk
    worst = int(np.argmax(rel))
    assert rel.max() < 1e-5, (f"sigmoid({z[worst]}): keras {pk[worst]:.8e} grukit {pg[worst]:.8e} "
                              f"(relative error {rel.max():.3g})")


def test_binary_crossentropy_confident_predictions_match_keras():
    """binary_crossentropy on sigmoid outputs with large logits, right and wrong: the loss of a
    confidently wrong prediction is -log(sigmoid(z)) and must agree with Keras."""
    z = np.array([[-14.0, -11.0, -8.0, 9.0], [12.0, -6.0, 15.0, -13.0]], np.float32)
    y = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], np.float32)
    km, gm = _identity_dense("sigmoid", 4)
    km.compile(optimizer="sgd", loss="binary_crossentropy")
    gm.compile(optimizer="sgd", loss="binary_crossentropy")
    ek, eg = km.evaluate(z, y, verbose=0), gm.evaluate(z, y, verbose=0)
    assert abs(ek - eg) / ek < 1e-6, f"keras {ek!r} grukit {eg!r}"


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_crossentropy_confident_softmax_matches_keras(loss):
    """Softmax with large logits (some probabilities below Keras's 1e-7 clip): value and update."""
    z = np.array([[20.0, -5.0, 0.0, 3.0], [-12.0, 9.0, 9.5, -3.0], [0.0, 0.1, -0.1, 30.0]],
                 np.float32)
    labels = np.array([1, 0, 3])
    y = labels if loss.startswith("sparse") else np.eye(4, dtype=np.float32)[labels]
    km, gm = _identity_dense("softmax", 4)
    km.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    gm.compile(optimizer=gopt.SGD(1.0), loss=loss)
    ek, eg = km.evaluate(z, y, verbose=0), gm.evaluate(z, y, verbose=0)
    assert abs(ek - eg) / ek < 1e-6, f"{loss}: keras {ek!r} grukit {eg!r}"
    km.train_on_batch(z, y)
    gm.train_on_batch(z, y)
    assert max_abs_list(km.get_weights(), gm.get_weights()) < STEP_TOL


@pytest.mark.parametrize("y_shape", ["flat", "column"])
def test_loss_target_shapes_match_keras(y_shape, rng):
    """y of shape (n,) or (n, 1) against an output (n, 1), and sparse labels (n, 1)."""
    n = 8
    x = rand_x(rng, (n, T, D))
    yr = rng.standard_normal(n).astype(np.float32)
    yc = rng.integers(0, 4, n)
    if y_shape == "column":
        yr, yc = yr[:, None], yc[:, None]
    for spec, loss, y in (([("GRU", dict(units=6)), ("Dense", dict(units=1))], "mse", yr),
                          ([("GRU", dict(units=6)), ("Dense", dict(units=4, activation="softmax"))],
                           "sparse_categorical_crossentropy", yc)):
        km, gm = make_pair(spec, (T, D))
        km.compile(optimizer="sgd", loss=loss)
        gm.compile(optimizer="sgd", loss=loss)
        ek, eg = km.evaluate(x, y, verbose=0), gm.evaluate(x, y, verbose=0)
        assert abs(ek - eg) < 1e-6, f"{loss} y{y.shape}: {ek} vs {eg}"


# ---- fit ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["adam", "rmsprop"])
def test_fit_history_and_weights_match_keras(opt, rng):
    km, gm = make_pair(GRU_DENSE, (T, D))
    km.compile(optimizer=opt, loss="mse")
    gm.compile(optimizer=opt, loss="mse")
    x, y = _data(rng, n=6)
    xv, yv = _data(rng, n=4)
    hk = km.fit(x, y, shuffle=False, epochs=3, batch_size=2, verbose=0,
                validation_data=(xv, yv)).history
    hg = gm.fit(x, y, shuffle=False, epochs=3, batch_size=2, verbose=0,
                validation_data=(xv, yv)).history
    for key in ("loss", "val_loss"):
        assert len(hk[key]) == len(hg[key]) == 3
        rel = np.abs(np.subtract(hk[key], hg[key])) / np.abs(hk[key])
        assert rel.max() < 1e-5, f"{key}: keras {hk[key]} grukit {hg[key]}"
    err = max_abs_list(km.get_weights(), gm.get_weights())
    assert err < 1e-5, f"fit final weights: {err:.3g}"
    assert int(to_np(km.optimizer.iterations)) == gm.optimizer.iterations == 9


def test_fit_validation_split_matches_keras(rng):
    """validation_split keeps the first floor(n * (1 - split)) samples for training, as Keras."""
    km, gm = make_pair(GRU_DENSE, (T, D))
    km.compile(optimizer="sgd", loss="mae")
    gm.compile(optimizer="sgd", loss="mae")
    x, y = _data(rng, n=7)
    hk = km.fit(x, y, shuffle=False, epochs=2, batch_size=2, validation_split=0.3,
                verbose=0).history
    hg = gm.fit(x, y, shuffle=False, epochs=2, batch_size=2, validation_split=0.3,
                verbose=0).history
    for key in ("loss", "val_loss"):
        rel = np.abs(np.subtract(hk[key], hg[key])) / np.abs(hk[key])
        assert rel.max() < 1e-5, f"{key}: keras {hk[key]} grukit {hg[key]}"
    assert max_abs_list(km.get_weights(), gm.get_weights()) < 1e-5


def test_fit_uneven_last_batch_matches_keras(rng):
    """7 samples in batches of 3: the epoch loss is the sample-weighted mean, as in Keras."""
    km, gm = make_pair(GRU_DENSE, (T, D))
    km.compile(optimizer="adam", loss="mse")
    gm.compile(optimizer="adam", loss="mse")
    x, y = _data(rng, n=7)
    hk = km.fit(x, y, shuffle=False, epochs=2, batch_size=3, verbose=0).history
    hg = gm.fit(x, y, shuffle=False, epochs=2, batch_size=3, verbose=0).history
    rel = np.abs(np.subtract(hk["loss"], hg["loss"])) / np.abs(hk["loss"])
    assert rel.max() < 1e-5, f"keras {hk['loss']} grukit {hg['loss']}"
    assert max_abs_list(km.get_weights(), gm.get_weights()) < 1e-5
