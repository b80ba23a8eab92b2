"""The compiled time loops (grukit._native, kernels.c) against the NumPy loop, option by option.

The NumPy loop is the reference the gradient checks and the peer-parity tests were written
against; here both paths run the same layer on the same inputs, weights, masks and dropout masks,
and must give the same outputs, input gradients, initial-state gradients and weight gradients
(float64: to rounding). Also: the build is cached, GRUKIT_NATIVE turns it off or requires it, and
buffers handed back by ``release`` never show through in outputs.
"""
import contextlib
import os

import numpy as np
import pytest

from grukit import Sequential, _native
from grukit.layers import GRU, LSTM, Dense, SimpleRNN
from grukit.layers.base import inputs_held
from grukit.layers.recurrent import Recurrent
from gradcheck import check_layer


@contextlib.contextmanager
def path(native):
    """Run the recurrent layers on the compiled loops (True) or on the NumPy loop (False)."""
    old = os.environ.get("GRUKIT_NATIVE")
    os.environ["GRUKIT_NATIVE"] = "1" if native else "0"
    _native._reset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["GRUKIT_NATIVE"]
        else:
            os.environ["GRUKIT_NATIVE"] = old
        _native._reset()


def test_ci_runs_the_compiled_path():
    """Unless someone turned it off on purpose, the compiled loops must build here: a machine
    without a C compiler would silently test only the NumPy loop."""
    if os.environ.get("GRUKIT_NATIVE", "") in ("0", "off"):
        pytest.skip("GRUKIT_NATIVE=0 set by the caller")
    info = _native.info()
    assert info["enabled"], info["reason"]
    assert info["compile_seconds"] is not None and info["blas"]


CELLS = {
    "gru": lambda **kw: GRU(4, **kw),
    "gru_reset_before": lambda **kw: GRU(4, reset_after=False, **kw),
    "lstm": lambda **kw: LSTM(4, **kw),
    "rnn": lambda **kw: SimpleRNN(4, **kw),
}
OPTIONS = {
    "plain": {},
    "sequences": {"return_sequences": True},
    "state": {"return_state": True, "return_sequences": True},
    "backwards": {"go_backwards": True, "return_sequences": True},
    "no_bias": {"use_bias": False},
    "relu_hard_sigmoid": {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    "linear": {"activation": "linear", "recurrent_activation": "linear"},
    "zero_output_for_mask": {"return_sequences": True, "zero_output_for_mask": True},
}


def run_both(make, x, rng, mask=None, initial_state=None, dropout_masks=None, held=None, **kw):
    """Forward and backward on each path with the same weights; returns the two result lists.
    held: run both inside inputs_held() (as a model's training step does), and check that the
    compiled loop read x in place in every part (True) or in none (False)."""
    results = []
    weights = None
    for native in (True, False):
        with path(native), (inputs_held() if held is not None else contextlib.nullcontext()):
            layer = make(**kw)
            layer(x)
            if weights is None:
                weights = {k: rng.standard_normal(p.shape) * 0.5 for k, p in layer.params.items()}
            for k, p in layer.params.items():
                p[...] = weights[k]
            call = dict(mask=mask, initial_state=initial_state, dropout_masks=dropout_masks)
            y, cache = layer.forward(x, **call)
            assert (cache[6] is not None) == native   # the path asked for is the path taken
            if native and held is not None:
                assert [p["ws"]["xbm"] for p in cache[1]] == [held] * len(cache[1])
            outs = y if isinstance(y, list) else [y]
            g = [np.random.default_rng(7).standard_normal(o.shape) for o in outs]
            dx, grads, dstates = layer.backward_states(g if isinstance(y, list) else g[0], cache)
            results.append([*outs, dx, *dstates] + [grads[k] for k in sorted(grads)])
    return results


def assert_same(a, b, tol):
    """Equal to rounding: relative to each array's largest value (linear cells grow large)."""
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * max(1.0, float(np.abs(v).max())))


def sized(cell, u):
    """The constructor of CELLS[cell] with u units."""
    return {"gru": lambda **kw: GRU(u, **kw),
            "gru_reset_before": lambda **kw: GRU(u, reset_after=False, **kw),
            "lstm": lambda **kw: LSTM(u, **kw),
            "rnn": lambda **kw: SimpleRNN(u, **kw)}[cell]


def agree_with_mask_then_states(cell, u, x, rng, tol):
    """Both paths on x with sequences, states and a mask (sequence 1 stops after step 2); then
    with initial states and both dropout masks."""
    B, T, D = x.shape
    make = sized(cell, u)
    mask = np.ones((B, T), bool)
    mask[1, 2:] = False
    assert_same(*run_both(make, x, rng, mask=mask, return_sequences=True, return_state=True), tol)
    init = [rng.standard_normal((B, u)).astype(x.dtype)
            for _ in range(2 if cell == "lstm" else 1)]
    drop = ((rng.random((B, D)) > 0.3) / 0.7, (rng.random((B, u)) > 0.4) / 0.6)
    assert_same(*run_both(make, x, rng, initial_state=init, dropout_masks=drop,
                          return_sequences=True, return_state=True), tol)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("batch", [1, 3, 11])   # 1 and 3: the written-out products; 11: BLAS
