"""Measuring: interleaved timing of the sides, the matmul lower bound, and peak memory of a step.

Timing. A *variant* is one side running one operation at one thread count. For each workload and
cell every variant is warmed up, then timed in rounds: each round times every variant once, in an
order rotated from round to round. One measurement runs the operation ``inner`` times back to
back (calibrated in warm-up to take about ``target`` seconds; 1 for the seed fit, which is long)
and records the time per call; garbage collection is off while it runs. A variant that is clearly
not its side's best thread setting is dropped from later rounds: 3x slower in warm-up, or its
fastest run 3x slower than its side's fastest after any round, or its median 1.5x slower after
three rounds (on two shared cores a two-thread setting can take 10-50x longer when a neighbour
holds the other core, and timing it for every round would take most of the run). After a measurement that used more than one thread the harness sleeps
``settle`` seconds: OpenBLAS's workers spin for about 0.1 s after a call (ONNX Runtime's and
OpenMP's briefly too) and on two cores they slow down whichever side is timed next.

Lower bound. The matrix multiplies a workload cannot avoid, counted per call (G = 3 for GRU, 4 for
LSTM; FLOPs = 2 m k n each):

    forward    x W          (T*B, D) @ (D, G*H)        once
               h U          (B, H) @ (H, G*H)          per step (T times)
               Dense        (B, H) @ (H, 1)            once
    backward   dU = h^T dz  (H, T*B) @ (T*B, G*H)      once
               dh = dz U^T  (B, G*H) @ (G*H, H)        per step
               dW = x^T dz  (D, T*B) @ (T*B, G*H)      once
               Dense dW, dh (H, B) @ (B, 1), (B, 1) @ (1, H)
    (backward = 2x forward, less the input gradient dx that no side needs for data)

Each shape is timed alone in NumPy (np.dot into a preallocated output, 1 and 2 BLAS threads, the
fastest of several runs), so the bound is the time those matmuls take at the workload's own
shapes; the throughput it implies (FLOPs / bound) is printed beside a 1024^3 GEMM's peak.

Memory (see :func:`memory_child`). Each side runs in a fresh process: imports and data first, then
the model and one warm-up training step, then the peak RSS counter (VmHWM) is reset through
/proc/self/clear_refs and one more training step runs; the step's peak is VmHWM minus the RSS
before it. grukit keeps the large buffers of its compiled loops between steps and reuses them,
so for grukit the bytes it holds so are added to that peak. The same for every side; one
BLAS/OpenMP thread; glibc's mmap threshold is fixed at
64 KiB (MALLOC_MMAP_THRESHOLD_) so that large temporaries are mapped and unmapped per step rather
than kept in the heap, where a second step would reuse them unseen. grukit's figure is checked
against tracemalloc (which sees NumPy's allocations) on a third step.
"""
import gc
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import bench_sides

X_TEST = np.array([[[0.8], [0.9], [1.0], [1.1]]], np.float32)   # the seed's unseen window


# ================================================================================================
# timing
# ================================================================================================
@dataclass
class Variant:
    side: object
    op: str
    threads: int
    inner: int = 1
    times: list = field(default_factory=list)   # seconds per call, one per measurement
    warm: float = float("nan")                  # seconds per call at the end of warm-up
    pruned: str = ""
    calls: int = 0
    fit_epochs: int = None                      # None: the whole fit (warm-up runs a tenth)

    @property
    def key(self):
        return (self.side.name, self.op)

    def call(self):
        """One timed call of the operation (the seed fit's reset is done untimed by measure)."""
        if self.op == "train":
            self.side.train(self.calls)
        elif self.op == "infer":
            self.side.infer()
        else:
            self.side.fit(self.fit_epochs)
        self.calls += 1

    def median(self):
        return statistics.median(self.times) if self.times else float("inf")


def _timed(v, n):
    """Seconds per call over n calls (the fit: its reset untimed before each)."""
    total = 0.0
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            if v.op == "fit":
                v.side.fit_reset()
            t0 = time.perf_counter()
            if v.op == "fit":
                v.call()
            else:
                for _ in range(v.inner):
                    v.call()
            total += time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()
    return total / (n if v.op == "fit" else n * v.inner)


