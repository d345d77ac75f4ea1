/*
 * Design notes: the partner-facing RPC server. nng REP with N contexts,
 * each a small state machine driven by callbacks (nng's
 * demo/async/server.c shape):
 *
 *   RECV --local answer--------------------------------> SEND --> RECV
 *   RECV --forward--> STORE_SEND --> STORE_RECV --reply--> SEND --> RECV
 *   RECV --Submit---> STORE_BATCH (batch.c: one AppendMany) -> SEND -> RECV
 *
 * Each context owns a REQ context on the store socket, so a forwarded call
 * never blocks a thread: the callback only starts the next operation.
 * Every received request gets exactly one reply, whatever happens.
 *
 * The order of checks for one request (cheapest refusals first; each
 * refusal is one reply and one count in the rejects metric):
 *   1. size on the wire        > --max-request-bytes      3 (oversize)
 *   2. envelope decode         not an mhs.rpc.v1.Request  3 (validation)
 *   3. method                  not in the table           12
 *   4. transport               tls+tcp without a verified
 *                              client certificate         16 (auth)
 *   then, except for Health (public: answers NOT_SERVING while draining):
 *   5. draining                after SIGTERM              14 (draining)
 *   6. token, method allowed                              16, 7
 *   7. client's rate           token bucket empty         8 + retry-after-ms
 *   8. payload (methods.c)     size, decode, fields       3, 7
 *   9. forward (store.c)       store not ready 14, deadline passed 4,
 *                              in-flight cap 8 + retry-after-ms
 * Requests larger than --max-request-bytes + --oversize-grace-bytes are
 * refused by nng itself (NNG_OPT_RECVMAXSZ): it closes the connection
 * without a reply, since it never reads such a message.
 *
 * Shutdown: drain sets `draining` (readiness 503, new requests 14) and
 * waits for in_flight to reach 0; stop sets `closing`, after which no
 * callback starts another operation, then closes the sockets and stops
 * every aio before freeing it.
 *
 * Locking: only the batcher's queue (batch.c). A context is touched only
 * by its own callbacks, which never run at once (the partner aio and the
 * store aio are never busy together), or, while it waits in STORE_BATCH,
 * by the one batch call that carries it; shared counters are atomics.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gateway.h"
#include "log.h"
#include "status.h"
#include "util.h"

/* After the last reply leaves a context, nng may still be writing it to
 * the connection (REP completes a send when the pipe takes it); closing
 * the socket at once could cut it off. */
#define GW_FLUSH_MS 100

int64_t
gw_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- replies ---- */

static void
gw_count(struct gw_ctx *c, int code)
{
	struct gw_metrics *m = &c->gw->m;
	uint64_t us = (uint64_t) (gw_now_us() - c->start_us);

	if (code < 0 || code >= GW_CODES)
		code = MHS_CODE_UNKNOWN;
	atomic_fetch_add_explicit(
	    &m->requests[c->slot][code], 1, memory_order_relaxed);
	gw_hist_observe(&m->latency, us);
	mhs_log(MHS_LOG_DEBUG, c->request_id, "request_done",
	    "%s code %d in %llu us",
	    (size_t) c->slot < c->gw->table.n
	        ? c->gw->table.methods[c->slot].path
	        : "unknown",
	    code, (unsigned long long) us);
}

void
gw_send(struct gw_ctx *c, nng_msg *msg, int code)
{
	gw_count(c, code);
	c->state = GW_SEND;
	nng_aio_set_msg(c->aio, msg);
	nng_ctx_send(c->rep, c->aio);
}

