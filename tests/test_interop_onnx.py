"""grukit.interop.onnx: export to ONNX, run on onnxruntime, load back; load torch.onnx.export files.

Every exported model has random weights and biases, passes onnx.checker, gives onnxruntime (CPU)
outputs equal to grukit's predict within 1e-5 at two batch sizes (the batch axis is dynamic), and
loads back into a grukit model whose predict equals the original's within 1e-6.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from grukit import config
from grukit.interop import onnx as gonnx
from grukit.layers import (GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Input,
                           Masking, SimpleRNN)
from grukit.models import Sequential

T, D = 6, 4
BATCHES = (3, 7)
ORT_TOL = 1e-5
LOAD_TOL = 1e-6
VOCAB = 11


# ---- helpers ----------------------------------------------------------------------------------
def randomize(model, seed=0):
    """Random weights and biases (no zeros), scaled to keep the activations in range."""
    rng = np.random.default_rng(seed)
    model._ensure_built()
    model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in model.get_weights()])
    return model


def inputs(model, batch, seed):
    rng = np.random.default_rng(100 + seed)
    if model.layers[0].integer_input:
        return rng.integers(0, VOCAB, size=(batch, T)).astype(np.int64)
    shape = tuple(T if d is None else d for d in model.input_shape[1:])
    return rng.normal(size=(batch,) + shape).astype(config.dtype())


def run_ort(path, x):
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def max_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_round_trip(model, tmp_path, same_layers=True, **export_kwargs):
    """Export, check, compare onnxruntime and the loaded model with grukit. Returns the loaded
    model and the largest errors seen (onnxruntime, load). ``same_layers``: the loaded model has
    the original's layer types (Dropout, which writes nothing, aside)."""
    randomize(model)
    path = tmp_path / "model.onnx"
    gonnx.export(model, path, **export_kwargs)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    loaded = gonnx.load(path)
    errs = [0.0, 0.0]
    for seed, batch in enumerate(BATCHES):
        x = inputs(model, batch, seed)
        want = model.predict(x)
        errs[0] = max(errs[0], max_err(run_ort(path, x), want))
        errs[1] = max(errs[1], max_err(loaded.predict(x), want))
    assert errs[0] <= ORT_TOL, f"onnxruntime differs from grukit by {errs[0]}"
    assert errs[1] <= LOAD_TOL, f"the loaded model differs from the original by {errs[1]}"
    if same_layers:
        assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers
                                                     if not isinstance(l, Dropout)]
    return loaded, errs


def rnn(cls, **kwargs):
    if cls == "GRU_v1":
        return GRU(reset_after=False, **kwargs)
    return {"GRU": GRU, "LSTM": LSTM, "SimpleRNN": SimpleRNN}[cls](**kwargs)


CELLS = ["GRU", "GRU_v1", "LSTM", "SimpleRNN"]


# ---- one recurrent layer ------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent_layer(cell, return_sequences, go_backwards, tmp_path):
    time = None if go_backwards else T     # a symbolic and a fixed time axis
    layer = rnn(cell, units=5, return_sequences=return_sequences, go_backwards=go_backwards,
                input_shape=(time, D))
    model = Sequential([layer])
    loaded, _ = check_round_trip(model, tmp_path)
    got = loaded.layers[0]
    assert (got.return_sequences, got.go_backwards) == (return_sequences, go_backwards)
    assert got.name == layer.name
    if isinstance(layer, GRU):
        assert got.reset_after == layer.reset_after
    assert loaded.input_shape == (None, time, D)


