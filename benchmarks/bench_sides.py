"""The benchmark's workloads and its sides: grukit and the peers, each wrapping the same model.

Every side is built from one :class:`Problem`: the workload's shapes, the cell, grukit's initial
weights in Keras layout, and the batches. The peers load those weights through the mappings below,
so every side starts from the same numbers and sees the same data in the same order.

    PyTorch   GRU: weight_ih = P(kernel)^T, weight_hh = P(recurrent_kernel)^T, bias_ih = P(bias[0]),
              bias_hh = P(bias[1]); P swaps the first two gate blocks (Keras z, r, h <-> torch
              r, z, n). LSTM: the gate orders agree (i, f, c|g, o); weight_ih = kernel^T,
              weight_hh = recurrent_kernel^T, bias_ih = bias, bias_hh = 0.
              Dense: weight = kernel^T. Adam(lr=1e-3, eps=1e-7) to match Keras's defaults.
    Keras     the same layout as grukit: set_weights(grukit's list).
    ONNX      grukit.interop.onnx.export when it is there and its graph reproduces grukit's
              outputs; otherwise the graph is built here: GRU W [1,3H,D] = kernel^T (gates z, r, h),
              R [1,3H,H] = recurrent_kernel^T, B [1,6H] = [bias[0] | bias[1]], linear_before_reset=1;
              LSTM gates reordered to i, o, f, c, B = [bias | 0].

Each side offers ``train(i)`` (one optimizer step on batch i mod n), ``infer()`` (forward on batch 0),
``fit_reset()`` + ``fit(epochs=None)`` (the seed's fit: one shuffled batch per epoch, the permutations shared
by every side) and ``threads(n)``, a context manager that sets the side's thread count.
"""
import contextlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

SEED = 1234          # grukit's weight initialisation and the data generator


@dataclass(frozen=True)
class Workload:
    name: str
    T: int
    B: int
    D: int
    H: int
    ops: tuple                   # from "fit", "train", "infer"
    what: str
    epochs: int = 0              # "fit" only
    out_activation: str = "linear"
    batches: int = 3             # distinct training batches cycled in order


def workloads(quick=False):
    """The workloads by name; ``quick`` keeps the names and shrinks the sizes for the smoke run."""
    if quick:
        return {w.name: w for w in [
            Workload("seed", 4, 6, 1, 8, ("fit",), "seed fit, 5 epochs (quick)", epochs=5,
                     out_activation="tanh"),
            Workload("small", 5, 4, 3, 8, ("train", "infer"), "train step + inference (quick)"),
            Workload("medium", 6, 4, 4, 8, ("train", "infer"), "train step + inference (quick)"),
            Workload("large", 6, 8, 4, 8, ("train", "infer"), "train step + inference (quick)"),
            Workload("latency", 5, 1, 3, 8, ("infer",), "one-sequence inference (quick)"),
        ]}
    return {w.name: w for w in [
        Workload("seed", 4, 6, 1, 32, ("fit",),
                 "X(32) + Dense(1, tanh), adam/mse, 200 epochs on the seed data, one shuffled "
                 "batch per epoch", epochs=200, out_activation="tanh"),
        Workload("small", 50, 32, 8, 64, ("train", "infer"),
                 "one training step (forward, backward, Adam) and inference"),
        Workload("medium", 100, 32, 128, 128, ("train", "infer"),
                 "one training step (forward, backward, Adam) and inference"),
        Workload("large", 100, 64, 256, 256, ("train", "infer"),
                 "one training step (forward, backward, Adam) and inference"),
        Workload("latency", 100, 1, 32, 128, ("infer",), "inference of one sequence"),
    ]}


GATES = {"gru": 3, "lstm": 4}


# ================================================================================================
# the shared problem: weights and data
# ================================================================================================
@dataclass
class Problem:
    wl: Workload
    cell: str
    weights: list                 # grukit's initial weights, Keras layout, float32
    xs: list                      # training batches (B, T, D) float32
    ys: list                      # their targets (B, 1) float32
    perms: list = field(default_factory=list)   # the seed fit's batch order, one per epoch


