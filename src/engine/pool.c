/* The engine's compute thread pool (pool.h): the caller is thread 0, n-1 workers wait for a
 * new run generation (a short bounded spin, then a condition variable), run fn, and count
 * themselves done. xf_pool_barrier() is a generation barrier (sense reversal by counter) that
 * spins briefly and then sleeps on a condition variable. No allocation after create. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "engine/pool.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin rounds before sleeping: a few tens of microseconds, so that back-to-back runs and
 * barriers do not pay a futex wake-up each, while an idle pool sleeps. */
#define XF_POOL_SPIN 2000
/* What one idle step (xf_pool_barrier_idle) counts as: about the time of that many pauses
 * (a step prefetches 1 KB, ~70 ns from memory; a pause is ~18 ns on Zen 5). */
#define XF_POOL_IDLE_SPINS 4

struct xf_pool {
    int n;
    pthread_t *th;
    /* lock protects gen/stop changes (for the start condition), done waits and barrier sleeps;
     * rank: leaf (nothing else is locked while it is held). */
    pthread_mutex_t lock;
    pthread_cond_t start_cv;   /* gen changed or stop set */
    pthread_cond_t done_cv;    /* pending reached 0 */
    pthread_cond_t bar_cv;     /* bar_gen changed */
    xf_pool_fn fn;
    void *arg;
    atomic_uint gen;           /* run generation; workers run fn when it changes */
    atomic_int pending;        /* workers still running the current generation */
    atomic_int stop;
    atomic_int bar_count;      /* threads arrived at the current barrier */
    atomic_uint bar_gen;       /* barrier generation */
};

struct worker_arg {
    xf_pool_t *p;
    int ith;
};

static void *worker_main(void *v)
{
    xf_pool_t *p = ((struct worker_arg *)v)->p;
    int ith = ((struct worker_arg *)v)->ith;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed) && spins < XF_POOL_SPIN) {
            cpu_relax();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
                   !atomic_load(&p->stop))
                pthread_cond_wait(&p->start_cv, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (g == seen) /* stop */
            return NULL;
        seen = g;
        p->fn(p->arg, ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

int xf_pool_create(int n_threads, xf_pool_t **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return -EINVAL;
    xf_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n = n_threads;
    /* th[] followed by the worker args, one allocation */
    size_t bytes = (size_t)n_threads * (sizeof(pthread_t) + sizeof(struct worker_arg));
    p->th = calloc(1, bytes);
    if (!p->th) {
        free(p);
        return -ENOMEM;
    }
    struct worker_arg *wa = (struct worker_arg *)(void *)(p->th + n_threads);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    pthread_cond_init(&p->bar_cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->bar_count, 0);
    atomic_init(&p->bar_gen, 0);
    for (int i = 1; i < n_threads; i++) {
        wa[i].p = p;
        wa[i].ith = i;
        int rc = pthread_create(&p->th[i], NULL, worker_main, &wa[i]);
        if (rc != 0) {
            p->n = i; /* join the ones started */
            xf_pool_free(p);
            return -rc;
        }
    }
    *out = p;
    return 0;
}

void xf_pool_free(xf_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->bar_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->start_cv);
    pthread_mutex_destroy(&p->lock);
    free(p->th);
    free(p);
}

int xf_pool_size(const xf_pool_t *p)
{
    return p->n;
}

void xf_pool_run(xf_pool_t *p, xf_pool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->lock);

    fn(arg, 0, p->n);

    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0 &&
           spins < XF_POOL_SPIN) {
        cpu_relax();
        spins++;
    }
    if (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&p->done_cv, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}

void xf_pool_barrier(xf_pool_t *p)
{
    xf_pool_barrier_idle(p, NULL, NULL);
}

void xf_pool_barrier_idle(xf_pool_t *p, int (*idle)(void *), void *arg)
{
    if (p->n == 1)
        return;
    /* The generation read here is the current one: this thread left the previous barrier
     * only after its generation was bumped, and the current one cannot be bumped before this
     * thread arrives. */
    unsigned g = atomic_load_explicit(&p->bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        pthread_mutex_lock(&p->lock);
        atomic_store_explicit(&p->bar_gen, g + 1, memory_order_release);
        pthread_cond_broadcast(&p->bar_cv);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    /* spin (an idle step, while idle has work, in place of XF_POOL_IDLE_SPINS pauses: the
     * wait before sleeping stays about as long), then sleep */
    int spins = 0;
    while (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g &&
           spins < XF_POOL_SPIN) {
        if (idle && idle(arg)) {
            spins += XF_POOL_IDLE_SPINS;
            continue;
        }
        idle = NULL;
        cpu_relax();
        spins++;
    }
    if (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g)
            pthread_cond_wait(&p->bar_cv, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}
