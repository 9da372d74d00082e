/* Tests for text packs (textpack.h): chat templates over a SentencePiece-style (Llama-2) and a
 * byte-level (Llama-3) tokenizer.json (loss mask structure, turn-order errors, missing template
 * tokens), the writer and reader (round trip, images, splits, attributes, atomic rename, refusal
 * of a pack with broken offsets), split hashing, and the length-grouped batch sampler (a
 * permutation, deterministic, padding under 10% on a report-like length distribution).
 *
 * argv[1] is tests/data/tokenizers, argv[2] a scratch directory (created). */
#include "mt_test.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/rng.h"
#include "medtrain/textpack.h"

static const char *data_dir = "tests/data/tokenizers";
static const char *tmp_dir = "/tmp";

static mt_tokenizer *load(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    mt_tokenizer *tok = NULL;
    MT_CHECK_OK(mt_tokenizer_load(path, &tok));
    return tok;
}

#define TURN(r, s) ((mt_chat_turn){(r), (s), sizeof(s) - 1})

/* Number of runs of 1s in mask[0..n). */
static int loss_runs(const uint8_t *m, size_t n) {
    int runs = 0;
    for (size_t i = 0; i < n; i++) runs += m[i] && (i == 0 || !m[i - 1]);
    return runs;
}

