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
 * takes only Submits whose deadlines span at most GW_BATCH_SPREAD_US (the
 * others wait for the next call), so a Submit is told 4 at most that much
 * before its own deadline, and only if the store has not answered by the
 * earliest one. The store answers each Submit exactly
 * as Append would; the gateway relays each result to its own caller.
 *
 * A Submit still queued at its deadline is answered 4 by the batcher's
 * timer (an aio used for nothing but sleeping), armed for the earliest
 * deadline in the queue while anything is queued, so a stalled store
 * cannot hold a queued Submit past its deadline (the calls' own timeouts
 * cover the Submits they carry). Deadlines mostly come in increasing
 * order, so under load it is armed once per several seconds, not per
 * Submit; an earlier one cancels it, and it is armed again. A call also
 * carries at most GW_BATCH_BYTES of Submits, well under the store's receive
 * limit.
 *
 * A store that does not know AppendMany (answers 12: an older store during
 * a rolling restart) turns batching off until the gateway restarts: that
 * call's Submits, and all later ones, go one Append each on their own
 * contexts.
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
#define GW_BATCH_SPREAD_US 20000       /* deadlines in one call, at most */
#define GW_BATCH_BYTES     (16u << 20) /* encoded Submits in one call */

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

/* queue_relink recomputes the queue's tail (lock held). */
static void
queue_relink(struct gw_batcher *b)
{
	b->tail = &b->head;
	while (*b->tail != NULL)
		b->tail = &(*b->tail)->bnext;
}

/*
 * call_take moves queued requests into call (lock held), oldest first:
 * up to GW_BATCH_MAX of them and GW_BATCH_BYTES (but always the first),
 * whose deadlines all lie within GW_BATCH_SPREAD_US; the others stay
 * queued in order. False when nothing is queued.
 */
