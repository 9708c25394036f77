/* xformd-cli tokenize / embed / classify: line-oriented commands. stdin is split on '\n' only,
 * every line (empty ones too) is one input, and stdout gets exactly one line per input line.
 * Inputs are run through the engine in batches of --batch lines. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct text_opts {
    cli_common c;
    int ids;              /* --ids: lines are token ids */
    int pairs;            /* --pairs: TAB splits a line into text and pair */
    int truncate;         /* --truncate */
    int no_special;       /* tokenize --no-special */
    int split_special;    /* --split-special */
    int tokens;           /* tokenize --tokens: print token strings */
    int raw;              /* embed --format raw */
    int raw_logits;       /* classify --raw-logits */
    int normalize;        /* -1 model default */
    enum xf_pooling pooling;
    int batch;            /* lines per forward */
} text_opts;

static void text_usage(const char *cmd)
{
    if (!strcmp(cmd, "tokenize"))
        printf("usage: xformd-cli tokenize [--model DIR] [--tokens] [--no-special] "
               "[--split-special]\n"
               "                          [--pairs] [--truncate] [--max-len N]\n"
               "Reads lines on stdin and prints each line's token ids (or --tokens strings).\n");
    else if (!strcmp(cmd, "embed"))
        printf("usage: xformd-cli embed [--model DIR] [--pooling cls|mean|pooler|none] "
               "[--normalize|--no-normalize]\n"
               "                       [--format text|raw] [--ids] [--pairs] [--truncate] "
               "[--batch N]\n"
               "                       [--threads N] [--attention JSON] [--quantize int8|bf16] "
               "[--max-len N]\n"
               "Prints one embedding per input line (%%.9g floats, space-separated), or raw "
               "float32\nwith --format raw. --pooling none prints every token's vector on the "
               "line.\n");
    else
        printf("usage: xformd-cli classify [--model DIR] [--raw-logits] [--ids] [--pairs] "
               "[--truncate] [--batch N]\n"
               "Prints softmax probabilities (or raw logits) per input line, in label order; a\n"
            "1-label model (cross-encoder) prints the sigmoid of its logit.\n"
               "With --pairs a line is TEXT<TAB>PAIR (cross-encoder reranking).\n");
}

static int parse_text_opts(int argc, char **argv, text_opts *o, int32_t *max_len)
{
    memset(o, 0, sizeof *o);
    o->normalize = -1;
    o->batch = 16;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_common_opt(argc, argv, &i, &o->c))
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            text_usage(argv[0]);
            exit(0);
        } else if (!strcmp(argv[i], "--ids")) {
            o->ids = 1;
        } else if (!strcmp(argv[i], "--pairs")) {
            o->pairs = 1;
        } else if (!strcmp(argv[i], "--truncate")) {
            o->truncate = 1;
        } else if (!strcmp(argv[i], "--no-special")) {
            o->no_special = 1;
        } else if (!strcmp(argv[i], "--split-special")) {
            o->split_special = 1;
        } else if (!strcmp(argv[i], "--tokens")) {
            o->tokens = 1;
        } else if (!strcmp(argv[i], "--raw-logits")) {
            o->raw_logits = 1;
        } else if (!strcmp(argv[i], "--normalize")) {
            o->normalize = 1;
        } else if (!strcmp(argv[i], "--no-normalize")) {
            o->normalize = 0;
        } else if ((v = cli_opt(argc, argv, &i, "--format"))) {
            if (strcmp(v, "text") && strcmp(v, "raw")) {
                fprintf(stderr, "xformd-cli: --format: '%s' is not text or raw\n", v);
                exit(2);
            }
            o->raw = !strcmp(v, "raw");
        } else if ((v = cli_opt(argc, argv, &i, "--pooling"))) {
            static const char *const names[] = { "cls", "mean", "pooler", "none" };
            static const enum xf_pooling vals[] = { XF_POOL_CLS, XF_POOL_MEAN, XF_POOL_POOLER,
                                                    XF_POOL_NONE };
            o->pooling = XF_POOL_COUNT;
            for (int k = 0; k < 4; k++)
                if (!strcmp(v, names[k]))
                    o->pooling = vals[k];
            if (o->pooling == XF_POOL_COUNT) {
                fprintf(stderr, "xformd-cli: --pooling: '%s' is not cls, mean, pooler or none\n",
                        v);
                exit(2);
            }
        } else if ((v = cli_opt(argc, argv, &i, "--batch"))) {
            o->batch = (int)cli_int("--batch", v, 1, 4096);
        } else if ((v = cli_opt(argc, argv, &i, "--max-len"))) {
            *max_len = (int32_t)cli_int("--max-len", v, 2, 1 << 20);
        } else {
            fprintf(stderr, "xformd-cli %s: unknown option '%s' (try --help)\n", argv[0],
                    argv[i]);
            exit(2);
        }
    }
    return 0;
}

