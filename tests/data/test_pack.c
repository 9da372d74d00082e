/* Packs: writer/reader round trip (1 process or N ranks; class-index and multi-label masks),
 * splits, attributes, refusal of files that are not packs or have the wrong format/version, and
 * pack inputs (labels CSV and manifest errors with file and line). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/comm.h"
#include "medtrain/fs.h"
#include "medtrain/mem.h"
#include "medtrain/pack.h"
#include "medtrain/sources.h"
#include "mt_test.h"

static mt_comm *comm;
static char dir[256];

static void path_in(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

/* Image i, pixel p: a value that says which image and where, so misplaced rows show. */
static uint16_t pixel(int64_t i, int p) {
    return (uint16_t)(i * 131 + p * 7);
}

/* Writes a pack of n images where each rank brings the images i with i % world == rank of each
 * round of world*3, in order (as `medtrain pack` does). */
static void write_pack(const char *path, int64_t n, mt_dtype dtype, bool masks) {
    const char *names[] = {"Effusion", "Nodule"}, *classes[] = {"background", "lung", "heart"};
    mt_pack_spec spec = {.h = 6,
                         .w = 5,
                         .dtype = dtype,
                         .n_labels = 2,
                         .label_names = names,
                         .n_mask_classes = masks ? 3 : 0,
                         .mask_classes = classes,
                         .creator = "test_pack"};
    mt_pack_writer *w = NULL;
    MT_CHECK_OK(mt_pack_writer_create(comm, path, &spec, &w));
    if (!w) return;
    int rank = mt_comm_rank(comm), world = mt_comm_world(comm), B = 3;
    uint16_t px16[3][30];
    uint8_t px8[3][30], mk[3][30];
    float lab[3][2];
    for (int64_t r = 0; r * B * world < n; r++) {
        mt_pack_item items[3];
        int k = 0;
        for (int b = 0; b < B; b++) {
            int64_t i = r * B * world + (int64_t)rank * B + b;
            if (i >= n) break;
            for (int p = 0; p < 30; p++) {
                px16[k][p] = pixel(i, p);
                px8[k][p] = (uint8_t)pixel(i, p);
                mk[k][p] = (uint8_t)((i + p) % 3);
            }
            lab[k][0] = (float)(i % 2);
            lab[k][1] = i % 5 == 0 ? NAN : 1.0f;
            mt_pack_item it = {.pixels = dtype == MT_U16 ? (void *)px16[k] : (void *)px8[k],
                               .labels = lab[k],
                               .mask = masks ? mk[k] : NULL};
            snprintf(it.meta.case_id, sizeof it.meta.case_id, "case%04lld", (long long)(i / 2));
            snprintf(it.meta.modality, sizeof it.meta.modality, "DX");
            snprintf(it.meta.view, sizeof it.meta.view, i % 2 ? "AP" : "PA");
            snprintf(it.meta.source_digest, sizeof it.meta.source_digest, "%064lld", (long long)i);
            it.meta.pixel_spacing[0] = 0.5f, it.meta.pixel_spacing[1] = 0.25f;
            it.meta.split = (mt_split)(i % 3);
            items[k++] = it;
        }
        MT_CHECK_OK(mt_pack_writer_append(w, items, k));
    }
    MT_CHECK_OK(mt_pack_writer_finish(w, true, "options"));
}

