"""PNG plots (matplotlib, drawn on the Agg canvas: no window, no change to pyplot's state).

- :func:`plot_forecast`: per series, the history, every backtest forecast (one thin line per
  rolling origin, the last one bold) and the forecast past the end of the data.
- :func:`plot_gates`: the input window above heatmaps (time x unit) of the recurrent layer's gates.
"""
import numpy as np

from ._optional import figure

MAX_PANELS = 6


def _ticks(ax, labels, positions, n=8):
    """Label about ``n`` of the x positions with their timestamps."""
    if not len(positions):
        return
    step = max(1, len(positions) // n)
    idx = list(range(0, len(positions), step))
    ax.set_xticks([positions[i] for i in idx])
    ax.set_xticklabels([labels[i] for i in idx], rotation=30, ha="right", fontsize=8)


def plot_forecast(path, ds, results, metrics):
    """Write the history / backtest / forecast figure to ``path``; returns ``path``."""
    shown = results[:MAX_PANELS]
    fig = figure(figsize=(10, 3.6 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, shown):
        s = r.series
        n, H = len(s), len(r.future)
        t = np.arange(n)
        ax.plot(t, s.values, color="black", lw=1.2, label="history")
        origins = r.split.test
        if len(r.split.val):
            ax.axvspan(r.split.val[0] - 0.5, origins[0] - 0.5, color="0.96", zorder=0,
                       label="validation part")
        ax.axvspan(origins[0] - 0.5, n - 0.5, color="0.90", zorder=0, label="test part")
        for i, o in enumerate(origins):
            last = i == len(origins) - 1
            ax.plot(np.arange(o, o + H), r.test_forecast[i], color="tab:orange",
                    lw=1.6 if last else 0.7, alpha=1.0 if last else 0.35,
                    label="backtest forecasts" if last else None)
        tf = np.arange(n, n + H)
        ax.plot(np.r_[n - 1, tf], np.r_[s.values[-1], r.future], color="tab:blue", lw=1.8,
                ls="--", marker="o", ms=3, label="forecast")
        m = r.metrics
        title = (f"{ds.target}" + ("" if s.id is None else f" [{s.id}]") +
                 f": backtest MASE {m['model']['mase']:.3f} (seasonal naive "
                 f"{m['seasonal_naive']['mase']:.3f}, naive {m['naive']['mase']:.3f})")
        ax.set_title(title, fontsize=10)
        labels = s.labels() + s.future_labels(H)
        _ticks(ax, labels, list(range(n + H)))
        ax.set_ylabel(ds.target)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    if len(results) > MAX_PANELS:
        fig.suptitle(f"first {MAX_PANELS} of {len(results)} series", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def plot_gates(path, labels, values, gates, title, value_name):
    """The input window (``values``, one per step, timestamps ``labels``) above one heatmap per
    gate: ``gates`` maps a caption to an array (time, units) of values in [0, 1]."""
    k = len(gates)
    units = next(iter(gates.values())).shape[1]
    height = 2.0 + k * max(1.6, min(4.0, units * 0.09))
    fig = figure(figsize=(10, height), layout="constrained")
    axes = fig.subplots(k + 1, 1, sharex=True, gridspec_kw={"height_ratios": [1.2] + [2] * k})
    T = len(values)
    axes[0].plot(np.arange(T), values, color="black", marker="o", ms=3)
    axes[0].set_ylabel(value_name, fontsize=9)
    axes[0].set_title(title, fontsize=10)
    axes[0].grid(alpha=0.3)
    im = None
    for ax, (caption, a) in zip(axes[1:], gates.items()):
        lo, hi = (0.0, 1.0) if np.all((a >= 0) & (a <= 1)) else (-1.0, 1.0)
        im = ax.imshow(a.T, aspect="auto", origin="lower", cmap="viridis", vmin=lo, vmax=hi,
                       interpolation="nearest", extent=(-0.5, T - 0.5, -0.5, units - 0.5))
        ax.set_ylabel(f"{caption}\nunit", fontsize=9)
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03)
    spacer = fig.colorbar(im, ax=axes[0], pad=0.01, fraction=0.03)   # keeps the x axes aligned
    spacer.ax.set_visible(False)
    _ticks(axes[-1], labels, list(range(T)), n=12)
    fig.savefig(path, dpi=110)
    return path
