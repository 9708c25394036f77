/* safetensors reader and writer: validates the whole header (length, JSON, dtypes, shapes,
 * offsets, overlaps) before any tensor byte is touched, mmaps the file read-only, and converts
 * F16/BF16 to fp32 on request. The writer pads the header with spaces to 8 bytes and writes
 * through a temporary file + rename(). Also owns the half/bf16 <-> float conversions. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/diag.h"
#include "engine/safetensors.h"

static const struct {
    const char *name;
    enum xf_st_dtype dt;
    int size;
} dtypes[] = {
    { "F32", XF_ST_F32, 4 }, { "F16", XF_ST_F16, 2 }, { "BF16", XF_ST_BF16, 2 },
    { "F64", XF_ST_F64, 8 }, { "I8", XF_ST_I8, 1 }, { "U8", XF_ST_U8, 1 },
    { "I16", XF_ST_I16, 2 }, { "I32", XF_ST_I32, 4 }, { "I64", XF_ST_I64, 8 },
    { "BOOL", XF_ST_BOOL, 1 },
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *xf_st_dtype_name(enum xf_st_dtype d)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dt == d)
            return dtypes[i].name;
    return "?";
}

int xf_st_dtype_size(enum xf_st_dtype d)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dt == d)
            return dtypes[i].size;
    return 0;
}

static int dtype_parse(const char *s, enum xf_st_dtype *out)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(dtypes[i].name, s)) {
            *out = dtypes[i].dt;
            return 0;
        }
    return -1;
}

/* ---- conversions ------------------------------------------------------------------------ */

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float xf_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;

    if (exp == 0) {
        int32_t e = 113;               /* 127 - 15 + 1: exponent of the smallest normal */
        if (mant == 0)
            return bits_to_float(sign);
        while (!(mant & 0x400u)) {     /* normalise the subnormal */
            mant <<= 1;
            e--;
        }
        mant &= 0x3ffu;
        return bits_to_float(sign | ((uint32_t)e << 23) | (mant << 13));
    }
    if (exp == 31)                     /* inf (mant 0) or NaN with its payload */
        return bits_to_float(sign | 0x7f800000u | (mant << 13));
    return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

float xf_bf16_to_float(uint16_t b)
{
    return bits_to_float((uint32_t)b << 16);
}

uint16_t xf_float_to_half(float f)
{
    uint32_t x = float_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    int32_t exp;

    if (ax > 0x7f800000u)              /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu));
    if (ax == 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u);
    exp = (int32_t)(ax >> 23) - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {                    /* half subnormal (or zero) */
        uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
        int32_t shift = 14 - exp;
        uint32_t r, rem, half;
        if (shift > 24)
            return (uint16_t)sign;
        r = mant >> shift;
        rem = mant & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    {
        uint32_t r = ((uint32_t)exp << 10) | ((ax >> 13) & 0x3ffu);
        uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
            r++;                       /* a carry into the exponent is right (up to inf) */
        return (uint16_t)(sign | r);
    }
}

uint16_t xf_float_to_bf16(float f)
{
    uint32_t x = float_to_bits(f);

    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* All 65536 halves as floats, built once: a table lookup converts ~10x faster than the
 * branchy xf_half_to_float. */
static float half_table[65536];
static pthread_once_t half_once = PTHREAD_ONCE_INIT;

static void half_table_init(void)
{
    for (uint32_t h = 0; h < 65536u; h++)
        half_table[h] = xf_half_to_float((uint16_t)h);
}

static const float *half_lut(void)
{
    pthread_once(&half_once, half_table_init);
    return half_table;
}

/* ---- reader ----------------------------------------------------------------------------- */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static const char *path_base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

void xf_st_close(xf_st_file_t *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->t);
    free(f->names);
    free(f->path);
    free(f);
}

void xf_st_take_map(xf_st_file_t *f, void **map, size_t *len)
{
    *map = f->map;
    *len = f->map_len;
    f->map = NULL;
    f->map_len = 0;
    f->data = NULL;
}

