/* Fuzz target: the tokenizer.json loader (outside input: downloaded model directories). Any input
 * must give MT_OK or an error whose message names the file, never a crash, a leak or undefined
 * behaviour. A tokenizer that loads must encode a few texts into ids inside its vocabulary and
 * decode them again (decoding may fail only with a message). */
#include <stdint.h>
#include <string.h>

#include "medtrain/mem.h"
#include "medtrain/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *texts[] = {"",
                              " ",
                              "Small left pleural effusion.\n\nNo pneumothorax.",
                              "  héllo  wörld 1234567 ",
                              "<s>x</s><|eot_id|>",
                              "\xe4\xb8\xad\xf0\x9f\x98\x80"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mt_tokenizer *tok = NULL;
    mt_status st = mt_tokenizer_load_buffer((const char *)data, size, "fuzz.json", &tok);
    if (st != MT_OK) {
        if (tok || !strstr(mt_error_message(), "fuzz.json")) __builtin_trap();
        return 0;
    }
    int32_t v = mt_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int special = 0; special < 2; special++) {
            mt_token_ids ids = {0};
            st = mt_tokenizer_encode(tok, texts[i], strlen(texts[i]), special, &ids);
            if (st == MT_OK) {
                for (size_t k = 0; k < ids.n; k++)
                    if (ids.ids[k] < 0 || ids.ids[k] >= v) __builtin_trap();
                char *text = NULL;
                size_t len = 0;
                if (mt_tokenizer_decode(tok, ids.ids, ids.n, special, &text, &len) == MT_OK)
                    mt_free(text);
            }
            mt_token_ids_free(&ids);
        }
    }
    mt_tokenizer_free(tok);
    return 0;
}
