/*
 * Design notes: the partner-facing RPC server. nng REP with N contexts,
 * each a small state machine driven by one callback (nng's
 * demo/async/server.c shape):
 *
 *   RECV --local answer--------------------------------> SEND --> RECV
 *   RECV --forward--> STORE_SEND --> STORE_RECV --reply--> SEND --> RECV
 *
 * Each context owns a REQ context on the store socket, so a forwarded call
 * never blocks a thread: the callback only starts the next operation.
 * Every received request gets exactly one reply, whatever happens (bad
 * bytes 3, unknown method 12, store gone 14, deadline 4).
 *
 * Locking: none. A context is touched only by its own callback, which nng
 * never runs twice at once for one aio; shared counters are atomics.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gateway.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "mhs/store/v1/store.pb-c.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "status.h"
#include "util.h"
#include "validate.h"

enum gw_state { GW_RECV, GW_STORE_SEND, GW_STORE_RECV, GW_SEND };

struct gw_ctx {
	struct gw *gw;
	enum gw_state state;
	nng_ctx rep;
	nng_aio *aio;
	nng_ctx req;
	nng_aio *saio;
	int slot; /* metrics slot of the method, 31 = unknown */
	int64_t start_us;
	int64_t deadline_ms; /* monotonic */
	int64_t store_start_us;
	char request_id[80];
};

struct gw_call;
typedef int (*gw_check_fn)(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen);
typedef void (*gw_local_fn)(struct gw_ctx *c, const ProtobufCMessage *in);

/* How the gateway serves one method (the dispatch table's handler). */
struct gw_binding {
	const char *store_method; /* forward here; NULL = answered locally */
	bool public;              /* no credentials needed (health) */
	gw_check_fn check;        /* validation: returns a code, 0 = ok */
	gw_local_fn local;
	bool wrap_submit; /* wrap in AppendRequest for the store */
};

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
gw_metrics_done(struct gw_ctx *c, int code)
{
	struct gw_metrics *m = &c->gw->m;
	uint64_t us = (uint64_t) (now_us() - c->start_us);
	int b = 0;

	if (code < 0 || code >= GW_CODES)
		code = MHS_CODE_UNKNOWN;
	atomic_fetch_add(&m->requests[c->slot][code], 1);
	while (b < 15 && us > (250ull << b))
		b++;
	atomic_fetch_add(&m->latency_us_bucket[b], 1);
	atomic_fetch_add(&m->latency_us_sum, us);
	atomic_fetch_add(&m->latency_count, 1);
}

/* gw_reply_msg sends msg (owned by the context from here) to the partner. */
static void
gw_send(struct gw_ctx *c, nng_msg *msg, int code)
{
	gw_metrics_done(c, code);
	c->state = GW_SEND;
	nng_aio_set_msg(c->aio, msg);
	nng_ctx_send(c->rep, c->aio);
}

static void
gw_reply(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload)
{
	struct mhs_rpc_meta meta[1] = {{"x-request-id", c->request_id}};
	nng_msg *msg;
	int rv;

	rv = mhs_rpc_response_msg(
	    &msg, code, message, payload, meta, c->request_id[0] ? 1 : 0);
	if (rv != 0) {
		/* Out of memory: a bare reply still tells the caller. */
		if (nng_msg_alloc(&msg, 0) != 0) {
			c->state = GW_RECV;
			nng_ctx_recv(c->rep, c->aio);
			return;
		}
		code = MHS_CODE_INTERNAL;
	}
	if (code != 0)
		mhs_log(MHS_LOG_INFO, c->request_id, "request_refused",
		    "code %d (%s): %s", code, mhs_code_name(code),
		    message ? message : "");
	gw_send(c, msg, code);
}

static bool
gw_ready(struct gw *gw)
{
	return atomic_load(&gw->store_ready) && !atomic_load(&gw->draining);
}

/* ---- method checks (validation at the edge, DESIGN §3) ---- */

#define FAIL(code, ...)                                                       \
	do {                                                                  \
		snprintf(why, whylen, __VA_ARGS__);                           \
		return (code);                                                \
	} while (0)

