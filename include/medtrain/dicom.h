/* DICOM through GDCM: the C side of src/data/dicom.cpp, the project's only C++ file. */
#ifndef MEDTRAIN_DICOM_H
#define MEDTRAIN_DICOM_H

#ifdef __cplusplus
extern "C" {
#endif

/* GDCM's version, "3.0.21". */
const char *mt_dicom_gdcm_version(void);

#ifdef __cplusplus
}
#endif

#endif
