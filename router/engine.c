/*
 * Design notes: the delivery engine (see router.h). One loop:
 *   1. ask for up to (max_in_flight - in flight) messages from the store;
 *   2. start one curl transfer per message leased (ebXML body built once);
 *   3. let curl run until something finishes, messages arrive or poll_ms
 *      passes;
 *   4. classify each finished transfer and queue its outcome.
 * The store calls themselves (Lease, ReportMany) are made by the engine's
 * store link, a thread of its own (rt_link below), because each waits for
 * the store's journal sync: made on the engine thread, they stopped every
 * transfer for that long, several times a loop, so one router could not
 * keep its max_in_flight busy.
 * Outcome rules (DESIGN §5): an acknowledgement naming our MessageId is
 * DELIVERED; an ebXML ErrorList or a non-retriable fault is FAILED; a
 * retriable fault is retried up to the route's retries; a transport error
 * or a reply without ebXML is retried until the persist duration runs out,
 * then EXPIRED. A report the store did not take is not lost: the lease
 * expires and the message is delivered again under the same MessageId,
 * which Spine treats as a replay (G4).
 *
 * Owner: the engine thread owns the curl handles and every transfer; the
 * link thread owns the store calls; they share only struct rt_link's
 * queues (under its mutex) and the stats atomics.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ebxml.h"
#include "error.h"
#include "log.h"
#include "mhs/store/v1/store.pb-c.h"
#include "breaker.h"
#include "router.h"
#include "util.h"

#define RT_MAX_REPLY (1u << 20)

struct rt_xfer {
	struct router *r;
	CURL *easy;
	struct curl_slist *headers; /* hdr_cache's, or owned */
	bool own_headers;
	struct mhs_buf body;  /* request */
	struct mhs_buf reply; /* response, bounded */
	const struct mhs_route *route;
	Mhs__Store__V1__Delivery *d;
	struct rt_breaker *breaker;
	char url[512];
	bool too_big;
	struct rt_xfer *next, *prev; /* transfers in flight */
};

static struct rt_xfer *live; /* engine thread only */

static void
live_add(struct rt_xfer *x)
{
	x->next = live;
	x->prev = NULL;
	if (live != NULL)
		live->prev = x;
	live = x;
}

static void
live_del(struct rt_xfer *x)
{
	if (x->prev != NULL)
		x->prev->next = x->next;
	else
		live = x->next;
	if (x->next != NULL)
		x->next->prev = x->prev;
}

int64_t
rt_backoff_ms(const struct mhs_route *route, unsigned attempt, unsigned rnd)
{
	int64_t cap = 500;

	for (unsigned i = 1; i < attempt && cap < route->retry_interval_ms;
	     i++)
		cap *= 2;
	if (cap > route->retry_interval_ms)
		cap = route->retry_interval_ms;
	if (cap < 2)
		return cap;
	return cap / 2 + (int64_t) (rnd % (unsigned) (cap / 2 + 1));
}

static size_t
rt_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct rt_xfer *x = arg;

	if (x->reply.len + size * n > RT_MAX_REPLY) {
		x->too_big = true;
		return 0; /* aborts the transfer */
	}
	mhs_buf_append(&x->reply, data, size * n);
	return size * n;
}

/*
 * Easy handles are kept for the next delivery, with their fixed options
 * (easy_get below): a fresh one costs allocations and a cleanup per
 * message. Engine thread only; at most one per transfer that can be in
 * flight.
 */
static struct {
	CURL **v;
	size_t n, cap;
} easy_pool;

static size_t rt_write_cb(char *p, size_t size, size_t n, void *arg);

/*
 * Request headers, built once per SOAPAction (engine thread only): the
 * Content-Type is the same for every request, so the SOAPAction (the
 * route's service and interaction) is all that differs between lists.
 */
struct hdr_entry {
	char *action;
	struct curl_slist *h;
};

static struct {
	struct hdr_entry *v;
	size_t n, cap;
} hdr_cache;

static struct curl_slist *
headers_build(const char *ctype, const char *action)
{
	char h1[300], h2[260];
	struct curl_slist *h = NULL, *t;

	snprintf(h1, sizeof(h1), "Content-Type: %s", ctype);
	snprintf(h2, sizeof(h2), "SOAPAction: %s", action);
	if ((t = curl_slist_append(h, h1)) == NULL)
		return NULL;
	h = t;
	if ((t = curl_slist_append(h, h2)) == NULL ||
	    (t = curl_slist_append(h, "Expect:")) == NULL) {
		curl_slist_free_all(h);
		return NULL;
	}
	return h;
}

