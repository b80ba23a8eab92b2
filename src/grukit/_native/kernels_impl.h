/* The loops of kernels.c for one floating-point type REAL; SFX(name) gives each its typed name.
 *
 * Every kernel takes (I, P): its integer arguments and its buffers, in the order its comment
 * gives. Layouts (row-major; u units, G gate rows, T steps, B sequences, D input features):
 *   per step, contiguous:    a (T, G, B) gate values; tc (T, u, B); dy (T, u, B) or NULL;
 *                            keep (T, B) 1 where a step is valid, or NULL; dh, dc, d, tmp (., B)
 *   feature-major over time: xp (G, T*B) projected inputs, overwritten going back by dL/dxp;
 *                            S (u, T+1, B) states, S[:, 0] the initial one; hu, rh, hd (u, T, B)
 *   so that step t's block of a feature-major buffer is column block t (row stride T*B, or
 *   (T+1)*B for states), and the weight gradients are one matrix product over all steps each.
 *   x, dx (T*B, D); W (D, G); U (u, G), both in the loop's gate order. Gradients are written.
 */

/* Products with few columns (N = B <= SMALL_N sequences) in the step loops: a BLAS call costs more
 * than the arithmetic there, so these two are written out. alpha = 1; beta is 0 or 1. */
#define SMALL_N 8

