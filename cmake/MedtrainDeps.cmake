# Finds the system libraries medtrain builds on. scripts/install-deps.sh installs all of them on
# Debian/Ubuntu; the messages below name the package to install when one is missing.
find_package(PkgConfig REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS C)
find_package(Threads REQUIRED)

find_package(MPI REQUIRED COMPONENTS C)

# Parallel HDF5 is required: `medtrain pack` writes one file from many ranks. Debian installs the
# serial and the MPI flavours side by side, so ask for the parallel one explicitly.
set(HDF5_PREFER_PARALLEL ON)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR
    "Found HDF5 at ${HDF5_INCLUDE_DIRS}, but it is the serial build. medtrain needs parallel HDF5 "
    "(built with MPI): install libhdf5-openmpi-dev (Debian/Ubuntu), `module load hdf5/parallel` or "
    "`spack install hdf5+mpi`, then configure again.")
endif()
add_library(medtrain_hdf5 INTERFACE)
target_include_directories(medtrain_hdf5 INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_compile_definitions(medtrain_hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})
target_link_libraries(medtrain_hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)

# OpenBLAS through FindBLAS, plus its cblas.h (Debian keeps it under a per-flavour directory).
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(MEDTRAIN_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread
        /usr/include/openblas /usr/include
  NO_DEFAULT_PATH)
if(NOT MEDTRAIN_CBLAS_INCLUDE)
  find_path(MEDTRAIN_CBLAS_INCLUDE cblas.h REQUIRED)
endif()
add_library(medtrain_blas INTERFACE)
target_include_directories(medtrain_blas INTERFACE ${MEDTRAIN_CBLAS_INCLUDE})
target_link_libraries(medtrain_blas INTERFACE ${BLAS_LIBRARIES})

pkg_check_modules(YAML REQUIRED IMPORTED_TARGET yaml-0.1)
find_package(cJSON REQUIRED)
add_library(medtrain_cjson INTERFACE)
target_link_libraries(medtrain_cjson INTERFACE cjson)
target_include_directories(medtrain_cjson INTERFACE ${CJSON_INCLUDE_DIRS})
find_package(OpenSSL REQUIRED COMPONENTS Crypto)

find_package(GDCM REQUIRED)
add_library(medtrain_gdcm INTERFACE)
target_include_directories(medtrain_gdcm INTERFACE ${GDCM_INCLUDE_DIRS})
find_package(ZLIB REQUIRED)
# dicom.cpp inflates/deflates data sets itself (GDCM's deflate writer aborts past 8 MiB).
target_link_libraries(medtrain_gdcm INTERFACE gdcmMSFF gdcmDSED gdcmCommon ZLIB::ZLIB)

find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)
