/* Transformer-XL session memory: the in-process object (per layer the inputs of that layer for
 * the last rows tokens, oldest first, plus the last segment's final hidden row) and its session
 * blob (ATTENTION.md §22.1) in f32/f16/bf16 with every check of the spec on read. No I/O. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/fam_m.h"
#include "engine/diag.h"
#include "engine/safetensors.h"
#include "engine/txl_model.h"

#define BLOB_MAGIC "XFMM"
#define BLOB_VERSION 1
#define BLOB_HDR 128u
#define BLOB_CRC_AT 104u
#define FLAG_COMPRESSIVE 1u
#define FLAG_BOUNDARY 2u     /* one more row after the memory rows: the last hidden row */

int xf_txl_mem_create(const xf_txl_t *m, enum xf_txl_init init, xf_txl_mem_t **out)
{
    const xf_txl_info_t *cf = &m->info;
    xf_txl_mem_t *mem = calloc(1, sizeof *mem);
    size_t nd = (size_t)cf->n_layer * (size_t)cf->mem_len * (size_t)cf->d_model;

    if (!mem)
        return -ENOMEM;
    mem->n_layer = cf->n_layer;
    mem->d_model = cf->d_model;
    mem->cap = cf->mem_len;
    mem->data = calloc(nd ? nd : 1, sizeof(float));
    mem->boundary = calloc((size_t)cf->d_model, sizeof(float));
    if (!mem->data || !mem->boundary) {
        xf_txl_mem_free(mem);
        return -ENOMEM;
    }
    mem->rows = init == XF_TXL_INIT_ZEROS ? mem->cap : 0;
    *out = mem;
    return 0;
}

void xf_txl_mem_free(xf_txl_mem_t *mem)
{
    if (!mem)
        return;
    free(mem->data);
    free(mem->boundary);
    free(mem);
}

void xf_txl_mem_stats(const xf_txl_mem_t *mem, xf_txl_mem_stats_t *out)
{
    out->rows = mem->rows;
    out->segments = mem->segments;
    out->tokens = mem->tokens;
    out->has_boundary = mem->has_boundary;
    out->bytes = sizeof *mem + sizeof(float) * ((size_t)mem->n_layer * (size_t)mem->cap + 1u) *
                                   (size_t)mem->d_model;
}

/* ---- blob ------------------------------------------------------------------------------- */

static void put16(uint8_t *b, uint16_t v)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *b)
{
    return (uint16_t)(b[0] | b[1] << 8);
}

static uint32_t get32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get64(const uint8_t *b)
{
    return (uint64_t)get32(b) | (uint64_t)get32(b + 4) << 32;
}

static size_t dsize(enum xf_txl_dtype d)
{
    return d == XF_TXL_F32 ? 4u : (d == XF_TXL_F16 || d == XF_TXL_BF16) ? 2u : 0u;
}

static size_t payload_of(const xf_txl_mem_t *mem, enum xf_txl_dtype dtype)
{
    size_t rows = (size_t)mem->n_layer * (size_t)mem->rows + (mem->has_boundary ? 1u : 0u);
    return rows * (size_t)mem->d_model * dsize(dtype);
}

size_t xf_txl_mem_blob_size(const xf_txl_t *m, const xf_txl_mem_t *mem, enum xf_txl_dtype dtype)
{
    (void)m;
    return dsize(dtype) ? BLOB_HDR + payload_of(mem, dtype) : 0;
}

/* Returns -ERANGE when a finite value does not fit f16 (it would come back as inf). */
static int enc_row(const float *x, int32_t d, enum xf_txl_dtype dtype, uint8_t *out)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (dtype == XF_TXL_F32) {   /* the blob is little-endian: the row as it is */
        memcpy(out, x, sizeof(float) * (size_t)d);
        return 0;
    }
