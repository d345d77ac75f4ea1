/*
 * Design notes: the gateway's Prometheus metrics (/metrics). Counters are
 * atomics bumped on nng's callback threads (relaxed: each is independent)
 * and read by nng's HTTP thread; a scrape may see one counter a request
 * ahead of another, never a torn value.
 *
 *   mhs_gateway_requests_total{method,code}   every reply
 *   mhs_gateway_rejects_total{reason}         refusals (see gw_reason)
 *   mhs_gateway_request_seconds               histogram, receipt to reply
 *   mhs_gateway_store_seconds                 histogram, store round trip
 *   mhs_gateway_in_flight                     received, not yet answered
 *   mhs_gateway_store_in_flight               waiting on the store
 *   mhs_gateway_ready, mhs_gateway_draining   0 or 1
 */
#include <stdio.h>

#include "gateway.h"
#include "status.h"

static const char *const gw_reason_names[GW_R_COUNT] = {
    [GW_R_NONE] = "none",
    [GW_R_RATE] = "rate",
    [GW_R_IN_FLIGHT] = "in_flight",
    [GW_R_AUTH] = "auth",
    [GW_R_PERMISSION] = "permission",
    [GW_R_VALIDATION] = "validation",
    [GW_R_OVERSIZE] = "oversize",
    [GW_R_DEADLINE] = "deadline",
    [GW_R_UNAVAILABLE] = "unavailable",
    [GW_R_DRAINING] = "draining",
    [GW_R_UNKNOWN_METHOD] = "unknown_method",
};

void
gw_hist_observe(struct gw_hist *h, uint64_t us)
{
	int b = 0;

	while (b < GW_BUCKETS - 1 && us > (250ull << b))
		b++;
	atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

static void
gw_hist_write(
    struct mhs_buf *out, const char *name, const char *help, struct gw_hist *h)
{
	unsigned long long cum = 0;

	mhs_buf_printf(
	    out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int b = 0; b < GW_BUCKETS - 1; b++) {
		cum += atomic_load(&h->bucket[b]);
		mhs_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name,
		    (250.0 * (1 << b)) / 1e6, cum);
	}
	cum += atomic_load(&h->bucket[GW_BUCKETS - 1]);
	mhs_buf_printf(out,
	    "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
	    cum, name, atomic_load(&h->sum_us) / 1e6, name,
	    atomic_load(&h->count));
}

static void
gw_requests_write(struct gw *gw, struct mhs_buf *out)
{
	mhs_buf_puts(out,
	    "# HELP mhs_gateway_requests_total Requests answered, "
	    "by method and gRPC code.\n"
	    "# TYPE mhs_gateway_requests_total counter\n");
	for (size_t s = 0; s < GW_SLOTS; s++) {
		const char *name =
		    s < gw->table.n ? gw->table.methods[s].path : "unknown";
		if (s >= gw->table.n && s != GW_SLOTS - 1)
			continue;
		for (int code = 0; code < GW_CODES; code++) {
			unsigned long long v =
			    atomic_load(&gw->m.requests[s][code]);
			if (v != 0)
				mhs_buf_printf(out,
				    "mhs_gateway_requests_total{method=\"%s\","
				    "code=\"%s\"} %llu\n",
				    name, mhs_code_name(code), v);
		}
	}
}

static void
gw_rejects_write(struct gw *gw, struct mhs_buf *out)
{
	mhs_buf_puts(out,
	    "# HELP mhs_gateway_rejects_total Requests refused, by reason.\n"
	    "# TYPE mhs_gateway_rejects_total counter\n");
	for (int r = GW_R_NONE + 1; r < GW_R_COUNT; r++)
		mhs_buf_printf(out,
		    "mhs_gateway_rejects_total{reason=\"%s\"} %llu\n",
		    gw_reason_names[r], atomic_load(&gw->m.rejects[r]));
}

void
gw_metrics_write(void *arg, struct mhs_buf *out)
{
	struct gw *gw = arg;

	gw_requests_write(gw, out);
	gw_rejects_write(gw, out);
	gw_hist_write(out, "mhs_gateway_request_seconds",
	    "Time from request to reply.", &gw->m.latency);
	gw_hist_write(out, "mhs_gateway_store_seconds",
	    "Store round trips of forwarded requests.", &gw->m.store_rtt);
	mhs_buf_printf(out,
	    "# HELP mhs_gateway_in_flight Requests received, not yet "
	    "answered.\n"
	    "# TYPE mhs_gateway_in_flight gauge\n"
	    "mhs_gateway_in_flight %u\n"
	    "# HELP mhs_gateway_store_in_flight Requests waiting on the store "
	    "(capped by --max-in-flight).\n"
	    "# TYPE mhs_gateway_store_in_flight gauge\n"
	    "mhs_gateway_store_in_flight %u\n"
	    "# HELP mhs_gateway_store_batches_total AppendMany calls made.\n"
	    "# TYPE mhs_gateway_store_batches_total counter\n"
	    "mhs_gateway_store_batches_total %llu\n"
	    "# HELP mhs_gateway_store_batched_total Submits sent in them.\n"
	    "# TYPE mhs_gateway_store_batched_total counter\n"
	    "mhs_gateway_store_batched_total %llu\n"
	    "# HELP mhs_gateway_ready 1 while a Submit can be made durable.\n"
	    "# TYPE mhs_gateway_ready gauge\n"
	    "mhs_gateway_ready %d\n"
	    "# HELP mhs_gateway_draining 1 after SIGTERM.\n"
	    "# TYPE mhs_gateway_draining gauge\n"
	    "mhs_gateway_draining %d\n",
	    atomic_load(&gw->m.in_flight), atomic_load(&gw->m.store_in_flight),
	    atomic_load(&gw->m.store_batches),
	    atomic_load(&gw->m.store_batched), gw_ready(gw) ? 1 : 0,
	    atomic_load(&gw->draining) ? 1 : 0);
}
