/* SHA-256 and HMAC-SHA256 through OpenSSL's EVP interface: checkpoint checksums, dataset and config
 * digests, pseudonymous case ids. Digests are written as 64 lowercase hex characters + NUL. */
#ifndef MEDTRAIN_HASH_H
#define MEDTRAIN_HASH_H

#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_SHA256_BYTES 32
#define MT_SHA256_HEX   65

typedef struct mt_sha256_ctx mt_sha256_ctx; /* an incremental hash */

mt_status mt_sha256_begin(mt_sha256_ctx **h);
mt_status mt_sha256_update(mt_sha256_ctx *h, const void *data, size_t n);
/* Finishes and frees h; out may be NULL to just free. */
mt_status mt_sha256_end(mt_sha256_ctx *h, uint8_t out[MT_SHA256_BYTES]);

mt_status mt_sha256(const void *data, size_t n, uint8_t out[MT_SHA256_BYTES]);
mt_status mt_sha256_file(const char *path, char hex[MT_SHA256_HEX]);
mt_status mt_hmac_sha256(const void *key, size_t key_n, const void *data, size_t n,
                         uint8_t out[MT_SHA256_BYTES]);
void mt_hex(const uint8_t *bytes, size_t n, char *out); /* out holds 2n+1 chars */

#ifdef __cplusplus
}
#endif

#endif
