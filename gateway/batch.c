/*
 * Design notes: Submits go to the store in batches (AppendMany), so that
 * one ipc round trip, and one wake-up of the store's contexts, carries
 * many of them when the gateway is busy:
 *
 *   - up to --store-batch-calls AppendMany calls are in flight at once,
 *     each on a REQ context of its own;
 *   - a Submit that finds a call free goes at once, alone: at low load
 *     nothing waits for a batch to fill;
 *   - one that finds them all busy is queued; a call whose answer comes
 *     back takes what is queued (up to GW_BATCH_MAX) and goes again.
 *
 * Each Submit keeps its own deadline, and nothing may wait past it: a
 * call's timeout is the earliest deadline among its Submits, and a call
 * takes only Submits whose deadlines lie within GW_BATCH_SPREAD_US of the
 * first one's (the others wait for the next call), so a Submit is told 4
 * at most that much before its own deadline, and only if the store has
 * not answered by the earliest one. The store answers each Submit exactly
 * as Append would; the gateway relays each result to its own caller.
 *
 * A store that does not know AppendMany (answers 12: an older store during
 * a rolling restart) turns batching off: that call's Submits, and all
 * later ones, go one Append each on their own contexts.
 *
 * Locking: gw->batch.lock guards the queue and which calls are busy. A
 * queued or batched request context is touched only by the call that
 * carries it (its own aios are idle meanwhile), as in store.c.
 */
#include <nng/nng.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gateway.h"
#include "log.h"
#include "mhs/store/v1/store.pb-c.h"
#include "status.h"

#define GW_BATCH_MAX       256
#define GW_BATCH_SPREAD_US 20000

static const char GW_APPEND[] = "/mhs.store.v1.Store/Append";
static const char GW_APPEND_MANY[] = "/mhs.store.v1.Store/AppendMany";

struct gw_call {
	struct gw *gw;
	nng_ctx req;
	nng_aio *aio;
	bool busy, sending;
	int64_t first_us; /* the earliest deadline among members */
	size_t n;
	struct gw_ctx *members[GW_BATCH_MAX];
};

/* call_take moves queued requests into call (lock held); false when
 * nothing is queued. */
static bool
call_take(struct gw_batcher *b, struct gw_call *call)
{
	struct gw_ctx **pp = &b->head, *first = b->head;

	call->n = 0;
	if (first == NULL)
		return false;
	while (*pp != NULL && call->n < GW_BATCH_MAX) {
		struct gw_ctx *c = *pp;
		int64_t d = c->deadline_us - first->deadline_us;

		if (d > GW_BATCH_SPREAD_US || d < -GW_BATCH_SPREAD_US) {
			pp = &c->bnext;
			continue;
		}
		*pp = c->bnext;
		c->bnext = NULL;
		call->members[call->n++] = c;
	}
	b->tail = &b->head;
	while (*b->tail != NULL)
		b->tail = &(*b->tail)->bnext;
	return true;
}

/* member_free_item drops a member's encoded AppendRequest. */
static void
member_free_item(struct gw_ctx *c)
{
	free(c->bitem.data);
	c->bitem.data = NULL;
	c->bitem.len = 0;
}

/* call_encode packs the members' AppendRequests as an AppendManyRequest
 * (field 1, length-delimited, once per member) inside the envelope. */
