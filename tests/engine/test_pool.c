/* Tests for the compute thread pool (src/engine/pool.c): every thread runs once per run with
 * the right ith/nth, barriers order phases across many iterations, sizes 1..5, barriers keep
 * order with uneven work and threads that leave the CPU under every barrier wait policy
 * (adaptive on, off, tiny cap; 1..6 threads, more than the CPUs), create/free cycles
 * (leak-free under ASan), each thread's GEMM scratch, and create's -ENOMEM paths. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../helpers/alloc_count.h"
#include "../helpers/xf_test.h"
#include "engine/kernels.h"
#include "engine/pool.h"

struct count_arg {
    atomic_int calls;
    atomic_int ith_mask;
    atomic_int bad_nth;
    int nth;
};

static void count_fn(void *v, int ith, int nth)
{
    struct count_arg *a = v;
    atomic_fetch_add(&a->calls, 1);
    atomic_fetch_or(&a->ith_mask, 1 << ith);
    if (nth != a->nth)
        atomic_fetch_add(&a->bad_nth, 1);
}

static void test_run_counts(void **state)
{
    (void)state;
    for (int n = 1; n <= 5; n++) {
        xf_pool_t *p = NULL;
        assert_int_equal(xf_pool_create(n, &p), 0);
        assert_int_equal(xf_pool_size(p), n);
        struct count_arg a;
        memset(&a, 0, sizeof a);
        a.nth = n;
        for (int r = 0; r < 200; r++)
            xf_pool_run(p, count_fn, &a);
        /* every thread ran exactly once per run, with ith 0..n-1 and the right nth */
        assert_int_equal(atomic_load(&a.calls), 200 * n);
        assert_int_equal(atomic_load(&a.ith_mask), (1 << n) - 1);
        assert_int_equal(atomic_load(&a.bad_nth), 0);
        xf_pool_free(p);
    }
}

/* Each phase: thread ith writes slot[ith] = phase; after a barrier every thread checks that
 * all slots hold this phase; after a second barrier the next phase may overwrite them. */
#define N_PHASES 2000
struct bar_arg {
    xf_pool_t *p;
    atomic_int slot[8];
    atomic_int errors;
};

/* One phase: publish ph, wait, count every thread that has not published it, wait again. */
static void phase_check(struct bar_arg *a, int ith, int nth, int ph)
{
    atomic_store(&a->slot[ith], ph);
    xf_pool_barrier(a->p);
    for (int j = 0; j < nth; j++)
        if (atomic_load(&a->slot[j]) != ph)
            atomic_fetch_add(&a->errors, 1);
    xf_pool_barrier(a->p);
}

/* Runs fn `rounds` times on a's pool of n threads; each thread must end at phase `phases`. */
static void run_rounds(struct bar_arg *a, xf_pool_fn fn, int n, int rounds, int phases)
{
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < 8; j++)
            atomic_store(&a->slot[j], 0);
        xf_pool_run(a->p, fn, a);
        for (int j = 0; j < n; j++)
            assert_int_equal(atomic_load(&a->slot[j]), phases);
    }
}

static void bar_fn(void *v, int ith, int nth)
{
    for (int ph = 1; ph <= N_PHASES; ph++)
        phase_check(v, ith, nth, ph);
}

static void test_barrier_order(void **state)
{
    (void)state;
    for (int n = 1; n <= 5; n++) {
        struct bar_arg a;
        memset(&a, 0, sizeof a);
        assert_int_equal(xf_pool_create(n, &a.p), 0);
        run_rounds(&a, bar_fn, n, 3, N_PHASES);
        assert_int_equal(atomic_load(&a.errors), 0);
        xf_pool_free(a.p);
    }
}

/* Uneven phases: in each, one thread computes for a while and another sleeps (off-CPU, as a
 * preempted or blocked thread), so waiters take every path of a barrier wait: the fixed spin,
 * the adaptive spin while the late thread runs, and the sleep when it is off-CPU. The
 * barriers must still order every phase; nothing here depends on how long anything takes. */
#define N_UNEVEN 300
static volatile double sink;