def test_paths_agree(cell, option, batch, float64, rng):
    x = rng.standard_normal((batch, 6, 3))
    mask = None
    if option == "zero_output_for_mask" or batch == 11:
        mask = np.ones((batch, 6), bool)
        mask[0, 4:] = False                   # right padding
        mask[-1, :2] = False                  # left padding
    kw = dict(OPTIONS[option])
    if cell == "rnn":
        kw.pop("recurrent_activation", None)   # SimpleRNN has none, as in Keras
    a, b = run_both(CELLS[cell], x, rng, mask=mask, **kw)
    assert_same(a, b, 1e-11)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_paths_agree_with_initial_state_and_dropout(cell, float64, rng):
    B, T, D, u = 5, 3, 3, 4          # u = T + 1: the two state layouts have the same shape
    x = rng.standard_normal((B, T, D))
    n = 2 if cell == "lstm" else 1
    init = [rng.standard_normal((B, u)) for _ in range(n)]
    masks = ((rng.random((B, D)) > 0.3) / 0.7, (rng.random((B, u)) > 0.4) / 0.6)
    keep = rng.random((B, T)) > 0.25
    a, b = run_both(CELLS[cell], x, rng, mask=keep, initial_state=init, dropout_masks=masks,
                    return_sequences=True, return_state=True)
    assert_same(a, b, 1e-11)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("batch", [9, 40])   # 40: the tiled products (halves of 20 or not)
def test_paths_agree_in_float32(cell, batch, rng):
    x = rng.standard_normal((batch, 20, 5)).astype(np.float32)
    a, b = run_both(CELLS[cell], x, rng, return_sequences=True)
    assert_same(a, b, 2e-5)


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before", "lstm", "rnn"])
@pytest.mark.parametrize("acts", [("relu", "hard_sigmoid"), ("sigmoid", "tanh"),
                                  ("tanh", "sigmoid")])
