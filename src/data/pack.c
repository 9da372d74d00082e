/* Dataset packs: the HDF5 file every trainer reads (schema in include/medtrain/pack.h and
 * docs/DATA.md).
 *
 * Writing is collective with parallel HDF5 (MPI-IO driver, collective transfers): every dataset
 * is extendible along its first dim; each append round all-gathers how many items each rank
 * brings, extends every dataset once, and each rank writes its own slab at its offset, so rank
 * order within a round follows input order. The file is PATH.tmp until finish renames it.
 *
 * Reading opens the file on one rank with the default (POSIX) driver, no MPI involved: labels and
 * split lists are loaded at open, images, masks and metadata are read one row at a time. The HDF5
 * library is not thread-safe, so every reading call holds one process-wide lock: threads may use
 * different packs (or one, in turn) safely. */
#include "medtrain/pack.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "h5internal.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/mem.h"

static const char *split_names[MT_SPLIT_COUNT] = {"train", "val", "test"};

const char *mt_split_name(mt_split s) {
    return s < MT_SPLIT_COUNT ? split_names[s] : "?";
}

mt_status mt_split_parse(const char *name, mt_split *out) {
    for (int s = 0; s < MT_SPLIT_COUNT; s++)
        if (strcmp(name, split_names[s]) == 0) {
            *out = (mt_split)s;
            return MT_OK;
        }
    return mt_fail(MT_ERR_ARG, "unknown split '%s': expected train, val or test", name);
}

/* The per-image datasets, in one table so that create, extend, open and check treat them alike. */
enum {
    D_IMAGES,
    D_LABELS,
    D_MASKS,
    D_CASE,
    D_MODALITY,
    D_VIEW,
    D_DIGEST,
    D_SPACING,
    D_SPLIT,
    D_COUNT
};
static const char *dset_names[D_COUNT] = {"/images",
                                          "/labels",
                                          "/masks",
                                          "/meta/case_id",
                                          "/meta/modality",
                                          "/meta/view",
                                          "/meta/source_digest",
                                          "/meta/pixel_spacing",
                                          "/meta/split"};

static hid_t string_type(size_t n) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, n);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    return t;
}

/* Most dims of a dataset: [N,C,H,W] multi-label masks. */
enum { MAX_DIMS = 4 };

/* Row shape (dims after the first, at most MAX_DIMS - 1) and element type of dataset d. */
static int row_dims(int d, const mt_pack_info *in, hsize_t *dims) {
    switch (d) {
    case D_MASKS:
        if (in->mask_multilabel) {
            dims[0] = (hsize_t)in->n_mask_classes, dims[1] = (hsize_t)in->h;
            dims[2] = (hsize_t)in->w;
            return 3;
        }
        dims[0] = (hsize_t)in->h, dims[1] = (hsize_t)in->w;
        return 2;
    case D_IMAGES:
        dims[0] = (hsize_t)in->h, dims[1] = (hsize_t)in->w;
        return 2;
    case D_LABELS:
        dims[0] = (hsize_t)in->n_labels;
        return 1;
    case D_SPACING:
        dims[0] = 2;
        return 1;
    default:
        return 0;
    }
}

static hid_t mem_type(int d, mt_dtype dtype) {
    switch (d) {
    case D_IMAGES:
        return dtype == MT_U16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT8;
    case D_MASKS:
    case D_SPLIT:
        return H5T_NATIVE_UINT8;
    case D_LABELS:
    case D_SPACING:
        return H5T_NATIVE_FLOAT;
    case D_CASE:
        return string_type(MT_PACK_CASE_ID);
    case D_MODALITY:
    case D_VIEW:
        return string_type(MT_PACK_SHORT);
    default:
        return string_type(MT_PACK_DIGEST);
    }
}

static void close_type(hid_t t) {
    if (H5Tget_class(t) == H5T_STRING) H5Tclose(t);
}

static size_t row_bytes(int d, const mt_pack_info *in) {
    hsize_t dims[MAX_DIMS - 1];
    int nd = row_dims(d, in, dims);
    hid_t t = mem_type(d, in->dtype);
    size_t n = H5Tget_size(t);
    for (int i = 0; i < nd; i++) n *= (size_t)dims[i];
    close_type(t);
    return n;
}

int mt_pack_mask_planes(const mt_pack_info *in) {
    if (in->n_mask_classes == 0) return 0;
    return in->mask_multilabel ? in->n_mask_classes : 1;
}

/* ---- writing ----------------------------------------------------------------------------- */

