/*
 * Design notes: the inbound listener (see inbound.h). One request's life:
 *   1. nng's HTTP thread (in_post_cb) wraps the request in a job and
 *      queues it, bounded by --inbound-queue; a full queue is answered
 *      503 at once. The request (headers, body) stays nng's and stays
 *      valid until the job finishes the handler's aio: nothing is copied.
 *   2. A worker (in_worker) parses the ebXML, makes the store calls
 *      (Report RESPONDED, else Unsolicited) and formats the whole answer.
 *   3. The answer is written with one nng_http_conn_write_all (one TLS
 *      record: nng 1.5.2's response writer sends headers and body as two
 *      records on a socket without TCP_NODELAY, costing about 40 ms of
 *      Nagle against delayed ACK), then the handler's aio is finished
 *      with no response object, which tells nng the answer was sent.
 *
 * Matching: RefToMessageId first, then ConversationId (our outbound
 * ConversationId is the message_id); ids are compared upper-cased, since
 * ebXML MessageIds are case-insensitive. The store owns duplicate
 * elimination (durable window keyed by the inbound MessageId), so a
 * repeat from Spine after a router restart is still caught.
 *
 * Locking: in->mtx guards the queue, the live-job count and nothing else;
 * it is never held across a store call or an nng call. Counters are the
 * router's atomics.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>

#include "ebxml.h"
#include "error.h"
#include "inbound.h"
#include "log.h"
#include "mhs/store/v1/store.pb-c.h"
#include "router.h"
#include "util.h"
#include "validate.h"

#define IN_PEM_MAX          (1024 * 1024)
#define IN_STORE_TIMEOUT_MS 5000
#define IN_REPORT           "/mhs.store.v1.Store/Report"
#define IN_UNSOLICITED      "/mhs.store.v1.Store/Unsolicited"

/* What a worker decided about one inbound message. */
enum in_verdict {
	IN_STORED,      /* Report RESPONDED taken */
	IN_DUPLICATE,   /* a repeat inside the store's window */
	IN_UNMATCHED,   /* no message of ours: goes to Unsolicited */
	IN_DEAD_LETTER, /* Unsolicited taken */
	IN_UNAVAILABLE, /* the store did not take it: 503, Spine retries */
};

struct in_answer {
	int status;
	const char *ctype;
	struct mhs_buf body;
};

struct in_job {
	struct in_job *next;
	struct rt_inbound *in;
	nng_aio *http; /* the handler's aio: finished exactly once */
	nng_http_conn *conn;
	nng_aio *aio; /* the write */
	struct mhs_buf wire;
};

struct rt_inbound {
	struct router *r;
	nng_http_server *srv;
	struct mhs_client *store;
	pthread_mutex_t mtx;
	pthread_cond_t work; /* a job was queued, or stopping */
	pthread_cond_t idle; /* live reached 0 */
	struct in_job *head, *tail;
	size_t queued;
	unsigned live; /* jobs not yet freed (queued, in work, writing) */
	atomic_bool stopping;
	pthread_t *workers;
	size_t nworkers;
};

/* ---- answers ---- */

static const char *
in_status_text(int status)
{
	switch (status) {
	case 202:
		return "Accepted";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	}
	return "Unknown";
}

/* in_job_done finishes the handler's aio (rv != 0: nng closes the
 * connection) and frees the job. Called once per job, from any thread. */
static void
in_job_done(struct in_job *j, int rv)
{
	struct rt_inbound *in = j->in;

	nng_aio_set_output(j->http, 0, NULL); /* we wrote the response */
	nng_aio_finish(j->http, rv);
	mhs_buf_fini(&j->wire);
	if (j->aio != NULL)
		nng_aio_reap(j->aio); /* we may be inside its callback */
	free(j);
	pthread_mutex_lock(&in->mtx);
	if (--in->live == 0)
		pthread_cond_broadcast(&in->idle);
	pthread_mutex_unlock(&in->mtx);
}

static void
in_write_cb(void *arg)
{
	struct in_job *j = arg;

	in_job_done(j, nng_aio_result(j->aio));
}

