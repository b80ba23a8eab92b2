"""The optional compiled time loops (kernels.c), built on first use and cached.

The GRU, LSTM and SimpleRNN layers run their time loop either in Python over NumPy (the reference
path, always there) or, when this module can provide them, in the C loops of ``kernels.c``: the
same math on the same buffers, one call per sequence instead of a dozen NumPy calls per step.

How the compiled path comes to be:
  * the C compiler that built Python (or ``$CC``) compiles ``kernels.c``, a Python extension
    module that needs only Python's headers, once per machine, Python and source version into the
    cache folder (``$GRUKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/grukit``,
    else ``~/.cache/grukit``); later processes load the cached library, which takes milliseconds;
  * the matrix products go to the BLAS that NumPy itself loaded (its ``cblas_sgemm`` and
    ``cblas_dgemm``), so both paths multiply with the same library and thread settings;
  * a self-check multiplies a small product both ways before the path is used.

``GRUKIT_NATIVE=0`` turns the compiled path off; ``GRUKIT_NATIVE=1`` makes a failure to build or
load it an error instead of a silent fall-back to NumPy. :func:`info` says which path runs and
why, and how long the build took.
"""
import ctypes
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import threading
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ("kernels.c", "kernels_impl.h")
# fast-math for vectorised reductions and libm calls, but not its finite-math assumption: NaNs
# must come out as they do from NumPy (kernels.c declares the vector exp/tanh itself)
_COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC",
                  "-std=gnu11", "-pthread"]
# glibc's vector exp/tanh (without it the compiler goes scalar); kernels.c's worker thread
_LINK_LIBS = ["-lmvec", "-lm", "-pthread"]
_ABI_VERSION = 12
_MODULE = "grukit_kernels"

# activation name -> the code kernels.c switches on; other activations take the NumPy path
ACTIVATIONS = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "hard_sigmoid": 4}


def activation_code(act):
    """kernels.c's code for a built-in activation, or None: a user's own Activation (a subclass
    of a built-in one included) runs its own f and df on the NumPy loop."""
    from .. import activations
    name = getattr(act, "name", None)
    builtin = activations._REGISTRY.get(name) if name in ACTIVATIONS else None
    return ACTIVATIONS[name] if builtin is not None and type(act) is type(builtin) else None

_lock = threading.Lock()
_state = {"loaded": False, "lib": None, "reason": "not loaded yet", "path": None,
          "compile_seconds": None, "load_seconds": None, "blas": None, "threads": None}
_tables = {}


class NativeUnavailable(RuntimeError):
    """GRUKIT_NATIVE=1 asked for the compiled loops and they could not be built or loaded."""


def _mode():
    v = os.environ.get("GRUKIT_NATIVE", "auto").strip().lower()
    if v in ("0", "off", "false", "no"):
        return "off"
    if v in ("1", "on", "true", "yes", "require"):
        return "require"
    return "auto"