static void test_templates(void) {
    mt_tokenizer *l2 = load("llama2.json"), *l3 = load("llama3.json");
    if (!l2 || !l3) return;
    mt_chat_turn conv[] = {TURN(MT_ROLE_USER, "  Findings?\n"),
                           TURN(MT_ROLE_ASSISTANT, "Clear lungs."),
                           TURN(MT_ROLE_USER, "Impression?"), TURN(MT_ROLE_ASSISTANT, "Normal.")};
    mt_chat_sample s = {0};
    const mt_tokenizer *toks[] = {l2, l3};
    for (int k = 0; k < 2; k++) {
        const mt_tokenizer *tok = toks[k];
        int32_t eos = mt_tokenizer_eos(tok), bos = mt_tokenizer_bos(tok);
        /* plain: BOS first without loss, EOS last with loss, one run */
        MT_CHECK_OK(mt_chat_encode(tok, MT_CHAT_PLAIN, conv, 2, &s));
        MT_CHECK(s.ids.n > 4 && s.ids.ids[0] == bos && !s.mask[0]);
        MT_CHECK(s.ids.ids[s.ids.n - 1] == eos && s.mask[s.ids.n - 1]);
        MT_CHECK(loss_runs(s.mask, s.ids.n) == 1);
        /* the response's ids decode to the response */
        size_t first = 0;
        while (!s.mask[first]) first++;
        char *text = NULL;
        MT_CHECK_OK(
            mt_tokenizer_decode(tok, s.ids.ids + first, s.ids.n - first - 1, false, &text, NULL));
        MT_CHECK(text && strcmp(text + (text[0] == ' '), "Clear lungs.") == 0, "got '%s'", text);
        mt_free(text);
        /* vicuna_v1: two answers, two runs, each ending in EOS */
        MT_CHECK_OK(mt_chat_encode(tok, MT_CHAT_VICUNA_V1, conv, 4, &s));
        MT_CHECK(loss_runs(s.mask, s.ids.n) == 2);
        MT_CHECK(s.ids.ids[s.ids.n - 1] == eos && s.mask[s.ids.n - 1]);
        char *all = NULL;
        MT_CHECK_OK(mt_tokenizer_decode(tok, s.ids.ids, s.ids.n, false, &all, NULL));
        char want[256];
        snprintf(want, sizeof want,
                 "polite answers to the user's questions. USER: Findings? "
                 "ASSISTANT: Clear lungs.%s",
                 mt_tokenizer_token(tok, eos, NULL));
        MT_CHECK(all && strstr(all, want), "got '%s'", all);
        mt_free(all);
    }
    /* llama-3: exact text, loss on the answers and their <|eot_id|> */
    mt_chat_turn sys[] = {TURN(MT_ROLE_SYSTEM, "Be brief."), TURN(MT_ROLE_USER, "Findings?"),
                          TURN(MT_ROLE_ASSISTANT, "Clear.")};
    MT_CHECK_OK(mt_chat_encode(l3, MT_CHAT_LLAMA3, sys, 3, &s));
    char *all = NULL;
    MT_CHECK_OK(mt_tokenizer_decode(l3, s.ids.ids, s.ids.n, false, &all, NULL));
    MT_CHECK(all && strcmp(all, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                                "Findings?<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
                                "\n\nClear.<|eot_id|>") == 0,
             "got '%s'", all);
    mt_free(all);
    MT_CHECK(loss_runs(s.mask, s.ids.n) == 1 && s.mask[s.ids.n - 1]);
    MT_CHECK(s.ids.ids[s.ids.n - 1] == mt_tokenizer_token_id(l3, "<|eot_id|>"));
    /* the text before the first loss token ends with the header and "\n\n" (no loss) */
    size_t first = 0;
    while (first < s.ids.n && !s.mask[first]) first++;
    char *head = NULL;
    size_t head_n = 0;
    MT_CHECK_OK(mt_tokenizer_decode(l3, s.ids.ids, first, false, &head, &head_n));
    MT_CHECK(head && head_n > 19 && !strcmp(head + head_n - 19, "<|end_header_id|>\n\n"),
             "got '%s'", head);
    mt_free(head);

    /* errors */
    MT_CHECK_FAILS(mt_chat_encode(l3, MT_CHAT_VICUNA_V1, conv, 1, &s), MT_ERR_FORMAT,
                   "no assistant turn");
    mt_chat_turn two_users[] = {conv[0], conv[2], conv[1]};
    MT_CHECK_FAILS(mt_chat_encode(l3, MT_CHAT_VICUNA_V1, two_users, 3, &s), MT_ERR_FORMAT,
                   "turn 2 is user, expected assistant");
    MT_CHECK_FAILS(mt_chat_encode(l3, MT_CHAT_VICUNA_V1, conv, 3, &s), MT_ERR_FORMAT,
                   "ends with a user turn");
    MT_CHECK_FAILS(mt_chat_encode(l3, MT_CHAT_PLAIN, conv, 4, &s), MT_ERR_FORMAT,
                   "one user and one assistant turn");
    MT_CHECK_FAILS(mt_chat_encode(l2, MT_CHAT_LLAMA3, conv, 2, &s), MT_ERR_FORMAT,
                   "needs the token <|begin_of_text|>");
    mt_chat_template t;
    MT_CHECK_FAILS(mt_chat_template_parse("chatml", &t), MT_ERR_ARG, "unknown chat template");
    MT_CHECK_OK(mt_chat_template_parse("llama-3", &t));
    MT_CHECK(t == MT_CHAT_LLAMA3 && strcmp(mt_chat_template_name(t), "llama-3") == 0);
    mt_chat_sample_free(&s);
    mt_tokenizer_free(l2);
    mt_tokenizer_free(l3);
}

static void test_split_hash(void) {
    int pct[3] = {90, 5, 5}, count[3] = {0};
    char id[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "case-%d", i);
        mt_split s = mt_textpack_split_of(id, strlen(id), pct);
        count[s]++;
        MT_CHECK(s == mt_textpack_split_of(id, strlen(id), pct));
    }
    MT_CHECK(count[0] > 17600 && count[0] < 18400, "train %d", count[0]);
    MT_CHECK(count[1] > 800 && count[1] < 1200, "val %d", count[1]);
    int all_test[3] = {0, 0, 100};
    MT_CHECK(mt_textpack_split_of("x", 1, all_test) == MT_SPLIT_TEST);
}