const xf_st_tensor_t *xf_st_find(const xf_st_file_t *f, const char *name)
{
    for (int32_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return &f->t[i];
    return NULL;
}

static int json_uint(const json_t *v, uint64_t *out)
{
    json_int_t i;
    if (!json_is_integer(v))
        return -1;
    i = json_integer_value(v);
    if (i < 0)
        return -1;
    *out = (uint64_t)i;
    return 0;
}

/* Validate one header entry into t. */
static int parse_tensor(const xf_st_file_t *f, const char *key, const json_t *val,
                        xf_st_tensor_t *t, xf_diag_t *diag)
{
    const json_t *jd, *js, *jo;
    const char *ds;
    uint64_t numel = 1, nbytes, b, e;
    size_t i;

    if (!json_is_object(val))
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: header entry is not an object", f->base,
                           key);
    jd = json_object_get(val, "dtype");
    js = json_object_get(val, "shape");
    jo = json_object_get(val, "data_offsets");
    if (!json_is_string(jd))
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: missing or non-string dtype", f->base, key);
    ds = json_string_value(jd);
    if (dtype_parse(ds, &t->dtype) != 0)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s: %s: dtype %.32s not supported", f->base,
                           key, ds);
    if (!json_is_array(js))
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: missing or non-array shape", f->base, key);
    if (json_array_size(js) > XF_ST_MAX_RANK)
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: rank %zu exceeds %d", f->base, key,
                           json_array_size(js), XF_ST_MAX_RANK);
    t->rank = (int32_t)json_array_size(js);
    for (i = 0; i < json_array_size(js); i++) {
        uint64_t d;
        if (json_uint(json_array_get(js, i), &d) != 0 || d > INT64_MAX)
            return xf_diag_set(diag, XF_EFORMAT, "%s: %s: shape[%zu] is not a non-negative "
                               "integer", f->base, key, i);
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(numel, d, &numel))
            return xf_diag_set(diag, XF_EFORMAT, "%s: %s: shape overflows", f->base, key);
    }
    if (__builtin_mul_overflow(numel, (uint64_t)xf_st_dtype_size(t->dtype), &nbytes))
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: shape overflows", f->base, key);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        json_uint(json_array_get(jo, 0), &b) != 0 || json_uint(json_array_get(jo, 1), &e) != 0)
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: data_offsets must be [begin, end] "
                           "non-negative integers", f->base, key);
    if (b > e || e > f->data_len)
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: data_offsets [%llu, %llu] outside the "
                           "data section of %llu bytes", f->base, key, (unsigned long long)b,
                           (unsigned long long)e, (unsigned long long)f->data_len);
    if (e - b != nbytes)
        return xf_diag_set(diag, XF_EFORMAT, "%s: %s: %llu bytes of data, shape and dtype %s "
                           "need %llu", f->base, key, (unsigned long long)(e - b),
                           xf_st_dtype_name(t->dtype), (unsigned long long)nbytes);
    t->begin = b;
    t->end = e;
    t->numel = numel;
    return 0;
}

/* Merge sort of tensor indices by (begin, end): a hostile header may hold very many entries,
 * so no O(n^2) pairwise check. */
static void msort_idx(int32_t *idx, int32_t *tmp, int32_t n, const xf_st_tensor_t *t)
{
    if (n < 2)
        return;
    int32_t h = n / 2;
    msort_idx(idx, tmp, h, t);
    msort_idx(idx + h, tmp, n - h, t);
    int32_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        const xf_st_tensor_t *x = &t[idx[i]], *y = &t[idx[j]];
        if (x->begin < y->begin || (x->begin == y->begin && x->end <= y->end))
            tmp[k++] = idx[i++];
        else
            tmp[k++] = idx[j++];
    }
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

static int check_overlaps(const xf_st_file_t *f, xf_diag_t *diag)
{
    int32_t *idx, *tmp;
    const xf_st_tensor_t *prev = NULL;
    int rc = 0;

    if (f->n < 2)
        return 0;
    idx = malloc((size_t)f->n * sizeof *idx);
    tmp = malloc((size_t)f->n * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", f->base);
    }
    for (int32_t i = 0; i < f->n; i++)
        idx[i] = i;
    msort_idx(idx, tmp, f->n, f->t);
    for (int32_t i = 0; i < f->n; i++) {
        const xf_st_tensor_t *t = &f->t[idx[i]];
        if (t->begin == t->end)
            continue;                  /* empty tensors occupy no bytes */
        if (prev && t->begin < prev->end) {
            rc = xf_diag_set(diag, XF_EFORMAT, "%s: tensors %s and %s overlap", f->base,
                             prev->name, t->name);
            break;
        }
        prev = t;
    }
    free(idx);
    free(tmp);
    return rc;
}

