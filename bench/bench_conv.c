/* Convolution benchmark: forward, backward-data and backward-filter of typical ResNet-18/50 and
 * U-Net layers (NHWC, f32, CPU backend), each against the GEMM it amounts to, timed in the same
 * run.
 *
 * A convolution of output pixels M = N*P*Q, filters K and im2col rows of L = R*S*C/groups does
 * 2*M*K*L flops in each of its three passes, the same as the GEMMs
 *     forward          (M, L) x (L, K)      y = col w^T
 *     backward data    (M, K) x (K, L)      dcol = dy w
 *     backward filter  (K, M) x (M, L)      dw = dy^T col
 * Each pass is reported in GFLOP/s and as a percentage of cblas_sgemm on exactly that GEMM with
 * the operands already laid out (no im2col, no col2im): what is left is the cost of the layout
 * work around the GEMM. The flops are always those of the direct convolution, so a pass that does
 * fewer multiplications (Winograd, for 3x3 stride-1 layers) shows as an effective rate above the
 * GEMM's, over 100 %. The reference GEMM runs the way the convolutions run theirs: split
 * between the OpenMP threads, each making a single-threaded OpenBLAS call (the first lines
 * compare that with OpenBLAS's own threading on a square GEMM). Convolution and GEMM runs
 * alternate and the best of each counts, so that a noisy neighbour hits both alike. Depthwise
 * layers have no useful GEMM equivalent and report GFLOP/s only.
 *
 *   bench_conv [--threads T] [--batch N] [--reps R] [--layers i,j,...] [--chunk-kib K]
 * Prints a table and one JSON line per layer. --batch overrides every layer's own batch (32 for the
 * ResNet layers, 8 for the U-Net ones, as bench_train.sh and bench_unet.sh train them). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compute/backend.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "medtrain/timer.h"

typedef struct layer {
    const char *name;
    int batch, h, w, c, k, r, s, stride, pad, groups;
} layer;

/* ResNet-18/50 at 224x224, batch 32 (and a grayscale stem: medical images); the U-Net of
 * bench_unet.sh (16..256 channels, all 3x3 stride 1) at 256x256, batch 8 */
static const layer LAYERS[] = {
    {"stem 7x7/2, C=1", 32, 224, 224, 1, 64, 7, 7, 2, 3, 1},
    {"stem 7x7/2, C=3", 32, 224, 224, 3, 64, 7, 7, 2, 3, 1},
    {"56x56x64 3x3", 32, 56, 56, 64, 64, 3, 3, 1, 1, 1},
    {"28x28x128 3x3", 32, 28, 28, 128, 128, 3, 3, 1, 1, 1},
    {"14x14x256 3x3", 32, 14, 14, 256, 256, 3, 3, 1, 1, 1},
    {"7x7x512 3x3", 32, 7, 7, 512, 512, 3, 3, 1, 1, 1},
    {"56x56x64 3x3/2 ->128", 32, 56, 56, 64, 128, 3, 3, 2, 1, 1},
    {"56x56 64->256 1x1", 32, 56, 56, 64, 256, 1, 1, 1, 0, 1},
    {"56x56 256->64 1x1", 32, 56, 56, 256, 64, 1, 1, 1, 0, 1},
    {"56x56 256->512 1x1/2", 32, 56, 56, 256, 512, 1, 1, 2, 0, 1},
    {"56x56x144 dw 3x3", 32, 56, 56, 144, 144, 3, 3, 1, 1, 144},
    {"unet 256x256x16 3x3", 8, 256, 256, 16, 16, 3, 3, 1, 1, 1},
    {"unet 256x256 32->16", 8, 256, 256, 32, 16, 3, 3, 1, 1, 1},
    {"unet 128x128x32 3x3", 8, 128, 128, 32, 32, 3, 3, 1, 1, 1},
    {"unet 64x64x64 3x3", 8, 64, 64, 64, 64, 3, 3, 1, 1, 1},
    {"unet 32x32x128 3x3", 8, 32, 32, 128, 128, 3, 3, 1, 1, 1},
    {"unet 16x16x256 3x3", 8, 16, 16, 256, 256, 3, 3, 1, 1, 1},
};
#define NLAYERS ((int)(sizeof LAYERS / sizeof LAYERS[0]))

static void die(const char *what) {
    fprintf(stderr, "bench_conv: %s: %s\n", what, mt_error_message());
    exit(1);
}

static float *alloc_filled(size_t n, const char *what) {
    float *p = mt_alloc(n * sizeof(float), what);
    if (!p) die("allocation");
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    return p;
}

