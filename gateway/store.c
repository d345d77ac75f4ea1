/*
 * Design notes: the gateway's two conversations with mhs-store, both over
 * one nng REQ socket (ipc) and never blocking:
 *
 * 1. Forwarding (gw_forward and the STORE_SEND/STORE_RECV states of a
 *    request context): refused with 14 while the store is not ready, 4
 *    when the deadline has already passed, 8 (retry-after-ms) when
 *    --max-in-flight calls already wait on the store. The store call's
 *    aio times out at the caller's deadline; a store that answers after
 *    it is answered 4 as well (a Submit may then be durable: the caller
 *    retries with the same idempotency key and gets duplicate = true).
 * 2. Readiness: a poller (a REQ context and a timer) asks
 *    /mhs.store.v1.Store/Ready every --store-check-interval-ms; no answer
 *    within --store-check-timeout-ms, or ready = false, makes the gateway
 *    not ready (/readyz 503, Health NOT_SERVING, requests 14).
 *    The timer has an aio of its own: in nng 1.5.2, nng_sleep_aio leaves
 *    a flag on its aio (a_expire_ok) that nothing clears, so a later
 *    operation on that aio that times out completes with result 0 and no
 *    message. Never reuse a sleep aio for I/O.
 *
 * The store's reply metadata stays inside the node: only x-request-id is
 * added before the reply is relayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gateway.h"
#include "log.h"
#include "mhs/store/v1/store.pb-c.h"
#include "status.h"
#include "util.h"

/* gw_left_ms: whole milliseconds to the deadline, rounded up, so that a
 * store call's timeout never fires before the deadline itself. */
static int64_t
gw_left_ms(const struct gw_ctx *c)
{
	int64_t us = c->deadline_us - gw_now_us();

	return us > 0 ? (us + 999) / 1000 : 0;
}

static int
gw_store_msg(nng_msg **mp, const char *method,
    const ProtobufCBinaryData *payload, int64_t left_ms)
{
	Mhs__Rpc__V1__Request sr = MHS__RPC__V1__REQUEST__INIT;
	int rv;

	sr.method = (char *) method;
	sr.payload = *payload;
	sr.timeout_ms = (uint32_t) left_ms;
	if ((rv = nng_msg_alloc(
	         mp, protobuf_c_message_get_packed_size(&sr.base))) != 0)
		return rv;
	protobuf_c_message_pack(&sr.base, nng_msg_body(*mp));
	return 0;
}

bool
gw_forward_admit(struct gw_ctx *c)
{
	int64_t left = gw_left_ms(c), wait_ms;

	if (!atomic_load(&c->gw->store_ready)) {
		gw_refuse(c, MHS_CODE_UNAVAILABLE, GW_R_UNAVAILABLE, 0,
		    "store not ready; retry with the same idempotency key");
		return false;
	}
	if (left <= 0) {
		gw_refuse(c, MHS_CODE_DEADLINE_EXCEEDED, GW_R_DEADLINE, 0,
		    "deadline exceeded before the store was asked");
		return false;
	}
	if ((wait_ms = gw_in_flight_take(c->gw)) > 0) {
		gw_refuse(c, MHS_CODE_RESOURCE_EXHAUSTED, GW_R_IN_FLIGHT,
		    wait_ms,
		    "overloaded: too many requests in flight; retry after "
		    "retry-after-ms");
		return false;
	}
	c->store_start_us = gw_now_us();
	return true;
}

void
gw_forward_send(struct gw_ctx *c, const char *store_method,
    const ProtobufCBinaryData *payload)
{
	int64_t left = gw_left_ms(c);
	nng_msg *msg;

	if (left <= 0) {
		gw_store_failed(c, NNG_ETIMEDOUT);
		return;
	}
	if (gw_store_msg(&msg, store_method, payload, left) != 0) {
		gw_in_flight_give(c->gw, 0);
		gw_reply(c, MHS_CODE_INTERNAL, "out of memory", NULL);
		return;
	}
	c->state = GW_STORE_SEND;
	nng_aio_set_timeout(c->saio, (nng_duration) left);
	nng_aio_set_msg(c->saio, msg);
	nng_ctx_send(c->req, c->saio);
}

