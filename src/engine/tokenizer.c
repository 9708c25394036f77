/* The WordPiece tokenizer: BERT's BasicTokenizer + WordPiece exactly as Hugging Face runs them.
 * Owns loading (vocab.txt, WordPiece tokenizer.json, tokenizer_config.json), the vocabulary hash
 * table (open addressing, immutable after load) and encode. Encode touches no shared mutable
 * state, so any number of threads may call it at once; it never prints (errors go to diag).
 *
 * Where HF's two implementations differ, this follows the fast (Rust `tokenizers`) one, which
 * AutoTokenizer loads: lowercasing is per character (no Greek final-sigma rule of Python's
 * str.lower()), and cased text is not NFC-composed first (recent transformers' slow
 * BasicTokenizer does that); pair truncation is TruncationStrategy::LongestFirst. Unicode data
 * is libutf8proc's (categories, simple lowercase + U+0130's full mapping, canonical
 * decomposition). Duplicate vocab.txt lines: the later line's id wins, as in HF's load_vocab
 * (a Python dict), while xf_tokenizer_token() still names every line's id. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <utf8proc.h>

#include <xformd/tokenizer.h>

#include "engine/diag.h"

/* Files larger than this are refused as malformed: a vocabulary is a few MB at most. */
#define TOK_MAX_FILE_BYTES ((size_t)1 << 30)
/* Longest continuing_subword_prefix accepted (HF uses "##"). */
#define TOK_MAX_PREFIX 32

/* ---------------------------------------------------------------------------------------- */
/* The tokenizer                                                                              */

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
    char prefix[TOK_MAX_PREFIX + 1];
    uint32_t prefix_len;
    int32_t max_chars;         /* max_input_chars_per_word */
    xf_special_ids_t sp;
    tok_added_t *added;
    int n_added;
    uint8_t added_first[32];   /* bitset of the first bytes of added tokens */
    tok_never_t *never;
    int n_never;
};

/* FNV-1a: tokens are short, so a simple byte hash is fast enough. */
static uint32_t tok_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static const tok_slot_t *vocab_slot(const xf_tokenizer_t *t, const char *s, size_t len)
{
    uint32_t h = tok_hash(s, len);
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const tok_slot_t *sl = &t->slots[i];
        if (sl->id < 0)
            return NULL;
        if (sl->hash == h && sl->len == len && memcmp(t->strs + sl->off, s, len) == 0)
            return sl;
    }
}

static int32_t vocab_find(const xf_tokenizer_t *t, const char *s, size_t len)
{
    const tok_slot_t *sl = vocab_slot(t, s, len);
    return sl ? sl->id : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8                                                                                      */

/* Offset of the first byte that is not valid UTF-8 (overlong forms, surrogates and code points
 * above U+10FFFF are invalid), or len when all of s is valid. */
static size_t utf8_check(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2; cp = c & 0x1F; min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3; cp = c & 0x0F; min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4; cp = c & 0x07; min = 0x10000;
        } else {
            return i;
        }
        if (len - i < n)
            return i;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += n;
    }
    return len;
}

/* Decode one code point of already validated UTF-8; returns its byte length. */
static size_t utf8_dec(const unsigned char *s, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

static size_t utf8_enc(uint32_t cp, char *d)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------------------------------- */
/* Character classes (HF BasicTokenizer / BertNormalizer + BertPreTokenizer)                  */

/* The CJK Unified Ideograph blocks HF's _is_chinese_char lists (not all of CJK: Hiragana,
 * Katakana and Hangul are excluded on purpose). */
static int is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* clean_text drops these: U+0000, U+FFFD and category C* except TAB, LF, CR. */
static int is_dropped(uint32_t c)
{
    if (c < 0x80)
        return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F;
    if (c == 0xFFFD)
        return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_CN || k >= UTF8PROC_CATEGORY_CC;
}

/* Word separators: TAB, LF, CR, space, category Zs, and (as Python's str.split and Rust's
 * char::is_whitespace do) Zl, Zp, VT, FF and NEL. With clean_text the controls among them were
 * already dropped. */
static int is_space(uint32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= '\t' && c <= '\r');
    if (c == 0x85)
        return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

/* ASCII 33-47, 58-64, 91-96, 123-126 (so $ ^ ` ~ count) plus every category P*. */
static int is_punct(uint32_t c)
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* ---------------------------------------------------------------------------------------- */
/* Encode                                                                                     */

typedef struct enc {
    const xf_tokenizer_t *t;
    xf_tokens_t *out;
    int32_t limit;             /* stop after this many tokens (truncating single text), or -1 */
    int stop;                  /* limit reached */
    int split_special;
    uint32_t *raw;             /* the current word after cleaning, code points */
    size_t n_raw;
    int raw_ascii;             /* every code point of raw is ASCII */
    uint32_t *norm;            /* the word after lowercasing / accent stripping */
    size_t cap_norm;
    char *ubuf;                /* prefix_len bytes of room + one piece in UTF-8 */
    uint32_t *uoff;            /* byte offset (in ubuf) of each char of the piece, + the end */
    int want_off;              /* fill out->offsets */
    uint32_t base;             /* byte offset in the text of what basic() is given */
    uint32_t *raw_beg, *raw_end; /* byte span in the text of each code point of raw */
    uint32_t *norm_src;        /* index in raw of each code point of norm */
} enc_t;

/* Room for need tokens; offsets (when held or wanted) always has room for cap tokens. */
static int out_reserve(xf_tokens_t *o, size_t need, int want_off)
{
    if (need <= (size_t)(o->cap > 0 ? o->cap : 0) && (o->offsets || !want_off))
        return 0;
    if (need > INT32_MAX)
        return -ENOMEM;
    size_t cap = o->cap > 0 ? (size_t)o->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    int32_t *ids = realloc(o->ids, cap * sizeof *ids);
    if (!ids)
        return -ENOMEM;
    o->ids = ids;
    int32_t *ty = realloc(o->type_ids, cap * sizeof *ty);
    if (!ty)
        return -ENOMEM;
    o->type_ids = ty;
    if (want_off || o->offsets) {
        int32_t *of = realloc(o->offsets, 2 * cap * sizeof *of);
        if (!of)
            return -ENOMEM;
        o->offsets = of;
    }
    o->cap = (int32_t)cap;
    return 0;
}

/* Append id, from bytes [beg, end) of the text (beg < 0: a special token). */
static int push(enc_t *e, int32_t id, int64_t beg, int64_t end)
{
    xf_tokens_t *o = e->out;
    if (o->n >= o->cap || (e->want_off && !o->offsets)) {
        int rc = out_reserve(o, (size_t)o->n + 1, e->want_off);
        if (rc)
            return rc;
    }
    if (e->want_off) {
        o->offsets[2 * o->n] = beg < 0 ? -1 : (int32_t)beg;
        o->offsets[2 * o->n + 1] = beg < 0 ? -1 : (int32_t)end;
    }
    o->ids[o->n++] = id;
    return 0;
}

/* The byte span in the text of norm[a..b] (inclusive). */
static int64_t norm_beg(const enc_t *e, size_t a)
{
    return e->raw_beg[e->norm_src[a]];
}

static int64_t norm_end(const enc_t *e, size_t b)
{
    return e->raw_end[e->norm_src[b]];
}

/* Truncating a single text stops tokenizing once the limit is reached. Checked only after a
 * whole word, so that the kept tokens equal the first tokens of the full encoding (a word's
 * pieces can still turn into one [UNK] when its tail does not match). */
static void check_limit(enc_t *e)
{
    if (e->limit >= 0 && e->out->n >= e->limit) {
        e->out->n = e->limit;
        e->stop = 1;
    }
}

static int emit(enc_t *e, int32_t id, int64_t beg, int64_t end)
{
    int rc = push(e, id, beg, end);
    check_limit(e);
    return rc;
}

/* Greedy longest-match-first WordPiece on norm[at..at+n): the whole piece becomes [UNK] when
 * it is longer than max_input_chars_per_word or some part of it matches nothing. */
static int wordpiece(enc_t *e, size_t at, size_t n)
{
    const xf_tokenizer_t *t = e->t;
    const uint32_t *p = e->norm + at;
    if (n == 0)
        return 0;
    if (n > (size_t)t->max_chars)
        return emit(e, t->sp.unk, norm_beg(e, at), norm_end(e, at + n - 1));
    const uint32_t pl = t->prefix_len;
    char *u = e->ubuf;
    uint32_t pos = pl;
    for (size_t i = 0; i < n; i++) {
        e->uoff[i] = pos;
        pos += (uint32_t)utf8_enc(p[i], u + pos);
    }
    e->uoff[n] = pos;

    int32_t n0 = e->out->n;
    size_t start = 0;
    while (start < n) {
        /* A continuation piece is looked up as prefix + bytes: the prefix is written over bytes
         * of pieces already consumed (ubuf starts with prefix_len bytes of room for start 0). */
        const char *key = u + e->uoff[start];
        uint32_t extra = 0;
        if (start > 0) {
            memcpy(u + e->uoff[start] - pl, t->prefix, pl);
            key -= pl;
            extra = pl;
        }
        int32_t id = -1;
        size_t end = n;
        for (; end > start; end--) {
            uint32_t klen = e->uoff[end] - e->uoff[start] + extra;
            if (klen > t->max_tok_bytes)
                continue;
            id = vocab_find(t, key, klen);
            if (id >= 0)
                break;
        }
        if (id < 0) {
            e->out->n = n0;           /* some part matches nothing: the whole piece is [UNK] */
            return emit(e, t->sp.unk, norm_beg(e, at), norm_end(e, at + n - 1));
        }
        int rc = push(e, id, norm_beg(e, at + start), norm_end(e, at + end - 1));
        if (rc)
            return rc;
        start = end;
    }
    check_limit(e);
    return 0;
}

static int cps_equal_str(const uint32_t *c, size_t n, const char *s, size_t slen)
{
    char tmp[4];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = utf8_enc(c[i], tmp);
        if (j + k > slen || memcmp(s + j, tmp, k) != 0)
            return 0;
        j += k;
    }
    return j == slen;
}

