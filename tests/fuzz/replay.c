/* Runs a fuzz target without libFuzzer: every file of the corpus directories given on the command
 * line, then a fixed number of deterministic mutations of each (byte flips, truncations,
 * insertions, splices, driven by Philox), so that `ctest` exercises the targets on every build.
 * With clang, configure -DMEDTRAIN_FUZZ=ON for real coverage-guided libFuzzer binaries.
 *   replay [--mutations N] DIR...     exit 0 when every input ran */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/fs.h"
#include "medtrain/mem.h"
#include "medtrain/rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *tokens[] = {":",
                               "\n",
                               "- ",
                               "[",
                               "]",
                               "{",
                               "}",
                               "\"",
                               "'",
                               "=",
                               "#",
                               "  ",
                               "\t",
                               "&a",
                               "*a",
                               "!!str",
                               "---",
                               "...",
                               ",",
                               "null",
                               "1e309",
                               "\xff",
                               "\\u0000",
                               "task: classify\n",
                               "train:\n  lr: x\n"};

/* One mutation of in[0..n) into out (capacity cap); returns the new length. */
static size_t mutate(mt_rng *r, const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t len = n < cap ? n : cap;
    memcpy(out, in, len);
    int edits = 1 + (int)mt_rng_below(r, 4);
    for (int e = 0; e < edits; e++) {
        uint32_t kind = mt_rng_below(r, 4), pos = len ? mt_rng_below(r, (uint32_t)len + 1) : 0;
        if (kind == 0 && len) { /* flip a byte */
            out[pos % len] ^= (uint8_t)(1u << mt_rng_below(r, 8));
        } else if (kind == 1) { /* truncate */
            len = pos;
        } else if (kind == 2) { /* insert a token */
            const char *t = tokens[mt_rng_below(r, sizeof tokens / sizeof tokens[0])];
            size_t tl = strlen(t);
            if (len + tl > cap) continue;
            memmove(out + pos + tl, out + pos, len - pos);
            memcpy(out + pos, t, tl);
            len += tl;
        } else if (len) { /* duplicate a slice (copied aside: it may overlap its new place) */
            uint32_t a = mt_rng_below(r, (uint32_t)len),
                     b = a + mt_rng_below(r, (uint32_t)(len - a) + 1);
            size_t sl = b - a;
            static uint8_t slice[1 << 16];
            if (len + sl > cap || sl > sizeof slice) continue;
            memcpy(slice, out + a, sl);
            memmove(out + pos + sl, out + pos, len - pos);
            memcpy(out + pos, slice, sl);
            len += sl;
        }
    }
    return len;
}

int main(int argc, char **argv) {
    long mutations = 200, inputs = 0;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--mutations") == 0) mutations = atol(argv[2]), first = 3;
    enum { CAP = 1 << 16 };
    uint8_t *buf = mt_alloc(CAP, "mutation buffer");
    for (int a = first; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "replay: cannot open corpus directory %s\n", argv[a]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            char *data;
            size_t n;
            if (mt_file_read(path, &data, &n) != MT_OK) continue; /* a subdirectory */
            LLVMFuzzerTestOneInput((const uint8_t *)data, n);
            inputs++;
            mt_rng r;
            mt_rng_init(&r, 0x66757a7a, (uint64_t)inputs, 0);
            for (long m = 0; m < mutations; m++, inputs++) {
                size_t len = mutate(&r, (const uint8_t *)data, n, buf, CAP);
                LLVMFuzzerTestOneInput(buf, len);
            }
            mt_free(data);
        }
        closedir(d);
    }
    mt_free(buf);
    printf("replay: %ld inputs, no crash\n", inputs);
    return inputs > 0 ? 0 : 1;
}
