/* The sharded, prefetching, augmenting data loader (contract in loader.h).
 *
 * Sharding. Epoch e's order is a Philox permutation of the split (stream PERM_TAG ^ e, the same on
 * every rank; identity when !shuffle). An epoch has batches_per_epoch * W * B slots; slot p holds
 * position p of the order, or, past the end (p >= N, padding), position p mod N with weight 0.
 * Rank r's batch s is slots s*W*B + r + k*W for k in [0, B), so global batch s is the same set of
 * images for any W, and padding only ever sits at the tail of the last batches.
 *
 * Threads. open starts one reader thread per loader. After open, every mt_pack_* call happens on
 * that thread (and in close), and under h5_lock, a process-wide mutex: HDF5 here is not built
 * thread-safe, and a process may hold several loaders (train and val, or tests that simulate
 * ranks). The reader fills a ring of prefetch + 1 batches (prefetch ready ahead, plus the one the
 * consumer holds until its next call) and hands them over under mu with two condition variables.
 * Inside a batch, helper threads (threads - 1 of them; threads = OpenMP's max threads on the
 * opening thread, at most MAX_AUG_THREADS and at most the batch) augment images while the reader
 * reads the next ones, then the reader helps. The helpers are plain pthreads that block on a
 * condition variable, not an OpenMP team: an OpenMP team spins while it waits, and beside a
 * trainer whose own OpenMP team holds every core that spinning made the loader several times
 * slower (bench_loader on a loaded machine). OpenMP inside image functions is kept serial on
 * loader threads. Each image depends only on (seed, epoch, index), so results do not depend on
 * thread count or timing. A reader failure is kept with its message and raised by
 * mt_loader_next once the batches made before it have been delivered; seek clears it.
 *
 * Augmentation. A random resized crop (torchvision's RandomResizedCrop: area fraction and
 * log-uniform aspect ratio, 10 attempts, then a centre crop clipped to the ratio range), a
 * rotation about the output's centre and an optional horizontal flip compose into one affine map
 * from output pixels to source pixels, sampled bilinearly in a single pass. Source points outside
 * the image read 0 (black, air on a film, as torchvision's fill=0); rotated corners take real
 * image content where the source has it. When the crop shrinks the image by more than
 * ANTIALIAS_FOOTPRINT source pixels per output pixel, the whole source is first resized with
 * mt_image_resize (antialiased) to about the crop's output scale, so that bilinear sampling does
 * not alias. Masks use the same map on the full-resolution mask with nearest-neighbour sampling
 * (0, background, outside); a multi-label mask's planes each the same way. Then brightness (x*b),
 * contrast (blend with the image mean) and gamma (x^g), each clamped to [0,1]. Without augmentation
 * the image is resized whole to size x size (mt_image_resize, antialiased; masks with
 * mt_mask_resize). */
#include "medtrain/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "medtrain/image.h"
#include "medtrain/mem.h"
#include "medtrain/rng.h"
#include "medtrain/timer.h"

#define PERM_TAG            0x7065726d00000000ull /* "perm": stream of epoch e's permutation */
#define AUG_TAG             0x6175676d00000000ull /* "augm": stream of epoch e's augmentation */
#define ANTIALIAS_FOOTPRINT 1.5 /* source pixels per output pixel above which we prefilter */
#define MAX_AUG_THREADS     4   /* threads per loader augmenting; the trainer needs the rest */
#define GROUP_PER_THREAD    4   /* images read ahead per thread inside a batch */

static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct helper {
    mt_loader *l;
    int id; /* scratch buffer; the reader uses threads - 1 */
    pthread_t thread;
} helper;

struct mt_loader {
    mt_loader_opts o;
    int rank, world;
    char *path;
    mt_pack *pack;            /* after open: reader thread and close only, under h5_lock */
    const mt_pack_info *info; /* immutable after open */
    const float *labels;      /* [info->n, n_labels], in memory, immutable */
    int64_t n;                /* images in the split */
    int64_t *split;           /* [n] the split's image indices in file order */
    int64_t batches;          /* per epoch, the same on every rank */
    int threads;              /* threads augmenting a batch: the reader and threads-1 helpers */
    int group;                /* images read before waiting for their augmentation */
    size_t pix_bytes;         /* bytes of one pack image */
    int planes;               /* mask planes delivered: 0, 1 (class index) or C (multi-label) */

    /* Reader-thread state. */
    int64_t *perm, perm_epoch; /* [n] the permutation of perm_epoch (-1: none yet) */
    uint8_t *raw, *raw_masks;  /* [group, h*w] pack images, [group, planes*h*w] masks */
    float *scratch;            /* [threads, h*w] an image in [0,1], per thread */
    int64_t next_epoch, next_step;
    int err_k; /* the batch's first failed image (batch: none) */
    mt_status err_st;
    char err_msg[MT_ERROR_MAX];

    /* The helper pool, under pool_mu: the group being filled and how far it has got. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_work, pool_done;
    helper *helpers; /* [threads - 1] */
    int n_helpers;   /* started */
    bool pool_quit;
    mt_batch *job_b;
    int64_t job_epoch;
    int job_g0, job_read, job_claimed, job_done; /* images of the group read, taken, finished */

