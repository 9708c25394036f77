/* Reader for ../shared/testdata numeric case manifests (case.txt + raw float32 files). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testdata.h"

static int load_tensor(const char *dir, xf_case_tensor *t, const char *file, char *err,
                       size_t errlen)
{
    char path[1400];
    struct stat st;
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: missing", path);
        return -ENOENT;
    }
    if ((size_t)st.st_size != t->numel * sizeof(float)) {
        snprintf(err, errlen, "%s: %lld bytes, shape wants %zu", path, (long long)st.st_size,
                 t->numel * sizeof(float));
        return -EINVAL;
    }
    t->data = malloc(t->numel ? t->numel * sizeof(float) : 1);
    if (!t->data)
        return -ENOMEM;
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -EIO;
    }
    if (t->numel && fread(t->data, sizeof(float), t->numel, f) != t->numel) {
        fclose(f);
        snprintf(err, errlen, "%s: short read", path);
        return -EIO;
    }
    fclose(f);
    return 0;
}

int xf_case_load(const char *dir, xf_case *c, char *err, size_t errlen)
{
    char path[1100], line[4096];
    FILE *f;
    int rc = 0;

    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    c->rtol = 1e-3;
    c->atol = 1e-7;
    snprintf(path, sizeof path, "%s/case.txt", dir);
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -ENOENT;
    }
    while (fgets(line, sizeof line, f)) {
        char kw[32] = "";
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        sscanf(line, "%31s", kw);
        if (!strcmp(kw, "input") || !strcmp(kw, "output")) {
            xf_case_tensor *t;
            char file[256];
            int off = 0;
            const char *p;
            if (c->n_tensors == XF_CASE_MAX_TENSORS) {
                rc = -E2BIG;
                break;
            }
            t = &c->t[c->n_tensors];
            if (sscanf(line, "%*s %63s %255s %15s %d%n", t->name, file, t->dtype, &t->rank,
                       &off) != 4 || t->rank < 0 || t->rank > 8) {
                snprintf(err, errlen, "%s: bad line '%s'", path, line);
                rc = -EINVAL;
                break;
            }
            t->is_output = kw[0] == 'o';
            t->numel = 1;
            p = line + off;
            for (int i = 0; i < t->rank; i++) {
                int used = 0;
                if (sscanf(p, "%lld%n", (long long *)&t->dims[i], &used) != 1 || t->dims[i] < 0) {
                    snprintf(err, errlen, "%s: bad dims in '%s'", path, line);
                    rc = -EINVAL;
                    break;
                }
                p += used;
                t->numel *= (size_t)t->dims[i];
            }
            if (rc)
                break;
            c->n_tensors++;
            rc = load_tensor(dir, t, file, err, errlen);
            if (rc)
                break;
        } else if (!strcmp(kw, "attr")) {
            char type[32] = "", rest[64] = "";
            int i = c->n_attrs;
            if (i == XF_CASE_MAX_ATTRS)
                continue;
            if (sscanf(line, "attr %63s %31s %63s %63s", c->attr_name[i], type, c->attr_val[i],
                       rest) >= 3) {
                c->attr_default[i] = !strcmp(rest, "default");
                c->n_attrs++;
            }
        } else if (!strcmp(kw, "tolerance")) {
            sscanf(line, "tolerance rtol %lf atol %lf", &c->rtol, &c->atol);
        } else if (!strcmp(kw, "op")) {
            sscanf(line, "op %63s", c->op);
        } else if (c->n_extra < 8) {
            size_t ll = strlen(line);
            if (ll >= sizeof c->line_extra[0])
                ll = sizeof c->line_extra[0] - 1;
            memcpy(c->line_extra[c->n_extra], line, ll);
            c->line_extra[c->n_extra++][ll] = '\0';
        }
    }
    fclose(f);
    if (rc)
        xf_case_free(c);
    return rc;
}

void xf_case_free(xf_case *c)
{
    for (int i = 0; i < c->n_tensors; i++) {
        free(c->t[i].data);
        c->t[i].data = NULL;
    }
    c->n_tensors = 0;
}

const xf_case_tensor *xf_case_get(const xf_case *c, const char *name)
{
    for (int i = 0; i < c->n_tensors; i++)
        if (!strcmp(c->t[i].name, name))
            return &c->t[i];
    return NULL;
}

const char *xf_case_attr(const xf_case *c, const char *name)
{
    for (int i = 0; i < c->n_attrs; i++)
        if (!strcmp(c->attr_name[i], name))
            return c->attr_val[i];
    return NULL;
}

const char *xf_case_extra(const xf_case *c, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < c->n_extra; i++)
        if (!strncmp(c->line_extra[i], key, kl) && c->line_extra[i][kl] == ' ')
            return c->line_extra[i] + kl + 1;
    return NULL;
}
