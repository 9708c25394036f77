/* Tests of the WordPiece tokenizer: every parity case file in ../shared/testdata/tokenizer
 * (exact id match with HF transformers/tokenizers and torchtext), then unit tests of pairs,
 * truncation, errors, special tokens, tokenizer.json loading and hostile files. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xformd/tokenizer.h>

#include "../helpers/xf_test.h"

#define UNCASED "vocab/bert-base-uncased-vocab.txt"
#define CASED "vocab/bert-base-cased-vocab.txt"

static xf_tokenizer_t *load_or_fail(const char *path, const xf_tokenizer_opts_t *o)
{
    xf_tokenizer_t *tok = NULL;
    xf_diag_t d = { 0 };
    int rc = xf_tokenizer_load(path, o, &tok, &d);
    if (rc)
        print_message("# load %s: %d %s\n", path, rc, d.msg);
    assert_int_equal(rc, 0);
    assert_non_null(tok);
    return tok;
}

/* Undo the TSV text escapes of tokenizer/README.md: \\ \t \n \r, nothing else. */
static size_t unescape(const char *s, size_t n, char *d)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[i + 1];
            char r = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == '\\' ? '\\' : 0;
            if (r) {
                d[j++] = r;
                i++;
                continue;
            }
        }
        d[j++] = s[i];
    }
    return j;
}

/* Encode every case of a TSV file and compare ids exactly; returns the number of cases. */
static int run_cases(const xf_tokenizer_t *tok, const char *rel, const xf_tok_opts_t *eo,
                     double *tok_per_s)
{
    char path[1024];
    if (!xf_testdata(path, sizeof path, rel)) {
        print_message("# SKIP: test data %s not found\n", rel);
        skip();
    }
    size_t len;
    char *data = xf_test_slurp(path, &len);
    assert_non_null(data);
    char *text = malloc(len + 1);
    int32_t *want = malloc((len + 1) * sizeof *want);
    assert_non_null(text);
    assert_non_null(want);
    xf_tokens_t out = { 0 };
    int n_cases = 0, n_bad = 0;
    long n_tokens = 0;
    double secs = 0;
    char *line = data;
    while (line < data + len) {
        char *eol = memchr(line, '\n', (size_t)(data + len - line));
        if (!eol)
            eol = data + len;
        char *tab = memchr(line, '\t', (size_t)(eol - line));
        assert_non_null(tab);
        size_t tlen = unescape(line, (size_t)(tab - line), text);
        int nw = 0;
        for (char *p = tab + 1; p < eol;) {
            char *end;
            long v = strtol(p, &end, 10);
            assert_true(end > p);
            want[nw++] = (int32_t)v;
            p = end;
            while (p < eol && *p == ' ')
                p++;
        }
        xf_diag_t d = { 0 };
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = xf_tokenizer_encode(tok, text, tlen, NULL, 0, eo, &out, &d);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        n_tokens += out.n;
        int ok = rc == 0 && out.n == nw && memcmp(out.ids, want, (size_t)nw * 4) == 0;
        if (!ok && n_bad++ < 5) {
            print_message("# %s line %d: rc %d (%s) got %d ids, want %d: %.*s\n", rel,
                          n_cases + 1, rc, d.msg, out.n, nw, (int)(tab - line), line);
            char buf[2048];
            size_t o = 0;
            for (int i = 0; i < out.n && o < sizeof buf - 16; i++)
                o += (size_t)snprintf(buf + o, sizeof buf - o, " %d", out.ids[i]);
            buf[o] = 0;
            print_message("#   got :%s\n", buf);
            o = 0;
            for (int i = 0; i < nw && o < sizeof buf - 16; i++)
                o += (size_t)snprintf(buf + o, sizeof buf - o, " %d", want[i]);
            buf[o] = 0;
            print_message("#   want:%s\n", buf);
        }
        n_cases++;
        line = eol + 1;
    }
    print_message("# %s: %d/%d cases match exactly\n", rel, n_cases - n_bad, n_cases);
    if (tok_per_s)
        *tok_per_s = secs > 0 ? (double)n_tokens / secs : 0;
    xf_tokens_deinit(&out);
    free(want);
    free(text);
    free(data);
    assert_int_equal(n_bad, 0);
    assert_true(n_cases > 0);
    return n_cases;
}

static xf_tokenizer_t *load_vocab(const char *rel, const xf_tokenizer_opts_t *o)
{
    char path[1024];
    if (!xf_testdata(path, sizeof path, rel)) {
        print_message("# SKIP: test data %s not found\n", rel);
        skip();
    }
    return load_or_fail(path, o);
}

/* ---- parity with the reference tokenizers ---------------------------------------------- */

static void test_llama_cpp_bge(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    const xf_tok_opts_t eo = { .no_special = 1 };
    assert_int_equal(run_cases(tok, "tokenizer/llama_cpp_bge/cases.tsv", &eo, NULL), 46);
    xf_tokenizer_free(tok);
}

static void test_pytorch_text(void **state)
{
    (void)state;
    /* torchtext splits typed special tokens like text: split_special. */
    const xf_tok_opts_t eo = { .no_special = 1, .split_special = 1 };
    static const char *const never[] = { "[UNK]", "[CLS]", NULL };
    const xf_tokenizer_opts_t uncased = { 0 }, uncased_ns = { .never_split = never };
    const xf_tokenizer_opts_t cased = { .lowercase = 2 };
    const xf_tokenizer_opts_t cased_ns = { .lowercase = 2, .never_split = never };
    struct { const char *vocab, *file; const xf_tokenizer_opts_t *o; } runs[] = {
        { UNCASED, "tokenizer/pytorch_text/cases.tsv", &uncased },
        { UNCASED, "tokenizer/pytorch_text/cases_uncased_never_split.tsv", &uncased_ns },
        { CASED, "tokenizer/pytorch_text/cases_cased.tsv", &cased },
        { CASED, "tokenizer/pytorch_text/cases_cased_never_split.tsv", &cased_ns },
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        xf_tokenizer_t *tok = load_vocab(runs[i].vocab, runs[i].o);
        assert_int_equal(run_cases(tok, runs[i].file, &eo, NULL), 7);
        xf_tokenizer_free(tok);
    }
}

