/* The attention state of stateful encoders (see <xformd/state.h>): one family-M state per layer
 * (attention/fam_m.h: a header and the projected K/V of the remembered rows), the model hash of
 * the session blob, and the blob itself through fam_m's §22.1 writer/reader. No I/O but the
 * one read of config.json for the hash. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/state.h>

#include "attention/fam_m.h"
#include "attention/registry.h"
#include "engine/diag.h"
#include "engine/model.h"
#include "engine/sha256.h"

struct xf_state_def {
    const xf_model_t *m;
    xf_attn_t *attn;           /* owned copy of the selection */
    xf_at_m_params_t p;
    int32_t n_layer, n_head, d_head;
    size_t layer_bytes;        /* one layer's state at full capacity */
    uint8_t hash[32];
};

struct xf_state {
    const xf_state_def_t *d;
    void **layers;             /* [n_layer] into one allocation */
};

static const xf_attn_t *sel(const xf_model_t *m, const xf_attn_t *a)
{
    return a ? a : xf_model_attention(m);
}

/* The family-M kernel behind txl and compressive reads its params as xf_at_m_params_t. */
static int is_fam_m(const xf_attn_t *a)
{
    return a && a->vt && (a->vt->flags & XF_ATTN_STATEFUL) && a->vt->ops &&
           a->vt->ops->plan == xf_at_m_plan_vt && a->vt->ops->state_update;
}

int xf_state_supported(const xf_model_t *m, const xf_attn_t *a)
{
    return m && is_fam_m(sel(m, a));
}

/* SHA-256 of config.json bytes then the weight file's bytes (ATTENTION.md §22.1). */
static int hash_model(const xf_model_t *m, uint8_t out[32], xf_diag_t *diag)
{
    char path[4096], buf[65536];
    xf_sha256_t h;
    FILE *f;
    size_t n;
    int err;

    if (!m->info.dir)
        return xf_diag_set(diag, -ENOENT, "model has no directory to hash config.json from");
    snprintf(path, sizeof path, "%s/config.json", m->info.dir);
    f = fopen(path, "rb");
    if (!f)
        return xf_diag_set(diag, -errno, "%s: %s", path, strerror(errno));
    xf_sha256_init(&h);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        xf_sha256_update(&h, buf, n);
    err = ferror(f);
    fclose(f);
    if (err)
        return xf_diag_set(diag, -EIO, "%s: read error", path);
    if (m->map)
        xf_sha256_update(&h, m->map, m->map_len);
    xf_sha256_final(&h, out);
    return 0;
}

