/* The loops of kernels.c for one floating-point type REAL; SFX(name) gives each its typed name.
 *
 * Every kernel takes (I, P): its integer arguments and its buffers, in the order its comment
 * gives. u units, G gate rows, T steps, B sequences, D input features. Layouts (row-major):
 *   per step, contiguous:   a (G, B): one step's gate values (GRU and LSTM keep every step's
 *                           gates in xp's slot for the step, whose x_t they no longer need, so
 *                           xp holds x W + b, then the gates, then dL/dxp); tc (T, u, B);
 *                           dy (T, u, B) or NULL;
 *                           keep (T, B), 1 where a step is valid, or NULL; dh, dc, d, tmp (., B)
 *   spanning all steps:     xp (G rows) projected inputs, overwritten going back by dL/dxp;
 *                           S (u rows, T+1 steps) states, step 0 the initial one; hu, rh, hd
 *                           (u rows, T steps). For B > 1 they are feature-major over time,
 *                           (rows, T, B): step t's block is columns t*B.. with row stride T*B
 *                           ((T+1)*B for S), so that each weight gradient is one matrix product
 *                           over all steps. For B = 1 they are time-major, (T, rows): a step's
 *                           rows are contiguous, and the products read them transposed.
 *   x (T*B, D) time-major, or, where the kernel's last integer (xbm) is 1, the caller's
 *   batch-major (B, T, D), read in place; dx (T*B, D); W (D, G); U (u, G), both in the loop's
 *   gate order. Gradients are written.
 */

/* where step t's block of a buffer spanning all steps starts, and its row stride */
typedef struct {
    int64_t row, step;
} SFX(strides);

static inline SFX(strides) SFX(span)(int64_t rows, int64_t steps, int64_t B)
{
    SFX(strides) s;
    if (B == 1) {
        s.row = 1;
        s.step = rows;
    } else {
        s.row = steps * B;
        s.step = B;
    }
    return s;
}

/* where one sequence's units split into two slices for two threads (run_steps): half of them,
 * rounded up to whole cache lines; u when there are too few (under four lines' worth) for the
 * hand-over at every step to pay */
static inline int64_t SFX(slice_at)(int64_t u)
{
    const int64_t v = 64 / (int64_t)sizeof(REAL), half = (u / 2 + v - 1) / v * v;
    return u < 4 * v ? u : half;
}

/* Products with few columns (N = B sequences) in the step loops: a BLAS call costs more than the
 * arithmetic there, so they are written out: gemv_t (one column), small_kn (fewer than a
 * vector's width), small_nn and small_nt (A as it is, N or K up to SMALL_N). alpha = 1; beta is
 * 0 or 1. */
#define SMALL_N 8

typedef REAL SFX(vec) __attribute__((vector_size(VBYTES), aligned(sizeof(REAL)), may_alias));
#define SFX_VLEN ((int64_t)(VBYTES / sizeof(REAL)))

/* c[m .. m + nv VLEN) = A[:, those]^T b + beta c: nv vectors of c held in registers over all
 * of K (nv a constant where it is inlined) */
static inline __attribute__((always_inline)) void
SFX(gemv_block)(const int nv, int64_t m, int64_t K, const REAL *A, int64_t lda, const REAL *b,
                int64_t ldb, REAL beta, REAL *c)
{
    const int64_t V = SFX_VLEN;
    SFX(vec) acc[8];
    int64_t k;
    int r;
#pragma GCC unroll 8
    for (r = 0; r < nv; r++)
        acc[r] = beta != 0 ? *(const SFX(vec) *)(c + m + r * V) : (SFX(vec)){0};
    for (k = 0; k < K; k++) {
        const REAL h = b[k * ldb], *a = A + k * lda + m;
#pragma GCC unroll 8
        for (r = 0; r < nv; r++) acc[r] += *(const SFX(vec) *)(a + r * V) * h;
    }
#pragma GCC unroll 8
    for (r = 0; r < nv; r++) *(SFX(vec) *)(c + m + r * V) = acc[r];
}

/* c (M) = A^T b + beta c, A (K, M), b with stride ldb, c contiguous: one sequence's step product,
 * in blocks of 8, then 4, then 1 vector (independent accumulators), so that each step streams
 * the weights once and touches c once (instead of once per four rows of A) */
static void SFX(gemv_t)(int64_t M, int64_t K, const REAL *A, int64_t lda, const REAL *b,
                        int64_t ldb, REAL beta, REAL *c)
{
    const int64_t V = SFX_VLEN;
    int64_t m = 0, k;
    for (; m + 8 * V <= M; m += 8 * V) SFX(gemv_block)(8, m, K, A, lda, b, ldb, beta, c);
    for (; m + 4 * V <= M; m += 4 * V) SFX(gemv_block)(4, m, K, A, lda, b, ldb, beta, c);
    for (; m + V <= M; m += V) SFX(gemv_block)(1, m, K, A, lda, b, ldb, beta, c);
    for (; m < M; m++) {
        REAL acc = beta != 0 ? c[m] : 0;
        for (k = 0; k < K; k++) acc += A[k * lda + m] * b[k * ldb];
        c[m] = acc;
    }
}

/* C (M, N) = A B + beta C, A (M, K), B (K, N): dot products of A's rows with B's columns */
static void SFX(small_nn)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                          const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc, REAL *col)
{
    int64_t b, k, m;
    for (b = 0; b < N; b++) {
        const REAL *bc = B + b;
        if (ldb != 1) {   /* gather the column once */
            for (k = 0; k < K; k++) col[k] = B[k * ldb + b];
            bc = col;
        }
        for (m = 0; m < M; m++) {
            const REAL *a = A + m * lda;
            REAL s = 0;
            for (k = 0; k < K; k++) s += a[k] * bc[k];
            C[m * ldc + b] = (beta != 0 ? C[m * ldc + b] : 0) + s;
        }
    }
}

/* C (M, N) = A B^T + beta C, A (M, K), B (N, K), K <= SMALL_N: B^T copied to bt (K, N), then
 * each row of C as sum_k A[m, k] bt[k, :] */
static void SFX(small_nt)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                          const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc, REAL *bt)
{
    int64_t k, m, c;
    for (k = 0; k < K; k++)
        for (c = 0; c < N; c++) bt[k * N + c] = B[c * ldb + k];
    for (m = 0; m < M; m++) {
        REAL *cm = C + m * ldc;
        if (beta == 0)
            for (c = 0; c < N; c++) cm[c] = 0;
        for (k = 0; k < K; k++) {
            const REAL a = A[m * lda + k], *bk = bt + k * N;
            for (c = 0; c < N; c++) cm[c] += a * bk[c];
        }
    }
}

/* dst (cols, rows), row stride ldd = the transpose of src (rows, cols), row stride lds: in 16 x 16
 * blocks in registers where the build has them (float32 on AVX-512), the edges one value at a
 * time */