static int
call_encode(struct gw_call *call, int64_t left_ms, nng_msg **mp)
{
	Mhs__Rpc__V1__Request sr = MHS__RPC__V1__REQUEST__INIT;
	size_t len = 0, off = 0;
	uint8_t *buf;
	int rv;

	for (size_t i = 0; i < call->n; i++)
		len += 1 + 10 + call->members[i]->bitem.len;
	if ((buf = malloc(len ? len : 1)) == NULL)
		return NNG_ENOMEM;
	for (size_t i = 0; i < call->n; i++) {
		const ProtobufCBinaryData *it = &call->members[i]->bitem;
		uint64_t v = it->len;

		buf[off++] = 0x0a; /* field 1, wire type 2 */
		do {
			buf[off++] =
			    (uint8_t) ((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
			v >>= 7;
		} while (v != 0);
		memcpy(buf + off, it->data, it->len);
		off += it->len;
	}
	sr.method = (char *) GW_APPEND_MANY;
	sr.payload.data = buf;
	sr.payload.len = off;
	sr.timeout_ms = (uint32_t) left_ms;
	if ((rv = nng_msg_alloc(
	         mp, protobuf_c_message_get_packed_size(&sr.base))) == 0)
		protobuf_c_message_pack(&sr.base, nng_msg_body(*mp));
	free(buf);
	return rv;
}

/* call_fail answers every member of call with the failure rv. */
static void
call_fail(struct gw_call *call, int rv)
{
	for (size_t i = 0; i < call->n; i++) {
		member_free_item(call->members[i]);
		gw_store_failed(call->members[i], rv);
	}
	call->n = 0;
}

/* call_singly sends each member as its own Append (batching is off). */
static void
call_singly(struct gw_call *call)
{
	for (size_t i = 0; i < call->n; i++) {
		struct gw_ctx *c = call->members[i];

		gw_forward_send(c, GW_APPEND, &c->bitem);
		member_free_item(c);
	}
	call->n = 0;
}

/* call_send sends call's members; false when nothing went out (each
 * member was answered here), so the call is free to take more. */
static bool
call_send(struct gw_call *call)
{
	int64_t now = gw_now_us(), first = INT64_MAX, left_ms;
	size_t kept = 0;
	nng_msg *msg;
	int rv;

	if (atomic_load(&call->gw->batch.off)) {
		call_singly(call);
		return false;
	}
	/* A member already past its deadline is answered now. */
	for (size_t i = 0; i < call->n; i++) {
		struct gw_ctx *c = call->members[i];

		if (c->deadline_us <= now) {
			member_free_item(c);
			gw_store_failed(c, NNG_ETIMEDOUT);
			continue;
		}
		if (c->deadline_us < first)
			first = c->deadline_us;
		call->members[kept++] = c;
	}
	call->n = kept;
	if (kept == 0)
		return false;
	left_ms = (first - now + 999) / 1000;
	if ((rv = call_encode(call, left_ms, &msg)) != 0) {
		call_fail(call, rv);
		return false;
	}
	atomic_fetch_add(&call->gw->m.store_batches, 1);
	atomic_fetch_add(&call->gw->m.store_batched, kept);
	call->sending = true;
	call->first_us = first;
	nng_aio_set_timeout(call->aio, (nng_duration) left_ms);
	nng_aio_set_msg(call->aio, msg);
	nng_ctx_send(call->req, call->aio);
	return true;
}

/* call_run sends what call holds, then whatever is queued, until
 * something is in flight or nothing is left (the call is then free). */
static void
call_run(struct gw_call *call)
{
	struct gw_batcher *b = &call->gw->batch;
	bool more;

	while (!call_send(call)) {
		pthread_mutex_lock(&b->lock);
		more = !atomic_load(&call->gw->closing) && call_take(b, call);
		call->busy = more;
		pthread_mutex_unlock(&b->lock);
		if (!more)
			return;
	}
}

/* call_answer relays each member's result (consumes msg). */
static void
call_answer(struct gw_call *call, nng_msg *msg)
{
	Mhs__Rpc__V1__Response *sr = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	Mhs__Store__V1__AppendManyResponse *r = NULL;

	nng_msg_free(msg);
	if (sr != NULL && sr->code == MHS_CODE_UNIMPLEMENTED) {
		if (!atomic_exchange(&call->gw->batch.off, true))
			mhs_warn("store_batch_off",
			    "the store does not know AppendMany (an older "
			    "store?): Submits go one Append each");
		mhs__rpc__v1__response__free_unpacked(sr, NULL);
		call_singly(call);
		return;
	}
	if (sr != NULL && sr->code == 0)
		r = mhs__store__v1__append_many_response__unpack(
		    NULL, sr->payload.len, sr->payload.data);
	for (size_t i = 0; i < call->n; i++) {
		struct gw_ctx *c = call->members[i];
		const Mhs__Store__V1__AppendResult *res =
		    r != NULL && i < r->n_results ? r->results[i] : NULL;

		member_free_item(c);
		if (sr == NULL)
			gw_store_result(c, MHS_CODE_INTERNAL,
			    "undecodable store reply", NULL);
		else if (sr->code != 0)
			gw_store_result(c, sr->code, sr->message, NULL);
		else if (res == NULL)
			gw_store_result(c, MHS_CODE_INTERNAL,
			    "the store's reply lacks this Submit's result",
			    NULL);
		else
			gw_store_result(c, res->code, res->message,
			    res->code == 0 && res->response != NULL
			        ? &res->response->base
			        : NULL);
	}
	call->n = 0;
	mhs__store__v1__append_many_response__free_unpacked(r, NULL);
	mhs__rpc__v1__response__free_unpacked(sr, NULL);
}

/* call_next takes what is queued and sends it, or frees the call. */
static void
call_next(struct gw_call *call)
{
	struct gw_batcher *b = &call->gw->batch;
	bool more;

	pthread_mutex_lock(&b->lock);
	more = !atomic_load(&call->gw->closing) && call_take(b, call);
	call->busy = more;
	pthread_mutex_unlock(&b->lock);
	if (more)
		call_run(call);
}

static void
call_cb(void *arg)
{
	struct gw_call *call = arg;
	int rv = nng_aio_result(call->aio);

	if (call->sending) {
		call->sending = false;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(call->aio));
		} else {
			int64_t left = call->first_us - gw_now_us();

			nng_aio_set_timeout(call->aio,
			    (nng_duration) (left > 0 ? (left + 999) / 1000
			                             : 1));
			nng_ctx_recv(call->req, call->aio);
			return;
		}
	}
	if (atomic_load(&call->gw->closing)) {
		if (rv == 0)
			nng_msg_free(nng_aio_get_msg(call->aio));
		for (size_t i = 0; i < call->n; i++)
			member_free_item(call->members[i]);
		call->n = 0;
		return;
	}
	if (rv != 0)
		call_fail(call, rv);
	else
		call_answer(call, nng_aio_get_msg(call->aio));
	call_next(call);
}

