/* The daemon as an object: start it (model load, workers, HTTP, loop thread), query it, drain
 * and stop it. main.c and the integration tests drive the same code. The struct is internal to
 * src/server (http, routes, loop, workers share it); nothing outside src/server sees it. */
#ifndef XF_SERVER_SERVER_H
#define XF_SERVER_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <xformd/xformd.h>

#include "server/jobs.h"

struct xf_server;

/* Everything the server core reads from the configuration (filled from xf_conf_t by
 * xf_server_opts_from_conf(), or directly by tests). Strings are borrowed for the server's
 * lifetime. */
typedef struct xf_server_opts {
    const char *listen_addr;   /* "127.0.0.1" */
    int port;                  /* 0: any free port */
    int http_threads;
    size_t max_body_bytes;
    int conn_limit;
    int conn_timeout_s;
    size_t conn_memory_bytes;
    size_t max_uri_bytes;      /* longest request target answered 414 by us (0: no check) */
    size_t max_header_bytes;   /* most header field bytes answered 431 by us (0: no check) */
    int max_conn_per_ip;       /* 0: no per-address limit */
    int header_timeout_ms;     /* whole header, from the connection's start or last request */
    int body_timeout_ms;       /* whole body, from the end of the header */
    size_t max_buffered_bytes; /* request bytes buffered by every connection together */
    size_t max_arena_bytes;    /* per worker; 0: no cap */
    int arena_idle_ms;         /* free an idle worker's arena after this long; 0: never */
    const char *api_key;       /* NULL or "": none */
    const char *cors_allow_origin; /* NULL or "": no CORS headers; "*" or a list (cors.h) */
    const char *model_dir;     /* NULL or "": the demo model in cache_dir */
    const char *model_name;    /* NULL or "": from the directory (demo: xformd-demo) */
    int demo_tiny;             /* demo shape: 1 tiny, 0 BERT-base */
    const char *cache_dir;     /* NULL or "": $CACHE_DIRECTORY, $XDG_CACHE_HOME/xformd, ... */
    const char *attention;     /* default variant JSON or NULL */
    const char *quantize;      /* NULL/"none", "int8" or "bf16" (xf_load_opts_t.quantize) */
    enum xf_pooling pooling;
    int normalize;             /* default L2 normalisation of embeddings */
    int engine_threads;        /* per worker; 0: online cores */
    int engine_workers;
    int policy;                /* enum of the batcher (none|fifo|dp|tokens = 0..3) */
    int max_batch;
    int max_batch_tokens;
    int max_queue_delay_ms;
    int64_t max_queued_tokens;
    int max_queue_jobs;
    int timeout_ms;            /* default request deadline */
    int max_timeout_ms;        /* longest deadline a request may ask for */
    int max_compute_ms;        /* most predicted engine time for one request */
    int max_texts;
    int max_tokens;
    int auto_truncate;         /* TEI routes: truncate unless the request says "truncate" */
    int drain_timeout_ms;
    int metrics_enabled;
    int log_access;            /* 1: one access-log line per request (log.access) */
    int handle_signals;        /* 1: SIGTERM/SIGINT drain, SIGHUP reopens the log */
    int warmup;                /* 1: run warm-up batches (and fit the cost model) at start */
    double warmup_fake_s_per_token; /* test hook: > 0 replaces every warm-up timing by
                                  1 ms + tokens × this (a pessimistic fit on demand) */
    double engine_fake_s_per_token; /* test hook: > 0 makes every served batch last at least
                                  1 ms + tokens × this (xf_workers_set_fake_time) */
    /* test hook: called on the loop thread once the drain is done, with stage 0 just before
     * the job queue closes and stage 1 just after (MHD still running) (NULL: none) */
    void (*test_before_stop)(struct xf_server *s, int stage, void *arg);
    void *test_before_stop_arg;
    int notify;                /* 1: sd_notify READY/STOPPING/WATCHDOG */
    /* Transformer-XL sessions (sessions.c); session_model NULL or "": disabled */
    const char *session_model;
    const char *redis_url;     /* NULL or "": in-process store */
    int session_max_sessions;
    int64_t session_store_max_bytes;   /* in-process store: total blob bytes (LRU eviction) */
    int session_ttl_s;
    int session_dtype;         /* 0 f32, 1 f16, 2 bf16 */
    int64_t session_max_bytes;
    int session_timeout_ms;
    int session_init;          /* 0 empty, 1 zeros */
} xf_server_opts_t;

