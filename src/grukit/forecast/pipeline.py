"""``grukit forecast`` and ``grukit predict`` as functions: read, split, scale, train, backtest,
forecast, write. The command line (:mod:`grukit.forecast.commands`) only parses options and prints.

One global model is trained over the windows of every series (each series scaled with the
statistics of its own training part); the backtest and the forecast are made per series. The model
that is backtested is the model that forecasts the future and is saved: it has seen no value of the
validation or test part as a training target (validation only chose the epoch), and it forecasts
from the last ``window`` values of each series, whatever their level, because windows are scaled
relative to their last value (see :mod:`grukit.forecast.windows`).
"""
import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..utils import set_random_seed
from . import backtest
from .data import ForecastError, load_dataset
from .model import build_model, describe, load_bundle, save_bundle, train, SIDECAR, MODEL_FILE
from .windows import Scaler, forecast_from_output, split, window_xy


@dataclass
class ForecastOptions:
    """The options of ``grukit forecast`` (the same names and defaults as the command line)."""
    data: str = None
    target: str = None
    time: str = None
    id: str = None
    horizon: int = 12
    window: int = 24
    cell: str = "gru"
    units: int = 32
    layers: int = 1
    epochs: int = 300
    batch_size: int = 16
    patience: int = 20
    learning_rate: float = 1e-3
    val_windows: int = 12
    test_windows: int = 12
    season: int = None
    transform: str = "auto"
    seed: int = 0
    out: str = "grukit-forecast"
    progress: bool = True
    plot: bool = True


@dataclass
class SeriesResult:
    """What the forecast produced for one series."""
    series: object
    scaler: Scaler
    split: object
    test_forecast: np.ndarray = None      # (T, H)
    future: np.ndarray = None             # (H,)
    metrics: dict = field(default_factory=dict)

    @property
    def key(self):
        return series_key(self.series.id)


def series_key(sid):
    return "" if sid is None else str(sid)


def _emit_default(line):
    import sys
    print(line, file=sys.stderr)


def prepare(opts):
    """Load and split the data; returns (dataset, [SeriesResult], season, transform). Every check
    of the input happens here, before anything is printed or trained."""
    ds = load_dataset(opts.data, target=opts.target, time=opts.time, id=opts.id)
    season = int(opts.season) if opts.season else ds.season
    results, errors = [], []
    for s in ds.series:
        try:
            sp = split(len(s), opts.window, opts.horizon, opts.val_windows, opts.test_windows,
                       name=s.name)
        except ForecastError as e:
            if len(ds.series) == 1:
                raise
            errors.append(e)
            ds.notes.append(f"warning: {s.name} skipped: {str(e).split(': ', 1)[1]}")
            continue
        if len(sp.train) == 0:
            raise ForecastError(f"{s.name}: no training window left; lower --val-windows or "
                                "--test-windows.")
        if season > int(sp.test[0]):
            raise ForecastError(f"--season {season} reaches before the start of {s.name} at its "
                                "first test window; give a smaller --season or a longer series.")
        results.append(SeriesResult(s, None, sp))
    if not results:
        first = str(errors[0]).split(": ", 1)[1]
        raise ForecastError(f"too few rows in every one of the {len(errors)} series; {first}")
    transform = opts.transform
    if transform == "auto":
        positive = all(np.all(r.series.values > 0) for r in results)
        transform = "log" if positive else "none"
        if not positive:
            ds.notes.append("note: the data has values <= 0, so no log transform is used.")
    for r in results:
        r.scaler = Scaler(transform).fit(r.series.values[:r.split.train_end])
    return ds, results, season, transform


def _stack(results, part, window, horizon):
    xs, ys = [], []
    for r in results:
        origins = getattr(r.split, part)
        if len(origins):
            x, y, _ = window_xy(r.scaler.scale(r.series.values), origins, window, horizon)
            xs.append(x)
            ys.append(y)
    if not xs:
        return None, None
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class ForecastRun:
    """What :func:`run_forecast` returns: the data, the per-series results, the metrics (as in
    metrics.json) and the files written."""
    dataset: object
    results: list
    metrics: dict
    files: list


