"""Keras files, live against Keras 3 (torch backend): .keras both ways, .weights.h5, legacy .h5."""
import json
import sys

import h5py
import keras
import numpy as np
import pytest

from grukit import regularizers
from grukit.layers import (GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking,
                           SimpleRNN)
from grukit.models import Sequential, load_model

KL = keras.layers
TOL = 1e-5


@pytest.fixture(autouse=True)
def _keras_seed():
    keras.utils.set_random_seed(0)


def kpredict(model, x):
    return keras.ops.convert_to_numpy(model.predict(x, verbose=0))


def perturb(model):
    """Random biases too, so that every weight's place is checked."""
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])


def keras_models():
    yield "gru_stack", (4, 3), lambda: keras.Sequential([
        keras.Input((4, 3)), KL.GRU(5, return_sequences=True), KL.GRU(4, reset_after=False),
        KL.Dense(2, activation="softmax")])
    yield "lstm_rnn", (4, 3), lambda: keras.Sequential([
        keras.Input((4, 3)), KL.LSTM(5, return_sequences=True, go_backwards=True),
        KL.SimpleRNN(3, activation="relu"), KL.Dropout(0.3), KL.Dense(1), KL.Activation("tanh")])
    yield "bidirectional", (4, 3), lambda: keras.Sequential([
        keras.Input((4, 3)), KL.Bidirectional(KL.GRU(3, return_sequences=True), merge_mode="sum"),
        KL.Bidirectional(KL.LSTM(2), backward_layer=KL.LSTM(2, go_backwards=True)),
        KL.Dense(1)])
    yield "masking", (5, 2), lambda: keras.Sequential([
        keras.Input((5, 2)), KL.Masking(0.0), KL.GRU(3, return_sequences=True), KL.LSTM(2)])
    yield "penalties", (4, 3), lambda: keras.Sequential([
        keras.Input((4, 3)),
        KL.GRU(3, kernel_regularizer=keras.regularizers.L2(0.01),
               recurrent_regularizer=keras.regularizers.L1L2(0.01, 0.02),
               kernel_constraint=keras.constraints.MaxNorm(3.0),
               recurrent_activation="hard_sigmoid", dropout=0.1, recurrent_dropout=0.2),
        KL.Dense(1, bias_constraint=keras.constraints.NonNeg())])


CASES = list(keras_models())


def inputs(shape, n=3):
    x = np.random.default_rng(2).standard_normal((n,) + shape).astype(np.float32)
    x[0, -2:] = 0.0   # padding for the masking case
    return x


@pytest.mark.parametrize("name,shape,make", CASES, ids=[c[0] for c in CASES])
def test_keras_file_into_grukit(name, shape, make, tmp_path):
    km = make()
    perturb(km)
    x = inputs(shape)
    km.save(tmp_path / "m.keras")
    gm = load_model(tmp_path / "m.keras")
    assert np.abs(gm.predict(x) - kpredict(km, x)).max() < TOL
    # the legacy HDF5 full-model file
    km.save(tmp_path / "m.h5")
    assert np.abs(load_model(tmp_path / "m.h5").predict(x) - kpredict(km, x)).max() < TOL
    # weights alone, into a grukit model built from the same config
    km.save_weights(tmp_path / "m.weights.h5")
    fresh = load_model(tmp_path / "m.keras")
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    fresh.load_weights(tmp_path / "m.weights.h5")
    assert np.abs(fresh.predict(x) - kpredict(km, x)).max() < TOL


def grukit_models():
    yield "gru_stack", (4, 3), lambda: Sequential([
        GRU(5, return_sequences=True, input_shape=(4, 3)), GRU(4, reset_after=False),
        Dense(2, activation="softmax")])
    yield "lstm_rnn", (4, 3), lambda: Sequential([
        LSTM(5, return_sequences=True, go_backwards=True, input_shape=(4, 3)),
        SimpleRNN(3, activation="relu"), Dropout(0.3), Dense(1), Activation("tanh")])
    yield "bidirectional", (4, 3), lambda: Sequential([
        Bidirectional(GRU(3, return_sequences=True), merge_mode="mul", input_shape=(4, 3)),
        Bidirectional(LSTM(2), merge_mode="ave"), Dense(1)])
    yield "masking", (5, 2), lambda: Sequential([
        Masking(0.0, input_shape=(5, 2)), GRU(3, return_sequences=True), LSTM(2)])
    yield "penalties", (4, 3), lambda: Sequential([
        GRU(3, input_shape=(4, 3), kernel_regularizer=regularizers.L2(0.01),
            bias_constraint="non_neg", recurrent_activation="hard_sigmoid"),
        Dense(1, kernel_constraint="max_norm")])


