/*
 * Design notes: the /_sim/config document. No JSON library is in the
 * stack, and the document is one flat object, so this is a small strict
 * reader: an object of known keys whose values are integers (no fraction
 * or exponent, at most 9 digits), true/false, or strings without escapes.
 * Anything else (unknown keys, wrong types, trailing bytes, nesting, a
 * body over SIM_CONFIG_MAX) is refused with a message naming the problem,
 * and a refused document changes nothing.
 */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "sim.h"

static const char *const fault_names[] = {"retriable", "permanent", "drop"};
static const char *const outcome_names[] = {
    "ack", "retriable", "permanent", "drop"};

const char *
sim_fault_name(enum sim_fault f)
{
	return (unsigned) f < 3 ? fault_names[f] : "?";
}

const char *
sim_outcome_name(enum sim_outcome o)
{
	return (unsigned) o < 4 ? outcome_names[o] : "?";
}

int
sim_fault_parse(const char *name, enum sim_fault *f)
{
	for (int i = 0; i < 3; i++)
		if (strcmp(name, fault_names[i]) == 0) {
			*f = (enum sim_fault) i;
			return 0;
		}
	return MHS_EINVAL;
}

struct rd {
	const char *start, *p, *end;
	char *err;
	size_t errlen;
};

static int
rd_fail(struct rd *r, const char *what)
{
	snprintf(r->err, r->errlen, "%s at byte %zu", what,
	    (size_t) (r->p - r->start));
	return MHS_EINVAL;
}

static void
rd_ws(struct rd *r)
{
	while (r->p < r->end && strchr(" \t\r\n", *r->p) != NULL && *r->p)
		r->p++;
}

static bool
rd_char(struct rd *r, char c)
{
	rd_ws(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return true;
	}
	return false;
}

static int
rd_string(struct rd *r, char *out, size_t cap)
{
	size_t n = 0;

	if (!rd_char(r, '"'))
		return rd_fail(r, "expected a string");
	for (; r->p < r->end && *r->p != '"'; r->p++) {
		if (*r->p == '\\' || (unsigned char) *r->p < 0x20)
			return rd_fail(r,
			    "escapes and control characters "
			    "are not supported");
		if (n + 1 >= cap)
			return rd_fail(r, "string too long");
		out[n++] = *r->p;
	}
	out[n] = '\0';
	if (r->p == r->end)
		return rd_fail(r, "unterminated string");
	r->p++;
	return 0;
}

static int
rd_int(struct rd *r, int *out)
{
	long v = 0;
	int digits = 0;
	bool neg;

	rd_ws(r);
	if ((neg = r->p < r->end && *r->p == '-'))
		r->p++;
	for (; r->p < r->end && *r->p >= '0' && *r->p <= '9'; r->p++) {
		if (++digits > 9)
			return rd_fail(r, "integer too large");
		v = v * 10 + (*r->p - '0');
	}
	if (digits == 0 ||
	    (r->p < r->end && strchr(".eE", *r->p) != NULL && *r->p))
		return rd_fail(r, "expected an integer");
	*out = (int) (neg ? -v : v);
	return 0;
}

static int
rd_bool(struct rd *r, bool *out)
{
	rd_ws(r);
	if ((size_t) (r->end - r->p) >= 4 && strncmp(r->p, "true", 4) == 0) {
		r->p += 4;
		*out = true;
		return 0;
	}
	if ((size_t) (r->end - r->p) >= 5 && strncmp(r->p, "false", 5) == 0) {
		r->p += 5;
		*out = false;
		return 0;
	}
	return rd_fail(r, "expected true or false");
}

static int
rd_member(struct rd *r, struct sim_config *c)
{
	char key[32], val[32];
	int rv;

	if ((rv = rd_string(r, key, sizeof(key))) != 0)
		return rv;
	if (!rd_char(r, ':'))
		return rd_fail(r, "expected ':'");
	if (strcmp(key, "fail_rate") == 0)
		return rd_int(r, &c->fail_rate);
	if (strcmp(key, "latency_ms") == 0)
		return rd_int(r, &c->latency_ms);
	if (strcmp(key, "error_status") == 0)
		return rd_int(r, &c->error_status);
	if (strcmp(key, "down") == 0)
		return rd_bool(r, &c->down);
	if (strcmp(key, "fault") != 0) {
		snprintf(r->err, r->errlen, "unknown key \"%s\"", key);
		return MHS_EINVAL;
	}
	if ((rv = rd_string(r, val, sizeof(val))) != 0)
		return rv;
	if (sim_fault_parse(val, &c->fault) != 0) {
		snprintf(r->err, r->errlen,
		    "fault must be retriable, permanent or drop");
		return MHS_EINVAL;
	}
	return 0;
}

static int
rd_object(struct rd *r, struct sim_config *c)
{
	int rv;

	if (!rd_char(r, '{'))
		return rd_fail(r, "expected a JSON object");
	if (!rd_char(r, '}')) {
		do {
			if ((rv = rd_member(r, c)) != 0)
				return rv;
		} while (rd_char(r, ','));
		if (!rd_char(r, '}'))
			return rd_fail(r, "expected ',' or '}'");
	}
	rd_ws(r);
	if (r->p != r->end)
		return rd_fail(r, "trailing data");
	return 0;
}

int
sim_config_check(const struct sim_config *c, char *err, size_t errlen)
{
	if (c->fail_rate < 0 || c->fail_rate > 100)
		snprintf(err, errlen, "fail_rate must be 0 to 100");
	else if (c->latency_ms < 0 || c->latency_ms > SIM_LATENCY_MAX)
		snprintf(err, errlen, "latency_ms must be 0 to %d",
		    SIM_LATENCY_MAX);
	else if (c->error_status != 500 && c->error_status != 200)
		snprintf(err, errlen, "error_status must be 500 or 200");
	else
		return 0;
	return MHS_EINVAL;
}

int
sim_config_patch(struct sim_config *cfg, const char *json, size_t len,
    char *err, size_t errlen)
{
	struct sim_config c = *cfg;
	char buf[SIM_CONFIG_MAX + 1];
	struct rd r;
	int rv;

	if (len > SIM_CONFIG_MAX) {
		snprintf(err, errlen, "config document over %d bytes",
		    SIM_CONFIG_MAX);
		return MHS_EINVAL;
	}
	if (len > 0) /* a NUL-terminated copy: no read past the end */
		memcpy(buf, json, len);
	buf[len] = '\0';
	if (strlen(buf) != len) {
		snprintf(err, errlen, "NUL byte in config document");
		return MHS_EINVAL;
	}
	r = (struct rd) {buf, buf, buf + len, err, errlen};
	if ((rv = rd_object(&r, &c)) != 0 ||
	    (rv = sim_config_check(&c, err, errlen)) != 0)
		return rv;
	*cfg = c;
	return 0;
}

void
sim_config_json(const struct sim_config *c, struct mhs_buf *out)
{
	mhs_buf_printf(out,
	    "{\"fail_rate\":%d,\"fault\":\"%s\",\"latency_ms\":%d,"
	    "\"down\":%s,\"error_status\":%d}\n",
	    c->fail_rate, sim_fault_name(c->fault), c->latency_ms,
	    c->down ? "true" : "false", c->error_status);
}
