/* grukit's compiled time loops: the GRU, LSTM and SimpleRNN recurrences forward and back through
 * time, in float32 and float64, as the Python extension module grukit_kernels.
 *
 * The math is that of layers/gru.py, layers/lstm.py and layers/simple_rnn.py. What this file adds
 * is one call per sequence instead of a dozen NumPy calls per step, elementwise loops the compiler
 * vectorises (exp and tanh included, through the C library's vector math), and weight gradients
 * as one matrix product over all steps. Matrix products go to the BLAS that NumPy itself uses
 * (grukit/_native/__init__.py finds its cblas_sgemm/cblas_dgemm and hands them to set_blas()),
 * except where kernels_impl.h's own tiles (AVX-512) were measured faster: the step products and
 * the weight gradients.
 *
 * kernels_impl.h holds the loops; it is included once per floating-point type. From Python:
 *   run(kernel_index, is_float64, ints, arrays)   arrays: C-contiguous buffers of the type (masks
 *                                                  bool or uint8), or None where optional
 *   run_parts((calls, calls))                      two parts of a batch at once, each a tuple of
 *                                                  (kernel_index, is_float64, ints, arrays)
 *   kernels()                                      the kernel names, in index order
 *   set_blas(sgemm_address, dgemm_address, ilp64) and abi_version()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

/* Vector exp and tanh. glibc's libmvec has them, but math.h declares them only under
 * -ffast-math's finite-math assumption, which would let the compiler drop NaNs (a diverged
 * model must show NaN, as the NumPy loop does); this file is built with -fno-finite-math-only
 * and declares them itself. */
#if defined(__GLIBC__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__FAST_MATH__)
#define VECTOR_MATH __attribute__((__simd__("notinbranch")))
float expf(float) VECTOR_MATH;
double exp(double) VECTOR_MATH;
#if __GLIBC_PREREQ(2, 35)
float tanhf(float) VECTOR_MATH;
double tanh(double) VECTOR_MATH;
#endif
#endif

/* The step products of kernels_impl.h: the vector width; the rows of a tile, each one
 * accumulator vector (half of AVX-512's 32 vector registers); and the bytes of the right
 * operand's rows that one pass over a tile reads (they must stay in L1). The tiles run with
 * AVX-512 only, where they were measured against the BLAS (about 105 GFLOP/s on one core against
 * its 72-111); elsewhere the step products go to gemm(). */
#if defined(__AVX512F__)
#define STEP_TILES 1
#else
#define STEP_TILES 0
#endif
#define VBYTES 64
#define TILE_M 16
#define KC_BYTES 16384

enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3, ACT_HARD_SIGMOID = 4 };

/* float32 sigmoid and tanh, inline on AVX-512 (VMATH_F32): as accurate as the C library's vector
 * functions (tests/test_native.py, through the "activate" kernel, over every 97th float32:
 * tanh within 2 ulp of float64 and the sigmoid within 4; measured 1.33 and 2.36 ulp here,
 * glibc's 1.37 and 3.43), at fewer instructions, and, being inline, without a call that spills
 * every vector register of the loop around it. float64 keeps libm.
 *   exp(x):     x clamped to [-104, 89] (beyond, exp is 0 or inf in float32 already; the clamp
 *               keeps n below where n ln2 would lose bits), n = round(x log2 e),
 *               r = x - n ln2 (ln2 in two parts, the first exact times any n here), |r| <= ln2/2,
 *               exp(x) = 2^n e^r, e^r by its Taylor polynomial to r^7 (remainder under 2^-27)
 *   sigmoid(x): 1 / (1 + exp(-x))
 *   tanh(x):    s |x| (1 + x^2 P(x^2)) for |x| < 0.625, s (1 - 2 / (exp(2|x|) + 1)) above,
 *               s the sign of x; P of degree 4, a least-squares fit of (tanh x - x) / x^3 on
 *               [0, 0.625] weighted for relative error (under 0.9 ulp there)
 * NaN passes through both: min and max return their second operand when either is NaN. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define VMATH_F32 1
static inline __attribute__((always_inline)) __m512 vexp_f32(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __attribute__((always_inline)) __m512 vsigmoid_f32(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, vexp_f32(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

static inline __attribute__((always_inline)) __m512 vtanh_f32(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f), a = _mm512_abs_ps(x), s = _mm512_mul_ps(x, x);
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
    __m512 p = _mm512_set1_ps(-5.79810003e-3f), big, t;
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(2.07202807e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-5.37637994e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.33317187e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-3.33332926e-1f));
    big = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f),
                                           _mm512_add_ps(one, vexp_f32(_mm512_add_ps(a, a)))));
    t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ), big,
                             _mm512_fmadd_ps(_mm512_mul_ps(a, s), p, a));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
}

/* one vector of an activation (the codes below) */
static inline __attribute__((always_inline)) __m512 vact_f32(int code, __m512 v)
{
    switch (code) {
    case ACT_TANH: return vtanh_f32(v);
    case ACT_SIGMOID: return vsigmoid_f32(v);
    case ACT_RELU: return _mm512_max_ps(_mm512_setzero_ps(), v);
    case ACT_HARD_SIGMOID:
        v = _mm512_fmadd_ps(v, _mm512_set1_ps(1.0f / 6), _mm512_set1_ps(0.5f));
        return _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(_mm512_setzero_ps(), v));
    default: return v;
    }
}