static int
check_submit(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__SubmitRequest *r = (const void *) in;
	size_t klen = strlen(r->idempotency_key);

	if (klen == 0 || klen > 128)
		FAIL(3, "idempotency_key: required, 1 to 128 characters");
	if (!mhs_interaction_shape_check(r->interaction_id) ||
	    mhs_route_find(&c->gw->routes, r->interaction_id) == NULL)
		FAIL(3, "interaction_id: not in the route table");
	if (!mhs_rx_id_check(r->prescription_id))
		FAIL(3,
		    "prescription_id: not a valid short-form prescription "
		    "ID (XXXXXX-XXXXXX-XXXXXC, MOD 37-2 check)");
	if (!mhs_nhs_number_check(r->nhs_number))
		FAIL(3,
		    "nhs_number: not a valid NHS number (10 digits, "
		    "Modulus 11)");
	if (!mhs_ods_check(r->sender_ods))
		FAIL(3, "sender_ods: 1 to 8 of A-Z, a-z, 0-9, '-'");
	if (r->recipient_ods[0] != '\0' && !mhs_ods_check(r->recipient_ods))
		FAIL(3, "recipient_ods: 1 to 8 of A-Z, a-z, 0-9, '-'");
	if (strlen(r->content_type) > 100)
		FAIL(3, "content_type: longer than 100 characters");
	if (r->payload.len == 0)
		FAIL(3, "payload: required");
	if (r->payload.len > (size_t) c->gw->cfg.max_payload_bytes)
		FAIL(3, "payload: %zu bytes, more than the limit of %lld",
		    r->payload.len, c->gw->cfg.max_payload_bytes);
	if (!gw_client_may_send_as(client, r->sender_ods))
		FAIL(7,
		    "sender_ods: this client may not submit for that "
		    "organisation");
	return 0;
}

static int
check_get_status(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__GetStatusRequest *r = (const void *) in;

	if (!mhs_message_id_check(r->message_id))
		FAIL(3, "message_id: expected an upper-case UUID");
	return 0;
}

static int
check_search(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__SearchRequest *r = (const void *) in;

	if (r->prescription_id[0] == '\0' && r->nhs_number[0] == '\0' &&
	    r->sender_ods[0] == '\0')
		FAIL(3,
		    "search: give prescription_id, nhs_number or "
		    "sender_ods");
	if (r->prescription_id[0] != '\0' &&
	    !mhs_rx_id_check(r->prescription_id))
		FAIL(3, "prescription_id: not a valid prescription ID");
	if (r->nhs_number[0] != '\0' && !mhs_nhs_number_check(r->nhs_number))
		FAIL(3, "nhs_number: not a valid NHS number");
	if (r->sender_ods[0] != '\0' && !mhs_ods_check(r->sender_ods))
		FAIL(3, "sender_ods: not a valid ODS code");
	if (r->page_size > 1000)
		FAIL(3, "page_size: at most 1000");
	return 0;
}

#undef FAIL

static void
local_health_check(struct gw_ctx *c, const ProtobufCMessage *in)
{
	const Grpc__Health__V1__HealthCheckRequest *r = (const void *) in;
	Grpc__Health__V1__HealthCheckResponse resp =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

	if (r->service[0] != '\0' &&
	    strcmp(r->service, "mhs.v1.Prescriptions") != 0 &&
	    strcmp(r->service, "mhs.v1.Admin") != 0) {
		gw_reply(c, MHS_CODE_NOT_FOUND, "unknown service", NULL);
		return;
	}
	resp.status = gw_ready(c->gw)
	    ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	gw_reply(c, 0, NULL, &resp.base);
}

static const struct gw_binding bind_submit = {
    "/mhs.store.v1.Store/Append", false, check_submit, NULL, true};
static const struct gw_binding bind_get_status = {
    "/mhs.store.v1.Store/Get", false, check_get_status, NULL, false};
static const struct gw_binding bind_search = {
    "/mhs.store.v1.Store/Search", false, check_search, NULL, false};
static const struct gw_binding bind_dead_letters = {
    "/mhs.store.v1.Store/ListDeadLetters", false, NULL, NULL, false};
static const struct gw_binding bind_redeliver = {
    "/mhs.store.v1.Store/Redeliver", false, NULL, NULL, false};
static const struct gw_binding bind_health = {
    NULL, true, NULL, local_health_check, false};

/* ---- forwarding to mhs-store ---- */

