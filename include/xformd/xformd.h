/* xformd public API, umbrella header: the engine as an embeddable library. It knows nothing of
 * HTTP, JSON requests or Redis. */
#ifndef XFORMD_XFORMD_H
#define XFORMD_XFORMD_H

#include <xformd/error.h>
#include <xformd/tokenizer.h>
#include <xformd/model.h>
#include <xformd/attention.h>
#include <xformd/plan.h>
#include <xformd/forward.h>
#include <xformd/txl.h>
#include <xformd/state.h>
#include <xformd/prune.h>

#endif
