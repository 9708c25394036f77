/* Engine-internal: the WordPiece tokenizer's layout (struct xf_tokenizer: one string arena,
 * the vocabulary hash table, the settings, added and never_split tokens), immutable after load.
 * Built by tokenizer_load.c, read by tokenizer.c (encode, queries), which also owns the
 * lookups and the UTF-8 check both use. */
#ifndef XF_ENGINE_TOKENIZER_INTERNAL_H
#define XF_ENGINE_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/tokenizer.h>

/* Longest continuing_subword_prefix accepted (HF uses "##"). */
#define XF_TOK_MAX_PREFIX 32

typedef struct tok_slot {
    uint32_t hash;
    int32_t id;                /* < 0: empty slot */
    uint32_t off, len;         /* the token string in strs */
} tok_slot_t;

typedef struct tok_added {     /* a token matched verbatim in raw text (HF added tokens) */
    uint32_t off, len;         /* in strs */
    int32_t id;
    int special;               /* 1: switched off by xf_tok_opts_t.split_special */
} tok_added_t;

typedef struct tok_never {     /* a never_split word: kept whole */
    uint32_t off, len;         /* in strs */
    int32_t id;                /* its id, or unk when the vocabulary lacks it */
} tok_never_t;

struct xf_tokenizer {
    char *strs;                /* every string, NUL-terminated, back to back */
    size_t strs_len;
    int32_t n_ids;             /* ids are 0 .. n_ids-1 */
    uint32_t *id_off;          /* per id: offset of its token in strs, UINT32_MAX if none */
    uint32_t *id_len;
    tok_slot_t *slots;         /* open addressing, linear probing, power-of-two size */
    uint32_t mask;
    uint32_t max_tok_bytes;    /* longest token; bounds the WordPiece search */
    int lowercase, strip_accents, chinese, clean_text;
    char prefix[XF_TOK_MAX_PREFIX + 1];
    uint32_t prefix_len;
    int32_t max_chars;         /* max_input_chars_per_word */
    xf_special_ids_t sp;
    tok_added_t *added;
    int n_added;
    uint8_t added_first[32];   /* bitset of the first bytes of added tokens */
    tok_never_t *never;
    int n_never;
    int32_t pair_type;         /* type id of a pair's second text and its [SEP] (the
                                  post-processor's template; 1 for BERT) */
    int pair_unsupported;      /* 1: the post-processor's pair template is not
                                  [CLS] A [SEP] B [SEP], so pairs are refused */
};

/* ---- owned by tokenizer_load.c ----------------------------------------------------------- */
/* sentence-transformers' do_lower_case (sentence_bert_config.json): the text is lowercased
 * (Python's str.lower()) before the tokenizer sees it. Turns lowercasing on and leaves accent
 * stripping as the tokenizer's own files resolved it (a cased tokenizer keeps its accents).
 * Thread: the loader, before the tokenizer is shared. */
void xf_tokenizer_lower_input(xf_tokenizer_t *t);

/* ---- owned by tokenizer.c ---------------------------------------------------------------- */
/* FNV-1a of the len bytes at s: the hash table's hash. */
uint32_t xf_tokenizer_hash(const char *s, size_t len);
/* The slot of the token s[0..len) in t's table, or NULL. Ownership: borrowed, valid until
 * xf_tokenizer_free(t). */
const tok_slot_t *xf_tokenizer_vocab_slot(const xf_tokenizer_t *t, const char *s, size_t len);
/* The id of the token s[0..len), or -1 when t lacks it. */
int32_t xf_tokenizer_vocab_find(const xf_tokenizer_t *t, const char *s, size_t len);
/* Offset of the first byte of s that is not valid UTF-8, or len when all of s is valid. */
size_t xf_tokenizer_utf8_check(const unsigned char *s, size_t len);

#endif