def test_export_uses_native_nodes(tmp_path):
    model = randomize(Sequential([GRU(5, input_shape=(T, D), return_sequences=True),
                                  GRU(3, reset_after=False, go_backwards=True), Dense(2)]))
    gonnx.export(model, tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GRU") == 2 and ops.count("Transpose") == 1     # stays time-major between
    grus = [n for n in graph.node if n.op_type == "GRU"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in grus]
    assert [a["linear_before_reset"] for a in attrs] == [1, 0]
    assert attrs[1]["direction"] == b"reverse"
    assert graph.input[0].name == "input" and graph.output[0].name == "output"
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == T and dims[2].dim_value == D


# ---- Bidirectional ------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional(cell, merge_mode, return_sequences, tmp_path):
    layer = Bidirectional(rnn(cell, units=4, return_sequences=return_sequences),
                          merge_mode=merge_mode, input_shape=(None, D))
    loaded, _ = check_round_trip(Sequential([layer]), tmp_path)
    got = loaded.layers[0]
    assert got.merge_mode == merge_mode and got.return_sequences == return_sequences
    assert got.backward_layer.go_backwards and not got.forward_layer.go_backwards


# ---- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: GRU(5, activation="softsign", recurrent_activation="hard_sigmoid"),
    lambda: GRU(5, activation="relu", recurrent_activation="sigmoid", reset_after=False),
    lambda: GRU(5, activation="linear", recurrent_activation="softplus"),
    lambda: LSTM(5, activation="elu", recurrent_activation="hard_sigmoid"),
    lambda: LSTM(5, activation="softsign", recurrent_activation="sigmoid"),
    lambda: SimpleRNN(5, activation="relu"),
    lambda: SimpleRNN(5, activation="linear"),
    lambda: SimpleRNN(5, activation="softplus"),
    lambda: Bidirectional(GRU(4, activation="softsign", recurrent_activation="hard_sigmoid",
                              return_sequences=True)),
    lambda: Bidirectional(LSTM(4, activation="elu"), merge_mode="sum"),
], ids=["gru-softsign-hard", "gru1-relu", "gru-linear-softplus", "lstm-elu-hard",
        "lstm-softsign", "rnn-relu", "rnn-linear", "rnn-softplus", "bi-gru-softsign",
        "bi-lstm-elu"])
def test_recurrent_activations(make, tmp_path):
    layer = make()
    loaded, _ = check_round_trip(Sequential([Input(shape=(T, D)), layer]), tmp_path)
    inner = loaded.layers[0].forward_layer if isinstance(layer, Bidirectional) else loaded.layers[0]
    want = layer.forward_layer if isinstance(layer, Bidirectional) else layer
    assert inner.cell.activation.name == want.cell.activation.name
    assert inner.cell.recurrent_activation.name == want.cell.recurrent_activation.name


DENSE_ACTS = ["linear", "tanh", "sigmoid", "relu", "softmax", "hard_sigmoid", "elu", "selu",
              "softplus", "softsign"]


@pytest.mark.parametrize("activation", DENSE_ACTS)
def test_dense_2d_activations(activation, tmp_path):
    model = Sequential([LSTM(5, input_shape=(T, D)), Dense(3, activation=activation)])
    loaded, _ = check_round_trip(model, tmp_path)
    assert loaded.layers[1].activation.name == activation
    ops = [n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node]
    assert "Gemm" in ops


@pytest.mark.parametrize("activation", DENSE_ACTS)
def test_dense_3d_and_activation_layer(activation, tmp_path):
    model = Sequential([GRU(5, return_sequences=True, input_shape=(None, D)),
                        Dense(4, activation=activation), Dense(3, use_bias=False),
                        Activation(activation)])
    # the Activation comes back inside the bias-free Dense before it (linear: not at all)
    loaded, _ = check_round_trip(model, tmp_path, same_layers=False)
    assert [type(l) for l in loaded.layers] == [GRU, Dense, Dense]
    assert [l.activation.name for l in loaded.layers[1:]] == [activation, activation]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node]
    assert "MatMul" in ops and "Gemm" not in ops


# ---- stacks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: [GRU(6, return_sequences=True, input_shape=(T, D)),
             LSTM(5, return_sequences=True, go_backwards=True), Dropout(0.3),
             SimpleRNN(4), Dense(3, activation="tanh"), Dense(1)],
    lambda: [Bidirectional(LSTM(4, return_sequences=True), input_shape=(None, D)),
             GRU(5, reset_after=False, return_sequences=True), Dense(4, activation="relu"),
             Dropout(0.2), Dense(2, activation="softmax")],
    lambda: [Input(shape=(None, D)), Dense(6, activation="tanh"), GRU(5, go_backwards=True),
             Dense(2, use_bias=False, activation="relu"), Activation("sigmoid")],
    lambda: [GRU(5, use_bias=False, return_sequences=True, input_shape=(T, D)),
             Bidirectional(SimpleRNN(3, use_bias=False), merge_mode="mul"), Dense(2)],
], ids=["gru-lstm-rnn-dense", "bi-gru-dense3d", "dense-first", "no-bias"])
def test_stacks(make, tmp_path):
    check_round_trip(Sequential(make()), tmp_path)