    /* Shared with the consumer, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t ready, space;
    pthread_t thread;
    bool sync_ok, thread_ok;
    mt_batch *ring; /* [nring] batch views into ring_mem */
    void *ring_mem;
    int nring;
    int64_t produced, consumed; /* batches since the last (re)start */
    bool held;                  /* the consumer holds ring[(consumed - 1) % nring] */
    bool failed;
    mt_status err;
    char errmsg[MT_ERROR_MAX];
    atomic_bool stop;

    double wait_seconds; /* consumer thread only */
};

mt_augment mt_augment_defaults(void) {
    return (mt_augment){.enabled = true,
                        .crop_scale_min = 0.7f,
                        .crop_scale_max = 1.0f,
                        .crop_ratio_min = 3.0f / 4.0f,
                        .crop_ratio_max = 4.0f / 3.0f,
                        .rotate_deg = 10.0f,
                        .brightness = 0.1f,
                        .contrast = 0.1f,
                        .gamma = 0.1f,
                        .hflip = false};
}

/* The current message without the "rank R: " that mt_fail adds, so that re-raising it on another
 * thread does not say the rank twice. */
static const char *message_without_rank(void) {
    const char *m = mt_error_message();
    if (mt_world() > 1) {
        char prefix[32];
        int n = snprintf(prefix, sizeof prefix, "rank %d: ", mt_rank());
        if (strncmp(m, prefix, (size_t)n) == 0) m += n;
    }
    return m;
}

/* ---- geometry and photometry of one image --------------------------------------------- */

/* Output pixel (u, v) (continuous, pixel centres at +0.5) reads source point
 * (a*u + b*v + tx, c*u + d*v + ty), in source pixel units with the same convention. */
typedef struct affine {
    double a, b, tx, c, d, ty;
} affine;

typedef struct aug_draw {
    affine map;
    double foot_x, foot_y; /* source pixels per output pixel along x and y */
    float brightness, contrast, gamma;
} aug_draw;

static float uniform_in(mt_rng *r, float lo, float hi) {
    return lo + (hi - lo) * mt_rng_uniform(r);
}

/* torchvision.transforms.RandomResizedCrop.get_params: (top, left, height, width). */
static void random_crop(mt_rng *r, const mt_augment *a, int h, int w, int crop[4]) {
    double area = (double)h * w, lr0 = log(a->crop_ratio_min), lr1 = log(a->crop_ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * uniform_in(r, a->crop_scale_min, a->crop_scale_max);
        double ratio = exp(lr0 + (lr1 - lr0) * mt_rng_uniform_f64(r));
        int cw = (int)lround(sqrt(target * ratio)), ch = (int)lround(sqrt(target / ratio));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            crop[0] = (int)mt_rng_below(r, (uint32_t)(h - ch + 1));
            crop[1] = (int)mt_rng_below(r, (uint32_t)(w - cw + 1));
            crop[2] = ch, crop[3] = cw;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < a->crop_ratio_min)
        ch = (int)lround(w / a->crop_ratio_min);
    else if (in_ratio > a->crop_ratio_max)
        cw = (int)lround(h * a->crop_ratio_max);
    crop[0] = (h - ch) / 2, crop[1] = (w - cw) / 2, crop[2] = ch, crop[3] = cw;
}

/* Everything random about one image, from its own stream: (seed, AUG_TAG ^ epoch, index). The
 * flip and the photometric factors are always drawn, so turning one option on or off leaves the
 * others' draws unchanged. */
static aug_draw draw_augmentation(const mt_augment *a, uint64_t seed, int64_t epoch, int64_t index,
                                  int h, int w, int size) {
    mt_rng r;
    mt_rng_init(&r, seed, AUG_TAG ^ (uint64_t)epoch, (uint64_t)index);
    int crop[4];
    random_crop(&r, a, h, w, crop);
    double angle = uniform_in(&r, -a->rotate_deg, a->rotate_deg) * (M_PI / 180.0);
    bool flip = mt_rng_uniform(&r) < 0.5f && a->hflip;
    aug_draw d;
    d.brightness = uniform_in(&r, 1 - a->brightness, 1 + a->brightness);
    d.contrast = uniform_in(&r, 1 - a->contrast, 1 + a->contrast);
    d.gamma = uniform_in(&r, 1 - a->gamma, 1 + a->gamma);

    /* Inverse of: crop-and-resize to size, rotate about the centre, flip. With (du, dv) the
     * offset from the output's centre: x = cx + sx*(cos*f*du + sin*dv),
     * y = cy + sy*(-sin*f*du + cos*dv). */
    double sx = (double)crop[3] / size, sy = (double)crop[2] / size, f = flip ? -1.0 : 1.0;
    double cx = crop[1] + crop[3] / 2.0, cy = crop[0] + crop[2] / 2.0, half = size / 2.0;
    double cs = cos(angle), sn = sin(angle);
    affine m = {.a = sx * cs * f, .b = sx * sn, .c = -sy * sn * f, .d = sy * cs};
    m.tx = cx - (m.a + m.b) * half;
    m.ty = cy - (m.c + m.d) * half;
    d.map = m;
    d.foot_x = sx, d.foot_y = sy;
    return d;
}

/* out[v*size + u] = bilinear sample of src (h x w) at the map of (u+.5, v+.5); 0 outside. Inside,
 * x + 0.5 > 0, so truncation is floor (no libm call per pixel), and the identity map reads each
 * source pixel exactly. */