/* x's headers: the cached list for action, else its own; false: out of
 * memory. */
static bool
headers_get(struct rt_xfer *x, const char *ctype, const char *action)
{
	struct hdr_entry *e;

	for (size_t i = 0; i < hdr_cache.n; i++)
		if (strcmp(hdr_cache.v[i].action, action) == 0) {
			x->headers = hdr_cache.v[i].h;
			x->own_headers = false;
			return true;
		}
	x->own_headers = true;
	if ((x->headers = headers_build(ctype, action)) == NULL)
		return false;
	if (hdr_cache.n == hdr_cache.cap) {
		size_t cap = hdr_cache.cap ? hdr_cache.cap * 2 : 16;
		void *g = realloc(hdr_cache.v, cap * sizeof(*hdr_cache.v));

		if (g == NULL)
			return true; /* used once, freed with x */
		hdr_cache.v = g;
		hdr_cache.cap = cap;
	}
	e = &hdr_cache.v[hdr_cache.n];
	if ((e->action = strdup(action)) == NULL)
		return true;
	e->h = x->headers;
	hdr_cache.n++;
	x->own_headers = false;
	return true;
}

static void
hdr_cache_fini(void)
{
	for (size_t i = 0; i < hdr_cache.n; i++) {
		curl_slist_free_all(hdr_cache.v[i].h);
		free(hdr_cache.v[i].action);
	}
	free(hdr_cache.v);
	hdr_cache.v = NULL;
	hdr_cache.n = hdr_cache.cap = 0;
}