void
gw_forward(struct gw_ctx *c, const char *store_method,
    const ProtobufCBinaryData *payload)
{
	if (gw_forward_admit(c))
		gw_forward_send(c, store_method, payload);
}

void
gw_store_sent(struct gw_ctx *c)
{
	int64_t left = gw_left_ms(c);

	c->state = GW_STORE_RECV;
	nng_aio_set_timeout(c->saio, (nng_duration) (left > 0 ? left : 1));
	nng_ctx_recv(c->req, c->saio);
}

static int64_t
gw_store_done(struct gw_ctx *c)
{
	int64_t rtt = gw_now_us() - c->store_start_us;

	gw_in_flight_give(c->gw, rtt);
	return rtt;
}

void
gw_store_failed(struct gw_ctx *c, int rv)
{
	gw_store_done(c);
	if (rv == NNG_ETIMEDOUT) { /* the aio's timeout is the deadline */
		gw_refuse(c, MHS_CODE_DEADLINE_EXCEEDED, GW_R_DEADLINE, 0,
		    "deadline exceeded waiting for the store; retry with the "
		    "same idempotency key");
		return;
	}
	mhs_log(MHS_LOG_WARN, c->request_id, "store_call_failed", "%s",
	    nng_strerror(rv));
	gw_refuse(c, MHS_CODE_UNAVAILABLE, GW_R_UNAVAILABLE, 0,
	    "store unavailable; retry with the same idempotency key");
}

/* gw_relay_msg re-encodes the store's reply with only x-request-id. */
static int
gw_relay_msg(struct gw_ctx *c, Mhs__Rpc__V1__Response *sr, nng_msg **mp)
{
	Mhs__Rpc__V1__Response__MetadataEntry e =
	    MHS__RPC__V1__RESPONSE__METADATA_ENTRY__INIT;
	Mhs__Rpc__V1__Response__MetadataEntry *ep = &e;
	Mhs__Rpc__V1__Response__MetadataEntry **saved = sr->metadata;
	size_t n_saved = sr->n_metadata;
	unsigned n_unknown = sr->base.n_unknown_fields;
	int rv;

	e.key = "x-request-id";
	e.value = c->request_id;
	sr->metadata = &ep;
	sr->n_metadata = c->request_id[0] != '\0' ? 1 : 0;
	sr->base.n_unknown_fields = 0;
	rv = nng_msg_alloc(mp, protobuf_c_message_get_packed_size(&sr->base));
	if (rv == 0)
		protobuf_c_message_pack(&sr->base, nng_msg_body(*mp));
	sr->metadata = saved;
	sr->n_metadata = n_saved;
	sr->base.n_unknown_fields = n_unknown;
	return rv;
}

/*
 * Reads are scoped to the caller's organisations: a client that may send
 * only as some ODS codes (a pharmacy) sees only messages sent by them, so
 * one partner's token never reveals another's patients. GetStatus of
 * another organisation's message answers 5 (as if unknown: its existence
 * is not disclosed); Search drops other organisations' messages from the
 * page. Clients with "*" (operators, the demo admin) see everything.
 */
static bool
scope_status(const struct gw_client *cl, ProtobufCBinaryData *payload)
{
	Mhs__V1__MessageStatus *m =
	    mhs__v1__message_status__unpack(NULL, payload->len, payload->data);
	bool ok = m != NULL && gw_client_may_send_as(cl, m->sender_ods);

	if (m != NULL)
		mhs__v1__message_status__free_unpacked(m, NULL);
	return ok;
}