static int never_match(const xf_tokenizer_t *t, const uint32_t *c, size_t n)
{
    for (int i = 0; i < t->n_never; i++)
        if (cps_equal_str(c, n, t->strs + t->never[i].off, t->never[i].len))
            return i;
    return -1;
}

/* Canonical ordering (the reordering step of NFD): stable sort of each run of non-starters by
 * combining class; src (where each code point came from) moves along. Only reached for words
 * with non-ASCII letters. */
static void canonical_order(uint32_t *w, uint32_t *src, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint32_t c = w[i], cs = src[i];
        if (c < 0x300)
            continue;
        int cc = utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
        if (cc == 0)
            continue;
        size_t j = i;
        while (j > 0 && w[j - 1] >= 0x300) {
            int pc = utf8proc_get_property((utf8proc_int32_t)w[j - 1])->combining_class;
            if (pc <= cc)
                break;
            w[j] = w[j - 1];
            src[j] = src[j - 1];
            j--;
        }
        w[j] = c;
        src[j] = cs;
    }
}

/* Lowercase (Unicode simple mapping plus U+0130's full mapping, as Python str.lower() and
 * Rust char::to_lowercase) and strip accents (NFD, drop category Mn) raw -> norm. */
static int normalize_word(enc_t *e, size_t *n_out)
{
    const xf_tokenizer_t *t = e->t;
    const uint32_t *r = e->raw;
    uint32_t *w = e->norm, *src = e->norm_src;
    size_t n = 0;
    if (e->raw_ascii) {
        for (size_t i = 0; i < e->n_raw; i++) {
            uint32_t c = r[i];
            w[i] = (t->lowercase && c >= 'A' && c <= 'Z') ? c + 32 : c;
            src[i] = (uint32_t)i;
        }
        *n_out = e->n_raw;
        return 0;
    }
    for (size_t i = 0; i < e->n_raw; i++) {
        uint32_t lc[2];
        int nl = 1;
        lc[0] = r[i];
        if (t->lowercase) {
            if (r[i] == 0x130) {
                lc[0] = 'i';
                lc[1] = 0x307;
                nl = 2;
            } else {
                lc[0] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)r[i]);
            }
        }
        for (int k = 0; k < nl; k++) {
            if (!t->strip_accents || lc[k] < 0xC0) {
                if (n >= e->cap_norm)
                    return -EOVERFLOW;
                src[n] = (uint32_t)i;
                w[n++] = lc[k];
                continue;
            }
            int bc = 0;
            utf8proc_ssize_t m = utf8proc_decompose_char(
                (utf8proc_int32_t)lc[k], (utf8proc_int32_t *)(w + n),
                (utf8proc_ssize_t)(e->cap_norm - n), UTF8PROC_DECOMPOSE, &bc);
            /* cap_norm is 2 code points per input byte + slack, more than any decomposition
             * of the Unicode data needs; running out means the data changed: refuse. */
            if (m < 0 || (size_t)m > e->cap_norm - n)
                return -EOVERFLOW;
            for (utf8proc_ssize_t q = 0; q < m; q++)
                src[n + (size_t)q] = (uint32_t)i;
            n += (size_t)m;
        }
    }
    if (t->strip_accents) {
        canonical_order(w, src, n);
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (w[i] >= 0x300 &&
                utf8proc_category((utf8proc_int32_t)w[i]) == UTF8PROC_CATEGORY_MN)
                continue;
            src[j] = src[i];
            w[j++] = w[i];
        }
        n = j;
    }
    *n_out = n;
    return 0;
}

