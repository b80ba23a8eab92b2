"""The seed's fit, timed side by side: grukit vs PyTorch (and Keras when installed), one process.

GRU(32) + Dense(1, tanh), adam/mse, 200 epochs on the seed's six windows (one batch per epoch),
each side repeated; prints median seconds per fit and the ratio peer / grukit.

    python benchmarks/seed_fit.py [--repeats 5] [--keras]
"""
import argparse
import os
import statistics
import time
import warnings

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")


def grukit_fit(x, y, epochs):
    from grukit.layers import GRU, Dense
    from grukit.models import Sequential
    model = Sequential([GRU(32, input_shape=[4, 1]), Dense(1, activation="tanh")])
    model.compile(optimizer="adam", loss="mse")
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, verbose=0)
    return time.perf_counter() - t0


def torch_fit(x, y, epochs):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(1, 32, batch_first=True)
            self.dense = torch.nn.Linear(32, 1)

        def forward(self, xb):
            out, _ = self.gru(xb)
            return torch.tanh(self.dense(out[:, -1]))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)[:, None]
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))       # shuffle each epoch, as fit does
        xb, yb = xt[perm], yt[perm]
        opt.zero_grad()
        loss = torch.mean((net(xb) - yb) ** 2)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def keras_fit(x, y, epochs):
    import keras
    model = keras.Sequential([keras.Input((4, 1)), keras.layers.GRU(32),
                              keras.layers.Dense(1, activation="tanh")])
    model.compile(optimizer="adam", loss="mse")
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, verbose=0)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--keras", action="store_true", help="time Keras too (slow: ~1 s per fit)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from grukit.demo import seed_data
    x, y = seed_data()
    sides = {"grukit": grukit_fit, "pytorch": torch_fit}
    if args.keras:
        sides["keras"] = keras_fit
    import torch
    torch.set_num_threads(1)   # PyTorch's best setting at these sizes on 2 cores
    times = {k: [] for k in sides}
    for name, fn in sides.items():   # one warm-up each
        fn(x, y, 5)
    for _ in range(args.repeats):    # interleaved
        for name, fn in sides.items():
            times[name].append(fn(x, y, args.epochs))
    base = statistics.median(times["grukit"])
    print(f"seed fit, {args.epochs} epochs, median of {args.repeats}:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<8} {1000 * med:8.1f} ms   {med / base:6.2f}x grukit's time")


if __name__ == "__main__":
    main()
