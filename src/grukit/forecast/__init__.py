"""Forecasting with grukit's recurrent networks: the engine of ``grukit forecast``, ``predict`` and
``explain``.

- :mod:`~grukit.forecast.data`: CSV files to regular series (dates, frequency, gaps, duplicates,
  missing values), and the bundled airline passengers series
- :mod:`~grukit.forecast.windows`: scaling with training statistics, windows, the split by time
- :mod:`~grukit.forecast.backtest`: MAE, RMSE, sMAPE, MASE and the naive baselines
- :mod:`~grukit.forecast.model`: the network, training with early stopping and a progress bar,
  the saved bundle (``model.grukit`` + ``forecast.json``)
- :mod:`~grukit.forecast.pipeline`: the commands as functions; :mod:`~grukit.forecast.plot`,
  :mod:`~grukit.forecast.explain`: figures and gate heatmaps

NumPy is all grukit needs; these tools also use pandas, tqdm and matplotlib
(``pip install grukit[forecast]``), imported only when they run.

>>> from grukit.forecast.pipeline import ForecastOptions, run_forecast
>>> run = run_forecast(ForecastOptions(out="grukit-forecast"))      # doctest: +SKIP
>>> run.metrics["mase"] < 1                                         # doctest: +SKIP
True
"""