enum { FWD, BWD_DATA, BWD_FILTER, PASSES };
static const char *PASS_NAMES[PASSES] = {"fwd", "bwd_data", "bwd_filter"};

/* One run of a pass on the layer's tensors; seconds. */
static double run_pass(mt_ctx *ctx, int pass, const mt_conv2d_params *cp, mt_tensor *x,
                       mt_tensor *w, mt_tensor *y) {
    double t0 = mt_now();
    mt_status s = pass == FWD        ? mt_conv2d_fwd(ctx, cp, x, w, NULL, y)
                  : pass == BWD_DATA ? mt_conv2d_bwd_data(ctx, cp, y, w, x)
                                     : mt_conv2d_bwd_filter(ctx, cp, x, y, w, NULL);
    if (s != MT_OK) die(PASS_NAMES[pass]);
    return mt_now() - t0;
}

/* Operands of the GEMM a pass amounts to: fwd (m,l) x (k,l)^T, bwd_data (m,k) x (k,l),
 * bwd_filter (m,k)^T x (m,l). */
typedef struct gemm_ops {
    float *a, *b, *c;
} gemm_ops;

static gemm_ops gemm_alloc(int pass, int64_t m, int64_t k, int64_t l) {
    gemm_ops g = {
        alloc_filled((size_t)(m * (pass == FWD ? l : k)), "A"),
        alloc_filled((size_t)((pass == BWD_FILTER ? m : k) * l), "B"),
        alloc_filled((size_t)(pass == BWD_FILTER ? k * l : m * (pass == FWD ? k : l)), "C")};
    return g;
}

/* One run of that GEMM split between threads (rows of C; for bwd_filter, whose C is small and
 * whose sum is long, C's larger dim), each part a single-threaded OpenBLAS call; seconds. */
static double run_gemm(int threads, int pass, int64_t m, int64_t k, int64_t l, const gemm_ops *g) {
    double t0 = mt_now();
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        if (pass == BWD_FILTER) {
            bool by_k = k >= l;
            int64_t n = by_k ? k : l, lo = n * me / nt, hi = n * (me + 1) / nt;
            if (hi > lo && by_k)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)l, (int)m,
                            1, g->a + lo, (int)k, g->b, (int)l, 1, g->c + lo * l, (int)l);
            else if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)(hi - lo), (int)m,
                            1, g->a, (int)k, g->b + lo, (int)l, 1, g->c + lo, (int)l);
        } else {
            int64_t lo = m * me / nt, hi = m * (me + 1) / nt;
            if (hi > lo && pass == FWD)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), (int)k, (int)l,
                            1, g->a + lo * l, (int)l, g->b, (int)l, 0, g->c + lo * k, (int)k);
            else if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)l,
                            (int)k, 1, g->a + lo * k, (int)k, g->b, (int)l, 0, g->c + lo * l,
                            (int)l);
        }
    }
    return mt_now() - t0;
}

/* A square GEMM both ways: OpenBLAS's threads, and split rows with single-threaded calls. */
static void compare_threading(int threads) {
    int n = 2048;
    gemm_ops g = gemm_alloc(BWD_DATA, n, n, n);
    double own = 1e30, split = 1e30;
    for (int r = -1; r < 3; r++) {
        openblas_set_num_threads(threads);
        double t0 = mt_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, g.a, n, g.b, n, 0, g.c,
                    n);
        double t = mt_now() - t0;
        openblas_set_num_threads(1);
        nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL); /* BLAS threads idle */
        double u = run_gemm(threads, BWD_DATA, n, n, n, &g);
        if (r >= 0 && t < own) own = t;
        if (r >= 0 && u < split) split = u;
    }
    double f = 2.0 * n * (double)n * n / 1e9;
    printf("sgemm %d^3: OpenBLAS threads %.1f GF/s, split single-threaded calls %.1f GF/s\n", n,
           f / own, f / split);
    mt_free(g.a), mt_free(g.b), mt_free(g.c);
}