/* One whitespace-delimited word (in e->raw): never_split check, normalization, punctuation
 * split, WordPiece on each piece. */
static int flush_word(enc_t *e)
{
    const xf_tokenizer_t *t = e->t;
    size_t nr = e->n_raw;
    if (nr == 0 || e->stop)
        return 0;
    e->n_raw = 0;
    const int64_t wb = e->raw_beg[0], we = e->raw_end[nr - 1];   /* the word's bytes */
    if (t->n_never) {
        int k = never_match(t, e->raw, nr);
        if (k >= 0)
            return emit(e, t->never[k].id, wb, we);
    }
    e->n_raw = nr;
    size_t n;
    int rc = normalize_word(e, &n);
    e->n_raw = 0;
    if (rc)
        return rc;
    const uint32_t *w = e->norm;
    if (t->n_never && (t->lowercase || t->strip_accents)) {
        int k = never_match(t, w, n);
        if (k >= 0)
            return emit(e, t->never[k].id, wb, we);
    }
    size_t s = 0;
    for (size_t i = 0; i < n && !e->stop; i++) {
        if (!is_punct(w[i]))
            continue;
        if (i > s && (rc = wordpiece(e, s, i - s)))
            return rc;
        if (!e->stop && (rc = wordpiece(e, i, 1)))
            return rc;
        s = i + 1;
    }
    if (s < n && !e->stop)
        return wordpiece(e, s, n - s);
    return 0;
}

/* BasicTokenizer over plain text (no added tokens inside). */
static int basic(enc_t *e, const unsigned char *s, size_t len)
{
    const xf_tokenizer_t *t = e->t;
    size_t i = 0;
    int rc;
    e->n_raw = 0;
    e->raw_ascii = 1;
    while (i < len && !e->stop) {
        uint32_t c;
        size_t at = i;
        i += utf8_dec(s + i, &c);
        if (t->clean_text && (c == 0 || is_dropped(c)))
            continue;
        if (is_space(c)) {
            if ((rc = flush_word(e)))
                return rc;
            e->raw_ascii = 1;
            continue;
        }
        if (t->chinese && c >= 0x3400 && is_cjk(c)) {
            if ((rc = flush_word(e)))
                return rc;
            e->raw[0] = c;
            e->raw_beg[0] = e->base + (uint32_t)at;
            e->raw_end[0] = e->base + (uint32_t)i;
            e->n_raw = 1;
            e->raw_ascii = 0;
            if ((rc = flush_word(e)))
                return rc;
            e->raw_ascii = 1;
            continue;
        }
        if (c >= 0x80)
            e->raw_ascii = 0;
        e->raw_beg[e->n_raw] = e->base + (uint32_t)at;
        e->raw_end[e->n_raw] = e->base + (uint32_t)i;
        e->raw[e->n_raw++] = c;
    }
    return flush_word(e);
}

/* Longest added token starting at s, or -1. */
static int added_at(const xf_tokenizer_t *t, const unsigned char *s, size_t len, int specials)
{
    int best = -1;
    uint32_t best_len = 0;
    for (int k = 0; k < t->n_added; k++) {
        const tok_added_t *a = &t->added[k];
        if (a->special && !specials)
            continue;
        if (a->len <= len && a->len > best_len && memcmp(s, t->strs + a->off, a->len) == 0) {
            best = k;
            best_len = a->len;
        }
    }
    return best;
}

/* Split text on added tokens (HF matches them in the raw text before normalization), run the
 * BasicTokenizer + WordPiece on the rest. */
static int encode_text(enc_t *e, const unsigned char *s, size_t len)
{
    const xf_tokenizer_t *t = e->t;
    int rc;
    size_t seg = 0, i = 0;
    if (t->n_added > 0) {
        while (i < len && !e->stop) {
            unsigned char b = s[i];
            if (!(t->added_first[b >> 3] & (1u << (b & 7)))) {
                i++;
                continue;
            }
            int k = added_at(t, s + i, len - i, !e->split_special);
            if (k < 0) {
                i++;
                continue;
            }
            e->base = (uint32_t)seg;
            if ((rc = basic(e, s + seg, i - seg)))
                return rc;
            /* an added token typed in the text spans its match; Hugging Face's Encoding marks
             * only the post-processor's [CLS]/[SEP] in its special_tokens_mask */
            if (!e->stop && (rc = emit(e, t->added[k].id, (int64_t)i,
                                       (int64_t)i + t->added[k].len)))
                return rc;
            i += t->added[k].len;
            seg = i;
        }
    }
    if (e->stop)
        return 0;
    e->base = (uint32_t)seg;
    return basic(e, s + seg, len - seg);
}

/* HF tokenizers' TruncationStrategy::LongestFirst: the shorter input keeps what it can, the
 * longer one gets the rest; when both must be cut each gets half (the pair the odd one). */
static void truncate_pair(int32_t na, int32_t nb, int32_t budget, int32_t *ta, int32_t *tb)
{
    if (na + nb <= budget) {
        *ta = na;
        *tb = nb;
        return;
    }
    int32_t n1 = na, n2 = nb;
    int swap = n1 > n2;
    if (swap) {
        n1 = nb;
        n2 = na;
    }
    if (n1 > budget)
        n2 = n1;
    else
        n2 = n1 > budget - n1 ? n1 : budget - n1;
    if (n1 + n2 > budget) {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
    }
    if (swap) {
        int32_t x = n1;
        n1 = n2;
        n2 = x;
    }
    *ta = na < n1 ? na : n1;
    *tb = nb < n2 ? nb : n2;
}

/* Move n tokens (ids, and offsets when kept) from index src to dst (ranges may overlap). */
static void move_tokens(xf_tokens_t *o, int want_off, int32_t dst, int32_t src, int32_t n)
{
    if (n <= 0)
        return;
    memmove(o->ids + dst, o->ids + src, (size_t)n * sizeof *o->ids);
    if (want_off)
        memmove(o->offsets + 2 * dst, o->offsets + 2 * src, 2 * (size_t)n * sizeof *o->offsets);
}

static void set_special(xf_tokens_t *o, int want_off, int32_t at, int32_t id)
{
    o->ids[at] = id;
    if (want_off)
        o->offsets[2 * at] = o->offsets[2 * at + 1] = -1;
}

