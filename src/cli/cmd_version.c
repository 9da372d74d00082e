/* medtrain version: what this binary is and what it was built against. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <mpi.h>
#include <openssl/crypto.h>
#include <string.h>

#include "build_info.h"
#include "cli.h"
#include "medtrain/cuda.h"
#include "medtrain/dicom.h"
#include "medtrain/h5.h"

void mt_cmd_version_usage(FILE *out) {
    fprintf(out, "usage: medtrain version\n\n"
                 "Prints medtrain's version, git commit, build type, whether the CUDA backend is\n"
                 "built, and the versions of MPI, HDF5, GDCM, BLAS, NCCL, cJSON and OpenSSL.\n");
}

/* {"MPI": "Open MPI v4.1.4", "HDF5": ..., ...}: what this binary runs on, in one place for
 * `version`, `doctor` and provenance.json. */
static cJSON *libraries_json(void) {
    cJSON *lib = cJSON_CreateObject();
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, "\n,")] = '\0';
    cJSON_AddStringToObject(lib, "MPI", mpi);
    cJSON_AddStringToObject(lib, "HDF5", mt_h5_version());
    cJSON_AddStringToObject(lib, "GDCM", mt_dicom_gdcm_version());
    cJSON_AddStringToObject(lib, "BLAS", openblas_get_config());
#ifdef MEDTRAIN_HAVE_CUDA
    char cuda[128];
    mt_cuda_versions(cuda, sizeof cuda);
    cJSON_AddStringToObject(lib, "CUDA", cuda);
    cJSON_AddStringToObject(lib, "NCCL", mt_cuda_nccl_version());
#else
    cJSON_AddStringToObject(lib, "CUDA", "not built");
    cJSON_AddStringToObject(lib, "NCCL", "not built");
#endif
    cJSON_AddStringToObject(lib, "cJSON", cJSON_Version());
    cJSON_AddStringToObject(lib, "OpenSSL", OpenSSL_version(OPENSSL_VERSION));
    return lib;
}

void mt_cli_print_versions(FILE *out) {
    cJSON *lib = libraries_json(), *it;
    cJSON_ArrayForEach(it, lib) {
        char key[16];
        snprintf(key, sizeof key, "%s:", it->string);
        fprintf(out, "  %-9s %s\n", key, it->valuestring);
    }
    cJSON_Delete(lib);
}

/* The same facts as JSON, for provenance.json. */
cJSON *mt_cli_build_json(void) {
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "version", MT_BUILD_VERSION);
    cJSON_AddStringToObject(b, "git_commit", MT_BUILD_COMMIT);
    cJSON_AddStringToObject(b, "build_type", MT_BUILD_TYPE);
    cJSON_AddStringToObject(b, "cuda", MT_BUILD_CUDA);
    cJSON_AddStringToObject(b, "cuda_architectures", MT_BUILD_CUDA_ARCHS);
    cJSON_AddStringToObject(b, "sanitize", MT_BUILD_SANITIZE);
    cJSON_AddStringToObject(b, "c_flags", MT_BUILD_C_FLAGS);
    cJSON_AddItemToObject(b, "libraries", libraries_json());
    return b;
}

mt_status mt_cmd_version(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_version_usage)) return MT_OK;
    if (argc > 1) return mt_cli_usage_error(mt_cmd_version_usage, "version takes no arguments");
    printf("medtrain %s (commit %s, %s build%s)\n", MT_BUILD_VERSION, MT_BUILD_COMMIT,
           MT_BUILD_TYPE, strcmp(MT_BUILD_SANITIZE, "ON") == 0 ? ", ASan/UBSan" : "");
    if (strcmp(MT_BUILD_CUDA, "ON") == 0)
        printf("  backends: cpu, cuda (architectures %s)\n", MT_BUILD_CUDA_ARCHS);
    else
        printf("  backends: cpu (CUDA backend not built)\n");
    mt_cli_print_versions(stdout);
    return MT_OK;
}