int main(int argc, char **argv) {
    int threads = 1, batch_arg = 0, reps = 3;
    char which[256] = "";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch_arg = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0)
            reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--layers") == 0)
            snprintf(which, sizeof which, ",%s,", argv[i + 1]);
        else if (strcmp(argv[i], "--chunk-kib") == 0)
            mt_cpu_conv_set_chunk_bytes((size_t)atol(argv[i + 1]) << 10);
    }
    if (threads < 1) threads = 1;
    if (reps < 1) reps = 1;
    mt_ctx ctx;
    if (mt_ctx_init(&ctx, MT_CPU, 0, threads) != MT_OK) die("context");
    if (batch_arg > 0)
        printf("conv f32 NHWC, batch %d, %d thread%s, best of %d\n", batch_arg, threads,
               threads > 1 ? "s" : "", reps);
    else
        printf("conv f32 NHWC, batch 32 (ResNet) / 8 (U-Net), %d thread%s, best of %d\n", threads,
               threads > 1 ? "s" : "", reps);
    compare_threading(threads);
    printf("%-22s %7s | %9s %6s | %9s %6s | %9s %6s | %9s %6s\n", "layer", "GFLOP", "fwd GF/s",
           "%gemm", "bwd_d GF/s", "%gemm", "bwd_f GF/s", "%gemm", "all GF/s", "%gemm");
    for (int li = 0; li < NLAYERS; li++) {
        char key[16];
        snprintf(key, sizeof key, ",%d,", li);
        if (which[0] && !strstr(which, key)) continue;
        const layer *L = &LAYERS[li];
        const int batch = batch_arg > 0 ? batch_arg : L->batch;
        mt_conv2d_params cp = {L->stride, L->stride, L->pad, L->pad, 1, 1, L->groups};
        int64_t p = mt_conv2d_out_dim(L->h, L->r, L->stride, L->pad, 1);
        int64_t q = mt_conv2d_out_dim(L->w, L->s, L->stride, L->pad, 1);
        int64_t cg = L->c / L->groups, m = batch * p * q, kc = (int64_t)L->r * L->s * cg;
        mt_tensor x = mt_tensor_4d(alloc_filled((size_t)batch * L->h * L->w * L->c, "x"), MT_F32,
                                   MT_CPU, batch, L->h, L->w, L->c);
        mt_tensor w = mt_tensor_4d(alloc_filled((size_t)(L->k * kc), "w"), MT_F32, MT_CPU, L->k,
                                   L->r, L->s, cg);
        mt_tensor y =
            mt_tensor_4d(alloc_filled((size_t)(m * L->k), "y"), MT_F32, MT_CPU, batch, p, q, L->k);
        double flops = 2.0 * (double)m * L->k * kc; /* each filter sees kc inputs */
        double t[PASSES], g[PASSES], tt = 0, gt = 0;
        bool depthwise = L->groups > 1;
        for (int ps = 0; ps < PASSES; ps++) {
            gemm_ops go = {0};
            if (!depthwise) go = gemm_alloc(ps, m, L->k, kc);
            t[ps] = g[ps] = 1e30;
            for (int r = -1; r < reps; r++) { /* r = -1 warms up */
                double a = run_pass(&ctx, ps, &cp, &x, &w, &y);
                double b = depthwise ? 0 : run_gemm(threads, ps, m, L->k, kc, &go);
                if (r >= 0 && a < t[ps]) t[ps] = a;
                if (r >= 0 && b < g[ps]) g[ps] = b;
            }
            tt += t[ps];
            gt += g[ps];
            if (!depthwise) mt_free(go.a), mt_free(go.b), mt_free(go.c);
        }
        printf("%-22s %7.2f |", L->name, flops / 1e9);
        for (int ps = 0; ps < PASSES; ps++) {
            if (depthwise)
                printf(" %9.1f %6s |", flops / t[ps] / 1e9, "-");
            else
                printf(" %9.1f %5.0f%% |", flops / t[ps] / 1e9, 100 * g[ps] / t[ps]);
        }
        if (depthwise)
            printf(" %9.1f %6s\n", 3 * flops / tt / 1e9, "-");
        else
            printf(" %9.1f %5.0f%%\n", 3 * flops / tt / 1e9, 100 * gt / tt);
        printf("{\"bench\":\"conv\",\"layer\":\"%s\",\"batch\":%d,\"threads\":%d,\"gflop\":%.3f",
               L->name, batch, threads, flops / 1e9);
        for (int ps = 0; ps < PASSES; ps++) {
            printf(",\"%s_ms\":%.3f,\"%s_gflops\":%.2f", PASS_NAMES[ps], 1e3 * t[ps],
                   PASS_NAMES[ps], flops / t[ps] / 1e9);
            if (!depthwise)
                printf(",\"%s_gemm_gflops\":%.2f,\"%s_of_gemm\":%.4f", PASS_NAMES[ps],
                       flops / g[ps] / 1e9, PASS_NAMES[ps], g[ps] / t[ps]);
        }
        printf("}\n");
        fflush(stdout);
        mt_free(x.data), mt_free(w.data), mt_free(y.data);
    }
    printf("scratch arena peak: %.1f MiB\n", (double)ctx.scratch.peak / (1 << 20));
    mt_ctx_free(&ctx);
    return 0;
}