def warm_up(v, warm_s, target):
    """Run the variant until warm; calibrate ``inner`` so one measurement takes ~target s."""
    with v.side.threads(v.threads):
        if v.op == "fit":   # a short fit (a tenth of the epochs) warms the side up
            epochs = len(v.side.p.perms)
            v.fit_epochs = max(1, epochs // 10)
            try:
                per = _timed(v, 1)
            finally:
                v.fit_epochs = None
            v.warm = per * epochs / max(1, epochs // 10)
            return
        v.inner = 1
        start, n, per = time.perf_counter(), 0, 0.0
        while n < 2 or (time.perf_counter() - start < warm_s and n < 200):
            per = _timed(v, 1)
            n += 1
        v.warm = per
        v.inner = max(1, min(100000, int(round(target / max(per, 1e-7)))))


def measure(v, settle):
    with v.side.threads(v.threads):
        v.times.append(_timed(v, 1))
        if v.op == "fit":   # the fitted model's answer, untimed: every side should agree
            v.side.seed_prediction = v.side.predict_seed(X_TEST)
    if v.threads > 1 and settle:
        time.sleep(settle)


def _prune(variants, value, factor, why):
    best = {}
    for v in variants:
        if not v.pruned:
            best[v.key] = min(best.get(v.key, float("inf")), value(v))
    for v in variants:
        if not v.pruned and value(v) > factor * best[v.key]:
            v.pruned = why


def time_variants(variants, repeats, warm_s, target, settle, prune=True, log=print):
    """Warm up every variant, then time them in ``repeats`` interleaved rounds."""
    for v in variants:
        warm_up(v, warm_s, target)
        if v.threads > 1 and settle:
            time.sleep(settle)
    if prune:
        _prune(variants, lambda v: v.warm, 3.0, "over 3x its side's best in warm-up")
    for r in range(repeats):
        active = [v for v in variants if not v.pruned]
        k = r % len(active)
        for v in active[k:] + active[:k]:
            measure(v, settle)
        if prune and r + 1 < repeats:
            # noise only ever adds time, so a setting whose fastest run is 3x its side's fastest
            # is not the best one; after three rounds the medians decide, with a 1.5x margin
            _prune(variants, lambda v: min(v.times), 3.0, "fastest run over 3x its side's")
            if r + 1 == 3:
                _prune(variants, Variant.median, 1.5, "median over 1.5x its side's best "
                       "after 3 rounds")
    return variants


def summarize(variants):
    """{op: {side: summary of its fastest thread setting}}."""
    out = {}
    for v in variants:
        entry = out.setdefault(v.op, {}).setdefault(v.side.name, {
            "label": v.side.label, "by_threads": {}})
        entry["by_threads"][str(v.threads)] = {
            "median_s": v.median() if v.times else None, "samples_s": v.times,
            "calls_per_sample": 1 if v.op == "fit" else v.inner,
            "warmup_s_per_call": v.warm, "dropped": v.pruned or None}
    for sides in out.values():
        finish(sides)
    return out


def finish(sides):
    """Pick each side's fastest thread setting; add grukit/peer and peer/grukit ratios."""
    for entry in sides.values():
        timed = {t: d for t, d in entry["by_threads"].items() if d["median_s"] is not None}
        if not timed:
            continue
        best = min(timed, key=lambda t: timed[t]["median_s"])
        s = sorted(timed[best]["samples_s"])
        q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0]] * 3
        entry.update(threads=int(best), median_s=timed[best]["median_s"], q1_s=q[0], q3_s=q[2],
                     n=len(s))
    base = sides.get("grukit")
    for name, entry in sides.items():
        if base is not None and name != "grukit":
            entry["grukit_over_peer"] = base["median_s"] / entry["median_s"]
            entry["peer_over_grukit"] = entry["median_s"] / base["median_s"]
    return sides


# ================================================================================================
# the matmul lower bound
# ================================================================================================
def gemm_shapes(wl, cell, op):
    """[(what, m, k, n, a_transposed, b_transposed, count per call)] for one call of ``op``."""
    G, (T, B, D, H) = bench_sides.GATES[cell], (wl.T, wl.B, wl.D, wl.H)
    TB = T * B
    shapes = [("x W", TB, D, G * H, False, False, 1),
              ("h U per step", B, H, G * H, False, False, T),
              ("Dense", B, H, 1, False, False, 1)]
    if op in ("train", "fit"):
        shapes += [("dU = h^T dz", H, TB, G * H, True, False, 1),
                   ("dh = dz U^T per step", B, G * H, H, False, True, T),
                   ("dW = x^T dz", D, TB, G * H, True, False, 1),
                   ("Dense dW", H, B, 1, True, False, 1),
                   ("Dense dh", B, 1, H, False, True, 1)]
    if op == "fit":
        shapes = [(w, m, k, n, ta, tb, c * wl.epochs) for w, m, k, n, ta, tb, c in shapes]
    return shapes


def flops(shapes):
    return sum(2 * m * k * n * c for _, m, k, n, _, _, c in shapes)


