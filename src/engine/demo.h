/* Engine-internal: pieces of the demo model writer (demo.c) that tests reuse — the generated
 * WordPiece vocabulary (demo_vocab.c), the per-tensor SplitMix64 weight streams and atomic
 * file writes. */
#ifndef XF_ENGINE_DEMO_H
#define XF_ENGINE_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include <xformd/error.h>

#define XF_DEMO_VOCAB_MIN 128   /* [PAD] [unused0..98] [UNK] [CLS] [SEP] [MASK] + characters */

/* Write a deterministic vocab.txt of n tokens (n >= XF_DEMO_VOCAB_MIN): [PAD]=0,
 * [unused0..98]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, then printable ASCII
 * characters (no upper case), their ## forms, common English words (xf_demo_english) with
 * their inflected forms, English word pieces derived from them, and generated syllable
 * words / ## pieces to fill n (demo_vocab.c). Every token is unique. Written via a
 * temporary file + rename(). */
int xf_demo_vocab_write(const char *path, int32_t n, xf_diag_t *diag);

/* The built-in English word list (demo_words.c): space-separated lower-case words. */
extern const char xf_demo_english[];

/* The stream seed of the tensor called name under a model seed (FNV-1a of name mixed with
 * seed): weights do not depend on the order tensors are written in. */
uint64_t xf_demo_stream(uint64_t seed, const char *name);
/* n values uniform in [-a, a) from the SplitMix64 stream s (pure function of s). */
void xf_demo_uniform(float *x, size_t n, uint64_t s, float a);

/* Write len bytes to path through path.tmp.<pid> + fsync + rename(). */
int xf_demo_write_file(const char *path, const void *data, size_t len, xf_diag_t *diag);

#endif