/* the lanes of a vector that hold the first n (> 0) of what is left */
static inline __mmask16 vmask_f32(int64_t n) { return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1); }

/* y = f(y) in place, n values, every one through the same vector code (the last ones masked) */
static inline __attribute__((always_inline)) void vact_all_f32(int code, float *y, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = vmask_f32(n - i);
        _mm512_mask_storeu_ps(y + i, m, vact_f32(code, _mm512_maskz_loadu_ps(m, y + i)));
    }
}

/* dst (16 x 16, row stride ldd) = the transpose of src (16 x 16, row stride lds), in registers:
 * interleaving 32-bit, then 64-bit values of row pairs, then 128-bit lanes twice */
static inline __attribute__((always_inline)) void
transpose16_f32(const float *src, int64_t lds, float *dst, int64_t ldd)
{
    __m512 r[16], t[16];
    int i;
    for (i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]),
                      c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (i = 0; i < 16; i += 8) {
        int j;
        for (j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    }
    for (i = 0; i < 8; i++) {
        _mm512_storeu_ps(dst + i * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
        _mm512_storeu_ps(dst + (i + 8) * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
    }
}

/* An LSTM step's cells, float32, in one pass: a holds the four gates' values before their
 * activations (i, f, g, o; gate k at a + k n), row j of the units at a + j cols, plus, where x
 * is not NULL, x's (gate k's row j at x + k gk + j lg: the step's slot of the projection);
 * c and the new c and h at row stride ls. tc = f(c_new), h = o f(c_new). gates, where not
 * NULL, gets the activated gates (for the backward pass), laid out as x. With one sequence,
 * rows = 1 and cols = the units: a unit's values are contiguous in every buffer then. */
static inline __attribute__((always_inline)) __m512 row_ld_f32(const float *p, int64_t next,
                                                               __mmask16 m, __mmask16 m2)
{   /* the lanes m of a row at p; and, where m2, the next row (next values on) in lanes 8.. */
    const __m512 v = _mm512_maskz_loadu_ps(m, p);
    return m2 ? _mm512_mask_loadu_ps(v, m2, p + next - 8) : v;
}

static inline __attribute__((always_inline)) void row_st_f32(float *p, int64_t next, __mmask16 m,
                                                            __mmask16 m2, __m512 v)
{
    _mm512_mask_storeu_ps(p, m, v);
    if (m2) _mm512_mask_storeu_ps(p + next - 8, m2, v);
}

static inline __attribute__((always_inline)) __m512 gate_in_f32(__mmask16 m, __mmask16 m2,
                                                               const float *p, int64_t lp,
                                                               const float *x, int64_t lx)
{
    const __m512 v = row_ld_f32(p, lp, m, m2);
    return x ? _mm512_add_ps(v, row_ld_f32(x, lx, m, m2)) : v;
}

/* Rows of 8 values or fewer go two to a vector (lanes 0.. and 8..): the activations cost the
 * same for a full vector as for a few lanes. */
static inline __attribute__((always_inline)) void
lstm_cells_rows_f32(const int step, const float *a, int64_t n, const float *x, const float *c,
                    float *c_new, float *h_new, float *tc, int64_t ls, int64_t rows,
                    int64_t cols, float *gates, int64_t gk, int64_t lg, int ract, int act)
{
    int64_t j, b;
    for (j = 0; j < rows; j += step)
        for (b = 0; b < cols; b += 16) {
            const __mmask16 m = vmask_f32(cols - b),
                            m2 = step == 2 && j + 1 < rows ? (__mmask16)(m << 8) : 0;
            const float *p = a + j * cols + b, *xj = x ? x + j * lg + b : 0;
            const int64_t q = j * ls + b;
            const __m512 vi = vact_f32(ract, gate_in_f32(m, m2, p, cols, xj, lg)),
                         vf = vact_f32(ract, gate_in_f32(m, m2, p + n, cols, xj ? xj + gk : 0,
                                                         lg)),
                         vg = vact_f32(act, gate_in_f32(m, m2, p + 2 * n, cols,
                                                        xj ? xj + 2 * gk : 0, lg)),
                         vo = vact_f32(ract, gate_in_f32(m, m2, p + 3 * n, cols,
                                                         xj ? xj + 3 * gk : 0, lg)),
                         vc = _mm512_fmadd_ps(vf, row_ld_f32(c + q, ls, m, m2),
                                              _mm512_mul_ps(vi, vg)),
                         vt = vact_f32(act, vc);
            row_st_f32(c_new + q, ls, m, m2, vc);
            row_st_f32(tc + j * cols + b, cols, m, m2, vt);
            row_st_f32(h_new + q, ls, m, m2, _mm512_mul_ps(vo, vt));
            if (gates) {
                float *o = gates + j * lg + b;
                row_st_f32(o, lg, m, m2, vi);
                row_st_f32(o + gk, lg, m, m2, vf);
                row_st_f32(o + 2 * gk, lg, m, m2, vg);
                row_st_f32(o + 3 * gk, lg, m, m2, vo);
            }
        }
}

static inline __attribute__((always_inline)) void
lstm_cells_f32(const float *a, int64_t n, const float *x, const float *c, float *c_new,
               float *h_new, float *tc, int64_t ls, int64_t rows, int64_t cols, float *gates,
               int64_t gk, int64_t lg, int ract, int act)
{
    if (cols <= 8 && rows > 1)
        lstm_cells_rows_f32(2, a, n, x, c, c_new, h_new, tc, ls, rows, cols, gates, gk, lg, ract,
                            act);
    else
        lstm_cells_rows_f32(1, a, n, x, c, c_new, h_new, tc, ls, rows, cols, gates, gk, lg, ract,
                            act);
}

/* d f'(x), through the output y = f(x) (kernels_impl.h's dact_mul: a ReLU's or hard sigmoid's
 * flat part gives 0, even for an infinite d) */
static inline __attribute__((always_inline)) __m512 vdact_mul_f32(int code, __m512 y, __m512 d)
{
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    switch (code) {
    case ACT_TANH: return _mm512_mul_ps(d, _mm512_fnmadd_ps(y, y, one));
    case ACT_SIGMOID: return _mm512_mul_ps(d, _mm512_mul_ps(y, _mm512_sub_ps(one, y)));
    case ACT_RELU: return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), d);
    case ACT_HARD_SIGMOID:
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ)
                                       & _mm512_cmp_ps_mask(y, one, _CMP_LT_OQ),
                                   _mm512_mul_ps(d, _mm512_set1_ps(1.0f / 6)));
    default: return d;
    }
}

