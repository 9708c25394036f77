/* libFuzzer target: the session blob decoders (ATTENTION.md §22.1).
 *
 * First byte of the input (the rest is the blob):
 *   bit 0  decoder: 0 = xf_txl_mem_load (the Transformer-XL session memory the session routes
 *          load from the store), 1 = xf_at_m_blob_read (family M's per-layer K/V state blob);
 *   bit 1  stamp the expected model hash at offset 16 before decoding;
 *   bit 2  recompute the CRC-32C at offset 104 before decoding;
 *   bit 3  decode against the smaller configuration (fewer memory rows kept; family M: no
 *          compressed memory), so the "keep the newest rows" paths run.
 * Bits 1 and 2 let mutations of the header fields and rows get past the hash and CRC checks to
 * the checks behind them and to the row decoding.
 *
 * Invariants: a rejected blob gives XF_EFORMAT with a message and leaves the memory unchanged;
 * an accepted one keeps at most the configured rows; an accepted Transformer-XL memory saves
 * again (f32), loads again and saves byte-identically, and a segment runs on it (0, or
 * XF_ENUMERIC when the rows are not finite) without undefined behaviour.
 *
 * With XF_FUZZ_WRITE_SEEDS=<dir> in the environment the target writes its seed corpus (valid
 * blobs of each dtype, with and without the boundary row, empty to full; family M blobs with
 * memory, compressed and pending rows) into <dir> and exits. tests/fuzz/corpus/fuzz_session was
 * made that way. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xformd/txl.h>

#include "attention/fam_m.h"
#include "fuzz_common.h"

enum { SEL_FAM_M = 1, SEL_HASH = 2, SEL_CRC = 4, SEL_SMALL = 8 };

/* ---- Transformer-XL: the demo model, loaded with its mem_len (16) and with 5 ---- */

static xf_txl_t *txl[2];

static xf_txl_t *txl_model(int small)
{
    static char dir[300];
    if (!dir[0]) {
        xf_txl_demo_opts_t o;
        xf_diag_t diag = { 0, "" };
        snprintf(dir, sizeof dir, "%s/txl", fz_scratch());
        xf_txl_demo_opts_init(&o);
        if (xf_txl_demo_write(dir, &o, &diag) < 0) {
            fprintf(stderr, "xf_txl_demo_write: %s\n", diag.msg);
            fz_fail("cannot write the TXL demo model");
        }
    }
    if (!txl[small]) {
        xf_txl_opts_t opts = { NULL, small ? 5 : -1 };
        xf_diag_t diag = { 0, "" };
        if (xf_txl_load(dir, &opts, &txl[small], &diag) < 0) {
            fprintf(stderr, "xf_txl_load: %s\n", diag.msg);
            fz_fail("cannot load the TXL demo model");
        }
    }
    return txl[small];
}

/* ---- family M: 3 layers of 2 heads × 4, hash 0xA5… ---- */

enum { M_LAYERS = 3, M_HEADS = 2, M_DHEAD = 4 };
static const xf_at_m_params_t m_cfg[2] = {
    { 6, 4, 3, XF_CMEM_MEAN, -1, 1 },    /* compressive: mem 6, cmem 4, rate 3 */
    { 3, 0, 1, XF_CMEM_MEAN, -1, 1 },    /* smaller, without compressed memory */
};

static void m_hash(uint8_t h[32])
{
    memset(h, 0xA5, 32);
}

