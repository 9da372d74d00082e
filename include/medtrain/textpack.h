/* Text packs: tokenized chat samples for LM fine-tuning, one HDF5 file (schema in docs/DATA.md).
 *
 *   /            attrs: format="medtrain-text", version, creator, created, input_digest,
 *                       tokenizer_digest (mt_tokenizer_digest), template, max_len, truncated
 *   /tokens      i32 [T]    every sample's ids, back to back
 *   /offsets     i64 [N+1]  sample i is tokens[offsets[i] : offsets[i+1]] (lengths = diff)
 *   /loss_mask   u8 [T]     1 where the token is a training target (assistant content + its end)
 *   /meta/split  u8 [N]     0 train, 1 val, 2 test
 *   /splits/train, /splits/val, /splits/test   i64 index lists
 *   /image_index i64 [N]    index into /image_names, -1 = no image   (only when a sample has one)
 *   /image_names string [M] (LLaVA "image" field, in order of first use)
 *
 * Chat templates turn turns into (ids, loss mask) by tokenizing each segment on its own and
 * concatenating (see mt_chat_encode). Writing is single-process (the whole pack is built in
 * memory, then written to PATH.tmp, fsynced and renamed); reading needs no MPI. A reader handle
 * is not thread-safe (HDF5 is not). */
#ifndef MEDTRAIN_TEXTPACK_H
#define MEDTRAIN_TEXTPACK_H

#include <stdbool.h>
#include <stdint.h>

#include "medtrain/pack.h"
#include "medtrain/status.h"
#include "medtrain/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_TEXTPACK_FORMAT  "medtrain-text"
#define MT_TEXTPACK_VERSION 1

/* ---- chat templates ------------------------------------------------------------------------ */

typedef enum mt_chat_template {
    MT_CHAT_PLAIN,     /* BOS prompt "\n" response EOS                 loss: response, EOS */
    MT_CHAT_VICUNA_V1, /* FastChat/LLaVA vicuna_v1 (ADD_COLON_TWO, sep " ", sep2 EOS) */
    MT_CHAT_LLAMA3,    /* Llama-3 instruct headers and <|eot_id|> */
} mt_chat_template;
mt_status mt_chat_template_parse(const char *name, mt_chat_template *out); /* "plain", ... */
const char *mt_chat_template_name(mt_chat_template t);

typedef enum mt_chat_role { MT_ROLE_SYSTEM, MT_ROLE_USER, MT_ROLE_ASSISTANT } mt_chat_role;
typedef struct mt_chat_turn {
    mt_chat_role role;
    const char *text;
    size_t len;
} mt_chat_turn;

/* One templated sample: ids and a loss mask of the same length. Start from {0}; reuse by setting
 * ids.n = 0. */
typedef struct mt_chat_sample {
    mt_token_ids ids;
    uint8_t *mask;
    size_t mask_cap;
} mt_chat_sample;
void mt_chat_sample_free(mt_chat_sample *s);

/* Renders turns (an optional system turn first, then user/assistant alternating, ending with an
 * assistant turn) into out, replacing what it held. Messages are trimmed of surrounding
 * whitespace. plain takes exactly one user and one assistant turn. Fails with MT_ERR_FORMAT when
 * there is no assistant turn, turns do not alternate, or the tokenizer lacks a token the template
 * needs (naming it). */
mt_status mt_chat_encode(const mt_tokenizer *tok, mt_chat_template t, const mt_chat_turn *turns,
                         int n, mt_chat_sample *out);

/* ---- writing -------------------------------------------------------------------------------- */

typedef struct mt_textpack_spec {
    const char *template_name;
    const char *tokenizer_digest;
    int64_t max_len;
    const char *creator; /* "medtrain 0.1.0 (commit ...)" */
} mt_textpack_spec;

typedef struct mt_textpack_writer mt_textpack_writer;

mt_status mt_textpack_writer_create(const char *path, const mt_textpack_spec *spec,
                                    mt_textpack_writer **out);
/* Appends one sample (n ids and their mask, already cut to max_len); image may be NULL. */
mt_status mt_textpack_writer_add(mt_textpack_writer *w, const int32_t *ids, const uint8_t *mask,
                                 int64_t n, mt_split split, const char *image);
/* With ok: writes PATH.tmp, fsyncs, renames it to PATH, recording the number of samples cut to
 * max_len and input_digest (SHA-256 hex of the input and options, or NULL). Without ok: writes
 * nothing. Frees w either way. */
mt_status mt_textpack_writer_finish(mt_textpack_writer *w, bool ok, int64_t truncated,
                                    const char *input_digest);

/* The split of a record id: SHA-256("split:" + id) into [0, 10000) against the cumulative
 * percentages pct (train, val, test; summing to 100). Deterministic. */
mt_split mt_textpack_split_of(const char *id, size_t len, const int pct[3]);

/* ---- reading -------------------------------------------------------------------------------- */

typedef struct mt_textpack_info {
    int version;
    int64_t n, n_tokens, max_len, truncated;
    int64_t split_n[MT_SPLIT_COUNT];
    bool has_images;
    char template_name[32], creator[64], created[32];
    char tokenizer_digest[MT_PACK_DIGEST], input_digest[MT_PACK_DIGEST];
} mt_textpack_info;

typedef struct mt_textpack mt_textpack;

/* Opens and checks a text pack (format, version, offsets monotone and ending at T, mask and
 * tokens the same length). Offsets, splits and image indices are loaded; tokens read on demand. */
mt_status mt_textpack_open(const char *path, mt_textpack **out);
void mt_textpack_close(mt_textpack *p);
const mt_textpack_info *mt_textpack_get_info(const mt_textpack *p);
const int64_t *mt_textpack_split(const mt_textpack *p, mt_split s, int64_t *n);
int64_t mt_textpack_length(const mt_textpack *p, int64_t i);
/* Sample i: mt_textpack_length(p, i) ids into tokens and loss mask values into mask (may be
 * NULL). */
mt_status mt_textpack_read(mt_textpack *p, int64_t i, int32_t *tokens, uint8_t *mask);
/* The image file name of sample i, or NULL when it has none. */
const char *mt_textpack_image(const mt_textpack *p, int64_t i);

/* ---- length-grouped batches ----------------------------------------------------------------- */

/* Batches of similar lengths, so that padding to the longest in a batch wastes little: the
 * samples idx[0..n) are shuffled (seed, epoch), cut into buckets of bucket_batches * batch,
 * sorted by length inside each bucket, cut into batches of `batch` (a bucket's last batch may be
 * short), and the batch order is shuffled. Deterministic for (seed, epoch). */
typedef struct mt_length_batches {
    int64_t n_batches;
    int64_t *order;  /* the n sample indices, batch after batch */
    int64_t *starts; /* [n_batches + 1]: batch b is order[starts[b] : starts[b+1]] */
} mt_length_batches;

mt_status mt_length_batches_make(const int64_t *lengths, const int64_t *idx, int64_t n, int batch,
                                 int bucket_batches, uint64_t seed, uint64_t epoch,
                                 mt_length_batches *out);
/* Padded slots / all slots when each batch is padded to its longest sample. */
double mt_length_batches_padding(const mt_length_batches *b, const int64_t *lengths);
void mt_length_batches_free(mt_length_batches *b);

#ifdef __cplusplus
}
#endif

#endif
