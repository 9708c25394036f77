/* The libuv loop thread: owns the batcher, its timers, deadline enforcement, signals
 * (SIGTERM/SIGINT drain, SIGHUP log reopen), metric ticks and the systemd watchdog. New jobs
 * (from MHD threads) and finished jobs (from workers) reach it through uv_async_send; it hands
 * batches to idle workers and resumes the connections of finished jobs. */
#ifndef XF_SERVER_LOOP_H
#define XF_SERVER_LOOP_H

#include "server/server.h"
#include "server/workers.h"

typedef struct xf_loop xf_loop_t;

/* Create the loop and its handles for server s (calling thread; before the loop thread).
 * Ownership: s->loop is new, released by xf_loop_run when it returns plus xf_loop_free. */
int xf_loop_create(xf_server_t *s, char *err, size_t errlen);
/* Fit the cost model from warm-up batches run on the workers, with the Σn² floor
 * sq_per_token (see xf_cost_t) (before the loop thread). */
void xf_loop_fit_cost(xf_server_t *s, const xf_cost_sample_t *samples, size_t n,
                      double sq_per_token);
/* The cost model (before the loop thread runs; the loop thread's afterwards). */
xf_cost_t *xf_loop_cost(xf_server_t *s);
/* Run the loop until the drain finishes; then stop HTTP and workers and close every handle.
 * The loop thread's body. Returns the exit status (0 after a clean drain). */
int xf_loop_run(xf_server_t *s);
/* Ask the loop to begin draining (any thread). */
void xf_loop_request_drain(xf_server_t *s);
void xf_loop_free(xf_server_t *s);

/* Workers' done callback (worker thread): queue the jobs for the loop. */
void xf_loop_jobs_done(xf_job_t **jobs, int n, const xf_batch_report_t *r, void *user);
/* Record one answered request in the metrics (any MHD thread). */
void xf_loop_request_done(xf_server_t *s, int route, int status, double seconds);
/* The libuv loop (for handles created before the loop thread runs, on its behalf). */
struct uv_loop_s *xf_loop_uv(xf_server_t *s);
/* Name of the batcher policy in use. */
const char *xf_loop_policy_name(const xf_server_t *s);

#endif
