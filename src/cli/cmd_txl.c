/* xformd-cli score / mkmodel --arch transfo-xl: stream stdin through a Transformer-XL model one
 * segment per line with the memory kept in process (the engine-level reference for the
 * session routes), and write the small random TXL test model. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* A JSON string (quotes included) on stdout. */
static void put_json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

int cmd_score(int argc, char **argv)
{
    const char *dir = NULL, *init = "empty";
    int use_ids = 0, add_eos = 1, mem_len = -1, pooled = 0;
    xf_txl_opts_t lo = { 0 };
    xf_txl_t *m = NULL;
    xf_txl_mem_t *mem = NULL;
    xf_diag_t diag = { 0 };
    char *buf = NULL, **lines = NULL;
    size_t *lens = NULL, nl;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: xformd-cli score --model DIR [--ids] [--init empty|zeros] "
                   "[--no-eos] [--mem-len N] [--pooled]\n"
                   "Scores stdin with a Transformer-XL model as one stream, one segment per "
                   "line, the memory\nkept between lines. Prints one JSON line per segment: "
                   "per-token log-probabilities\n(token 0 is scored by the previous segment's "
                   "last row; null on the first line), their\nsum, and the prediction for the "
                   "next segment's first token. Text lines get <eos>\nappended unless --no-eos; "
                   "--ids reads space-separated token ids instead. --pooled adds the mean of "
                   "the last\nhidden states (\"pooled\").\n");
            return 0;
        }
        if ((v = cli_opt(argc, argv, &i, "--model")))
            dir = v;
        else if ((v = cli_opt(argc, argv, &i, "--init")))
            init = v;
        else if ((v = cli_opt(argc, argv, &i, "--mem-len")))
            mem_len = (int)cli_int("--mem-len", v, 0, 1 << 16);
        else if (!strcmp(argv[i], "--ids"))
            use_ids = 1;
        else if (!strcmp(argv[i], "--no-eos"))
            add_eos = 0;
        else if (!strcmp(argv[i], "--pooled"))
            pooled = 1;
        else {
            fprintf(stderr, "xformd-cli score: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "xformd-cli score: --model DIR (a transfo-xl model) is required\n");
        return 2;
    }
    if (strcmp(init, "empty") && strcmp(init, "zeros")) {
        fprintf(stderr, "xformd-cli score: --init must be empty or zeros\n");
        return 2;
    }
    lo.mem_len = mem_len;
    rc = xf_txl_load(dir, &lo, &m, &diag);
    if (rc < 0) {
        fprintf(stderr, "xformd-cli score: %s\n", diag.msg[0] ? diag.msg : xf_strerror(rc));
        return 1;
    }
    rc = xf_txl_mem_create(m, strcmp(init, "zeros") ? XF_TXL_INIT_EMPTY : XF_TXL_INIT_ZEROS,
                           &mem);
    if (rc < 0) {
        fprintf(stderr, "xformd-cli score: %s\n", xf_strerror(rc));
        xf_txl_free(m);
        return 1;
    }
    nl = cli_read_lines(stdin, &buf, &lines, &lens);
    for (size_t k = 0; k < nl && rc == 0; k++) {
        int32_t *ids = NULL, n = 0;
        xf_txl_result_t res = { 0 };
        xf_txl_mem_stats_t st;
        const char *sym;

        int32_t cap = 0;
        rc = use_ids ? cli_parse_ids(lines[k], xf_txl_info(m)->vocab_size, &ids, &n, &cap)
                     : xf_txl_encode(m, lines[k], lens[k], add_eos, &ids, &n, &diag);
        if (rc < 0) {
            fprintf(stderr, "xformd-cli score: line %zu: %s\n", k + 1,
                    use_ids ? "not a list of token ids below the vocabulary size" : diag.msg);
            free(ids);
            break;
        }
        if (n == 0) {
            fprintf(stderr, "xformd-cli score: line %zu: empty segment\n", k + 1);
            free(ids);
            rc = -EINVAL;
            break;
        }
        rc = xf_txl_run(m, mem, ids, n, pooled ? XF_TXL_OUT_POOLED : 0, &res, &diag);
        free(ids);
        if (rc < 0) {
            fprintf(stderr, "xformd-cli score: line %zu: %s\n", k + 1, diag.msg);
            break;
        }
        xf_txl_mem_stats(mem, &st);
        printf("{\"segment\":%lld,\"n\":%d,\"logprobs\":[", (long long)st.segments, n);
        for (int32_t t = 0; t < n; t++) {
            if (t)
                putchar(',');
            if (isnan(res.logprobs[t]))
                printf("null");
            else
                printf("%.7g", res.logprobs[t]);
        }
        printf("],\"sum\":%.9g,\"n_scored\":%d,\"next\":{\"id\":%d,\"token\":", res.sum,
               res.n_scored, res.next_id);
        sym = xf_txl_symbol(m, res.next_id);
        put_json_str(sym ? sym : "");
        printf(",\"logprob\":%.7g},\"memory_rows\":%d,\"tokens_seen\":%lld", res.next_logprob,
               st.rows, (long long)st.tokens);
        if (res.pooled) {
            printf(",\"pooled\":[");
            for (int32_t c = 0; c < xf_txl_info(m)->d_model; c++)
                printf(c ? ",%.7g" : "%.7g", res.pooled[c]);
            putchar(']');
        }
        printf("}\n");
        xf_txl_result_deinit(&res);
    }
    free(buf);
    free(lines);
    free(lens);
    xf_txl_mem_free(mem);
    xf_txl_free(m);
    return rc < 0 ? 1 : 0;
}