struct xf_conf;
/* Fill o from the configuration (strings borrowed from c). Main thread. */
void xf_server_opts_from_conf(const struct xf_conf *c, xf_server_opts_t *o);

/* The defaults of conf.def (xf_conf_defaults()), without signals or sd_notify: what the
 * daemon runs, for in-process tests. */
void xf_server_opts_init(xf_server_opts_t *o);

typedef struct xf_server xf_server_t;

/* Start the daemon: listen (until ready only the OPEN routes answer; the rest 503 not_ready),
 * load (or generate) the model, start workers, warm up, run the libuv loop on its own thread,
 * then mark it ready. Returns 0 or a negative code (diag says what failed; -EADDRINUSE before
 * any model work when the port is taken).
 * Ownership: *out is new; stop it with xf_server_stop() and free it with xf_server_free(). */
int xf_server_start(const xf_server_opts_t *o, xf_server_t **out, xf_diag_t *diag);
/* xf_server_opts_from_conf + xf_server_start, with signals and sd_notify on. cfg is borrowed
 * for the server's lifetime. */
int xf_server_run(const struct xf_conf *cfg, xf_server_t **out, xf_diag_t *diag);
/* The bound TCP port (useful with port 0). */
int xf_server_port(const xf_server_t *s);
/* The loaded model. Ownership: borrowed. */
const xf_model_t *xf_server_model(const xf_server_t *s);
/* Begin the SIGTERM drain (any thread, async-signal-unsafe): stop accepting, finish queued work
 * within drain_timeout_ms, fail the rest with 503, stop. Returns at once. */
void xf_server_drain(xf_server_t *s);
/* Block until the loop thread has finished (after a drain). Returns the exit status: 0 after a
 * clean drain. */
int xf_server_wait(xf_server_t *s);
/* Drain (if not yet), wait (if not yet: also after xf_server_wait), and release everything.
 * NULL is a no-op. */
void xf_server_stop(xf_server_t *s);
void xf_server_free(xf_server_t *s);

/* Requests accepted and not yet completed (any thread). */
long xf_server_inflight(const xf_server_t *s);


/* ---- internal to src/server ---------------------------------------------------------- */
#include <pthread.h>

struct xf_http;
struct xf_workers;
struct xf_loop;
struct xf_metrics;
struct xf_sessions;
struct xf_conf;

struct xf_server {
    xf_server_opts_t o;
    const struct xf_conf *conf;  /* the configuration it came from, or NULL (tests) */
    xf_model_t *model;
    const xf_model_info_t *info;
    const xf_tokenizer_t *tok;
    char model_name[128];        /* served name */
    char *demo_dir;              /* where the demo model was written, or NULL */
    struct xf_workers *workers;
    struct xf_http *http;
    struct xf_http *http_cb;     /* the same, set before MHD starts: MHD's callbacks may run
                                    before xf_http_start() returns */
    struct xf_loop *loop;
    struct xf_metrics *metrics;
    struct xf_sessions *sessions;  /* Transformer-XL sessions, or NULL when disabled */
    atomic_int ready;            /* model loaded, warmed up, listening, not draining */
    atomic_int draining;
    atomic_long inflight;        /* requests between first handler call and completion */
    atomic_long reading;         /* requests whose header arrived and whose job is not yet
                                    queued or answered (the drain finishes them) */
    atomic_llong buffered_bytes; /* request body bytes held (http.max_buffered_bytes) */
    uint64_t start_ns;
    int64_t start_unix;          /* wall-clock start (Unix seconds): OpenAI's "created" */
    xf_jobq_t jobq;              /* MHD → loop: new jobs */
    xf_jobq_t doneq;             /* workers → loop: finished jobs */
    pthread_t thread;            /* the loop thread */
    int thread_started;
    int exit_status;
    char cpu_desc[256];          /* CPU and GEMM path, for /v1/stats */
    struct json_t *st_prompts;   /* "prompts" of the model's config_sentence_transformers.json
                                    (name -> text, TEI's prompt_name), or NULL; read-only */
};

/* Hand a tokenised job to the loop (MHD thread, after MHD_suspend_connection). Once the loop
 * has stopped (after the drain) the job is failed (503 draining) and its connection resumed at
 * once, on the caller's thread. */
void xf_server_submit(xf_server_t *s, xf_job_t *j);

#endif
