/* Structured pruning, part 2: rewire the kept heads and FFN units of a model's safetensors file
 * and write the pruned Hugging Face directory (include/xformd/prune.h). Reads the model's own
 * directory again (tensor names as stored, any prefix), writes into a temporary directory
 * beside the target and renames it at the end. One thread; never touches the loaded weights. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <xformd/prune.h>

#include "engine/diag.h"
#include "engine/model.h"
#include "engine/safetensors.h"

/* What pruning does to a tensor. */
enum role { R_KEEP = 0, R_HEAD_ROWS, R_HEAD_COLS, R_FFN_ROWS, R_FFN_COLS };

/* The layer tensors pruning rewrites, by name after "<encoder>.layer.<l>." (BERT/RoBERTa
 * "encoder.layer.", DistilBERT "transformer.layer."). The output biases are unchanged. */
static const struct {
    const char *suffix;
    enum role role;
} roles[] = {
    { "attention.self.query.weight", R_HEAD_ROWS }, { "attention.self.query.bias", R_HEAD_ROWS },
    { "attention.self.key.weight", R_HEAD_ROWS },   { "attention.self.key.bias", R_HEAD_ROWS },
    { "attention.self.value.weight", R_HEAD_ROWS }, { "attention.self.value.bias", R_HEAD_ROWS },
    { "attention.output.dense.weight", R_HEAD_COLS },
    { "intermediate.dense.weight", R_FFN_ROWS },    { "intermediate.dense.bias", R_FFN_ROWS },
    { "output.dense.weight", R_FFN_COLS },
    { "attention.q_lin.weight", R_HEAD_ROWS },      { "attention.q_lin.bias", R_HEAD_ROWS },
    { "attention.k_lin.weight", R_HEAD_ROWS },      { "attention.k_lin.bias", R_HEAD_ROWS },
    { "attention.v_lin.weight", R_HEAD_ROWS },      { "attention.v_lin.bias", R_HEAD_ROWS },
    { "attention.out_lin.weight", R_HEAD_COLS },
    { "ffn.lin1.weight", R_FFN_ROWS },              { "ffn.lin1.bias", R_FFN_ROWS },
    { "ffn.lin2.weight", R_FFN_COLS },
};
#define ROLE_TENSORS 10    /* each layer has exactly ten of them (one naming scheme) */

/* Role and layer of a tensor name; R_KEEP for everything else. */
static enum role tensor_role(const char *name, int32_t *layer)
{
    static const char *const enc[] = { "encoder.layer.", "transformer.layer." };
    for (size_t e = 0; e < 2; e++) {
        const char *p = strstr(name, enc[e]);
        char *end;
        long l;
        if (!p || (p != name && p[-1] != '.'))
            continue;
        p += strlen(enc[e]);
        if (*p < '0' || *p > '9')
            continue;
        l = strtol(p, &end, 10);
        if (*end != '.' || l < 0 || l > 100000)
            continue;
        for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
            if (!strcmp(end + 1, roles[r].suffix)) {
                *layer = (int32_t)l;
                return roles[r].role;
            }
    }
    return R_KEEP;
}

/* Rows (row_sel) or columns of a [rows][cols] matrix (a vector is 1 row of `rows` values when
 * cols == 0) kept by the unit index list idx[0..n) with unit width w. */
static float *select_units(const float *x, int64_t rows, int64_t cols, int by_rows,
                           const int32_t *idx, int32_t n, int32_t w)
{
    float *y;
    if (by_rows) {
        int64_t rc = cols > 0 ? cols : 1;
        y = malloc((size_t)n * (size_t)w * (size_t)rc * sizeof *y);
        if (!y)
            return NULL;
        for (int32_t i = 0; i < n; i++)
            memcpy(y + (size_t)i * (size_t)w * (size_t)rc,
                   x + (size_t)idx[i] * (size_t)w * (size_t)rc,
                   (size_t)w * (size_t)rc * sizeof *y);
        (void)rows;
        return y;
    }
    y = malloc((size_t)rows * (size_t)n * (size_t)w * sizeof *y);
    if (!y)
        return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int32_t i = 0; i < n; i++)
            memcpy(y + ((size_t)r * (size_t)n + (size_t)i) * (size_t)w,
                   x + (size_t)r * (size_t)cols + (size_t)idx[i] * (size_t)w,
                   (size_t)w * sizeof *y);
    return y;
}

