/*
 * Design notes: Spine's asynchronous business responses (issue 5 item 5).
 * After a release request is acknowledged, Spine later POSTs the release
 * response to the sender's MHS as a message of its own: a new MessageId,
 * RefToMessageId = the request's MessageId, the request's ConversationId,
 * From/To swapped, reliable (DuplicateElimination, AckRequested,
 * SyncReply), multipart ebXML with a small HL7 payload.
 *
 * One sender thread owns the libcurl handle (connections reused, TLS
 * verified, client certificate) and a queue ordered by due time; nng's
 * callbacks only build the body and queue it (bounded), never send. A
 * POST not answered 202 is retried with doubling backoff (bounded by
 * --respond-retries), rotating through the --respond-url list so that
 * one router down does not stall responses; a MessageId with the magic
 * prefix FFFFFFD2- gets its response sent twice under the same inbound
 * MessageId (the receiver's duplicate elimination is then visible).
 *
 * Locking: r->mtx guards the queue and stopping; never held across a
 * send. Counters are atomics read by GET /_sim/stats.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ebxml.h"
#include "error.h"
#include "log.h"
#include "sim.h"
#include "util.h"

#define RESP_SERVICE        "urn:nhs:names:services:mm"
#define RESP_SPINE          "YES-0000806" /* when the request named no To */
#define RESP_TIMEOUT_MS     5000L
#define RESP_BACKOFF_MS     200
#define RESP_BACKOFF_MAX_MS 5000

struct resp_job {
	struct resp_job *next;
	int64_t due; /* mhs_mono_ms */
	int attempts;
	int copies; /* successful sends still to make */
	char id[37], ref[64];
	char ctype[256], header[300];
	struct mhs_buf body;
};

struct sim_responder {
	struct sim_respond_opts o;
	char **urls;
	size_t nurls;
	pthread_mutex_t mtx;
	pthread_cond_t cv;     /* CLOCK_MONOTONIC */
	struct resp_job *head; /* ordered by due */
	size_t queued;
	bool stopping;
	pthread_t thread;
	CURL *easy;
	atomic_ullong queued_total, posts, acked, failed, dropped;
};

/* ---- the queue ---- */

static void
job_free(struct resp_job *j)
{
	if (j == NULL)
		return;
	mhs_buf_fini(&j->body);
	free(j);
}

/* job_insert keeps the queue ordered by due time (caller holds mtx). */
static void
job_insert(struct sim_responder *r, struct resp_job *j)
{
	struct resp_job **p = &r->head;

	while (*p != NULL && (*p)->due <= j->due)
		p = &(*p)->next;
	j->next = *p;
	*p = j;
	r->queued++;
	pthread_cond_signal(&r->cv);
}

static void
abs_mono(int64_t at_ms, struct timespec *ts)
{
	int64_t wait = at_ms - mhs_mono_ms();
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (wait < 0)
		wait = 0;
	ts->tv_sec = now.tv_sec + (time_t) (wait / 1000);
	ts->tv_nsec = now.tv_nsec + (long) (wait % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* job_next waits for the first job to fall due; NULL when stopping. */
static struct resp_job *
job_next(struct sim_responder *r)
{
	struct resp_job *j = NULL;
	struct timespec ts;

	pthread_mutex_lock(&r->mtx);
	while (!r->stopping && j == NULL) {
		if (r->head == NULL)
			pthread_cond_wait(&r->cv, &r->mtx);
		else if (r->head->due > mhs_mono_ms()) {
			abs_mono(r->head->due, &ts);
			pthread_cond_timedwait(&r->cv, &r->mtx, &ts);
		} else {
			j = r->head;
			r->head = j->next;
			r->queued--;
		}
	}
	pthread_mutex_unlock(&r->mtx);
	return j;
}

/* ---- sending (the sender thread only) ---- */

static size_t
discard(char *data, size_t size, size_t n, void *arg)
{
	(void) data;
	(void) arg;
	return size * n;
}

/* resp_post sends one copy of j; the HTTP status, or 0 (transport). */
static long
resp_post(struct sim_responder *r, struct resp_job *j)
{
	const char *url = r->urls[(size_t) j->attempts % r->nurls];
	struct curl_slist *h = NULL;
	char ct[300];
	long status = 0;

	snprintf(ct, sizeof(ct), "Content-Type: %s", j->ctype);
	h = curl_slist_append(h, ct);
	h = curl_slist_append(h, j->header);
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, j->body.data);
	curl_easy_setopt(
	    r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) j->body.len);
	atomic_fetch_add(&r->posts, 1);
	if (curl_easy_perform(r->easy) == CURLE_OK)
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	return status;
}