static bool
call_take(struct gw_batcher *b, struct gw_call *call)
{
	struct gw_ctx **pp = &b->head;
	int64_t lo = INT64_MAX, hi = INT64_MIN;
	size_t bytes = 0;

	call->n = 0;
	while (*pp != NULL && call->n < GW_BATCH_MAX) {
		struct gw_ctx *c = *pp;
		int64_t nlo = c->deadline_us < lo ? c->deadline_us : lo;
		int64_t nhi = c->deadline_us > hi ? c->deadline_us : hi;

		if (call->n > 0 &&
		    (nhi - nlo > GW_BATCH_SPREAD_US ||
		        bytes + c->bitem.len > GW_BATCH_BYTES)) {
			pp = &c->bnext;
			continue;
		}
		lo = nlo;
		hi = nhi;
		bytes += c->bitem.len;
		*pp = c->bnext;
		c->bnext = NULL;
		call->members[call->n++] = c;
	}
	queue_relink(b);
	return call->n > 0;
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

/* member_fail answers a member that will not reach the store. */
static void
member_fail(struct gw_ctx *c, int rv)
{
	member_free_item(c);
	gw_store_failed(c, rv);
}

/* call_fail answers every member of call with the failure rv. */
static void
call_fail(struct gw_call *call, int rv)
{
	for (size_t i = 0; i < call->n; i++) {
		member_fail(call->members[i], rv);
	}
	call->n = 0;
}

/* call_singly sends each member as its own Append (batching is off). */
static void
call_singly(struct gw_call *call)
{
	for (size_t i = 0; i < call->n; i++) {
		struct gw_ctx *c = call->members[i];
		ProtobufCBinaryData item = c->bitem;

		/* c is let go when its send starts: nothing of it after. */
		c->bitem.data = NULL;
		c->bitem.len = 0;
		gw_forward_send(c, GW_APPEND, &item);
		free(item.data);
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
			member_fail(c, NNG_ETIMEDOUT);
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

/* timer_arm sleeps until at_us (at least a millisecond from now). */
static void
timer_arm(struct gw_batcher *b, int64_t at_us)
{
	int64_t ms = (at_us - gw_now_us() + 999) / 1000;

	nng_sleep_aio((nng_duration) (ms > 0 ? ms : 1), b->timer);
}

/* timer_cb answers queued Submits whose deadline has passed, and sleeps
 * again until the earliest deadline left, if any. */
static void
timer_cb(void *arg)
{
	struct gw *gw = arg;
	struct gw_batcher *b = &gw->batch;
	struct gw_ctx *expired = NULL, **pp, *c;
	int64_t now = gw_now_us(), next = INT64_MAX;
	bool again;

	pthread_mutex_lock(&b->lock);
	for (pp = &b->head; (c = *pp) != NULL;) {
		if (c->deadline_us > now) {
			if (c->deadline_us < next)
				next = c->deadline_us;
			pp = &c->bnext;
			continue;
		}
		*pp = c->bnext;
		c->bnext = expired;
		expired = c;
	}
	queue_relink(b);
	again = b->ticking = b->head != NULL && !b->stopping;
	b->tick_at_us = next;
	pthread_mutex_unlock(&b->lock);
	while ((c = expired) != NULL) {
		expired = c->bnext;
		c->bnext = NULL;
		member_fail(c, NNG_ETIMEDOUT);
	}
	if (again)
		timer_arm(b, next);
}

void
gw_batch_forward(struct gw_ctx *c, ProtobufCBinaryData *item)
{
	struct gw_batcher *b = &c->gw->batch;
	struct gw_call *call = NULL;
	bool took = false, arm = false, rearm = false;

	c->bitem = *item; /* ours now */
	item->data = NULL;
	c->state = GW_STORE_BATCH;
	pthread_mutex_lock(&b->lock);
	if (b->stopping) { /* closing: nothing is answered any more */
		pthread_mutex_unlock(&b->lock);
		member_free_item(c);
		return;
	}
	c->bnext = NULL;
	*b->tail = c;
	b->tail = &c->bnext;
	for (size_t i = 0; i < b->n_calls; i++)
		if (!b->calls[i]->busy) {
			call = b->calls[i];
			took = call->busy = call_take(b, call);
			break;
		}
	if (b->head != NULL) {
		/* Something stays queued (c, or others already covered):
		 * while the queue is not empty the timer is armed. */
		if (!b->ticking) {
			arm = b->ticking = true;
			b->tick_at_us = c->deadline_us;
		} else if (c->deadline_us < b->tick_at_us) {
			rearm = true; /* the timer's callback arms it again */
			b->tick_at_us = c->deadline_us;
		}
	}
	pthread_mutex_unlock(&b->lock);
	if (arm)
		timer_arm(b, c->deadline_us);
	else if (rearm)
		nng_aio_cancel(b->timer);
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
	if ((rv = nng_aio_alloc(&b->timer, timer_cb, gw)) != 0)
		return mhs_err_nng(rv);
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

/* After closing is set and the store socket closed: no call or tick runs
 * once this returns, and no Submit is queued any more. */
void
gw_batch_halt(struct gw *gw)
{
	struct gw_batcher *b = &gw->batch;

	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	pthread_mutex_unlock(&b->lock);
	if (b->timer != NULL)
		nng_aio_stop(b->timer);
	for (size_t i = 0; b->calls != NULL && i < b->n_calls; i++)
		if (b->calls[i] != NULL)
			nng_aio_stop(b->calls[i]->aio);
}

/* After the request contexts' aios are stopped too: frees it all. */
void
gw_batch_free(struct gw *gw)
{
	struct gw_batcher *b = &gw->batch;

	for (size_t i = 0; b->calls != NULL && i < b->n_calls; i++) {
		if (b->calls[i] == NULL)
			continue;
		nng_aio_free(b->calls[i]->aio);
		free(b->calls[i]);
	}
	free(b->calls);
	b->calls = NULL;
	nng_aio_free(b->timer);
	b->timer = NULL;
	/* Whatever was still queued is never answered (we are closing). */
	for (struct gw_ctx *c = b->head; c != NULL; c = c->bnext)
		member_free_item(c);
	b->head = NULL;
	b->tail = &b->head;
	pthread_mutex_destroy(&b->lock);
}
