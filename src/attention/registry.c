/* The static variant registry (built from variants.def), the call layer every caller uses
 * (parameters through each variant's key table, plan and forward through the family-T kernel
 * or the variant's own entry points) and every public function of include/xformd/attention.h:
 * parse, free, dup, dense, name, flags, to_json, check, and the listing. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_s.h"
#include "attention/fam_t.h"
#include "attention/params.h"
#include "attention/registry.h"
#include "engine/model.h"

#define XF_ATTN_VARIANT(sym, nm, fam, fl, sum, doc) extern const xf_attn_ops xf_at_##sym;
#include "attention/variants.def"
#undef XF_ATTN_VARIANT

#define XF_ATTN_VARIANT(sym, nm, fam, fl, sum, doc)                                          \
    const xf_attn_vtbl xf_attn_vt_##sym = {                                                 \
        .name = nm, .family = XF_FAM_##fam, .flags = fl, .summary = sum, .params_doc = doc,  \
        .ops = &xf_at_##sym,                                                                 \
    };
#include "attention/variants.def"
#undef XF_ATTN_VARIANT

#define XF_ATTN_VARIANT(sym, nm, fam, fl, sum, doc) &xf_attn_vt_##sym,
static const xf_attn_vtbl *const registry[] = {
#include "attention/variants.def"
    NULL
};
#undef XF_ATTN_VARIANT

/* ---- the call layer ---- */

int xf_at_parse_params(const xf_attn_vtbl *vt, void *params, const json_t *obj, char *err,
                       size_t errlen)
{
    const xf_attn_ops *o = vt->ops;

    if (o->defaults)
        memcpy(params, o->defaults, o->params_size);
    else
        memset(params, 0, o->params_size);
    int rc = xf_at_read_keys(o->keys, o->n_keys, params, obj, err, errlen);
    if (!rc && o->check)
        rc = o->check(params, err, errlen);
    return rc;
}

int xf_at_params_json(const xf_attn_vtbl *vt, const void *params, json_t *obj)
{
    return xf_at_write_keys(vt->ops->keys, vt->ops->n_keys, params, obj);
}

/* "key: "name" needs what, which this model does not have; use "other" or "other"" (the
 * enum key's other names, in table order). */
static int refuse_untrained(const xf_at_key_t *k, int32_t v, const char *what, char *err,
                            size_t errlen)
{
    char msg[256];
    size_t len = (size_t)snprintf(msg, sizeof msg, "\"%s\" needs %s, which this model does "
                                  "not have; use ", k->names[v], what);
    const char *sep = "";
    for (int32_t i = 0; k->names[i] && len < sizeof msg; i++) {
        if (i == v)
            continue;
        len += (size_t)snprintf(msg + len, sizeof msg - len, "%s\"%s\"", sep, k->names[i]);
        sep = " or ";
    }
    return xf_at_refuse(err, errlen, k->key, msg);
}

int xf_at_validate(const xf_attn_vtbl *vt, const void *params, const xf_model_t *m, int layer,
                   char *err, size_t errlen)
{
    const xf_attn_ops *o = vt->ops;

    for (int32_t i = 0; o->needs_weights.key && i < o->n_keys; i++) {
        int32_t v;
        if (strcmp(o->keys[i].key, o->needs_weights.key) != 0)
            continue;
        memcpy(&v, (const unsigned char *)params + o->keys[i].off, sizeof v);
        if (v == o->needs_weights.value)
            return refuse_untrained(&o->keys[i], v, o->needs_weights.what, err, errlen);
    }
    return o->validate ? o->validate(params, m, layer, err, errlen) : 0;
}

int xf_at_runnable(const xf_attn_vtbl *vt)
{
    const xf_attn_ops *o = vt->ops;
    return o && (o->pattern || ((o->plan || o->item_ws) && (o->forward || o->item)));
}