/* C (M, N) = A^T B + beta C, A (K, M), B (K, N): every column of C as sum_k A[k, :] B[k, b] */
static void SFX(small_tn)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                          const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc, REAL *acc)
{
    int64_t b, k, m;
    for (b = 0; b < N; b++) {
        for (m = 0; m < M; m++) acc[m] = beta != 0 ? C[m * ldc + b] : 0;
        for (k = 0; k + 4 <= K; k += 4) {
            const REAL *a0 = A + k * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
            REAL h0 = B[k * ldb + b], h1 = B[(k + 1) * ldb + b], h2 = B[(k + 2) * ldb + b],
                 h3 = B[(k + 3) * ldb + b];
            for (m = 0; m < M; m++) acc[m] += a0[m] * h0 + a1[m] * h1 + a2[m] * h2 + a3[m] * h3;
        }
        for (; k < K; k++) {
            const REAL *a0 = A + k * lda;
            REAL h0 = B[k * ldb + b];
            for (m = 0; m < M; m++) acc[m] += a0[m] * h0;
        }
        for (m = 0; m < M; m++) C[m * ldc + b] = acc[m];
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

/* C = alpha op(A) op(B) + beta C, all row-major */
static void SFX(gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, REAL alpha, const REAL *A,
                      int64_t lda, const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc)
{
    int a = ta ? TRANS : NO_TRANS, b = tb ? TRANS : NO_TRANS;
    if (N <= SMALL_N && !tb && alpha == 1 && (beta == 0 || beta == 1)) {
        REAL buf[4096];
        if ((ta ? M : K) <= 4096) {
            if (ta) SFX(small_tn)(M, N, K, A, lda, B, ldb, beta, C, ldc, buf);
            else SFX(small_nn)(M, N, K, A, lda, B, ldb, beta, C, ldc, buf);
            return;
        }
    }
    if (blas_ilp64)
        ((GEMM64_T)GEMM_PTR)(ROW_MAJOR, a, b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        ((GEMM32_T)GEMM_PTR)(ROW_MAJOR, a, b, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                             (int)ldb, beta, C, (int)ldc);
}

/* y = f(y) in place, n contiguous values */
static void SFX(act)(int code, REAL *restrict y, int64_t n)
{
    int64_t i;
    switch (code) {
    case ACT_TANH:
        for (i = 0; i < n; i++) y[i] = TANH(y[i]);
        break;
    case ACT_SIGMOID:
        for (i = 0; i < n; i++) {
            REAL v = y[i] > SIGMOID_FLOOR ? y[i] : SIGMOID_FLOOR;
            y[i] = (REAL)1 / ((REAL)1 + EXP(-v));
        }
        break;
    case ACT_RELU:
        for (i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : 0;
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

/* dst (rows, B) with row stride ld <- src (rows, B) contiguous */
static void SFX(put_rows)(const REAL *src, REAL *dst, int64_t ld, int64_t rows, int64_t B)
{
    int64_t j;
    for (j = 0; j < rows; j++) memcpy(dst + j * ld, src + j * B, (size_t)B * sizeof(REAL));
}

/* acc[g] = sum_k v[g, k], v (G, K) contiguous */
static void SFX(row_sums)(const REAL *restrict v, REAL *restrict acc, int64_t G, int64_t K)
{
    int64_t g, k;
    for (g = 0; g < G; g++) {
        REAL s = 0;
        for (k = 0; k < K; k++) s += v[g * K + k];
        acc[g] = s;
    }
}

/* after the loop: dL/dW = x^T dxp^T, dL/dx = dxp^T W^T, dL/db = dxp summed over steps and batch */
static void SFX(input_grads)(int64_t TB, int64_t D, int64_t G, const REAL *x, const REAL *W,
                             const REAL *dxp, REAL *dW, REAL *db, REAL *dx)
{
    SFX(gemm)(1, 1, D, G, TB, 1, x, D, dxp, TB, 0, dW, G);
    SFX(gemm)(1, 1, TB, D, G, 1, dxp, TB, W, G, 0, dx, D);
    if (db) SFX(row_sums)(dxp, db, G, TB);
}

/* ------------------------------------------------------------------------------------------ */
/* GRU, gate order z, r, h. With reset_after, hu = h Uh + bh' is kept and h~ = f(xh + r * hu);
 * without, rh = r * h is kept and h~ = f(xh + (r * h) Uh).
 * I: T, B, u, reset_after, act, ract
 * P: U, b2h (u) or NULL, xp, S, a, hu or NULL, rh or NULL, scratch (G, B), rmask (u, B) or NULL,
 *    hd or NULL, keep or NULL */
static void SFX(gru_forward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], G = 3 * u, n = u * B;
    const int64_t lt = T * B, ls = (T + 1) * B;
    const int reset_after = (int)I[3], act = (int)I[4], ract = (int)I[5];
    const REAL *U = P[0], *b2h = P[1], *xp = P[2], *rmask = P[8];
    REAL *S = P[3], *a = P[4], *hu = P[5], *rh = P[6], *scratch = P[7], *hd = P[9];
    const uint8_t *keep = P[10];
    int64_t t, j, b, i, lh;
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * B, *x_t = xp + t * B;
        REAL *h_new = S + (t + 1) * B, *a_t = a + t * G * B;
        REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        const REAL *h_in = SFX(rec_input)(h, ls, rmask, hd ? hd + t * B : 0, lt, u, B, &lh);
        SFX(gemm)(1, 0, reset_after ? G : 2 * u, B, u, 1, U, G, h_in, lh, 0, scratch, B);
        for (j = 0; j < 2 * u; j++)
            for (b = 0; b < B; b++) a_t[j * B + b] = x_t[j * lt + b] + scratch[j * B + b];
        SFX(act)(ract, a_t, 2 * n);
        if (reset_after) {
            REAL *hu_t = hu + t * B;
            for (j = 0; j < u; j++) {
                REAL c = b2h ? b2h[j] : 0;
                for (b = 0; b < B; b++) {
                    REAL v = scratch[(2 * u + j) * B + b] + c;
                    hu_t[j * lt + b] = v;
                    hh[j * B + b] = x_t[(2 * u + j) * lt + b] + r[j * B + b] * v;
                }
            }
        } else {
            REAL *rh_t = rh + t * B;
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) rh_t[j * lt + b] = r[j * B + b] * h_in[j * lh + b];
            SFX(gemm)(1, 0, u, B, u, 1, U + 2 * u, G, rh_t, lt, 0, hh, B);  /* Uh^T (r h) */
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) hh[j * B + b] += x_t[(2 * u + j) * lt + b];
        }
        SFX(act)(act, hh, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) {
                REAL hv = h[j * ls + b], c = hh[j * B + b];
                i = j * B + b;
                h_new[j * ls + b] = c + z[i] * (hv - c);
            }
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, ls, u, B);
    }
}

/* dh (u, B): in, dL/dh_T; out, dL/dh_0. dxp overwrites xp; hu is overwritten by dL/d(h Uh + bh').
 * I: T, B, u, D, reset_after, act, ract
 * P: U, W, xp, S, a, hu, rh, d (G, B), tmp (u, B), carried (u, B) or NULL, rmask, hd, keep, dy,
 *    dh, x, dx, dW, dU, db (G) or NULL, dbh (u) or NULL */
static void SFX(gru_backward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], D = I[3], G = 3 * u, n = u * B;
    const int64_t lt = T * B, ls = (T + 1) * B;
    const int reset_after = (int)I[4], act = (int)I[5], ract = (int)I[6];
    const REAL *U = P[0], *W = P[1], *S = P[3], *a = P[4], *rh = P[6], *rmask = P[10];
    const REAL *hd = P[11], *dy = P[13], *x = P[15];
    REAL *dxp = P[2], *hu = P[5], *d = P[7], *tmp = P[8], *carried = P[9], *dh = P[14];
    REAL *dx = P[16], *dW = P[17], *dU = P[18], *db = P[19], *dbh = P[20];
    const uint8_t *keep = P[12];
    const REAL *H_in = rmask ? hd : S;         /* every step's recurrent input, (u, T*B) */
    const int64_t l_in = rmask ? lt : ls;
    int64_t t, i, j, b;
    REAL *dz = d, *dr = d + n, *dc = d + 2 * n;
    for (t = T - 1; t >= 0; t--) {
        const REAL *h = S + t * B, *a_t = a + t * G * B, *h_in = H_in + t * B;
        const REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        /* candidate and update gate */
        for (i = 0; i < n; i++) dc[i] = ((REAL)1 - z[i]) * dh[i];
        SFX(dact_mul)(act, hh, dc, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) {
                i = j * B + b;
                dz[i] = (h[j * ls + b] - hh[i]) * dh[i];
            }
        SFX(dact_mul)(ract, z, dz, n);
        for (i = 0; i < n; i++) dh[i] *= z[i];               /* through z * h */
        if (reset_after) {
            REAL *hu_t = hu + t * B;
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) dr[j * B + b] = dc[j * B + b] * hu_t[j * lt + b];
            SFX(dact_mul)(ract, r, dr, n);
            SFX(put_rows)(d, dxp + t * B, lt, G, B);
            /* d's last block becomes dL/d(h Uh + bh') = dc * r, kept in hu for dL/dU */
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) {
                    i = j * B + b;
                    dc[i] *= r[i];
                    hu_t[j * lt + b] = dc[i];
                }
            if (rmask) {
                SFX(gemm)(0, 0, u, B, G, 1, U, G, d, B, 0, tmp, B);
                SFX(add_masked)(dh, tmp, rmask, n);
            } else {
                SFX(gemm)(0, 0, u, B, G, 1, U, G, d, B, 1, dh, B);   /* dh += U dhu */
            }
        } else {
            /* r multiplies h before Uh */
            SFX(gemm)(0, 0, u, B, u, 1, U + 2 * u, G, dc, B, 0, tmp, B);   /* dL/d(r h) */
            for (j = 0; j < u; j++)
                for (b = 0; b < B; b++) dr[j * B + b] = tmp[j * B + b] * h_in[j * l_in + b];
            SFX(dact_mul)(ract, r, dr, n);
            for (i = 0; i < n; i++) tmp[i] *= r[i];
            SFX(gemm)(0, 0, u, B, 2 * u, 1, U, G, d, B, 1, tmp, B);     /* + [Uz|Ur] dzr */
            if (rmask) SFX(add_masked)(dh, tmp, rmask, n);
            else SFX(add)(dh, tmp, n);
            SFX(put_rows)(d, dxp + t * B, lt, G, B);
        }
        if (keep) SFX(add)(dh, carried, n);
    }
    SFX(input_grads)(lt, D, G, x, W, dxp, dW, db, dx);
    SFX(gemm)(0, 1, u, 2 * u, lt, 1, H_in, l_in, dxp, lt, 0, dU, G);
    if (reset_after) {
        SFX(gemm)(0, 1, u, u, lt, 1, H_in, l_in, hu, lt, 0, dU + 2 * u, G);
        if (dbh) SFX(row_sums)(hu, dbh, u, lt);
    } else {
        SFX(gemm)(0, 1, u, u, lt, 1, rh, lt, dxp + 2 * u * lt, lt, 0, dU + 2 * u, G);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LSTM, loop gate order i, f, o, g (U and W permuted to it by the caller). tc[t] = f(c_t).
 * I: T, B, u, act, ract
 * P: U, xp, Sh, Sc, a, tc, rmask, hd, keep */
static void SFX(lstm_forward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], G = 4 * u, n = u * B;
    const int64_t lt = T * B, ls = (T + 1) * B;
    const int act = (int)I[3], ract = (int)I[4];
    const REAL *U = P[0], *xp = P[1], *rmask = P[6];
    REAL *Sh = P[2], *Sc = P[3], *a = P[4], *tc = P[5], *hd = P[7];
    const uint8_t *keep = P[8];
    int64_t t, j, b, i, lh;
    for (t = 0; t < T; t++) {
        const REAL *h = Sh + t * B, *c = Sc + t * B, *x_t = xp + t * B;
        REAL *h_new = Sh + (t + 1) * B, *c_new = Sc + (t + 1) * B, *a_t = a + t * G * B;
        REAL *ig = a_t, *fg = a_t + n, *og = a_t + 2 * n, *g = a_t + 3 * n, *tc_t = tc + t * n;
        const REAL *h_in = SFX(rec_input)(h, ls, rmask, hd ? hd + t * B : 0, lt, u, B, &lh);
        SFX(gemm)(1, 0, G, B, u, 1, U, G, h_in, lh, 0, a_t, B);          /* U^T h */
        for (j = 0; j < G; j++)
            for (b = 0; b < B; b++) a_t[j * B + b] += x_t[j * lt + b];
        SFX(act)(ract, a_t, 3 * n);
        SFX(act)(act, g, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) {
                i = j * B + b;
                tc_t[i] = fg[i] * c[j * ls + b] + ig[i] * g[i];
                c_new[j * ls + b] = tc_t[i];
            }
        SFX(act)(act, tc_t, n);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) h_new[j * ls + b] = og[j * B + b] * tc_t[j * B + b];
        if (keep) {
            SFX(hold_masked)(keep + t * B, h, h_new, ls, u, B);
            SFX(hold_masked)(keep + t * B, c, c_new, ls, u, B);
        }
    }
}