struct mt_pack_writer {
    mt_comm *comm;
    char path[4096], tmp[4096];
    mt_pack_info info; /* h, w, dtype, n_labels, n_mask_classes; n = rows so far */
    const mt_pack_spec *spec;
    hid_t file, dset[D_COUNT], dxpl;
};

static mt_status create_dataset(mt_pack_writer *w, int d) {
    if (d == D_MASKS && w->info.n_mask_classes == 0) {
        w->dset[d] = -1;
        return MT_OK;
    }
    hsize_t dims[MAX_DIMS] = {0}, maxdims[MAX_DIMS] = {H5S_UNLIMITED}, chunk[MAX_DIMS] = {1};
    int nd = 1 + row_dims(d, &w->info, dims + 1);
    for (int i = 1; i < nd; i++) maxdims[i] = chunk[i] = dims[i];
    /* A pack without labels still has /labels, [N,0]; HDF5 chunks cannot be 0 wide. */
    for (int i = 1; i < nd; i++)
        if (dims[i] == 0) maxdims[i] = H5S_UNLIMITED, chunk[i] = 1;
    /* One image per chunk for images and masks; small rows are chunked by the thousand. */
    if (d != D_IMAGES && d != D_MASKS) chunk[0] = 1024;
    hid_t space = H5Screate_simple(nd, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, nd, chunk);
    /* A checksum per image chunk: a damaged file fails to read instead of giving zeros. */
    if (d == D_IMAGES || d == D_MASKS) H5Pset_fletcher32(dcpl);
    if (d == D_LABELS || d == D_SPACING) {
        float nan = NAN;
        H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan);
    }
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t t = mem_type(d, w->info.dtype);
    w->dset[d] = H5Dcreate2(w->file, dset_names[d], t, space, lcpl, dcpl, H5P_DEFAULT);
    close_type(t);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (w->dset[d] < 0) return mt_h5_fail(w->tmp, "create a dataset");
    return MT_OK;
}

mt_status mt_pack_writer_create(mt_comm *comm, const char *path, const mt_pack_spec *spec,
                                mt_pack_writer **out) {
    if (spec->dtype != MT_U8 && spec->dtype != MT_U16)
        return mt_fail(MT_ERR_ARG, "%s: images are stored as u8 or u16, not %s", path,
                       mt_dtype_name(spec->dtype));
    if (spec->h <= 0 || spec->w <= 0 || spec->n_labels < 0 || spec->n_mask_classes < 0)
        return mt_fail(MT_ERR_ARG, "%s: bad pack shape %dx%d, %d labels", path, spec->h, spec->w,
                       spec->n_labels);
    if (spec->mask_multilabel && spec->n_mask_classes < 1)
        return mt_fail(MT_ERR_ARG, "%s: multi-label masks need at least one class", path);
    mt_pack_writer *w = mt_calloc(1, sizeof *w, "pack writer");
    if (!w) return MT_ERR_NOMEM;
    w->comm = comm;
    w->spec = spec;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->info.h = spec->h, w->info.w = spec->w, w->info.dtype = spec->dtype;
    w->info.n_labels = spec->n_labels, w->info.n_mask_classes = spec->n_mask_classes;
    w->info.mask_multilabel = spec->mask_multilabel;
    for (int d = 0; d < D_COUNT; d++) w->dset[d] = -1;
    mt_h5_quiet();

    MPI_Comm mc = *(const MPI_Comm *)mt_comm_mpi(comm);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, mc, MPI_INFO_NULL);
    H5Pset_all_coll_metadata_ops(fapl, 1);
    H5Pset_coll_metadata_write(fapl, 1);
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    mt_status st = w->file < 0 ? mt_h5_fail(w->tmp, "create the pack file") : MT_OK;
    for (int d = 0; st == MT_OK && d < D_COUNT; d++) st = create_dataset(w, d);
    if (st == MT_OK) {
        w->dxpl = H5Pcreate(H5P_DATASET_XFER);
        H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE);
    }
    st = mt_comm_agree(comm, st);
    if (st != MT_OK) {
        mt_pack_writer_finish(w, false, NULL);
        return st;
    }
    *out = w;
    return MT_OK;
}

/* Writes this rank's n rows (packed in buf) of dataset d at rows [start, start+n) of a dataset
 * that has just been extended to total rows. Collective: ranks with n == 0 select nothing. */