#endif
    for (int32_t i = 0; i < d; i++) {
        if (dtype == XF_TXL_F16 && fabsf(x[i]) > 65504.0f)
            return -ERANGE;
        if (dtype == XF_TXL_F32) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            put32(out + 4 * i, u);
        } else {
            put16(out + 2 * i, dtype == XF_TXL_F16 ? xf_float_to_half(x[i])
                                                   : xf_float_to_bf16(x[i]));
        }
    }
    return 0;
}

static void dec_row(const uint8_t *in, int32_t d, int dtype, float *x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (dtype == XF_TXL_F32) {
        memcpy(x, in, sizeof(float) * (size_t)d);
        return;
    }
#endif
    for (int32_t i = 0; i < d; i++) {
        if (dtype == XF_TXL_F32) {
            uint32_t u = get32(in + 4 * i);
            memcpy(&x[i], &u, 4);
        } else {
            uint16_t h = get16(in + 2 * i);
            x[i] = dtype == XF_TXL_F16 ? xf_half_to_float(h) : xf_bf16_to_float(h);
        }
    }
}

/* CRC-32C over the header's first 104 bytes and the payload (the CRC field and the reserved
 * bytes after it are outside; reserved bytes are checked to be zero instead), so a corrupted
 * header field is caught as surely as a corrupted row. */
static uint32_t blob_crc(const uint8_t *b, size_t hsize, size_t payload)
{
    return xf_at_m_crc32c_more(xf_at_m_crc32c(b, BLOB_CRC_AT), b + hsize, payload);
}

int xf_txl_mem_save(const xf_txl_t *m, const xf_txl_mem_t *mem, enum xf_txl_dtype dtype,
                    void *buf, size_t len)
{
    size_t es = dsize(dtype), payload, rowb;
    uint8_t *b = buf, *p;
    uint32_t crc;

    if (!es || mem->n_layer != m->info.n_layer || mem->d_model != m->info.d_model)
        return -EINVAL;
    payload = payload_of(mem, dtype);
    if (len < BLOB_HDR + payload)
        return -ENOBUFS;
    memset(b, 0, BLOB_HDR);
    memcpy(b, BLOB_MAGIC, 4);
    put16(b + 4, BLOB_VERSION);
    put16(b + 6, (uint16_t)dtype);
    put32(b + 8, BLOB_HDR);
    put32(b + 12, mem->has_boundary ? FLAG_BOUNDARY : 0);
    memcpy(b + 16, m->info.hash, 32);
    put32(b + 48, (uint32_t)mem->n_layer);
    put32(b + 52, (uint32_t)mem->d_model);
    put32(b + 56, (uint32_t)mem->cap);
    put32(b + 60, (uint32_t)mem->rows);
    put64(b + 80, (uint64_t)mem->segments);
    put64(b + 88, (uint64_t)mem->tokens);
    put64(b + 96, (uint64_t)payload);
    rowb = (size_t)mem->d_model * es;
    p = b + BLOB_HDR;
    for (int32_t l = 0; l < mem->n_layer; l++)
        for (int32_t r = 0; r < mem->rows; r++, p += rowb)
            if (enc_row(mem->data + ((size_t)l * (size_t)mem->cap + (size_t)r) *
                                        (size_t)mem->d_model, mem->d_model, dtype, p) < 0)
                return -ERANGE;
    if (mem->has_boundary && enc_row(mem->boundary, mem->d_model, dtype, p) < 0)
        return -ERANGE;
    crc = blob_crc(b, BLOB_HDR, payload);
    put32(b + BLOB_CRC_AT, crc);
    return 0;
}

static int reject(xf_diag_t *diag, const char *what)
{
    return xf_diag_set(diag, XF_EFORMAT, "session blob rejected: %s", what);
}