/* ---- files ------------------------------------------------------------------------------ */

static int copy_file(const char *from, const char *to, xf_diag_t *diag)
{
    char buf[1 << 16];
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
    ssize_t n;

    if (in < 0)
        return xf_diag_set(diag, -errno, "prune: cannot read %s: %s", from, strerror(errno));
    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = xf_diag_set(diag, -errno, "prune: cannot create %s: %s", to, strerror(errno));
        close(in);
        return rc;
    }
    while ((n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = xf_diag_set(diag, -errno, "prune: reading %s: %s", from, strerror(errno));
            break;
        }
        for (ssize_t o = 0; o < n;) {
            ssize_t w = write(out, buf + o, (size_t)(n - o));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = xf_diag_set(diag, -errno, "prune: writing %s: %s", to, strerror(errno));
                break;
            }
            o += w;
        }
        if (rc)
            break;
    }
    if (close(out) != 0 && rc == 0)
        rc = xf_diag_set(diag, -errno, "prune: writing %s: %s", to, strerror(errno));
    close(in);
    return rc;
}

/* Stale weights in another format must not travel with the pruned model. */
static int is_weight_file(const char *n)
{
    static const char *const sufs[] = { ".bin", ".safetensors", ".h5", ".msgpack", ".onnx",
                                        ".ot", ".pt", ".pth", ".ckpt", ".index.json" };
    size_t len = strlen(n);
    for (size_t i = 0; i < sizeof sufs / sizeof sufs[0]; i++) {
        size_t s = strlen(sufs[i]);
        if (len >= s && !strcmp(n + len - s, sufs[i]))
            return 1;
    }
    return 0;
}

/* Copy the regular files of src into dst except weights; with depth > 0 (the top level) skip
 * config.json (written by write_config) and copy the sentence-transformers module directories
 * ("1_Pooling", "2_Normalize", ...) one level down. */