/* The options every transfer has, set once per handle. */
static void
easy_defaults(struct router *r, CURL *e)
{
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rt_write_cb);
	curl_easy_setopt(
	    e, CURLOPT_TIMEOUT_MS, (long) r->cfg.request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	if (r->cfg.spine_ca[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, r->cfg.spine_ca);
	if (r->cfg.client_cert[0] != '\0') {
		curl_easy_setopt(e, CURLOPT_SSLCERT, r->cfg.client_cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, r->cfg.client_key);
	}
	if (r->cfg.tls_ciphers[0] != '\0')
		curl_easy_setopt(
		    e, CURLOPT_SSL_CIPHER_LIST, r->cfg.tls_ciphers);
	if (r->cfg.tls_curves[0] != '\0')
		curl_easy_setopt(e, CURLOPT_SSL_EC_CURVES, r->cfg.tls_curves);
}

/*
 * A handle from the pool keeps its fixed options (easy_defaults); the
 * per-transfer ones (URL, headers, body, write data, private) are all
 * set again by rt_xfer_setup before it runs, so no reset is needed,
 * nor setting a dozen options (each string copied) again per message.
 */
static CURL *
easy_get(struct router *r)
{
	CURL *e;

	if (easy_pool.n > 0)
		return easy_pool.v[--easy_pool.n];
	if ((e = curl_easy_init()) != NULL)
		easy_defaults(r, e);
	return e;
}

static void
easy_put(CURL *e)
{
	if (easy_pool.n == easy_pool.cap && easy_pool.cap < 1024) {
		size_t cap = easy_pool.cap ? easy_pool.cap * 2 : 64;
		CURL **g = realloc(easy_pool.v, cap * sizeof(*g));
		if (g != NULL) {
			easy_pool.v = g;
			easy_pool.cap = cap;
		}
	}
	if (easy_pool.n < easy_pool.cap)
		easy_pool.v[easy_pool.n++] = e;
	else
		curl_easy_cleanup(e);
}

static void
easy_pool_fini(void)
{
	while (easy_pool.n > 0)
		curl_easy_cleanup(easy_pool.v[--easy_pool.n]);
	free(easy_pool.v);
	easy_pool.v = NULL;
	easy_pool.cap = 0;
}

/* rt_xfer_free: x's easy handle must not be in the multi handle. */
static void
rt_xfer_free(struct rt_xfer *x)
{
	if (x == NULL)
		return;
	if (x->easy != NULL)
		easy_put(x->easy);
	if (x->own_headers)
		curl_slist_free_all(x->headers);
	mhs_buf_fini(&x->body);
	mhs_buf_fini(&x->reply);
	if (x->d != NULL)
		mhs__store__v1__delivery__free_unpacked(x->d, NULL);
	free(x);
}

/*
 * Outcomes are queued here and handed to the store link together, once
 * per engine loop (see rt_reports_flush). Engine thread only.
 */
static struct {
	Mhs__Store__V1__ReportRequest *v;
	size_t n, cap;
} pending;

static char *
dup_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

static void
rt_report(struct router *r, const Mhs__Store__V1__Delivery *d, int outcome,
    const char *reason, int64_t retry_at_ms, bool spine_fault)
{
	Mhs__Store__V1__ReportRequest *rq;

	if (pending.n == pending.cap) {
		size_t cap = pending.cap ? pending.cap * 2 : 64;
		void *g = realloc(pending.v, cap * sizeof(*pending.v));
		if (g == NULL) {
			atomic_fetch_add(&r->stats.report_errors, 1);
			return; /* the lease expires: delivered again */
		}
		pending.v = g;
		pending.cap = cap;
	}
	rq = &pending.v[pending.n++];
	mhs__store__v1__report_request__init(rq);
	rq->message_id = dup_or_empty(d->message_id);
	rq->outcome = outcome;
	rq->reason = dup_or_empty(reason);
	rq->retry_at_ms = retry_at_ms;
	rq->consumer = r->cfg.consumer;
	rq->lease_id = dup_or_empty(d->lease_id);
	rq->spine_fault = spine_fault;
}

static void
rt_reports_clear(void)
{
	for (size_t i = 0; i < pending.n; i++) {
		free(pending.v[i].message_id);
		free(pending.v[i].reason);
		free(pending.v[i].lease_id);
	}
	pending.n = 0;
}

/*
 * The store link (slink). The engine hands it, once per loop, the
 * outcomes it queued (one ReportMany for all of them: one group commit)
 * and a wish for more messages; the link makes the calls and hands back
 * what it leased, waking curl_multi_poll. Under load, outcomes queued
 * while a call is in progress go out together in the next one.
 */
struct report_vec {
	Mhs__Store__V1__ReportRequest *v;
	size_t n, cap;
};

static struct rt_link {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	CURLM *multi;              /* curl_multi_wakeup: leased messages */
	struct report_vec reports; /* engine -> link */
	bool want_lease, stop;     /* engine -> link */
	Mhs__Store__V1__Delivery **ready; /* link -> engine, not started */
	size_t nready, capready;
	size_t starting; /* taken by the engine, not yet counted in flight */
} slink = {.mtx = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void
reports_free(struct report_vec *q)
{
	for (size_t i = 0; i < q->n; i++) {
		free(q->v[i].message_id);
		free(q->v[i].reason);
		free(q->v[i].lease_id);
	}
	q->n = 0;
}

/* rt_reports_send sends q's outcomes in one ReportMany (link thread). */
static void
rt_reports_send(struct router *r, struct report_vec *q)
{
	Mhs__Store__V1__ReportManyRequest rq =
	    MHS__STORE__V1__REPORT_MANY_REQUEST__INIT;
	Mhs__Store__V1__ReportManyResponse *resp = NULL;
	Mhs__Store__V1__ReportRequest **ptrs;
	int code;

	if (q->n == 0)
		return;
	if ((ptrs = calloc(q->n, sizeof(*ptrs))) == NULL) {
		atomic_fetch_add(&r->stats.report_errors, q->n);
		reports_free(q); /* their leases expire: delivered again */
		return;
	}
	for (size_t i = 0; i < q->n; i++)
		ptrs[i] = &q->v[i];
	rq.reports = ptrs;
	rq.n_reports = q->n;
	code = mhs_client_call(r->store, "/mhs.store.v1.Store/ReportMany",
	    &rq.base, &mhs__store__v1__report_many_response__descriptor,
	    (ProtobufCMessage **) &resp, NULL, 0, 10000, NULL);
	if (code != 0) {
		atomic_fetch_add(&r->stats.report_errors, q->n);
		mhs_warn("report_failed",
		    "%zu outcomes not taken by the store (%d); their leases "
		    "expire and they are delivered again",
		    q->n, code);
	}
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	free(ptrs);
	reports_free(q);
}

/* Room for more messages: max_in_flight less in flight and handed over. */
static unsigned
link_room(struct router *r)
{
	size_t busy =
	    atomic_load(&r->stats.in_flight) + slink.nready + slink.starting;

	return busy < (size_t) r->cfg.max_in_flight
	    ? (unsigned) ((size_t) r->cfg.max_in_flight - busy)
	    : 0;
}

/* rt_lease leases up to room messages and hands them over (link thread,
 * slink.mtx held on entry and exit, released for the call). */
static void
rt_lease(struct router *r, unsigned room)
{
	Mhs__Store__V1__LeaseRequest rq = MHS__STORE__V1__LEASE_REQUEST__INIT;
	Mhs__Store__V1__LeaseResponse *resp = NULL;
	size_t n;
	int code;

	rq.consumer = r->cfg.consumer;
	rq.max_messages = room;
	rq.lease_ms = (uint32_t) r->cfg.lease_ms;
	pthread_mutex_unlock(&slink.mtx);
	code = mhs_client_call(r->store, "/mhs.store.v1.Store/Lease", &rq.base,
	    &mhs__store__v1__lease_response__descriptor,
	    (ProtobufCMessage **) &resp, NULL, 0, 5000, NULL);
	if (atomic_exchange(&r->store_ok, code == 0) != (code == 0))
		mhs_info("store_reachable", "store %s",
		    code == 0 ? "reachable" : "unreachable or not ready");
	pthread_mutex_lock(&slink.mtx);
	if (code != 0 || resp == NULL)
		return;
	n = resp->n_deliveries;
	if (slink.nready + n > slink.capready) {
		size_t cap = slink.nready + n + 64;
		void *g = realloc(slink.ready, cap * sizeof(*slink.ready));

		if (g == NULL)
			n = 0; /* out of memory: the leases expire */
		else {
			slink.ready = g;
			slink.capready = cap;
		}
	}
	for (size_t i = 0; i < n; i++) {
		slink.ready[slink.nready++] = resp->deliveries[i];
		resp->deliveries[i] = NULL; /* now the engine's */
	}
	pthread_mutex_unlock(&slink.mtx);
	mhs__store__v1__lease_response__free_unpacked(resp, NULL);
	if (n > 0)
		curl_multi_wakeup(slink.multi);
	pthread_mutex_lock(&slink.mtx);
}

static void *
rt_link_main(void *arg)
{
	struct router *r = arg;
	struct report_vec q = {0};

	pthread_setname_np(pthread_self(), "mhs-rt-store");
	pthread_mutex_lock(&slink.mtx);
	for (;;) {
		bool worked = false;

		/* Both jobs each pass: under load outcomes arrive during
		 * every ReportMany, and a lease must not wait for a lull. */
		if (slink.reports.n > 0) {
			struct report_vec t = slink.reports;

			slink.reports = q; /* empty, its array kept */
			q = t;
			pthread_mutex_unlock(&slink.mtx);
			rt_reports_send(r, &q);
			pthread_mutex_lock(&slink.mtx);
			worked = true;
		}
		if (slink.want_lease && !slink.stop) {
			unsigned room = link_room(r);

			slink.want_lease = false;
			if (room > 0)
				rt_lease(r, room);
			worked = true;
		}
		if (worked)
			continue;
		if (slink.stop)
			break;
		pthread_cond_wait(&slink.cv, &slink.mtx);
	}
	pthread_mutex_unlock(&slink.mtx);
	free(q.v);
	return NULL;
}

/* rt_reports_flush hands the queued outcomes to the link (engine). */
static void
rt_reports_flush(void)
{
	if (pending.n == 0)
		return;
	pthread_mutex_lock(&slink.mtx);
	if (slink.reports.n == 0) {
		struct report_vec t = slink.reports;

		slink.reports =
		    (struct report_vec) {pending.v, pending.n, pending.cap};
		pending.v = t.v;
		pending.cap = t.cap;
		pending.n = 0;
	} else {
		size_t need = slink.reports.n + pending.n;
		void *g = slink.reports.v;

		if (need > slink.reports.cap &&
		    (g = realloc(slink.reports.v,
		         (need + 64) * sizeof(*slink.reports.v))) != NULL) {
			slink.reports.v = g;
			slink.reports.cap = need + 64;
		}
		if (g != NULL) { /* else kept for the next flush */
			memcpy(slink.reports.v + slink.reports.n, pending.v,
			    pending.n * sizeof(*pending.v));
			slink.reports.n = need;
			pending.n = 0; /* their strings are the link's now */
		}
	}
	pthread_cond_signal(&slink.cv);
	pthread_mutex_unlock(&slink.mtx);
}

/*
 * rt_settle turns a finished (or refused) attempt into one outcome report.
 * The route's retries count only Spine's retriable faults; anything that
 * did not reach Spine is retried until the persist duration runs out.
 * not_before delays the retry (an open circuit).
 */
static void
rt_settle(struct router *r, struct rt_xfer *x, int verdict, const char *reason,
    int64_t not_before)
{
	const Mhs__Store__V1__Delivery *d = x->d;
	int64_t now = mhs_now_ms();
	int64_t at =
	    now + rt_backoff_ms(x->route, d->attempts + 1, (unsigned) rand());
	bool fault = verdict == MHS_EBXML_RETRY;
	char why[300];

	if (at < not_before)
		at = not_before + rand() % 1000;
	if (verdict == MHS_EBXML_DELIVERED) {
		atomic_fetch_add(&r->stats.delivered, 1);
		rt_report(r, d, MHS__STORE__V1__OUTCOME__OUTCOME_DELIVERED, "",
		    0, false);
		return;
	}
	if (fault && d->spine_faults + 1 > (unsigned) x->route->retries) {
		snprintf(why, sizeof(why), "retries exhausted (%d): %.200s",
		    x->route->retries, reason);
		verdict = MHS_EBXML_FAILED;
		reason = why;
	}
	if (verdict == MHS_EBXML_FAILED) {
		atomic_fetch_add(&r->stats.failed, 1);
		mhs_warn("delivery_failed", "message %s: %s", d->message_id,
		    reason);
		rt_report(r, d, MHS__STORE__V1__OUTCOME__OUTCOME_FAILED,
		    reason, 0, false);
		return;
	}
	if (at - d->accepted_at_ms > x->route->persist_duration_ms) {
		snprintf(why, sizeof(why), "persist duration exceeded: %.200s",
		    reason);
		atomic_fetch_add(&r->stats.expired, 1);
		mhs_warn(
		    "delivery_expired", "message %s: %s", d->message_id, why);
		rt_report(r, d, MHS__STORE__V1__OUTCOME__OUTCOME_EXPIRED, why,
		    0, false);
		return;
	}
	atomic_fetch_add(&r->stats.retried, 1);
	rt_report(
	    r, d, MHS__STORE__V1__OUTCOME__OUTCOME_RETRY, reason, at, fault);
}

static void
rt_finished(struct router *r, struct rt_xfer *x, CURLcode res)
{
	char reason[256] = "";
	long status = 0;
	char *ctype = NULL;
	int verdict;

	if (res != CURLE_OK) {
		atomic_fetch_add(&r->stats.transport_errors, 1);
		snprintf(reason, sizeof(reason), "transport: %s",
		    x->too_big ? "reply too large" : curl_easy_strerror(res));
		rt_breaker_result(
		    &r->breakers, x->breaker, false, mhs_now_ms());
		rt_settle(r, x, MHS_EBXML_UNEXPECTED, reason, 0);
		return;
	}
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
	verdict = mhs_ebxml_classify((int) status, ctype, x->reply.data,
	    x->reply.len, x->d->message_id, x->route->ack_requested, reason,
	    sizeof(reason));
	mhs_debug("delivery_attempt", "message %s: HTTP %ld, %s",
	    x->d->message_id, status, mhs_ebxml_verdict_name(verdict));
	/* A reply that is not ebXML (a proxy's 502, an HTML page) did not
	 * reach Spine's MHS either. */
	rt_breaker_result(&r->breakers, x->breaker,
	    verdict != MHS_EBXML_UNEXPECTED || status == 202, mhs_now_ms());
	rt_settle(r, x, verdict, reason, 0);
}

static int
rt_xfer_body(struct router *r, struct rt_xfer *x, char *ctype, size_t ctlen,
    char *action, size_t alen)
{
	const Mhs__Store__V1__Delivery *d = x->d;
	struct mhs_ebxml_msg m = {0};

	m.message_id = d->message_id;
	m.conversation_id = d->message_id;
	m.interaction = d->interaction_id;
	m.service = x->route->service;
	m.cpa_id = x->route->cpa_id;
	m.from_party = r->cfg.party_key;
	m.to_party = x->route->to_party;
	m.duplicate_elimination = x->route->duplicate_elimination;
	m.ack_requested = x->route->ack_requested;
	m.sync_reply = x->route->sync_reply;
	m.timestamp_ms = mhs_now_ms();
	m.payload_content_type = d->content_type;
	m.payload = d->payload.data;
	m.payload_len = d->payload.len;
	return mhs_ebxml_build(&m, &x->body, ctype, ctlen, action, alen);
}

static int
rt_xfer_setup(struct router *r, struct rt_xfer *x)
{
	char ctype[256], action[200];
	int rv;

	if ((rv = rt_xfer_body(
	         r, x, ctype, sizeof(ctype), action, sizeof(action))) != 0)
		return rv;
	if (!headers_get(x, ctype, action) || (x->easy = easy_get(r)) == NULL)
		return MHS_ENOMEM;
	curl_easy_setopt(x->easy, CURLOPT_URL, x->url); /* curl copies it */
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body.data);
	curl_easy_setopt(
	    x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) x->body.len);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	return x->body.err;
}

