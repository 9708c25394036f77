/* Loading the WordPiece tokenizer (tokenizer.c encodes with it): vocab.txt, a WordPiece
 * tokenizer.json, tokenizer_config.json and the options gathered into a build, then turned
 * into the immutable xf_tokenizer (tokenizer_internal.h) with its vocabulary hash table.
 * Duplicate vocab.txt lines: the later line's id wins, as in HF's load_vocab (a Python dict),
 * while xf_tokenizer_token() still names every line's id. Loading shares no state, so any
 * thread may load; it never prints (errors go to diag, warnings through xf_log). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/tokenizer.h>

#include "engine/diag.h"
#include "engine/tokenizer_internal.h"

/* Files larger than this are refused as malformed: a vocabulary is a few MB at most. */
#define TOK_MAX_FILE_BYTES ((size_t)1 << 30)

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
    char prefix[XF_TOK_MAX_PREFIX + 1];
    int32_t max_chars;
    char *names[SP_COUNT];     /* special token strings from the files, or NULL */
    added_src_t *added;
    int n_added, cap_added;
    char **never;
    int n_never, cap_never;
    int32_t pair_type;         /* the post-processor's type id for a pair's second text */
    int pair_bad;              /* 1: its pair template is not [CLS] A [SEP] B [SEP] */
    int not_wordpiece;         /* tokenizer.json's model is BPE/Unigram: vocab.txt may serve */
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
    size_t bad = xf_tokenizer_utf8_check((const unsigned char *)data, len);
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
    } else if (!strcmp(type, "Strip")) {
        /* edge whitespace: BERT's pre-tokenizer drops it anyway */
    } else {
        /* NFC/NFKC/NFKD, Replace, Prepend, Precompiled, ...: the text would reach WordPiece
         * changed in ways xformd does not reproduce */
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported "
                           "(BertNormalizer, Lowercase, StripAccents, NFD, Strip and Sequences "
                           "of them are)", path, type);
    }
    return 0;
}

/* One piece of a TemplateProcessing template: a special token (*name: the token string it
 * stands for, through special_tokens) or a sequence (*name NULL, *seq 'A' or 'B'); its type
 * id. -1 when the piece is not one of those (or a special stands for several tokens). */
static int template_piece(const json_t *piece, const json_t *specials, const char **name,
                          char *seq, json_int_t *type)
{
    const json_t *sp = json_object_get(piece, "SpecialToken");
    const json_t *sq = json_object_get(piece, "Sequence");
    const json_t *v = sp ? sp : sq;
    const char *id = json_string_value(json_object_get(v, "id"));
    const json_t *ty = json_object_get(v, "type_id");

    if (!json_is_object(piece) || json_object_size(piece) != 1 || !id ||
        (ty && !json_is_integer(ty)))
        return -1;
    *type = ty ? json_integer_value(ty) : 0;
    *name = NULL;
    *seq = 0;
    if (sq) {
        if (strcmp(id, "A") != 0 && strcmp(id, "B") != 0)
            return -1;
        *seq = id[0];
        return 0;
    }
    const json_t *st = json_object_get(specials, id);
    if (!st) {
        *name = id;            /* not listed: the id is the token */
        return 0;
    }
    const json_t *toks = json_object_get(st, "tokens");
    if (!json_is_array(toks) || json_array_size(toks) != 1 ||
        !json_is_string(json_array_get(toks, 0)))
        return -1;
    *name = json_string_value(json_array_get(toks, 0));
    return 0;
}

/* A template of exactly n pieces (template_piece each) into nm, seq, ty; -1 otherwise. */
static int template_pieces(const json_t *t, size_t n, const json_t *specials, const char **nm,
                           char *seq, json_int_t *ty)
{
    if (!json_is_array(t) || json_array_size(t) != n)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (template_piece(json_array_get(t, i), specials, &nm[i], &seq[i], &ty[i]))
            return -1;
    return 0;
}