/* Parse a line of space-separated ids into t (type ids 0). Returns 0, -EINVAL or -ENOMEM. */
static int parse_ids(const char *line, int32_t vocab, xf_tokens_t *t)
{
    int32_t cap = t->cap;
    int rc = cli_parse_ids(line, vocab, &t->ids, &t->n, &cap);

    if (cap != t->cap) {   /* keep type_ids as long as ids */
        int32_t *b = realloc(t->type_ids, (size_t)cap * sizeof *b);
        if (!b)
            return -ENOMEM;
        t->type_ids = b;
        t->cap = cap;
    }
    if (rc == 0 && t->n > 0)   /* an empty line leaves type_ids unallocated */
        memset(t->type_ids, 0, sizeof *t->type_ids * (size_t)t->n);
    return rc;
}

/* Tokenise line k into t (text, pair or ids). Exits 1 with the line number on error. */
static void encode_line(const text_opts *o, const xf_model_info_t *mi, const xf_tokenizer_t *tok,
                        char *line, size_t len, size_t k, int32_t max_len, xf_tokens_t *t)
{
    xf_tok_opts_t to = { 0 };
    xf_diag_t diag = { 0 };
    const char *pair = NULL;
    size_t pair_len = 0;
    int rc;

    if (o->ids) {
        rc = parse_ids(line, mi ? mi->vocab_size : xf_tokenizer_vocab_size(tok), t);
        if (rc == 0 && max_len > 0 && t->n > max_len) {
            if (o->truncate) {
                t->n = max_len;
            } else {
                fprintf(stderr, "xformd-cli: line %zu: %d tokens, the limit is %d (use "
                                "--truncate)\n", k + 1, t->n, max_len);
                exit(1);
            }
        }
        if (rc < 0) {
            fprintf(stderr, "xformd-cli: line %zu: not a list of token ids below the vocabulary "
                            "size\n", k + 1);
            exit(1);
        }
        if (t->n == 0) {
            fprintf(stderr, "xformd-cli: line %zu: empty (--ids wants at least one token id "
                            "per line)\n", k + 1);
            exit(1);
        }
        return;
    }
    if (o->pairs) {
        char *tab = memchr(line, '\t', len);
        if (tab) {
            *tab = '\0';
            pair = tab + 1;
            pair_len = len - (size_t)(tab + 1 - line);
            len = (size_t)(tab - line);
        }
    }
    to.no_special = o->no_special;
    to.split_special = o->split_special;
    to.max_len = max_len;
    to.truncate = o->truncate;
    rc = xf_tokenizer_encode(tok, line, len, pair, pair_len, &to, t, &diag);
    if (rc < 0) {
        if (rc == XF_ETOOLONG)
            fprintf(stderr, "xformd-cli: line %zu: %s (use --truncate)\n", k + 1,
                    diag.msg[0] ? diag.msg : xf_strerror(rc));
        else
            fprintf(stderr, "xformd-cli: line %zu: %s\n", k + 1,
                    diag.msg[0] ? diag.msg : xf_strerror(rc));
        exit(1);
    }
}

