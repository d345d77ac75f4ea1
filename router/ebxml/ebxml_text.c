/*
 * Design notes: what may be written into an ebXML message. XML 1.0 allows
 * no control characters except TAB, LF and CR, and a receiver rejects
 * malformed UTF-8, so both are refused before anything is built rather
 * than sent for Spine to reject. Escaping covers all five XML specials so
 * the same function serves text and attribute values.
 */
#include <string.h>

#include "ebxml_impl.h"

/* Length of the UTF-8 sequence starting at s, or 0 if malformed. */
static size_t
utf8_seq(const unsigned char *s)
{
	size_t n;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || cp == 0xfffe ||
	    cp == 0xffff)
		return 0;
	return n;
}

bool
ebxml_text_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p != '\0') {
		size_t n;

		if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
			return false;
		if (*p == 0x7f || (n = utf8_seq(p)) == 0)
			return false;
		p += n;
	}
	return true;
}

bool
ebxml_token_ok(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char) *s;

		if (c <= 0x20 || c >= 0x7f || strchr("\"'<>\\", c) != NULL)
			return false;
	}
	return true;
}

void
ebxml_esc(struct mhs_buf *b, const char *s)
{
	const char *run = s;

	for (; *s != '\0'; s++) {
		const char *rep;

		switch (*s) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		default:
			continue;
		}
		mhs_buf_append(b, run, (size_t) (s - run));
		mhs_buf_puts(b, rep);
		run = s + 1;
	}
	mhs_buf_append(b, run, (size_t) (s - run));
}

void
ebxml_reason_add(char *reason, size_t cap, const char *s)
{
	size_t len;

	if (reason == NULL || cap == 0)
		return;
	len = strnlen(reason, cap - 1);
	while (s != NULL && *s != '\0') {
		size_t n = utf8_seq((const unsigned char *) s);

		if (n == 0 || (unsigned char) *s < 0x20 || *s == 0x7f) {
			n = 1; /* control or stray byte: a space */
			if (len + 2 > cap)
				break;
			reason[len++] = ' ';
		} else {
			if (len + n + 1 > cap)
				break; /* never cut a UTF-8 sequence */
			memcpy(reason + len, s, n);
			len += n;
		}
		s += n;
	}
	reason[len] = '\0';
}