@pytest.mark.parametrize("batch", [1, 20])
def test_float32_cells_with_every_activation(cell, acts, batch, rng):
    """float32 takes kernels.c's inline vector activations (AVX-512), the LSTM's in one pass
    over a step's cells with the usual pair (tanh, sigmoid) compiled apart: that pair and two
    others, one sequence (a unit's values contiguous) and 20 (a masked last vector), forward and
    backward against the NumPy loop."""
    x = rng.standard_normal((batch, 7, 3)).astype(np.float32)
    kw = {"activation": acts[0]}
    if cell != "rnn":
        kw["recurrent_activation"] = acts[1]
    a, b = run_both(lambda **k: CELLS[cell](**k) if cell != "lstm" else LSTM(37, **k), x, rng,
                    return_sequences=True, **kw)
    assert_same(a, b, 2e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("rows", [None, 2])
@pytest.mark.parametrize("B,T,D", [(40, 16, 17), (40, 8, 5), (6, 5, 3), (40, 64, 20)])
def test_loops_read_x_in_place(cell, rows, B, T, D, dtype, halves, rng, monkeypatch):
    """Inside inputs_held() the compiled loops read each half's rows of the caller's (B, T, D)
    x where they are (kernels.c's xbm), forward and back, against the NumPy loop: halves of 20
    over 320 columns (the weight gradient's tiles, 17 features) and over 160 (5 features: one
    product per step). Halves of 3 read in place only with rows=2, and then take one input
    product per step forward too (the path of builds without AVX-512 tiles). With
    go_backwards x is copied as before, into the workspace's own buffer."""
    from grukit import config
    monkeypatch.setattr(Recurrent, "_borrow_rows", rows)
    old = config.floatx()
    config.set_floatx(dtype)
    try:
        x = rng.standard_normal((B, T, D)).astype(dtype)
        x0 = x.copy()
        tol = 1e-11 if dtype == "float64" else 2e-5
        kw = {"return_sequences": True}
        borrowed = B // 2 >= (rows or 64 // np.dtype(dtype).itemsize)
        assert_same(*run_both(CELLS[cell], x, rng, held=borrowed, **kw), tol)
        assert_same(*run_both(CELLS[cell], x, rng, held=False, go_backwards=True, **kw), tol)
        np.testing.assert_array_equal(x, x0)   # read, never written
    finally:
        config.set_floatx(old)


def test_a_layers_own_forward_keeps_a_copy_of_x(rng):
    """Called by hand (not within a model's training step), a layer's forward keeps a copy of
    x for the backward pass: x changed in between does not change the gradients."""
    layer = LSTM(8, return_sequences=True)
    x = rng.standard_normal((40, 12, 20)).astype(np.float32)
    dy = rng.standard_normal((40, 12, 8)).astype(np.float32)
    layer(x)
    _, cache = layer.forward(x, training=True)
    want = layer.backward(dy, cache)[1]
    _, cache = layer.forward(x, training=True)
    x[...] = 0
    got = layer.backward(dy, cache)[1]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_training_never_writes_the_callers_x(halves, rng):
    """A model's training steps and predictions read x in place: x must come out as it went in,
    its rows never joining the layer's reusable workspaces. T = 40 sequences a half, so that a
    half of x has the shape of the time-major copy that a forward by hand makes in the same
    workspace (and would write into, were x's rows kept there)."""
    model = Sequential([LSTM(16, return_sequences=True), GRU(8), Dense(1)])
    model.compile("adam", "mse")
    x = rng.standard_normal((80, 40, 20)).astype(np.float32)
    other = rng.standard_normal((80, 40, 20)).astype(np.float32)
    y = rng.standard_normal((80, 1)).astype(np.float32)
    x0 = x.copy()
    for batch in (x, other, x, other):
        model.train_on_batch(batch, y)
        model.predict(batch, batch_size=80, verbose=0)
        _, cache = model.layers[0].forward(other)   # by hand, gates kept: copies of x's halves
        if cache[6] is not None:                     # (the compiled path)
            assert [p["ws"]["xbm"] for p in cache[1]] == [False, False]
        model.layers[0].release(cache)
        for layer in model.layers[:2]:
            for free in layer._pool.values():
                for ws in free:
                    assert not any(isinstance(a, np.ndarray) and np.shares_memory(a, batch)
                                   for a in ws.values())
    np.testing.assert_array_equal(x, x0)


def test_dropout_never_writes_a_subclass_input():
    """An ndarray subclass (a memmap, say) passed straight to forward, one sequence: the
    time-major view of x is x's own memory, and the input dropout mask must multiply a copy,
    never the caller's x."""
    class Sub(np.ndarray):
        pass
    layer = LSTM(4, dropout=0.5)
    layer(np.ones((1, 5, 3), np.float32))
    x = np.ones((1, 5, 3), np.float32).view(Sub)
    layer.forward(x, training=True)
    assert (np.asarray(x) == 1).all()


@pytest.mark.parametrize("make", [lambda: GRU(8), lambda: SimpleRNN(8)])
def test_a_buffer_goes_back_to_the_pool_once(make, rng):
    """The backward's d reuses the forward's one-step scratch (GRU, SimpleRNN): release() must
    pool it once, or two later requests would get the same buffer."""
    if not _native.enabled():
        pytest.skip("the pool serves the compiled loops")
    layer = make()
    x = rng.standard_normal((20, 5, 3)).astype(np.float32)
    layer(x)
    _, cache = layer.forward(x, training=True)
    layer.backward(rng.standard_normal((20, 8)).astype(np.float32), cache)
    assert cache[1][0]["ws"]["d"] is cache[1][0]["ws"]["scratch"]
    layer.release(cache)
    bufs = [a for free in layer._pool.values() for a in free]
    assert bufs and len({id(a) for a in bufs}) == len(bufs)


def ulps(y, ref):
    """|y - ref| in units of the float32 spacing at ref (ref in float64)."""
    spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(y.astype(np.float64) - ref) / spacing


def test_float32_activations_are_accurate():
    """kernels.c's float32 sigmoid and tanh (its own with AVX-512, else the C library's vector
    ones), over every 97th float32 of either sign, against float64 NumPy: tanh within 2 ulp,
    sigmoid within 4 ulp wherever it is a normal float (below, about x < -87.3, within the
    smallest normal, 1.2e-38, of the true value). Measured: 1.33 and 2.36 ulp (AVX-512), 1.37
    and 3.43 (glibc). NaN stays NaN, the infinities give the limits, tanh keeps the sign of
    zero, and a value's result does not depend on where it sits in the array."""
    if not _native.enabled():
        pytest.skip("the compiled loops are off")
    loops = _native.loops(np.float32)
    x = np.arange(0, 2 ** 31, 97, dtype=np.uint32).view(np.float32)
    x = x[np.isfinite(x)]
    x = np.concatenate([x, -x])
    tiny = np.finfo(np.float32).tiny
    refs = {1: np.tanh(x.astype(np.float64))}
    with np.errstate(over="ignore"):
        refs[2] = 1 / (1 + np.exp(-x.astype(np.float64)))
    for code, ref in refs.items():
        y = x.copy()
        loops.activate((code, y.size), (y,))
        normal = np.abs(ref) >= tiny
        assert ulps(y[normal], ref[normal]).max() <= (2 if code == 1 else 4)
        assert np.abs(y[~normal] - ref[~normal]).max() <= tiny
        special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
        loops.activate((code, special.size), (special,))
        assert np.isnan(special[0])
        np.testing.assert_allclose(special[1:], [1, -1, 0, 0] if code == 1 else [1, 0, 0.5, 0.5],
                                   rtol=0, atol=tiny)
        if code == 1:
            assert np.signbit(special[4]) and not np.signbit(special[3])
        for n in (1, 15, 17, 33):   # the same values at other places and in a masked last vector
            part = x[1000:1000 + n].copy()
            loops.activate((code, n), (part,))
            np.testing.assert_array_equal(part, y[1000:1000 + n])
    for code, f in ((3, lambda v: np.maximum(v, 0)),
                    (4, lambda v: np.clip(v.astype(np.float64) / 6 + 0.5, 0, 1))):
        v = np.linspace(-8, 8, 1001, dtype=np.float32)
        y = v.copy()
        loops.activate((code, y.size), (y,))
        np.testing.assert_allclose(y, f(v), rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_numpy_loop_gradients(cell, float64, rng):
    """The rest of the suite checks gradients on the compiled path; this keeps the NumPy loop
    (the fallback) checked against finite differences too."""
    with path(False):
        layer = CELLS[cell](return_sequences=True)
        x = rng.standard_normal((3, 4, 2))
        layer(x)
        for p in layer.params.values():
            p[...] = rng.standard_normal(p.shape) * 0.5
        check_layer(layer, x, rng, mask=np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]],
                                                 bool))


