/* The server object (see server.h): start-up (listen first, so a port in use fails at once
 * and probes answer 503 meanwhile; then model, workers, loop, warm-up and cost-model fit,
 * ready, READY), the loop thread, drain and teardown. Start-up runs on the caller's thread;
 * afterwards the loop thread owns everything. */
#include "config.h"

#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/batcher.h"
#include "server/conf.h"
#include "server/http.h"
#include "server/log.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/notify.h"
#include "server/sessions.h"
#include "server/workers.h"

/* The one mapping from the configuration to the server's options; every default comes from
 * conf.def through c (xf_conf_defaults() for tests). */
static void opts_from(const xf_conf_t *c, xf_server_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->listen_addr = c->http_listen;
    o->port = (int)c->http_port;
    o->http_threads = (int)c->http_threads;
    o->max_body_bytes = (size_t)c->http_max_body_bytes;
    o->conn_limit = (int)c->http_connection_limit;
    o->conn_timeout_s = (int)((c->http_timeout_ms + 999) / 1000);
    o->conn_memory_bytes = 64 * 1024;   /* MHD's per-connection buffer; not an option */
    o->max_uri_bytes = (size_t)c->http_max_uri_bytes;
    o->max_header_bytes = (size_t)c->http_max_header_bytes;
    o->max_conn_per_ip = (int)c->http_max_connections_per_ip;
    o->header_timeout_ms = (int)c->http_header_timeout_ms;
    o->body_timeout_ms = (int)c->http_body_timeout_ms;
    o->max_buffered_bytes = (size_t)c->http_max_buffered_bytes;
    o->max_arena_bytes = (size_t)c->engine_max_arena_bytes;
    o->arena_idle_ms = (int)c->engine_arena_idle_ms;
    o->api_key = c->auth_api_key;
    o->cors_allow_origin = c->http_cors_allow_origin;
    o->model_dir = c->model_dir;
    o->model_name = c->model_name;
    o->demo_tiny = c->model_demo == 1;
    o->cache_dir = c->cache_dir;
    o->attention = c->model_attention[0] ? c->model_attention : NULL;
    o->quantize = c->model_quantize == 1   ? "int8"   /* none|int8|bf16 */
                  : c->model_quantize == 2 ? "bf16"
                                           : NULL;
    o->pooling = (enum xf_pooling)c->model_pooling;   /* default|cls|mean|pooler|none */
    o->normalize = c->model_normalize;
    o->engine_threads = (int)c->engine_threads;
    o->engine_workers = (int)c->engine_workers;
    o->policy = c->batcher_policy;
    o->max_batch = (int)c->batcher_max_batch;
    o->max_batch_tokens = (int)c->batcher_max_batch_tokens;
    o->max_queue_delay_ms = (int)c->batcher_max_queue_delay_ms;
    o->max_queued_tokens = c->batcher_max_queued_tokens;
    o->max_queue_jobs = (int)c->batcher_max_queue_jobs;
    o->timeout_ms = (int)c->request_timeout_ms;
    o->max_timeout_ms = (int)c->request_max_timeout_ms;
    o->max_compute_ms = (int)c->request_max_compute_ms;
    o->max_texts = (int)c->request_max_texts;
    o->max_tokens = (int)c->request_max_tokens;
    o->auto_truncate = c->request_auto_truncate;
    o->drain_timeout_ms = (int)c->drain_timeout_ms;
    o->metrics_enabled = c->metrics_enabled;
    o->log_access = c->log_access;
    o->warmup = 1;
    o->session_model = c->session_model;
    o->redis_url = c->redis_url;
    o->session_max_sessions = (int)c->session_max_sessions;
    o->session_store_max_bytes = c->session_store_max_bytes;
    o->session_ttl_s = (int)c->session_ttl_s;
    o->session_dtype = c->session_dtype;
    o->session_max_bytes = c->session_max_bytes;
    o->session_timeout_ms = (int)c->session_timeout_ms;
    o->session_init = c->session_init;
}

