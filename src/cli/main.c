/* xformd-cli: command dispatch and the helpers the subcommands share (options, the demo model,
 * line input). Logs go to stderr only; results to stdout. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static int verbose_level = XF_LOG_WARN;

void cli_log_stderr(enum xf_log_level level, const char *msg, void *user)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    (void)user;
    if ((int)level <= verbose_level)
        fprintf(stderr, "xformd-cli: %s: %s\n", names[level], msg);
}

const char *cli_opt(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t nl = strlen(name);

    if (strncmp(a, name, nl) != 0)
        return NULL;
    if (a[nl] == '=')
        return a + nl + 1;
    if (a[nl] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "xformd-cli: %s needs a value\n", name);
        exit(2);
    }
    return argv[++*i];
}

long cli_int(const char *name, const char *val, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < min || v > max) {
        fprintf(stderr, "xformd-cli: %s: '%s' is not an integer in [%ld, %ld]\n", name, val, min,
                max);
        exit(2);
    }
    return v;
}

int cli_common_opt(int argc, char **argv, int *i, cli_common *c)
{
    const char *v;

    if ((v = cli_opt(argc, argv, i, "--model"))) {
        c->model_dir = v;
        return 1;
    }
    if ((v = cli_opt(argc, argv, i, "--threads"))) {
        c->threads = (int)cli_int("--threads", v, 0, 1024);
        return 1;
    }
    if ((v = cli_opt(argc, argv, i, "--attention"))) {
        c->attention = v;
        return 1;
    }
    if ((v = cli_opt(argc, argv, i, "--quantize"))) {
        /* In any case, as the daemon's model.quantize (its enum values are matched without
         * case), passed on in lower case: the library takes only "none", "int8", "bf16". A
         * bad value is a usage error (exit 2, like --threads or --attention), found before a
         * model loads or a benchmark starts measuring. */
        static const char *const modes[] = { "none", "int8", "bf16" };
        c->quantize = NULL;
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++)
            if (strcasecmp(v, modes[k]) == 0)
                c->quantize = modes[k];
        if (!c->quantize) {
            fprintf(stderr, "xformd-cli: --quantize: '%s' is not one of none, int8, bf16\n", v);
            exit(2);
        }
        return 1;
    }
    if (!strcmp(argv[*i], "--verbose") || !strcmp(argv[*i], "-v")) {
        verbose_level = XF_LOG_DEBUG;
        return 1;
    }
    return 0;
}

int cli_demo_dir(char *buf, size_t len, int tiny)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char base[PATH_MAX];
    struct stat st;
    xf_demo_opts_t o;
    xf_diag_t diag = { 0 };
    int rc;

    if (xdg && *xdg)
        snprintf(base, sizeof base, "%s/xformd", xdg);
    else
        snprintf(base, sizeof base, "%s/.cache/xformd", home && *home ? home : "/tmp");
    if (snprintf(buf, len, "%s/%s", base, tiny ? "xformd-demo-tiny" : "xformd-demo") >= (int)len)
        return -ENAMETOOLONG;
    snprintf(base + strlen(base), sizeof base - strlen(base), "/%s/model.safetensors",
             tiny ? "xformd-demo-tiny" : "xformd-demo");
    if (stat(base, &st) == 0) {
        if (xf_demo_current(buf))
            return 0;
        fprintf(stderr, "xformd-cli: the cached demo model in %s is not version %d\n", buf,
                XF_DEMO_VERSION);
    }
    if (tiny)
        xf_demo_opts_init_tiny(&o);
    else
        xf_demo_opts_init(&o);
    fprintf(stderr, "xformd-cli: writing the demo model (random weights) to %s\n", buf);
    rc = xf_demo_write(buf, &o, &diag);
    if (rc < 0)
        fprintf(stderr, "xformd-cli: cannot write the demo model: %s\n",
                diag.msg[0] ? diag.msg : xf_strerror(rc));
    return rc;
}

int cli_model_exists(const char *dir)
{
    static const char *const files[] = { "config.json", "model.safetensors" };

    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, files[k]);
        if (access(p, F_OK) == 0) {
            fprintf(stderr, "xformd-cli mkmodel: %s already exists; refusing to overwrite the "
                            "model in %s (use --force)\n", p, dir);
            return 1;
        }
    }
    return 0;
}

int cli_int_opts(int argc, char **argv, int *i, const cli_int_opt *tab, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const char *v = cli_opt(argc, argv, i, tab[k].name);
        if (v) {
            *tab[k].dst = (int32_t)cli_int(tab[k].name, v, tab[k].min, tab[k].max);
            return 1;
        }
    }
    return 0;
}

int cli_mkmodel_opt(int argc, char **argv, int *i, cli_mkmodel *mk)
{
    const char *v;

    if (cli_opt(argc, argv, i, "--arch"))
        return 1;
    if ((v = cli_opt(argc, argv, i, "--out")))
        mk->out = v;
    else if ((v = cli_opt(argc, argv, i, "--seed")))
        *mk->seed = (uint64_t)strtoull(v, NULL, 10);
    else if (!strcmp(argv[*i], "--force"))
        mk->force = 1;
    else
        return cli_int_opts(argc, argv, i, mk->ints, mk->n_ints);
    return 1;
}

int cli_mkmodel_ready(const cli_mkmodel *mk)
{
    if (!mk->out) {
        fprintf(stderr, "xformd-cli mkmodel: --out DIR is required\n");
        return 2;
    }
    return !mk->force && cli_model_exists(mk->out) ? 1 : 0;
}

