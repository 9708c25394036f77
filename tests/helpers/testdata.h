/* Reader for the numeric test cases in ../shared/testdata (onnx_node, ort_contrib):
 * a case.txt manifest with `input|output NAME FILE DTYPE RANK DIMS...`, `attr NAME TYPE VALUE`,
 * `tolerance rtol R atol A`, plus raw little-endian float32 files. File sizes are checked
 * against the declared shapes before anything is read. */
#ifndef XF_TEST_TESTDATA_H
#define XF_TEST_TESTDATA_H

#include <stddef.h>
#include <stdint.h>

#define XF_CASE_MAX_TENSORS 16
#define XF_CASE_MAX_ATTRS 32

typedef struct xf_case_tensor {
    char name[64];
    int is_output;
    char dtype[16];            /* original dtype: float32, bool, int32, int64 */
    int rank;
    int64_t dims[8];
    size_t numel;
    float *data;               /* malloc'd, numel floats */
} xf_case_tensor;

typedef struct xf_case {
    char dir[1024];
    char op[64];
    char line_extra[8][256];   /* other lines (mask_type, node_inputs, ...), raw */
    int n_extra;
    int n_tensors;
    xf_case_tensor t[XF_CASE_MAX_TENSORS];
    int n_attrs;
    char attr_name[XF_CASE_MAX_ATTRS][64];
    char attr_val[XF_CASE_MAX_ATTRS][64];
    int attr_default[XF_CASE_MAX_ATTRS];  /* 1 when the manifest marks it "default" */
    double rtol, atol;
} xf_case;

/* Load dir/case.txt and every tensor file. Returns 0, or a negative code with a message in
 * err (size mismatch, missing file, bad line). xf_case_free releases the data. */
int xf_case_load(const char *dir, xf_case *c, char *err, size_t errlen);
void xf_case_free(xf_case *c);
const xf_case_tensor *xf_case_get(const xf_case *c, const char *name);
/* Attribute value or NULL. */
const char *xf_case_attr(const xf_case *c, const char *name);
/* Value of an extra line "key value..." (e.g. "mask_type") or NULL. */
const char *xf_case_extra(const xf_case *c, const char *key);

#endif
