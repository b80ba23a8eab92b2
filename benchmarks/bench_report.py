"""Reporting: the machine's description, the per-workload console lines, the Markdown table for
the README, and the chart of ratios."""
import os
import platform
import re

from bench_measure import fmt_bytes, fmt_time

CELL_NAMES = {"gru": "GRU", "lstm": "LSTM"}


def machine(controller=None):
    """CPU model, cores, memory, library versions, and the BLAS each library runs on."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        text = open("/proc/cpuinfo").read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu"] = m.group(1).strip() if m else platform.processor() or "unknown"
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if flags:
            have = set(flags.group(1).split())
            info["simd"] = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                            if f in have]
    except OSError:
        info["cpu"] = platform.processor() or "unknown"
    info["logical_cores"] = os.cpu_count()
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        info["memory_gib"] = round(kb / 2 ** 20, 1)
    except (OSError, AttributeError):
        pass
    import sys

    import numpy
    from importlib import metadata
    versions = {"numpy": numpy.__version__}
    for mod in ("grukit", "torch", "keras", "tensorflow", "onnxruntime", "onnx", "threadpoolctl",
                "matplotlib"):
        try:   # read from the installed metadata: importing Keras alone takes seconds
            versions[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    try:
        from grukit import _native
        info["grukit_loops"] = _native.info()
    except ImportError:
        pass
    blas = []
    if controller is not None:
        for lib in controller.info():
            if lib.get("user_api") == "blas":
                blas.append({k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                                     "threading_layer", "filepath")})
    info["numpy_blas"] = blas
    if not blas:
        try:
            cfg = numpy.show_config(mode="dicts")
            b = cfg["Build Dependencies"]["blas"]
            info["numpy_blas"] = [{"internal_api": b.get("name"), "version": b.get("version")}]
        except Exception:  # noqa: BLE001
            pass
    if "torch" in sys.modules:
        import torch
        cfg = torch.__config__.show()
        m = re.search(r"BLAS_INFO=(\w+)", cfg)
        info["torch_blas"] = m.group(1) if m else "?"
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    return info


def machine_line(info, peak):
    v = info["versions"]
    parts = [f"{info['cpu']}, {info['logical_cores']} logical cores"
             + (f", {info['memory_gib']} GiB" if "memory_gib" in info else "")
             + (f" ({'/'.join(info['simd'])})" if info.get("simd") else ""),
             f"Python {info['python']}"]
    blas = info.get("numpy_blas") or [{}]
    b = blas[0]
    desc = " ".join(str(x) for x in (b.get("internal_api"), b.get("version"),
                                     b.get("architecture"), b.get("threading_layer")) if x)
    parts.append(f"NumPy {v['numpy']} ({desc or 'BLAS unknown'})")
    if "torch" in v:
        parts.append(f"PyTorch {v['torch']} (BLAS {info.get('torch_blas', '?')})")
    if "keras" in v:
        parts.append(f"Keras {v['keras']}")
    if "tensorflow" in v:
        parts.append(f"TensorFlow {v['tensorflow']}")
    if "onnxruntime" in v:
        parts.append(f"ONNX Runtime {v['onnxruntime']}")
    loops = info.get("grukit_loops") or {}
    if loops.get("enabled"):
        how = (f"built in {loops['compile_seconds']:.1f} s this run" if loops["compile_seconds"]
               else "loaded from the build cache")
        parts.append(f"grukit {v['grukit']} (compiled loops, {how}; GEMM {loops['blas']})")
    else:
        parts.append(f"grukit {v['grukit']} (NumPy loop: {loops.get('reason', '?')})")
    if peak:
        parts.append("NumPy float32 GEMM 1024³: " + ", ".join(
            f"{g:.0f} GFLOP/s at {t} thread{'s' * (t != '1')}" for t, g in sorted(peak.items())))
    return "; ".join(parts)


def thr(n):
    """A thread count as shown: 0 stands for the BLAS's own default (no threadpoolctl)."""
    return f"{n}t" if n else "BLAS default"


def shape_text(wl):
    s = f"T={wl['T']} B={wl['B']} D={wl['D']} H={wl['H']}"
    return s + (f", {wl['epochs']} epochs" if wl.get("epochs") else "")


