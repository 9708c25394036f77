/* Configuration: everything generated from conf.def — defaults, value parsing with ranges,
 * the config file reader, the command line, --help, etc/xformd.conf and the /v1/stats JSON.
 * Main thread only, before the server starts. Errors name the option, the value, the allowed
 * range and where the value came from. */
#include "config.h"

#include "server/conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/cors.h"

#define XF_DESC_BOOL(dv, lo, hi) .def_i = (dv), .min = 0, .max = 1
#define XF_DESC_INT(dv, lo, hi) .def_i = (dv), .min = (lo), .max = (hi)
#define XF_DESC_SIZE(dv, lo, hi) .def_i = (dv), .min = (lo), .max = (hi)
#define XF_DESC_DURATION(dv, lo, hi) .def_i = (dv), .min = (lo), .max = (hi)
#define XF_DESC_STRING(dv, lo, hi) .def_s = (dv)
#define XF_DESC_PATH(dv, lo, hi) .def_s = (dv)
#define XF_DESC_ENUM(dv, lo, hi) .def_s = (dv), .choices = (lo)

static const xf_opt_desc_t opts[] = {
#define XF_OPT(fld_, name_, ty_, dv, lo, hi, help_)                                   \
    { .name = name_, .field = #fld_, .type = XF_OPT_##ty_,                              \
      .offset = offsetof(xf_conf_t, fld_), XF_DESC_##ty_(dv, lo, hi), .help = help_ },
#include "server/conf.def"
#undef XF_OPT
};

_Static_assert(sizeof(opts) / sizeof(opts[0]) == XF_OPT_COUNT, "conf.def and enum disagree");

/* Each field's type must match the table's, or the offset arithmetic below lies. */
#define XF_CHECK_BOOL(f) _Generic(((xf_conf_t *)0)->f, bool: 1, default: 0)
#define XF_CHECK_INT(f) _Generic(((xf_conf_t *)0)->f, int64_t: 1, default: 0)
#define XF_CHECK_SIZE(f) XF_CHECK_INT(f)
#define XF_CHECK_DURATION(f) XF_CHECK_INT(f)
#define XF_CHECK_STRING(f) _Generic(((xf_conf_t *)0)->f, char *: 1, default: 0)
#define XF_CHECK_PATH(f) XF_CHECK_STRING(f)
#define XF_CHECK_ENUM(f) _Generic(((xf_conf_t *)0)->f, int: 1, default: 0)
_Static_assert(1
#define XF_OPT(field, name, type, def, min, max, help) && XF_CHECK_##type(field)
#include "server/conf.def"
#undef XF_OPT
               , "a conf.def field has the wrong C type");

const xf_opt_desc_t *xf_conf_table(size_t *n)
{
    if (n)
        *n = XF_OPT_COUNT;
    return opts;
}

const xf_opt_desc_t *xf_conf_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < XF_OPT_COUNT; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/* ENUM choice i of a '|' list: start pointer and length. Returns 0 or -1 when out of range. */
static int choice_at(const char *choices, int i, const char **s, size_t *len)
{
    const char *p = choices;
    for (int k = 0; p; k++) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (k == i) {
            *s = p;
            *len = l;
            return 0;
        }
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

static int choice_index(const char *choices, const char *v)
{
    const char *s;
    size_t l;
    for (int i = 0; choice_at(choices, i, &s, &l) == 0; i++)
        if (strlen(v) == l && strncasecmp(s, v, l) == 0)
            return i;
    return -1;
}

/* Choice names are cut out of the table once (pthread_once: /v1/stats reads them from MHD
 * threads); 16 choices per option is plenty. */
#define XF_MAX_CHOICES 16
static char enum_names[XF_OPT_COUNT][XF_MAX_CHOICES][24];
static pthread_once_t enum_once = PTHREAD_ONCE_INIT;

static void enum_names_init(void)
{
    for (size_t id = 0; id < XF_OPT_COUNT; id++) {
        if (opts[id].type != XF_OPT_ENUM)
            continue;
        const char *s;
        size_t l;
        for (int i = 0; i < XF_MAX_CHOICES && choice_at(opts[id].choices, i, &s, &l) == 0; i++)
            if (l < sizeof(enum_names[0][0]))
                memcpy(enum_names[id][i], s, l);   /* zero-filled: stays NUL-terminated */
    }
}

const char *xf_conf_enum_name(enum xf_opt_id id, int idx)
{
    if ((int)id < 0 || id >= XF_OPT_COUNT || opts[id].type != XF_OPT_ENUM || idx < 0 ||
        idx >= XF_MAX_CHOICES)
        return NULL;
    pthread_once(&enum_once, enum_names_init);
    return enum_names[id][idx][0] ? enum_names[id][idx] : NULL;
}

static void *field_ptr(xf_conf_t *cfg, const xf_opt_desc_t *d)
{
    return (char *)cfg + d->offset;
}

static const void *cfield_ptr(const xf_conf_t *cfg, const xf_opt_desc_t *d)
{
    return (const char *)cfg + d->offset;
}

static void diag_set(xf_diag_t *diag, int code, const char *fmt, ...) XF_PRINTF(3, 4);
static void diag_set(xf_diag_t *diag, int code, const char *fmt, ...)
{
    if (!diag)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(diag->msg, sizeof(diag->msg), fmt, ap);
    va_end(ap);
    diag->code = code;
}

/* The table's defaults into cfg (zeroed by the caller): strings strdup'ed when copy (then
 * -ENOMEM is possible; what was set stays for xf_conf_deinit), else pointing at the table's
 * literals. One loop for xf_conf_init and the shared defaults, so they cannot disagree. */
static int fill_defaults(xf_conf_t *cfg, int copy)
{
    for (size_t i = 0; i < XF_OPT_COUNT; i++) {
        const xf_opt_desc_t *d = &opts[i];
        void *p = field_ptr(cfg, d);
        switch (d->type) {
        case XF_OPT_BOOL:
            *(bool *)p = d->def_i != 0;
            break;
        case XF_OPT_INT:
        case XF_OPT_SIZE:
        case XF_OPT_DURATION:
            *(int64_t *)p = d->def_i;
            break;
        case XF_OPT_STRING:
        case XF_OPT_PATH:
            if (!copy) {
                *(const char **)p = d->def_s;   /* never written through: the struct is const */
                break;
            }
            *(char **)p = strdup(d->def_s);
            if (!*(char **)p)
                return -ENOMEM;
            break;
        case XF_OPT_ENUM:
            *(int *)p = choice_index(d->choices, d->def_s);
            break;
        }
    }
    return 0;
}

int xf_conf_init(xf_conf_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = fill_defaults(cfg, 1);
    if (rc < 0)
        xf_conf_deinit(cfg);
    return rc;
}

/* The defaults with strings pointing at the table's literals: nothing to free, so it can be
 * built once and shared. */
static xf_conf_t defaults;
static pthread_once_t defaults_once = PTHREAD_ONCE_INIT;

static void defaults_init(void)
{
    (void)fill_defaults(&defaults, 0);   /* no copies: cannot fail */
}

const xf_conf_t *xf_conf_defaults(void)
{
    pthread_once(&defaults_once, defaults_init);
    return &defaults;
}

void xf_conf_deinit(xf_conf_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < XF_OPT_COUNT; i++) {
        if (opts[i].type == XF_OPT_STRING || opts[i].type == XF_OPT_PATH) {
            char **p = field_ptr(cfg, &opts[i]);
            free(*p);
            *p = NULL;
        }
    }
    free(cfg->config_path);
    cfg->config_path = NULL;
}

/* "1M" → 1048576: digits, optional k/M/G (1024-based), optional "B"/"iB". */
static int parse_size(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)v[0]))
        return -1;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return -1;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ULL << 10; end++; break;
    case 'm': case 'M': mul = 1ULL << 20; end++; break;
    case 'g': case 'G': mul = 1ULL << 30; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0' || n > (unsigned long long)INT64_MAX / mul)
        return -1;
    *out = (int64_t)(n * mul);
    return 0;
}