int cmd_tokenize(int argc, char **argv)
{
    text_opts o;
    int32_t max_len = 0;
    char *buf, **lines;
    size_t *lens, n;
    xf_model_t *m;
    const xf_tokenizer_t *tok;
    xf_tokens_t t = { 0 };

    parse_text_opts(argc, argv, &o, &max_len);
    m = cli_open_model(&o.c);
    tok = xf_model_tokenizer(m);
    if (max_len == 0 && o.truncate)
        max_len = xf_model_info(m)->max_input;
    n = cli_read_lines(stdin, &buf, &lines, &lens);
    for (size_t k = 0; k < n; k++) {
        encode_line(&o, NULL, tok, lines[k], lens[k], k, max_len, &t);
        for (int32_t j = 0; j < t.n; j++) {
            if (o.tokens) {
                const char *s = xf_tokenizer_token(tok, t.ids[j]);
                printf(j ? " %s" : "%s", s ? s : "?");
            } else {
                printf(j ? " %d" : "%d", t.ids[j]);
            }
        }
        putchar('\n');
    }
    xf_tokens_deinit(&t);
    free(lines);
    free(lens);
    free(buf);
    xf_model_free(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

static void print_floats(const float *x, size_t n, int raw, int first)
{
    if (raw) {
        if (fwrite(x, sizeof *x, n, stdout) != n) {
            fprintf(stderr, "xformd-cli: write error\n");
            exit(1);
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        printf(first && i == 0 ? "%.9g" : " %.9g", (double)x[i]);
}

/* Shared body of embed and classify: tokenise in batches, run, print. */
static int run_lines(int argc, char **argv, int classify)
{
    text_opts o;
    int32_t max_len = 0;
    char *buf, **lines;
    size_t *lens, n;
    xf_model_t *m;
    const xf_model_info_t *mi;
    const xf_tokenizer_t *tok;
    xf_ctx_t *ctx = NULL;
    xf_ctx_opts_t co = { 0 };
    xf_plan_t *plan = NULL;
    xf_tokens_t *toks;
    int32_t *cu, *ids, *types;
    float *pooled = NULL, *hidden = NULL, *logits = NULL;
    int rc = 0;

    parse_text_opts(argc, argv, &o, &max_len);
    m = cli_open_model(&o.c);
    mi = xf_model_info(m);
    tok = xf_model_tokenizer(m);
    if (classify && mi->n_labels <= 0) {
        fprintf(stderr, "xformd-cli: model %s has no classifier head (architectures in "
                        "config.json: %s)\n", mi->name, mi->arch_name);
        xf_model_free(m);
        return 1;
    }
    /* default: sentence-transformers' max_seq_length where the model has one; --max-len may
     * go up to the positions, as setting model.max_seq_length does in sentence-transformers */
    if (max_len <= 0)
        max_len = mi->max_input;
    else if (max_len > mi->max_positions)
        max_len = mi->max_positions;
    co.n_threads = o.c.threads;
    if ((rc = xf_ctx_create(&co, &ctx)) < 0 || (rc = xf_plan_create(m, &plan)) < 0) {
        fprintf(stderr, "xformd-cli: %s\n", xf_strerror(rc));
        return 1;
    }
    n = cli_read_lines(stdin, &buf, &lines, &lens);
    toks = calloc((size_t)o.batch, sizeof *toks);
    cu = malloc(((size_t)o.batch + 1) * sizeof *cu);
    if (!toks || !cu) {
        fprintf(stderr, "xformd-cli: out of memory\n");
        return 1;
    }
    for (size_t b0 = 0; b0 < n; b0 += (size_t)o.batch) {
        size_t nb = n - b0 < (size_t)o.batch ? n - b0 : (size_t)o.batch;
        xf_batch_t batch = { 0 };
        xf_output_t out = { 0 };
        xf_diag_t diag = { 0 };
        size_t ntok;

        cu[0] = 0;
        for (size_t k = 0; k < nb; k++) {
            encode_line(&o, mi, tok, lines[b0 + k], lens[b0 + k], b0 + k, max_len, &toks[k]);
            cu[k + 1] = cu[k] + toks[k].n;
        }
        ntok = (size_t)cu[nb];
        ids = malloc((ntok ? ntok : 1) * sizeof *ids);
        types = malloc((ntok ? ntok : 1) * sizeof *types);
        if (!ids || !types) {
            fprintf(stderr, "xformd-cli: out of memory\n");
            return 1;
        }
        for (size_t k = 0; k < nb; k++) {
            memcpy(ids + cu[k], toks[k].ids, (size_t)toks[k].n * sizeof *ids);
            memcpy(types + cu[k], toks[k].type_ids, (size_t)toks[k].n * sizeof *types);
        }
        batch.n_seq = (int32_t)nb;
        batch.cu_len = cu;
        batch.ids = ids;
        batch.type_ids = mi->type_vocab_size > 0 ? types : NULL;
        out.pooling = o.pooling;
        out.normalize = o.normalize;
        if (classify) {
            logits = realloc(logits, nb * (size_t)mi->n_labels * sizeof *logits);
            out.logits = logits;
        } else if (o.pooling == XF_POOL_NONE) {
            hidden = realloc(hidden, (ntok ? ntok : 1) * (size_t)mi->d_model * sizeof *hidden);
            out.hidden = hidden;
        } else {
            pooled = realloc(pooled, nb * (size_t)mi->d_model * sizeof *pooled);
            out.pooled = pooled;
        }
        rc = xf_plan_build(plan, &batch, xf_ctx_threads(ctx), &diag);
        if (rc == 0)
            rc = xf_ctx_reserve(ctx, plan);
        if (rc == 0)
            rc = xf_forward(ctx, m, plan, &batch, &out, &diag);
        if (rc < 0) {
            fprintf(stderr, "xformd-cli: lines %zu-%zu: %s\n", b0 + 1, b0 + nb,
                    diag.msg[0] ? diag.msg : xf_strerror(rc));
            free(ids);
            free(types);
            break;
        }
        for (size_t k = 0; k < nb; k++) {
            if (classify) {
                float *l = logits + k * (size_t)mi->n_labels;
                if (!o.raw_logits && mi->n_labels == 1) {
                    /* one logit (a cross-encoder): its sigmoid, as the server's /rerank; a
                     * softmax over one value is always 1 */
                    l[0] = 1.0f / (1.0f + expf(-l[0]));
                } else if (!o.raw_logits) {
                    float mx = l[0], s = 0.0f;
                    for (int j = 1; j < mi->n_labels; j++)
                        mx = l[j] > mx ? l[j] : mx;
                    for (int j = 0; j < mi->n_labels; j++)
                        s += (l[j] = expf(l[j] - mx));
                    for (int j = 0; j < mi->n_labels; j++)
                        l[j] /= s;
                }
                print_floats(l, (size_t)mi->n_labels, o.raw, 1);
            } else if (o.pooling == XF_POOL_NONE) {
                print_floats(hidden + (size_t)cu[k] * (size_t)mi->d_model,
                             (size_t)toks[k].n * (size_t)mi->d_model, o.raw, 1);
            } else {
                print_floats(pooled + k * (size_t)mi->d_model, (size_t)mi->d_model, o.raw, 1);
            }
            if (!o.raw)
                putchar('\n');
        }
        free(ids);
        free(types);
    }
    for (int k = 0; k < o.batch; k++)
        xf_tokens_deinit(&toks[k]);
    free(toks);
    free(cu);
    free(pooled);
    free(hidden);
    free(logits);
    free(lines);
    free(lens);
    free(buf);
    xf_plan_free(plan);
    xf_ctx_free(ctx);
    xf_model_free(m);
    if (fflush(stdout) != 0)
        return 1;
    return rc < 0 ? 1 : 0;
}

int cmd_embed(int argc, char **argv)
{
    return run_lines(argc, argv, 0);
}

int cmd_classify(int argc, char **argv)
{
    return run_lines(argc, argv, 1);
}