static mt_status write_rows(mt_pack_writer *w, int d, hsize_t total, hsize_t start, hsize_t n,
                            const void *buf) {
    hsize_t dims[MAX_DIMS] = {total}, off[MAX_DIMS] = {start}, count[MAX_DIMS] = {n};
    int nd = 1 + row_dims(d, &w->info, dims + 1);
    for (int i = 1; i < nd; i++) count[i] = dims[i];
    if (H5Dset_extent(w->dset[d], dims) < 0) return mt_h5_fail(w->tmp, "extend a dataset");
    for (int i = 1; i < nd; i++)
        if (dims[i] == 0) return MT_OK; /* rows of zero width: nothing to write */
    hid_t fspace = H5Dget_space(w->dset[d]);
    hid_t mspace = H5Screate_simple(nd, count, NULL);
    if (n == 0) {
        H5Sselect_none(fspace);
        H5Sselect_none(mspace);
    } else {
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, count, NULL);
    }
    hid_t t = mem_type(d, w->info.dtype);
    herr_t e = H5Dwrite(w->dset[d], t, mspace, fspace, w->dxpl, buf);
    close_type(t);
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (e < 0) return mt_h5_fail(w->tmp, "write rows");
    return MT_OK;
}

/* Packs field d of the n items into buf (row_bytes each). */
static void gather_rows(const mt_pack_writer *w, int d, const mt_pack_item *items, int n,
                        char *buf) {
    size_t rb = row_bytes(d, &w->info);
    for (int i = 0; i < n; i++) {
        char *dst = buf + (size_t)i * rb;
        const mt_pack_item *it = &items[i];
        memset(dst, 0, rb);
        switch (d) {
        case D_IMAGES:
            memcpy(dst, it->pixels, rb);
            break;
        case D_LABELS:
            if (rb) memcpy(dst, it->labels, rb);
            break;
        case D_MASKS:
            if (it->mask) memcpy(dst, it->mask, rb);
            break;
        case D_CASE:
            snprintf(dst, rb, "%s", it->meta.case_id);
            break;
        case D_MODALITY:
            snprintf(dst, rb, "%s", it->meta.modality);
            break;
        case D_VIEW:
            snprintf(dst, rb, "%s", it->meta.view);
            break;
        case D_DIGEST:
            snprintf(dst, rb, "%s", it->meta.source_digest);
            break;
        case D_SPACING:
            memcpy(dst, it->meta.pixel_spacing, rb);
            break;
        case D_SPLIT:
            *(uint8_t *)dst = (uint8_t)it->meta.split;
            break;
        }
    }
}

mt_status mt_pack_writer_append(mt_pack_writer *w, const mt_pack_item *items, int n) {
    int world = mt_comm_world(w->comm), rank = mt_comm_rank(w->comm);
    int64_t *counts = mt_calloc((size_t)world, sizeof *counts, "pack round counts");
    int64_t mine = n;
    mt_status st = counts ? mt_comm_allgather(w->comm, &mine, counts, sizeof mine) : MT_ERR_NOMEM;
    st = mt_comm_agree(w->comm, st);
    if (st != MT_OK) {
        mt_free(counts);
        return st;
    }
    int64_t before = 0, total = w->info.n;
    for (int r = 0; r < world; r++) {
        if (r < rank) before += counts[r];
        total += counts[r];
    }
    mt_free(counts);
    size_t biggest = 0;
    for (int d = 0; d < D_COUNT; d++)
        if (row_bytes(d, &w->info) > biggest) biggest = row_bytes(d, &w->info);
    char *buf = mt_alloc(biggest * (size_t)(n ? n : 1), "pack round buffer");
    st = buf ? MT_OK : MT_ERR_NOMEM;
    st = mt_comm_agree(w->comm, st);
    for (int d = 0; st == MT_OK && d < D_COUNT; d++) {
        if (w->dset[d] < 0) continue;
        gather_rows(w, d, items, n, buf);
        st = write_rows(w, d, (hsize_t)total, (hsize_t)(w->info.n + before), (hsize_t)n, buf);
    }
    mt_free(buf);
    st = mt_comm_agree(w->comm, st);
    if (st == MT_OK) w->info.n = total;
    return st;
}

/* Reads a whole 1-D dataset of n rows (each rank independently, after the writes are flushed). */
static mt_status read_all(hid_t dset, hid_t type, void *buf, const char *path) {
    if (H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        return mt_h5_fail(path, "read back a dataset");
    return MT_OK;
}

static mt_status write_string_attr(hid_t obj, const char *name, const char *value,
                                   const char *path) {
    hid_t t = string_type(strlen(value) + 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, t, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
    return e < 0 ? mt_h5_fail(path, "write an attribute") : MT_OK;
}

/* A list of names as a variable-length string array attribute (h5py reads it as a list of str). */
static mt_status write_names_attr(hid_t obj, const char *name, const char *const *names, int n,
                                  const char *path) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_NULL);
    hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : (n ? H5Awrite(a, t, names) : 0);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
    return e < 0 ? mt_h5_fail(path, "write a names attribute") : MT_OK;
}

