/* libFuzzer target: the WordPiece tokenizer on text (single and pairs, with and without
 * truncation, specials split or not, offsets or not) and on token ids (id -> token -> id).
 * Invariants: ids are in the vocabulary, truncation respects max_len, a failed encode leaves
 * n = 0, offsets lie within their text (or are -1, -1) and do not change the ids. */
#include "config.h"

#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const xf_tokenizer_t *tok = xf_model_tokenizer(fz_tiny_model(0));
    int32_t vocab = xf_tokenizer_vocab_size(tok);
    if (size < 2)
        return 0;
    uint8_t mode = data[0], lim = data[1];
    data += 2;
    size -= 2;
    if (mode & 0x80) {
        /* Ids: every 4 bytes one id, any value; a token that exists maps back to an id. */
        for (size_t i = 0; i + 4 <= size; i += 4) {
            int32_t id;
            memcpy(&id, data + i, 4);
            const char *t = xf_tokenizer_token(tok, id);
            if ((id < 0 || id >= vocab) && t)
                fz_fail("a token for an out-of-range id");
            if (t && xf_tokenizer_id(tok, t) < 0)
                fz_fail("a vocabulary token has no id");
        }
        return 0;
    }
    xf_tok_opts_t o = { .no_special = mode & 1, .split_special = (mode >> 1) & 1,
                        .max_len = (mode & 4) ? lim : 0, .truncate = (mode >> 3) & 1,
                        .truncate_left = (mode >> 6) & 1, .offsets = (mode >> 5) & 1 };
    const char *text = (const char *)data, *pair = NULL;
    size_t len = size, pair_len = 0;
    if (mode & 0x10) {   /* a pair: split at the first 0xff byte */
        const uint8_t *sep = memchr(data, 0xff, size);
        if (sep) {
            len = (size_t)(sep - data);
            pair = (const char *)sep + 1;
            pair_len = size - len - 1;
        }
    }
    xf_tokens_t out;
    memset(&out, 0, sizeof out);
    xf_diag_t diag = { 0, "" };
    int rc = xf_tokenizer_encode(tok, text, len, pair, pair_len, &o, &out, &diag);
    if (rc != 0 && out.n != 0)
        fz_fail("a failed encode left tokens");
    if (rc == 0) {
        if (o.max_len > 0 && o.truncate && out.n > o.max_len && !(o.max_len < 3 && !o.no_special))
            fz_fail("truncation exceeded max_len");
        for (int32_t i = 0; i < out.n; i++) {
            if (out.ids[i] < 0 || out.ids[i] >= vocab)
                fz_fail("an id outside the vocabulary");
            if (out.type_ids[i] != 0 && out.type_ids[i] != 1)
                fz_fail("a type id other than 0/1");
            if (!o.offsets)
                continue;
            int32_t b = out.offsets[2 * i], e = out.offsets[2 * i + 1];
            size_t in = out.type_ids[i] && pair ? pair_len : len;
            if ((b < 0 || e < 0) ? (b != -1 || e != -1) : (b >= e || (size_t)e > in))
                fz_fail("an offset outside its text");
        }
        if (o.offsets) {
            /* the same encode without offsets gives the same ids */
            xf_tokens_t plain;
            memset(&plain, 0, sizeof plain);
            o.offsets = 0;
            if (xf_tokenizer_encode(tok, text, len, pair, pair_len, &o, &plain, &diag) != 0 ||
                plain.n != out.n ||
                memcmp(plain.ids, out.ids, (size_t)out.n * sizeof *out.ids) != 0)
                fz_fail("offsets changed the ids");
            xf_tokens_deinit(&plain);
        }
    }
    xf_tokens_deinit(&out);
    return 0;
}
