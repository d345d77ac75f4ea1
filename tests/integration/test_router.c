/*
 * Design notes: the router and Spine (DESIGN §5, issue 5) proved on the
 * real stack: scripts/run with redis-server, mhs-store, one mhs-router,
 * the gateway and the Spine simulator, over real HTTPS with client
 * certificates; nothing is mocked. Each test starts its own stack.
 *
 * Suites, named after what they prove:
 *   router_inbound  the inbound listener: an asynchronous response is
 *                   stored and visible (RESPONDED + response_payload), a
 *                   repeat is acknowledged but not stored twice, an
 *                   unsolicited message is dead-lettered (202, never a
 *                   500), garbage gets an ErrorList and the listener keeps
 *                   serving, no client certificate means no TLS session,
 *                   a store that cannot answer gives 503 (Spine retries);
 *   router_faults   each Spine fault class and its final state: retriable
 *                   faults until the route's retries run out, permanent
 *                   faults, Spine down then back (nothing final while
 *                   down, everything delivered after, the circuit breaker
 *                   keeps the load on a down Spine small), persist
 *                   duration expiry; --tls-ciphers is what the router
 *                   offers (an RSA-only list cannot reach the simulator's
 *                   ECDSA certificate, an ECDSA AES-GCM one delivers) and
 *                   a list naming no known suite stops it at start;
 *                   --tls-curves likewise (only a finite-field group
 *                   cannot reach the ECDSA certificate; an unknown name
 *                   stops the router at start).
 *
 * Router 1's inbound listener is on the first port after the stack's
 * (scripts/run does not wire it yet: flags come through MHS_ROUTER_ARGS
 * and MHS_SIM_ARGS, see stack_start_args). Waits are bounded and poll a
 * condition; where the point is that nothing happens for a while, the
 * test watches for that while and says so.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ebxml.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"
#include "stack.h"
#include "util.h"

#define SUBMIT       "/mhs.v1.Prescriptions/Submit"
#define GET_STATUS   "/mhs.v1.Prescriptions/GetStatus"
#define DEAD_LETTERS "/mhs.v1.Admin/ListDeadLetters"

#define S_DELIVERED MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED
#define S_RESPONDED MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RESPONDED
#define S_FAILED    MHS__V1__MESSAGE_STATE__MESSAGE_STATE_FAILED
#define S_EXPIRED   MHS__V1__MESSAGE_STATE__MESSAGE_STATE_EXPIRED
#define S_RETRYING  MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RETRYING

#define RELEASE  "PORX_IN060102SM30" /* nominated release request */
#define DISPENSE "PORX_IN080101SM31" /* no business response */
#define NEW_RX   "PORX_IN020101SM31"
#define RESPONSE "PORX_IN070101UK31"

/* Router 1's inbound listener and the simulator's responses, wired to
 * each other with the stack's demo certificates. */
#define INBOUND_ARGS                                                          \
	"--inbound-listen https://127.0.0.1:@PORT@ "                          \
	"--inbound-cert @DIR@/certs/router.pem "                              \
	"--inbound-key @DIR@/certs/router.key "                               \
	"--inbound-client-ca @DIR@/certs/ca.pem"
#define RESPOND_ARGS                                                          \
	"--respond-url https://127.0.0.1:@PORT@ "                             \
	"--respond-cert @DIR@/certs/spine.pem "                               \
	"--respond-key @DIR@/certs/spine.key "                                \
	"--respond-ca @DIR@/certs/ca.pem --respond-delay-ms 200"

static struct stack stk;
static struct mhs_client *cl;
static char bearer[160], inbound_url[64], metrics_url[64];
static char routes_file[64]; /* removed in teardown */
static pid_t stopped_store;  /* SIGSTOPped: continued in teardown */
static bool passed;

/* ---- the stack ---- */

static void
it_start(const char *router_args, const char *sim_args, const char *gw_args)
{
	if (gw_args != NULL)
		setenv("MHS_GATEWAY_ARGS", gw_args, 1);
	else
		unsetenv("MHS_GATEWAY_ARGS");
	unsetenv("MHS_STORE_ARGS");
	unsetenv("MHS_REDIS_ARGS");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	cr_assert(stack_start_args(&stk, 1, 1, router_args, sim_args),
	    "the stack did not start (%s)", stk.dir);
	snprintf(bearer, sizeof(bearer), "Bearer %s", stk.token);
	snprintf(inbound_url, sizeof(inbound_url), "https://127.0.0.1:%d/",
	    stack_extra_port(&stk, 1));
	snprintf(metrics_url, sizeof(metrics_url),
	    "http://127.0.0.1:%d/metrics", stk.port_base + 5);
	cr_assert_eq(mhs_client_open(&cl, stk.gateway_url), 0);
}

static void
inbound_start(void)
{
	it_start(INBOUND_ARGS, RESPOND_ARGS, NULL);
}

