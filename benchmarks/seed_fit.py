"""The seed's program as it is written: ``model.fit(X, Y, epochs=200, verbose=0)`` on
GRU(32) + Dense(1, tanh) with adam/mse, in grukit and in Keras 3 on each installed backend.

bench.py times the seed workload as 200 ``train_on_batch`` calls on every side (the same batches
everywhere, so the sides are comparable step for step); this script times what the seed's user
runs, Keras's own ``fit`` loop included. Keras backends run in child processes (one backend per
process), interleaved with grukit round by round; each round builds a fresh model, and the first
fit of each side is a warm-up. Prints each side's median and grukit's ratio.

    python benchmarks/seed_fit.py                     # torch and tensorflow, where installed
    python benchmarks/seed_fit.py --rounds 5 --backends tensorflow
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np


def fit_seconds(side, epochs):
    """One fresh model, one fit of ``epochs`` epochs on the seed data; seconds."""
    from grukit.demo import seed_data
    x, y = (a.astype(np.float32) for a in seed_data()[:2])
    if side == "grukit":
        import grukit
        from grukit.layers import GRU, Dense
        model = grukit.Sequential([GRU(32, input_shape=(4, 1)), Dense(1, activation="tanh")])
    else:
        import keras
        from keras import layers
        model = keras.Sequential([keras.Input((4, 1)), layers.GRU(32),
                                  layers.Dense(1, activation="tanh")])
    model.compile(optimizer="adam", loss="mse")
    t = time.perf_counter()
    model.fit(x, y, epochs=epochs, verbose=0)
    return time.perf_counter() - t


def child(backend, epochs, rounds):
    """In a child process with KERAS_BACKEND set: a warm-up fit, then one time per round, each
    printed as a line when the parent asks for it (a line on stdin)."""
    fit_seconds(backend, 5)
    print("READY", flush=True)
    for _ in range(rounds):
        sys.stdin.readline()
        print(json.dumps(fit_seconds(backend, epochs)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--backends", default="torch,tensorflow")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.epochs, args.rounds)
    backends = [b for b in args.backends.split(",")
                if importlib.util.find_spec("torch" if b == "torch" else b) is not None]
    procs = {}
    for b in backends:
        env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="3")
        p = subprocess.Popen([sys.executable, __file__, "--child", b, "--epochs",
                              str(args.epochs), "--rounds", str(args.rounds)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        while p.stdout.readline().strip() != "READY":
            if p.poll() is not None:
                raise SystemExit(f"Keras on {b} failed to start")
        procs[b] = p
    fit_seconds("grukit", 5)
    times = {"grukit": [], **{f"keras-{b}": [] for b in procs}}
    for _ in range(args.rounds):   # interleaved: grukit, then each backend, every round
        times["grukit"].append(fit_seconds("grukit", args.epochs))
        for b, p in procs.items():
            p.stdin.write("\n")
            p.stdin.flush()
            times[f"keras-{b}"].append(json.loads(p.stdout.readline()))
    for p in procs.values():
        p.wait()
    g = float(np.median(times["grukit"]))
    print(f"model.fit(epochs={args.epochs}) on the seed's model, median of {args.rounds}:")
    for side, ts in times.items():
        m = float(np.median(ts))
        ratio = ("" if side == "grukit" else f"   grukit {m / g:.1f}x faster" if m >= g
                 else f"   {side} {g / m:.1f}x faster")
        print(f"  {side:18s} {m * 1e3:9.1f} ms{ratio}")


if __name__ == "__main__":
    main()
