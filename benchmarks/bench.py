"""grukit against PyTorch, Keras 3 and ONNX Runtime on CPU: float32 GRU and LSTM workloads.

    python benchmarks/bench.py                      # everything, ~5 minutes on 2 cores
    python benchmarks/bench.py --quick --no-keras   # the CI smoke run: tiny sizes, a few seconds
    python benchmarks/bench.py --workloads small,latency --cells gru --repeats 5 --out /tmp/b

Workloads (T steps, B batch, D features, H units; the model is X(H) + Dense(1), adam/mse):

    seed     T=4   B=6  D=1   H=32   the seed's model (Dense(1, tanh)) fit for 200 epochs on
                                     grukit.demo.seed_data(): one shuffled batch per epoch
    small    T=50  B=32 D=8   H=64   one training step (forward, backward, Adam), and inference
    medium   T=100 B=32 D=128 H=128  the same
    large    T=100 B=64 D=256 H=256  the same
    latency  T=100 B=1  D=32  H=128  inference of one sequence

The sides (benchmarks/bench_sides.py): grukit (train_on_batch, predict(x, batch_size=B)); PyTorch
eager (nn.GRU / nn.LSTM + nn.Linear, torch.optim.Adam); Keras 3 on the torch backend in this
process (train_on_batch, predict_on_batch), and on TensorFlow in a child process per thread count
when TensorFlow is installed (a Keras backend is fixed per process); ONNX Runtime, inference only,
on the graph grukit.interop.onnx exports (or one built here if that exporter is missing or
disagrees). Every side starts from grukit's initial weights, mapped into its layout, and sees the
same batches in the same order; the seed fit shares its 200 permutations. Before timing, each
peer's forward output is compared with grukit's. A peer that is not installed is skipped with a note.

Timing (benchmarks/bench_measure.py): everything in one process, interleaved: each round times
every side once at each thread setting, in a rotating order, after a warm-up; the median per side
and setting is kept, and each side is reported at its faster setting: grukit with 1 and 2 BLAS
threads (threadpoolctl), PyTorch and Keras with torch.set_num_threads(1) and (2), ONNX Runtime
with intra_op_num_threads 1 and 2. Printed per workload: the median, its interquartile range,
grukit/peer and which side is faster by how much (peer/grukit).

Lower bound: the workload's matrix-multiply FLOPs (input projection, recurrent matmul per step,
Dense; backward matmuls for training, about twice the forward) over the float32 GEMM throughput
that NumPy reaches in this run at those very shapes (best thread setting), and grukit's time as a
multiple of that bound.

Memory: the peak RSS growth of one training step, each side in its own fresh process, measured
the same way for all (after a warm-up step, the kernel's peak-RSS counter is reset and one step
runs; see bench_measure.memory_child), with tracemalloc as a cross-check for grukit.

Output: results.json, results.md (the README table) and chart.png in --out
(default benchmarks/results); the Markdown table is printed at the end.
"""
import argparse
import contextlib
import gc
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

