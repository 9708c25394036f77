/* Engine-internal: SHA-256 (FIPS 180-4), streaming, for the model hash of the session blob
 * (ATTENTION.md §22.1). Plain C, no state outside the context. */
#ifndef XF_ENGINE_SHA256_H
#define XF_ENGINE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct xf_sha256 {
    uint32_t h[8];
    uint64_t len;              /* bytes hashed so far */
    uint8_t buf[64];
    size_t fill;
} xf_sha256_t;

void xf_sha256_init(xf_sha256_t *c);
void xf_sha256_update(xf_sha256_t *c, const void *data, size_t len);
void xf_sha256_final(xf_sha256_t *c, uint8_t out[32]);

#endif
