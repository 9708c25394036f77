/* Allocation counting for tests that prove a code path never allocates (STYLE.md §4: the
 * second xf_forward calls no malloc). The program links alloc_count.c and $(XF_WRAP_ALLOC)
 * (-Wl,--wrap=malloc,...), so every malloc, calloc, realloc, posix_memalign and aligned_alloc
 * of the objects linked statically into it goes through the counter (which can also make one
 * of them fail). */
#ifndef XF_TEST_ALLOC_COUNT_H
#define XF_TEST_ALLOC_COUNT_H

/* Zero the count and start counting (any thread's allocations count). */
void xf_test_alloc_count_start(void);
/* Stop counting; returns the allocations seen since the start. */
long xf_test_alloc_count_stop(void);
/* Make the n-th allocation from now fail once (NULL; ENOMEM from posix_memalign), counting or
 * not, to test -ENOMEM paths; 0 turns it off. */
void xf_test_alloc_fail_at(long n);

#endif