static inline __attribute__((always_inline)) void
SFX(transpose)(const REAL *src, int64_t lds, REAL *dst, int64_t ldd, int64_t rows, int64_t cols)
{
    int64_t r, c, rb = 0, cb = 0;
#if VMATH
    rb = rows - rows % 16;
    cb = cols - cols % 16;
    for (r = 0; r < rb; r += 16)
        for (c = 0; c < cb; c += 16)
            transpose16_f32(src + r * lds + c, lds, dst + c * ldd + r, ldd);
#endif
    for (r = 0; r < rows; r++)
        for (c = r < rb ? cb : 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}

/* The step products with fewer columns than a vector holds (B < VLEN sequences): C (M, N) =
 * op(A) Bm + beta C (beta 0 or 1), with op(A)'s column k read as runs of contiguous rows, at
 * a + k ka for rows m .. m + VLEN (see kn_rows). Each block of two vectors of rows by up to
 * eight columns keeps its sums in registers over all of K: the rows are read once for all the
 * block's columns. The sums then go to C's rows (ldc apart) through a small buffer. */
static inline __attribute__((always_inline)) void
SFX(kn_block)(const int nb, const int nv, const REAL *a0, const REAL *a1, int64_t ka, int64_t K,
              const REAL *Bm, int64_t ldb, REAL *out)
{
    /* np sums of alternate k for each value where the block has few (the additions of one sum
       wait on each other) */
    const int64_t V = SFX_VLEN, np = nb * nv >= 8 ? 1 : nb * nv >= 4 ? 2 : 4;
    SFX(vec) acc[4][8][2];
    int64_t k, p;
    int b, v;
#pragma GCC unroll 4
    for (p = 0; p < np; p++)
#pragma GCC unroll 8
        for (b = 0; b < nb; b++)
            for (v = 0; v < nv; v++) acc[p][b][v] = (SFX(vec)){0};
    for (k = 0; k + np <= K; k += np)
#pragma GCC unroll 4
        for (p = 0; p < np; p++) {
            const SFX(vec) x0 = *(const SFX(vec) *)(a0 + (k + p) * ka),
                           x1 = nv > 1 ? *(const SFX(vec) *)(a1 + (k + p) * ka) : x0;
            const REAL *h = Bm + (k + p) * ldb;
#pragma GCC unroll 8
            for (b = 0; b < nb; b++) {
                acc[p][b][0] += x0 * h[b];
                if (nv > 1) acc[p][b][1] += x1 * h[b];
            }
        }
    for (; k < K; k++) {
        const SFX(vec) x0 = *(const SFX(vec) *)(a0 + k * ka),
                       x1 = nv > 1 ? *(const SFX(vec) *)(a1 + k * ka) : x0;
        const REAL *h = Bm + k * ldb;
#pragma GCC unroll 8
        for (b = 0; b < nb; b++) {
            acc[0][b][0] += x0 * h[b];
            if (nv > 1) acc[0][b][1] += x1 * h[b];
        }
    }
#pragma GCC unroll 8
    for (b = 0; b < nb; b++)
        for (v = 0; v < nv; v++) {
            SFX(vec) sum = acc[0][b][v];
#pragma GCC unroll 4
            for (p = 1; p < np; p++) sum += acc[p][b][v];
            *(SFX(vec) *)(out + b * 2 * V + v * V) = sum;
        }
}

/* where the run of op(A)'s rows m .. m + VLEN starts for k = 0: in A itself (op(A) = A^T, row
 * k of A holds op(A)'s column k), or in the packed panels of pack() (panel m / TILE_M) */
static inline const REAL *SFX(kn_rows)(const REAL *panels, const REAL *A, int64_t K, int64_t m)
{
    return panels ? panels + (m / TILE_M) * TILE_M * K + m % TILE_M : A + m;
}

static __attribute__((noinline)) void   /* (inlined, it slowed the tiled products' code) */
SFX(small_kn)(int64_t M, int64_t N, int64_t K, const REAL *panels, const REAL *A, int64_t lda,
              const REAL *Bm, int64_t ldb, REAL beta, REAL *C, int64_t ldc)
{
    const int64_t V = SFX_VLEN, ka = panels ? TILE_M : lda;
    /* panels hold whole vectors of rows (zeros past M); A only up to M */
    const int64_t mv = panels ? M : M - M % V;
    REAL out[8 * 2 * SFX_VLEN];
    int64_t m, c0, l, k;
    for (c0 = 0; c0 < N; c0 += 8) {
        const int nb = N - c0 < 8 ? (int)(N - c0) : 8;
        const REAL *bc = Bm + c0;
        for (m = 0; m < mv; m += 2 * V) {
            const int nv = mv - m > V ? 2 : 1;
            const int64_t rows = (M - m < nv * V ? M - m : nv * V);
            const REAL *a0 = SFX(kn_rows)(panels, A, K, m),
                       *a1 = nv > 1 ? SFX(kn_rows)(panels, A, K, m + V) : a0;
            int b;
            switch (nb * 2 + nv - 1) {   /* the block's shape as constants */
#define SFX_KN(NB)                                                                          \
            case 2 * NB: SFX(kn_block)(NB, 1, a0, a1, ka, K, bc, ldb, out); break;          \
            case 2 * NB + 1: SFX(kn_block)(NB, 2, a0, a1, ka, K, bc, ldb, out); break;
            SFX_KN(1) SFX_KN(2) SFX_KN(3) SFX_KN(4) SFX_KN(5) SFX_KN(6) SFX_KN(7) SFX_KN(8)
#undef SFX_KN
            }
            for (l = 0; l < rows; l++) {
                REAL *cr = C + (m + l) * ldc + c0;
                for (b = 0; b < nb; b++) cr[b] = (beta != 0 ? cr[b] : 0) + out[b * 2 * V + l];
            }
        }
        for (m = mv; m < M; m++) {   /* A's last rows, fewer than a vector */
            REAL *cr = C + m * ldc + c0;
            int b;
            for (b = 0; b < nb; b++) {
                REAL s = beta != 0 ? cr[b] : 0;
                for (k = 0; k < K; k++) s += A[k * lda + m] * bc[k * ldb + b];
                cr[b] = s;
            }
        }
    }
}

/* C = alpha op(A) op(B) + beta C, all row-major */
static void SFX(gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, REAL alpha, const REAL *A,
                      int64_t lda, const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc)
{
    int a = ta ? TRANS : NO_TRANS, b = tb ? TRANS : NO_TRANS;
    if (N == 1 && ta && !tb && alpha == 1 && (beta == 0 || beta == 1) && ldc == 1) {
        SFX(gemv_t)(M, K, A, lda, B, ldb, beta, C);
        return;
    }
    if ((N < SFX_VLEN || N <= SMALL_N) && ta && !tb && alpha == 1 && (beta == 0 || beta == 1)) {
        SFX(small_kn)(M, N, K, NULL, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (N <= SMALL_N && !ta && !tb && alpha == 1 && (beta == 0 || beta == 1) && K <= 4096) {
        REAL buf[4096];
        SFX(small_nn)(M, N, K, A, lda, B, ldb, beta, C, ldc, buf);
        return;
    }
    if (K <= SMALL_N && !ta && tb && alpha == 1 && (beta == 0 || beta == 1) && K * N <= 4096) {
        REAL buf[4096];
        SFX(small_nt)(M, N, K, A, lda, B, ldb, beta, C, ldc, buf);
        return;
    }
    if (blas_ilp64)
        ((GEMM64_T)GEMM_PTR)(ROW_MAJOR, a, b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        ((GEMM32_T)GEMM_PTR)(ROW_MAJOR, a, b, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                             (int)ldb, beta, C, (int)ldc);
}

/* The step loops' products: a weight matrix, the same at every step, times one step's (K, B)
 * block. A BLAS call copies the weights into its own packed layout at every call; here they are
 * copied once per sequence, into panels of TILE_M rows, panel i holding op(A)(i TILE_M + r, k)
 * at [i][k][r] (rows past M are zero). Read in order, a panel is one stream, with no cache set
 * conflicts when the weights' row stride is a multiple of 4 KiB. With fewer than VLEN columns,
 * panels are made only where op(A) = A (for small_kn(), which reads A^T's rows in A itself);
 * without AVX-512 (STEP_TILES) or without memory for the copy, the products go to gemm() with A
 * as it is. */

typedef struct {
    REAL *panels;   /* or NULL */
    const REAL *A;
    int64_t lda, M, K;
    int ta;
} SFX(packed);

static SFX(packed) SFX(pack)(int ta, int64_t M, int64_t K, const REAL *A, int64_t lda, int64_t N)
{
    SFX(packed) w;
    int64_t i, k, r, np = (M + TILE_M - 1) / TILE_M;
    w.A = A;
    w.lda = lda;
    w.M = M;
    w.K = K;
    w.ta = ta;
    /* the tiles' panels; or, for fewer columns than a vector, op(A)'s columns as runs of rows
       for small_kn(), which reads them in A itself where op(A) = A^T */
    w.panels = (STEP_TILES && N >= SFX_VLEN) || (!ta && N > 0 && N < SFX_VLEN)
                   ? malloc((size_t)(np * TILE_M * K) * sizeof(REAL)) : NULL;
    if (!w.panels) return w;
    for (i = 0; i < np; i++) {
        REAL *p = w.panels + i * TILE_M * K;
        int64_t m0 = i * TILE_M, mr = M - m0 < TILE_M ? M - m0 : TILE_M;
        if (!ta)   /* A's rows into the panel's columns */
            SFX(transpose)(A + m0 * lda, lda, p, TILE_M, mr, K);
        for (k = 0; k < K; k++, p += TILE_M) {
            if (ta)
                for (r = 0; r < mr; r++) p[r] = A[k * lda + m0 + r];
            for (r = mr; r < TILE_M; r++) p[r] = 0;
        }
    }
    return w;
}

static void SFX(unpack)(SFX(packed) *w)
{
    free(w->panels);
    w->panels = NULL;
}

/* C[r, 0 .. nv VLEN) = beta C + panel (TILE_M, kc) Bm (kc, .) for the first mr rows r */
static inline __attribute__((always_inline)) void
SFX(tile)(int64_t mr, int64_t nv, int64_t kc, const REAL *panel, const REAL *Bm, int64_t ldb,
          REAL beta, REAL *C, int64_t ldc)
{
    int64_t v, r, k;
    for (v = 0; v < nv; v++) {   /* the panel comes from L1 again for each vector */
        SFX(vec) acc[TILE_M];
        const REAL *bv = Bm + v * SFX_VLEN, *a = panel;
        REAL *cv = C + v * SFX_VLEN;
#pragma GCC unroll 16
        for (r = 0; r < TILE_M; r++)
            acc[r] = beta != 0 && r < mr ? *(const SFX(vec) *)(cv + r * ldc) : (SFX(vec)){0};
        for (k = 0; k < kc; k++, a += TILE_M) {
            const SFX(vec) h = *(const SFX(vec) *)(bv + k * ldb);
#pragma GCC unroll 16
            for (r = 0; r < TILE_M; r++) acc[r] += a[r] * h;
        }
#pragma GCC unroll 16
        for (r = 0; r < TILE_M; r++)
            if (r < mr) *(SFX(vec) *)(cv + r * ldc) = acc[r];
    }
}

/* C (M, N) = op(A) Bm + beta C, op(A) as packed; Bm (K, N) row-major */
static void SFX(pgemm)(const SFX(packed) *w, int64_t N, const REAL *Bm, int64_t ldb, REAL beta,
                       REAL *C, int64_t ldc)
{
    const int64_t M = w->M, K = w->K, nf = N - N % SFX_VLEN, kb = KC_BYTES / VBYTES;
    int64_t i, k, kc;
    REAL beta_k = beta;
    if (!w->panels) {
        SFX(gemm)(w->ta, 0, M, N, K, 1, w->A, w->lda, Bm, ldb, beta, C, ldc);
        return;
    }
    for (k = 0; k < K && nf > 0; k += kc) {   /* kb rows of Bm at a time: they stay in L1 */
        kc = K - k < kb ? K - k : kb;
        for (i = 0; i * TILE_M < M; i++)
            SFX(tile)(M - i * TILE_M, nf / SFX_VLEN, kc, w->panels + (i * K + k) * TILE_M,
                      Bm + k * ldb, ldb, beta_k, C + i * TILE_M * ldc, ldc);
        beta_k = 1;
    }
    if (nf < N)   /* the last columns, fewer than VLEN */
        SFX(small_kn)(M, N - nf, K, w->panels, w->A, w->lda, Bm + nf, ldb, beta, C + nf, ldc);
}

/* The weight gradients' products: C (M, N) += A (M, kc) Bm (kc, N) (C = instead where first),
 * for one block of K, the sum over all T*B columns. A's rows are read where they are (row stride
 * lda), so that nothing is packed, in tiles of RT rows times two vectors of Bm's columns: each
 * value of A broadcast once for two vectors, Bm's block streaming from L2 while a tile's rows of
 * A stay in L1. N is a multiple of VLEN. */
#define RT 8
#define RGEMM_KC 256
/* one tile: C[r, 0 .. nv VLEN) (+)= sum_k row[r][k] Bm[k, .] for the first mr of RT rows, nv 1 or
 * 2 vectors (a constant where it is inlined) */
static inline __attribute__((always_inline)) void
SFX(rtile)(const int nv, int64_t mr, int64_t kc, const REAL *const *row, const REAL *b,
           int64_t ldb, int first, REAL *c, int64_t ldc)
{
    SFX(vec) acc[2][RT];
    int64_t k, r;
    int w;
#pragma GCC unroll 8
    for (r = 0; r < RT; r++)
        for (w = 0; w < nv; w++)
            acc[w][r] = !first && r < mr ? *(const SFX(vec) *)(c + r * ldc + w * SFX_VLEN)
                                         : (SFX(vec)){0};
    for (k = 0; k < kc; k++, b += ldb) {
        SFX(vec) h[2];
        for (w = 0; w < nv; w++) h[w] = *(const SFX(vec) *)(b + w * SFX_VLEN);
#pragma GCC unroll 8
        for (r = 0; r < RT; r++) {
            const REAL x = row[r][k];
            for (w = 0; w < nv; w++) acc[w][r] += x * h[w];
        }
    }
#pragma GCC unroll 8
    for (r = 0; r < RT; r++)
        if (r < mr)
            for (w = 0; w < nv; w++) *(SFX(vec) *)(c + r * ldc + w * SFX_VLEN) = acc[w][r];
}

static void SFX(rgemm)(int64_t M, int64_t N, int64_t kc, const REAL *A, int64_t lda,
                       const REAL *Bm, int64_t ldb, int first, REAL *C, int64_t ldc)
{
    const int64_t nv = N / SFX_VLEN;
    int64_t i, v, r;
    for (i = 0; i < M; i += RT) {
        const int64_t mr = M - i < RT ? M - i : RT;
        const REAL *row[RT];
        for (r = 0; r < RT; r++) row[r] = A + (i + (r < mr ? r : mr - 1)) * lda;
        for (v = 0; v + 2 <= nv; v += 2)   /* two vectors: each value of A broadcast once */
            SFX(rtile)(2, mr, kc, row, Bm + v * SFX_VLEN, ldb, first, C + i * ldc + v * SFX_VLEN,
                       ldc);
        if (v < nv)
            SFX(rtile)(1, mr, kc, row, Bm + v * SFX_VLEN, ldb, first, C + i * ldc + v * SFX_VLEN,
                       ldc);
    }
}

/* the widest X (features, padded) that wgrad() takes: measured against OpenBLAS's product, the
 * tiles won up to 256 (74 -> 98 GFLOP/s at 64, 86 -> 96 at 128, even at 256) and lost at 512 */
#define WGRAD_MAX_N 256

/* C (n, m) = X Y^T over K = T*B columns, where X (n, K) has rows with K contiguous (a feature-
 * major buffer over all steps, or, transposed = 1, the K rows of an input such as x, row k at
 * X + (k / xb) ldx + (k % xb) xrs: k ldx with xb = 1, or x_t's row b, k = t B + b, in a
 * batch-major x with xb = B) and Y (m, K) is rows of dL/dxp: computed as C^T = Y X^T with
 * rgemm(), X^T's block of K built (transposed, zero-padded to a multiple of VLEN) in a small
 * buffer, C^T in another. Returns 0 where it does not pay or cannot run (no AVX-512 tiles,
 * fewer than VLEN or more than WGRAD_MAX_N features, no memory): gemm() then. At the seed's
 * size (24 columns), it took 1.8 us where OpenBLAS took 3.9. */
static int SFX(wgrad)(int64_t n, int64_t m, int64_t K, const REAL *X, int64_t ldx, int transposed,
                      int64_t xb, int64_t xrs, const REAL *Y, int64_t ldy, REAL *C, int64_t ldc)
{
    const int64_t np = (n + SFX_VLEN - 1) / SFX_VLEN * SFX_VLEN;
    int64_t k0, kc, j, k;
    REAL *Xb, *CT;
    if (!STEP_TILES || n < SFX_VLEN || np > WGRAD_MAX_N || K < 1) return 0;
    Xb = malloc((size_t)(RGEMM_KC * np) * sizeof(REAL));
    CT = malloc((size_t)(m * np) * sizeof(REAL));
    if (!Xb || !CT) {
        free(Xb);
        free(CT);
        return 0;
    }
    for (k0 = 0; k0 < K; k0 += kc) {
        kc = K - k0 < RGEMM_KC ? K - k0 : RGEMM_KC;
        if (transposed)
            for (k = 0; k < kc; k++) {
                memcpy(Xb + k * np, X + (k0 + k) / xb * ldx + (k0 + k) % xb * xrs,
                       (size_t)n * sizeof(REAL));
                for (j = n; j < np; j++) Xb[k * np + j] = 0;
            }
        else {
            SFX(transpose)(X + k0, ldx, Xb, np, n, kc);
            for (k = 0; k < kc; k++)
                for (j = n; j < np; j++) Xb[k * np + j] = 0;
        }
        SFX(rgemm)(m, np, kc, Y + k0, ldy, Xb, np, k0 == 0, CT, np);
    }
    SFX(transpose)(CT, np, C, ldc, m, n);
    free(Xb);
    free(CT);
    return 1;
}

/* y = f(y) in place, n contiguous values */
static void SFX(act)(int code, REAL *restrict y, int64_t n)
{
    int64_t i;
#if VMATH
    if (code == ACT_TANH) vact_all_f32(ACT_TANH, y, n);   /* the code as a constant in the loop */
    else if (code == ACT_SIGMOID) vact_all_f32(ACT_SIGMOID, y, n);
    else if (code != ACT_LINEAR) vact_all_f32(code, y, n);
    return;
#endif
    switch (code) {
    case ACT_TANH:
        for (i = 0; i < n; i++) y[i] = TANH(y[i]);
        break;
    case ACT_SIGMOID:   /* the comparisons are written so that a NaN passes through; the floor
                           keeps exp(-v) finite (below it the sigmoid is under the smallest
                           normal float already) */
        for (i = 0; i < n; i++) {
            REAL v = y[i] < SIGMOID_FLOOR ? SIGMOID_FLOOR : y[i];
            y[i] = (REAL)1 / ((REAL)1 + EXP(-v));
        }
        break;
    case ACT_RELU:
        for (i = 0; i < n; i++) y[i] = y[i] < 0 ? 0 : y[i];
        break;
    case ACT_HARD_SIGMOID:
        for (i = 0; i < n; i++) {
            REAL v = y[i] * ((REAL)1 / 6) + (REAL)0.5;
            y[i] = v < 0 ? 0 : (v > 1 ? 1 : v);
        }
        break;
    default:   /* linear */
        break;
    }
}

/* d *= f'(x), written through the output y = f(x); n contiguous values */
static void SFX(dact_mul)(int code, const REAL *restrict y, REAL *restrict d, int64_t n)
{
    int64_t i;
    switch (code) {
    case ACT_TANH:
        for (i = 0; i < n; i++) d[i] *= (REAL)1 - y[i] * y[i];
        break;
    case ACT_SIGMOID:
        for (i = 0; i < n; i++) d[i] *= y[i] * ((REAL)1 - y[i]);
        break;
    case ACT_RELU:
        for (i = 0; i < n; i++) d[i] = y[i] > 0 ? d[i] : 0;
        break;
    case ACT_HARD_SIGMOID:
        for (i = 0; i < n; i++) d[i] = (y[i] > 0 && y[i] < 1) ? d[i] * ((REAL)1 / 6) : 0;
        break;
    default:
        break;
    }
}

/* the recurrent matmul's input for a step: h (row stride ls), or h times the recurrent dropout
 * mask, written to hd_t (row stride lt); *ld gets the row stride of what is returned */
static const REAL *SFX(rec_input)(const REAL *h, int64_t ls, const REAL *rmask, REAL *hd_t,
                                  int64_t lt, int64_t u, int64_t B, int64_t *ld)
{
    int64_t j, b;
    if (!rmask) {
        *ld = ls;
        return h;
    }
    for (j = 0; j < u; j++)
        for (b = 0; b < B; b++) hd_t[j * lt + b] = h[j * ls + b] * rmask[j * B + b];
    *ld = lt;
    return hd_t;
}

/* where keep_t[b] is 0 the step changes nothing: new = old (both with row stride ls) */
static void SFX(hold_masked)(const uint8_t *keep_t, const REAL *old, REAL *new_, int64_t ls,
                             int64_t u, int64_t B)
{
    int64_t j, b;
    for (j = 0; j < u; j++)
        for (b = 0; b < B; b++)
            if (!keep_t[b]) new_[j * ls + b] = old[j * ls + b];
}

/* going back through a masked step: carried = the gradient of the skipped samples, d = the rest */
static void SFX(split_masked)(const uint8_t *keep_t, REAL *d, REAL *carried, int64_t u, int64_t B)
{
    int64_t j, b;
    for (j = 0; j < u; j++)
        for (b = 0; b < B; b++) {
            int64_t k = j * B + b;
            carried[k] = keep_t[b] ? 0 : d[k];
            d[k] = keep_t[b] ? d[k] : 0;
        }
}

static void SFX(add)(REAL *restrict d, const REAL *restrict s, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++) d[i] += s[i];
}

static void SFX(add_masked)(REAL *restrict d, const REAL *restrict s, const REAL *restrict m,
                            int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++) d[i] += s[i] * m[i];
}

/* rows of B values: dst (row stride ld_dst) <- src (row stride ld_src); one of the two is B,
 * the contiguous per-step side, and the other a buffer over all steps */
static void SFX(copy_rows)(const REAL *src, int64_t ld_src, REAL *dst, int64_t ld_dst,
                           int64_t rows, int64_t B)
{
    int64_t j;
    if (ld_src == B && ld_dst == B) {
        memcpy(dst, src, (size_t)(rows * B) * sizeof(REAL));
        return;
    }

    if (B % SFX_VLEN == 0 && B <= 4 * SFX_VLEN) {   /* short rows: vector moves, no calls */
        int64_t v;
        for (j = 0; j < rows; j++)
            for (v = 0; v < B; v += SFX_VLEN)
                *(SFX(vec) *)(dst + j * ld_dst + v) = *(const SFX(vec) *)(src + j * ld_src + v);
        return;
    }
    for (j = 0; j < rows; j++)
        memcpy(dst + j * ld_dst, src + j * ld_src, (size_t)B * sizeof(REAL));
}

/* A matrix (rows, cols) at p, element (i, k) at p[i * r + k * c], with r or c equal to 1. */
typedef struct {
    const REAL *p;
    int64_t r, c;
} SFX(mat);

static SFX(mat) SFX(mview)(const REAL *p, int64_t r, int64_t c)
{
    SFX(mat) m;
    m.p = p;
    m.r = r;
    m.c = c;
    return m;
}

/* the transpose of a view */
static SFX(mat) SFX(mT)(SFX(mat) m) { return SFX(mview)(m.p, m.c, m.r); }

/* C (M, N) = X Y^T, X (M, K) and Y (N, K) views; C row-major with row stride ldc */
static void SFX(gemm_xyT)(int64_t M, int64_t N, int64_t K, SFX(mat) X, SFX(mat) Y, REAL *C,
                          int64_t ldc)
{
    int ta = X.c != 1, tb = Y.c == 1;
    int64_t lda = ta ? X.r == 1 ? X.c : 0 : X.r, ldb = tb ? Y.r : Y.c;
    if (!ta && lda < K) lda = K;        /* one row: any stride will do, BLAS asks for >= K */
    if (!tb && ldb < N) ldb = N;
    if (ta && lda < M) lda = M;
    if (tb && ldb < K) ldb = K;
    SFX(gemm)(ta, tb, M, N, K, 1, X.p, lda, Y.p, ldb, 0, C, ldc);
}

/* a weight gradient, C (M, N) = X Y^T summed over the K = T*B columns of all steps: through
 * wgrad() where X's rows or columns and Y's rows are contiguous, else gemm_xyT() */
static void SFX(grad_xyT)(int64_t M, int64_t N, int64_t K, SFX(mat) X, SFX(mat) Y, REAL *C,
                          int64_t ldc)
{
    if (Y.c == 1 && (X.c == 1 || X.r == 1)
        && SFX(wgrad)(M, N, K, X.p, X.c == 1 ? X.r : X.c, X.c != 1, 1, 0, Y.p, Y.r, C, ldc))
        return;
    SFX(gemm_xyT)(M, N, K, X, Y, C, ldc);
}

/* acc[g] = sum_k v(g, k) over a (G, K) view */
static void SFX(sums)(SFX(mat) v, REAL *restrict acc, int64_t G, int64_t K)
{
    int64_t g, k;
    if (v.c == 1) {
        for (g = 0; g < G; g++) {
            REAL s = 0;
            for (k = 0; k < K; k++) s += v.p[g * v.r + k];
            acc[g] = s;
        }
    } else {
        for (g = 0; g < G; g++) acc[g] = 0;
        for (k = 0; k < K; k++)
            for (g = 0; g < G; g++) acc[g] += v.p[k * v.c + g];
    }
}

/* after the loop: dL/dW = x^T dxp^T, dL/dx = dxp^T W^T (unless dx is NULL: a first layer's input
 * needs none), dL/db = dxp summed over steps and batch; dxp is the (G, T*B) view, x time-major
 * (T*B, D) or, xbm, batch-major (B, T, D). dx is time-major. */
static void SFX(input_grads)(int64_t T, int64_t B, int64_t D, int64_t G, const REAL *x, int xbm,
                             const REAL *W, SFX(mat) dxp, REAL *dW, REAL *db, REAL *dx)
{
    const int64_t TB = T * B;
    int64_t t;
    if (xbm && B > 1) {   /* x_t's rows are T*D apart: the tiles read them there, or one product
                             per step adds x_t^T times step t's columns of dxp */
        if (!(dxp.c == 1
              && SFX(wgrad)(D, G, TB, x, D, 1, B, T * D, dxp.p, dxp.r, dW, G)))
            for (t = 0; t < T; t++)
                SFX(gemm)(1, 1, D, G, B, 1, x + t * D, T * D, dxp.p + t * B * dxp.c, dxp.r,
                          t > 0, dW, G);
    } else {
        SFX(grad_xyT)(D, G, TB, SFX(mview)(x, 1, D), dxp, dW, G);
    }
    if (dx) SFX(gemm_xyT)(TB, D, G, SFX(mT)(dxp), SFX(mview)(W, G, 1), dx, D);
    if (db) SFX(sums)(dxp, db, G, TB);
}

/* the bias of gate row g: b, plus b2 on the first n2 rows (GRU's b'z, b'r); either may be NULL.
 * Called once per row, outside the loops over a row's values. */
static inline REAL SFX(row_bias)(const REAL *b, const REAL *b2, int64_t n2, int64_t g)
{
    return (b ? b[g] : 0) + (b2 && g < n2 ? b2[g] : 0);
}

/* before the loop: xp = x W + b, plus b2 on the first n2 rows (GRU's b'z, b'r), in xp's layout;
 * x time-major, or, xbm, batch-major (then one product per step, x_t's rows T*D apart) */
static void SFX(project)(int64_t T, int64_t B, int64_t D, int64_t G, const REAL *x, int xbm,
                         const REAL *W, const REAL *b, const REAL *b2, int64_t n2, REAL *xp)
{
    int64_t TB = T * B, g, k;
    if (B == 1)
        SFX(gemm_xyT)(T, G, D, SFX(mview)(x, D, 1), SFX(mview)(W, 1, G), xp, G);
    else if (xbm)
        for (k = 0; k < T; k++)
            SFX(gemm)(1, 1, G, B, D, 1, W, G, x + k * D, T * D, 0, xp + k * B, TB);
    else
        SFX(gemm_xyT)(G, TB, D, SFX(mview)(W, 1, G), SFX(mview)(x, D, 1), xp, TB);
    if (!b && !b2) return;
    if (B == 1) {   /* no test of b or b2 in the inner loops: as a masked load of a NULL b2,
                       it cost as much as the whole recurrence on AMD Zen */
        for (k = 0; k < T; k++) {
            if (b)
                for (g = 0; g < G; g++) xp[k * G + g] += b[g];
            if (b2)
                for (g = 0; g < n2; g++) xp[k * G + g] += b2[g];
        }
    } else {
        for (g = 0; g < G; g++) {
            const REAL c = SFX(row_bias)(b, b2, n2, g);
            for (k = 0; k < TB; k++) xp[g * TB + k] += c;
        }
    }
}

/* With the tiled products (B >= VLEN), the input product runs inside the step loop instead of
 * before it: x_t W comes out of the same tiles as h U, at their speed, into the step's contiguous
 * gate block, with no pass over a projection buffer of all steps. The step's x_t, (B, D), is
 * transposed into xT (D, B) first. */
typedef struct {
    SFX(packed) W;   /* W^T, (G, D) */
    REAL *xT;
} SFX(inputs);

static int SFX(fuse_inputs)(SFX(inputs) *in, int64_t G, int64_t D, const REAL *W, int64_t B)
{
    in->xT = NULL;
    in->W = SFX(pack)(1, G, D, W, G, B);
    if (!in->W.panels) return 0;
    in->xT = malloc((size_t)(D * B) * sizeof(REAL));
    if (in->xT) return 1;
    SFX(unpack)(&in->W);
    return 0;
}

static void SFX(unfuse_inputs)(SFX(inputs) *in)
{
    SFX(unpack)(&in->W);
    free(in->xT);
    in->xT = NULL;
}

/* a (G, B) = x_t W + b, plus b2 on the first n2 rows; x_t's rows xrs apart */
static void SFX(step_inputs)(SFX(inputs) *in, const REAL *x_t, int64_t xrs, int64_t D, int64_t B,
                             const REAL *b, const REAL *b2, int64_t n2, REAL *a)
{
    const int64_t G = in->W.M;
    int64_t j, c;
    SFX(transpose)(x_t, xrs, in->xT, B, B, D);
    for (j = 0; j < G; j++) {
        const REAL v = SFX(row_bias)(b, b2, n2, j);
        for (c = 0; c < B; c++) a[j * B + c] = v;
    }
    SFX(pgemm)(&in->W, B, in->xT, B, 1, a, B);
}

/* ------------------------------------------------------------------------------------------ */
/* GRU, gate order z, r, h. With reset_after, h~ = f(xh + r * hu), hu = h Uh + bh' (not kept: the
 * backward pass computes it again, which saves T steps' worth of memory for one more product per
 * step); without, rh = r * h is kept and h~ = f(xh + (r * h) Uh).
 * I: T, B, u, reset_after, act, ract, D, keep_gates (0: inference, xp need not hold the gates),
 *    xbm
 * P: U, b2 (G) or NULL, xp (written), S, a, rh or NULL, scratch (G, B), rmask (u, B) or NULL,
 *    hd or NULL, keep or NULL, x, W, b (G) or NULL.
 * b is the input bias; b2 the recurrent one (reset_after): b2z, b2r go into xp, b2h into hu. */
static inline __attribute__((always_inline)) void
SFX(gru_forward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], G = 3 * u, n = u * B;
    const int reset_after = (int)I[3], act = (int)I[4], ract = (int)I[5];
    const REAL *U = P[0], *b2 = P[1], *rmask = P[7];
    const REAL *b2h = b2 ? b2 + 2 * u : 0;
    REAL *xp = P[2], *S = P[3], *a = P[4], *rh = P[5], *scratch = P[6], *hd = P[8];
    const uint8_t *keep = P[9];
    const SFX(strides) xs = SFX(span)(G, T, B), ss = SFX(span)(u, T + 1, B),
                       vs = SFX(span)(u, T, B);
    int64_t t, j, b, i, lh;
    const REAL *x = P[10], *W = P[11], *bias = P[12];
    const int xbm = (int)I[8];
    const int64_t xrs = xbm ? T * I[6] : I[6], xts = xbm ? I[6] : B * I[6];   /* x_t's rows */
    SFX(packed) PU = SFX(pack)(1, reset_after ? G : 2 * u, u, U, G, B),
                PUh = SFX(pack)(1, reset_after ? 0 : u, u, U + 2 * u, G, reset_after ? 0 : B);
    SFX(inputs) in;
    const int fused = SFX(fuse_inputs)(&in, G, I[6], W, B);
    if (!fused) SFX(project)(T, B, I[6], G, x, xbm, W, bias, b2, 2 * u, xp);
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * ss.step, *x_t = xp + t * xs.step;
        REAL *h_new = S + (t + 1) * ss.step, *a_t = a;
        REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        int64_t xr = xs.row;   /* x_t's row stride */
        const REAL *h_in = SFX(rec_input)(h, ss.row, rmask, hd ? hd + t * vs.step : 0, vs.row,
                                          u, B, &lh);
        if (fused) {   /* x_t W + b (+ b2z, b2r) in a_t itself, read in place below */
            SFX(step_inputs)(&in, x + t * xts, xrs, I[6], B, bias, b2, 2 * u, a_t);
            x_t = a_t;
            xr = B;
        }
        SFX(pgemm)(&PU, B, h_in, lh, 0, scratch, B);
        for (j = 0; j < 2 * u; j++)
            for (b = 0; b < B; b++) a_t[j * B + b] = x_t[j * xr + b] + scratch[j * B + b];
        SFX(act)(ract, a_t, 2 * n);
        if (reset_after) {
            for (j = 0; j < u; j++) {
                REAL c = b2h ? b2h[j] : 0;
                for (b = 0; b < B; b++)
                    hh[j * B + b] = x_t[(2 * u + j) * xr + b]
                                    + r[j * B + b] * (scratch[(2 * u + j) * B + b] + c);
            }
        } else {
            REAL *rh_t = rh + t * vs.step;
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) rh_t[j * vs.row + b] = r[j * B + b] * h_in[j * lh + b];
            if (fused) {
                SFX(pgemm)(&PUh, B, rh_t, vs.row, 1, hh, B);   /* + Uh^T (r h) */
            } else {
                SFX(pgemm)(&PUh, B, rh_t, vs.row, 0, hh, B);
                for (j = 0; j < u; j++)
                    for (b = 0; b < B; b++) hh[j * B + b] += x_t[(2 * u + j) * xr + b];
            }
        }
        SFX(act)(act, hh, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) {
                REAL hv = h[j * ss.row + b], c = hh[j * B + b];
                i = j * B + b;
                h_new[j * ss.row + b] = c + z[i] * (hv - c);
            }
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, ss.row, u, B);
        if (I[7]) SFX(copy_rows)(a_t, B, xp + t * xs.step, xs.row, G, B);   /* gates for x_t */
    }
    SFX(unpack)(&PU);
    SFX(unpack)(&PUh);
    if (fused) SFX(unfuse_inputs)(&in);
}

