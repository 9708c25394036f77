/* xformd-cli prune: structured pruning of attention heads and FFN units (FastFormers,
 * ATTENTION.md §24) — scores from a calibration text file, keep the top ones per layer, write
 * a Hugging Face directory (include/xformd/prune.h says how the scores are computed).
 * Bad input (options, files, targets) exits 2 before anything is written. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include "cli/cli.h"

static void prune_usage(FILE *f)
{
    fprintf(f,
        "usage: xformd-cli prune --model DIR --calib FILE --heads H --ffn F --out DIR2\n"
        "                        [--max-len N] [--threads N] [--save-scores FILE]\n"
        "       xformd-cli prune --model DIR --scores FILE --heads H --ffn F --out DIR2\n"
        "Scores every attention head and FFN unit on the calibration texts (one per line; empty\n"
        "lines are skipped), keeps the H best heads and the F best FFN units of every layer and\n"
        "writes the pruned model to DIR2 (Hugging Face layout: model.safetensors F32,\n"
        "config.json with pruned_heads, tokenizer files copied). H and F are one number for\n"
        "every layer or a comma-separated list with one number per layer.\n"
        "Scores (no gradients in an inference engine): heads by output-change ablation (mean\n"
        "over tokens of the change of the final hidden states when the head's columns of the\n"
        "attention output projection are zero), FFN units by mean |activation| x the L2 norm\n"
        "of their FFN2 column; both L2-normalised per layer. Texts are cut to --max-len tokens\n"
        "(default 128). DIR2 must not exist or be empty; it appears only when complete.\n"
        "--save-scores FILE keeps the scores; --scores FILE prunes from them instead of the\n"
        "calibration (several sparsities from one calibration run).\n");
}

/* "8" or "12,8,8,..." with n_layer entries, each in [1, 1 << 20]. Exits 2 on error. */
static void parse_targets(const char *opt, const char *s, int32_t n_layer, int32_t *out)
{
    int32_t n = 0;
    const char *p = s;

    for (;;) {
        char *end;
        long v;
        errno = 0;
        v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > (1 << 20) || (*end && *end != ',')) {
            fprintf(stderr, "xformd-cli prune: %s: '%s' is not a count in [1, %d] or a "
                            "comma-separated list of them\n", opt, s, 1 << 20);
            exit(2);
        }
        if (n == n_layer) {
            fprintf(stderr, "xformd-cli prune: %s: more than %d values (the model has %d "
                            "layers)\n", opt, n_layer, n_layer);
            exit(2);
        }
        out[n++] = (int32_t)v;
        if (!*end)
            break;
        p = end + 1;
    }
    if (n == 1)
        for (int32_t l = 1; l < n_layer; l++)
            out[l] = out[0];
    else if (n != n_layer) {
        fprintf(stderr, "xformd-cli prune: %s: %d values, the model has %d layers (give one "
                        "value or one per layer)\n", opt, n, n_layer);
        exit(2);
    }
}

static int out_dir_busy(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int busy = 0;
    struct stat st;

    if (!d)
        return stat(path, &st) == 0;   /* a file, or unreadable: refuse too */
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            busy = 1;
            break;
        }
    closedir(d);
    return busy;
}

/* --out's directory must exist and take a new entry (the model is written beside it in
 * OUT.tmp.XXXXXX, then renamed): checked before the calibration, which can take minutes, so
 * that a typo is exit 2 at once. An empty --out is refused too. Returns 1 (with a message) when
 * bad. */
static int out_parent_bad(const char *out)
{
    char dir[4096];
    const char *slash;
    struct stat st;
    size_t len = strlen(out), n;
    int err = 0;

    while (len > 1 && out[len - 1] == '/')   /* "DIR2/" names DIR2 */
        len--;
    if (!len) {
        fprintf(stderr, "xformd-cli prune: --out: empty path\n");
        return 1;
    }
    if (len >= sizeof dir) {
        fprintf(stderr, "xformd-cli prune: --out %s: path too long\n", out);
        return 1;
    }
    memcpy(dir, out, len);
    dir[len] = '\0';
    slash = strrchr(dir, '/');
    n = !slash ? 0 : slash == dir ? 1 : (size_t)(slash - dir);
    if (!n)
        dir[n++] = '.';
    dir[n] = '\0';
    if (stat(dir, &st) != 0)
        err = errno;
    else if (!S_ISDIR(st.st_mode))
        err = ENOTDIR;
    else if (access(dir, W_OK | X_OK) != 0)
        err = errno;
    if (err) {
        fprintf(stderr, "xformd-cli prune: --out %s: cannot create it in %s: %s\n", out, dir,
                strerror(err));
        return 1;
    }
    return 0;
}

