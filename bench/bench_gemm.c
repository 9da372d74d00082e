/* GEMM benchmark: medtrain's mt_gemm (f32) against the machine's measured peak and against a
 * direct cblas_sgemm call in the same run.
 *
 * The peak is measured, not looked up: each thread runs independent chains of fused multiply-adds
 * on the widest vectors the CPU has (AVX-512, else AVX2), enough chains to hide FMA latency. That
 * is the most floating-point work these cores can do; a GEMM's fraction of it says how much
 * headroom is left.
 *
 *   bench_gemm [--threads T] [--sizes 256,512,1024,2048]
 * Prints a table and one JSON line per size. */
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "medtrain/timer.h"

enum { CHAINS = 12, ITERS = 1 << 22 };

__attribute__((target("avx512f"))) static double fma_avx512(void) {
    __m512 acc[CHAINS];
    __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < ITERS; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
    float sink = 0;
    for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
    if (sink == 12345.0f) printf(" ");
    return 2.0 * 16 * CHAINS * (double)ITERS;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(void) {
    __m256 acc[CHAINS];
    __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long i = 0; i < ITERS; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
    float out[8], sink = 0;
    for (int c = 0; c < CHAINS; c++) {
        _mm256_storeu_ps(out, acc[c]);
        sink += out[0];
    }
    if (sink == 12345.0f) printf(" ");
    return 2.0 * 8 * CHAINS * (double)ITERS;
}

/* GFLOP/s of all threads running the FMA kernel at once. */
static double measure_peak(int threads, const char **isa) {
    bool avx512 = __builtin_cpu_supports("avx512f");
    *isa = avx512 ? "AVX-512 FMA" : "AVX2 FMA";
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double flops = 0, t0 = mt_now();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
        flops += avx512 ? fma_avx512() : fma_avx2();
        double g = flops / (mt_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

static double time_gemm(mt_ctx *ctx, int n, float *a, float *b, float *c, bool direct) {
    mt_tensor ta = mt_tensor_2d(a, MT_F32, MT_CPU, n, n),
              tb = mt_tensor_2d(b, MT_F32, MT_CPU, n, n),
              tc = mt_tensor_2d(c, MT_F32, MT_CPU, n, n);
    int reps = n <= 512 ? 20 : n <= 1024 ? 6 : 3;
    double best = 1e30;
    for (int r = -1; r < reps; r++) { /* r = -1 warms up */
        double t0 = mt_now();
        if (direct)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                        c, n);
        else if (mt_gemm(ctx, false, false, 1.0f, &ta, &tb, 0.0f, &tc) != MT_OK) {
            fprintf(stderr, "bench_gemm: %s\n", mt_error_message());
            exit(1);
        }
        double t = mt_now() - t0;
        if (r >= 0 && t < best) best = t;
    }
    return 2.0 * n * (double)n * n / best / 1e9;
}

int main(int argc, char **argv) {
    int threads = 1;
    char sizes[128] = "256,512,1024,2048";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--sizes") == 0)
            snprintf(sizes, sizeof sizes, "%s", argv[i + 1]);
    }
    if (threads < 1) threads = 1;
    openblas_set_num_threads(threads);
    mt_ctx ctx;
    if (mt_ctx_init(&ctx, MT_CPU, 0, threads) != MT_OK) {
        fprintf(stderr, "bench_gemm: %s\n", mt_error_message());
        return 1;
    }
    const char *isa;
    double peak = measure_peak(threads, &isa);
    printf("machine peak (%s, %d thread%s): %.1f GFLOP/s\n", isa, threads, threads > 1 ? "s" : "",
           peak);
    printf("%6s %14s %14s %12s %14s\n", "n", "mt_gemm GF/s", "cblas GF/s", "of peak", "mt/cblas");
    for (char *tok = strtok(sizes, ","); tok; tok = strtok(NULL, ",")) {
        int n = atoi(tok);
        size_t nn = (size_t)n * n;
        float *a = mt_alloc(nn * 4, "A"), *b = mt_alloc(nn * 4, "B"), *c = mt_alloc(nn * 4, "C");
        if (!a || !b || !c) return 1;
        for (size_t i = 0; i < nn; i++)
            a[i] = (float)(i % 17) * 0.1f, b[i] = (float)(i % 13) * 0.1f;
        double mt = time_gemm(&ctx, n, a, b, c, false), direct = time_gemm(&ctx, n, a, b, c, true);
        printf("%6d %14.1f %14.1f %11.1f%% %14.3f\n", n, mt, direct, 100 * mt / peak, mt / direct);
        printf(
            "{\"bench\":\"gemm\",\"n\":%d,\"threads\":%d,\"mt_gflops\":%.2f,\"cblas_gflops\":%.2f,"
            "\"peak_gflops\":%.2f,\"fraction_of_peak\":%.4f,\"ratio_vs_cblas\":%.4f}\n",
            n, threads, mt, direct, peak, mt / peak, mt / direct);
        mt_free(a), mt_free(b), mt_free(c);
    }
    mt_ctx_free(&ctx);
    return 0;
}