int xf_st_open(const char *path, xf_st_file_t **out, xf_diag_t *diag)
{
    xf_st_file_t *f;
    struct stat st;
    json_t *root = NULL, *val;
    json_error_t jerr;
    const char *key;
    uint64_t hlen;
    size_t name_bytes = 0, off = 0;
    int fd, rc;
    int32_t k;

    f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
    }
    f->base = path_base(f->path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: %s", path, strerror(-rc));
        goto fail;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        xf_diag_set(diag, rc, "%s: %s", path, strerror(-rc));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: not a regular file", f->base);
        goto fail;
    }
    if (st.st_size < 8) {
        close(fd);
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: file is %lld bytes, too short for the header "
                         "length", f->base, (long long)st.st_size);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: file too large", f->base);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        rc = -errno;
        f->map = NULL;
        xf_diag_set(diag, rc, "%s: mmap: %s", f->base, strerror(-rc));
        goto fail;
    }
    hlen = le64(f->map);
    if (hlen > f->map_len - 8) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: header length %llu exceeds the file's %zu "
                         "bytes after the length field (truncated file?)", f->base,
                         (unsigned long long)hlen, f->map_len - 8);
        goto fail;
    }
    if (hlen > XF_ST_MAX_HEADER) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: header length %llu exceeds the %u byte limit",
                         f->base, (unsigned long long)hlen, XF_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen < 2) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: header length %llu is too short", f->base,
                         (unsigned long long)hlen);
        goto fail;
    }
    f->data = (const uint8_t *)f->map + 8 + hlen;
    f->data_len = f->map_len - 8 - hlen;
    root = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: header is not valid JSON: %s (byte %d)",
                         f->base, jerr.text, jerr.position + 8);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = xf_diag_set(diag, XF_EFORMAT, "%s: header is not a JSON object", f->base);
        goto fail;
    }
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__"))
            continue;
        name_bytes += strlen(key) + 1;
        f->n++;
    }
    f->t = calloc(f->n ? (size_t)f->n : 1, sizeof *f->t);
    f->names = malloc(name_bytes ? name_bytes : 1);
    if (!f->t || !f->names) {
        rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", f->base);
        goto fail;
    }
    k = 0;
    json_object_foreach(root, key, val) {
        size_t len = strlen(key) + 1;
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                rc = xf_diag_set(diag, XF_EFORMAT, "%s: __metadata__ is not an object",
                                 f->base);
                goto fail;
            }
            continue;
        }
        memcpy(f->names + off, key, len);
        f->t[k].name = f->names + off;
        off += len;
        rc = parse_tensor(f, key, val, &f->t[k], diag);
        if (rc)
            goto fail;
        k++;
    }
    json_decref(root);
    root = NULL;
    rc = check_overlaps(f, diag);
    if (rc)
        goto fail;
    *out = f;
    return 0;

fail:
    json_decref(root);
    xf_st_close(f);
    return rc;
}

int xf_st_read_f32(const xf_st_file_t *f, const xf_st_tensor_t *t, const float **data,
                   float **owned, xf_diag_t *diag)
{
    const uint8_t *src = f->data + t->begin;
    float *buf;
    uint64_t n = t->numel;

    *owned = NULL;
    if (t->dtype != XF_ST_F32 && t->dtype != XF_ST_F16 && t->dtype != XF_ST_BF16)
        return xf_diag_set(diag, XF_EUNSUPPORTED, "%s: %s: dtype %s cannot be used as weights",
                           f->base, t->name, xf_st_dtype_name(t->dtype));
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t->dtype == XF_ST_F32 && ((uintptr_t)src & 3u) == 0) {
        *data = (const float *)(const void *)src;
        return 0;
    }