static int
gw_store_payload(const struct gw_binding *b, struct gw_ctx *c,
    const struct gw_client *client, const ProtobufCMessage *in,
    const mhs_rpc_request *req, ProtobufCBinaryData *out)
{
	Mhs__Store__V1__AppendRequest ar =
	    MHS__STORE__V1__APPEND_REQUEST__INIT;

	if (!b->wrap_submit) {
		*out = req->payload; /* forwarded as sent: same message type */
		return 0;
	}
	ar.submit = (Mhs__V1__SubmitRequest *) in;
	ar.client_id = (char *) client->id;
	ar.request_id = c->request_id;
	out->len = protobuf_c_message_get_packed_size(&ar.base);
	if ((out->data = malloc(out->len ? out->len : 1)) == NULL)
		return MHS_ENOMEM;
	protobuf_c_message_pack(&ar.base, out->data);
	return 0;
}

static void
gw_forward(struct gw_ctx *c, const struct gw_binding *b,
    const struct gw_client *client, const ProtobufCMessage *in,
    const mhs_rpc_request *req)
{
	Mhs__Rpc__V1__Request sr = MHS__RPC__V1__REQUEST__INIT;
	int64_t left = c->deadline_ms - mhs_mono_ms();
	nng_msg *msg;
	int rv;

	if (!atomic_load(&c->gw->store_ready)) {
		gw_reply(c, MHS_CODE_UNAVAILABLE,
		    "store not ready; retry with the same idempotency key",
		    NULL);
		return;
	}
	if (left <= 0) {
		gw_reply(
		    c, MHS_CODE_DEADLINE_EXCEEDED, "deadline exceeded", NULL);
		return;
	}
	sr.method = (char *) b->store_method;
	sr.timeout_ms = (uint32_t) left;
	if ((rv = gw_store_payload(b, c, client, in, req, &sr.payload)) != 0 ||
	    (rv = nng_msg_alloc(
	         &msg, protobuf_c_message_get_packed_size(&sr.base))) != 0) {
		if (b->wrap_submit)
			free(sr.payload.data);
		gw_reply(c, MHS_CODE_INTERNAL, "out of memory", NULL);
		return;
	}
	protobuf_c_message_pack(&sr.base, nng_msg_body(msg));
	if (b->wrap_submit)
		free(sr.payload.data);
	c->state = GW_STORE_SEND;
	c->store_start_us = now_us();
	nng_aio_set_timeout(c->saio, (nng_duration) left);
	nng_aio_set_msg(c->saio, msg);
	nng_ctx_send(c->req, c->saio);
}

/* gw_store_failed answers a call the store did not answer. */
static void
gw_store_failed(struct gw_ctx *c, int rv)
{
	if (rv == NNG_ETIMEDOUT && mhs_mono_ms() >= c->deadline_ms) {
		gw_reply(c, MHS_CODE_DEADLINE_EXCEEDED,
		    "deadline exceeded waiting for the store; retry with the "
		    "same idempotency key",
		    NULL);
		return;
	}
	mhs_log(MHS_LOG_WARN, c->request_id, "store_call_failed", "%s",
	    nng_strerror(rv));
	gw_reply(c, MHS_CODE_UNAVAILABLE,
	    "store unavailable; retry with the same idempotency key", NULL);
}

/* gw_store_answered relays the store's reply with the partner's metadata. */
static void
gw_store_answered(struct gw_ctx *c, nng_msg *smsg)
{
	struct mhs_rpc_meta meta[1] = {{"x-request-id", c->request_id}};
	Mhs__Rpc__V1__Response *sr;
	nng_msg *msg;
	int rv, code;

	atomic_fetch_add(&c->gw->m.store_rtt_us_sum,
	    (unsigned long long) (now_us() - c->store_start_us));
	atomic_fetch_add(&c->gw->m.store_calls, 1);
	sr = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(smsg), nng_msg_body(smsg));
	nng_msg_free(smsg);
	if (sr == NULL) {
		gw_reply(
		    c, MHS_CODE_INTERNAL, "undecodable store reply", NULL);
		return;
	}
	sr->n_metadata = 0; /* the store's metadata stays inside the node */
	code = sr->code;
	if (c->request_id[0] != '\0') {
		Mhs__Rpc__V1__Response__MetadataEntry e =
		    MHS__RPC__V1__RESPONSE__METADATA_ENTRY__INIT;
		Mhs__Rpc__V1__Response__MetadataEntry *ep = &e;
		Mhs__Rpc__V1__Response__MetadataEntry **saved = sr->metadata;
		e.key = (char *) meta[0].key;
		e.value = (char *) meta[0].value;
		sr->metadata = &ep;
		sr->n_metadata = 1;
		rv = nng_msg_alloc(
		    &msg, protobuf_c_message_get_packed_size(&sr->base));
		if (rv == 0)
			protobuf_c_message_pack(&sr->base, nng_msg_body(msg));
		sr->metadata = saved;
	} else {
		rv = nng_msg_alloc(
		    &msg, protobuf_c_message_get_packed_size(&sr->base));
		if (rv == 0)
			protobuf_c_message_pack(&sr->base, nng_msg_body(msg));
	}
	sr->n_metadata = 0;
	mhs__rpc__v1__response__free_unpacked(sr, NULL);
	if (rv != 0) {
		gw_reply(c, MHS_CODE_INTERNAL, "out of memory", NULL);
		return;
	}
	gw_send(c, msg, code);
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