static void test_write_read(void) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/rt.h5", tmp_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(path);
    mt_textpack_spec spec = {
        .template_name = "vicuna_v1", .tokenizer_digest = "ab12", .max_len = 64, .creator = "test"};
    mt_textpack_writer *w = NULL;
    MT_CHECK_OK(mt_textpack_writer_create(path, &spec, &w));
    if (!w) return;
    enum { N = 50 };
    int32_t ids[64];
    uint8_t mask[64];
    const char *images[] = {NULL, "a.png", "b.png", "a.png"};
    for (int i = 0; i < N; i++) {
        int n = 1 + i % 40;
        for (int k = 0; k < n; k++) ids[k] = i * 100 + k, mask[k] = k >= n / 2;
        MT_CHECK_OK(mt_textpack_writer_add(w, ids, mask, n, (mt_split)(i % 3), images[i % 4]));
    }
    MT_CHECK(!mt_path_exists(path)); /* nothing at PATH until finish */
    MT_CHECK_OK(mt_textpack_writer_finish(w, true, 7, "digest"));
    MT_CHECK(mt_path_exists(path) && !mt_path_exists(tmp));
    mt_textpack *p = NULL;
    MT_CHECK_OK(mt_textpack_open(path, &p));
    if (!p) return;
    const mt_textpack_info *in = mt_textpack_get_info(p);
    MT_CHECK(in->n == N && in->max_len == 64 && in->truncated == 7 && in->has_images);
    MT_CHECK(!strcmp(in->template_name, "vicuna_v1") && !strcmp(in->tokenizer_digest, "ab12"));
    MT_CHECK(!strcmp(in->input_digest, "digest") && !strcmp(in->creator, "test"));
    MT_CHECK(in->split_n[0] == 17 && in->split_n[1] == 17 && in->split_n[2] == 16);
    int64_t nv;
    const int64_t *val = mt_textpack_split(p, MT_SPLIT_VAL, &nv);
    MT_CHECK(nv == 17 && val[0] == 1 && val[1] == 4);
    for (int i = 0; i < N; i++) {
        int n = 1 + i % 40;
        MT_CHECK(mt_textpack_length(p, i) == n);
        int32_t got[64];
        uint8_t gm[64];
        MT_CHECK_OK(mt_textpack_read(p, i, got, gm));
        for (int k = 0; k < n; k++)
            MT_CHECK(got[k] == i * 100 + k && gm[k] == (k >= n / 2), "sample %d token %d", i, k);
        const char *img = mt_textpack_image(p, i);
        MT_CHECK(images[i % 4] ? img && !strcmp(img, images[i % 4]) : img == NULL, "sample %d", i);
    }
    MT_CHECK_FAILS(mt_textpack_read(p, N, ids, mask), MT_ERR_ARG, "outside");
    mt_textpack_close(p);

    /* a broken pack is refused: offsets that run past the tokens */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "offsets", H5P_DEFAULT);
    int64_t off[N + 1];
    H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    off[N] += 5;
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(d);
    H5Fclose(f);
    MT_CHECK_FAILS(mt_textpack_open(path, &p), MT_ERR_FORMAT, "must agree");

    /* an image pack is not a text pack */
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t space = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 17);
    hid_t a = H5Acreate2(f, "format", t, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "medtrain-dataset");
    H5Aclose(a), H5Tclose(t), H5Sclose(space), H5Fclose(f);
    MT_CHECK_FAILS(mt_textpack_open(path, &p), MT_ERR_FORMAT, "'medtrain-dataset'",
                   "expected 'medtrain-text'");
    MT_CHECK_FAILS(mt_textpack_open(tmp, &p), MT_ERR_IO, "rt.h5.tmp");

    /* a failed run writes nothing */
    unlink(path);
    MT_CHECK_OK(mt_textpack_writer_create(path, &spec, &w));
    MT_CHECK_OK(mt_textpack_writer_add(w, ids, mask, 3, MT_SPLIT_TRAIN, NULL));
    MT_CHECK_OK(mt_textpack_writer_finish(w, false, 0, NULL));
    MT_CHECK(!mt_path_exists(path) && !mt_path_exists(tmp));
}