/* in_send writes answer a (whose body it frees) as one buffer. */
static void
in_send(struct in_job *j, struct in_answer *a)
{
	nng_http_req *req = nng_aio_get_input(j->http, 0);
	const char *conn = nng_http_req_get_header(req, "Connection");
	nng_iov iov;

	if (a->body.err == 0)
		mhs_buf_printf(&j->wire,
		    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		    "Content-Length: %zu\r\n%s\r\n",
		    a->status, in_status_text(a->status), a->ctype,
		    a->body.len,
		    conn != NULL && strcasestr(conn, "close") != NULL
		        ? "Connection: close\r\n"
		        : "");
	if (a->body.len > 0)
		mhs_buf_append(&j->wire, a->body.data, a->body.len);
	mhs_buf_fini(&a->body);
	if (j->wire.err != 0 || j->wire.len == 0) {
		in_job_done(j, NNG_ENOMEM);
		return;
	}
	iov.iov_buf = j->wire.data;
	iov.iov_len = j->wire.len;
	nng_aio_set_iov(j->aio, 1, &iov);
	nng_http_conn_write_all(j->conn, j->aio);
}

static void
in_text(struct in_answer *a, int status, const char *text)
{
	a->status = status;
	a->ctype = "text/plain";
	mhs_buf_reset(&a->body);
	mhs_buf_puts(&a->body, text);
}

/* A 500 with an ebXML ErrorList (SPINE-EBXML.md §3.2); m may be NULL. */
static void
in_error_list(struct in_answer *a, const struct mhs_ebxml_request *m,
    const char *code, const char *why)
{
	char id[37];

	a->status = 500;
	a->ctype = MHS_EBXML_REPLY_TYPE;
	if (mhs_uuid_upper(id) == 0 &&
	    (mhs_ebxml_build_error_list(
	         m, id, mhs_now_ms(), code, why, &a->body) == 0 ||
	        mhs_ebxml_build_error_list(
	            NULL, id, mhs_now_ms(), code, why, &a->body) == 0))
		return;
	in_text(a, 500, "cannot build an ebXML ErrorList\n");
}

/* A 202, with an eb:Acknowledgment when the sender asked for one. */
static void
in_ack(struct in_answer *a, const struct mhs_ebxml_request *m)
{
	char id[37];

	a->status = 202;
	a->ctype = MHS_EBXML_REPLY_TYPE;
	if (!m->ack_requested)
		return;
	if (mhs_uuid_upper(id) != 0 ||
	    mhs_ebxml_build_ack(m, id, mhs_now_ms(), &a->body) != 0)
		mhs_buf_reset(&a->body); /* still accepted: an empty 202 */
}

/* ---- store calls (worker threads only) ---- */

static void
in_upper(char *dst, const char *src, size_t cap)
{
	size_t i;

	for (i = 0; src[i] != '\0' && i + 1 < cap; i++)
		dst[i] = (char) toupper((unsigned char) src[i]);
	dst[i] = '\0';
}

/* Codes with which the store says "no message of ours to respond to". */
static bool
in_code_unmatched(int code)
{
	return code == 3 || code == 5 || code == 9;
}

/* in_report: Report RESPONDED for msg_id; the store's code, or < 0. */
static int
in_report(struct rt_inbound *in, const char *msg_id, const char *inbound_id,
    const struct mhs_ebxml_request *m, bool *dup)
{
	Mhs__Store__V1__ReportRequest rq =
	    MHS__STORE__V1__REPORT_REQUEST__INIT;
	Mhs__Store__V1__ReportResponse *resp = NULL;
	int code;

	rq.message_id = (char *) msg_id;
	rq.outcome = MHS__STORE__V1__OUTCOME__OUTCOME_RESPONDED;
	rq.response_payload.data = (uint8_t *) m->payload;
	rq.response_payload.len = m->payload_len;
	rq.inbound_message_id = (char *) inbound_id;
	rq.consumer = in->r->cfg.consumer;
	code = mhs_client_call(in->store, IN_REPORT, &rq.base,
	    &mhs__store__v1__report_response__descriptor,
	    (ProtobufCMessage **) &resp, NULL, 0, IN_STORE_TIMEOUT_MS, NULL);
	*dup = code == 0 && resp != NULL && resp->duplicate;
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	return code;
}