static void
teardown(void)
{
	if (stopped_store > 0)
		kill(stopped_store, SIGCONT);
	mhs_client_close(cl);
	cl = NULL;
	if (stk.pid > 0)
		stack_stop(&stk);
	if (passed && getenv("MHS_IT_KEEP") == NULL)
		stack_cleanup(&stk);
	else if (stk.dir[0] != '\0')
		fprintf(
		    stderr, "stack kept in %s (logs/, run.out)\n", stk.dir);
	if (routes_file[0] != '\0')
		unlink(routes_file);
	unsetenv("MHS_ROUTER_ARGS");
	unsetenv("MHS_SIM_ARGS");
	unsetenv("MHS_GATEWAY_ARGS");
}

/* it_stop: a clean stop, no restarts, no sanitizer report. */
static void
it_stop(void)
{
	cr_assert(!stack_restarts(&stk),
	    "a process exited and was restarted; see %s/run.out", stk.dir);
	mhs_client_close(cl);
	cl = NULL;
	cr_assert(stack_stop(&stk), "scripts/run did not stop cleanly");
	stk.pid = 0;
	cr_assert(stack_sanitizer_clean(&stk),
	    "a sanitizer reported an error; see %s/logs", stk.dir);
	passed = true;
}

/* ---- partner calls ---- */

/* submit one valid message of interaction; returns its message_id. */
static void
submit(const char *interaction, unsigned seed, char id[37])
{
	Mhs__V1__SubmitRequest rq = MHS__V1__SUBMIT_REQUEST__INIT;
	Mhs__V1__SubmitResponse *r = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", bearer}};
	char nhs[11], rx[21], key[48], payload[200];
	char *err = NULL;
	int code;

	test_nhs_number(seed, nhs);
	test_rx_id(seed, rx);
	snprintf(key, sizeof(key), "rt-%s-%u", interaction, seed);
	snprintf(payload, sizeof(payload),
	    "<%s xmlns=\"urn:hl7-org:v3\"><id root=\"%u\"/></%s>", interaction,
	    seed, interaction);
	rq.idempotency_key = key;
	rq.interaction_id = (char *) interaction;
	rq.prescription_id = rx;
	rq.nhs_number = nhs;
	rq.sender_ods = "FA565";
	rq.recipient_ods = "T1450";
	rq.content_type = "text/xml";
	rq.payload.data = (uint8_t *) payload;
	rq.payload.len = strlen(payload);
	code = mhs_client_call(cl, SUBMIT, &rq.base,
	    &mhs__v1__submit_response__descriptor, (ProtobufCMessage **) &r,
	    meta, 1, 10000, &err);
	cr_assert_eq(
	    code, 0, "submit %s: %d %s", interaction, code, err ? err : "");
	snprintf(id, 37, "%s", r->message_id);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	free(err);
}

/* status of id (caller frees), or NULL with the code in *code. */
static Mhs__V1__MessageStatus *
status_get(const char *id, int *code)
{
	Mhs__V1__GetStatusRequest rq = MHS__V1__GET_STATUS_REQUEST__INIT;
	struct mhs_rpc_meta meta[] = {{"authorization", bearer}};
	Mhs__V1__MessageStatus *st = NULL;

	rq.message_id = (char *) id;
	*code = mhs_client_call(cl, GET_STATUS, &rq.base,
	    &mhs__v1__message_status__descriptor, (ProtobufCMessage **) &st,
	    meta, 1, 5000, NULL);
	return *code == 0 ? st : NULL;
}

static bool
state_final(int s)
{
	return s == S_DELIVERED || s == S_RESPONDED || s == S_FAILED ||
	    s == S_EXPIRED;
}

/* wait_state polls until id is in state (bounded); returns its status. */
static Mhs__V1__MessageStatus *
wait_state(const char *id, int state, int timeout_s)
{
	Mhs__V1__MessageStatus *st = NULL;
	int code, last = -1;

	for (int64_t end = mhs_mono_ms() + timeout_s * 1000;
	     mhs_mono_ms() < end; usleep(50000)) {
		if ((st = status_get(id, &code)) != NULL) {
			if ((last = st->state) == state)
				return st;
			protobuf_c_message_free_unpacked(&st->base, NULL);
		}
	}
	cr_assert_fail("%s did not reach state %d within %d s (last %d)", id,
	    state, timeout_s, last);
	return NULL;
}

