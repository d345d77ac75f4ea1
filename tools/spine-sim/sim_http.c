/*
 * Design notes: the simulator's HTTP surface, on nng's HTTP server.
 *  - POST to any path but /_sim/...: one ebXML delivery. Parse and check
 *    it (SPINE-EBXML.md §1-2), record it, pick the outcome (magic ids,
 *    then fail_rate), answer as Spine would (§3-4) with exactly
 *    "Content-Type: text/xml".
 *    Spine's rules: a repeated MessageId is a replay (acknowledged
 *    again); a new prescription repeating another MessageId's
 *    prescription ID is refused (ErrorList). The first acknowledgement
 *    of a release request queues Spine's asynchronous response
 *    (sim_respond.c), sent later from a thread of its own.
 *  - /_sim/messages (GET, DELETE), /_sim/config (GET, PUT) and
 *    /_sim/stats (GET): test control, JSON, never delayed or failed.
 * Callbacks run on nng's threads and never block: sim->mtx is held only
 * for table and config updates, and a reply delayed by latency_ms waits
 * on a sleep aio of its own. "drop" and "down" are answered without an
 * ebXML body: drop closes the connection with no response at all, down
 * answers 503 with a plain-text body (a load balancer's page).
 * Payloads are never logged; MessageIds and reasons are.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "ebxml.h"
#include "error.h"
#include "log.h"
#include "sim.h"
#include "util.h"

/* ---- replies ---- */

/*
 * Every response goes out as one buffer through nng_http_conn_write_all:
 * nng 1.5.2's own response writer hands headers and body to TLS as two
 * records on a socket without TCP_NODELAY, and Nagle then holds the body
 * until the client's delayed ACK (about 40 ms a response). One write is
 * one record. The handler's aio is finished with no response object once
 * the write is done, which tells nng the response was sent.
 */
struct sim_answer {
	int status; /* 0: close the connection unanswered (drop) */
	const char *ctype;
	struct mhs_buf body;
};

struct sim_reply {
	struct sim *sim;
	nng_aio *http; /* the handler's aio */
	nng_http_conn *conn;
	struct mhs_buf wire; /* status line, headers, body; empty: drop */
	nng_aio *aio;        /* latency sleep, then the write */
	bool writing;
	struct sim_reply *next; /* in sim->pool */
};

/*
 * Replies are kept for reuse, at most SIM_REPLY_POOL of them: in nng
 * 1.5.2 every nng_aio_alloc makes a getrandom(2) system call (it picks
 * an expiry queue at random), and the wire buffer is a malloc. A reply
 * goes back to the pool from its own aio's callback, as its last act:
 * reusing an aio from inside its callback is what nng allows, and the
 * callback touches nothing of the reply after that.
 */
#define SIM_REPLY_POOL 1024
#define SIM_REPLY_KEEP (64 * 1024)

static void reply_cb(void *arg);

static struct sim_reply *
reply_get(struct sim *s)
{
	struct sim_reply *r;

	pthread_mutex_lock(&s->pool_mtx);
	if ((r = s->pool) != NULL) {
		s->pool = r->next;
		s->npool--;
	}
	pthread_mutex_unlock(&s->pool_mtx);
	if (r != NULL)
		return r;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	if (nng_aio_alloc(&r->aio, reply_cb, r) != 0) {
		free(r);
		return NULL;
	}
	r->sim = s;
	return r;
}

/* Back to the pool (or freed): the caller touches r no more. */
static void
reply_put(struct sim *s, struct sim_reply *r)
{
	/* A latched error is not kept, nor a large buffer (/_sim/messages
	 * can be megabytes): a delivery's reply is about 2 KiB. */
	if (r->wire.err != 0 || r->wire.cap > SIM_REPLY_KEEP)
		mhs_buf_fini(&r->wire);
	else
		mhs_buf_reset(&r->wire);
	r->http = NULL;
	r->conn = NULL;
	r->writing = false;
	pthread_mutex_lock(&s->pool_mtx);
	if (s->npool < SIM_REPLY_POOL) {
		r->next = s->pool;
		s->pool = r;
		s->npool++;
		r = NULL;
	}
	pthread_mutex_unlock(&s->pool_mtx);
	if (r != NULL) {
		mhs_buf_fini(&r->wire);
		nng_aio_reap(r->aio); /* we may be inside its callback */
		free(r);
	}
}