/* --save-scores: "# xformd prune scores layers=L tokens=N", then per layer "head L s..." and
 * "ffn L s..." (%.9g). Returns 0, or -1 with a message. */
static int save_scores(const char *path, const xf_prune_scores_t *sc)
{
    FILE *f = fopen(path, "w");
    int bad;
    if (!f) {
        fprintf(stderr, "xformd-cli prune: --save-scores %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# xformd prune scores layers=%d tokens=%lld\n", sc->n_layer,
            (long long)sc->n_tokens);
    for (int32_t l = 0; l < sc->n_layer; l++) {
        fprintf(f, "head %d", l);
        for (int32_t h = 0; h < sc->n_head[l]; h++)
            fprintf(f, " %.9g", (double)sc->head[l][h]);
        fprintf(f, "\nffn %d", l);
        for (int32_t u = 0; u < sc->d_ff[l]; u++)
            fprintf(f, " %.9g", (double)sc->ffn[l][u]);
        fputc('\n', f);
    }
    bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "xformd-cli prune: --save-scores %s: write error\n", path);
        return -1;
    }
    return 0;
}

/* Parse "KIND L v v v ..." with exactly n values into out. */
static int parse_score_line(char *line, const char *kind, int32_t l, int32_t n, float *out)
{
    char *p = line, *end;
    size_t kl = strlen(kind);
    long li;
    if (strncmp(p, kind, kl) != 0 || p[kl] != ' ')
        return -1;
    li = strtol(p + kl, &end, 10);
    if (end == p + kl || li != l)
        return -1;
    p = end;
    for (int32_t i = 0; i < n; i++) {
        float v = strtof(p, &end);
        if (end == p || !(v >= 0.0f) || v > 1.0f)
            return -1;
        out[i] = v;
        p = end;
    }
    while (*p == ' ' || *p == '\r')
        p++;
    return *p == '\0' ? 0 : -1;
}

/* The input file of option opt (--calib, --scores) opened for reading, a directory refused
 * (fopen opens one for reading on Linux, and reading it fails later); NULL after the
 * message. */
static FILE *open_input(const char *opt, const char *path)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    int err = f ? 0 : errno;

    if (f && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        f = NULL;
        err = EISDIR;
    }
    if (!f)
        fprintf(stderr, "xformd-cli prune: %s %s: %s\n", opt, path, strerror(err));
    return f;
}

/* --scores: read a --save-scores file for this model into sc (arrays owned by the caller:
 * free_scores). Exits 2 when the file does not fit the model. */
static void load_scores(const char *path, const xf_model_info_t *mi, xf_prune_scores_t *sc)
{
    char *buf, **lines;
    size_t *lens, n;
    FILE *f = open_input("--scores", path);
    int ok = 1;

    if (!f)
        exit(2);
    n = cli_read_lines(f, &buf, &lines, &lens);
    fclose(f);
    memset(sc, 0, sizeof *sc);
    sc->n_layer = mi->n_layer;
    sc->n_head = calloc((size_t)mi->n_layer, sizeof *sc->n_head);
    sc->d_ff = calloc((size_t)mi->n_layer, sizeof *sc->d_ff);
    sc->head = calloc((size_t)mi->n_layer, sizeof *sc->head);
    sc->ffn = calloc((size_t)mi->n_layer, sizeof *sc->ffn);
    if (!sc->n_head || !sc->d_ff || !sc->head || !sc->ffn) {
        fprintf(stderr, "xformd-cli prune: out of memory\n");
        exit(1);
    }
    if (n != 1 + 2 * (size_t)mi->n_layer || strncmp(lines[0], "# xformd prune scores ", 22))
        ok = 0;
    else {
        const char *t = strstr(lines[0], "tokens=");
        sc->n_tokens = t ? strtoll(t + 7, NULL, 10) : 0;
    }
    for (int32_t l = 0; ok && l < mi->n_layer; l++) {
        sc->n_head[l] = mi->layers[l].n_head;
        sc->d_ff[l] = mi->layers[l].d_ff;
        sc->head[l] = malloc((size_t)sc->n_head[l] * sizeof **sc->head);
        sc->ffn[l] = malloc((size_t)sc->d_ff[l] * sizeof **sc->ffn);
        if (!sc->head[l] || !sc->ffn[l]) {
            fprintf(stderr, "xformd-cli prune: out of memory\n");
            exit(1);
        }
        ok = parse_score_line(lines[1 + 2 * l], "head", l, sc->n_head[l], sc->head[l]) == 0 &&
             parse_score_line(lines[2 + 2 * l], "ffn", l, sc->d_ff[l], sc->ffn[l]) == 0;
    }
    free(lines);
    free(lens);
    free(buf);
    if (!ok) {
        fprintf(stderr, "xformd-cli prune: --scores %s: not a --save-scores file for this model "
                        "(%d layers, the heads and FFN widths of %s)\n", path, mi->n_layer,
                mi->dir);
        exit(2);
    }
}

