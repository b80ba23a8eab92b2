"""The native format: round trips, exact resume, damaged files, a save killed midway, checkpoints."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from grukit import callbacks, optimizers, regularizers, saving
from grukit.layers import (GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding,
                           Masking, SimpleRNN)
from grukit.models import Sequential, load_model
from grukit.utils import set_random_seed


def every_layer_model():
    return Sequential([
        Masking(0.0, input_shape=(6, 3)),
        Bidirectional(GRU(4, return_sequences=True, reset_after=False), merge_mode="ave"),
        LSTM(5, return_sequences=True, kernel_regularizer=regularizers.L2(0.01),
             recurrent_constraint="unit_norm", dropout=0.1, seed=3),
        SimpleRNN(4, return_sequences=True, activation="relu", go_backwards=True),
        GRU(3, recurrent_activation="hard_sigmoid"),
        Dropout(0.2), Dense(4, activation="relu"), Dense(2), Activation("softmax")])


def test_round_trip_every_layer(tmp_path, rng):
    model = every_layer_model()
    model.compile(optimizer=optimizers.RMSprop(learning_rate=0.01, momentum=0.5), loss="huber",
                  metrics=["mae"])
    x, y = rng.standard_normal((8, 6, 3)), rng.standard_normal((8, 2))
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.grukit")
    back = load_model(tmp_path / "m.grukit")
    assert [type(a) for a in back.layers] == [type(a) for a in model.layers]
    assert np.array_equal(back.predict(x), model.predict(x))
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
    assert back.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert back.layers[2].param_constraints and back.layers[2].param_regularizers
    assert back.optimizer.get_config() == model.optimizer.get_config()


def test_embedding_model_round_trip(tmp_path):
    model = Sequential([Embedding(10, 4, mask_zero=True, input_shape=(5,)), GRU(3), Dense(1)])
    model.build()
    model.save(tmp_path / "e.grukit")
    ids = np.array([[1, 2, 3, 0, 0]])
    assert np.array_equal(load_model(tmp_path / "e.grukit").predict(ids), model.predict(ids))


def test_float64_model_round_trip(tmp_path, float64, rng):
    model = Sequential([GRU(3, input_shape=(4, 2)), Dense(1)])
    model.build()
    model.save(tmp_path / "f.grukit")
    back = load_model(tmp_path / "f.grukit")
    assert back.get_weights()[0].dtype == np.float64
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop",
                                       optimizers.SGD(0.05, momentum=0.9, nesterov=True)])
def test_resumed_training_equals_uninterrupted(tmp_path, optimizer):
    """4 epochs in one go == 2 epochs, save, load, 2 more: bit for bit (shuffling and dropout
    included)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 5, 2)), rng.standard_normal(20)

    def fresh():
        set_random_seed(5)
        m = Sequential([GRU(6, input_shape=(5, 2), dropout=0.2, recurrent_dropout=0.2),
                        Dropout(0.3), Dense(1)])
        m.compile(optimizer=optimizer if isinstance(optimizer, str)
                  else optimizers.from_config(optimizer.get_config()), loss="mse")
        return m

    whole = fresh()
    h_whole = whole.fit(x, y, epochs=4, batch_size=8, verbose=0).history["loss"]
    first = fresh()
    h1 = first.fit(x, y, epochs=2, batch_size=8, verbose=0).history["loss"]
    first.save(tmp_path / "half.grukit")
    set_random_seed(999)     # the global generator moves on: the file carries the model's own
    second = load_model(tmp_path / "half.grukit")
    assert second.epochs_trained == 2
    h2 = second.fit(x, y, epochs=2, batch_size=8, verbose=0).history["loss"]
    assert h1 + h2 == h_whole
    assert all(np.array_equal(a, b) for a, b in zip(second.get_weights(), whole.get_weights()))