static void
gw_reply_meta(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload, int64_t retry_ms)
{
	char retry[24];
	struct mhs_rpc_meta meta[2];
	size_t n = 0;
	nng_msg *msg = NULL;

	if (c->request_id[0] != '\0')
		meta[n++] =
		    (struct mhs_rpc_meta) {"x-request-id", c->request_id};
	if (retry_ms > 0) {
		snprintf(retry, sizeof(retry), "%lld", (long long) retry_ms);
		meta[n++] = (struct mhs_rpc_meta) {"retry-after-ms", retry};
	}
	if (mhs_rpc_response_msg(&msg, code, message, payload, meta, n) != 0) {
		/* Out of memory: a bare Response{code: 13} (field 1, varint)
		 * still tells the caller; an empty one would read as OK. */
		static const uint8_t internal[2] = {0x08, MHS_CODE_INTERNAL};

		if (nng_msg_alloc(&msg, 0) != 0 ||
		    nng_msg_append(msg, internal, sizeof(internal)) != 0) {
			if (msg != NULL)
				nng_msg_free(msg);
			atomic_fetch_sub(&c->gw->m.in_flight, 1);
			c->state = GW_RECV;
			nng_ctx_recv(c->rep, c->aio);
			return;
		}
		code = MHS_CODE_INTERNAL;
	}
	gw_send(c, msg, code);
}

void
gw_reply(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload)
{
	gw_reply_meta(c, code, message, payload, 0);
}

void
gw_refuse(struct gw_ctx *c, int code, enum gw_reason reason, int64_t retry_ms,
    const char *message)
{
	/* Overload refusals come in floods: a log line each would add to
	 * the load; the rejects metric counts them. */
	bool flood = reason == GW_R_RATE || reason == GW_R_IN_FLIGHT ||
	    reason == GW_R_DRAINING;

	atomic_fetch_add_explicit(
	    &c->gw->m.rejects[reason], 1, memory_order_relaxed);
	mhs_log(flood ? MHS_LOG_DEBUG : MHS_LOG_INFO, c->request_id,
	    "request_refused", "code %d (%s): %s", code, mhs_code_name(code),
	    message);
	gw_reply_meta(c, code, message, NULL, retry_ms);
}

/* ---- one request ---- */

static void
gw_request_id(struct gw_ctx *c, const mhs_rpc_request *req)
{
	const char *rid = mhs_rpc_meta_get(req, "x-request-id");

	if (rid != NULL && rid[0] != '\0' &&
	    strlen(rid) < sizeof(c->request_id))
		snprintf(c->request_id, sizeof(c->request_id), "%s", rid);
	else if (mhs_uuid_upper(c->request_id) != 0)
		c->request_id[0] = '\0';
}

/* The deadline counts from receipt: timeout_ms, or the default when the
 * caller gives none, never more than --max-timeout-ms. */
static void
gw_deadline(struct gw_ctx *c, const mhs_rpc_request *req)
{
	long long t = req->timeout_ms ? (long long) req->timeout_ms
	                              : c->gw->cfg.default_timeout_ms;

	if (t > c->gw->cfg.max_timeout_ms)
		t = c->gw->cfg.max_timeout_ms;
	c->deadline_us = c->start_us + t * 1000;
}

/* gw_admit: credentials, permission and rate; true to go on. */
static bool
gw_admit(struct gw_ctx *c, const mhs_rpc_request *req,
    const struct gw_client **clientp)
{
	const struct gw_client *client;
	int64_t wait_ms;

	client =
	    gw_authenticate(c->gw, mhs_rpc_meta_get(req, "authorization"));
	if (client == NULL) {
		gw_refuse(c, MHS_CODE_UNAUTHENTICATED, GW_R_AUTH, 0,
		    "missing or invalid bearer token");
		return false;
	}
	if (!gw_client_may_call(client, req->method)) {
		gw_refuse(c, MHS_CODE_PERMISSION_DENIED, GW_R_PERMISSION, 0,
		    "this client may not call this method");
		return false;
	}
	if ((wait_ms = gw_rate_take(c->gw, client)) > 0) {
		gw_refuse(c, MHS_CODE_RESOURCE_EXHAUSTED, GW_R_RATE, wait_ms,
		    "rate limit: too many requests from this client; retry "
		    "after retry-after-ms");
		return false;
	}
	*clientp = client;
	return true;
}