/* TemplateProcessing, which decides what [CLS]/[SEP] are and where they go (Hugging Face
 * tokenizers and TEI follow it, not tokenizer_config.json). xformd encodes [CLS] A [SEP] and
 * [CLS] A [SEP] B [SEP]: a single template of another shape ("$A [SEP]", "$A", two tokens
 * before A, A with type 1) is refused, since every text would get other tokens; a pair
 * template of another shape ("[CLS] A [SEP] [SEP] B [SEP]") only refuses pairs. B's type id
 * comes from the template. */
static int apply_template(build_t *b, const json_t *pp, const char *path, xf_diag_t *diag)
{
    const json_t *single = json_object_get(pp, "single"), *pair = json_object_get(pp, "pair");
    const json_t *specials = json_object_get(pp, "special_tokens");
    const char *nm[5];
    char seq[5];
    json_int_t ty[5];
    int rc;

    if (template_pieces(single, 3, specials, nm, seq, ty) ||
        !nm[0] || seq[1] != 'A' || !nm[2] || ty[0] || ty[1] || ty[2])
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s: post_processor: a TemplateProcessing "
                           "whose single template is not \"[CLS]:0 $A:0 [SEP]:0\" (one "
                           "special token each side, type 0) is not supported", path);
    if ((rc = set_name(&b->names[SP_CLS], nm[0])) || (rc = set_name(&b->names[SP_SEP], nm[2])))
        return rc;
    const char *cls = nm[0], *sep = nm[2];
    b->pair_bad = 1;
    if (template_pieces(pair, 5, specials, nm, seq, ty) == 0 && nm[0] &&
        !strcmp(nm[0], cls) && seq[1] == 'A' && nm[2] && !strcmp(nm[2], sep) &&
        seq[3] == 'B' && nm[4] && !strcmp(nm[4], sep) && ty[0] == 0 && ty[1] == 0 &&
        ty[2] == 0 && ty[3] == ty[4] && ty[3] >= 0 && ty[3] < 1 << 20) {
        b->pair_bad = 0;
        b->pair_type = (int32_t)ty[3];
    }
    return 0;
}

/* The post-processor: [CLS]/[SEP] names and the pair layout. */
static int apply_post_processor(build_t *b, const json_t *pp, const char *path,
                                xf_diag_t *diag)
{
    const char *type = json_string_value(json_object_get(pp, "type"));
    int rc;

    if (!type)
        return xf_diag_set(diag, XF_EFORMAT, "%s: post_processor has no \"type\"", path);
    if (!strcmp(type, "TemplateProcessing"))
        return apply_template(b, pp, path, diag);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(pp, "processors"), *sub;
        size_t i;
        if (!json_is_array(list))
            return xf_diag_set(diag, XF_EFORMAT, "%s: Sequence post_processor without a list",
                               path);
        json_array_foreach(list, i, sub) {
            if (!json_is_object(sub))
                return xf_diag_set(diag, XF_EFORMAT, "%s: post_processor %zu is not an "
                                   "object", path, i);
            if ((rc = apply_post_processor(b, sub, path, diag)))
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        const json_t *c = json_object_get(pp, "cls"), *s = json_object_get(pp, "sep");
        if (json_is_array(c) && json_is_string(json_array_get(c, 0)) &&
            (rc = set_name(&b->names[SP_CLS], json_string_value(json_array_get(c, 0)))))
            return rc;
        if (json_is_array(s) && json_is_string(json_array_get(s, 0)) &&
            (rc = set_name(&b->names[SP_SEP], json_string_value(json_array_get(s, 0)))))
            return rc;
        /* RoBERTa puts a pair as <s> A </s></s> B </s> */
        b->pair_bad = strcmp(type, "RobertaProcessing") == 0;
        return 0;
    }
    if (strcmp(type, "ByteLevel") != 0)
        xf_log(XF_LOG_WARN, "%s: post_processor \"%s\" is ignored ([CLS] A [SEP] is used)",
               path, type);
    return 0;
}

/* Whether pre_tokenizer splits as BertPreTokenizer does (whitespace, then every punctuation
 * character on its own): BertPreTokenizer itself, or a Sequence of WhitespaceSplit and
 * Punctuation with the default "isolated" behavior (both use BERT's character classes). */