static mt_status write_int_attr(hid_t obj, const char *name, int64_t v, const char *path) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return e < 0 ? mt_h5_fail(path, "write an attribute") : MT_OK;
}

/* /splits/{train,val,test} from /meta/split; rank 0 writes the data, every rank takes part. */
static mt_status write_splits(mt_pack_writer *w, const uint8_t *split) {
    int64_t n = w->info.n;
    int64_t *idx = mt_alloc((size_t)(n ? n : 1) * sizeof *idx, "split indices");
    if (!idx) return MT_ERR_NOMEM;
    mt_status st = MT_OK;
    hid_t group = H5Gcreate2(w->file, "/splits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) st = mt_h5_fail(w->tmp, "create /splits");
    for (int s = 0; st == MT_OK && s < MT_SPLIT_COUNT; s++) {
        hsize_t count = 0;
        for (int64_t i = 0; i < n; i++)
            if (split[i] == s) idx[count++] = i;
        hid_t space = H5Screate_simple(1, &count, NULL);
        hid_t d = H5Dcreate2(group, split_names[s], H5T_NATIVE_INT64, space, H5P_DEFAULT,
                             H5P_DEFAULT, H5P_DEFAULT);
        hid_t mspace = H5Screate_simple(1, &count, NULL);
        if (mt_comm_rank(w->comm) != 0 || count == 0) {
            H5Sselect_none(space);
            H5Sselect_none(mspace);
        }
        /* An empty split has no storage to write to; every rank knows count, so all skip. */
        if (d < 0 || (count > 0 && H5Dwrite(d, H5T_NATIVE_INT64, mspace, space, w->dxpl, idx) < 0))
            st = mt_h5_fail(w->tmp, "write a split");
        if (d >= 0) H5Dclose(d);
        H5Sclose(mspace);
        H5Sclose(space);
    }
    if (group >= 0) H5Gclose(group);
    mt_free(idx);
    return st;
}

/* The input digest: SHA-256 over every image's source digest in file order, then extra. */
static mt_status input_digest(mt_pack_writer *w, char hex[MT_PACK_DIGEST], const char *extra) {
    size_t rb = MT_PACK_DIGEST;
    char *digests = mt_alloc(rb * (size_t)(w->info.n ? w->info.n : 1), "source digests");
    if (!digests) return MT_ERR_NOMEM;
    hid_t t = string_type(MT_PACK_DIGEST);
    mt_status st = w->info.n ? read_all(w->dset[D_DIGEST], t, digests, w->tmp) : MT_OK;
    H5Tclose(t);
    mt_sha256_ctx *h = NULL;
    if (st == MT_OK) st = mt_sha256_begin(&h);
    for (int64_t i = 0; st == MT_OK && i < w->info.n; i++)
        st = mt_sha256_update(h, digests + (size_t)i * rb, strnlen(digests + (size_t)i * rb, rb));
    if (st == MT_OK && extra) st = mt_sha256_update(h, extra, strlen(extra));
    uint8_t d[MT_SHA256_BYTES];
    if (h) {
        mt_status st2 = mt_sha256_end(h, st == MT_OK ? d : NULL);
        if (st == MT_OK) st = st2;
    }
    if (st == MT_OK) mt_hex(d, MT_SHA256_BYTES, hex);
    mt_free(digests);
    return st;
}

static mt_status finish_contents(mt_pack_writer *w, const char *extra) {
    /* Everyone must see every rank's rows before reading /meta back. */
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) return mt_h5_fail(w->tmp, "flush");
    uint8_t *split = mt_alloc((size_t)(w->info.n ? w->info.n : 1), "split column");
    if (!split) return MT_ERR_NOMEM;
    mt_status st = w->info.n ? read_all(w->dset[D_SPLIT], H5T_NATIVE_UINT8, split, w->tmp) : MT_OK;
    if (st == MT_OK) st = write_splits(w, split);
    mt_free(split);
    char digest[MT_PACK_DIGEST] = "";
    if (st == MT_OK) st = input_digest(w, digest, extra);
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* Attribute values must be identical on every rank: rank 0's time is broadcast. */
    if (st == MT_OK) st = mt_comm_broadcast(w->comm, created, sizeof created, 0);
    hid_t root = w->file;
    if (st == MT_OK) st = write_string_attr(root, "format", MT_PACK_FORMAT, w->tmp);
    if (st == MT_OK) st = write_int_attr(root, "version", MT_PACK_VERSION, w->tmp);
    if (st == MT_OK)
        st = write_string_attr(root, "creator", w->spec->creator ? w->spec->creator : "medtrain",
                               w->tmp);
    if (st == MT_OK) st = write_string_attr(root, "created", created, w->tmp);
    if (st == MT_OK) st = write_string_attr(root, "input_digest", digest, w->tmp);
    if (st == MT_OK)
        st = write_names_attr(w->dset[D_LABELS], "names", w->spec->label_names, w->info.n_labels,
                              w->tmp);
    if (st == MT_OK && w->dset[D_MASKS] >= 0)
        st = write_names_attr(w->dset[D_MASKS], "classes", w->spec->mask_classes,
                              w->info.n_mask_classes, w->tmp);
    return st;
}