#endif
    if (n > SIZE_MAX / sizeof(float))
        return xf_diag_set(diag, -ENOMEM, "%s: %s: too large", f->base, t->name);
    buf = malloc(n ? (size_t)n * sizeof(float) : sizeof(float));
    if (!buf)
        return xf_diag_set(diag, -ENOMEM, "%s: %s: out of memory converting %llu values",
                           f->base, t->name, (unsigned long long)n);
    if (t->dtype == XF_ST_F32) {
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *p = src + 4 * i;
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            buf[i] = bits_to_float(u);
        }
    } else if (t->dtype == XF_ST_F16) {
        const float *lut = half_lut();
        for (uint64_t i = 0; i < n; i++)
            buf[i] = lut[src[2 * i] | src[2 * i + 1] << 8];
    } else {
        for (uint64_t i = 0; i < n; i++)
            buf[i] = xf_bf16_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    }
    *data = buf;
    *owned = buf;
    return 0;
}

/* ---- writer ----------------------------------------------------------------------------- */

static int wt_numel(const xf_st_wtensor_t *t, uint64_t *numel)
{
    uint64_t n = 1;
    if (t->rank < 0 || t->rank > XF_ST_MAX_RANK)
        return -1;
    for (int32_t i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)t->shape[i], &n))
            return -1;
    }
    *numel = n;
    return 0;
}

static int write_values(FILE *fp, const float *v, uint64_t n, enum xf_st_dtype dt)
{
    enum { CHUNK = 16384 };
    uint8_t buf[CHUNK * 4];

    for (uint64_t i = 0; i < n; i += CHUNK) {
        size_t m = (size_t)(n - i < CHUNK ? n - i : CHUNK), bytes;
        if (dt == XF_ST_F32) {
            for (size_t j = 0; j < m; j++) {
                uint32_t u = float_to_bits(v[i + j]);
                buf[4 * j] = (uint8_t)u;
                buf[4 * j + 1] = (uint8_t)(u >> 8);
                buf[4 * j + 2] = (uint8_t)(u >> 16);
                buf[4 * j + 3] = (uint8_t)(u >> 24);
            }
            bytes = 4 * m;
        } else {
            for (size_t j = 0; j < m; j++) {
                uint16_t h = dt == XF_ST_F16 ? xf_float_to_half(v[i + j])
                                             : xf_float_to_bf16(v[i + j]);
                buf[2 * j] = (uint8_t)h;
                buf[2 * j + 1] = (uint8_t)(h >> 8);
            }
            bytes = 2 * m;
        }
        if (fwrite(buf, 1, bytes, fp) != bytes)
            return -EIO;
    }
    return 0;
}