static void free_scores(xf_prune_scores_t *sc)
{
    for (int32_t l = 0; l < sc->n_layer; l++) {
        if (sc->head)
            free(sc->head[l]);
        if (sc->ffn)
            free(sc->ffn[l]);
    }
    free(sc->head);
    free(sc->ffn);
    free(sc->n_head);
    free(sc->d_ff);
}

int cmd_prune(int argc, char **argv)
{
    cli_common c = { 0 };
    const char *calib = NULL, *heads_s = NULL, *ffn_s = NULL, *out = NULL;
    const char *scores_in = NULL, *scores_out = NULL;
    xf_prune_scores_t loaded = { 0 };
    int32_t max_len = 128, *heads = NULL, *ffn = NULL;
    xf_load_opts_t lo = { 0 };
    xf_diag_t diag = { 0 };
    xf_model_t *m = NULL;
    const xf_model_info_t *mi;
    xf_prune_scores_t *sc = NULL;
    xf_prune_keep_t *keep = NULL;
    xf_tokens_t *seqs = NULL;
    int32_t n_seq = 0;
    char *buf = NULL, **lines = NULL;
    size_t *lens = NULL, n_lines = 0;
    FILE *f;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            prune_usage(stdout);
            return 0;
        }
        if (cli_common_opt(argc, argv, &i, &c))
            continue;
        if ((v = cli_opt(argc, argv, &i, "--calib")))
            calib = v;
        else if ((v = cli_opt(argc, argv, &i, "--heads")))
            heads_s = v;
        else if ((v = cli_opt(argc, argv, &i, "--ffn")))
            ffn_s = v;
        else if ((v = cli_opt(argc, argv, &i, "--out")))
            out = v;
        else if ((v = cli_opt(argc, argv, &i, "--scores")))
            scores_in = v;
        else if ((v = cli_opt(argc, argv, &i, "--save-scores")))
            scores_out = v;
        else if ((v = cli_opt(argc, argv, &i, "--max-len")))
            max_len = (int32_t)cli_int("--max-len", v, 2, 1 << 20);
        else {
            fprintf(stderr, "xformd-cli prune: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!c.model_dir || (!calib == !scores_in) || !heads_s || !ffn_s || !out) {
        fprintf(stderr, "xformd-cli prune: --model, --heads, --ffn, --out and one of --calib "
                        "or --scores are required (try --help)\n");
        return 2;
    }
    if (c.quantize && strcmp(c.quantize, "none")) {
        fprintf(stderr, "xformd-cli prune: --quantize: pruning reads and writes fp32 weights "
                        "(quantise the pruned model when serving it)\n");
        return 2;
    }
    if (out_dir_busy(out)) {
        fprintf(stderr, "xformd-cli prune: --out %s exists and is not an empty directory\n",
                out);
        return 2;
    }
    if (out_parent_bad(out))
        return 2;
    if (calib) {
        if (!(f = open_input("--calib", calib)))
            return 2;
        n_lines = cli_read_lines(f, &buf, &lines, &lens);
        fclose(f);
    }

    lo.attention = c.attention;
    rc = xf_model_load(c.model_dir, &lo, &m, &diag);
    if (rc < 0) {
        fprintf(stderr, "xformd-cli prune: cannot load model %s: %s\n", c.model_dir,
                diag.msg[0] ? diag.msg : xf_strerror(rc));
        rc = 2;
        goto done;
    }
    mi = xf_model_info(m);
    heads = calloc((size_t)mi->n_layer, sizeof *heads);
    ffn = calloc((size_t)mi->n_layer, sizeof *ffn);
    seqs = calloc(n_lines ? n_lines : 1, sizeof *seqs);
    if (!heads || !ffn || !seqs) {
        fprintf(stderr, "xformd-cli prune: out of memory\n");
        rc = 1;
        goto done;
    }
    parse_targets("--heads", heads_s, mi->n_layer, heads);
    parse_targets("--ffn", ffn_s, mi->n_layer, ffn);
    for (int32_t l = 0; l < mi->n_layer; l++) {
        if (heads[l] > mi->layers[l].n_head) {
            fprintf(stderr, "xformd-cli prune: --heads: layer %d has %d heads, cannot keep "
                            "%d\n", l, mi->layers[l].n_head, heads[l]);
            rc = 2;
            goto done;
        }
        if (ffn[l] > mi->layers[l].d_ff) {
            fprintf(stderr, "xformd-cli prune: --ffn: layer %d has %d FFN units, cannot keep "
                            "%d\n", l, mi->layers[l].d_ff, ffn[l]);
            rc = 2;
            goto done;
        }
    }

    if (scores_in) {
        load_scores(scores_in, mi, &loaded);
        sc = &loaded;
        goto select;
    }
    /* Calibration texts: every non-blank line, cut to max_len tokens. */
    for (size_t k = 0; k < n_lines; k++) {
        xf_tok_opts_t to = { 0 };
        size_t j = 0;
        while (j < lens[k] && (lines[k][j] == ' ' || lines[k][j] == '\t' ||
                               lines[k][j] == '\r'))
            j++;
        if (j == lens[k])
            continue;
        to.max_len = max_len < mi->max_positions ? max_len : mi->max_positions;
        to.truncate = 1;
        rc = xf_tokenizer_encode(xf_model_tokenizer(m), lines[k], lens[k], NULL, 0, &to,
                                 &seqs[n_seq], &diag);
        if (rc < 0) {
            fprintf(stderr, "xformd-cli prune: --calib %s: line %zu: %s\n", calib, k + 1,
                    diag.msg[0] ? diag.msg : xf_strerror(rc));
            rc = 2;
            goto done;
        }
        n_seq++;
    }
    if (n_seq == 0) {
        fprintf(stderr, "xformd-cli prune: --calib %s: no text (one text per line; blank "
                        "lines are skipped)\n", calib);
        rc = 2;
        goto done;
    }
    if (mi->is_demo)
        fprintf(stderr, "xformd-cli: note: %s is the demo model with RANDOM weights\n",
                c.model_dir);
    fprintf(stderr, "xformd-cli prune: scoring %d layers on %d calibration texts (%d "
                    "ablation passes)\n", mi->n_layer, n_seq, 1 + mi->n_layer *
                    mi->layers[0].n_head);
    rc = xf_prune_score(m, seqs, n_seq, c.threads, &sc, &diag);
    if (rc == 0 && scores_out && save_scores(scores_out, sc) < 0)
        rc = -EIO;
select:
    if (rc == 0)
        rc = xf_prune_select(sc, heads, ffn, &keep, &diag);
    if (rc == 0)
        rc = xf_prune_write(m, keep, out, &diag);
    if (rc < 0) {
        if (rc != -EIO || diag.msg[0])
            fprintf(stderr, "xformd-cli prune: %s\n", diag.msg[0] ? diag.msg : xf_strerror(rc));
        rc = rc == -EEXIST || rc == -EINVAL ? 2 : 1;
        goto done;
    }
    for (int32_t l = 0; l < mi->n_layer; l++) {
        printf("layer %d heads %d/%d kept", l, keep->n_head[l], mi->layers[l].n_head);
        for (int32_t i = 0; i < keep->n_head[l]; i++)
            printf("%s%d", i ? "," : " ", keep->head[l][i]);
        printf(" scores");
        for (int32_t h = 0; h < sc->n_head[l]; h++)
            printf("%s%.4f", h ? "," : " ", (double)sc->head[l][h]);
        printf(" ffn %d/%d\n", keep->n_ffn[l], mi->layers[l].d_ff);
    }
    fprintf(stderr, "xformd-cli prune: wrote %s (scores from %lld calibration tokens%s)\n",
            out, (long long)sc->n_tokens, scores_in ? ", --scores" : "");
    rc = 0;
done:
    for (size_t i = 0; seqs && i < n_lines; i++)
        xf_tokens_deinit(&seqs[i]);
    free(seqs);
    xf_prune_keep_free(keep);
    if (sc == &loaded)
        free_scores(&loaded);
    else
        xf_prune_scores_free(sc);
    free(heads);
    free(ffn);
    xf_model_free(m);
    free(lines);
    free(lens);
    free(buf);
    return rc;
}