mt_status mt_pack_writer_finish(mt_pack_writer *w, bool ok, const char *extra_digest_text) {
    /* A rank that failed keeps its own message; mt_comm_agree hands it to the others. */
    mt_status st = mt_comm_agree(w->comm, ok ? MT_OK : MT_ERR_IO);
    bool keep = st == MT_OK;
    if (keep) st = mt_comm_agree(w->comm, finish_contents(w, extra_digest_text));
    keep = st == MT_OK;
    for (int d = 0; d < D_COUNT; d++)
        if (w->dset[d] >= 0) H5Dclose(w->dset[d]);
    if (w->dxpl > 0) H5Pclose(w->dxpl);
    mt_status closed = MT_OK;
    if (w->file >= 0 && H5Fclose(w->file) < 0) closed = mt_h5_fail(w->tmp, "close the pack");
    if (keep) st = mt_comm_agree(w->comm, closed);
    keep = st == MT_OK;
    mt_status renamed = MT_OK;
    if (mt_comm_rank(w->comm) == 0) {
        if (!keep) {
            unlink(w->tmp);
        } else if (rename(w->tmp, w->path) != 0) {
            renamed = mt_fail(MT_ERR_IO, "%s: cannot rename %s into place", w->path, w->tmp);
        } else {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", w->path);
            char *slash = strrchr(dir, '/');
            if (slash) *slash = '\0';
            renamed = mt_fsync_dir(slash ? (dir[0] ? dir : "/") : ".");
        }
    }
    if (keep) st = mt_comm_agree(w->comm, renamed);
    mt_free(w);
    return st;
}

/* ---- reading ----------------------------------------------------------------------------- */

static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

struct mt_pack {
    char path[4096];
    hid_t file, dset[D_COUNT];
    mt_pack_info info;
    float *labels;
    int64_t *split_idx[MT_SPLIT_COUNT];
};