int xf_tokenizer_encode(const xf_tokenizer_t *tok, const char *text, size_t len,
                        const char *pair, size_t pair_len, const xf_tok_opts_t *opts,
                        xf_tokens_t *out, xf_diag_t *diag)
{
    static const xf_tok_opts_t defaults;
    if (!tok || !out || (!text && len > 0) || (!pair && pair_len > 0))
        return xf_diag_set(diag, -EINVAL, "xf_tokenizer_encode: NULL argument");
    if (!opts)
        opts = &defaults;
    out->n = 0;
    if (!text)
        text = "";
    size_t bad = utf8_check((const unsigned char *)text, len);
    if (bad < len)
        return xf_diag_set(diag, XF_EFORMAT, "text: invalid UTF-8 at byte offset %zu", bad);
    if (pair) {
        bad = utf8_check((const unsigned char *)pair, pair_len);
        if (bad < pair_len)
            return xf_diag_set(diag, XF_EFORMAT, "pair text: invalid UTF-8 at byte offset %zu",
                               bad);
    }
    if (len > INT32_MAX / 4 || pair_len > INT32_MAX / 4)
        return xf_diag_set(diag, XF_ETOOLONG, "text of %zu bytes is too long to tokenize",
                           len > pair_len ? len : pair_len);
    const int specials = !opts->no_special;
    const int32_t n_sp = specials ? (pair ? 3 : 2) : 0;
    if (specials && (tok->sp.cls < 0 || tok->sp.sep < 0))
        return xf_diag_set(diag, XF_EUNSUPPORTED,
                           "vocabulary has no [CLS]/[SEP]: encode with no_special");
    int32_t budget = -1;
    if (opts->max_len > 0) {
        budget = opts->max_len - n_sp;
        if (budget < 0)
            return xf_diag_set(diag, XF_EPARAM, "max_len %d cannot hold the %d special tokens",
                               (int)opts->max_len, (int)n_sp);
    }

    /* One scratch block: raw word (1 code point per byte at most) and each code point's byte
     * span, normalized word (2 per byte: the longest lowercase+NFD expansion is 4 code points
     * for a 3-byte character) and where each came from, the WordPiece piece's char offsets
     * and the piece in UTF-8. */
    size_t L = (len > pair_len ? len : pair_len) + 1;
    size_t cap_norm = 2 * L + 32;
    /* a piece is part of a normalized word and at most max_chars long (else it is [UNK]) */
    size_t mc = (size_t)tok->max_chars < cap_norm ? (size_t)tok->max_chars : cap_norm;
    size_t words = 3 * L + 2 * cap_norm + mc + 1;   /* uint32_t arrays before ubuf */
    size_t bytes = words * sizeof(uint32_t) + TOK_MAX_PREFIX + 4 * mc + 8;
    char *scratch = malloc(bytes);
    if (!scratch)
        return xf_diag_set(diag, -ENOMEM, "tokenizer: out of memory (%zu bytes)", bytes);
    enc_t e = {
        .t = tok, .out = out, .limit = -1, .split_special = opts->split_special,
        .raw = (uint32_t *)scratch,
        .norm = (uint32_t *)scratch + L,
        .cap_norm = cap_norm,
        .uoff = (uint32_t *)scratch + L + cap_norm,
        .raw_beg = (uint32_t *)scratch + L + cap_norm + mc + 1,
        .raw_end = (uint32_t *)scratch + 2 * L + cap_norm + mc + 1,
        .norm_src = (uint32_t *)scratch + 3 * L + cap_norm + mc + 1,
        .ubuf = scratch + words * sizeof(uint32_t),
        .want_off = opts->offsets,
    };
    int rc;
    int32_t na = 0, nb = 0;
    if (specials && (rc = out_reserve(out, 1, e.want_off)))
        goto fail_nomem;
    out->n = specials ? 1 : 0;
    if (!pair && budget >= 0 && opts->truncate && !opts->truncate_left)
        e.limit = out->n + budget;   /* right truncation: stop encoding at the budget */
    if ((rc = encode_text(&e, (const unsigned char *)text, len)))
        goto fail;
    na = out->n - (specials ? 1 : 0);
    if (pair) {
        e.stop = 0;
        if ((rc = encode_text(&e, (const unsigned char *)pair, pair_len)))
            goto fail;
        nb = out->n - na - (specials ? 1 : 0);
    }
    free(scratch);
    scratch = NULL;

    int32_t ta = na, tb = nb;
    if (budget >= 0 && (int64_t)na + nb > budget) {
        if (!opts->truncate) {
            out->n = 0;
            if (pair)
                return xf_diag_set(diag, XF_ETOOLONG,
                                   "input has %d + %d tokens + %d special, max_len is %d",
                                   (int)na, (int)nb, (int)n_sp, (int)opts->max_len);
            return xf_diag_set(diag, XF_ETOOLONG, "input has %d tokens + %d special, "
                               "max_len is %d", (int)na, (int)n_sp, (int)opts->max_len);
        }
        if (pair)
            truncate_pair(na, nb, budget, &ta, &tb);
        else
            ta = budget;
    }
    if ((rc = out_reserve(out, (size_t)na + nb + 3, e.want_off)))
        goto fail_nomem;
    int32_t a0 = specials ? 1 : 0;          /* where a's tokens start */
    int32_t b0 = a0 + na;                   /* where b's kept tokens start */
    if (opts->truncate_left) {
        /* Keep each text's tail: a's last ta tokens move to a0 (within a's span, so b is
         * untouched); b's kept tokens are its last tb. */
        if (ta < na)
            move_tokens(out, e.want_off, a0, a0 + (na - ta), ta);
        b0 += nb - tb;
    }
    if (specials) {
        /* [CLS] a [SEP] b [SEP]: b moves to its place first (its destination is past a's). */
        if (pair)
            move_tokens(out, e.want_off, a0 + ta + 1, b0, tb);
        set_special(out, e.want_off, 0, tok->sp.cls);
        set_special(out, e.want_off, a0 + ta, tok->sp.sep);
        out->n = a0 + ta + 1;
        if (pair) {
            set_special(out, e.want_off, out->n + tb, tok->sp.sep);
            out->n += tb + 1;
        }
    } else {
        if (pair && tb > 0)
            move_tokens(out, e.want_off, ta, b0, tb);
        out->n = ta + tb;
    }
    int32_t first = specials ? ta + 2 : ta;    /* tokens with type 0 */
    for (int32_t i = 0; i < out->n; i++)
        out->type_ids[i] = i < first ? 0 : 1;
    return 0;

fail_nomem:
    rc = -ENOMEM;
fail:
    free(scratch);
    out->n = 0;
    if (rc == -ENOMEM)
        return xf_diag_set(diag, rc, "tokenizer: out of memory");
    return xf_diag_set(diag, rc, "tokenizer: internal limit exceeded while normalizing");
}