/* resp_settle requeues j (another copy, or a retry) or frees it. */
static void
resp_settle(struct sim_responder *r, struct resp_job *j, long status)
{
	int64_t backoff = RESP_BACKOFF_MS;

	if (status == 202) {
		atomic_fetch_add(&r->acked, 1);
		mhs_log(MHS_LOG_DEBUG, j->id, "sim_response_acked",
		    "response to %s acknowledged", j->ref);
		if (--j->copies <= 0) {
			job_free(j);
			return;
		}
		j->due = mhs_mono_ms();
	} else if (++j->attempts > r->o.retries) {
		atomic_fetch_add(&r->failed, 1);
		mhs_log(MHS_LOG_WARN, j->id, "sim_response_failed",
		    "response to %s given up after %d attempts (HTTP %ld)",
		    j->ref, j->attempts, status);
		job_free(j);
		return;
	} else {
		for (int i = 1;
		     i < j->attempts && backoff < RESP_BACKOFF_MAX_MS; i++)
			backoff *= 2;
		j->due = mhs_mono_ms() +
		    (backoff < RESP_BACKOFF_MAX_MS ? backoff
		                                   : RESP_BACKOFF_MAX_MS);
	}
	pthread_mutex_lock(&r->mtx);
	job_insert(r, j);
	pthread_mutex_unlock(&r->mtx);
}

static void *
resp_main(void *arg)
{
	struct sim_responder *r = arg;
	struct resp_job *j;

	while ((j = job_next(r)) != NULL)
		resp_settle(r, j, resp_post(r, j));
	return NULL;
}

/* ---- building a response (any thread; never sends) ---- */

static bool
magic_twice(const char *id)
{
	return strncasecmp(
	           id, SIM_MAGIC_RESPOND2, strlen(SIM_MAGIC_RESPOND2)) == 0;
}

static void
payload_write(struct mhs_buf *p, const char *id, const char *ref)
{
	char ts[21];

	mhs_time_iso(mhs_now_ms(), ts);
	mhs_buf_printf(p,
	    "<PORX_IN070101UK31 xmlns=\"urn:hl7-org:v3\">"
	    "<id root=\"%s\"/><creationTime value=\"%s\"/>"
	    "<interactionId root=\"2.16.840.1.113883.2.1.3.2.4.12\" "
	    "extension=\"PORX_IN070101UK31\"/>"
	    "<acknowledgement typeCode=\"AA\"><messageRef><id root=\"%s\"/>"
	    "</messageRef></acknowledgement></PORX_IN070101UK31>",
	    id, ts, ref);
}

/* job_build fills j's body and headers from request req. */
static int
job_build(struct resp_job *j, const struct mhs_ebxml_request *req)
{
	struct mhs_ebxml_msg m = {0};
	struct mhs_buf payload = MHS_BUF_INIT;
	char action[200];
	int rv;

	payload_write(&payload, j->id, j->ref);
	m.message_id = j->id;
	m.ref_to_message_id = j->ref;
	m.conversation_id = req->conversation_id[0] != '\0'
	    ? req->conversation_id
	    : req->message_id;
	m.interaction = SIM_RESPONSE_ACTION;
	m.service = RESP_SERVICE;
	m.cpa_id = req->cpa_id;
	m.from_party = req->to_party[0] != '\0' ? req->to_party : RESP_SPINE;
	m.to_party = req->from_party[0] != '\0' ? req->from_party : "UNKNOWN";
	m.duplicate_elimination = m.ack_requested = m.sync_reply = true;
	m.payload = payload.data;
	m.payload_len = payload.len;
	rv = payload.err != 0 ? MHS_ENOMEM
	                      : mhs_ebxml_build(&m, &j->body, j->ctype,
	                            sizeof(j->ctype), action, sizeof(action));
	mhs_buf_fini(&payload);
	snprintf(j->header, sizeof(j->header), "SOAPAction: %s", action);
	return rv;
}