def run_forecast(opts, emit=_emit_default):
    """Run ``grukit forecast`` and write its files into ``opts.out``."""
    ds, results, season, transform = prepare(opts)
    for line in ds.notes:
        emit(line)
    W, H = opts.window, opts.horizon
    x, y = _stack(results, "train", W, H)
    xv, yv = _stack(results, "val", W, H)
    set_random_seed(int(opts.seed))
    model = build_model(opts.cell, opts.units, opts.layers, W, H)
    info = train(model, x, y, xv, yv, epochs=opts.epochs, batch_size=opts.batch_size,
                 patience=opts.patience, learning_rate=opts.learning_rate, progress=opts.progress)
    info.update(train_windows=int(len(x)), val_windows=int(0 if xv is None else len(xv)))

    for r in results:
        s = r.scaler.scale(r.series.values)
        xt, _, lvl = window_xy(s, r.split.test, W, H)
        r.test_forecast = forecast_from_output(r.scaler, model.predict(xt, batch_size=256), lvl)
        xf, _, lvf = window_xy(s, [len(s)], W, H)
        r.future = forecast_from_output(r.scaler, model.predict(xf), lvf)[0]
        r.metrics = backtest.evaluate(r.series.values, r.split.test, H, season,
                                      r.split.train_end, r.test_forecast)

    metrics = _summarize(ds, results, opts, season, transform, info)
    if any(r.metrics["scale_season"] != season for r in results):
        emit(f"note: a training part is too short (or too flat) for a season-{season} MASE "
             "scale; the one-step naive MAE scales MASE there.")
    out = opts.out
    os.makedirs(out, exist_ok=True)
    rows = [(r.series, r.series.future_labels(H), r.future) for r in results]
    files = [write_forecast_csv(os.path.join(out, "forecast.csv"), ds, rows),
             write_backtest_csv(os.path.join(out, "backtest.csv"), ds, results, season)]
    with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(_finite(metrics), f, indent=2)      # strict JSON: NaN (no MASE scale) as null
    files.append(os.path.join(out, "metrics.json"))
    meta = {"data": None if opts.data is None else os.path.abspath(opts.data),
            "source": ds.source, "target": ds.target, "time": ds.time, "id": ds.id,
            "window": W, "horizon": H, "season": season, "transform": transform,
            "cell": opts.cell, "units": opts.units, "layers": opts.layers,
            "axis": ds.axis.to_json(),
            "scalers": {r.key: r.scaler.to_json() for r in results},
            "last": {r.key: r.series.labels(-1)[0] for r in results},
            "training": info, "mase": metrics["mase"]}
    save_bundle(out, model, meta)
    files += [os.path.join(out, MODEL_FILE), os.path.join(out, SIDECAR)]
    if opts.plot:
        from .plot import plot_forecast
        files.append(plot_forecast(os.path.join(out, "forecast.png"), ds, results, metrics))
    return ForecastRun(ds, results, metrics, files)


def _summarize(ds, results, opts, season, transform, info):
    """metrics.json: the model's scores at the top level (``mase`` among them), the baselines'
    under ``baselines``; with many series each metric is the mean over the series and each
    series' own scores are under ``series``."""
    names = ("model", "naive", "seasonal_naive")
    mean = {n: {k: float(np.mean([r.metrics[n][k] for r in results]))
                for k in ("mae", "rmse", "smape", "mase")} for n in names}
    test_from = min(r.series.labels(int(r.split.test[0]))[0] for r in results)
    out = {**mean["model"],
           "baselines": {"naive": mean["naive"], "seasonal_naive": mean["seasonal_naive"]},
           "season": season,
           "mase_scale": ("mean absolute error of the in-sample seasonal-naive forecast (lag = "
                          "season) over each series' training part"),
           "smape_unit": "percent (0-200)",
           "horizon": opts.horizon, "window": opts.window, "test_windows": opts.test_windows,
           "test_points": int(sum(r.test_forecast.size for r in results)),
           "test_from": test_from, "series_count": len(results),
           "model": describe(opts.cell, opts.units, opts.layers, opts.horizon),
           "transform": transform, "seed": opts.seed, "training": info,
           "data": ds.source, "target": ds.target, "frequency": ds.axis.description}
    if len(results) == 1:
        out["mase_scale_value"] = results[0].metrics["scale"]
        out["mase_scale_season"] = results[0].metrics["scale_season"]
    else:
        out["series"] = {r.key: {"model": r.metrics["model"], "naive": r.metrics["naive"],
                                 "seasonal_naive": r.metrics["seasonal_naive"],
                                 "mase_scale_value": r.metrics["scale"]} for r in results}
    return out


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _time_header(ds):
    return ds.time or "time"


