"""The optional compiled path: each cell's elementwise step math as one fused loop (numba).

With numba installed (``pip install "grukit[fast]"``) a step is the recurrent matmul (NumPy/BLAS)
plus ONE compiled pass over the gates, instead of a dozen NumPy calls; without it, the cells use
their NumPy code. Both paths compute the same equations in the same order (the cells' docstrings);
tests run every cell both ways and compare. ``grukit.config.set_kernels("numpy")`` turns this path
off. Kernels compile on first use and are cached on disk (``cache=True``), so the compile time is
paid once per machine, not per run: ``python -m grukit.fused`` compiles them all and reports it.

Layout: every array is a step's block in the loop's feature-major layout, (rows, B), gates in
blocks of ``u`` rows. Activations are passed as codes (see ``CODES``).
"""
import math

import numpy as np

try:
    import numba
except ImportError:        # the NumPy path serves
    numba = None

AVAILABLE = numba is not None
CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "hard_sigmoid": 3, "relu": 4, "elu": 5, "selu": 6,
         "softplus": 7, "softsign": 8}
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _jit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if AVAILABLE else fn


@_jit
def act(code, x):
    """f(x) for an activation code (the formulas of grukit.activations)."""
    if code == 1:
        return math.tanh(x)
    if code == 2:
        return 1.0 / (1.0 + math.exp(-max(x, -87.0)))
    if code == 3:
        return min(max(x / 6.0 + 0.5, 0.0), 1.0)
    if code == 4:
        return max(x, 0.0)
    if code == 5:
        return x if x > 0 else math.expm1(x)
    if code == 6:
        return _SELU_SCALE * (x if x > 0 else _SELU_ALPHA * math.expm1(x))
    if code == 7:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    if code == 8:
        return x / (1.0 + abs(x))
    return x


@_jit
def dact(code, y):
    """f'(x) written through y = f(x)."""
    if code == 1:
        return 1.0 - y * y
    if code == 2:
        return y * (1.0 - y)
    if code == 3:
        return 1.0 / 6.0 if 0.0 < y < 1.0 else 0.0
    if code == 4:
        return 1.0 if y > 0 else 0.0
    if code == 5:
        return 1.0 if y > 0 else y + 1.0
    if code == 6:
        return _SELU_SCALE if y > 0 else y + _SELU_SCALE * _SELU_ALPHA
    if code == 7:
        return -math.expm1(-y)
    if code == 8:
        return (1.0 - abs(y)) * (1.0 - abs(y))
    return 1.0


# ---- GRU ---------------------------------------------------------------------------------------
@_jit
def gru_gates(fc, rc, x, hu, h, a, h_new, reset_after):
    """z, r from x + hu; with reset_after also h~ = f(x_h + r * hu_h) and the new state.
    Without reset_after only z and r are made here (h~ needs (r * h) Uh first)."""
    u, B = h.shape
    for j in range(u):
        for b in range(B):
            z = act(rc, x[j, b] + hu[j, b])
            r = act(rc, x[u + j, b] + hu[u + j, b])
            a[j, b] = z
            a[u + j, b] = r
            if reset_after:
                hh = act(fc, r * hu[2 * u + j, b] + x[2 * u + j, b])
                a[2 * u + j, b] = hh
                h_new[j, b] = (h[j, b] - hh) * z + hh


@_jit
def gru_candidate(fc, x, rhu, h, a, h_new):
    """reset_after=False: h~ = f(x_h + (r * h) Uh) and the new state."""
    u, B = h.shape
    for j in range(u):
        for b in range(B):
            hh = act(fc, rhu[j, b] + x[2 * u + j, b])
            a[2 * u + j, b] = hh
            h_new[j, b] = (h[j, b] - hh) * a[j, b] + hh


