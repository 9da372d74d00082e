/* SHA-256 and HMAC-SHA256 through OpenSSL EVP. */
#include "medtrain/hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "medtrain/mem.h"

struct mt_sha256_ctx {
    EVP_MD_CTX *md;
};

mt_status mt_sha256_begin(mt_sha256_ctx **out) {
    mt_sha256_ctx *h = mt_alloc(sizeof *h, "sha256 state");
    if (!h) return MT_ERR_NOMEM;
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->md);
        mt_free(h);
        return mt_fail(MT_ERR_INTERNAL, "OpenSSL could not start a SHA-256 digest");
    }
    *out = h;
    return MT_OK;
}

mt_status mt_sha256_update(mt_sha256_ctx *h, const void *data, size_t n) {
    if (n && EVP_DigestUpdate(h->md, data, n) != 1)
        return mt_fail(MT_ERR_INTERNAL, "OpenSSL SHA-256 update failed");
    return MT_OK;
}

mt_status mt_sha256_end(mt_sha256_ctx *h, uint8_t out[MT_SHA256_BYTES]) {
    mt_status st = MT_OK;
    if (out) {
        unsigned len = 0;
        if (EVP_DigestFinal_ex(h->md, out, &len) != 1 || len != MT_SHA256_BYTES)
            st = mt_fail(MT_ERR_INTERNAL, "OpenSSL SHA-256 final failed");
    }
    EVP_MD_CTX_free(h->md);
    mt_free(h);
    return st;
}

mt_status mt_sha256(const void *data, size_t n, uint8_t out[MT_SHA256_BYTES]) {
    mt_sha256_ctx *h = NULL;
    MT_TRY(mt_sha256_begin(&h));
    mt_status st = mt_sha256_update(h, data, n);
    mt_status st2 = mt_sha256_end(h, st == MT_OK ? out : NULL);
    return st != MT_OK ? st : st2;
}

mt_status mt_sha256_file(const char *path, char hex[MT_SHA256_HEX]) {
    FILE *f = fopen(path, "rb");
    if (!f) return mt_fail(MT_ERR_IO, "%s: cannot open for hashing: %s", path, strerror(errno));
    mt_sha256_ctx *h = NULL;
    mt_status st = mt_sha256_begin(&h);
    if (st != MT_OK) {
        fclose(f);
        return st;
    }
    static _Thread_local unsigned char buf[1 << 16];
    size_t n;
    while (st == MT_OK && (n = fread(buf, 1, sizeof buf, f)) > 0) st = mt_sha256_update(h, buf, n);
    if (st == MT_OK && ferror(f)) st = mt_fail(MT_ERR_IO, "%s: read error while hashing", path);
    fclose(f);
    uint8_t digest[MT_SHA256_BYTES];
    mt_status st2 = mt_sha256_end(h, st == MT_OK ? digest : NULL);
    if (st != MT_OK) return st;
    if (st2 != MT_OK) return st2;
    mt_hex(digest, MT_SHA256_BYTES, hex);
    return MT_OK;
}

mt_status mt_hmac_sha256(const void *key, size_t key_n, const void *data, size_t n,
                         uint8_t out[MT_SHA256_BYTES]) {
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_n, data, n, out, &len) || len != MT_SHA256_BYTES)
        return mt_fail(MT_ERR_INTERNAL, "OpenSSL HMAC-SHA256 failed");
    return MT_OK;
}

void mt_hex(const uint8_t *bytes, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}