/* "250ms", "30s", "2m", plain digits = milliseconds. */
static int parse_duration(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)v[0]))
        return -1;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return -1;
    unsigned long long mul;
    if (strcmp(end, "") == 0 || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -1;
    if (n > (unsigned long long)INT64_MAX / mul)
        return -1;
    *out = (int64_t)(n * mul);
    return 0;
}

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    if (!(isdigit((unsigned char)v[0]) || ((v[0] == '-' || v[0] == '+') &&
                                           isdigit((unsigned char)v[1]))))
        return -1;
    long long n = strtoll(v, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = n;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static const char *type_name(enum xf_opt_type t)
{
    switch (t) {
    case XF_OPT_BOOL: return "BOOL";
    case XF_OPT_INT: return "INT";
    case XF_OPT_SIZE: return "SIZE";
    case XF_OPT_DURATION: return "DURATION";
    case XF_OPT_STRING: return "STRING";
    case XF_OPT_PATH: return "PATH";
    case XF_OPT_ENUM: return "ENUM";
    }
    return "?";
}

static void fmt_size(int64_t v, char *buf, size_t len)
{
    if (v != 0 && v % (1LL << 30) == 0)
        snprintf(buf, len, "%" PRId64 "G", v >> 30);
    else if (v != 0 && v % (1LL << 20) == 0)
        snprintf(buf, len, "%" PRId64 "M", v >> 20);
    else if (v != 0 && v % (1LL << 10) == 0)
        snprintf(buf, len, "%" PRId64 "k", v >> 10);
    else
        snprintf(buf, len, "%" PRId64, v);
}

static void fmt_duration(int64_t ms, char *buf, size_t len)
{
    if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, len, "%" PRId64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRId64 "ms", ms);
}

