/* The engine's compute thread pool (pool.h): the caller is thread 0, n-1 workers wait for a
 * new run generation (a short bounded spin, then a condition variable), run fn, and count
 * themselves done. xf_pool_barrier() is a generation barrier (sense reversal by counter): a
 * waiter spins briefly, then keeps spinning while every thread still missing is on a CPU
 * (adaptive stage, below), then sleeps on a condition variable. No allocation after create.
 *
 * Why the adaptive stage: a sleeper's wake-up takes the scheduler (and, in a VM, the host)
 * tens to hundreds of microseconds. When that is longer than the fixed spin, one late thread
 * makes the other sleep, the woken one is then late by the wake-up itself, and the two take
 * turns sleeping at every barrier of the forward: a convoy that halves throughput (measured in
 * the server: 82 % of barrier waits ended asleep, 0.25 ms each). So a waiter spins for up to
 * twice the wake-up latency the pool measures, as long as each missing thread's CPU-time clock
 * advances (it is running and will arrive); a thread off-CPU for longer than one wake-up
 * latency (preempted or blocked) makes it sleep at once, so that it does not hold a CPU the
 * late thread is waiting for. A pool with more threads than online CPUs skips the stage. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "engine/kernels.h"
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

/* Adaptive stage: wake-up latency estimate before the first measurement, the clamps applied
 * to each sample, the default cap on the whole stage, pauses between two clock checks (about
 * 2 us) and the largest pool it watches (bigger pools skip it). */
#define WAKE_INIT_NS 50000
#define WAKE_MIN_NS 10000
#define WAKE_MAX_NS 1000000
#define ADAPT_MAX_NS 2000000
#define ADAPT_CHECK 128
#define ADAPT_MAX_THREADS 16

/* The pool thread index of the calling thread (set by worker_main and xf_pool_run). */
static _Thread_local int tl_ith;

struct slot {                  /* one per thread, 0 = the caller of xf_pool_run */
    xf_pool_t *p;
    int ith;
    int clk_ok;                /* clk is valid */
    clockid_t clk;             /* the thread's CPU-time clock (slot 0: set by every run) */
    void *scratch;             /* owned GEMM scratch (kernels.h), installed while it runs */
    atomic_uint arrived;       /* bar_gen + 1 of the last barrier the thread reached */
};