int xf_st_write(const char *path, const xf_st_wtensor_t *t, int n, const char *meta_json,
                xf_diag_t *diag)
{
    json_t *root = NULL;
    char *hdr = NULL, *tmp = NULL;
    FILE *fp = NULL;
    uint64_t off = 0;
    size_t hlen, padded;
    uint8_t lenb[8];
    int rc = 0;

    if (!path || n < 0 || (n > 0 && !t))
        return xf_diag_set(diag, -EINVAL, "xf_st_write: bad arguments");
    root = json_object();
    if (!root)
        goto oom;
    if (meta_json) {
        json_error_t jerr;
        json_t *m = json_loads(meta_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(m)) {
            json_decref(m);
            rc = xf_diag_set(diag, XF_EPARAM, "%s: __metadata__ is not a JSON object", path);
            goto out;
        }
        if (json_object_set_new(root, "__metadata__", m) != 0)
            goto oom;
    }
    for (int i = 0; i < n; i++) {
        uint64_t numel, bytes;
        enum xf_st_dtype dt;
        json_t *o, *shape;
        int nsrc = (t[i].data != NULL) + (t[i].gen != NULL) + (t[i].raw != NULL);

        if (!t[i].name || !*t[i].name || !strcmp(t[i].name, "__metadata__") || !t[i].dtype ||
            nsrc != 1 || wt_numel(&t[i], &numel) != 0) {
            rc = xf_diag_set(diag, XF_EPARAM, "%s: tensor %d (%s): bad name, dtype, shape or "
                             "source", path, i, t[i].name ? t[i].name : "(null)");
            goto out;
        }
        if (json_object_get(root, t[i].name)) {
            rc = xf_diag_set(diag, XF_EPARAM, "%s: duplicate tensor %s", path, t[i].name);
            goto out;
        }
        if (t[i].raw) {
            bytes = t[i].raw_len;
        } else {
            if (dtype_parse(t[i].dtype, &dt) != 0 ||
                (dt != XF_ST_F32 && dt != XF_ST_F16 && dt != XF_ST_BF16)) {
                rc = xf_diag_set(diag, XF_EPARAM, "%s: %s: cannot write dtype %s", path,
                                 t[i].name, t[i].dtype);
                goto out;
            }
            if (__builtin_mul_overflow(numel, (uint64_t)xf_st_dtype_size(dt), &bytes)) {
                rc = xf_diag_set(diag, XF_EPARAM, "%s: %s: too large", path, t[i].name);
                goto out;
            }
        }
        shape = json_array();
        o = json_object();
        if (!shape || !o) {
            json_decref(shape);
            json_decref(o);
            goto oom;
        }
        for (int32_t d = 0; d < t[i].rank; d++)
            if (json_array_append_new(shape, json_integer(t[i].shape[d])) != 0) {
                json_decref(shape);
                json_decref(o);
                goto oom;
            }
        if (json_object_set_new(o, "dtype", json_string(t[i].dtype)) != 0 ||
            json_object_set_new(o, "shape", shape) != 0 ||
            json_object_set_new(o, "data_offsets",
                                json_pack("[II]", (json_int_t)off,
                                          (json_int_t)(off + bytes))) != 0 ||
            json_object_set_new(root, t[i].name, o) != 0) {
            json_decref(o);
            goto oom;
        }
        off += bytes;
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr)
        goto oom;
    hlen = strlen(hdr);
    padded = (hlen + 8 + 7) / 8 * 8 - 8;   /* data starts at a multiple of 8 */
    {
        char *h2 = realloc(hdr, padded + 1);
        if (!h2)
            goto oom;
        hdr = h2;
        memset(hdr + hlen, ' ', padded - hlen);
        hdr[padded] = 0;
    }
    tmp = malloc(strlen(path) + 32);
    if (!tmp)
        goto oom;
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fp = fopen(tmp, "wb");
    if (!fp) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: %s", tmp, strerror(-rc));
        goto out;
    }
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    if (fwrite(lenb, 1, 8, fp) != 8 || fwrite(hdr, 1, padded, fp) != padded) {
        rc = xf_diag_set(diag, -EIO, "%s: write failed", tmp);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        uint64_t numel = 0;
        enum xf_st_dtype dt = XF_ST_F32;
        wt_numel(&t[i], &numel);
        if (t[i].raw) {
            if (t[i].raw_len && fwrite(t[i].raw, 1, t[i].raw_len, fp) != t[i].raw_len)
                rc = -EIO;
        } else {
            dtype_parse(t[i].dtype, &dt);
            if (t[i].data) {
                rc = write_values(fp, t[i].data, numel, dt);
            } else {
                float *buf;
                if (numel > SIZE_MAX / sizeof(float) ||
                    !(buf = malloc(numel ? (size_t)numel * sizeof(float) : 1))) {
                    rc = xf_diag_set(diag, -ENOMEM, "%s: %s: out of memory", path, t[i].name);
                    goto out;
                }
                t[i].gen(t[i].gen_ctx, &t[i], buf, (size_t)numel);
                rc = write_values(fp, buf, numel, dt);
                free(buf);
            }
        }
        if (rc) {
            xf_diag_set(diag, rc, "%s: write failed", tmp);
            goto out;
        }
    }
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: %s", tmp, strerror(-rc));
        goto out;
    }
    if (fclose(fp) != 0) {
        fp = NULL;
        rc = -EIO;
        xf_diag_set(diag, rc, "%s: close failed", tmp);
        goto out;
    }
    fp = NULL;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        xf_diag_set(diag, rc, "%s: rename: %s", path, strerror(-rc));
        goto out;
    }
    goto out;

oom:
    rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
out:
    if (fp) {
        fclose(fp);
        unlink(tmp);
    } else if (rc && tmp) {
        unlink(tmp);
    }
    free(tmp);
    free(hdr);
    json_decref(root);
    return rc;
}