static mt_status read_string_attr(hid_t obj, const char *name, char *out, size_t n,
                                  const char *path, bool required) {
    out[0] = '\0';
    if (H5Aexists(obj, name) <= 0) {
        if (!required) return MT_OK;
        return mt_fail(MT_ERR_FORMAT, "%s: not a medtrain pack (attribute '%s' is missing)", path,
                       name);
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a);
    mt_status st = MT_OK;
    if (H5Tget_class(ft) != H5T_STRING) {
        st = mt_fail(MT_ERR_FORMAT, "%s: attribute '%s' is not a string", path, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *v = NULL;
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        if (H5Aread(a, t, &v) < 0)
            st = mt_h5_fail(path, "read an attribute");
        else
            snprintf(out, n, "%s", v ? v : "");
        if (v) H5free_memory(v);
        H5Tclose(t);
    } else {
        size_t sz = H5Tget_size(ft);
        char *buf = mt_calloc(sz + 1, 1, "attribute");
        hid_t t = string_type(sz + 1);
        if (!buf)
            st = MT_ERR_NOMEM;
        else if (H5Aread(a, ft, buf) < 0)
            st = mt_h5_fail(path, "read an attribute");
        else
            snprintf(out, n, "%s", buf);
        H5Tclose(t);
        mt_free(buf);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return st;
}

static mt_status read_names_attr(hid_t obj, const char *name, int expect, char ***out,
                                 const char *path) {
    *out = NULL;
    if (H5Aexists(obj, name) <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: attribute '%s' of a dataset is missing", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t space = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    mt_status st = MT_OK;
    if (H5Sget_simple_extent_type(space) == H5S_NULL) n = 0;
    if (n != expect)
        st = mt_fail(MT_ERR_FORMAT, "%s: attribute '%s' has %lld names for %d columns", path, name,
                     (long long)n, expect);
    char **names = st == MT_OK ? mt_calloc((size_t)(n + 1), sizeof *names, "names") : NULL;
    if (st == MT_OK && !names) st = MT_ERR_NOMEM;
    if (st == MT_OK && n > 0) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        char **raw = mt_calloc((size_t)n, sizeof *raw, "raw names");
        if (!raw || H5Aread(a, t, raw) < 0)
            st = raw ? mt_h5_fail(path, "read names") : MT_ERR_NOMEM;
        for (hssize_t i = 0; st == MT_OK && i < n; i++) {
            names[i] = mt_strdup(raw[i] ? raw[i] : "", "name");
            if (!names[i]) st = MT_ERR_NOMEM;
        }
        if (raw) {
            H5Dvlen_reclaim(t, space, H5P_DEFAULT, raw);
            mt_free(raw);
        }
        H5Tclose(t);
    }
    H5Sclose(space);
    H5Aclose(a);
    *out = names;
    return st;
}

static void free_names(char **names) {
    if (!names) return;
    for (char **p = names; *p; p++) mt_free(*p);
    mt_free(names);
}

/* Opens dataset d and checks its rank, row shape and row count against the pack's. */
static mt_status open_dataset(mt_pack *p, int d) {
    p->dset[d] = H5Dopen2(p->file, dset_names[d], H5P_DEFAULT);
    if (p->dset[d] < 0) {
        H5Eclear2(H5E_DEFAULT);
        return mt_fail(MT_ERR_FORMAT, "%s: dataset %s is missing", p->path, dset_names[d]);
    }
    hid_t space = H5Dget_space(p->dset[d]);
    hsize_t dims[MAX_DIMS] = {0}, want[MAX_DIMS - 1] = {0};
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd >= 1 && nd <= MAX_DIMS) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    int want_nd = 1 + row_dims(d, &p->info, want);
    if (d == D_IMAGES) {
        if (nd != 3)
            return mt_fail(MT_ERR_FORMAT, "%s: /images has %d dims, expected 3 (N,H,W)", p->path,
                           nd);
        return MT_OK;
    }
    bool ok = nd == want_nd && dims[0] == (hsize_t)p->info.n;
    for (int i = 1; ok && i < nd; i++) ok = dims[i] == want[i - 1];
    if (!ok)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: %s has %llu rows in %d dims, expected %lld rows in %d "
                       "dims (one per image of /images)",
                       p->path, dset_names[d], (unsigned long long)dims[0], nd,
                       (long long)p->info.n, want_nd);
    return MT_OK;
}

/* The class count and layout of /masks: [N,H,W] class indices, or [N,C,H,W] multi-label, with
 * C names in `classes` (open_dataset then checks the shape against them). */
static mt_status mask_layout(mt_pack *p) {
    hid_t m = H5Dopen2(p->file, "/masks", H5P_DEFAULT);
    if (m < 0) return mt_h5_fail(p->path, "open /masks");
    int n_classes = 0;
    if (H5Aexists(m, "classes") > 0) {
        hid_t ca = H5Aopen(m, "classes", H5P_DEFAULT);
        hid_t cs = H5Aget_space(ca);
        n_classes = (int)H5Sget_simple_extent_npoints(cs);
        H5Sclose(cs);
        H5Aclose(ca);
    }
    hid_t space = H5Dget_space(m);
    int nd = H5Sget_simple_extent_ndims(space);
    H5Sclose(space);
    H5Dclose(m);
    if (nd != 3 && nd != 4)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: /masks has %d dims, expected 3 (N,H,W class indices) or 4 (N,C,H,W "
                       "multi-label)",
                       p->path, nd);
    p->info.mask_multilabel = nd == 4;
    p->info.n_mask_classes = n_classes > 0 ? n_classes : 1;
    return MT_OK;
}