static void test_swift_edge(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    const xf_tok_opts_t with_specials = { 0 }, raw = { .no_special = 1 };
    assert_int_equal(run_cases(tok, "tokenizer/swift_edge/cases.tsv", &with_specials, NULL),
                     18);
    assert_int_equal(run_cases(tok, "tokenizer/swift_edge/cases_long_french.tsv",
                               &with_specials, NULL), 1);
    assert_int_equal(run_cases(tok, "tokenizer/swift_edge/cases_unit_tests.tsv", &raw, NULL),
                     4);
    xf_tokenizer_free(tok);
}

static void test_swift_squad_sample(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    const xf_tok_opts_t raw = { .no_special = 1 };
    double tps = 0;
    assert_int_equal(run_cases(tok, "tokenizer/swift_squad_sample/cases.tsv", &raw, &tps),
                     2114);
    /* information only, never asserted (STYLE.md §9: no timing in make check) */
    print_message("# swift_squad_sample encode throughput: %.0f tokens/s\n", tps);
    xf_tokenizer_free(tok);
}

/* ---- unit tests ------------------------------------------------------------------------ */

static int32_t id_of(const xf_tokenizer_t *tok, const char *s)
{
    int32_t id = xf_tokenizer_id(tok, s);
    assert_true(id >= 0);
    return id;
}

static void test_vocab_queries(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    assert_int_equal(xf_tokenizer_vocab_size(tok), 30522);
    assert_int_equal(xf_tokenizer_id(tok, "hello"), 7592);
    assert_int_equal(xf_tokenizer_id(tok, "##33"), 22394);
    assert_int_equal(xf_tokenizer_id(tok, "no-such-token"), -1);
    assert_string_equal(xf_tokenizer_token(tok, 7592), "hello");
    assert_null(xf_tokenizer_token(tok, 30522));
    assert_null(xf_tokenizer_token(tok, -1));
    xf_special_ids_t sp;
    xf_tokenizer_specials(tok, &sp);
    assert_int_equal(sp.pad, 0);
    assert_int_equal(sp.unk, 100);
    assert_int_equal(sp.cls, 101);
    assert_int_equal(sp.sep, 102);
    assert_int_equal(sp.mask, 103);
    xf_tokenizer_free(tok);
    xf_tokenizer_free(NULL);
}

static void expect_ids(const xf_tokens_t *t, const int32_t *ids, const int32_t *types, int n)
{
    if (t->n != n) {
        print_message("# got %d ids:", t->n);
        for (int i = 0; i < t->n; i++)
            print_message(" %d", t->ids[i]);
        print_message("\n");
    }
    assert_int_equal(t->n, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(t->ids[i], ids[i]);
        assert_int_equal(t->type_ids[i], types[i]);
    }
}

static void test_pair_and_empty(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    const char *a = "Hello world", *b = "how are you?";
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), b, strlen(b), NULL, &t, &d), 0);
    const int32_t ids[] = { 101, 7592, 2088, 102, 2129, 2024, 2017, 1029, 102 };
    const int32_t ty[] = { 0, 0, 0, 0, 1, 1, 1, 1, 1 };
    expect_ids(&t, ids, ty, 9);
    /* empty text: [CLS] [SEP]; whitespace-only likewise */
    assert_int_equal(xf_tokenizer_encode(tok, "", 0, NULL, 0, NULL, &t, &d), 0);
    const int32_t e_ids[] = { 101, 102 }, e_ty[] = { 0, 0 };
    expect_ids(&t, e_ids, e_ty, 2);
    assert_int_equal(xf_tokenizer_encode(tok, NULL, 0, NULL, 0, NULL, &t, &d), 0);
    expect_ids(&t, e_ids, e_ty, 2);
    assert_int_equal(xf_tokenizer_encode(tok, " \t\n", 3, "", 0, NULL, &t, &d), 0);
    const int32_t p_ids[] = { 101, 102, 102 }, p_ty[] = { 0, 0, 1 };
    expect_ids(&t, p_ids, p_ty, 3);
    /* no_special pair: raw ids, type 1 for the pair */
    const xf_tok_opts_t raw = { .no_special = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), b, 3, &raw, &t, &d), 0);
    const int32_t r_ids[] = { 7592, 2088, 2129 }, r_ty[] = { 0, 0, 1 };
    expect_ids(&t, r_ids, r_ty, 3);
    xf_tokens_deinit(&t);
    assert_null(t.ids);
    xf_tokenizer_free(tok);
}

