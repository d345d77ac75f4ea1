/*
 * Design notes: a circuit breaker per Spine endpoint, so that a Spine that
 * is down is not hammered (DESIGN §5). Closed: requests flow. After
 * `threshold` consecutive attempts that did not reach Spine (transport
 * errors, replies without ebXML) it opens for a cool-down that doubles on
 * every failed probe (bounded); when the cool-down ends, one probe request
 * is let through (half-open): its success closes the breaker, its failure
 * reopens it. A reply from Spine, even a fault, counts as reachable.
 *
 * Owner: the engine thread; no locking.
 */
#ifndef MHS_ROUTER_BREAKER_H
#define MHS_ROUTER_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rt_breaker {
	char url[512];
	int failures;       /* consecutive, while closed */
	int64_t open_until; /* 0: closed */
	int64_t cool_ms;
	bool probing; /* half-open probe in flight */
	uint64_t opened;
};

struct rt_breakers {
	/* Each breaker is its own allocation: transfers in flight keep a
	 * pointer to theirs while new endpoints are added. */
	struct rt_breaker **v;
	size_t n;
	int threshold;
	int64_t min_ms, max_ms;
};

/* rt_breaker_get finds or adds the breaker of url (NULL: no memory). */
struct rt_breaker *rt_breaker_get(struct rt_breakers *t, const char *url);
/* rt_breaker_allow: may a request go now? (takes the half-open probe) */
bool rt_breaker_allow(struct rt_breaker *b, int64_t now);
/* rt_breaker_result records whether an attempt reached Spine. */
void rt_breaker_result(
    struct rt_breakers *t, struct rt_breaker *b, bool reachable, int64_t now);
/* rt_breakers_blocked: is every known endpoint refusing requests now? */
bool rt_breakers_blocked(const struct rt_breakers *t, int64_t now);
void rt_breakers_fini(struct rt_breakers *t);

#endif /* MHS_ROUTER_BREAKER_H */