/* dh (u, B): in, dL/dh_T; out, dL/dh_0. dxp overwrites xp.
 * I: T, B, u, D, reset_after, act, ract, xbm
 * P: U, W, xp, S, a, hu (u, B) or NULL, rh, d (G, B), tmp (u, B), carried (u, B) or NULL, rmask,
 *    hd, keep, dy, dh, x, dx, dW, dU, db or NULL: (G,), or (2, G) with reset_after (input bias,
 *    recurrent), b2 or NULL (reset_after: the recurrent bias) */
static inline __attribute__((always_inline)) void
SFX(gru_backward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], D = I[3], G = 3 * u, n = u * B, TB = T * B;
    const int reset_after = (int)I[4], act = (int)I[5], ract = (int)I[6];
    const REAL *U = P[0], *W = P[1], *S = P[3], *rh = P[6], *rmask = P[10], *b2 = P[20];
    REAL *a = P[4];
    const REAL *hd = P[11], *dy = P[13], *x = P[15];
    REAL *dxp = P[2], *hu = P[5], *d = P[7], *tmp = P[8], *carried = P[9], *dh = P[14];
    REAL *dx = P[16], *dW = P[17], *dU = P[18], *db = P[19];
    const uint8_t *keep = P[12];
    const SFX(strides) xs = SFX(span)(G, T, B), ss = SFX(span)(u, T + 1, B),
                       vs = SFX(span)(u, T, B);
    /* every step's recurrent input, (u rows, T steps) */
    const REAL *H_in = rmask ? hd : S;
    const SFX(strides) is = rmask ? vs : ss;
    const SFX(mat) DXP = SFX(mview)(dxp, xs.row, xs.step / B),
                   HIN = SFX(mview)(H_in, is.row, is.step / B);
    int64_t t, i, j, b;
    REAL *dz = d, *dr = d + n, *dc = d + 2 * n;
    /* U (reset_after), or [Uz|Ur] and Uh; Uh^T for hu again */
    SFX(packed) PU = SFX(pack)(0, u, reset_after ? G : 2 * u, U, G, B),
                PUh = SFX(pack)(!!reset_after, u, u, U + 2 * u, G, B);
    if (reset_after) {   /* dL/dUh and dL/db'h add up step by step */
        for (j = 0; j < u; j++) memset(dU + j * G + 2 * u, 0, (size_t)u * sizeof(REAL));
        if (db) memset(db + G + 2 * u, 0, (size_t)u * sizeof(REAL));
    }
    for (t = T - 1; t >= 0; t--) {
        const REAL *h = S + t * ss.step, *a_t = a, *h_in = H_in + t * is.step;
        const REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        SFX(copy_rows)(dxp + t * xs.step, xs.row, a, B, G, B);     /* this step's gates */
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        /* candidate and update gate */
        for (i = 0; i < n; i++) dc[i] = ((REAL)1 - z[i]) * dh[i];
        SFX(dact_mul)(act, hh, dc, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) {
                i = j * B + b;
                dz[i] = (h[j * ss.row + b] - hh[i]) * dh[i];
            }
        SFX(dact_mul)(ract, z, dz, n);
        for (i = 0; i < n; i++) dh[i] *= z[i];               /* through z * h */
        if (reset_after) {
            SFX(pgemm)(&PUh, B, h_in, is.row, 0, hu, B);   /* hu = h Uh (+ bh' below) */
            for (j = 0; j < u; j++) {
                REAL c = b2 ? b2[2 * u + j] : 0;
                for (b = 0; b < B; b++) dr[j * B + b] = dc[j * B + b] * (hu[j * B + b] + c);
            }
            SFX(dact_mul)(ract, r, dr, n);
            SFX(copy_rows)(d, B, dxp + t * xs.step, xs.row, G, B);
            /* d's last block becomes dL/d(h Uh + bh') = dc * r */
            for (i = 0; i < n; i++) dc[i] *= r[i];
            SFX(gemm)(0, 1, u, u, B, 1, h_in, is.row, dc, B, 1, dU + 2 * u, G);
            if (db)
                for (j = 0; j < u; j++)
                    for (b = 0; b < B; b++) db[G + 2 * u + j] += dc[j * B + b];
            if (rmask) {
                SFX(pgemm)(&PU, B, d, B, 0, tmp, B);
                SFX(add_masked)(dh, tmp, rmask, n);
            } else {
                SFX(pgemm)(&PU, B, d, B, 1, dh, B);   /* dh += U dhu */
            }
        } else {
            /* r multiplies h before Uh */
            SFX(pgemm)(&PUh, B, dc, B, 0, tmp, B);   /* dL/d(r h) */
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) dr[j * B + b] = tmp[j * B + b] * h_in[j * is.row + b];
            SFX(dact_mul)(ract, r, dr, n);
            for (i = 0; i < n; i++) tmp[i] *= r[i];
            SFX(pgemm)(&PU, B, d, B, 1, tmp, B);     /* + [Uz|Ur] dzr */
            if (rmask) SFX(add_masked)(dh, tmp, rmask, n);
            else SFX(add)(dh, tmp, n);
            SFX(copy_rows)(d, B, dxp + t * xs.step, xs.row, G, B);
        }
        if (keep) SFX(add)(dh, carried, n);
    }
    SFX(unpack)(&PU);
    SFX(unpack)(&PUh);
    SFX(input_grads)(T, B, D, G, x, (int)I[7], W, DXP, dW, db, dx);
    SFX(grad_xyT)(u, 2 * u, TB, HIN, DXP, dU, G);
    if (reset_after) {   /* dL/db'z, db'r are dL/dbz, dbr */
        if (db) memcpy(db + G, db, (size_t)(2 * u) * sizeof(REAL));
    } else {
        SFX(grad_xyT)(u, u, TB, SFX(mview)(rh, vs.row, vs.step / B),
                      SFX(mview)(dxp + 2 * u * xs.row, DXP.r, DXP.c), dU + 2 * u, G);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LSTM, Keras's gate order i, f, g (the candidate, Keras's c), o. tc[t] = f(c_t).
 * I: T, B, u, act, ract, D, keep_gates (0: inference, xp need not hold the gates), threads (2:
 *    one sequence's steps may run in two slices of units on two threads; see run_steps), xbm
 * P: U, xp (written), Sh, Sc, a, tc, rmask, hd, keep, x, W, b or NULL */
typedef struct {
    const int64_t *I;
    void *const *P;
    SFX(packed) PU;
    SFX(inputs) in;
    int fused, sliced;
} SFX(lstm_fwd);

/* step t for units [j0, j1): all of them, or, with one sequence, a slice */
static inline __attribute__((always_inline)) void
SFX(lstm_fstep)(SFX(lstm_fwd) *f, int64_t t, int64_t j0, int64_t j1, const int64_t B)
{
    const int64_t *I = f->I;
    void *const *P = f->P;
    const int64_t T = I[0], u = I[2], D = I[5], G = 4 * u, n = u * B, r0 = j0 * B,
                  len = (j1 - j0) * B;
    const int act = (int)I[3], ract = (int)I[4];
    const REAL *U = P[0], *rmask = P[6], *W = P[10], *bias = P[11];
    REAL *xp = P[1], *Sh = P[2], *Sc = P[3], *a_t = P[4], *tc = P[5], *hd = P[7];
    const uint8_t *keep = P[8];
    const SFX(strides) xs = SFX(span)(G, T, B), ss = SFX(span)(u, T + 1, B),
                       vs = SFX(span)(u, T, B);
    const REAL *h = Sh + t * ss.step, *c = Sc + t * ss.step;
    REAL *h_new = Sh + (t + 1) * ss.step, *c_new = Sc + (t + 1) * ss.step, *tc_t = tc + t * n;
    int64_t j, k, lh;
    const REAL *h_in = SFX(rec_input)(h, ss.row, rmask, hd ? hd + t * vs.step : 0, vs.row, u, B,
                                      &lh);
    if (f->fused) {   /* x_t W + b + U^T h */
        SFX(step_inputs)(&f->in, (const REAL *)P[9] + t * (I[8] ? D : B * D), I[8] ? T * D : D,
                         D, B, P[11], 0, 0, a_t);
        SFX(pgemm)(&f->PU, B, h_in, lh, 1, a_t, B);
    } else if (f->sliced) {   /* one sequence, a slice: its rows of each gate, x_t W + b + U^T h */
        const REAL *xr = (const REAL *)P[9] + t * D;
        for (k = 0; k < 4; k++) {
            REAL *o = a_t + k * n + r0;
            for (j = 0; j < j1 - j0; j++) o[j] = SFX(row_bias)(bias, 0, 0, k * u + j0 + j);
            SFX(gemm)(1, 0, j1 - j0, 1, D, 1, W + k * u + j0, G, xr, 1, 1, o, 1);
            SFX(gemm)(1, 0, j1 - j0, 1, u, 1, U + k * u + j0, G, h_in, lh, 1, o, 1);
        }
    } else {
        SFX(pgemm)(&f->PU, B, h_in, lh, 0, a_t, B);       /* U^T h; + x_t W + b below */
#if !VMATH
        const REAL *x_t = xp + t * xs.step;
        int64_t b;
        for (j = 0; j < G; j++)
            for (b = 0; b < B; b++) a_t[j * B + b] += x_t[j * xs.row + b];
#endif
    }
#if VMATH
    {   /* the gates go straight to x_t's slot of xp; the projection x_t W + b, where it was
           made before the loop, comes from there too */
        float *slot = xp + t * xs.step + j0 * xs.row, *gates = I[6] ? slot : 0;
        const float *xw = f->fused || f->sliced ? 0 : slot;
        if (ract == ACT_SIGMOID && act == ACT_TANH)   /* Keras's and PyTorch's: as constants */
            lstm_cells_f32(a_t + r0, n, xw, c + j0 * ss.row, c_new + j0 * ss.row,
                           h_new + j0 * ss.row, tc_t + r0, ss.row, B == 1 ? 1 : j1 - j0,
                           B == 1 ? len : B, gates, u * xs.row, xs.row, ACT_SIGMOID, ACT_TANH);
        else
            lstm_cells_f32(a_t + r0, n, xw, c + j0 * ss.row, c_new + j0 * ss.row,
                           h_new + j0 * ss.row, tc_t + r0, ss.row, B == 1 ? 1 : j1 - j0,
                           B == 1 ? len : B, gates, u * xs.row, xs.row, ract, act);
    }
#else
    REAL *ig = a_t, *fg = a_t + n, *g = a_t + 2 * n, *og = a_t + 3 * n;
    int64_t i, b;
    SFX(act)(ract, ig + r0, len);
    SFX(act)(ract, fg + r0, len);
    SFX(act)(act, g + r0, len);
    SFX(act)(ract, og + r0, len);
    for (j = j0; j < j1; j++)
        for (b = 0; b < B; b++) {
            i = j * B + b;
            tc_t[i] = fg[i] * c[j * ss.row + b] + ig[i] * g[i];
            c_new[j * ss.row + b] = tc_t[i];
        }
    SFX(act)(act, tc_t + r0, len);
    for (j = j0; j < j1; j++)
        for (b = 0; b < B; b++) h_new[j * ss.row + b] = og[j * B + b] * tc_t[j * B + b];
#endif
    if (keep) {
        SFX(hold_masked)(keep + t * B, h + j0 * ss.row, h_new + j0 * ss.row, ss.row, j1 - j0, B);
        SFX(hold_masked)(keep + t * B, c + j0 * ss.row, c_new + j0 * ss.row, ss.row, j1 - j0, B);
    }
    if (I[6] && !VMATH)   /* the gates, for x_t */
        for (k = 0; k < 4; k++)
            SFX(copy_rows)(a_t + k * n + r0, B, xp + t * xs.step + (k * u + j0) * xs.row, xs.row,
                           j1 - j0, B);
}

/* one sequence's step t, slice 0 or 1 of the units, for run_steps() */
static void SFX(lstm_fslice)(void *f, int64_t t, int slice)
{
    const int64_t u = ((SFX(lstm_fwd) *)f)->I[2], half = SFX(slice_at)(u);
    SFX(lstm_fstep)(f, t, slice ? half : 0, slice ? u : half, 1);
}

static inline __attribute__((always_inline)) void
SFX(lstm_forward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], G = 4 * u;
    int64_t t;
    SFX(lstm_fwd) f;
    f.I = I;
    f.P = P;
    f.PU = SFX(pack)(1, G, u, P[0], G, B);
    f.fused = SFX(fuse_inputs)(&f.in, G, I[5], P[10], B);
    f.sliced = B == 1 && I[7] > 1 && !P[6] && SFX(slice_at)(u) < u;
    if (!f.fused && !f.sliced)
        SFX(project)(T, B, I[5], G, P[9], (int)I[8], P[10], P[11], 0, 0, P[1]);
    if (f.sliced)
        run_steps(T, SFX(lstm_fslice), &f, 2);
    else
        for (t = 0; t < T; t++) SFX(lstm_fstep)(&f, t, 0, u, B);
    SFX(unpack)(&f.PU);
    if (f.fused) SFX(unfuse_inputs)(&f.in);
}

