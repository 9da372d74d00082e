// DICOM through GDCM. This is the project's only C++ file: GDCM is a C++ library, and everything
// medtrain needs from it is wrapped here behind the C API of include/medtrain/dicom.h. No C++
// exception crosses that boundary.
#include "medtrain/dicom.h"

#include <gdcmVersion.h>

extern "C" const char *mt_dicom_gdcm_version(void) {
    return gdcm::Version::GetVersion();
}
