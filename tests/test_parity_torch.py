"""Live parity with PyTorch (CPU): nn.GRU, nn.LSTM and nn.RNN against grukit, forward and backward.

torch.nn.GRU is the reset_after=True cell. torch's gate blocks are r, z, n (GRU) and i, f, g, o
(LSTM); its weights are (gates*u, D) and it has two biases. The helpers below map torch weights
(and torch gradients, which have the same layout) to grukit's Keras layout. torch is a hard
requirement: if it is missing, this module fails to import instead of skipping.
"""
import numpy as np
import pytest
import torch

from grukit import layers as gl

from gradcheck import rel_error


# ---- torch -> grukit layout (weights and gradients alike) ---------------------------------------
def _np(t):
    return t.detach().cpu().numpy()


def gru_blocks(a):
    """torch GRU gate blocks r, z, n along axis 0 -> grukit's z, r, h."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def gru_from_torch(w_ih, w_hh, b_ih=None, b_hh=None):
    """[kernel (D, 3u), recurrent_kernel (u, 3u), bias (2, 3u)] from torch GRU tensors/arrays."""
    out = [gru_blocks(w_ih).T, gru_blocks(w_hh).T]
    if b_ih is not None:
        out.append(np.stack([gru_blocks(b_ih), gru_blocks(b_hh)]))
    return out


def lstm_rnn_from_torch(w_ih, w_hh, b_ih=None, b_hh=None):
    """LSTM (i, f, g, o is Keras's i, f, c, o) or RNN: transpose, and one bias b_ih + b_hh."""
    out = [w_ih.T, w_hh.T]
    if b_ih is not None:
        out.append(b_ih + b_hh)
    return out


def torch_params(mod, grad=False):
    """weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 (the biases when present) as arrays."""
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if mod.bias else [])
    return [_np(getattr(mod, n).grad if grad else getattr(mod, n)) for n in names]


def to_grukit(kind, arrays):
    return (gru_from_torch if kind == "GRU" else lstm_rnn_from_torch)(*arrays)


def make_pair(kind, D, u, bias=True, nonlinearity="tanh", dtype=torch.float32, seed=0):
    """A torch module (batch_first) and a grukit layer with the same weights."""
    torch.manual_seed(seed)
    if kind == "GRU":
        mod = torch.nn.GRU(D, u, batch_first=True, bias=bias)
        layer = gl.GRU(u, use_bias=bias, return_sequences=True, reset_after=True)
    elif kind == "LSTM":
        mod = torch.nn.LSTM(D, u, batch_first=True, bias=bias)
        layer = gl.LSTM(u, use_bias=bias, return_sequences=True)
    else:
        mod = torch.nn.RNN(D, u, batch_first=True, bias=bias, nonlinearity=nonlinearity)
        layer = gl.SimpleRNN(u, use_bias=bias, activation=nonlinearity, return_sequences=True)
    mod = mod.to(dtype)
    layer.build((None, None, D))
    layer.set_weights(to_grukit(kind, torch_params(mod)))
    return mod, layer


B, T, D, U = 3, 7, 4, 6
KINDS = [("GRU", "tanh"), ("LSTM", "tanh"), ("RNN", "tanh"), ("RNN", "relu")]


def _kid(k):
    return k[0] if k[0] != "RNN" else f"RNN-{k[1]}"