static void
gw_deadline(struct gw_ctx *c, const mhs_rpc_request *req)
{
	long long t = req->timeout_ms ? (long long) req->timeout_ms
	                              : c->gw->cfg.default_timeout_ms;

	if (t > c->gw->cfg.max_timeout_ms)
		t = c->gw->cfg.max_timeout_ms;
	c->deadline_ms = mhs_mono_ms() + t;
}

static void
gw_dispatch(struct gw_ctx *c, const mhs_rpc_request *req)
{
	const struct mhs_rpc_method *m;
	const struct gw_binding *b;
	const struct gw_client *client = NULL;
	ProtobufCMessage *in;
	char why[256] = "";
	int code;

	gw_request_id(c, req);
	gw_deadline(c, req);
	m = mhs_rpc_table_find(&c->gw->table, req->method);
	if (m == NULL || m->handler == NULL) {
		gw_reply(c, MHS_CODE_UNIMPLEMENTED, "unknown method", NULL);
		return;
	}
	c->slot = (int) (m - c->gw->table.methods);
	b = m->handler;
	if (!b->public) {
		client = gw_authenticate(
		    c->gw, mhs_rpc_meta_get(req, "authorization"));
		if (client == NULL) {
			gw_reply(c, MHS_CODE_UNAUTHENTICATED,
			    "missing or invalid bearer token", NULL);
			return;
		}
		if (!gw_client_may_call(client, req->method)) {
			gw_reply(c, MHS_CODE_PERMISSION_DENIED,
			    "this client may not call this method", NULL);
			return;
		}
	}
	in = protobuf_c_message_unpack(
	    m->desc->input, NULL, req->payload.len, req->payload.data);
	if (in == NULL) {
		gw_reply(c, MHS_CODE_INVALID_ARGUMENT,
		    "payload is not a valid request message for this method",
		    NULL);
		return;
	}
	if (b->check != NULL &&
	    (code = b->check(c, in, client, why, sizeof(why))) != 0)
		gw_reply(c, code, why, NULL);
	else if (b->local != NULL)
		b->local(c, in);
	else
		gw_forward(c, b, client, in, req);
	protobuf_c_message_free_unpacked(in, NULL);
}

static void
gw_received(struct gw_ctx *c, nng_msg *msg)
{
	mhs_rpc_request *req;

	c->start_us = now_us();
	c->slot = 31;
	c->request_id[0] = '\0';
	atomic_fetch_add(&c->gw->m.in_flight, 1);
	req = mhs_rpc_request_decode(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	if (req == NULL) {
		gw_reply(c, MHS_CODE_INVALID_ARGUMENT,
		    "request is not an mhs.rpc.v1.Request", NULL);
		return;
	}
	gw_dispatch(c, req);
	mhs_rpc_request_free(req);
}

static void
gw_ctx_cb(void *arg)
{
	struct gw_ctx *c = arg;
	int rv;

	switch (c->state) {
	case GW_RECV:
		if ((rv = nng_aio_result(c->aio)) != 0) {
			if (rv == NNG_ECLOSED || atomic_load(&c->gw->draining))
				return;
			nng_ctx_recv(c->rep, c->aio);
			return;
		}
		gw_received(c, nng_aio_get_msg(c->aio));
		return;
	case GW_STORE_SEND:
		if ((rv = nng_aio_result(c->saio)) != 0) {
			nng_msg_free(nng_aio_get_msg(c->saio));
			gw_store_failed(c, rv);
			return;
		}
		c->state = GW_STORE_RECV;
		nng_aio_set_timeout(c->saio,
		    (nng_duration) (c->deadline_ms - mhs_mono_ms() > 0
		            ? c->deadline_ms - mhs_mono_ms()
		            : 1));
		nng_ctx_recv(c->req, c->saio);
		return;
	case GW_STORE_RECV:
		if ((rv = nng_aio_result(c->saio)) != 0) {
			gw_store_failed(c, rv);
			return;
		}
		gw_store_answered(c, nng_aio_get_msg(c->saio));
		return;
	case GW_SEND:
		if (nng_aio_result(c->aio) != 0)
			nng_msg_free(nng_aio_get_msg(c->aio)); /* peer gone */
		atomic_fetch_sub(&c->gw->m.in_flight, 1);
		if (atomic_load(&c->gw->draining))
			return; /* drained: take no new request */
		c->state = GW_RECV;
		nng_ctx_recv(c->rep, c->aio);
		return;
	}
}

/* ---- lifecycle ---- */

static void
gw_saio_cb(void *arg)
{
	gw_ctx_cb(arg);
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
		nng_aio_free(c->aio);
		nng_aio_free(c->saio);
		free(c);
		return rv;
	}
	*cp = c;
	return 0;
}

