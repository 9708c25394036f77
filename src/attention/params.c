/* Variant parameters (params.h): the table-driven reader and writer, and the typed reads of
 * one key of a flat JSON object with range checks and messages naming the key; the unknown-key
 * check; to_json helpers. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <xformd/error.h>

#include "attention/params.h"

int xf_at_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return XF_EPARAM;
}

int xf_at_keys(const json_t *obj, const char *const *keys, char *err, size_t errlen)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)obj, k, v) {
        int ok = !strcmp(k, "variant");
        for (int i = 0; !ok && keys && keys[i]; i++)
            ok = !strcmp(k, keys[i]);
        if (!ok)
            return xf_at_err(err, errlen, "%s: unknown parameter", k);
    }
    return 0;
}

static int read_int(const json_t *v, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    char *err, size_t errlen)
{
    int64_t x;

    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || !(d >= -9.2e18 && d <= 9.2e18))
            return xf_at_err(err, errlen, "%s: must be an integer", key);
        x = (int64_t)d;
    } else {
        return xf_at_err(err, errlen, "%s: must be an integer", key);
    }
    if (x < lo)
        return xf_at_err(err, errlen, "%s: must be >= %lld", key, (long long)lo);
    if (x > hi)
        return xf_at_err(err, errlen, "%s: must be <= %lld", key, (long long)hi);
    *out = x;
    return 0;
}

int xf_at_i64(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
               char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    return read_int(v, key, lo, hi, out, err, errlen);
}

int xf_at_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int32_t *out,
               char *err, size_t errlen)
{
    int64_t x = 0;
    const json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    if (hi > INT32_MAX)
        hi = INT32_MAX;
    if (lo < INT32_MIN)
        lo = INT32_MIN;
    int rc = read_int(v, key, lo, hi, &x, err, errlen);
    if (rc == 0)
        *out = (int32_t)x;
    return rc;
}

int xf_at_float(const json_t *obj, const char *key, double lo, int lo_open, double hi,
                 float *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return xf_at_err(err, errlen, "%s: must be a number", key);
    double x = json_number_value(v);
    if (lo_open ? !(x > lo) : !(x >= lo))
        return xf_at_err(err, errlen, "%s: must be %s %g", key, lo_open ? ">" : ">=", lo);
    if (!(x <= hi))
        return xf_at_err(err, errlen, "%s: must be <= %g", key, hi);
    *out = (float)x;
    return 0;
}

int xf_at_bool(const json_t *obj, const char *key, int *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return xf_at_err(err, errlen, "%s: must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

int xf_at_enum(const json_t *obj, const char *key, const char *const *names, int *out,
                char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    char list[160] = "";
    size_t used = 0;

    if (!v)
        return 0;
    if (json_is_string(v)) {
        for (int i = 0; names[i]; i++)
            if (!strcmp(json_string_value(v), names[i])) {
                *out = i;
                return 0;
            }
    }
    for (int i = 0; names[i] && used < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s\"%s\"", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return xf_at_err(err, errlen, "%s: must be one of %s", key, list);
}

int xf_at_int_list(const json_t *obj, const char *key, int64_t lo, int64_t hi, int32_t *out,
                    int cap, int32_t *count, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    int64_t x = 0;
    char sub[96];

    if (!v)
        return 0;
    if (hi > INT32_MAX)
        hi = INT32_MAX;
    if (!json_is_array(v)) {
        int rc = read_int(v, key, lo, hi, &x, err, errlen);
        if (rc)
            return rc;
        out[0] = (int32_t)x;
        *count = 1;
        return 0;
    }
    size_t n = json_array_size(v);
    if (n == 0)
        return xf_at_err(err, errlen, "%s: must not be an empty list", key);
    if (n > (size_t)cap)
        return xf_at_err(err, errlen, "%s: at most %d entries", key, cap);
    for (size_t i = 0; i < n; i++) {
        snprintf(sub, sizeof(sub), "%s[%zu]", key, i);
        int rc = read_int(json_array_get(v, i), sub, lo, hi, &x, err, errlen);
        if (rc)
            return rc;
        out[i] = (int32_t)x;
    }
    *count = (int32_t)n;
    return 0;
}

int xf_at_set(json_t *obj, const char *key, json_t *val)
{
    if (!val)
        return -ENOMEM;
    return json_object_set_new(obj, key, val) ? -ENOMEM : 0;
}

int xf_at_set_int_list(json_t *obj, const char *key, const int32_t *v, int32_t count)
{
    json_t *a = json_array();

    if (!a)
        return -ENOMEM;
    for (int32_t i = 0; i < count; i++)
        if (json_array_append_new(a, json_integer(v[i]))) {
            json_decref(a);
            return -ENOMEM;
        }
    return xf_at_set(obj, key, a);
}

/* ---- parameter tables ---- */

int xf_at_key_err(char *err, size_t errlen, const char *key, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", key, msg);
    return XF_EPARAM;
}

int xf_at_refuse(char *err, size_t errlen, const char *key, const char *msg)
{
    xf_at_key_err(err, errlen, key, msg);
    return XF_EUNSUPPORTED;
}

