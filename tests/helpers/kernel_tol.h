/* Error bounds shared by the kernel tests (test_kernels for fp32, test_qgemm for int8): one
 * home for each bound and the reason for its number. */
#ifndef XF_TEST_KERNEL_TOL_H
#define XF_TEST_KERNEL_TOL_H

#include "engine/kernels.h"

/* Unit roundoff of fp32, 2^-24. */
#define XF_TEST_EPS32 5.96e-8

/* Allowed |fast - ref| of activation act at pre-activation v (reference result ref), for the
 * epilogues of the fast kernels against the _ref ones. */
double xf_test_act_tol(enum xf_epilogue act, float v, float ref);

#endif
