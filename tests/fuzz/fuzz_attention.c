/* libFuzzer target: the attention-parameter parser (xf_attn_parse) on any bytes, then what a
 * request's selection goes through: flags, name, to_json and a re-parse of that JSON (which must
 * succeed and print the same: a round trip), and the check against a model. */
#include "config.h"

#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const xf_model_t *m = fz_tiny_model(0);
    char err[256];
    xf_attn_t *a = NULL;
    int rc = xf_attn_parse((const char *)data, size, &a, err, sizeof err);
    if (rc != 0) {
        if (a)
            fz_fail("xf_attn_parse failed but returned an object");
        if (!memchr(err, '\0', sizeof err))
            fz_fail("error message not terminated");
        return 0;
    }
    if (!a)
        fz_fail("xf_attn_parse succeeded without an object");
    (void)xf_attn_flags(a);
    if (!xf_attn_name(a))
        fz_fail("a parsed variant has no name");
    char js[4096], js2[4096];
    if (xf_attn_to_json(a, js, sizeof js) >= 0) {
        xf_attn_t *b = NULL;
        if (xf_attn_parse(js, strlen(js), &b, err, sizeof err) != 0)
            fz_fail("to_json output does not parse again");
        if (xf_attn_to_json(b, js2, sizeof js2) < 0 || strcmp(js, js2) != 0)
            fz_fail("to_json -> parse -> to_json is not a fixed point");
        xf_attn_free(b);
    }
    (void)xf_attn_check(a, m, err, sizeof err);
    xf_attn_t *c = xf_attn_dup(a);
    xf_attn_free(c);
    xf_attn_free(a);
    return 0;
}
