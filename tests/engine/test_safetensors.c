/* Tests for the safetensors reader/writer (src/engine/safetensors.c): round trips in F32/F16/
 * BF16, exact half/bf16 conversions on special values, and hostile files — every truncation
 * length, lying header lengths, bad JSON, duplicate keys, bad offsets, overlaps, size
 * mismatches, shape overflow, unsupported dtypes — each a clean error code naming the file and
 * tensor. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/error.h>

#include "engine/safetensors.h"
#include "../helpers/xf_test.h"


static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- conversions ------------------------------------------------------------------------ */

static void test_half_special(void **state)
{
    (void)state;
    /* Exact values: every one is representable, so equality is bitwise. */
    assert_int_equal(fbits(xf_half_to_float(0x0000)), 0x00000000u);
    assert_int_equal(fbits(xf_half_to_float(0x8000)), 0x80000000u);           /* -0 */
    assert_true(xf_half_to_float(0x3c00) == 1.0f);
    assert_true(xf_half_to_float(0xc000) == -2.0f);
    assert_true(xf_half_to_float(0x7bff) == 65504.0f);                        /* max */
    assert_true(xf_half_to_float(0x0400) == ldexpf(1.0f, -14));               /* min normal */
    assert_true(xf_half_to_float(0x0001) == ldexpf(1.0f, -24));               /* min subnormal */
    assert_true(xf_half_to_float(0x03ff) == ldexpf(1023.0f, -24));            /* max subnormal */
    assert_true(xf_half_to_float(0x8001) == -ldexpf(1.0f, -24));
    assert_true(xf_half_to_float(0x3555) == 0.333251953125f);          /* (1+341/1024)/4 */
    assert_true(isinf(xf_half_to_float(0x7c00)) && xf_half_to_float(0x7c00) > 0);
    assert_true(isinf(xf_half_to_float(0xfc00)) && xf_half_to_float(0xfc00) < 0);
    assert_true(isnan(xf_half_to_float(0x7e00)));
    assert_true(isnan(xf_half_to_float(0x7c01)));                             /* signalling */
    assert_true(isnan(xf_half_to_float(0xfe00)));

    /* Every finite half round-trips exactly through float. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = xf_half_to_float((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(xf_half_to_float(xf_float_to_half(f))));
            continue;
        }
        assert_int_equal(xf_float_to_half(f), h);
    }
    /* Rounding: to nearest, ties to even, overflow to inf, underflow to 0. */
    assert_int_equal(xf_float_to_half(1.0f + ldexpf(1.0f, -11)), 0x3c00);     /* tie -> even */
    assert_int_equal(xf_float_to_half(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02); /* tie -> even */
    assert_int_equal(xf_float_to_half(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3c01);
    assert_int_equal(xf_float_to_half(65520.0f), 0x7c00);
    assert_int_equal(xf_float_to_half(65519.0f), 0x7bff);
    assert_int_equal(xf_float_to_half(1e10f), 0x7c00);
    assert_int_equal(xf_float_to_half(-1e10f), 0xfc00);
    assert_int_equal(xf_float_to_half(ldexpf(1.0f, -25)), 0x0000);           /* tie -> 0 */
    assert_int_equal(xf_float_to_half(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(xf_float_to_half(ldexpf(3.0f, -25)), 0x0002);           /* tie -> even */
    assert_int_equal(xf_float_to_half(ldexpf(1.0f, -30)), 0x0000);
    assert_int_equal(xf_float_to_half(-ldexpf(1.0f, -30)), 0x8000);
    assert_int_equal(xf_float_to_half(ldexpf(2047.0f, -25)), 0x0400);        /* -> min normal */
    assert_int_equal(xf_float_to_half(INFINITY), 0x7c00);
    assert_true((xf_float_to_half(NAN) & 0x7c00) == 0x7c00 && (xf_float_to_half(NAN) & 0x3ff));
}

static void test_bf16_special(void **state)
{
    (void)state;
    assert_true(xf_bf16_to_float(0x3f80) == 1.0f);
    assert_true(xf_bf16_to_float(0xc040) == -3.0f);
    assert_int_equal(fbits(xf_bf16_to_float(0x8000)), 0x80000000u);
    assert_true(xf_bf16_to_float(0x0001) == bitsf(0x00010000u));              /* subnormal */
    assert_true(isinf(xf_bf16_to_float(0x7f80)) && xf_bf16_to_float(0xff80) < 0);
    assert_true(isnan(xf_bf16_to_float(0x7fc0)) && isnan(xf_bf16_to_float(0x7f81)));
    assert_true(xf_bf16_to_float(0x7f7f) == bitsf(0x7f7f0000u));              /* max */
    for (uint32_t b = 0; b < 0x10000u; b++) {
        float f = xf_bf16_to_float((uint16_t)b);
        if (isnan(f))
            assert_true(isnan(xf_bf16_to_float(xf_float_to_bf16(f))));
        else
            assert_int_equal(xf_float_to_bf16(f), b);
    }
    assert_int_equal(xf_float_to_bf16(bitsf(0x3f808000u)), 0x3f80);          /* tie -> even */
    assert_int_equal(xf_float_to_bf16(bitsf(0x3f818000u)), 0x3f82);          /* tie -> even */
    assert_int_equal(xf_float_to_bf16(bitsf(0x3f808001u)), 0x3f81);
    assert_int_equal(xf_float_to_bf16(bitsf(0x7f7fffffu)), 0x7f80);          /* -> inf */
    assert_true((xf_float_to_bf16(bitsf(0x7f800001u)) & 0x7f) != 0);         /* NaN stays */
}

/* Every half and bf16 bit pattern read from a file converts exactly like the scalar
 * functions (the reader uses a lookup table for F16). */
static void test_read_all_patterns(void **state)
{
    char path[1200];
    static uint16_t pat[65536];
    xf_st_wtensor_t t[2] = {
        { .name = "h", .dtype = "F16", .rank = 1, .shape = { 65536 }, .raw = pat,
          .raw_len = sizeof pat },
        { .name = "b", .dtype = "BF16", .rank = 2, .shape = { 256, 256 }, .raw = pat,
          .raw_len = sizeof pat },
    };
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    const float *v;
    float *own;
    (void)state;

    for (uint32_t i = 0; i < 65536u; i++)
        pat[i] = (uint16_t)i;                      /* little-endian host */
    xf_test_path(path, sizeof path, "pat.safetensors");
    assert_int_equal(xf_st_write(path, t, 2, NULL, &d), 0);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    assert_int_equal(xf_st_read_f32(f, xf_st_find(f, "h"), &v, &own, &d), 0);
    for (uint32_t i = 0; i < 65536u; i++)
        assert_int_equal(fbits(v[i]), fbits(xf_half_to_float((uint16_t)i)));
    free(own);
    assert_int_equal(xf_st_read_f32(f, xf_st_find(f, "b"), &v, &own, &d), 0);
    for (uint32_t i = 0; i < 65536u; i++)
        assert_int_equal(fbits(v[i]), i << 16);
    free(own);
    xf_st_close(f);
}

/* ---- round trip ------------------------------------------------------------------------- */

static void roundtrip(const char *dtype)
{
    char path[1200];
    float a[6] = { 1.0f, -2.5f, 0.125f, 3.0e-5f, 65504.0f, -0.0f };
    float b[3] = { 7.0f, 8.0f, 9.0f };
    xf_st_wtensor_t t[3] = {
        { .name = "a", .dtype = dtype, .rank = 2, .shape = { 2, 3 }, .data = a },
        { .name = "empty", .dtype = dtype, .rank = 2, .shape = { 0, 5 }, .data = b },
        { .name = "layer.b", .dtype = dtype, .rank = 1, .shape = { 3 }, .data = b },
    };
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    const xf_st_tensor_t *ta;
    const float *v;
    float *own;

    xf_test_path(path, sizeof path, "rt.safetensors");
    assert_int_equal(xf_st_write(path, t, 3, "{\"format\":\"pt\"}", &d), 0);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    assert_int_equal(f->n, 3);
    /* the data section starts 8-byte aligned (header padded with spaces) */
    assert_int_equal(((const uint8_t *)f->data - (const uint8_t *)f->map) % 8, 0);
    ta = xf_st_find(f, "a");
    assert_non_null(ta);
    assert_int_equal(ta->rank, 2);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 3);
    assert_int_equal(ta->numel, 6);
    assert_int_equal(xf_st_read_f32(f, ta, &v, &own, &d), 0);
    if (!strcmp(dtype, "F32")) {
        assert_null(own);                          /* used in place */
        assert_memory_equal(v, a, sizeof a);
    } else {
        assert_non_null(own);
        for (int i = 0; i < 6; i++) {
            float want = !strcmp(dtype, "F16") ? xf_half_to_float(xf_float_to_half(a[i]))
                                               : xf_bf16_to_float(xf_float_to_bf16(a[i]));
            assert_int_equal(fbits(v[i]), fbits(want));
        }
    }
    free(own);
    ta = xf_st_find(f, "empty");
    assert_non_null(ta);
    assert_int_equal(ta->numel, 0);
    assert_int_equal(xf_st_read_f32(f, ta, &v, &own, &d), 0);
    free(own);
    assert_null(xf_st_find(f, "nope"));
    assert_null(xf_st_find(f, "__metadata__"));
    xf_st_close(f);
}

static void test_roundtrip_f32(void **state) { (void)state; roundtrip("F32"); }
static void test_roundtrip_f16(void **state) { (void)state; roundtrip("F16"); }
static void test_roundtrip_bf16(void **state) { (void)state; roundtrip("BF16"); }

static void test_writer_rejects(void **state)
{
    char path[1200];
    float a[2] = { 1, 2 };
    xf_diag_t d = { 0 };
    xf_st_wtensor_t dup[2] = {
        { .name = "x", .dtype = "F32", .rank = 1, .shape = { 2 }, .data = a },
        { .name = "x", .dtype = "F32", .rank = 1, .shape = { 2 }, .data = a },
    };
    xf_st_wtensor_t bad = { .name = "x", .dtype = "Q4", .rank = 1, .shape = { 2 }, .data = a };
    xf_st_wtensor_t neg = { .name = "x", .dtype = "F32", .rank = 1, .shape = { -2 }, .data = a };
    (void)state;
    xf_test_path(path, sizeof path, "w.safetensors");
    assert_int_equal(xf_st_write(path, dup, 2, NULL, &d), XF_EPARAM);
    assert_non_null(strstr(d.msg, "duplicate"));
    assert_int_equal(xf_st_write(path, &bad, 1, NULL, &d), XF_EPARAM);
    assert_int_equal(xf_st_write(path, &neg, 1, NULL, &d), XF_EPARAM);
    assert_int_equal(xf_st_write(path, dup, 1, "[1]", &d), XF_EPARAM);
}

/* ---- hostile files ---------------------------------------------------------------------- */

/* Write 8-byte length hlen (as given, may lie), header text and n data bytes. */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, size_t data_len)
{
    size_t hl = strlen(hdr);
    size_t total = 8 + hl + data_len;
    uint8_t *buf = calloc(1, total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (uint8_t)(i * 7);
    assert_int_equal(xf_test_write_file(path, buf, total), 0);
    free(buf);
}

/* Open a file made of hdr (true length) + data_len bytes; expect code and substrings. */
static void expect_hdr(const char *hdr, size_t data_len, int code, const char *s1,
                       const char *s2)
{
    char path[1200];
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    int rc;

    xf_test_path(path, sizeof path, "bad.safetensors");
    write_raw(path, strlen(hdr), hdr, data_len);
    rc = xf_st_open(path, &f, &d);
    if (rc != code)
        print_message("# header %s -> %d (%s)\n", hdr, rc, d.msg);
    assert_int_equal(rc, code);
    assert_null(f);
    assert_int_equal(d.code, code);
    assert_non_null(strstr(d.msg, "bad.safetensors"));
    if (s1 && !strstr(d.msg, s1))
        fail_msg("message \"%s\" lacks \"%s\"", d.msg, s1);
    if (s2 && !strstr(d.msg, s2))
        fail_msg("message \"%s\" lacks \"%s\"", d.msg, s2);
}

static void test_hostile_headers(void **state)
{
    (void)state;
    expect_hdr("not json at all", 0, XF_EFORMAT, "JSON", NULL);
    expect_hdr("[1,2,3]", 0, XF_EFORMAT, "not a JSON object", NULL);
    expect_hdr("\"str\"", 0, XF_EFORMAT, NULL, NULL);
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, XF_EFORMAT, "JSON", NULL);                                 /* duplicates */
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
               XF_EFORMAT, "w:", "need 8");                                 /* size mismatch */
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
               XF_EFORMAT, "w:", "outside");                                /* past the end */
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
               XF_EFORMAT, "w:", "outside");                                /* begin > end */
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
               XF_EFORMAT, "w:", "data_offsets");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
               "\"data_offsets\":[18446744073709551608,0]}}", 8, XF_EFORMAT, NULL, NULL);
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
               XF_EFORMAT, "w:", "data_offsets");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, XF_EFORMAT, "w:", NULL);
    expect_hdr("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, XF_EFORMAT, "w:", "dtype");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, XF_EFORMAT, "w:",
               "shape");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8,
               XF_EFORMAT, "w:", "shape");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
               XF_EFORMAT, "w:", "shape");
    expect_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
               "\"data_offsets\":[0,4]}}", 4, XF_EFORMAT, "w:", "rank");
    expect_hdr("{\"w\":7}", 0, XF_EFORMAT, "w:", NULL);
    expect_hdr("{\"__metadata__\":[1]}", 0, XF_EFORMAT, "__metadata__", NULL);
    /* the product overflows 64 bits (wrapping to a small number must not pass) */
    expect_hdr("{\"big\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
               "\"data_offsets\":[0,0]}}", 8, XF_EFORMAT, "big:", "overflow");
    expect_hdr("{\"big\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
               "\"data_offsets\":[0,0]}}", 8, XF_EFORMAT, "big:", "overflow");
    expect_hdr("{\"big\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,9223372036854775807],"
               "\"data_offsets\":[0,4]}}", 8, XF_EFORMAT, "big:", NULL);
    /* overlaps */
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, XF_EFORMAT, "overlap", "a");
    expect_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, XF_EFORMAT, "overlap", NULL);
    expect_hdr("{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               16, XF_EFORMAT, "overlap", NULL);
    /* unsupported dtypes name the tensor and dtype */
    expect_hdr("{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
               XF_EUNSUPPORTED, "q:", "F8_E4M3");
    expect_hdr("{\"q\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,2]}}", 2, XF_EFORMAT,
               "q:", "dtype");
}