static bool
scope_search(const struct gw_client *cl, ProtobufCBinaryData *payload)
{
	Mhs__V1__SearchResponse *r = mhs__v1__search_response__unpack(
	    NULL, payload->len, payload->data);
	size_t kept = 0, len;
	uint8_t *buf;

	if (r == NULL)
		return false;
	for (size_t i = 0; i < r->n_messages; i++) {
		if (gw_client_may_send_as(cl, r->messages[i]->sender_ods))
			r->messages[kept++] = r->messages[i];
		else
			mhs__v1__message_status__free_unpacked(
			    r->messages[i], NULL);
	}
	r->n_messages = kept;
	len = mhs__v1__search_response__get_packed_size(r);
	if ((buf = malloc(len ? len : 1)) == NULL) {
		mhs__v1__search_response__free_unpacked(r, NULL);
		return false;
	}
	mhs__v1__search_response__pack(r, buf);
	mhs__v1__search_response__free_unpacked(r, NULL);
	free(payload->data); /* the store reply's own copy */
	payload->data = buf;
	payload->len = len;
	return true;
}

static bool
gw_scope_reply(struct gw_ctx *c, Mhs__Rpc__V1__Response *sr)
{
	const ProtobufCMessageDescriptor *in;

	if (c->client == NULL || c->method == NULL ||
	    gw_client_all_ods(c->client))
		return true;
	in = c->method->desc->input;
	if (in == &mhs__v1__get_status_request__descriptor)
		return scope_status(c->client, &sr->payload);
	if (in == &mhs__v1__search_request__descriptor)
		return scope_search(c->client, &sr->payload);
	return true;
}

/* gw_store_back settles a store call that was answered; false (and the
 * request answered 4) when the answer came after the deadline. */
static bool
gw_store_back(struct gw_ctx *c)
{
	gw_hist_observe(&c->gw->m.store_rtt, (uint64_t) gw_store_done(c));
	if (gw_now_us() <= c->deadline_us)
		return true;
	gw_refuse(c, MHS_CODE_DEADLINE_EXCEEDED, GW_R_DEADLINE, 0,
	    "the store answered after the deadline; retry with the same "
	    "idempotency key");
	return false;
}

void
gw_store_result(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload)
{
	if (!gw_store_back(c))
		return;
	gw_reply(c, code,
	    message != NULL && message[0] != '\0' ? message : NULL, payload);
}

void
gw_store_answered(struct gw_ctx *c, nng_msg *smsg)
{
	Mhs__Rpc__V1__Response *sr;
	nng_msg *msg;
	int rv;

	if (!gw_store_back(c)) {
		nng_msg_free(smsg);
		return;
	}
	sr = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(smsg), nng_msg_body(smsg));
	nng_msg_free(smsg);
	if (sr == NULL) {
		gw_reply(
		    c, MHS_CODE_INTERNAL, "undecodable store reply", NULL);
		return;
	}
	if (sr->code == 0 && !gw_scope_reply(c, sr)) {
		mhs__rpc__v1__response__free_unpacked(sr, NULL);
		gw_reply(c, MHS_CODE_NOT_FOUND, "no such message", NULL);
		return;
	}
	rv = gw_relay_msg(c, sr, &msg);
	if (rv == 0)
		gw_send(c, msg, sr->code);
	else
		gw_reply(c, MHS_CODE_INTERNAL, "out of memory", NULL);
	mhs__rpc__v1__response__free_unpacked(sr, NULL);
}

/* ---- readiness poller ---- */

enum { GW_READY_SLEEP, GW_READY_SEND, GW_READY_RECV };

bool
gw_ready(struct gw *gw)
{
	return atomic_load(&gw->store_ready) && !atomic_load(&gw->draining);
}

/* gw_ready_set records the store's readiness; why names a failure. */
static void
gw_ready_set(struct gw *gw, bool ready, const char *why)
{
	if (atomic_exchange(&gw->store_ready, ready) == ready)
		return;
	if (ready)
		mhs_info("store_readiness", "store ready");
	else
		mhs_warn("store_readiness", "store not ready: %s", why);
}

