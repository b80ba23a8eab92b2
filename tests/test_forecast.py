"""grukit forecast / predict / explain: the command line end to end, and its parts checked against
values computed by hand or by plainly written formulas.

pandas, tqdm and matplotlib (the ``forecast`` extra) are a hard requirement of this module, as the
peers are of the parity tests: if one is missing the module fails to import instead of skipping."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import matplotlib  # noqa: F401  (the forecast extra, required here)
import pandas  # noqa: F401
import tqdm  # noqa: F401

from grukit.forecast import backtest
from grukit.forecast.data import ForecastError, bundled_path_text, load_dataset
from grukit.forecast.windows import Scaler, forecast_from_output, split, window_xy

FAST = ["--epochs", "3", "--no-plot", "--no-progress"]


def grukit(*args, cwd=None):
    """Run ``python -m grukit ARGS``; returns the CompletedProcess (text)."""
    env = dict(os.environ)
    env.pop("GRUKIT_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "grukit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short `grukit forecast` run on the bundled data (3 epochs), shared by the tests."""
    out = tmp_path_factory.mktemp("fc") / "tmp"
    r = grukit("forecast", "--epochs", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r


# ---- the bundled data set -------------------------------------------------------------------
def test_bundled_airline_series_is_the_known_one():
    ds = load_dataset()
    (s,) = ds.series
    assert (ds.time, ds.target, ds.season) == ("month", "passengers", 12)
    assert len(s) == 144
    assert s.values[0] == 112 and s.values[-1] == 432 and s.values.sum() == 40363
    assert s.labels(0, 1) == ["1949-01-01"] and s.labels(-1) == ["1960-12-01"]
    assert s.future_labels(2) == ["1961-01-01", "1961-02-01"]
    assert ds.notes == []


# ---- the command line, end to end -----------------------------------------------------------
def test_forecast_cli_writes_every_output(trained):
    out, r = trained
    for name in ("forecast.csv", "backtest.csv", "metrics.json", "model.grukit", "forecast.json",
                 "forecast.png"):
        assert (out / name).is_file(), name
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "forecast.csv")
    assert [r_["horizon"] for r_ in rows] == [str(h) for h in range(1, 13)]
    assert rows[0]["month"] == "1961-01-01" and rows[-1]["month"] == "1961-12-01"
    assert all(float(r_["forecast"]) > 0 for r_ in rows)
    m = json.loads((out / "metrics.json").read_text())
    for key in ("mase", "mae", "rmse", "smape", "season", "horizon", "window", "test_windows"):
        assert key in m, key
    for base in ("naive", "seasonal_naive"):
        assert set(m["baselines"][base]) == {"mae", "rmse", "smape", "mase"}
    assert m["season"] == 12 and m["horizon"] == 12 and m["window"] == 24
    side = json.loads((out / "forecast.json").read_text())
    assert side["target"] == "passengers" and side["window"] == 24 and side["horizon"] == 12
    assert set(side["scalers"][""]) == {"transform", "mean", "std"}
    assert "MASE" in r.stdout and "seasonal naive" in r.stdout
    assert "Traceback" not in r.stderr


def test_backtest_metrics_match_the_backtest_file(trained):
    """metrics.json equals metrics recomputed plainly from backtest.csv and the raw data."""
    out, _ = trained
    rows = read_csv(out / "backtest.csv")
    assert len(rows) == 12 * 12
    y = load_dataset().series[0].values
    # the training part ends where the validation targets start: 144 - 23 - 23 = 98 values
    train = y[:98]
    diffs = [abs(train[t] - train[t - 12]) for t in range(12, len(train))]
    scale = sum(diffs) / len(diffs)
    m = json.loads((out / "metrics.json").read_text())
    assert m["mase_scale_value"] == pytest.approx(scale)
    for col, got in (("forecast", m), ("naive", m["baselines"]["naive"]),
                     ("seasonal_naive", m["baselines"]["seasonal_naive"])):
        a = [float(r_["actual"]) for r_ in rows]
        f = [float(r_[col]) for r_ in rows]
        mae = sum(abs(p - q) for p, q in zip(a, f)) / len(a)
        assert got["mae"] == pytest.approx(mae, rel=1e-5)
        assert got["mase"] == pytest.approx(mae / scale, rel=1e-5)
    # the seasonal-naive column is last year's value
    first = rows[0]
    assert first["origin"] == "1959-02-01" and float(first["seasonal_naive"]) == y[121 - 12]