static mt_status open_checked(mt_pack *p) {
    char format[64];
    MT_TRY(read_string_attr(p->file, "format", format, sizeof format, p->path, true));
    if (strcmp(format, MT_PACK_FORMAT) != 0)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: format attribute is '%s', expected '%s': not a medtrain "
                       "dataset pack",
                       p->path, format, MT_PACK_FORMAT);
    if (H5Aexists(p->file, "version") <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: not a medtrain pack (attribute 'version' is missing)",
                       p->path);
    int64_t version = 0;
    hid_t a = H5Aopen(p->file, "version", H5P_DEFAULT);
    herr_t e = H5Aread(a, H5T_NATIVE_INT64, &version);
    H5Aclose(a);
    if (e < 0) return mt_h5_fail(p->path, "read the version attribute");
    if (version != MT_PACK_VERSION)
        return mt_fail(MT_ERR_FORMAT, "%s: pack version %lld, this medtrain reads version %d%s",
                       p->path, (long long)version, MT_PACK_VERSION,
                       version > MT_PACK_VERSION ? " (made by a newer medtrain)" : " (repack it)");
    p->info.version = (int)version;
    MT_TRY(read_string_attr(p->file, "creator", p->info.creator, sizeof p->info.creator, p->path,
                            false));
    MT_TRY(read_string_attr(p->file, "created", p->info.created, sizeof p->info.created, p->path,
                            false));
    MT_TRY(read_string_attr(p->file, "input_digest", p->info.input_digest,
                            sizeof p->info.input_digest, p->path, false));

    /* /images defines N, H, W and the dtype; everything else must agree with it. */
    MT_TRY(open_dataset(p, D_IMAGES));
    hid_t space = H5Dget_space(p->dset[D_IMAGES]);
    hsize_t dims[3];
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    p->info.n = (int64_t)dims[0], p->info.h = (int)dims[1], p->info.w = (int)dims[2];
    hid_t t = H5Dget_type(p->dset[D_IMAGES]);
    size_t sz = H5Tget_size(t);
    bool integer = H5Tget_class(t) == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE;
    H5Tclose(t);
    if (!integer || (sz != 1 && sz != 2))
        return mt_fail(MT_ERR_FORMAT, "%s: /images must be u8 or u16", p->path);
    p->info.dtype = sz == 1 ? MT_U8 : MT_U16;

    hid_t lab = H5Dopen2(p->file, "/labels", H5P_DEFAULT);
    if (lab < 0) {
        H5Eclear2(H5E_DEFAULT);
        return mt_fail(MT_ERR_FORMAT, "%s: dataset /labels is missing", p->path);
    }
    space = H5Dget_space(lab);
    hsize_t ldims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(space) == 2) H5Sget_simple_extent_dims(space, ldims, NULL);
    H5Sclose(space);
    H5Dclose(lab);
    p->info.n_labels = (int)ldims[1];
    p->info.n_mask_classes = 0;
    if (H5Lexists(p->file, "/masks", H5P_DEFAULT) > 0) MT_TRY(mask_layout(p));
    for (int d = 0; d < D_COUNT; d++) {
        if (d == D_IMAGES || (d == D_MASKS && p->info.n_mask_classes == 0)) continue;
        MT_TRY(open_dataset(p, d));
    }
    MT_TRY(read_names_attr(p->dset[D_LABELS], "names", p->info.n_labels, &p->info.label_names,
                           p->path));
    if (p->info.n_mask_classes)
        MT_TRY(read_names_attr(p->dset[D_MASKS], "classes", p->info.n_mask_classes,
                               &p->info.mask_classes, p->path));

    size_t nl = (size_t)p->info.n * (size_t)p->info.n_labels;
    p->labels = mt_alloc((nl ? nl : 1) * sizeof(float), "pack labels");
    if (!p->labels) return MT_ERR_NOMEM;
    if (nl) MT_TRY(read_all(p->dset[D_LABELS], H5T_NATIVE_FLOAT, p->labels, p->path));

    for (int s = 0; s < MT_SPLIT_COUNT; s++) {
        char name[32];
        snprintf(name, sizeof name, "/splits/%s", split_names[s]);
        hid_t d = H5Dopen2(p->file, name, H5P_DEFAULT);
        if (d < 0) {
            H5Eclear2(H5E_DEFAULT);
            return mt_fail(MT_ERR_FORMAT, "%s: split %s is missing", p->path, name);
        }
        space = H5Dget_space(d);
        hssize_t n = H5Sget_simple_extent_npoints(space);
        H5Sclose(space);
        p->split_idx[s] = mt_alloc((size_t)(n ? n : 1) * sizeof(int64_t), "split");
        mt_status st = p->split_idx[s] ? MT_OK : MT_ERR_NOMEM;
        if (st == MT_OK && n) st = read_all(d, H5T_NATIVE_INT64, p->split_idx[s], p->path);
        H5Dclose(d);
        MT_TRY(st);
        for (hssize_t i = 0; i < n; i++)
            if (p->split_idx[s][i] < 0 || p->split_idx[s][i] >= p->info.n)
                return mt_fail(MT_ERR_FORMAT, "%s: %s lists image %lld, but the pack has %lld",
                               p->path, name, (long long)p->split_idx[s][i], (long long)p->info.n);
        p->info.split_n[s] = n;
    }
    return MT_OK;
}

static mt_status pack_open_locked(const char *path, mt_pack **out);
static void pack_close_locked(mt_pack *p);
static mt_status read_row_locked(mt_pack *p, int d, int64_t i, void *out);

mt_status mt_pack_open(const char *path, mt_pack **out) {
    pthread_mutex_lock(&h5_lock);
    mt_status st = pack_open_locked(path, out);
    pthread_mutex_unlock(&h5_lock);
    return st;
}