/* The allowed values of an option, for error messages and --help. */
static void fmt_range(const xf_opt_desc_t *d, char *buf, size_t len)
{
    char a[32], b[32];
    switch (d->type) {
    case XF_OPT_BOOL:
        snprintf(buf, len, "yes|no|true|false|on|off|1|0");
        break;
    case XF_OPT_INT:
        snprintf(buf, len, "integer in [%" PRId64 ", %" PRId64 "]", d->min, d->max);
        break;
    case XF_OPT_SIZE:
        fmt_size(d->min, a, sizeof(a));
        fmt_size(d->max, b, sizeof(b));
        snprintf(buf, len, "size in [%s, %s] (bytes, k/M/G suffixes)", a, b);
        break;
    case XF_OPT_DURATION:
        fmt_duration(d->min, a, sizeof(a));
        fmt_duration(d->max, b, sizeof(b));
        snprintf(buf, len, "duration in [%s, %s] (ms, s, m suffixes; plain = ms)", a, b);
        break;
    case XF_OPT_STRING:
        snprintf(buf, len, "a string");
        break;
    case XF_OPT_PATH:
        snprintf(buf, len, "a file system path");
        break;
    case XF_OPT_ENUM:
        snprintf(buf, len, "one of %s", d->choices);
        break;
    }
}

