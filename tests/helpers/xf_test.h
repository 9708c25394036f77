/* Test helpers shared by every cmocka program: the TAP main, paths to ../shared/testdata and
 * to a scratch directory, file slurping and numeric comparison with a tolerance rule. */
#ifndef XF_TEST_H
#define XF_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

/* main() for a test program: TAP output (Automake's tap-driver reads it). */
#define XF_TEST_MAIN(...)                                                          \
    int main(void)                                                                 \
    {                                                                              \
        const struct CMUnitTest xf_tests_[] = { __VA_ARGS__ };                     \
        cmocka_set_message_output(CM_OUTPUT_TAP);                                  \
        if (getenv("XF_TEST_FILTER")) /* e.g. "test_overload*": run only those */  \
            cmocka_set_test_filter(getenv("XF_TEST_FILTER"));                      \
        return cmocka_run_group_tests(xf_tests_, NULL, NULL);                      \
    }

/* Absolute path of a file or folder under the test data root ($XF_TESTDATA, default
 * ../shared/testdata), written into buf. Returns buf, or NULL (with a message on stderr) when
 * it does not exist — callers then skip() naming the path. */
const char *xf_testdata(char *buf, size_t len, const char *rel);
/* Like xf_testdata, but skip()s the current test (printing the path) when absent. */
#define XF_TESTDATA_OR_SKIP(buf, rel)                                              \
    do {                                                                           \
        if (!xf_testdata((buf), sizeof(buf), (rel))) {                             \
            print_message("# SKIP: test data %s not found\n", (rel));              \
            skip();                                                                \
        }                                                                          \
    } while (0)

/* A fresh, empty scratch directory under $XF_BUILDDIR/tests/tmp (or /tmp), named after tag and
 * the pid. Removed by xf_test_rmtree(). */
const char *xf_test_tmpdir(char *buf, size_t len, const char *tag);
int xf_test_rmtree(const char *path);
/* A scratch directory per test, as a cmocka fixture: XF_TEST_WITH_DIR(fn) runs fn with a fresh
 * xf_test_tmpdir() named after the program, made by xf_test_dir_setup and removed by
 * xf_test_dir_teardown (also after a failed test). xf_test_dir() is its path (valid while the
 * test runs); xf_test_path() writes "<dir>/<name>" into buf and returns buf. */
int xf_test_dir_setup(void **state);
int xf_test_dir_teardown(void **state);
const char *xf_test_dir(void);
const char *xf_test_path(char *buf, size_t len, const char *name);
#define XF_TEST_WITH_DIR(fn) cmocka_unit_test_setup_teardown(fn, xf_test_dir_setup, \
                                                             xf_test_dir_teardown)

/* Read a whole file; returns malloc'd buffer (NUL-terminated) and its size, or NULL. */
char *xf_test_slurp(const char *path, size_t *len);
int xf_test_write_file(const char *path, const void *data, size_t len);

/* Max |got - exp| and whether every element passes |got - exp| <= atol + rtol·|exp|
 * (NaN == NaN counts as equal when both are NaN). Prints the first failure. */
int xf_test_allclose(const float *got, const float *exp, size_t n, double rtol, double atol,
                     double *max_abs);

/* Deterministic fill in [lo, hi) from a seed (SplitMix64), for test inputs. */
void xf_test_fill(float *x, size_t n, uint64_t seed, float lo, float hi);

/* Tables of named cases inside one cmocka test, one named case per check (as hiredis's
 * `test("…"); test_cond(…)`): a failing XF_CHECK prints "# FAIL case <name>: <what>
 * (file:line)" and the table carries on, so every failing case is named; xf_cases_end() then
 * fails the test when any check failed since the last call. Each XF_CHECK yields its condition
 * (1 or 0), so a case can stop early when a later check would be meaningless. */
#define XF_CHECK(name, cond) xf_check_((name), !!(cond), #cond, __FILE__, __LINE__)
#define XF_CHECK_INT(name, got, want)                                              \
    xf_check_int_((name), (long long)(got), (long long)(want), #got, __FILE__, __LINE__)
#define XF_CHECK_STR(name, got, want)                                              \
    xf_check_str_((name), (got), (want), #got, __FILE__, __LINE__)
int xf_check_(const char *name, int ok, const char *expr, const char *file, int line);
int xf_check_int_(const char *name, long long got, long long want, const char *expr,
                  const char *file, int line);
int xf_check_str_(const char *name, const char *got, const char *want, const char *expr,
                  const char *file, int line);
/* Fails the current test when a check failed since the last call; resets the count. */
void xf_cases_end(void);

#endif
