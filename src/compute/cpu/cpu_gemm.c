/* GEMM on the CPU: OpenBLAS's cblas_sgemm, row-major.
 *
 * A batch is one sgemm per item, except the common "shared weight times a batch of activations"
 * case (B shared, A not transposed, A and C packed), which is a single (batch*M, K) @ (K, N) call.
 * OpenBLAS parallelises each call itself with the threads the caller gave it. */
#include <limits.h>
#include <cblas.h>
#include "cpu_ops.h"

static bool fits_int(int64_t v) {
    return v >= 0 && v <= INT_MAX;
}

/* C = beta * C over an (m, n) block with row stride ldc; beta 0 overwrites (NaN in C included). */
static void scale_c(float *c, int64_t m, int64_t n, int64_t ldc, float beta) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

mt_status mt_cpu_gemm(mt_ctx *ctx, const mt_gemm_desc *d) {
    /* A zero inner dim leaves C = beta * C; BLAS would reject the leading dims of the empty A/B. */
    if (d->k == 0) {
        for (int64_t i = 0; i < d->batch; i++)
            scale_c(d->c + i * d->stride_c, d->m, d->n, d->ldc, d->beta);
        return MT_OK;
    }
    int64_t m = d->m, batch = d->batch;
    /* Fold the batch into M when A and C are (batch*M, K) and (batch*M, N) matrices in memory. */
    if (batch > 1 && d->stride_b == 0 && !d->trans_a && d->stride_a == m * d->lda &&
        d->stride_c == m * d->ldc) {
        m *= batch;
        batch = 1;
    }
    if (!fits_int(m) || !fits_int(d->n) || !fits_int(d->k) || !fits_int(d->lda) ||
        !fits_int(d->ldb) || !fits_int(d->ldc))
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "gemm: %lld x %lld x %lld exceeds the 32-bit sizes of the CPU BLAS",
                       (long long)m, (long long)d->n, (long long)d->k);
    for (int64_t i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, d->trans_a ? CblasTrans : CblasNoTrans,
                    d->trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)d->n, (int)d->k, d->alpha,
                    d->a + i * d->stride_a, (int)d->lda, d->b + i * d->stride_b, (int)d->ldb,
                    d->beta, d->c + i * d->stride_c, (int)d->ldc);
    return MT_OK;
}