void
sim_http_fini(struct sim *s)
{
	struct sim_reply *r;

	while ((r = s->pool) != NULL) {
		s->pool = r->next;
		nng_aio_free(r->aio);
		mhs_buf_fini(&r->wire);
		free(r);
	}
	s->npool = 0;
}

static const char *
status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 202:
		return "Accepted";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	}
	return "Unknown";
}

static void
answer_text(
    struct sim_answer *a, int status, const char *ctype, const char *text)
{
	a->status = status;
	a->ctype = ctype;
	mhs_buf_reset(&a->body);
	mhs_buf_puts(&a->body, text);
}

static void
reply_done(struct sim_reply *r, int rv)
{
	struct sim *s = r->sim;

	nng_aio_set_output(r->http, 0, NULL); /* we wrote the response */
	nng_aio_finish(r->http, rv);          /* rv != 0: nng closes */
	reply_put(s, r);
	atomic_fetch_sub(&s->pending, 1);
}

static void
reply_write(struct sim_reply *r)
{
	nng_iov iov = {r->wire.data, r->wire.len};

	r->writing = true;
	nng_aio_set_iov(r->aio, 1, &iov);
	nng_http_conn_write_all(r->conn, r->aio);
}

static void
reply_cb(void *arg)
{
	struct sim_reply *r = arg;
	int rv = nng_aio_result(r->aio);

	if (r->writing || rv != 0)
		reply_done(r, rv);
	else if (r->wire.len == 0)
		reply_done(r, NNG_ECONNRESET); /* drop */
	else
		reply_write(r);
}

/* Formats the whole response; an empty wire means drop. */
static void
reply_format(struct sim_reply *r, nng_http_req *req, struct sim_answer *a)
{
	const char *conn = nng_http_req_get_header(req, "Connection");

	if (a->status == 0 || a->body.err != 0)
		return;
	mhs_buf_printf(&r->wire,
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	    "\r\n",
	    a->status, status_text(a->status), a->ctype, a->body.len,
	    conn != NULL && strcasestr(conn, "close") != NULL
	        ? "Connection: close\r\n"
	        : "");
	mhs_buf_append(&r->wire, a->body.len ? a->body.data : "", a->body.len);
	if (r->wire.err != 0)
		mhs_buf_fini(&r->wire);
}

/*
 * reply_send answers the request of handler aio http with a (whose body
 * it frees), after latency_ms when positive, never blocking the caller.
 */
static void
reply_send(struct sim *s, nng_aio *http, struct sim_answer *a, int latency_ms)
{
	nng_http_req *req = nng_aio_get_input(http, 0);
	struct sim_reply *r = reply_get(s);

	if (r == NULL) {
		mhs_buf_fini(&a->body);
		nng_aio_finish(http, NNG_ENOMEM);
		return;
	}
	r->http = http;
	r->conn = nng_aio_get_input(http, 2);
	reply_format(r, req, a);
	mhs_buf_fini(&a->body);
	if (a->status != 0 && r->wire.len == 0)
		mhs_error("sim_reply", "cannot build a reply: closing");
	atomic_fetch_add(&s->pending, 1);
	if (latency_ms > 0)
		nng_sleep_aio(latency_ms, r->aio);
	else if (r->wire.len == 0)
		reply_done(r, NNG_ECONNRESET);
	else
		reply_write(r);
}

/* ---- ebXML deliveries ---- */

static void
config_get(struct sim *s, struct sim_config *cfg)
{
	pthread_mutex_lock(&s->mtx);
	*cfg = s->cfg;
	pthread_mutex_unlock(&s->mtx);
}

static uint32_t
rng_next(struct sim *s)
{
	/* xorshift64*, under sim->mtx */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return (uint32_t) ((s->rng * 2685821657736338717ULL) >> 32);
}

static enum sim_outcome
outcome_pick(struct sim *s, const struct sim_msg *m)
{
	static const enum sim_outcome by_fault[] = {
	    SIM_OUT_RETRIABLE, SIM_OUT_PERMANENT, SIM_OUT_DROP};

	if (strncmp(m->id, SIM_MAGIC_PERM, strlen(SIM_MAGIC_PERM)) == 0)
		return SIM_OUT_PERMANENT;
	if (strncmp(m->id, SIM_MAGIC_RETRY2, strlen(SIM_MAGIC_RETRY2)) == 0)
		return m->deliveries <= 2 ? SIM_OUT_RETRIABLE : SIM_OUT_ACK;
	if (s->cfg.fail_rate > 0 &&
	    rng_next(s) % 100 < (uint32_t) s->cfg.fail_rate)
		return by_fault[s->cfg.fault];
	return SIM_OUT_ACK;
}

