/*
 * Design notes: see breaker.h. Endpoints are few (one per distinct route
 * URL), so a linear table is enough.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "log.h"

struct rt_breaker *
rt_breaker_get(struct rt_breakers *t, const char *url)
{
	struct rt_breaker **g, *v;

	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->v[i]->url, url) == 0)
			return t->v[i];
	if ((g = realloc(t->v, (t->n + 1) * sizeof(*g))) == NULL)
		return NULL;
	t->v = g;
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return NULL;
	t->v[t->n++] = v;
	snprintf(v->url, sizeof(v->url), "%s", url);
	v->cool_ms = t->min_ms;
	return v;
}

bool
rt_breaker_allow(struct rt_breaker *b, int64_t now)
{
	if (b->open_until == 0)
		return true;
	if (now < b->open_until || b->probing)
		return false;
	b->probing = true; /* half-open: this request is the probe */
	return true;
}

static void
breaker_open(struct rt_breakers *t, struct rt_breaker *b, int64_t now)
{
	b->open_until = now + b->cool_ms;
	b->opened++;
	mhs_warn("circuit_open",
	    "%s unreachable: no requests for %lld ms, then one probe", b->url,
	    (long long) b->cool_ms);
	b->cool_ms = b->cool_ms * 2 > t->max_ms ? t->max_ms : b->cool_ms * 2;
}

void
rt_breaker_result(
    struct rt_breakers *t, struct rt_breaker *b, bool reachable, int64_t now)
{
	bool was_open = b->open_until != 0;

	if (reachable) {
		if (was_open)
			mhs_info(
			    "circuit_closed", "%s reachable again", b->url);
		b->failures = 0;
		b->open_until = 0;
		b->probing = false;
		b->cool_ms = t->min_ms;
		return;
	}
	if (b->probing) {
		b->probing = false;
		breaker_open(t, b, now);
		return;
	}
	if (!was_open && ++b->failures >= t->threshold)
		breaker_open(t, b, now);
}

bool
rt_breakers_blocked(const struct rt_breakers *t, int64_t now)
{
	if (t->n == 0)
		return false;
	for (size_t i = 0; i < t->n; i++) {
		const struct rt_breaker *b = t->v[i];
		if (b->open_until == 0 ||
		    (now >= b->open_until && !b->probing))
			return false;
	}
	return true;
}

void
rt_breakers_fini(struct rt_breakers *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i]);
	free(t->v);
	t->v = NULL;
	t->n = 0;
}
