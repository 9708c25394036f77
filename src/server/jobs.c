/* Jobs and job queues (see jobs.h). Runs on whichever thread owns the job at the time. */
#include "config.h"

#include "server/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t xf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int xf_job_create(int32_t n_seq, int32_t n_tokens, xf_job_t **out)
{
    if (n_seq < 0 || n_tokens < 0)
        return -EINVAL;
    xf_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->n_seq = n_seq;
    j->n_tokens = n_tokens;
    j->normalize = -1;
    j->lens = calloc((size_t)n_seq + 1, sizeof *j->lens);
    j->ids = calloc((size_t)n_tokens + 1, sizeof *j->ids);
    j->type_ids = calloc((size_t)n_tokens + 1, sizeof *j->type_ids);
    if (!j->lens || !j->ids || !j->type_ids) {
        xf_job_free(j);
        return -ENOMEM;
    }
    *out = j;
    return 0;
}

int xf_job_alloc_outputs(xf_job_t *j, int32_t d_model, int32_t n_labels)
{
    if (j->want_pooled) {
        j->pooled = calloc((size_t)j->n_seq * (size_t)d_model + 1, sizeof(float));
        if (!j->pooled)
            return -ENOMEM;
    }
    if (j->want_logits) {
        j->logits = calloc((size_t)j->n_seq * (size_t)(n_labels > 0 ? n_labels : 1) + 1,
                           sizeof(float));
        if (!j->logits)
            return -ENOMEM;
    }
    return 0;
}

void xf_job_free(xf_job_t *j)
{
    if (!j)
        return;
    free(j->lens);
    free(j->ids);
    free(j->type_ids);
    free(j->pooled);
    free(j->logits);
    free(j->hidden);
    xf_attn_free(j->attn);
    if (j->sjob && j->sjob_free)
        j->sjob_free(j->sjob);
    free(j);
}

void xf_job_fail(xf_job_t *j, enum xf_http_err code, int retry_after_s, const char *msg)
{
    j->status = code;
    j->retry_after_s = retry_after_s;
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "");
}

int xf_jobq_init(xf_jobq_t *q)
{
    memset(q, 0, sizeof *q);
    int rc = pthread_mutex_init(&q->lock, NULL);
    return rc ? -rc : 0;
}

void xf_jobq_deinit(xf_jobq_t *q)
{
    pthread_mutex_destroy(&q->lock);
}

int xf_jobq_push(xf_jobq_t *q, xf_job_t *j)
{
    j->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->closed) {
        pthread_mutex_unlock(&q->lock);
        return -EPIPE;
    }
    int was_empty = q->head == NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
    pthread_mutex_unlock(&q->lock);
    return was_empty;
}

static xf_job_t *take_all(xf_jobq_t *q, int close)
{
    pthread_mutex_lock(&q->lock);
    xf_job_t *h = q->head;
    q->head = q->tail = NULL;
    q->n = 0;
    if (close)
        q->closed = 1;
    pthread_mutex_unlock(&q->lock);
    return h;
}

xf_job_t *xf_jobq_take_all(xf_jobq_t *q)
{
    return take_all(q, 0);
}

xf_job_t *xf_jobq_close(xf_jobq_t *q)
{
    return take_all(q, 1);
}

size_t xf_jobq_count(xf_jobq_t *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}