enum sim_outcome
sim_deliver(struct sim *s, struct sim_delivery *d, int *err)
{
	struct sim_msg *m;
	enum sim_outcome o = SIM_OUT_ACK;

	d->first_ack = false;
	pthread_mutex_lock(&s->mtx);
	if ((m = sim_table_get(&s->table, d->id, d->interaction, err)) !=
	    NULL) {
		m->deliveries++;
		o = m->last =
		    d->refuse ? SIM_OUT_PERMANENT : outcome_pick(s, m);
		if (o == SIM_OUT_ACK)
			d->first_ack = ++m->acks == 1;
	}
	pthread_mutex_unlock(&s->mtx);
	return o;
}

bool
sim_rx_claim(
    struct sim *s, const char *rx, const char *id, char first[64], int *err)
{
	struct sim_msg *m;
	bool ok = true;

	pthread_mutex_lock(&s->mtx);
	/* A new entry takes id as its "interaction": the first sender. */
	if ((m = sim_table_get(&s->rx, rx, id, err)) != NULL &&
	    strcmp(m->interaction, id) != 0) {
		snprintf(first, 64, "%s", m->interaction);
		ok = false;
	}
	pthread_mutex_unlock(&s->mtx);
	return ok;
}

/* An ebXML ErrorList; a closed connection if it cannot be built. */
static void
answer_error(struct sim_answer *a, const struct sim_config *cfg,
    const struct mhs_ebxml_request *r, const char *code, const char *why)
{
	char id[37];

	a->status = cfg->error_status;
	a->ctype = MHS_EBXML_REPLY_TYPE;
	if (mhs_uuid_upper(id) != 0 ||
	    mhs_ebxml_build_error_list(
	        r, id, mhs_now_ms(), code, why, &a->body) != 0)
		a->status = 0;
}

static void
answer_ack(struct sim_answer *a, const struct mhs_ebxml_request *r)
{
	char id[37];

	a->status = 202;
	a->ctype = MHS_EBXML_REPLY_TYPE;
	/* Express and forward-reliable: 202 with an empty body (§4). */
	if (!r->ack_requested || !r->sync_reply)
		return;
	if (mhs_uuid_upper(id) != 0 ||
	    mhs_ebxml_build_ack(r, id, mhs_now_ms(), &a->body) != 0)
		a->status = 0;
}

static void
answer_fault(struct sim_answer *a)
{
	a->status = 500;
	a->ctype = MHS_EBXML_REPLY_TYPE;
	if (mhs_ebxml_build_soap_fault(
	        206, "Routing delivery failure (simulated)", &a->body) != 0)
		a->status = 0;
}

/* Spine's own checks: NULL, or an ebXML errorCode with why filled. */
static const char *
request_check(nng_http_req *req, const struct mhs_ebxml_request *r, char *why,
    size_t len)
{
	const char *missing = r->message_id[0] == '\0' ? "eb:MessageId"
	    : r->cpa_id[0] == '\0'                     ? "eb:CPAId"
	    : r->service[0] == '\0'                    ? "eb:Service"
	    : r->action[0] == '\0'                     ? "eb:Action"
	                                               : NULL;

	if (missing != NULL) {
		snprintf(why, len, "%s missing", missing);
		return "Inconsistent";
	}
	if (!mhs_ebxml_soap_action_eq(
	        nng_http_req_get_header(req, "SOAPAction"), r->service,
	        r->action)) {
		snprintf(why, len,
		    "SOAPAction does not match "
		    "eb:Service/eb:Action");
		return "Inconsistent";
	}
	return NULL;
}

/*
 * rx_duplicate applies Spine's duplicate-prescription rule: a new
 * prescription whose prescription ID an earlier new prescription (another
 * MessageId) already carried is refused, with why saying so. A replay of
 * the same MessageId is not a duplicate prescription.
 */
static bool
rx_duplicate(struct sim *s, const struct mhs_ebxml_request *r, const char *id,
    char *why, size_t len)
{
	char rx[64], first[64];
	int err = 0;

	if (strcmp(r->action, SIM_NEW_PRESCRIPTION) != 0 ||
	    mhs_ebxml_hl7_prescription_id(
	        r->payload, r->payload_len, rx, sizeof(rx)) != 0 ||
	    sim_rx_claim(s, rx, id, first, &err))
		return false;
	snprintf(why, len,
	    "Duplicate prescription ID %.24s (first sent as %.40s)", rx,
	    first);
	mhs_log(MHS_LOG_INFO, id, "sim_duplicate_prescription", "%s", why);
	return true;
}