/* One key through the shared readers of params.h (absent keys keep their defaults). */
static int parse_one(const xf_at_key_t *pk, void *params, const json_t *obj, char *err,
                     size_t errlen)
{
    unsigned char *at = (unsigned char *)params + pk->off;
    const json_t *val = json_object_get(obj, pk->key);
    int32_t i32;
    int iv;

    if (!val)
        return 0;
    switch (pk->kind) {
    case XF_AT_K_AUTO:
        if (json_is_string(val)) {
            if (strcmp(json_string_value(val), "auto") != 0)
                return xf_at_err(err, errlen, "%s: must be an integer or \"auto\"", pk->key);
            memset(at, 0, sizeof(int32_t));
            return 0;
        }
        /* fall through */
    case XF_AT_K_INT:
        memcpy(&i32, at, sizeof(i32));
        if (xf_at_int(obj, pk->key, (int64_t)pk->lo, (int64_t)pk->hi, &i32, err, errlen))
            return XF_EPARAM;
        memcpy(at, &i32, sizeof(i32));
        return 0;
    case XF_AT_K_REAL: {
        float f = 0.0f;
        double x;
        if (json_is_null(val))
            return 0;
        if (xf_at_float(obj, pk->key, pk->lo, 0, pk->hi, &f, err, errlen))
            return XF_EPARAM;
        x = json_number_value(val);             /* keep the full double */
        memcpy(at, &x, sizeof(x));
        return 0;
    }
    case XF_AT_K_BOOL:
    case XF_AT_K_ENUM:
        memcpy(&i32, at, sizeof(i32));
        iv = i32;
        if (pk->kind == XF_AT_K_BOOL ? xf_at_bool(obj, pk->key, &iv, err, errlen)
                                   : xf_at_enum(obj, pk->key, pk->names, &iv, err, errlen))
            return XF_EPARAM;
        i32 = iv;
        memcpy(at, &i32, sizeof(i32));
        return 0;
    case XF_AT_K_SEED: {
        int64_t x = 0;
        uint64_t u;
        if (xf_at_i64(obj, pk->key, 0, INT64_MAX, &x, err, errlen))
            return XF_EPARAM;
        u = (uint64_t)x;
        memcpy(at, &u, sizeof(u));
        return 0;
    }
    case XF_AT_K_SCALE: {
        float f;
        memcpy(&f, at, sizeof(f));
        if (xf_at_float(obj, pk->key, pk->lo, 1, pk->hi, &f, err, errlen))
            return XF_EPARAM;
        memcpy(at, &f, sizeof(f));
        return 0;
    }
    case XF_AT_K_INT_LIST: {
        int32_t n;
        memcpy(&n, (unsigned char *)params + pk->count_off, sizeof(n));
        if (xf_at_int_list(obj, pk->key, (int64_t)pk->lo, (int64_t)pk->hi, (int32_t *)(void *)at,
                           pk->cap, &n, err, errlen))
            return XF_EPARAM;
        memcpy((unsigned char *)params + pk->count_off, &n, sizeof(n));
        return 0;
    }
    case XF_AT_K_CUSTOM:
        return pk->read(pk, params, obj, err, errlen);
    }
    return xf_at_key_err(err, errlen, pk->key, "bad parameter table");
}

int xf_at_read_keys(const xf_at_key_t *keys, int32_t nkeys, void *params, const json_t *obj,
                    char *err, size_t errlen)
{
    const char *names[33];

    if (!json_is_object(obj))
        return xf_at_key_err(err, errlen, "params", "must be a JSON object");
    if (nkeys > 32)
        return xf_at_key_err(err, errlen, "params", "bad parameter table");
    for (int32_t i = 0; i < nkeys; i++)
        names[i] = keys[i].key;
    names[nkeys] = NULL;
    if (xf_at_keys(obj, names, err, errlen))
        return XF_EPARAM;
    for (int32_t i = 0; i < nkeys; i++) {
        int rc = parse_one(&keys[i], params, obj, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int xf_at_write_keys(const xf_at_key_t *keys, int32_t nkeys, const void *params, json_t *obj)
{
    const unsigned char *base = params;

    for (int32_t i = 0; i < nkeys; i++) {
        const xf_at_key_t *pk = &keys[i];
        json_t *v = NULL;
        int32_t iv;
        double dv;
        uint64_t uv;

        switch (pk->kind) {
        case XF_AT_K_INT:
        case XF_AT_K_AUTO:
            memcpy(&iv, base + pk->off, sizeof(iv));
            v = (pk->kind == XF_AT_K_AUTO && iv == 0) ? json_string("auto") : json_integer(iv);
            break;
        case XF_AT_K_REAL:
            memcpy(&dv, base + pk->off, sizeof(dv));
            v = json_real(dv);
            break;
        case XF_AT_K_BOOL:
            memcpy(&iv, base + pk->off, sizeof(iv));
            v = json_boolean(iv);
            break;
        case XF_AT_K_ENUM:
            memcpy(&iv, base + pk->off, sizeof(iv));
            v = json_string(pk->names[iv]);
            break;
        case XF_AT_K_SEED:
            memcpy(&uv, base + pk->off, sizeof(uv));
            v = json_integer((json_int_t)uv);
            break;
        case XF_AT_K_SCALE: {
            float f;
            memcpy(&f, base + pk->off, sizeof(f));
            v = f > 0.0f ? json_real(f) : json_null();
            break;
        }
        case XF_AT_K_INT_LIST: {
            int32_t n;
            memcpy(&n, base + pk->count_off, sizeof(n));
            if (n != 1) {
                if (xf_at_set_int_list(obj, pk->key, (const int32_t *)(const void *)(base + pk->off),
                                       n))
                    return -ENOMEM;
                continue;
            }
            memcpy(&iv, base + pk->off, sizeof(iv));
            v = json_integer(iv);
            break;
        }
        case XF_AT_K_CUSTOM:
            if (pk->write(pk, params, obj))
                return -ENOMEM;
            continue;
        }
        if (!v || json_object_set_new(obj, pk->key, v) != 0)
            return -ENOMEM;
    }
    return 0;
}