void xf_tokens_deinit(xf_tokens_t *t)
{
    if (!t)
        return;
    free(t->ids);
    free(t->type_ids);
    free(t->offsets);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------------------------------- */
/* Queries                                                                                    */

int32_t xf_tokenizer_vocab_size(const xf_tokenizer_t *tok)
{
    return tok ? tok->n_ids : 0;
}

int32_t xf_tokenizer_id(const xf_tokenizer_t *tok, const char *token)
{
    if (!tok || !token)
        return -1;
    return vocab_find(tok, token, strlen(token));
}

const char *xf_tokenizer_token(const xf_tokenizer_t *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->n_ids || tok->id_off[id] == UINT32_MAX)
        return NULL;
    return tok->strs + tok->id_off[id];
}

void xf_tokenizer_specials(const xf_tokenizer_t *tok, xf_special_ids_t *out)
{
    if (!out)
        return;
    if (!tok) {
        out->cls = out->sep = out->pad = out->unk = out->mask = -1;
        return;
    }
    *out = tok->sp;
}

void xf_tokenizer_free(xf_tokenizer_t *tok)
{
    if (!tok)
        return;
    free(tok->strs);
    free(tok->id_off);
    free(tok->id_len);
    free(tok->slots);
    free(tok->added);
    free(tok->never);
    free(tok);
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                    */

/* What the files and options say, gathered before the tokenizer is built. */
enum { SP_CLS, SP_SEP, SP_PAD, SP_UNK, SP_MASK, SP_COUNT };

typedef struct added_src {
    char *s;
    int32_t id;
    int special;
} added_src_t;

typedef struct build {
    /* strings arena */
    char *buf;
    size_t len, cap;
    /* vocabulary entries: (off, len, id) */
    struct { uint32_t off, len; int32_t id; } *e;
    size_t n, cap_e;
    int32_t max_id;
    /* settings: -1 = not said */
    int lowercase, strip, chinese, clean;
    int strip_follows;         /* a BertNormalizer left strip_accents to follow lowercase */
    char prefix[TOK_MAX_PREFIX + 1];
    int32_t max_chars;
    char *names[SP_COUNT];     /* special token strings from the files, or NULL */
    added_src_t *added;
    int n_added, cap_added;
    char **never;
    int n_never, cap_never;
} build_t;

static void build_free(build_t *b)
{
    free(b->buf);
    free(b->e);
    for (int i = 0; i < SP_COUNT; i++)
        free(b->names[i]);
    for (int i = 0; i < b->n_added; i++)
        free(b->added[i].s);
    free(b->added);
    for (int i = 0; i < b->n_never; i++)
        free(b->never[i]);
    free(b->never);
}

static int build_str(build_t *b, const char *s, size_t len, uint32_t *off)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->len + len + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -ENOMEM;
        char *nb = realloc(b->buf, cap);
        if (!nb)
            return -ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, len);
    b->buf[b->len + len] = 0;
    *off = (uint32_t)b->len;
    b->len += len + 1;
    return 0;
}

static int build_add(build_t *b, const char *s, size_t len, int32_t id)
{
    if (b->n == b->cap_e) {
        size_t cap = b->cap_e ? b->cap_e * 2 : 1024;
        void *ne = realloc(b->e, cap * sizeof *b->e);
        if (!ne)
            return -ENOMEM;
        b->e = ne;
        b->cap_e = cap;
    }
    uint32_t off;
    int rc = build_str(b, s, len, &off);
    if (rc)
        return rc;
    b->e[b->n].off = off;
    b->e[b->n].len = (uint32_t)len;
    b->e[b->n].id = id;
    b->n++;
    if (id > b->max_id)
        b->max_id = id;
    return 0;
}

static int set_name(char **slot, const char *s)
{
    char *d = strdup(s);
    if (!d)
        return -ENOMEM;
    free(*slot);
    *slot = d;
    return 0;
}

static int add_never(build_t *b, const char *s)
{
    if (b->n_never == b->cap_never) {
        int cap = b->cap_never ? b->cap_never * 2 : 8;
        char **nn = realloc(b->never, (size_t)cap * sizeof *nn);
        if (!nn)
            return -ENOMEM;
        b->never = nn;
        b->cap_never = cap;
    }
    if (!(b->never[b->n_never] = strdup(s)))
        return -ENOMEM;
    b->n_never++;
    return 0;
}

static int add_added(build_t *b, const char *s, int32_t id, int special)
{
    if (b->n_added == b->cap_added) {
        int cap = b->cap_added ? b->cap_added * 2 : 8;
        added_src_t *na = realloc(b->added, (size_t)cap * sizeof *na);
        if (!na)
            return -ENOMEM;
        b->added = na;
        b->cap_added = cap;
    }
    if (!(b->added[b->n_added].s = strdup(s)))
        return -ENOMEM;
    b->added[b->n_added].id = id;
    b->added[b->n_added].special = special;
    b->n_added++;
    return 0;
}

static int read_file(const char *path, char **data, size_t *len, xf_diag_t *diag)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return xf_diag_set(diag, -errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return xf_diag_set(diag, XF_EFORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size >= TOK_MAX_FILE_BYTES) {
        fclose(f);
        return xf_diag_set(diag, XF_EFORMAT, "%s: %lld bytes, larger than a vocabulary can be",
                           path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != n) {
        free(buf);
        return xf_diag_set(diag, -EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* vocab.txt: one token per line, id = 0-based line number. Lines end at LF, CRLF or a lone CR
 * (Python's universal newlines, which HF's load_vocab reads with); nothing else is stripped,
 * so tokens with spaces stay exact. Invalid UTF-8 is refused (Python would raise too). */
static int load_vocab_txt(build_t *b, const char *path, xf_diag_t *diag)
{
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(path, &data, &len, diag);
    if (rc)
        return rc;
    size_t bad = utf8_check((const unsigned char *)data, len);
    if (bad < len) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++)
            line += data[i] == '\n';
        free(data);
        return xf_diag_set(diag, XF_EFORMAT, "%s:%zu: invalid UTF-8 at byte offset %zu",
                           path, line, bad);
    }
    size_t i = 0;
    int32_t id = 0;
    while (i < len) {
        size_t s = i;
        while (i < len && data[i] != '\n' && data[i] != '\r')
            i++;
        if (id == INT32_MAX) {
            free(data);
            return xf_diag_set(diag, XF_EFORMAT, "%s: too many lines", path);
        }
        if ((rc = build_add(b, data + s, i - s, id++))) {
            free(data);
            return xf_diag_set(diag, rc, "%s: out of memory", path);
        }
        if (i < len && data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            i++;
        i++;
    }
    free(data);
    if (b->n == 0)
        return xf_diag_set(diag, XF_EFORMAT, "%s: empty vocabulary", path);
    return 0;
}

static int json_open(const char *path, json_t **out, xf_diag_t *diag)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) {
        if (err.line < 0 && access(path, R_OK) != 0)
            return xf_diag_set(diag, -errno, "%s: cannot open", path);
        return xf_diag_set(diag, XF_EFORMAT, "%s:%d:%d (byte %d): %s", path, err.line,
                           err.column, err.position, err.text);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return xf_diag_set(diag, XF_EFORMAT, "%s: top level is not an object", path);
    }
    *out = j;
    return 0;
}

/* Releases a json_open()ed root and passes rc on, naming path when it is -ENOMEM (the other
 * codes already filled diag). */
static int json_close(json_t *root, int rc, const char *path, xf_diag_t *diag)
{
    json_decref(root);
    if (rc == -ENOMEM)
        return xf_diag_set(diag, rc, "%s: out of memory", path);
    return rc;
}

/* A bool field: 1/0, or -1 when absent or null. Anything else is XF_EFORMAT. */
static int json_flag(const json_t *o, const char *key, int *val, const char *path,
                     xf_diag_t *diag)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return xf_diag_set(diag, XF_EFORMAT, "%s: \"%s\" is not a boolean", path, key);
    *val = json_is_true(v);
    return 0;
}