@pytest.mark.parametrize("make", [
    lambda: [Embedding(VOCAB, 4, input_shape=(None,)), GRU(5), Dense(2, activation="tanh")],
    lambda: [Embedding(VOCAB, 4, input_shape=(T,)),
             Bidirectional(LSTM(3, return_sequences=True), merge_mode="ave"),
             Dense(VOCAB, activation="softmax")],
    lambda: [Embedding(VOCAB, 3, input_shape=(None,)), SimpleRNN(4, go_backwards=True,
                                                                 return_sequences=True)],
], ids=["emb-gru", "emb-bilstm-softmax", "emb-rnn-backwards"])
def test_embedding_first(make, tmp_path):
    model = Sequential(make())
    check_round_trip(model, tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.node[0].op_type == "Gather"


@pytest.mark.parametrize("opset", [13, 21])
def test_other_opsets(opset, tmp_path):
    model = Sequential([Bidirectional(GRU(4, return_sequences=True), merge_mode="sum",
                                      input_shape=(None, D)), Dense(2, activation="softmax")])
    check_round_trip(model, tmp_path, opset=opset)
    assert onnx.load(str(tmp_path / "model.onnx")).opset_import[0].version == opset


def test_float64_model_exports_float32(float64, tmp_path):
    model = Sequential([LSTM(5, return_sequences=True, input_shape=(T, D)), GRU(3), Dense(2)])
    randomize(model)
    gonnx.export(model, tmp_path / "m.onnx")
    x = inputs(model, 5, 0)
    got = run_ort(tmp_path / "m.onnx", x.astype(np.float32))
    assert max_err(got, model.predict(x)) < ORT_TOL


def test_load_accepts_proto_and_bytes(tmp_path):
    model = randomize(Sequential([GRU(4, input_shape=(T, D)), Dense(2)]))
    gonnx.export(model, tmp_path / "m.onnx")
    x = inputs(model, 3, 0)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    for source in (proto, proto.SerializeToString(), str(tmp_path / "m.onnx")):
        assert max_err(gonnx.load(source).predict(x), model.predict(x)) <= LOAD_TOL


# ---- models exported by PyTorch -----------------------------------------------------------------
class TorchNet(torch.nn.Module):
    """A torch RNN (batch_first), optionally its last step (``y[:, -1]``, or ``h_n[-1]`` with
    last="h_n"), then Linear (+ optional tanh)."""

    def __init__(self, rnn, out, last=True, tanh=True):
        super().__init__()
        self.rnn, self.linear, self.last, self.tanh = rnn, torch.nn.Linear(out, 2), last, tanh

    def forward(self, x):
        y, h = self.rnn(x)
        if self.last == "h_n":
            y = (h[0] if isinstance(h, tuple) else h)[-1]
        elif self.last:
            y = y[:, -1]
        y = self.linear(y)
        return torch.tanh(y) if self.tanh else y


TORCH_CASES = {
    "gru-last-linear-tanh": lambda: TorchNet(torch.nn.GRU(D, 5, batch_first=True), 5),
    "gru-last-linear": lambda: TorchNet(torch.nn.GRU(D, 5, batch_first=True), 5, tanh=False),
    "gru-nobias": lambda: TorchNet(torch.nn.GRU(D, 5, batch_first=True, bias=False), 5),
    "gru-2layers": lambda: TorchNet(torch.nn.GRU(D, 5, num_layers=2, batch_first=True), 5),
    "lstm-2layers": lambda: TorchNet(torch.nn.LSTM(D, 5, num_layers=2, batch_first=True), 5),
    "lstm-h_n": lambda: TorchNet(torch.nn.LSTM(D, 5, batch_first=True), 5, last="h_n"),
    "rnn-relu-seq": lambda: TorchNet(torch.nn.RNN(D, 5, nonlinearity="relu", batch_first=True),
                                     5, last=False),
    "bigru-seq": lambda: TorchNet(torch.nn.GRU(D, 4, batch_first=True, bidirectional=True), 8,
                                  last=False),
}


def torch_export(net, path, dynamic_time=False, **kwargs):
    axes = {0: "batch", 1: "time"} if dynamic_time else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, T, D),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes}, dynamo=False, **kwargs)


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_load_torch_export(case, tmp_path):
    torch.manual_seed(0)
    net = TORCH_CASES[case]().eval()
    path = tmp_path / "torch.onnx"
    torch_export(net, path, dynamic_time=case.startswith("gru-last"))
    model = gonnx.load(path)
    for seed, batch in enumerate(BATCHES):
        x = inputs(model, batch, seed)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        assert max_err(model.predict(x), want) <= ORT_TOL
    if case == "gru-last-linear-tanh":
        gru, dense = model.layers
        assert isinstance(gru, GRU) and gru.reset_after and not gru.return_sequences
        assert isinstance(dense, Dense) and dense.activation.name == "tanh"
        assert model.input_shape == (None, None, D)