/*
 * in_match tries RefToMessageId, then ConversationId (when it differs),
 * as the message_id the response belongs to. IN_UNMATCHED leaves the
 * reason for the dead letter in why.
 */
static enum in_verdict
in_match(struct rt_inbound *in, const struct mhs_ebxml_request *m,
    const char *inbound_id, char *why, size_t len)
{
	const char *cand[2] = {m->ref_to_message_id, m->conversation_id};
	char ids[2][64];
	bool dup;

	for (int i = 0; i < 2; i++) {
		int code;

		in_upper(ids[i], cand[i], sizeof(ids[i]));
		if (!mhs_message_id_check(ids[i]) ||
		    (i == 1 && strcmp(ids[0], ids[1]) == 0))
			continue;
		code = in_report(in, ids[i], inbound_id, m, &dup);
		if (code == 0)
			return dup ? IN_DUPLICATE : IN_STORED;
		if (!in_code_unmatched(code))
			return IN_UNAVAILABLE;
	}
	if (cand[0][0] == '\0' && cand[1][0] == '\0')
		snprintf(why, len, "no RefToMessageId or ConversationId");
	else
		snprintf(why, len,
		    "RefToMessageId \"%.40s\" / ConversationId \"%.40s\" "
		    "match no message of ours",
		    cand[0], cand[1]);
	return IN_UNMATCHED;
}

/* in_unsolicited journals and dead-letters m with the reason why. */
static enum in_verdict
in_unsolicited(struct rt_inbound *in, const struct mhs_ebxml_request *m,
    const char *inbound_id, const char *why)
{
	Mhs__Store__V1__UnsolicitedRequest rq =
	    MHS__STORE__V1__UNSOLICITED_REQUEST__INIT;
	Mhs__Store__V1__UnsolicitedResponse *resp = NULL;
	char reason[300];
	bool dup;
	int code;

	snprintf(
	    reason, sizeof(reason), "unsolicited %.64s: %s", m->action, why);
	rq.inbound_message_id = (char *) inbound_id;
	rq.ref_to_message_id = (char *) m->ref_to_message_id;
	rq.conversation_id = (char *) m->conversation_id;
	rq.action = (char *) m->action;
	rq.from_party = (char *) m->from_party;
	rq.reason = reason;
	rq.payload.data = (uint8_t *) m->payload;
	rq.payload.len = m->payload_len;
	code = mhs_client_call(in->store, IN_UNSOLICITED, &rq.base,
	    &mhs__store__v1__unsolicited_response__descriptor,
	    (ProtobufCMessage **) &resp, NULL, 0, IN_STORE_TIMEOUT_MS, NULL);
	dup = code == 0 && resp != NULL && resp->duplicate;
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	if (code != 0)
		return IN_UNAVAILABLE;
	return dup ? IN_DUPLICATE : IN_DEAD_LETTER;
}

/* ---- one inbound message ---- */

static void
in_count(struct rt_inbound *in, enum in_verdict v, const char *id,
    const struct mhs_ebxml_request *m, const char *why)
{
	struct rt_stats *s = &in->r->stats;

	switch (v) {
	case IN_STORED:
		atomic_fetch_add(&s->in_responses, 1);
		mhs_log(MHS_LOG_INFO, id, "inbound_response",
		    "%.64s for %.64s stored", m->action,
		    m->ref_to_message_id[0] ? m->ref_to_message_id
		                            : m->conversation_id);
		break;
	case IN_DUPLICATE:
		atomic_fetch_add(&s->in_duplicates, 1);
		mhs_log(MHS_LOG_INFO, id, "inbound_duplicate",
		    "%.64s repeated: acknowledged again, not stored",
		    m->action);
		break;
	case IN_DEAD_LETTER:
		atomic_fetch_add(&s->in_unsolicited, 1);
		mhs_log(MHS_LOG_WARN, id, "inbound_unsolicited",
		    "dead-lettered: %s", why);
		break;
	default:
		atomic_fetch_add(&s->in_unavailable, 1);
		mhs_log(MHS_LOG_WARN, id, "inbound_unavailable",
		    "store did not take %.64s: answered 503", m->action);
	}
}

/* in_dispatch decides the answer to one well-formed ebXML message. */
static void
in_dispatch(struct rt_inbound *in, const struct mhs_ebxml_request *m,
    struct in_answer *a)
{
	struct rt_stats *s = &in->r->stats;
	enum in_verdict v;
	char id[64], why[200] = "";

