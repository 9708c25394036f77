/* Hugging Face config.json attention settings -> a selection (ATTENTION.md §26.2): BigBird
 * attention_type/block_size/num_random_blocks -> "bigbird", Longformer attention_window (full
 * width, int or per-layer list; halved) -> "longformer", Nyströmformer num_landmarks ->
 * "nystrom", TransfoXL mem_len/clamp_len -> "txl". */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/params.h"
#include "attention/registry.h"

static int get_int(const json_t *cfg, const char *key, int64_t lo, int64_t dflt, int64_t *out,
                   char *err, size_t errlen)
{
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > INT32_MAX)
        return xf_at_err(err, errlen, "config.json: %s: must be an integer >= %lld", key,
                          (long long)lo);
    *out = json_integer_value(v);
    return 0;
}

static int finish(json_t *sel, xf_attn_t **out, char *err, size_t errlen)
{
    if (!sel)
        return -ENOMEM;
    char *s = json_dumps(sel, JSON_COMPACT);
    json_decref(sel);
    if (!s)
        return -ENOMEM;
    const char *name = "";
    int rc = xf_attn_parse(s, strlen(s), out, err, errlen);
    if (rc == XF_ENOTFOUND) {
        json_t *root = json_loads(s, 0, NULL);
        name = root ? json_string_value(json_object_get(root, "variant")) : NULL;
        if (err && errlen)
            snprintf(err, errlen, "config.json: attention variant \"%s\" is not built in",
                     name ? name : "?");
        json_decref(root);
        rc = XF_EUNSUPPORTED;
    }
    free(s);
    return rc;
}

int xf_attn_from_hf_config(const json_t *config, xf_attn_t **out, char *err, size_t errlen)
{
    int64_t a = 0, b = 0;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!json_is_object(config))
        return 0;

    const json_t *at = json_object_get(config, "attention_type");
    if (at && !json_is_null(at)) {
        if (!json_is_string(at))
            return xf_at_err(err, errlen, "config.json: attention_type: must be a string");
        if (!strcmp(json_string_value(at), "original_full"))
            return 0;
        if (strcmp(json_string_value(at), "block_sparse"))
            return xf_at_err(err, errlen, "config.json: attention_type: unknown value \"%s\"",
                              json_string_value(at));
        if ((rc = get_int(config, "block_size", 1, 64, &a, err, errlen)) ||
            (rc = get_int(config, "num_random_blocks", 0, 3, &b, err, errlen)))
            return rc;
        return finish(json_pack("{s:s, s:I, s:I}", "variant", "bigbird", "block", (json_int_t)a,
                                "random_blocks", (json_int_t)b), out, err, errlen);
    }

    const json_t *aw = json_object_get(config, "attention_window");
    if (aw && !json_is_null(aw)) {
        int64_t w = -1;
        size_t cnt = json_is_array(aw) ? json_array_size(aw) : 1;
        if (cnt == 0)
            return xf_at_err(err, errlen, "config.json: attention_window: empty list");
        for (size_t i = 0; i < cnt; i++) {
            const json_t *v = json_is_array(aw) ? json_array_get(aw, i) : aw;
            if (!json_is_integer(v) || json_integer_value(v) < 2 ||
                json_integer_value(v) > (1 << 24) || json_integer_value(v) % 2)
                return xf_at_err(err, errlen, "config.json: attention_window: must be even "
                                  "integers >= 2");
            if (w >= 0 && json_integer_value(v) != w * 2) {
                if (err && errlen)
                    snprintf(err, errlen, "config.json: attention_window: per-layer windows "
                             "that differ are not supported");
                return XF_EUNSUPPORTED;
            }
            w = json_integer_value(v) / 2;
        }
        return finish(json_pack("{s:s, s:I, s:s}", "variant", "longformer", "window",
                                (json_int_t)w, "global", "cls"), out, err, errlen);
    }

    if (json_object_get(config, "num_landmarks")) {
        if ((rc = get_int(config, "num_landmarks", 1, 64, &a, err, errlen)))
            return rc;
        return finish(json_pack("{s:s, s:I}", "variant", "nystrom", "landmarks", (json_int_t)a),
                      out, err, errlen);
    }

    if (json_object_get(config, "mem_len")) {
        if ((rc = get_int(config, "mem_len", 0, 512, &a, err, errlen)))
            return rc;
        const json_t *cl = json_object_get(config, "clamp_len");
        b = 1000;
        if (cl && !json_is_null(cl)) {
            if (!json_is_integer(cl))
                return xf_at_err(err, errlen, "config.json: clamp_len: must be an integer");
            b = json_integer_value(cl);
            if (b <= 0)
                b = -1;   /* HF: clamp_len <= 0 means no clamping */
            if (b > INT32_MAX)
                b = INT32_MAX;
        }
        return finish(json_pack("{s:s, s:I, s:I}", "variant", "txl", "mem_len", (json_int_t)a,
                                "clamp_len", (json_int_t)b), out, err, errlen);
    }
    return 0;
}