def test_load_torch_export_without_constant_folding(tmp_path):
    """Weights reordered by Slice / Concat nodes in the graph are evaluated as constants."""
    torch.manual_seed(1)
    net = TORCH_CASES["gru-last-linear-tanh"]().eval()
    torch_export(net, tmp_path / "t.onnx", do_constant_folding=False)
    model = gonnx.load(tmp_path / "t.onnx")
    x = inputs(model, 3, 0)
    with torch.no_grad():
        assert max_err(model.predict(x), net(torch.from_numpy(x)).numpy()) <= ORT_TOL


def test_grukit_loads_and_reexports_torch_model(tmp_path):
    torch.manual_seed(2)
    net = TORCH_CASES["lstm-2layers"]().eval()
    torch_export(net, tmp_path / "t.onnx")
    model = gonnx.load(tmp_path / "t.onnx")
    gonnx.export(model, tmp_path / "g.onnx")
    x = inputs(model, 4, 0)
    with torch.no_grad():
        assert max_err(run_ort(tmp_path / "g.onnx", x), net(torch.from_numpy(x)).numpy()) <= ORT_TOL


# ---- export refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize("layers, match", [
    (lambda: [Masking(0.0, input_shape=(T, D), name="pad"), GRU(3)],
     r"'pad' \(Masking\) is not supp"),
    (lambda: [GRU(3, return_state=True, input_shape=(T, D))], "return_state=True"),
    (lambda: [GRU(3, stateful=True, input_shape=(T, D))], "stateful=True"),
    (lambda: [Bidirectional(GRU(3), merge_mode=None, input_shape=(T, D))], "merge_mode=None"),
    (lambda: [Bidirectional(GRU(3, go_backwards=True), input_shape=(T, D))], "go_backwards=True"),
    (lambda: [SimpleRNN(3, activation="selu", input_shape=(T, D))],
     r"activation='selu', which ONNX recurrent ops do not offer"),
    (lambda: [Embedding(VOCAB, 3, mask_zero=True, input_shape=(T,)), GRU(3)], "mask_zero=True"),
], ids=["masking", "return_state", "stateful", "merge-none", "bi-backwards", "selu", "mask-zero"])
def test_export_refuses(layers, match, tmp_path):
    model = Sequential(layers())
    with pytest.raises(ValueError, match=match):
        gonnx.export(model, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)     # nothing written, not even a temporary file