static void test_round_trip(void) {
    char path[512];
    path_in(path, sizeof path, "rt.h5");
    write_pack(path, 20, MT_U16, true);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    MT_CHECK(!mt_path_exists(tmp), "the temporary file is gone");
    mt_pack *p = NULL;
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (!p) return;
    const mt_pack_info *in = mt_pack_get_info(p);
    MT_CHECK(in->n == 20 && in->h == 6 && in->w == 5 && in->dtype == MT_U16);
    MT_CHECK(in->n_labels == 2 && !strcmp(in->label_names[0], "Effusion") &&
             !strcmp(in->label_names[1], "Nodule"));
    MT_CHECK(in->n_mask_classes == 3 && !strcmp(in->mask_classes[2], "heart"));
    MT_CHECK(in->version == MT_PACK_VERSION && !strcmp(in->creator, "test_pack"));
    MT_CHECK(strlen(in->input_digest) == 64 && strlen(in->created) == 20);
    for (int64_t i = 0; i < 20; i++) {
        uint16_t px[30];
        uint8_t mk[30];
        MT_CHECK_OK(mt_pack_read_image(p, i, px));
        MT_CHECK_OK(mt_pack_read_mask(p, i, mk));
        for (int q = 0; q < 30; q++) {
            MT_CHECK(px[q] == pixel(i, q), "image %lld pixel %d", (long long)i, q);
            MT_CHECK(mk[q] == (i + q) % 3);
        }
        const float *lab = mt_pack_labels(p) + i * 2;
        MT_CHECK(lab[0] == (float)(i % 2) && (i % 5 == 0 ? isnan(lab[1]) : lab[1] == 1.0f));
        mt_pack_meta m;
        MT_CHECK_OK(mt_pack_read_meta(p, i, &m));
        char want[40];
        snprintf(want, sizeof want, "case%04lld", (long long)(i / 2));
        MT_CHECK(!strcmp(m.case_id, want) && !strcmp(m.modality, "DX"));
        MT_CHECK(!strcmp(m.view, i % 2 ? "AP" : "PA") && m.split == (mt_split)(i % 3));
        MT_CHECK(m.pixel_spacing[0] == 0.5f && m.pixel_spacing[1] == 0.25f &&
                 strlen(m.source_digest) == 64);
    }
    for (int s = 0; s < MT_SPLIT_COUNT; s++) {
        int64_t n;
        const int64_t *idx = mt_pack_split(p, (mt_split)s, &n);
        MT_CHECK(n == in->split_n[s]);
        int64_t expect = 0;
        for (int64_t i = 0; i < 20; i++) expect += i % 3 == s;
        MT_CHECK(n == expect, "split %d: %lld images", s, (long long)n);
        for (int64_t k = 0; k < n; k++)
            MT_CHECK(idx[k] % 3 == s && (k == 0 || idx[k] > idx[k - 1]));
    }
    uint16_t px[30];
    MT_CHECK_FAILS(mt_pack_read_image(p, 20, px), MT_ERR_ARG, "image 20 is out of range");
    mt_pack_close(p);
}

/* Multi-label masks: plane c of image i, pixel q. Planes overlap (1 and 2 share pixels). */
static uint8_t ml_value(int64_t i, int c, int q) {
    return (uint8_t)((i + q + c) % (c + 2) == 0);
}

/* A multi-label pack: /masks [N,C,H,W] with C names and no background, read back plane by plane,
 * whatever the rank count (each rank brings the images i with i % world == rank). */