int
rt_tls_ciphers_check(const char *list)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	SSL_CTX *ctx;
	int ok;

	if (list[0] == '\0' || v->ssl_version == NULL ||
	    strncmp(v->ssl_version, "OpenSSL/", 8) != 0)
		return 0;
	/* What libcurl's OpenSSL backend does with the list on connect. */
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return MHS_ENOMEM;
	ok = SSL_CTX_set_cipher_list(ctx, list);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok == 1 ? 0 : MHS_EINVAL;
}

int
rt_tls_curves_check(const char *list)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	SSL_CTX *ctx;
	int ok;

	if (list[0] == '\0' || v->ssl_version == NULL ||
	    strncmp(v->ssl_version, "OpenSSL/", 8) != 0)
		return 0;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return MHS_ENOMEM;
	ok = SSL_CTX_set1_groups_list(ctx, list);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok == 1 ? 0 : MHS_EINVAL;
}

/* rt_endpoint works out the URL of x's route and its breaker. */
static bool
rt_endpoint(struct router *r, struct rt_xfer *x)
{
	const char *ep = x->route->endpoint;

	if (strncmp(ep, "https://", 8) == 0 || strncmp(ep, "http://", 7) == 0)
		snprintf(x->url, sizeof(x->url), "%s", ep);
	else
		snprintf(x->url, sizeof(x->url), "%s%s", r->cfg.spine_url, ep);
	return (x->breaker = rt_breaker_get(&r->breakers, x->url)) != NULL;
}