/* A token name: a string or an AddedToken object {"content": ...}. */
static const char *json_token_name(const json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int apply_normalizer(build_t *b, const json_t *n, const char *path, xf_diag_t *diag)
{
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type)
        return xf_diag_set(diag, XF_EFORMAT, "%s: normalizer has no \"type\"", path);
    int rc;
    if (!strcmp(type, "BertNormalizer")) {
        /* Steps of a Sequence accumulate (a later BertNormalizer without lowercase does not
         * undo an earlier Lowercase); strip_accents null means "follow lowercase", which stays
         * unresolved so that tokenizer_config.json's do_lower_case still steers it (HF rebuilds
         * the normalizer from that). */
        int clean = 1, chinese = 1, lower = 1, strip = -1;       /* the BertNormalizer defaults */
        if ((rc = json_flag(n, "clean_text", &clean, path, diag)) ||
            (rc = json_flag(n, "handle_chinese_chars", &chinese, path, diag)) ||
            (rc = json_flag(n, "lowercase", &lower, path, diag)) ||
            (rc = json_flag(n, "strip_accents", &strip, path, diag)))
            return rc;
        b->clean = b->clean > clean ? b->clean : clean;
        b->chinese = b->chinese > chinese ? b->chinese : chinese;
        b->lowercase = b->lowercase > lower ? b->lowercase : lower;
        if (strip < 0 && !lower && b->lowercase == 1)
            strip = 0;          /* its own "follow" is off, whatever an earlier step did */
        if (strip >= 0)
            b->strip = b->strip > strip ? b->strip : strip;
        else
            b->strip_follows = 1;
    } else if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return xf_diag_set(diag, XF_EFORMAT, "%s: Sequence normalizer without a list", path);
        size_t i;
        const json_t *sub;
        json_array_foreach(list, i, sub) {
            if (!json_is_object(sub))
                return xf_diag_set(diag, XF_EFORMAT, "%s: normalizer %zu is not an object",
                                   path, i);
            if ((rc = apply_normalizer(b, sub, path, diag)))
                return rc;
        }
    } else if (!strcmp(type, "Lowercase")) {
        b->lowercase = 1;
    } else if (!strcmp(type, "StripAccents")) {
        b->strip = 1;
    } else if (!strcmp(type, "NFD")) {
        /* implied by accent stripping; on its own it does not change BERT's tokens much */
    } else {
        xf_log(XF_LOG_WARN, "%s: normalizer \"%s\" is not supported and is ignored", path, type);
    }
    return 0;
}

/* The pieces of tokenizer.json a WordPiece model needs. XF_EUNSUPPORTED for other models. */
static int load_tokenizer_json(build_t *b, const char *path, xf_diag_t *diag)
{
    json_t *root;
    int rc = json_open(path, &root, diag);
    if (rc)
        return rc;
    const json_t *model = json_object_get(root, "model");
    const json_t *vocab = json_object_get(model, "vocab");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: no \"model\" object", path);
        goto out;
    }
    if (type ? strcmp(type, "WordPiece") != 0
             : (json_object_get(model, "merges") != NULL || !json_is_object(vocab))) {
        rc = xf_diag_set(diag, XF_EUNSUPPORTED, "%s: model type \"%s\" is not supported "
                         "(only WordPiece)", path, type ? type : "BPE/Unigram");
        goto out;
    }
    if (!json_is_object(vocab) || json_object_size(vocab) == 0) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.vocab is not a non-empty object", path);
        goto out;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= INT32_MAX) {
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.vocab[\"%.64s\"] is not a valid id",
                             path, key);
            goto out;
        }
        if ((rc = build_add(b, key, strlen(key), (int32_t)id))) {
            rc = xf_diag_set(diag, rc, "%s: out of memory", path);
            goto out;
        }
    }
    const json_t *v = json_object_get(model, "unk_token");
    if (v && !json_is_string(v)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.unk_token is not a string", path);
        goto out;
    }
    if (v && (rc = set_name(&b->names[SP_UNK], json_string_value(v))))
        goto out;
    v = json_object_get(model, "continuing_subword_prefix");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || strlen(json_string_value(v)) > TOK_MAX_PREFIX) {
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.continuing_subword_prefix must be a "
                             "string of at most %d bytes", path, TOK_MAX_PREFIX);
            goto out;
        }
        strcpy(b->prefix, json_string_value(v));
    }
    v = json_object_get(model, "max_input_chars_per_word");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.max_input_chars_per_word must be a "
                             "positive integer", path);
            goto out;
        }
        json_int_t m = json_integer_value(v);
        b->max_chars = m > INT32_MAX ? INT32_MAX : (int32_t)m;
    }
    v = json_object_get(root, "pre_tokenizer");
    const char *pt = json_string_value(json_object_get(v, "type"));
    if (json_is_object(v) && (!pt || strcmp(pt, "BertPreTokenizer") != 0))
        xf_log(XF_LOG_WARN, "%s: pre_tokenizer \"%s\" is treated as BertPreTokenizer", path,
               pt ? pt : "?");
    v = json_object_get(root, "normalizer");
    if (json_is_object(v)) {
        if ((rc = apply_normalizer(b, v, path, diag)))
            goto out;
        /* what the normalizer does not do stays off (not the vocab.txt defaults) */
        b->lowercase = b->lowercase < 0 ? 0 : b->lowercase;
        b->clean = b->clean < 0 ? 0 : b->clean;
        b->chinese = b->chinese < 0 ? 0 : b->chinese;
        if (b->strip < 0 && !b->strip_follows)
            b->strip = 0;
    } else {
        /* no normalizer: no cleaning, case or accent changes */
        b->lowercase = 0;
        b->strip = 0;
        b->clean = 0;
        b->chinese = 0;
    }
    /* [CLS]/[SEP] from the post-processor when it names them (BertProcessing). */
    v = json_object_get(root, "post_processor");
    if (json_is_object(v)) {
        const json_t *c = json_object_get(v, "cls"), *s = json_object_get(v, "sep");
        if (json_is_array(c) && json_is_string(json_array_get(c, 0)) &&
            (rc = set_name(&b->names[SP_CLS], json_string_value(json_array_get(c, 0)))))
            goto out;
        if (json_is_array(s) && json_is_string(json_array_get(s, 0)) &&
            (rc = set_name(&b->names[SP_SEP], json_string_value(json_array_get(s, 0)))))
            goto out;
    }
    v = json_object_get(root, "added_tokens");
    if (json_is_array(v)) {
        size_t i;
        const json_t *a;
        json_array_foreach(v, i, a) {
            const json_t *jid = json_object_get(a, "id");
            const json_t *jc = json_object_get(a, "content");
            if (!json_is_integer(jid) || !json_is_string(jc) || json_integer_value(jid) < 0 ||
                json_integer_value(jid) >= INT32_MAX) {
                rc = xf_diag_set(diag, XF_EFORMAT, "%s: added_tokens[%zu] needs an integer "
                                 "\"id\" and a string \"content\"", path, i);
                goto out;
            }
            if (json_string_length(jc) == 0)
                continue;
            if ((rc = add_added(b, json_string_value(jc), (int32_t)json_integer_value(jid),
                                json_is_true(json_object_get(a, "special")))))
                goto out;
        }
    }
    rc = 0;
