/* libFuzzer target: the file loaders on hostile bytes. The first byte picks the file:
 * 0 model.safetensors alone (header validation, then every tensor read as fp32), 1 config.json
 * in a directory with valid weights and vocabulary (the whole model load), 2 tokenizer.json,
 * 3 vocab.txt. Errors are expected; crashes, leaks and hangs are the findings. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "fuzz_common.h"

/* The directory of mode 1: a demo model smaller than the tiny one (1 layer, d_model 16, 32
 * positions: ~80 KB of weights instead of ~680 KB), so that a config.json that loads costs a
 * tenth of the reading and checking per run. Its config.json is replaced by each input; the
 * seeds corpus/fuzz_loader/config* describe this model. */
static const char *model_copy(void)
{
    static char dir[400];
    if (dir[0])
        return dir;
    snprintf(dir, sizeof dir, "%s/cfg", fz_scratch());
    xf_demo_opts_t d;
    xf_demo_opts_init_tiny(&d);
    d.n_layer = 1;
    d.d_model = 16;
    d.n_head = 2;
    d.d_ff = 32;
    d.max_positions = 32;
    xf_diag_t diag = { 0, "" };
    if (xf_demo_write(dir, &d, &diag) < 0) {
        fprintf(stderr, "xf_demo_write: %s\n", diag.msg);
        fz_fail("cannot write the loader's demo model");
    }
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] & 3;
    data++;
    size--;
    char path[600];
    xf_diag_t diag = { 0, "" };
    if (mode == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", fz_scratch());
        fz_write(path, data, size);
        xf_st_file_t *f = NULL;
        if (xf_st_open(path, &f, &diag) == 0) {
            for (int32_t i = 0; i < f->n; i++) {
                const float *v = NULL;
                float *owned = NULL;
                if (xf_st_read_f32(f, &f->t[i], &v, &owned, &diag) == 0 && f->t[i].numel)
                    (void)*(volatile const float *)&v[f->t[i].numel - 1];
                free(owned);
            }
            xf_st_close(f);
        }
        return 0;
    }
    if (mode == 1) {
        const char *dir = model_copy();
        snprintf(path, sizeof path, "%s/config.json", dir);
        fz_write(path, data, size);
        xf_model_t *m = NULL;
        if (xf_model_load(dir, NULL, &m, &diag) == 0 && !xf_model_info(m))
            fz_fail("a loaded model has no info");
        xf_model_free(m);
        return 0;
    }
    snprintf(path, sizeof path, "%s/%s", fz_scratch(),
             mode == 2 ? "tokenizer.json" : "vocab.txt");
    fz_write(path, data, size);
    xf_tokenizer_t *t = NULL;
    if (xf_tokenizer_load(path, NULL, &t, &diag) == 0) {
        xf_tokens_t out;
        memset(&out, 0, sizeof out);
        const char *probe = "Hello, world! unaffable 日本";
        xf_tokenizer_encode(t, probe, strlen(probe), NULL, 0, NULL, &out, &diag);
        xf_tokens_deinit(&out);
        xf_tokenizer_free(t);
    }
    return 0;
}
