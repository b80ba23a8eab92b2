"""The ``forecast``, ``predict`` and ``explain`` subcommands: options, and what they print.

:func:`add_commands` adds the three subparsers to ``grukit``'s parser; :func:`run` runs one.
pandas, tqdm and matplotlib are imported only when a command runs.
"""
import os
import sys

DATA_POLICY = """\
reading DATA (a CSV file with a header row; without DATA the bundled monthly airline passengers
1949-1960, Box & Jenkins, 144 values):
  - --time names the timestamp column (default: a column named date, time, month, ...; else the
    first non-numeric column; else the rows are taken in file order). Timestamps are parsed and
    the rows sorted by time; the frequency (monthly, daily, ...) is inferred from the most common
    step, and it sets the season length (12 for monthly data) unless --season is given.
  - --target names the column to forecast (default: the first numeric column).
  - --id names a series-id column: many series in long format, one global model over all of them.
  - duplicate timestamps are reported and their values averaged; missing periods (gaps) and empty
    or NaN values are reported and filled by linear interpolation in time; missing values at the
    start or end of a series are dropped.
"""

FORECAST_DOC = DATA_POLICY + """
model and evaluation:
  - values are log-transformed when all are positive (--transform), standardized with the mean and
    standard deviation of the training part only, and each window is taken relative to its last
    value; a recurrent network reads --window steps and a Dense head forecasts all --horizon
    steps at once.
  - the windows are split by time: the last --test-windows origins (a rolling origin, one step
    apart) are the test part, the --val-windows before them drive early stopping (the best
    epoch's weights are kept), and all earlier windows train the model.
  - backtest on the test part: MAE, RMSE, sMAPE (percent) and MASE (MAE over the in-sample
    seasonal-naive MAE of the training part) for the model and for the naive and seasonal-naive
    forecasts from the same origins.

writes into --out: forecast.csv, backtest.csv, metrics.json (the model's MASE under "mase"),
model.grukit + forecast.json (reused by 'grukit predict' and 'grukit explain'), forecast.png.
"""


def _types():
    """The option types, from the command line module (imported here: it imports this one)."""
    from ..cli import number, positive_int
    return (positive_int, number(int, lambda v: v >= 0, "a whole number >= 0"),
            number(float, lambda v: v > 0, "a positive number"),
            number(int, lambda v: True, "a whole number"))


