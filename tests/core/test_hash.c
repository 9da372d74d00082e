/* SHA-256 (FIPS 180-2 vectors) and HMAC-SHA256 (RFC 4231 vectors). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/hash.h"
#include "mt_test.h"

static void hex_of(const char *s, char out[MT_SHA256_HEX]) {
    uint8_t d[MT_SHA256_BYTES];
    MT_CHECK_OK(mt_sha256(s, strlen(s), d));
    mt_hex(d, MT_SHA256_BYTES, out);
}

static void test_sha256_vectors(void) {
    char h[MT_SHA256_HEX];
    hex_of("abc", h);
    MT_CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
             "%s", h);
    hex_of("", h);
    MT_CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
             "%s", h);
    hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", h);
    MT_CHECK(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
             "%s", h);
}

static void test_incremental_and_file(void) {
    char path[] = "/tmp/mt_hash_XXXXXX";
    int fd = mkstemp(path);
    MT_CHECK(fd >= 0);
    /* One million 'a': FIPS 180-2's long vector, written in pieces. */
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    mt_sha256_ctx *h = NULL;
    MT_CHECK_OK(mt_sha256_begin(&h));
    for (int i = 0; i < 1000; i++) {
        MT_CHECK(write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk);
        MT_CHECK_OK(mt_sha256_update(h, chunk, sizeof chunk));
    }
    close(fd);
    uint8_t d[MT_SHA256_BYTES];
    char hex[MT_SHA256_HEX], fhex[MT_SHA256_HEX];
    MT_CHECK_OK(mt_sha256_end(h, d));
    mt_hex(d, MT_SHA256_BYTES, hex);
    const char *want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    MT_CHECK(strcmp(hex, want) == 0, "%s", hex);
    MT_CHECK_OK(mt_sha256_file(path, fhex));
    MT_CHECK(strcmp(fhex, want) == 0, "%s", fhex);
    unlink(path);
    MT_CHECK_FAILS(mt_sha256_file("/nonexistent/file.bin", fhex), MT_ERR_IO,
                   "/nonexistent/file.bin");
}

static void test_hmac_rfc4231(void) {
    uint8_t key[20], d[MT_SHA256_BYTES];
    char hex[MT_SHA256_HEX];
    memset(key, 0x0b, sizeof key);
    MT_CHECK_OK(mt_hmac_sha256(key, sizeof key, "Hi There", 8, d));
    mt_hex(d, MT_SHA256_BYTES, hex);
    MT_CHECK(strcmp(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7") == 0,
             "%s", hex);
    MT_CHECK_OK(mt_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d));
    mt_hex(d, MT_SHA256_BYTES, hex);
    MT_CHECK(strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0,
             "%s", hex);
}

int main(void) {
    MT_RUN(test_sha256_vectors);
    MT_RUN(test_incremental_and_file);
    MT_RUN(test_hmac_rfc4231);
    return mt_test_summary();
}