static void put32le(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void fix_crc(uint8_t *b, size_t n)
{
    uint32_t hsize, crc;
    if (n < 128)
        return;
    hsize = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    if (hsize > n)
        hsize = 128;
    crc = xf_at_m_crc32c_more(xf_at_m_crc32c(b, 104), b + hsize, n - hsize);
    put32le(b + 104, crc);
}

static void check_err(int rc, const char *msg)
{
    if (rc != XF_EFORMAT)
        fz_fail("a rejected blob is not XF_EFORMAT");
    if (strlen(msg) == 0)
        fz_fail("a rejected blob has no message");
}

static void run_txl(const uint8_t *b, size_t n, int small)
{
    xf_txl_t *m = txl_model(small);
    const xf_txl_info_t *cf = xf_txl_info(m);
    xf_txl_mem_t *mem = NULL, *again = NULL;
    xf_txl_mem_stats_t before, after;
    xf_diag_t diag = { 0, "" };
    int rc;

    if (xf_txl_mem_create(m, XF_TXL_INIT_ZEROS, &mem) != 0)
        fz_fail("out of memory");
    memset(&before, 0, sizeof before);   /* padding too: compared with memcmp */
    memset(&after, 0, sizeof after);
    xf_txl_mem_stats(mem, &before);
    rc = xf_txl_mem_load(m, b, n, mem, &diag);
    xf_txl_mem_stats(mem, &after);
    if (rc != 0) {
        if (rc != -ENOMEM)
            check_err(rc, diag.msg);
        if (memcmp(&before, &after, sizeof before) != 0)
            fz_fail("a rejected blob changed the memory");
        xf_txl_mem_free(mem);
        return;
    }
    if (after.rows < 0 || after.rows > cf->mem_len || after.segments < 0 || after.tokens < 0)
        fz_fail("a loaded memory is out of its bounds");
    /* save again in f32: load, save: byte-identical */
    size_t len = xf_txl_mem_blob_size(m, mem, XF_TXL_F32);
    uint8_t *s1 = malloc(len), *s2 = malloc(len);
    if (!s1 || !s2 || xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &again) != 0)
        fz_fail("out of memory");
    if (xf_txl_mem_save(m, mem, XF_TXL_F32, s1, len) != 0)
        fz_fail("a loaded memory does not save in f32");
    if (xf_txl_mem_load(m, s1, len, again, &diag) != 0)
        fz_fail("a saved memory does not load");
    if (xf_txl_mem_blob_size(m, again, XF_TXL_F32) != len ||
        xf_txl_mem_save(m, again, XF_TXL_F32, s2, len) != 0 || memcmp(s1, s2, len) != 0)
        fz_fail("save -> load -> save is not a fixed point");
    free(s1);
    free(s2);
    xf_txl_mem_free(again);
    /* one segment on it, as the next request of the session would */
    {
        static const int32_t ids[3] = { 1, 150, 250 };
        xf_txl_result_t r = { 0 };
        rc = xf_txl_run(m, mem, ids, 3, XF_TXL_OUT_POOLED, &r, &diag);
        if (rc != 0 && rc != XF_ENUMERIC)
            fz_fail("a segment on a loaded memory failed other than XF_ENUMERIC");
        xf_txl_result_deinit(&r);
    }
    xf_txl_mem_free(mem);
}

