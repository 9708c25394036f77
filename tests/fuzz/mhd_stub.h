/* The last reply the stubbed libmicrohttpd saw (mhd_stub.c); reset fz_last_status to 0 before
 * each request. */
#ifndef XF_FUZZ_MHD_STUB_H
#define XF_FUZZ_MHD_STUB_H

extern unsigned fz_last_status;
extern char fz_last_body[512];

#endif
