/* The owned-block list of a model (see owned.h): grows by doubling, frees in one call. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "engine/owned.h"

int xf_owned_add(xf_owned_t *o, void *p)
{
    if (!p)
        return -ENOMEM;
    if (o->n == o->cap) {
        int32_t cap = o->cap ? 2 * o->cap : 64;
        void **n = realloc(o->p, (size_t)cap * sizeof *n);
        if (!n) {
            free(p);
            return -ENOMEM;
        }
        o->p = n;
        o->cap = cap;
    }
    o->p[o->n++] = p;
    return 0;
}

void xf_owned_free(xf_owned_t *o)
{
    for (int32_t i = 0; i < o->n; i++)
        free(o->p[i]);
    free(o->p);
    *o = (xf_owned_t){ 0 };
}