/* dead_letter finds id in ListDeadLetters; its reason into why. */
static bool
dead_letter(const char *id, char *why, size_t len, int *state)
{
	Mhs__V1__ListDeadLettersRequest rq =
	    MHS__V1__LIST_DEAD_LETTERS_REQUEST__INIT;
	Mhs__V1__ListDeadLettersResponse *r = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", bearer}};
	bool found = false;
	int code;

	rq.page_size = 1000;
	/* 14 while the gateway still thinks the store not ready: retry. */
	for (int64_t end = mhs_mono_ms() + 10000;; usleep(100000)) {
		code = mhs_client_call(cl, DEAD_LETTERS, &rq.base,
		    &mhs__v1__list_dead_letters_response__descriptor,
		    (ProtobufCMessage **) &r, meta, 1, 5000, NULL);
		if (code != 14 || mhs_mono_ms() > end)
			break;
	}
	cr_assert_eq(code, 0, "ListDeadLetters: %d", code);
	for (size_t i = 0; i < r->n_dead_letters && !found; i++) {
		Mhs__V1__DeadLetter *d = r->dead_letters[i];

		if (d->status == NULL ||
		    strcmp(d->status->message_id, id) != 0)
			continue;
		found = true;
		snprintf(why, len, "%s %s", d->reason, d->status->last_error);
		*state = d->status->state;
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return found;
}

/* ---- router metrics, simulator stats ---- */

/* metric: the value of the line starting with name, or -1. */
static long long
metric(const char *name)
{
	struct mhs_buf b = MHS_BUF_INIT;
	long long v = -1;
	const char *p;
	char key[160];

	snprintf(key, sizeof(key), "\n%s ", name);
	if (stack_probe_get(metrics_url, &b) == 200 && b.data != NULL &&
	    (p = strstr(b.data, key)) != NULL)
		v = atoll(p + strlen(key));
	mhs_buf_fini(&b);
	return v;
}

static long long
inbound_metric(const char *kind)
{
	char name[120];

	snprintf(
	    name, sizeof(name), "mhs_router_inbound_total{kind=\"%s\"}", kind);
	return metric(name);
}

/* sim_stat: "key":N from the simulator's GET /_sim/stats, or -1. */
static long long
sim_stat(const char *key)
{
	struct mhs_buf b = MHS_BUF_INIT;
	char url[200], k[64];
	const char *p;
	long long v = -1;

	snprintf(url, sizeof(url), "%s/_sim/stats", stk.spine_url);
	snprintf(k, sizeof(k), "\"%s\":", key);
	if (stack_http(&stk, "GET", url, NULL, &b) == 200 && b.data != NULL &&
	    (p = strstr(b.data, k)) != NULL)
		v = atoll(p + strlen(k));
	mhs_buf_fini(&b);
	return v;
}

static void
sim_config(const char *json)
{
	cr_assert(stack_sim_config(&stk, json), "sim refused %s", json);
}

/* ---- POSTs to the inbound listener, as Spine ---- */

struct reply {
	CURLcode rc;
	long status;
	char ctype[128];
	struct mhs_buf body;
};

static size_t
reply_write(char *p, size_t size, size_t n, void *arg)
{
	mhs_buf_append(arg, p, size * n);
	return size * n;
}

/* inbound_easy: a POST of body to the listener with headers h, as Spine
 * (with its client certificate unless !cert); the reply lands in r. */
static CURL *
inbound_easy(struct curl_slist *h, const void *body, size_t len, bool cert,
    struct reply *r)
{
	CURL *c = curl_easy_init();
	char f[400];

	memset(r, 0, sizeof(*r));
	curl_easy_setopt(c, CURLOPT_URL, inbound_url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	snprintf(f, sizeof(f), "%s/certs/ca.pem", stk.dir);
	curl_easy_setopt(c, CURLOPT_CAINFO, f);
	if (cert) {
		snprintf(f, sizeof(f), "%s/certs/spine.pem", stk.dir);
		curl_easy_setopt(c, CURLOPT_SSLCERT, f);
		snprintf(f, sizeof(f), "%s/certs/spine.key", stk.dir);
		curl_easy_setopt(c, CURLOPT_SSLKEY, f);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reply_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	return c;
}

/* inbound_done records status and Content-Type, then frees c. */
static void
inbound_done(CURL *c, struct reply *r)
{
	char *ct = NULL;

	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof(r->ctype), "%s", ct != NULL ? ct : "");
	mhs_buf_append(&r->body, "", 0); /* NUL-terminated even if empty */
	curl_easy_cleanup(c);
}

static struct curl_slist *
inbound_headers(const char *ctype, const char *soap_action)
{
	struct curl_slist *h = curl_slist_append(NULL, "Expect:");
	char hdr[300];

	snprintf(hdr, sizeof(hdr), "Content-Type: %s", ctype);
	h = curl_slist_append(h, hdr);
	if (soap_action != NULL) {
		snprintf(hdr, sizeof(hdr), "SOAPAction: %s", soap_action);
		h = curl_slist_append(h, hdr);
	}
	return h;
}

/* inbound_post POSTs body and waits for the reply. */
static void
inbound_post(const char *ctype, const char *soap_action, const void *body,
    size_t len, bool cert, struct reply *r)
{
	struct curl_slist *h = inbound_headers(ctype, soap_action);
	CURL *c = inbound_easy(h, body, len, cert, r);

	r->rc = curl_easy_perform(c);
	inbound_done(c, r);
	curl_slist_free_all(h);
}

/* A response from Spine: inbound MessageId id answering ref (may be "")
 * in conversation conv, with payload. */
struct spine_msg {
	const char *id, *ref, *conv, *action, *payload;
};

/* send_msg builds m as Spine would and POSTs it; returns the status and
 * checks that a 202 carries an eb:Acknowledgment naming m->id. */
static void
msg_build(const struct spine_msg *m, struct mhs_buf *body, char ct[256],
    char sa[256])
{
	struct mhs_ebxml_msg e = {0};

	e.message_id = m->id;
	e.ref_to_message_id = m->ref;
	e.conversation_id = m->conv;
	e.interaction = m->action != NULL ? m->action : RESPONSE;
	e.service = "urn:nhs:names:services:mm";
	e.cpa_id = "S1001A1630";
	e.from_party = "YES-0000806";
	e.to_party = "MHS-0000001";
	e.duplicate_elimination = e.ack_requested = e.sync_reply = true;
	e.payload = m->payload;
	e.payload_len = strlen(m->payload);
	cr_assert_eq(mhs_ebxml_build(&e, body, ct, 256, sa, 256), 0);
}

static long
send_msg(const struct spine_msg *m)
{
	struct mhs_buf body = MHS_BUF_INIT;
	char ct[256], sa[256];
	struct reply r;

	msg_build(m, &body, ct, sa);
	inbound_post(ct, sa, body.data, body.len, true, &r);
	mhs_buf_fini(&body);
	if (r.status == 202 && m->action == NULL)
		cr_assert_eq(mhs_ebxml_classify(202, r.ctype, r.body.data,
		                 r.body.len, m->id, true, NULL, 0),
		    MHS_EBXML_DELIVERED,
		    "202 without an eb:Acknowledgment of %s: %s", m->id,
		    r.body.data);
	mhs_buf_fini(&r.body);
	return r.status;
}

static void
new_id(char id[37])
{
	cr_assert_eq(mhs_uuid_upper(id), 0);
}

/* ---- router_inbound ---- */

TestSuite(
    router_inbound, .init = inbound_start, .fini = teardown, .timeout = 300);

Test(router_inbound, async_response_is_stored_and_visible)
{
	Mhs__V1__MessageStatus *st;
	char id[37];
	const char *p;

	/* A release request: the simulator acknowledges it, then posts the
	 * release response to router 1's inbound listener. */
	submit(RELEASE, 1, id);
	st = wait_state(id, S_RESPONDED, 60);
	cr_assert_gt(st->response_payload.len, 0, "empty response_payload");
	p = (const char *) st->response_payload.data;
	cr_assert_not_null(
	    memmem(p, st->response_payload.len, RESPONSE, strlen(RESPONSE)),
	    "response_payload is not the release response");
	cr_assert_not_null(memmem(p, st->response_payload.len, id, 36),
	    "the release response does not name its request %s", id);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(inbound_metric("response"), 1);
	cr_assert_eq(sim_stat("acked"), 1, "the simulator saw no 202");
	it_stop();
}

Test(router_inbound, repeated_response_is_not_stored_twice)
{
	struct spine_msg m = {NULL, NULL, NULL, NULL, "<first/>"};
	Mhs__V1__MessageStatus *st;
	char id[37], in_id[37];

	submit(DISPENSE, 2, id); /* no business response from the sim */
	protobuf_c_message_free_unpacked(
	    &wait_state(id, S_DELIVERED, 60)->base, NULL);
	new_id(in_id);
	m.id = in_id;
	m.ref = m.conv = id;
	cr_assert_eq(send_msg(&m), 202);
	st = wait_state(id, S_RESPONDED, 10);
	cr_assert_eq(st->response_payload.len, strlen("<first/>"));
	protobuf_c_message_free_unpacked(&st->base, NULL);
	/* Spine repeats it (same inbound MessageId), once even with other
	 * content: acknowledged again each time, never stored again. */
	cr_assert_eq(send_msg(&m), 202);
	m.payload = "<second/>";
	cr_assert_eq(send_msg(&m), 202);
	st = wait_state(id, S_RESPONDED, 10);
	cr_assert(st->response_payload.len == strlen("<first/>") &&
	        memcmp(st->response_payload.data, "<first/>", 8) == 0,
	    "a repeated response replaced the stored one");
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(inbound_metric("response"), 1);
	cr_assert_eq(inbound_metric("duplicate"), 2);
	it_stop();
}

Test(router_inbound, unsolicited_message_is_dead_lettered)
{
	struct spine_msg m = {NULL, NULL, NULL, NULL, "<unasked/>"};
	char in_id[37], ref[37], conv[37], why[600];
	int state = -1;

	/* 1. A RefToMessageId that names no message of ours. */
	new_id(in_id);
	new_id(ref);
	m.id = in_id;
	m.ref = m.conv = ref;
	cr_assert_eq(send_msg(&m), 202, "unsolicited must be acknowledged");
	cr_assert(dead_letter(in_id, why, sizeof(why), &state),
	    "%s is not in ListDeadLetters", in_id);
	cr_assert_eq(state, S_FAILED);
	cr_assert_not_null(strstr(why, "match no message of ours"), "%s", why);
	cr_assert_not_null(
	    strstr(why, ref), "the reason names %s: %s", ref, why);
	/* 2. Repeated: acknowledged again, dead-lettered once. */
	cr_assert_eq(send_msg(&m), 202);
	/* 3. No RefToMessageId at all (ConversationId unknown too). */
	new_id(in_id);
	new_id(conv);
	m.id = in_id;
	m.ref = NULL;
	m.conv = conv;
	cr_assert_eq(send_msg(&m), 202);
	cr_assert(dead_letter(in_id, why, sizeof(why), &state));
	cr_assert_eq(inbound_metric("unsolicited"), 2);
	cr_assert_eq(inbound_metric("duplicate"), 1);
	cr_assert_eq(inbound_metric("error"), 0);
	it_stop();
}

/* post_raw POSTs bytes with a Content-Type; returns the reply. */
static void
post_raw(const char *ctype, const char *body, size_t len, struct reply *r)
{
	inbound_post(ctype, NULL, body, len, true, r);
}

static void
expect_error_list(const char *ctype, const char *body, size_t len)
{
	struct reply r;

	post_raw(ctype, body, len, &r);
	cr_assert_eq(r.status, 500, "%s -> %ld", body, r.status);
	cr_assert_str_eq(r.ctype, "text/xml");
	cr_assert_eq(mhs_ebxml_classify(500, r.ctype, r.body.data, r.body.len,
	                 NULL, true, NULL, 0),
	    MHS_EBXML_FAILED, "not an ebXML ErrorList: %s", r.body.data);
	mhs_buf_fini(&r.body);
}

Test(router_inbound, garbage_gets_an_error_list_and_the_listener_serves_on)
{
	static const char broken[] =
	    "----=_MIME-Boundary\r\nContent-Id: <ebXMLHeader@spine.nhs.uk>\r\n"
	    "Content-Type: text/xml\r\n\r\n<SOAP:Envelope><unclosed>\r\n"
	    "----=_MIME-Boundary--\r\n";
	struct spine_msg m = {"not-a-uuid", NULL, "C", NULL, "<x/>"};
	struct spine_msg ack = {NULL, NULL, "C", "Acknowledgment", ""};
	struct reply r;
	char in_id[37], *big;
	size_t big_len = 5u << 20; /* over --inbound-max-body's 4 MiB */

	expect_error_list("text/plain", "garbage", 7);
	expect_error_list(MHS_EBXML_CONTENT_TYPE, broken, strlen(broken));
	expect_error_list("text/xml", "<a/>", 4); /* no eb:MessageHeader */
	cr_assert_eq(send_msg(&m), 500, "a MessageId that is not a UUID");
	/* Bounded: an oversized body is refused before it is read. */
	cr_assert_not_null(big = malloc(big_len));
	memset(big, 'x', big_len);
	post_raw(MHS_EBXML_CONTENT_TYPE, big, big_len, &r);
	cr_assert_neq(r.status, 202);
	cr_assert_neq(r.status, 500);
	mhs_buf_fini(&r.body);
	free(big);
	/* An Acknowledgment sent to us is accepted and ignored. */
	new_id(in_id);
	ack.id = in_id;
	cr_assert_eq(send_msg(&ack), 202);
	cr_assert_eq(inbound_metric("ack"), 1);
	/* Still serving: a well-formed message is taken. */
	new_id(in_id);
	m.id = in_id;
	cr_assert_eq(send_msg(&m), 202);
	cr_assert_eq(inbound_metric("error"), 4);
	cr_assert_eq(inbound_metric("unsolicited"), 1);
	it_stop();
}

Test(router_inbound, client_certificate_is_required)
{
	struct reply r;

	inbound_post("text/xml", NULL, "<a/>", 4, false, &r);
	cr_assert_neq(
	    r.rc, CURLE_OK, "no client certificate, yet HTTP %ld", r.status);
	cr_assert_eq(r.status, 0);
	mhs_buf_fini(&r.body);
	/* The same request with the certificate reaches the listener. */
	inbound_post("text/xml", NULL, "<a/>", 4, true, &r);
	cr_assert_eq(r.rc, CURLE_OK, "%s", curl_easy_strerror(r.rc));
	cr_assert_eq(r.status, 500);
	mhs_buf_fini(&r.body);
	it_stop();
}

Test(router_inbound, store_unavailable_is_answered_503_then_taken)
{
	struct spine_msg m = {NULL, NULL, NULL, NULL, "<later/>"};
	char in_id[37], ref[37], why[600];
	int state;

	new_id(in_id);
	new_id(ref);
	m.id = in_id;
	m.ref = m.conv = ref;
	/* A store that does not answer: 503, so that Spine retries. */
	cr_assert((stopped_store = stack_pid(&stk, "store")) > 0);
	cr_assert_eq(kill(stopped_store, SIGSTOP), 0);
	cr_assert_eq(send_msg(&m), 503);
	cr_assert_eq(inbound_metric("unavailable"), 1);
	kill(stopped_store, SIGCONT);
	stopped_store = 0;
	/* Spine's retry is taken once the store answers again. */
	for (int64_t end = mhs_mono_ms() + 30000;
	     send_msg(&m) != 202 && mhs_mono_ms() < end;)
		usleep(100000);
	cr_assert(dead_letter(in_id, why, sizeof(why), &state));
	it_stop();
}

/* ---- router_inbound_limits: one worker, a queue of one ---- */

static void
limits_start(void)
{
	it_start(INBOUND_ARGS " --inbound-workers 1 --inbound-queue 1",
	    RESPOND_ARGS, NULL);
}

TestSuite(router_inbound_limits, .init = limits_start, .fini = teardown,
    .timeout = 300);

Test(router_inbound_limits, full_queue_is_answered_503_at_once)
{
	enum { N = 4 };
	struct spine_msg m = {NULL, NULL, NULL, NULL, "<busy/>"};
	struct mhs_buf body[N];
	struct curl_slist *h[N];
	struct reply r[N];
	CURL *c[N];
	CURLM *multi = curl_multi_init();
	char ids[N][37], ct[256], sa[256];
	int running = 1, full = 0, unavailable = 0;

	/* The one worker blocks on a store that does not answer, one more
	 * request waits in the queue, the rest are refused at once. */
	cr_assert((stopped_store = stack_pid(&stk, "store")) > 0);
	cr_assert_eq(kill(stopped_store, SIGSTOP), 0);
	for (int i = 0; i < N; i++) {
		new_id(ids[i]);
		m.id = m.ref = m.conv = ids[i];
		body[i] = (struct mhs_buf) MHS_BUF_INIT;
		msg_build(&m, &body[i], ct, sa);
		h[i] = inbound_headers(ct, sa);
		c[i] =
		    inbound_easy(h[i], body[i].data, body[i].len, true, &r[i]);
		curl_multi_add_handle(multi, c[i]);
	}
	for (int64_t end = mhs_mono_ms() + 60000;
	     running > 0 && mhs_mono_ms() < end;) {
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	for (int i = 0; i < N; i++) {
		curl_multi_remove_handle(multi, c[i]);
		inbound_done(c[i], &r[i]);
		full +=
		    r[i].status == 503 && strstr(r[i].body.data, "queue full");
		unavailable += r[i].status == 503;
		mhs_buf_fini(&r[i].body);
		mhs_buf_fini(&body[i]);
		curl_slist_free_all(h[i]);
	}
	curl_multi_cleanup(multi);
	kill(stopped_store, SIGCONT);
	stopped_store = 0;
	cr_assert_eq(unavailable, N, "every request must be answered 503");
	cr_assert_geq(full, 2, "the queue of one never refused anything");
	cr_assert_eq(inbound_metric("unavailable"), N);
	/* Once the store answers, the listener takes messages again. */
	m.id = m.ref = m.conv = ids[0];
	for (int64_t end = mhs_mono_ms() + 30000;
	     send_msg(&m) != 202 && mhs_mono_ms() < end;)
		usleep(100000);
	cr_assert_geq(
	    inbound_metric("unsolicited") + inbound_metric("duplicate"), 1);
	it_stop();
}

/* ---- router_faults ---- */

/* routes_write: a route file for NEW_RX with these settings. */
static const char *
routes_write(int retries, int retry_interval_ms, int persist_ms)
{
	FILE *f;
	int fd;

	snprintf(
	    routes_file, sizeof(routes_file), "/tmp/mhs-it-routes-XXXXXX");
	cr_assert((fd = mkstemp(routes_file)) >= 0);
	cr_assert((f = fdopen(fd, "w")) != NULL);
	fprintf(f,
	    "[route " NEW_RX "]\nretries = %d\nretry_interval_ms = %d\n"
	    "persist_duration_ms = %d\n",
	    retries, retry_interval_ms, persist_ms);
	fclose(f);
	return routes_file;
}

/* faults_start: a stack whose gateway and router use the route file. */
static void
faults_start(int retries, int retry_interval_ms, int persist_ms)
{
	char ra[300], ga[200];
	const char *file =
	    routes_write(retries, retry_interval_ms, persist_ms);

	snprintf(ra, sizeof(ra),
	    "--routes %s --breaker-open-ms 200 --breaker-max-open-ms 1000",
	    file);
	snprintf(ga, sizeof(ga), "--routes %s", file);
	it_start(ra, NULL, ga);
}

static int
sim_deliveries(const char *id)
{
	struct mhs_buf b = MHS_BUF_INIT;
	int n;

	cr_assert(stack_sim_messages(&stk, &b));
	n = stack_sim_deliveries(b.data, id);
	mhs_buf_fini(&b);
	return n;
}

TestSuite(router_faults, .fini = teardown, .timeout = 300);

Test(router_faults, retriable_faults_fail_once_retries_are_exhausted)
{
	Mhs__V1__MessageStatus *st;
	char id[37], why[600];
	int state;

	faults_start(2, 200, 600000);
	sim_config("{\"fail_rate\":100,\"fault\":\"retriable\"}");
	submit(NEW_RX, 10, id);
	st = wait_state(id, S_FAILED, 60);
	cr_assert_not_null(strstr(st->last_error, "retries exhausted (2)"),
	    "%s", st->last_error);
	cr_assert_not_null(
	    strstr(st->last_error, "206"), "%s", st->last_error);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 3, "1 attempt + 2 retries");
	cr_assert(dead_letter(id, why, sizeof(why), &state));
	it_stop();
}

Test(router_faults, permanent_fault_fails_at_once_with_its_reason)
{
	Mhs__V1__MessageStatus *st;
	char id[37], why[600];
	int state;

	faults_start(2, 200, 600000);
	sim_config("{\"fail_rate\":100,\"fault\":\"permanent\"}");
	submit(NEW_RX, 11, id);
	st = wait_state(id, S_FAILED, 60);
	cr_assert_not_null(
	    strstr(st->last_error, "DeliveryFailure"), "%s", st->last_error);
	cr_assert_not_null(
	    strstr(st->last_error, "Simulated permanent failure"), "%s",
	    st->last_error);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 1, "an ErrorList is never retried");
	cr_assert(dead_letter(id, why, sizeof(why), &state));
	cr_assert_eq(state, S_FAILED);
	it_stop();
}

/* none_final: is none of ids final? (one GetStatus each) */
static bool
none_final(char ids[][37], int n)
{
	for (int i = 0; i < n; i++) {
		int code;
		Mhs__V1__MessageStatus *st = status_get(ids[i], &code);
		bool fin = st != NULL && state_final(st->state);

		if (st != NULL)
			protobuf_c_message_free_unpacked(&st->base, NULL);
		if (fin)
			return false;
	}
	return true;
}

Test(router_faults, spine_down_then_back_loses_nothing_and_breaker_holds)
{
	enum { N = 5, WATCH_MS = 4000 };
	char ids[N][37];
	long long refused0, refused1;
	int64_t end;

	faults_start(3, 1000, 600000);
	sim_config("{\"down\":true}");
	for (int i = 0; i < N; i++)
		submit(NEW_RX, 20 + (unsigned) i, ids[i]);
	/* 1. The breaker opens: the router refuses deliveries itself. */
	for (end = mhs_mono_ms() + 30000;
	     metric("mhs_router_circuit_refused_total") <= 0 &&
	     mhs_mono_ms() < end;)
		usleep(50000);
	cr_assert_gt(metric("mhs_router_circuit_refused_total"), 0,
	    "the circuit never opened");
	/* 2. For a while: nothing final, and the down Spine sees only the
	 * breaker's probes (a few requests, not one per message per
	 * backoff). */
	refused0 = sim_stat("down_refused");
	for (end = mhs_mono_ms() + WATCH_MS; mhs_mono_ms() < end;
	     usleep(200000))
		cr_assert(none_final(ids, N),
		    "a message went final while "
		    "Spine was down");
	refused1 = sim_stat("down_refused");
	cr_assert_leq(refused1 - refused0, 10,
	    "%lld requests reached a down Spine in %d ms", refused1 - refused0,
	    WATCH_MS);
	/* 3. Spine is back: everything is delivered, the circuit closes. */
	sim_config("{\"down\":false}");
	for (int i = 0; i < N; i++)
		protobuf_c_message_free_unpacked(
		    &wait_state(ids[i], S_DELIVERED, 60)->base, NULL);
	for (int i = 0; i < N; i++)
		cr_assert_geq(sim_deliveries(ids[i]), 1);
	it_stop();
}

Test(router_faults, persist_duration_expiry_dead_letters)
{
	Mhs__V1__MessageStatus *st;
	char id[37], why[600];
	int state = -1;

	faults_start(3, 200, 2000);
	sim_config("{\"down\":true}");
	submit(NEW_RX, 30, id);
	st = wait_state(id, S_EXPIRED, 60);
	cr_assert_not_null(
	    strstr(st->last_error, "persist duration"), "%s", st->last_error);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert(dead_letter(id, why, sizeof(why), &state),
	    "EXPIRED but not dead-lettered");
	cr_assert_eq(state, S_EXPIRED);
	cr_assert_not_null(strstr(why, "persist duration"), "%s", why);
	it_stop();
}

Test(router_faults, wrong_spine_ca_is_reported_and_retried_never_sent)
{
	Mhs__V1__MessageStatus *st = NULL;
	char ra[400], ga[200], cmd[1200], id[37];
	const char *file = routes_write(50, 200, 600000);
	int code;

	/* The router trusts a CA that did not sign the simulator's
	 * certificate: TLS must fail, be reported, and be retried; nothing
	 * may reach Spine until the right CA is in place. */
	snprintf(ra, sizeof(ra),
	    "--routes %s --breaker-open-ms 200 --breaker-max-open-ms 1000 "
	    "--spine-ca @DIR@/certs/other-ca.pem",
	    file);
	snprintf(ga, sizeof(ga), "--routes %s", file);
	it_start(ra, NULL, ga);
	snprintf(cmd, sizeof(cmd),
	    "openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:prime256v1 -nodes -keyout '%s/certs/other.key' "
	    "-out '%s/certs/other-ca.pem' -days 2 -subj '/CN=Other CA' "
	    ">/dev/null 2>&1",
	    stk.dir, stk.dir);
	cr_assert_eq(system(cmd), 0, "openssl failed");
	submit(NEW_RX, 31, id);
	for (int i = 0; i < 300; i++) {
		if (st != NULL)
			protobuf_c_message_free_unpacked(&st->base, NULL);
		st = status_get(id, &code);
		if (st != NULL && st->attempts >= 2 &&
		    st->state == S_RETRYING &&
		    strstr(st->last_error, "certificate") != NULL)
			break;
		usleep(100000);
	}
	cr_assert_not_null(st);
	cr_assert_eq(
	    st->state, S_RETRYING, "state %d (%s)", st->state, st->last_error);
	cr_assert_geq(st->attempts, 2, "a TLS failure must be retried");
	cr_assert_not_null(strstr(st->last_error, "certificate"),
	    "the reason must say why: %s", st->last_error);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 0,
	    "nothing may reach Spine over an unverified connection");

	/* The right CA in place: the next retry delivers. */
	snprintf(cmd, sizeof(cmd),
	    "cp '%s/certs/ca.pem' '%s/certs/other-ca.pem'", stk.dir, stk.dir);
	cr_assert_eq(system(cmd), 0);
	st = wait_state(id, S_DELIVERED, 60);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 1);
	it_stop();
}

