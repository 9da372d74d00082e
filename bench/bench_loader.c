/* bench_loader: images per second delivered by the data loader (src/data/loader.c), with and
 * without augmentation, at 224 and 512 pixels, from a pack of 512 x 512 u8 images.
 *
 *     build/bench/bench_loader [--images N] [--src S] [--batch B] [--threads T] [--masks]
 *
 * A temporary pack of N (512) synthetic S x S (512) films is written first (under $TMPDIR).
 * Each configuration opens a loader on it (train split, shuffle, prefetch 2, xrv normalisation),
 * takes one batch to warm up, then times the consumer taking batches as fast as it can for about
 * one epoch: the consumer does nothing else, so the rate is the loader's own (one reader thread
 * reads HDF5; it and its helpers augment: 1 thread, then T = min(4, cores), the loader's default
 * cap, which it takes from OpenMP's max threads at open). The number to hold it against is what
 * training consumes: the loader must stay well ahead (the target is 4x) of the classifier's
 * images/s, or training waits on data.
 *
 * A table goes to stdout, then one JSON line per configuration. The whole run takes well under a
 * minute on two cores. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/comm.h"
#include "medtrain/loader.h"
#include "medtrain/mem.h"
#include "medtrain/pack.h"
#include "medtrain/timer.h"

typedef struct config {
    int size;
    bool aug;
    int threads;
    double images_per_s, wait_s;
    int64_t images;
} config;

/* A film-like image: a bright body with darker lungs, a vertical gradient and fine texture, so
 * that resizing and interpolation do real work (no constant regions). */
static void synth_film(int i, int s, uint8_t *px, uint8_t *mask) {
    uint32_t h = 2166136261u ^ (uint32_t)i;
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
            double u = (x + 0.5) / s - 0.5, v = (y + 0.5) / s - 0.5;
            double lung = (u + 0.2) * (u + 0.2) / 0.02 + v * v / 0.09 < 1 ||
                                  (u - 0.2) * (u - 0.2) / 0.02 + v * v / 0.09 < 1
                              ? -70
                              : 0;
            double body = u * u + v * v < 0.2 ? 150 : 30;
            h = h * 1664525u + 1013904223u;
            double val = body + lung + 40 * v + (double)(h >> 28);
            px[(size_t)y * s + x] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
            mask[(size_t)y * s + x] = lung < 0;
        }
}

static mt_status write_pack(mt_comm *comm, const char *path, int n, int s, bool masks) {
    static const char *const labels[] = {"finding"}, *const classes[] = {"background", "lung"};
    mt_pack_spec spec = {.h = s,
                         .w = s,
                         .dtype = MT_U8,
                         .n_labels = 1,
                         .label_names = labels,
                         .n_mask_classes = masks ? 2 : 0,
                         .mask_classes = classes,
                         .creator = "bench_loader"};
    enum { ROUND = 32 };
    size_t px = (size_t)s * s;
    mt_pack_item items[ROUND];
    float lab[ROUND];
    uint8_t *pixels = mt_alloc(ROUND * px, "bench pixels");
    uint8_t *mk = mt_alloc(ROUND * px, "bench masks");
    mt_pack_writer *w = NULL;
    mt_status st = pixels && mk ? mt_pack_writer_create(comm, path, &spec, &w) : MT_ERR_NOMEM;
    for (int i0 = 0; st == MT_OK && i0 < n; i0 += ROUND) {
        int m = n - i0 < ROUND ? n - i0 : ROUND;
        memset(items, 0, sizeof items);
        for (int k = 0; k < m; k++) {
            synth_film(i0 + k, s, pixels + k * px, mk + k * px);
            lab[k] = (float)((i0 + k) % 2);
            items[k].pixels = pixels + k * px;
            items[k].labels = &lab[k];
            items[k].mask = masks ? mk + k * px : NULL;
            items[k].meta.split = MT_SPLIT_TRAIN;
            snprintf(items[k].meta.case_id, sizeof items[k].meta.case_id, "bench%d", i0 + k);
        }
        st = mt_pack_writer_append(w, items, m);
    }
    if (w) {
        mt_status fin = mt_pack_writer_finish(w, st == MT_OK, "bench_loader");
        if (st == MT_OK) st = fin;
    }
    mt_free(pixels);
    mt_free(mk);
    return st;
}

