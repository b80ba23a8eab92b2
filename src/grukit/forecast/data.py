"""Reading time series from CSV files into regular, gap-free NumPy series.

The policy, step by step (the command line's --help and the README say the same):

1. Columns. ``--time`` names the timestamp column; without it the first column named like a time
   (date, time, timestamp, ds, month, year, ...) or else the first non-numeric column is used, and
   with neither the rows are taken in file order. ``--target`` names the value column; without it
   the first numeric column other than the time and id columns. ``--id`` names a series-id
   column for many series in long format (one row per series and timestamp).
2. Timestamps are parsed (ISO 8601 first, then pandas' format inference) and the rows sorted by
   time. A numeric time column (years such as 1990, 1991, ...) is used as numbers.
3. The frequency is inferred from the most common step between timestamps: monthly, quarterly and
   yearly steps follow the calendar; daily data without weekend dates and with 3-day steps is
   business-daily; any other step (daily, weekly, hourly, ...) is a fixed time step.
4. Duplicate timestamps (two rows for one period) are reported and their values averaged.
5. Gaps (periods missing for the inferred frequency) are reported, and so are empty or NaN values;
   both are filled by linear interpolation between their neighbours in time. Missing values at the
   start or the end of a series cannot be interpolated and are dropped.

Every step that changes the data adds a line to ``Dataset.notes`` (printed by the command line as
``note:``/``warning:``), and bad input raises :class:`ForecastError` with a one-line message that
says what is wrong and how to fix it.

>>> ds = load_dataset()                       # the bundled airline passengers series
>>> ds.target, ds.season, len(ds.series[0].values)
('passengers', 12, 144)
"""
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._optional import pandas

BUNDLED = "airline_passengers.csv"
BUNDLED_LABEL = "airline passengers 1949-1960 (bundled)"
TIME_NAMES = ("date", "datetime", "time", "timestamp", "ds", "month", "period", "year", "week",
              "day", "quarter", "hour")
SEASONS = {"M": 12, "Q": 4, "Y": 1, "B": 5, "D": 7, "W": 52, "h": 24}
FREQ_WORDS = {"M": "monthly", "Q": "quarterly", "Y": "yearly", "B": "business-daily",
              "D": "daily", "W": "weekly", "h": "hourly"}
_DAY = np.timedelta64(1, "D")


class ForecastError(ValueError):
    """Bad input to the forecasting tools; the message is one line that says how to fix it."""