SIDES_ORDER = ["grukit", "pytorch", "keras", "keras-tensorflow", "keras-jax", "onnxruntime"]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="grukit vs PyTorch, Keras 3 and ONNX Runtime: GRU/LSTM float32 on CPU.",
        epilog="Run from anywhere; results land in --out.")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, one repeat, short warm-up, grukit-only memory: the CI smoke run")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved timing rounds (default 9, --quick 1)")
    ap.add_argument("--workloads", default="seed,small,medium,large,latency",
                    help="comma-separated subset of seed,small,medium,large,latency")
    ap.add_argument("--cells", default="gru,lstm", help="comma-separated subset of gru,lstm")
    ap.add_argument("--no-keras", action="store_true", help="leave Keras out (its import takes ~4 s)")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--keras-backends", default="auto",
                    help="Keras backends to time: 'auto' = torch in this process, plus tensorflow "
                         "in child processes when it is installed; or a list such as "
                         "'torch,tensorflow' (any backend but torch runs in a child process)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="output folder for results.json, results.md, chart.png "
                         "(default: benchmarks/results)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to sleep after a multi-threaded measurement (default 0.15, "
                         "--quick 0)")
    ap.add_argument("--target", type=float, default=None,
                    help="seconds one measurement aims for (calls are repeated to fill it; "
                         "default 0.1, --quick 0.002)")
    # internal: the child processes
    ap.add_argument("--memory-child", nargs=3, metavar=("SIDE", "CELL", "WORKLOAD"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--keras-child", metavar="BACKEND", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 9)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    args.settle = args.settle if args.settle is not None else (0.0 if args.quick else 0.15)
    args.target = args.target if args.target is not None else (0.002 if args.quick else 0.1)
    args.warm = 0.0 if args.quick else 0.3
    import bench_sides
    known = bench_sides.workloads(args.quick)
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workload_list if w not in known]
    if bad or not args.workload_list:
        ap.error(f"--workloads: unknown {bad}; choose from {','.join(known)}")
    args.cell_list = [c.strip().lower() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in args.cell_list if c not in bench_sides.GATES]
    if bad or not args.cell_list:
        ap.error(f"--cells: unknown {bad}; choose from gru,lstm")
    return args


def log(*a):
    print(*a, flush=True)


@contextlib.contextmanager
def quiet():
    """Silence the peers' import chatter and warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            yield


# ================================================================================================
# peers
# ================================================================================================
def keras_backends(args):
    if args.no_keras or importlib.util.find_spec("keras") is None:
        return []
    if args.keras_backends == "auto":
        out = ["torch"]
        if importlib.util.find_spec("tensorflow") is not None:
            out.append("tensorflow")
        return out
    return [b.strip() for b in args.keras_backends.split(",") if b.strip()]


def _import_peer(label, modules, notes, check=None):
    """Import ``modules`` quietly; True when they load (and ``check`` passes), else a note."""
    if any(importlib.util.find_spec(m) is None for m in modules):
        notes.append(f"{label}: needs {' and '.join(modules)}, not installed, skipped")
        return False
    try:
        with quiet():
            loaded = [importlib.import_module(m) for m in modules]
        if check is not None:
            check(*loaded)
        return True
    except Exception as e:  # noqa: BLE001
        notes.append(f"{label}: import failed ({type(e).__name__}: {e}), skipped")
        return False


def _keras_on_torch(keras):
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras loaded the {keras.backend.backend()} backend")


def find_peers(args, notes):
    """Import the peers that are installed; returns the in-process side names."""
    peers = []
    if args.no_torch:
        notes.append("PyTorch: left out (--no-torch)")
    elif _import_peer("PyTorch", ["torch"], notes):
        peers.append("pytorch")
    if args.no_keras:
        notes.append("Keras: left out (--no-keras)")
    elif importlib.util.find_spec("keras") is None:
        notes.append("Keras: not installed, skipped")
    elif "torch" in keras_backends(args):
        if "pytorch" not in peers:
            notes.append("Keras on torch: needs PyTorch, skipped")
        elif _import_peer("Keras on torch", ["keras"], notes, _keras_on_torch):
            peers.append("keras")
    if args.no_onnx:
        notes.append("ONNX Runtime: left out (--no-onnx)")
    elif _import_peer("ONNX Runtime", ["onnxruntime", "onnx"], notes):
        peers.append("onnxruntime")
    return peers


def build_sides(problem, peers, controller, notes, tag):
    import numpy as np

    import bench_sides as S
    grukit = S.GrukitSide(problem, controller)
    sides, ref = [grukit], grukit.output()
    info = {"parity_max_abs_diff": {}}
    for name in peers:
        if name == "onnxruntime" and "infer" not in problem.wl.ops:
            continue
        try:
            with quiet():
                if name == "pytorch":
                    side = S.TorchSide(problem)
                elif name == "keras":
                    side = S.KerasSide(problem)
                else:
                    side = S.OrtSide(problem, ref)
                    info["onnx_graph"] = side.exporter
                    if side.note:
                        info["onnx_note"] = side.note
                        notes.append(f"{tag}: ONNX graph built by the harness ({side.note})")
                out = side.output()
        except Exception as e:  # noqa: BLE001
            notes.append(f"{tag}: {name} skipped ({type(e).__name__}: {e})")
            continue
        err = float(np.max(np.abs(np.asarray(out, np.float32) - ref)))
        info["parity_max_abs_diff"][side.name] = err
        if err > 1e-3:
            notes.append(f"{tag}: {side.name}'s output differs from grukit's by {err:.2e}")
        sides.append(side)
    return sides, info


def make_variants(sides, ops):
    from bench_measure import Variant
    out = []
    for side in sides:
        for op in ops:
            if op in ("train", "fit") and not side.trains:
                continue
            for n in side.thread_options:
                out.append(Variant(side, op, n))
    return out


# ================================================================================================
# the run
# ================================================================================================
def run(args):
    os.environ["KERAS_BACKEND"] = "torch"    # the in-process Keras; other backends in children
    import bench_measure as M
    import bench_report as R
    import bench_sides as S
    try:
        from threadpoolctl import ThreadpoolController
        controller = ThreadpoolController()
    except ImportError:
        controller = None
    t_start = time.perf_counter()
    notes = []
    if controller is None:
        notes.append("threadpoolctl is not installed: grukit ran at the BLAS's default thread "
                     "count only (pip install threadpoolctl)")
    peers = find_peers(args, notes)
    if controller is None:   # 0: whatever the BLAS chose
        S.GrukitSide.thread_options = (0,)
    gemm = M.GemmTimer(controller, reps=2 if args.quick else 5,
                       target=0.001 if args.quick else 0.005, settle=args.settle)
    peak = gemm.peak(256 if args.quick else 1024)
    info = R.machine(controller)
    meta = {"machine": info, "machine_line": R.machine_line(info, peak), "gemm_peak_gflops": peak,
            "repeats": args.repeats, "quick": args.quick, "settle_s": args.settle,
            "target_s": args.target, "argv": sys.argv[1:], "peers": peers,
            "method": {"timing": M.__doc__.split("\n\n")[1].replace("\n", " "),
                       "bound": M.__doc__.split("\n\n")[2].replace("\n", " "),
                       "memory": M.__doc__.split("\n\n")[-1].replace("\n", " ")}}
    log(f"Machine: {meta['machine_line']}")
    log(f"Sides: grukit, {', '.join(peers) or 'no peers'}; {args.repeats} interleaved repeat(s) "
        "per workload after warm-up; each side at its faster thread setting.")
    for n in notes:
        log(f"note: {n}")
    log("")
    wls = S.workloads(args.quick)
    results = {"meta": meta, "workloads": {}, "memory": [], "notes": notes}
    for wname in args.workload_list:
        wl = wls[wname]
        wres = results["workloads"][wname] = {
            "T": wl.T, "B": wl.B, "D": wl.D, "H": wl.H, "what": wl.what, "cells": {}}
        if wl.epochs:
            wres["epochs"] = wl.epochs
        for cell in args.cell_list:
            tag = f"{wname} {R.CELL_NAMES[cell]}"
            problem = S.make_problem(wl, cell)
            sides, cinfo = build_sides(problem, peers, controller, notes, tag)
            variants = make_variants(sides, wl.ops)
            with quiet():
                M.time_variants(variants, args.repeats, args.warm, args.target, args.settle,
                                prune=not args.quick)
            summary = M.summarize(variants)
            cres = wres["cells"][cell] = {"ops": {}, **cinfo}
            for op in wl.ops:
                bound = gemm.bound(M.gemm_shapes(wl, cell, op))
                bound["at_peak_s"] = bound["flops"] / (max(peak.values()) * 1e9)
                cres["ops"][op] = {"sides": summary.get(op, {}), "bound": bound}
                log(R.console_block(wname, wres, cell, op, cres["ops"][op]["sides"], bound))
            if "fit" in wl.ops:
                preds = {s.name: getattr(s, "seed_prediction", None) for s in sides}
                cres["seed_predictions"] = preds
                log("  after the fit, the prediction for [0.8, 0.9, 1.0, 1.1] (truth 1.2): " +
                    ", ".join(f"{k} {v:.4f}" for k, v in preds.items() if v is not None))
            log("")
            del sides, variants, problem
            if not args.quick:   # free the models of this workload (0.2 s with torch loaded)
                gc.collect()
    for backend in keras_backends(args):
        if backend != "torch":
            keras_children(args, backend, results, notes)
    if not args.no_memory:
        memory_phase(args, peers, results, notes)
    results["meta"]["wall_s"] = time.perf_counter() - t_start
    write_outputs(args, results)
    return 0


def keras_children(args, backend, results, notes):
    """Keras on another backend: a child process per thread count (the backend and its threads are
    fixed when it starts). Not interleaved with the sides timed in this process."""
    import bench_measure as M
    import bench_report as R
    name = f"keras-{backend}"
    log(f"Keras on {backend}: timing in child processes (1 and 2 threads), not interleaved with "
        "the other sides")
    merged = {}
    for threads in (1, 2):
        cmd = [sys.executable, os.path.abspath(__file__), "--keras-child", backend,
               "--threads", str(threads), "--workloads", ",".join(args.workload_list),
               "--cells", ",".join(args.cell_list), "--repeats", str(args.repeats),
               "--target", str(args.target)] + (["--quick"] if args.quick else [])
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("KERAS_JSON ")), None)
        if line is None:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            notes.append(f"Keras on {backend} ({threads} thread(s)) failed: exit {r.returncode}: "
                         f"{tail[0][:200]}")
            continue
        for wname, cells in json.loads(line[len("KERAS_JSON "):]).items():
            for cell, ops in cells.items():
                for op, entry in ops.items():
                    tgt = merged.setdefault((wname, cell, op), {
                        "label": f"Keras ({backend}, own process)", "by_threads": {},
                        "separate_process": True})
                    tgt["by_threads"].update(entry["by_threads"])
    for (wname, cell, op), entry in merged.items():
        sides = results["workloads"][wname]["cells"][cell]["ops"][op]["sides"]
        sides[name] = entry
        M.finish(sides)
        w = results["workloads"][wname]
        o = w["cells"][cell]["ops"][op]
        log(R.console_block(wname, w, cell, op, o["sides"], o["bound"]))


def keras_child(args):
    """Time Keras alone on the backend in KERAS_BACKEND at --threads; print KERAS_JSON."""
    backend = os.environ.get("KERAS_BACKEND", "torch")
    n = args.threads
    if backend == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch
        torch.set_num_threads(n)
    import bench_measure as M
    import bench_sides as S
    S.KerasSide.thread_options = (n,)
    out = {}
    wls = S.workloads(args.quick)
    for wname in args.workload_list:
        wl = wls[wname]
        for cell in args.cell_list:
            problem = S.make_problem(wl, cell)
            with quiet():
                side = S.KerasSide(problem)
            side.threads = lambda _n: contextlib.nullcontext()
            variants = [M.Variant(side, op, n) for op in wl.ops]
            with quiet():
                M.time_variants(variants, args.repeats, 0.0 if args.quick else 0.3, args.target,
                                0.0, prune=False)
            summary = M.summarize(variants)
            out.setdefault(wname, {})[cell] = {
                op: {"label": e["label"], "by_threads": e["by_threads"]}
                for op, sides in summary.items() for e in sides.values()}
    print("KERAS_JSON " + json.dumps(out), flush=True)
    return 0


def memory_phase(args, peers, results, notes):
    import bench_measure as M
    import bench_sides as S
    wls = S.workloads(args.quick)
    train_wls = [w for w in args.workload_list if {"train", "fit"} & set(wls[w].ops)]
    sides = ["grukit"] + [p for p in peers if p in ("pytorch", "keras")]
    sides += [f"keras:{b}" for b in keras_backends(args) if b != "torch"]
    if args.quick:   # the smoke run: grukit alone on one workload (a peer's import takes seconds)
        train_wls, sides = train_wls[:1], ["grukit"]
        notes.append("--quick: memory measured for grukit only, on one workload")
    if not train_wls:
        return
    log("Peak memory of one training step (each side in a fresh process; RSS growth over the "
        "RSS after a warm-up step):")
    script = os.path.abspath(__file__)
    for wname in train_wls:
        for cell in args.cell_list:
            row = []
            for side in sides:
                extra = {}
                if side.startswith("keras"):
                    extra["KERAS_BACKEND"] = side.partition(":")[2] or "torch"
                m = M.run_memory_child(sys.executable, script, side, cell, wname, args.quick,
                                       env=extra)
                m.setdefault("side", side.replace(":", "-"))
                m.update(workload=wname, cell=cell)
                results["memory"].append(m)
                if "error" in m:
                    notes.append(f"memory {wname} {cell} {side}: {m['error']}")
                    row.append(f"{side} failed")
                else:
                    txt = f"{m['side']} {M.fmt_bytes(m['step_peak_bytes'])}"
                    if "tracemalloc_step_peak_bytes" in m:
                        txt += f" (tracemalloc {M.fmt_bytes(m['tracemalloc_step_peak_bytes'])})"
                    row.append(txt)
            log(f"  {wname} {cell}: " + ", ".join(row))
    log("")


def write_outputs(args, results):
    import bench_report as R
    os.makedirs(args.out, exist_ok=True)
    md = R.markdown(results, results["meta"], SIDES_ORDER)
    why = R.chart(results, os.path.join(args.out, "chart.png"), SIDES_ORDER)
    if why:
        results["notes"].append(f"chart skipped: {why}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n")
    log(md)
    log("")
    for n in results["notes"]:
        log(f"note: {n}")
    log(f"Wrote {os.path.join(args.out, 'results.json')}, results.md"
        + ("" if why else ", chart.png") + f" ({results['meta']['wall_s']:.0f} s)")


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        import bench_sides as S
        side, cell, wname = args.memory_child
        side = side.partition(":")[0]
        import bench_measure as M
        with quiet():
            out = M.memory_child(side, cell, S.workloads(args.quick)[wname])
        print("MEMORY_JSON " + json.dumps(out), flush=True)
        return 0
    if args.keras_child:
        return keras_child(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