/* An LSTM step's cells going back, float32, in one pass, in the layout of lstm_cells_f32: the
 * gates (i, f, g, o, activated) at gates (gate k's row j at gates + k gk + j lg), c the cell
 * state before the step (row stride lc), tc = f(c_t); dh and dc (in: dL/dh_t, dL/dc_t) and the
 * rows of d contiguous. Writes d = dL/d(gates before their activations) (gate k at d + k n),
 * the same over the gates (which the backward pass needs no more), and dc = dL/dc_{t-1}
 * without the recurrent product:
 *   do = dh tc o',  dc_t = dc + dh o f'(c_t),  di = dc_t g i',  df = dc_t c f',
 *   dg = dc_t i g',  dc = dc_t f */
static inline __attribute__((always_inline)) void
lstm_cells_back_f32(float *gates, int64_t gk, int64_t lg, const float *c, int64_t lc,
                    const float *tc, const float *dh, float *dc, float *d, int64_t n,
                    int64_t rows, int64_t cols, int ract, int act)
{
    int64_t j, b;
    for (j = 0; j < rows; j++)
        for (b = 0; b < cols; b += 16) {
            const __mmask16 m = vmask_f32(cols - b);
            float *p = gates + j * lg + b;
            const int64_t q = j * cols + b;
            const __m512 vi = _mm512_maskz_loadu_ps(m, p), vf = _mm512_maskz_loadu_ps(m, p + gk),
                         vg = _mm512_maskz_loadu_ps(m, p + 2 * gk),
                         vo = _mm512_maskz_loadu_ps(m, p + 3 * gk),
                         vt = _mm512_maskz_loadu_ps(m, tc + q),
                         vh = _mm512_maskz_loadu_ps(m, dh + q),
                         vdo = vdact_mul_f32(ract, vo, _mm512_mul_ps(vh, vt)),
                         vdc = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dc + q),
                                             vdact_mul_f32(act, vt, _mm512_mul_ps(vh, vo))),
                         vdi = vdact_mul_f32(ract, vi, _mm512_mul_ps(vdc, vg)),
                         vdf = vdact_mul_f32(ract, vf,
                                             _mm512_mul_ps(vdc, _mm512_maskz_loadu_ps(
                                                                    m, c + j * lc + b))),
                         vdg = vdact_mul_f32(act, vg, _mm512_mul_ps(vdc, vi));
            _mm512_mask_storeu_ps(dc + q, m, _mm512_mul_ps(vdc, vf));
            _mm512_mask_storeu_ps(d + q, m, vdi);
            _mm512_mask_storeu_ps(d + n + q, m, vdf);
            _mm512_mask_storeu_ps(d + 2 * n + q, m, vdg);
            _mm512_mask_storeu_ps(d + 3 * n + q, m, vdo);
            _mm512_mask_storeu_ps(p, m, vdi);
            _mm512_mask_storeu_ps(p + gk, m, vdf);
            _mm512_mask_storeu_ps(p + 2 * gk, m, vdg);
            _mm512_mask_storeu_ps(p + 3 * gk, m, vdo);
        }
}
#else
#define VMATH_F32 0
#endif

