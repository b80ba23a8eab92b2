"""Live parity with real Keras 3 (torch backend) for the recurrent OPTIONS.

return_state, initial_state, go_backwards, stateful, unroll, dropout at inference, masks (Masking,
Embedding(mask_zero=True), masks travelling through stacks), Bidirectional (merge modes, states,
initial_state, masks, an explicit backward layer, weight order), regularizers, constraints, the
activation functions, and a deep mixed stack trained with fit().

Every test builds the Keras object and the grukit object, copies Keras's weights (its own random
initialisation, with every bias replaced by random values so that the bias paths count) into
grukit, feeds both the same float32 inputs and compares. Keras is a hard requirement: if it is
missing, this module fails to import instead of skipping.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from grukit import constraints as gcon  # noqa: E402
from grukit import layers as gl  # noqa: E402
from grukit import optimizers as gopt  # noqa: E402
from grukit import regularizers as greg  # noqa: E402
from grukit.models import Sequential  # noqa: E402
from kerashelp import randomize_biases  # noqa: E402

B, T, D, U = 4, 6, 3, 5
FWD_TOL = 1e-5      # outputs and states, float32
STEP_TOL = 1e-6     # weights after one optimizer step
FIT_TOL = 1e-5      # weights and relative history loss after fit()

KINDS = [("GRU", {"reset_after": True}), ("GRU", {"reset_after": False}), ("LSTM", {}),
         ("SimpleRNN", {})]
KIND_IDS = ["GRU_reset_after", "GRU_reset_before", "LSTM", "SimpleRNN"]
kinds = pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
return_sequences_both = pytest.mark.parametrize("rs", [True, False], ids=["seq", "last"])

ERRORS = {}   # the worst error seen per test family; printed at the end of the module with -s


@pytest.fixture(autouse=True)
def _keras_seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _print_worst_errors():
    yield
    for family, err in sorted(ERRORS.items()):
        print(f"\n  worst {family:32s} {err:.3g}", end="")


# ---- helpers ------------------------------------------------------------------------------------
def to_np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def flat(out):
    """A layer's output as a flat list of arrays (a list/tuple of outputs, or one array)."""
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in flat(o)]
    return [np.asarray(out) if isinstance(out, np.ndarray) else to_np(out)]