# ---- damaged files ---------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = Sequential([GRU(3, input_shape=(4, 2)), Dense(1)])
    model.compile("adam", "mse")
    model.train_on_batch(np.ones((2, 4, 2)), np.ones(2))
    path = tmp_path / "good.grukit"
    model.save(path)
    return path


def test_empty_file(tmp_path):
    (tmp_path / "empty.grukit").write_bytes(b"")
    with pytest.raises(ValueError, match="the file is empty"):
        load_model(tmp_path / "empty.grukit")


def test_truncated_file(saved):
    data = saved.read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or not a zip archive|damaged"):
            load_model(saved)


def test_corrupted_byte(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("weights/0000.npy")
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF   # inside the array's bytes
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"'weights/0000.npy' is damaged \(Bad CRC-32"):
        load_model(saved)


def test_not_a_model_file(tmp_path):
    (tmp_path / "text.grukit").write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_model(tmp_path / "text.grukit")
    with zipfile.ZipFile(tmp_path / "other.grukit", "w") as z:
        z.writestr("grukit.json", json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="does not name the grukit format"):
        load_model(tmp_path / "other.grukit")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(tmp_path / "missing.grukit")


def rewrite_manifest(path, change):
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["grukit.json"])
    change(manifest)
    members["grukit.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def test_wrong_version(saved):
    rewrite_manifest(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99, but this grukit reads version 1"):
        load_model(saved)


def test_missing_member_and_garbled_manifest(saved):
    rewrite_manifest(saved, lambda m: m["weights"].append("weights/9999.npy"))
    with pytest.raises(ValueError, match="'weights/9999.npy' is missing"):
        load_model(saved)


def test_loading_executes_nothing(saved, tmp_path):
    """An object array (which would need pickle) is refused, not unpickled."""
    with zipfile.ZipFile(saved) as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    members["weights/0000.npy"] = buf.getvalue()
    with zipfile.ZipFile(saved, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="cannot be read.*allow_pickle"):
        load_model(saved)


def test_a_failed_save_leaves_the_old_file(saved, monkeypatch):
    before = saved.read_bytes()
    model = load_model(saved)

    def boom(a):
        raise OSError("disk full")
    monkeypatch.setattr(saving, "_npy_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]   # no temporary left


def test_kill_during_save_leaves_the_previous_file(saved, tmp_path):
    """A process killed in the middle of a save (after part of the archive is written) leaves
    the previous file loadable and unchanged."""
    before = saved.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from grukit import saving
        from grukit.models import load_model
        model = load_model({str(saved)!r})
        model.set_weights([w + 1 for w in model.get_weights()])
        real = saving._npy_bytes
        def slow(a):
            print("writing", flush=True)
            time.sleep(60)
            return real(a)
        saving._npy_bytes = slow
        model.save({str(saved)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert saved.read_bytes() == before
    load_model(saved)


# ---- checkpoints -----------------------------------------------------------------------------
def test_model_checkpoint_save_best_only(tmp_path, rng):
    x, y = rng.standard_normal((10, 4, 2)), rng.standard_normal(10)
    model = Sequential([GRU(3, input_shape=(4, 2)), Dense(1)])
    model.compile(optimizers.SGD(learning_rate=3.0), "mse")   # unstable: val_loss goes up and down
    seen = []

    class Keep(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], model.get_weights()))

    ckpt = callbacks.ModelCheckpoint(tmp_path / "best.grukit", monitor="val_loss",
                                     save_best_only=True)
    model.fit(x, y, epochs=8, validation_data=(x, y), callbacks=[ckpt, Keep()], verbose=0)
    best = int(np.argmin([v for v, _ in seen]))
    back = load_model(tmp_path / "best.grukit")
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), seen[best][1]))
    ckpt_all = callbacks.ModelCheckpoint(str(tmp_path / "e{epoch:02d}.grukit"))
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[ckpt_all], verbose=0)
    assert (tmp_path / "e01.grukit").exists() and (tmp_path / "e02.grukit").exists()