	in_upper(id, m->message_id, sizeof(id));
	if (!mhs_message_id_check(id)) {
		atomic_fetch_add(&s->in_errors, 1);
		mhs_warn("inbound_malformed", "eb:MessageId \"%.64s\"",
		    m->message_id);
		in_error_list(a, m, "Inconsistent",
		    "eb:MessageId missing or not a UUID");
		return;
	}
	/* An ebXML service message (an ack of something we sent, or an
	 * ack's error): nothing to store, nothing to acknowledge. */
	if (strcmp(m->action, "Acknowledgment") == 0 ||
	    strcmp(m->action, "MessageError") == 0) {
		atomic_fetch_add(&s->in_acks, 1);
		mhs_log(MHS_LOG_DEBUG, id, "inbound_ack", "%.64s ignored",
		    m->action);
		a->status = 202;
		a->ctype = MHS_EBXML_REPLY_TYPE;
		return;
	}
	if ((v = in_match(in, m, id, why, sizeof(why))) == IN_UNMATCHED)
		v = in_unsolicited(in, m, id, why);
	in_count(in, v, id, m, why);
	if (v == IN_UNAVAILABLE)
		in_text(a, 503, "store unavailable: retry later\n");
	else
		in_ack(a, m);
}

static void
in_job_run(struct rt_inbound *in, struct in_job *j)
{
	nng_http_req *req = nng_aio_get_input(j->http, 0);
	const char *ct = nng_http_req_get_header(req, "Content-Type");
	struct in_answer a = {0, MHS_EBXML_REPLY_TYPE, MHS_BUF_INIT};
	struct mhs_ebxml_request m;
	char why[160];
	void *body;
	size_t len;

	nng_http_req_get_data(req, &body, &len);
	if (mhs_ebxml_parse_request(
	        ct != NULL ? ct : "", body, len, &m, why, sizeof(why)) != 0) {
		atomic_fetch_add(&in->r->stats.in_errors, 1);
		mhs_warn("inbound_malformed", "%s", why);
		in_error_list(&a, NULL, "OtherXml", why);
	} else
		in_dispatch(in, &m, &a);
	in_send(j, &a);
}

/* ---- queue and workers ---- */

/* in_next waits for a job; NULL once stopping and the queue is empty. */
static struct in_job *
in_next(struct rt_inbound *in)
{
	struct in_job *j;

	pthread_mutex_lock(&in->mtx);
	while (in->head == NULL && !atomic_load(&in->stopping))
		pthread_cond_wait(&in->work, &in->mtx);
	if ((j = in->head) != NULL) {
		if ((in->head = j->next) == NULL)
			in->tail = NULL;
		in->queued--;
	}
	pthread_mutex_unlock(&in->mtx);
	return j;
}

static void *
in_worker(void *arg)
{
	struct rt_inbound *in = arg;
	struct in_job *j;

	while ((j = in_next(in)) != NULL) {
		if (atomic_load(&in->stopping))
			in_job_done(j, NNG_ECLOSED); /* Spine retries */
		else
			in_job_run(in, j);
	}
	return NULL;
}

/* in_enqueue: 0 queued, 1 queue full (answer 503), -1 stopping. */
static int
in_enqueue(struct rt_inbound *in, struct in_job *j)
{
	int rv = 0;

	pthread_mutex_lock(&in->mtx);
	if (atomic_load(&in->stopping))
		rv = -1;
	else if (in->queued >= (size_t) in->r->cfg.inbound_queue)
		rv = 1;
	else {
		if (in->tail != NULL)
			in->tail->next = j;
		else
			in->head = j;
		in->tail = j;
		in->queued++;
		pthread_cond_signal(&in->work);
	}
	if (rv >= 0)
		in->live++;
	pthread_mutex_unlock(&in->mtx);
	return rv;
}