static void test_truncation(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    /* "a b c d e f g h i j": 10 one-token words; ids of a..j are 1037..1046 except some;
     * compare against encoding without limit instead of hard-coding them */
    const char *ten = "a b c d e f g h i j", *four = "k l m n";
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, NULL, &t, &d), 0);
    assert_int_equal(t.n, 12);
    int32_t full[12];
    memcpy(full, t.ids, sizeof full);
    assert_int_equal(xf_tokenizer_encode(tok, four, strlen(four), NULL, 0, NULL, &t, &d), 0);
    int32_t full4[6];
    memcpy(full4, t.ids, sizeof full4);

    /* single, truncate to 6: [CLS] a b c d [SEP] */
    xf_tok_opts_t o = { .max_len = 6, .truncate = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, &o, &t, &d), 0);
    assert_int_equal(t.n, 6);
    assert_memory_equal(t.ids, full, 5 * sizeof(int32_t));
    assert_int_equal(t.ids[5], 102);

    /* single, too long without truncate */
    o.truncate = 0;
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, &o, &t, &d),
                     XF_ETOOLONG);
    assert_int_equal(t.n, 0);
    assert_non_null(strstr(d.msg, "10 tokens"));
    assert_non_null(strstr(d.msg, "max_len is 6"));
    /* exactly fitting is fine */
    o.max_len = 12;
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, &o, &t, &d), 0);
    assert_int_equal(t.n, 12);

    /* pair 10 + 4, max_len 11 -> budget 8: the shorter (4) keeps all, the longer gets 4 */
    o = (xf_tok_opts_t){ .max_len = 11, .truncate = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), four, strlen(four), &o, &t, &d),
                     0);
    assert_int_equal(t.n, 11);
    assert_memory_equal(t.ids, full, 5 * sizeof(int32_t));
    assert_int_equal(t.ids[5], 102);
    assert_memory_equal(t.ids + 6, full4 + 1, 4 * sizeof(int32_t));
    assert_int_equal(t.ids[10], 102);
    assert_int_equal(t.type_ids[5], 0);
    assert_int_equal(t.type_ids[6], 1);
    assert_int_equal(t.type_ids[10], 1);

    /* pair 10 + 4, max_len 8 -> budget 5: both cut, 2 (shorter) + 3 (longer) as HF's
     * LongestFirst gives n1 = 5/2 to the shorter, n1 + 5%2 to the longer */
    o.max_len = 8;
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), four, strlen(four), &o, &t, &d),
                     0);
    assert_int_equal(t.n, 8);
    assert_memory_equal(t.ids, full, 4 * sizeof(int32_t));
    assert_int_equal(t.ids[4], 102);
    assert_memory_equal(t.ids + 5, full4 + 1, 2 * sizeof(int32_t));
    assert_int_equal(t.ids[7], 102);

    /* pair too long without truncate: both lengths in the message */
    o.truncate = 0;
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), four, strlen(four), &o, &t, &d),
                     XF_ETOOLONG);
    assert_non_null(strstr(d.msg, "10 + 4 tokens"));
    /* left truncation keeps the tail, specials in place: [CLS] g h i j [SEP] */
    o = (xf_tok_opts_t){ .max_len = 6, .truncate = 1, .truncate_left = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, &o, &t, &d), 0);
    assert_int_equal(t.n, 6);
    assert_int_equal(t.ids[0], full[0]);
    assert_memory_equal(t.ids + 1, full + 7, 4 * sizeof(int32_t));
    assert_int_equal(t.ids[5], 102);
    /* pair 10 + 4 left-cut to budget 5: a keeps its last 3 (h i j), b its last 2 (m n) */
    o.max_len = 8;
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), four, strlen(four), &o, &t, &d),
                     0);
    assert_int_equal(t.n, 8);
    assert_int_equal(t.ids[0], full[0]);
    assert_memory_equal(t.ids + 1, full + 8, 3 * sizeof(int32_t));
    assert_int_equal(t.ids[4], 102);
    assert_memory_equal(t.ids + 5, full4 + 3, 2 * sizeof(int32_t));
    assert_int_equal(t.ids[7], 102);
    assert_int_equal(t.type_ids[4], 0);
    assert_int_equal(t.type_ids[5], 1);
    /* without specials: just the tail */
    o = (xf_tok_opts_t){ .no_special = 1, .max_len = 3, .truncate = 1, .truncate_left = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), NULL, 0, &o, &t, &d), 0);
    assert_int_equal(t.n, 3);
    assert_memory_equal(t.ids, full + 8, 3 * sizeof(int32_t));
    /* max_len that cannot hold the specials */
    o = (xf_tok_opts_t){ .max_len = 2, .truncate = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, ten, strlen(ten), four, strlen(four), &o, &t, &d),
                     XF_EPARAM);
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
}

/* The lengths HF tokenizers' own LongestFirst unit test expects for inputs of 0, 2, 4 and 8
 * tokens with max_length 7 (max_len 10 here: 3 of it are [CLS] [SEP] [SEP]). */
static void test_longest_first_table(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    static const char *const txt[4] = { "", "a a", "a a a a", "a a a a a a a a" };
    static const int want[4][4][2] = {
        { { 0, 0 }, { 0, 2 }, { 0, 4 }, { 0, 7 } },
        { { 2, 0 }, { 2, 2 }, { 2, 4 }, { 2, 5 } },
        { { 4, 0 }, { 4, 2 }, { 3, 4 }, { 3, 4 } },
        { { 7, 0 }, { 5, 2 }, { 4, 3 }, { 3, 4 } },
    };
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    const xf_tok_opts_t o = { .max_len = 10, .truncate = 1 };
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            assert_int_equal(xf_tokenizer_encode(tok, txt[i], strlen(txt[i]), txt[j],
                                                 strlen(txt[j]), &o, &t, &d), 0);
            int n0 = 0;
            for (int k = 0; k < t.n; k++)
                n0 += t.type_ids[k] == 0;
            if (n0 - 2 != want[i][j][0] || t.n - n0 - 1 != want[i][j][1])
                print_message("# %d+%d tokens -> %d+%d, want %d+%d\n", 2 * i, 2 * j, n0 - 2,
                              t.n - n0 - 1, want[i][j][0], want[i][j][1]);
            assert_int_equal(n0 - 2, want[i][j][0]);
            assert_int_equal(t.n - n0 - 1, want[i][j][1]);
        }
    }
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    static const char bad[] = "hello \xC3\x28 world";        /* 0xC3 then not a continuation */
    assert_int_equal(xf_tokenizer_encode(tok, bad, sizeof bad - 1, NULL, 0, NULL, &t, &d),
                     XF_EFORMAT);
    assert_int_equal(t.n, 0);
    assert_non_null(strstr(d.msg, "byte offset 6"));
    static const char overlong[] = "ab\xC0\xAF";               /* overlong '/' */
    assert_int_equal(xf_tokenizer_encode(tok, overlong, 4, NULL, 0, NULL, &t, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "byte offset 2"));
    static const char surrogate[] = "x\xED\xA0\x80";           /* U+D800 */
    assert_int_equal(xf_tokenizer_encode(tok, surrogate, 4, NULL, 0, NULL, &t, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "byte offset 1"));
    static const char cut[] = "abc\xE4\xB8";                   /* truncated 3-byte sequence */
    assert_int_equal(xf_tokenizer_encode(tok, "ok", 2, cut, 5, NULL, &t, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "pair"));
    assert_non_null(strstr(d.msg, "byte offset 3"));
    /* a NUL byte is valid UTF-8 and dropped by cleaning */
    assert_int_equal(xf_tokenizer_encode(tok, "hel\0lo", 6, NULL, 0, NULL, &t, &d), 0);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.ids[1], 7592);
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
}

static void test_split_special(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    const char *s = "a[SEP]b [MASK] [unk]";
    xf_tok_opts_t o = { .no_special = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, &o, &t, &d), 0);
    /* typed specials map to their ids (case-sensitive, anywhere, as HF); [unk] does not */
    int32_t a = id_of(tok, "a"), b = id_of(tok, "b"), lb = id_of(tok, "["),
            rb = id_of(tok, "]"), un = id_of(tok, "un"), k = id_of(tok, "##k");
    const int32_t want[] = { a, 102, b, 103, lb, un, k, rb };
    const int32_t zero[8] = { 0 };
    expect_ids(&t, want, zero, 8);
    o.split_special = 1;
    assert_int_equal(xf_tokenizer_encode(tok, "[SEP]", 5, NULL, 0, &o, &t, &d), 0);
    int32_t sep = id_of(tok, "sep");
    const int32_t want2[] = { lb, sep, rb };
    expect_ids(&t, want2, zero, 3);
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
}

