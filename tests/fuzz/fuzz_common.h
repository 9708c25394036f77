/* Shared by the libFuzzer targets: the tiny demo model, written once per process into a scratch
 * directory (under /dev/shm when it exists: file-based targets write an input per run), and a
 * file writer. Never linked into the daemon or make check. */
#ifndef XF_FUZZ_COMMON_H
#define XF_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/xformd.h>

/* A scratch directory private to this process (created on first use). Ownership: borrowed. */
const char *fz_scratch(void);
/* The tiny demo model with n_labels classifier outputs (0, 1 or 3), written and loaded once.
 * Ownership: borrowed for the process. Aborts on failure (a broken harness, not a finding). */
const xf_model_t *fz_tiny_model(int n_labels);
/* Its directory. Ownership: borrowed. */
const char *fz_tiny_dir(int n_labels);
/* Write n bytes to path (truncating). Aborts on failure. */
void fz_write(const char *path, const uint8_t *data, size_t n);
/* Abort with a message: an invariant of the code under test does not hold (a finding). */
void fz_fail(const char *what) __attribute__((noreturn));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