#define ABI_VERSION 12
#define MAX_ARGS 32

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };   /* the CBLAS constants */

typedef void (*gemm64_f32_t)(int, int, int, int64_t, int64_t, int64_t, float, const float *,
                             int64_t, const float *, int64_t, float, float *, int64_t);
typedef void (*gemm32_f32_t)(int, int, int, int, int, int, float, const float *, int,
                             const float *, int, float, float *, int);
typedef void (*gemm64_f64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double *,
                             int64_t, const double *, int64_t, double, double *, int64_t);
typedef void (*gemm32_f64_t)(int, int, int, int, int, int, double, const double *, int,
                             const double *, int, double, double *, int);

static void *blas_sgemm = 0, *blas_dgemm = 0;
static int blas_ilp64 = 0;

/* ---- the worker thread -------------------------------------------------------------------
 * One worker thread, started on first use and kept, takes a task at a time from pool_post(): the
 * second half of a batch (run_parts below) or the second slice of every step of one sequence
 * (run_steps). After a task it polls for the next one for SPIN_NS before it sleeps on a
 * condition variable, so that a forward pass followed by a backward pass (or the next batch)
 * finds it awake. The caller can take back a task that the worker has not started, and then
 * need not wait for it. A forked child starts a worker of its own. */
#define SPIN_NS 200000
typedef void (*task_fn)(void *);
static _Thread_local int in_task = 0;   /* running a part of run_parts, on either thread */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;   /* one task at a time */
static int pool_started = 0, pool_sleeping = 0;
static task_fn pool_fn;
static void *pool_arg;
static atomic_long pool_posted = 0, pool_done = 0;
static atomic_int pool_claim = 1;   /* 0: the posted task is unclaimed */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* spin until *v >= want, yielding now and then (the other thread may have lost its core) */
static void wait_for(atomic_long *v, long want)
{
    int spins = 0;
    while (atomic_load_explicit(v, memory_order_acquire) < want) {
        cpu_relax();
        if (++spins % 1024 == 0) sched_yield();
    }
}