static void uneven_fn(void *v, int ith, int nth)
{
    struct bar_arg *a = v;
    for (int ph = 1; ph <= N_UNEVEN; ph++) {
        if (ith == ph % nth) {
            double x = 1;
            for (int k = 0; k < 2000 * (ph % 7); k++)
                x = x * 1.0000001 + 1e-9;
            sink = x;
        }
        if (nth > 1 && ith == (ph * 5 + 1) % nth && ph % 3 == 0) {
            struct timespec ts = {0, 20000L * (ph % 5)};
            nanosleep(&ts, NULL);
        }
        phase_check(a, ith, nth, ph);
    }
}

static void test_barrier_policies(void **state)
{
    (void)state;
    const long caps[] = {0, 2000000, 1000};   /* off, the default, a cap below one check */
    for (int n = 1; n <= 6; n++) {
        for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
            struct bar_arg a;
            memset(&a, 0, sizeof a);
            assert_int_equal(xf_pool_create(n, &a.p), 0);
            xf_pool_set_adaptive(a.p, caps[c]);
            run_rounds(&a, uneven_fn, n, 2, N_UNEVEN);
            assert_int_equal(atomic_load(&a.errors), 0);
            xf_pool_stats_t st;
            xf_pool_stats(a.p, &st);
            /* 2 runs x 2 barriers per phase; all but the last thread to arrive wait */
            assert_int_equal(st.waits, 2L * 2 * N_UNEVEN * (n - 1));
            assert_true(st.adaptive <= st.waits && st.sleeps <= st.waits);
            if (caps[c] == 0)
                assert_int_equal(st.adaptive, 0);
            /* the wake-up estimate stays within its clamps (10 us .. 1 ms) */
            assert_true(st.wake_ns >= 10000 && st.wake_ns <= 1000000);
            xf_pool_free(a.p);
        }
    }
}

/* xf_pool_barrier_idle orders phases like xf_pool_barrier, and calls idle only while it
 * waits, never more often than idle asks for (each call does one of `left` steps), and not
 * at all with one thread. */
struct idle_arg {
    xf_pool_t *p;
    atomic_int slot[8];
    atomic_int errors;
    atomic_int calls;
    int left[8];   /* steps left in this barrier, per thread */
};

struct idle_ctx {
    struct idle_arg *a;
    int ith;
};

static int idle_step(void *v)
{
    struct idle_ctx *c = v;
    atomic_fetch_add(&c->a->calls, 1);
    if (c->a->left[c->ith] <= 0)
        atomic_fetch_add(&c->a->errors, 1000);   /* called after it returned 0 */
    return --c->a->left[c->ith] > 0;
}

static void idle_fn(void *v, int ith, int nth)
{
    struct idle_arg *a = v;
    struct idle_ctx c = { a, ith };
    for (int ph = 1; ph <= N_PHASES; ph++) {
        atomic_store(&a->slot[ith], ph);
        a->left[ith] = 1 + ph % 3;
        xf_pool_barrier_idle(a->p, idle_step, &c);
        for (int j = 0; j < nth; j++)
            if (atomic_load(&a->slot[j]) != ph)
                atomic_fetch_add(&a->errors, 1);
        xf_pool_barrier_idle(a->p, NULL, NULL);
    }
}

static void test_barrier_idle(void **state)
{
    (void)state;
    for (int n = 1; n <= 4; n++) {
        struct idle_arg a;
        memset(&a, 0, sizeof a);
        assert_int_equal(xf_pool_create(n, &a.p), 0);
        xf_pool_run(a.p, idle_fn, &a);
        for (int j = 0; j < n; j++)
            assert_int_equal(atomic_load(&a.slot[j]), N_PHASES);
        assert_int_equal(atomic_load(&a.errors), 0);
        /* at most 3 steps per thread and barrier; none with one thread */
        assert_true(atomic_load(&a.calls) <= 3 * N_PHASES * n);
        if (n == 1)
            assert_int_equal(atomic_load(&a.calls), 0);
        xf_pool_free(a.p);
    }
}

/* A run's results are visible to the caller when xf_pool_run returns (plain stores). */
struct sum_arg {
    int nr;
    int *out;
};

static void sum_fn(void *v, int ith, int nth)
{
    struct sum_arg *a = v;
    int r0, r1;
    xf_split_rows(a->nr, ith, nth, &r0, &r1);
    for (int i = r0; i < r1; i++)
        a->out[i] = i * 3 + 1;
}