static void test_good_edge_headers(void **state)
{
    char path[1200];
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    const float *v;
    float *own;
    (void)state;

    /* Empty object, metadata only, integer tensor, empty tensors sharing an offset,
     * misaligned F32 data (header length 9 + begin 1): copied, not used in place. */
    xf_test_path(path, sizeof path, "ok.safetensors");
    write_raw(path, 2, "{}", 0);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    assert_int_equal(f->n, 0);
    xf_st_close(f);

    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[0,16]},"
                    "\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]},"
                    "\"e2\":{\"dtype\":\"F16\",\"shape\":[3,0],\"data_offsets\":[16,16]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[17,25]}}";
    char hp[512];
    snprintf(hp, sizeof hp, "%s", h);
    while (strlen(hp) % 8)                         /* data section 8-aligned, w at +17 */
        strcat(hp, " ");
    h = hp;
    write_raw(path, strlen(h), h, 25);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    assert_int_equal(f->n, 4);
    assert_int_equal(xf_st_read_f32(f, xf_st_find(f, "ids"), &v, &own, &d), XF_EUNSUPPORTED);
    assert_non_null(strstr(d.msg, "ids"));
    assert_non_null(strstr(d.msg, "I64"));
    assert_int_equal(xf_st_read_f32(f, xf_st_find(f, "w"), &v, &own, &d), 0);
    assert_non_null(own);                          /* misaligned: copied */
    {
        const uint8_t *src = f->data + 17;
        float want[2];
        memcpy(want, src, 8);
        assert_memory_equal(v, want, 8);
    }
    free(own);
    xf_st_close(f);
}