static int
gw_table_build(struct gw *gw)
{
	static const struct {
		const char *path;
		const struct gw_binding *b;
	} binds[] = {
	    {"/mhs.v1.Prescriptions/Submit", &bind_submit},
	    {"/mhs.v1.Prescriptions/GetStatus", &bind_get_status},
	    {"/mhs.v1.Prescriptions/Search", &bind_search},
	    {"/mhs.v1.Admin/ListDeadLetters", &bind_dead_letters},
	    {"/mhs.v1.Admin/Redeliver", &bind_redeliver},
	    {"/grpc.health.v1.Health/Check", &bind_health},
	};
	int rv;

	if ((rv = mhs_rpc_table_add_service(
	         &gw->table, &mhs__v1__prescriptions__descriptor)) != 0 ||
	    (rv = mhs_rpc_table_add_service(
	         &gw->table, &mhs__v1__admin__descriptor)) != 0 ||
	    (rv = mhs_rpc_table_add_service(
	         &gw->table, &grpc__health__v1__health__descriptor)) != 0)
		return rv;
	for (size_t i = 0; i < sizeof(binds) / sizeof(binds[0]); i++)
		if ((rv = mhs_rpc_table_bind(
		         &gw->table, binds[i].path, binds[i].b)) != 0)
			return rv;
	mhs_rpc_table_seal(&gw->table);
	return gw->table.n < 31 ? 0 : MHS_ETOOBIG;
}

static int
gw_listen_all(struct gw *gw)
{
	char *list = strdup(gw->cfg.listen), *save = NULL, *url;
	int rv = 0;

	if (list == NULL)
		return NNG_ENOMEM;
	for (url = strtok_r(list, ",", &save); url != NULL && rv == 0;
	     url = strtok_r(NULL, ",", &save)) {
		if ((rv = nng_listen(gw->rep, url, NULL, 0)) != 0)
			fprintf(stderr,
			    "mhs-gateway: cannot listen on %s: %s\n", url,
			    nng_strerror(rv));
		else
			mhs_info("listening", "partner RPC on %s", url);
	}
	free(list);
	return rv;
}