out:
    return json_close(root, rc, path, diag);
}

/* tokenizer_config.json (transformers): do_lower_case, strip_accents, tokenize_chinese_chars,
 * never_split and the special token names. */
static int load_config_json(build_t *b, const char *path, xf_diag_t *diag)
{
    json_t *root;
    int rc = json_open(path, &root, diag);
    if (rc)
        return rc;
    if ((rc = json_flag(root, "do_lower_case", &b->lowercase, path, diag)) ||
        (rc = json_flag(root, "tokenize_chinese_chars", &b->chinese, path, diag)))
        goto out;
    const json_t *v = json_object_get(root, "strip_accents");
    if (v) {
        int s = -1;
        if ((rc = json_flag(root, "strip_accents", &s, path, diag)))
            goto out;
        b->strip = s;
    }
    v = json_object_get(root, "never_split");
    if (json_is_array(v)) {
        size_t i;
        const json_t *w;
        json_array_foreach(v, i, w) {
            if (json_is_string(w) && (rc = add_never(b, json_string_value(w))))
                goto out;
        }
    }
    static const char *const keys[SP_COUNT] = {
        [SP_CLS] = "cls_token", [SP_SEP] = "sep_token", [SP_PAD] = "pad_token",
        [SP_UNK] = "unk_token", [SP_MASK] = "mask_token",
    };
    for (int k = 0; k < SP_COUNT; k++) {
        const char *name = json_token_name(json_object_get(root, keys[k]));
        if (name && !b->names[k] && (rc = set_name(&b->names[k], name)))
            goto out;
    }
    rc = 0;
out:
    return json_close(root, rc, path, diag);
}

static int exists(const char *path, int want_dir)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    return want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Turn the gathered build into the immutable tokenizer. */
static int finish(build_t *b, const xf_tokenizer_opts_t *opts, const char *what,
                  xf_tokenizer_t **out, xf_diag_t *diag)
{
    int rc = -ENOMEM;
    uint32_t *never_off = NULL;
    xf_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t)
        goto nomem;
    /* never_split strings go into the arena (not the vocabulary): they may be absent from it. */
    if (b->n_never) {
        if (!(never_off = calloc((size_t)b->n_never, sizeof *never_off)))
            goto nomem;
        for (int i = 0; i < b->n_never; i++)
            if ((rc = build_str(b, b->never[i], strlen(b->never[i]), &never_off[i])))
                goto nomem;
    }
    /* Added tokens the vocabulary lacks become vocabulary entries (HF: ids past the model). */
    for (int i = 0; i < b->n_added; i++)
        if ((rc = build_add(b, b->added[i].s, strlen(b->added[i].s), b->added[i].id)))
            goto nomem;
    /* Ids may be sparse in tokenizer.json; refuse absurd gaps instead of allocating them. */
    if ((size_t)b->max_id >= 4 * b->n + 1024) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: ids up to %d for %zu tokens", what,
                         (int)b->max_id, b->n);
        goto fail;
    }
    t->n_ids = b->max_id + 1;
    t->id_off = malloc((size_t)t->n_ids * sizeof *t->id_off);
    t->id_len = malloc((size_t)t->n_ids * sizeof *t->id_len);
    uint32_t nslots = 16;
    while (nslots < 2 * b->n)
        nslots *= 2;
    t->slots = malloc((size_t)nslots * sizeof *t->slots);
    if (!t->id_off || !t->id_len || !t->slots)
        goto nomem;
    t->mask = nslots - 1;
    for (uint32_t i = 0; i < nslots; i++)
        t->slots[i].id = -1;
    for (int32_t i = 0; i < t->n_ids; i++) {
        t->id_off[i] = UINT32_MAX;
        t->id_len[i] = 0;
    }
    for (size_t k = 0; k < b->n; k++) {
        uint32_t off = b->e[k].off, len = b->e[k].len;
        int32_t id = b->e[k].id;
        if (t->id_off[id] == UINT32_MAX) {     /* two tokens with one id: the first names it */
            t->id_off[id] = off;
            t->id_len[id] = len;
        }
        if (len > t->max_tok_bytes)
            t->max_tok_bytes = len;
        const char *s = b->buf + off;
        uint32_t h = tok_hash(s, len);
        uint32_t i = h & t->mask;
        for (;; i = (i + 1) & t->mask) {
            tok_slot_t *sl = &t->slots[i];
            if (sl->id < 0) {
                *sl = (tok_slot_t){ .hash = h, .id = id, .off = off, .len = len };
                break;
            }
            if (sl->hash == h && sl->len == len && memcmp(b->buf + sl->off, s, len) == 0) {
                /* A duplicate token: vocab.txt duplicates take the later line, as HF's
                 * load_vocab (a dict) does; added tokens never override the model vocab. */
                if (k < b->n - (size_t)b->n_added)
                    sl->id = id;
                break;
            }
        }
    }
    t->strs = b->buf;
    t->strs_len = b->len;
    b->buf = NULL;

    /* settings: files, then options */
    t->lowercase = b->lowercase < 0 ? 1 : b->lowercase;
    int strip = b->strip;
    if (opts && opts->lowercase == 1)
        t->lowercase = 1;
    else if (opts && opts->lowercase == 2)
        t->lowercase = 0;
    if (opts && opts->strip_accents == 1)
        strip = 1;
    else if (opts && opts->strip_accents == 2)
        strip = 0;
    t->strip_accents = strip < 0 ? t->lowercase : strip;
    t->chinese = b->chinese < 0 ? 1 : b->chinese;
    if (opts && opts->no_chinese_split)
        t->chinese = 0;
    t->clean_text = b->clean < 0 ? 1 : b->clean;
    strcpy(t->prefix, b->prefix);
    t->prefix_len = (uint32_t)strlen(t->prefix);
    t->max_chars = b->max_chars;

    static const char *const defaults[SP_COUNT] = {
        [SP_CLS] = "[CLS]", [SP_SEP] = "[SEP]", [SP_PAD] = "[PAD]", [SP_UNK] = "[UNK]",
        [SP_MASK] = "[MASK]",
    };
    int32_t spid[SP_COUNT];
    for (int k = 0; k < SP_COUNT; k++) {
        const char *name = b->names[k] ? b->names[k] : defaults[k];
        spid[k] = vocab_find(t, name, strlen(name));
    }
    t->sp = (xf_special_ids_t){ .cls = spid[SP_CLS], .sep = spid[SP_SEP], .pad = spid[SP_PAD],
                                .unk = spid[SP_UNK], .mask = spid[SP_MASK] };
    if (t->sp.unk < 0) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: the vocabulary has no unknown token \"%s\"",
                         what, b->names[SP_UNK] ? b->names[SP_UNK] : defaults[SP_UNK]);
        goto fail;
    }

    /* Added tokens matched in raw text: tokenizer.json's list, else the special tokens. */
    int n_add = b->n_added ? b->n_added : SP_COUNT;
    t->added = calloc((size_t)n_add, sizeof *t->added);
    if (!t->added)
        goto nomem;
    for (int k = 0; k < n_add; k++) {
        const char *s = b->n_added ? b->added[k].s : (b->names[k] ? b->names[k] : defaults[k]);
        int32_t id = b->n_added ? b->added[k].id : spid[k];
        const tok_slot_t *sl = vocab_slot(t, s, strlen(s));
        if (id < 0 || !sl || sl->len == 0)
            continue;
        tok_added_t *a = &t->added[t->n_added++];
        *a = (tok_added_t){ .off = sl->off, .len = sl->len, .id = id,
                            .special = b->n_added ? b->added[k].special : 1 };
        unsigned char c0 = (unsigned char)t->strs[a->off];
        t->added_first[c0 >> 3] |= (uint8_t)(1u << (c0 & 7));
    }
    /* never_split words: their strings were appended to the arena before it moved to t. */
    if (b->n_never) {
        t->never = calloc((size_t)b->n_never, sizeof *t->never);
        if (!t->never)
            goto nomem;
        for (int k = 0; k < b->n_never; k++) {
            tok_never_t *nv = &t->never[t->n_never++];
            nv->off = never_off[k];
            nv->len = (uint32_t)strlen(t->strs + nv->off);
            nv->id = vocab_find(t, t->strs + nv->off, nv->len);
            if (nv->id < 0)
                nv->id = t->sp.unk;
        }
    }
    free(never_off);
    *out = t;
    return 0;