void
gw_batch_forward(struct gw_ctx *c, ProtobufCBinaryData *item)
{
	struct gw_batcher *b = &c->gw->batch;
	struct gw_call *call = NULL;
	bool took = false;

	c->bitem = *item; /* ours now */
	item->data = NULL;
	c->state = GW_STORE_BATCH;
	pthread_mutex_lock(&b->lock);
	c->bnext = NULL;
	*b->tail = c;
	b->tail = &c->bnext;
	for (size_t i = 0; i < b->n_calls; i++)
		if (!b->calls[i]->busy) {
			call = b->calls[i];
			took = call->busy = call_take(b, call);
			break;
		}
	pthread_mutex_unlock(&b->lock);
	if (took) /* the call is ours until it is free again */
		call_run(call);
}

int
gw_batch_start(struct gw *gw)
{
	struct gw_batcher *b = &gw->batch;
	int rv;

	pthread_mutex_init(&b->lock, NULL);
	b->tail = &b->head;
	b->n_calls = (size_t) gw->cfg.store_batch_calls;
	if (b->n_calls == 0)
		return 0; /* methods.c sends each Submit on its own */
	if ((b->calls = calloc(b->n_calls, sizeof(*b->calls))) == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < b->n_calls; i++) {
		struct gw_call *call = calloc(1, sizeof(*call));

		if ((b->calls[i] = call) == NULL)
			return MHS_ENOMEM;
		call->gw = gw;
		if ((rv = nng_aio_alloc(&call->aio, call_cb, call)) != 0 ||
		    (rv = nng_ctx_open(&call->req, gw->store)) != 0)
			return mhs_err_nng(rv);
	}
	return 0;
}

/* After closing is set and the store socket closed: stop every call. */
void
gw_batch_stop(struct gw *gw)
{
	struct gw_batcher *b = &gw->batch;

	for (size_t i = 0; b->calls != NULL && i < b->n_calls; i++) {
		if (b->calls[i] == NULL)
			continue;
		nng_aio_stop(b->calls[i]->aio);
		nng_aio_free(b->calls[i]->aio);
		free(b->calls[i]);
	}
	free(b->calls);
	b->calls = NULL;
	/* Whatever was still queued is never answered (we are closing). */
	for (struct gw_ctx *c = b->head; c != NULL; c = c->bnext)
		member_free_item(c);
	b->head = NULL;
	b->tail = &b->head;
	pthread_mutex_destroy(&b->lock);
}
