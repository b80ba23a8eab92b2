"""Scaling, windows and the split by time into train, validation and test.

Scaling (:class:`Scaler`), in three steps, each chosen for a reason:

1. ``log``: with ``transform="log"`` (the default ``"auto"`` picks it when every value is
   positive) the model works on log values. Many real series (the airline passengers among them)
   grow with a seasonal swing proportional to their level; on the log scale the swing is constant,
   so one pattern learnt on the early, small years fits the later, larger ones.
2. ``standardize``: subtract the mean and divide by the standard deviation of the (log) values of
   the **training part only**, so that no statistic of the validation or test part leaks into the
   model.
3. ``relative to the window's last value``: each input window and its targets are expressed as
   differences from the window's last scaled value, ``level = s[o-1]``. The network then learns the
   shape of what comes next (season, growth) and not the absolute level, which in a trending series
   leaves the range seen in training; a forecast adds the level back. This is differencing against
   one anchor, and it is what lets a small recurrent net extrapolate a trend at all.

With ``o`` the index of the first forecast step, window ``W`` and horizon ``H``::

    s      = (log(y) - mean) / std                          mean, std of the training part
    x      = s[o-W:o] - s[o-1]                              (W, 1) network input
    target = s[o:o+H] - s[o-1]                              (H,)  network output (Dense(H))
    y_hat  = exp((p + s[o-1]) * std + mean)                 forecast from an output p

The split is by time, on the targets: the last ``test_windows`` origins (one step apart: a rolling
origin) have their targets in the test part, the ``val_windows`` before them in the validation part,
and every window whose targets end before the validation part is a training window. The
inputs of a later window may reach back into an earlier part (those values are history by then),
but no target is ever shared between two parts.

>>> import numpy as np
>>> sc = Scaler("none").fit(np.array([1.0, 2.0, 3.0]))
>>> sc.mean, sc.std
(2.0, 0.816496580927726)
"""
from dataclasses import dataclass

import numpy as np

from .data import ForecastError


class Scaler:
    """Log (optional) then standardize with statistics of the training part; see the module
    docstring. ``transform`` is "log", "none" or "auto" (log when every value is positive)."""

    def __init__(self, transform="auto", mean=None, std=None):
        if transform not in ("auto", "log", "none"):
            raise ForecastError(f"unknown transform {transform!r}; use auto, log or none.")
        self.transform, self.mean, self.std = transform, mean, std

    def fit(self, train_values):
        """Take the statistics of ``train_values`` (the training part of one series)."""
        v = np.asarray(train_values, float)
        if self.transform == "auto":
            self.transform = "log" if np.all(v > 0) else "none"
        u = self._forward(v, "the training part")
        self.mean = float(u.mean())
        std = float(u.std())
        self.std = std if std > 1e-12 else 1.0     # a constant training part: no division by 0
        return self

    def _forward(self, v, what="the series"):
        if self.transform == "log":
            if np.any(v <= 0):
                raise ForecastError(f"the log transform needs positive values, but {what} has a "
                                    "value <= 0; use --transform none.")
            return np.log(v)
        return v

    def scale(self, values):
        """(transform(values) - mean) / std."""
        return (self._forward(np.asarray(values, float)) - self.mean) / self.std

    def unscale(self, scaled):
        """The inverse of :meth:`scale`."""
        u = np.asarray(scaled, float) * self.std + self.mean
        return np.exp(u) if self.transform == "log" else u

    def to_json(self):
        return {"transform": self.transform, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d):
        return cls(d["transform"], float(d["mean"]), float(d["std"]))


def window_xy(scaled, origins, window, horizon):
    """Inputs (n, W, 1), targets (n, H) and levels (n,) for first-forecast indices ``origins``.

    Targets reaching past the end of ``scaled`` are NaN (for forecasting beyond the data).
    """
    origins = np.asarray(origins, int)
    idx = origins[:, None] + np.arange(-window, 0)[None, :]          # (n, W)
    level = scaled[origins - 1]                                        # (n,)
    x = (scaled[idx] - level[:, None])[..., None]
    tidx = origins[:, None] + np.arange(horizon)[None, :]            # (n, H)
    padded = np.concatenate([scaled, np.full(horizon, np.nan)])
    y = padded[tidx] - level[:, None]
    return x, y, level


def forecast_from_output(scaler, output, level):
    """Forecasts in the data's units from network outputs (n, H) and window levels (n,)."""
    return scaler.unscale(np.asarray(output, float) + np.asarray(level, float)[:, None])


@dataclass
class Split:
    """First-forecast indices of the training, validation and test windows of one series, and
    ``train_end``: values[:train_end] is the training part (scaling and MASE statistics)."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_end: int


def min_length(window, horizon, val_windows, test_windows):
    """Fewest values for one training window plus the validation and test windows."""
    parts = sum(k + horizon - 1 for k in (val_windows, test_windows) if k > 0)
    return window + horizon + parts


def split(n, window, horizon, val_windows, test_windows, name="the series"):
    """The :class:`Split` of a series of ``n`` values (see the module docstring)."""
    need = min_length(window, horizon, val_windows, test_windows)
    if n < need:
        if n < window + horizon:
            raise ForecastError(f"too few rows: {name} has {n} values but --window {window} + "
                                f"--horizon {horizon} need at least {window + horizon} (and {need} "
                                "with the validation and test windows); lower --window or "
                                "--horizon, or give a longer series.")
        raise ForecastError(f"too few rows: {name} has {n} values but --window {window}, --horizon "
                            f"{horizon}, {val_windows} validation and {test_windows} test windows "
                            f"need at least {need}; lower --window, --horizon, --val-windows or "
                            "--test-windows.")
    test_len = test_windows + horizon - 1 if test_windows else 0
    val_len = val_windows + horizon - 1 if val_windows else 0
    c2 = n - test_len              # first test target
    c1 = c2 - val_len              # first validation target = end of the training part
    train = np.arange(window, c1 - horizon + 1)
    val = np.arange(c1, c1 + val_windows)
    test = np.arange(c2, c2 + test_windows)
    return Split(train, val, test, c1)