static int copy_dir_files(const char *src, const char *dst, int depth, xf_diag_t *diag)
{
    DIR *d = opendir(src);
    struct dirent *e;
    int rc = 0;

    if (!d)
        return xf_diag_set(diag, -errno, "prune: cannot list %s: %s", src, strerror(errno));
    while (rc == 0 && (e = readdir(d))) {
        char from[4096], to[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if (snprintf(from, sizeof from, "%s/%s", src, e->d_name) >= (int)sizeof from ||
            snprintf(to, sizeof to, "%s/%s", dst, e->d_name) >= (int)sizeof to) {
            rc = xf_diag_set(diag, -ENAMETOOLONG, "prune: path too long under %s", src);
            break;
        }
        if (stat(from, &st) != 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            if ((depth > 0 && !strcmp(e->d_name, "config.json")) || is_weight_file(e->d_name))
                continue;
            rc = copy_file(from, to, diag);
        } else if (S_ISDIR(st.st_mode) && depth > 0 && e->d_name[0] >= '0' &&
                   e->d_name[0] <= '9' && strchr(e->d_name, '_')) {
            if (mkdir(to, 0755) != 0)
                rc = xf_diag_set(diag, -errno, "prune: cannot create %s: %s", to,
                                 strerror(errno));
            else
                rc = copy_dir_files(from, to, 0, diag);
        }
    }
    closedir(d);
    return rc;
}

/* Remove the temporary directory we created (files and one level of subdirectories). */
static void remove_tree(const char *path, int depth)
{
    DIR *d = opendir(path);
    struct dirent *e;
    if (d) {
        while ((e = readdir(d))) {
            char p[4096];
            struct stat st;
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) >= (int)sizeof p)
                continue;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth > 0)
                remove_tree(p, depth - 1);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* ---- config.json ------------------------------------------------------------------------ */

/* pruned_heads (original head indices per layer, merged with the model's earlier record),
 * intermediate_size / hidden_dim and the per-layer lists xformd understands. */
static int write_config(const xf_model_t *m, const xf_prune_keep_t *k, const char *tmp,
                        xf_diag_t *diag)
{
    char path[4096];
    json_error_t jerr;
    json_t *cfg, *old, *rec;
    int32_t n_cfg_heads = 0, max_ff = 0, uniform = 1;
    int is_distil = m->info.arch == XF_ARCH_DISTILBERT;
    int rc = 0;

    snprintf(path, sizeof path, "%s/config.json", m->info.dir);
    cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!cfg || !json_is_object(cfg)) {
        json_decref(cfg);
        return xf_diag_set(diag, XF_EFORMAT, "prune: %s: %s", path, jerr.text);
    }
    {
        const json_t *nh = json_object_get(cfg, is_distil ? "n_heads" : "num_attention_heads");
        n_cfg_heads = json_is_integer(nh) ? (int32_t)json_integer_value(nh) : 0;
    }
    old = json_object_get(cfg, "pruned_heads");
    rec = json_object();
    if (!rec) {
        json_decref(cfg);
        return xf_diag_set(diag, -ENOMEM, "prune: out of memory");
    }
    for (int32_t l = 0; l < m->info.n_layer && rc == 0; l++) {
        char key[16];
        const json_t *ol;
        unsigned char *gone;
        int32_t *orig, n_orig = 0;
        json_t *list;

        snprintf(key, sizeof key, "%d", l);
        if (n_cfg_heads < m->layers[l].n_head || n_cfg_heads < 1) {
            rc = xf_diag_set(diag, XF_EFORMAT, "prune: config.json: %d heads, layer %d has %d",
                             n_cfg_heads, l, m->layers[l].n_head);
            break;
        }
        gone = calloc((size_t)n_cfg_heads, 1);
        orig = malloc((size_t)n_cfg_heads * sizeof *orig);
        list = json_array();
        if (!gone || !orig || !list) {
            free(gone);
            free(orig);
            json_decref(list);
            rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
            break;
        }
        ol = json_is_object(old) ? json_object_get(old, key) : NULL;
        for (size_t i = 0; json_is_array(ol) && i < json_array_size(ol); i++) {
            json_int_t h = json_integer_value(json_array_get(ol, i));
            if (h >= 0 && h < n_cfg_heads)
                gone[h] = 1;
        }
        /* The layer's current head i is the i-th original head not pruned before. */
        for (int32_t h = 0; h < n_cfg_heads; h++)
            if (!gone[h])
                orig[n_orig++] = h;
        memset(gone, 1, (size_t)n_cfg_heads);
        for (int32_t i = 0; i < k->n_head[l]; i++)
            if (k->head[l][i] < n_orig)
                gone[orig[k->head[l][i]]] = 0;
        for (int32_t h = 0; h < n_cfg_heads; h++)
            if (gone[h])
                json_array_append_new(list, json_integer(h));
        if (json_array_size(list) > 0)
            json_object_set_new(rec, key, list);
        else
            json_decref(list);
        free(gone);
        free(orig);
        if (k->n_ffn[l] > max_ff)
            max_ff = k->n_ffn[l];
        if (k->n_ffn[l] != k->n_ffn[0])
            uniform = 0;
    }
    if (rc) {
        json_decref(rec);
        json_decref(cfg);
        return rc;
    }
    json_object_set_new(cfg, "pruned_heads", rec);
    json_object_set_new(cfg, is_distil ? "hidden_dim" : "intermediate_size",
                        json_integer(max_ff));
    if (json_object_get(cfg, "num_attention_heads_per_layer")) {
        json_t *a = json_array();
        for (int32_t l = 0; l < k->n_layer; l++)
            json_array_append_new(a, json_integer(k->n_head[l]));
        json_object_set_new(cfg, "num_attention_heads_per_layer", a);
    }
    if (!uniform || json_object_get(cfg, "intermediate_size_per_layer")) {
        json_t *a = json_array();
        for (int32_t l = 0; l < k->n_layer; l++)
            json_array_append_new(a, json_integer(k->n_ffn[l]));
        json_object_set_new(cfg, "intermediate_size_per_layer", a);
    }
    if (snprintf(path, sizeof path, "%s/config.json", tmp) >= (int)sizeof path)
        rc = xf_diag_set(diag, -ENAMETOOLONG, "prune: %s: path too long", tmp);
    else if (json_dump_file(cfg, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                                     JSON_REAL_PRECISION(16)) != 0)
        rc = xf_diag_set(diag, -EIO, "prune: cannot write %s", path);
    json_decref(cfg);
    return rc;
}

