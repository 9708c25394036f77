/* bench_sessions: Transformer-XL session cost (issue 11). Per-segment latency vs memory length
 * (0, 128, 512, 1024 rows), the session blob per dtype (bytes, save and load time) and, with
 * --redis HOST:PORT, the Redis round trip (SET + GET of the f16 blob, blocking hiredis on
 * loopback) as a share of a whole segment (read + load + compute + save + write). One
 * --concurrent N runs N sessions at once (2 segments of 32 tokens each, memory 128 rows) on
 * --threads T threads and prints the segment throughput. One
 * machine-readable line per case after a header naming CPU, ISA and revision. Timings are
 * medians over --reps runs; compare them only as ratios within one run. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <xformd/txl.h>

#include <xformd/forward.h>

#include "bench_util.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct conc {
    const xf_txl_t *m;
    xf_txl_mem_t **mems;
    int n_sess, n_thr, seg;
    const int32_t *ids;
    atomic_int next;
} conc_t;

/* Sessions are handed out in order; each thread runs all segments of the sessions it takes
 * (one session is never run by two threads at once, as in the server). */
static void *conc_worker(void *p)
{
    conc_t *c = p;
    for (;;) {
        int i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n_sess)
            return NULL;
        for (int k = 0; k < 2; k++) {
            xf_txl_result_t r = { 0 };
            xf_txl_run(c->m, c->mems[i], c->ids + k, c->seg, 0, &r, NULL);
            xf_txl_result_deinit(&r);
        }
    }
}

static void run_concurrent(const char *dir, int n_sess, int n_thr, const int32_t *ids)
{
    xf_txl_opts_t lo = { NULL, 128 };
    conc_t c = { 0 };
    pthread_t th[64];
    xf_txl_t *m = NULL;
    double t0, ms;

    if (n_thr < 1 || n_thr > 64 || xf_txl_load(dir, &lo, &m, NULL) < 0)
        return;
    c.m = m;
    c.n_sess = n_sess;
    c.n_thr = n_thr;
    c.seg = 32;
    c.ids = ids;
    c.mems = calloc((size_t)n_sess, sizeof *c.mems);
    for (int i = 0; i < n_sess; i++) {   /* every session starts with a full memory */
        xf_txl_result_t r = { 0 };
        xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &c.mems[i]);
        xf_txl_run(m, c.mems[i], ids, 128, 0, &r, NULL);
        xf_txl_result_deinit(&r);
    }
    t0 = now_ms();
    for (int t = 0; t < n_thr; t++)
        pthread_create(&th[t], NULL, conc_worker, &c);
    for (int t = 0; t < n_thr; t++)
        pthread_join(th[t], NULL);
    ms = now_ms() - t0;
    printf("concurrent sessions=%d threads=%d segments=%d tokens_per_segment=%d mem_rows=128 "
           "wall_ms=%.1f segments_per_s=%.2f tokens_per_s=%.1f\n", n_sess, n_thr, 2 * n_sess,
           c.seg, ms, 2e3 * n_sess / ms, 2e3 * n_sess * c.seg / ms);
    for (int i = 0; i < n_sess; i++)
        xf_txl_mem_free(c.mems[i]);
    free(c.mems);
    xf_txl_free(m);
}

