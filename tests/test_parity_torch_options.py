"""Live parity with PyTorch (CPU) for the options beyond one plain layer: stacks (num_layers),
bidirectional, h0/c0, packed (variable-length) sequences, and float64 gradients.

torch's layout -> grukit's (Keras) layout:
    nn.GRU   gate blocks r, z, n -> z, r, h; weight_ih (3u, D) -> kernel (D, 3u), weight_hh
             (3u, u) -> recurrent_kernel (u, 3u); bias = [bias_ih, bias_hh] (2, 3u), blocks
             reordered.
             torch's GRU is grukit's reset_after=True cell.
    nn.LSTM  gate blocks i, f, g, o are Keras's i, f, c, o; bias = bias_ih + bias_hh.
    nn.RNN   (tanh) kernel = weight_ih.T, bias = bias_ih + bias_hh.
Layer l > 0 uses the parameter names ``*_l{l}``, the reverse direction ``*_l{l}_reverse``.
A torch stack is a list of grukit layers (return_sequences=True, return_state=True) run in turn; a
bidirectional torch module maps to grukit ``Bidirectional(layer, merge_mode="concat")``.
torch's h_n (and c_n) is ordered [layer0_fwd, layer0_bwd, layer1_fwd, ...].

torch is a hard requirement: if it is missing this module fails to import instead of skipping.
"""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from grukit import layers as gl

from gradcheck import rel_error

B, T, D, U = 4, 7, 5, 6
TOL = 1e-5          # float32 forward
GTOL = 1e-4         # float64 gradients, relative
N_STATES = {"GRU": 1, "LSTM": 2, "RNN": 1}


# ---- torch <-> grukit layout ---------------------------------------------------------------------
def _np(t):
    return t.detach().cpu().numpy()


def _err(a, b):
    """max |a - b|"""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def gru_blocks(a):
    """torch GRU gate blocks r, z, n (axis 0) -> grukit's z, r, h; the swap is its own inverse."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def torch_names(layer_idx, reverse, bias=True):
    sfx = f"_l{layer_idx}" + ("_reverse" if reverse else "")
    names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
    return names + ([f"bias_ih{sfx}", f"bias_hh{sfx}"] if bias else [])


def torch_arrays(mod, layer_idx=0, reverse=False, grad=False):
    """One direction of one layer of a torch module: its weights (or their grads) as arrays."""
    return [_np(getattr(mod, n).grad if grad else getattr(mod, n))
            for n in torch_names(layer_idx, reverse, mod.bias)]


def to_grukit(kind, arrays):
    """torch [w_ih, w_hh, (b_ih, b_hh)] -> grukit [kernel, recurrent_kernel, (bias)]."""
    if kind == "GRU":
        out = [gru_blocks(arrays[0]).T, gru_blocks(arrays[1]).T]
        if len(arrays) == 4:
            out.append(np.stack([gru_blocks(arrays[2]), gru_blocks(arrays[3])]))
        return out
    out = [arrays[0].T, arrays[1].T]
    if len(arrays) == 4:
        out.append(arrays[2] + arrays[3])
    return out


def grads_to_torch(kind, g):
    """grukit grads {kernel, recurrent_kernel, bias} -> the torch layout [w_ih, w_hh, b_ih, b_hh].

    LSTM/RNN: grukit's single bias is b_ih + b_hh, so both torch bias grads equal its grad.
    """
    if kind == "GRU":
        out = [gru_blocks(g["kernel"].T), gru_blocks(g["recurrent_kernel"].T)]
        if "bias" in g:
            out += [gru_blocks(g["bias"][0]), gru_blocks(g["bias"][1])]
        return out
    out = [g["kernel"].T, g["recurrent_kernel"].T]
    if "bias" in g:
        out += [g["bias"], g["bias"]]
    return out


def make_torch(kind, num_layers=1, bidirectional=False, dtype=torch.float32, seed=0, d_in=D):
    torch.manual_seed(seed)
    cls = {"GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM, "RNN": torch.nn.RNN}[kind]
    kw = {"nonlinearity": "tanh"} if kind == "RNN" else {}
    mod = cls(d_in, U, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kw)
    with torch.no_grad():   # biases well away from zero, so a dropped or swapped bias shows
        for name, p in mod.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    return mod.to(dtype)


def grukit_layer(kind, **kw):
    if kind == "GRU":
        return gl.GRU(U, reset_after=True, **kw)
    if kind == "LSTM":
        return gl.LSTM(U, **kw)
    return gl.SimpleRNN(U, activation="tanh", **kw)


def grukit_stack(kind, mod):
    """grukit layers (return_sequences=True, return_state=True) with the torch module's weights."""
    nd = 2 if mod.bidirectional else 1
    stack = []
    for li in range(mod.num_layers):
        d_in = mod.input_size if li == 0 else nd * U
        layer = grukit_layer(kind, return_sequences=True, return_state=True)
        if mod.bidirectional:
            layer = gl.Bidirectional(layer, merge_mode="concat")
        layer.build((None, None, d_in))
        weights = []
        for rev in range(nd):
            weights += to_grukit(kind, torch_arrays(mod, li, bool(rev)))
        layer.set_weights(weights)
        stack.append(layer)
    return stack