static void
upper(char *dst, const char *src, size_t cap)
{
	size_t i;

	for (i = 0; src[i] != '\0' && i + 1 < cap; i++)
		dst[i] = (char) toupper((unsigned char) src[i]);
	dst[i] = '\0';
}

/* answer_outcome answers outcome o; refused: the rule that refused it. */
static void
answer_outcome(struct sim_answer *a, const struct sim_config *cfg,
    const struct mhs_ebxml_request *r, enum sim_outcome o, const char *refused)
{
	if (o == SIM_OUT_ACK)
		answer_ack(a, r);
	else if (o == SIM_OUT_RETRIABLE)
		answer_fault(a);
	else if (o == SIM_OUT_PERMANENT && refused != NULL)
		answer_error(a, cfg, r, "Inconsistent", refused);
	else if (o == SIM_OUT_PERMANENT)
		answer_error(a, cfg, r, "DeliveryFailure",
		    "Simulated permanent failure (spine-sim)");
	else
		a->status = 0; /* drop */
}

/* The answer to one delivery, as Spine would give it. */
static void
ebxml_answer(struct sim *s, nng_http_req *req, const struct sim_config *cfg,
    struct sim_answer *a)
{
	struct mhs_ebxml_request r;
	const char *code, *ct = nng_http_req_get_header(req, "Content-Type");
	char why[160], id[64];
	struct sim_delivery d;
	enum sim_outcome o;
	void *body;
	size_t len;
	int err;

	nng_http_req_get_data(req, &body, &len);
	if (mhs_ebxml_parse_request(ct, body, len, &r, why, sizeof(why)) !=
	    0) {
		mhs_warn("sim_malformed", "%s", why);
		answer_error(a, cfg, NULL, "OtherXml", why);
		return;
	}
	if ((code = request_check(req, &r, why, sizeof(why))) != NULL) {
		mhs_log(
		    MHS_LOG_WARN, r.message_id, "sim_malformed", "%s", why);
		answer_error(a, cfg, &r, code, why);
		return;
	}
	upper(id, r.message_id, sizeof(id));
	d = (struct sim_delivery) {id, r.action, false, false};
	d.refuse = rx_duplicate(s, &r, id, why, sizeof(why));
	o = sim_deliver(s, &d, &err);
	if (err != 0) {
		mhs_error("sim_table", "cannot record %s: %s", id,
		    mhs_strerror(err));
		answer_text(a, 503, "text/plain", "message table full\n");
		return;
	}
	mhs_log(MHS_LOG_DEBUG, id, "sim_delivery", "action=%s outcome=%s",
	    r.action, sim_outcome_name(o));
	answer_outcome(a, cfg, &r, o, d.refuse ? why : NULL);
	/* Spine answers a release request later, as a message of its own;
	 * a replay (not the first ack) was answered already. */
	if (o == SIM_OUT_ACK && d.first_ack && sim_respond_wanted(r.action))
		sim_respond_queue(s->resp, &r);
}

static void
sim_post_cb(nng_aio *aio)
{
	nng_http_req *req = nng_aio_get_input(aio, 0);
	struct sim *s = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
	struct sim_answer a = {0, NULL, MHS_BUF_INIT};
	struct sim_config cfg;

	config_get(s, &cfg);
	atomic_fetch_add(&s->posts, 1);
	if (cfg.down) {
		atomic_fetch_add(&s->down_refused, 1);
		answer_text(&a, 503, "text/plain", "spine-sim is down\n");
	} else
		ebxml_answer(s, req, &cfg, &a);
	reply_send(s, aio, &a, cfg.latency_ms);
}

/* ---- /_sim ---- */

static bool
path_is(const char *uri, const char *path)
{
	size_t n = strlen(path);

	return strncmp(uri, path, n) == 0 &&
	    (uri[n] == '\0' || uri[n] == '?' ||
	        (uri[n] == '/' && (uri[n + 1] == '\0' || uri[n + 1] == '?')));
}

static void
admin_error(struct sim_answer *a, int status, const char *msg)
{
	a->status = status;
	a->ctype = "application/json";
	mhs_buf_reset(&a->body);
	mhs_buf_puts(&a->body, "{\"error\":");
	mhs_buf_json_str(&a->body, msg);
	mhs_buf_puts(&a->body, "}\n");
}