/* dh, dc (u, B): in, dL/dh_T and dL/dc_T; out, the same for step 0.
 * I: T, B, u, D, act, ract
 * P: U, W, xp, Sc, Sh, a, tc, d (G, B), carried (2u, B) or NULL, rmask, hd, keep, dy, dh, dc,
 *    x, dx, dW, dU, db or NULL */
static void SFX(lstm_backward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], D = I[3], G = 4 * u, n = u * B;
    const int64_t lt = T * B, ls = (T + 1) * B;
    const int act = (int)I[4], ract = (int)I[5];
    const REAL *U = P[0], *W = P[1], *Sc = P[3], *Sh = P[4], *a = P[5], *tc = P[6];
    const REAL *rmask = P[9], *hd = P[10], *dy = P[12], *x = P[15];
    REAL *dxp = P[2], *d = P[7], *carried = P[8], *dh = P[13], *dc = P[14], *dx = P[16];
    REAL *dW = P[17], *dU = P[18], *db = P[19];
    const uint8_t *keep = P[11];
    REAL *di = d, *df = d + n, *dO = d + 2 * n, *dg = d + 3 * n;
    int64_t t, i, j, b;
    for (t = T - 1; t >= 0; t--) {
        const REAL *c = Sc + t * B, *a_t = a + t * G * B, *tc_t = tc + t * n;
        const REAL *ig = a_t, *fg = a_t + n, *og = a_t + 2 * n, *g = a_t + 3 * n;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) {
            SFX(split_masked)(keep + t * B, dh, carried, u, B);
            SFX(split_masked)(keep + t * B, dc, carried + n, u, B);
        }
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
            for (b = 0; b < B; b++) df[j * B + b] = dc[j * B + b] * c[j * ls + b];
        SFX(dact_mul)(ract, fg, df, n);
        for (i = 0; i < n; i++) dg[i] = dc[i] * ig[i];
        SFX(dact_mul)(act, g, dg, n);
        for (i = 0; i < n; i++) dc[i] *= fg[i];
        /* the previous h, through h U */
        SFX(gemm)(0, 0, u, B, G, 1, U, G, d, B, 0, dh, B);
        if (rmask) for (i = 0; i < n; i++) dh[i] *= rmask[i];
        SFX(put_rows)(d, dxp + t * B, lt, G, B);
        if (keep) {
            SFX(add)(dh, carried, n);
            SFX(add)(dc, carried + n, n);
        }
    }
    SFX(input_grads)(lt, D, G, x, W, dxp, dW, db, dx);
    SFX(gemm)(0, 1, u, G, lt, 1, rmask ? hd : Sh, rmask ? lt : ls, dxp, lt, 0, dU, G);
}