def run_stack(stack, x, mask=None, h0=None, c0=None):
    """Run the layers in turn. Returns (last output, [final states of each layer]).

    h0/c0 are torch-shaped (num_layers * num_dirs, B, U); each layer gets its slice as
    initial_state (for Bidirectional: the forward layer's states, then the backward layer's).
    """
    finals = []
    for li, layer in enumerate(stack):
        nd = 2 if isinstance(layer, gl.Bidirectional) else 1
        init = None
        if h0 is not None:
            init = []
            for d in range(nd):
                init.append(h0[li * nd + d])
                if c0 is not None:
                    init.append(c0[li * nd + d])
        y, *states = layer(x, mask=mask, initial_state=init)
        finals.append(states)
        x = y
    return x, finals


def torch_finals(kind, st):
    """torch's h_n (or (h_n, c_n)) as a list of arrays [h_n, (c_n)]."""
    return [_np(s) for s in st] if kind == "LSTM" else [_np(st)]


def check_finals(kind, finals_t, finals_g, nd, lengths=None):
    """Every layer's (and direction's) final h (and c) against torch's h_n (c_n)."""
    n = N_STATES[kind]
    worst = 0.0
    for li, states in enumerate(finals_g):
        assert len(states) == nd * n
        for d in range(nd):
            for k in range(n):
                want = finals_t[k][li * nd + d]
                got = states[d * n + k]
                assert got.shape == (want.shape[0], U)
                err = _err(want, got)
                assert err < TOL, f"{kind} layer {li} dir {d} state {k}: {err:.3g}"
                worst = max(worst, err)
    return worst


def _initial_states(rng, kind, n):
    """Random h0 (and c0 for LSTM) for n = layers x directions, in torch's layout."""
    h0 = rng.standard_normal((n, B, U)).astype(np.float32)
    c0 = rng.standard_normal((n, B, U)).astype(np.float32) if kind == "LSTM" else None
    return h0, c0


def _inputs(rng, b=B, t=T, d=D):
    return rng.standard_normal((b, t, d)).astype(np.float32)


KINDS = ["GRU", "LSTM", "RNN"]


# ---- stacks, bidirectional, initial states -------------------------------------------------------
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_stack_matches_torch(kind, num_layers, bidirectional, with_h0, rng):
    nd = 2 if bidirectional else 1
    mod = make_torch(kind, num_layers, bidirectional)
    stack = grukit_stack(kind, mod)
    x = _inputs(rng)
    h0, c0 = _initial_states(rng, kind, num_layers * nd) if with_h0 else (None, None)
    with torch.no_grad():
        if not with_h0:
            yt, st = mod(torch.from_numpy(x))
        elif kind == "LSTM":
            yt, st = mod(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        else:
            yt, st = mod(torch.from_numpy(x), torch.from_numpy(h0))
    yg, finals = run_stack(stack, x, h0=h0, c0=c0)
    assert yg.shape == (B, T, nd * U) == tuple(yt.shape)
    err = _err(_np(yt), yg)
    assert err < TOL, f"{kind} x{num_layers} bi={bidirectional}: all steps {err:.3g}"
    check_finals(kind, torch_finals(kind, st), finals, nd)
    assert np.std(yg) > 1e-2


def test_initial_state_changes_the_result(rng):
    """Guard for the h0 tests: a nonzero h0 really moves both torch's and grukit's outputs."""
    mod = make_torch("LSTM", 2, True)
    stack = grukit_stack("LSTM", mod)
    x = _inputs(rng)
    h0 = rng.standard_normal((4, B, U)).astype(np.float32)
    c0 = rng.standard_normal((4, B, U)).astype(np.float32)
    y0, _ = run_stack(stack, x)
    y1, _ = run_stack(stack, x, h0=h0, c0=c0)
    assert _err(y0, y1) > 1e-2
    with torch.no_grad():
        yt = _np(mod(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))[0])
    assert _err(yt, y1) < TOL


def test_name_mapping_reaches_every_torch_parameter():
    """The _l{k} / _reverse names cover all of torch's parameters, each exactly once."""
    mod = make_torch("GRU", 3, True)
    names = [n for li in range(3) for rev in (False, True) for n in torch_names(li, rev)]
    assert sorted(names) == sorted(n for n, _ in mod.named_parameters())


# ---- packed (variable-length) sequences ----------------------------------------------------------
LENGTHS = np.array([7, 3, 5, 1])


