/* Attention-internal: helpers for variant parse()/to_json(): typed reads of one key of a flat
 * JSON object with range checks and messages naming the key ("window: must be >= 1"), the
 * unknown-key check, and enum/list keys. A key that is absent leaves *out untouched (the
 * default). Every reader returns 0 or XF_EPARAM with err filled. */
#ifndef XF_ATTENTION_PARAMS_H
#define XF_ATTENTION_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

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