def grukit_model(wl, cell):
    from grukit.layers import GRU, LSTM, Dense
    from grukit.models import Sequential
    layer = {"gru": GRU, "lstm": LSTM}[cell]
    model = Sequential([layer(wl.H, input_shape=(wl.T, wl.D)),
                        Dense(1, activation=wl.out_activation)])
    model.compile("adam", "mse")
    model.build((None, wl.T, wl.D))
    return model


def make_problem(wl, cell):
    """Deterministic from SEED: a child process rebuilds exactly the same problem."""
    from grukit import config
    from grukit.utils import set_random_seed
    config.set_floatx("float32")
    set_random_seed(SEED)
    weights = [np.asarray(w, np.float32) for w in grukit_model(wl, cell).get_weights()]
    g = np.random.default_rng(SEED)
    if "fit" in wl.ops:
        from grukit.demo import seed_data
        x, y = seed_data()
        xs, ys = [x.astype(np.float32)], [y.astype(np.float32).reshape(-1, 1)]
        perms = [g.permutation(len(x)) for _ in range(wl.epochs)]
    else:
        n = wl.batches if "train" in wl.ops else 1
        xs = [g.standard_normal((wl.B, wl.T, wl.D), dtype=np.float32) for _ in range(n)]
        ys = [g.standard_normal((wl.B, 1), dtype=np.float32) for _ in range(n)]
        perms = []
    return Problem(wl, cell, weights, xs, ys, perms)


# ================================================================================================
# sides
# ================================================================================================
class Side:
    name = "side"
    label = "side"
    thread_options = (1, 2)
    trains = True

    def threads(self, n):
        return contextlib.nullcontext()

    def output(self):
        """Forward on batch 0 as a NumPy (B, 1) array, for the parity check."""
        raise NotImplementedError

    def predict_seed(self, x):
        raise NotImplementedError


class GrukitSide(Side):
    """grukit: train_on_batch, predict(x, batch_size=B); BLAS threads set with threadpoolctl."""
    name, label = "grukit", "grukit"

    def __init__(self, problem, controller=None):
        self.p = problem
        self.controller = controller
        self.model = self._fresh()

    def _fresh(self):
        model = grukit_model(self.p.wl, self.p.cell)
        model.set_weights(self.p.weights)
        return model

    def threads(self, n):
        if self.controller is None:
            return contextlib.nullcontext()
        return self.controller.limit(limits=n, user_api="blas")

    def train(self, i):
        k = i % len(self.p.xs)
        self.model.train_on_batch(self.p.xs[k], self.p.ys[k])

    def infer(self):
        return self.model.predict(self.p.xs[0], batch_size=self.p.wl.B, verbose=0)

    def output(self):
        return np.asarray(self.infer())

    def fit_reset(self):
        self.model = self._fresh()

    def fit(self, epochs=None):
        x, y, model = self.p.xs[0], self.p.ys[0], self.model
        for perm in self.p.perms[:epochs]:
            model.train_on_batch(x[perm], y[perm])

    def predict_seed(self, x):
        return float(self.model.predict(x, verbose=0).ravel()[0])


def _swap_zr(a, H):
    """Swap the first two gate blocks along axis 0 (Keras z, r, h <-> torch r, z, n)."""
    return np.concatenate([a[H:2 * H], a[:H], a[2 * H:]], axis=0)


def torch_state(weights, cell, H):
    """grukit's (Keras's) weight list -> {name: array} for the torch module below."""
    kernel, rec, bias, dense_w, dense_b = weights
    if cell == "gru":
        w_ih, w_hh = _swap_zr(kernel.T, H), _swap_zr(rec.T, H)
        b_ih, b_hh = _swap_zr(bias[0], H), _swap_zr(bias[1], H)
    else:
        w_ih, w_hh, b_ih, b_hh = kernel.T, rec.T, bias, np.zeros_like(bias)
    return {"rnn.weight_ih_l0": w_ih, "rnn.weight_hh_l0": w_hh, "rnn.bias_ih_l0": b_ih,
            "rnn.bias_hh_l0": b_hh, "dense.weight": dense_w.T, "dense.bias": dense_b}


