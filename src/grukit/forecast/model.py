"""The forecasting network, its training, and the saved bundle (model file + JSON sidecar).

The network is deliberately small: ``K`` recurrent layers (GRU, LSTM or SimpleRNN; all but the
last return sequences) read the scaled window one step at a time, and one ``Dense(H)`` head maps
the last state to all ``H`` future steps at once (direct multi-step forecasting: no forecast is
fed back as an input, so errors do not compound over the horizon). Training minimises MSE with
Adam; :class:`~grukit.callbacks.EarlyStopping` watches the validation loss and restores the
weights of the best epoch, so ``--epochs`` is only an upper bound.

The bundle is what ``grukit forecast`` writes and ``grukit predict`` / ``explain`` read: the model
in grukit's native format (``model.grukit``) and beside it ``forecast.json`` with what the model
needs around it: columns, window, horizon, season and each series' scaling statistics.
"""
import json
import os
import time

from .. import __version__
from ..callbacks import Callback, EarlyStopping
from ..layers import GRU, LSTM, Dense, SimpleRNN
from ..models import Sequential, load_model
from ..optimizers import Adam
from ._optional import require
from .data import ForecastError
from .windows import Scaler

CELLS = {"gru": GRU, "lstm": LSTM, "rnn": SimpleRNN}
MODEL_FILE = "model.grukit"
SIDECAR = "forecast.json"
SIDECAR_FORMAT = "grukit-forecast"


def build_model(cell="gru", units=32, layers=1, window=24, horizon=12, features=1):
    """``layers`` x ``cell(units)`` + ``Dense(horizon)`` for inputs (batch, window, features)."""
    if cell not in CELLS:
        raise ForecastError(f"unknown cell {cell!r}; use gru, lstm or rnn.")
    stack = []
    for k in range(layers):
        kw = {"input_shape": (window, features)} if k == 0 else {}
        stack.append(CELLS[cell](units, return_sequences=k < layers - 1, **kw))
    stack.append(Dense(horizon))
    return Sequential(stack, name=f"forecast_{cell}")


def describe(cell, units, layers, horizon):
    name = {"gru": "GRU", "lstm": "LSTM", "rnn": "SimpleRNN"}[cell]
    stack = f"{name}({units})" if layers == 1 else f"{layers} x {name}({units})"
    return f"{stack} + Dense({horizon})"


class TqdmProgress(Callback):
    """A tqdm progress bar over epochs, with the training and validation loss beside it."""

    def __init__(self, disable=False):
        super().__init__()
        self.disable = disable
        self.bar = None

    def on_train_begin(self, logs=None):
        tqdm = require("tqdm", "the training progress bar").tqdm
        self.bar = tqdm(total=self.params.get("epochs"), desc="training", unit="epoch",
                        disable=self.disable, leave=False, dynamic_ncols=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        post = {k: f"{logs[k]:.4f}" for k in ("loss", "val_loss") if k in logs}
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


def train(model, x, y, xv, yv, epochs=300, batch_size=16, patience=20, learning_rate=1e-3,
          progress=True):
    """Fit with early stopping on the validation windows (when there are any); returns a dict
    with the epochs run, the best epoch (1-based) and the seconds taken."""
    model.compile(optimizer=Adam(learning_rate=learning_rate), loss="mse")
    cbs = [TqdmProgress(disable=not progress)]
    stopper = None
    if xv is not None and len(xv):
        stopper = EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        cbs.insert(0, stopper)
    t0 = time.perf_counter()
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=cbs,
                     validation_data=(xv, yv) if stopper else None, shuffle=True)
    seconds = time.perf_counter() - t0
    ran = len(hist.epoch)
    best = stopper.best_epoch + 1 if stopper is not None and stopper.best is not None else ran
    out = {"epochs_run": ran, "best_epoch": best, "seconds": round(seconds, 3),
           "train_loss": float(hist.history["loss"][best - 1])}
    if stopper is not None:
        out["val_loss"] = float(hist.history["val_loss"][best - 1])
    return out


# ---- the bundle ------------------------------------------------------------------------------
def save_bundle(folder, model, meta):
    """Write ``model.grukit`` and ``forecast.json`` (``meta`` and format fields) to ``folder``."""
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, MODEL_FILE))
    side = {"format": SIDECAR_FORMAT, "version": 1, "grukit": __version__,
            "model_file": MODEL_FILE, **meta}
    tmp = os.path.join(folder, SIDECAR + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(side, f, indent=2)
    os.replace(tmp, os.path.join(folder, SIDECAR))


def load_bundle(path):
    """(model, sidecar dict, scalers by series key) from a ``--out`` folder or a ``.grukit`` file
    with ``forecast.json`` beside it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ForecastError(f"model {path!r} not found; give the --out folder of 'grukit forecast' "
                            "or the model.grukit file in it.")
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    side_path = os.path.join(folder, SIDECAR)
    if not os.path.isfile(side_path):
        raise ForecastError(f"no {SIDECAR} beside the model in {folder!r}; give a folder written "
                            "by 'grukit forecast' (it holds the scaling and window settings).")
    try:
        with open(side_path, encoding="utf-8") as f:
            side = json.load(f)
    except (OSError, ValueError) as e:
        raise ForecastError(f"{side_path} cannot be read as JSON ({e}); run 'grukit forecast' "
                            "again to rewrite it.") from None
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise ForecastError(f"{side_path} is not a grukit forecast sidecar; run 'grukit forecast' "
                            "again to rewrite it.")
    model_path = path if os.path.isfile(path) else os.path.join(folder, side.get("model_file",
                                                                                 MODEL_FILE))
    if not os.path.isfile(model_path):
        raise ForecastError(f"model file {model_path!r} not found beside {SIDECAR}; run "
                            "'grukit forecast' again.")
    model = load_model(model_path, compile=False)
    scalers = {k: Scaler.from_json(v) for k, v in side["scalers"].items()}
    return model, side, scalers