/* rt_start begins one delivery; the transfer belongs to the multi handle
 * on success, and d to the transfer either way. */
static void
rt_start(struct router *r, CURLM *multi, Mhs__Store__V1__Delivery *d)
{
	struct rt_xfer *x = calloc(1, sizeof(*x));
	int64_t now = mhs_now_ms();

	if (x == NULL) {
		mhs__store__v1__delivery__free_unpacked(d, NULL);
		return; /* the lease expires; delivered later */
	}
	x->r = r;
	x->d = d;
	if ((x->route = mhs_route_find(&r->routes, d->interaction_id)) ==
	    NULL) {
		rt_report(r, d, MHS__STORE__V1__OUTCOME__OUTCOME_FAILED,
		    "interaction not in this router's route table", 0, false);
		rt_xfer_free(x);
		return;
	}
	if (!rt_endpoint(r, x)) {
		rt_xfer_free(x); /* out of memory: the lease expires */
		return;
	}
	if (!rt_breaker_allow(x->breaker, now)) {
		atomic_fetch_add(&r->stats.circuit_refused, 1);
		rt_settle(r, x, MHS_EBXML_UNEXPECTED,
		    "circuit open: Spine endpoint unreachable",
		    x->breaker->open_until);
		rt_xfer_free(x);
		return;
	}
	if (rt_xfer_setup(r, x) != 0 ||
	    curl_multi_add_handle(multi, x->easy) != CURLM_OK) {
		mhs_error("delivery_setup",
		    "message %s: cannot start a transfer", d->message_id);
		rt_breaker_result(&r->breakers, x->breaker, true, now);
		rt_xfer_free(x);
		return;
	}
	live_add(x);
	atomic_fetch_add(&r->stats.attempts, 1);
	atomic_fetch_add(&r->stats.in_flight, 1);
}