static void test_header_length_lies(void **state)
{
    char path[1200];
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    size_t hl = strlen(h);
    uint64_t lies[] = { 0, 1, hl - 1, hl + 1, hl + 4, hl + 5, 1u << 30,
                        (uint64_t)XF_ST_MAX_HEADER + 1, UINT64_MAX, UINT64_MAX - 7,
                        (uint64_t)1 << 63 };
    (void)state;
    xf_test_path(path, sizeof path, "lie.safetensors");
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        write_raw(path, lies[i], h, 4);
        int rc = xf_st_open(path, &f, &d);
        /* hl + 4 makes the data bytes part of the header: still not valid JSON */
        assert_int_equal(rc, XF_EFORMAT);
        assert_null(f);
        assert_non_null(strstr(d.msg, "lie.safetensors"));
    }
    /* exact length succeeds */
    write_raw(path, hl, h, 4);
    assert_int_equal(xf_st_open(path, &f, &d), 0);
    xf_st_close(f);
}

static void test_tiny_files(void **state)
{
    char path[1200];
    xf_st_file_t *f = NULL;
    xf_diag_t d = { 0 };
    (void)state;
    xf_test_path(path, sizeof path, "zero.safetensors");
    assert_int_equal(xf_test_write_file(path, "", 0), 0);
    assert_int_equal(xf_st_open(path, &f, &d), XF_EFORMAT);
    assert_non_null(strstr(d.msg, "zero.safetensors"));
    assert_int_equal(xf_test_write_file(path, "\x02\0\0\0", 4), 0);
    assert_int_equal(xf_st_open(path, &f, &d), XF_EFORMAT);
    xf_test_path(path, sizeof path, "missing.safetensors");
    assert_int_equal(xf_st_open(path, &f, &d), -ENOENT);
    assert_non_null(strstr(d.msg, "missing.safetensors"));
    assert_int_equal(xf_st_open(xf_test_dir(), &f, &d), XF_EFORMAT);        /* a directory */
    assert_null(f);
}