/* ---- offsets (TEI /tokenize) ----------------------------------------------------------- */

/* Each token's [start, end) in its text, as Hugging Face's Encoding offsets: the original
 * bytes a piece came from (before lowercasing and accent stripping), -1 for [CLS]/[SEP]. */
static void expect_offsets(const xf_tokens_t *t, const int32_t *want, int n)
{
    assert_int_equal(t->n, n);
    assert_non_null(t->offsets);
    for (int i = 0; i < 2 * n; i++)
        if (t->offsets[i] != want[i])
            fail_msg("token %d: offsets %d,%d, want %d,%d", i / 2, t->offsets[i & ~1],
                     t->offsets[i | 1], want[i & ~1], want[i | 1]);
}

static void test_offsets(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    /* "é" is two bytes; "tokenization" is token ##ization; CJK characters are one token each
     * (three bytes); a typed [SEP] spans its match. */
    const char *s = "H\xc3\xa9llo, WORLD! tokenization \xe4\xb8\xad\xe6\x96\x87[SEP]";
    xf_tok_opts_t o = { .offsets = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, &o, &t, &d), 0);
    const int32_t want[] = { -1, -1, 0, 6, 6, 7, 8, 13, 13, 14, 15, 20, 20, 27, 28, 31, 31, 34,
                             34, 39, -1, -1 };
    expect_offsets(&t, want, 11);
    assert_int_equal(t.ids[1], id_of(tok, "hello"));
    assert_int_equal(t.ids[6], id_of(tok, "##ization"));
    assert_int_equal(t.ids[9], 102);
    /* ids are the same with or without offsets */
    xf_tokens_t plain = { 0 };
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, NULL, &plain, &d), 0);
    assert_int_equal(plain.n, t.n);
    assert_memory_equal(plain.ids, t.ids, (size_t)t.n * sizeof *t.ids);
    assert_null(plain.offsets);
    /* a pair: the pair's offsets are in the pair; truncation keeps each kept token's offsets
     * (right: the first ones, left: the last ones) */
    const char *a = "one two three four", *b = "five six";
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), b, strlen(b), &o, &t, &d), 0);
    const int32_t wp[] = { -1, -1, 0, 3, 4, 7, 8, 13, 14, 18, -1, -1, 0, 4, 5, 8, -1, -1 };
    expect_offsets(&t, wp, 9);
    o.max_len = 6;
    o.truncate = 1;
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), b, strlen(b), &o, &t, &d), 0);
    const int32_t wr[] = { -1, -1, 0, 3, 4, 7, -1, -1, 0, 4, -1, -1 };
    expect_offsets(&t, wr, 6);
    o.truncate_left = 1;
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), b, strlen(b), &o, &t, &d), 0);
    const int32_t wl[] = { -1, -1, 8, 13, 14, 18, -1, -1, 5, 8, -1, -1 };
    expect_offsets(&t, wl, 6);
    o.max_len = 5;
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), NULL, 0, &o, &t, &d), 0);
    const int32_t ws[] = { -1, -1, 4, 7, 8, 13, 14, 18, -1, -1 };
    expect_offsets(&t, ws, 5);
    o.truncate_left = 0;
    assert_int_equal(xf_tokenizer_encode(tok, a, strlen(a), NULL, 0, &o, &t, &d), 0);
    const int32_t wt[] = { -1, -1, 0, 3, 4, 7, 8, 13, -1, -1 };
    expect_offsets(&t, wt, 5);
    xf_tokens_deinit(&plain);
    xf_tokens_deinit(&t);
    assert_null(t.offsets);
    xf_tokenizer_free(tok);
}

/* Over the SQuAD questions: the ids do not change with offsets on, every span lies on
 * character boundaries inside the text in order, and where the token is ASCII its text is the
 * span lowercased (the "##" of a continuation dropped). */
static void test_offsets_corpus(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    char path[1024];
    const char *rel = "tokenizer/swift_squad_sample/cases.tsv";
    if (!xf_testdata(path, sizeof path, rel)) {
        print_message("# SKIP: test data %s not found\n", rel);
        skip();
    }
    size_t len;
    char *data = xf_test_slurp(path, &len);
    assert_non_null(data);
    char *text = malloc(len + 1);
    assert_non_null(text);
    xf_tokens_t t = { 0 }, plain = { 0 };
    xf_diag_t d = { 0 };
    const xf_tok_opts_t o = { .offsets = 1 };
    int n_cases = 0, n_checked = 0;
    for (char *line = data; line < data + len;) {
        char *eol = memchr(line, '\n', (size_t)(data + len - line));
        eol = eol ? eol : data + len;
        char *tab = memchr(line, '\t', (size_t)(eol - line));
        assert_non_null(tab);
        size_t n = unescape(line, (size_t)(tab - line), text);
        assert_int_equal(xf_tokenizer_encode(tok, text, n, NULL, 0, &o, &t, &d), 0);
        assert_int_equal(xf_tokenizer_encode(tok, text, n, NULL, 0, NULL, &plain, &d), 0);
        assert_int_equal(t.n, plain.n);
        assert_memory_equal(t.ids, plain.ids, (size_t)t.n * sizeof *t.ids);
        assert_int_equal(t.offsets[0], -1);
        assert_int_equal(t.offsets[2 * t.n - 1], -1);
        int32_t prev = 0;
        for (int32_t k = 1; k + 1 < t.n; k++) {
            int32_t b = t.offsets[2 * k], e = t.offsets[2 * k + 1];
            if (b < prev || e <= b || (size_t)e > n || (text[b] & 0xC0) == 0x80 ||
                ((size_t)e < n && (text[e] & 0xC0) == 0x80))
                fail_msg("line %d token %d: span %d,%d of %zu bytes", n_cases + 1, k, b, e, n);
            prev = b;
            const char *name = xf_tokenizer_token(tok, t.ids[k]);
            if (t.ids[k] == 100 || !name)
                continue;
            if (!strncmp(name, "##", 2))
                name += 2;
            int ascii = 1;
            for (int32_t q = b; q < e; q++)
                ascii &= (unsigned char)text[q] < 0x80;
            if (!ascii)
                continue;
            char low[256];
            size_t m = (size_t)(e - b) < sizeof low - 1 ? (size_t)(e - b) : sizeof low - 1;
            for (size_t q = 0; q < m; q++)
                low[q] = (char)(text[b + q] >= 'A' && text[b + q] <= 'Z' ? text[b + q] + 32
                                                                       : text[b + q]);
            low[m] = 0;
            if (strcmp(low, name) != 0)
                fail_msg("line %d token %d '%s': span %d,%d reads '%s'", n_cases + 1, k, name, b,
                         e, low);
            n_checked++;
        }
        n_cases++;
        line = eol + 1;
    }
    print_message("# offsets: %d questions, %d token spans read back\n", n_cases, n_checked);
    assert_int_equal(n_cases, 2114);
    assert_true(n_checked > 10000);
    xf_tokens_deinit(&t);
    xf_tokens_deinit(&plain);
    free(text);
    free(data);
    xf_tokenizer_free(tok);
}

