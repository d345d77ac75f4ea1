/*
 * Design notes: just enough MIME for ebXML (RFC 2045/2046/2387). Works on
 * the caller's bytes in place: parts point into the body, nothing is
 * allocated. Accepts what senders in the field emit: CRLF or bare LF line
 * ends, transport padding after a delimiter, folded header lines, quoted
 * or bare parameter values. A body without its closing delimiter is
 * refused: a truncated request must not pass as a shorter one.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

#define BOUNDARY_MAX 70 /* RFC 2046 §5.1.1 */

static const char *
skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

bool
ebxml_mime_type_is(const char *ct, const char *type)
{
	size_t n = strlen(type);

	if (ct == NULL)
		return false;
	ct = skip_ws(ct);
	if (strncasecmp(ct, type, n) != 0)
		return false;
	ct = skip_ws(ct + n);
	return *ct == '\0' || *ct == ';';
}

/* Reads one value (quoted-string or bare) at p into out; returns the end. */
static const char *
param_value(const char *p, char *out, size_t cap, int *rv)
{
	size_t n = 0;

	*rv = 0;
	if (*p == '"') {
		for (p++; *p != '\0' && *p != '"'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (n + 1 < cap)
				out[n++] = *p;
			else
				*rv = MHS_ETOOBIG;
		}
		if (*p == '"')
			p++;
	} else {
		const char *start = p, *end;

		while (*p != '\0' && *p != ';')
			p++;
		for (end = p; end > start && isspace((unsigned char) end[-1]);)
			end--;
		n = (size_t) (end - start);
		if (n + 1 > cap) {
			n = cap - 1;
			*rv = MHS_ETOOBIG;
		}
		memcpy(out, start, n);
	}
	out[n] = '\0';
	return p;
}

int
ebxml_mime_param(const char *ct, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);
	const char *p;

	if (ct == NULL || cap == 0 || (p = strchr(ct, ';')) == NULL)
		return MHS_ENOTFOUND;
	while (*p == ';') {
		const char *key = skip_ws(p + 1), *eq = key;
		int rv;

		while (*eq != '\0' && *eq != '=' && *eq != ';')
			eq++;
		if (*eq != '=') {
			p = eq;
			continue;
		}
		p = param_value(skip_ws(eq + 1), out, cap, &rv);
		while (eq > key && isspace((unsigned char) eq[-1]))
			eq--;
		if ((size_t) (eq - key) == nlen &&
		    strncasecmp(key, name, nlen) == 0)
			return rv;
		while (*p != '\0' && *p != ';')
			p++;
	}
	return MHS_ENOTFOUND;
}

void
ebxml_id_strip(const char *in, size_t len, char *out, size_t cap)
{
	while (len > 0 && isspace((unsigned char) *in))
		in++, len--;
	while (len > 0 && isspace((unsigned char) in[len - 1]))
		len--;
	if (len >= 2 && in[0] == '"' && in[len - 1] == '"')
		in++, len -= 2;
	if (len >= 2 && in[0] == '<' && in[len - 1] == '>')
		in++, len -= 2;
	if (len + 1 > cap)
		len = cap - 1;
	memmove(out, in, len); /* in and out may be the same buffer */
	out[len] = '\0';
}

/*
 * A delimiter at body[at] ("--boundary") counts only when it starts a line
 * and is followed by "--" (close) or padding and the end of the line.
 * Returns the offset after the line (or after "--"), or 0 if not one.
 */
static size_t
delim_end(const char *body, size_t len, size_t at, size_t dlen, bool *close)
{
	size_t p = at + dlen;

	if (at > 0 && body[at - 1] != '\n')
		return 0;
	if (p + 2 <= len && body[p] == '-' && body[p + 1] == '-') {
		*close = true;
		return p + 2;
	}
	while (p < len && (body[p] == ' ' || body[p] == '\t'))
		p++;
	if (p < len && body[p] == '\r')
		p++;
	if (p < len && body[p] == '\n') {
		*close = false;
		return p + 1;
	}
	return 0;
}

/* Next delimiter at or after from: its offset, or len if none. */
static size_t
delim_find(const char *body, size_t len, size_t from, const char *delim,
    size_t dlen, size_t *after, bool *close)
{
	while (from + dlen <= len) {
		const char *hit = memmem(body + from, len - from, delim, dlen);
		size_t at;

		if (hit == NULL)
			break;
		at = (size_t) (hit - body);
		if ((*after = delim_end(body, len, at, dlen, close)) != 0)
			return at;
		from = at + 1;
	}
	return len;
}

/* Value of header name in a part's header block, unfolded, or ENOTFOUND. */
static int
part_header(
    const char *h, size_t hlen, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name), i = 0;

	while (i < hlen) {
		const char *line = h + i, *eol = memchr(line, '\n', hlen - i);
		size_t llen = eol ? (size_t) (eol - line) : hlen - i;
		size_t vlen;

		i += llen + 1;
		if (llen <= nlen || line[nlen] != ':' ||
		    strncasecmp(line, name, nlen) != 0)
			continue;
		/* The value runs on over folded lines (leading SP/HT). */
		while (i < hlen && (h[i] == ' ' || h[i] == '\t')) {
			eol = memchr(h + i, '\n', hlen - i);
			i = eol ? (size_t) (eol - h) + 1 : hlen;
		}
		vlen = (i > hlen ? hlen : i) - (size_t) (line + nlen + 1 - h);
		ebxml_id_strip(line + nlen + 1, vlen, out, cap);
		return 0;
	}
	return MHS_ENOTFOUND;
}

/* Splits one part's bytes into headers and content. */
static int
part_fill(const char *p, size_t len, struct ebxml_part *part)
{
	size_t i = 0;

	/* Headers end at the first empty line (CRLF or LF). */
	while (i < len && p[i] != '\n' &&
	    !(p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')) {
		const char *eol = memchr(p + i, '\n', len - i);

		if (eol == NULL)
			return MHS_EINVAL;
		i = (size_t) (eol - p) + 1;
	}
	if (i >= len)
		return MHS_EINVAL;
	part->data = p + i + (p[i] == '\r' ? 2 : 1);
	part->len = len - (size_t) (part->data - p);
	part->content_id[0] = '\0';
	(void) part_header(
	    p, i, "Content-Id", part->content_id, sizeof(part->content_id));
	return 0;
}

int
ebxml_mime_split(const char *boundary, const char *body, size_t len,
    struct ebxml_part *parts, size_t max, size_t *nparts)
{
	char delim[BOUNDARY_MAX + 3];
	size_t dlen, at, after, n = 0;
	bool close = false;
	int rv;

	*nparts = 0;
	if ((dlen = strlen(boundary)) == 0 || dlen > BOUNDARY_MAX)
		return MHS_EINVAL;
	dlen = (size_t) snprintf(delim, sizeof(delim), "--%s", boundary);
	at = delim_find(body, len, 0, delim, dlen, &after, &close);
	while (at < len && !close) {
		size_t start = after, end;

		at = delim_find(body, len, start, delim, dlen, &after, &close);
		if (at >= len)
			return MHS_EINVAL; /* no closing delimiter */
		if (n == max)
			return MHS_ETOOBIG;
		end = at - 1; /* the LF that starts the delimiter line */
		if (end > start && body[end - 1] == '\r')
			end--;
		if ((rv = part_fill(body + start, end - start, &parts[n])) !=
		    0)
			return rv;
		n++;
	}
	if (n == 0)
		return MHS_EINVAL;
	*nparts = n;
	return 0;
}