def add_commands(sub):
    """Add ``forecast``, ``predict`` and ``explain`` to the subparsers ``sub``; returns them."""
    import argparse
    _positive_int, _count, _positive_float, _int = _types()
    raw = argparse.RawDescriptionHelpFormatter
    f = sub.add_parser("forecast", help="train a recurrent forecaster on a CSV series, backtest "
                       "it against naive baselines and forecast ahead",
                       description="Train a recurrent network to forecast a time series, "
                       "backtest it against naive\nforecasts and forecast the next --horizon "
                       "steps.",
                       epilog=FORECAST_DOC, formatter_class=raw)
    f.add_argument("data", nargs="?", metavar="DATA.csv",
                   help="CSV file (default: the bundled airline passengers series)")
    _columns(f)
    f.add_argument("--horizon", metavar="H", type=_positive_int, default=12,
                   help="steps to forecast, all at once (default 12)")
    f.add_argument("--window", metavar="W", type=_positive_int, default=24,
                   help="past steps the network reads (default 24)")
    f.add_argument("--cell", choices=("gru", "lstm", "rnn"), default="gru",
                   help="recurrent cell (default gru)")
    f.add_argument("--units", metavar="N", type=_positive_int, default=32,
                   help="units per layer (default 32)")
    f.add_argument("--layers", metavar="K", type=_positive_int, default=1,
                   help="stacked recurrent layers (default 1)")
    f.add_argument("--epochs", metavar="E", type=_positive_int, default=300,
                   help="most epochs; early stopping usually ends sooner (default 300)")
    f.add_argument("--batch-size", metavar="B", type=_positive_int, default=16, help="default 16")
    f.add_argument("--patience", metavar="P", type=_positive_int, default=20,
                   help="epochs without a better validation loss before stopping (default 20)")
    f.add_argument("--learning-rate", metavar="LR", type=_positive_float, default=1e-3,
                   help="Adam's learning rate (default 0.001)")
    f.add_argument("--val-windows", metavar="V", type=_count, default=12,
                   help="validation windows for early stopping; 0 trains all --epochs (default 12)")
    f.add_argument("--test-windows", metavar="T", type=_positive_int, default=12,
                   help="rolling origins in the backtest (default 12)")
    f.add_argument("--season", metavar="M", type=_positive_int, default=None,
                   help="season length for seasonal naive and MASE (default: from the frequency,"
                   " 12 for monthly, 4 quarterly, 7 daily, 52 weekly, 24 hourly; else 1)")
    f.add_argument("--transform", choices=("auto", "log", "none"), default="auto",
                   help="log values first (auto: when all values are positive)")
    f.add_argument("--seed", metavar="S", type=_count, default=0, help="random seed (default 0)")
    f.add_argument("--out", default="grukit-forecast", metavar="DIR",
                   help="output folder (default ./grukit-forecast)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--no-plot", action="store_true", help="skip forecast.png")

    p = sub.add_parser("predict", help="forecast with a model saved by 'grukit forecast'",
                       description="Forecast the next horizon steps after the end of each series "
                       "in DATA with a saved\nmodel; prints the forecast and, with --out, writes "
                       "it as forecast.csv.", epilog=DATA_POLICY, formatter_class=raw)
    p.add_argument("model", metavar="MODEL",
                   help="the --out folder of 'grukit forecast', or its model.grukit file")
    p.add_argument("data", nargs="?", metavar="DATA.csv",
                   help="CSV file with the same columns (default: the data it was trained on)")
    _columns(p, saved=True)
    p.add_argument("--out", default=None, metavar="DIR", help="also write DIR/forecast.csv")

    e = sub.add_parser("explain", help="heatmaps of a saved model's gates over one input window",
                       description="Run one input window through the first recurrent layer of a "
                       "saved model and draw\nits gates (GRU: update z and reset r; LSTM: input, "
                       "forget, output) as time x unit\nheatmaps under the input series; writes "
                       "gates.png and gates.csv into --out.", epilog=GATES_DOC + "\n" + DATA_POLICY,
                       formatter_class=raw)
    e.add_argument("model", metavar="MODEL",
                   help="the --out folder of 'grukit forecast', or its model.grukit file")
    e.add_argument("data", nargs="?", metavar="DATA.csv",
                   help="CSV file with the same columns (default: the data it was trained on)")
    _columns(e, saved=True)
    e.add_argument("--window-index", type=_int, default=-1, metavar="I",
                   help="window I holds values[I:I+window]; negative counts from the end "
                   "(default -1, the last window: the one a forecast starts from)")
    e.add_argument("--series", default=None, metavar="ID", help="series to explain (with --id "
                   "data; default the first)")
    e.add_argument("--out", default="grukit-explain", metavar="DIR",
                   help="output folder (default ./grukit-explain)")
    return {"forecast": f, "predict": p, "explain": e}


GATES_DOC = """\
reading the heatmaps (rows: units, columns: time steps of the window, colour 0 to 1):
  GRU  h_t = z * h_{t-1} + (1 - z) * h~_t. z near 1 means the unit keeps its old state; z near 0
       means it takes the new candidate h~. r near 0 means the candidate ignores the past state
       (computed from the current input alone). In the seed's notation the update gate is u = 1 - z.
  LSTM f near 1 keeps the cell state; i near 1 writes the new candidate into it; o near 1 shows
       the cell state in the output.
"""


def _columns(parser, saved=False):
    d = " (default: the model's)" if saved else ""
    parser.add_argument("--target", metavar="COL", help="column to forecast" + (
        d or " (default: the first numeric column)"))
    parser.add_argument("--time", metavar="COL", help="timestamp column" + (d or " (default: "
                        "detected)"))
    parser.add_argument("--id", metavar="COL", help="series-id column for many series in long "
                        "format" + d)


def _emit(line):
    print(line, file=sys.stderr)


def run(args):
    """Run the subcommand in ``args``; returns the exit code."""
    return {"forecast": _forecast, "predict": _predict, "explain": _explain}[args.command](args)