/* Start a stack whose router offers only these TLS settings ("--tls-..."). */
static void
tls_start(const char *tls)
{
	const char *file = routes_write(50, 200, 600000);
	char ra[400], ga[200];

	snprintf(ra, sizeof(ra),
	    "--routes %s --breaker-open-ms 200 --breaker-max-open-ms 1000 %s",
	    file, tls);
	snprintf(ga, sizeof(ga), "--routes %s", file);
	it_start(ra, NULL, ga);
}

Test(router_faults, tls_ciphers_are_the_suites_offered)
{
	Mhs__V1__MessageStatus *st;
	char id[37];

	/* scripts/run's PKI is ECDSA P-256: this suite fits it. */
	tls_start("--tls-ciphers ECDHE-ECDSA-AES128-GCM-SHA256");
	submit(NEW_RX, 32, id);
	st = wait_state(id, S_DELIVERED, 60);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 1);
	it_stop();
}

/* A stack started with tls is refused every handshake: the delivery is
 * retried with an SSL reason and never reaches the simulator. */
static void
assert_handshake_refused(const char *tls, int n)
{
	Mhs__V1__MessageStatus *st = NULL;
	char id[37];
	int code;

	tls_start(tls);
	submit(NEW_RX, n, id);
	for (int i = 0; i < 300; i++) {
		if (st != NULL)
			protobuf_c_message_free_unpacked(&st->base, NULL);
		st = status_get(id, &code);
		if (st != NULL && st->attempts >= 2 && st->state == S_RETRYING)
			break;
		usleep(100000);
	}
	cr_assert_not_null(st);
	cr_assert_eq(
	    st->state, S_RETRYING, "state %d (%s)", st->state, st->last_error);
	cr_assert_geq(st->attempts, 2, "a TLS failure must be retried");
	cr_assert_not_null(strstr(st->last_error, "transport: SSL"),
	    "the reason must say why: %s", st->last_error);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	cr_assert_eq(sim_deliveries(id), 0);
	it_stop();
}