int xf_state_def_create(const xf_model_t *m, const xf_attn_t *a, xf_state_def_t **out,
                        xf_diag_t *diag)
{
    const xf_attn_t *s;
    xf_state_def_t *d;
    int rc;

    *out = NULL;
    if (!m)
        return xf_diag_set(diag, -EINVAL, "no model");
    s = sel(m, a);
    if (!is_fam_m(s))
        return xf_diag_set(diag, XF_EUNSUPPORTED, "attention %s keeps no state between "
                           "segments (stateful variants: txl, compressive)", xf_attn_name(s));
    for (int32_t l = 1; l < m->info.n_layer; l++)
        if (m->info.layers[l].n_head != m->info.layers[0].n_head ||
            m->info.layers[l].d_head != m->info.layers[0].d_head)
            return xf_diag_set(diag, XF_EUNSUPPORTED, "layer %d has %d heads of %d, layer 0 %d "
                               "of %d: a session blob holds one row width", l,
                               m->info.layers[l].n_head, m->info.layers[l].d_head,
                               m->info.layers[0].n_head, m->info.layers[0].d_head);
    d = calloc(1, sizeof *d);
    if (!d || !(d->attn = xf_attn_dup(s))) {
        free(d);
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    }
    d->m = m;
    memcpy(&d->p, s->params, sizeof d->p);
    d->n_layer = m->info.n_layer;
    d->n_head = m->info.layers[0].n_head;
    d->d_head = m->info.layers[0].d_head;
    d->layer_bytes = xf_at_m_state_size(&d->p, d->n_head, d->d_head);
    if ((rc = hash_model(m, d->hash, diag)) < 0) {
        xf_state_def_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void xf_state_def_free(xf_state_def_t *d)
{
    if (!d)
        return;
    xf_attn_free(d->attn);
    free(d);
}

const xf_attn_t *xf_state_def_attn(const xf_state_def_t *d)
{
    return d->attn;
}

const uint8_t *xf_state_def_hash(const xf_state_def_t *d)
{
    return d->hash;
}

/* Layer states are 64-byte aligned (their header is 64 bytes, rows are floats). */
static size_t stride(const xf_state_def_t *d)
{
    return (d->layer_bytes + 63u) / 64u * 64u;
}

size_t xf_state_def_bytes(const xf_state_def_t *d)
{
    return stride(d) * (size_t)d->n_layer;
}

int xf_state_create(const xf_state_def_t *d, xf_state_t **out)
{
    xf_state_t *st = calloc(1, sizeof *st);
    void *mem = NULL;

    *out = NULL;
    if (!st || !(st->layers = calloc((size_t)d->n_layer + 1, sizeof(void *))) ||
        posix_memalign(&mem, 64, xf_state_def_bytes(d) ? xf_state_def_bytes(d) : 64) != 0) {
        if (st)
            free(st->layers);
        free(st);
        return -ENOMEM;
    }
    st->d = d;
    for (int32_t l = 0; l < d->n_layer; l++)
        st->layers[l] = (char *)mem + (size_t)l * stride(d);
    st->layers[d->n_layer] = mem;   /* the allocation, for free */
    xf_state_reset(st);
    *out = st;
    return 0;
}

void xf_state_free(xf_state_t *st)
{
    if (!st)
        return;
    free(st->layers[st->d->n_layer]);
    free(st->layers);
    free(st);
}

void xf_state_reset(xf_state_t *st)
{
    for (int32_t l = 0; l < st->d->n_layer; l++)
        xf_at_m_state_init(&st->d->p, st->d->n_head, st->d->d_head, st->layers[l]);
}

void *const *xf_state_layers(xf_state_t *st)
{
    return st->layers;
}

void xf_state_stats(const xf_state_t *st, xf_state_stats_t *out)
{
    xf_at_m_hdr_t h;

    memset(out, 0, sizeof *out);
    out->bytes = xf_state_def_bytes(st->d);
    if (st->d->n_layer < 1)
        return;
    memcpy(&h, st->layers[0], sizeof h);
    out->mem_rows = h.mem_rows;
    out->cmem_rows = h.cmem_rows;
    out->pend_rows = h.pend_rows;
    out->mem_cap = st->d->p.mem_len;
    out->cmem_cap = st->d->p.cmem_len;
    out->segments = h.segments;
    out->tokens = h.tokens;
}

size_t xf_state_blob_size(const xf_state_t *st, enum xf_state_dtype dtype)
{
    return xf_at_m_blob_size_dt(st->layers, st->d->n_layer, (int)dtype);
}

int xf_state_save(const xf_state_t *st, enum xf_state_dtype dtype, void *buf, size_t len)
{
    return xf_at_m_blob_write_dt(st->layers, st->d->n_layer, (int)dtype, st->d->hash, buf, len);
}

int xf_state_load(xf_state_t *st, const void *buf, size_t len, xf_diag_t *diag)
{
    const xf_state_def_t *d = st->d;
    char err[160] = "";
    int rc = xf_at_m_blob_read(buf, len, d->hash, &d->p, d->n_head, d->d_head, st->layers,
                               d->n_layer, err, sizeof err);

    if (rc)
        return xf_diag_set(diag, XF_EFORMAT, "%s", err[0] ? err : "session memory: rejected");
    return 0;
}