# ---- forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS, ids=_kid)
def test_forward_matches_torch(kind, bias, with_h0, rng):
    name, nl = kind
    mod, layer = make_pair(name, D, U, bias=bias, nonlinearity=nl)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    states = [rng.standard_normal((B, U)).astype(np.float32) for _ in range(2 if name == "LSTM"
                                                                           else 1)]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        if not with_h0:
            yt, st = mod(xt)
        elif name == "LSTM":
            yt, st = mod(xt, tuple(torch.from_numpy(s)[None] for s in states))
        else:
            yt, st = mod(xt, torch.from_numpy(states[0])[None])
    final_t = [_np(s[0]) for s in (st if name == "LSTM" else (st,))]

    layer.return_state = True
    out = layer(x, initial_state=states if with_h0 else None)
    yg, final_g = out[0], out[1:]
    assert yg.shape == (B, T, U)
    err = np.max(np.abs(_np(yt) - yg))
    assert err < 1e-5, f"{_kid(kind)} all steps: {err:.3g}"
    for a, b in zip(final_t, final_g):          # h_T (and c_T for LSTM)
        assert np.max(np.abs(a - b)) < 1e-5
    assert np.std(yg) > 1e-3

    layer.return_state, layer.return_sequences = False, False
    last = layer(x, initial_state=states if with_h0 else None)
    assert np.max(np.abs(_np(yt[:, -1]) - last)) < 1e-5


def test_forward_long_sequence_matches_torch(rng):
    """A longer sequence and larger layer: errors must not build up over time."""
    x = rng.standard_normal((4, 60, 5)).astype(np.float32)
    for name in ("GRU", "LSTM", "RNN"):
        mod, layer = make_pair(name, 5, 16)
        with torch.no_grad():
            yt = _np(mod(torch.from_numpy(x))[0])
        err = np.max(np.abs(yt - layer(x)))
        assert err < 1e-5, f"{name} T=60: {err:.3g}"


def test_weight_mapping_helpers_roundtrip():
    """The GRU block swap is its own inverse and actually moves the r and z blocks."""
    a = np.arange(3 * 4 * 2).reshape(12, 2)
    assert np.array_equal(gru_blocks(gru_blocks(a)), a)
    assert np.array_equal(gru_blocks(a)[:4], a[4:8])


# ---- gradients (float64) ------------------------------------------------------------------------
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS, ids=_kid)
def test_gradients_match_torch(kind, bias, return_sequences, with_h0, float64, rng):
    name, nl = kind
    mod, layer = make_pair(name, D, U, bias=bias, nonlinearity=nl, dtype=torch.float64)
    assert layer.params["kernel"].dtype == np.float64
    layer.return_sequences = return_sequences
    x = rng.standard_normal((B, T, D))
    n_states = 2 if name == "LSTM" else 1
    states = [rng.standard_normal((B, U)) for _ in range(n_states)] if with_h0 else None

    # torch: autograd of sum(output * G)
    xt = torch.tensor(x, requires_grad=True)
    st = None
    if with_h0:
        st = [torch.tensor(s[None], requires_grad=True) for s in states]
    yt, _ = mod(xt, (st[0], st[1]) if name == "LSTM" and st else (st[0] if st else None))
    if not return_sequences:
        yt = yt[:, -1]
    G = rng.standard_normal(tuple(yt.shape))
    (yt * torch.from_numpy(G)).sum().backward()

    # grukit: forward / backward with the same G
    y, cache = layer.forward(x, initial_state=states)
    assert rel_error(y, _np(yt)) < 1e-12
    if with_h0:
        dx, grads, dS = layer.backward_states(G, cache)
    else:
        dx, grads = layer.backward(G, cache)

    assert rel_error(dx, _np(xt.grad)) < 1e-6, "dL/dx"
    tg = torch_params(mod, grad=True)
    want = to_grukit(name, tg)
    if bias and name != "GRU":
        # one grukit bias stands for b_ih + b_hh: each torch bias gets that same gradient
        assert np.allclose(tg[2], tg[3], rtol=0, atol=1e-12)
        want[2] = tg[2]
    keys = ["kernel", "recurrent_kernel"] + (["bias"] if bias else [])
    assert sorted(grads) == sorted(keys)
    for k, w in zip(keys, want):
        assert grads[k].shape == w.shape, k
        err = rel_error(grads[k], w)
        assert err < 1e-6, f"{_kid(kind)} d{k}: rel error {err:.3g}"
        assert np.abs(w).max() > 1e-6                 # a real gradient, not zeros on both sides
    if with_h0:
        for k in range(n_states):
            assert rel_error(dS[k], _np(st[k].grad[0])) < 1e-6, f"dL/dstate{k}"