int cli_mkmodel_done(int rc, const xf_diag_t *diag)
{
    if (rc >= 0)
        return 0;
    fprintf(stderr, "xformd-cli mkmodel: %s\n", diag->msg[0] ? diag->msg : xf_strerror(rc));
    return 1;
}

int cli_parse_ids(const char *line, int32_t vocab, int32_t **ids, int32_t *n, int32_t *cap)
{
    const char *p = line;

    *n = 0;
    while (*p) {
        char *end;
        long v;
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p)
            break;
        errno = 0;
        v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v >= vocab ||
            (*end && *end != ' ' && *end != '\t' && *end != '\r'))
            return -EINVAL;
        if (*n == *cap) {
            int32_t nc = *cap ? *cap * 2 : 64;
            int32_t *a = realloc(*ids, (size_t)nc * sizeof *a);
            if (!a)
                return -ENOMEM;
            *ids = a;
            *cap = nc;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return 0;
}

xf_model_t *cli_open_model(const cli_common *c)
{
    char dir[PATH_MAX];
    xf_load_opts_t lo = { 0 };
    xf_diag_t diag = { 0 };
    xf_model_t *m = NULL;
    int rc;

    if (c->attention) {
        /* A bad selection is the option's fault, not the model's: say so before loading. */
        char err[256] = "";
        xf_attn_t *a = NULL;
        rc = xf_attn_parse(c->attention, strlen(c->attention), &a, err, sizeof err);
        xf_attn_free(a);
        if (rc < 0) {
            fprintf(stderr, "xformd-cli: --attention: %s\n", err[0] ? err : xf_strerror(rc));
            exit(2);
        }
    }
    if (c->model_dir) {
        snprintf(dir, sizeof dir, "%s", c->model_dir);
    } else if (cli_demo_dir(dir, sizeof dir, 0) < 0) {
        exit(1);
    }
    lo.attention = c->attention;
    lo.quantize = c->quantize;
    rc = xf_model_load(dir, &lo, &m, &diag);
    if (rc < 0) {
        fprintf(stderr, "xformd-cli: cannot load model %s: %s\n", dir,
                diag.msg[0] ? diag.msg : xf_strerror(rc));
        exit(1);
    }
    if (xf_model_info(m)->is_demo)
        fprintf(stderr, "xformd-cli: note: %s is the demo model with RANDOM weights; its outputs "
                        "are meaningless (use --model DIR for a real checkpoint)\n", dir);
    return m;
}

size_t cli_read_lines(FILE *in, char **buf, char ***lines, size_t **lens)
{
    size_t cap = 1 << 16, len = 0, n = 0, k;
    char *b = malloc(cap);
    char **l;
    size_t *ll;

    if (!b)
        goto oom;
    for (;;) {
        size_t got;
        if (len + 1 >= cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb)
                goto oom;
            b = nb;
            cap *= 2;
        }
        got = fread(b + len, 1, cap - len - 1, in);
        len += got;
        if (got == 0) {
            if (ferror(in)) {
                fprintf(stderr, "xformd-cli: error reading input\n");
                exit(1);
            }
            break;
        }
    }
    b[len] = '\0';
    for (size_t i = 0; i < len; i++)
        n += b[i] == '\n';
    if (len > 0 && b[len - 1] != '\n')
        n++;
    l = malloc((n ? n : 1) * sizeof *l);
    ll = malloc((n ? n : 1) * sizeof *ll);
    if (!l || !ll)
        goto oom;
    k = 0;
    for (size_t s = 0; s < len && k < n;) {
        char *nl = memchr(b + s, '\n', len - s);
        size_t e = nl ? (size_t)(nl - b) : len;
        b[e] = '\0';
        l[k] = b + s;
        ll[k] = e - s;
        k++;
        s = e + 1;
    }
    *buf = b;
    *lines = l;
    *lens = ll;
    return n;
oom:
    fprintf(stderr, "xformd-cli: out of memory reading input\n");
    exit(1);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: xformd-cli COMMAND [options]\n"
        "\n"
        "commands:\n"
        "  tokenize   lines on stdin -> token ids, one line each\n"
        "  embed      lines on stdin -> embedding vectors, one line each\n"
        "  classify   lines on stdin -> class probabilities (or --raw-logits)\n"
        "  inspect    model summary, per-layer shapes, memory plan\n"
        "  mkmodel    write the deterministic demo model (Hugging Face layout)\n"
        "  variants   list the attention variants and their parameters\n"
        "  score      Transformer-XL: lines on stdin -> per-token log-probs, memory kept\n"
        "  prune      structured pruning: drop the least important heads / FFN units\n"
        "  bench      engine benchmark (BERT-base shape) against the FMA peak and cblas\n"
        "\n"
        "Model commands take --model DIR (a Hugging Face directory; default: the demo model,\n"
        "written on first use under $XDG_CACHE_HOME/xformd), --threads N, --attention JSON,\n"
        "--quantize none|int8|bf16 (int8 Linear layers, or bf16 weights on AVX-512).\n"
        "`xformd-cli COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        { "tokenize", cmd_tokenize }, { "embed", cmd_embed }, { "classify", cmd_classify },
        { "inspect", cmd_inspect },   { "mkmodel", cmd_mkmodel }, { "variants", cmd_variants },
        { "bench", cmd_bench },       { "score", cmd_score },       { "prune", cmd_prune },
    };

    xf_log_set(cli_log_stderr, NULL);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("xformd-cli %s\n", xf_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "xformd-cli: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