int xf_at_reads_strided(const xf_attn_vtbl *vt)
{
    const xf_attn_ops *o = vt ? vt->ops : NULL;
    return o && o->pattern && o->pattern->strided && !o->prepare && !o->prepare_par &&
           !(vt->flags & XF_ATTN_STATEFUL);
}

int xf_at_plan(const xf_attn_vtbl *vt, const void *params, const xf_attn_shape *sh, int nth,
               xf_attn_plan *out)
{
    if (vt->ops->pattern)
        return xf_at_t_plan(vt->ops->pattern, params, sh, nth, out);
    if (vt->ops->item_ws) {
        int nmax = xf_at_check_shape(sh);
        if (nmax < 0)
            return nmax;
        xf_at_plan_items(sh, vt->ops->item_ws(params, sh, nmax) + xf_at_tile_ws(sh->d_head), 0,
                         out);
        return 0;
    }
    return vt->ops->plan(params, sh, nth, out);
}

int xf_at_forward(const xf_attn_vtbl *vt, const void *params, const xf_attn_shape *sh,
                  const xf_attn_io *io, const xf_attn_plan *pl, const void *ws_shared,
                  void *ws_thread, int ith, int nth)
{
    if (io && io->ld && !xf_at_reads_strided(vt))
        return -EINVAL;
    if (vt->ops->pattern)
        return xf_at_t_forward(vt->ops->pattern, params, sh, io, pl, ws_thread, ith, nth);
    if (vt->ops->item) {
        xf_at_walk(params, sh, io, pl, ws_thread, ith, nth, vt->ops->item);
        return 0;
    }
    return vt->ops->forward(params, sh, io, pl, ws_shared, ws_thread, ith, nth);
}

/* ---- the registry ---- */

const xf_attn_vtbl *xf_attn_find(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; registry[i]; i++)
        if (!strcmp(registry[i]->name, name))
            return registry[i];
    return NULL;
}

int xf_attn_registry_count(void)
{
    int n = 0;
    while (registry[n])
        n++;
    return n;
}

const xf_attn_vtbl *xf_attn_registry_get(int i)
{
    if (i < 0 || i >= xf_attn_registry_count())
        return NULL;
    return registry[i];
}

static int parse_obj(const json_t *root, xf_attn_t **out, char *err, size_t errlen)
{
    const char *name;
    const json_t *vn;

    if (json_is_string(root)) {
        name = json_string_value(root);
        vn = NULL;
    } else if (json_is_object(root)) {
        vn = json_object_get(root, "variant");
        if (!vn)
            return xf_at_err(err, errlen, "variant: missing");
        if (!json_is_string(vn))
            return xf_at_err(err, errlen, "variant: must be a string");
        name = json_string_value(vn);
    } else {
        if (err && errlen)
            snprintf(err, errlen, "attention: must be an object {\"variant\": ...} or a name");
        return XF_EFORMAT;
    }
    const xf_attn_vtbl *vt = xf_attn_find(name);
    if (!vt) {
        if (err && errlen)
            snprintf(err, errlen, "variant: unknown variant \"%.64s\"", name);
        return XF_ENOTFOUND;
    }
    if (vt->ops->params_size > XF_ATTN_PARAMS_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "variant %s: parameter block too large", name);
        return XF_EUNSUPPORTED;
    }
    xf_attn_t *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->vt = vt;
    json_t *empty = NULL;
    const json_t *obj = root;
    if (!json_is_object(root)) {
        empty = json_object();
        if (!empty) {
            free(a);
            return -ENOMEM;
        }
        obj = empty;
    }
    int rc = xf_at_parse_params(vt, a->params, obj, err, errlen);
    json_decref(empty);
    if (rc) {
        free(a);
        return rc < 0 ? rc : XF_EPARAM;
    }
    *out = a;
    return 0;
}

int xf_attn_parse(const char *json, size_t len, xf_attn_t **out, char *err, size_t errlen)
{
    json_error_t je;

    if (err && errlen)
        err[0] = '\0';
    if (!json || !out)
        return -EINVAL;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        if (err && errlen)
            snprintf(err, errlen, "attention: invalid JSON at line %d column %d: %s", je.line,
                     je.column, je.text);
        return XF_EFORMAT;
    }
    int rc = parse_obj(root, out, err, errlen);
    json_decref(root);
    return rc;
}