def _cache_dir():
    d = os.environ.get("GRUKIT_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "grukit")
    return d


def _compiler():
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


def _cpu_key():
    """What the build depends on besides the sources: -march=native ties it to the CPU."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    parts.append(line.strip())
                    if len(parts) > 4:
                        break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _writable_cache():
    """The cache folder, created if need be; a private temporary one when it cannot be written."""
    for d in (_cache_dir(), os.path.join(tempfile.gettempdir(), f"grukit-{os.getuid()}")
              if hasattr(os, "getuid") else None):
        if d is None:
            continue
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise OSError(f"no writable folder for the compiled loops (tried {_cache_dir()}; set "
                  "GRUKIT_CACHE_DIR)")


def _build(cc, rebuild=False):
    """Compile kernels.c into the cache (once per source version and machine); return its path
    and the seconds spent compiling (0.0 when the cached library was there). ``rebuild``
    replaces a cached library that would not load."""
    h = hashlib.sha256()
    for name in _SOURCES:
        with open(os.path.join(_HERE, name), "rb") as f:
            h.update(f.read())
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    h.update(" ".join([cc, include, suffix] + _COMPILE_FLAGS + _LINK_LIBS).encode())
    h.update(_cpu_key().encode())
    cache = _writable_cache()
    path = os.path.join(cache, f"{_MODULE}_{h.hexdigest()[:20]}{suffix}")
    if os.path.exists(path) and not rebuild:
        return path, 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        obj, lib = os.path.join(tmp, "kernels.o"), os.path.join(tmp, "kernels.so")
        # compile and link in two steps: -ffast-math at link time would add crtfastmath.o,
        # which flushes denormals to zero for the whole process
        for cmd in ([cc, *_COMPILE_FLAGS, f"-I{include}", "-c", os.path.join(_HERE, "kernels.c"),
                     "-o", obj],
                    [cc, "-shared", obj, "-o", lib, *_LINK_LIBS]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0 and cmd[1] == "-shared" and "-lmvec" in cmd:
                # no libmvec (not glibc): link without it; exp/tanh then stay scalar
                cmd = [c for c in cmd if c != "-lmvec"]
                r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise OSError(f"{' '.join(cmd)} failed:\n{r.stderr.strip()[-2000:]}")
        os.replace(lib, path)   # atomic: another process sees the whole library or none
    return path, time.perf_counter() - t0


def _blas_candidates():
    """Shared libraries that may hold NumPy's BLAS: those loaded now, then NumPy's bundled ones."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if p.startswith("/") and ("blas" in p.lower() or "mkl" in p.lower()):
                    paths.append(p)
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in (os.path.join(root, "numpy.libs", "*blas*"),
                    os.path.join(os.path.dirname(np.__file__), ".dylibs", "*blas*")):
        paths.extend(sorted(glob.glob(pattern)))
    return list(dict.fromkeys(paths))


# (sgemm, dgemm, 64-bit integers)
_GEMM_NAMES = [("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True),
               ("cblas_sgemm64_", "cblas_dgemm64_", True),
               ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False),
               ("cblas_sgemm", "cblas_dgemm", False)]


def _find_gemm():
    for path in _blas_candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s, d, ilp64 in _GEMM_NAMES:
            fs, fd = getattr(lib, s, None), getattr(lib, d, None)
            if fs is not None and fd is not None:
                addr = ctypes.cast(fs, ctypes.c_void_p).value, ctypes.cast(fd, ctypes.c_void_p).value
                return lib, addr, ilp64, f"{os.path.basename(path)}:{s}"
    return None


def _thread_controls(lib):
    """OpenBLAS's (get_num_threads, set_num_threads), whatever its symbol prefix, or None.
    (Its set_num_threads_local is process-wide in pthreads builds, so it is of no use here.)"""
    for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", "")):
        get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get is not None and put is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            put.restype, put.argtypes = None, [ctypes.c_int]
            return get, put
    return None


# ---- running the batch in two halves ----------------------------------------------------------
# A sequence's recurrence is independent of the others', so with two cores the batch can run as
# two halves, one per thread, each with single-threaded BLAS: the per-step products are too
# small for BLAS's own threads to pay (they wait on each other every step), while the halves
# never wait for each other until the end. Used when BLAS may use two or more threads (so
# threadpoolctl's limits hold) and each half has at least MIN_HALF sequences. Both halves'
# Python runs on the caller's thread; their kernel calls are collected and then run together by
# kernels.c (run_parts), the second half on its worker thread, with no GIL or Python thread pool
# between them.
MIN_HALF = 8
_split_lock = threading.Lock()
_held = [None]   # BLAS's thread count while a split holds it at one, to give back after a fork
_CPUS = os.cpu_count() or 1   # once: the call reads sysfs (6 us), and batch_parts runs per batch


def _two_threads():
    """Whether grukit may run two threads of its own: two cores, and BLAS allowed two or more
    threads (so threadpoolctl's limits hold for grukit too)."""
    controls = _state.get("threads")
    return controls is not None and _CPUS >= 2 and controls[0]() >= 2


def step_threads():
    """2 when one sequence's steps may run on two threads (kernels.c's run_steps), on the same
    terms as the halves below; else 1."""
    if getattr(_defer, "calls", None) is not None:   # a part of a split: one thread each
        return 1
    return 2 if _two_threads() else 1


def batch_parts(B):
    """[(0, B)], or the two halves [(0, h), (h, B)] when splitting pays."""
    if B < 2 * MIN_HALF or not _two_threads():
        return [(0, B)]
    h = B // 2
    return [(0, h), (h, B)]


_defer = threading.local()   # .calls: a list that kernel calls go to instead of running


def run_parts(calls):
    """Run the calls (one per part of the batch) and return their results in order: one call
    here; two at once otherwise. Each call runs here, in Python, with its kernel calls collected
    instead of run (every call must leave its results to its kernels, which is what the
    recurrent layers' parts do); then the module's ``run_parts`` runs the two parts' kernels
    together, the second part on a worker thread, without the GIL, with BLAS held to one thread
    meanwhile (when grukit can set BLAS's threads; a thread count set elsewhere meanwhile is
    undone)."""
    if len(calls) == 1:
        return [calls[0]()]
    if len(calls) != 2:
        raise ValueError(f"run_parts takes one or two parts, got {len(calls)}")
    if getattr(_defer, "calls", None) is not None:
        raise RuntimeError("run_parts: a part may not split again (its calls are being "
                           "collected)")
    module = library()
    results, queued = [], []
    try:
        for call in calls:
            _defer.calls = []
            results.append(call())
            queued.append(tuple(_defer.calls))
    finally:
        _defer.calls = None
    one_blas_thread(module.run_parts, tuple(queued))
    return results


def one_blas_thread(fn, *args):
    """fn(*args), a kernel call that runs on two threads of its own, with BLAS held to one thread
    meanwhile (when grukit can set BLAS's threads; a thread count set elsewhere meanwhile is
    undone): BLAS's threads would wait on each other at every step, and those that spin after a
    call take the core that the second thread needs."""
    controls = _state.get("threads")
    with _split_lock:   # one at a time: BLAS's thread count is process-wide
        before = controls[0]() if controls else None
        if controls:
            controls[1](1)
            _held[0] = before
        try:
            return fn(*args)
        finally:
            if controls:
                _held[0] = None
                controls[1](before)


def _after_fork_in_child():
    """A child forked while a split held the lock (and BLAS at one thread) starts afresh, with
    the BLAS thread count the split would have given back."""
    global _split_lock
    _split_lock = threading.Lock()
    controls, before = _state.get("threads"), _held[0]
    _held[0] = None
    if controls and before is not None:
        controls[1](before)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Loops:
    """The module's kernels for one dtype: ``loops.gru_forward(ints, arrays)``, with the integer
    arguments and the buffers (arrays or None) in the order kernels_impl.h gives. The module
    checks that every buffer is C-contiguous and of this dtype (masks: bool or uint8)."""

    def __init__(self, module, dtype):
        self.dtype = np.dtype(dtype)
        f64, run = self.dtype == np.float64, module.run
        for index, name in enumerate(module.kernels()):
            setattr(self, name, self._entry(run, index, f64))

    @staticmethod
    def _entry(run, index, f64):
        def call(ints, arrays):
            queue = getattr(_defer, "calls", None)
            if queue is not None:   # collected by run_parts
                queue.append((index, f64, ints, arrays))
            else:
                run(index, f64, ints, arrays)
        return call


def _self_check(module):
    """One GRU step with linear activations in both types, against NumPy: one sequence (the
    written-out products), nine (the products go through BLAS, so a wrong integer width would
    show here) and seventeen (the tiled products where the build has them)."""
    for dt in (np.float32, np.float64):
        loops = Loops(module, dt)
        for B, D in ((1, 1), (9, 3), (17, 2)):
            _check_gru_step(loops, np.dtype(dt), B, D)


def _check_gru_step(loops, dt, B, D):
    u, G = 2, 6
    U = np.arange(u * G, dtype=dt).reshape(u, G) / 10
    x = np.linspace(-1, 1, B * D).astype(dt).reshape(B, D)          # T = 1: (T*B, D)
    W = np.linspace(-0.5, 0.5, D * G).astype(dt).reshape(D, G)
    h0 = np.linspace(-0.3, 0.5, u * B).reshape(u, B)
    if B == 1:   # time-major buffers (see Cell.span_shape)
        S, xp = np.zeros((2, u, 1), dt), np.empty((1, G), dt)
        S[0] = h0
    else:
        S, xp = np.zeros((u, 2, B), dt), np.empty((G, B), dt)
        S[:, 0] = h0
    a, scratch = np.empty((G, B), dt), np.empty((G, B), dt)
    loops.gru_forward((1, B, u, 1, 0, 0, D, 1, 0),
                      (U, None, xp, S, a, None, scratch, None, None, None, x, W, None))
    got = S[1] if B == 1 else S[:, 1]
    h = h0.astype(np.float64)
    pre = U.astype(np.float64).T @ h
    xw = (x.astype(np.float64) @ W.astype(np.float64)).T
    z, r = xw[:2] + pre[:2], xw[2:4] + pre[2:4]
    hh = xw[4:] + r * pre[4:]
    want = hh + z * (h - hh)
    if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        raise OSError(f"self-check failed in {dt} with {B} sequence(s): got {got.ravel()}, "
                      f"expected {want.ravel()}")


def _import(path):
    loader = importlib.machinery.ExtensionFileLoader(_MODULE, path)
    spec = importlib.util.spec_from_file_location(_MODULE, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    if module.abi_version() != _ABI_VERSION:
        raise ImportError(f"{path} has ABI {module.abi_version()}, expected {_ABI_VERSION}")
    return module


def _load():
    mode = _mode()
    if mode == "off":
        _state["reason"] = "turned off by GRUKIT_NATIVE=0"
        return None
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler found (set $CC, or install gcc or clang)")
    found = _find_gemm()
    if found is None:
        raise OSError("NumPy's BLAS (cblas_sgemm/cblas_dgemm) was not found")
    blas_lib, (sgemm, dgemm), ilp64, blas_name = found
    path, seconds = _build(cc)
    t0 = time.perf_counter()
    try:
        module = _import(path)
    except (ImportError, OSError):
        if seconds:   # built just now: nothing to retry
            raise
        path, seconds = _build(cc, rebuild=True)   # a damaged cached file: build it again
        t0 = time.perf_counter()
        module = _import(path)
    module.set_blas(sgemm, dgemm, ilp64)
    _self_check(module)
    _state.update(lib=module, path=path, compile_seconds=seconds, blas=blas_name,
                  load_seconds=time.perf_counter() - t0, blas_lib=blas_lib,
                  threads=_thread_controls(blas_lib),
                  reason=f"compiled loops loaded from {path}")
    return module


def library():
    """The loaded library, building it on first use; None when the NumPy path is to be used."""
    if _state["loaded"]:
        return _state["lib"]
    with _lock:
        if not _state["loaded"]:
            try:
                _load()
            except Exception as e:   # any failure means: use the NumPy path, and say why
                _state["lib"] = None
                _state["reason"] = f"NumPy path: {type(e).__name__}: {e}"
                if _mode() == "require":
                    _state["loaded"] = True
                    raise NativeUnavailable(f"GRUKIT_NATIVE=1 but the compiled loops are "
                                            f"unavailable: {e}") from e
            _state["loaded"] = True
    if _state["lib"] is None and _mode() == "require":
        raise NativeUnavailable(f"GRUKIT_NATIVE=1 but {_state['reason']}")
    return _state["lib"]


def loops(dtype, build=True):
    """The compiled loops for float32 or float64 arrays, or None (other dtypes, or unavailable;
    with ``build=False``, also when nothing has loaded them yet)."""
    if not build and not _state["loaded"]:
        return None
    table = _tables.get(dtype)
    if table is not None:
        return table
    dt = np.dtype(dtype)
    if dt not in _tables:
        module = library() if dt in (np.float32, np.float64) else None
        _tables[dt] = Loops(module, dt) if module is not None else None
    return _tables[dt]


def enabled():
    """Whether the compiled loops run (building them if this is the first call)."""
    return library() is not None


def info():
    """Which path the recurrent layers take, and the build's cost: a dict with ``enabled``,
    ``reason``, ``path`` (the cached library), ``compile_seconds`` (0.0 when it came from the
    cache), ``load_seconds`` and ``blas`` (the GEMM it calls)."""
    library()
    return {"enabled": _state["lib"] is not None, "reason": _state["reason"],
            "path": _state["path"], "compile_seconds": _state["compile_seconds"],
            "load_seconds": _state["load_seconds"], "blas": _state["blas"]}


def _reset():
    """Forget the loaded state, so that the next call reloads (tests use this)."""
    with _lock:
        _state.update(loaded=False, lib=None, reason="not loaded yet", path=None,
                      compile_seconds=None, load_seconds=None, blas=None, threads=None)
        _tables.clear()
