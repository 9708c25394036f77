/* Helpers of the fuzz targets (see fuzz_common.h). */
#include "config.h"

#include "fuzz_common.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz invariant failed: %s\n", what);
    abort();
}

static char scratch_dir[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);   /* best effort: keep walking */
    return 0;
}

/* At exit (libFuzzer's -max_total_time ends with exit()): the scratch models go too. */
static void scratch_remove(void)
{
    if (scratch_dir[0])
        nftw(scratch_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

const char *fz_scratch(void)
{
    if (scratch_dir[0])
        return scratch_dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(scratch_dir, sizeof scratch_dir, "%s/xf-fuzz.%ld", base, (long)getpid());
    if (mkdir(scratch_dir, 0700) < 0)
        fz_fail("cannot create the scratch directory");
    atexit(scratch_remove);
    return scratch_dir;
}

static const int label_sets[3] = { 0, 1, 3 };
static char model_dir[3][300];
static xf_model_t *models[3];

static int slot(int n_labels)
{
    for (int i = 0; i < 3; i++)
        if (label_sets[i] == n_labels)
            return i;
    fz_fail("no such demo model");
}

const char *fz_tiny_dir(int n_labels)
{
    int k = slot(n_labels);
    if (!model_dir[k][0]) {
        snprintf(model_dir[k], sizeof model_dir[k], "%s/tiny%d", fz_scratch(), n_labels);
        xf_demo_opts_t d;
        xf_demo_opts_init_tiny(&d);
        d.n_labels = n_labels;
        xf_diag_t diag = { 0, "" };
        if (xf_demo_write(model_dir[k], &d, &diag) < 0) {
            fprintf(stderr, "xf_demo_write: %s\n", diag.msg);
            fz_fail("cannot write the demo model");
        }
    }
    return model_dir[k];
}

const xf_model_t *fz_tiny_model(int n_labels)
{
    int k = slot(n_labels);
    if (!models[k]) {
        xf_diag_t diag = { 0, "" };
        if (xf_model_load(fz_tiny_dir(n_labels), NULL, &models[k], &diag) < 0) {
            fprintf(stderr, "xf_model_load: %s\n", diag.msg);
            fz_fail("cannot load the demo model");
        }
    }
    return models[k];
}

void fz_write(const char *path, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fz_fail("cannot open a scratch file");
    if (n && fwrite(data, 1, n, f) != n)
        fz_fail("cannot write a scratch file");
    fclose(f);
}