def _padded(rng, lengths=LENGTHS):
    """Right-padded inputs whose padding is garbage (large values), so ignoring it matters."""
    x = _inputs(rng, b=len(lengths))
    mask = np.arange(T)[None, :] < lengths[:, None]
    x[~mask] = 50.0 * rng.standard_normal(x[~mask].shape).astype(np.float32)
    return x, mask


def _torch_packed(mod, x, lengths, h0=None, c0=None):
    packed = pack_padded_sequence(torch.from_numpy(x), torch.as_tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    if h0 is None:
        out, st = mod(packed)
    elif c0 is not None:
        out, st = mod(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
    else:
        out, st = mod(packed, torch.from_numpy(h0))
    y, lens = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    assert np.array_equal(lens.numpy(), lengths)
    return y, st


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)],
                         ids=["1uni", "2uni", "1bi", "2bi"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequences_match_torch(kind, num_layers, bidirectional, with_h0, rng):
    nd = 2 if bidirectional else 1
    mod = make_torch(kind, num_layers, bidirectional)
    stack = grukit_stack(kind, mod)
    x, mask = _padded(rng)
    h0, c0 = _initial_states(rng, kind, num_layers * nd) if with_h0 else (None, None)
    with torch.no_grad():
        yt, st = _torch_packed(mod, x, LENGTHS, h0, c0)
    yt = _np(yt)
    yg, finals = run_stack(stack, x, mask=mask, h0=h0, c0=c0)
    err = _err(yt[mask], yg[mask])
    assert err < TOL, f"{kind} packed valid steps: {err:.3g}"
    assert np.all(yt[~mask] == 0.0)
    if bidirectional:   # Bidirectional zeroes the outputs at masked steps, as Keras does
        assert np.all(yg[~mask] == 0.0)
    check_finals(kind, torch_finals(kind, st), finals, nd)
    # the padding's garbage would have changed the results: the mask is doing the work
    # (right padding: the final states see it, and with a backward direction the outputs too)
    y_nomask, finals_nomask = run_stack(stack, x, h0=h0, c0=c0)
    assert _err(finals_nomask[-1][0], finals[-1][0]) > 1e-3
    if bidirectional:
        assert _err(y_nomask[mask], yg[mask]) > 1e-3


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", KINDS)
def test_masked_final_state_equals_running_alone(kind, bidirectional, rng):
    """Each sequence's final state (and valid outputs) with a mask = that sequence run unpadded."""
    nd = 2 if bidirectional else 1
    mod = make_torch(kind, 2, bidirectional)
    stack = grukit_stack(kind, mod)
    x, mask = _padded(rng)
    yg, finals = run_stack(stack, x, mask=mask)
    for b, n in enumerate(LENGTHS):
        y1, finals1 = run_stack(stack, x[b:b + 1, :n])
        assert _err(y1[0], yg[b, :n]) < TOL
        for li in range(2):
            for s, s1 in zip(finals[li], finals1[li]):
                assert _err(s[b], s1[0]) < TOL, f"{kind} seq {b} layer {li}"
        assert len(finals1[0]) == nd * N_STATES[kind]


# ---- gradients (float64) -------------------------------------------------------------------------
def _torch_loss(kind, yt, st, G, H, C):
    loss = (yt * torch.from_numpy(G)).sum()
    if kind == "LSTM":
        hn, cn = st
        loss = loss + (hn * torch.from_numpy(H)).sum() + (cn * torch.from_numpy(C)).sum()
    else:
        loss = loss + (st * torch.from_numpy(H)).sum()
    return loss


def _compare_grads(kind, mod, gg, dx, xt, li=0, rev=False, prefix=""):
    """grukit grads (mapped to torch's layout) and dx against torch autograd; returns the worst."""
    got = grads_to_torch(kind, {k[len(prefix):]: v for k, v in gg.items() if k.startswith(prefix)})
    want = torch_arrays(mod, li, rev, grad=True)
    names = torch_names(li, rev, mod.bias)
    worst = 0.0
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, name
        e = rel_error(a, b)
        assert e < GTOL, f"{kind} d{name}: {e:.3g}"
        worst = max(worst, e)
    if dx is not None:
        e = rel_error(dx, _np(xt.grad))
        assert e < GTOL, f"{kind} dx: {e:.3g}"
        worst = max(worst, e)
    return worst


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_torch(kind, with_h0, float64, rng):
    mod = make_torch(kind, 1, False, dtype=torch.float64)
    layer = grukit_layer(kind, return_sequences=True, return_state=True)
    layer.build((None, None, D))
    layer.set_weights(to_grukit(kind, torch_arrays(mod)))
    assert layer.params["kernel"].dtype == np.float64
    n = N_STATES[kind]
    x = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, U))
    H, C = rng.standard_normal((1, B, U)), rng.standard_normal((1, B, U))
    init = [rng.standard_normal((B, U)) for _ in range(n)] if with_h0 else None

    xt = torch.tensor(x, requires_grad=True)
    init_t = None if init is None else [torch.tensor(s[None], requires_grad=True) for s in init]
    if init_t is None:
        yt, st = mod(xt)
    else:
        yt, st = mod(xt, tuple(init_t) if kind == "LSTM" else init_t[0])
    _torch_loss(kind, yt, st, G, H, C).backward()

    out, cache = layer.forward(x, initial_state=init)
    assert _err(out[0], _np(yt)) < 1e-10
    dy = [G, H[0]] + ([C[0]] if kind == "LSTM" else [])
    dx, grads, dstates = layer.backward_states(dy, cache)
    assert set(grads) == {"kernel", "recurrent_kernel", "bias"}
    _compare_grads(kind, mod, grads, dx, xt)
    if init_t is not None:
        for k in range(n):
            e = rel_error(dstates[k], _np(init_t[k].grad[0]))
            assert e < GTOL, f"{kind} d(initial state {k}): {e:.3g}"


