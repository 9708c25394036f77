/* The Transformer-XL word-level tokenizer (TransfoXLTokenizer without Moses preprocessing):
 * symbols of vocab.txt (first whitespace field of a line; a repeated symbol keeps its first id, as
 * the original Vocab.add_symbol) or tokenizer.json's idx2sym list, lower_case from
 * tokenizer_config.json, whitespace split as Python's str.split(), unknown words to <unk>,
 * optional <eos>. Read-only after load. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <utf8proc.h>

#include "engine/diag.h"
#include "engine/txl_model.h"

static uint32_t str_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int32_t xf_txl_vocab_find(const xf_txl_t *m, const char *s, size_t len)
{
    uint32_t h;

    if (!m->slot)
        return -1;
    h = str_hash(s, len) & m->slot_mask;
    while (m->slot[h]) {
        const char *t = m->sym[m->slot[h] - 1];
        if (strlen(t) == len && !memcmp(t, s, len))
            return m->slot[h] - 1;
        h = (h + 1) & m->slot_mask;
    }
    return -1;
}

static int is_space_ascii(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int load_lower_case(const char *dir, int *out, xf_diag_t *diag)
{
    char path[4096];
    json_error_t je;
    json_t *j, *v;

    *out = 0;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    j = json_load_file(path, 0, &je);
    if (!j) {
        FILE *fp = fopen(path, "rb");
        if (!fp)
            return 0;   /* optional: HF's default lower_case=False */
        fclose(fp);
        return xf_diag_set(diag, XF_EFORMAT, "tokenizer_config.json: line %d: %s", je.line,
                           je.text);
    }
    v = json_object_get(j, "lower_case");
    if (v && !json_is_boolean(v)) {
        json_decref(j);
        return xf_diag_set(diag, XF_EFORMAT, "tokenizer_config.json: lower_case is not a "
                           "boolean");
    }
    *out = v && json_is_true(v);
    json_decref(j);
    return 0;
}

/* Append symbol s (len bytes) as the next id, as the original Vocab.add_symbol: a symbol already
 * present is skipped (returns 0, later ids do not shift past it), else returns 1. *cap is the
 * capacity of m->sym. */
static int vocab_add(xf_txl_t *m, const char *s, size_t len, int32_t *cap)
{
    int32_t n = m->info.n_symbols;
    uint32_t sz = m->slot ? m->slot_mask + 1 : 16;
    uint32_t h;

    while (sz < 2u * (uint32_t)(n + 1))
        sz *= 2;
    if (!m->slot || m->slot_mask + 1 < sz) {   /* grow and rehash */
        int32_t *ns = calloc(sz, sizeof *ns);
        if (!ns)
            return -ENOMEM;
        free(m->slot);
        m->slot = ns;
        m->slot_mask = sz - 1;
        for (int32_t i = 0; i < n; i++) {
            h = str_hash(m->sym[i], strlen(m->sym[i])) & m->slot_mask;
            while (m->slot[h])
                h = (h + 1) & m->slot_mask;
            m->slot[h] = i + 1;
        }
    }
    if (xf_txl_vocab_find(m, s, len) >= 0)
        return 0;
    if (n == *cap) {
        int32_t nc = *cap ? 2 * *cap : 1024;
        char **t = realloc(m->sym, (size_t)nc * sizeof *t);
        if (!t)
            return -ENOMEM;
        m->sym = t;
        *cap = nc;
    }
    m->sym[n] = strndup(s, len);
    if (!m->sym[n])
        return -ENOMEM;
    h = str_hash(s, len) & m->slot_mask;
    while (m->slot[h])
        h = (h + 1) & m->slot_mask;
    m->slot[h] = n + 1;
    m->info.n_symbols = n + 1;
    return 1;
}

/* vocab.txt: one symbol per line, its first whitespace-separated field. */
static int load_vocab_txt(xf_txl_t *m, FILE *fp, const char *path, xf_diag_t *diag)
{
    char line[4096];
    int32_t cap = 0, lineno = 0;
    int rc = 0;

    while (fgets(line, sizeof line, fp)) {
        size_t a = 0, b;
        lineno++;
        if (!strchr(line, '\n') && !feof(fp))
            return xf_diag_set(diag, XF_EFORMAT, "vocab.txt:%d: line too long", lineno);
        while (line[a] && is_space_ascii((unsigned char)line[a]))
            a++;
        b = a;
        while (line[b] && !is_space_ascii((unsigned char)line[b]))
            b++;
        if (b == a)
            return xf_diag_set(diag, XF_EFORMAT, "vocab.txt:%d: empty line", lineno);
        if (m->info.n_symbols >= m->info.vocab_size)
            return xf_diag_set(diag, XF_EFORMAT, "vocab.txt: more than vocab_size = %d symbols",
                               m->info.vocab_size);
        if ((rc = vocab_add(m, line + a, b - a, &cap)) < 0)
            return rc;
    }
    if (ferror(fp))
        return xf_diag_set(diag, -EIO, "%s: read error", path);
    return 0;
}

/* tokenizer.json {"idx2sym": [...]}: the symbol of id i at position i (TransfoXLTokenizer's
 * idx2sym list, e.g. taken out of HF's vocab.pkl). Positions are ids, so a repeated symbol
 * would make ids ambiguous and is refused; so are non-strings, empty strings and symbols with
 * whitespace (the tokenizer splits on it, they could never be produced). */