/*
 * rt_take starts the messages the link leased, then asks it for more
 * when there is room and the breakers let anything through (engine).
 */
static void
rt_take(struct router *r, CURLM *multi)
{
	Mhs__Store__V1__Delivery **ready;
	size_t n;
	bool ask;

	pthread_mutex_lock(&slink.mtx);
	ready = slink.ready;
	n = slink.nready;
	slink.ready = NULL;
	slink.nready = slink.capready = 0;
	slink.starting = n;
	pthread_mutex_unlock(&slink.mtx);
	for (size_t i = 0; i < n; i++)
		rt_start(r, multi, ready[i]); /* counted in flight now */
	free(ready);
	pthread_mutex_lock(&slink.mtx);
	slink.starting = 0;
	pthread_mutex_unlock(&slink.mtx);
	/* Nothing could be sent while every breaker is open: leave the
	 * work queued in the store. */
	if (rt_breakers_blocked(&r->breakers, mhs_now_ms()))
		return;
	pthread_mutex_lock(&slink.mtx);
	ask = link_room(r) > 0;
	if (ask) {
		slink.want_lease = true;
		pthread_cond_signal(&slink.cv);
	}
	pthread_mutex_unlock(&slink.mtx);
}

static void
rt_collect(struct router *r, CURLM *multi)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
		struct rt_xfer *x = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &x);
		curl_multi_remove_handle(multi, msg->easy_handle);
		live_del(x);
		rt_finished(r, x, msg->data.result);
		atomic_fetch_sub(&r->stats.in_flight, 1);
		rt_xfer_free(x);
	}
}

