/* A list of heap blocks that one object owns and frees together: a loaded model's converted
 * tensors, label strings and the like (engine-internal). Not thread-safe: filled while the
 * object is built, freed with it. */
#ifndef XF_ENGINE_OWNED_H
#define XF_ENGINE_OWNED_H

#include <stdint.h>

typedef struct xf_owned {
    void **p;                  /* [n] blocks, each from malloc */
    int32_t n, cap;
} xf_owned_t;

/* Takes p: appends it to o, or frees it when the list cannot grow. Returns 0, or -ENOMEM when
 * p is NULL (a failed allocation passed straight in) or the list cannot grow. */
int xf_owned_add(xf_owned_t *o, void *p);

/* Frees every block and the list; o is empty afterwards. */
void xf_owned_free(xf_owned_t *o);

#endif