/* Long words, the 100-character rule and reuse of the out buffer across calls. */
static void test_long_words(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    const xf_tok_opts_t raw = { .no_special = 1 };
    char w[202];
    memset(w, 'a', sizeof w);
    /* 100 characters: WordPiece runs (not [UNK]); 101: [UNK] */
    assert_int_equal(xf_tokenizer_encode(tok, w, 100, NULL, 0, &raw, &t, &d), 0);
    assert_true(t.n > 1);
    assert_int_not_equal(t.ids[0], 100);
    assert_int_equal(xf_tokenizer_encode(tok, w, 101, NULL, 0, &raw, &t, &d), 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ids[0], 100);
    /* 1000 punctuation marks: 1000 tokens */
    size_t n = 1000;
    char *p = malloc(n);
    assert_non_null(p);
    memset(p, '!', n);
    assert_int_equal(xf_tokenizer_encode(tok, p, n, NULL, 0, &raw, &t, &d), 0);
    assert_int_equal(t.n, 1000);
    assert_int_equal(t.ids[999], 999);
    /* truncation stops early but returns exactly max_len */
    const xf_tok_opts_t tr = { .max_len = 16, .truncate = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, p, n, NULL, 0, &tr, &t, &d), 0);
    assert_int_equal(t.n, 16);
    assert_int_equal(t.ids[15], 102);
    assert_int_equal(t.ids[14], 999);
    /* the limit falls inside a word whose tail matches nothing: the kept tokens are still the
     * start of the full encoding ("hello" + U+2603 is one [UNK], not "hello") */
    const char *snow = "a hello\xe2\x98\x83 b";
    assert_int_equal(xf_tokenizer_encode(tok, snow, strlen(snow), NULL, 0, &raw, &t, &d), 0);
    const int32_t full[] = { id_of(tok, "a"), 100, id_of(tok, "b") }, zero[3] = { 0 };
    expect_ids(&t, full, zero, 3);
    const xf_tok_opts_t tr2 = { .no_special = 1, .max_len = 2, .truncate = 1 };
    assert_int_equal(xf_tokenizer_encode(tok, snow, strlen(snow), NULL, 0, &tr2, &t, &d), 0);
    expect_ids(&t, full, zero, 2);
    free(p);
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
}

/* Many threads encoding with one tokenizer get what one thread gets (encode is const). */
#define MT_THREADS 4
#define MT_TEXTS 4
static const char *const mt_texts[MT_TEXTS] = {
    "Hello, y'all! How are you \xf0\x9f\x98\x81 ?\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8" "apple",
    "Avdija Vr\xc5\xa1" "ajevi\xc4\x87 \xc3\xae" "n [MASK] unaffable",
    "  \tHeLLo!how  \n Are yoU? [UNK]",
    "333333333 w048 7tuijk dsdfhu \xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe",
};

typedef struct mt_arg {
    const xf_tokenizer_t *tok;
    const xf_tokens_t *want;
    int mismatches;
} mt_arg_t;