static void test_multilabel_round_trip(void) {
    enum { C = 3, H = 7, W = 4, PX = H * W, N = 11 };
    const char *classes[C] = {"right_lung", "left_lung", "heart"};
    char path[512];
    path_in(path, sizeof path, "ml.h5");
    mt_pack_spec spec = {.h = H,
                         .w = W,
                         .dtype = MT_U8,
                         .n_mask_classes = C,
                         .mask_classes = classes,
                         .creator = "test_pack",
                         .mask_multilabel = true};
    mt_pack_writer *w = NULL;
    MT_CHECK_OK(mt_pack_writer_create(comm, path, &spec, &w));
    if (!w) return;
    int rank = mt_comm_rank(comm), world = mt_comm_world(comm);
    uint8_t px[N][PX], mk[N][C * PX];
    mt_pack_item items[N];
    int k = 0;
    for (int64_t i = rank; i < N; i += world, k++) {
        for (int q = 0; q < PX; q++) px[k][q] = (uint8_t)(i * 10 + q);
        for (int c = 0; c < C; c++)
            for (int q = 0; q < PX; q++) mk[k][c * PX + q] = ml_value(i, c, q);
        items[k] = (mt_pack_item){.pixels = px[k], .mask = mk[k]};
        snprintf(items[k].meta.case_id, sizeof items[k].meta.case_id, "c%lld", (long long)i);
        items[k].meta.split = (mt_split)(i % 3);
    }
    /* One round of one image per rank at a time keeps the file order i = 0, 1, 2, ... */
    for (int r = 0; r * world < N; r++)
        MT_CHECK_OK(mt_pack_writer_append(w, r < k ? &items[r] : NULL, r < k ? 1 : 0));
    MT_CHECK_OK(mt_pack_writer_finish(w, true, "ml"));
    mt_pack *p = NULL;
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (!p) return;
    const mt_pack_info *in = mt_pack_get_info(p);
    MT_CHECK(in->n == N && in->mask_multilabel && in->n_mask_classes == C &&
             mt_pack_mask_planes(in) == C);
    for (int c = 0; c < C && in->mask_classes; c++)
        MT_CHECK(!strcmp(in->mask_classes[c], classes[c]), "class %d is %s", c,
                 in->mask_classes[c]);
    int overlaps = 0;
    for (int64_t i = 0; i < N; i++) {
        uint8_t back[C * PX], img[PX];
        MT_CHECK_OK(mt_pack_read_mask(p, i, back));
        MT_CHECK_OK(mt_pack_read_image(p, i, img));
        for (int q = 0; q < PX; q++) {
            MT_CHECK(img[q] == (uint8_t)(i * 10 + q), "image %lld pixel %d", (long long)i, q);
            overlaps += back[PX + q] && back[2 * PX + q];
            for (int c = 0; c < C; c++)
                MT_CHECK(back[c * PX + q] == ml_value(i, c, q), "image %lld class %d pixel %d",
                         (long long)i, c, q);
        }
    }
    MT_CHECK(overlaps > 0, "the planes overlap somewhere");
    mt_pack_close(p);

    /* An index pack says so too. */
    path_in(path, sizeof path, "rt.h5");
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (p) {
        MT_CHECK(!mt_pack_get_info(p)->mask_multilabel &&
                 mt_pack_mask_planes(mt_pack_get_info(p)) == 1);
        mt_pack_close(p);
    }
    /* Multi-label masks need a class. */
    spec.n_mask_classes = 0;
    path_in(path, sizeof path, "ml0.h5");
    w = NULL;
    MT_CHECK_FAILS(mt_pack_writer_create(comm, path, &spec, &w), MT_ERR_ARG, "ml0.h5",
                   "at least one class");
    MT_CHECK(w == NULL);
}

/* A damaged image chunk (one byte flipped on disk) fails to read, naming the row, instead of
 * returning wrong pixels: image and mask chunks carry Fletcher-32 checksums. */
static void test_corrupt_chunk_is_detected(void) {
    if (mt_comm_rank(comm) != 0) return;
    char path[512];
    path_in(path, sizeof path, "rt.h5");
    char *data;
    size_t n;
    MT_CHECK_OK(mt_file_read(path, &data, &n));
    if (!data) return;
    uint16_t want[4] = {pixel(3, 0), pixel(3, 1), pixel(3, 2), pixel(3, 3)};
    char *at = memmem(data, n, want, sizeof want);
    MT_CHECK(at != NULL, "image 3's pixels are in the file");
    if (at) at[2] ^= 0x40;
    path_in(path, sizeof path, "corrupt.h5");
    MT_CHECK_OK(mt_file_write_atomic(path, data, n));
    mt_free(data);
    mt_pack *p = NULL;
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (!p) return;
    uint16_t px[30];
    MT_CHECK_OK(mt_pack_read_image(p, 2, px));
    MT_CHECK_FAILS(mt_pack_read_image(p, 3, px), MT_ERR_IO, "corrupt.h5", "/images row 3");
    mt_pack_close(p);
}

static void test_u8_no_masks_and_empty_rounds(void) {
    char path[512];
    path_in(path, sizeof path, "u8.h5");
    write_pack(path, 1, MT_U8, false); /* with 2 ranks, rank 1 brings nothing */
    mt_pack *p = NULL;
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (!p) return;
    MT_CHECK(mt_pack_get_info(p)->n == 1 && mt_pack_get_info(p)->dtype == MT_U8);
    MT_CHECK(mt_pack_get_info(p)->n_mask_classes == 0);
    uint8_t m[30];
    MT_CHECK_FAILS(mt_pack_read_mask(p, 0, m), MT_ERR_ARG, "no masks");
    mt_pack_close(p);
}

