"""``grukit explain``: the gates of the first recurrent layer over one input window.

The window is scaled exactly as for a forecast (:mod:`grukit.forecast.windows`) and passed through
``layer.trace`` of the model's first recurrent layer, which returns every gate at every step,
(batch, time, units). The gates drawn (and written to the CSV) are:

- GRU: ``z`` the update gate and ``r`` the reset gate. ``h_t = z * h_{t-1} + (1 - z) * h~_t``:
  z near 1 means the unit keeps its old state (the step barely changes it); z near 0 means it takes
  the new candidate. r near 0 means the candidate ignores the past state and is computed from the
  current input alone. (In the seed's notation the update gate is ``u = 1 - z``.)
- LSTM: ``i`` input, ``f`` forget and ``o`` output gates: f near 1 keeps the cell state, i near 1
  writes the candidate into it, o near 1 exposes the cell state as the output.
- SimpleRNN has no gates; its hidden state ``h`` is drawn instead.

Windows are numbered 0 .. n-W over a series of n values: window i holds values[i:i+W], so the last
one (index -1, the default) is the window a forecast of the future starts from.
"""
import csv
import os

from .data import ForecastError
from .model import load_bundle
from .pipeline import load_for_model, series_key
from .plot import plot_gates
from .windows import Scaler, window_xy

GATES = {"GRU": (("z", "update gate z"), ("r", "reset gate r")),
         "LSTM": (("i", "input gate i"), ("f", "forget gate f"), ("o", "output gate o")),
         "SimpleRNN": (("h", "hidden state h"),)}


def run_explain(model_path, data=None, out="grukit-explain", window_index=-1, series=None,
                target=None, time=None, id=None, emit=None):
    """Write ``gates.png`` and ``gates.csv`` into ``out``; returns a dict describing the window.
    ``data`` and the column names as in :func:`~grukit.forecast.pipeline.run_predict`."""
    model, side, scalers = load_bundle(model_path)
    ds = load_for_model(side, data, target, time, id)
    W = int(side["window"])
    s = _pick_series(ds, series)
    n_windows = len(s) - W + 1
    if n_windows < 1:
        raise ForecastError(f"too few rows: {s.name} has {len(s)} values but the model reads "
                            f"windows of {W}; give at least {W} rows.")
    i = int(window_index)
    if not -n_windows <= i < n_windows:
        raise ForecastError(f"--window-index {i} is out of range: {s.name} has {n_windows} windows "
                            f"of {W} values (0 .. {n_windows - 1}, or -{n_windows} .. -1 from the "
                            "end).")
    i %= n_windows
    sc = scalers.get(series_key(s.id)) or Scaler(side["transform"]).fit(s.values)
    x, _, _ = window_xy(sc.scale(s.values), [i + W], W, 1)
    layer = next((l for l in model.layers if hasattr(l, "trace")), None)
    if layer is None:
        raise ForecastError("the model has no recurrent layer to explain.")
    kind = type(layer).__name__
    trace = layer.trace(x)
    gates = {caption: trace[key][0] for key, caption in GATES.get(kind, (("h", "hidden state h"),))}
    labels = s.labels(i, i + W)
    values = s.values[i:i + W]
    if emit:
        for line in ds.notes:
            emit(line)
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "gates.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", ds.time or "time", ds.target, "scaled_input", "gate", "unit", "value"])
        for key, caption in GATES.get(kind, (("h", ""),)):
            a = trace[key][0]
            for t in range(W):
                for u in range(a.shape[1]):
                    w.writerow([t, labels[t], f"{values[t]:.6g}", f"{x[0, t, 0]:.6g}", key, u,
                                f"{a[t, u]:.6g}"])
    where = "" if s.id is None else f" of {s.id}"
    title = (f"{kind}({layer.units}) gates over window {i}{where}: {labels[0]} .. {labels[-1]} "
             f"({W} steps)")
    png = plot_gates(os.path.join(out, "gates.png"), labels, values, gates, title, ds.target)
    summary = {key: {"mean": float(trace[key][0].mean()),
                     "share_above_0.5": float((trace[key][0] > 0.5).mean())}
               for key, _ in GATES.get(kind, ()) if key != "h"}
    return {"cell": kind, "units": layer.units, "window_index": i, "windows": n_windows,
            "from": labels[0], "to": labels[-1], "series": s.id, "files": [png, csv_path],
            "gates": summary}


def _pick_series(ds, series):
    if series is None:
        return ds.series[0]
    for s in ds.series:
        if str(s.id) == str(series):
            return s
    ids = ", ".join(str(s.id) for s in ds.series[:10])
    raise ForecastError(f"--series {series!r} is not in the data; its series are: {ids}.")