def test_activation_without_kernel_takes_numpy_loop(rng):
    with path(True):
        layer = GRU(3, activation="elu")
        x = rng.standard_normal((2, 4, 2)).astype(np.float32)
        layer(x)
        y, cache = layer.forward(x)
        assert cache[6] is None and _native.enabled()


def test_off_and_required(monkeypatch, tmp_path):
    with path(False):
        assert not _native.enabled()
        assert "GRUKIT_NATIVE=0" in _native.info()["reason"]
    # required but impossible (no compiler): a clear error, not a silent fallback
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    monkeypatch.setenv("GRUKIT_CACHE_DIR", str(tmp_path))
    with path(True):
        with pytest.raises(_native.NativeUnavailable, match="no C compiler"):
            _native.library()
    monkeypatch.setenv("GRUKIT_NATIVE", "auto")
    _native._reset()
    assert not _native.enabled()          # auto: fall back, and say why
    assert "no C compiler" in _native.info()["reason"]
    _native._reset()


def test_build_is_cached(monkeypatch, tmp_path):
    """The first use compiles into the cache folder; the next process (here: after a reset)
    loads that file without compiling."""
    monkeypatch.setenv("GRUKIT_NATIVE", "1")
    monkeypatch.setenv("GRUKIT_CACHE_DIR", str(tmp_path))
    _native._reset()
    try:
        first = _native.info()
        assert first["enabled"] and first["compile_seconds"] > 0
        assert os.path.dirname(first["path"]) == str(tmp_path)
        _native._reset()
        second = _native.info()
        assert second["enabled"] and second["compile_seconds"] == 0.0
        assert second["path"] == first["path"]
    finally:
        _native._reset()


def test_released_buffers_never_show_in_outputs(rng):
    """Sequential hands each spent cache back; the next call reuses its buffers. Outputs are
    copies, so what a caller got from an earlier call must not change."""
    with path(True):
        _released_buffers_never_show_in_outputs(rng)


def _released_buffers_never_show_in_outputs(rng):
    model = Sequential([GRU(5, return_sequences=True, input_shape=(6, 2)), LSTM(3)])
    model.compile("adam", "mse")
    x1 = rng.standard_normal((4, 6, 2)).astype(np.float32)
    x2 = rng.standard_normal((4, 6, 2)).astype(np.float32)
    y1 = model.predict(x1, verbose=0)
    y1_copy = y1.copy()
    inner = model.layers[0](x1)
    inner_copy = inner.copy()
    model.predict(x2, verbose=0)
    model.train_on_batch(x2, np.zeros((4, 3), np.float32))
    assert np.array_equal(y1, y1_copy) and np.array_equal(inner, inner_copy)
    assert model.layers[0]._pool, "the compiled path should have kept buffers for reuse"
    # reuse gives the same numbers as fresh buffers
    np.testing.assert_allclose(model.predict(x1, verbose=0), model.predict(x1, verbose=0))


def test_release_twice_is_harmless(rng):
    with path(True):
        layer = GRU(3)
        x = rng.standard_normal((2, 4, 2)).astype(np.float32)
        layer(x)
        _, cache = layer.forward(x)
        layer.release(cache)
        layer.release(cache)              # the second call must not hand the buffers out twice
        pooled = [id(a) for free in layer._pool.values() for a in free]
        assert pooled and len(pooled) == len(set(pooled))