def write_forecast_csv(path, ds, rows):
    """One row per series and future step: [id,] time, horizon, forecast; ``rows`` holds
    (series, timestamps, values) per series."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(([ds.id] if ds.id else []) + [_time_header(ds), "horizon", "forecast"])
        for s, labels, values in rows:
            for h, (label, v) in enumerate(zip(labels, values)):
                w.writerow(([s.id] if ds.id else []) + [label, h + 1, f"{v:.6g}"])
    return path


def write_backtest_csv(path, ds, results, season):
    """Every backtest forecast beside the actual value and both baselines."""
    tcol = _time_header(ds)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(([ds.id] if ds.id else []) + ["origin", tcol, "horizon", "actual", "forecast",
                                                  "naive", "seasonal_naive"])
        for r in results:
            v, origins, H = r.series.values, r.split.test, r.test_forecast.shape[1]
            a = backtest.actuals(v, origins, H)
            nv = backtest.naive(v, origins, H)
            sn = backtest.seasonal_naive(v, origins, H, season)
            for i, o in enumerate(origins):
                labels = r.series.labels(int(o), int(o) + H)
                for h in range(H):
                    w.writerow(([r.series.id] if ds.id else []) + [
                        labels[0], labels[h], h + 1, f"{a[i, h]:.6g}",
                        f"{r.test_forecast[i, h]:.6g}", f"{nv[i, h]:.6g}", f"{sn[i, h]:.6g}"])
    return path


# ---- reuse ------------------------------------------------------------------------------------
def load_for_model(side, data=None, target=None, time=None, id=None):
    """Read ``data`` for a saved model: its column names unless overridden; ``data`` None reads
    the data the model was trained on (the bundled series when it was)."""
    if data is None:
        data = side.get("data")
    cols = {"target": target, "time": time, "id": id}
    saved = tuple(k for k, v in cols.items() if v is None and side.get(k) is not None)
    return load_dataset(data, target=target or side["target"], time=time or side["time"],
                        id=id or side["id"], saved=saved)


def run_predict(model_path, data=None, target=None, time=None, id=None, emit=_emit_default):
    """Forecast ``horizon`` steps after the end of each series in ``data`` with a saved bundle
    (see :func:`load_for_model` for ``data`` and the columns). Returns (dataset, [(series,
    timestamps, values)], sidecar)."""
    model, side, scalers = load_bundle(model_path)
    ds = load_for_model(side, data, target, time, id)
    W, H = int(side["window"]), int(side["horizon"])
    rows = []
    for s in ds.series:
        if len(s) < W:
            raise ForecastError(f"too few rows: {s.name} has {len(s)} values but the model reads "
                                f"windows of {W}; give at least {W} rows.")
        key = series_key(s.id)
        sc = scalers.get(key)
        if sc is None:
            sc = Scaler(side["transform"]).fit(s.values)
            ds.notes.append(f"note: {s.name} was not in the training data; it is scaled with its "
                            "own statistics.")
        xs, _, lvl = window_xy(sc.scale(s.values), [len(s)], W, H)
        f = forecast_from_output(sc, model.predict(xs), lvl)[0]
        rows.append((s, s.future_labels(H), f))
    for line in ds.notes:
        emit(line)
    return ds, rows, side