/* nng's HTTP callback: never blocks, never calls the store. */
static void
in_post_cb(nng_aio *http)
{
	struct rt_inbound *in =
	    nng_http_handler_get_data(nng_aio_get_input(http, 1));
	struct in_job *j = calloc(1, sizeof(*j));
	struct in_answer a = {0, NULL, MHS_BUF_INIT};
	int rv;

	if (j == NULL || nng_aio_alloc(&j->aio, in_write_cb, j) != 0) {
		free(j);
		nng_aio_finish(http, NNG_ENOMEM);
		return;
	}
	j->in = in;
	j->http = http;
	j->conn = nng_aio_get_input(http, 2);
	if ((rv = in_enqueue(in, j)) < 0) {
		nng_aio_free(j->aio);
		free(j);
		nng_aio_finish(http, NNG_ECLOSED);
	} else if (rv > 0) {
		atomic_fetch_add(&in->r->stats.in_unavailable, 1);
		in_text(&a, 503, "inbound queue full: retry later\n");
		in_send(j, &a);
	}
}

/* ---- TLS and the server ---- */

static int
in_file_read(const char *path, char **out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;

	*out = NULL;
	if (f == NULL)
		return MHS_ENOTFOUND;
	if ((buf = malloc(IN_PEM_MAX + 1)) == NULL) {
		fclose(f);
		return MHS_ENOMEM;
	}
	n = fread(buf, 1, IN_PEM_MAX + 1, f);
	if (ferror(f) || n > IN_PEM_MAX) {
		free(buf);
		fclose(f);
		return MHS_EIO;
	}
	buf[n] = '\0';
	fclose(f);
	*out = buf;
	return 0;
}