def speed_phrase(peer_over_grukit, label):
    if peer_over_grukit >= 1:
        return f"grukit {peer_over_grukit:.2f}x faster"
    return f"{label} {1 / peer_over_grukit:.2f}x faster"


def console_block(wname, wl, cell, op, sides, bound):
    """The lines printed as soon as one workload/cell/op is measured."""
    lines = [f"{wname} {CELL_NAMES[cell]} {op}  ({shape_text(wl)})"]
    lines.append(f"  {'side':<18}{'threads':>7}{'median':>11}{'IQR':>21}{'grukit/peer':>13}"
                 "   ")
    for name, e in sides.items():
        iqr = f"{fmt_time(e['q1_s'])}-{fmt_time(e['q3_s'])}"
        ratio, phrase = "", ""
        if "grukit_over_peer" in e:
            ratio = f"{e['grukit_over_peer']:.3f}"
            phrase = speed_phrase(e["peer_over_grukit"], e["label"])
        dropped = [thr(int(t)) for t, d in e["by_threads"].items() if d["dropped"]]
        other = [f"{thr(int(t))} {fmt_time(d['median_s'])}" for t, d in e["by_threads"].items()
                 if int(t) != e["threads"] and d["median_s"] is not None]
        extra = ("  [" + ", ".join(other) + "]") if other else ""
        extra += f"  [dropped {', '.join(dropped)}]" if dropped else ""
        lines.append(f"  {e['label']:<18}{thr(e['threads']):>7}{fmt_time(e['median_s']):>11}"
                     f"{iqr:>21}{ratio:>13}   {phrase}{extra}")
    if bound and "grukit" in sides:
        g = sides["grukit"]["median_s"]
        lines.append(f"  matmul lower bound: {bound['flops'] / 1e6:,.1f} MFLOP in NumPy at these "
                     f"shapes = {fmt_time(bound['bound_s'])} ({bound['gflops_at_these_shapes']:.1f}"
                     f" GFLOP/s); grukit takes {g / bound['bound_s']:.1f}x the bound")
    return "\n".join(lines)


