/* The WordPiece tokenizer: BERT's BasicTokenizer + WordPiece exactly as Hugging Face runs them.
 * Owns encode, the queries and the vocabulary hash table's lookups; loading (vocab.txt, WordPiece
 * tokenizer.json, tokenizer_config.json) and building the table are tokenizer_load.c's, the
 * layout both share is tokenizer_internal.h's. Encode touches no shared mutable state, so any
 * number of threads may call it at once; it never prints (errors go to diag).
 *
 * Where HF's two implementations differ, this follows the fast (Rust `tokenizers`) one, which
 * AutoTokenizer loads: lowercasing is per character (no Greek final-sigma rule of Python's
 * str.lower()), and cased text is not NFC-composed first (recent transformers' slow
 * BasicTokenizer does that); pair truncation is TruncationStrategy::LongestFirst. Unicode data
 * is libutf8proc's (categories, simple lowercase + U+0130's full mapping, canonical
 * decomposition). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include <xformd/tokenizer.h>

#include "engine/diag.h"
#include "engine/tokenizer_internal.h"

/* ---------------------------------------------------------------------------------------- */
/* The vocabulary hash table (built by tokenizer_load.c)                                      */

/* FNV-1a: tokens are short, so a simple byte hash is fast enough. */
uint32_t xf_tokenizer_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

const tok_slot_t *xf_tokenizer_vocab_slot(const xf_tokenizer_t *t, const char *s, size_t len)
{
    uint32_t h = xf_tokenizer_hash(s, len);
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const tok_slot_t *sl = &t->slots[i];
        if (sl->id < 0)
            return NULL;
        if (sl->hash == h && sl->len == len && memcmp(t->strs + sl->off, s, len) == 0)
            return sl;
    }
}

int32_t xf_tokenizer_vocab_find(const xf_tokenizer_t *t, const char *s, size_t len)
{
    const tok_slot_t *sl = xf_tokenizer_vocab_slot(t, s, len);
    return sl ? sl->id : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8                                                                                      */

/* Offset of the first byte that is not valid UTF-8 (overlong forms, surrogates and code points
 * above U+10FFFF are invalid), or len when all of s is valid. */
size_t xf_tokenizer_utf8_check(const unsigned char *s, size_t len)
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
            id = xf_tokenizer_vocab_find(t, key, klen);
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
    size_t bad = xf_tokenizer_utf8_check((const unsigned char *)text, len);
    if (bad < len)
        return xf_diag_set(diag, XF_EFORMAT, "text: invalid UTF-8 at byte offset %zu", bad);
    if (pair) {
        bad = xf_tokenizer_utf8_check((const unsigned char *)pair, pair_len);
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
    if (pair && specials && tok->pair_unsupported)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "tokenizer.json: its post-processor does "
                           "not put a pair as [CLS] A [SEP] B [SEP]; text pairs are not "
                           "supported with this tokenizer");
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
    size_t bytes = words * sizeof(uint32_t) + XF_TOK_MAX_PREFIX + 4 * mc + 8;
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
        out->type_ids[i] = i < first ? 0 : tok->pair_type;
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
    return xf_tokenizer_vocab_find(tok, token, strlen(token));
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