static void
gw_dispatch(struct gw_ctx *c, const mhs_rpc_request *req)
{
	const struct mhs_rpc_method *m;
	const struct gw_client *client = NULL;

	gw_request_id(c, req);
	gw_deadline(c, req);
	m = mhs_rpc_table_find(&c->gw->table, req->method);
	if (m == NULL || m->handler == NULL) {
		gw_refuse(c, MHS_CODE_UNIMPLEMENTED, GW_R_UNKNOWN_METHOD, 0,
		    "unknown method");
		return;
	}
	c->slot = (int) (m - c->gw->table.methods);
	if (!c->transport_ok) {
		gw_refuse(c, MHS_CODE_UNAUTHENTICATED, GW_R_AUTH, 0,
		    "this listener requires a client certificate issued by "
		    "the partners' CA");
		return;
	}
	if (!gw_method_public(m)) {
		if (atomic_load(&c->gw->draining)) {
			gw_refuse(c, MHS_CODE_UNAVAILABLE, GW_R_DRAINING, 0,
			    "gateway shutting down; retry on another "
			    "gateway");
			return;
		}
		if (!gw_admit(c, req, &client))
			return;
	}
	c->client = client;
	c->method = m;
	gw_method_run(c, m, client, req);
}

static void
gw_received(struct gw_ctx *c, nng_msg *msg)
{
	struct gw *gw = c->gw;
	mhs_rpc_request *req;
	size_t len = nng_msg_len(msg);
	char why[128];

	c->start_us = gw_now_us();
	c->slot = GW_SLOTS - 1;
	c->request_id[0] = '\0';
	atomic_fetch_add(&gw->m.in_flight, 1);
	if (len > (size_t) gw->cfg.max_request_bytes) {
		nng_msg_free(msg);
		snprintf(why, sizeof(why),
		    "request: %zu bytes, more than the limit of %lld", len,
		    gw->cfg.max_request_bytes);
		gw_refuse(c, MHS_CODE_INVALID_ARGUMENT, GW_R_OVERSIZE, 0, why);
		return;
	}
	c->transport_ok = gw_transport_ok(gw, nng_msg_get_pipe(msg));
	req = mhs_rpc_request_decode(nng_msg_body(msg), len);
	nng_msg_free(msg);
	if (req == NULL) {
		gw_refuse(c, MHS_CODE_INVALID_ARGUMENT, GW_R_VALIDATION, 0,
		    "request is not an mhs.rpc.v1.Request");
		return;
	}
	gw_dispatch(c, req);
	mhs_rpc_request_free(req);
}

/* ---- the state machine ---- */

static void
gw_recv_done(struct gw_ctx *c)
{
	int rv = nng_aio_result(c->aio);

	if (rv == 0) {
		gw_received(c, nng_aio_get_msg(c->aio));
		return;
	}
	if (rv == NNG_ECLOSED || atomic_load(&c->gw->closing))
		return;
	nng_ctx_recv(c->rep, c->aio); /* a failed receive: try again */
}

static void
gw_send_done(struct gw_ctx *c)
{
	if (nng_aio_result(c->aio) != 0)
		nng_msg_free(nng_aio_get_msg(c->aio)); /* peer gone */
	atomic_fetch_sub(&c->gw->m.in_flight, 1);
	if (atomic_load(&c->gw->closing))
		return;
	c->state = GW_RECV;
	nng_ctx_recv(c->rep, c->aio);
}

static void
gw_ctx_cb(void *arg)
{
	struct gw_ctx *c = arg;

	switch (c->state) {
	case GW_RECV:
		gw_recv_done(c);
		return;
	case GW_SEND:
		gw_send_done(c);
		return;
	default:
		return; /* the store aio drives the other states */
	}
}

static void
gw_saio_cb(void *arg)
{
	struct gw_ctx *c = arg;
	int rv = nng_aio_result(c->saio);

	if (rv != 0) {
		if (c->state == GW_STORE_SEND)
			nng_msg_free(nng_aio_get_msg(c->saio));
		gw_store_failed(c, rv);
	} else if (c->state == GW_STORE_SEND) {
		gw_store_sent(c);
	} else {
		gw_store_answered(c, nng_aio_get_msg(c->saio));
	}
}

/* ---- lifecycle ---- */

static void
gw_ctx_free(struct gw_ctx *c)
{
	if (c == NULL)
		return;
	nng_aio_free(c->aio);
	nng_aio_free(c->saio);
	free(c);
}