/* ------------------------------------------------------------------------------------------ */
/* SimpleRNN: h_t = f(x W + b + h U).
 * I: T, B, u, act
 * P: U, xp, S, scratch (u, B), rmask, hd, keep */
static void SFX(rnn_forward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], n = u * B, lt = T * B, ls = (T + 1) * B;
    const int act = (int)I[3];
    const REAL *U = P[0], *xp = P[1], *rmask = P[4];
    REAL *S = P[2], *scratch = P[3], *hd = P[5];
    const uint8_t *keep = P[6];
    int64_t t, j, b, lh;
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * B, *x_t = xp + t * B;
        REAL *h_new = S + (t + 1) * B;
        const REAL *h_in = SFX(rec_input)(h, ls, rmask, hd ? hd + t * B : 0, lt, u, B, &lh);
        SFX(gemm)(1, 0, u, B, u, 1, U, u, h_in, lh, 0, scratch, B);
        for (j = 0; j < u; j++)
            for (b = 0; b < B; b++) scratch[j * B + b] += x_t[j * lt + b];
        SFX(act)(act, scratch, n);
        SFX(put_rows)(scratch, h_new, ls, u, B);
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, ls, u, B);
    }
}

/* I: T, B, u, D, act
 * P: U, W, xp, S, d (u, B), carried or NULL, rmask, hd, keep, dy, dh, x, dx, dW, dU, db */