static void
gw_ready_sleep(struct gw *gw)
{
	gw->ready.state = GW_READY_SLEEP;
	nng_sleep_aio(
	    (nng_duration) gw->cfg.store_check_interval_ms, gw->ready.timer);
}

static void
gw_ready_ask(struct gw *gw)
{
	Mhs__Store__V1__ReadyRequest rq = MHS__STORE__V1__READY_REQUEST__INIT;
	nng_msg *msg;

	if (mhs_rpc_request_msg(&msg, "/mhs.store.v1.Store/Ready", &rq.base,
	        NULL, 0, (uint32_t) gw->cfg.store_check_timeout_ms) != 0) {
		gw_ready_sleep(gw);
		return;
	}
	gw->ready.state = GW_READY_SEND;
	nng_aio_set_timeout(
	    gw->ready.aio, (nng_duration) gw->cfg.store_check_timeout_ms);
	nng_aio_set_msg(gw->ready.aio, msg);
	nng_ctx_send(gw->ready.ctx, gw->ready.aio);
}

/* gw_ready_answer reads the store's answer (consumes msg). */
static bool
gw_ready_answer(nng_msg *msg)
{
	Mhs__Rpc__V1__Response *r = NULL;
	Mhs__Store__V1__ReadyResponse *rr = NULL;
	bool ready = false;

	if (msg == NULL)
		return false;
	r = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (r != NULL && r->code == 0)
		rr = mhs__store__v1__ready_response__unpack(
		    NULL, r->payload.len, r->payload.data);
	if (rr != NULL)
		ready = rr->ready;
	mhs__store__v1__ready_response__free_unpacked(rr, NULL);
	mhs__rpc__v1__response__free_unpacked(r, NULL);
	return ready;
}

static void
gw_ready_cb(void *arg)
{
	struct gw *gw = arg;
	int rv = nng_aio_result(gw->ready.aio);

	if (atomic_load(&gw->closing)) {
		if (rv != 0 && gw->ready.state == GW_READY_SEND)
			nng_msg_free(nng_aio_get_msg(gw->ready.aio));
		return;
	}
	switch (gw->ready.state) {
	case GW_READY_SEND:
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(gw->ready.aio));
			break;
		}
		gw->ready.state = GW_READY_RECV;
		nng_ctx_recv(gw->ready.ctx, gw->ready.aio);
		return;
	case GW_READY_RECV:
		if (rv == 0) {
			gw_ready_set(gw,
			    gw_ready_answer(nng_aio_get_msg(gw->ready.aio)),
			    "it answers not ready");
			gw_ready_sleep(gw);
			return;
		}
		break;
	default: /* the timer has its own aio */
		return;
	}
	gw_ready_set(gw, false, nng_strerror(rv));
	gw_ready_sleep(gw);
}

static void
gw_ready_timer_cb(void *arg)
{
	struct gw *gw = arg;

	if (atomic_load(&gw->closing))
		return;
	mhs_redial_check(&gw->store_dial); /* spfix.h */
	gw_ready_ask(gw);
}

int
gw_ready_start(struct gw *gw)
{
	int rv;

	if ((rv = nng_aio_alloc(&gw->ready.timer, gw_ready_timer_cb, gw)) !=
	        0 ||
	    (rv = nng_aio_alloc(&gw->ready.aio, gw_ready_cb, gw)) != 0 ||
	    (rv = nng_ctx_open(&gw->ready.ctx, gw->store)) != 0)
		return mhs_err_nng(rv);
	gw_ready_ask(gw);
	return 0;
}

void
gw_ready_stop(struct gw *gw)
{
	/* closing is set: neither callback starts anything new. */
	if (gw->ready.timer != NULL)
		nng_aio_stop(gw->ready.timer);
	if (gw->ready.aio != NULL)
		nng_aio_stop(gw->ready.aio);
	nng_aio_free(gw->ready.timer);
	nng_aio_free(gw->ready.aio);
	gw->ready.timer = NULL;
	gw->ready.aio = NULL;
}