int xf_conf_set(xf_conf_t *cfg, const char *name, const char *value, const char *where,
                xf_diag_t *diag)
{
    const char *w = where ? where : "";
    const char *sep = where ? ": " : "";
    const xf_opt_desc_t *d = xf_conf_find(name);
    if (!d) {
        diag_set(diag, XF_ENOTFOUND, "%s%sunknown option '%s' (see --help)", w, sep,
                 name ? name : "");
        return XF_ENOTFOUND;
    }
    if (!value)
        value = "";
    void *p = field_ptr(cfg, d);
    int64_t iv = 0;
    int bad = 0;
    switch (d->type) {
    case XF_OPT_BOOL: {
        bool bv;
        if (parse_bool(value, &bv) != 0) {
            bad = 1;
            break;
        }
        *(bool *)p = bv;
        return 0;
    }
    case XF_OPT_INT:
        bad = parse_int(value, &iv) != 0;
        break;
    case XF_OPT_SIZE:
        bad = parse_size(value, &iv) != 0;
        break;
    case XF_OPT_DURATION:
        bad = parse_duration(value, &iv) != 0;
        break;
    case XF_OPT_STRING:
    case XF_OPT_PATH: {
        if (strlen(value) > 65536 || (d->type == XF_OPT_PATH && strlen(value) > 4095)) {
            bad = 1;
            break;
        }
        char *s = strdup(value);
        if (!s) {
            diag_set(diag, -ENOMEM, "%s%s%s: out of memory", w, sep, d->name);
            return -ENOMEM;
        }
        free(*(char **)p);
        *(char **)p = s;
        return 0;
    }
    case XF_OPT_ENUM: {
        int idx = choice_index(d->choices, value);
        if (idx < 0) {
            bad = 1;
            break;
        }
        *(int *)p = idx;
        return 0;
    }
    }
    char range[128];
    fmt_range(d, range, sizeof(range));
    if (bad) {
        diag_set(diag, XF_EPARAM, "%s%s%s: invalid value '%.200s' (want %s)", w, sep, d->name,
                 value, range);
        return XF_EPARAM;
    }
    if (iv < d->min || iv > d->max) {
        diag_set(diag, XF_EPARAM, "%s%s%s: value '%.200s' out of range (want %s)", w, sep,
                 d->name, value, range);
        return XF_EPARAM;
    }
    *(int64_t *)p = iv;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                     s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Parse the value part of a line in place. Returns 0, or -1 with *why set. */
static int parse_value(char *v, char **out, const char **why)
{
    if (*v == '"') {
        char *r = v + 1, *wr = v;
        for (;; r++) {
            if (*r == '\0') {
                *why = "unterminated quoted value";
                return -1;
            }
            if (*r == '"')
                break;
            if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
                r++;
            *wr++ = *r;
        }
        *wr = '\0';
        char *rest = trim(r + 1);
        if (*rest != '\0' && *rest != '#') {
            *why = "text after the closing quote";
            return -1;
        }
        *out = v;
        return 0;
    }
    for (char *c = v; *c; c++) {
        if (*c == '#' && (c == v || c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    }
    *out = trim(v);
    return 0;
}

int xf_conf_load_file(xf_conf_t *cfg, const char *path, xf_diag_t *diag)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        diag_set(diag, -e, "%s: cannot open config file: %s", path, strerror(e));
        return -e;
    }
    /* Lines up to 64 KiB (model.attention JSON can be long); a longer one, or a NUL byte, is
     * refused rather than silently cut. */
    const size_t max_line = 65536;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0, rc = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char where[600];
        snprintf(where, sizeof(where), "%.500s:%d", path, lineno);
        if ((size_t)got > max_line) {
            diag_set(diag, XF_EFORMAT, "%s: line longer than %zu bytes", where, max_line);
            rc = XF_EFORMAT;
            break;
        }
        if (memchr(line, '\0', (size_t)got) != NULL) {
            diag_set(diag, XF_EFORMAT, "%s: NUL byte in the line", where);
            rc = XF_EFORMAT;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            diag_set(diag, XF_EFORMAT, "%s: expected 'name = value', got '%.200s'", where, s);
            rc = XF_EFORMAT;
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value;
        const char *why = NULL;
        if (parse_value(trim(eq + 1), &value, &why) != 0) {
            diag_set(diag, XF_EFORMAT, "%s: %s: %s", where, name, why);
            rc = XF_EFORMAT;
            break;
        }
        rc = xf_conf_set(cfg, name, value, where, diag);
        if (rc != 0)
            break;
    }
    if (rc == 0 && ferror(f)) {
        diag_set(diag, -EIO, "%s: read error", path);
        rc = -EIO;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Short aliases of the command line. */
static const struct { const char *alias, *name; } aliases[] = {
    {"model", "model.dir"},         {"port", "http.port"},
    {"listen", "http.listen"},      {"policy", "batcher.policy"},
    {"threads", "engine.threads"},  {"api-key", "auth.api_key"},
};

static int set_config_path(xf_conf_t *cfg, const char *v, xf_diag_t *diag)
{
    char *s = strdup(v);
    if (!s) {
        diag_set(diag, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    free(cfg->config_path);
    cfg->config_path = s;
    return 0;
}

/* Walk argv; when only_config, handle just -c/--config (and skip option values). */
static int walk_args(xf_conf_t *cfg, int argc, char *const *argv, bool only_config,
                     xf_diag_t *diag)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cfg->help = true;
            continue;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            cfg->version = true;
            continue;
        }
        if (strcmp(a, "--check-config") == 0) {
            cfg->check_config = true;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                diag_set(diag, -EINVAL, "%s: missing file name", a);
                return -EINVAL;
            }
            i++;
            if (only_config) {
                int rc = set_config_path(cfg, argv[i], diag);
                if (rc)
                    return rc;
            }
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            if (only_config) {
                int rc = set_config_path(cfg, a + 9, diag);
                if (rc)
                    return rc;
            }
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            diag_set(diag, -EINVAL, "unexpected argument '%.200s' (see --help)", a);
            return -EINVAL;
        }
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (nl >= sizeof(name)) {
            diag_set(diag, XF_ENOTFOUND, "unknown option '%.100s...' (see --help)", a);
            return XF_ENOTFOUND;
        }
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        for (size_t k = 0; k < sizeof(aliases) / sizeof(aliases[0]); k++)
            if (strcmp(name, aliases[k].alias) == 0)
                snprintf(name, sizeof(name), "%s", aliases[k].name);
        const xf_opt_desc_t *d = xf_conf_find(name);
        if (!d) {
            diag_set(diag, XF_ENOTFOUND, "unknown option '--%s' (see --help)", name);
            return XF_ENOTFOUND;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (d->type == XF_OPT_BOOL) {
            bool bv;
            if (i + 1 < argc && parse_bool(argv[i + 1], &bv) == 0)
                value = argv[++i];
            else
                value = "yes";
        } else {
            if (i + 1 >= argc) {
                diag_set(diag, -EINVAL, "--%s: missing value", name);
                return -EINVAL;
            }
            /* "--api-key --check-config": the next word is an option, not this one's value
             * (a value that starts with "-" is written --name=VALUE). */
            const char *next = argv[i + 1];
            if (next[0] == '-' && next[1] != '\0' && !(next[1] >= '0' && next[1] <= '9')) {
                diag_set(diag, -EINVAL, "%.100s: missing value (the next argument '%.100s' is "
                         "an option; write %.100s=VALUE for a value that starts with '-')", a,
                         next, a);
                return -EINVAL;
            }
            value = argv[++i];
        }
        if (only_config)
            continue;
        int rc = xf_conf_set(cfg, name, value, "command line", diag);
        if (rc)
            return rc;
    }
    return 0;
}

int xf_conf_parse_args(xf_conf_t *cfg, int argc, char *const *argv, xf_diag_t *diag)
{
    int rc = walk_args(cfg, argc, argv, true, diag);
    return rc ? rc : walk_args(cfg, argc, argv, false, diag);
}

int xf_conf_validate(const xf_conf_t *cfg, xf_diag_t *diag)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, cfg->http_listen, addr) != 1 &&
        inet_pton(AF_INET6, cfg->http_listen, addr) != 1) {
        diag_set(diag, XF_EPARAM, "http.listen: '%.200s' is not an IPv4 or IPv6 address",
                 cfg->http_listen);
        return XF_EPARAM;
    }
    if (cfg->model_attention[0]) {
        json_error_t jerr;
        json_t *j = json_loads(cfg->model_attention, JSON_REJECT_DUPLICATES, &jerr);
        int ok = j && json_is_object(j);
        json_decref(j);
        if (!ok) {
            diag_set(diag, XF_EPARAM, "model.attention: not a JSON object (%s)",
                     j ? "another JSON type" : jerr.text);
            return XF_EPARAM;
        }
    }
    if (cfg->redis_url[0] && strncmp(cfg->redis_url, "redis://", 8) != 0 &&
        strncmp(cfg->redis_url, "unix://", 7) != 0) {
        diag_set(diag, XF_EPARAM, "redis.url: want redis://host:port[/db] or unix:///path");
        return XF_EPARAM;
    }
    char cerr[200];
    if (xf_cors_check(cfg->http_cors_allow_origin, cerr, sizeof cerr) < 0) {
        diag_set(diag, XF_EPARAM, "%s", cerr);
        return XF_EPARAM;
    }
    if (cfg->http_max_connections_per_ip >= cfg->http_connection_limit) {
        diag_set(diag, XF_EPARAM,
                 "http.max_connections_per_ip (%" PRId64 ") must be below "
                 "http.connection_limit (%" PRId64 ") so one address cannot take every slot",
                 cfg->http_max_connections_per_ip, cfg->http_connection_limit);
        return XF_EPARAM;
    }
    if (cfg->request_timeout_ms > cfg->request_max_timeout_ms) {
        diag_set(diag, XF_EPARAM,
                 "request.timeout_ms (%" PRId64 ") exceeds request.max_timeout_ms (%" PRId64 ")",
                 (int64_t)cfg->request_timeout_ms, (int64_t)cfg->request_max_timeout_ms);
        return XF_EPARAM;
    }
    if (cfg->request_max_tokens > cfg->batcher_max_queued_tokens) {
        diag_set(diag, XF_EPARAM,
                 "request.max_tokens (%" PRId64 ") exceeds batcher.max_queued_tokens (%" PRId64
                 "): such requests could never be admitted",
                 cfg->request_max_tokens, cfg->batcher_max_queued_tokens);
        return XF_EPARAM;
    }
    return 0;
}