static void SFX(rnn_backward)(const int64_t *I, void *const *P)
{
    const int64_t T = I[0], B = I[1], u = I[2], D = I[3], n = u * B, lt = T * B;
    const int64_t ls = (T + 1) * B;
    const int act = (int)I[4];
    const REAL *U = P[0], *W = P[1], *S = P[3], *rmask = P[6], *hd = P[7], *dy = P[9];
    const REAL *x = P[11];
    REAL *dxp = P[2], *d = P[4], *carried = P[5], *dh = P[10], *dx = P[12], *dW = P[13];
    REAL *dU = P[14], *db = P[15];
    const uint8_t *keep = P[8];
    int64_t t, i, j;
    for (t = T - 1; t >= 0; t--) {
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        memcpy(d, dh, (size_t)n * sizeof(REAL));
        for (j = 0; j < u; j++)   /* through f, whose output h_t has row stride ls */
            SFX(dact_mul)(act, S + (t + 1) * B + j * ls, d + j * B, B);
        SFX(gemm)(0, 0, u, B, u, 1, U, u, d, B, 0, dh, B);
        if (rmask) for (i = 0; i < n; i++) dh[i] *= rmask[i];
        SFX(put_rows)(d, dxp + t * B, lt, u, B);
        if (keep) SFX(add)(dh, carried, n);
    }
    SFX(input_grads)(lt, D, u, x, W, dxp, dW, db, dx);
    SFX(gemm)(0, 1, u, u, lt, 1, rmask ? hd : S, rmask ? lt : ls, dxp, lt, 0, dU, u);
}
