/* Attention-internal: variant parameters. Every variant describes its POD parameter block with
 * a table of keys (name, kind, offset, range, names); one parser (xf_at_read_keys) reads a flat
 * JSON object through the table after the defaults are copied in, and one writer
 * (xf_at_write_keys) produces the canonical JSON (every key, defaults included, in table
 * order). The registry calls both (registry.c); no variant writes parse()/to_json() by hand.
 * Below the table: the typed readers it uses (also for custom keys), with range checks and
 * messages naming the key ("window: must be >= 1"). A key that is absent leaves *out untouched
 * (the default). Every reader returns 0 or XF_EPARAM with err filled. */
#ifndef XF_ATTENTION_PARAMS_H
#define XF_ATTENTION_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* ---- parameter tables ---- */

enum xf_at_kind {
    XF_AT_K_INT = 1,   /* int32_t, integer in [lo, hi] */
    XF_AT_K_AUTO,      /* int32_t, "auto" (stored 0) or an integer in [lo, hi] */
    XF_AT_K_REAL,      /* double in [lo, hi]; null keeps the default */
    XF_AT_K_SCALE,     /* float in (lo, hi]; null keeps the default; 0 is written as null */
    XF_AT_K_BOOL,      /* int32_t 0/1 */
    XF_AT_K_ENUM,      /* int32_t index into names[] (NULL-terminated) */
    XF_AT_K_SEED,      /* 64-bit integer >= 0 */
    XF_AT_K_INT_LIST,  /* int32_t[cap] at off, count (int32_t) at count_off: an integer or a
                          list of 1..cap integers in [lo, hi]; written as an integer when the
                          count is 1 */
    XF_AT_K_CUSTOM     /* read and written by the key's own functions */
};

typedef struct xf_at_key xf_at_key_t;
struct xf_at_key {
    const char *key;
    enum xf_at_kind kind;
    size_t off;                  /* offsetof in the params struct */
    double lo, hi;
    const char *const *names;    /* XF_AT_K_ENUM, and custom keys that take names */
    size_t count_off;            /* XF_AT_K_INT_LIST */
    int32_t cap;                 /* XF_AT_K_INT_LIST */
    /* XF_AT_K_CUSTOM: read obj's value of key (present) into params; add it to obj. */
    int (*read)(const xf_at_key_t *k, void *params, const json_t *obj, char *err,
                size_t errlen);
    int (*write)(const xf_at_key_t *k, const void *params, json_t *obj);
};

/* Table rows: XF_AT_KEY(type, field, "name", kind, lo, hi, names); an int list adds the count
 * field and the capacity; a custom key names its functions. */
#define XF_AT_KEY(T, f, name, kind, lo, hi, names)                                           \
    { name, kind, offsetof(T, f), lo, hi, names, 0, 0, NULL, NULL }
#define XF_AT_KEY_LIST(T, f, nf, name, lo, hi)                                               \
    { name, XF_AT_K_INT_LIST, offsetof(T, f), lo, hi, NULL, offsetof(T, nf),                \
      (int32_t)(sizeof(((T *)0)->f) / sizeof(((T *)0)->f[0])), NULL, NULL }
#define XF_AT_KEY_CUSTOM(name, names, rd, wr) { name, XF_AT_K_CUSTOM, 0, 0, 0, names, 0, 0, rd, wr }
/* Entries of a parameter table (an array, not a pointer). */
#define XF_AT_NKEYS(keys) ((int32_t)(sizeof(keys) / sizeof((keys)[0])))

/* Read obj's keys (all but "variant") into params (defaults already there): unknown keys first,
 * then each key in table order. Returns 0 or XF_EPARAM with err naming the key. */
int xf_at_read_keys(const xf_at_key_t *keys, int32_t nkeys, void *params, const json_t *obj,
                    char *err, size_t errlen);
/* Add every key of the table to obj. Returns 0 or -ENOMEM. */
int xf_at_write_keys(const xf_at_key_t *keys, int32_t nkeys, const void *params, json_t *obj);
/* Write "key: msg" into err and return XF_EPARAM. */
int xf_at_key_err(char *err, size_t errlen, const char *key, const char *msg);
/* The same message, returning XF_EUNSUPPORTED: validate() refusing a setting that needs
 * trained tensors the model does not have. */
int xf_at_refuse(char *err, size_t errlen, const char *key, const char *msg);

/* ---- typed readers ---- */

/* Every key of obj except "variant" must appear in the NULL-terminated list keys. */
int xf_at_keys(const json_t *obj, const char *const *keys, char *err, size_t errlen);
/* Integer in [lo, hi]. */
int xf_at_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int32_t *out,
               char *err, size_t errlen);
int xf_at_i64(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
               char *err, size_t errlen);
/* Number (integer or real) in (lo, hi] when lo_open, else [lo, hi]; JSON null leaves *out. */
int xf_at_float(const json_t *obj, const char *key, double lo, int lo_open, double hi,
                 float *out, char *err, size_t errlen);
int xf_at_bool(const json_t *obj, const char *key, int *out, char *err, size_t errlen);
/* String that is one of names[0..) (NULL-terminated); *out = its index. */
int xf_at_enum(const json_t *obj, const char *key, const char *const *names, int *out,
                char *err, size_t errlen);
/* An integer in [lo, hi] or a list of 1..cap of them; *count = entries read. */
int xf_at_int_list(const json_t *obj, const char *key, int64_t lo, int64_t hi, int32_t *out,
                    int cap, int32_t *count, char *err, size_t errlen);
/* printf into err (never overflows; err may be NULL). Returns XF_EPARAM. */
int xf_at_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Helpers for to_json: json_object_set_new with NULL checks; return 0 or -ENOMEM. */
int xf_at_set(json_t *obj, const char *key, json_t *val);
int xf_at_set_int_list(json_t *obj, const char *key, const int32_t *v, int32_t count);

#endif