/* The API key from auth.api_key_file (first line), else auth.api_key, else $XFORMD_API_KEY:
 * the file and the environment keep the key out of /proc/PID/cmdline. */
static int resolve_api_key(xf_conf_t *cfg, xf_diag_t *diag)
{
    char *key = NULL;
    if (cfg->auth_api_key_file[0]) {
        FILE *f = fopen(cfg->auth_api_key_file, "r");
        if (!f) {
            int e = errno;
            diag_set(diag, XF_EPARAM, "auth.api_key_file: cannot open %.500s: %s",
                     cfg->auth_api_key_file, strerror(e));
            return XF_EPARAM;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t got = getline(&line, &cap, f);
        fclose(f);
        if (got > 0)
            line[strcspn(line, "\r\n")] = '\0';
        if (got <= 0 || !line[0]) {
            free(line);
            diag_set(diag, XF_EPARAM, "auth.api_key_file: %.500s: no key on its first line",
                     cfg->auth_api_key_file);
            return XF_EPARAM;
        }
        key = line;
    } else if (!cfg->auth_api_key[0] && getenv("XFORMD_API_KEY")) {
        key = strdup(getenv("XFORMD_API_KEY"));
        if (!key) {
            diag_set(diag, -ENOMEM, "out of memory");
            return -ENOMEM;
        }
    }
    if (key) {
        free(cfg->auth_api_key);
        cfg->auth_api_key = key;
    }
    return 0;
}

int xf_conf_load(xf_conf_t *cfg, int argc, char *const *argv, xf_diag_t *diag)
{
    int rc = xf_conf_init(cfg);
    if (rc) {
        diag_set(diag, rc, "out of memory");
        memset(cfg, 0, sizeof(*cfg));   /* deinit is then a no-op */
        return rc;
    }
    rc = walk_args(cfg, argc, argv, true, diag);
    if (rc)
        return rc;
    if (cfg->config_path && !cfg->help && !cfg->version) {
        rc = xf_conf_load_file(cfg, cfg->config_path, diag);
        if (rc)
            return rc;
    }
    rc = walk_args(cfg, argc, argv, false, diag);
    if (rc || cfg->help || cfg->version)
        return rc;
    rc = resolve_api_key(cfg, diag);
    if (rc)
        return rc;
    return xf_conf_validate(cfg, diag);
}

int xf_conf_format(const xf_conf_t *cfg, const xf_opt_desc_t *d, char *buf, size_t len)
{
    const void *p = cfield_ptr(cfg, d);
    char tmp[64];
    switch (d->type) {
    case XF_OPT_BOOL:
        return snprintf(buf, len, "%s", *(const bool *)p ? "yes" : "no");
    case XF_OPT_INT:
        return snprintf(buf, len, "%" PRId64, *(const int64_t *)p);
    case XF_OPT_SIZE:
        fmt_size(*(const int64_t *)p, tmp, sizeof(tmp));
        return snprintf(buf, len, "%s", tmp);
    case XF_OPT_DURATION:
        fmt_duration(*(const int64_t *)p, tmp, sizeof(tmp));
        return snprintf(buf, len, "%s", tmp);
    case XF_OPT_STRING:
    case XF_OPT_PATH: {
        const char *s = *(char *const *)p;
        return snprintf(buf, len, "%s", s ? s : "");
    }
    case XF_OPT_ENUM: {
        const char *s = xf_conf_enum_name((enum xf_opt_id)(d - opts), *(const int *)p);
        return snprintf(buf, len, "%s", s ? s : "?");
    }
    }
    return snprintf(buf, len, "?");
}

/* The default as the config file spells it. */
static void fmt_default(const xf_opt_desc_t *d, char *buf, size_t len)
{
    switch (d->type) {
    case XF_OPT_BOOL: snprintf(buf, len, "%s", d->def_i ? "yes" : "no"); break;
    case XF_OPT_INT: snprintf(buf, len, "%" PRId64, d->def_i); break;
    case XF_OPT_SIZE: fmt_size(d->def_i, buf, len); break;
    case XF_OPT_DURATION: fmt_duration(d->def_i, buf, len); break;
    case XF_OPT_STRING:
    case XF_OPT_PATH:
    case XF_OPT_ENUM: snprintf(buf, len, "%s", d->def_s); break;
    }
}

static size_t section_len(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

/* The name the user typed: argv0's basename, without libtool's "lt-" prefix (an uninstalled
 * build runs .libs/lt-xformd). */
static const char *prog_name(const char *argv0)
{
    if (!argv0 || !argv0[0])
        return "xformd";
    const char *b = strrchr(argv0, '/');
    b = b ? b + 1 : argv0;
    if (!strncmp(b, "lt-", 3) && b[3])
        b += 3;
    return b;
}

/* One line (or block) of --help or of the example file for option d, its default and range
 * already formatted. */
typedef void opt_line_fn(FILE *out, const xf_opt_desc_t *d, const char *def, const char *range);

/* Every option in table order through line(); a section's first option ("http" of
 * "http.port") is preceded by the header "\n<pre><section><post>\n". */
static void each_opt(FILE *out, const char *pre, const char *post, opt_line_fn *line)
{
    const char *prev = "";
    size_t prev_len = 0;
    for (size_t i = 0; i < XF_OPT_COUNT; i++) {
        const xf_opt_desc_t *d = &opts[i];
        size_t sl = section_len(d->name);
        if (sl != prev_len || strncmp(prev, d->name, sl) != 0) {
            fprintf(out, "\n%s%.*s%s\n", pre, (int)sl, d->name, post);
            prev = d->name;
            prev_len = sl;
        }
        char def[128], range[128];
        fmt_default(d, def, sizeof(def));
        fmt_range(d, range, sizeof(range));
        line(out, d, def, range);
    }
}

static void help_line(FILE *out, const xf_opt_desc_t *d, const char *def, const char *range)
{
    fprintf(out, "  --%s=%s\n      %s.\n      Default: %s%s%s; %s.\n", d->name,
            type_name(d->type), d->help, def[0] ? "" : "\"", def, def[0] ? "" : "\"", range);
}

/* Commented out at its default: "#name = value" ("#name =" for an empty default). */
static void example_line(FILE *out, const xf_opt_desc_t *d, const char *def,
                         const char *range)
{
    fprintf(out, "\n# %s.\n# Allowed: %s.\n#%s =%s%s\n", d->help, range, d->name,
            def[0] ? " " : "", def);
}

int xf_conf_help(FILE *out, const char *argv0)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--OPTION VALUE | --OPTION=VALUE]...\n"
            "Serve BERT-family encoders over HTTP (KServe v2, OpenAI embeddings, TEI).\n\n"
            "  -c, --config FILE   read options from FILE (name = value lines)\n"
            "  --check-config      validate the configuration and exit\n"
            "  -h, --help          print this help and exit\n"
            "  -V, --version       print the version and exit\n"
            "  --model DIR, --port N, --listen ADDR, --policy P, --threads N, --api-key KEY\n"
            "                      short for --model.dir, --http.port, --http.listen,\n"
            "                      --batcher.policy, --engine.threads, --auth.api_key\n\n"
            "Precedence: defaults < config file < command line. Sizes take k/M/G suffixes,\n"
            "durations ms/s/m (a plain number is milliseconds), booleans yes/no.\n",
            prog_name(argv0));
    each_opt(out, "", " options:", help_line);
    return ferror(out) ? -EIO : 0;
}

