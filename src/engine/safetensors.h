/* Engine-internal: the safetensors format — a validating reader (8-byte little-endian header
 * length, JSON header, data section; mmap'd read-only) and a writer for demo models and tests.
 * Owns the fp16/bf16 <-> fp32 conversions. Every offset, dtype and shape is checked when the
 * file is opened, before any tensor byte is read. */
#ifndef XF_ENGINE_SAFETENSORS_H
#define XF_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/error.h>

#define XF_ST_MAX_RANK 8
#define XF_ST_MAX_HEADER (100u * 1024u * 1024u)   /* header length limit: 100 MB */

/* Dtypes the reader accepts. Only the float ones can be read as fp32; the integer ones (and
 * F64/BOOL) are accepted as "present but unused" (e.g. embeddings.position_ids buffers). */
enum xf_st_dtype {
    XF_ST_F32 = 1, XF_ST_F16, XF_ST_BF16,
    XF_ST_F64, XF_ST_I8, XF_ST_U8, XF_ST_I16, XF_ST_I32, XF_ST_I64, XF_ST_BOOL
};

typedef struct xf_st_tensor {
    const char *name;                 /* borrowed from the file's storage */
    enum xf_st_dtype dtype;
    int32_t rank;
    int64_t shape[XF_ST_MAX_RANK];
    uint64_t begin, end;              /* byte offsets into the data section */
    uint64_t numel;
} xf_st_tensor_t;

typedef struct xf_st_file {
    char *path;                       /* as opened */
    const char *base;                 /* basename of path, for messages */
    void *map;                        /* whole file, PROT_READ, MAP_PRIVATE */
    size_t map_len;
    const uint8_t *data;              /* start of the data section */
    uint64_t data_len;
    xf_st_tensor_t *t;                /* [n], in header order */
    int32_t n;
    char *names;                      /* storage of the names */
} xf_st_file_t;

/* Open and validate path. Returns 0, -ENOENT, -EACCES, XF_EFORMAT (truncated, header length,
 * JSON, duplicate keys, offsets, overlaps, shape/size), XF_EUNSUPPORTED (dtype), -ENOMEM; diag
 * names the file and the tensor. Ownership: *out is new, close with xf_st_close(). */
int xf_st_open(const char *path, xf_st_file_t **out, xf_diag_t *diag);
void xf_st_close(xf_st_file_t *f);

/* The tensor called name, or NULL. Ownership: borrowed, valid until xf_st_close(). */
const xf_st_tensor_t *xf_st_find(const xf_st_file_t *f, const char *name);

/* The tensor's values as fp32: F32 with 4-byte aligned data points into the map (*owned =
 * NULL); otherwise converted into a new buffer (*owned = that buffer, free() it). A
 * non-float dtype is XF_EUNSUPPORTED naming the tensor and dtype; -ENOMEM. */
int xf_st_read_f32(const xf_st_file_t *f, const xf_st_tensor_t *t, const float **data,
                   float **owned, xf_diag_t *diag);

/* Take the file's mapping (for the model's lifetime); the file keeps no map afterwards.
 * Ownership: *map is new, munmap(*map, *len) it. */
void xf_st_take_map(xf_st_file_t *f, void **map, size_t *len);

const char *xf_st_dtype_name(enum xf_st_dtype d);
int xf_st_dtype_size(enum xf_st_dtype d);

/* Exact conversions. Half/bf16 → float are exact (subnormals, ±inf, NaN payloads kept);
 * float → half/bf16 round to nearest even, overflow to ±inf, NaN stays NaN. */
float xf_half_to_float(uint16_t h);
float xf_bf16_to_float(uint16_t b);
uint16_t xf_float_to_half(float f);
uint16_t xf_float_to_bf16(float f);

/* One tensor to write. Exactly one source: data (fp32 values, converted to dtype F32/F16/
 * BF16), gen (called once with a buffer of numel floats to fill, then converted), or raw
 * (raw_len bytes written as is, with any dtype string — for tests of hostile files). */
typedef struct xf_st_wtensor {
    const char *name;
    const char *dtype;                /* "F32", "F16", "BF16" (or anything with raw) */
    int32_t rank;
    int64_t shape[XF_ST_MAX_RANK];
    const float *data;
    void (*gen)(void *ctx, const struct xf_st_wtensor *t, float *buf, size_t numel);
    void *gen_ctx;
    const void *raw;
    size_t raw_len;
} xf_st_wtensor_t;

/* Write n tensors to path (via path.tmp + rename), header padded with spaces to a multiple of
 * 8 bytes, data laid out in the given order. meta_json: optional "__metadata__" object as JSON
 * text (string values only), or NULL. Returns 0, -errno, XF_EPARAM (bad tensor), -ENOMEM. */
int xf_st_write(const char *path, const xf_st_wtensor_t *t, int n, const char *meta_json,
                xf_diag_t *diag);

#endif