/* A real small file cut at every length: never a crash, always a format error. */
static void test_truncated_everywhere(void **state)
{
    char path[1200], cut[1200];
    float a[12], b[5];
    xf_st_wtensor_t t[2] = {
        { .name = "encoder.weight", .dtype = "F32", .rank = 2, .shape = { 3, 4 }, .data = a },
        { .name = "encoder.bias", .dtype = "F16", .rank = 1, .shape = { 5 }, .data = b },
    };
    xf_diag_t d = { 0 };
    xf_st_file_t *f = NULL;
    size_t len;
    char *full;
    (void)state;

    xf_test_fill(a, 12, 1, -1, 1);
    xf_test_fill(b, 5, 2, -1, 1);
    xf_test_path(path, sizeof path, "full.safetensors");
    xf_test_path(cut, sizeof cut, "cut.safetensors");
    assert_int_equal(xf_st_write(path, t, 2, NULL, &d), 0);
    full = xf_test_slurp(path, &len);
    assert_non_null(full);
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(xf_test_write_file(cut, full, n), 0);
        int rc = xf_st_open(cut, &f, &d);
        if (rc != XF_EFORMAT)
            fail_msg("truncated at %zu of %zu: rc %d (%s)", n, len, rc, d.msg);
        assert_null(f);
        assert_non_null(strstr(d.msg, "cut.safetensors"));
    }
    /* and with garbage appended it still opens (trailing bytes are unused data) */
    assert_int_equal(xf_test_write_file(cut, full, len), 0);
    assert_int_equal(xf_st_open(cut, &f, &d), 0);
    xf_st_close(f);
    /* every single-byte corruption of the header: an error or a valid file, never a crash */
    for (size_t i = 0; i < len; i++) {
        char save = full[i];
        full[i] = (char)(save ^ 0x5a);
        assert_int_equal(xf_test_write_file(cut, full, len), 0);
        f = NULL;
        int rc = xf_st_open(cut, &f, &d);
        assert_true(rc == 0 || rc == XF_EFORMAT || rc == XF_EUNSUPPORTED);
        if (rc == 0) {
            for (int32_t k = 0; k < f->n; k++) {
                const float *v;
                float *own;
                if (xf_st_read_f32(f, &f->t[k], &v, &own, &d) == 0)
                    free(own);
            }
            xf_st_close(f);
        }
        full[i] = save;
    }
    free(full);
}

XF_TEST_MAIN(cmocka_unit_test(test_half_special), cmocka_unit_test(test_bf16_special),
             XF_TEST_WITH_DIR(test_read_all_patterns),
             XF_TEST_WITH_DIR(test_roundtrip_f32),
             XF_TEST_WITH_DIR(test_roundtrip_f16),
             XF_TEST_WITH_DIR(test_roundtrip_bf16),
             XF_TEST_WITH_DIR(test_writer_rejects),
             XF_TEST_WITH_DIR(test_hostile_headers),
             XF_TEST_WITH_DIR(test_good_edge_headers),
             XF_TEST_WITH_DIR(test_header_length_lies),
             XF_TEST_WITH_DIR(test_tiny_files),
             XF_TEST_WITH_DIR(test_truncated_everywhere))