int cmd_mkmodel_txl(int argc, char **argv)
{
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };
    int rc;

    xf_txl_demo_opts_init(&o);
    const cli_int_opt ints[] = {
        { "--layers", 1, 32, &o.n_layer },      { "--hidden", 2, 8192, &o.d_model },
        { "--heads", 1, 256, &o.n_head },       { "--head-dim", 1, 1024, &o.d_head },
        { "--ffn", 1, 1 << 16, &o.d_inner },    { "--vocab", 64, 1 << 22, &o.vocab_size },
        { "--mem-len", 0, 1 << 16, &o.mem_len },
    };
    cli_mkmodel mk = { .seed = &o.seed, .ints = ints, .n_ints = sizeof ints / sizeof ints[0] };
    for (int i = 1; i < argc; i++) {
        if (cli_mkmodel_opt(argc, argv, &i, &mk))
            continue;
        if (!strcmp(argv[i], "--same-length"))
            o.same_length = 1;
        else if (!strcmp(argv[i], "--pre-lnorm"))
            o.pre_lnorm = 1;
        else {
            fprintf(stderr, "xformd-cli mkmodel --arch transfo-xl: unknown option '%s'\n",
                    argv[i]);
            return 2;
        }
    }
    if ((rc = cli_mkmodel_ready(&mk)) != 0)
        return rc;
    o.d_embed = o.d_model;   /* --hidden sets both; no option sets d_embed alone */
    o.cutoffs[0] = o.vocab_size / 3;
    o.cutoffs[1] = 2 * (o.vocab_size / 3);
    if ((rc = cli_mkmodel_done(xf_txl_demo_write(mk.out, &o, &diag), &diag)) != 0)
        return rc;
    fprintf(stderr, "xformd-cli: wrote transfo-xl model (%d layers, d_model %d, %d heads, "
                    "vocab %d, cutoffs %d/%d, div_val %d, mem_len %d) to %s\n", o.n_layer,
            o.d_model, o.n_head, o.vocab_size, o.cutoffs[0], o.cutoffs[1], o.div_val, o.mem_len,
            mk.out);
    return 0;
}