# ---- the time axis ---------------------------------------------------------------------------
@dataclass
class TimeAxis:
    """Maps integer positions (ordinals) on a regular grid to timestamps and back.

    ``kind`` is "datetime" (with ``freq`` one of M, Q, Y, B for calendar steps, or "fixed" with
    ``step`` a numpy timedelta64), "numeric" (a numeric time column; ``step`` a number) or
    "row" (no time column; ordinals are row numbers). ``anchor`` says whether calendar periods
    are labelled by their first ("start") or last ("end") day.
    """
    kind: str
    freq: str = None
    step: object = None
    origin: object = None
    anchor: str = "start"

    @property
    def season(self):
        """The usual season length for this frequency (12 for monthly data); 1 when unknown."""
        return SEASONS.get(self.freq, 1) if self.kind == "datetime" else 1

    @property
    def description(self):
        if self.kind == "row":
            return "rows in file order"
        if self.kind == "numeric":
            return f"numeric time, step {_fmt_number(self.step)}"
        if self.freq in FREQ_WORDS:
            return FREQ_WORDS[self.freq]
        return f"every {_fmt_timedelta(self.step)}"

    def ordinals(self, t):
        """Grid positions of the times ``t`` (datetime64[ns] or numbers) as int64, and whether
        every time fell on the grid exactly."""
        if self.kind == "row":
            return np.arange(len(t), dtype=np.int64), True
        if self.kind == "numeric":
            q = (np.asarray(t, float) - self.origin) / self.step
            return np.rint(q).astype(np.int64), bool(np.allclose(q, np.rint(q)))
        if self.freq in ("M", "Q", "Y"):
            months = t.astype("datetime64[M]").astype(np.int64)
            ords = {"M": months, "Q": months // 3, "Y": months // 12}[self.freq]
            return ords, True
        if self.freq == "B":
            days = t.astype("datetime64[D]")
            return np.busday_count(np.datetime64("1970-01-01"), days).astype(np.int64), True
        q = (t - self.origin) / self.step
        return np.rint(q).astype(np.int64), bool(np.allclose(q, np.rint(q)))

    def labels(self, ords):
        """Timestamps (as strings: ISO dates, or numbers) of the grid positions ``ords``."""
        ords = np.asarray(ords, np.int64)
        if self.kind == "row":
            return [str(int(o)) for o in ords]
        if self.kind == "numeric":
            return [_fmt_number(self.origin + o * self.step) for o in ords]
        if self.freq in ("M", "Q", "Y"):
            months = ords * {"M": 1, "Q": 3, "Y": 12}[self.freq]
            if self.anchor == "end":
                span = {"M": 1, "Q": 3, "Y": 12}[self.freq]
                days = (months + span).astype("datetime64[M]").astype("datetime64[D]") - _DAY
            else:
                days = months.astype("datetime64[M]").astype("datetime64[D]")
            return [str(d) for d in days]
        if self.freq == "B":
            days = np.busday_offset(np.datetime64("1970-01-01"), ords, roll="forward")
            return [str(d) for d in days]
        t = self.origin + ords * self.step
        if self.step % _DAY == np.timedelta64(0) and (self.origin - self.origin.astype(
                "datetime64[D]")) == np.timedelta64(0):
            return [str(d) for d in t.astype("datetime64[D]")]
        return [s.replace("T", " ") for s in np.datetime_as_string(t, unit="s")]

    def to_json(self):
        out = {"kind": self.kind, "freq": self.freq, "anchor": self.anchor}
        if self.kind == "numeric":
            out.update(step=float(self.step), origin=float(self.origin))
        elif self.kind == "datetime" and self.freq == "fixed":
            out.update(step_seconds=float(self.step / np.timedelta64(1, "s")),
                       origin=str(self.origin))
        return out


def _fmt_number(v):
    v = float(v)
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _fmt_timedelta(td):
    s = int(td / np.timedelta64(1, "s"))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s % n == 0:
            k = s // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{s} seconds"


def infer_axis(parts):
    """The :class:`TimeAxis` of datetime64[ns] times: ``parts`` is one array, or a list of arrays
    (one per series). The step is the most common difference between distinct consecutive times
    within a series."""
    if isinstance(parts, np.ndarray):
        parts = [parts]
    parts = [np.unique(p) for p in parts]
    u = np.unique(np.concatenate(parts))
    d = np.concatenate([np.diff(p) for p in parts])
    if len(d) == 0:
        return TimeAxis("datetime", "fixed", _DAY, u[0] if len(u) else np.datetime64("1970-01-01"))
    vals, counts = np.unique(d, return_counts=True)
    step = vals[np.argmax(counts)]
    days = step / _DAY
    tod = u - u.astype("datetime64[D]")
    same_time = bool(np.all(tod == tod[0]))      # one time of day throughout (usually 00:00)
    if same_time and 28 <= days <= 31:
        freq = "M"
    elif same_time and 89 <= days <= 92:
        freq = "Q"
    elif same_time and 365 <= days <= 366:
        freq = "Y"
    elif same_time and days == 1:
        weekday = (u.astype("datetime64[D]").astype(np.int64) + 3) % 7     # Monday = 0
        three = np.any(d == 3 * _DAY)
        freq = "B" if (weekday < 5).all() and three else "D"
    elif step == 7 * _DAY:
        freq = "W"
    elif step == np.timedelta64(1, "h"):
        freq = "h"
    else:
        freq = "fixed"
    if freq in ("D", "W", "h", "fixed"):
        return TimeAxis("datetime", freq, step, u[0])
    # label periods by their last day when every timestamp is a month's last day (1949-01-31)
    month = u.astype("datetime64[M]")
    month_ends = np.all(u.astype("datetime64[D]") == (month + 1).astype("datetime64[D]") - _DAY)
    return TimeAxis("datetime", freq, None, None, "end" if month_ends else "start")


# ---- series and datasets ---------------------------------------------------------------------
@dataclass
class Series:
    """One regular series: ``values[i]`` is the value at grid position ``start + i``."""
    id: object
    values: np.ndarray
    start: int
    axis: TimeAxis

    def __len__(self):
        return len(self.values)

    @property
    def name(self):
        return "the series" if self.id is None else f"series {self.id!r}"

    def labels(self, i=None, j=None):
        """Timestamps of values[i:j]."""
        n = len(self.values)
        i = 0 if i is None else (i if i >= 0 else n + i)
        j = n if j is None else (j if j >= 0 else n + j)
        return self.axis.labels(np.arange(self.start + i, self.start + j))

    def future_labels(self, horizon):
        """Timestamps of the ``horizon`` periods after the last value."""
        last = self.start + len(self.values) - 1
        return self.axis.labels(np.arange(last + 1, last + 1 + horizon))


@dataclass
class Dataset:
    """Everything read from one CSV file: the series, the columns used and notes on cleaning."""
    series: list
    target: str
    time: str
    id: str
    axis: TimeAxis
    source: str
    rows: int
    notes: list = field(default_factory=list)

    @property
    def season(self):
        return self.axis.season


def bundled_path_text():
    """The bundled airline passengers CSV as text (read through importlib.resources, so it works
    from an installed wheel as well as from a source checkout)."""
    from importlib import resources
    return (resources.files("grukit.forecast") / "data" / BUNDLED).read_text(encoding="utf-8")


def read_table(path):
    """Read a CSV file with every cell as a string (NaN for empty cells); returns (frame, label)."""
    pd = pandas()
    if path is None:
        text, label = bundled_path_text(), BUNDLED_LABEL
        source = io.StringIO(text)
    else:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ForecastError(f"data file {path!r} not found; check the path, or leave DATA out "
                                "to use the bundled airline passengers series.")
        if os.path.isdir(path):
            raise ForecastError(f"{path!r} is a folder; give the path of a CSV file.")
        source, label = path, os.path.basename(path)
    try:
        frame = pd.read_csv(source, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ForecastError(f"{label} is empty; give a CSV file with a header row and data rows.") \
            from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ForecastError(f"{label} cannot be read as CSV ({first}); check that it is a "
                            "comma-separated text file with one header row.") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise ForecastError(f"{label} has a header but no data rows; add rows of data.")
    return frame, label


def _column(frame, name, option, label, saved):
    if name is None:
        return None
    if name not in frame.columns:
        if saved:
            raise ForecastError(f"the model's {option[2:]} column {name!r} is not in {label} (its "
                                f"columns are: {', '.join(frame.columns)}); give data with the "
                                f"same columns, or name the column with {option}.")
        raise ForecastError(f"column {name!r} (from {option}) is not in {label}; its columns are: "
                            f"{', '.join(frame.columns)}.")
    return name


def _numbers(frame, col):
    """(float array, index of the first non-numeric cell or None) for a column of strings."""
    pd = pandas()
    raw = frame[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna()
    first_bad = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else None
    return np.array(num.to_numpy(dtype=float), copy=True), first_bad


def _is_numeric(frame, col):
    return _numbers(frame, col)[1] is None


def _pick_time(frame, exclude):
    cols = [c for c in frame.columns if c not in exclude]
    for c in cols:
        if c.lower() in TIME_NAMES:
            return c
    for c in cols:
        if not _is_numeric(frame, c):
            return c
    return None


# tried in turn until one parses every timestamp: ISO 8601 (1949-01, 1949-01-31, 2020-01-01 10:00),
# common month and day formats (month-first before day-first where both fit), then pandas' own
# inference, month-first and day-first, and finally UTC for mixed time zones
_DATE_ATTEMPTS = ([{"format": "ISO8601"}]
                  + [{"format": f} for f in ("%b-%y", "%b %Y", "%B %Y", "%b-%Y", "%Y-%b", "%Y %b",
                                             "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d",
                                             "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%Y%m%d")]
                  + [{}, {"dayfirst": True}, {"format": "ISO8601", "utc": True}])


def _parse_times(frame, col, label):
    """(times as datetime64[ns] or float array, kind) for the time column ``col``."""
    pd = pandas()
    raw = frame[col]
    nums, bad = _numbers(frame, col)
    if bad is None and raw.notna().any():
        return nums, "numeric"
    present = raw.notna().to_numpy()
    best = None
    for kw in _DATE_ATTEMPTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(raw, errors="coerce", **kw)
        except (ValueError, TypeError, OverflowError):
            continue
        misses = int((parsed.isna().to_numpy() & present).sum())
        if best is None or misses < best[0]:
            best = (misses, parsed)
        if misses == 0:
            break
    if best is None or best[0] > 0:
        parsed = best[1] if best is not None else None
        where = np.flatnonzero(present if parsed is None else (parsed.isna().to_numpy() & present))
        i = int(where[0])
        raise ForecastError(f"cannot parse {raw.iloc[i]!r} (line {i + 2} of {label}) in the time "
                            f"column {col!r} as a date or time; fix that value, or name the right "
                            "column with --time.")
    parsed = best[1]
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)          # keep the local wall-clock times
    return parsed.to_numpy(dtype="datetime64[ns]"), "datetime"


def load_dataset(path=None, target=None, time=None, id=None, saved=()):
    """Read ``path`` (None: the bundled airline passengers series) into a :class:`Dataset`.

    ``target``, ``time`` and ``id`` name columns (see the module docstring for the defaults);
    ``saved`` lists those of them that come from a saved model rather than from the user, for
    the error message when one is missing.
    Raises :class:`ForecastError` for a file that is missing or unreadable, a column that is
    absent, not numeric or all empty, and timestamps that cannot be parsed.
    """
    frame, label = read_table(path)
    notes = []
    id_col = _column(frame, id, "--id", label, "id" in saved)
    target_col = _column(frame, target, "--target", label, "target" in saved)
    time_col = _column(frame, time, "--time", label, "time" in saved)
    if time_col is None:
        time_col = _pick_time(frame, {target_col, id_col})
    pairs = ((time_col, target_col, "--time", "--target"), (id_col, target_col, "--id", "--target"),
             (id_col, time_col, "--id", "--time"))
    for a, b, oa, ob in pairs:
        if a is not None and a == b:
            raise ForecastError(f"column {a!r} cannot be both {oa} and {ob}; name two different "
                                "columns.")
    if target_col is None:
        target_col = _pick_target(frame, {time_col, id_col}, label, notes)
    values, bad = _numbers(frame, target_col)
    if bad is not None:
        cell = frame[target_col].iloc[bad]
        raise ForecastError(f"the target column {target_col!r} is not numeric ({cell!r} on line "
                            f"{bad + 2} of {label}); fix the value or choose a column of numbers "
                            "with --target.")
    if np.isnan(values).all():
        raise ForecastError(f"the target column {target_col!r} has no values (all empty or NaN); "
                            "fill it in or choose another column with --target.")
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        values[np.isinf(values)] = np.nan
        notes.append(f"warning: {n_inf} infinite value(s) in {target_col!r} were treated as "
                     "missing.")

    # timestamps
    if time_col is None:
        t, kind = np.arange(len(frame), dtype=float), "row"
        notes.append("note: no time column found; rows are taken in file order (name one with "
                     "--time).")
    else:
        t, kind = _parse_times(frame, time_col, label)
    keep = np.ones(len(frame), bool) if kind == "row" else ~(
        np.isnat(t) if kind == "datetime" else np.isnan(t))
    if not keep.any():
        raise ForecastError(f"the time column {time_col!r} has no timestamps (all empty); fill "
                            "it in or name the right column with --time.")
    if not keep.all():
        notes.append(f"warning: {int((~keep).sum())} row(s) without a timestamp in {time_col!r} "
                     "were dropped.")
    if id_col is not None:
        ids = np.array([str(v) for v in frame[id_col].fillna("").tolist()], object)
    else:
        ids = np.full(len(frame), None, object)
    t, values, ids = t[keep], values[keep], ids[keep]

    # the axis: one frequency for all series
    if kind == "row":
        axis = TimeAxis("row")
    elif kind == "numeric":
        u = np.unique(t)
        d = np.diff(u)
        if len(d):
            vals, counts = np.unique(np.round(d, 9), return_counts=True)
            step = float(vals[np.argmax(counts)])
        else:
            step = 1.0
        axis = TimeAxis("numeric", None, step, float(u[0]))
    else:
        axis = infer_axis([t[ids == sid] for sid in dict.fromkeys(ids.tolist())])

    order_ids = sorted(set(ids.tolist()), key=lambda v: (v is None, str(v)))
    series = []
    for sid in order_ids:
        sel = ids == sid
        s, snotes = _regularize(sid, t[sel], values[sel], axis, kind)
        notes.extend(snotes)
        if s is not None:
            series.append(s)
    if not series:
        raise ForecastError(f"no series in {label} has any value in {target_col!r}; check the "
                            "--target and --id columns.")
    if kind != "row" and len(order_ids) == 1 and np.any(t[1:] < t[:-1]):
        notes.append("note: the rows were not in time order; they were sorted by time.")
    return Dataset(series, target_col, time_col, id_col, axis, label, len(frame), notes)


def _pick_target(frame, exclude, label, notes):
    candidates = [c for c in frame.columns if c not in exclude]
    numeric = [c for c in candidates if _is_numeric(frame, c)]
    filled = [c for c in numeric if frame[c].notna().any()]
    if filled:
        if len(filled) > 1:
            notes.append(f"note: using {filled[0]!r} as the target (other numeric columns: "
                         f"{', '.join(filled[1:])}); choose with --target.")
        return filled[0]
    if numeric:
        raise ForecastError(f"the column {numeric[0]!r} of {label} has no values (all empty or "
                            "NaN); fill it in or choose a column of numbers with --target.")
    raise ForecastError(f"{label} has no numeric column to forecast (columns: "
                        f"{', '.join(frame.columns)}); add a column of numbers or name one with "
                        "--target.")


def _regularize(sid, t, v, axis, kind):
    """Place one series on the grid: sort, average duplicates, interpolate gaps and NaN, drop
    leading and trailing NaN. Returns (Series or None, notes)."""
    notes = []
    who = "" if sid is None else f"series {sid!r}: "
    ords, exact = axis.ordinals(t)
    if not exact:
        notes.append(f"warning: {who}some timestamps are off the {axis.description} grid; each "
                     "was moved to the nearest step.")
    order = np.argsort(ords, kind="stable")
    ords, v = ords[order], v[order]
    uniq, inverse, counts = np.unique(ords, return_inverse=True, return_counts=True)
    dup = counts > 1
    if dup.any():
        ex = ", ".join(axis.labels(uniq[dup][:3]))
        notes.append(f"warning: {who}{int(dup.sum())} duplicate timestamp(s) (e.g. {ex}); their "
                     "values were averaged.")
    sums = np.zeros(len(uniq))
    n_ok = np.zeros(len(uniq))
    ok = ~np.isnan(v)
    np.add.at(sums, inverse[ok], v[ok])
    np.add.at(n_ok, inverse[ok], 1)
    vals = np.where(n_ok > 0, sums / np.maximum(n_ok, 1), np.nan)
    if np.isnan(vals).all():
        notes.append(f"warning: {who}no values; the series was skipped.")
        return None, notes
    # the grid from the first to the last value; NaN where a period is missing or empty
    keep = np.flatnonzero(~np.isnan(vals))
    first, last = uniq[keep[0]], uniq[keep[-1]]
    dropped = int(len(uniq) - (np.searchsorted(uniq, last) - np.searchsorted(uniq, first) + 1))
    if dropped:
        notes.append(f"note: {who}{dropped} empty value(s) at the start or end were dropped.")
    inside = (uniq >= first) & (uniq <= last)
    uniq, vals = uniq[inside], vals[inside]
    grid = np.full(int(last - first) + 1, np.nan)
    grid[uniq - first] = vals
    n_gap = len(grid) - len(uniq)
    if n_gap and kind != "row":
        missing = np.setdiff1d(np.arange(first, last + 1), uniq)
        ex = ", ".join(axis.labels(missing[:3])) + (", ..." if len(missing) > 3 else "")
        notes.append(f"warning: {who}{n_gap} missing period(s) for {axis.description} data "
                     f"(e.g. {ex}); filled by linear interpolation.")
    n_nan = int(np.isnan(vals).sum())
    if n_nan:
        notes.append(f"warning: {who}{n_nan} empty or NaN value(s) inside the series; filled by "
                     "linear interpolation.")
    holes = np.isnan(grid)
    if holes.any():
        idx = np.arange(len(grid))
        grid[holes] = np.interp(idx[holes], idx[~holes], grid[~holes])
    start = int(first)
    return Series(sid, grid, start, axis), notes