static void warp_bilinear(const float *src, int h, int w, const affine *m, int size, float *out) {
    for (int v = 0; v < size; v++) {
        double x0 = m->a * 0.5 + m->b * (v + 0.5) + m->tx;
        double y0 = m->c * 0.5 + m->d * (v + 0.5) + m->ty;
        float *row = out + (size_t)v * size;
        for (int u = 0; u < size; u++) {
            double x = x0 + m->a * u, y = y0 + m->c * u;
            if (!(x >= 0 && x < w && y >= 0 && y < h)) {
                row[u] = 0;
                continue;
            }
            float fx = (float)x + 0.5f, fy = (float)y + 0.5f; /* pixel-centre coordinate + 1 */
            int ix = (int)fx, iy = (int)fy;
            float ax = fx - (float)ix, ay = fy - (float)iy;
            int xa = ix - 1, ya = iy - 1, xb = ix < w ? ix : w - 1, yb = iy < h ? iy : h - 1;
            if (xa < 0) xa = 0;
            if (ya < 0) ya = 0;
            const float *r0 = src + (size_t)ya * w, *r1 = src + (size_t)yb * w;
            float top = r0[xa] + ax * (r0[xb] - r0[xa]), bot = r1[xa] + ax * (r1[xb] - r1[xa]);
            row[u] = top + ay * (bot - top);
        }
    }
}

/* Masks: the same map, nearest neighbour, background (0) outside. */
static void warp_nearest(const uint8_t *src, int h, int w, const affine *m, int size,
                         uint8_t *out) {
    for (int v = 0; v < size; v++) {
        double x = m->a * 0.5 + m->b * (v + 0.5) + m->tx, y = m->c * 0.5 + m->d * (v + 0.5) + m->ty;
        uint8_t *row = out + (size_t)v * size;
        for (int u = 0; u < size; u++, x += m->a, y += m->c)
            row[u] = x >= 0 && x < w && y >= 0 && y < h ? src[(size_t)y * w + (size_t)x] : 0;
    }
}