int xf_txl_mem_load(const xf_txl_t *m, const void *buf, size_t len, xf_txl_mem_t *mem,
                    xf_diag_t *diag)
{
    const uint8_t *b = buf;
    const xf_txl_info_t *cf = &m->info;
    uint32_t hsize, flags, cap, rows, keep;
    uint64_t payload, segs, toks, want;
    size_t es, rowb;
    int dtype;
    float *data = NULL, *bnd = NULL;

    if (len < 8 || memcmp(b, BLOB_MAGIC, 4))
        return reject(diag, "wrong magic");
    if (get16(b + 4) == 0 || get16(b + 4) > BLOB_VERSION)
        return reject(diag, "unsupported version");
    dtype = get16(b + 6);
    es = dsize((enum xf_txl_dtype)dtype);
    if (!es)
        return reject(diag, "unknown dtype");
    if (len < 12)
        return reject(diag, "truncated header");
    hsize = get32(b + 8);
    if (hsize < 108 || hsize < BLOB_HDR || hsize % 64 || hsize > len)
        return reject(diag, "bad header_size");
    flags = get32(b + 12);
    if (flags & FLAG_COMPRESSIVE)
        return reject(diag, "compressive sections in a Transformer-XL session");
    if (flags & ~FLAG_BOUNDARY)
        return reject(diag, "unknown flags");
    if (memcmp(b + 16, cf->hash, 32))
        return reject(diag, "model hash differs (another model or model version)");
    if (get32(b + 48) != (uint32_t)cf->n_layer)
        return reject(diag, "n_layers differs");
    if (get32(b + 52) != (uint32_t)cf->d_model)
        return reject(diag, "d_model differs");
    cap = get32(b + 56);
    rows = get32(b + 60);
    if (cap > (1u << 16) || rows > cap)
        return reject(diag, "memory rows above the cap");
    if (get32(b + 64) || get32(b + 68) || get32(b + 72) || get32(b + 76))
        return reject(diag, "compressive fields set in a Transformer-XL session");
    segs = get64(b + 80);
    toks = get64(b + 88);
    if (segs > INT64_MAX || toks > INT64_MAX || (segs == 0 && (rows || toks)))
        return reject(diag, "bad segment or token count");
    payload = get64(b + 96);
    for (uint32_t i = BLOB_CRC_AT + 4; i < hsize; i++)
        if (b[i])
            return reject(diag, "reserved bytes are not zero");
    rowb = (size_t)cf->d_model * es;
    want = ((uint64_t)cf->n_layer * rows + ((flags & FLAG_BOUNDARY) ? 1u : 0u)) * rowb;
    if (payload != want)
        return reject(diag, "payload_bytes does not match the rows");
    if ((uint64_t)len != hsize + payload)
        return reject(diag, "size != header_size + payload_bytes");
    if (blob_crc(b, hsize, (size_t)payload) != get32(b + BLOB_CRC_AT))
        return reject(diag, "CRC mismatch");
    keep = rows < (uint32_t)mem->cap ? rows : (uint32_t)mem->cap;
    data = calloc((size_t)mem->n_layer * (size_t)mem->cap * (size_t)mem->d_model + 1,
                  sizeof(float));
    bnd = calloc((size_t)mem->d_model, sizeof(float));
    if (!data || !bnd) {
        free(data);
        free(bnd);
        return xf_diag_set(diag, -ENOMEM, "out of memory");
    }
    for (int32_t l = 0; l < cf->n_layer; l++)
        for (uint32_t r = 0; r < keep; r++) {
            const uint8_t *src = b + hsize + ((size_t)l * rows + (rows - keep + r)) * rowb;
            dec_row(src, cf->d_model, dtype,
                    data + ((size_t)l * (size_t)mem->cap + r) * (size_t)mem->d_model);
        }
    if (flags & FLAG_BOUNDARY)
        dec_row(b + hsize + (size_t)cf->n_layer * rows * rowb, cf->d_model, dtype, bnd);
    free(mem->data);
    free(mem->boundary);
    mem->data = data;
    mem->boundary = bnd;
    mem->rows = (int32_t)keep;
    mem->segments = (int64_t)segs;
    mem->tokens = (int64_t)toks;
    mem->has_boundary = (flags & FLAG_BOUNDARY) != 0;
    return 0;
}
