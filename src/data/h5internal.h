/* Shared by the data module's HDF5 code (not public). */
#ifndef MEDTRAIN_H5INTERNAL_H
#define MEDTRAIN_H5INTERNAL_H

#include "medtrain/status.h"

/* Fails with MT_ERR_IO: "PATH: HDF5 could not WHAT: <innermost HDF5 reason>", clearing HDF5's
 * error stack. */
mt_status mt_h5_fail(const char *path, const char *what);
/* Turns off HDF5's own printing of error stacks (medtrain reports errors itself). */
void mt_h5_quiet(void);

#endif