int xf_conf_write_example(FILE *out)
{
    fputs("# xformd configuration. Every option is listed, commented out at its default.\n"
          "# Syntax: name = value; '#' starts a comment; quote values with \"...\" to keep\n"
          "# spaces or '#'. Sizes take k/M/G suffixes, durations ms/s/m (plain = ms).\n"
          "# Command-line flags (--name value) override this file; see xformd --help.\n"
          "# Generated from src/server/conf.def: tests/server/test_conf fails when they differ\n"
          "# (XF_REGEN_CONF=1 make check TESTS=tests/server/test_conf rewrites it).\n",
          out);
    each_opt(out, "# ---- ", " ----", example_line);
    return ferror(out) ? -EIO : 0;
}

/* redis://user:secret@host → redis://user:***@host */
static json_t *masked_url(const char *u)
{
    const char *at = strrchr(u, '@');
    const char *scheme = strstr(u, "://");
    const char *start = scheme ? scheme + 3 : u;
    if (!at || at < start)
        return json_string(u);
    const char *colon = memchr(start, ':', (size_t)(at - start));
    const char *cut = colon ? colon + 1 : start;
    size_t n = (size_t)(cut - u);
    char buf[512];
    snprintf(buf, sizeof(buf), "%.*s***%s", (int)(n < 400 ? n : 400), u, at);
    return json_string(buf);
}

