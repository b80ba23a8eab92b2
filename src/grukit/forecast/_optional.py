"""Optional extras of the forecasting tools (pandas, tqdm, matplotlib), imported where used.

grukit itself needs only NumPy; ``grukit forecast``, ``predict`` and ``explain`` also read CSV
files with pandas, draw a progress bar with tqdm and plots with matplotlib. A missing one raises
:class:`MissingExtraError`, whose one-line message says how to install it.
"""
import importlib

EXTRA_HINT = "pip install grukit[forecast]"


class MissingExtraError(ImportError):
    """An optional package of the ``forecast`` extra is not installed."""


def require(module, purpose):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    >>> np = require("numpy", "arrays")
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingExtraError(f"{top} is needed for {purpose} but is not installed; install the "
                                f"forecasting extras with: {EXTRA_HINT}") from None


def pandas():
    return require("pandas", "reading CSV files and dates")


def figure(**kwargs):
    """A new matplotlib Figure drawn by the Agg canvas: PNG files only, no window, and no change to
    pyplot's global backend (so importing grukit never disturbs a notebook's plotting)."""
    mfig = require("matplotlib.figure", "plots")
    agg = require("matplotlib.backends.backend_agg", "plots")
    fig = mfig.Figure(**kwargs)
    agg.FigureCanvasAgg(fig)
    return fig