def _forecast(args):
    from .pipeline import ForecastOptions, run_forecast
    opts = ForecastOptions(
        data=args.data, target=args.target, time=args.time, id=args.id, horizon=args.horizon,
        window=args.window, cell=args.cell, units=args.units, layers=args.layers,
        epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
        learning_rate=args.learning_rate, val_windows=args.val_windows,
        test_windows=args.test_windows, season=args.season, transform=args.transform,
        seed=args.seed, out=args.out, progress=not args.no_progress, plot=not args.no_plot)
    result = run_forecast(opts, emit=_emit)
    print(summary_text(result))
    return 0


def summary_text(result):
    """The short summary table ``grukit forecast`` prints."""
    m, ds, res = result.metrics, result.dataset, result.results
    tr = m["training"]
    n_series = len(res)
    rows = sum(len(r.series) for r in res)
    head = [f"data     {ds.source}: {ds.target!r}, {m['frequency']}, "
            + (f"{rows} values" if n_series == 1 else f"{n_series} series, {rows} values")
            + f"; season {m['season']}",
            f"model    {m['model']}, window {m['window']}, horizon {m['horizon']}, "
            f"{m['transform']} scale; {tr['train_windows']} train / {tr['val_windows']} "
            f"validation / {m['test_windows'] * n_series} test windows",
            f"training {tr['epochs_run']} epochs (best {tr['best_epoch']}) in "
            f"{tr['seconds']:.1f}s",
            "",
            f"backtest: {m['test_windows']} rolling origins x {m['horizon']} steps from "
            f"{m['test_from']}" + ("" if n_series == 1 else ", mean over series")]
    table = [("method", "MAE", "RMSE", "sMAPE%", "MASE")]
    for name, d in ((m["model"].split(" + ")[0], m), ("naive", m["baselines"]["naive"]),
                    ("seasonal naive", m["baselines"]["seasonal_naive"])):
        table.append((name, f"{d['mae']:.2f}", f"{d['rmse']:.2f}", f"{d['smape']:.2f}",
                      f"{d['mase']:.3f}"))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = [r[0].ljust(widths[0]) + "".join("  " + c.rjust(w) for c, w in zip(r[1:], widths[1:]))
             for r in table]
    sn = m["baselines"]["seasonal_naive"]["mase"]
    verdict = ("beats" if m["mase"] < sn else "does not beat") + " seasonal naive"
    first = res[0]
    fut = first.series.future_labels(len(first.future))
    out_dir = os.path.dirname(result.files[0]) or "."
    tail = ["", f"MASE {m['mase']:.3f} ({verdict}; scale: in-sample seasonal-naive MAE of the "
                f"training part, season {m['season']})",
            f"forecast {fut[0]} .. {fut[-1]} -> {os.path.join(out_dir, 'forecast.csv')}",
            "wrote    " + ", ".join(os.path.basename(p) for p in result.files) + f" in {out_dir}"]
    return "\n".join(head + lines + tail)


def _predict(args):
    from .pipeline import run_predict, write_forecast_csv
    ds, rows, side = run_predict(args.model, args.data, target=args.target, time=args.time,
                                 id=args.id, emit=_emit)
    tcol = ds.time or "time"
    header = ([ds.id] if ds.id else []) + [tcol, "horizon", "forecast"]
    table = [header]
    for s, labels, values in rows:
        for h, (label, v) in enumerate(zip(labels, values)):
            table.append(([str(s.id)] if ds.id else []) + [label, str(h + 1), f"{v:.2f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = write_forecast_csv(os.path.join(args.out, "forecast.csv"), ds, rows)
        _emit(f"wrote {path}")
    return 0


def _explain(args):
    from .explain import run_explain
    info = run_explain(args.model, args.data, out=args.out, window_index=args.window_index,
                       series=args.series, target=args.target, time=args.time, id=args.id,
                       emit=_emit)
    where = "" if info["series"] is None else f" of series {info['series']}"
    print(f"{info['cell']}({info['units']}) gates over window {info['window_index']} (windows "
          f"0 .. {info['windows'] - 1}){where}: {info['from']} .. {info['to']}")
    for key, g in info["gates"].items():
        print(f"  {key}: mean {g['mean']:.3f}, {100 * g['share_above_0.5']:.0f}% of unit-steps "
              "above 0.5")
    if not info["gates"]:
        print("  (a SimpleRNN has no gates; the heatmap shows its hidden state h, -1 to 1)")
    print("wrote " + ", ".join(info["files"]))
    return 0