class TorchSide(Side):
    """PyTorch CPU eager: nn.GRU / nn.LSTM (batch_first) + nn.Linear, Adam; set_num_threads."""
    name, label = "pytorch", "PyTorch"

    def __init__(self, problem):
        import torch
        self.torch = torch
        self.p = problem
        self.xs = [torch.from_numpy(x) for x in problem.xs]
        self.ys = [torch.from_numpy(y) for y in problem.ys]
        self.perms = [torch.from_numpy(p) for p in problem.perms]
        self._fresh()

    def _fresh(self):
        torch, wl, cell = self.torch, self.p.wl, self.p.cell
        rnn_cls = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
        tanh = wl.out_activation == "tanh"

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = rnn_cls(wl.D, wl.H, batch_first=True)
                self.dense = torch.nn.Linear(wl.H, 1)

            def forward(self, x):
                _, h = self.rnn(x)
                if isinstance(h, tuple):    # LSTM: (h_n, c_n)
                    h = h[0]
                out = self.dense(h[-1])
                return torch.tanh(out) if tanh else out

        self.net = Net()
        state = {k: torch.from_numpy(np.ascontiguousarray(v))
                 for k, v in torch_state(self.p.weights, cell, wl.H).items()}
        self.net.load_state_dict(state)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3, eps=1e-7)

    def threads(self, n):
        self.torch.set_num_threads(n)
        return contextlib.nullcontext()

    def _step(self, x, y):
        opt = self.opt
        opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.mse_loss(self.net(x), y)
        loss.backward()
        opt.step()

    def train(self, i):
        k = i % len(self.xs)
        self._step(self.xs[k], self.ys[k])

    def infer(self):
        with self.torch.inference_mode():
            return self.net(self.xs[0])

    def output(self):
        return self.infer().numpy()

    def fit_reset(self):
        self._fresh()

    def fit(self, epochs=None):
        x, y = self.xs[0], self.ys[0]
        for perm in self.perms[:epochs]:
            self._step(x[perm], y[perm])

    def predict_seed(self, x):
        with self.torch.inference_mode():
            return float(self.net(self.torch.from_numpy(x.astype(np.float32))).ravel()[0])


class KerasSide(Side):
    """Keras 3 on the backend this process loaded: train_on_batch, predict_on_batch.

    Threads: torch backend -> torch.set_num_threads; other backends run in a child process with
    the count fixed before the backend starts (see bench.py's --keras-child)."""
    name, label = "keras", "Keras"

    def __init__(self, problem):
        import keras
        self.keras = keras
        self.backend = keras.backend.backend()
        self.name = "keras" if self.backend == "torch" else f"keras-{self.backend}"
        self.label = f"Keras ({self.backend})"
        self.p = problem
        wl = problem.wl
        layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[problem.cell]
        self.model = keras.Sequential([keras.Input((wl.T, wl.D)), layer(wl.H),
                                       keras.layers.Dense(1, activation=wl.out_activation)])
        self._compile()
        self.model.set_weights(problem.weights)

    def _compile(self):
        self.model.compile(optimizer=self.keras.optimizers.Adam(learning_rate=1e-3), loss="mse")

    def threads(self, n):
        if self.backend == "torch":
            import torch
            torch.set_num_threads(n)
        return contextlib.nullcontext()

    def train(self, i):
        k = i % len(self.p.xs)
        self.model.train_on_batch(self.p.xs[k], self.p.ys[k])

    def infer(self):
        return self.model.predict_on_batch(self.p.xs[0])

    def output(self):
        return np.asarray(self.infer())

    def fit_reset(self):
        self.model.set_weights(self.p.weights)
        self._compile()     # a fresh optimizer (its moments and step count start again)

    def fit(self, epochs=None):
        x, y, model = self.p.xs[0], self.p.ys[0], self.model
        for perm in self.p.perms[:epochs]:
            model.train_on_batch(x[perm], y[perm])

    def predict_seed(self, x):
        return float(np.asarray(self.model.predict_on_batch(x.astype(np.float32))).ravel()[0])