static void
in_secret_free(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

static int
in_tls_fail(const char *what, const char *path, int nngrv)
{
	mhs_error("inbound_tls", "%s %s: %s", what, path, nng_strerror(nngrv));
	return mhs_err_nng(nngrv);
}

/* in_tls_setup: server certificate; client certificate required when a
 * client CA is configured. The key is wiped from memory after use. */
static int
in_tls_setup(const struct rt_config *c, nng_http_server *srv)
{
	nng_tls_config *cfg = NULL;
	char *cert = NULL, *key = NULL;
	int rv;

	if (in_file_read(c->inbound_cert, &cert) != 0 ||
	    in_file_read(c->inbound_key, &key) != 0) {
		mhs_error("inbound_tls",
		    "cannot read --inbound-cert %s or "
		    "--inbound-key %s",
		    c->inbound_cert, c->inbound_key);
		rv = MHS_EIO;
	} else if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER)) != 0)
		rv = in_tls_fail("tls config", "", rv);
	else if ((rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0)
		rv = in_tls_fail("certificate or key", c->inbound_cert, rv);
	else if (c->inbound_client_ca[0] != '\0' &&
	    ((rv = nng_tls_config_ca_file(cfg, c->inbound_client_ca)) != 0 ||
	        (rv = nng_tls_config_auth_mode(
	             cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0))
		rv = in_tls_fail("client CA", c->inbound_client_ca, rv);
	else if ((rv = nng_http_server_set_tls(srv, cfg)) != 0)
		rv = in_tls_fail("server TLS", "", rv);
	nng_tls_config_free(cfg); /* the server holds its own reference */
	free(cert);
	in_secret_free(key);
	return rv;
}

static int
in_handler_add(struct rt_inbound *in, nng_http_server *srv)
{
	nng_http_handler *h;
	int rv;

	if ((rv = nng_http_handler_alloc(&h, "/", in_post_cb)) != 0)
		return mhs_err_nng(rv);
	if ((rv = nng_http_handler_set_method(h, "POST")) != 0 ||
	    (rv = nng_http_handler_set_tree(h)) != 0 ||
	    (rv = nng_http_handler_collect_body(
	         h, true, (size_t) in->r->cfg.inbound_max_body)) != 0 ||
	    (rv = nng_http_handler_set_data(h, in, NULL)) != 0 ||
	    (rv = nng_http_server_add_handler(srv, h)) != 0) {
		nng_http_handler_free(h);
		return mhs_err_nng(rv);
	}
	return 0;
}

/* Checks what the option table cannot; logs why. */
static bool
in_options_ok(const struct rt_config *c)
{
	const char *l = c->inbound_listen;
	bool https = strncmp(l, "https://", 8) == 0;

	if (!https && strncmp(l, "http://", 7) != 0)
		mhs_error("inbound_options",
		    "--inbound-listen: expected an https:// or http:// URL");
	else if (https &&
	    (c->inbound_cert[0] == '\0' || c->inbound_key[0] == '\0'))
		mhs_error("inbound_options",
		    "--inbound-cert and --inbound-key are required for https");
	else if (!https && c->inbound_client_ca[0] != '\0')
		mhs_error(
		    "inbound_options", "--inbound-client-ca needs https");
	else
		return true;
	return false;
}

static int
in_server_start(struct rt_inbound *in)
{
	const struct rt_config *c = &in->r->cfg;
	nng_url *url = NULL;
	int rv;

	if ((rv = nng_url_parse(&url, c->inbound_listen)) != 0 ||
	    (rv = nng_http_server_hold(&in->srv, url)) != 0) {
		mhs_error("inbound_listen", "--inbound-listen %s: %s",
		    c->inbound_listen, nng_strerror(rv));
		nng_url_free(url);
		return mhs_err_nng(rv);
	}
	if (strcmp(url->u_scheme, "https") == 0)
		rv = in_tls_setup(c, in->srv);
	nng_url_free(url);
	if (rv == 0)
		rv = in_handler_add(in, in->srv);
	if (rv == 0 && (rv = nng_http_server_start(in->srv)) != 0) {
		mhs_error("inbound_listen", "cannot listen on %s: %s",
		    c->inbound_listen, nng_strerror(rv));
		rv = mhs_err_nng(rv);
	}
	return rv;
}

static int
in_workers_start(struct rt_inbound *in)
{
	size_t n = (size_t) in->r->cfg.inbound_workers;

	if ((in->workers = calloc(n, sizeof(*in->workers))) == NULL)
		return MHS_ENOMEM;
	for (; in->nworkers < n; in->nworkers++)
		if (pthread_create(
		        &in->workers[in->nworkers], NULL, in_worker, in) != 0)
			return MHS_ENOMEM;
	return 0;
}

static void
in_free(struct rt_inbound *in)
{
	if (in->srv != NULL)
		nng_http_server_release(in->srv);
	mhs_client_close(in->store);
	pthread_cond_destroy(&in->idle);
	pthread_cond_destroy(&in->work);
	pthread_mutex_destroy(&in->mtx);
	free(in->workers);
	free(in);
}

int
rt_inbound_start(struct rt_inbound **ip, struct router *r)
{
	struct rt_inbound *in;
	int rv;

	*ip = NULL;
	if (!in_options_ok(&r->cfg))
		return MHS_EINVAL;
	if ((in = calloc(1, sizeof(*in))) == NULL)
		return MHS_ENOMEM;
	in->r = r;
	atomic_init(&in->stopping, false);
	pthread_mutex_init(&in->mtx, NULL);
	pthread_cond_init(&in->work, NULL);
	pthread_cond_init(&in->idle, NULL);
	if ((rv = mhs_client_open(&in->store, r->cfg.store_url)) != 0 ||
	    (rv = in_workers_start(in)) != 0 ||
	    (rv = in_server_start(in)) != 0) {
		rt_inbound_stop(in);
		return rv;
	}
	mhs_info("inbound_listening", "serving %s (client certificate %s)",
	    r->cfg.inbound_listen,
	    r->cfg.inbound_client_ca[0] != '\0' ? "required" : "not asked");
	*ip = in;
	return 0;
}

void
rt_inbound_stop(struct rt_inbound *in)
{
	if (in == NULL)
		return;
	/* 1. No new requests; open connections are closed. */
	if (in->srv != NULL)
		nng_http_server_stop(in->srv);
	/* 2. Workers drop what is queued (Spine retries it) and exit. */
	pthread_mutex_lock(&in->mtx);
	atomic_store(&in->stopping, true);
	pthread_cond_broadcast(&in->work);
	pthread_mutex_unlock(&in->mtx);
	for (size_t i = 0; i < in->nworkers; i++)
		pthread_join(in->workers[i], NULL);
	/* 3. Wait for every write in flight to finish its handler aio. */
	pthread_mutex_lock(&in->mtx);
	while (in->live > 0)
		pthread_cond_wait(&in->idle, &in->mtx);
	pthread_mutex_unlock(&in->mtx);
	in_free(in);
}
