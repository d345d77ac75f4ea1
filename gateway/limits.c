/*
 * Design notes: overload protection, answering 8 (RESOURCE_EXHAUSTED) with
 * a retry-after-ms hint instead of queueing.
 *
 * Per-client rate (--rate-per-client R per second, --burst B): a token
 * bucket of B tokens refilled at R a second, kept as GCRA (the generic
 * cell rate algorithm), which needs one number per client: the
 * theoretical arrival time `tat` of the next request. A request at `now`
 * is admitted when max(tat, now) + T - now <= B*T (T = 1/R), and then
 * tat becomes max(tat, now) + T; otherwise the caller may retry after
 * the excess. That is exactly a bucket of B tokens, and it updates with
 * one compare-and-swap: no lock, no refill timer. R = 0 turns it off.
 *
 * Global in-flight cap (--max-in-flight N): calls waiting on the store.
 * One atomic counter, taken before a call is forwarded and given back
 * when it ends. The retry hint is the store's recent round trip (an
 * exponentially weighted average, written racily: a lost update only
 * blurs a hint).
 */
#include <stdlib.h>

#include "error.h"
#include "gateway.h"

#define NS_PER_S 1000000000LL

int
gw_limits_init(struct gw *gw)
{
	if (gw->n_clients == 0)
		return 0;
	gw->rate_tat = calloc(gw->n_clients, sizeof(*gw->rate_tat));
	return gw->rate_tat != NULL ? 0 : MHS_ENOMEM;
}

void
gw_limits_fini(struct gw *gw)
{
	free(gw->rate_tat);
	gw->rate_tat = NULL;
}

static int64_t
ceil_ms(int64_t ns)
{
	return (ns + 999999) / 1000000;
}

int64_t
gw_rate_take(struct gw *gw, const struct gw_client *client)
{
	_Atomic int64_t *tatp;
	int64_t t, tau, now, tat, next;

	if (gw->cfg.rate_per_client == 0)
		return 0;
	tatp = &gw->rate_tat[client->index];
	t = NS_PER_S / gw->cfg.rate_per_client;
	tau = t * gw->cfg.burst;
	now = gw_now_us() * 1000;
	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	do {
		next = (tat > now ? tat : now) + t;
		if (next - now > tau)
			return ceil_ms(next - now - tau);
	} while (!atomic_compare_exchange_weak_explicit(
	    tatp, &tat, next, memory_order_relaxed, memory_order_relaxed));
	return 0;
}

int64_t
gw_in_flight_take(struct gw *gw)
{
	unsigned max = (unsigned) gw->cfg.max_in_flight;
	int64_t hint;

	if (atomic_fetch_add(&gw->m.store_in_flight, 1) < max)
		return 0;
	atomic_fetch_sub(&gw->m.store_in_flight, 1);
	hint = (int64_t) (atomic_load_explicit(
	                      &gw->m.store_rtt_ewma_us, memory_order_relaxed) /
	    1000);
	return hint < 1 ? 1 : hint > 1000 ? 1000 : hint;
}

void
gw_in_flight_give(struct gw *gw, int64_t rtt_us)
{
	unsigned long long avg;

	atomic_fetch_sub(&gw->m.store_in_flight, 1);
	if (rtt_us <= 0)
		return;
	avg = atomic_load_explicit(
	    &gw->m.store_rtt_ewma_us, memory_order_relaxed);
	avg = avg == 0 ? (unsigned long long) rtt_us
	               : (avg * 7 + (unsigned long long) rtt_us) / 8;
	atomic_store_explicit(
	    &gw->m.store_rtt_ewma_us, avg, memory_order_relaxed);
}