struct xf_pool {
    int n;
    int nslot;                 /* slots allocated: n, or more when a worker failed to start */
    pthread_t *th;
    struct slot *slot;         /* [n] */
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
    atomic_long bar_bump_ns;   /* when the last barrier generation was bumped (monotonic) */
    atomic_long wake_ns;       /* barrier wake-up latency estimate (moving average) */
    atomic_long adapt_max_ns;  /* cap on the adaptive stage; 0: off */
    int adapt_ok;              /* no more threads than online CPUs (else spinning only takes a
                                * CPU from a thread that needs it: the stage is skipped) */
    atomic_long n_wait, n_adapt, n_sleep;   /* statistics (xf_pool_stats) */
};

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *worker_main(void *v)
{
    xf_pool_t *p = ((struct slot *)v)->p;
    int ith = ((struct slot *)v)->ith;
    unsigned seen = 0;
    tl_ith = ith;
    xf_gemm_scratch_swap(((struct slot *)v)->scratch);
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
    p->n = p->nslot = n_threads;
    p->th = calloc((size_t)n_threads, sizeof *p->th);
    p->slot = calloc((size_t)n_threads, sizeof *p->slot);
    if (!p->th || !p->slot) {
        free(p->th);
        free(p->slot);
        free(p);
        return -ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    pthread_cond_init(&p->bar_cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->bar_count, 0);
    atomic_init(&p->bar_gen, 0);
    atomic_init(&p->bar_bump_ns, 0);
    atomic_init(&p->wake_ns, WAKE_INIT_NS);
    atomic_init(&p->adapt_max_ns, ADAPT_MAX_NS);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    p->adapt_ok = n_threads <= ADAPT_MAX_THREADS && (ncpu < 1 || n_threads <= ncpu);
    atomic_init(&p->n_wait, 0);
    atomic_init(&p->n_adapt, 0);
    atomic_init(&p->n_sleep, 0);
    for (int i = 0; i < n_threads; i++) {
        p->slot[i].p = p;
        p->slot[i].ith = i;
        atomic_init(&p->slot[i].arrived, 0);
        /* pages are touched only by the GEMM paths that pack into it */
        p->slot[i].scratch = aligned_alloc(64, XF_GEMM_SCRATCH);
        if (!p->slot[i].scratch) {
            p->n = 1; /* no worker started yet */
            xf_pool_free(p);
            return -ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&p->th[i], NULL, worker_main, &p->slot[i]);
        if (rc != 0) {
            p->n = i; /* join the ones started */
            xf_pool_free(p);
            return -rc;
        }
        p->slot[i].clk_ok = pthread_getcpuclockid(p->th[i], &p->slot[i].clk) == 0;
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
    for (int i = 0; i < p->nslot; i++)
        free(p->slot[i].scratch);
    free(p->slot);
    free(p->th);
    free(p);
}

int xf_pool_size(const xf_pool_t *p)
{
    return p->n;
}

void xf_pool_run(xf_pool_t *p, xf_pool_fn fn, void *arg)
{
    void *prev = xf_gemm_scratch_swap(p->slot[0].scratch);
    if (p->n == 1) {
        fn(arg, 0, 1);
        xf_gemm_scratch_swap(prev);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    tl_ith = 0;
    p->slot[0].clk_ok = pthread_getcpuclockid(pthread_self(), &p->slot[0].clk) == 0;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->lock);

    fn(arg, 0, p->n);
    xf_gemm_scratch_swap(prev);

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

/* Thread j's CPU time in ns, or -1. */
static long cpu_ns(const struct slot *s)
{
    struct timespec ts;
    if (!s->clk_ok || clock_gettime(s->clk, &ts) != 0)
        return -1;
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* The adaptive stage of a barrier wait (see the top of the file): 1 when the barrier of
 * generation g opened while spinning, 0 when the caller should sleep. */
static int spin_while_running(xf_pool_t *p, unsigned g, int me)
{
    long cap = atomic_load_explicit(&p->adapt_max_ns, memory_order_relaxed);
    if (cap <= 0 || !p->adapt_ok)
        return 0;
    long lat = atomic_load_explicit(&p->wake_ns, memory_order_relaxed);
    long grace = lat;
    if (2 * lat < cap)
        cap = 2 * lat;
    if (grace > cap)
        grace = cap;
    long last[ADAPT_MAX_THREADS], prog[ADAPT_MAX_THREADS];
    long t0 = now_ns();
    for (int j = 0; j < p->n; j++) {
        last[j] = j == me ? 0 : cpu_ns(&p->slot[j]);
        prog[j] = t0;
    }
    atomic_fetch_add_explicit(&p->n_adapt, 1, memory_order_relaxed);
    for (;;) {
        for (int i = 0; i < ADAPT_CHECK; i++) {
            if (atomic_load_explicit(&p->bar_gen, memory_order_acquire) != g)
                return 1;
            cpu_relax();
        }
        long t = now_ns();
        if (t - t0 >= cap)
            return 0;
        for (int j = 0; j < p->n; j++) {
            if (j == me ||
                atomic_load_explicit(&p->slot[j].arrived, memory_order_relaxed) == g + 1)
                continue;
            long c = cpu_ns(&p->slot[j]);
            if (c < 0)
                return 0;
            if (c != last[j]) {
                last[j] = c;
                prog[j] = t;
            } else if (t - prog[j] >= grace) {
                return 0;   /* off-CPU for longer than a wake-up: sleep, free this CPU */
            }
        }
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
    int me = tl_ith;
    atomic_store_explicit(&p->slot[me].arrived, g + 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        pthread_mutex_lock(&p->lock);
        atomic_store_explicit(&p->bar_bump_ns, now_ns(), memory_order_relaxed);
        atomic_store_explicit(&p->bar_gen, g + 1, memory_order_release);
        pthread_cond_broadcast(&p->bar_cv);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    atomic_fetch_add_explicit(&p->n_wait, 1, memory_order_relaxed);
    /* spin (an idle step, while idle has work, in place of XF_POOL_IDLE_SPINS pauses: the
     * wait before sleeping stays about as long), then the adaptive stage, then sleep */
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
    if (atomic_load_explicit(&p->bar_gen, memory_order_acquire) != g ||
        spin_while_running(p, g, me))
        return;
    int slept = 0;
    pthread_mutex_lock(&p->lock);
    while (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g) {
        pthread_cond_wait(&p->bar_cv, &p->lock);
        slept = 1;
    }
    long bump = atomic_load_explicit(&p->bar_bump_ns, memory_order_relaxed);
    pthread_mutex_unlock(&p->lock);
    if (slept) {
        /* One wake-up latency sample (bump to running again), clamped, into a moving
         * average over about 8 samples; racy updates only lose a sample. */
        long d = now_ns() - bump;
        d = d < WAKE_MIN_NS ? WAKE_MIN_NS : d > WAKE_MAX_NS ? WAKE_MAX_NS : d;
        long w = atomic_load_explicit(&p->wake_ns, memory_order_relaxed);
        atomic_store_explicit(&p->wake_ns, w + (d - w) / 8, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_sleep, 1, memory_order_relaxed);
    }
}

void xf_pool_set_adaptive(xf_pool_t *p, long max_ns)
{
    atomic_store_explicit(&p->adapt_max_ns, max_ns > 0 ? max_ns : 0, memory_order_relaxed);
}

void xf_pool_stats(const xf_pool_t *p, xf_pool_stats_t *st)
{
    st->waits = atomic_load_explicit(&p->n_wait, memory_order_relaxed);
    st->adaptive = atomic_load_explicit(&p->n_adapt, memory_order_relaxed);
    st->sleeps = atomic_load_explicit(&p->n_sleep, memory_order_relaxed);
    st->wake_ns = atomic_load_explicit(&p->wake_ns, memory_order_relaxed);
}
