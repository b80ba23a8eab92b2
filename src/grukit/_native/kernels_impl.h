/* The loops of kernels.c for one floating-point type REAL; SFX(name) gives each its typed name.
 *
 * Layouts (row-major): xp (T, G, B) projected inputs, overwritten going back by dL/dxp; states
 * S (T+1, u, B) with S[0] the initial state; gate values a (T, G, B); masks keep (T, B) with 1
 * where a step is valid; recurrent-dropout mask rmask (u, B) and the dropped states hd (T, u, B);
 * x (T, B, D); W (D, G) and U (u, G) in the loop's gate order; dy (T, u, B), the gradient of the
 * output sequence, or NULL. Gradients dW, dU, db are accumulated: the caller zeroes them.
 */

/* C = alpha op(A) op(B) + beta C, all row-major */
static void SFX(gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, REAL alpha, const REAL *A,
                      int64_t lda, const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc)
{
    int a = ta ? TRANS : NO_TRANS, b = tb ? TRANS : NO_TRANS;
    if (blas_ilp64)
        ((GEMM64_T)GEMM_PTR)(ROW_MAJOR, a, b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        ((GEMM32_T)GEMM_PTR)(ROW_MAJOR, a, b, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                             (int)ldb, beta, C, (int)ldc);
}

/* y = f(y) in place */
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

/* d *= f'(x), written through the output y = f(x) */
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

/* the recurrent matmul's input: h, or h times the recurrent dropout mask (kept in hd[t]) */
static const REAL *SFX(rec_input)(const REAL *h, const REAL *rmask, REAL *hd_t, int64_t n)
{
    int64_t i;
    if (!rmask) return h;
    for (i = 0; i < n; i++) hd_t[i] = h[i] * rmask[i];
    return hd_t;
}

/* where keep[b] is 0, the new state is the old one */
static void SFX(hold_masked)(const uint8_t *keep_t, const REAL *old, REAL *new_, int64_t u,
                             int64_t B)
{
    int64_t j, b;
    for (j = 0; j < u; j++)
        for (b = 0; b < B; b++)
            if (!keep_t[b]) new_[j * B + b] = old[j * B + b];
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

/* sums over the batch: acc[g] += sum_b v[g, b] */
static void SFX(row_sums)(const REAL *restrict v, REAL *restrict acc, int64_t G, int64_t B)
{
    int64_t g, b;
    for (g = 0; g < G; g++) {
        REAL s = 0;
        for (b = 0; b < B; b++) s += v[g * B + b];
        acc[g] += s;
    }
}

/* what a step's dL/dxp_t (G, B) gives the input weights, the bias and the input x_t (B, D) */
static void SFX(input_grads)(int64_t B, int64_t D, int64_t G, const REAL *x_t, const REAL *W,
                             const REAL *dxp_t, REAL *dW, REAL *db, REAL *dx_t)
{
    SFX(gemm)(1, 1, D, G, B, 1, x_t, D, dxp_t, B, 1, dW, G);       /* dW += x_t^T dxp_t^T */
    if (db) SFX(row_sums)(dxp_t, db, G, B);
    SFX(gemm)(1, 1, B, D, G, 1, dxp_t, B, W, G, 0, dx_t, D);       /* dx_t = dxp_t^T W^T */
}

/* ------------------------------------------------------------------------------------------ */
/* GRU, gate order z, r, h. reset_after: hu[t] = h Uh + bh' is kept and h~ = f(xh + r * hu);
 * otherwise rh[t] = r * h is kept and h~ = f(xh + (r * h) Uh). scratch is (3u, B). */
void SFX(gru_forward)(int64_t T, int64_t B, int64_t u, int reset_after, int act, int ract,
                      const REAL *U, const REAL *b2h, const REAL *xp, REAL *S, REAL *a, REAL *hu,
                      REAL *rh, REAL *scratch, const REAL *rmask, REAL *hd, const uint8_t *keep)
{
    int64_t t, i, j, b, n = u * B, G = 3 * u;
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * n, *x_t = xp + t * G * B;
        REAL *h_new = S + (t + 1) * n, *a_t = a + t * G * B;
        REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        const REAL *h_in = SFX(rec_input)(h, rmask, hd ? hd + t * n : 0, n);
        if (reset_after)
            SFX(gemm)(1, 0, G, B, u, 1, U, G, h_in, B, 0, scratch, B);      /* U^T h */
        else
            SFX(gemm)(1, 0, 2 * u, B, u, 1, U, G, h_in, B, 0, scratch, B);  /* [Uz|Ur]^T h */
        for (i = 0; i < 2 * n; i++) a_t[i] = x_t[i] + scratch[i];
        SFX(act)(ract, a_t, 2 * n);
        if (reset_after) {
            REAL *hu_t = hu + t * n;
            for (j = 0; j < u; j++) {
                REAL c = b2h ? b2h[j] : 0;
                for (b = 0; b < B; b++) hu_t[j * B + b] = scratch[2 * n + j * B + b] + c;
            }
            for (i = 0; i < n; i++) hh[i] = x_t[2 * n + i] + r[i] * hu_t[i];
        } else {
            REAL *rh_t = rh + t * n;
            for (i = 0; i < n; i++) rh_t[i] = r[i] * h_in[i];
            SFX(gemm)(1, 0, u, B, u, 1, U + 2 * u, G, rh_t, B, 0, hh, B);  /* Uh^T (r h) */
            for (i = 0; i < n; i++) hh[i] += x_t[2 * n + i];
        }
        SFX(act)(act, hh, n);
        for (i = 0; i < n; i++) h_new[i] = hh[i] + z[i] * (h[i] - hh[i]);
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, u, B);
    }
}