@_jit
def gru_backward(fc, rc, dh, h, a, hu, dxp, dhu, reset_after):
    """Gate gradients of one step. Leaves dh * z in dh; fills dxp (and dhu with reset_after);
    without reset_after dr is finished by gru_reset_backward."""
    u, B = h.shape
    for j in range(u):
        for b in range(B):
            z, r, hh = a[j, b], a[u + j, b], a[2 * u + j, b]
            g = dh[j, b]
            dc = g * (1.0 - z) * dact(fc, hh)
            dz = g * (h[j, b] - hh) * dact(rc, z)
            dxp[j, b] = dz
            dxp[2 * u + j, b] = dc
            if reset_after:
                dr = dc * hu[2 * u + j, b] * dact(rc, r)
                dxp[u + j, b] = dr
                dhu[j, b] = dz
                dhu[u + j, b] = dr
                dhu[2 * u + j, b] = dc * r
            dh[j, b] = g * z


@_jit
def gru_reset_backward(rc, drh, h_in, a, dxp):
    """reset_after=False: dr from dL/d(r * h); leaves dL/d(h_in) through r * h in drh."""
    u, B = h_in.shape
    for j in range(u):
        for b in range(B):
            r = a[u + j, b]
            dxp[u + j, b] = drh[j, b] * h_in[j, b] * dact(rc, r)
            drh[j, b] = drh[j, b] * r


# ---- LSTM --------------------------------------------------------------------------------------
@_jit
def lstm_step(fc, rc, x, a, c, c_new, tc, h_new):
    """a holds h U on entry; leaves the gates i, f, g, o in it and the new states."""
    u, B = c.shape
    for j in range(u):
        for b in range(B):
            i = act(rc, a[j, b] + x[j, b])
            f = act(rc, a[u + j, b] + x[u + j, b])
            g = act(fc, a[2 * u + j, b] + x[2 * u + j, b])
            o = act(rc, a[3 * u + j, b] + x[3 * u + j, b])
            a[j, b], a[u + j, b], a[2 * u + j, b], a[3 * u + j, b] = i, f, g, o
            cn = f * c[j, b] + i * g
            c_new[j, b] = cn
            t = act(fc, cn)
            tc[j, b] = t
            h_new[j, b] = o * t


@_jit
def lstm_backward(fc, rc, dh, dc, c, a, tc, dxp):
    """Gate gradients of one step; leaves dL/dc_{t-1} in dc."""
    u, B = c.shape
    for j in range(u):
        for b in range(B):
            i, f, g, o = a[j, b], a[u + j, b], a[2 * u + j, b], a[3 * u + j, b]
            t = tc[j, b]
            dxp[3 * u + j, b] = dh[j, b] * t * dact(rc, o)
            d = dc[j, b] + dh[j, b] * o * dact(fc, t)
            dxp[j, b] = d * g * dact(rc, i)
            dxp[2 * u + j, b] = d * i * dact(fc, g)
            dxp[u + j, b] = d * c[j, b] * dact(rc, f)
            dc[j, b] = d * f


def warm_up():
    """Compile every kernel for float32 and float64; returns the seconds it took."""
    import time
    t0 = time.perf_counter()
    for dt in (np.float32, np.float64):
        u, B = 2, 3
        x3, a3, z3 = (np.ones((3 * u, B), dt) for _ in range(3))
        h, hn, d = (np.ones((u, B), dt) for _ in range(3))
        for ra in (True, False):
            gru_gates(1, 2, x3, a3, h, z3, hn, ra)
            gru_backward(1, 2, d, h, a3, a3, x3.copy(), z3.copy(), ra)
        gru_candidate(1, x3, h, h, a3, hn)
        gru_reset_backward(2, d, h, a3, x3)
        x4, a4, d4 = (np.ones((4 * u, B), dt) for _ in range(3))
        lstm_step(1, 2, x4, a4, h, hn, d.copy(), hn.copy())
        lstm_backward(1, 2, d, d.copy(), h, a4, h, d4)
    return time.perf_counter() - t0


if __name__ == "__main__":
    if not AVAILABLE:
        print("numba is not installed: grukit uses its NumPy path (pip install 'grukit[fast]').")
    else:
        print(f"compiled (or loaded from the cache) in {warm_up():.2f} s")