void mt_pack_close(mt_pack *p) {
    pthread_mutex_lock(&h5_lock);
    pack_close_locked(p);
    pthread_mutex_unlock(&h5_lock);
}

static mt_status read_row(mt_pack *p, int d, int64_t i, void *out) {
    pthread_mutex_lock(&h5_lock);
    mt_status st = read_row_locked(p, d, i, out);
    pthread_mutex_unlock(&h5_lock);
    return st;
}

static mt_status pack_open_locked(const char *path, mt_pack **out) {
    mt_h5_quiet();
    if (!mt_path_exists(path)) return mt_fail(MT_ERR_IO, "%s: no such pack", path);
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return mt_fail(MT_ERR_FORMAT, "%s: not an HDF5 file (is it a medtrain pack?)", path);
    }
    mt_pack *p = mt_calloc(1, sizeof *p, "pack");
    if (!p) return MT_ERR_NOMEM;
    snprintf(p->path, sizeof p->path, "%s", path);
    for (int d = 0; d < D_COUNT; d++) p->dset[d] = -1;
    p->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    mt_status st = p->file < 0 ? mt_h5_fail(path, "open the pack") : open_checked(p);
    if (st != MT_OK) {
        pack_close_locked(p);
        return st;
    }
    *out = p;
    return MT_OK;
}

static void pack_close_locked(mt_pack *p) {
    if (!p) return;
    for (int d = 0; d < D_COUNT; d++)
        if (p->dset[d] >= 0) H5Dclose(p->dset[d]);
    if (p->file >= 0) H5Fclose(p->file);
    free_names(p->info.label_names);
    free_names(p->info.mask_classes);
    mt_free(p->labels);
    for (int s = 0; s < MT_SPLIT_COUNT; s++) mt_free(p->split_idx[s]);
    mt_free(p);
}

const mt_pack_info *mt_pack_get_info(const mt_pack *p) {
    return &p->info;
}
const char *mt_pack_path(const mt_pack *p) {
    return p->path;
}
const float *mt_pack_labels(const mt_pack *p) {
    return p->labels;
}

const int64_t *mt_pack_split(const mt_pack *p, mt_split s, int64_t *n) {
    *n = s < MT_SPLIT_COUNT ? p->info.split_n[s] : 0;
    return s < MT_SPLIT_COUNT ? p->split_idx[s] : NULL;
}

/* Reads row i of dataset d into out. */
static mt_status read_row_locked(mt_pack *p, int d, int64_t i, void *out) {
    if (i < 0 || i >= p->info.n)
        return mt_fail(MT_ERR_ARG, "%s: image %lld is out of range (the pack has %lld)", p->path,
                       (long long)i, (long long)p->info.n);
    hsize_t off[MAX_DIMS] = {(hsize_t)i}, count[MAX_DIMS] = {1};
    int nd = 1 + row_dims(d, &p->info, count + 1);
    hid_t fspace = H5Dget_space(p->dset[d]);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, count, NULL);
    hid_t mspace = H5Screate_simple(nd, count, NULL);
    hid_t t = mem_type(d, p->info.dtype);
    herr_t e = H5Dread(p->dset[d], t, mspace, fspace, H5P_DEFAULT, out);
    close_type(t);
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (e < 0) {
        char what[96];
        snprintf(what, sizeof what, "read %s row %lld", dset_names[d], (long long)i);
        return mt_h5_fail(p->path, what);
    }
    return MT_OK;
}

mt_status mt_pack_read_image(mt_pack *p, int64_t i, void *out) {
    return read_row(p, D_IMAGES, i, out);
}

mt_status mt_pack_read_mask(mt_pack *p, int64_t i, uint8_t *out) {
    if (p->info.n_mask_classes == 0)
        return mt_fail(MT_ERR_ARG, "%s: the pack has no masks", p->path);
    return read_row(p, D_MASKS, i, out);
}

mt_status mt_pack_read_meta(mt_pack *p, int64_t i, mt_pack_meta *out) {
    memset(out, 0, sizeof *out);
    uint8_t split = 0;
    MT_TRY(read_row(p, D_CASE, i, out->case_id));
    MT_TRY(read_row(p, D_MODALITY, i, out->modality));
    MT_TRY(read_row(p, D_VIEW, i, out->view));
    MT_TRY(read_row(p, D_DIGEST, i, out->source_digest));
    MT_TRY(read_row(p, D_SPACING, i, out->pixel_spacing));
    MT_TRY(read_row(p, D_SPLIT, i, &split));
    out->split = split < MT_SPLIT_COUNT ? (mt_split)split : MT_SPLIT_TRAIN;
    return MT_OK;
}