int
rt_engine_run(struct router *r)
{
	CURLM *multi = curl_multi_init();
	pthread_t link_thread;
	int running = 0;

	if (multi == NULL)
		return MHS_ENOMEM;
	curl_multi_setopt(
	    multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) r->cfg.max_in_flight);
	/* Keep every connection: libcurl's default cache (four per easy
	 * handle attached) shrinks as transfers finish and closes
	 * connections that a TLS handshake must then reopen. */
	curl_multi_setopt(
	    multi, CURLMOPT_MAXCONNECTS, (long) r->cfg.max_in_flight + 8);
	slink.multi = multi;
	slink.stop = false;
	if (pthread_create(&link_thread, NULL, rt_link_main, r) != 0) {
		curl_multi_cleanup(multi);
		return MHS_ENOMEM;
	}
	while (!atomic_load(&r->stopping)) {
		rt_take(r, multi);
		rt_reports_flush(); /* refusals of an open circuit */
		curl_multi_perform(multi, &running);
		rt_collect(r, multi);
		rt_reports_flush();
		curl_multi_poll(multi, NULL, 0, (int) r->cfg.poll_ms, NULL);
		curl_multi_perform(multi, &running);
		rt_collect(r, multi);
		rt_reports_flush();
	}
	/* The link sends what it was handed, then stops. In-flight
	 * transfers, and messages leased but not started, are abandoned:
	 * their leases expire and they are delivered again, with the same
	 * MessageId. */
	pthread_mutex_lock(&slink.mtx);
	slink.stop = true;
	pthread_cond_signal(&slink.cv);
	pthread_mutex_unlock(&slink.mtx);
	pthread_join(link_thread, NULL);
	for (size_t i = 0; i < slink.nready; i++)
		mhs__store__v1__delivery__free_unpacked(slink.ready[i], NULL);
	free(slink.ready);
	slink.ready = NULL;
	slink.nready = slink.capready = 0;
	reports_free(&slink.reports);
	free(slink.reports.v);
	slink.reports = (struct report_vec) {0};
	while (live != NULL) {
		struct rt_xfer *x = live;
		live_del(x);
		curl_multi_remove_handle(multi, x->easy);
		rt_xfer_free(x);
	}
	rt_reports_clear();
	free(pending.v);
	easy_pool_fini(); /* removed from the multi handle already */
	hdr_cache_fini();
	curl_multi_cleanup(multi);
	rt_breakers_fini(&r->breakers);
	return 0;
}