def _bidir_pair(dtype=torch.float64):
    mod = make_torch("GRU", 1, True, dtype=dtype)
    layer = grukit_stack("GRU", mod)[0]
    return mod, layer


def test_bidirectional_gru_gradients_match_torch(float64, rng):
    mod, layer = _bidir_pair()
    assert layer.params["forward_kernel"].dtype == np.float64
    x = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, 2 * U))
    H = rng.standard_normal((2, B, U))
    h0 = rng.standard_normal((2, B, U))

    xt = torch.tensor(x, requires_grad=True)
    yt, st = mod(xt, torch.tensor(h0))
    _torch_loss("GRU", yt, st, G, H, None).backward()

    out, cache = layer.forward(x, initial_state=[h0[0], h0[1]])
    assert _err(out[0], _np(yt)) < 1e-10
    dx, grads = layer.backward([G, H[0], H[1]], cache)
    assert len(grads) == 6
    _compare_grads("GRU", mod, grads, dx, xt, rev=False, prefix="forward_")
    _compare_grads("GRU", mod, grads, None, xt, rev=True, prefix="backward_")


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_gradients_match_torch(kind, bidirectional, with_h0, float64, rng):
    """Packed sequences vs a mask (GRU, and LSTM and RNN too). grukit's unidirectional output
    repeats the last state at masked steps where torch pads with zeros, so G is zero there (torch's
    padded outputs carry no gradient either)."""
    nd, n = (2 if bidirectional else 1), N_STATES[kind]
    mod = make_torch(kind, 1, bidirectional, dtype=torch.float64)
    layer = grukit_stack(kind, mod)[0]
    x = rng.standard_normal((B, T, D))
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    x[~mask] = 50.0 * rng.standard_normal(x[~mask].shape)
    G = rng.standard_normal((B, T, nd * U)) * mask[:, :, None]
    H, C = rng.standard_normal((nd, B, U)), rng.standard_normal((nd, B, U))
    init_t = [torch.tensor(rng.standard_normal((nd, B, U)), requires_grad=True)
              for _ in range(n)] if with_h0 else None

    xt = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.as_tensor(LENGTHS), batch_first=True,
                                  enforce_sorted=False)
    if init_t is None:
        out_t, st = mod(packed)
    else:
        out_t, st = mod(packed, tuple(init_t) if kind == "LSTM" else init_t[0])
    yt, _ = pad_packed_sequence(out_t, batch_first=True, total_length=T)
    _torch_loss(kind, yt, st, G, H, C).backward()

    # grukit: per direction d, the states [h (, c)]; Bidirectional takes forward's then backward's
    init = None if init_t is None else [_np(s[d]) for d in range(nd) for s in init_t]
    dfinal = [a[d] for d in range(nd) for a in ([H, C] if kind == "LSTM" else [H])]
    out, cache = layer.forward(x, mask=mask, initial_state=init)
    assert _err(out[0][mask], _np(yt)[mask]) < 1e-10
    if bidirectional:
        dx, grads = layer.backward([G] + dfinal, cache)
        _compare_grads(kind, mod, grads, dx, xt, rev=False, prefix="forward_")
        _compare_grads(kind, mod, grads, None, xt, rev=True, prefix="backward_")
    else:
        dx, grads, dstates = layer.backward_states([G] + dfinal, cache)
        _compare_grads(kind, mod, grads, dx, xt)
        for k in range(n if init_t is not None else 0):
            e = rel_error(dstates[k], _np(init_t[k].grad[0]))
            assert e < GTOL, f"{kind} packed d(initial state {k}): {e:.3g}"
    # no gradient reaches the padding in either library
    assert np.all(dx[~mask] == 0.0)
    assert np.all(_np(xt.grad)[~mask] == 0.0)