int
gw_server_start(struct gw *gw)
{
	int rv;

	if ((rv = gw_table_build(gw)) != 0)
		return rv;
	if ((rv = nng_rep0_open(&gw->rep)) != 0 ||
	    (rv = nng_req0_open(&gw->store)) != 0)
		return mhs_err_nng(rv);
	nng_socket_set_size(
	    gw->rep, NNG_OPT_RECVMAXSZ, (size_t) gw->cfg.max_request_bytes);
	nng_socket_set_ms(
	    gw->store, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(gw->store, NNG_OPT_RECONNMINT, 10);
	nng_socket_set_ms(gw->store, NNG_OPT_RECONNMAXT, 500);
	if ((rv = nng_dial(gw->store, gw->cfg.store_url, NULL,
	         NNG_FLAG_NONBLOCK)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot dial store %s: %s\n",
		    gw->cfg.store_url, nng_strerror(rv));
		return mhs_err_nng(rv);
	}
	gw->n_ctxs = (size_t) gw->cfg.contexts;
	if ((gw->ctxs = calloc(gw->n_ctxs, sizeof(*gw->ctxs))) == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < gw->n_ctxs; i++)
		if ((rv = gw_ctx_alloc(gw, &gw->ctxs[i])) != 0)
			return mhs_err_nng(rv);
	if ((rv = gw_listen_all(gw)) != 0)
		return mhs_err_nng(rv);
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

	atomic_store(&gw->draining, true);
	/* Contexts waiting for a request stop; busy ones finish theirs. */
	for (size_t i = 0; i < gw->n_ctxs; i++)
		if (gw->ctxs[i]->state == GW_RECV)
			nng_aio_cancel(gw->ctxs[i]->aio);
	while (atomic_load(&gw->m.in_flight) > 0 && mhs_mono_ms() < until)
		nng_msleep(10);
	if (atomic_load(&gw->m.in_flight) > 0)
		mhs_warn("drain_timeout", "%u requests still in flight",
		    atomic_load(&gw->m.in_flight));
}

void
gw_server_stop(struct gw *gw)
{
	for (size_t i = 0; i < gw->n_ctxs; i++) {
		if (gw->ctxs[i] == NULL)
			continue;
		nng_aio_stop(gw->ctxs[i]->aio);
		nng_aio_stop(gw->ctxs[i]->saio);
	}
	nng_close(gw->rep);
	nng_close(gw->store);
	for (size_t i = 0; i < gw->n_ctxs; i++) {
		if (gw->ctxs[i] == NULL)
			continue;
		nng_aio_free(gw->ctxs[i]->aio);
		nng_aio_free(gw->ctxs[i]->saio);
		free(gw->ctxs[i]);
	}
	free(gw->ctxs);
	gw->ctxs = NULL;
	mhs_rpc_table_fini(&gw->table);
}

void
gw_metrics_write(void *arg, struct mhs_buf *out)
{
	struct gw *gw = arg;
	struct gw_metrics *m = &gw->m;
	unsigned long long cum = 0;

	mhs_buf_puts(out,
	    "# HELP mhs_gateway_requests_total Requests answered, "
	    "by method and gRPC code.\n"
	    "# TYPE mhs_gateway_requests_total counter\n");
	for (size_t s = 0; s < 32; s++) {
		const char *name =
		    s < gw->table.n ? gw->table.methods[s].path : "unknown";
		if (s >= gw->table.n && s != 31)
			continue;
		for (int code = 0; code < GW_CODES; code++) {
			unsigned long long v =
			    atomic_load(&m->requests[s][code]);
			if (v != 0)
				mhs_buf_printf(out,
				    "mhs_gateway_requests_total{method=\"%s\","
				    "code=\"%s\"} %llu\n",
				    name, mhs_code_name(code), v);
		}
	}
	mhs_buf_puts(out,
	    "# HELP mhs_gateway_request_seconds Time from "
	    "request to reply.\n"
	    "# TYPE mhs_gateway_request_seconds histogram\n");
	for (int b = 0; b < 16; b++) {
		cum += atomic_load(&m->latency_us_bucket[b]);
		if (b < 15)
			mhs_buf_printf(out,
			    "mhs_gateway_request_seconds_bucket{le=\"%g\"} "
			    "%llu\n",
			    (250.0 * (1 << b)) / 1e6, cum);
	}
	mhs_buf_printf(out,
	    "mhs_gateway_request_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "mhs_gateway_request_seconds_sum %g\n"
	    "mhs_gateway_request_seconds_count %llu\n",
	    cum, atomic_load(&m->latency_us_sum) / 1e6,
	    atomic_load(&m->latency_count));
	mhs_buf_printf(out,
	    "# HELP mhs_gateway_in_flight Requests being served.\n"
	    "# TYPE mhs_gateway_in_flight gauge\n"
	    "mhs_gateway_in_flight %u\n"
	    "# HELP mhs_gateway_store_seconds Store round trips.\n"
	    "# TYPE mhs_gateway_store_seconds summary\n"
	    "mhs_gateway_store_seconds_sum %g\n"
	    "mhs_gateway_store_seconds_count %llu\n"
	    "# HELP mhs_gateway_ready 1 while a Submit can be made durable.\n"
	    "# TYPE mhs_gateway_ready gauge\n"
	    "mhs_gateway_ready %d\n",
	    atomic_load(&m->in_flight),
	    atomic_load(&m->store_rtt_us_sum) / 1e6,
	    atomic_load(&m->store_calls), gw_ready(gw) ? 1 : 0);
}
