/* HDF5 helpers: version, error text, and the parallel write/read-back self-test. */
#include "medtrain/h5.h"

#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "h5internal.h"
#include "medtrain/mem.h"
#include "medtrain/timer.h"

bool mt_h5_is_parallel(void) {
#ifdef H5_HAVE_PARALLEL
    return true;
#else
    return false;
#endif
}

const char *mt_h5_version(void) {
    static char buf[64];
    unsigned maj, min, rel;
    H5get_libversion(&maj, &min, &rel);
    snprintf(buf, sizeof buf, "%u.%u.%u (%s)", maj, min, rel,
             mt_h5_is_parallel() ? "parallel" : "serial");
    return buf;
}

/* The innermost entry of HDF5's error stack: the most specific reason. */
static herr_t innermost(unsigned n, const H5E_error2_t *e, void *out) {
    if (n == 0) snprintf((char *)out, 256, "%s", e->desc ? e->desc : "");
    return 0;
}

void mt_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

mt_status mt_h5_fail(const char *path, const char *what) {
    char reason[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, reason);
    H5Eclear2(H5E_DEFAULT);
    return mt_fail(MT_ERR_IO, "%s: HDF5 could not %s%s%s", path, what, reason[0] ? ": " : "",
                   reason);
}

enum { ROW = 4096 };

/* One rank's part of the self-test; returns its own status (agreed by the caller). */
static mt_status selftest_local(MPI_Comm comm, int rank, int world, const char *path) {
    mt_status st = MT_OK;
    hid_t fapl = -1, file = -1, space = -1, mem = -1, dset = -1, dxpl = -1;
    int *row = mt_alloc(ROW * sizeof(int), "HDF5 self-test row");
    if (!row) return MT_ERR_NOMEM;
    for (int i = 0; i < ROW; i++) row[i] = rank * 1000003 + i;
    hsize_t dims[2] = {(hsize_t)world, ROW}, start[2] = {(hsize_t)rank, 0}, count[2] = {1, ROW};

    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0) {
        st = mt_h5_fail(path, "set up the MPI-IO driver");
        goto done;
    }
    file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) {
        st = mt_h5_fail(path, "create the test file");
        goto done;
    }
    space = H5Screate_simple(2, dims, NULL);
    mem = H5Screate_simple(2, count, NULL);
    dset = H5Dcreate2(file, "rows", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (dset < 0 || dxpl < 0 || H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0 ||
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(dset, H5T_NATIVE_INT, mem, space, dxpl, row) < 0) {
        st = mt_h5_fail(path, "write rows collectively");
        goto done;
    }
    H5Dclose(dset), dset = -1;
    H5Fclose(file), file = -1;

    /* Read back the next rank's row through a fresh open. */
    int other = (rank + 1) % world;
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    dset = file < 0 ? -1 : H5Dopen2(file, "rows", H5P_DEFAULT);
    start[0] = (hsize_t)other;
    if (dset < 0 || H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(dset, H5T_NATIVE_INT, mem, space, dxpl, row) < 0) {
        st = mt_h5_fail(path, "read rows back collectively");
        goto done;
    }
    for (int i = 0; i < ROW; i++)
        if (row[i] != other * 1000003 + i) {
            st = mt_fail(MT_ERR_IO,
                         "%s: read back %d at [%d,%d], expected %d: parallel writes "
                         "are not reaching the file consistently",
                         path, row[i], other, i, other * 1000003 + i);
            break;
        }
done:
    if (dxpl >= 0) H5Pclose(dxpl);
    if (dset >= 0) H5Dclose(dset);
    if (mem >= 0) H5Sclose(mem);
    if (space >= 0) H5Sclose(space);
    if (file >= 0) H5Fclose(file);
    if (fapl >= 0) H5Pclose(fapl);
    mt_free(row);
    return st;
}

mt_status mt_h5_parallel_selftest(mt_comm *comm, const char *dir, double *seconds) {
    if (!mt_h5_is_parallel())
        return mt_fail(MT_ERR_UNSUPPORTED, "HDF5 %s was built without MPI", mt_h5_version());
    mt_h5_quiet();
    MPI_Comm mc = *(const MPI_Comm *)mt_comm_mpi(comm);
    int rank = mt_comm_rank(comm), world = mt_comm_world(comm);
    /* All ranks use rank 0's name, so that the file is the same one on shared storage. */
    char path[4096];
    long tag = (long)getpid();
    MT_TRY(mt_comm_broadcast(comm, &tag, sizeof tag, 0));
    snprintf(path, sizeof path, "%s/.medtrain-doctor-%ld.h5", dir, tag);
    double t0 = mt_now();
    mt_status st = selftest_local(mc, rank, world, path);
    st = mt_comm_agree(comm, st);
    if (rank == 0) unlink(path);
    if (seconds) *seconds = mt_now() - t0;
    return st;
}