static void
admin_messages(struct sim *s, const char *method, struct sim_answer *a)
{
	size_t n;

	if (strcmp(method, "GET") == 0) {
		pthread_mutex_lock(&s->mtx);
		sim_table_json(&s->table, &a->body);
		pthread_mutex_unlock(&s->mtx);
		return;
	}
	if (strcmp(method, "DELETE") != 0) {
		admin_error(a, 405, "use GET or DELETE");
		return;
	}
	pthread_mutex_lock(&s->mtx);
	n = s->table.n;
	sim_table_clear(&s->table);
	sim_table_clear(&s->rx);
	pthread_mutex_unlock(&s->mtx);
	mhs_info("sim_cleared", "%zu messages forgotten", n);
	mhs_buf_printf(&a->body, "{\"cleared\":%zu}\n", n);
}

static void
admin_config(
    struct sim *s, nng_http_req *req, const char *method, struct sim_answer *a)
{
	struct sim_config cfg;
	char err[160];
	void *body;
	size_t len;
	int rv;

	if (strcmp(method, "GET") != 0 && strcmp(method, "PUT") != 0) {
		admin_error(a, 405, "use GET or PUT");
		return;
	}
	nng_http_req_get_data(req, &body, &len);
	pthread_mutex_lock(&s->mtx);
	rv = strcmp(method, "PUT") != 0
	    ? 0
	    : sim_config_patch(&s->cfg, body, len, err, sizeof(err));
	cfg = s->cfg;
	pthread_mutex_unlock(&s->mtx);
	if (rv != 0) {
		admin_error(a, 400, err);
		return;
	}
	if (strcmp(method, "PUT") == 0)
		mhs_info("sim_config",
		    "fail_rate=%d fault=%s latency_ms=%d down=%d "
		    "error_status=%d",
		    cfg.fail_rate, sim_fault_name(cfg.fault), cfg.latency_ms,
		    cfg.down, cfg.error_status);
	sim_config_json(&cfg, &a->body);
}

static void
admin_stats(struct sim *s, const char *method, struct sim_answer *a)
{
	if (strcmp(method, "GET") != 0) {
		admin_error(a, 405, "use GET");
		return;
	}
	mhs_buf_printf(&a->body, "{\"posts\":%llu,\"down_refused\":%llu,",
	    atomic_load(&s->posts), atomic_load(&s->down_refused));
	sim_respond_stats_json(s->resp, &a->body);
	mhs_buf_puts(&a->body, "}\n");
}

static void
sim_admin_cb(nng_aio *aio)
{
	nng_http_req *req = nng_aio_get_input(aio, 0);
	struct sim *s = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
	const char *uri = nng_http_req_get_uri(req);
	const char *method = nng_http_req_get_method(req);
	struct sim_answer a = {200, "application/json", MHS_BUF_INIT};

	if (path_is(uri, "/_sim/messages"))
		admin_messages(s, method, &a);
	else if (path_is(uri, "/_sim/config"))
		admin_config(s, req, method, &a);
	else if (path_is(uri, "/_sim/stats"))
		admin_stats(s, method, &a);
	else
		admin_error(&a, 404, "no such /_sim endpoint");
	reply_send(s, aio, &a, 0);
}

/* ---- registration ---- */

static int
handler_add(nng_http_server *server, struct sim *s, const char *path,
    const char *method, size_t maxbody, void (*cb)(nng_aio *))
{
	nng_http_handler *h;
	int rv;

	if ((rv = nng_http_handler_alloc(&h, path, cb)) != 0)
		return mhs_err_nng(rv);
	if ((rv = nng_http_handler_set_method(h, method)) != 0 ||
	    (rv = nng_http_handler_set_tree(h)) != 0 ||
	    (rv = nng_http_handler_collect_body(h, true, maxbody)) != 0 ||
	    (rv = nng_http_handler_set_data(h, s, NULL)) != 0 ||
	    (rv = nng_http_server_add_handler(server, h)) != 0) {
		nng_http_handler_free(h);
		return mhs_err_nng(rv);
	}
	return 0;
}

int
sim_http_register(struct sim *s, nng_http_server *server)
{
	int rv;

	/* nng tries longer paths first: /_sim wins over the catch-all. */
	if ((rv = handler_add(
	         server, s, "/_sim", NULL, SIM_CONFIG_MAX, sim_admin_cb)) != 0)
		return rv;
	return handler_add(
	    server, s, "/", "POST", MHS_EBXML_MAX_BODY, sim_post_cb);
}