class GemmTimer:
    """NumPy float32 matmul times by shape, the fastest of 1 and 2 BLAS threads, cached."""

    def __init__(self, controller, reps=5, target=0.005, settle=0.0):
        self.controller, self.reps, self.target, self.settle = controller, reps, target, settle
        self.cache = {}

    def _limit(self, n):
        if self.controller is None:
            import contextlib
            return contextlib.nullcontext()
        return self.controller.limit(limits=n, user_api="blas")

    def seconds(self, m, k, n, ta, tb, threads=(1, 2)):
        key = (m, k, n, ta, tb, tuple(threads))
        if key in self.cache:
            return self.cache[key]
        g = np.random.default_rng(0)
        a = g.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = g.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        a, b = (a.T if ta else a), (b.T if tb else b)
        c = np.empty((m, n), np.float32)
        best = {}
        for t in threads:
            with self._limit(t):
                np.dot(a, b, out=c)
                t0 = time.perf_counter()
                np.dot(a, b, out=c)
                one = max(time.perf_counter() - t0, 1e-7)
                inner = max(1, min(100000, int(self.target / one)))
                runs = []
                for _ in range(self.reps):
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        np.dot(a, b, out=c)
                    runs.append((time.perf_counter() - t0) / inner)
                best[t] = min(runs)
            if t > 1 and self.settle:
                time.sleep(self.settle)
        self.cache[key] = best
        return best

    def bound(self, shapes):
        """The workload's matmuls timed shape by shape: total seconds, FLOPs, GFLOP/s."""
        total, parts = 0.0, []
        for what, m, k, n, ta, tb, count in shapes:
            by_t = self.seconds(m, k, n, ta, tb)
            t = min(by_t.values())
            total += t * count
            parts.append({"what": what, "m": m, "k": k, "n": n, "count": count,
                          "s_each": t, "threads": int(min(by_t, key=by_t.get))})
        f = flops(shapes)
        return {"flops": f, "bound_s": total, "gflops_at_these_shapes": f / total / 1e9,
                "matmuls": parts}

    def peak(self, size=1024):
        """GFLOP/s of one size^3 float32 GEMM at each thread count."""
        by_t = self.seconds(size, size, size, False, False)
        return {str(t): 2 * size ** 3 / s / 1e9 for t, s in by_t.items()}


# ================================================================================================
# memory: run in a child process
# ================================================================================================
def _status():
    text = open("/proc/self/status").read()
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) * 1024
    return vals


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def memory_child(side_name, cell, wl):
    """In a fresh process: the peak RSS growth of one training step of ``side_name`` (bytes)."""
    problem = bench_sides.make_problem(wl, cell)
    if side_name == "grukit":
        make = lambda: bench_sides.GrukitSide(problem)
    elif side_name == "pytorch":
        import torch
        torch.set_num_threads(1)
        make = lambda: bench_sides.TorchSide(problem)
    elif side_name.startswith("keras"):
        import keras  # noqa: F401 - imported before the baseline, like the other sides' libraries
        make = lambda: bench_sides.KerasSide(problem)
    else:
        raise ValueError(f"no memory measurement for {side_name!r}")
    gc.collect()
    _reset_peak()
    rss0 = _status()["VmRSS"]
    side = make()
    side.train(0)                              # warm-up step: optimizer state, lazy set-up
    gc.collect()
    s1 = _status()
    _reset_peak()
    rss1 = _status()["VmRSS"]
    side.train(1)                              # the measured step
    s2 = _status()
    out = {"side": side.name, "cell": cell, "workload": wl.name,
           "step_peak_bytes": s2["VmHWM"] - rss1,
           "first_step_peak_bytes": s1["VmHWM"] - rss0,
           "resident_after_warmup_bytes": s1["VmRSS"] - rss0}
    if side_name == "grukit":
        # buffers grukit keeps between steps for reuse (recurrent layers' workspaces): memory a
        # side holds across steps counts as part of its step, so it is added to the step's peak
        out["held_bytes"] = sum(layer.held_bytes() for layer in side.model.layers
                                if hasattr(layer, "held_bytes"))
        import tracemalloc
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        side.train(2)
        out["tracemalloc_step_peak_bytes"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return out


def run_memory_child(python, script, side_name, cell, wl_name, quick, env=None, timeout=600):
    """Run :func:`memory_child` in a fresh interpreter; returns its dict or {"error": ...}."""
    import subprocess
    env = dict(os.environ, **MEMORY_ENV, **(env or {}))
    cmd = [python, script, "--memory-child", side_name, cell, wl_name] + (["--quick"] if quick
                                                                            else [])
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in r.stdout.splitlines():
        if line.startswith("MEMORY_JSON "):
            return json.loads(line[len("MEMORY_JSON "):])
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {r.returncode}: {tail[0][:200]}"}


def fmt_bytes(n):
    if n is None:
        return "–"
    if abs(n) >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if abs(n) >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def fmt_time(s):
    if s is None or not math.isfinite(s):
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.0f} µs"
