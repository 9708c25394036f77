/* Test helpers: paths, scratch directories, file I/O and tolerance checks for cmocka tests. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xf_test.h"

const char *xf_testdata(char *buf, size_t len, const char *rel)
{
    const char *root = getenv("XF_TESTDATA");
    struct stat st;

    if (!root || !*root)
        root = "../shared/testdata";
    snprintf(buf, len, "%s/%s", root, rel);
    if (stat(buf, &st) != 0) {
        fprintf(stderr, "# test data not found: %s\n", buf);
        return NULL;
    }
    return buf;
}

const char *xf_test_tmpdir(char *buf, size_t len, const char *tag)
{
    const char *base = getenv("XF_BUILDDIR");
    char root[1024];

    if (base && *base) {
        snprintf(root, sizeof root, "%s/tests/tmp", base);
        mkdir(root, 0755);
    } else {
        snprintf(root, sizeof root, "/tmp");
    }
    snprintf(buf, len, "%s/%s.%ld", root, tag, (long)getpid());
    xf_test_rmtree(buf);
    if (mkdir(buf, 0755) != 0)
        return NULL;
    return buf;
}

/* The fixture's directory: one test at a time runs in a cmocka program. */
static char test_dir[1024];

int xf_test_dir_setup(void **state)
{
    (void)state;
    return xf_test_tmpdir(test_dir, sizeof test_dir, program_invocation_short_name) ? 0 : -1;
}

int xf_test_dir_teardown(void **state)
{
    (void)state;
    xf_test_rmtree(test_dir);
    test_dir[0] = '\0';
    return 0;
}

const char *xf_test_dir(void)
{
    return test_dir;
}

const char *xf_test_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", test_dir, name);
    return buf;
}

int xf_test_rmtree(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char sub[2048];

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? 0 : -errno;
    d = opendir(path);
    if (!d)
        return -errno;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        xf_test_rmtree(sub);
    }
    closedir(d);
    return rmdir(path) == 0 ? 0 : -errno;
}

char *xf_test_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)n + 1);
    if (!buf)
        goto out;
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = '\0';
    if (len)
        *len = (size_t)n;
out:
    fclose(f);
    return buf;
}

int xf_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int rc = 0;

    if (!f)
        return -errno;
    if (len && fwrite(data, 1, len, f) != len)
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

int xf_test_allclose(const float *got, const float *exp, size_t n, double rtol, double atol,
                     double *max_abs)
{
    double worst = 0.0;
    int ok = 1;

    for (size_t i = 0; i < n; i++) {
        double g = got[i], e = exp[i];
        double diff;

        if (isnan(g) && isnan(e))
            continue;
        diff = fabs(g - e);
        if (!(diff <= atol + rtol * fabs(e))) {
            if (ok)
                fprintf(stderr, "# mismatch at %zu: got %.9g want %.9g (|diff| %.3g)\n", i, g, e,
                        diff);
            ok = 0;
        }
        if (!(diff <= worst))
            worst = isnan(diff) ? INFINITY : diff;
    }
    if (max_abs)
        *max_abs = worst;
    return ok;
}

void xf_test_fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;

    for (size_t i = 0; i < n; i++) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = lo + (hi - lo) * (float)((z >> 11) * 0x1.0p-53);
    }
}

/* Checks failed since the last xf_cases_end(); a test program runs its tests one at a time. */
static int case_failures;

int xf_check_(const char *name, int ok, const char *expr, const char *file, int line)
{
    if (!ok) {
        print_message("# FAIL case %s: %s (%s:%d)\n", name, expr, file, line);
        case_failures++;
    }
    return ok;
}

int xf_check_int_(const char *name, long long got, long long want, const char *expr,
                  const char *file, int line)
{
    if (got == want)
        return 1;
    print_message("# FAIL case %s: %s is %lld, want %lld (%s:%d)\n", name, expr, got, want,
                  file, line);
    case_failures++;
    return 0;
}

int xf_check_str_(const char *name, const char *got, const char *want, const char *expr,
                  const char *file, int line)
{
    if (got && want && strcmp(got, want) == 0)
        return 1;
    print_message("# FAIL case %s: %s is \"%s\", want \"%s\" (%s:%d)\n", name, expr,
                  got ? got : "(null)", want ? want : "(null)", file, line);
    case_failures++;
    return 0;
}

void xf_cases_end(void)
{
    int n = case_failures;
    case_failures = 0;
    if (n)
        print_message("# %d failed check(s) in named cases above\n", n);
    assert_int_equal(n, 0);
}