/* dh, dc (u, B): in, dL/dh_T and dL/dc_T; out, the same for step 0.
 * I: T, B, u, D, act, ract, xbm
 * P: U, W, xp, Sc, Sh, a, tc, d (G, B), carried (2u, B) or NULL, rmask, hd, keep, dy, dh, dc,
 *    x, dx, dW, dU, db or NULL */
static inline __attribute__((always_inline)) void
SFX(lstm_backward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], D = I[3], G = 4 * u, n = u * B, TB = T * B;
    const int act = (int)I[4], ract = (int)I[5];
    const REAL *U = P[0], *W = P[1], *Sc = P[3], *Sh = P[4], *tc = P[6];
    REAL *a = P[5];
    const REAL *rmask = P[9], *hd = P[10], *dy = P[12], *x = P[15];
    REAL *dxp = P[2], *d = P[7], *carried = P[8], *dh = P[13], *dc = P[14], *dx = P[16];
    REAL *dW = P[17], *dU = P[18], *db = P[19];
    const uint8_t *keep = P[11];
    const SFX(strides) xs = SFX(span)(G, T, B), ss = SFX(span)(u, T + 1, B),
                       vs = SFX(span)(u, T, B);
    const SFX(mat) DXP = SFX(mview)(dxp, xs.row, xs.step / B),
                   HIN = rmask ? SFX(mview)(hd, vs.row, vs.step / B)
                               : SFX(mview)(Sh, ss.row, ss.step / B);
    SFX(packed) PU = SFX(pack)(0, u, G, U, G, B);
    int64_t t, i;
    for (t = T - 1; t >= 0; t--) {
        const REAL *c = Sc + t * ss.step, *tc_t = tc + t * n;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) {
            SFX(split_masked)(keep + t * B, dh, carried, u, B);
            SFX(split_masked)(keep + t * B, dc, carried + n, u, B);
        }