# ---- ONNX ------------------------------------------------------------------------------------
def build_onnx_graph(weights, cell, wl):
    """The ONNX model for X(H) + Dense(1) built with onnx.helper: input "input" [batch, T, D]
    -> Transpose to time-major -> GRU / LSTM -> Y_h [1, batch, H] -> Squeeze -> Gemm (+ Tanh)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    kernel, rec, bias, dense_w, dense_b = weights
    H = wl.H
    if cell == "gru":
        W, R = kernel.T[None], rec.T[None]                          # gates z, r, h: same order
        B = np.concatenate([bias[0], bias[1]])[None]
        op, extra = "GRU", {"linear_before_reset": 1}
    else:
        order = [0, 3, 1, 2]                                        # ONNX i, o, f, c
        blocks = lambda a: np.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)
        W, R = blocks(kernel.T)[None], blocks(rec.T)[None]
        B = np.concatenate([blocks(bias), np.zeros(4 * H, np.float32)])[None]
        op, extra = "LSTM", {}
    inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n) for a, n in
             [(W, "W"), (R, "R"), (B, "B"), (dense_w, "dense_w"), (dense_b, "dense_b")]]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes = [helper.make_node("Transpose", ["input"], ["x_tm"], perm=[1, 0, 2]),
             helper.make_node(op, ["x_tm", "W", "R", "B"], ["", "y_h"], hidden_size=H, **extra),
             helper.make_node("Squeeze", ["y_h", "axis0"], ["h"]),
             helper.make_node("Gemm", ["h", "dense_w", "dense_b"],
                              ["output" if wl.out_activation == "linear" else "pre"])]
    if wl.out_activation == "tanh":
        nodes.append(helper.make_node("Tanh", ["pre"], ["output"]))
    graph = helper.make_graph(
        nodes, f"{cell}_bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", wl.T, wl.D])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OrtSide(Side):
    """ONNX Runtime, inference only: one InferenceSession per intra_op_num_threads setting."""
    name, label = "onnxruntime", "ONNX Runtime"
    trains = False

    def __init__(self, problem, reference):
        import onnxruntime as ort
        self.ort, self.p = ort, problem
        self.note = None
        self.exporter = None
        self.data = None
        for exporter in ("grukit.interop.onnx", "harness"):
            try:
                data = self._export(exporter)
                got = self._session(data, 1).run(None, {"input": problem.xs[0]})[0]
                err = float(np.max(np.abs(got - reference)))
                if err > 1e-3:
                    raise ValueError(f"its outputs differ from grukit's by {err:.2e}")
            except Exception as e:   # noqa: BLE001 - fall back to the harness's own graph
                self.note = f"{exporter} not used: {type(e).__name__}: {e}"
                continue
            self.data, self.exporter = data, exporter
            break
        if self.data is None:
            raise RuntimeError(self.note)
        self.sessions = {n: self._session(self.data, n) for n in self.thread_options}
        self.sess = self.sessions[1]

    def _export(self, exporter):
        if exporter == "harness":
            return build_onnx_graph(self.p.weights, self.p.cell, self.p.wl)
        if importlib.util.find_spec("grukit.interop.onnx") is None:
            raise ImportError("grukit.interop.onnx is not there")
        from grukit.interop import onnx as gonnx
        model = grukit_model(self.p.wl, self.p.cell)
        model.set_weights(self.p.weights)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            gonnx.export(model, path)
            with open(path, "rb") as f:
                return f.read()

    def _session(self, data, n):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return self.ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

    def threads(self, n):
        self.sess = self.sessions[n]
        return contextlib.nullcontext()

    def infer(self):
        return self.sess.run(None, {"input": self.p.xs[0]})[0]

    def output(self):
        return self.infer()