static float clamp01(float x) {
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

static void normalise(const mt_loader_opts *o, float *x, size_t n) {
    if (o->norm == MT_NORM_XRV) {
        for (size_t i = 0; i < n; i++) x[i] = (2 * x[i] - 1) * 1024;
    } else if (o->norm == MT_NORM_MEANSTD) {
        float mean = o->mean, inv = 1 / o->std;
        for (size_t i = 0; i < n; i++) x[i] = (x[i] - mean) * inv;
    }
}

/* Brightness (x*b), contrast (blend with the mean of the brightened image, as torchvision's
 * adjust_contrast) and gamma (x^g), each clamped to [0,1], then normalisation. All but the mean
 * are one function of the pixel value, so it is tabulated over [0,1] (LUT_N steps) and
 * interpolated: one pass instead of a powf per pixel. The error stays below 1e-4 on [0,1] (a
 * fortieth of a u8 step; largest next to a clamp's kink). */
enum { LUT_N = 4096 };

static void photometric_and_normalise(const mt_loader_opts *o, const aug_draw *d, float *x,
                                      size_t n) {
    float b = d->brightness, c = d->contrast, g = d->gamma;
    if (b == 1.0f && c == 1.0f && g == 1.0f) {
        normalise(o, x, n);
        return;
    }
    double sum = 0;
    if (c != 1.0f)
        for (size_t i = 0; i < n; i++) sum += clamp01(x[i] * b);
    float mean = (float)(sum / (double)n), lut[LUT_N + 2];
    for (int j = 0; j <= LUT_N; j++) {
        float v = clamp01((float)j / LUT_N * b);
        v = clamp01(mean + c * (v - mean));
        lut[j] = g == 1.0f ? v : powf(v, g);
    }
    normalise(o, lut, LUT_N + 1);
    lut[LUT_N + 1] = lut[LUT_N];
    for (size_t i = 0; i < n; i++) {
        float t = x[i] * LUT_N; /* x in [0, 1]: bilinear mixes of [0, 1] values, or fill 0 */
        int j = (int)t;
        if (j > LUT_N) j = LUT_N;
        x[i] = lut[j] + (t - (float)j) * (lut[j + 1] - lut[j]);
    }
}

static void to_unit(const void *raw, mt_dtype dtype, size_t n, float *out) {
    if (dtype == MT_U8) {
        const uint8_t *p = raw;
        for (size_t i = 0; i < n; i++) out[i] = p[i] * (1.0f / 255);
    } else {
        const uint16_t *p = raw;
        for (size_t i = 0; i < n; i++) out[i] = p[i] * (1.0f / 65535);
    }
}

/* Without augmentation: the whole image resized to size x size (antialiased), each of the
 * mask's `planes` planes by nearest neighbour. src is float scratch of h*w. */
static mt_status plain_image(const mt_loader_opts *o, const mt_pack_info *in, const void *raw,
                             const uint8_t *raw_mask, int planes, float *src, float *out,
                             uint8_t *out_mask) {
    int h = in->h, w = in->w, s = o->size;
    size_t npix = (size_t)s * s, src_pix = (size_t)h * w;
    if (h == s && w == s) {
        to_unit(raw, in->dtype, npix, out);
        if (raw_mask) memcpy(out_mask, raw_mask, npix * (size_t)planes);
    } else {
        mt_image whole = {.data = src, .h = h, .w = w}, small = {0};
        to_unit(raw, in->dtype, (size_t)h * w, src);
        MT_TRY(mt_image_resize(&whole, s, s, &small));
        memcpy(out, small.data, npix * sizeof *out);
        mt_image_free(&small);
        for (int c = 0; raw_mask && c < planes; c++)
            MT_TRY(mt_mask_resize(raw_mask + c * src_pix, h, w, s, s, out_mask + c * npix));
    }
    normalise(o, out, npix);
    return MT_OK;
}

/* With augmentation: one affine warp (after an antialiasing shrink when the crop is much larger
 * than the output), every mask plane along the same map, then photometry and normalisation. */
static mt_status augmented_image(const mt_loader_opts *o, const mt_pack_info *in, int64_t epoch,
                                 int64_t index, const void *raw, const uint8_t *raw_mask,
                                 int planes, float *src, float *out, uint8_t *out_mask) {
    int h = in->h, w = in->w, s = o->size;
    aug_draw d = draw_augmentation(&o->aug, o->seed, epoch, index, h, w, s);
    affine m = d.map;
    mt_image whole = {.data = src, .h = h, .w = w}, small = {0};
    const mt_image *from = &whole;
    to_unit(raw, in->dtype, (size_t)h * w, src);
    if (fmax(d.foot_x, d.foot_y) > ANTIALIAS_FOOTPRINT) {
        /* Shrink the whole source so that the crop lands at about one pixel per output pixel. */
        int h2 = (int)lround(h / fmax(d.foot_y, 1.0)), w2 = (int)lround(w / fmax(d.foot_x, 1.0));
        MT_TRY(mt_image_resize(&whole, h2 > 0 ? h2 : 1, w2 > 0 ? w2 : 1, &small));
        double kx = (double)small.w / w, ky = (double)small.h / h;
        m.a *= kx, m.b *= kx, m.tx *= kx;
        m.c *= ky, m.d *= ky, m.ty *= ky;
        from = &small;
    }
    warp_bilinear(from->data, from->h, from->w, &m, s, out);
    mt_image_free(&small);
    for (int c = 0; raw_mask && c < planes; c++)
        warp_nearest(raw_mask + (size_t)c * h * w, h, w, &d.map, s, out_mask + (size_t)c * s * s);
    photometric_and_normalise(o, &d, out, (size_t)s * s);
    return MT_OK;
}

/* One image (and mask) from raw pack pixels into the batch. Runs on any thread: no HDF5 here. */
static mt_status process_image(const mt_loader *l, int64_t epoch, int64_t index, const void *raw,
                               const uint8_t *raw_mask, float *src, float *out, uint8_t *out_mask) {
    if (!l->o.aug.enabled)
        return plain_image(&l->o, l->info, raw, raw_mask, l->planes, src, out, out_mask);
    return augmented_image(&l->o, l->info, epoch, index, raw, raw_mask, l->planes, src, out,
                           out_mask);
}

/* ---- the reader thread ------------------------------------------------------------------ */

static void make_permutation(mt_loader *l, int64_t epoch) {
    if (l->perm_epoch == epoch || (!l->o.shuffle && l->perm_epoch >= 0)) return;
    memcpy(l->perm, l->split, (size_t)l->n * sizeof *l->perm);
    if (l->o.shuffle) {
        mt_rng r;
        mt_rng_init(&r, l->o.seed, PERM_TAG ^ (uint64_t)epoch, 0);
        mt_rng_shuffle_i64(&r, l->perm, l->n);
    }
    l->perm_epoch = epoch;
}

static mt_status read_one(mt_loader *l, int64_t index, void *raw, uint8_t *raw_mask) {
    pthread_mutex_lock(&h5_lock);
    mt_status st = mt_pack_read_image(l->pack, index, raw);
    if (st == MT_OK && raw_mask) st = mt_pack_read_mask(l->pack, index, raw_mask);
    pthread_mutex_unlock(&h5_lock);
    return st;
}

/* Keeps a batch's first failure (lowest image) with its message; called under pool_mu. */
static void note_error(mt_loader *l, int k, mt_status st) {
    if (k < l->err_k) {
        l->err_k = k, l->err_st = st;
        snprintf(l->err_msg, sizeof l->err_msg, "%s", message_without_rank());
    }
}

/* OpenMP inside image functions (mt_image_resize) stays serial on loader threads: they run
 * beside the trainer's own OpenMP team, and the loader's parallelism is its helper threads. */
static void serial_openmp(void) {
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
}

/* Takes the next image of the group that is read but not processed, processes it, and counts
 * it done. Called with pool_mu held; returns with it held. tid picks the scratch buffer. */
static void work_one(mt_loader *l, int tid) {
    int slot = l->job_claimed++, k = l->job_g0 + slot;
    mt_batch *b = l->job_b;
    int64_t epoch = l->job_epoch;
    size_t npix = (size_t)l->o.size * l->o.size, src_pix = (size_t)l->info->h * l->info->w;
    size_t mpix = npix * (size_t)l->planes, src_mpix = src_pix * (size_t)l->planes;
    pthread_mutex_unlock(&l->pool_mu);
    mt_status st = process_image(l, epoch, b->indices[k], l->raw + (size_t)slot * l->pix_bytes,
                                 l->o.masks ? l->raw_masks + (size_t)slot * src_mpix : NULL,
                                 l->scratch + (size_t)tid * src_pix, b->images + (size_t)k * npix,
                                 l->o.masks ? b->masks + (size_t)k * mpix : NULL);
    pthread_mutex_lock(&l->pool_mu);
    if (st != MT_OK) note_error(l, k, st);
    if (++l->job_done == l->job_read) pthread_cond_signal(&l->pool_done);
}

static void *helper_main(void *arg) {
    helper *h = arg;
    mt_loader *l = h->l;
    serial_openmp();
    pthread_mutex_lock(&l->pool_mu);
    for (;;) {
        while (!l->pool_quit && l->job_claimed >= l->job_read)
            pthread_cond_wait(&l->pool_work, &l->pool_mu);
        if (l->pool_quit) break;
        work_one(l, h->id);
    }
    pthread_mutex_unlock(&l->pool_mu);
    return NULL;
}

/* One group of a batch: the reader reads images [g0, g1) one by one (HDF5 stays on this
 * thread) and hands each to the helpers as soon as it is read; then it helps with what is left
 * and waits until the whole group is processed, since the group's raw buffers are reused next. */
static void fill_group(mt_loader *l, mt_batch *b, int64_t epoch, int g0, int g1) {
    size_t src_mpix = (size_t)l->info->h * l->info->w * (size_t)l->planes;
    pthread_mutex_lock(&l->pool_mu);
    l->job_b = b, l->job_epoch = epoch, l->job_g0 = g0;
    l->job_read = l->job_claimed = l->job_done = 0;
    pthread_mutex_unlock(&l->pool_mu);
    for (int k = g0; k < g1; k++) {
        int slot = k - g0;
        mt_status st = atomic_load(&l->stop)
                           ? mt_fail(MT_ERR_INTERNAL, "loader stopped")
                           : read_one(l, b->indices[k], l->raw + (size_t)slot * l->pix_bytes,
                                      l->o.masks ? l->raw_masks + (size_t)slot * src_mpix : NULL);
        pthread_mutex_lock(&l->pool_mu);
        if (st != MT_OK) {
            note_error(l, k, st);
            pthread_mutex_unlock(&l->pool_mu);
            break;
        }
        l->job_read++;
        pthread_cond_signal(&l->pool_work);
        pthread_mutex_unlock(&l->pool_mu);
    }
    pthread_mutex_lock(&l->pool_mu);
    while (l->job_claimed < l->job_read) work_one(l, l->threads - 1);
    while (l->job_done < l->job_read) pthread_cond_wait(&l->pool_done, &l->pool_mu);
    l->job_read = l->job_claimed = l->job_done = 0;
    pthread_mutex_unlock(&l->pool_mu);
}

/* Fills b with this rank's batch `step` of `epoch`. */
static mt_status fill_batch(mt_loader *l, mt_batch *b, int64_t epoch, int64_t step) {
    int B = l->o.batch, L = l->info->n_labels;
    int64_t WB = (int64_t)l->world * B;
    make_permutation(l, epoch);
    b->n = B, b->n_valid = 0, b->size = l->o.size, b->epoch = epoch, b->step = step;
    for (int k = 0; k < B; k++) {
        int64_t p = step * WB + l->rank + (int64_t)k * l->world;
        int64_t index = l->perm[p % l->n];
        b->indices[k] = index;
        b->weights[k] = p < l->n ? 1.0f : 0.0f;
        b->n_valid += p < l->n;
        if (L) memcpy(b->labels + (size_t)k * L, l->labels + index * L, (size_t)L * sizeof(float));
    }
    l->err_k = B; /* no failure yet; only this thread and, under pool_mu, helpers touch it */
    for (int g0 = 0; g0 < B && l->err_k == B; g0 += l->group)
        fill_group(l, b, epoch, g0, g0 + l->group < B ? g0 + l->group : B);
    if (l->err_k == B) return MT_OK;
    /* The pack's own messages name the file already. */
    const char *msg = l->err_msg;
    bool named = strstr(msg, l->path) != NULL;
    return mt_fail(l->err_st, "loader: %s%simage %lld (epoch %lld, batch %lld, rank %d of %d): %s",
                   named ? "" : l->path, named ? "" : ": ", (long long)b->indices[l->err_k],
                   (long long)epoch, (long long)step, l->rank, l->world, msg);
}

static void *reader_main(void *arg) {
    mt_loader *l = arg;
    serial_openmp();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!atomic_load(&l->stop) && l->produced - l->consumed + l->held >= l->nring)
            pthread_cond_wait(&l->space, &l->mu);
        if (atomic_load(&l->stop)) break;
        mt_batch *b = &l->ring[l->produced % l->nring];
        int64_t epoch = l->next_epoch, step = l->next_step;
        pthread_mutex_unlock(&l->mu);

        mt_status st = fill_batch(l, b, epoch, step);

        pthread_mutex_lock(&l->mu);
        if (atomic_load(&l->stop)) break; /* a seek or close: the batch is not wanted */
        if (st != MT_OK) {
            l->failed = true;
            l->err = st;
            snprintf(l->errmsg, sizeof l->errmsg, "%s", message_without_rank());
            pthread_cond_broadcast(&l->ready);
            break;
        }
        l->produced++;
        if (++l->next_step == l->batches) l->next_step = 0, l->next_epoch++;
        pthread_cond_broadcast(&l->ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static mt_status start_reader(mt_loader *l, int64_t epoch, int64_t step) {
    l->next_epoch = epoch, l->next_step = step;
    l->produced = l->consumed = 0;
    l->held = l->failed = false;
    l->err = MT_OK;
    l->errmsg[0] = '\0';
    atomic_store(&l->stop, false);
    int rc = pthread_create(&l->thread, NULL, reader_main, l);
    if (rc != 0)
        return mt_fail(MT_ERR_INTERNAL, "loader: %s: could not start the reader thread: %s",
                       l->path, strerror(rc));
    l->thread_ok = true;
    return MT_OK;
}

static void stop_reader(mt_loader *l) {
    if (!l->thread_ok) return;
    pthread_mutex_lock(&l->mu);
    atomic_store(&l->stop, true);
    pthread_cond_broadcast(&l->space);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->thread_ok = false;
}

/* ---- opening ---------------------------------------------------------------------------- */

static mt_status check_opts(const char *path, int rank, int world, const mt_loader_opts *o) {
    if (world < 1 || rank < 0 || rank >= world)
        return mt_fail(MT_ERR_ARG, "loader: %s: rank %d of world %d is out of range", path, rank,
                       world);
    if ((int)o->split < 0 || (int)o->split >= (int)MT_SPLIT_COUNT)
        return mt_fail(MT_ERR_ARG, "loader: %s: unknown split %d", path, (int)o->split);
    if (o->batch < 1 || o->size < 1 || o->size > 16384)
        return mt_fail(MT_ERR_ARG, "loader: %s: batch %d and size %d must be >= 1 (size <= 16384)",
                       path, o->batch, o->size);
    if (o->prefetch < 0 || o->prefetch > 64)
        return mt_fail(MT_ERR_ARG, "loader: %s: prefetch %d must be in [0, 64] (0: default 2)",
                       path, o->prefetch);
    if (o->norm == MT_NORM_MEANSTD && !(o->std > 0 && isfinite(o->mean)))
        return mt_fail(MT_ERR_ARG, "loader: %s: mean/std normalisation needs std > 0, found %g",
                       path, (double)o->std);
    if (o->norm != MT_NORM_XRV && o->norm != MT_NORM_MEANSTD && o->norm != MT_NORM_NONE)
        return mt_fail(MT_ERR_ARG, "loader: %s: unknown normalisation %d", path, (int)o->norm);
    const mt_augment *a = &o->aug;
    if (!a->enabled) return MT_OK;
    if (!(a->crop_scale_min > 0 && a->crop_scale_min <= a->crop_scale_max &&
          a->crop_scale_max <= 1))
        return mt_fail(MT_ERR_ARG,
                       "loader: %s: crop scale [%g, %g] must satisfy 0 < min <= max <= 1", path,
                       (double)a->crop_scale_min, (double)a->crop_scale_max);
    if (!(a->crop_ratio_min > 0 && a->crop_ratio_min <= a->crop_ratio_max))
        return mt_fail(MT_ERR_ARG, "loader: %s: crop ratio [%g, %g] must satisfy 0 < min <= max",
                       path, (double)a->crop_ratio_min, (double)a->crop_ratio_max);
    if (!(a->rotate_deg >= 0 && a->rotate_deg <= 180))
        return mt_fail(MT_ERR_ARG, "loader: %s: rotation %g degrees must be in [0, 180]", path,
                       (double)a->rotate_deg);
    float f[3] = {a->brightness, a->contrast, a->gamma};
    for (int i = 0; i < 3; i++)
        if (!(f[i] >= 0 && f[i] < 1))
            return mt_fail(MT_ERR_ARG,
                           "loader: %s: brightness/contrast/gamma %g must be in [0, 1) (the factor "
                           "is drawn from [1-x, 1+x])",
                           path, (double)f[i]);
    return MT_OK;
}

/* Batches per epoch, or an error naming the split and the sizes. */
static mt_status count_batches(mt_loader *l) {
    int64_t WB = (int64_t)l->world * l->o.batch;
    const char *split = mt_split_name(l->o.split);
    if (l->n == 0)
        return mt_fail(MT_ERR_ARG, "loader: %s: split '%s' is empty (0 of %lld images)", l->path,
                       split, (long long)l->info->n);
    l->batches = l->o.drop_last ? l->n / WB : (l->n + WB - 1) / WB;
    if (l->batches == 0)
        return mt_fail(
            MT_ERR_ARG,
            "loader: %s: split '%s' has %lld images, fewer than one global batch of %lld "
            "(%d ranks x batch %d) with drop_last: lower the batch or pad instead",
            l->path, split, (long long)l->n, (long long)WB, l->world, l->o.batch);
    return MT_OK;
}

/* The ring: nring batches, each one flat allocation viewed as images, masks, labels, weights and
 * indices (64-byte aligned pieces). */
static mt_status alloc_ring(mt_loader *l) {
    size_t B = (size_t)l->o.batch, npix = (size_t)l->o.size * l->o.size;
    size_t L = (size_t)l->info->n_labels;
#define ALIGN64(x) (((x) + 63) / 64 * 64)
    size_t off_masks = ALIGN64(B * npix * sizeof(float));
    size_t off_labels = off_masks + ALIGN64(B * npix * (size_t)l->planes);
    size_t off_weights = off_labels + ALIGN64(B * L * sizeof(float));
    size_t off_indices = off_weights + ALIGN64(B * sizeof(float));
    size_t per = off_indices + ALIGN64(B * sizeof(int64_t));
#undef ALIGN64
    l->ring = mt_calloc((size_t)l->nring, sizeof *l->ring, "loader ring");
    l->ring_mem = mt_calloc((size_t)l->nring, per, "loader batch buffers");
    if (!l->ring || !l->ring_mem) return MT_ERR_NOMEM;
    for (int i = 0; i < l->nring; i++) {
        char *base = (char *)l->ring_mem + (size_t)i * per;
        mt_batch *b = &l->ring[i];
        b->images = (float *)base;
        b->masks = l->o.masks ? (uint8_t *)(base + off_masks) : NULL;
        b->labels = (float *)(base + off_labels);
        b->weights = (float *)(base + off_weights);
        b->indices = (int64_t *)(base + off_indices);
    }
    return MT_OK;
}

static mt_status alloc_reader(mt_loader *l) {
    size_t src_pix = (size_t)l->info->h * l->info->w;
    l->pix_bytes = src_pix * (l->info->dtype == MT_U8 ? 1 : 2);
    l->perm = mt_alloc((size_t)l->n * sizeof *l->perm, "loader permutation");
    l->raw = mt_alloc((size_t)l->group * l->pix_bytes, "loader raw images");
    l->scratch = mt_alloc((size_t)l->threads * src_pix * sizeof(float), "loader image scratch");
    if (l->o.masks)
        l->raw_masks = mt_alloc((size_t)l->group * src_pix * (size_t)l->planes, "loader raw masks");
    if (!l->perm || !l->raw || !l->scratch || (l->o.masks && !l->raw_masks)) return MT_ERR_NOMEM;
    l->perm_epoch = -1;
    return MT_OK;
}

static mt_status open_pack(mt_loader *l) {
    pthread_mutex_lock(&h5_lock);
    mt_status st = mt_pack_open(l->path, &l->pack);
    pthread_mutex_unlock(&h5_lock);
    if (st != MT_OK) return mt_error_wrap(st, "loader: ");
    l->info = mt_pack_get_info(l->pack);
    l->labels = mt_pack_labels(l->pack);
    if (l->info->dtype != MT_U8 && l->info->dtype != MT_U16)
        return mt_fail(MT_ERR_FORMAT, "loader: %s: /images must be u8 or u16", l->path);
    if (l->o.masks && l->info->n_mask_classes == 0)
        return mt_fail(MT_ERR_ARG,
                       "loader: %s: masks were asked for, but the pack has no /masks (it was "
                       "packed without masks)",
                       l->path);
    l->planes = l->o.masks ? mt_pack_mask_planes(l->info) : 0;
    int64_t n;
    const int64_t *split = mt_pack_split(l->pack, l->o.split, &n);
    l->n = n;
    l->split = mt_alloc((size_t)(n ? n : 1) * sizeof *l->split, "loader split indices");
    if (!l->split) return MT_ERR_NOMEM;
    if (n) memcpy(l->split, split, (size_t)n * sizeof *split);
    return MT_OK;
}

/* The ring's mutex and condition variables, and the helper pool's. */
static mt_status init_sync(mt_loader *l) {
    if (pthread_mutex_init(&l->mu, NULL) != 0) goto fail;
    if (pthread_cond_init(&l->ready, NULL) != 0) goto fail_mu;
    if (pthread_cond_init(&l->space, NULL) != 0) goto fail_ready;
    if (pthread_mutex_init(&l->pool_mu, NULL) != 0) goto fail_space;
    if (pthread_cond_init(&l->pool_work, NULL) != 0) goto fail_pool_mu;
    if (pthread_cond_init(&l->pool_done, NULL) != 0) goto fail_pool_work;
    l->sync_ok = true;
    return MT_OK;
fail_pool_work:
    pthread_cond_destroy(&l->pool_work);
fail_pool_mu:
    pthread_mutex_destroy(&l->pool_mu);
fail_space:
    pthread_cond_destroy(&l->space);
fail_ready:
    pthread_cond_destroy(&l->ready);
fail_mu:
    pthread_mutex_destroy(&l->mu);
fail:
    return mt_fail(MT_ERR_INTERNAL, "loader: %s: could not create a mutex", l->path);
}

static void destroy_sync(mt_loader *l) {
    if (!l->sync_ok) return;
    pthread_cond_destroy(&l->pool_done);
    pthread_cond_destroy(&l->pool_work);
    pthread_mutex_destroy(&l->pool_mu);
    pthread_cond_destroy(&l->space);
    pthread_cond_destroy(&l->ready);
    pthread_mutex_destroy(&l->mu);
}

static mt_status start_helpers(mt_loader *l) {
    l->helpers = mt_calloc((size_t)l->threads, sizeof *l->helpers, "loader helpers");
    if (!l->helpers) return MT_ERR_NOMEM;
    for (int i = 0; i < l->threads - 1; i++) {
        l->helpers[i] = (helper){.l = l, .id = i};
        int rc = pthread_create(&l->helpers[i].thread, NULL, helper_main, &l->helpers[i]);
        if (rc != 0)
            return mt_fail(MT_ERR_INTERNAL, "loader: %s: could not start helper thread %d: %s",
                           l->path, i, strerror(rc));
        l->n_helpers++;
    }
    return MT_OK;
}

static void stop_helpers(mt_loader *l) {
    if (l->n_helpers == 0) return;
    pthread_mutex_lock(&l->pool_mu);
    l->pool_quit = true;
    pthread_cond_broadcast(&l->pool_work);
    pthread_mutex_unlock(&l->pool_mu);
    for (int i = 0; i < l->n_helpers; i++) pthread_join(l->helpers[i].thread, NULL);
    l->n_helpers = 0;
}

mt_status mt_loader_open(const char *pack_path, int rank, int world, const mt_loader_opts *opts,
                         mt_loader **out) {
    *out = NULL;
    MT_TRY(check_opts(pack_path, rank, world, opts));
    mt_loader *l = mt_calloc(1, sizeof *l, "loader");
    if (!l) return MT_ERR_NOMEM;
    l->o = *opts;
    if (l->o.prefetch == 0) l->o.prefetch = 2;
    l->nring = l->o.prefetch + 1;
    l->rank = rank, l->world = world;
    l->threads = 1;
#ifdef _OPENMP
    l->threads = omp_get_max_threads() < MAX_AUG_THREADS ? omp_get_max_threads() : MAX_AUG_THREADS;
#endif
    if (l->threads > opts->batch) l->threads = opts->batch;
    l->group = l->threads == 1 ? 1 : l->threads * GROUP_PER_THREAD;
    if (l->group > opts->batch) l->group = opts->batch;
    atomic_init(&l->stop, false);

    mt_status st = (l->path = mt_strdup(pack_path, "loader path")) ? MT_OK : MT_ERR_NOMEM;
    if (st == MT_OK) st = open_pack(l);
    if (st == MT_OK) st = count_batches(l);
    if (st == MT_OK) st = alloc_ring(l);
    if (st == MT_OK) st = alloc_reader(l);
    if (st == MT_OK) st = init_sync(l);
    if (st == MT_OK) st = start_helpers(l);
    if (st == MT_OK) st = start_reader(l, 0, 0);
    if (st != MT_OK) {
        mt_loader_close(l);
        return st;
    }
    *out = l;
    return MT_OK;
}

/* ---- the consumer side ------------------------------------------------------------------ */

int64_t mt_loader_batches_per_epoch(const mt_loader *l) {
    return l->batches;
}

const mt_pack_info *mt_loader_info(const mt_loader *l) {
    return l->info;
}

double mt_loader_wait_seconds(const mt_loader *l) {
    return l->wait_seconds;
}

mt_status mt_loader_seek(mt_loader *l, int64_t epoch, int64_t step) {
    if (epoch < 0 || step < 0 || step >= l->batches)
        return mt_fail(MT_ERR_ARG,
                       "loader: %s: cannot seek to epoch %lld, batch %lld: an epoch has %lld "
                       "batches",
                       l->path, (long long)epoch, (long long)step, (long long)l->batches);
    stop_reader(l);
    return start_reader(l, epoch, step);
}

mt_status mt_loader_next(mt_loader *l, const mt_batch **out) {
    *out = NULL;
    if (!l->thread_ok) /* only when a seek could not restart it */
        return mt_fail(MT_ERR_INTERNAL, "loader: %s: the reader thread is not running", l->path);
    pthread_mutex_lock(&l->mu);
    if (l->held) {
        l->held = false; /* the previous batch's slot may be refilled now */
        pthread_cond_signal(&l->space);
    }
    if (l->produced == l->consumed && !l->failed) {
        double t0 = mt_now();
        while (l->produced == l->consumed && !l->failed) pthread_cond_wait(&l->ready, &l->mu);
        l->wait_seconds += mt_now() - t0;
    }
    if (l->produced > l->consumed) {
        *out = &l->ring[l->consumed % l->nring];
        l->consumed++;
        l->held = true;
        pthread_mutex_unlock(&l->mu);
        return MT_OK;
    }
    char msg[MT_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", l->errmsg);
    mt_status err = l->err;
    pthread_mutex_unlock(&l->mu);
    return mt_fail(err, "%s", msg);
}

void mt_loader_close(mt_loader *l) {
    if (!l) return;
    stop_reader(l); /* first: it may be waiting for helpers to finish a group */
    stop_helpers(l);
    destroy_sync(l);
    if (l->pack) {
        pthread_mutex_lock(&h5_lock);
        mt_pack_close(l->pack);
        pthread_mutex_unlock(&h5_lock);
    }
    mt_free(l->helpers);
    mt_free(l->ring);
    mt_free(l->ring_mem);
    mt_free(l->perm);
    mt_free(l->raw);
    mt_free(l->raw_masks);
    mt_free(l->scratch);
    mt_free(l->split);
    mt_free(l->path);
    mt_free(l);
}

mt_tensor mt_batch_images(const mt_batch *b, int channels, float *scratch) {
    int S = b->size;
    if (channels <= 1) return mt_tensor_4d(b->images, MT_F32, MT_CPU, b->n, S, S, 1);
    size_t px = (size_t)b->n * S * S;
    for (size_t i = 0; i < px; i++)
        for (int ch = 0; ch < channels; ch++) scratch[i * channels + ch] = b->images[i];
    return mt_tensor_4d(scratch, MT_F32, MT_CPU, b->n, S, S, channels);
}