#if VMATH   /* one pass, the gates read from x_t's slot and dL/dxp written there and to d */
        if (ract == ACT_SIGMOID && act == ACT_TANH)
            lstm_cells_back_f32(dxp + t * xs.step, u * xs.row, xs.row, c, ss.row, tc_t, dh, dc, d,
                                n, B == 1 ? 1 : u, B == 1 ? u : B, ACT_SIGMOID, ACT_TANH);
        else
            lstm_cells_back_f32(dxp + t * xs.step, u * xs.row, xs.row, c, ss.row, tc_t, dh, dc, d,
                                n, B == 1 ? 1 : u, B == 1 ? u : B, ract, act);
        (void)a;
#else
        const REAL *ig = a, *fg = a + n, *g = a + 2 * n, *og = a + 3 * n;
        REAL *di = d, *df = d + n, *dg = d + 2 * n, *dO = d + 3 * n;
        int64_t j, b;
        SFX(copy_rows)(dxp + t * xs.step, xs.row, a, B, G, B);     /* this step's gates */
        /* output gate; the cell state through h_t = o * f(c_t) */
        for (i = 0; i < n; i++) dO[i] = dh[i] * tc_t[i];
        SFX(dact_mul)(ract, og, dO, n);
        for (i = 0; i < n; i++) dh[i] *= og[i];
        SFX(dact_mul)(act, tc_t, dh, n);
        SFX(add)(dc, dh, n);
        /* input gate, forget gate, candidate */
        for (i = 0; i < n; i++) di[i] = dc[i] * g[i];
        SFX(dact_mul)(ract, ig, di, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) df[j * B + b] = dc[j * B + b] * c[j * ss.row + b];
        SFX(dact_mul)(ract, fg, df, n);
        for (i = 0; i < n; i++) dg[i] = dc[i] * ig[i];
        SFX(dact_mul)(act, g, dg, n);
        for (i = 0; i < n; i++) dc[i] *= fg[i];
        SFX(copy_rows)(d, B, dxp + t * xs.step, xs.row, G, B);