void xf_attn_free(xf_attn_t *a)
{
    free(a);
}

xf_attn_t *xf_attn_dup(const xf_attn_t *a)
{
    if (!a)
        return NULL;
    xf_attn_t *b = malloc(sizeof(*b));
    if (b)
        memcpy(b, a, sizeof(*b));
    return b;
}

const xf_attn_t *xf_attn_dense(void)
{
    /* Dense's defaults are all-zero parameters (scale 0 = the model's scale). */
    static const xf_attn_t dense = { .vt = &xf_attn_vt_dense };
    return &dense;
}

const char *xf_attn_name(const xf_attn_t *a)
{
    return a && a->vt ? a->vt->name : "";
}

uint32_t xf_attn_flags(const xf_attn_t *a)
{
    return a && a->vt ? a->vt->flags : 0;
}

int xf_attn_to_json(const xf_attn_t *a, char *buf, size_t len)
{
    if (!a || !a->vt || (!buf && len))
        return -EINVAL;
    json_t *obj = json_object();
    if (!obj)
        return -ENOMEM;
    int rc = xf_at_set(obj, "variant", json_string(a->vt->name));
    if (!rc)
        rc = xf_at_params_json(a->vt, a->params, obj);
    char *s = rc ? NULL : json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (rc)
        return rc < 0 ? rc : -ENOMEM;
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s);
    if (len) {
        size_t c = n < len - 1 ? n : len - 1;
        memcpy(buf, s, c);
        buf[c] = '\0';
    }
    free(s);
    return n > (size_t)INT32_MAX ? -ERANGE : (int)n;
}

int xf_attn_check(const xf_attn_t *a, const xf_model_t *m, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!a || !a->vt || !m)
        return -EINVAL;
    for (int l = 0; l < m->info.n_layer; l++) {
        int rc = xf_at_validate(a->vt, a->params, m, l, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int xf_attn_falls_back(const xf_attn_t *a, const xf_model_t *m, int32_t n_tokens)
{
    if (!a || !a->vt || !m || m->info.n_layer < 1 || n_tokens < 1)
        return -EINVAL;
    /* The variant's own plan for one sequence says whether it took the dense path; layer 0's
     * head shape stands for the model (the fallback depends on lengths and parameters). */
    const int32_t cu[2] = { 0, n_tokens };
    xf_attn_shape sh = {
        .n_seq = 1, .cu_len = cu, .n_tokens = n_tokens, .n_head = m->info.layers[0].n_head,
        .d_head = m->info.layers[0].d_head, .layer = 0, .mem_rows = NULL,
    };
    xf_attn_plan pl;
    memset(&pl, 0, sizeof pl);
    int rc = xf_at_plan(a->vt, a->params, &sh, 1, &pl);
    if (rc)
        return rc < 0 ? rc : XF_EPARAM;
    return pl.dense_fallbacks > 0;
}

static const char *family_name(enum xf_attn_family f)
{
    switch (f) {
    case XF_FAM_T: return "T";
    case XF_FAM_S: return "S";
    case XF_FAM_F: return "F";
    case XF_FAM_P: return "P";
    case XF_FAM_M: return "M";
    }
    return "?";
}

int xf_attn_variant_count(void)
{
    return xf_attn_registry_count();
}

int xf_attn_variant_get(int i, xf_attn_variant_info_t *out)
{
    const xf_attn_vtbl *vt = xf_attn_registry_get(i);

    if (!vt || !out)
        return -ERANGE;
    out->name = vt->name;
    out->family = family_name(vt->family);
    out->flags = vt->flags;
    out->summary = vt->summary ? vt->summary : "";
    out->params = vt->params_doc ? vt->params_doc : "";
    return 0;
}