json_t *xf_conf_to_json(const xf_conf_t *cfg)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < XF_OPT_COUNT; i++) {
        const xf_opt_desc_t *d = &opts[i];
        const void *p = cfield_ptr(cfg, d);
        json_t *v = NULL;
        switch (d->type) {
        case XF_OPT_BOOL:
            v = json_boolean(*(const bool *)p);
            break;
        case XF_OPT_INT:
        case XF_OPT_SIZE:
        case XF_OPT_DURATION:
            v = json_integer(*(const int64_t *)p);
            break;
        case XF_OPT_STRING:
        case XF_OPT_PATH: {
            const char *s = *(char *const *)p;
            if (!s)
                s = "";
            if (i == XF_OPTID_auth_api_key)
                v = json_string(s[0] ? "<set>" : "");
            else if (i == XF_OPTID_redis_url)
                v = masked_url(s);
            else
                v = json_string(s);
            if (!v)   /* not UTF-8: shown escaped-free as a marker rather than failing */
                v = json_string("<not utf-8>");
            break;
        }
        case XF_OPT_ENUM: {
            const char *s = xf_conf_enum_name((enum xf_opt_id)i, *(const int *)p);
            v = json_string(s ? s : "?");
            break;
        }
        }
        if (!v || json_object_set_new(o, d->name, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* roff text with its special characters escaped (backslash, leading dot or quote). */
static void man_text(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

int xf_conf_write_man(FILE *out, const char *version)
{
    fprintf(out,
            ".TH XFORMD 1 \"\" \"xformd %s\" \"User Commands\"\n"
            ".SH NAME\nxformd \\- CPU inference server for BERT\\-family encoders\n"
            ".SH SYNOPSIS\n.B xformd\n[\\fB\\-c\\fR \\fIFILE\\fR] "
            "[\\fB\\-\\-\\fIOPTION\\fR \\fIVALUE\\fR | "
            "\\fB\\-\\-\\fIOPTION\\fB=\\fIVALUE\\fR]...\n"
            ".SH DESCRIPTION\n"
            "Serves Transformer encoders over HTTP (KServe v2, OpenAI embeddings, TEI routes,\n"
            "Prometheus metrics). Options come from the built\\-in defaults, then the config\n"
            "file, then the command line; later sources win. Sizes take k/M/G suffixes,\n"
            "durations ms/s/m (a plain number is milliseconds), booleans yes/no.\n"
            ".SH GENERAL OPTIONS\n"
            ".TP\n\\fB\\-c\\fR, \\fB\\-\\-config\\fR \\fIFILE\\fR\n"
            "Read options from FILE (name = value lines, # comments).\n"
            ".TP\n\\fB\\-\\-check\\-config\\fR\nValidate the configuration and exit.\n"
            ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nPrint the options and exit.\n"
            ".TP\n\\fB\\-V\\fR, \\fB\\-\\-version\\fR\nPrint the version and exit.\n"
            ".TP\n\\fB\\-\\-model\\fR, \\fB\\-\\-port\\fR, \\fB\\-\\-listen\\fR, "
            "\\fB\\-\\-policy\\fR, \\fB\\-\\-threads\\fR, \\fB\\-\\-api\\-key\\fR\n"
            "Short for \\-\\-model.dir, \\-\\-http.port, \\-\\-http.listen, "
            "\\-\\-batcher.policy, \\-\\-engine.threads, \\-\\-auth.api_key.\n",
            version ? version : "");
    const char *prev = "";
    size_t prev_len = 0;
    for (size_t i = 0; i < XF_OPT_COUNT; i++) {
        const xf_opt_desc_t *d = &opts[i];
        size_t sl = section_len(d->name);
        if (sl != prev_len || strncmp(prev, d->name, sl) != 0) {
            fputs(".SH ", out);
            for (size_t k = 0; k < sl; k++)
                fputc(d->name[k] >= 'a' && d->name[k] <= 'z' ? d->name[k] - 32 : d->name[k],
                      out);
            fputs(" OPTIONS\n", out);
            prev = d->name;
            prev_len = sl;
        }
        char def[128], range[128];
        fmt_default(d, def, sizeof(def));
        fmt_range(d, range, sizeof(range));
        fputs(".TP\n\\fB\\-\\-", out);
        man_text(out, d->name);
        fprintf(out, "\\fR=\\fI%s\\fR\n", type_name(d->type));
        man_text(out, d->help);
        fputs(".\nDefault: ", out);
        man_text(out, def[0] ? def : "(empty)");
        fputs("; ", out);
        man_text(out, range);
        fputs(".\n", out);
    }
    fputs(".SH FILES\n.TP\n.I /usr/local/etc/xformd.conf\n"
          "Every option, commented out at its default.\n"
          ".SH SIGNALS\nSIGTERM and SIGINT drain (finish queued work within drain.timeout_ms, "
          "then exit 0); SIGHUP reopens the log file.\n"
          ".SH EXIT STATUS\n0 on success, 1 on a start\\-up failure, 2 on a configuration "
          "error.\n",
          out);
    return ferror(out) ? -EIO : 0;
}
