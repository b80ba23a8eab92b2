"""Forecast accuracy: MAE, RMSE, sMAPE and MASE, and the naive and seasonal-naive baselines.

A backtest forecasts from a rolling origin: from each of the last ``test_windows`` origins
``o, o+1, ...`` (``o`` the index of the first forecast step) the next ``H`` values are forecast
from the values before ``o`` only, and every metric is taken over all origins and steps together.
The baselines forecast from the same origins:

- naive: every step repeats the last value, ``y_hat[o+h] = y[o-1]``;
- seasonal naive: every step repeats the value one season (``m`` steps) earlier, from the last
  observed season: ``y_hat[o+h] = y[o+h-m*k]`` with ``k = h // m + 1`` (h = 0 .. H-1).

Metrics, for actual values ``a`` and forecasts ``f`` (arrays of any shape):

- ``MAE   = mean(|a - f|)``
- ``RMSE  = sqrt(mean((a - f)^2))``
- ``sMAPE = 100 * mean(2 |a - f| / (|a| + |f|))`` in percent (0 to 200; a term with
  ``|a| + |f| = 0`` counts 0)
- ``MASE  = MAE / scale``, ``scale = mean(|y[t] - y[t-m]|)`` over the training part (the in-sample
  MAE of the seasonal-naive one-step forecast, Hyndman & Koehler 2006). MASE < 1: better than
  that in-sample baseline. With a training part of ``m`` values or fewer, or a zero scale (a
  series that repeats its season exactly), the non-seasonal naive (``m = 1``) is used and the
  returned season says so; with no usable scale at all (a constant series) MASE is NaN.

>>> import numpy as np
>>> round(mae(np.array([1.0, 2.0]), np.array([2.0, 2.0])), 3)
0.5
"""
import numpy as np


def mae(actual, forecast):
    return float(np.mean(np.abs(np.asarray(actual, float) - np.asarray(forecast, float))))


def rmse(actual, forecast):
    return float(np.sqrt(np.mean((np.asarray(actual, float) - np.asarray(forecast, float)) ** 2)))


def smape(actual, forecast):
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    den = np.abs(a) + np.abs(f)
    terms = np.where(den > 0, 2.0 * np.abs(a - f) / np.where(den > 0, den, 1.0), 0.0)
    return float(100.0 * np.mean(terms))


def mase_scale(train, season):
    """(scale, season used): the in-sample seasonal-naive MAE of ``train`` (see the module
    docstring); falls back to the one-step naive MAE when the season cannot be used."""
    train = np.asarray(train, float)
    tiny = 1e-9 * float(np.max(np.abs(train))) if len(train) else 0.0   # rounding, not signal
    for m in ((season, 1) if season > 1 else (1,)):
        if len(train) > m:
            scale = float(np.mean(np.abs(train[m:] - train[:-m])))
            if scale > tiny:
                return scale, m
    return float("nan"), 1


def scores(actual, forecast, scale):
    """The four metrics as a dict (MASE NaN when ``scale`` is NaN)."""
    m = mae(actual, forecast)
    return {"mae": m, "rmse": rmse(actual, forecast), "smape": smape(actual, forecast),
            "mase": m / scale if scale == scale else float("nan")}


def naive(values, origins, horizon):
    """(n, H) naive forecasts: the last value before each origin, repeated."""
    values = np.asarray(values, float)
    origins = np.asarray(origins, int)
    return np.repeat(values[origins - 1][:, None], horizon, axis=1)


def seasonal_naive(values, origins, horizon, season):
    """(n, H) seasonal-naive forecasts: the value ``m*k`` steps back, ``k = h // m + 1``."""
    values = np.asarray(values, float)
    origins = np.asarray(origins, int)
    h = np.arange(horizon)
    back = season * (h // season + 1)
    idx = origins[:, None] + h[None, :] - back[None, :]
    if (idx < 0).any():
        raise ValueError("seasonal_naive: an origin is less than one season from the start.")
    return values[idx]


def actuals(values, origins, horizon):
    """(n, H) actual values after each origin."""
    origins = np.asarray(origins, int)
    return np.asarray(values, float)[origins[:, None] + np.arange(horizon)[None, :]]


def evaluate(values, origins, horizon, season, train_end, model_forecast):
    """Backtest metrics of one series: the model's (n, H) forecasts and both baselines, on the same
    origins. Returns ``{"model": {...}, "naive": {...}, "seasonal_naive": {...}, "scale": s,
    "scale_season": m}``."""
    a = actuals(values, origins, horizon)
    scale, m = mase_scale(np.asarray(values, float)[:train_end], season)
    return {"model": scores(a, model_forecast, scale),
            "naive": scores(a, naive(values, origins, horizon), scale),
            "seasonal_naive": scores(a, seasonal_naive(values, origins, horizon, season), scale),
            "scale": scale, "scale_season": m}