static mt_status run(const char *path, int batch, bool masks, config *c) {
    mt_loader_opts o = {.split = MT_SPLIT_TRAIN,
                        .batch = batch,
                        .size = c->size,
                        .seed = 1,
                        .shuffle = true,
                        .norm = MT_NORM_XRV,
                        .masks = masks};
    if (c->aug) o.aug = mt_augment_defaults();
    omp_set_num_threads(c->threads); /* the loader takes its thread count from here at open */
    mt_loader *l = NULL;
    MT_TRY(mt_loader_open(path, 0, 1, &o, &l));
    const mt_batch *b = NULL;
    mt_status st = mt_loader_next(l, &b); /* warm-up */
    int64_t batches = mt_loader_batches_per_epoch(l), images = 0;
    double wait0 = mt_loader_wait_seconds(l), t0 = mt_now();
    for (int64_t i = 0; st == MT_OK && i < batches; i++) {
        st = mt_loader_next(l, &b);
        images += b ? b->n : 0;
    }
    double dt = mt_now() - t0;
    c->images = images;
    c->images_per_s = images / dt;
    c->wait_s = mt_loader_wait_seconds(l) - wait0;
    mt_loader_close(l);
    return st;
}

int main(int argc, char **argv) {
    int n = 512, src = 512, batch = 32, threads = omp_get_num_procs() < 4 ? omp_get_num_procs() : 4;
    bool masks = false;
    mt_comm *comm = NULL;
    if (mt_comm_init(&argc, &argv, &comm) != MT_OK) {
        fprintf(stderr, "bench_loader: %s\n", mt_error_message());
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--src") && i + 1 < argc)
            src = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--masks"))
            masks = true;
        else {
            fprintf(stderr, "usage: bench_loader [--images N] [--src S] [--batch B] [--threads T] "
                            "[--masks]\n");
            return 2;
        }
    }
    const char *tmp = getenv("TMPDIR");
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "%s/bench_loader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/bench.h5", dir);
    double t0 = mt_now();
    mt_status st = write_pack(comm, path, n, src, masks);
    if (st != MT_OK) {
        fprintf(stderr, "bench_loader: writing the pack: %s\n", mt_error_message());
        return 1;
    }
    printf("pack: %d images, %dx%d u8%s, written in %.1f s; batch %d, prefetch 2, up to %d "
           "loader threads, %d cores\n\n",
           n, src, src, masks ? " + masks" : "", mt_now() - t0, batch, threads,
           omp_get_num_procs());

    config cs[16];
    int nc = 0;
    const int sizes[2] = {224, 512};
    for (int si = 0; si < 2; si++)
        for (int aug = 0; aug <= 1; aug++)
            for (int t = 1; t <= threads; t = t == threads ? threads + 1 : threads)
                cs[nc++] = (config){.size = sizes[si], .aug = aug, .threads = t};

    printf("| size | augment | threads | images/s | ms/image | consumer wait |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int i = 0; i < nc && st == MT_OK; i++) {
        st = run(path, batch, masks, &cs[i]);
        if (st != MT_OK) break;
        printf("| %d | %s | %d | %.0f | %.2f | %.2f s |\n", cs[i].size, cs[i].aug ? "on" : "off",
               cs[i].threads, cs[i].images_per_s, 1e3 / cs[i].images_per_s, cs[i].wait_s);
        fflush(stdout);
    }
    if (st == MT_OK) {
        printf("\n");
        for (int i = 0; i < nc; i++)
            printf("{\"bench\": \"loader\", \"src\": %d, \"dtype\": \"u8\", \"masks\": %s, "
                   "\"size\": %d, \"augment\": %s, \"threads\": %d, \"batch\": %d, \"images\": "
                   "%lld, \"images_per_s\": %.1f}\n",
                   src, masks ? "true" : "false", cs[i].size, cs[i].aug ? "true" : "false",
                   cs[i].threads, batch, (long long)cs[i].images, cs[i].images_per_s);
    } else {
        fprintf(stderr, "bench_loader: %s\n", mt_error_message());
    }
    unlink(path);
    rmdir(dir);
    mt_comm_finalize(comm);
    return st == MT_OK ? 0 : 1;
}
