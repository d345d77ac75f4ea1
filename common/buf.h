/*
 * Design notes: a growable byte buffer for building replies (metrics text,
 * JSON, ebXML). A failed allocation latches err and later appends are
 * ignored, so callers check once at the end (hiredis's c->err idea).
 */
#ifndef MHS_BUF_H
#define MHS_BUF_H

#include <stddef.h>

struct mhs_buf {
	char *data; /* NUL-terminated when len > 0 */
	size_t len;
	size_t cap;
	int err;
};

#define MHS_BUF_INIT                                                          \
	{                                                                     \
		NULL, 0, 0, 0                                                 \
	}

void mhs_buf_append(struct mhs_buf *b, const void *data, size_t len);
/* mhs_buf_reserve makes room for more bytes now: one allocation instead
 * of a doubling series when the size is known in advance. */
void mhs_buf_reserve(struct mhs_buf *b, size_t more);
void mhs_buf_puts(struct mhs_buf *b, const char *s);
void mhs_buf_printf(struct mhs_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* mhs_buf_json_str appends s as a quoted, escaped JSON string. */
void mhs_buf_json_str(struct mhs_buf *b, const char *s);
void mhs_buf_reset(struct mhs_buf *b);
void mhs_buf_fini(struct mhs_buf *b);

#endif /* MHS_BUF_H */
