"""Live parity with ONNX (onnxruntime, CPU): ONNX GRU / LSTM / RNN nodes against grukit, float32.

ONNX layout (time-major): X [seq, batch, input]; W [dirs, gates*h, input]; R [dirs, gates*h, h];
B [dirs, 2*gates*h] = [Wb..., Rb...]; Y [seq, dirs, batch, h]; Y_h (Y_c) [dirs, batch, h].

GRU (gate order z, r, h, as grukit's), from the ONNX operator spec:
    z  = f(x Wz^T + h Rz^T + Wbz + Rbz)
    r  = f(x Wr^T + h Rr^T + Wbr + Rbr)
    h~ = g(x Wh^T + (r * h) Rh^T + Rbh + Wbh)        linear_before_reset = 0
    h~ = g(x Wh^T + r * (h Rh^T + Rbh) + Wbh)        linear_before_reset = 1
    H  = (1 - z) * h~ + z * h
so linear_before_reset=1 is grukit's reset_after=True with bias [Wb, Rb] (2, 3u), and
linear_before_reset=0 is reset_after=False with the single bias Wb + Rb (for all three gates: with
the reset applied before the matmul, Rbh is added outside it, just like Wbh).

LSTM: ONNX gate order i, o, f, c; grukit's (Keras's) is i, f, c, o; bias = Wb + Rb.
RNN: H = f(x Wi^T + h Ri^T + Wbi + Rbi), grukit SimpleRNN with bias Wb + Rb.

direction="reverse" gives Y in the original time order; grukit's go_backwards output is in reversed
order, so it is flipped before comparing. sequence_lens (right-padded) is a grukit mask; ONNX
zeroes Y beyond each sequence's length.

onnx and onnxruntime are hard requirements: if missing, this module fails to import.
"""
import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime
import pytest
from onnx import TensorProto

from grukit import layers as gl

OPSET = 17
T, B, D, U = 6, 3, 4, 5
LENS = np.array([6, 2, 4], dtype=np.int32)
TOL = 1e-5
GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}


# ---- ONNX model building and running -----------------------------------------------------------
def run_onnx(op, X, W, R, Bias, lens=None, h0=None, c0=None, **attrs):
    """Build a one-node model (op = "GRU" / "LSTM" / "RNN"), check it, run it on onnxruntime."""
    nd = W.shape[0]
    u = R.shape[-1]
    feeds = {"X": X, "W": W, "R": R, "B": Bias}
    names = ["X", "W", "R", "B", "", "", ""]
    if lens is not None:
        feeds["sequence_lens"], names[4] = lens.astype(np.int32), "sequence_lens"
    if h0 is not None:
        feeds["initial_h"], names[5] = h0, "initial_h"
    if c0 is not None:
        feeds["initial_c"], names[6] = c0, "initial_c"
    if op != "LSTM":
        names = names[:6]
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = oh.make_node(op, names, outs, hidden_size=u, **attrs)
    seq, batch = X.shape[:2]
    inputs = [oh.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens"
                                        else TensorProto.FLOAT, list(v.shape))
              for k, v in feeds.items()]
    outputs = [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [seq, nd, batch, u])] + \
        [oh.make_tensor_value_info(k, TensorProto.FLOAT, [nd, batch, u]) for k in outs[1:]]
    graph = oh.make_graph([node], f"{op.lower()}_parity", inputs, outputs)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    sess = onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def onnx_weights(rng, op, nd, d_in=D, u=U):
    g = GATES[op]
    W = rng.uniform(-0.7, 0.7, (nd, g * u, d_in)).astype(np.float32)
    R = rng.uniform(-0.7, 0.7, (nd, g * u, u)).astype(np.float32)
    Bias = rng.uniform(-0.5, 0.5, (nd, 2 * g * u)).astype(np.float32)
    return W, R, Bias


# ---- ONNX -> grukit layout ---------------------------------------------------------------------
def gru_weights(W, R, Bias, d, reset_after):
    """One direction d of an ONNX GRU -> grukit [kernel (D, 3u), recurrent_kernel, bias]."""
    u = R.shape[-1]
    wb, rb = Bias[d, :3 * u], Bias[d, 3 * u:]
    bias = np.stack([wb, rb]) if reset_after else wb + rb
    return [W[d].T, R[d].T, bias]