static void *pool_worker(void *unused)
{
    long seen = 0;
    (void)unused;
    for (;;) {
        long posted = atomic_load_explicit(&pool_posted, memory_order_acquire);
        if (posted == seen) {   /* poll for a while, then sleep until a task is posted */
            int64_t until = now_ns() + SPIN_NS;
            int spins = 0;
            while ((posted = atomic_load_explicit(&pool_posted, memory_order_acquire)) == seen) {
                cpu_relax();
                if (++spins % 256 == 0 && now_ns() > until) {
                    pthread_mutex_lock(&pool_mu);
                    while ((posted = atomic_load_explicit(&pool_posted, memory_order_acquire))
                           == seen) {
                        pool_sleeping = 1;
                        pthread_cond_wait(&pool_cv, &pool_mu);
                    }
                    pool_sleeping = 0;
                    pthread_mutex_unlock(&pool_mu);
                    break;
                }
            }
        }
        seen = posted;
        /* the claim's acquire makes the task's fn and arg visible (they were written before the
           claim was reset, with release) */
        if (atomic_exchange_explicit(&pool_claim, 1, memory_order_acq_rel) == 0)
            pool_fn(pool_arg);
        atomic_store_explicit(&pool_done, seen, memory_order_release);
    }
    return NULL;
}

static void pool_after_fork(void)   /* in a forked child: no worker; locks as new */
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_mu = m;
    pool_owner = m;
    pool_cv = c;
    pool_started = 0;
    pool_sleeping = 0;
    atomic_store(&pool_posted, 0);
    atomic_store(&pool_done, 0);
    atomic_store(&pool_claim, 1);
}

/* Give fn(arg) to the worker (waiting while another caller's task holds it); returns the task's
 * number, or 0 when no worker could start: the caller then runs fn itself. A nonzero return must
 * be followed by pool_finish(). */
static long pool_post(task_fn fn, void *arg)
{
    long job;
    pthread_mutex_lock(&pool_owner);
    if (!pool_started) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, pool_worker, NULL) == 0) pool_started = 1;
        pthread_attr_destroy(&at);
    }
    if (!pool_started) {
        pthread_mutex_unlock(&pool_owner);
        return 0;
    }
    pool_fn = fn;
    pool_arg = arg;
    atomic_store_explicit(&pool_claim, 0, memory_order_release);
    job = atomic_load_explicit(&pool_posted, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool_posted, job, memory_order_release);
    pthread_mutex_lock(&pool_mu);
    if (pool_sleeping) pthread_cond_signal(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    return job;
}

/* 1 when the worker had not started the task: the caller has it back, to run or to drop */
static int pool_take_back(void)
{
    return atomic_exchange_explicit(&pool_claim, 1, memory_order_acq_rel) == 0;
}

/* the end of a task: wait for the worker unless the task was taken back, and free the pool */
static void pool_finish(long job, int taken_back)
{
    if (!taken_back) wait_for(&pool_done, job);
    pthread_mutex_unlock(&pool_owner);
}