#endif
        /* the previous h, through h U */
        SFX(pgemm)(&PU, B, d, B, 0, dh, B);
        if (rmask) for (i = 0; i < n; i++) dh[i] *= rmask[i];
        if (keep) {
            SFX(add)(dh, carried, n);
            SFX(add)(dc, carried + n, n);
        }
    }
    SFX(unpack)(&PU);
    SFX(input_grads)(T, B, D, G, x, (int)I[6], W, DXP, dW, db, dx);
    SFX(grad_xyT)(u, G, TB, HIN, DXP, dU, G);
}

/* ------------------------------------------------------------------------------------------ */
/* SimpleRNN: h_t = f(x W + b + h U).
 * I: T, B, u, act, D, xbm
 * P: U, xp (written), S, scratch (u, B), rmask, hd, keep, x, W, b or NULL */
static inline __attribute__((always_inline)) void
SFX(rnn_forward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], n = u * B;
    const int act = (int)I[3];
    const REAL *U = P[0], *rmask = P[4];
    REAL *xp = P[1], *S = P[2], *scratch = P[3], *hd = P[5];
    const uint8_t *keep = P[6];
    const SFX(strides) xs = SFX(span)(u, T, B), ss = SFX(span)(u, T + 1, B);
    int64_t t, j, b, lh;
    SFX(packed) PU = SFX(pack)(1, u, u, U, u, B);
    SFX(inputs) in;
    const int fused = SFX(fuse_inputs)(&in, u, I[4], P[8], B);
    if (!fused) SFX(project)(T, B, I[4], u, P[7], (int)I[5], P[8], P[9], 0, 0, xp);
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * ss.step, *x_t = xp + t * xs.step;
        REAL *h_new = S + (t + 1) * ss.step;
        const REAL *h_in = SFX(rec_input)(h, ss.row, rmask, hd ? hd + t * xs.step : 0, xs.row,
                                          u, B, &lh);
        if (fused) {   /* x_t W + b + U^T h */
            SFX(step_inputs)(&in, (const REAL *)P[7] + t * (I[5] ? I[4] : B * I[4]),
                             I[5] ? T * I[4] : I[4], I[4], B, P[9], 0, 0,
                             scratch);
            SFX(pgemm)(&PU, B, h_in, lh, 1, scratch, B);
        } else {
            SFX(pgemm)(&PU, B, h_in, lh, 0, scratch, B);
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) scratch[j * B + b] += x_t[j * xs.row + b];
        }
        SFX(act)(act, scratch, n);
        SFX(copy_rows)(scratch, B, h_new, ss.row, u, B);
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, ss.row, u, B);
    }
    SFX(unpack)(&PU);
    if (fused) SFX(unfuse_inputs)(&in);
}

