/* int8 Linear weights of a model (quant.h): parsing the mode, quantising every layer's six
 * Linear weights at load, freeing them with the model. Runs on the loading thread. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/diag.h"
#include "engine/model.h"
#include "engine/quant.h"

int xf_quant_parse(const char *s, enum xf_quant_mode *out, xf_diag_t *diag)
{
    if (!s || !*s || strcmp(s, "none") == 0) {
        *out = XF_QUANT_NONE;
        return 0;
    }
    if (strcmp(s, "int8") == 0) {
        *out = XF_QUANT_INT8;
        return 0;
    }
    if (strcmp(s, "bf16") == 0) {
        *out = XF_QUANT_BF16;
        return 0;
    }
    return xf_diag_set(diag, -EINVAL, "quantize: \"%.40s\" is not one of none, int8, bf16", s);
}

const char *xf_quant_name(enum xf_quant_mode mode)
{
    return mode == XF_QUANT_INT8 ? "int8" : mode == XF_QUANT_BF16 ? "bf16" : "none";
}

static int quant_one(xf_qgemm_w_t *qw, const xf_w_t *w, int32_t l, const char *what,
                     xf_diag_t *diag)
{
    int rc = xf_qgemm_w_init(qw, w->data, w->rows, w->cols, xf_qkernels()->wmax,
                             xf_qkernels()->lane_max, xf_qkernels()->wgroup);
    if (rc == -ENOMEM)
        return xf_diag_set(diag, rc, "quantize int8: out of memory");
    if (rc)
        return xf_diag_set(diag, rc, "quantize int8: layer %d %s weight [%d, %d] has a "
                           "non-finite value", (int)l, what, (int)w->rows, (int)w->cols);
    return 0;
}

int xf_quant_build(const xf_model_t *m, xf_quant_t **out, xf_diag_t *diag)
{
    int32_t n = m->info.n_layer;
    xf_quant_t *q = calloc(1, sizeof *q);
    int rc = 0;

    if (!q || !(q->layers = calloc(n > 0 ? (size_t)n : 1, sizeof *q->layers))) {
        free(q);
        return xf_diag_set(diag, -ENOMEM, "quantize int8: out of memory");
    }
    q->n_layer = n;
    for (int32_t l = 0; l < n && !rc; l++) {
        const xf_layer_t *L = &m->layers[l];
        xf_quant_layer_t *Q = &q->layers[l];
        if ((rc = quant_one(&Q->q, &L->q_w, l, "query", diag)) ||
            (rc = quant_one(&Q->k, &L->k_w, l, "key", diag)) ||
            (rc = quant_one(&Q->v, &L->v_w, l, "value", diag)) ||
            (rc = quant_one(&Q->o, &L->o_w, l, "attention output", diag)) ||
            (rc = quant_one(&Q->ff1, &L->ff1_w, l, "FFN1", diag)) ||
            (rc = quant_one(&Q->ff2, &L->ff2_w, l, "FFN2", diag)))
            break;
        const xf_qgemm_w_t parts[3] = { Q->q, Q->k, Q->v };
        rc = xf_qgemm_w_stack(&Q->qkv, parts, 3);
        if (rc == -ENOMEM) {
            rc = xf_diag_set(diag, rc, "quantize int8: out of memory");
            break;
        }
        if (rc == 0) {
            xf_qgemm_w_deinit(&Q->q);
            xf_qgemm_w_deinit(&Q->k);
            xf_qgemm_w_deinit(&Q->v);
        }
        rc = 0;
        q->bytes += Q->qkv.bytes + Q->q.bytes + Q->k.bytes + Q->v.bytes + Q->o.bytes + Q->ff1.bytes +
                    Q->ff2.bytes;
    }
    if (rc) {
        xf_quant_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

void xf_quant_free(xf_quant_t *q)
{
    if (!q)
        return;
    for (int32_t l = 0; l < q->n_layer; l++) {
        xf_quant_layer_t *Q = &q->layers[l];
        xf_qgemm_w_deinit(&Q->q);
        xf_qgemm_w_deinit(&Q->k);
        xf_qgemm_w_deinit(&Q->v);
        xf_qgemm_w_deinit(&Q->o);
        xf_qgemm_w_deinit(&Q->ff1);
        xf_qgemm_w_deinit(&Q->ff2);
        xf_qgemm_w_deinit(&Q->qkv);
    }
    free(q->layers);
    free(q);
}