def test_a_stale_cache_gives_back_nothing(rng):
    """A workspace goes back to the layer once per call that used it: a cache released again
    after its workspace went to a later call must not hand that workspace out while the later
    call's cache still needs it."""
    with path(True):
        layer = LSTM(3)
        x = rng.standard_normal((2, 4, 2)).astype(np.float32)
        dy = rng.standard_normal((2, 3)).astype(np.float32)
        layer(x)
        _, old = layer.forward(x, training=True)
        layer.release(old)
        _, live = layer.forward(x, training=True)    # in old's workspace, now live's
        assert live[1][0]["ws"] is old[1][0]["ws"]
        want = layer.backward(dy, layer.forward(x, training=True)[1])[1]
        layer.release(old)                            # stale: must give nothing back
        _, other = layer.forward(2 * x, training=True)
        assert other[1][0]["ws"] is not live[1][0]["ws"]
        got = layer.backward(dy, live)[1]
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("make", [lambda: GRU(3), lambda: LSTM(3), lambda: SimpleRNN(3)])
def test_a_reused_workspace_starts_from_zeros(make, rng):
    """The workspace keeps its zero initial states from one call to the next (the loops never
    write step 0): a call with initial states in between must not leave them there."""
    with path(True):
        layer = make()
        x = rng.standard_normal((2, 4, 2)).astype(np.float32)
        want = layer(x)
        n = 2 if isinstance(layer, LSTM) else 1
        init = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(n)]
        with_init = layer(x, initial_state=init)
        assert not np.allclose(with_init, want)
        np.testing.assert_array_equal(layer(x), want)


