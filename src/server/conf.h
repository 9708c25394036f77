/* Configuration: the option table of conf.def turned into a struct, its defaults, the config
 * file and command-line parsers, --help, the /v1/stats "config" object and the text of
 * etc/xformd.conf. Precedence: defaults < file < command line.
 * Named conf, not config: src/server/config.h would shadow Autoconf's "config.h" for every
 * file in src/server. Main thread only, before the server starts; read-only afterwards (any
 * thread may then read the struct). */
#ifndef XF_SERVER_CONF_H
#define XF_SERVER_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <xformd/error.h>

/* C type of each option type. Durations are milliseconds, sizes bytes, enums the index of the
 * choice in the option's list (same order as the C enum its help names). */
#define XF_CONF_CTYPE_BOOL bool
#define XF_CONF_CTYPE_INT int64_t
#define XF_CONF_CTYPE_SIZE int64_t
#define XF_CONF_CTYPE_DURATION int64_t
#define XF_CONF_CTYPE_STRING char *
#define XF_CONF_CTYPE_PATH char *
#define XF_CONF_CTYPE_ENUM int

/* The configuration: one field per option (e.g. cfg.http_port, cfg.batcher_policy) plus what
 * the command line asked for. Strings are never NULL after xf_conf_init ("" when empty) and are
 * owned by the struct (xf_conf_deinit frees them). */
typedef struct xf_conf {
#define XF_OPT(field, name, type, def, min, max, help) XF_CONF_CTYPE_##type field;
#include "server/conf.def"
#undef XF_OPT
    char *config_path;    /* -c/--config FILE, NULL when none */
    bool check_config;    /* --check-config: validate, print a summary, exit 0 */
    bool help;            /* --help: main prints xf_conf_help() and exits 0 */
    bool version;         /* --version: main prints the version and exits 0 */
} xf_conf_t;

enum xf_opt_type {
    XF_OPT_BOOL, XF_OPT_INT, XF_OPT_SIZE, XF_OPT_DURATION, XF_OPT_STRING, XF_OPT_PATH,
    XF_OPT_ENUM
};

/* One row of the option table (introspection, tests). */
typedef struct xf_opt_desc {
    const char *name;      /* "http.port" */
    const char *field;     /* "http_port" */
    enum xf_opt_type type;
    size_t offset;         /* of the field in xf_conf_t */
    int64_t def_i;         /* default for BOOL/INT/SIZE/DURATION */
    const char *def_s;     /* default for STRING/PATH/ENUM */
    int64_t min, max;      /* range for INT/SIZE/DURATION (inclusive) */
    const char *choices;   /* ENUM: "none|fifo|dp|tokens" */
    const char *help;
} xf_opt_desc_t;

/* Option ids, in table order: XF_OPTID_http_port, ... */
enum xf_opt_id {
#define XF_OPT(field, name, type, def, min, max, help) XF_OPTID_##field,
#include "server/conf.def"
#undef XF_OPT
    XF_OPT_COUNT
};

/* The table. Ownership: borrowed, static storage. */
const xf_opt_desc_t *xf_conf_table(size_t *n);
/* The row named `name` ("http.port"), or NULL. */
const xf_opt_desc_t *xf_conf_find(const char *name);
/* Name of choice `idx` of an ENUM option (by id), or NULL when out of range. Ownership:
 * borrowed, static storage. Any thread.
 * Example: xf_conf_enum_name(XF_OPTID_batcher_policy, cfg.batcher_policy) → "dp". */
const char *xf_conf_enum_name(enum xf_opt_id id, int idx);

/* Fill *cfg with the defaults. Returns 0 or -ENOMEM (then *cfg needs no deinit). */
int xf_conf_init(xf_conf_t *cfg);
/* The defaults of the table (every field as xf_conf_init sets it). The only other source of
 * default values: xf_server_opts_init and the batcher's defaults derive from it. Ownership:
 * borrowed, static storage, never freed. Any thread. */
const xf_conf_t *xf_conf_defaults(void);
/* Free the strings; *cfg must be xf_conf_init'ed again before use. NULL is a no-op. */
void xf_conf_deinit(xf_conf_t *cfg);

/* Set one option from its text form, as the file and the command line do ("30s", "1M",
 * "fifo", "yes"). `where` prefixes error messages ("xformd.conf:12" or "--http.port"), NULL
 * for none. Returns 0; XF_ENOTFOUND for an unknown name; XF_EPARAM for a bad value or a value
 * out of range (diag->msg names the option, the value and the allowed range); -ENOMEM. */
int xf_conf_set(xf_conf_t *cfg, const char *name, const char *value, const char *where,
                xf_diag_t *diag);

/* Read `name = value` lines (# comments, blank lines, values may be "quoted" with \" and \\
 * escapes; an unquoted value ends at " #"). Every error names file:line and the option.
 * Returns 0, -errno when the file cannot be read, XF_ENOTFOUND/XF_EPARAM/XF_EFORMAT. */
int xf_conf_load_file(xf_conf_t *cfg, const char *path, xf_diag_t *diag);

/* Apply the command line: --name value, --name=value, bools also as bare --name; aliases
 * --model (model.dir), --port (http.port), --listen (http.listen), --policy (batcher.policy),
 * --threads (engine.threads), --api-key (auth.api_key); flags -c/--config FILE, -h/--help,
 * -V/--version, --check-config. argv[0] is skipped. Returns 0 or an error as xf_conf_set
 * (-EINVAL for a stray positional argument or a missing value). */
int xf_conf_parse_args(xf_conf_t *cfg, int argc, char *const *argv, xf_diag_t *diag);

/* Checks across options, after everything is set: http.listen is an IP literal, a non-empty
 * model.attention is a JSON object, redis.url has a known scheme, request.max_tokens fits in
 * batcher.max_queued_tokens. Returns 0 or XF_EPARAM naming the option(s). */
int xf_conf_validate(const xf_conf_t *cfg, xf_diag_t *diag);

/* The whole start-up sequence: defaults, then the file named by -c/--config (if any), then
 * the rest of the command line, then xf_conf_validate (skipped for --help/--version). On error
 * the caller prints diag->msg and exits with status 2. Returns 0 or an error code (as above);
 * *cfg is initialised either way and needs deinit. */
int xf_conf_load(xf_conf_t *cfg, int argc, char *const *argv, xf_diag_t *diag);

/* Print --help: usage line, then the options grouped by section with type, default, range
 * and help. Returns 0 or -EIO. */
int xf_conf_help(FILE *out, const char *argv0);

/* Write the text of etc/xformd.conf: a preamble, then per section every option commented out
 * at its default with its help above it. Returns 0 or -EIO. */
int xf_conf_write_example(FILE *out);

/* Write the xformd(1) man page (roff): synopsis, general flags, then every option by
 * section with type, help, default and range; files, signals, exit status. Returns 0 or -EIO. */
int xf_conf_write_man(FILE *out, const char *version);

/* Format option `d`'s current value in cfg the way the config file spells it ("30s", "1M",
 * "yes", "fifo", raw string). Returns the length that was needed (like snprintf). */
int xf_conf_format(const xf_conf_t *cfg, const xf_opt_desc_t *d, char *buf, size_t len);

/* The configuration as a JSON object {"http.port": 8080, ...} for /v1/stats. Numbers are
 * numbers (durations ms, sizes bytes), enums their names, auth.api_key "<set>" or "" and
 * the password in redis.url masked. Ownership: new reference (json_decref), NULL on ENOMEM. */
json_t *xf_conf_to_json(const xf_conf_t *cfg);

#endif