bool
sim_respond_wanted(const char *action)
{
	return strcmp(action, "PORX_IN060102SM30") == 0 ||
	    strcmp(action, "PORX_IN132004SM30") == 0;
}

void
sim_respond_queue(struct sim_responder *r, const struct mhs_ebxml_request *req)
{
	struct resp_job *j;

	if (r == NULL || (j = calloc(1, sizeof(*j))) == NULL)
		return;
	snprintf(j->ref, sizeof(j->ref), "%s", req->message_id);
	j->copies = magic_twice(req->message_id) ? 2 : 1;
	j->due = mhs_mono_ms() + r->o.delay_ms;
	if (mhs_uuid_upper(j->id) != 0 || job_build(j, req) != 0) {
		mhs_log(MHS_LOG_ERROR, req->message_id, "sim_response_build",
		    "cannot build the response");
		job_free(j);
		return;
	}
	pthread_mutex_lock(&r->mtx);
	if (r->stopping || r->queued >= (size_t) r->o.max_pending) {
		pthread_mutex_unlock(&r->mtx);
		atomic_fetch_add(&r->dropped, 1);
		job_free(j);
		return;
	}
	job_insert(r, j);
	pthread_mutex_unlock(&r->mtx);
	atomic_fetch_add(&r->queued_total, 1);
}

void
sim_respond_stats_json(struct sim_responder *r, struct mhs_buf *out)
{
	if (r == NULL) {
		mhs_buf_puts(out, "\"responses\":null");
		return;
	}
	mhs_buf_printf(out,
	    "\"responses\":{\"queued\":%llu,\"posts\":%llu,\"acked\":%llu,"
	    "\"failed\":%llu,\"dropped\":%llu}",
	    atomic_load(&r->queued_total), atomic_load(&r->posts),
	    atomic_load(&r->acked), atomic_load(&r->failed),
	    atomic_load(&r->dropped));
}

/* ---- start and stop ---- */

/* urls_split copies the comma-separated list; false if it is empty. */
static bool
urls_split(struct sim_responder *r, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	size_t n = 1;

	for (const char *p = list; *p != '\0'; p++)
		n += *p == ',';
	if (copy == NULL || (r->urls = calloc(n, sizeof(char *))) == NULL) {
		free(copy);
		return false;
	}
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save))
		if (*tok != '\0')
			r->urls[r->nurls++] = strdup(tok);
	free(copy);
	for (size_t i = 0; i < r->nurls; i++)
		if (r->urls[i] == NULL)
			return false;
	return r->nurls > 0;
}

static CURL *
easy_new(const struct sim_respond_opts *o)
{
	CURL *c = curl_easy_init();

	if (c == NULL)
		return NULL;
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, RESP_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	if (o->ca[0] != '\0')
		curl_easy_setopt(c, CURLOPT_CAINFO, o->ca);
	if (o->cert[0] != '\0') {
		curl_easy_setopt(c, CURLOPT_SSLCERT, o->cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, o->key);
	}
	return c;
}

static void
responder_free(struct sim_responder *r)
{
	struct resp_job *j;

	while ((j = r->head) != NULL) {
		r->head = j->next;
		job_free(j);
	}
	for (size_t i = 0; i < r->nurls; i++)
		free(r->urls[i]);
	free(r->urls);
	if (r->easy != NULL)
		curl_easy_cleanup(r->easy);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mtx);
	free(r);
}

int
sim_respond_start(struct sim_responder **rp, const struct sim_respond_opts *o)
{
	struct sim_responder *r = calloc(1, sizeof(*r));
	pthread_condattr_t ca;

	*rp = NULL;
	if (r == NULL)
		return MHS_ENOMEM;
	r->o = *o;
	pthread_mutex_init(&r->mtx, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!urls_split(r, o->urls) || (r->easy = easy_new(o)) == NULL ||
	    pthread_create(&r->thread, NULL, resp_main, r) != 0) {
		responder_free(r);
		return MHS_EINVAL;
	}
	*rp = r;
	return 0;
}

void
sim_respond_stop(struct sim_responder *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mtx);
	r->stopping = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mtx);
	pthread_join(r->thread, NULL);
	if (r->queued > 0)
		mhs_warn("sim_responses_dropped",
		    "%zu responses not sent at stop", r->queued);
	responder_free(r);
}