# ---- a batch in two halves on two threads ----------------------------------------------------
@pytest.fixture
def halves(monkeypatch):
    """Split every batch of 2 or more in two, whatever the machine's BLAS thread count."""
    def parts(B):
        return [(0, B // 2), (B // 2, B)] if B >= 2 else [(0, B)]
    monkeypatch.setattr(_native, "batch_parts", parts)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_halves_agree_with_numpy_loop(cell, halves, float64, rng):
    B, T, D, u = 9, 5, 3, 4
    x = rng.standard_normal((B, T, D))
    n = 2 if cell == "lstm" else 1
    init = [rng.standard_normal((B, u)) for _ in range(n)]
    masks = ((rng.random((B, D)) > 0.3) / 0.7, (rng.random((B, u)) > 0.4) / 0.6)
    keep = rng.random((B, T)) > 0.25
    for kw in ({"return_sequences": True, "return_state": True},
               {"go_backwards": True, "zero_output_for_mask": True, "return_sequences": True},
               {}):
        a, b = run_both(CELLS[cell], x, rng, mask=keep, initial_state=init, dropout_masks=masks,
                        **kw)
        assert_same(a, b, 1e-11)


def test_halves_in_a_model_and_trace(halves, rng):
    """fit, predict, stateful carry-over and trace through split batches match the NumPy loop."""
    x = rng.standard_normal((12, 6, 3)).astype(np.float32)
    y = rng.standard_normal((12, 2)).astype(np.float32)
    runs, weights = [], None
    for native in (True, False):
        with path(native):
            model = Sequential([GRU(5, return_sequences=True, input_shape=(6, 3)), LSTM(2)])
            model.compile("adam", "mse")
            if weights is None:
                weights = model.get_weights()
            model.set_weights(weights)
            model.fit(x, y, batch_size=12, epochs=3, verbose=0, shuffle=False)
            gate = model.layers[0].trace(x)
            runs.append((model.predict(x, verbose=0), gate["z"], gate["h"]))
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    layer = GRU(3, stateful=True)
    xs = rng.standard_normal((10, 4, 2)).astype(np.float32)
    first = layer(xs)
    assert layer.states[0].shape == (10, 3)
    with path(False):
        ref = GRU(3, stateful=True)
        ref(xs)
        for k, p in layer.params.items():
            ref.params[k][...] = p
        ref.reset_states()
        np.testing.assert_allclose(ref(xs), first, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref.states[0], layer.states[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_sequence_on_two_threads(dtype, rng, monkeypatch):
    """With one sequence and two threads, the LSTM's steps run in two slices of units (kernels.c's
    run_steps, each slice computing its own x_t W): uneven slices (40 units: 24 + 16 in float64;
    70: 48 + 22 in float32), with a mask, initial states and the gates kept for the backward
    pass, against the NumPy loop. Recurrent dropout keeps the whole step on one thread."""
    from grukit import config
    monkeypatch.setattr(_native, "step_threads", lambda: 2)
    u = 40 if dtype == "float64" else 70
    old = config.floatx()
    config.set_floatx(dtype)
    try:
        x = rng.standard_normal((1, 12, 5)).astype(dtype)
        mask = np.ones((1, 12), bool)
        mask[0, 9:] = False
        init = [rng.standard_normal((1, u)) for _ in range(2)]
        tol = 1e-11 if dtype == "float64" else 2e-4
        for kw in ({"mask": mask, "initial_state": init},
                   {"dropout_masks": (None, (rng.random((1, u)) > 0.4) / 0.6)}):
            a, b = run_both(lambda **k: LSTM(u, **k), x, rng, return_sequences=True,
                            return_state=True, **kw)
            assert_same(a, b, tol)
    finally:
        config.set_floatx(old)


def test_one_sequence_inside_a_split_does_not_wait_for_itself():
    """A part of a split batch with a single sequence runs its steps on its own thread: the worker
    already has the other part (kernels.c keeps run_steps single-threaded inside a part, even if
    asked for two threads), so nothing waits for itself. In a child process, with a time limit."""
    import subprocess
    import sys
    if not _native.enabled():
        pytest.skip("GRUKIT_NATIVE=0 set by the caller")
    script = (
        "import numpy as np\n"
        "from grukit import _native\n"
        "from grukit.layers import LSTM\n"
        "_native.batch_parts = lambda B: [(0, B // 2), (B // 2, B)] if B >= 2 else [(0, B)]\n"
        "_native.step_threads = lambda: 2\n"
        "y = LSTM(64)(np.ones((2, 5, 3), np.float32))\n"
        "print(y.shape)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "(2, 64)" in r.stdout, r.stderr[-2000:]


def test_run_parts_rejects_bad_calls():
    """The module's run_parts checks what it is given, and a part may not split again."""
    if not _native.enabled():
        pytest.skip("GRUKIT_NATIVE=0 set by the caller")
    module = _native.library()
    with pytest.raises(TypeError, match="a call is a tuple"):
        module.run_parts((([0, 0, (), ()],), ()))
    with pytest.raises(TypeError, match="at most"):
        module.run_parts((((),) * 9, ()))
    with pytest.raises(TypeError, match="takes a tuple of"):
        module.run_parts((((0, 0, (1,), ()),), ()))
    with pytest.raises(RuntimeError, match="may not split again"):
        _native.run_parts([lambda: _native.run_parts([int, int]), int])


def test_each_half_gets_its_own_buffers_back(halves, rng):
    """Released buffers go back to the half (the thread, and its core's caches) that used them,
    not to the other half, whose core would miss on every line of them. All four state buffers
    of two LSTM halves are kept."""
    if not _native.enabled():
        pytest.skip("GRUKIT_NATIVE=0 set by the caller")
    layer = LSTM(6, return_sequences=True)
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    layer(x)
    ids = []
    for _ in range(3):
        _, cache = layer.forward(x)
        assert len(cache[1]) == 2
        ids.append([(id(p["ws"]["xp"]), {id(s) for s in p["ws"]["Sn"]}) for p in cache[1]])
        layer.release(cache)
    assert ids[1] == ids[2]


def test_split_only_with_two_blas_threads():
    """The halves run only where BLAS may use two threads; the thread count comes back after."""
    import threadpoolctl
    if os.environ.get("GRUKIT_NATIVE", "") in ("0", "off"):
        pytest.skip("GRUKIT_NATIVE=0 set by the caller")
    assert _native.enabled() and _native._state["threads"] is not None, _native.info()
    get = _native._state["threads"][0]
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert _native.batch_parts(64) == [(0, 64)]
    if (os.cpu_count() or 1) < 2:
        assert _native.batch_parts(64) == [(0, 64)]
        return
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = get()
        assert _native.batch_parts(64) == [(0, 32), (32, 64)]
        assert _native.batch_parts(15) == [(0, 15)]
        layer = GRU(4)
        x = np.zeros((32, 3, 2), np.float32)
        layer(x)
        _, cache = layer.forward(x)
        assert len(cache[1]) == 2 and get() == before


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-13)])
def test_compiled_adam_matches_numpy_adam(dtype, tol, rng):
    """Adam's update runs in kernels.c once the library is loaded; five steps of it agree with
    the NumPy update to rounding."""
    from grukit.optimizers import Adam
    w0 = rng.standard_normal(1000).astype(dtype)
    grads = [rng.standard_normal(1000).astype(dtype) for _ in range(5)]
    out = []
    for native in (True, False):
        with path(native):
            assert (_native.loops(dtype) is not None) == native
            opt, w = Adam(learning_rate=0.01), w0.copy()
            for g in grads:
                opt.apply(w, g.copy())
            out.append((w, opt._slots["m"], opt._slots["v"]))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert not np.array_equal(out[0][0], w0)


def test_damaged_cached_library_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("GRUKIT_NATIVE", "1")
    monkeypatch.setenv("GRUKIT_CACHE_DIR", str(tmp_path))
    _native._reset()
    try:
        path, _ = _native._build(_native._compiler())   # built, not loaded by this process
        with open(path, "wb") as f:
            f.write(b"not a shared library")
        info = _native.info()
        assert info["enabled"] and info["compile_seconds"] > 0, info
    finally:
        _native._reset()


def test_unwritable_cache_folder_falls_back_to_a_temporary_one(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("GRUKIT_CACHE_DIR", str(blocked / "cache"))   # under a file: impossible
    assert _native._writable_cache() != str(blocked / "cache")


# ---- found in review: each of these failed once ---------------------------------------------
def test_own_activation_runs_its_own_function(float64, rng):
    """A subclass of a built-in activation keeps its own f and df (the NumPy loop runs it)."""
    from grukit import activations

    class DoubleTanh(activations.Tanh):
        def f(self, x, out=None):
            return np.multiply(np.tanh(x), 2.0, out=out)

        def df(self, y):
            return 2.0 * (1.0 - (y / 2.0) ** 2)
    layer = SimpleRNN(3, activation=DoubleTanh())
    x = rng.standard_normal((3, 5, 2))
    layer(x)
    y, cache = layer.forward(x)
    assert cache[6] is None
    U, W, b = layer.params["recurrent_kernel"], layer.params["kernel"], layer.params["bias"]
    h = np.zeros((3, 3))
    for t in range(5):
        h = 2.0 * np.tanh(x[:, t] @ W + h @ U + b)
    np.testing.assert_allclose(y, h, rtol=1e-12, atol=1e-12)


def test_float64_dropout_masks_on_a_float32_layer(rng):
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    masks = ((rng.random((4, 3)) > 0.5) * 2.0, (rng.random((4, 6)) > 0.5) * 2.0)   # float64
    a, b = run_both(lambda **kw: GRU(6, **kw), x, rng, dropout_masks=masks)
    assert_same(a, b, 2e-5)
    layer = GRU(6)
    layer(x)
    with pytest.raises(ValueError, match="recurrent dropout mask must have shape"):
        layer.forward(x, dropout_masks=(None, np.ones((1, 6))))


@pytest.mark.parametrize("native", [True, False])
def test_wrong_gradient_shapes_are_refused(native, rng):
    """A dy that NumPy would broadcast must not reach the kernels (they would read past it)."""
    with path(native):
        layer = GRU(4, return_sequences=True, return_state=True)
        x = rng.standard_normal((2, 6, 3)).astype(np.float32)
        layer(x)
        y, cache = layer.forward(x)
        with pytest.raises(ValueError, match="output gradient must have the output's shape"):
            layer.backward([np.ones((2, 6, 1)), np.ones((2, 4))], cache)
        with pytest.raises(ValueError, match="final state's gradient"):
            layer.backward([np.ones((2, 6, 4)), np.ones((1, 4))], cache)


def test_nan_weights_give_nan_outputs(float64):
    """fast-math must not hide a diverged model: NaN in, NaN out, as in the NumPy loop."""
    for make in (lambda: GRU(2), lambda: LSTM(2), lambda: SimpleRNN(2, activation="relu")):
        for B in (1, 3, 11):
            layer = make()
            x = np.ones((B, 4, 2))
            layer(x)
            layer.params["kernel"][0, 0] = np.nan
            assert np.isnan(layer(x)).all()


def test_a_forked_child_can_split_batches():
    """After a split run, a forked child (multiprocessing's default on Linux) must not wait for a
    worker thread that only the parent has."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    import signal
    layer = GRU(4)
    x = np.zeros((16, 3, 2), np.float32)
    layer(x)
    forced = [(0, 8), (8, 16)]
    parts = _native.batch_parts
    _native.batch_parts = lambda B: forced if B == 16 else [(0, B)]
    try:
        layer(x)                                  # the parent has a worker thread now
        pid = os.fork()
        if pid == 0:                              # the child: succeed within 20 s or be killed
            signal.alarm(20)
            try:
                layer(x)
                os._exit(0)
            except BaseException:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
    finally:
        _native.batch_parts = parts
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_callers_gradient_is_not_modified(rng):
    layer = GRU(3, return_sequences=True, zero_output_for_mask=True)
    x = rng.standard_normal((1, 4, 2)).astype(np.float32)
    layer(x)
    mask = np.array([[True, True, False, True]])
    _, cache = layer.forward(x, mask=mask)
    dy = np.ones((1, 4, 3), np.float32)
    layer.backward(dy, cache)
    assert (dy == 1).all()


def test_first_cache_survives_a_second_forward(float64, rng):
    """A bare layer never reuses buffers unless release() is called: backward on an older cache
    is exact."""
    layer = LSTM(3, return_sequences=True)
    x1, x2 = rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 5, 2))
    layer(x1)
    _, c1 = layer.forward(x1)
    dy = rng.standard_normal((2, 5, 3))
    want = layer.backward(dy, layer.forward(x1)[1])[1]
    layer.forward(x2)
    got = layer.backward(dy, c1)[1]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("shape", [(3, 1, 2, 4), (3, 5, 1, 1), (17, 3, 1, 1), (16, 2, 3, 5)])
def test_paths_agree_at_edge_shapes(shape, float64, rng):
    """T = 1, units = 1, one input feature, and batches at the two-half threshold (real
    batch_parts: halves when BLAS has two threads)."""
    B, T, D, u = shape
    x = rng.standard_normal((B, T, D))
    for make in (lambda **kw: GRU(u, **kw), lambda **kw: GRU(u, reset_after=False, **kw),
                 lambda **kw: LSTM(u, **kw), lambda **kw: SimpleRNN(u, **kw)):
        a, b = run_both(make, x, rng, return_sequences=True, return_state=True)
        assert_same(a, b, 1e-11)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch", [6, 13])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_paths_agree_through_the_small_products(cell, batch, dtype, rng, monkeypatch):
    """Batches narrower than a vector (16 float32 values, 8 float64) take kernels.c's small_kn
    products, blocks of two vectors of gate rows by up to 8 sequences: 37 units leave gate
    rows past the last whole vector (read in U itself going forward, from its zero-padded
    transposed copy going back), 13 sequences a second block of columns; float32 LSTM cells
    go two rows of 6 to a vector. Against the NumPy loop, with a mask, then with initial
    states and dropout."""
    monkeypatch.setattr(_native, "batch_parts", lambda B: [(0, B)])
    from grukit import config
    old = config.floatx()
    config.set_floatx(dtype)
    try:
        x = rng.standard_normal((batch, 4, 3)).astype(dtype)
        agree_with_mask_then_states(cell, 37, x, rng, 1e-11 if dtype == "float64" else 2e-5)
    finally:
        config.set_floatx(old)


@pytest.mark.parametrize("batch", [19, 40])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_paths_agree_through_the_tiled_products(cell, batch, float64, rng):
    """Batches of a vector width (8 float64 values) or more take kernels.c's tiled step products,
    with x_t W inside the step loop: 70 units give gate rows in several 16-row panels plus a
    partial one, backward products over more than 256 gate rows come in two K blocks, and 19 or
    40 columns leave a tail for gemm(); with masks, then with initial states and dropout."""
    x = rng.standard_normal((batch, 3, 5))
    agree_with_mask_then_states(cell, 300 if cell == "rnn" else 70, x, rng, 1e-11)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("units", [20, 40])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_weight_gradients_through_wgrad(cell, units, dtype, rng, monkeypatch):
    """With 256 or more columns over all steps (T*B) and a vector's width of features, kernels.c
    computes the weight gradients with its own products (wgrad) where the build has the AVX-512
    tiles: 20 or 40 units are padded to whole vectors (an even and an odd count of them), the
    gate rows end in a partial tile, 600 columns (the batch kept whole; float64) come in two whole
    blocks and a partial one, and x's 17 features (dL/dW) are padded too. The NumPy loop's gradients
    are the reference; dropout and a mask take the paths' other branches."""
    monkeypatch.setattr(_native, "batch_parts", lambda B: [(0, B)])
    from grukit import config
    # float32 over 30 steps of weights this size amplifies rounding past any useful tolerance:
    # it takes 15 steps (300 columns, one whole block and a partial one)
    B, T, D, u = 20, 30 if dtype == "float64" else 15, 17, units
    old = config.floatx()
    config.set_floatx(dtype)
    try:
        x = rng.standard_normal((B, T, D)).astype(dtype)
        mask = np.ones((B, T), bool)
        mask[3, T - 5:] = False
        drop = ((rng.random((B, D)) > 0.3) / 0.7, (rng.random((B, u)) > 0.4) / 0.6)
        make = sized(cell, u)
        for kw in ({}, {"mask": mask, "dropout_masks": drop}):
            a, b = run_both(make, x, rng, return_sequences=True, **kw)
            # 30 steps with weights of this size amplify rounding differences (to 2e-11 in
            # float64); an error in the products shows at order 1 (a K block dropped: checked)
            assert_same(a, b, 1e-9 if dtype == "float64" else 1e-3)
    finally:
        config.set_floatx(old)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_inference_without_gates_agrees(cell, float64, rng):
    """predict() runs the compiled loops without keeping each step's gates (Layer.infer); its
    outputs match the NumPy loop's, and a trace afterwards, on reused buffers, still sees h."""
    x = rng.standard_normal((40, 5, 3))
    got, weights = [], None
    for native in (True, False):
        with path(native):
            model = Sequential([CELLS[cell](return_sequences=True, input_shape=(5, 3))])
            if weights is None:
                weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
            model.set_weights(weights)
            y = model.predict(x, batch_size=40, verbose=0)
            got.append((y, model.layers[0].trace(x)["h"], model.predict(x[:9], verbose=0)))
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got[0][0], got[0][1], rtol=1e-12, atol=1e-13)


def test_bidirectional_and_first_layer_gradients_agree(float64, rng):
    from grukit.layers import Bidirectional
    x = rng.standard_normal((17, 4, 3))
    y = rng.standard_normal((17, 2))
    grads = []
    for native in (True, False):
        with path(native):
            model = Sequential([Bidirectional(GRU(3, return_sequences=True), input_shape=(4, 3)),
                                LSTM(2)])
            model.compile("sgd", "mse")
            if not grads:
                weights = model.get_weights()
            model.set_weights(weights)
            model.train_on_batch(x, y)                      # first layer: no input gradient
            grads.append(model.get_weights())
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
