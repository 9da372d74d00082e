/* What a CUDA build can tell about the machine: runtime, driver, devices, NCCL. Declared only
 * when the CUDA backend is compiled in (MEDTRAIN_HAVE_CUDA). */
#ifndef MEDTRAIN_CUDA_H
#define MEDTRAIN_CUDA_H

#ifdef MEDTRAIN_HAVE_CUDA
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int mt_cuda_device_count(void); /* 0 when there is no GPU or no driver */
/* "CUDA runtime 13.0, driver 13.0" or the reason there is none. */
void mt_cuda_versions(char *buf, size_t n);
/* "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90" for device i. */
void mt_cuda_device_describe(int i, char *buf, size_t n);
/* "2.28.9", or "not built" when NCCL was not found at build time. */
const char *mt_cuda_nccl_version(void);

#ifdef __cplusplus
}
#endif
#endif

#endif
