/* The --wrap allocation counter (see alloc_count.h): each wrapper counts while counting is on
 * and calls the real function. Only for programs linked with $(XF_WRAP_ALLOC). */
#include "config.h"

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

static void count(void)
{
    if (atomic_load(&counting))
        atomic_fetch_add(&n_allocs, 1);
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
    count();
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t s)
{
    count();
    return __real_calloc(n, s);
}

void *__wrap_realloc(void *p, size_t n)
{
    count();
    return __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
    count();
    return __real_posix_memalign(p, a, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    count();
    return __real_aligned_alloc(a, n);
}
