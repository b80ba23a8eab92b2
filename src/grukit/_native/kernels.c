/* grukit's compiled time loops: the GRU, LSTM and SimpleRNN recurrences forward and back through
 * time, in float32 and float64, for grukit/_native/__init__.py to call through ctypes.
 *
 * The math is that of layers/gru.py, layers/lstm.py and layers/simple_rnn.py, on the same
 * buffers: time-major, feature-major inside a step (a state is (units, B), the gates of a step
 * (G, B)). What this file adds is one call per sequence instead of one NumPy call per operation
 * per step, and elementwise loops the compiler vectorises (exp and tanh included, through the C
 * library's vector math). Matrix products go to the BLAS that NumPy itself uses, whose cblas_?gemm
 * the Python side finds and hands over with grukit_set_blas.
 *
 * kernels_impl.h holds the loops; it is included once per floating-point type.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* cblas_sgemm and cblas_dgemm of NumPy's BLAS; ilp64 when their integers are 64-bit. */
void grukit_set_blas(void *sgemm, void *dgemm, int ilp64)
{
    blas_sgemm = sgemm;
    blas_dgemm = dgemm;
    blas_ilp64 = ilp64;
}

int grukit_abi_version(void) { return 1; }

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#define TANH tanhf
#define SIGMOID_FLOOR (-87.0f)
#define GEMM_PTR blas_sgemm
#define GEMM64_T gemm64_f32_t
#define GEMM32_T gemm32_f32_t
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef TANH
#undef SIGMOID_FLOOR
#undef GEMM_PTR
#undef GEMM64_T
#undef GEMM32_T

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define TANH tanh
#define SIGMOID_FLOOR (-708.0)
#define GEMM_PTR blas_dgemm
#define GEMM64_T gemm64_f64_t
#define GEMM32_T gemm32_f64_t
#include "kernels_impl.h"