/* dh (u, B): in, dL/dh_T; out, dL/dh_0. dxp overwrites xp. tmp and carried are (u, B).
 * dbh (u) gets dL/dbh' (reset_after with a bias); dbh and db may be NULL. */
void SFX(gru_backward)(int64_t T, int64_t B, int64_t u, int64_t D, int reset_after, int act,
                       int ract, const REAL *U, const REAL *W, REAL *dxp, const REAL *S,
                       const REAL *a, const REAL *hu, const REAL *rh, REAL *scratch, REAL *tmp,
                       REAL *carried, const REAL *rmask, const REAL *hd, const uint8_t *keep,
                       const REAL *dy, REAL *dh, const REAL *x, REAL *dx, REAL *dW, REAL *dU,
                       REAL *db, REAL *dbh)
{
    int64_t t, i, n = u * B, G = 3 * u;
    for (t = T - 1; t >= 0; t--) {
        const REAL *h = S + t * n, *a_t = a + t * G * B;
        const REAL *z = a_t, *r = a_t + n, *hh = a_t + 2 * n;
        const REAL *h_in = rmask ? hd + t * n : h;
        REAL *d_t = dxp + t * G * B, *dz = d_t, *dr = d_t + n, *dc = d_t + 2 * n;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        /* candidate and update gate */
        for (i = 0; i < n; i++) dc[i] = ((REAL)1 - z[i]) * dh[i];
        SFX(dact_mul)(act, hh, dc, n);
        for (i = 0; i < n; i++) dz[i] = (h[i] - hh[i]) * dh[i];
        SFX(dact_mul)(ract, z, dz, n);
        for (i = 0; i < n; i++) dh[i] *= z[i];               /* through z * h */
        if (reset_after) {
            const REAL *hu_t = hu + t * n;
            for (i = 0; i < n; i++) dr[i] = dc[i] * hu_t[i];
            SFX(dact_mul)(ract, r, dr, n);
            /* dL/d(h U + b'), then through h U */
            memcpy(scratch, d_t, (size_t)(2 * n) * sizeof(REAL));
            for (i = 0; i < n; i++) scratch[2 * n + i] = dc[i] * r[i];
            if (rmask) {
                SFX(gemm)(0, 0, u, B, G, 1, U, G, scratch, B, 0, tmp, B);
                SFX(add_masked)(dh, tmp, rmask, n);
            } else {
                SFX(gemm)(0, 0, u, B, G, 1, U, G, scratch, B, 1, dh, B);
            }
            SFX(gemm)(0, 1, u, G, B, 1, h_in, B, scratch, B, 1, dU, G);   /* dU += h dhu^T */
            if (dbh) SFX(row_sums)(scratch + 2 * n, dbh, u, B);
        } else {
            /* r multiplies h before Uh */
            SFX(gemm)(0, 0, u, B, u, 1, U + 2 * u, G, dc, B, 0, tmp, B);   /* dL/d(r h) */
            for (i = 0; i < n; i++) dr[i] = tmp[i] * h_in[i];
            SFX(dact_mul)(ract, r, dr, n);
            for (i = 0; i < n; i++) tmp[i] *= r[i];
            SFX(gemm)(0, 0, u, B, 2 * u, 1, U, G, d_t, B, 1, tmp, B);    /* + [Uz|Ur] dzr */
            if (rmask) SFX(add_masked)(dh, tmp, rmask, n);
            else SFX(add)(dh, tmp, n);
            SFX(gemm)(0, 1, u, 2 * u, B, 1, h_in, B, d_t, B, 1, dU, G);
            SFX(gemm)(0, 1, u, u, B, 1, rh + t * n, B, dc, B, 1, dU + 2 * u, G);
        }
        SFX(input_grads)(B, D, G, x + t * B * D, W, d_t, dW, db, dx + t * B * D);
        if (keep) SFX(add)(dh, carried, n);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LSTM, loop gate order i, f, o, g (U and W permuted to it by the caller); S holds h then c:
 * Sh, Sc (T+1, u, B). tc[t] = f(c_t). */
void SFX(lstm_forward)(int64_t T, int64_t B, int64_t u, int act, int ract, const REAL *U,
                       const REAL *xp, REAL *Sh, REAL *Sc, REAL *a, REAL *tc,
                       const REAL *rmask, REAL *hd, const uint8_t *keep)
{
    int64_t t, i, n = u * B, G = 4 * u;
    for (t = 0; t < T; t++) {
        const REAL *h = Sh + t * n, *c = Sc + t * n, *x_t = xp + t * G * B;
        REAL *h_new = Sh + (t + 1) * n, *c_new = Sc + (t + 1) * n, *a_t = a + t * G * B;
        REAL *ig = a_t, *fg = a_t + n, *og = a_t + 2 * n, *g = a_t + 3 * n, *tc_t = tc + t * n;
        const REAL *h_in = SFX(rec_input)(h, rmask, hd ? hd + t * n : 0, n);
        SFX(gemm)(1, 0, G, B, u, 1, U, G, h_in, B, 0, a_t, B);          /* U^T h */
        for (i = 0; i < G * B; i++) a_t[i] += x_t[i];
        SFX(act)(ract, a_t, 3 * n);
        SFX(act)(act, g, n);
        for (i = 0; i < n; i++) c_new[i] = fg[i] * c[i] + ig[i] * g[i];
        memcpy(tc_t, c_new, (size_t)n * sizeof(REAL));
        SFX(act)(act, tc_t, n);
        for (i = 0; i < n; i++) h_new[i] = og[i] * tc_t[i];
        if (keep) {
            SFX(hold_masked)(keep + t * B, h, h_new, u, B);
            SFX(hold_masked)(keep + t * B, c, c_new, u, B);
        }
    }
}

/* dh, dc (u, B): in, dL/dh_T and dL/dc_T; out, the same for step 0. carried is (2u, B). */
void SFX(lstm_backward)(int64_t T, int64_t B, int64_t u, int64_t D, int act, int ract,
                        const REAL *U, const REAL *W, REAL *dxp, const REAL *Sc, const REAL *Sh,
                        const REAL *a, const REAL *tc, REAL *carried, const REAL *rmask,
                        const REAL *hd, const uint8_t *keep, const REAL *dy, REAL *dh, REAL *dc,
                        const REAL *x, REAL *dx, REAL *dW, REAL *dU, REAL *db)
{
    int64_t t, i, n = u * B, G = 4 * u;
    for (t = T - 1; t >= 0; t--) {
        const REAL *c = Sc + t * n, *a_t = a + t * G * B, *tc_t = tc + t * n;
        const REAL *ig = a_t, *fg = a_t + n, *og = a_t + 2 * n, *g = a_t + 3 * n;
        const REAL *h_in = rmask ? hd + t * n : Sh + t * n;
        REAL *d_t = dxp + t * G * B, *di = d_t, *df = d_t + n, *dO = d_t + 2 * n,
             *dg = d_t + 3 * n;
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
        for (i = 0; i < n; i++) df[i] = dc[i] * c[i];
        SFX(dact_mul)(ract, fg, df, n);
        for (i = 0; i < n; i++) dg[i] = dc[i] * ig[i];
        SFX(dact_mul)(act, g, dg, n);
        for (i = 0; i < n; i++) dc[i] *= fg[i];
        /* the previous h, through h U */
        SFX(gemm)(0, 0, u, B, G, 1, U, G, d_t, B, 0, dh, B);
        if (rmask) for (i = 0; i < n; i++) dh[i] *= rmask[i];
        SFX(gemm)(0, 1, u, G, B, 1, h_in, B, d_t, B, 1, dU, G);
        SFX(input_grads)(B, D, G, x + t * B * D, W, d_t, dW, db, dx + t * B * D);
        if (keep) {
            SFX(add)(dh, carried, n);
            SFX(add)(dc, carried + n, n);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* SimpleRNN: h_t = f(x W + b + h U) */
void SFX(rnn_forward)(int64_t T, int64_t B, int64_t u, int act, const REAL *U, const REAL *xp,
                      REAL *S, const REAL *rmask, REAL *hd, const uint8_t *keep)
{
    int64_t t, i, n = u * B;
    for (t = 0; t < T; t++) {
        const REAL *h = S + t * n, *x_t = xp + t * n;
        REAL *h_new = S + (t + 1) * n;
        const REAL *h_in = SFX(rec_input)(h, rmask, hd ? hd + t * n : 0, n);
        SFX(gemm)(1, 0, u, B, u, 1, U, u, h_in, B, 0, h_new, B);
        for (i = 0; i < n; i++) h_new[i] += x_t[i];
        SFX(act)(act, h_new, n);
        if (keep) SFX(hold_masked)(keep + t * B, h, h_new, u, B);
    }
}

void SFX(rnn_backward)(int64_t T, int64_t B, int64_t u, int64_t D, int act, const REAL *U,
                       const REAL *W, REAL *dxp, const REAL *S, REAL *carried, const REAL *rmask,
                       const REAL *hd, const uint8_t *keep, const REAL *dy, REAL *dh,
                       const REAL *x, REAL *dx, REAL *dW, REAL *dU, REAL *db)
{
    int64_t t, n = u * B;
    for (t = T - 1; t >= 0; t--) {
        const REAL *h_in = rmask ? hd + t * n : S + t * n;
        REAL *d_t = dxp + t * n;
        if (dy) SFX(add)(dh, dy + t * n, n);
        if (keep) SFX(split_masked)(keep + t * B, dh, carried, u, B);
        memcpy(d_t, dh, (size_t)n * sizeof(REAL));
        SFX(dact_mul)(act, S + (t + 1) * n, d_t, n);
        SFX(gemm)(0, 0, u, B, u, 1, U, u, d_t, B, 0, dh, B);
        if (rmask) {
            int64_t i;
            for (i = 0; i < n; i++) dh[i] *= rmask[i];
        }
        SFX(gemm)(0, 1, u, u, B, 1, h_in, B, d_t, B, 1, dU, u);
        SFX(input_grads)(B, D, u, x + t * B * D, W, d_t, dW, db, dx + t * B * D);
        if (keep) SFX(add)(dh, carried, n);
    }
}