Test(router_faults, tls_ciphers_the_server_cannot_use_fail_the_handshake)
{
	/* Only an RSA suite against an ECDSA certificate: no handshake, so
	 * the list really is what the router offers. Retried, never sent. */
	assert_handshake_refused(
	    "--tls-ciphers ECDHE-RSA-AES128-GCM-SHA256", 33);
}

Test(router_faults, tls_curves_the_server_cannot_use_fail_the_handshake)
{
	/* Only a finite-field group: no ECDHE, and the ECDSA P-256
	 * certificate is not usable either, so the groups offered are the
	 * router's list (X25519:P-256 by default, as every other test). */
	assert_handshake_refused("--tls-curves ffdhe2048", 34);
}

Test(router_faults, tls_ciphers_naming_no_known_suite_stop_the_router)
{
	char out[1024] = "";
	size_t n = 0;
	FILE *p;

	/* Checked at start-up, as libcurl would apply it: a TLS 1.3 name is
	 * not a TLS 1.2 suite either. */
	p = popen(
	    "'" MHS_BUILD_DIR "/router/mhs-router' --tls-ciphers "
	    "'NOT-A-SUITE:TLS_AES_128_GCM_SHA256' 2>&1; echo \"exit $?\"",
	    "r");
	cr_assert_not_null(p);
	while (n + 1 < sizeof(out) &&
	    fgets(out + n, (int) (sizeof(out) - n), p) != NULL)
		n = strlen(out);
	pclose(p);
	cr_assert_not_null(strstr(out, "exit 2"), "%s", out);
	cr_assert_not_null(strstr(out, "tls-ciphers"), "%s", out);
	cr_assert_not_null(strstr(out, "NOT-A-SUITE"), "%s", out);
	passed = true;
}

Test(router_faults, tls_curves_naming_an_unknown_group_stop_the_router)
{
	char out[1024] = "";
	size_t n = 0;
	FILE *p;

	p = popen("'" MHS_BUILD_DIR "/router/mhs-router' --tls-curves "
	          "'P-256:NOT-A-GROUP' 2>&1; echo \"exit $?\"",
	    "r");
	cr_assert_not_null(p);
	while (n + 1 < sizeof(out) &&
	    fgets(out + n, (int) (sizeof(out) - n), p) != NULL)
		n = strlen(out);
	pclose(p);
	cr_assert_not_null(strstr(out, "exit 2"), "%s", out);
	cr_assert_not_null(strstr(out, "tls-curves"), "%s", out);
	cr_assert_not_null(strstr(out, "NOT-A-GROUP"), "%s", out);
	passed = true;
}