GCASES = list(grukit_models())


@pytest.mark.parametrize("name,shape,make", GCASES, ids=[c[0] for c in GCASES])
def test_grukit_model_opens_in_keras(name, shape, make, tmp_path):
    gm = make()
    gm.build()
    rng = np.random.default_rng(3)
    gm.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in gm.get_weights()])
    x = inputs(shape)
    gm.save(tmp_path / "g.keras")
    km = keras.models.load_model(tmp_path / "g.keras")
    assert np.abs(kpredict(km, x) - gm.predict(x)).max() < TOL
    for a, b in zip(km.get_weights(), gm.get_weights()):
        assert np.array_equal(keras.ops.convert_to_numpy(a), b)
    # and weights files written by grukit load into Keras
    gm.save_weights(tmp_path / "g.weights.h5")
    km2 = keras.models.load_model(tmp_path / "g.keras")
    km2.set_weights([np.zeros_like(w) for w in km2.get_weights()])
    km2.load_weights(tmp_path / "g.weights.h5")
    assert np.abs(kpredict(km2, x) - gm.predict(x)).max() < TOL


def test_embedding_round_trip(tmp_path):
    km = keras.Sequential([keras.Input((6,), dtype="int32"), KL.Embedding(20, 4, mask_zero=True),
                           KL.GRU(3)])
    ids = np.array([[1, 5, 7, 0, 0, 0], [3, 3, 3, 3, 3, 19]])
    km.save(tmp_path / "e.keras")
    gm = load_model(tmp_path / "e.keras")
    assert np.abs(gm.predict(ids) - kpredict(km, ids)).max() < TOL
    gm.save(tmp_path / "back.keras")
    assert np.abs(kpredict(keras.models.load_model(tmp_path / "back.keras"), ids)
                  - gm.predict(ids)).max() < TOL


def test_keras2_style_legacy_file(tmp_path):
    """A Keras 2 era full-model HDF5 file: batch_input_shape in the first layer's config, extra
    options (time_major, implementation), and weight names with ':0'."""
    km = keras.Sequential([keras.Input((4, 2)), KL.GRU(3), KL.Dense(1)])
    perturb(km)
    w = [keras.ops.convert_to_numpy(a) for a in km.get_weights()]
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "GRU", "config": {"name": "gru", "trainable": True, "dtype": "float32",
                                         "batch_input_shape": [None, 4, 2], "units": 3,
                                         "activation": "tanh", "recurrent_activation": "sigmoid",
                                         "use_bias": True, "return_sequences": False,
                                         "return_state": False, "go_backwards": False,
                                         "stateful": False, "unroll": False, "time_major": False,
                                         "implementation": 2, "reset_after": True,
                                         "kernel_initializer": {"class_name": "GlorotUniform",
                                                                "config": {"seed": None}}}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 1, "activation": "linear",
                                           "use_bias": True}}]}}
    with h5py.File(tmp_path / "k2.h5", "w") as f:
        f.attrs["model_config"] = json.dumps(config).encode()
        f.attrs["keras_version"] = b"2.15.0"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [b"gru", b"dense"]
        names = {"gru": [b"gru/gru_cell/kernel:0", b"gru/gru_cell/recurrent_kernel:0",
                         b"gru/gru_cell/bias:0"], "dense": [b"dense/kernel:0", b"dense/bias:0"]}
        arrays = {"gru": w[:3], "dense": w[3:]}
        for layer, wn in names.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = wn
            for n, a in zip(wn, arrays[layer]):
                g.create_dataset(n.decode(), data=a)
    x = inputs((4, 2))
    assert np.abs(load_model(tmp_path / "k2.h5").predict(x) - kpredict(km, x)).max() < TOL


def test_unsupported_layer_is_named(tmp_path):
    km = keras.Sequential([keras.Input((4, 3)), KL.Conv1D(2, 2, name="my_conv"), KL.GRU(2)])
    km.save(tmp_path / "c.keras")
    with pytest.raises(ValueError, match="Unsupported layer 'my_conv' of class 'Conv1D'"):
        load_model(tmp_path / "c.keras")


def test_damaged_keras_files(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .keras archive"):
        load_model(tmp_path / "bad.keras")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_model(tmp_path / "bad.h5")


def test_h5py_missing_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    gm = Sequential([GRU(2, input_shape=(3, 1))])
    with pytest.raises(ImportError, match="needs h5py: pip install h5py"):
        gm.save(tmp_path / "x.keras")