static void *mt_worker(void *p)
{
    mt_arg_t *a = p;
    xf_tokens_t t = { 0 };
    for (int r = 0; r < 500; r++) {
        int k = r % MT_TEXTS;
        const char *b = mt_texts[(k + 1) % MT_TEXTS];
        int rc = xf_tokenizer_encode(a->tok, mt_texts[k], strlen(mt_texts[k]), b, strlen(b),
                                     NULL, &t, NULL);
        if (rc || t.n != a->want[k].n ||
            memcmp(t.ids, a->want[k].ids, (size_t)t.n * sizeof(int32_t)) != 0 ||
            memcmp(t.type_ids, a->want[k].type_ids, (size_t)t.n * sizeof(int32_t)) != 0)
            a->mismatches++;
    }
    xf_tokens_deinit(&t);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    xf_tokenizer_t *tok = load_vocab(UNCASED, NULL);
    xf_tokens_t want[MT_TEXTS] = { { 0 } };
    for (int k = 0; k < MT_TEXTS; k++) {
        const char *b = mt_texts[(k + 1) % MT_TEXTS];
        assert_int_equal(xf_tokenizer_encode(tok, mt_texts[k], strlen(mt_texts[k]), b,
                                             strlen(b), NULL, &want[k], NULL), 0);
        assert_true(want[k].n > 4);
    }
    pthread_t th[MT_THREADS];
    mt_arg_t args[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++) {
        args[i] = (mt_arg_t){ .tok = tok, .want = want };
        assert_int_equal(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
    }
    int bad = 0;
    for (int i = 0; i < MT_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        bad += args[i].mismatches;
    }
    assert_int_equal(bad, 0);
    for (int k = 0; k < MT_TEXTS; k++)
        xf_tokens_deinit(&want[k]);
    xf_tokenizer_free(tok);
}

/* ---- loading --------------------------------------------------------------------------- */

static const char tiny_json[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":0,\"content\":\"[PAD]\",\"special\":true},"
    "{\"id\":1,\"content\":\"[UNK]\",\"special\":true},"
    "{\"id\":2,\"content\":\"[CLS]\",\"special\":true},"
    "{\"id\":3,\"content\":\"[SEP]\",\"special\":true},"
    "{\"id\":4,\"content\":\"[MASK]\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,"
    "\"handle_chinese_chars\":true,\"strip_accents\":null,\"lowercase\":true},"
    "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
    "\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"[SEP]\",3],\"cls\":[\"[CLS]\",2]},"
    "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":"
    "\"@@\",\"max_input_chars_per_word\":5,\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,"
    "\"[SEP]\":3,\"[MASK]\":4,\"play\":5,\"@@ing\":6,\"!\":7,\"cafe\":8,\"\xe4\xb8\xad\":9}}}";

static void test_tokenizer_json(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_json"));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(xf_test_write_file(path, tiny_json, sizeof tiny_json - 1), 0);
    xf_tokenizer_t *tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_vocab_size(tok), 10);
    xf_special_ids_t sp;
    xf_tokenizer_specials(tok, &sp);
    assert_int_equal(sp.cls, 2);
    assert_int_equal(sp.sep, 3);
    assert_int_equal(sp.unk, 1);
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    /* lowercase + accent strip from the normalizer, "@@" prefix, 5-char word limit
     * ("playing" has 7 chars -> [UNK]), CJK split, typed [MASK] */
    const char *s = "PLAYing! Café\xe4\xb8\xad[MASK] play";
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, NULL, &t, &d), 0);
    const int32_t ids[] = { 2, 1, 7, 8, 9, 4, 5, 3 };
    const int32_t ty[8] = { 0 };
    expect_ids(&t, ids, ty, 8);
    xf_tokenizer_free(tok);

    /* the same file by path, with options forcing cased: "Café" no longer matches */
    tok = load_or_fail(path, &(xf_tokenizer_opts_t){ .lowercase = 2 });
    assert_int_equal(xf_tokenizer_encode(tok, "Caf\xc3\xa9 play", 10, NULL, 0, NULL, &t, &d), 0);
    const int32_t ids2[] = { 2, 1, 5, 3 };
    expect_ids(&t, ids2, ty, 4);
    xf_tokenizer_free(tok);

    /* a Sequence normalizer: steps accumulate (BertNormalizer without lowercase after
     * Lowercase still lowercases), StripAccents strips */
    static const char seq[] = "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
        "{\"type\":\"NFD\"},{\"type\":\"Lowercase\"},{\"type\":\"StripAccents\"},"
        "{\"type\":\"BertNormalizer\",\"lowercase\":false}]},\"model\":{\"type\":"
        "\"WordPiece\",\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"cafe\":3,"
        "\"hel\":4,\"##lo\":5}}}";
    snprintf(path, sizeof path, "%s/seq.json", dir);
    assert_int_equal(xf_test_write_file(path, seq, sizeof seq - 1), 0);
    tok = load_or_fail(path, NULL);
    s = "CAF\xc3\x89 Hello";
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, NULL, &t, &d), 0);
    const int32_t ids4[] = { 1, 3, 4, 5, 2 };
    expect_ids(&t, ids4, ty, 5);
    xf_tokenizer_free(tok);

    /* tokenizer_config.json overrides the normalizer: do_lower_case false */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char cfg[] = "{\"do_lower_case\": false, \"never_split\": [\"PLAYing\"]}";
    assert_int_equal(xf_test_write_file(path, cfg, sizeof cfg - 1), 0);
    tok = load_or_fail(dir, NULL);
    /* never_split word absent from vocab: [UNK]; accents follow the config's lowercase (off),
     * as HF rebuilds the BertNormalizer, so "Café" stays unknown */
    s = "play PLAYing Caf\xc3\xa9";
    assert_int_equal(xf_tokenizer_encode(tok, s, strlen(s), NULL, 0, NULL, &t, &d), 0);
    const int32_t ids3[] = { 2, 5, 1, 1, 3 };
    expect_ids(&t, ids3, ty, 5);
    xf_tokenizer_free(tok);

    /* malformed config: XF_EFORMAT naming the file */
    assert_int_equal(xf_test_write_file(path, "{\"do_lower_case\": tru", 21), 0);
    tok = NULL;
    assert_int_equal(xf_tokenizer_load(dir, NULL, &tok, &d), XF_EFORMAT);
    assert_null(tok);
    assert_non_null(strstr(d.msg, "tokenizer_config.json"));
    xf_tokens_deinit(&t);
    xf_test_rmtree(dir);
}

/* tokenizer.json with the given post_processor (JSON text) over a small WordPiece vocabulary
 * whose specials are <s> (2) and </s> (3), written to dir/tokenizer.json. */
