"""grukit.interop.torch: state dicts of nn.GRU / nn.LSTM / nn.RNN <-> grukit layers, live.

Parity runs real torch modules (batch_first=True) against a grukit Sequential of the converted
layers; round trips compare tensors exactly; every refusal and every loading error is checked for a
message that names what it found. torch and safetensors are test requirements: no skips.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.torch
import torch

from grukit.interop.torch import from_torch, to_torch
from grukit.layers import GRU, LSTM, Bidirectional, Dense, SimpleRNN
from grukit.models import Sequential

B, T, D, U = 3, 7, 4, 5
KINDS = ["gru", "lstm", "rnn", "rnn_relu"]
TOL = dict(rtol=1e-5, atol=1e-5)


def torch_module(kind, num_layers=1, bidirectional=False, bias=True, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(num_layers=num_layers, bias=bias, batch_first=True, bidirectional=bidirectional)
    if kind == "gru":
        return torch.nn.GRU(D, U, **args, **kw)
    if kind == "lstm":
        return torch.nn.LSTM(D, U, **args, **kw)
    return torch.nn.RNN(D, U, nonlinearity="relu" if kind == "rnn_relu" else "tanh", **args)


def torch_output(mod, x):
    with torch.no_grad():
        return mod(torch.from_numpy(x))[0].numpy()


def inputs(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype("float32")


def numpy_state(mod):
    return {k: v.numpy().copy() for k, v in mod.state_dict().items()}


def grukit_stack(kind, num_layers=2, bidirectional=False, bias=True, seed=0):
    """Built grukit layers with random weights (biases too), stacked as torch stacks them."""
    rng = np.random.default_rng(seed)
    layers, width = [], D
    for _ in range(num_layers):
        if kind == "gru":
            layer = GRU(U, use_bias=bias, return_sequences=True)
        elif kind == "lstm":
            layer = LSTM(U, use_bias=bias, return_sequences=True)
        else:
            layer = SimpleRNN(U, activation="relu" if kind == "rnn_relu" else "tanh",
                              use_bias=bias, return_sequences=True)
        if bidirectional:
            layer = Bidirectional(layer)
        layer.build((None, None, width))
        layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32")
                           for w in layer.get_weights()])
        layers.append(layer)
        width = U * (2 if bidirectional else 1)
    return layers


GRID = [(kind, n, bi, bias) for kind in KINDS for n in (1, 2) for bi in (False, True)
        for bias in (True, False)]


def _gid(case):
    kind, n, bi, bias = case
    return f"{kind}-l{n}{'-bi' if bi else ''}{'' if bias else '-nobias'}"


# ---- torch -> grukit: outputs ------------------------------------------------------------------
@pytest.mark.parametrize("case", GRID, ids=_gid)
def test_output_parity_from_module(case):
    kind, n, bi, bias = case
    mod = torch_module(kind, n, bi, bias)
    layers = from_torch(mod)
    assert len(layers) == n
    assert all(isinstance(layer, Bidirectional) == bi for layer in layers)
    x = inputs()
    y = Sequential(layers)(x)
    assert y.shape == (B, T, U * (2 if bi else 1))
    np.testing.assert_allclose(y, torch_output(mod, x), **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_output_parity_from_numpy_state_dict_stacked_calls(kind):
    mod = torch_module(kind, num_layers=2, bidirectional=True)
    layers = from_torch(numpy_state(mod), cell="rnn_relu" if kind == "rnn_relu" else None)
    x = inputs(2)
    h = x
    for layer in layers:
        h = layer(h)
    np.testing.assert_allclose(h, torch_output(mod, x), **TOL)


def test_cell_types_and_options_are_inferred():
    layers = from_torch(torch_module("gru", 2, bidirectional=True))
    inner = layers[0].forward_layer
    assert isinstance(inner, GRU) and inner.reset_after and inner.units == U
    assert layers[0].merge_mode == "concat"
    assert layers[1].forward_layer.params["kernel"].shape == (2 * U, 3 * U)
    assert isinstance(from_torch(torch_module("lstm"))[0], LSTM)
    rnn = from_torch(numpy_state(torch_module("rnn")))[0]
    assert isinstance(rnn, SimpleRNN) and rnn.cell.activation.name == "tanh"
    relu = from_torch(torch_module("rnn_relu"))[0]   # the module says relu
    assert relu.cell.activation.name == "relu"
    no_bias = from_torch(torch_module("lstm", bias=False))[0]
    assert not no_bias.use_bias and "bias" not in no_bias.params
    assert all(layer.return_sequences for layer in layers)


def test_last_step_by_return_sequences_false():
    mod = torch_module("lstm", num_layers=2)
    layers = from_torch(mod)
    layers[-1].return_sequences = False
    x = inputs(3)
    np.testing.assert_allclose(Sequential(layers)(x), torch_output(mod, x)[:, -1], **TOL)


def test_bidirectional_final_states_are_torch_h_n():
    mod = torch_module("gru", num_layers=2, bidirectional=True)
    layers = from_torch(mod)
    last = layers[-1]
    for layer in (last, last.forward_layer, last.backward_layer):
        layer.return_sequences = False
    x = inputs(3)
    with torch.no_grad():
        h_n = mod(torch.from_numpy(x))[1].numpy()          # (num_layers * 2, B, U)
    np.testing.assert_allclose(Sequential(layers)(x), np.concatenate([h_n[-2], h_n[-1]], -1),
                               **TOL)


# ---- files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ext", [".pt", ".pth"])
def test_load_from_pt_file(kind, ext, tmp_path):
    mod = torch_module(kind, num_layers=2, bidirectional=True)
    path = tmp_path / f"model{ext}"
    torch.save(mod.state_dict(), path)
    cell = "rnn_relu" if kind == "rnn_relu" else None
    x = inputs(4)
    for source in (path, str(path)):
        y = Sequential(from_torch(source, cell=cell))(x)
        np.testing.assert_allclose(y, torch_output(mod, x), **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_load_from_safetensors_file(kind, tmp_path):
    mod = torch_module(kind, num_layers=2, bidirectional=True, bias=kind != "lstm")
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(mod.state_dict(), str(path))
    x = inputs(5)
    y = Sequential(from_torch(path, cell="rnn_relu" if kind == "rnn_relu" else None))(x)
    np.testing.assert_allclose(y, torch_output(mod, x), **TOL)


# ---- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", GRID, ids=_gid)
def test_round_trip_torch_grukit_torch(case):
    kind, n, bi, bias = case
    mod = torch_module(kind, n, bi, bias)
    sd = numpy_state(mod)
    if kind != "gru":
        for k in sd:   # grukit keeps b_ih + b_hh; with b_hh = 0 the sum is b_ih exactly
            if k.startswith("bias_hh"):
                sd[k][...] = 0.0
    back = to_torch(from_torch(mod if kind == "gru" else sd,
                               cell="rnn_relu" if kind == "rnn_relu" else None))
    assert list(back) == list(sd)          # torch's names, in torch's order
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


@pytest.mark.parametrize("kind", ["lstm", "rnn", "rnn_relu"])
def test_round_trip_sums_two_biases(kind):
    """LSTM/RNN: the weights come back exactly, bias_ih holds b_ih + b_hh and bias_hh is zero."""
    mod = torch_module(kind, num_layers=2, bidirectional=True)
    sd = numpy_state(mod)
    back = to_torch(from_torch(mod))
    for k in sd:
        if k.startswith("weight"):
            np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
        elif k.startswith("bias_ih"):
            np.testing.assert_array_equal(back[k], sd[k] + sd[k.replace("_ih", "_hh")])
        else:
            np.testing.assert_array_equal(back[k], np.zeros_like(sd[k]))
    mod2 = torch_module(kind, num_layers=2, bidirectional=True, seed=9)
    mod2.load_state_dict(to_torch(from_torch(mod), as_tensors=True))
    x = inputs(6)
    np.testing.assert_allclose(torch_output(mod2, x), torch_output(mod, x), **TOL)


@pytest.mark.parametrize("case", [c for c in GRID if c[1] == 2], ids=_gid)
def test_round_trip_grukit_torch_grukit(case):
    kind, n, bi, bias = case
    layers = grukit_stack(kind, n, bi, bias)
    sd = to_torch(layers)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    back = from_torch(sd, cell="rnn_relu" if kind == "rnn_relu" else None)
    for a, b in zip(layers, back):
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("case", [c for c in GRID if c[1] == 2], ids=_gid)
def test_export_output_parity(case):
    kind, n, bi, bias = case
    layers = grukit_stack(kind, n, bi, bias, seed=3)
    sd = to_torch(Sequential(layers), as_tensors=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    mod = torch_module(kind, n, bi, bias, seed=5)
    mod.load_state_dict(sd)   # strict: the keys are exactly torch's
    x = inputs(7)
    np.testing.assert_allclose(torch_output(mod, x), Sequential(layers)(x), **TOL)


# ---- errors on the way in ----------------------------------------------------------------------
def test_wrong_shape_names_key_and_both_shapes():
    sd = numpy_state(torch_module("gru", num_layers=2))
    sd["weight_ih_l1"] = np.zeros((3 * U, U + 2), "float32")
    with pytest.raises(ValueError, match=r"weight_ih_l1") as e:
        from_torch(sd)
    assert f"{(3 * U, U + 2)}" in str(e.value) and f"{(3 * U, U)}" in str(e.value)
    sd = numpy_state(torch_module("lstm", bidirectional=True))
    sd["bias_hh_l0_reverse"] = torch.zeros(4 * U + 1)   # a tensor among arrays
    with pytest.raises(ValueError, match=r"bias_hh_l0_reverse") as e:
        from_torch(sd)
    assert f"{(4 * U + 1,)}" in str(e.value) and f"{(4 * U,)}" in str(e.value)


def test_unreadable_recurrent_shape_and_wrong_cell():
    sd = numpy_state(torch_module("gru"))
    sd["weight_hh_l0"] = np.zeros((7, U), "float32")
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(7, 5\)"):
        from_torch(sd)
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(15, 5\), expected \(20, 5\)"):
        from_torch(numpy_state(torch_module("gru")), cell="lstm")
    with pytest.raises(ValueError, match="cell must be one of"):
        from_torch(numpy_state(torch_module("gru")), cell="GRU")
    with pytest.raises(ValueError, match="cell='rnn' but the module is an nn.RNN \\(relu\\)"):
        from_torch(torch_module("rnn_relu"), cell="rnn")


@pytest.mark.parametrize("key", ["weight_hh_l0", "bias_hh_l1", "weight_ih_l0_reverse"])
def test_missing_key_is_named(key):
    sd = numpy_state(torch_module("gru", num_layers=2, bidirectional=True))
    del sd[key]
    with pytest.raises(ValueError, match=rf"missing key\(s\) \['{key}'\]"):
        from_torch(sd)


def test_unexpected_keys_and_other_sources(tmp_path):
    sd = {f"rnn.{k}": v for k, v in torch_module("gru").state_dict().items()}
    with pytest.raises(ValueError, match=r"unexpected key.*prefixed by 'rnn\.'"):
        from_torch(sd)
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch_module("lstm", proj_size=2))
    with pytest.raises(ValueError, match="empty"):
        from_torch({})
    with pytest.raises(ValueError, match="Linear module"):
        from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="got a list"):
        from_torch([1, 2])
    with pytest.raises(ValueError, match="batch_first"):
        from_torch(torch_module("gru"), batch_first="yes")
    sd = numpy_state(torch_module("gru"))
    sd["weight_ih_l0"][0, 0] = np.nan
    with pytest.raises(ValueError, match="weight_ih_l0 holds NaN"):
        from_torch(sd)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"extension '\.npz'"):
        from_torch(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no file"):
        from_torch(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        from_torch(bad)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="could not read"):
        from_torch(bad)
    whole = tmp_path / "module.pt"
    torch.save(torch_module("gru"), whole)      # the module, not its state dict
    with pytest.raises(ValueError, match="state_dict"):
        from_torch(whole)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="holds a Tensor, expected a state dict"):
        from_torch(tensor)


# ---- refusals on the way out -------------------------------------------------------------------
def _built(layer, width=D):
    layer.build((None, None, width))
    return layer


REFUSED = [
    ("reset_after", lambda: [_built(GRU(U, reset_after=False))], "reset_after=False"),
    ("gru-hard_sigmoid", lambda: [_built(GRU(U, recurrent_activation="hard_sigmoid"))],
     "recurrent_activation='hard_sigmoid'"),
    ("lstm-hard_sigmoid", lambda: [_built(LSTM(U, recurrent_activation="hard_sigmoid"))],
     "recurrent_activation='hard_sigmoid'"),
    ("gru-relu", lambda: [_built(GRU(U, activation="relu"))], "activation='relu'"),
    ("lstm-softsign", lambda: [_built(LSTM(U, activation="softsign"))], "activation='softsign'"),
    ("rnn-elu", lambda: [_built(SimpleRNN(U, activation="elu"))], "activation='elu'"),
    ("go_backwards", lambda: [_built(GRU(U, go_backwards=True))],
     "go_backwards=True; torch reads"),
    ("bidi-forward-backwards", lambda: [_built(Bidirectional(LSTM(U, go_backwards=True)))],
     "forward_layer has go_backwards=True"),
    ("merge_mode", lambda: [_built(Bidirectional(GRU(U), merge_mode="sum"))],
     "merge_mode='sum'"),
    ("mixed-cells", lambda: [_built(GRU(U)), _built(LSTM(U), U)],
     "cell type nn.LSTM but layer 0 has nn.GRU"),
    ("mixed-rnn", lambda: [_built(SimpleRNN(U)), _built(SimpleRNN(U, activation="relu"), U)],
     r"cell type nn.RNN \(relu\) but layer 0 has nn.RNN \(tanh\)"),
    ("mixed-units", lambda: [_built(GRU(U)), _built(GRU(U + 1), U)],
     f"units {U + 1} but layer 0 has {U}"),
    ("bidi-units", lambda: [_built(Bidirectional(GRU(U), backward_layer=GRU(U + 1,
                                                                           go_backwards=True)))],
     "directions that differ"),
    ("mixed-bidirectional", lambda: [_built(GRU(U)), _built(Bidirectional(GRU(U)), U)],
     "Bidirectional True but layer 0 has False"),
    ("mixed-bias", lambda: [_built(GRU(U)), _built(GRU(U, use_bias=False), U)],
     "use_bias False but layer 0 has True"),
    ("wrong-width", lambda: [_built(GRU(U)), _built(GRU(U), U + 3)],
     f"reads {U + 3} features, expected {U}"),
    ("not-built", lambda: [GRU(U)], "not built"),
    ("dense", lambda: [_built(GRU(U)), Dense(2)], "is a Dense"),
    ("empty", lambda: [], "no layers"),
]


@pytest.mark.parametrize("make, message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_export_refuses_what_torch_cannot_express(make, message):
    with pytest.raises(ValueError, match=message):
        to_torch(make())


# ---- optional imports --------------------------------------------------------------------------
def _run(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_numpy_only_use_does_not_import_torch(tmp_path):
    path = tmp_path / "w.safetensors"
    out = _run(f"""
        import sys
        import numpy as np
        import grukit.interop.torch as m
        from safetensors.numpy import save_file
        rng = np.random.default_rng(0)
        sd = {{}}
        for k in range(2):
            for s in ("", "_reverse"):
                d = 3 if k == 0 else 8
                sd.update({{f"weight_ih_l{{k}}{{s}}": rng.normal(size=(12, d)).astype("float32"),
                           f"weight_hh_l{{k}}{{s}}": rng.normal(size=(12, 4)).astype("float32"),
                           f"bias_ih_l{{k}}{{s}}": rng.normal(size=12).astype("float32"),
                           f"bias_hh_l{{k}}{{s}}": rng.normal(size=12).astype("float32")}})
        layers = m.from_torch(sd)
        back = m.to_torch(layers)
        assert all(np.array_equal(back[k], sd[k]) for k in sd)
        save_file(sd, {str(path)!r})
        assert len(m.from_torch({str(path)!r})) == 2
        print("torch" in sys.modules)
    """)
    assert out.strip() == "False"


def test_missing_packages_name_the_install_command():
    out = _run("""
        import sys
        sys.modules["torch"] = None          # as if torch were not installed
        sys.modules["safetensors"] = None
        from grukit.interop.torch import from_torch, to_torch
        from grukit.layers import GRU
        gru = GRU(2)
        gru.build((None, None, 3))
        for call in (lambda: from_torch("w.pt"), lambda: from_torch("w.safetensors"),
                     lambda: to_torch([gru], as_tensors=True)):
            try:
                call()
            except ImportError as e:
                print(e)
    """)
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    assert "pip install torch" in lines[0]
    assert "pip install safetensors" in lines[1]
    assert "pip install torch" in lines[2]
