/* HDF5 helpers shared by packs and checks. HDF5's own error printing is turned off; failures come
 * back as mt_status with the file, the object and HDF5's innermost reason. */
#ifndef MEDTRAIN_H5_H
#define MEDTRAIN_H5_H

#include <stdbool.h>
#include <stddef.h>
#include "medtrain/comm.h"
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "1.10.8 (parallel)" */
const char *mt_h5_version(void);
bool mt_h5_is_parallel(void);

/* Collective: every rank writes its own row of a dataset in a new file under dir with the MPI-IO
 * driver and collective transfers, then reads back another rank's row and checks it. The file is
 * removed afterwards. dir must be visible to every rank (shared storage on a cluster). */
mt_status mt_h5_parallel_selftest(mt_comm *comm, const char *dir, double *seconds);

#ifdef __cplusplus
}
#endif

#endif