static int
gw_ctx_alloc(struct gw *gw, struct gw_ctx **cp)
{
	struct gw_ctx *c;
	int rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NNG_ENOMEM;
	c->gw = gw;
	if ((rv = nng_aio_alloc(&c->aio, gw_ctx_cb, c)) != 0 ||
	    (rv = nng_aio_alloc(&c->saio, gw_saio_cb, c)) != 0 ||
	    (rv = nng_ctx_open(&c->rep, gw->rep)) != 0 ||
	    (rv = nng_ctx_open(&c->req, gw->store)) != 0) {
		gw_ctx_free(c);
		return rv;
	}
	*cp = c;
	return 0;
}

static int
gw_sockets_open(struct gw *gw)
{
	int rv;

	if ((rv = nng_rep0_open(&gw->rep)) != 0 ||
	    (rv = nng_req0_open(&gw->store)) != 0)
		return mhs_err_nng(rv);
	/* Read a little past the limit so that an oversize request still
	 * gets its reply (3); beyond this nng drops the connection. */
	nng_socket_set_size(gw->rep, NNG_OPT_RECVMAXSZ,
	    (size_t) (gw->cfg.max_request_bytes +
	        gw->cfg.oversize_grace_bytes));
	nng_socket_set_ms(
	    gw->store, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(gw->store, NNG_OPT_RECONNMINT, 10);
	nng_socket_set_ms(gw->store, NNG_OPT_RECONNMAXT, 500);
	if ((rv = mhs_redial_start(
	         &gw->store_dial, gw->store, gw->cfg.store_url)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot dial store %s: %s\n",
		    gw->cfg.store_url, mhs_strerror(rv));
		return rv;
	}
	return 0;
}

int
gw_server_start(struct gw *gw)
{
	int rv;

	if ((rv = gw_table_build(gw)) != 0 || (rv = gw_limits_init(gw)) != 0 ||
	    (rv = gw_sockets_open(gw)) != 0)
		return rv;
	gw->n_ctxs = (size_t) gw->cfg.contexts;
	if ((gw->ctxs = calloc(gw->n_ctxs, sizeof(*gw->ctxs))) == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < gw->n_ctxs; i++)
		if ((rv = gw_ctx_alloc(gw, &gw->ctxs[i])) != 0)
			return mhs_err_nng(rv);
	if ((rv = gw_batch_start(gw)) != 0 || (rv = gw_ready_start(gw)) != 0 ||
	    (rv = gw_listen_all(gw)) != 0)
		return rv;
	for (size_t i = 0; i < gw->n_ctxs; i++) {
		gw->ctxs[i]->state = GW_RECV;
		nng_ctx_recv(gw->ctxs[i]->rep, gw->ctxs[i]->aio);
	}
	return 0;
}

void
gw_server_drain(struct gw *gw, int timeout_ms)
{
	int64_t until = mhs_mono_ms() + timeout_ms;
	unsigned left;

	atomic_store(&gw->draining, true);
	while ((left = atomic_load(&gw->m.in_flight)) > 0 &&
	    mhs_mono_ms() < until)
		nng_msleep(10);
	if (left > 0)
		mhs_warn("drain_timeout", "%u requests still in flight", left);
	else
		nng_msleep(GW_FLUSH_MS);
}

void
gw_server_stop(struct gw *gw)
{
	atomic_store(&gw->closing, true);
	gw_ready_stop(gw);
	gw_listen_stop(gw);
	nng_close(gw->rep);
	nng_close(gw->store);
	mhs_redial_fini(&gw->store_dial);
	gw_batch_halt(gw); /* its calls touch request contexts */
	for (size_t i = 0; gw->ctxs != NULL && i < gw->n_ctxs; i++) {
		if (gw->ctxs[i] == NULL)
			continue;
		/* The store aio's callback may still send a reply. */
		nng_aio_stop(gw->ctxs[i]->saio);
		nng_aio_stop(gw->ctxs[i]->aio);
	}
	gw_batch_free(gw);
	for (size_t i = 0; gw->ctxs != NULL && i < gw->n_ctxs; i++)
		gw_ctx_free(gw->ctxs[i]);
	free(gw->ctxs);
	gw->ctxs = NULL;
	gw_listen_fini(gw);
	gw_limits_fini(gw);
	mhs_rpc_table_fini(&gw->table);
}