int main(int argc, char **argv)
{
    static const int mems[] = { 0, 128, 512, 1024 };
    static const char *const dn[] = { "?", "f32", "f16", "bf16" };
    const char *redis = NULL;
    int reps = 5, seg = 128, concurrent = 0, threads = 2;
    char dir[] = "/tmp/xf-bench-txl.XXXXXX";
    xf_txl_demo_opts_t o;
    xf_diag_t diag = { 0 };
    xf_cpu_info_t ci;
    redisContext *rc = NULL;
    int32_t *ids;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--redis") && i + 1 < argc)
            redis = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--concurrent") && i + 1 < argc)
            concurrent = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sessions [--redis HOST:PORT] [--reps N] "
                    "[--concurrent N [--threads T]]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 100)
        reps = 5;
    if (!mkdtemp(dir))
        return 1;
    xf_txl_demo_opts_init(&o);
    o.n_layer = 6;
    o.d_model = o.d_embed = 512;
    o.n_head = 8;
    o.d_head = 64;
    o.d_inner = 2048;
    o.vocab_size = 16000;
    o.cutoffs[0] = 4000;
    o.cutoffs[1] = 8000;
    o.div_val = 4;
    o.mem_len = 1024;
    if (xf_txl_demo_write(dir, &o, &diag) < 0) {
        fprintf(stderr, "bench_sessions: %s\n", diag.msg);
        return 1;
    }
    if (redis) {
        char host[256];
        const char *c = strrchr(redis, ':');
        snprintf(host, sizeof host, "%.*s", c ? (int)(c - redis) : (int)strlen(redis), redis);
        rc = redisConnect(host, c ? atoi(c + 1) : 6379);
        if (!rc || rc->err) {
            fprintf(stderr, "bench_sessions: redis %s: %s\n", redis, rc ? rc->errstr : "?");
            return 1;
        }
    }
    xf_cpu_get_info(&ci);
    printf("# xformd-bench-sessions cpu=\"%s\" isa=%s txl_gemm=cblas blas_core=%s cores=%d "
           "layers=%d d_model=%d heads=%d d_head=%d d_inner=%d vocab=%d segment=%d reps=%d "
           "redis=%s\n",
           ci.brand, ci.isa, ci.blas_core, ci.n_cores, o.n_layer, o.d_model, o.n_head, o.d_head,
           o.d_inner, o.vocab_size, seg, reps, redis ? redis : "none");
    ids = malloc(sizeof(int32_t) * (size_t)seg);
    for (int t = 0; t < seg; t++)
        ids[t] = (int32_t)((t * 7919) % o.vocab_size);
    if (concurrent > 0) {
        run_concurrent(dir, concurrent, threads, ids);
        goto out;
    }
    for (size_t k = 0; k < sizeof mems / sizeof mems[0]; k++) {
        xf_txl_opts_t lo = { NULL, mems[k] };
        xf_txl_t *m = NULL;
        xf_txl_mem_t *mem = NULL;
        double tc[100], ts[100], tl[100], tr[100];
        size_t bytes[4] = { 0 };

        if (xf_txl_load(dir, &lo, &m, &diag) < 0 ||
            xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &mem) < 0) {
            fprintf(stderr, "bench_sessions: %s\n", diag.msg);
            return 1;
        }
        /* fill the memory to its length, then time segments that keep it full */
        for (int f = 0; f * seg < mems[k]; f++) {
            xf_txl_result_t r = { 0 };
            xf_txl_run(m, mem, ids, seg, 0, &r, NULL);
            xf_txl_result_deinit(&r);
        }
        for (int i = 0; i < reps; i++) {
            xf_txl_result_t r = { 0 };
            double t0 = now_ms();
            xf_txl_run(m, mem, ids, seg, 0, &r, NULL);
            tc[i] = now_ms() - t0;
            xf_txl_result_deinit(&r);
        }
        printf("segment mem_rows=%d tokens=%d median_ms=%.3f\n", mems[k], seg,
               median(tc, reps));
        for (int d = 1; d <= 3; d++) {
            size_t len = xf_txl_mem_blob_size(m, mem, (enum xf_txl_dtype)d);
            uint8_t *b = malloc(len);
            xf_txl_mem_t *m2 = NULL;
            xf_txl_mem_create(m, XF_TXL_INIT_EMPTY, &m2);
            for (int i = 0; i < reps; i++) {
                double t0 = now_ms();
                xf_txl_mem_save(m, mem, (enum xf_txl_dtype)d, b, len);
                ts[i] = now_ms() - t0;
                t0 = now_ms();
                xf_txl_mem_load(m, b, len, m2, NULL);
                tl[i] = now_ms() - t0;
                if (rc) {
                    redisReply *rp;
                    t0 = now_ms();
                    rp = redisCommand(rc, "SET xf-bench-session %b EX 60", b, len);
                    freeReplyObject(rp);
                    rp = redisCommand(rc, "GET xf-bench-session");
                    freeReplyObject(rp);
                    tr[i] = now_ms() - t0;
                }
            }
            bytes[d] = len;
            {
                double s = median(ts, reps), l = median(tl, reps), c = median(tc, reps);
                double red = rc ? median(tr, reps) : 0;
                printf("blob mem_rows=%d dtype=%s bytes=%zu save_ms=%.3f load_ms=%.3f "
                       "redis_rtt_ms=%.3f redis_share=%.4f\n", mems[k], dn[d], len, s, l, red,
                       rc ? red / (red + s + l + c) : 0.0);
            }
            xf_txl_mem_free(m2);
            free(b);
        }
        (void)bytes;
        xf_txl_mem_free(mem);
        xf_txl_free(m);
    }
out:
    if (rc)
        redisFree(rc);
    free(ids);
    {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_sessions: could not remove %s\n", dir);
    }
    return 0;
}