static int load_vocab_json(xf_txl_t *m, const char *path, xf_diag_t *diag)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *a;
    int32_t cap = 0;
    int rc = 0;

    if (!j)
        return xf_diag_set(diag, XF_EFORMAT, "tokenizer.json: line %d: %s", je.line, je.text);
    a = json_object_get(j, "idx2sym");
    if (!json_is_array(a)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "tokenizer.json: no \"idx2sym\" array (a "
                         "Transformer-XL symbol list)");
        goto out;
    }
    if (json_array_size(a) > (size_t)m->info.vocab_size) {
        rc = xf_diag_set(diag, XF_EFORMAT, "tokenizer.json: idx2sym has %zu symbols, more than "
                         "vocab_size = %d", json_array_size(a), m->info.vocab_size);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        const char *s = json_string_value(e);
        size_t len = json_string_length(e);
        int bad = !s || len == 0 || memchr(s, '\0', len);
        for (size_t k = 0; !bad && k < len; k++)
            bad = is_space_ascii((unsigned char)s[k]);
        if (bad) {
            rc = xf_diag_set(diag, XF_EFORMAT, "tokenizer.json: idx2sym[%zu] is not a "
                             "non-empty string without whitespace", i);
            goto out;
        }
        if ((rc = vocab_add(m, s, len, &cap)) < 0)
            goto out;
        if (rc == 0) {
            rc = xf_diag_set(diag, XF_EFORMAT, "tokenizer.json: idx2sym[%zu] \"%.64s\" repeats "
                             "id %d", i, s, xf_txl_vocab_find(m, s, len));
            goto out;
        }
        rc = 0;
    }
out:
    json_decref(j);
    return rc;
}

int xf_txl_vocab_load(xf_txl_t *m, const char *dir, xf_diag_t *diag)
{
    char path[4096];
    FILE *fp;
    int rc;

    if ((rc = load_lower_case(dir, &m->info.lower_case, diag)) < 0)
        return rc;
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    fp = fopen(path, "r");
    if (fp) {
        rc = load_vocab_txt(m, fp, path, diag);
        fclose(fp);
    } else if (errno == ENOENT) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (access(path, F_OK) == 0)
            rc = load_vocab_json(m, path, diag);
        else
            rc = xf_diag_set(diag, -ENOENT, "%s: neither vocab.txt nor tokenizer.json (with "
                             "idx2sym) found (HF's pickled vocab.pkl is not read: see "
                             "doc/transfo-xl.md)", dir);
    } else {
        rc = xf_diag_set(diag, -errno, "%s: %s", path, strerror(errno));
    }
    if (rc == 0 && m->info.n_symbols == 0)
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: no symbols", path);
    m->info.eos_id = xf_txl_vocab_find(m, "<eos>", 5);
    m->info.unk_id = xf_txl_vocab_find(m, "<unk>", 5);
    if (m->info.unk_id < 0)
        m->info.unk_id = xf_txl_vocab_find(m, "<UNK>", 5);
    return rc;
}

void xf_txl_vocab_free(xf_txl_t *m)
{
    for (int32_t i = 0; i < m->info.n_symbols; i++)
        free(m->sym[i]);
    free(m->sym);
    free(m->slot);
    m->sym = NULL;
    m->slot = NULL;
}

const char *xf_txl_symbol(const xf_txl_t *m, int32_t id)
{
    return id >= 0 && id < m->info.n_symbols ? m->sym[id] : NULL;
}

/* Python's str.isspace() set (str.split() separators). */
static int is_py_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static int push(int32_t **ids, int32_t *n, int32_t *cap, int32_t id)
{
    if (*n == *cap) {
        int32_t nc = *cap ? 2 * *cap : 64;
        int32_t *t = realloc(*ids, (size_t)nc * sizeof *t);
        if (!t)
            return -ENOMEM;
        *ids = t;
        *cap = nc;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

int xf_txl_encode(const xf_txl_t *m, const char *text, size_t len, int add_eos, int32_t **ids,
                  int32_t *n, xf_diag_t *diag)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    char *word = malloc(len * 2 + 8);   /* lower-casing may lengthen a code point's bytes */
    size_t wl = 0, i = 0;
    int32_t *out = NULL, cnt = 0, cap = 0;
    int rc = 0;

    if (!word)
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    for (;;) {
        utf8proc_int32_t c = -1;
        utf8proc_ssize_t k = 0;
        if (i < len) {
            k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
            if (k < 0 || c == 0) {
                rc = xf_diag_set(diag, XF_EFORMAT, "invalid UTF-8 at byte %zu", i);
                goto fail;
            }
        }
        if (i >= len || is_py_space(c)) {
            if (wl) {
                int32_t id = xf_txl_vocab_find(m, word, wl);
                if (id < 0)
                    id = m->info.unk_id;
                if (id < 0) {
                    rc = xf_diag_set(diag, XF_ENOTFOUND, "'%.*s' is not in the vocabulary and "
                                     "it has no <unk>", (int)(wl > 64 ? 64 : wl), word);
                    goto fail;
                }
                if ((rc = push(&out, &cnt, &cap, id)) < 0)
                    goto fail;
                wl = 0;
            }
            if (i >= len)
                break;
        } else {
            if (m->info.lower_case)
                c = utf8proc_tolower(c);
            wl += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)word + wl);
        }
        i += (size_t)k;
    }
    if (add_eos) {
        if (m->info.eos_id < 0) {
            rc = xf_diag_set(diag, XF_ENOTFOUND, "the vocabulary has no <eos>");
            goto fail;
        }
        if ((rc = push(&out, &cnt, &cap, m->info.eos_id)) < 0)
            goto fail;
    }
    free(word);
    *ids = out;
    *n = cnt;
    return 0;
fail:
    if (rc == -ENOMEM)
        xf_diag_set(diag, rc, "out of memory");
    free(word);
    free(out);
    return rc;
}