def test_predict_reuses_the_saved_model(trained, tmp_path):
    out, _ = trained
    expected = [float(r_["forecast"]) for r_ in read_csv(out / "forecast.csv")]
    r = grukit("predict", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["month", "horizon", "forecast"] and len(lines) == 13
    printed = [float(line.split()[-1]) for line in lines[1:]]
    assert printed == pytest.approx(expected, abs=0.006)
    data = tmp_path / "air.csv"
    data.write_text(bundled_path_text())
    r = grukit("predict", out / "model.grukit", data, "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    got = [float(r_["forecast"]) for r_ in read_csv(tmp_path / "p" / "forecast.csv")]
    assert got == pytest.approx(expected, rel=1e-5)


def test_explain_writes_gate_heatmaps_equal_to_trace(trained, tmp_path):
    out, _ = trained
    r = grukit("explain", out, "--out", tmp_path / "e", "--window-index", "0")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e" / "gates.png").read_bytes()[:4] == b"\x89PNG"
    rows = read_csv(tmp_path / "e" / "gates.csv")
    assert {r_["gate"] for r_ in rows} == {"z", "r"}
    assert len(rows) == 2 * 24 * 32
    assert all(0.0 <= float(r_["value"]) <= 1.0 for r_ in rows)
    # the same numbers from the model's first layer on the window scaled by hand
    from grukit.models import load_model
    model = load_model(out / "model.grukit", compile=False)
    sc = json.loads((out / "forecast.json").read_text())["scalers"][""]
    y = load_dataset().series[0].values[:24]
    s = (np.log(y) - sc["mean"]) / sc["std"]
    x = (s - s[-1])[None, :, None]
    z = model.layers[0].trace(x)["z"][0]
    got = np.array([float(r_["value"]) for r_ in rows if r_["gate"] == "z"]).reshape(24, 32)
    np.testing.assert_allclose(got, z, atol=1e-5)
    assert rows[0]["month"] == "1949-01-01" and float(rows[0]["passengers"]) == 112
    # the default window is the last one
    r = grukit("explain", out, "--out", tmp_path / "e2")
    assert r.returncode == 0 and "1959-01-01 .. 1960-12-01" in r.stdout


def test_long_format_many_series(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["store,date,sales"]
    for k, (level, growth) in enumerate([(100, 0.5), (300, 1.0), (50, 0.2)]):
        for i in range(60):
            if k == 1 and i == 30:
                continue                                   # a gap
            v = level + growth * i + 0.2 * level * math.sin(2 * math.pi * i / 12)
            lines.append(f"s{k},{2015 + i // 12}-{i % 12 + 1:02d}-01,{v + rng.normal(0, 1):.3f}")
    lines.append("s2,2016-03-01,60")                        # a duplicate timestamp
    data = write(tmp_path / "long.csv", [lines[0]] + list(reversed(lines[1:])))
    out = tmp_path / "out"
    r = grukit("forecast", data, "--id", "store", "--window", "12", "--horizon", "6",
               "--val-windows", "4", "--test-windows", "4", "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert "missing period" in r.stderr and "2017-07-01" in r.stderr
    assert "duplicate" in r.stderr
    rows = read_csv(out / "forecast.csv")
    assert [r_["store"] for r_ in rows] == ["s0"] * 6 + ["s1"] * 6 + ["s2"] * 6
    assert rows[0]["date"] == "2020-01-01"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["series"]) == {"s0", "s1", "s2"} and m["series_count"] == 3
    assert m["mase"] == pytest.approx(np.mean([m["series"][k]["model"]["mase"]
                                               for k in ("s0", "s1", "s2")]))
    side = json.loads((out / "forecast.json").read_text())
    assert set(side["scalers"]) == {"s0", "s1", "s2"}
    r = grukit("predict", out, data)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 + 18
    r = grukit("explain", out, data, "--series", "s2", "--out", tmp_path / "e")
    assert r.returncode == 0, r.stderr
    assert "of series s2" in r.stdout


# ---- bad input: one line, non-zero exit, no traceback ----------------------------------------
def _bad_cases(tmp):
    months = [f"{1950 + i // 12}-{i % 12 + 1:02d}" for i in range(100)]
    write(tmp / "nonum.csv", ["date,name"] + [f"{m},x{i}" for i, m in enumerate(months)])
    write(tmp / "short.csv", ["month,v"] + [f"{m},{i + 1}" for i, m in enumerate(months[:20])])
    bad = [f"{m},{i + 1}" for i, m in enumerate(months)]
    bad[40] = "1953-13-45,41"
    write(tmp / "baddate.csv", ["month,v"] + bad)
    write(tmp / "empty.csv", ["month,v"] + [f"{m}," for m in months])
    return {
        "missing file": ([tmp / "nope.csv"], "not found"),
        "no numeric column": ([tmp / "nonum.csv"], "no numeric column"),
        "too few rows": ([tmp / "short.csv"], "too few rows"),
        "unparseable timestamps": ([tmp / "baddate.csv"], "cannot parse '1953-13-45'"),
        "all-NaN column": ([tmp / "empty.csv"], "no values"),
        "unknown option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        "bad option value": (["--horizon", "zero"], "--horizon"),
        "unknown target": (["--target", "price"], "'price'"),
    }


@pytest.mark.parametrize("case", ["missing file", "no numeric column", "too few rows",
                                  "unparseable timestamps", "all-NaN column", "unknown option",
                                  "bad option value", "unknown target"])
def test_bad_input_gives_one_line(case, tmp_path):
    args, words = _bad_cases(tmp_path)[case]
    r = grukit("forecast", *args, *FAST, "--out", tmp_path / "o")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("grukit forecast: error: ") and words in lines[0]


@pytest.mark.parametrize("args, words", [
    (["predict", "no-such-folder"], "not found"),
    (["explain", "no-such-folder"], "not found"),
])
def test_bad_model_path_gives_one_line(args, words, tmp_path):
    r = grukit(*args, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and words in lines[0]
    assert "Traceback" not in r.stderr


def test_explain_window_index_out_of_range(trained, tmp_path):
    out, _ = trained
    r = grukit("explain", out, "--window-index", "121", "--out", tmp_path / "e")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "0 .. 120" in lines[0]


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
    from grukit import cli
    monkeypatch.setitem(sys.modules, "pandas", None)           # `import pandas` now fails
    assert cli.main(["forecast", *FAST]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install grukit[forecast]" in err[0]


# ---- reading and cleaning CSV files ---------------------------------------------------------
def test_cleaning_sorts_averages_duplicates_and_interpolates(tmp_path):
    path = write(tmp_path / "d.csv", [
        "when,value",
        "2020-03-01,30", "2020-01-01,", "2020-02-01,10", "2020-02-01,20",   # dup: mean 15
        "2020-06-01,60", "2020-04-01,", "2020-07-01,", "2020-08-01,"])      # 04 NaN, 05 gap
    ds = load_dataset(path)
    (s,) = ds.series
    assert ds.time == "when" and ds.target == "value" and ds.season == 12
    assert s.labels() == ["2020-02-01", "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01"]
    np.testing.assert_allclose(s.values, [15, 30, 40, 50, 60])
    text = " ".join(ds.notes)
    assert "duplicate" in text and "missing period" in text and "sorted" in text
    assert "dropped" in text and "interpolation" in text


def test_frequencies_and_seasons(tmp_path):
    days = [f"2021-01-{d:02d}" for d in range(1, 29)]
    rows = [f"{d},{i}" for i, d in enumerate(days)]
    ds = load_dataset(write(tmp_path / "d.csv", ["date,y"] + rows))
    assert ds.axis.description == "daily" and ds.season == 7
    quarters = ["2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01", "2021-01-01"]
    ds = load_dataset(write(tmp_path / "q.csv", ["date,y"] + [f"{d},1" for d in quarters]))
    assert ds.season == 4 and ds.series[0].future_labels(1) == ["2021-04-01"]
    ds = load_dataset(write(tmp_path / "y.csv", ["year,y", "1990,1", "1991,2", "1993,4"]))
    assert ds.axis.kind == "numeric" and ds.series[0].future_labels(1) == ["1994"]
    np.testing.assert_allclose(ds.series[0].values, [1, 2, 3, 4])
    ds = load_dataset(write(tmp_path / "r.csv", ["a,b", "1,5", "2,6"]))
    assert ds.axis.kind == "row" and ds.target == "a" and ds.season == 1


# ---- windows and scaling, by hand -----------------------------------------------------------
def test_scaling_uses_training_statistics_only():
    values = np.array([10.0, 12.0, 11.0, 13.0, 15.0, 14.0, 16.0, 100.0])
    sc = Scaler("none").fit(values[:4])
    # mean (10+12+11+13)/4 = 11.5; variance (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2)/4 = 1.25
    assert sc.mean == pytest.approx(11.5) and sc.std == pytest.approx(math.sqrt(1.25))
    np.testing.assert_allclose(sc.scale([11.5, 12.618033988749895]), [0.0, 1.0])
    lg = Scaler("log").fit(np.exp([0.0, 1.0, 2.0, 3.0]))
    # log values 0,1,2,3: mean 1.5, variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25
    assert lg.mean == pytest.approx(1.5) and lg.std == pytest.approx(math.sqrt(1.25))
    np.testing.assert_allclose(lg.unscale(lg.scale([5.0, 7.0])), [5.0, 7.0])
    assert Scaler("auto").fit([1.0, 2.0]).transform == "log"
    assert Scaler("auto").fit([0.0, 2.0]).transform == "none"


def test_windows_are_relative_to_their_last_value():
    values = np.array([10.0, 12.0, 11.0, 13.0, 15.0, 14.0])
    sc = Scaler("none").fit(values[:4])
    sd = math.sqrt(1.25)
    x, y, level = window_xy(sc.scale(values), [3, 4], window=3, horizon=2)
    assert x.shape == (2, 3, 1) and y.shape == (2, 2)
    # origin 3: inputs 10, 12, 11 and targets 13, 15, all minus the last input 11
    np.testing.assert_allclose(x[0, :, 0], np.array([-1.0, 1.0, 0.0]) / sd)
    np.testing.assert_allclose(y[0], np.array([2.0, 4.0]) / sd)
    # origin 4: inputs 12, 11, 13 and targets 15, 14, minus 13
    np.testing.assert_allclose(x[1, :, 0], np.array([-1.0, -2.0, 0.0]) / sd)
    np.testing.assert_allclose(y[1], np.array([2.0, 1.0]) / sd)
    np.testing.assert_allclose(level, (np.array([11.0, 13.0]) - 11.5) / sd)
    # a perfect network output gives back the true values
    np.testing.assert_allclose(forecast_from_output(sc, y, level), [[13, 15], [15, 14]])
    # past the end the targets are unknown
    _, y_end, _ = window_xy(sc.scale(values), [6], window=3, horizon=2)
    assert np.isnan(y_end).all()


def test_split_by_time_keeps_targets_apart():
    sp = split(50, window=10, horizon=5, val_windows=3, test_windows=4)
    # test targets: the last 4 + 5 - 1 = 8 values (42..49); validation: 3 + 5 - 1 = 7 (35..41)
    assert list(sp.test) == [42, 43, 44, 45] and list(sp.val) == [35, 36, 37]
    assert sp.train_end == 35 and list(sp.train) == list(range(10, 31))
    assert sp.train[-1] + 5 <= sp.val[0] and sp.val[-1] + 5 <= sp.test[0]
    assert sp.test[-1] + 5 == 50
    # the fewest values: 10 inputs + 5 targets of one training window, then 7 + 8 = 30
    with pytest.raises(ForecastError, match="too few rows"):
        split(29, window=10, horizon=5, val_windows=3, test_windows=4)
    assert list(split(30, window=10, horizon=5, val_windows=3, test_windows=4).train) == [10]


# ---- metrics against plain formulas -----------------------------------------------------------
def test_metrics_against_plain_formulas():
    rng = np.random.default_rng(3)
    a = rng.uniform(1, 10, size=(5, 4))
    f = a + rng.normal(0, 1, size=a.shape)
    f[0, 0] = -a[0, 0]
    pairs = list(zip(a.ravel().tolist(), f.ravel().tolist()))
    n = len(pairs)
    mae = sum(abs(p - q) for p, q in pairs) / n
    rmse = math.sqrt(sum((p - q) ** 2 for p, q in pairs) / n)
    smape = 100 / n * sum(2 * abs(p - q) / (abs(p) + abs(q)) for p, q in pairs)
    assert backtest.mae(a, f) == pytest.approx(mae)
    assert backtest.rmse(a, f) == pytest.approx(rmse)
    assert backtest.smape(a, f) == pytest.approx(smape)
    assert backtest.smape([0.0, 1.0], [0.0, 1.0]) == 0.0
    train = [3.0, 5.0, 4.0, 8.0, 6.0, 9.0, 7.0]
    # season 2: |4-3| + |8-5| + |6-4| + |9-8| + |7-6| = 8 over 5
    assert backtest.mase_scale(train, 2) == (pytest.approx(1.6), 2)
    s = backtest.scores(a, f, 1.6)
    assert s["mase"] == pytest.approx(mae / 1.6)
    assert backtest.mase_scale([1.0, 1.0, 1.0, 2.0], 2) == (0.5, 2)
    scale, m = backtest.mase_scale([5.0, 5.0, 5.0], 2)      # constant: no usable scale
    assert math.isnan(scale) and m == 1


def test_baselines_by_hand():
    y = np.arange(30, dtype=float) * 10
    nv = backtest.naive(y, [20, 21], 3)
    np.testing.assert_array_equal(nv, [[190, 190, 190], [200, 200, 200]])
    sn = backtest.seasonal_naive(y, [20], 6, season=4)
    # steps 20..25 repeat the last observed season 16..19: 16, 17, 18, 19, 16, 17
    np.testing.assert_array_equal(sn, [[160, 170, 180, 190, 160, 170]])
    assert backtest.actuals(y, [28], 2).tolist() == [[280, 290]]


# ---- accuracy with the default settings -----------------------------------------------------
def test_default_settings_beat_seasonal_naive(tmp_path):
    from grukit.forecast.pipeline import ForecastOptions, run_forecast
    run = run_forecast(ForecastOptions(out=str(tmp_path), progress=False, plot=False),
                       emit=lambda line: None)
    m = run.metrics
    assert m["mase"] < 1.0
    assert m["mase"] < m["baselines"]["seasonal_naive"]["mase"]
    assert m["training"]["seconds"] < 30