def lstm_blocks(a):
    """ONNX LSTM gate blocks i, o, f, c (axis 0) -> grukit's i, f, c, o."""
    i, o, f, c = np.split(a, 4, axis=0)
    return np.concatenate([i, f, c, o], axis=0)


def lstm_weights(W, R, Bias, d):
    u = R.shape[-1]
    return [lstm_blocks(W[d]).T, lstm_blocks(R[d]).T,
            lstm_blocks(Bias[d, :4 * u]) + lstm_blocks(Bias[d, 4 * u:])]


def rnn_weights(W, R, Bias, d):
    u = R.shape[-1]
    return [W[d].T, R[d].T, Bias[d, :u] + Bias[d, u:]]


def batch_major(y_dir):
    """ONNX (seq, batch, u) -> (batch, seq, u)."""
    return np.ascontiguousarray(y_dir.transpose(1, 0, 2))


def _x(rng, lens=None):
    """Inputs (batch-major for grukit, time-major for ONNX) and the mask; padding is garbage."""
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = None
    if lens is not None:
        mask = np.arange(T)[None, :] < lens[:, None]
        x[~mask] = 40.0 * rng.standard_normal(x[~mask].shape).astype(np.float32)
    return x, mask, np.ascontiguousarray(x.transpose(1, 0, 2))