nomem:
    rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", what);
fail:
    free(never_off);
    xf_tokenizer_free(t);
    return rc;
}

int xf_tokenizer_load(const char *path, const xf_tokenizer_opts_t *opts, xf_tokenizer_t **out,
                      xf_diag_t *diag)
{
    if (!path || !out)
        return xf_diag_set(diag, -EINVAL, "xf_tokenizer_load: NULL argument");
    build_t b = { .max_id = -1, .lowercase = -1, .strip = -1, .chinese = -1, .clean = -1,
                  .prefix = "##", .max_chars = 100 };
    size_t plen = strlen(path);
    char *dir = malloc(plen + 32), *file = malloc(plen + 32), *cfg = malloc(plen + 32);
    int rc = -ENOMEM;
    if (!dir || !file || !cfg) {
        rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (exists(path, 1)) {
        strcpy(dir, path);
        while (strlen(dir) > 1 && dir[strlen(dir) - 1] == '/')
            dir[strlen(dir) - 1] = 0;
        xf_diag_t jd = { 0 };
        int have_json = 0;
        sprintf(file, "%s/tokenizer.json", dir);
        if (exists(file, 0)) {
            rc = load_tokenizer_json(&b, file, &jd);
            if (rc == 0)
                have_json = 1;
            else if (rc != XF_EUNSUPPORTED) {
                if (diag)
                    *diag = jd;
                goto out;
            }
            if (!have_json) {       /* a BPE/Unigram tokenizer.json: try vocab.txt */
                build_free(&b);
                b = (build_t){ .max_id = -1, .lowercase = -1, .strip = -1, .chinese = -1,
                               .clean = -1, .prefix = "##", .max_chars = 100 };
            }
        }
        if (!have_json) {
            sprintf(file, "%s/vocab.txt", dir);
            if (!exists(file, 0)) {
                if (jd.code == XF_EUNSUPPORTED) {
                    rc = xf_diag_set(diag, XF_EUNSUPPORTED, "%s (and no %s)", jd.msg, file);
                } else {
                    rc = xf_diag_set(diag, -ENOENT, "%s: no vocabulary (tried %s/tokenizer.json "
                                     "and %s/vocab.txt)", path, dir, dir);
                }
                goto out;
            }
            if ((rc = load_vocab_txt(&b, file, diag)))
                goto out;
        }
    } else if (exists(path, 0)) {
        strcpy(file, path);
        strcpy(dir, path);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir ? 1 : 0] = 0;
        else
            strcpy(dir, ".");
        rc = ends_with(path, ".json") ? load_tokenizer_json(&b, file, diag)
                                      : load_vocab_txt(&b, file, diag);
        if (rc)
            goto out;
    } else {
        rc = xf_diag_set(diag, -ENOENT, "%s: no such file or directory (want a model "
                         "directory, vocab.txt or tokenizer.json)", path);
        goto out;
    }
    sprintf(cfg, "%s/tokenizer_config.json", dir);
    if (exists(cfg, 0) && (rc = load_config_json(&b, cfg, diag)))
        goto out;
    if (opts && opts->never_split) {
        for (const char *const *w = opts->never_split; *w; w++) {
            if ((rc = add_never(&b, *w))) {
                rc = xf_diag_set(diag, rc, "never_split: out of memory");
                goto out;
            }
        }
    }
    rc = finish(&b, opts, file, out, diag);
out:
    build_free(&b);
    free(dir);
    free(file);
    free(cfg);
    if (rc == 0 && diag) {
        diag->code = 0;
        diag->msg[0] = 0;
    }
    return rc;
}