static int pre_tokenizer_is_bert(const json_t *v)
{
    const char *type = json_string_value(json_object_get(v, "type"));
    const json_t *list = json_object_get(v, "pretokenizers"), *sub;
    int ws = 0, punct = 0;
    size_t i;

    if (!type)
        return 0;
    if (!strcmp(type, "BertPreTokenizer"))
        return 1;
    if (strcmp(type, "Sequence") != 0 || !json_is_array(list))
        return 0;
    json_array_foreach(list, i, sub) {
        const char *t = json_string_value(json_object_get(sub, "type"));
        const json_t *beh = json_object_get(sub, "behavior");
        if (t && !strcmp(t, "WhitespaceSplit"))
            ws = 1;
        else if (t && !strcmp(t, "Punctuation") &&
                 (!beh || !strcmp(json_string_value(beh) ? json_string_value(beh) : "",
                                  "Isolated")))
            punct = 1;
        else if (t && !strcmp(t, "BertPreTokenizer"))
            ws = punct = 1;
        else
            return 0;
    }
    return ws && punct;
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
        b->not_wordpiece = 1;
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
        if (!json_is_string(v) || strlen(json_string_value(v)) > XF_TOK_MAX_PREFIX) {
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: model.continuing_subword_prefix must be a "
                             "string of at most %d bytes", path, XF_TOK_MAX_PREFIX);
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
    if (json_is_object(v) && !pre_tokenizer_is_bert(v)) {
        /* Whitespace (\w+|[^\w\s]+) keeps "..." and "_" together, Digits splits numbers,
         * Metaspace/ByteLevel belong to other models: WordPiece would see other words */
        const char *pt = json_string_value(json_object_get(v, "type"));
        rc = xf_diag_set(diag, XF_EUNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported "
                         "(BertPreTokenizer, or WhitespaceSplit + Punctuation)", path,
                         pt ? pt : "?");
        goto out;
    }
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
    /* [CLS]/[SEP] and the pair layout from the post-processor, as tokenizers applies it */
    v = json_object_get(root, "post_processor");
    if (json_is_object(v) && (rc = apply_post_processor(b, v, path, diag)))
        goto out;
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
        uint32_t h = xf_tokenizer_hash(s, len);
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
    t->pair_type = b->pair_type;
    t->pair_unsupported = b->pair_bad;

    static const char *const defaults[SP_COUNT] = {
        [SP_CLS] = "[CLS]", [SP_SEP] = "[SEP]", [SP_PAD] = "[PAD]", [SP_UNK] = "[UNK]",
        [SP_MASK] = "[MASK]",
    };
    int32_t spid[SP_COUNT];
    for (int k = 0; k < SP_COUNT; k++) {
        const char *name = b->names[k] ? b->names[k] : defaults[k];
        spid[k] = xf_tokenizer_vocab_find(t, name, strlen(name));
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
        const tok_slot_t *sl = xf_tokenizer_vocab_slot(t, s, strlen(s));
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
            nv->id = xf_tokenizer_vocab_find(t, t->strs + nv->off, nv->len);
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
                  .prefix = "##", .max_chars = 100, .pair_type = 1 };
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
            else if (rc != XF_EUNSUPPORTED || !b.not_wordpiece) {
                /* a WordPiece tokenizer.json xformd cannot follow is not replaced by
                 * vocab.txt: that would tokenize otherwise, silently */
                if (diag)
                    *diag = jd;
                goto out;
            }
            if (!have_json) {       /* a BPE/Unigram tokenizer.json: try vocab.txt */
                build_free(&b);
                b = (build_t){ .max_id = -1, .lowercase = -1, .strip = -1, .chinese = -1,
                               .clean = -1, .prefix = "##", .max_chars = 100, .pair_type = 1 };
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

void xf_tokenizer_lower_input(xf_tokenizer_t *t)
{
    t->lowercase = 1;          /* strip_accents was resolved at load and stays as it is */
}