/* A pack without labels (a folder of DICOMs and no labels CSV) has /labels [N,0]. */
static void test_no_labels(void) {
    char path[512];
    path_in(path, sizeof path, "nolabels.h5");
    mt_pack_spec spec = {.h = 4, .w = 4, .dtype = MT_U8, .creator = "t"};
    mt_pack_writer *w = NULL;
    MT_CHECK_OK(mt_pack_writer_create(comm, path, &spec, &w));
    if (!w) return;
    uint8_t px[16] = {1, 2, 3};
    mt_pack_item it = {.pixels = px, .meta = {.case_id = "c"}};
    MT_CHECK_OK(mt_pack_writer_append(w, &it, 1));
    MT_CHECK_OK(mt_pack_writer_finish(w, true, NULL));
    mt_pack *p = NULL;
    MT_CHECK_OK(mt_pack_open(path, &p));
    if (!p) return;
    MT_CHECK(mt_pack_get_info(p)->n == mt_comm_world(comm) && mt_pack_get_info(p)->n_labels == 0);
    uint8_t back[16];
    MT_CHECK_OK(mt_pack_read_image(p, 0, back));
    MT_CHECK(back[2] == 3);
    mt_pack_close(p);
}

static void test_abandoned_pack_leaves_nothing(void) {
    char path[512], tmp[600];
    path_in(path, sizeof path, "abandoned.h5");
    const char *names[] = {"a"};
    mt_pack_spec spec = {
        .h = 4, .w = 4, .dtype = MT_U8, .n_labels = 1, .label_names = names, .creator = "t"};
    mt_pack_writer *w = NULL;
    MT_CHECK_OK(mt_pack_writer_create(comm, path, &spec, &w));
    mt_error_clear();
    if (mt_comm_rank(comm) == mt_comm_world(comm) - 1) mt_fail(MT_ERR_FORMAT, "a bad file");
    mt_status st = mt_pack_writer_finish(w, mt_comm_rank(comm) != mt_comm_world(comm) - 1, NULL);
    MT_CHECK(st != MT_OK && strstr(mt_error_message(), "a bad file"), "%s", mt_error_message());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    mt_comm_barrier(comm);
    MT_CHECK(!mt_path_exists(path) && !mt_path_exists(tmp));
}

/* A file with the given root attributes, made with HDF5 directly. */
static void make_h5(const char *path, const char *format, long version) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    if (format) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(format) + 1);
        hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, t, format);
        H5Aclose(a);
        H5Tclose(t);
    }
    if (version >= 0) {
        hid_t a = H5Acreate2(f, "version", H5T_NATIVE_LONG, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_LONG, &version);
        H5Aclose(a);
    }
    H5Sclose(sp);
    H5Fclose(f);
}

static void test_refuses_non_packs(void) {
    if (mt_comm_rank(comm) != 0) return;
    char path[512];
    mt_pack *p;
    path_in(path, sizeof path, "nothing.h5");
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_IO, "nothing.h5", "no such pack");
    path_in(path, sizeof path, "text.h5");
    MT_CHECK_OK(mt_file_write_atomic(path, "hello", 5));
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_FORMAT, "text.h5", "not an HDF5 file");
    path_in(path, sizeof path, "noattr.h5");
    make_h5(path, NULL, -1);
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_FORMAT, "noattr.h5",
                   "attribute 'format' is missing");
    path_in(path, sizeof path, "other.h5");
    make_h5(path, "some-other-format", 1);
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_FORMAT,
                   "format attribute is 'some-other-format'");
    path_in(path, sizeof path, "future.h5");
    make_h5(path, MT_PACK_FORMAT, 7);
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_FORMAT, "pack version 7", "newer medtrain");
    path_in(path, sizeof path, "empty.h5");
    make_h5(path, MT_PACK_FORMAT, MT_PACK_VERSION);
    MT_CHECK_FAILS(mt_pack_open(path, &p), MT_ERR_FORMAT, "/images is missing");
}

