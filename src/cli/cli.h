/* xformd-cli: shared pieces of the subcommands (option parsing, model opening, line input).
 * The CLI sees the engine only through <xformd/...>. Single-threaded apart from the engine. */
#ifndef XF_CLI_H
#define XF_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <xformd/xformd.h>

/* Common options every model-using command takes. */
typedef struct cli_common {
    const char *model_dir;     /* --model DIR; NULL: the demo model in the cache directory */
    int threads;               /* --threads N; 0: all cores */
    const char *attention;     /* --attention JSON */
    const char *quantize;      /* --quantize none|int8|bf16 */
} cli_common;

/* Parse "--name value" / "--name=value" at argv[*i]; returns the value or NULL when argv[*i]
 * is not that option (advances *i past a separate value). Exits 2 when the value is missing. */
const char *cli_opt(int argc, char **argv, int *i, const char *name);
/* Parse an int option value, exit 2 with a message naming the option on error. */
long cli_int(const char *name, const char *val, long min, long max);
/* One int32 option of a table: "--name N" stored in *dst after a range check. */
typedef struct cli_int_opt {
    const char *name;
    long min, max;
    int32_t *dst;
} cli_int_opt;
/* When argv[*i] is one of the n options of tab: parse it (exit 2 naming it when out of range,
 * as cli_int), store it and return 1; else 0. */
int cli_int_opts(int argc, char **argv, int *i, const cli_int_opt *tab, size_t n);
/* 1 (after a message on stderr naming the file and --force) when dir already holds a model
 * (config.json or model.safetensors): mkmodel never overwrites one silently, it may be a real
 * checkpoint. 0 otherwise. */
int cli_model_exists(const char *dir);
/* What every mkmodel writer (BERT, transfo-xl) takes besides its own flags: --out DIR,
 * --seed N (into *seed), --force and its table of int options. */
typedef struct cli_mkmodel {
    const char *out;
    uint64_t *seed;
    int force;
    const cli_int_opt *ints;
    size_t n_ints;
} cli_mkmodel;
/* When argv[*i] is --arch (cmd_mkmodel already chose the writer), --out, --seed, --force or
 * one of mk->ints: take it (exit 2 on a bad value, as cli_int) and return 1; else 0. */
int cli_mkmodel_opt(int argc, char **argv, int *i, cli_mkmodel *mk);
/* After the options: 2 (after a message) without --out, 1 when --out holds a model and
 * --force was not given (cli_model_exists), else 0: write. */
int cli_mkmodel_ready(const cli_mkmodel *mk);
/* The writer's return code: 0 when rc is 0, else 1 after the diag's message (or rc's name). */
int cli_mkmodel_done(int rc, const xf_diag_t *diag);
/* Parse a line of space/tab-separated token ids, each in [0, vocab), appending to the growable
 * array *ids (capacity *cap, grown with realloc) from index 0; *n is the count. Returns 0,
 * -EINVAL (not an id list, or an id out of range) or -ENOMEM. */
int cli_parse_ids(const char *line, int32_t vocab, int32_t **ids, int32_t *n, int32_t *cap);
/* Recognise --model/--threads/--attention/--quantize; returns 1 when argv[*i] was one of them. */
int cli_common_opt(int argc, char **argv, int *i, cli_common *c);

/* The demo model directory under $XDG_CACHE_HOME/xformd (or ~/.cache/xformd), written on first
 * use. Returns 0 and the path in buf, or a negative code with a message on stderr. */
int cli_demo_dir(char *buf, size_t len, int tiny);
/* Load the model named by c (or the demo model) with its attention option; exits 1 on error. */
xf_model_t *cli_open_model(const cli_common *c);

/* Read all of stdin; split on '\n' only. Returns the count of lines; *lines[i] point into
 * *buf (NUL-terminated in place). A final line without '\n' counts; a trailing '\n' does not
 * start another line. Exits 1 on read error. */
size_t cli_read_lines(FILE *in, char **buf, char ***lines, size_t **lens);

void cli_log_stderr(enum xf_log_level level, const char *msg, void *user);

int cmd_tokenize(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_variants(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_mkmodel_txl(int argc, char **argv);

#endif