/* ---- tensors ---------------------------------------------------------------------------- */

static int write_tensors(const xf_model_t *m, const xf_prune_keep_t *k, const char *tmp,
                         xf_diag_t *diag)
{
    char path[4096];
    xf_st_file_t *f = NULL;
    xf_st_wtensor_t *wt = NULL;
    float **bufs = NULL;
    int32_t *seen = NULL;
    int rc;

    snprintf(path, sizeof path, "%s/model.safetensors", m->info.dir);
    rc = xf_st_open(path, &f, diag);
    if (rc < 0)
        return rc;
    wt = calloc((size_t)f->n, sizeof *wt);
    bufs = calloc((size_t)f->n, sizeof *bufs);
    seen = calloc((size_t)m->info.n_layer, sizeof *seen);
    if (!wt || !bufs || !seen) {
        rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
        goto done;
    }
    for (int32_t i = 0; i < f->n; i++) {
        const xf_st_tensor_t *t = &f->t[i];
        xf_st_wtensor_t *w = &wt[i];
        int32_t l = -1;
        enum role r = tensor_role(t->name, &l);
        const float *x;
        float *owned = NULL;

        w->name = t->name;
        w->rank = t->rank;
        memcpy(w->shape, t->shape, sizeof w->shape);
        if (t->dtype != XF_ST_F32 && t->dtype != XF_ST_F16 && t->dtype != XF_ST_BF16) {
            /* position_ids buffers and the like: carried over as they are */
            w->dtype = xf_st_dtype_name(t->dtype);
            w->raw = f->data + t->begin;
            w->raw_len = (size_t)(t->end - t->begin);
            continue;
        }
        w->dtype = "F32";
        rc = xf_st_read_f32(f, t, &x, &owned, diag);
        if (rc < 0)
            goto done;
        if (r == R_KEEP) {
            w->data = x;
            bufs[i] = owned;
            continue;
        }
        if (l >= m->info.n_layer) {
            free(owned);
            rc = xf_diag_set(diag, XF_EFORMAT, "prune: %s: layer %d of a %d-layer model",
                             t->name, l, m->info.n_layer);
            goto done;
        }
        {
            const xf_layer_t *L = &m->layers[l];
            const int heads = r == R_HEAD_ROWS || r == R_HEAD_COLS;
            const int rows = r == R_HEAD_ROWS || r == R_FFN_ROWS;
            const int32_t units = heads ? L->n_head : L->d_ff, w1 = heads ? L->d_head : 1;
            const int32_t n = heads ? k->n_head[l] : k->n_ffn[l];
            const int32_t *idx = heads ? k->head[l] : k->ffn[l];
            const int64_t along = rows ? t->shape[0] : t->rank == 2 ? t->shape[1] : -1;
            if (along != (int64_t)units * w1 || (!rows && t->rank != 2) || t->rank > 2) {
                free(owned);
                rc = xf_diag_set(diag, XF_ESHAPE, "prune: %s: shape does not match the loaded "
                                 "layer %d (%d heads, FFN %d)", t->name, l, L->n_head, L->d_ff);
                goto done;
            }
            bufs[i] = select_units(x, t->shape[0], t->rank == 2 ? t->shape[1] : 0, rows, idx,
                                   n, w1);
            free(owned);
            if (!bufs[i]) {
                rc = xf_diag_set(diag, -ENOMEM, "prune: out of memory");
                goto done;
            }
            w->data = bufs[i];
            if (rows)
                w->shape[0] = (int64_t)n * w1;
            else
                w->shape[1] = (int64_t)n * w1;
            seen[l]++;
        }
    }
    for (int32_t l = 0; l < m->info.n_layer; l++)
        if (seen[l] != ROLE_TENSORS) {
            rc = xf_diag_set(diag, XF_EFORMAT, "prune: %s: layer %d: found %d of the %d "
                             "Q/K/V/output/FFN tensors", path, l, seen[l], ROLE_TENSORS);
            goto done;
        }
    if (snprintf(path, sizeof path, "%s/model.safetensors", tmp) >= (int)sizeof path) {
        rc = xf_diag_set(diag, -ENAMETOOLONG, "prune: %s: path too long", tmp);
        goto done;
    }
    rc = xf_st_write(path, wt, f->n, "{\"format\":\"pt\"}", diag);
done:
    if (bufs)
        for (int32_t i = 0; i < f->n; i++)
            free(bufs[i]);
    free(bufs);
    free(wt);
    free(seen);
    xf_st_close(f);
    return rc;
}