static void write_text(const char *name, const char *text, char *path, size_t n) {
    path_in(path, n, name);
    MT_CHECK_OK(mt_file_write_atomic(path, text, strlen(text)));
}

static void test_labels_csv(void) {
    if (mt_comm_rank(comm) != 0) return;
    char path[512];
    mt_label_table *t = NULL;
    write_text(
        "ok.csv",
        "path,Effusion,\"Nodule, small\"\r\na/1.dcm,1,\nb/2.dcm,-1,0\n\n\"c/3,x.dcm\",0.0,1\n",
        path, sizeof path);
    MT_CHECK_OK(mt_labels_load(path, &t));
    if (t) {
        MT_CHECK(mt_labels_key(t) == MT_KEY_PATH && mt_labels_count(t) == 2 &&
                 mt_labels_rows(t) == 3);
        MT_CHECK(!strcmp(mt_labels_names(t)[1], "Nodule, small"));
        const float *r = mt_labels_find(t, "a/1.dcm");
        MT_CHECK(r && r[0] == 1.0f && isnan(r[1]));
        r = mt_labels_find(t, "b/2.dcm");
        MT_CHECK(r && isnan(r[0]) && r[1] == 0.0f);
        r = mt_labels_find(t, "c/3,x.dcm");
        MT_CHECK(r && r[0] == 0.0f && r[1] == 1.0f);
        MT_CHECK(mt_labels_find(t, "d.dcm") == NULL && mt_labels_unused(t) == 0);
        mt_labels_free(t);
    }
    write_text("badvalue.csv", "patient_id,A,B\np1,1,0\np2,1,maybe\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT, "badvalue.csv:3:", "column 'B'",
                   "'maybe'");
    write_text("fields.csv", "sop_instance_uid,A,B\n1.2.3,1,0\n1.2.4,1\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT,
                   "fields.csv:3:", "2 fields, expected 3");
    write_text("dup.csv", "path,A\nx,1\ny,0\nx,0\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT, "dup.csv:4:", "same key as line 2");
    write_text("key.csv", "filename,A\nx,1\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT, "key.csv:1:", "'filename'",
                   "patient_id");
    write_text("quote.csv", "path,A\n\"x,1\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT, "quote.csv:2:", "unclosed quote");
    /* A patient id in a bad row is never echoed. */
    write_text("phi.csv", "patient_id,A\nQZPHI-ID-7,2\n", path, sizeof path);
    MT_CHECK_FAILS(mt_labels_load(path, &t), MT_ERR_FORMAT, "phi.csv:2:");
    MT_CHECK(!strstr(mt_error_message(), "QZPHI"), "%s", mt_error_message());
}

static void test_manifest(void) {
    if (mt_comm_rank(comm) != 0) return;
    char path[512];
    mt_source_list l = {0};
    write_text(
        "m.json",
        "[{\"image_path\": \"img/a.png\", \"case_id\": \"c1\", \"modality\": \"CR\", \"labels\": "
        "{\"A\": 1, \"B\": null}},\n"
        " {\"image_path\": \"img/b.png\", \"case_id\": \"c2\", \"labels\": {\"B\": -1, \"C\": 0}}]",
        path, sizeof path);
    MT_CHECK_OK(mt_sources_add_manifest(&l, path));
    MT_CHECK(l.n == 2 && l.n_labels == 3 && !strcmp(l.label_names[2], "C"));
    if (l.n == 2) {
        char want[512];
        snprintf(want, sizeof want, "%s/img/a.png", dir);
        MT_CHECK(!strcmp(l.items[0].path, want) && !strcmp(l.items[0].rel, "img/a.png"));
        MT_CHECK(!strcmp(l.items[0].case_id, "c1") && !strcmp(l.items[0].modality, "CR") &&
                 !l.items[1].modality);
        MT_CHECK(l.items[0].n_labels == 2 && l.items[0].labels[0] == 1.0f &&
                 isnan(l.items[0].labels[1]));
        MT_CHECK(l.items[1].n_labels == 3 && isnan(l.items[1].labels[0]) &&
                 isnan(l.items[1].labels[1]) && l.items[1].labels[2] == 0.0f);
    }
    mt_sources_free(&l);
    write_text("m2.json", "[{\"image_path\": \"a.png\"}]", path, sizeof path);
    MT_CHECK_FAILS(mt_sources_add_manifest(&l, path), MT_ERR_FORMAT, "m2.json: entry 0",
                   "'case_id'");
    mt_sources_free(&l);
    write_text("m3.json",
               "[{\"image_path\": \"a.png\", \"case_id\": \"x\", \"labels\": {\"A\": 2}}]", path,
               sizeof path);
    MT_CHECK_FAILS(mt_sources_add_manifest(&l, path), MT_ERR_FORMAT, "m3.json: entry 0",
                   "labels.A");
    mt_sources_free(&l);
    write_text("m4.json", "{\"image_path\": 1}", path, sizeof path);
    MT_CHECK_FAILS(mt_sources_add_manifest(&l, path), MT_ERR_FORMAT, "expected a JSON array");
    mt_sources_free(&l);
}

static void test_dicom_dir_walk_is_sorted(void) {
    if (mt_comm_rank(comm) != 0) return;
    char sub[512], f[600];
    path_in(sub, sizeof sub, "walk/b/c");
    MT_CHECK_OK(mt_mkdir_p(sub));
    const char *names[] = {"walk/b/c/2.dcm", "walk/a.dcm", "walk/b/1.dcm", "walk/.hidden",
                           "walk/b/c/10.dcm"};
    for (int i = 0; i < 5; i++) write_text(names[i], "x", f, sizeof f);
    mt_source_list l = {0};
    path_in(sub, sizeof sub, "walk");
    MT_CHECK_OK(mt_sources_add_dicom_dir(&l, sub));
    const char *want[] = {"a.dcm", "b/1.dcm", "b/c/10.dcm", "b/c/2.dcm"};
    MT_CHECK(l.n == 4);
    for (int i = 0; i < 4 && i < l.n; i++)
        MT_CHECK(!strcmp(l.items[i].rel, want[i]) && l.items[i].dicom, "%s", l.items[i].rel);
    mt_sources_free(&l);
    path_in(sub, sizeof sub, "walk/a.dcm");
    MT_CHECK_FAILS(mt_sources_add_dicom_dir(&l, sub), MT_ERR_IO, "not a folder");
    mt_sources_free(&l);
}

int main(int argc, char **argv) {
    if (mt_comm_init(&argc, &argv, &comm) != MT_OK) {
        fprintf(stderr, "%s\n", mt_error_message());
        return 1;
    }
    /* All ranks share rank 0's directory. */
    if (mt_comm_rank(comm) == 0) {
        snprintf(dir, sizeof dir, "/tmp/mt_pack_XXXXXX");
        if (!mkdtemp(dir)) return 1;
    }
    mt_comm_broadcast(comm, dir, sizeof dir, 0);
    MT_RUN(test_round_trip);
    MT_RUN(test_corrupt_chunk_is_detected);
    MT_RUN(test_multilabel_round_trip);
    MT_RUN(test_u8_no_masks_and_empty_rounds);
    MT_RUN(test_no_labels);
    MT_RUN(test_abandoned_pack_leaves_nothing);
    MT_RUN(test_refuses_non_packs);
    MT_RUN(test_labels_csv);
    MT_RUN(test_manifest);
    MT_RUN(test_dicom_dir_walk_is_sorted);
    /* Every rank's failures count. */
    int64_t failed = mt_test_summary() != 0;
    mt_comm_allreduce_i64(comm, &failed, 1, MT_COMM_SUM);
    mt_comm_barrier(comm);
    if (mt_comm_rank(comm) == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) failed++;
    }
    mt_comm_finalize(comm);
    return failed ? 1 : 0;
}
