/* The --wrap allocation counter (see alloc_count.h): each wrapper counts while counting is on
 * and calls the real function, or fails the one xf_test_alloc_fail_at chose. Only for
 * programs linked with $(XF_WRAP_ALLOC). */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#include "alloc_count.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t s);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);

static atomic_int counting;
static atomic_long n_allocs;
static atomic_long fail_left;   /* > 0: allocations until the one that fails */

/* Counts one allocation; returns 1 when this one must fail. */
static int count(void)
{
    if (atomic_load(&counting))
        atomic_fetch_add(&n_allocs, 1);
    long v = atomic_load(&fail_left);
    while (v > 0 && !atomic_compare_exchange_weak(&fail_left, &v, v - 1))
        ;
    return v == 1;
}

void xf_test_alloc_fail_at(long n)
{
    atomic_store(&fail_left, n > 0 ? n : 0);
}

void xf_test_alloc_count_start(void)
{
    atomic_store(&n_allocs, 0);
    atomic_store(&counting, 1);
}

long xf_test_alloc_count_stop(void)
{
    atomic_store(&counting, 0);
    return atomic_load(&n_allocs);
}

void *__wrap_malloc(size_t n)
{
    return count() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t s)
{
    return count() ? NULL : __real_calloc(n, s);
}

void *__wrap_realloc(void *p, size_t n)
{
    return count() ? NULL : __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
    return count() ? ENOMEM : __real_posix_memalign(p, a, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    return count() ? NULL : __real_aligned_alloc(a, n);
}
