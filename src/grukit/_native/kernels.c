/* grukit's compiled time loops: the GRU, LSTM and SimpleRNN recurrences forward and back through
 * time, in float32 and float64, as the Python extension module grukit_kernels.
 *
 * The math is that of layers/gru.py, layers/lstm.py and layers/simple_rnn.py. What this file adds
 * is one call per sequence instead of a dozen NumPy calls per step, elementwise loops the compiler
 * vectorises (exp and tanh included, through the C library's vector math), and weight gradients
 * as one matrix product over all steps. Matrix products go to the BLAS that NumPy itself uses:
 * grukit/_native/__init__.py finds its cblas_sgemm/cblas_dgemm and hands them to set_blas().
 *
 * kernels_impl.h holds the loops; it is included once per floating-point type. From Python:
 *   run(kernel_index, is_float64, ints, arrays)   arrays: C-contiguous buffers of the type (masks
 *                                                  bool or uint8), or None where optional
 *   kernels()                                      the kernel names, in index order
 *   set_blas(sgemm_address, dgemm_address, ilp64) and abi_version()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

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

#define ABI_VERSION 8
#define MAX_ARGS 32

enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3, ACT_HARD_SIGMOID = 4 };
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

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#define TANH tanhf
#define SQRT sqrtf
#define SIGMOID_FLOOR (-87.0f)
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
#undef GEMM_PTR
#undef GEMM64_T
#undef GEMM32_T

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define TANH tanh
#define SQRT sqrt
#define SIGMOID_FLOOR (-708.0)
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
    {"gru_forward", gru_forward_f32, gru_forward_f64, 8, 13, 9},
    {"gru_backward", gru_backward_f32, gru_backward_f64, 7, 21, 12},
    {"lstm_forward", lstm_forward_f32, lstm_forward_f64, 7, 12, 8},
    {"lstm_backward", lstm_backward_f32, lstm_backward_f64, 6, 20, 11},
    {"rnn_forward", rnn_forward_f32, rnn_forward_f64, 5, 10, 6},
    {"rnn_backward", rnn_backward_f32, rnn_backward_f64, 5, 16, 8},
    {"adam_update", adam_update_f32, adam_update_f64, 1, 5, -1},
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

static PyObject *py_run(PyObject *self, PyObject *args)
{
    int kid, f64, a, nviews = 0;
    PyObject *ints, *arrays;
    int64_t I[MAX_ARGS];
    void *P[MAX_ARGS];
    Py_buffer views[MAX_ARGS];
    const kernel_spec *k;
    (void)self;
    if (!PyArg_ParseTuple(args, "ipO!O!", &kid, &f64, &PyTuple_Type, &ints, &PyTuple_Type,
                          &arrays))
        return NULL;
    if (kid < 0 || kid >= N_KERNELS) {
        PyErr_Format(PyExc_ValueError, "no kernel %d", kid);
        return NULL;
    }
    k = &KERNELS[kid];
    if (PyTuple_GET_SIZE(ints) != k->n_ints || PyTuple_GET_SIZE(arrays) != k->n_arrays) {
        PyErr_Format(PyExc_TypeError, "%s takes %d integers and %d arrays, got %zd and %zd",
                     k->name, k->n_ints, k->n_arrays, PyTuple_GET_SIZE(ints),
                     PyTuple_GET_SIZE(arrays));
        return NULL;
    }
    for (a = 0; a < k->n_ints; a++) {
        I[a] = PyLong_AsLongLong(PyTuple_GET_ITEM(ints, a));
        if (I[a] == -1 && PyErr_Occurred()) return NULL;
    }
    for (a = 0; a < k->n_arrays; a++) {
        PyObject *obj = PyTuple_GET_ITEM(arrays, a);
        Py_buffer *v = &views[nviews];
        const char *fmt;
        char want, got;
        if (obj == Py_None) {
            P[a] = NULL;
            continue;
        }
        if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
        nviews++;
        fmt = v->format ? v->format : "B";
        got = fmt[strlen(fmt) - 1];   /* '<f' and 'f' alike */
        want = a == k->mask_arg ? 'B' : (f64 ? 'd' : 'f');
        if (got != want && !(want == 'B' && got == '?')) {
            PyErr_Format(PyExc_TypeError, "%s: array %d has format '%s', expected '%c'",
                         k->name, a, fmt, want);
            goto fail;
        }
        P[a] = v->buf;
    }
    Py_BEGIN_ALLOW_THREADS
    (f64 ? k->f64 : k->f32)(I, P);
    Py_END_ALLOW_THREADS
    while (nviews > 0) PyBuffer_Release(&views[--nviews]);
    Py_RETURN_NONE;
fail:
    while (nviews > 0) PyBuffer_Release(&views[--nviews]);
    return NULL;
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
    {"kernels", py_kernels, METH_NOARGS, "the kernel names, in index order"},
    {"set_blas", py_set_blas, METH_VARARGS, "set_blas(sgemm_address, dgemm_address, ilp64)"},
    {"abi_version", py_abi_version, METH_NOARGS, "the version of this module's interface"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "grukit_kernels",
                                    "grukit's compiled time loops", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_grukit_kernels(void) { return PyModule_Create(&module); }