static void run_fam_m(const uint8_t *b, size_t n, int small)
{
    const xf_at_m_params_t *p = &m_cfg[small];
    size_t ssz = xf_at_m_state_size(p, M_HEADS, M_DHEAD);
    void *st[M_LAYERS];
    uint8_t hash[32];
    char err[128] = "";
    int rc;

    m_hash(hash);
    for (int l = 0; l < M_LAYERS; l++) {
        st[l] = calloc(1, ssz);
        if (!st[l])
            fz_fail("out of memory");
    }
    rc = xf_at_m_blob_read(b, n, hash, p, M_HEADS, M_DHEAD, st, M_LAYERS, err, sizeof err);
    if (rc != 0) {
        check_err(rc, err);
    } else {
        for (int l = 0; l < M_LAYERS; l++) {
            const xf_at_m_hdr_t *h = st[l];
            if (h->mem_rows < 0 || h->mem_rows > p->mem_len || h->cmem_rows < 0 ||
                h->cmem_rows > p->cmem_len || h->pend_rows < 0 || h->pend_rows > h->pend_cap)
                fz_fail("a loaded state is out of its bounds");
        }
        /* what was loaded writes a blob that loads again */
        size_t len = xf_at_m_blob_size(st, M_LAYERS);
        uint8_t *w = malloc(len);
        if (!w)
            fz_fail("out of memory");
        if (xf_at_m_blob_write(st, M_LAYERS, hash, w, len) != 0 ||
            xf_at_m_blob_read(w, len, hash, p, M_HEADS, M_DHEAD, st, M_LAYERS, err,
                              sizeof err) != 0)
            fz_fail("a loaded state does not write and read again");
        free(w);
    }
    for (int l = 0; l < M_LAYERS; l++)
        free(st[l]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    size_t n = size - 1;
    uint8_t *b = malloc(n ? n : 1);   /* an exact-size copy: ASan sees any read past the end */
    if (!b)
        fz_fail("out of memory");
    memcpy(b, data + 1, n);
    if ((sel & SEL_HASH) && n >= 48) {
        if (sel & SEL_FAM_M)
            m_hash(b + 16);
        else
            memcpy(b + 16, xf_txl_info(txl_model(0))->hash, 32);
    }
    if (sel & SEL_CRC)
        fix_crc(b, n);
    if (sel & SEL_FAM_M)
        run_fam_m(b, n, (sel & SEL_SMALL) != 0);
    else
        run_txl(b, n, (sel & SEL_SMALL) != 0);
    free(b);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------------------- */

static void write_seed(const char *dir, const char *name, unsigned sel, const uint8_t *b,
                       size_t n)
{
    char path[512];
    uint8_t *f = malloc(n + 1);
    if (!f)
        fz_fail("out of memory");
    f[0] = (uint8_t)sel;
    memcpy(f + 1, b, n);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fz_write(path, f, n + 1);
    free(f);
}

static void seeds_txl(const char *dir)
{
    static const char *dt_name[4] = { "", "f32", "f16", "bf16" };
    static const int32_t seg[3][7] = { { 5, 17, 101, 230, 7, 299, 64 },
                                       { 3, 3, 150, 42, 199, 11, 2 },
                                       { 250, 1, 1, 88, 120, 9, 260 } };
    xf_txl_t *m = txl_model(0);
    /* states: empty; one segment of 7 (7 rows + boundary); three (16 rows, full) */
    for (int k = 0; k < 3; k++) {
        xf_txl_mem_t *mem;
        if (xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &mem) != 0)
            fz_fail("out of memory");
        for (int s = 0; s < (k == 0 ? 0 : k == 1 ? 1 : 3); s++) {
            xf_txl_result_t r = { 0 };
            if (xf_txl_run(m, mem, seg[s], 7, 0, &r, NULL) != 0)
                fz_fail("cannot run the TXL demo model");
            xf_txl_result_deinit(&r);
        }
        for (int dt = XF_TXL_F32; dt <= XF_TXL_BF16; dt++) {
            size_t len = xf_txl_mem_blob_size(m, mem, (enum xf_txl_dtype)dt);
            uint8_t *b = malloc(len);
            char name[64];
            if (!b || xf_txl_mem_save(m, mem, (enum xf_txl_dtype)dt, b, len) != 0)
                fz_fail("cannot save a TXL memory");
            snprintf(name, sizeof name, "txl-%s-%s", dt_name[dt],
                     k == 0 ? "empty" : k == 1 ? "7rows" : "full");
            write_seed(dir, name, 0, b, len);
            snprintf(name, sizeof name, "txl-%s-%s-fix", dt_name[dt],
                     k == 0 ? "empty" : k == 1 ? "7rows" : "full");
            write_seed(dir, name, SEL_HASH | SEL_CRC | (k == 2 ? SEL_SMALL : 0), b, len);
            free(b);
        }
        xf_txl_mem_free(mem);
    }
}

static void seeds_fam_m(const char *dir)
{
    static const struct { int32_t mem, cmem, pend; const char *name; } shapes[3] = {
        { 6, 4, 2, "fam_m-compressive" }, { 2, 1, 0, "fam_m-partial" }, { 0, 0, 0, "fam_m-empty" } };
    const xf_at_m_params_t *p = &m_cfg[0];
    size_t ssz = xf_at_m_state_size(p, M_HEADS, M_DHEAD);
    uint8_t hash[32];
    uint32_t x = 12345;

    m_hash(hash);
    for (int k = 0; k < 3; k++) {
        void *st[M_LAYERS];
        for (int l = 0; l < M_LAYERS; l++) {
            xf_at_m_hdr_t h;
            float *rows;
            size_t nf = (ssz - sizeof h) / sizeof(float);
            st[l] = calloc(1, ssz);
            if (!st[l])
                fz_fail("out of memory");
            xf_at_m_state_init(p, M_HEADS, M_DHEAD, st[l]);
            rows = (float *)((uint8_t *)st[l] + sizeof h);
            for (size_t i = 0; i < nf; i++) {
                x = x * 1664525u + 1013904223u;
                rows[i] = (float)(int32_t)(x >> 8) / (float)(1 << 23) - 1.0f;
            }
            memcpy(&h, st[l], sizeof h);
            h.mem_rows = shapes[k].mem;
            h.cmem_rows = shapes[k].cmem;
            h.pend_rows = shapes[k].pend;
            h.segments = k == 2 ? 0 : 3;
            h.tokens = k == 2 ? 0 : 21;
            memcpy(st[l], &h, sizeof h);
        }
        size_t len = xf_at_m_blob_size(st, M_LAYERS);
        uint8_t *b = malloc(len);
        char name[64];
        if (!b || xf_at_m_blob_write(st, M_LAYERS, hash, b, len) != 0)
            fz_fail("cannot write a family M blob");
        write_seed(dir, shapes[k].name, SEL_FAM_M, b, len);
        snprintf(name, sizeof name, "%s-fix", shapes[k].name);
        write_seed(dir, name, SEL_FAM_M | SEL_HASH | SEL_CRC | (k == 0 ? SEL_SMALL : 0), b,
                   len);
        free(b);
        for (int l = 0; l < M_LAYERS; l++)
            free(st[l]);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("XF_FUZZ_WRITE_SEEDS");
    (void)argc;
    (void)argv;
    if (dir && *dir) {
        mkdir(dir, 0755);
        seeds_txl(dir);
        seeds_fam_m(dir);
        fprintf(stderr, "fuzz_session: seeds written to %s\n", dir);
        exit(0);
    }
    return 0;
}