/* I: T, B, u, D, act, xbm
 * P: U, W, xp, S, d (u, B), carried or NULL, rmask, hd, keep, dy, dh, x, dx, dW, dU, db */
static inline __attribute__((always_inline)) void
SFX(rnn_backward_body)(const int64_t *I, void *const *P, const int64_t B)
{
    const int64_t T = I[0], u = I[2], D = I[3], n = u * B, TB = T * B;
    const int act = (int)I[4];
    const REAL *U = P[0], *W = P[1], *S = P[3], *rmask = P[6], *hd = P[7], *dy = P[9];
    const REAL *x = P[11];
    REAL *dxp = P[2], *d = P[4], *carried = P[5], *dh = P[10], *dx = P[12], *dW = P[13];
    REAL *dU = P[14], *db = P[15];
    const uint8_t *keep = P[8];
    const SFX(strides) xs = SFX(span)(u, T, B), ss = SFX(span)(u, T + 1, B);
    const SFX(mat) DXP = SFX(mview)(dxp, xs.row, xs.step / B),
                   HIN = rmask ? SFX(mview)(hd, xs.row, xs.step / B)
                               : SFX(mview)(S, ss.row, ss.step / B);
    SFX(packed) PU = SFX(pack)(0, u, u, U, u, B);
    int64_t t, i, j;
    for (t = T - 1; t >= 0; t--) {
        const REAL *h_out = S + (t + 1) * ss.step;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        memcpy(d, dh, (size_t)n * sizeof(REAL));
        if (ss.row == B) SFX(dact_mul)(act, h_out, d, n);   /* through f, via its output h_t */
        else for (j = 0; j < u; j++) SFX(dact_mul)(act, h_out + j * ss.row, d + j * B, B);
        SFX(pgemm)(&PU, B, d, B, 0, dh, B);
        if (rmask) for (i = 0; i < n; i++) dh[i] *= rmask[i];
        SFX(copy_rows)(d, B, dxp + t * xs.step, xs.row, u, B);
        if (keep) SFX(add)(dh, carried, n);
    }
    SFX(unpack)(&PU);
    SFX(input_grads)(T, B, D, u, x, (int)I[5], W, DXP, dW, db, dx);
    SFX(grad_xyT)(u, u, TB, HIN, DXP, dU, u);
}

