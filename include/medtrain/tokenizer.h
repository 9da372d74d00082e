/* Hugging Face tokenizer.json BPE tokenizers: encode and decode as `tokenizers` does, id for id and
 * byte for byte, for the two families LLM checkpoints ship:
 *
 *   byte-level BPE (GPT-2, Llama-3): pre_tokenizer ByteLevel (add_prefix_space, use_regex), or
 *     Sequence[Split(a known regex), ByteLevel(use_regex=false)]; decoder ByteLevel.
 *   SentencePiece-style BPE (Llama-2, Mistral, TinyLlama): <0xNN> byte_fallback tokens, unk (fused
 *     or not); normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], or pre_tokenizer Metaspace
 *     (prepend_scheme first/always/never, split); decoder Sequence[Replace, ByteFallback, Fuse,
 *     Strip] or Metaspace.
 *
 * Model BPE: vocab, merges ("a b" strings or [a, b] pairs), unk_token, fuse_unk, byte_fallback,
 * ignore_merges, continuing_subword_prefix, end_of_word_suffix. Added tokens (special or not) are
 * matched before pre-tokenization, leftmost-longest, with single_word, lstrip, rstrip and
 * normalized. Post-processors: TemplateProcessing (the "single" template), RobertaProcessing,
 * BertProcessing, ByteLevel (ids unchanged), Sequence of these. Split patterns are not a regex
 * engine: the GPT-2, Llama-3 (= tiktoken cl100k) and Qwen2 patterns are recognised by their text
 * and run by hand-written scanners; any other pattern fails to load, naming it. truncation and
 * padding in the file are ignored (callers cut and pad ids themselves).
 *
 * Not supported (loading fails, naming the field): models other than BPE (WordPiece, Unigram,
 * WordLevel), BPE dropout, normalizers other than Prepend and string Replace (NFC, NFKC, Lowercase,
 * Strip, ...; Qwen2's files use NFC), other pre-tokenizers (Whitespace, Digits, Punctuation, ...)
 * and decoders (WordPiece, BPEDecoder, CTC), regex Replace patterns, templates with two sequences.
 *
 * A loaded tokenizer is read-only: encode and decode may run on many threads at once. Text must be
 * UTF-8 (`tokenizers` only sees Rust strings); error messages never quote the text (it may hold
 * PHI), only byte offsets.
 *
 *     mt_tokenizer *tok;
 *     MT_TRY(mt_tokenizer_load("models/llama3/tokenizer.json", &tok));
 *     mt_token_ids ids = {0};
 *     MT_TRY(mt_tokenizer_encode(tok, report, strlen(report), true, &ids)); // BOS first
 *     ...
 *     mt_token_ids_free(&ids);
 *     mt_tokenizer_free(tok);
 */
#ifndef MEDTRAIN_TOKENIZER_H
#define MEDTRAIN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_tokenizer mt_tokenizer;

/* A growable id buffer. Start from {0}; encode appends, so one buffer serves many calls (set n = 0
 * to reuse it) and a prompt and its response can be encoded into one sequence. */
typedef struct mt_token_ids {
    int32_t *ids;
    size_t n, cap;
} mt_token_ids;

void mt_token_ids_free(mt_token_ids *ids); /* frees ids->ids and zeroes *ids */

/* Reads a tokenizer.json. Errors name the file and the JSON field: "tokenizer.json: model.type:
 * unsupported model type "WordPiece" (supported: BPE)", "...: model.vocab: missing", a split regex
 * that is not one of the known patterns, a merge whose token is not in the vocab. */
mt_status mt_tokenizer_load(const char *path, mt_tokenizer **out);
/* The same from n bytes in memory; name stands for the file in messages. */
mt_status mt_tokenizer_load_buffer(const char *json, size_t n, const char *name,
                                   mt_tokenizer **out);
void mt_tokenizer_free(mt_tokenizer *tok);

/* Appends the ids of text (len bytes of UTF-8; NUL is an ordinary character) to out, as
 * `Tokenizer.encode(text, add_special_tokens=add_special).ids`: add_special adds what the
 * post_processor adds (Llama: BOS first). Fails with MT_ERR_ARG on invalid UTF-8, naming the
 * offset; out keeps what it held before on failure. */
mt_status mt_tokenizer_encode(const mt_tokenizer *tok, const char *text, size_t len,
                              bool add_special, mt_token_ids *out);

/* The text of n ids as `Tokenizer.decode(ids, skip_special_tokens=skip_special)`: *text is
 * NUL-terminated UTF-8 (freed with mt_free) and *len its length (it may hold NUL bytes from byte
 * tokens; len may be NULL). An id outside [0, vocab size) fails with MT_ERR_ARG; an id inside that
 * no token has is skipped, as `tokenizers` does. */
mt_status mt_tokenizer_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len);

/* The id of a token's exact string ("<s>", "Ġthe", "▁the", "<0x0A>"), added tokens first as
 * `token_to_id` does; -1 when there is none. */
int32_t mt_tokenizer_token_id(const mt_tokenizer *tok, const char *token);
/* The string of an id as `id_to_token` gives it (a normalized added token as its normalized form,
 * "mmHg" -> "▁mmHg" under Llama-2's normalizer; *len is its length, len may be NULL), or NULL when
 * no token has the id. */
const char *mt_tokenizer_token(const mt_tokenizer *tok, int32_t id, size_t *len);
bool mt_tokenizer_is_special(const mt_tokenizer *tok, int32_t id); /* a special added token */

/* Largest id + 1 over the model vocab and the added tokens: the embedding rows a model needs. */
int32_t mt_tokenizer_vocab_size(const mt_tokenizer *tok);
/* BOS: the first special token the post_processor puts before the text. EOS: the first it puts
 * after, else a special added token with a conventional end name (</s>, <|end_of_text|>,
 * <|endoftext|>, <eos>); tokenizer.json does not record EOS otherwise (chat models often stop on
 * another token, e.g. <|eot_id|>: look it up by name). -1 when there is none. */
int32_t mt_tokenizer_bos(const mt_tokenizer *tok);
int32_t mt_tokenizer_eos(const mt_tokenizer *tok);
/* SHA-256 of the file's bytes, 64 lowercase hex characters: text packs record it. */
const char *mt_tokenizer_digest(const mt_tokenizer *tok);

#ifdef __cplusplus
}
#endif

#endif