static void write_pp(const char *dir, const char *pp)
{
    char path[1100], *j;
    int n = asprintf(&j, "{\"post_processor\":%s,\"model\":{\"type\":\"WordPiece\","
                     "\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"<s>\":2,\"</s>\":3,\"[SEP]\":4,"
                     "\"a\":5,\"b\":6}}}", pp);
    assert_true(n > 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(xf_test_write_file(path, j, (size_t)n), 0);
    free(j);
}

#define TP_S(id, ty) "{\"SpecialToken\":{\"id\":\"" id "\",\"type_id\":" #ty "}}"
#define TP_Q(id, ty) "{\"Sequence\":{\"id\":\"" id "\",\"type_id\":" #ty "}}"

/* The post-processor decides the special tokens and the pair layout (tokenizers and TEI
 * follow it): TemplateProcessing's tokens and B's type id are used; a single template that
 * is not "X $A Y" is refused; a pair template of another shape refuses pairs only. */
static void test_post_processor(void **state)
{
    (void)state;
    char dir[1024];
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    xf_tokenizer_t *tok;
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_pp"));

    /* <s> A </s> / <s> A </s> B </s> with type 0 throughout (as XLM-R-style templates) */
    write_pp(dir, "{\"type\":\"TemplateProcessing\",\"single\":[" TP_S("<s>", 0) ","
             TP_Q("A", 0) "," TP_S("</s>", 0) "],\"pair\":[" TP_S("<s>", 0) "," TP_Q("A", 0)
             "," TP_S("</s>", 0) "," TP_Q("B", 0) "," TP_S("</s>", 0) "],\"special_tokens\":{"
             "\"<s>\":{\"id\":\"<s>\",\"ids\":[2],\"tokens\":[\"<s>\"]},"
             "\"</s>\":{\"id\":\"</s>\",\"ids\":[3],\"tokens\":[\"</s>\"]}}}");
    tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_encode(tok, "a", 1, "b", 1, NULL, &t, &d), 0);
    {
        const int32_t ids[] = { 2, 5, 3, 6, 3 }, ty[5] = { 0 };
        expect_ids(&t, ids, ty, 5);
    }
    xf_tokenizer_free(tok);

    /* the BERT template, its specials named through special_tokens' "tokens" */
    write_pp(dir, "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"TemplateProcessing\","
             "\"single\":[" TP_S("C", 0) "," TP_Q("A", 0) "," TP_S("S", 0) "],\"pair\":["
             TP_S("C", 0) "," TP_Q("A", 0) "," TP_S("S", 0) "," TP_Q("B", 1) "," TP_S("S", 1)
             "],\"special_tokens\":{\"C\":{\"id\":\"C\",\"ids\":[1],\"tokens\":[\"[CLS]\"]},"
             "\"S\":{\"id\":\"S\",\"ids\":[4],\"tokens\":[\"[SEP]\"]}}}]}");
    tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_encode(tok, "a", 1, "b", 1, NULL, &t, &d), 0);
    {
        const int32_t ids[] = { 1, 5, 4, 6, 4 }, ty[] = { 0, 0, 0, 1, 1 };
        expect_ids(&t, ids, ty, 5);
    }
    xf_tokenizer_free(tok);

    /* RoBERTa's pair layout (<s> A </s> </s> B </s>): single texts encode, pairs are refused */
    write_pp(dir, "{\"type\":\"TemplateProcessing\",\"single\":[" TP_S("<s>", 0) ","
             TP_Q("A", 0) "," TP_S("</s>", 0) "],\"pair\":[" TP_S("<s>", 0) "," TP_Q("A", 0)
             "," TP_S("</s>", 0) "," TP_S("</s>", 0) "," TP_Q("B", 0) "," TP_S("</s>", 0)
             "]}");
    tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_encode(tok, "a b", 3, NULL, 0, NULL, &t, &d), 0);
    {
        const int32_t ids[] = { 2, 5, 6, 3 }, ty[4] = { 0 };
        expect_ids(&t, ids, ty, 4);
    }
    assert_int_equal(xf_tokenizer_encode(tok, "a", 1, "b", 1, NULL, &t, &d), XF_EUNSUPPORTED);
    assert_non_null(strstr(d.msg, "pair"));
    xf_tokenizer_free(tok);
    write_pp(dir, "{\"type\":\"RobertaProcessing\",\"sep\":[\"</s>\",3],\"cls\":[\"<s>\",2]}");
    tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_encode(tok, "a", 1, "b", 1, NULL, &t, &d), XF_EUNSUPPORTED);
    xf_tokenizer_free(tok);

    /* single templates xformd cannot follow: refused at load, naming the post_processor */
    static const char *const bad[] = {
        "{\"type\":\"TemplateProcessing\",\"single\":[" TP_Q("A", 0) "," TP_S("[SEP]", 0) "]}",
        "{\"type\":\"TemplateProcessing\",\"single\":[" TP_Q("A", 0) "]}",
        "{\"type\":\"TemplateProcessing\",\"single\":[" TP_S("[CLS]", 0) "," TP_Q("A", 1) ","
        TP_S("[SEP]", 0) "]}",
        "{\"type\":\"TemplateProcessing\",\"single\":[" TP_S("X", 0) "," TP_Q("A", 0) ","
        TP_S("[SEP]", 0) "],\"special_tokens\":{\"X\":{\"id\":\"X\",\"ids\":[1,2],"
        "\"tokens\":[\"[CLS]\",\"<s>\"]}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_pp(dir, bad[i]);
        tok = NULL;
        assert_int_equal(xf_tokenizer_load(dir, NULL, &tok, &d), XF_EUNSUPPORTED);
        assert_null(tok);
        assert_non_null(strstr(d.msg, "post_processor"));
    }
    xf_tokens_deinit(&t);
    xf_test_rmtree(dir);
}

/* The normalizer and pre-tokenizer of a WordPiece tokenizer.json: the ones that split and
 * change text as BERT's do load; others are refused (not warned about and ignored: WordPiece
 * would see other words), even with a vocab.txt beside (it would tokenize otherwise). */
static void test_pipeline_refused(void **state)
{
    (void)state;
    static const char vocab[] = "{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"a\":3,\"b\":4,\",\":5,"
                                "\"...\":6,\".\":7}";
    static const struct { const char *fields; int ok; const char *what; } cases[] = {
        { "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}", 1, NULL },
        { "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
          "\"WhitespaceSplit\"},{\"type\":\"Punctuation\",\"behavior\":\"Isolated\"}]}", 1, NULL },
        { "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\","
          "\"strip_left\":true,\"strip_right\":true},{\"type\":\"BertNormalizer\"}]}", 1, NULL },
        { "\"pre_tokenizer\":{\"type\":\"Whitespace\"}", 0, "pre_tokenizer" },
        { "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
          "\"WhitespaceSplit\"},{\"type\":\"Punctuation\",\"behavior\":\"Contiguous\"}]}", 0,
          "pre_tokenizer" },
        { "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
          "\"BertPreTokenizer\"},{\"type\":\"Digits\",\"individual_digits\":true}]}", 0,
          "Sequence" },
        { "\"normalizer\":{\"type\":\"NFKC\"}", 0, "NFKC" },
        { "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"BertNormalizer\"},"
          "{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":\"b\"}]}", 0,
          "Replace" },
    };
    char dir[1024], path[1100], *j;
    xf_tokens_t t = { 0 };
    xf_diag_t d = { 0 };
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_pipe"));
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    assert_int_equal(xf_test_write_file(path, "[UNK]\n[CLS]\n[SEP]\na\n", 20), 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int n = asprintf(&j, "{%s,\"model\":{\"type\":\"WordPiece\",\"vocab\":%s}}",
                         cases[i].fields, vocab);
        assert_true(n > 0);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        assert_int_equal(xf_test_write_file(path, j, (size_t)n), 0);
        free(j);
        xf_tokenizer_t *tok = NULL;
        int rc = xf_tokenizer_load(dir, NULL, &tok, &d);
        if (!cases[i].ok) {
            if (rc != XF_EUNSUPPORTED || !strstr(d.msg, cases[i].what))
                fail_msg("case %zu: rc %d \"%s\", want XF_EUNSUPPORTED naming %s", i, rc, d.msg,
                         cases[i].what);
            assert_null(tok);
            continue;
        }
        if (rc != 0)
            fail_msg("case %zu: rc %d %s", i, rc, d.msg);
        /* "a,b...": every punctuation character alone */
        assert_int_equal(xf_tokenizer_encode(tok, " a,b... ", 8, NULL, 0, NULL, &t, &d), 0);
        const int32_t ids[] = { 1, 3, 5, 4, 7, 7, 7, 2 }, ty[8] = { 0 };
        expect_ids(&t, ids, ty, 8);
        xf_tokenizer_free(tok);
    }
    xf_tokens_deinit(&t);
    xf_test_rmtree(dir);
}

