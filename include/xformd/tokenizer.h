/* xformd public API: the WordPiece tokenizer (BERT BasicTokenizer + WordPiece, as Hugging Face).
 * A tokenizer is immutable after load: encode may be called from many threads at once. */
#ifndef XFORMD_TOKENIZER_H
#define XFORMD_TOKENIZER_H

#include <xformd/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xf_tokenizer xf_tokenizer_t;

/* Load-time options. Zero-initialised means "as the model directory says". */
typedef struct xf_tokenizer_opts {
    int lowercase;          /* -1/0: from the files (tokenizer_config.json / tokenizer.json
                               normalizer; default 1 when nothing says), 1 lowercase,
                               2 force cased. Lowercasing also strips accents (NFD) unless
                               strip_accents says otherwise. */
    int strip_accents;      /* 0: follow lowercase (HF default), 1 force on, 2 force off */
    int no_chinese_split;   /* 1: do not put spaces around CJK characters */
    const char *const *never_split; /* NULL-terminated list of words kept whole (pytorch_text's
                                       never_split), or NULL */
} xf_tokenizer_opts_t;

/* Load vocab.txt or tokenizer.json (WordPiece model) from a model directory, or from the path
 * of either file. Returns 0, -ENOENT (no vocabulary; diag names what was tried), XF_EFORMAT,
 * XF_EUNSUPPORTED (tokenizer.json with a non-WordPiece model), -ENOMEM.
 * Ownership: *out is new, free with xf_tokenizer_free(). */
XF_API int xf_tokenizer_load(const char *path, const xf_tokenizer_opts_t *opts,
                             xf_tokenizer_t **out, xf_diag_t *diag);
XF_API void xf_tokenizer_free(xf_tokenizer_t *tok);

/* Encode options. */
typedef struct xf_tok_opts {
    int no_special;        /* 1: do not add [CLS]/[SEP] (raw WordPiece ids) */
    int split_special;     /* 1: "[SEP]" typed in text is split like ordinary text; 0 (the
                              Hugging Face default): it maps to its id */
    int32_t max_len;       /* limit on the encoded length including specials; <= 0: none */
    int truncate;          /* with max_len: 1 cuts (pairs: longest-first), 0 returns XF_ETOOLONG */
    int truncate_left;     /* with truncate: 1 cuts from the start of each text (keeps its tail,
                              as HF's truncation_direction "left"); the specials stay in place */
    int offsets;           /* 1: also fill out->offsets (where each token came from) */
} xf_tok_opts_t;

/* A growable, caller-owned token buffer. Zero-initialise it; encode (re)allocates;
 * xf_tokens_deinit() releases. ids and type_ids have n valid entries; so has offsets (two
 * entries each) after an encode with opts->offsets. */
typedef struct xf_tokens {
    int32_t *ids;
    int32_t *type_ids;     /* 0 for the first text and its specials; for the pair, the
                              type its tokenizer.json template gives (1 for BERT) */
    int32_t n;
    int32_t cap;
    int32_t *offsets;      /* [2n]: byte start and end of each token in its own text (the
                              pair's tokens in the pair), as Hugging Face's Encoding offsets:
                              a WordPiece piece spans the original characters it came from
                              (before lowercasing and accent stripping), [UNK] its whole word;
                              -1, -1 for the [CLS] and [SEP] encode adds (an added token typed
                              in the text spans its match). NULL until asked for. */
} xf_tokens_t;
XF_API void xf_tokens_deinit(xf_tokens_t *t);

/* Tokenise text (len bytes of UTF-8, need not be NUL-terminated) and optionally a pair
 * (pair == NULL for none): [CLS] a [SEP] (b [SEP]). Invalid UTF-8 is XF_EFORMAT with the byte
 * offset in diag; a too-long input without truncate is XF_ETOOLONG (diag says the lengths);
 * a pair is XF_EUNSUPPORTED when tokenizer.json's post-processor lays pairs out otherwise
 * (RoBERTa's <s> A </s></s> B </s>).
 * On error *out keeps its storage but n is 0. Thread-safe. */
XF_API int xf_tokenizer_encode(const xf_tokenizer_t *tok, const char *text, size_t len,
                               const char *pair, size_t pair_len, const xf_tok_opts_t *opts,
                               xf_tokens_t *out, xf_diag_t *diag);

XF_API int32_t xf_tokenizer_vocab_size(const xf_tokenizer_t *tok);
/* Id of a token string, or -1. */
XF_API int32_t xf_tokenizer_id(const xf_tokenizer_t *tok, const char *token);
/* Token string of an id, or NULL. Ownership: borrowed, valid until xf_tokenizer_free(). */
XF_API const char *xf_tokenizer_token(const xf_tokenizer_t *tok, int32_t id);

/* Special token ids (-1 when the vocabulary lacks them). */
typedef struct xf_special_ids {
    int32_t cls, sep, pad, unk, mask;
} xf_special_ids_t;
XF_API void xf_tokenizer_specials(const xf_tokenizer_t *tok, xf_special_ids_t *out);

#ifdef __cplusplus
}
#endif
#endif