/* Report-like lengths: log-normal around 250 tokens, 30..2048. */
static void report_lengths(int64_t *len, int64_t n) {
    mt_rng r;
    mt_rng_init(&r, 42, 0, 0);
    for (int64_t i = 0; i < n; i++) {
        double l = exp(log(250.0) + 0.6 * mt_rng_normal(&r));
        len[i] = l < 30 ? 30 : l > 2048 ? 2048 : (int64_t)l;
    }
}

static void test_length_batches(void) {
    enum { N = 5000 };
    int64_t *len = malloc(N * sizeof *len), *idx = malloc(N * sizeof *idx);
    int *seen = calloc(N, sizeof *seen);
    report_lengths(len, N);
    for (int i = 0; i < N; i++) idx[i] = i;
    int batches[] = {4, 8, 16, 32};
    for (int k = 0; k < 4; k++) {
        mt_length_batches b, again, other;
        MT_CHECK_OK(mt_length_batches_make(len, idx, N, batches[k], 64, 1, 0, &b));
        double pad = mt_length_batches_padding(&b, len);
        printf("  batch %2d: %lld batches, padding %.2f%%\n", batches[k], (long long)b.n_batches,
               100 * pad);
        MT_CHECK(pad < 0.10, "batch %d: padding %.3f", batches[k], pad);
        /* every sample once, no batch larger than asked */
        memset(seen, 0, N * sizeof *seen);
        for (int64_t i = 0; i < b.starts[b.n_batches]; i++) seen[b.order[i]]++;
        int once = 0;
        for (int i = 0; i < N; i++) once += seen[i] == 1;
        MT_CHECK(once == N && b.starts[b.n_batches] == N);
        for (int64_t j = 0; j < b.n_batches; j++)
            MT_CHECK(b.starts[j + 1] - b.starts[j] >= 1 &&
                     b.starts[j + 1] - b.starts[j] <= batches[k]);
        /* deterministic for (seed, epoch); another epoch is another order */
        MT_CHECK_OK(mt_length_batches_make(len, idx, N, batches[k], 64, 1, 0, &again));
        MT_CHECK_OK(mt_length_batches_make(len, idx, N, batches[k], 64, 1, 1, &other));
        MT_CHECK(!memcmp(b.order, again.order, N * sizeof *b.order));
        MT_CHECK(memcmp(b.order, other.order, N * sizeof *b.order) != 0);
        mt_length_batches_free(&b);
        mt_length_batches_free(&again);
        mt_length_batches_free(&other);
    }
    /* random batches of the same lengths pad far more: the grouping is doing the work */
    mt_length_batches r;
    MT_CHECK_OK(mt_length_batches_make(len, idx, N, 16, 1, 1, 0, &r));
    double random_pad = mt_length_batches_padding(&r, len);
    printf("  batch 16 without grouping: padding %.2f%%\n", 100 * random_pad);
    MT_CHECK(random_pad > 0.3);
    mt_length_batches_free(&r);
    MT_CHECK_FAILS(mt_length_batches_make(len, idx, N, 0, 64, 1, 0, &r), MT_ERR_ARG, "batch");
    MT_CHECK_OK(mt_length_batches_make(len, idx, 0, 8, 64, 1, 0, &r));
    MT_CHECK(r.n_batches == 0);
    mt_length_batches_free(&r);
    free(len), free(idx), free(seen);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    if (argc > 2) {
        tmp_dir = argv[2];
        if (mt_mkdir_p(tmp_dir) != MT_OK) {
            fprintf(stderr, "%s\n", mt_error_message());
            return 1;
        }
    }
    MT_RUN(test_templates);
    MT_RUN(test_split_hash);
    MT_RUN(test_write_read);
    MT_RUN(test_length_batches);
    return mt_test_summary();
}