def test_export_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="expected a grukit Sequential"):
        gonnx.export(GRU(3), tmp_path / "m.onnx")
    model = Sequential([GRU(3, input_shape=(T, D))])
    with pytest.raises(ValueError, match="opset must be an integer from 13"):
        gonnx.export(model, tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match="input shape is unknown"):
        gonnx.export(Sequential([GRU(3)]), tmp_path / "m.onnx")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    model = randomize(Sequential([GRU(3, input_shape=(T, D))]))
    gonnx.export(model, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        gonnx.export(randomize(Sequential([GRU(4, input_shape=(T, D))]), seed=5), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_missing_onnx_names_pip_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from grukit.models import Sequential\nfrom grukit.layers import GRU\n"
            "import grukit.interop.onnx as g\n"
            "m = Sequential([GRU(2, input_shape=(3, 1))])\n"
            "for call in (lambda: g.export(m, 'x.onnx'), lambda: g.load('x.onnx')):\n"
            "    try:\n        call()\n    except ImportError as e:\n        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    assert out.count("pip install onnx") == 2


# ---- load refusals ------------------------------------------------------------------------------
def graph_model(nodes, inits, in_shape=("batch", T, D), out_shape=("batch", 2), opset=17):
    h = onnx.helper
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                               list(in_shape))],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(out_shape))],
                         [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k)
                          for k, v in inits.items()])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def test_load_reads_reversed_input_as_go_backwards():
    """A forward GRU node fed the time-reversed input is a GRU with go_backwards=True."""
    h, u = onnx.helper, 3
    rng = np.random.default_rng(3)
    inits = {"W": rng.normal(size=(1, 3 * u, D)), "R": rng.normal(size=(1, 3 * u, u)),
             "B": rng.normal(size=(1, 6 * u))}
    ints = {"start": [-1], "end": [np.iinfo(np.int64).min], "axis": [0], "step": [-1], "ax": [1]}
    nodes = [h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             h.make_node("Slice", ["xt", "start", "end", "axis", "step"], ["xr"]),
             h.make_node("GRU", ["xr", "W", "R", "B"], ["Y"], hidden_size=u),
             h.make_node("Squeeze", ["Y", "ax"], ["s"]),
             h.make_node("Transpose", ["s"], ["y"], perm=[1, 0, 2])]
    proto = graph_model(nodes, inits, out_shape=("batch", T, u))
    for k, v in ints.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(v, np.int64), k))
    model = gonnx.load(proto)
    assert model.layers[0].go_backwards and model.layers[0].reset_after is False
    x = np.random.default_rng(4).normal(size=(2, T, D)).astype(np.float32)
    sess = onnxruntime.InferenceSession(proto.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
    assert max_err(model.predict(x), sess.run(None, {"x": x})[0]) <= ORT_TOL


def test_load_refuses_unsupported_op():
    h = onnx.helper
    proto = graph_model([h.make_node("Gemm", ["x", "W"], ["a"], name="fc"),
                         h.make_node("LeakyRelu", ["a"], ["y"], name="leaky", alpha=0.1)],
                        {"W": np.ones((D, 2))}, in_shape=("batch", D))
    with pytest.raises(ValueError, match=r"node 'leaky' \(LeakyRelu\): this operator is not "
                                         "supported"):
        gonnx.load(proto)


def test_load_refuses_branches():
    h = onnx.helper
    proto = graph_model([h.make_node("Gemm", ["x", "W"], ["a"], name="fc"),
                         h.make_node("Tanh", ["a"], ["b"], name="t"),
                         h.make_node("Sigmoid", ["a"], ["c"], name="s"),
                         h.make_node("Mul", ["b", "c"], ["y"], name="gate")],
                        {"W": np.ones((D, 2))}, in_shape=("batch", D))
    with pytest.raises(ValueError, match=r"node 't' \(Tanh\): the graph branches"):
        gonnx.load(proto)


def _lstm_graph(**extra):
    h, u = onnx.helper, 3
    rng = np.random.default_rng(0)
    inits = {"W": rng.normal(size=(1, 4 * u, D)), "R": rng.normal(size=(1, 4 * u, u))}
    ins = ["xt", "W", "R"]
    if "P" in extra:
        inits["B"], inits["P"] = np.zeros((1, 8 * u)), extra.pop("P")
        ins += ["B", "", "", "", "P"]
    nodes = [h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             h.make_node("LSTM", ins, ["", "hh"], name="lstm", hidden_size=u, **extra),
             h.make_node("Squeeze", ["hh", "ax"], ["y"])]
    inits["ax"] = np.array([0])
    proto = graph_model(nodes, {}, out_shape=("batch", u))
    for k, v in inits.items():
        v = np.asarray(v, np.int64 if k == "ax" else np.float32)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(v, k))
    return proto


def test_load_reads_a_hand_made_lstm_and_refuses_its_variants():
    proto = _lstm_graph()
    onnx.checker.check_model(proto)
    model = gonnx.load(proto)
    x = np.random.default_rng(1).normal(size=(3, T, D)).astype(np.float32)
    sess = onnxruntime.InferenceSession(proto.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
    assert max_err(model.predict(x), sess.run(None, {"x": x})[0]) <= ORT_TOL
    with pytest.raises(ValueError, match=r"node 'lstm' \(LSTM\): the peepholes P must be absent"):
        gonnx.load(_lstm_graph(P=np.ones((1, 9))))
    with pytest.raises(ValueError, match=r"node 'lstm' \(LSTM\): input_forget=1"):
        gonnx.load(_lstm_graph(input_forget=1))
    with pytest.raises(ValueError, match="clip attribute"):
        gonnx.load(_lstm_graph(clip=2.0))
    with pytest.raises(ValueError, match=r"recurrent activation LeakyRelu .* no grukit equivalent"):
        gonnx.load(_lstm_graph(activations=["LeakyRelu", "Tanh", "Tanh"]))
    with pytest.raises(ValueError, match=r"HardSigmoid \(alpha=0.2"):
        gonnx.load(_lstm_graph(activations=["HardSigmoid", "Tanh", "Tanh"]))


def test_load_refuses_last_step_of_bidirectional_torch_output(tmp_path):
    torch.manual_seed(0)
    net = TorchNet(torch.nn.GRU(D, 4, batch_first=True, bidirectional=True), 8).eval()
    torch_export(net, tmp_path / "t.onnx")
    with pytest.raises(ValueError, match=r"\(Gather\): taking the last step maps to grukit only "
                                         "right after a one-way recurrent layer"):
        gonnx.load(tmp_path / "t.onnx")


def test_load_refuses_unreadable_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model at all\xff" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        gonnx.load(bad)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        gonnx.load(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="expected a path, bytes or an onnx.ModelProto"):
        gonnx.load(42)