def _err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---- GRU: direction x linear_before_reset x initial_h x sequence_lens --------------------------
@pytest.mark.parametrize("with_lens", [False, True], ids=["full", "lens"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("lbr", [0, 1], ids=["lbr0", "lbr1"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gru_one_direction_matches_onnx(direction, lbr, with_h0, with_lens, rng):
    lens = LENS if with_lens else None
    x, mask, X = _x(rng, lens)
    W, R, Bias = onnx_weights(rng, "GRU", 1)
    h0 = rng.standard_normal((1, B, U)).astype(np.float32) if with_h0 else None
    Y, Y_h = run_onnx("GRU", X, W, R, Bias, lens=lens, h0=h0, direction=direction,
                      linear_before_reset=lbr)
    assert Y.shape == (T, 1, B, U) and Y_h.shape == (1, B, U)

    layer = gl.GRU(U, reset_after=bool(lbr), go_backwards=(direction == "reverse"),
                   return_sequences=True, return_state=True)
    layer.build((None, None, D))
    layer.set_weights(gru_weights(W, R, Bias, 0, bool(lbr)))
    y, h = layer(x, mask=mask, initial_state=None if h0 is None else [h0[0]])
    if direction == "reverse":
        y = y[:, ::-1]          # back to the original time order, as ONNX gives it
    want = batch_major(Y[:, 0])
    valid = np.ones((B, T), bool) if mask is None else mask
    assert _err(want[valid], y[valid]) < TOL
    assert _err(Y_h[0], h) < TOL
    if with_lens:
        assert np.all(want[~valid] == 0.0)     # ONNX zeroes Y beyond each length
    assert np.std(y) > 1e-2


@pytest.mark.parametrize("merge_mode", [None, "concat"])
@pytest.mark.parametrize("with_lens", [False, True], ids=["full", "lens"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("lbr", [0, 1], ids=["lbr0", "lbr1"])
def test_gru_bidirectional_matches_onnx(lbr, with_h0, with_lens, merge_mode, rng):
    lens = LENS if with_lens else None
    x, mask, X = _x(rng, lens)
    W, R, Bias = onnx_weights(rng, "GRU", 2)
    h0 = rng.standard_normal((2, B, U)).astype(np.float32) if with_h0 else None
    Y, Y_h = run_onnx("GRU", X, W, R, Bias, lens=lens, h0=h0, direction="bidirectional",
                      linear_before_reset=lbr)
    assert Y.shape == (T, 2, B, U) and Y_h.shape == (2, B, U)

    layer = gl.Bidirectional(gl.GRU(U, reset_after=bool(lbr), return_sequences=True,
                                    return_state=True), merge_mode=merge_mode)
    layer.build((None, None, D))
    layer.set_weights(gru_weights(W, R, Bias, 0, bool(lbr)) + gru_weights(W, R, Bias, 1, bool(lbr)))
    out = layer(x, mask=mask, initial_state=None if h0 is None else [h0[0], h0[1]])
    if merge_mode is None:
        yf, yb, hf, hb = out
    else:
        y, hf, hb = out
        assert y.shape == (B, T, 2 * U)
        yf, yb = y[..., :U], y[..., U:]
    # Bidirectional zeroes masked steps (Keras), ONNX zeroes steps beyond the length: all equal
    assert _err(batch_major(Y[:, 0]), yf) < TOL
    assert _err(batch_major(Y[:, 1]), yb) < TOL
    assert _err(Y_h[0], hf) < TOL
    assert _err(Y_h[1], hb) < TOL
    assert _err(yf, yb) > 1e-2


def test_gru_lbr0_bias_needs_both_candidate_biases(rng):
    """With linear_before_reset=0 ONNX adds Rbh next to Wbh: the bias is Wb + Rb for all gates,
    and dropping Rbh (a tempting mapping) would not match."""
    x, _, X = _x(rng)
    W, R, Bias = onnx_weights(rng, "GRU", 1)
    Y, _ = run_onnx("GRU", X, W, R, Bias, linear_before_reset=0)
    want = batch_major(Y[:, 0])
    layer = gl.GRU(U, reset_after=False, return_sequences=True)
    layer.build((None, None, D))
    k, rk, b = gru_weights(W, R, Bias, 0, False)
    layer.set_weights([k, rk, b])
    assert _err(want, layer(x)) < TOL
    b_wrong = b.copy()
    b_wrong[2 * U:] -= Bias[0, 5 * U:]     # Wbh only
    layer.set_weights([k, rk, b_wrong])
    assert _err(want, layer(x)) > 1e-2


# ---- non-default activations -------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("acts", [
    (["HardSigmoid", "Tanh"], "hard_sigmoid", "tanh"),
    (["Sigmoid", "Relu"], "sigmoid", "relu"),
    (["HardSigmoid", "Relu"], "hard_sigmoid", "relu"),
], ids=["hardsigmoid-tanh", "sigmoid-relu", "hardsigmoid-relu"])
@pytest.mark.parametrize("lbr", [0, 1], ids=["lbr0", "lbr1"])
def test_gru_activations_match_onnx(acts, lbr, direction, rng):
    names, rec_act, act = acts
    x, mask, X = _x(rng, LENS)
    W, R, Bias = onnx_weights(rng, "GRU", 1)
    W *= 3.0      # drive the hard sigmoid into both of its flat regions
    attrs = {"activations": names}
    if names[0] == "HardSigmoid":     # Keras 3's hard_sigmoid: clip(x / 6 + 1/2, 0, 1)
        attrs.update(activation_alpha=[1.0 / 6.0], activation_beta=[0.5])
    Y, Y_h = run_onnx("GRU", X, W, R, Bias, lens=LENS, direction=direction,
                      linear_before_reset=lbr, **attrs)
    layer = gl.GRU(U, activation=act, recurrent_activation=rec_act, reset_after=bool(lbr),
                   go_backwards=(direction == "reverse"), return_sequences=True,
                   return_state=True)
    layer.build((None, None, D))
    layer.set_weights(gru_weights(W, R, Bias, 0, bool(lbr)))
    y, h = layer(x, mask=mask)
    if direction == "reverse":
        y = y[:, ::-1]
    want = batch_major(Y[:, 0])
    assert _err(want[mask], y[mask]) < TOL
    assert _err(Y_h[0], h) < TOL
    # the non-default activations matter: the default GRU gives something else
    ref = gl.GRU(U, reset_after=bool(lbr), go_backwards=(direction == "reverse"),
                 return_sequences=True, return_state=True)
    ref.build((None, None, D))
    ref.set_weights(gru_weights(W, R, Bias, 0, bool(lbr)))
    assert _err(ref(x, mask=mask)[1], h) > 1e-2


def test_onnx_hardsigmoid_default_is_not_keras3(rng):
    """ONNX HardSigmoid defaults to alpha=0.2 (Keras 2's form); grukit's is alpha=1/6 (Keras 3).
    Without the explicit alpha/beta, the two differ: the alpha/beta above are needed."""
    x, _, X = _x(rng)
    W, R, Bias = onnx_weights(rng, "GRU", 1)
    W *= 3.0
    _, Y_h = run_onnx("GRU", X, W, R, Bias, activations=["HardSigmoid", "Tanh"])
    layer = gl.GRU(U, recurrent_activation="hard_sigmoid", reset_after=False)
    layer.build((None, None, D))
    layer.set_weights(gru_weights(W, R, Bias, 0, False))
    assert _err(Y_h[0], layer(x)) > 1e-3


# ---- LSTM and RNN ------------------------------------------------------------------------------
@pytest.mark.parametrize("with_lens", [False, True], ids=["full", "lens"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_lstm_forward_matches_onnx(with_h0, with_lens, rng):
    lens = LENS if with_lens else None
    x, mask, X = _x(rng, lens)
    W, R, Bias = onnx_weights(rng, "LSTM", 1)
    h0 = c0 = None
    if with_h0:
        h0 = rng.standard_normal((1, B, U)).astype(np.float32)
        c0 = rng.standard_normal((1, B, U)).astype(np.float32)
    Y, Y_h, Y_c = run_onnx("LSTM", X, W, R, Bias, lens=lens, h0=h0, c0=c0, direction="forward")
    layer = gl.LSTM(U, return_sequences=True, return_state=True)
    layer.build((None, None, D))
    layer.set_weights(lstm_weights(W, R, Bias, 0))
    y, h, c = layer(x, mask=mask, initial_state=None if h0 is None else [h0[0], c0[0]])
    want = batch_major(Y[:, 0])
    valid = np.ones((B, T), bool) if mask is None else mask
    assert _err(want[valid], y[valid]) < TOL
    assert _err(Y_h[0], h) < TOL
    assert _err(Y_c[0], c) < TOL
    assert np.std(y) > 1e-2


def test_lstm_gate_order_matters(rng):
    """Guard for the i,o,f,c -> i,f,c,o mapping: taking ONNX's blocks as they are does not match."""
    x, _, X = _x(rng)
    W, R, Bias = onnx_weights(rng, "LSTM", 1)
    _, Y_h, _ = run_onnx("LSTM", X, W, R, Bias)
    layer = gl.LSTM(U)
    layer.build((None, None, D))
    layer.set_weights([W[0].T, R[0].T, Bias[0, :4 * U] + Bias[0, 4 * U:]])
    assert _err(Y_h[0], layer(x)) > 1e-2
    layer.set_weights(lstm_weights(W, R, Bias, 0))
    assert _err(Y_h[0], layer(x)) < TOL


@pytest.mark.parametrize("with_lens", [False, True], ids=["full", "lens"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_rnn_forward_matches_onnx(with_h0, with_lens, rng):
    lens = LENS if with_lens else None
    x, mask, X = _x(rng, lens)
    W, R, Bias = onnx_weights(rng, "RNN", 1)
    h0 = rng.standard_normal((1, B, U)).astype(np.float32) if with_h0 else None
    Y, Y_h = run_onnx("RNN", X, W, R, Bias, lens=lens, h0=h0, direction="forward",
                      activations=["Tanh"])
    layer = gl.SimpleRNN(U, activation="tanh", return_sequences=True, return_state=True)
    layer.build((None, None, D))
    layer.set_weights(rnn_weights(W, R, Bias, 0))
    y, h = layer(x, mask=mask, initial_state=None if h0 is None else [h0[0]])
    want = batch_major(Y[:, 0])
    valid = np.ones((B, T), bool) if mask is None else mask
    assert _err(want[valid], y[valid]) < TOL
    assert _err(Y_h[0], h) < TOL
    assert np.std(y) > 1e-2