void xf_server_opts_init(xf_server_opts_t *o)
{
    opts_from(xf_conf_defaults(), o);
    o->handle_signals = 0;
    o->notify = 0;
}

void xf_server_opts_from_conf(const xf_conf_t *c, xf_server_opts_t *o)
{
    opts_from(c, o);
    o->handle_signals = 1;
    o->notify = 1;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The cache directory for the demo model: cache.dir, $CACHE_DIRECTORY (systemd; the first of
 * a colon-separated list), $XDG_CACHE_HOME/xformd, ~/.cache/xformd. */
static int cache_dir(const xf_server_opts_t *o, char *buf, size_t len)
{
    const char *e;
    int n;
    if (o->cache_dir && o->cache_dir[0]) {
        n = snprintf(buf, len, "%s", o->cache_dir);
    } else if ((e = getenv("CACHE_DIRECTORY")) && e[0]) {
        const char *colon = strchr(e, ':');
        n = snprintf(buf, len, "%.*s", colon ? (int)(colon - e) : (int)strlen(e), e);
    } else if ((e = getenv("XDG_CACHE_HOME")) && e[0]) {
        n = snprintf(buf, len, "%s/xformd", e);
    } else if ((e = getenv("HOME")) && e[0]) {
        n = snprintf(buf, len, "%s/.cache/xformd", e);
    } else {
        return -ENOENT;
    }
    return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

/* The "prompts" object of dir/config_sentence_transformers.json (sentence-transformers writes
 * {"prompts": {"query": "query: ", ...}}), for TEI's prompt_name; NULL when there is none.
 * A file that does not parse, or prompts that are not strings, are logged and ignored: the
 * prompts are an option of some requests, not of the model. */
static json_t *load_prompts(const char *dir)
{
    char path[4096];
    struct stat st;
    if (!dir || snprintf(path, sizeof path, "%s/config_sentence_transformers.json", dir) >=
                    (int)sizeof path || stat(path, &st) != 0)
        return NULL;
    json_error_t err;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    json_t *p = root ? json_object_get(root, "prompts") : NULL;
    if (!root) {
        XF_LOGW("%s: line %d: %s; its prompts are not used", path, err.line, err.text);
        return NULL;
    }
    const char *k;
    json_t *v;
    int ok = json_is_object(p);
    json_object_foreach(ok ? p : NULL, k, v) {
        ok &= json_is_string(v);
    }
    if (p && !json_is_null(p) && !ok)
        XF_LOGW("%s: \"prompts\" is not an object of strings; its prompts are not used", path);
    if (ok) {
        json_incref(p);
        XF_LOGI("prompts for prompt_name: %zu from %s", json_object_size(p), path);
    }
    json_decref(root);
    return ok ? p : NULL;
}

/* model.attention is checked before the model loads so that a bad selection names the
 * option ("model.attention: blok: unknown parameter"), not the loader. */
static int check_attention(const xf_server_opts_t *o, xf_diag_t *diag)
{
    if (!o->attention)
        return 0;
    char err[256] = "";
    xf_attn_t *a = NULL;
    int rc = xf_attn_parse(o->attention, strlen(o->attention), &a, err, sizeof err);
    xf_attn_free(a);
    if (rc < 0)
        snprintf(diag->msg, sizeof diag->msg, "model.attention (--model.attention): %s",
                 err[0] ? err : xf_strerror(rc));
    return rc < 0 ? rc : 0;
}

static int load_model(xf_server_t *s, xf_diag_t *diag)
{
    const xf_server_opts_t *o = &s->o;
    xf_load_opts_t lo = { .name = NULL, .tokenizer = NULL, .attention = o->attention,
                          .quantize = o->quantize };
    int demo = !o->model_dir || !o->model_dir[0];
    char dir[4096];
    if (!demo) {
        snprintf(dir, sizeof dir, "%s", o->model_dir);
    } else {
        char cache[4000];
        int rc = cache_dir(o, cache, sizeof cache);
        if (rc < 0) {
            snprintf(diag->msg, sizeof diag->msg, "no cache directory for the demo model "
                     "(set cache.dir, XDG_CACHE_HOME or HOME)");
            return rc;
        }
        snprintf(dir, sizeof dir, "%s/%s", cache, o->demo_tiny ? "xformd-demo-tiny"
                                                               : "xformd-demo");
    }
    lo.name = o->model_name && o->model_name[0] ? o->model_name : demo ? "xformd-demo" : NULL;
    int rc;
    if (demo) {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/config.json", dir);
        int have = access(probe, R_OK) == 0;
        if (have && !xf_demo_current(dir)) {   /* written by an older build */
            XF_LOGW("cached demo model in %s is not version %d; writing it again", dir,
                    XF_DEMO_VERSION);
            have = 0;
        }
        for (int attempt = 0; attempt < 2; attempt++) {
            if (!have) {
                XF_LOGW("writing the demo model to %s", dir);
                xf_demo_opts_t d;
                if (o->demo_tiny)
                    xf_demo_opts_init_tiny(&d);
                else
                    xf_demo_opts_init(&d);
                if ((rc = mkdir_p(dir)) < 0) {
                    snprintf(diag->msg, sizeof diag->msg, "cannot create %.400s: %s", dir,
                             xf_strerror(rc));
                    return rc;
                }
                if ((rc = xf_demo_write(dir, &d, diag)) < 0)
                    return rc;
            }
            rc = xf_model_load(dir, &lo, &s->model, diag);
            if (rc == 0 || !have)
                break;
            XF_LOGW("cached demo model in %s does not load (%s); writing it again", dir,
                    diag->msg);
            have = 0;
        }
        if (rc < 0)
            return rc;
        s->demo_dir = strdup(dir);
    } else {
        rc = xf_model_load(dir, &lo, &s->model, diag);
        if (rc < 0)
            return rc;
    }
    s->info = xf_model_info(s->model);
    s->tok = xf_model_tokenizer(s->model);
    snprintf(s->model_name, sizeof s->model_name, "%s",
             s->info->name && s->info->name[0] ? s->info->name : "model");
    s->st_prompts = load_prompts(s->info->dir);
    return 0;
}

/* "127.0.0.1:8080" or "[::1]:8080" (RFC 3986 brackets around an IPv6 literal). */
static void format_addr(const char *addr, int port, char *buf, size_t len)
{
    if (!addr || !addr[0])
        addr = "127.0.0.1";
    snprintf(buf, len, strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, port);
}

static void *loop_thread(void *arg)
{
    xf_server_t *s = arg;
    s->exit_status = xf_loop_run(s);
    return NULL;
}

#define WARMUP_BUDGET_NS 15000000000ull   /* 15 s */
#define WARMUP_REPEATS 3

/* The cost model's Σn² floor (xf_cost_t.sq_per_token): attention FLOPs per n² over linear
 * FLOPs per token, summed over the layers. */
static double sq_per_token(const xf_model_info_t *mi)
{
    double att = 0, lin = 0, D = mi->d_model;
    for (int32_t l = 0; l < mi->n_layer && mi->layers; l++) {
        double da = (double)mi->layers[l].n_head * mi->layers[l].d_head;
        att += 4 * da;
        lin += 2 * (4 * D * da + 2 * D * mi->layers[l].d_ff);
    }
    return lin > 0 ? att / lin : 0;
}

/* One timed warm-up batch: the median wall time of reps runs (or the test hook's fake). */
static int warm_sample(xf_server_t *s, const int32_t *lens, size_t k, int reps,
                       xf_cost_sample_t *out)
{
    double t[WARMUP_REPEATS];
    int got = 0;
    xf_batch_report_t r;
    for (int i = 0; i < reps && i < WARMUP_REPEATS; i++) {
        xf_diag_t diag = { 0, "" };
        int rc = xf_workers_warmup(s->workers, lens, (int)k, &r, &diag);
        if (rc == -E2BIG) {   /* over engine.max_arena_bytes: real batches are split */
            XF_LOGD("warm-up batch of %zu sequence(s) skipped: over engine.max_arena_bytes", k);
            continue;
        }
        if (rc < 0) {
            XF_LOGW("warm-up batch of %zu sequence(s) failed: %s %s", k, xf_strerror(rc),
                    diag.msg);
            return rc;
        }
        /* insertion into the sorted times */
        int p = got++;
        while (p > 0 && t[p - 1] > r.seconds) {
            t[p] = t[p - 1];
            p--;
        }
        t[p] = r.seconds;
    }
    xf_cost_features(lens, k, false, out);
    out->seconds = t[got / 2];
    if (s->o.warmup_fake_s_per_token > 0)
        out->seconds = 1e-3 + out->tokens * s->o.warmup_fake_s_per_token;
    return 0;
}

/* Warm-up (issue 8): shapes over the whole length range up to the model's positions, each
 * repeated and timed by its median (while the budget allows), a non-negative least-squares
 * fit, then a held-out long batch that was not fitted checks it: a fit more than 2× off on it
 * is refitted with it and logged. Served batches correct the model afterwards. */
static void warmup(xf_server_t *s)
{
    xf_cost_sample_t samples[40];
    size_t n = 0;
    int32_t lens[64];
    int32_t max_len = s->info->max_input > 0 ? s->info->max_input : 512;
    uint64_t t0 = xf_now_ns();
    int runs = 0;
    for (size_t i = 0; n + 1 < sizeof samples / sizeof samples[0]; i++) {
        uint64_t el = xf_now_ns() - t0;
        /* Bounded start-up: a slow CPU (or a big model) fits from the batches it managed. */
        if (n >= 3 && el > WARMUP_BUDGET_NS)
            break;
        size_t k = xf_cost_warmup_batch(i, max_len, lens, 64);
        if (k == 0)
            break;
        int reps = el < WARMUP_BUDGET_NS / 3 ? WARMUP_REPEATS : 1;
        if (warm_sample(s, lens, k, reps, &samples[n]) == 0) {
            n++;
            runs += reps;
        }
    }
    xf_loop_fit_cost(s, samples, n, sq_per_token(s->info));
    size_t k = xf_cost_holdout_batch(max_len, lens, 64);
    xf_cost_sample_t h;
    if (n > 0 && k > 0 && warm_sample(s, lens, k, 1, &h) == 0) {
        double pred = xf_cost_predict(xf_loop_cost(s), &h);
        double ratio = pred > 0 ? h.seconds / pred : 0;
        XF_LOGI("warm-up: held-out batch (%zu x up to %d tokens): predicted %.0f ms, measured "
                "%.0f ms", k, (int)max_len, pred * 1e3, h.seconds * 1e3);
        if (!(ratio >= 0.5 && ratio <= 2)) {
            XF_LOGW("warm-up: the cost model is %.1fx off on the held-out batch (a busy "
                    "machine?); refitting with it, served batches will correct the rest",
                    ratio > 0 ? (ratio > 1 ? ratio : 1 / ratio) : 0.0);
            samples[n++] = h;
            xf_loop_fit_cost(s, samples, n, sq_per_token(s->info));
        }
    }
    const xf_cost_t *cm = xf_loop_cost(s);
    XF_LOGI("warm-up: %zu shapes up to %d tokens, %d runs in %.0f ms; cost model c0 %.3g s, "
            "c1 %.3g s/token, c2 %.3g s/token^2", n, (int)max_len, runs + (k > 0),
            (double)(xf_now_ns() - t0) * 1e-6, cm->c[0], cm->c[1], cm->c[2]);
}

static void log_startup(xf_server_t *s)
{
    const xf_model_info_t *mi = s->info;
    xf_cpu_info_t ci;
    xf_cpu_get_info(&ci);
    snprintf(s->cpu_desc, sizeof s->cpu_desc, "%s; isa %s (max %s); gemm %s; blas core %s",
             ci.brand, ci.isa ? ci.isa : "?", ci.isa_max ? ci.isa_max : "?",
             ci.gemm_path ? ci.gemm_path : "?", ci.blas_core ? ci.blas_core : "?");
    XF_LOGI("xformd %s", xf_version());
    XF_LOGI("model: %s (%s, %s, quantize %s) from %s", s->model_name,
            mi->arch_name ? mi->arch_name : "?", mi->file_dtype ? mi->file_dtype : "?",
            mi->quantize ? mi->quantize : "none", mi->dir ? mi->dir : "?");
    if (mi->is_demo)
        XF_LOGW("*** DEMO MODEL: random weights, its embeddings and scores mean NOTHING; "
                "start xformd with --model DIR to serve a real checkpoint ***");
    XF_LOGI("params: %.1fM, %d layers, d_model %d, max %d positions, %d label%s",
            (double)mi->n_params * 1e-6, mi->n_layer, mi->d_model, mi->max_positions,
            mi->n_labels, mi->n_labels == 1 ? "" : "s");
    XF_LOGI("cpu: %s, %d cores", s->cpu_desc, ci.n_cores);
    XF_LOGI("cpu features:%s%s%s%s%s%s%s%s%s%s", ci.has_avx2 ? " avx2" : "",
            ci.has_fma ? " fma" : "", ci.has_avx512f ? " avx512f" : "",
            ci.has_avx512bw ? " avx512bw" : "", ci.has_avx512vl ? " avx512vl" : "",
            ci.has_avx512vnni ? " avx512vnni" : "", ci.has_avx512bf16 ? " avx512bf16" : "",
            ci.has_amx_tile ? " amx-tile" : "", ci.has_amx_int8 ? " amx-int8" : "",
            ci.has_amx_bf16 ? " amx-bf16" : "");
    if (ci.isa && ci.isa_max && strcmp(ci.isa, ci.isa_max) != 0)
        XF_LOGW("cpu: running %s kernels although the CPU has %s", ci.isa, ci.isa_max);
    XF_LOGI("threads: %d engine worker(s) x %d compute threads, %d http threads",
            s->o.engine_workers, s->o.engine_threads > 0 ? s->o.engine_threads : ci.n_cores,
            s->o.http_threads);
    XF_LOGI("batcher: policy %s, max_batch %d, max_batch_tokens %d, queue delay %d ms",
            xf_loop_policy_name(s), s->o.max_batch, s->o.max_batch_tokens,
            s->o.max_queue_delay_ms);
    XF_LOGI("arena: %.1f MiB after warm-up",
            (double)xf_workers_arena_bytes(s->workers) / (1024.0 * 1024.0));
}

int xf_server_start(const xf_server_opts_t *o, xf_server_t **out, xf_diag_t *diag)
{
    xf_diag_t local = { 0, "" };
    if (!diag)
        diag = &local;
    diag->msg[0] = '\0';
    xf_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->o = *o;
    s->start_ns = xf_now_ns();
    s->start_unix = (int64_t)time(NULL);
    int rc;
    if ((rc = xf_jobq_init(&s->jobq)) < 0 || (rc = xf_jobq_init(&s->doneq)) < 0) {
        free(s);
        return rc;
    }
    char err[256] = "";
    /* Bind first: a port in use fails at once, not after the model load and warm-up. Until
     * ready, only the probes answer (routes.def: OPEN rows; the rest 503 not_ready). */
    if ((rc = xf_http_start(s, &s->http, err, sizeof err)) < 0) {
        snprintf(diag->msg, sizeof diag->msg, "%s", err);
        goto fail;
    }
    char where[160];
    format_addr(o->listen_addr, xf_http_port(s->http), where, sizeof where);
    XF_LOGI("bound to %s; loading the model (/v2/health/ready answers 503 until warm)", where);
    if ((rc = check_attention(o, diag)) < 0)
        goto fail;
    if (o->notify)
        xf_notify_status("loading model");
    if ((rc = load_model(s, diag)) < 0) {
        char m[512];
        /* the diagnostic names the file and the fault ("/x: No such file or directory");
         * the code's name only when there is none (it once came first and repeated it) */
        snprintf(m, sizeof m, "model: %.400s", diag->msg[0] ? diag->msg : xf_strerror(rc));
        snprintf(diag->msg, sizeof diag->msg, "%s", m);
        goto fail;
    }
    const char *variant = xf_attn_name(xf_model_attention(s->model));
    xf_metrics_set_model_info(s->model_name, s->info->arch_name ? s->info->arch_name : "?",
                              variant ? variant : "dense", s->info->quantize);
    if (o->pooling == XF_POOL_NONE)
        XF_LOGW("model.pooling none gives no sentence embedding; using the model's default");
    rc = xf_workers_create(s->model, o->engine_workers, o->engine_threads, o->pooling,
                           xf_loop_jobs_done, s, &s->workers, diag);
    if (rc < 0)
        goto fail;
    xf_workers_set_arena_limits(s->workers, o->max_arena_bytes, o->arena_idle_ms);
    if ((rc = xf_loop_create(s, err, sizeof err)) < 0) {
        snprintf(diag->msg, sizeof diag->msg, "%s", err);
        goto fail;
    }
    if ((rc = xf_sessions_create(s, xf_loop_uv(s), diag)) < 0)
        goto fail;
    if (o->warmup) {
        if (o->notify)
            xf_notify_status("warming up");
        warmup(s);
    } else {
        xf_loop_fit_cost(s, NULL, 0, sq_per_token(s->info));
    }
    if (o->engine_fake_s_per_token > 0)
        xf_workers_set_fake_time(s->workers, o->engine_fake_s_per_token);
    log_startup(s);
    if ((rc = -pthread_create(&s->thread, NULL, loop_thread, s)) < 0) {
        snprintf(diag->msg, sizeof diag->msg, "cannot start the loop thread");
        goto fail;
    }
    s->thread_started = 1;
    atomic_store(&s->ready, 1);
    XF_LOGI("listening on http://%s/", where);
    if (o->notify) {
        xf_notify_ready();
        xf_notify_status("serving %s on port %d", s->model_name, xf_http_port(s->http));
    }
    *out = s;
    return 0;
fail:
    diag->code = rc;
    xf_server_free(s);
    return rc;
}

int xf_server_port(const xf_server_t *s)
{
    return s && s->http ? xf_http_port(s->http) : 0;
}

const xf_model_t *xf_server_model(const xf_server_t *s)
{
    return s ? s->model : NULL;
}

long xf_server_inflight(const xf_server_t *s)
{
    return atomic_load(&s->inflight);
}

void xf_server_drain(xf_server_t *s)
{
    if (s)
        xf_loop_request_drain(s);
}

int xf_server_wait(xf_server_t *s)
{
    if (s && s->thread_started) {
        pthread_join(s->thread, NULL);
        s->thread_started = 0;
    }
    return s ? s->exit_status : 0;
}

void xf_server_stop(xf_server_t *s)
{
    /* xf_server_free drains and waits while the loop thread runs; after xf_server_wait the
     * loop is closed and a drain request would send to a closed uv_async_t (libuv aborts). */
    xf_server_free(s);
}

void xf_server_free(xf_server_t *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        xf_server_drain(s);
        xf_server_wait(s);
    }
    /* Before the loop ran (start-up failure) these are still ours. */
    xf_http_stop(s->http);
    xf_workers_free(s->workers);
    if (s->loop) {
        xf_loop_free(s);
    }
    xf_sessions_free(s);
    xf_model_free(s->model);
    json_decref(s->st_prompts);
    free(s->demo_dir);
    xf_jobq_deinit(&s->jobq);
    xf_jobq_deinit(&s->doneq);
    free(s);
}

int xf_server_run(const struct xf_conf *cfg, xf_server_t **out, xf_diag_t *diag)
{
    xf_server_opts_t o;
    xf_server_opts_from_conf(cfg, &o);
    int rc = xf_server_start(&o, out, diag);
    if (rc == 0)
        (*out)->conf = cfg;
    return rc;
}