def max_abs(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare(family, keras_out, grukit_out, tol=FWD_TOL, what=""):
    """Flatten both outputs, check the structure and every array; record the worst error."""
    ka, ga = flat(keras_out), flat(grukit_out)
    assert len(ka) == len(ga), f"{what}: keras returned {len(ka)} arrays, grukit {len(ga)}"
    errs = [max_abs(k, g) for k, g in zip(ka, ga)]
    worst = max(errs)
    ERRORS[family] = max(ERRORS.get(family, 0.0), worst)
    assert worst < tol, f"{what}: max abs diff per output {['%.3g' % e for e in errs]}"
    return worst


def compare_weights(family, wk, wg, tol):
    assert len(wk) == len(wg)
    return compare(family, list(wk), list(wg), tol, "weights")


def rand_x(rng, shape=(B, T, D), scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def assert_same_weights(wk, wg):
    """Two get_weights() lists hold exactly the same arrays, in the same order."""
    assert len(wk) == len(wg)
    for i, (a, b) in enumerate(zip(wk, wg)):
        assert np.shape(a) == np.shape(b) and np.array_equal(a, b), f"weight {i} differs"


def make_layers(name, kw, rng, batch=None):
    """The same recurrent layer in Keras and grukit with identical weights (Keras's own, biases
    randomised). ``batch`` is the static batch size a stateful Keras layer needs."""
    kl = getattr(keras.layers, name)(U, **kw)
    kl.build((batch, T, D))
    ws = randomize_biases(kl, rng)
    gk = getattr(gl, name)(U, **kw)
    gk.build((None, T, D))
    gk.set_weights(ws)
    assert_same_weights(ws, gk.get_weights())
    return kl, gk


def make_models(keras_layers, grukit_layers, input_shape, rng, batch_shape=None):
    """Sequential models in both libraries with Keras's (bias-randomised) weights in both."""
    kin = keras.Input(batch_shape=batch_shape) if batch_shape else keras.Input(shape=input_shape)
    km = keras.Sequential([kin] + keras_layers)
    gm = Sequential([gl.Input(shape=input_shape)] + grukit_layers)
    gm.build()
    ws = randomize_biases(km, rng)
    gm.set_weights(ws)
    assert_same_weights(km.get_weights(), gm.get_weights())
    return km, gm


def initial_states(name, rng, n_layers=1):
    n = (2 if name == "LSTM" else 1) * n_layers
    return [rand_x(rng, (B, U)) for _ in range(n)]


def padded_x(rng):
    """A batch of 4 sequences with all-zero rows: right-padded, left-padded, zeros in the middle,
    and none; and its mask."""
    x = rand_x(rng)
    mask = np.ones((B, T), bool)
    mask[0, T - 2:] = False      # right padding
    mask[1, :2] = False          # left padding
    mask[2, 2:4] = False         # holes in the middle
    x[~mask] = 0.0
    return x, mask


def padded_ids(rng, vocab=12):
    ids = rng.integers(1, vocab, (B, T))
    ids[0, T - 2:] = 0
    ids[1, :2] = 0
    ids[2, 2:4] = 0
    return ids


# ---- return_state, initial_state, go_backwards --------------------------------------------------
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@return_sequences_both
@kinds
def test_return_state(kind, rs, go_backwards, rng):
    name, kw = kind
    kl, gk = make_layers(name, dict(kw, return_sequences=rs, return_state=True,
                                    go_backwards=go_backwards), rng)
    x = rand_x(rng)
    outk, outg = kl(x), gk(x)
    assert isinstance(outg, list) and len(outg) == (3 if name == "LSTM" else 2)
    compare("return_state", outk, outg, what=f"{name} rs={rs} gb={go_backwards}")
    # the output h and the returned state h agree at the last step
    last = outg[0][:, -1] if rs else outg[0]
    assert max_abs(last, outg[1]) == 0.0


@pytest.mark.parametrize("return_state", [False, True], ids=["out", "state"])
@return_sequences_both
@kinds
def test_initial_state(kind, rs, return_state, rng):
    name, kw = kind
    kl, gk = make_layers(name, dict(kw, return_sequences=rs, return_state=return_state), rng)
    x = rand_x(rng)
    s0 = initial_states(name, rng)
    outk, outg = kl(x, initial_state=list(s0)), gk(x, initial_state=list(s0))
    compare("initial_state", outk, outg, what=f"{name} rs={rs} rstate={return_state}")
    # the initial state mattered
    assert max_abs(flat(outg)[0], flat(gk(x))[0]) > 1e-3


@return_sequences_both
@kinds
def test_go_backwards(kind, rs, rng):
    name, kw = kind
    kl, gk = make_layers(name, dict(kw, return_sequences=rs, go_backwards=True), rng)
    x = rand_x(rng)
    yg = gk(x)
    compare("go_backwards", kl(x), yg, what=f"{name} rs={rs}")
    # reading backwards == reading the flipped sequence forwards; the output stays in that order
    fwd = getattr(gl, name)(U, return_sequences=rs, **kw)
    fwd.build((None, T, D))
    fwd.set_weights(gk.get_weights())
    assert max_abs(fwd(x[:, ::-1]), yg) < 1e-6
    assert max_abs(fwd(x), yg) > 1e-3


# ---- stateful -----------------------------------------------------------------------------------
@kinds
def test_stateful_layer(kind, rng):
    name, kw = kind
    kl, gk = make_layers(name, dict(kw, return_sequences=True, stateful=True), rng, batch=B)
    fresh = getattr(gl, name)(U, return_sequences=True, **kw)
    fresh.build((None, T, D))
    fresh.set_weights(gk.get_weights())
    x1, x2 = rand_x(rng), rand_x(rng)
    compare("stateful", kl(x1), gk(x1), what=f"{name} batch 1")
    y2 = gk(x2)
    compare("stateful", kl(x2), y2, what=f"{name} batch 2 (carried state)")
    assert max_abs(y2, fresh(x2)) > 1e-3          # the state was carried
    kl.reset_states()
    gk.reset_states()
    y3 = gk(x2)
    compare("stateful", kl(x2), y3, what=f"{name} after reset_states")
    assert max_abs(y3, fresh(x2)) < 1e-6


@kinds
def test_stateful_model(kind, rng):
    name, kw = kind
    km, gm = make_models(
        [getattr(keras.layers, name)(U, stateful=True, **kw), keras.layers.Dense(2)],
        [getattr(gl, name)(U, stateful=True, **kw), gl.Dense(2)], (T, D), rng,
        batch_shape=(B, T, D))
    x = rand_x(rng, (2 * B, T, D))
    p1k, p1g = km.predict(x, batch_size=B, verbose=0), gm.predict(x, batch_size=B)
    compare("stateful", p1k, p1g, what=f"{name} predict, two consecutive batches")
    p2k, p2g = km.predict(x, batch_size=B, verbose=0), gm.predict(x, batch_size=B)
    compare("stateful", p2k, p2g, what=f"{name} second predict (state carried on)")
    assert max_abs(p1g, p2g) > 1e-3
    for layer in km.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    gm.reset_states()
    p3k, p3g = km.predict(x, batch_size=B, verbose=0), gm.predict(x, batch_size=B)
    compare("stateful", p3k, p3g, what=f"{name} predict after reset_states")
    assert max_abs(p3g, p1g) < 1e-6


# ---- unroll -------------------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@return_sequences_both
@kinds
def test_unroll(kind, rs, masked, rng):
    name, kw = kind
    kl, gk = make_layers(name, dict(kw, return_sequences=rs, unroll=True), rng)
    kl_loop = getattr(keras.layers, name)(U, return_sequences=rs, unroll=False, **kw)
    kl_loop.build((None, T, D))
    kl_loop.set_weights(kl.get_weights())
    gk_loop = getattr(gl, name)(U, return_sequences=rs, unroll=False, **kw)
    gk_loop.build((None, T, D))
    gk_loop.set_weights(gk.get_weights())
    x, mask = padded_x(rng) if masked else (rand_x(rng), None)
    call = {} if mask is None else {"mask": mask}
    kwargs_k = {} if mask is None else {"mask": keras.ops.convert_to_tensor(mask)}
    yk = kl(x, **kwargs_k)
    compare("unroll", yk, gk(x, **call), what=f"{name} unroll=True")
    compare("unroll", kl_loop(x, **kwargs_k), gk_loop(x, **call), what=f"{name} unroll=False")
    compare("unroll", yk, gk_loop(x, **call), what=f"{name} keras unrolled vs grukit loop")


# ---- dropout at inference -----------------------------------------------------------------------
@return_sequences_both
@kinds
def test_dropout_inference(kind, rs, rng):
    name, kw = kind
    kw = dict(kw, return_sequences=rs, dropout=0.3, recurrent_dropout=0.4)
    kl, gk = make_layers(name, kw, rng)
    x = rand_x(rng)
    yg = gk(x, training=False)
    compare("dropout_inference", kl(x, training=False), yg, what=f"{name} layer call")
    assert max_abs(gk(x, training=True), yg) > 1e-3     # dropout is live in training
    km, gm = make_models([getattr(keras.layers, name)(U, **kw), keras.layers.Dense(2)],
                         [getattr(gl, name)(U, **kw), gl.Dense(2)], (T, D), rng)
    compare("dropout_inference", km.predict(x, verbose=0), gm.predict(x),
            what=f"{name} model predict")


# ---- masks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@return_sequences_both
@kinds
def test_masking_layer(kind, rs, go_backwards, rng):
    name, kw = kind
    kw = dict(kw, return_sequences=rs, go_backwards=go_backwards)
    km, gm = make_models([keras.layers.Masking(0.0), getattr(keras.layers, name)(U, **kw)],
                         [gl.Masking(0.0), getattr(gl, name)(U, **kw)], (T, D), rng)
    x, mask = padded_x(rng)
    pg = gm.predict(x)
    compare("masking", km.predict(x, verbose=0), pg, what=f"{name} rs={rs} gb={go_backwards}")
    # the mask mattered: without it, the zero rows would be read as inputs
    plain = getattr(gl, name)(U, **kw)
    plain.build((None, T, D))
    plain.set_weights(gm.layers[1].get_weights())
    assert max_abs(plain(x), pg) > 1e-3
    # and the layer called directly with the mask gives the same as the model
    assert max_abs(gm.layers[1](x, mask=mask), pg) < 1e-6


@return_sequences_both
@kinds
def test_embedding_mask_zero(kind, rs, rng):
    name, kw = kind
    kw = dict(kw, return_sequences=rs)
    km, gm = make_models([keras.layers.Embedding(12, D, mask_zero=True),
                          getattr(keras.layers, name)(U, **kw)],
                         [gl.Embedding(12, D, mask_zero=True), getattr(gl, name)(U, **kw)],
                         (T,), rng)
    ids = padded_ids(rng)
    pg = gm.predict(ids)
    compare("embedding_mask_zero", km.predict(ids, verbose=0), pg, what=f"{name} rs={rs}")
    nomask = Sequential([gl.Input(shape=(T,)), gl.Embedding(12, D),
                         getattr(gl, name)(U, **kw)])
    nomask.build()
    nomask.set_weights(gm.get_weights())
    assert max_abs(nomask.predict(ids), pg) > 1e-3


STACKS = {
    "masking-gru-lstm": lambda L: [L.Masking(0.0), L.GRU(6, return_sequences=True), L.LSTM(U)],
    "masking-gru-lstm-seq": lambda L: [L.Masking(0.0), L.GRU(6, return_sequences=True),
                                       L.LSTM(U, return_sequences=True)],
    "masking-gru-dense3d": lambda L: [L.Masking(0.0), L.GRU(6, return_sequences=True),
                                      L.Dense(3, activation="tanh")],
    "masking-simplernn-gru0-simplernn": lambda L: [
        L.Masking(0.0), L.SimpleRNN(6, return_sequences=True),
        L.GRU(4, reset_after=False, return_sequences=True), L.SimpleRNN(U)],
    "embedding-lstm-gru": lambda L: [L.Embedding(12, D, mask_zero=True),
                                     L.LSTM(6, return_sequences=True), L.GRU(U)],
}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_mask_travels_through_stack(stack, rng):
    km, gm = make_models(STACKS[stack](keras.layers), STACKS[stack](gl),
                         (T,) if stack.startswith("embedding") else (T, D), rng)
    x = padded_ids(rng) if stack.startswith("embedding") else padded_x(rng)[0]
    pk, pg = km.predict(x, verbose=0), gm.predict(x)
    compare("mask_stack", pk, pg, what=stack)
    assert np.std(pg) > 1e-3


def test_mask_after_go_backwards_layer(rng):
    """Masking -> GRU(go_backwards, return_sequences) -> LSTM: Keras's RNN.compute_mask passes
    the input mask on unchanged (in input time order), although the go_backwards output sequence
    is reversed; the next layer must see the same mask as in Keras."""
    km, gm = make_models(
        [keras.layers.Masking(0.0), keras.layers.GRU(6, return_sequences=True, go_backwards=True),
         keras.layers.LSTM(U)],
        [gl.Masking(0.0), gl.GRU(6, return_sequences=True, go_backwards=True), gl.LSTM(U)],
        (T, D), rng)
    x = padded_x(rng)[0]
    compare("mask_stack", km.predict(x, verbose=0), gm.predict(x), what="go_backwards stack")


def test_masked_sequence_loss_and_step(rng):
    """A sequence output under a mask: Keras weights the loss by the mask; evaluate and one SGD
    step agree."""
    spec = lambda L: [L.Masking(0.0), L.GRU(6, return_sequences=True), L.Dense(2)]
    km, gm = make_models(spec(keras.layers), spec(gl), (T, D), rng)
    x = padded_x(rng)[0]
    y = rand_x(rng, (B, T, 2))
    km.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    gm.compile(optimizer=gopt.SGD(0.5), loss="mse")
    ek, eg = km.evaluate(x, y, verbose=0), gm.evaluate(x, y)
    assert abs(ek - eg) / abs(ek) < 1e-5, f"masked evaluate: keras {ek} grukit {eg}"
    km.train_on_batch(x, y)
    gm.train_on_batch(x, y)
    compare_weights("masked_loss", km.get_weights(), gm.get_weights(), STEP_TOL)


# ---- Bidirectional ------------------------------------------------------------------------------
MERGES = ["concat", "sum", "mul", "ave", None]
merges = pytest.mark.parametrize("merge_mode", MERGES, ids=[str(m) for m in MERGES])


def make_bidir(name, kw, rng, merge_mode="concat", backward=None):
    """Bidirectional(name(U, **kw)) in both libraries with Keras's weights; ``backward`` is an
    optional (name, kw) for an explicit backward layer."""
    kb_args, gb_args = {}, {}
    if backward is not None:
        bname, bkw = backward
        kb_args["backward_layer"] = getattr(keras.layers, bname)(**bkw)
        gb_args["backward_layer"] = getattr(gl, bname)(**bkw)
    kb = keras.layers.Bidirectional(getattr(keras.layers, name)(U, **kw), merge_mode=merge_mode,
                                    **kb_args)
    kb.build((None, T, D))
    ws = randomize_biases(kb, rng)
    gb = gl.Bidirectional(getattr(gl, name)(U, **kw), merge_mode=merge_mode, **gb_args)
    gb.build((None, T, D))
    gb.set_weights(ws)
    return kb, gb


@merges
@return_sequences_both
@kinds
def test_bidirectional_merge_modes(kind, rs, merge_mode, rng):
    name, kw = kind
    kb, gb = make_bidir(name, dict(kw, return_sequences=rs), rng, merge_mode)
    x = rand_x(rng)
    outg = gb(x)
    assert isinstance(outg, list) == (merge_mode is None)
    compare("bidirectional", kb(x), outg, what=f"{name} rs={rs} merge={merge_mode}")


@pytest.mark.parametrize("merge_mode", ["concat", "ave", None], ids=["concat", "ave", "None"])
@return_sequences_both
@kinds
def test_bidirectional_return_state(kind, rs, merge_mode, rng):
    name, kw = kind
    kb, gb = make_bidir(name, dict(kw, return_sequences=rs, return_state=True), rng, merge_mode)
    x = rand_x(rng)
    outk, outg = kb(x), gb(x)
    n = 2 if name == "LSTM" else 1
    assert len(flat(outg)) == (2 if merge_mode is None else 1) + 2 * n
    compare("bidirectional_state", outk, outg, what=f"{name} rs={rs} merge={merge_mode}")


@return_sequences_both
@kinds
def test_bidirectional_initial_state(kind, rs, rng):
    name, kw = kind
    kb, gb = make_bidir(name, dict(kw, return_sequences=rs), rng)
    x = rand_x(rng)
    s0 = initial_states(name, rng, n_layers=2)      # forward layer's, then backward layer's
    yg = gb(x, initial_state=list(s0))
    compare("bidirectional_initial_state", kb(x, initial_state=list(s0)), yg,
            what=f"{name} rs={rs}")
    # both halves use their own initial states
    yz = gb(x)
    assert max_abs(yg[..., :U], yz[..., :U]) > 1e-3
    assert max_abs(yg[..., U:], yz[..., U:]) > 1e-3


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", None],
                         ids=["concat", "sum", "mul", "None"])
@return_sequences_both
@kinds
def test_bidirectional_mask(kind, rs, merge_mode, rng):
    name, kw = kind
    kb, gb = make_bidir(name, dict(kw, return_sequences=rs), rng, merge_mode)
    x, mask = padded_x(rng)
    outg = gb(x, mask=mask)
    compare("bidirectional_mask", kb(x, mask=keras.ops.convert_to_tensor(mask)), outg,
            what=f"{name} rs={rs} merge={merge_mode}")
    if rs:   # Keras (and grukit) zero the outputs at masked steps inside Bidirectional
        for y in flat(outg):
            assert np.all(y[~mask] == 0.0)


@return_sequences_both
def test_bidirectional_mask_in_model(rs, rng):
    spec = lambda L: [L.Masking(0.0), L.Bidirectional(L.GRU(U, return_sequences=True)),
                      L.LSTM(4, return_sequences=rs)]
    km, gm = make_models(spec(keras.layers), spec(gl), (T, D), rng)
    x = padded_x(rng)[0]
    compare("bidirectional_mask", km.predict(x, verbose=0), gm.predict(x),
            what=f"masking-bidir-lstm rs={rs}")


BACKWARD_CASES = [
    ("LSTM", {}, ("LSTM", dict(units=4, go_backwards=True))),
    ("GRU", {}, ("SimpleRNN", dict(units=3, go_backwards=True))),
    ("GRU", {"reset_after": False}, ("GRU", dict(units=U, reset_after=True, go_backwards=True,
                                                activation="relu"))),
]


@pytest.mark.parametrize("return_state", [False, True], ids=["out", "state"])
@return_sequences_both
@pytest.mark.parametrize("case", BACKWARD_CASES, ids=["lstm-lstm", "gru-simplernn", "gru0-gru1"])
def test_bidirectional_explicit_backward_layer(case, rs, return_state, rng):
    name, kw, (bname, bkw) = case
    kw = dict(kw, return_sequences=rs, return_state=return_state)
    bkw = dict(bkw, return_sequences=rs, return_state=return_state)
    kb, gb = make_bidir(name, kw, rng, backward=(bname, bkw))
    assert gb.backward_layer.units == bkw["units"]
    x, mask = padded_x(rng)
    compare("bidirectional_backward_layer", kb(x), gb(x), what=f"{case} rs={rs}")
    compare("bidirectional_backward_layer", kb(x, mask=keras.ops.convert_to_tensor(mask)),
            gb(x, mask=mask), what=f"{case} rs={rs} masked")


def test_bidirectional_weight_order(rng):
    """Keras's get_weights() list loads into grukit: forward layer's weights, then backward's."""
    # (Keras's Bidirectional.compute_output_shape assumes both halves have the forward layer's
    # units, so the explicit backward layer has the same units but another type)
    spec = lambda L: [L.Bidirectional(L.GRU(U, return_sequences=True)),
                      L.Bidirectional(L.LSTM(4), backward_layer=L.GRU(4, go_backwards=True)),
                      L.Dense(2)]
    km, gm = make_models(spec(keras.layers), spec(gl), (T, D), rng)
    shapes_k = [w.shape for w in km.get_weights()]
    assert [w.shape for w in gm.get_weights()] == shapes_k
    for kl_, gl_ in zip(km.layers[:2], gm.layers[:2]):
        for side in ("forward_layer", "backward_layer"):
            assert_same_weights(getattr(kl_, side).get_weights(),
                                getattr(gl_, side).get_weights())
    x = rand_x(rng)
    compare("bidirectional", km.predict(x, verbose=0), gm.predict(x), what="weight order")


# ---- regularizers -------------------------------------------------------------------------------
REGS = [("L1", (0.01,)), ("L2", (0.02,)), ("L1L2", (0.01, 0.02))]
OPTIONS = ["kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
           "activity_regularizer"]


def _penalty_check(km, gm, x, y, what):
    km.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    gm.compile(optimizer=gopt.SGD(0.1), loss="mse")
    ek, eg = km.evaluate(x, y, verbose=0), gm.evaluate(x, y)
    mse = float(np.mean((gm.predict(x) - y) ** 2))
    assert eg - mse > 1e-4, f"{what}: the penalty is missing from grukit's loss"
    rel = abs(ek - eg) / abs(ek)
    ERRORS["regularizer_loss_rel"] = max(ERRORS.get("regularizer_loss_rel", 0.0), rel)
    assert rel < 1e-5, f"{what}: evaluate keras {ek} grukit {eg}"
    lk, lg = km.train_on_batch(x, y), gm.train_on_batch(x, y)
    assert abs(float(lk) - float(lg)) / abs(float(lk)) < 1e-5, f"{what}: {lk} vs {lg}"
    compare_weights("regularizer_step", km.get_weights(), gm.get_weights(), STEP_TOL)


@pytest.mark.parametrize("option", OPTIONS)
@kinds
def test_regularizer(kind, option, rng):
    name, kw = kind
    rname, factors = REGS[(KINDS.index(kind) + OPTIONS.index(option)) % 3]
    kwk = dict(kw, **{option: getattr(keras.regularizers, rname)(*factors)})
    kwg = dict(kw, **{option: getattr(greg, rname)(*factors)})
    klayer = getattr(keras.layers, name)(U, **kwk)
    if option == "activity_regularizer" and klayer.activity_regularizer is None:
        # Keras 3.15's SimpleRNN.__init__ drops activity_regularizer (it never reaches
        # Layer.__init__); set it as Layer.__init__ would, so that the semantics can be compared
        assert name == "SimpleRNN"
        klayer.activity_regularizer = kwk[option]
    km, gm = make_models([klayer, keras.layers.Dense(1)],
                         [getattr(gl, name)(U, **kwg), gl.Dense(1)], (T, D), rng)
    x, y = rand_x(rng, (8, T, D)), rand_x(rng, (8, 1))
    _penalty_check(km, gm, x, y, f"{name} {option}={rname}{factors}")


@pytest.mark.parametrize("rs", [True, False], ids=["seq", "last"])
def test_all_regularizers_on_stack(rs, rng):
    """Every kind of penalty at once, on a sequence-returning layer feeding another."""
    def spec(L, R):
        return [L.GRU(6, return_sequences=True, kernel_regularizer=R.L1L2(0.01, 0.02),
                      recurrent_regularizer=R.L2(0.02), bias_regularizer=R.L1(0.01),
                      activity_regularizer=R.L2(0.02)),
                L.LSTM(4, return_sequences=rs, kernel_regularizer=R.L1(0.01),
                       activity_regularizer=R.L1(0.01)),
                L.Dense(1, kernel_regularizer=R.L2(0.02))]
    km, gm = make_models(spec(keras.layers, keras.regularizers), spec(gl, greg), (T, D), rng)
    x = rand_x(rng, (8, T, D))
    y = rand_x(rng, (8, T, 1) if rs else (8, 1))
    _penalty_check(km, gm, x, y, f"stack rs={rs}")


def test_bidirectional_regularizers(rng):
    """Both halves of a Bidirectional carry the wrapped layer's weight penalties."""
    def spec(L, R):
        return [L.Bidirectional(L.GRU(U, kernel_regularizer=R.L2(0.02),
                                      recurrent_regularizer=R.L1(0.01),
                                      bias_regularizer=R.L1L2(0.01, 0.02))), L.Dense(1)]
    km, gm = make_models(spec(keras.layers, keras.regularizers), spec(gl, greg), (T, D), rng)
    x, y = rand_x(rng, (8, T, D)), rand_x(rng, (8, 1))
    _penalty_check(km, gm, x, y, "bidirectional")


# ---- constraints --------------------------------------------------------------------------------
def _constraints(C, which):
    if which == "maxnorm-unitnorm-nonneg":
        return dict(kernel_constraint=C.max_norm(0.5), recurrent_constraint=C.unit_norm(),
                    bias_constraint=C.non_neg())
    return dict(kernel_constraint=C.min_max_norm(0.2, 0.6, rate=0.7),
                recurrent_constraint=C.max_norm(0.4, axis=1),
                bias_constraint=C.min_max_norm(0.5, 0.8))


CONSTRAINT_SETS = ["maxnorm-unitnorm-nonneg", "minmaxnorm-maxnorm_axis1-minmaxnorm"]


def _constraint_step(km, gm, rng, what, lr=2.0):
    km.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    gm.compile(optimizer=gopt.SGD(lr), loss="mse")
    x, y = rand_x(rng, (8, T, D)), 3.0 * rand_x(rng, (8, 1))
    w0 = gm.get_weights()
    km.train_on_batch(x, y)
    gm.train_on_batch(x, y)
    compare_weights("constraint_step", km.get_weights(), gm.get_weights(), STEP_TOL)
    assert max(max_abs(a, b) for a, b in zip(w0, gm.get_weights())) > 1e-2
    return gm


@pytest.mark.parametrize("which", CONSTRAINT_SETS)
@kinds
def test_constraints(kind, which, rng):
    name, kw = kind
    km, gm = make_models(
        [getattr(keras.layers, name)(U, **kw, **_constraints(keras.constraints, which)),
         keras.layers.Dense(1)],
        [getattr(gl, name)(U, **kw, **_constraints(gcon, which)), gl.Dense(1)], (T, D), rng)
    gm = _constraint_step(km, gm, rng, f"{name} {which}")
    p = gm.layers[0].params
    if which == CONSTRAINT_SETS[0]:    # the constraints hold after the step
        assert np.linalg.norm(p["kernel"], axis=0).max() <= 0.5 + 1e-5
        assert np.allclose(np.linalg.norm(p["recurrent_kernel"], axis=0), 1.0, atol=1e-5)
        assert p["bias"].min() >= 0.0
    else:
        assert np.linalg.norm(p["recurrent_kernel"], axis=1).max() <= 0.4 + 1e-5


def test_bidirectional_constraints(rng):
    """The backward copy of a Bidirectional keeps the wrapped layer's constraints, with their
    arguments (max_norm(0.5) stays 0.5)."""
    spec = lambda L, C: [L.Bidirectional(L.LSTM(U, kernel_constraint=C.max_norm(0.5),
                                                recurrent_constraint=C.min_max_norm(0.2, 0.6),
                                                bias_constraint=C.non_neg())),
                         L.Dense(1)]
    km, gm = make_models(spec(keras.layers, keras.constraints), spec(gl, gcon), (T, D), rng)
    fwd, bwd = gm.layers[0].forward_layer, gm.layers[0].backward_layer
    for k, con in fwd.param_constraints.items():
        assert type(bwd.param_constraints[k]) is type(con)
        assert bwd.param_constraints[k].get_config() == con.get_config(), k
    gm = _constraint_step(km, gm, rng, "bidirectional")
    for side in (gm.layers[0].forward_layer, gm.layers[0].backward_layer):
        assert np.linalg.norm(side.params["kernel"], axis=0).max() <= 0.5 + 1e-5, side.name


# ---- activations --------------------------------------------------------------------------------
ACTS = ["relu", "softsign", "elu", "selu", "softplus"]
ACT_CASES = [(n, dict(kw, activation=a, recurrent_activation=r))
             for n, kw in KINDS[:3] for a in ACTS for r in ("hard_sigmoid", "tanh")]
ACT_CASES += [("SimpleRNN", dict(activation=a)) for a in ACTS]


@pytest.mark.parametrize("case", ACT_CASES,
                         ids=[f"{n}{int(kw.get('reset_after', 0))}-{kw['activation']}-"
                              f"{kw.get('recurrent_activation', '')}" for n, kw in ACT_CASES])
def test_activations(case, rng):
    name, kw = case
    kl, gk = make_layers(name, dict(kw, return_sequences=True, return_state=True), rng)
    x = rand_x(rng, scale=2.5)      # large enough that hard_sigmoid clips and relu cuts
    outg = gk(x)
    compare("activations", kl(x), outg, what=f"{name} {kw}")
    assert np.std(outg[0]) > 1e-3


# ---- a deep mixed stack -------------------------------------------------------------------------
def _deep(L):
    return [L.GRU(6, return_sequences=True),
            L.Bidirectional(L.LSTM(4, return_sequences=True)),
            L.SimpleRNN(5, return_sequences=True),
            L.GRU(4, reset_after=False),
            L.Dense(1)]


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_deep_mixed_stack(opt, rng):
    km, gm = make_models(_deep(keras.layers), _deep(gl), (T, D), rng)
    x, y = rand_x(rng, (12, T, D)), rand_x(rng, (12, 1))
    pg = gm.predict(x)
    compare("deep_stack_predict", km.predict(x, verbose=0), pg, what="predict")
    assert np.std(pg) > 1e-3
    kopt = keras.optimizers.Adam(0.01) if opt == "adam" else keras.optimizers.SGD(0.1)
    gopt_ = gopt.Adam(0.01) if opt == "adam" else gopt.SGD(0.1)
    km.compile(optimizer=kopt, loss="mse")
    gm.compile(optimizer=gopt_, loss="mse")
    w0 = gm.get_weights()
    hk = km.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0).history["loss"]
    hg = gm.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0).history["loss"]
    assert len(hk) == len(hg) == 2
    rel = float(np.max(np.abs(np.subtract(hk, hg)) / np.abs(hk)))
    ERRORS["deep_stack_history_rel"] = max(ERRORS.get("deep_stack_history_rel", 0.0), rel)
    assert rel < FIT_TOL, f"history: keras {hk} grukit {hg}"
    compare_weights("deep_stack_fit", km.get_weights(), gm.get_weights(), FIT_TOL)
    assert max(max_abs(a, b) for a, b in zip(w0, gm.get_weights())) > 1e-3
    compare("deep_stack_predict", km.predict(x, verbose=0), gm.predict(x),
            what="predict after fit")