static void test_bpe_refused(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_bpe"));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const char bpe[] = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    assert_int_equal(xf_test_write_file(path, bpe, sizeof bpe - 1), 0);
    xf_tokenizer_t *tok = NULL;
    xf_diag_t d = { 0 };
    assert_int_equal(xf_tokenizer_load(dir, NULL, &tok, &d), XF_EUNSUPPORTED);
    assert_null(tok);
    assert_non_null(strstr(d.msg, "BPE"));
    assert_int_equal(xf_tokenizer_load(path, NULL, &tok, &d), XF_EUNSUPPORTED);
    /* with a vocab.txt beside it, the directory loads from vocab.txt */
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    const char v[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\n";
    assert_int_equal(xf_test_write_file(path, v, sizeof v - 1), 0);
    tok = load_or_fail(dir, NULL);
    assert_int_equal(xf_tokenizer_vocab_size(tok), 5);
    xf_tokenizer_free(tok);
    /* malformed tokenizer.json: position in the message */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(xf_test_write_file(path, "{\"model\": [1,", 13), 0);
    assert_int_equal(xf_tokenizer_load(dir, NULL, &tok, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "tokenizer.json:1:"));
    xf_test_rmtree(dir);
}

static void test_missing(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_missing"));
    xf_tokenizer_t *tok = NULL;
    xf_diag_t d = { 0 };
    assert_int_equal(xf_tokenizer_load(dir, NULL, &tok, &d), -ENOENT);
    assert_null(tok);
    assert_non_null(strstr(d.msg, "vocab.txt"));
    assert_non_null(strstr(d.msg, "tokenizer.json"));
    snprintf(path, sizeof path, "%s/nope/vocab.txt", dir);
    assert_int_equal(xf_tokenizer_load(path, NULL, &tok, &d), -ENOENT);
    assert_non_null(strstr(d.msg, "nope/vocab.txt"));
    assert_int_equal(xf_tokenizer_load(NULL, NULL, &tok, &d), -EINVAL);
    xf_test_rmtree(dir);
}

static void test_hostile_vocab(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    assert_non_null(xf_test_tmpdir(dir, sizeof dir, "tok_hostile"));
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    xf_tokenizer_t *tok = NULL;
    xf_diag_t d = { 0 };
    /* binary garbage: deterministic bytes, all values */
    size_t n = 1 << 16;
    unsigned char *g = malloc(n);
    assert_non_null(g);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        g[i] = (unsigned char)(x >> 24);
    }
    assert_int_equal(xf_test_write_file(path, g, n), 0);
    assert_int_equal(xf_tokenizer_load(path, NULL, &tok, &d), XF_EFORMAT);
    assert_null(tok);
    assert_non_null(strstr(d.msg, "invalid UTF-8"));
    /* valid UTF-8 but no [UNK]; NUL bytes and a huge line are fine otherwise */
    memset(g, 'x', n);
    g[10] = '\n';
    g[20] = 0;
    g[n - 1] = '\n';
    assert_int_equal(xf_test_write_file(path, g, n), 0);
    assert_int_equal(xf_tokenizer_load(path, NULL, &tok, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "[UNK]"));
    /* empty file */
    assert_int_equal(xf_test_write_file(path, "", 0), 0);
    assert_int_equal(xf_tokenizer_load(path, NULL, &tok, &d), XF_EFORMAT);
    /* duplicates (the later line wins, as HF's load_vocab), CRLF line ends, a huge token */
    const char dup[] = "[UNK]\r\n[CLS]\r\n[SEP]\r\nab\r\nab\r\n##c\r\n";
    assert_int_equal(xf_test_write_file(path, dup, sizeof dup - 1), 0);
    tok = load_or_fail(path, NULL);
    assert_int_equal(xf_tokenizer_vocab_size(tok), 6);
    assert_int_equal(xf_tokenizer_id(tok, "ab"), 4);
    assert_string_equal(xf_tokenizer_token(tok, 3), "ab");
    xf_tokens_t t = { 0 };
    assert_int_equal(xf_tokenizer_encode(tok, "abc", 3, NULL, 0, NULL, &t, &d), 0);
    const int32_t ids[] = { 1, 4, 5, 2 }, ty[4] = { 0 };
    expect_ids(&t, ids, ty, 4);
    xf_tokens_deinit(&t);
    xf_tokenizer_free(tok);
    tok = NULL;
    /* hostile tokenizer.json: wrong types */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const char *bad[] = {
        "[]",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":-1}}}",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":\"x\"}}}",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":2000000000}}}",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0},\"unk_token\":7}}",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0}},\"normalizer\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(xf_test_write_file(path, bad[i], strlen(bad[i])), 0);
        int rc = xf_tokenizer_load(path, NULL, &tok, &d);
        if (rc != XF_EFORMAT)
            print_message("# hostile tokenizer.json %zu: %d %s\n", i, rc, d.msg);
        assert_int_equal(rc, XF_EFORMAT);
        assert_null(tok);
    }
    free(g);
    xf_test_rmtree(dir);
}

XF_TEST_MAIN(cmocka_unit_test(test_llama_cpp_bge), cmocka_unit_test(test_pytorch_text),
             cmocka_unit_test(test_swift_edge), cmocka_unit_test(test_swift_squad_sample),
             cmocka_unit_test(test_vocab_queries), cmocka_unit_test(test_pair_and_empty),
             cmocka_unit_test(test_truncation), cmocka_unit_test(test_longest_first_table),
             cmocka_unit_test(test_invalid_utf8),
             cmocka_unit_test(test_split_special), cmocka_unit_test(test_offsets),
             cmocka_unit_test(test_offsets_corpus), cmocka_unit_test(test_long_words),
             cmocka_unit_test(test_threads),
             cmocka_unit_test(test_tokenizer_json), cmocka_unit_test(test_post_processor),
             cmocka_unit_test(test_pipeline_refused),
             cmocka_unit_test(test_bpe_refused),
             cmocka_unit_test(test_missing), cmocka_unit_test(test_hostile_vocab))