/* ------------------------------------------------------------------------------------------ */
/* Adam's update of a flat parameter vector, in one pass (optimizers.Adam has the same in NumPy):
 *   m += (g - m) c1;  v += (g^2 - v) c2;  w -= alpha m / (sqrt(v) + eps)
 * I: n.  P: w, g, m, v, s = (alpha, c1, c2, eps) */
static void SFX(adam_update)(const int64_t *I, void *const *P)
{
    const int64_t n = I[0];
    REAL *restrict w = P[0], *restrict m = P[2], *restrict v = P[3];
    const REAL *restrict g = P[1], *s = P[4];
    const REAL alpha = s[0], c1 = s[1], c2 = s[2], eps = s[3];
    int64_t i;
    for (i = 0; i < n; i++) {
        REAL mi = m[i] + (g[i] - m[i]) * c1, vi = v[i] + (g[i] * g[i] - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        w[i] -= mi * alpha / (SQRT(vi) + eps);
    }
}

/* An activation in place, for the tests of its accuracy. I: code, n.  P: y (n) */
static void SFX(activate)(const int64_t *I, void *const *P) { SFX(act)((int)I[0], P[0], I[1]); }

/* ------------------------------------------------------------------------------------------ */
/* The entry points: a batch of one gets its own copy of each loop, compiled with B = 1, where a
 * step's rows are contiguous and the compiler vectorises across them. */
#define SFX_ENTRY(name)                                                                      \
    static void SFX(name)(const int64_t *I, void *const *P)                                 \
    {                                                                                        \
        if (I[1] == 1) SFX(name##_body)(I, P, 1);                                            \
        else SFX(name##_body)(I, P, I[1]);                                                   \
    }
SFX_ENTRY(gru_forward)
SFX_ENTRY(gru_backward)
SFX_ENTRY(lstm_forward)
SFX_ENTRY(lstm_backward)
SFX_ENTRY(rnn_forward)
SFX_ENTRY(rnn_backward)
#undef SFX_ENTRY