/* ---- the steps of one sequence on two threads ------------------------------------------------
 * run_steps(T, step, cell, threads) calls step(cell, t, 0) and step(cell, t, 1) for every t in
 * order: the two halves of a step's units (slices), each of which reads the whole previous state
 * and writes its own units of the next. With two threads, slice 1 goes to whichever thread claims
 * it first: the worker, which takes each step's slice as soon as the previous step is complete,
 * or the caller, when it finishes slice 0 before the worker has come (the worker asleep or without
 * a core): then nobody waits for a thread that is not running. Each slice reads only what it or
 * the previous step wrote: data another core wrote beforehand (a projection over all steps, say)
 * would cost a cross-core miss per cache line at every step. */
typedef struct {
    _Alignas(64) atomic_long next1;   /* the first step whose slice 1 is unclaimed */
    _Alignas(64) atomic_long done1;   /* slice 1 done by the worker through this step */
    _Alignas(64) atomic_long ready;   /* steps complete */
    int64_t T;
    void (*step)(void *, int64_t, int);
    void *cell;
} step_split;

static void steps_worker(void *arg)
{
    step_split *s = arg;
    long t = atomic_load_explicit(&s->next1, memory_order_acquire);
    while (t < s->T) {
        long e = t;
        wait_for(&s->ready, t);
        if (atomic_compare_exchange_strong_explicit(&s->next1, &e, t + 1, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            s->step(s->cell, t, 1);
            atomic_store_explicit(&s->done1, t + 1, memory_order_release);
            t++;
        } else {
            t = e;
        }
    }
}

static void run_steps(int64_t T, void (*step)(void *, int64_t, int), void *cell, int threads)
{
    step_split s;
    long job = 0;
    int64_t t;
    if (in_task) threads = 1;   /* a part of a split already: the worker is taken */
    atomic_init(&s.next1, 0);
    atomic_init(&s.done1, 0);
    atomic_init(&s.ready, 0);
    s.T = T;
    s.step = step;
    s.cell = cell;
    if (threads > 1) job = pool_post(steps_worker, &s);
    for (t = 0; t < T; t++) {
        long e = t;
        step(cell, t, 0);
        if (!job || atomic_compare_exchange_strong_explicit(&s.next1, &e, t + 1,
                                                            memory_order_acq_rel,
                                                            memory_order_acquire))
            step(cell, t, 1);
        else
            wait_for(&s.done1, t + 1);
        atomic_store_explicit(&s.ready, t + 1, memory_order_release);
    }
    if (job) pool_finish(job, pool_take_back());
}

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#define TANH tanhf
#define SQRT sqrtf
#define SIGMOID_FLOOR (-88.7f)
#define VMATH VMATH_F32
#define GEMM_PTR blas_sgemm
#define GEMM64_T gemm64_f32_t
#define GEMM32_T gemm32_f32_t
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef TANH
#undef SQRT
#undef SIGMOID_FLOOR
#undef VMATH
#undef GEMM_PTR
#undef GEMM64_T
#undef GEMM32_T

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define TANH tanh
#define SQRT sqrt
#define SIGMOID_FLOOR (-708.0)
#define VMATH 0
#define GEMM_PTR blas_dgemm
#define GEMM64_T gemm64_f64_t
#define GEMM32_T gemm32_f64_t
#include "kernels_impl.h"

/* ---- the Python module ------------------------------------------------------------------- */
typedef void (*kernel_fn)(const int64_t *, void *const *);
typedef struct {
    const char *name;
    kernel_fn f32, f64;
    int n_ints, n_arrays, mask_arg;   /* mask_arg: the index of the (T, B) mask among the arrays,
                                         or -1 */
} kernel_spec;

static const kernel_spec KERNELS[] = {
    {"gru_forward", gru_forward_f32, gru_forward_f64, 9, 13, 9},
    {"gru_backward", gru_backward_f32, gru_backward_f64, 8, 21, 12},
    {"lstm_forward", lstm_forward_f32, lstm_forward_f64, 9, 12, 8},
    {"lstm_backward", lstm_backward_f32, lstm_backward_f64, 7, 20, 11},
    {"rnn_forward", rnn_forward_f32, rnn_forward_f64, 6, 10, 6},
    {"rnn_backward", rnn_backward_f32, rnn_backward_f64, 6, 16, 8},
    {"adam_update", adam_update_f32, adam_update_f64, 1, 5, -1},
    {"activate", activate_f32, activate_f64, 2, 1, -1},
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

/* One kernel call's arguments, parsed from Python: the buffers stay held until release_call(). */
typedef struct {
    const kernel_spec *k;
    int f64, nviews;
    int64_t I[MAX_ARGS];
    void *P[MAX_ARGS];
    Py_buffer views[MAX_ARGS];
} call_args;

static void release_call(call_args *c)
{
    while (c->nviews > 0) PyBuffer_Release(&c->views[--c->nviews]);
}

/* (kernel_index, is_float64, ints, arrays) -> c; 0, or -1 with an exception set */
static int parse_call(call_args *c, int kid, int f64, PyObject *ints, PyObject *arrays)
{
    int a;
    const kernel_spec *k;
    c->nviews = 0;
    if (kid < 0 || kid >= N_KERNELS) {
        PyErr_Format(PyExc_ValueError, "no kernel %d", kid);
        return -1;
    }
    k = c->k = &KERNELS[kid];
    c->f64 = f64;
    if (!PyTuple_Check(ints) || !PyTuple_Check(arrays) || PyTuple_GET_SIZE(ints) != k->n_ints
        || PyTuple_GET_SIZE(arrays) != k->n_arrays) {
        PyErr_Format(PyExc_TypeError, "%s takes a tuple of %d integers and one of %d arrays",
                     k->name, k->n_ints, k->n_arrays);
        return -1;
    }
    for (a = 0; a < k->n_ints; a++) {
        c->I[a] = PyLong_AsLongLong(PyTuple_GET_ITEM(ints, a));
        if (c->I[a] == -1 && PyErr_Occurred()) return -1;
    }
    for (a = 0; a < k->n_arrays; a++) {
        PyObject *obj = PyTuple_GET_ITEM(arrays, a);
        Py_buffer *v = &c->views[c->nviews];
        const char *fmt;
        char want, got;
        if (obj == Py_None) {
            c->P[a] = NULL;
            continue;
        }
        if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
        c->nviews++;
        fmt = v->format ? v->format : "B";
        got = fmt[strlen(fmt) - 1];   /* '<f' and 'f' alike */
        want = a == k->mask_arg ? 'B' : (f64 ? 'd' : 'f');
        if (got != want && !(want == 'B' && got == '?')) {
            PyErr_Format(PyExc_TypeError, "%s: array %d has format '%s', expected '%c'",
                         k->name, a, fmt, want);
            goto fail;
        }
        c->P[a] = v->buf;
    }
    return 0;
fail:
    release_call(c);
    return -1;
}

static void exec_call(const call_args *c) { (c->f64 ? c->k->f64 : c->k->f32)(c->I, c->P); }

static PyObject *py_run(PyObject *self, PyObject *args)
{
    int kid, f64;
    PyObject *ints, *arrays;
    call_args c;
    (void)self;
    if (!PyArg_ParseTuple(args, "ipO!O!", &kid, &f64, &PyTuple_Type, &ints, &PyTuple_Type,
                          &arrays))
        return NULL;
    if (parse_call(&c, kid, f64, ints, arrays) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    exec_call(&c);
    Py_END_ALLOW_THREADS
    release_call(&c);
    Py_RETURN_NONE;
}

/* ---- two parts of a batch at once ----------------------------------------------------------
 * run_parts((calls of part 0, calls of part 1)): part 1's calls go to the worker thread (see
 * pool_post) while this thread runs part 0's, without the GIL. Whichever thread is free first
 * claims part 1: with the worker descheduled (a busy machine), the caller runs both parts itself
 * and loses nothing but the claim. */
#define MAX_CALLS 8

typedef struct {
    call_args *calls;
    int n;
} part_job;

static void run_part(void *arg)
{
    const part_job *j = arg;
    int i;
    in_task = 1;
    for (i = 0; i < j->n; i++) exec_call(&j->calls[i]);
    in_task = 0;
}

static void run_two(part_job *p0, part_job *p1)
{
    long job = pool_post(run_part, p1);
    int back;
    run_part(p0);
    back = !job || pool_take_back();
    if (back) run_part(p1);
    if (job) pool_finish(job, back);
}

static int parse_part(PyObject *calls, call_args *out, int *n)
{
    Py_ssize_t i, m = PyTuple_GET_SIZE(calls);
    *n = 0;
    for (i = 0; i < m; i++) {
        PyObject *c = PyTuple_GET_ITEM(calls, i);
        int kid, f64;
        PyObject *ints, *arrays;
        if (!PyTuple_Check(c)) {
            PyErr_SetString(PyExc_TypeError,
                            "run_parts: a call is a tuple (kernel_index, is_float64, ints, arrays)");
            return -1;
        }
        if (!PyArg_ParseTuple(c, "ipOO", &kid, &f64, &ints, &arrays)) return -1;
        if (parse_call(&out[*n], kid, f64, ints, arrays) < 0) return -1;
        ++*n;
    }
    return 0;
}

static PyObject *py_run_parts(PyObject *self, PyObject *args)
{
    PyObject *c0, *c1, *result = NULL;
    call_args *calls = NULL;
    part_job p0 = {NULL, 0}, p1 = {NULL, 0};
    Py_ssize_t n0, n1;
    int i;
    (void)self;
    if (!PyArg_ParseTuple(args, "(O!O!)", &PyTuple_Type, &c0, &PyTuple_Type, &c1)) return NULL;
    n0 = PyTuple_GET_SIZE(c0);
    n1 = PyTuple_GET_SIZE(c1);
    if (n0 > MAX_CALLS || n1 > MAX_CALLS) {
        PyErr_Format(PyExc_TypeError, "run_parts: each part is a tuple of at most %d calls",
                     MAX_CALLS);
        return NULL;
    }
    calls = malloc((size_t)(n0 + n1 + 1) * sizeof(call_args));
    if (!calls) return PyErr_NoMemory();
    p0.calls = calls;
    p1.calls = calls + n0;
    if (parse_part(c0, p0.calls, &p0.n) < 0 || parse_part(c1, p1.calls, &p1.n) < 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    run_two(&p0, &p1);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (i = 0; i < p0.n; i++) release_call(&p0.calls[i]);
    for (i = 0; i < p1.n; i++) release_call(&p1.calls[i]);
    free(calls);
    return result;
}

static PyObject *py_kernels(PyObject *self, PyObject *noargs)
{
    PyObject *names = PyTuple_New(N_KERNELS);
    int i;
    (void)self;
    (void)noargs;
    if (!names) return NULL;
    for (i = 0; i < N_KERNELS; i++) {
        PyObject *s = PyUnicode_FromString(KERNELS[i].name);
        if (!s) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

static PyObject *py_set_blas(PyObject *self, PyObject *args)
{
    unsigned long long s, d;
    int ilp64;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKp", &s, &d, &ilp64)) return NULL;
    blas_sgemm = (void *)(uintptr_t)s;
    blas_dgemm = (void *)(uintptr_t)d;
    blas_ilp64 = ilp64;
    Py_RETURN_NONE;
}

static PyObject *py_abi_version(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(ABI_VERSION);
}

static PyMethodDef methods[] = {
    {"run", py_run, METH_VARARGS, "run(kernel_index, is_float64, ints, arrays)"},
    {"run_parts", py_run_parts, METH_VARARGS,
     "run_parts((calls, calls)): two parts' calls at once, each a (kernel_index, is_float64, "
     "ints, arrays)"},
    {"kernels", py_kernels, METH_NOARGS, "the kernel names, in index order"},
    {"set_blas", py_set_blas, METH_VARARGS, "set_blas(sgemm_address, dgemm_address, ilp64)"},
    {"abi_version", py_abi_version, METH_NOARGS, "the version of this module's interface"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "grukit_kernels",
                                    "grukit's compiled time loops", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_grukit_kernels(void)
{
    static int forks_handled = 0;
    if (!forks_handled && pthread_atfork(NULL, NULL, pool_after_fork) == 0) forks_handled = 1;
    return PyModule_Create(&module);
}