def markdown(results, meta, sides_order):
    """The README table: one row per workload, cell and operation."""
    labels = {}
    for w in results["workloads"].values():
        for c in w["cells"].values():
            for op in c["ops"].values():
                for name, e in op["sides"].items():
                    labels.setdefault(name, e["label"])
    peers = [s for s in sides_order if s in labels and s != "grukit"]
    peers += [s for s in labels if s not in peers and s != "grukit"]
    out = [f"**Machine:** {meta['machine_line']}.", "",
           f"Median of {meta['repeats']} interleaved repeats after warm-up, each side at its faster "
           "thread setting (1t / 2t). A peer's cell gives its time and which side is faster by how "
           "much (peer time ÷ grukit time). *Bound*: the workload's matrix multiplies alone, timed "
           "in NumPy at their own shapes; *÷ bound*: grukit's time over it.", ""]
    head = ["workload", "cell", "op", "grukit"] + [labels[p] for p in peers] + ["bound", "÷ bound"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|")
    for wname, w in results["workloads"].items():
        for cell, c in w["cells"].items():
            for op, o in c["ops"].items():
                s = o["sides"]
                g = s.get("grukit")
                row = [f"{wname} ({shape_text(w)})", CELL_NAMES[cell], op,
                       f"{fmt_time(g['median_s'])} ({thr(g['threads'])})" if g else "–"]
                for p in peers:
                    e = s.get(p)
                    if e is None:
                        row.append("–")
                    elif g is None:
                        row.append(f"{fmt_time(e['median_s'])} ({thr(e['threads'])})")
                    else:
                        row.append(f"{fmt_time(e['median_s'])} ({thr(e['threads'])}), "
                                   f"{speed_phrase(e['peer_over_grukit'], e['label'])}")
                b = o.get("bound")
                row += [fmt_time(b["bound_s"]) if b else "–",
                        f"{g['median_s'] / b['bound_s']:.1f}x" if (b and g) else "–"]
                out.append("| " + " | ".join(row) + " |")
    mem = results.get("memory") or []
    if mem:
        out += ["", "Peak memory of one training step (RSS growth over the RSS after a warm-up "
                "step, each side in a fresh process; for grukit plus the buffers it keeps between "
                "steps for reuse, and its tracemalloc figure, plus those buffers, in brackets):",
                ""]
        mem_sides = [s for s in ["grukit"] + peers if any(m.get("side") == s for m in mem)]
        out.append("| workload | cell | " + " | ".join(labels.get(s, s) for s in mem_sides) + " |")
        out.append("|---|---|" + "---:|" * len(mem_sides))
        keys = []
        for m in mem:
            k = (m["workload"], m["cell"])
            if k not in keys:
                keys.append(k)
        for wname, cell in keys:
            row = [wname, CELL_NAMES[cell]]
            for sname in mem_sides:
                m = next((m for m in mem if (m["workload"], m["cell"], m.get("side")) ==
                          (wname, cell, sname)), None)
                if m is None or "error" in m:
                    row.append("–")
                    continue
                held = m.get("held_bytes", 0)
                txt = fmt_bytes(m["step_peak_bytes"] + held)
                if "tracemalloc_step_peak_bytes" in m:
                    txt += f" [{fmt_bytes(m['tracemalloc_step_peak_bytes'] + held)}]"
                row.append(txt)
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def chart(results, path, sides_order):
    """Bars of peer time ÷ grukit time per workload/cell/op (log scale; above 1: grukit faster),
    and grukit's time as a multiple of the matmul bound. Returns None, or why it was skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    groups, bound_x = [], []
    for wname, w in results["workloads"].items():
        for cell, c in w["cells"].items():
            for op, o in c["ops"].items():
                groups.append((f"{wname}\n{CELL_NAMES[cell]} {op}", o))
    peers = []
    for _, o in groups:
        for name in o["sides"]:
            if name != "grukit" and name not in peers:
                peers.append(name)
    peers.sort(key=lambda s: sides_order.index(s) if s in sides_order else len(sides_order))
    if not groups:
        return "nothing to plot"
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(groups) + 2), 8),
                                 gridspec_kw={"height_ratios": [3, 1.4]}, constrained_layout=True)
    width = 0.8 / max(1, len(peers))
    all_y = []
    for i, p in enumerate(peers):
        xs, ys, label = [], [], p
        for j, (_, o) in enumerate(groups):
            e = o["sides"].get(p)
            if e and "peer_over_grukit" in e:
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(e["peer_over_grukit"])
                label = e["label"]
        # bars grow from 1: up where grukit is faster, down where the peer is
        ax.bar(xs, [y - 1 for y in ys], width, bottom=1, label=label)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.2g}", (x, y), ha="center", va="bottom" if y >= 1 else "top",
                        fontsize=7, xytext=(0, 2 if y >= 1 else -2), textcoords="offset points")
        all_y.extend(ys)
    ax.axhline(1, color="black", lw=0.8)
    ax.set_yscale("log")
    if all_y:
        ax.set_ylim(min(min(all_y), 1) / 1.6, max(max(all_y), 1) * 1.6)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=8)
    ax.set_ylabel("peer time ÷ grukit time\n(above 1: grukit faster,\nbelow 1: the peer is)")
    ax.set_title("grukit against its peers, float32, median of interleaved repeats")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    for j, (_, o) in enumerate(groups):
        g, b = o["sides"].get("grukit"), o.get("bound")
        if g and b:
            bound_x.append((j, g["median_s"] / b["bound_s"]))
    if bound_x:
        bx.bar([j for j, _ in bound_x], [v - 1 for _, v in bound_x], 0.5, bottom=1,
               color="tab:gray")
        bx.set_ylim(1, max(v for _, v in bound_x) * 1.8)
        for j, v in bound_x:
            bx.annotate(f"{v:.1f}x", (j, v), ha="center", va="bottom", fontsize=7)
    bx.set_yscale("log")
    bx.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=8)
    bx.set_ylabel("grukit ÷ matmul bound")
    bx.grid(axis="y", which="both", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