/* ---- the directory ---------------------------------------------------------------------- */

static int dir_nonempty(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    if (!d)
        return errno == ENOENT ? 0 : 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            n = 1;
            break;
        }
    closedir(d);
    return n;
}

int xf_prune_write(const xf_model_t *m, const xf_prune_keep_t *k, const char *out_dir,
                   xf_diag_t *diag)
{
    char tmp[4096];
    int rc;

    if (!m || !k || !out_dir || !*out_dir)
        return xf_diag_set(diag, -EINVAL, "prune: NULL argument");
    if (!m->info.dir)
        return xf_diag_set(diag, -EINVAL, "prune: the model was not loaded from a directory");
    if (k->n_layer != m->info.n_layer)
        return xf_diag_set(diag, -EINVAL, "prune: selection for %d layers, model has %d",
                           k->n_layer, m->info.n_layer);
    for (int32_t l = 0; l < k->n_layer; l++) {
        const xf_layer_t *L = &m->layers[l];
        if (k->n_head[l] < 1 || k->n_head[l] > L->n_head || k->n_ffn[l] < 1 ||
            k->n_ffn[l] > L->d_ff)
            return xf_diag_set(diag, -EINVAL, "prune: layer %d: keeps %d of %d heads, %d of "
                               "%d FFN units", l, k->n_head[l], L->n_head, k->n_ffn[l], L->d_ff);
        for (int32_t i = 0; i < k->n_head[l]; i++)
            if (k->head[l][i] < 0 || k->head[l][i] >= L->n_head ||
                (i > 0 && k->head[l][i] <= k->head[l][i - 1]))
                return xf_diag_set(diag, -EINVAL, "prune: layer %d: head list not ascending "
                                   "indices below %d", l, L->n_head);
        for (int32_t i = 0; i < k->n_ffn[l]; i++)
            if (k->ffn[l][i] < 0 || k->ffn[l][i] >= L->d_ff ||
                (i > 0 && k->ffn[l][i] <= k->ffn[l][i - 1]))
                return xf_diag_set(diag, -EINVAL, "prune: layer %d: FFN list not ascending "
                                   "indices below %d", l, L->d_ff);
    }
    if (dir_nonempty(out_dir))
        return xf_diag_set(diag, -EEXIST, "prune: %s exists and is not empty", out_dir);
    {
        size_t n = strlen(out_dir);
        while (n > 1 && out_dir[n - 1] == '/')
            n--;
        if (snprintf(tmp, sizeof tmp, "%.*s.tmp.XXXXXX", (int)n, out_dir) >= (int)sizeof tmp)
            return xf_diag_set(diag, -ENAMETOOLONG, "prune: %s: path too long", out_dir);
    }
    if (!mkdtemp(tmp))
        return xf_diag_set(diag, -errno, "prune: cannot create a directory beside %s: %s",
                           out_dir, strerror(errno));
    rc = write_tensors(m, k, tmp, diag);
    if (rc == 0)
        rc = write_config(m, k, tmp, diag);
    if (rc == 0)    /* tokenizer and sentence-transformers files; config.json is ours */
        rc = copy_dir_files(m->info.dir, tmp, 1, diag);
    if (rc == 0 && chmod(tmp, 0755) != 0)
        rc = xf_diag_set(diag, -errno, "prune: chmod %s: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, out_dir) != 0)
        rc = xf_diag_set(diag, errno == ENOTEMPTY || errno == EEXIST ? -EEXIST : -errno,
                         "prune: cannot rename %s to %s: %s", tmp, out_dir, strerror(errno));
    if (rc != 0)
        remove_tree(tmp, 1);
    return rc;
}