static void test_split_and_visibility(void **state)
{
    (void)state;
    int out[1000];
    for (int n = 1; n <= 5; n++) {
        xf_pool_t *p = NULL;
        assert_int_equal(xf_pool_create(n, &p), 0);
        for (int nr = 0; nr <= 1000; nr += 37) {
            memset(out, 0, sizeof out);
            struct sum_arg a = { nr, out };
            xf_pool_run(p, sum_fn, &a);
            for (int i = 0; i < nr; i++)
                assert_int_equal(out[i], i * 3 + 1);
            for (int i = nr; i < 1000; i++)
                assert_int_equal(out[i], 0);
        }
        xf_pool_free(p);
    }
}

static void test_create_free_cycles(void **state)
{
    (void)state;
    for (int c = 0; c < 50; c++) {
        xf_pool_t *p = NULL;
        int n = 1 + c % 5;
        assert_int_equal(xf_pool_create(n, &p), 0);
        struct count_arg a;
        memset(&a, 0, sizeof a);
        a.nth = n;
        if (c % 2)
            xf_pool_run(p, count_fn, &a);
        xf_pool_free(p);
        assert_int_equal(atomic_load(&a.calls), (c % 2) ? n : 0);
    }
    xf_pool_t *p = (xf_pool_t *)&p;
    assert_int_equal(xf_pool_create(0, &p), -EINVAL);
    assert_null(p);
    xf_pool_free(NULL);
}

/* Each thread runs with its own GEMM scratch of the pool (kernels.h): non-NULL, 64-byte
 * aligned, distinct, the same pointers in every run; the caller's own comes back after. */
struct scratch_arg {
    void *seen[8];
};

static void scratch_fn(void *v, int ith, int nth)
{
    (void)nth;
    ((struct scratch_arg *)v)->seen[ith] = xf_gemm_scratch();
}

static void test_scratch(void **state)
{
    (void)state;
    static char mine[64];
    for (int n = 1; n <= 5; n++) {
        xf_pool_t *p = NULL;
        assert_int_equal(xf_pool_create(n, &p), 0);
        struct scratch_arg a = { { 0 } }, b = { { 0 } };
        void *prev = xf_gemm_scratch_swap(mine);
        xf_pool_run(p, scratch_fn, &a);
        assert_ptr_equal(xf_gemm_scratch(), mine);
        xf_gemm_scratch_swap(NULL);
        xf_pool_run(p, scratch_fn, &b);
        assert_null(xf_gemm_scratch());
        xf_gemm_scratch_swap(prev);
        for (int i = 0; i < n; i++) {
            assert_non_null(a.seen[i]);
            assert_int_equal((uintptr_t)a.seen[i] % 64, 0);
            assert_ptr_equal(a.seen[i], b.seen[i]);
            for (int j = 0; j < i; j++)
                assert_ptr_not_equal(a.seen[i], a.seen[j]);
            memset(a.seen[i], 0x5a, XF_GEMM_SCRATCH);   /* all of it is ours (ASan) */
        }
        xf_pool_free(p);
    }
}

/* xf_pool_create with each of its allocations failing in turn (the pool, its thread and slot
 * arrays, one scratch per thread): -ENOMEM, *out NULL, nothing leaked (the sanitizer build
 * checks that); then it succeeds. */
static void test_create_enomem(void **state)
{
    (void)state;
    const int n = 3;
    long k;
    for (k = 1; k < 100; k++) {
        xf_pool_t *p = (xf_pool_t *)&p;
        xf_test_alloc_fail_at(k);
        int rc = xf_pool_create(n, &p);
        xf_test_alloc_fail_at(0);
        if (rc == 0) {
            struct count_arg a;
            memset(&a, 0, sizeof a);
            a.nth = n;
            xf_pool_run(p, count_fn, &a);
            xf_pool_free(p);
            assert_int_equal(atomic_load(&a.calls), n);
            break;
        }
        assert_int_equal(rc, -ENOMEM);
        assert_null(p);
    }
    assert_int_equal(k, 3 + n + 1);   /* every allocation failed once */
}

XF_TEST_MAIN(cmocka_unit_test(test_run_counts), cmocka_unit_test(test_barrier_order),
             cmocka_unit_test(test_barrier_policies), cmocka_unit_test(test_barrier_idle),
             cmocka_unit_test(test_split_and_visibility), cmocka_unit_test(test_create_free_cycles),
             cmocka_unit_test(test_scratch), cmocka_unit_test(test_create_enomem))
