/*
 * Design notes: see buf.h. Capacity doubles; data always has room for a
 * terminating NUL.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"

static int
buf_reserve(struct mhs_buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (b->err != 0)
		return b->err;
	if (b->len + more + 1 <= b->cap)
		return 0;
	while (cap < b->len + more + 1)
		cap *= 2;
	if ((p = realloc(b->data, cap)) == NULL)
		return (b->err = MHS_ENOMEM);
	b->data = p;
	b->cap = cap;
	return 0;
}

void
mhs_buf_reserve(struct mhs_buf *b, size_t more)
{
	(void) buf_reserve(b, more);
}

void
mhs_buf_append(struct mhs_buf *b, const void *data, size_t len)
{
	if (buf_reserve(b, len) != 0)
		return;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void
mhs_buf_puts(struct mhs_buf *b, const char *s)
{
	mhs_buf_append(b, s, strlen(s));
}

void
mhs_buf_printf(struct mhs_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || buf_reserve(b, (size_t) n) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
}

void
mhs_buf_json_str(struct mhs_buf *b, const char *s)
{
	mhs_buf_append(b, "\"", 1);
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char) *s;

		if (c == '"' || c == '\\')
			mhs_buf_printf(b, "\\%c", c);
		else if (c < 0x20)
			mhs_buf_printf(b, "\\u%04x", c);
		else
			mhs_buf_append(b, s, 1);
	}
	mhs_buf_append(b, "\"", 1);
}

void
mhs_buf_reset(struct mhs_buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
mhs_buf_fini(struct mhs_buf *b)
{
	if (b == NULL)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}
