/*
 * Design notes: mhs-gateway's guarantees on the real stack (issue 4).
 * Each test starts the stack (scripts/run: Redis, store, routers, Spine
 * simulator, gateway) and, where it needs flags of its own, a second
 * mhs-gateway beside it against the stack's store (ipc://DIR/store.ipc)
 * with its own clients file: an admin client (the stack's token) and a
 * pharmacy that may only Submit and GetStatus as FA565. That gateway
 * listens on tcp://, ipc:// and tls+tcp:// (the stack's demo CA signs its
 * server certificate and the partner's client certificate).
 *
 * Proves: the whole bad-input matrix answers the exact code and the
 * gateway still serves afterwards; TLS client certificates; per-client
 * rate limit and in-flight cap (8 with retry-after-ms); deadlines (4);
 * drain on SIGTERM with requests in flight (they finish, exit 0); health
 * and readiness while the store is stopped (SIGSTOP) and started again.
 *
 * Waits are bounded polls of a condition (a metric, /readyz, a reply);
 * no assertion depends on how fast anything runs.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/store/v1/store.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"
#include "stack.h"
#include "util.h"

#define SUBMIT      "/mhs.v1.Prescriptions/Submit"
#define GET_STATUS  "/mhs.v1.Prescriptions/GetStatus"
#define SEARCH      "/mhs.v1.Prescriptions/Search"
#define DEAD        "/mhs.v1.Admin/ListDeadLetters"
#define HEALTH      "/grpc.health.v1.Health/Check"
#define PHARM_TOKEN "pharmacy-fa565-test-token"
#define WAIT_MS     30000 /* bound of every wait for a condition */

typedef Mhs__Rpc__V1__Response response;

static struct stack stk;
static pid_t gw_pid;
static char gw_tcp[64], gw_ipc[320], gw_tls[64], gw_http[64];
static char admin[160], pharm[160];
static nng_socket sock; /* REQ to the gateway under test */

/* ---- the stack and a gateway of our own ---- */

static void
setup(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	cr_assert(stack_start(&stk, 1), "the stack did not start");
	snprintf(admin, sizeof(admin), "Bearer %s", stk.token);
	snprintf(pharm, sizeof(pharm), "Bearer %s", PHARM_TOKEN);
}

static void
teardown(void)
{
	pid_t store = stack_pid(&stk, "store");
	bool restarted, stopped, clean;

	if (store > 0)
		kill(store, SIGCONT); /* in case a test stopped it */
	nng_close(sock);
	if (gw_pid > 0) {
		kill(gw_pid, SIGTERM);
		if (stack_wait_exit(gw_pid, WAIT_MS) == -1) {
			kill(gw_pid, SIGKILL);
			waitpid(gw_pid, NULL, 0);
		}
	}
	if (stk.pid <= 0)
		return;
	restarted = stack_restarts(&stk);
	stopped = stack_stop(&stk);
	clean = stack_sanitizer_clean(&stk);
	if (stopped && clean && !restarted)
		stack_cleanup(&stk);
	cr_assert(
	    !restarted, "a process was restarted; see %s/run.out", stk.dir);
	cr_assert(stopped, "scripts/run did not stop cleanly");
	cr_assert(
	    clean, "a sanitizer reported an error; see %s/logs", stk.dir);
}

static void
clients_write(const char *path)
{
	uint8_t h[32];
	char admin_hex[65], pharm_hex[65];
	FILE *f;

	mhs_sha256(stk.token, strlen(stk.token), h);
	mhs_hex(h, 32, admin_hex);
	mhs_sha256(PHARM_TOKEN, strlen(PHARM_TOKEN), h);
	mhs_hex(h, 32, pharm_hex);
	cr_assert_not_null(f = fopen(path, "w"));
	fprintf(f, "admin %s * *\n", admin_hex);
	fprintf(f,
	    "pharm %s mhs.v1.Prescriptions/Submit,"
	    "mhs.v1.Prescriptions/GetStatus FA565\n",
	    pharm_hex);
	fclose(f);
	chmod(path, 0600);
}

static bool
wait_http(const char *url, int want)
{
	for (int i = 0; i < WAIT_MS / 50; i++) {
		if (stack_probe_get(url, NULL) == want)
			return true;
		usleep(50000);
	}
	return false;
}

static nng_socket
req_open(const char *url)
{
	nng_socket s;

	cr_assert_eq(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 10);
	nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 200);
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
	cr_assert_eq(nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK), 0);
	return s;
}

/* gw_start runs our gateway with extra flags (NULL-terminated) and opens
 * `sock` to its tcp:// listener once /readyz says 200. */
static void
gw_start(const char *extra, ...)
{
	char clients[300], store[320], listen[500], cert[300], key[300],
	    ca[300], readyz[100];
	const char *argv[40] = {MHS_GATEWAY_BIN, "--listen", listen, "--http",
	    gw_http, "--store", store, "--clients", clients, "--tls-cert",
	    cert, "--tls-key", key, "--tls-client-ca", ca};
	int argc = 15, base = stack_free_ports(3);
	va_list ap;

	cr_assert(base > 0, "no free ports");
	snprintf(gw_tcp, sizeof(gw_tcp), "tcp://127.0.0.1:%d", base);
	snprintf(gw_http, sizeof(gw_http), "http://127.0.0.1:%d", base + 1);
	snprintf(gw_tls, sizeof(gw_tls), "tls+tcp://127.0.0.1:%d", base + 2);
	snprintf(gw_ipc, sizeof(gw_ipc), "ipc://%s/gw-test.ipc", stk.dir);
	snprintf(listen, sizeof(listen), "%s,%s,%s", gw_tcp, gw_ipc, gw_tls);
	snprintf(store, sizeof(store), "ipc://%s/store.ipc", stk.dir);
	snprintf(clients, sizeof(clients), "%s/gw-test-clients", stk.dir);
	snprintf(cert, sizeof(cert), "%s/certs/spine.pem", stk.dir);
	snprintf(key, sizeof(key), "%s/certs/spine.key", stk.dir);
	snprintf(ca, sizeof(ca), "%s/certs/ca.pem", stk.dir);
	clients_write(clients);
	va_start(ap, extra);
	for (const char *a = extra; a != NULL && argc < 39;
	     a = va_arg(ap, const char *))
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	gw_pid = stack_spawn(&stk, "gw-test", (char *const *) argv);
	cr_assert(gw_pid > 0);
	snprintf(readyz, sizeof(readyz), "%s/readyz", gw_http);
	cr_assert(wait_http(readyz, 200), "our gateway did not become ready");
	sock = req_open(gw_tcp);
}

/* ---- calls ---- */

static response *
raw_call(nng_socket s, const void *buf, size_t len, int timeout_ms)
{
	nng_msg *msg;
	response *r;

	cr_assert_eq(nng_msg_alloc(&msg, len), 0);
	if (len > 0)
		memcpy(nng_msg_body(msg), buf, len);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
	if (nng_sendmsg(s, msg, 0) != 0) {
		nng_msg_free(msg);
		return NULL;
	}
	if (nng_recvmsg(s, &msg, 0) != 0)
		return NULL;
	r = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	cr_assert_not_null(r, "the reply is not an mhs.rpc.v1.Response");
	return r;
}

static nng_msg *
request_msg(const char *method, const ProtobufCMessage *payload,
    const char *bearer, uint32_t timeout_ms)
{
	struct mhs_rpc_meta meta[2] = {
	    {"x-request-id", "gw-test-1"}, {"authorization", bearer}};
	nng_msg *msg;

	cr_assert_eq(mhs_rpc_request_msg(&msg, method, payload, meta,
	                 bearer != NULL ? 2 : 1, timeout_ms),
	    0);
	return msg;
}

static response *
call_on(nng_socket s, const char *method, const ProtobufCMessage *payload,
    const char *bearer, uint32_t timeout_ms)
{
	nng_msg *msg = request_msg(method, payload, bearer, timeout_ms);
	response *r =
	    raw_call(s, nng_msg_body(msg), nng_msg_len(msg), WAIT_MS);

	nng_msg_free(msg);
	return r;
}

static response *
call(const char *method, const ProtobufCMessage *payload, const char *bearer)
{
	return call_on(sock, method, payload, bearer, 0);
}

/* code_of frees r and returns its code (-1: no reply). */
static int
code_of(response *r)
{
	int code = r != NULL ? r->code : -1;

	mhs__rpc__v1__response__free_unpacked(r, NULL);
	return code;
}

static const char *
meta_of(const response *r, const char *key)
{
	for (size_t i = 0; r != NULL && i < r->n_metadata; i++)
		if (strcmp(r->metadata[i]->key, key) == 0)
			return r->metadata[i]->value;
	return NULL;
}

/* expect_code asserts the code and a fragment of the message. */
static void
expect_code(response *r, int code, const char *fragment, const char *row)
{
	cr_assert_not_null(r, "%s: no reply", row);
	cr_assert_eq(r->code, code, "%s: code %d, expected %d (%s)", row,
	    r->code, code, r->message);
	cr_assert(fragment == NULL || strstr(r->message, fragment) != NULL,
	    "%s: message \"%s\" does not name \"%s\"", row, r->message,
	    fragment);
	mhs__rpc__v1__response__free_unpacked(r, NULL);
}

static int
health_on(nng_socket s, const char *service)
{
	Grpc__Health__V1__HealthCheckRequest hc =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *hr;
	response *r;
	int status;

	hc.service = (char *) service;
	r = call_on(s, HEALTH, &hc.base, NULL, 0);
	cr_assert_not_null(r, "Health/Check: no reply");
	if (r->code != 0)
		return -code_of(r);
	hr = grpc__health__v1__health_check_response__unpack(
	    NULL, r->payload.len, r->payload.data);
	cr_assert_not_null(hr);
	status = hr->status;
	grpc__health__v1__health_check_response__free_unpacked(hr, NULL);
	code_of(r);
	return status;
}

#define SERVING                                                               \
	GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING                                                           \
	GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

static void
still_serves(const char *row)
{
	cr_assert_eq(health_on(sock, ""), SERVING,
	    "after %s the gateway no longer serves", row);
}

/* A valid Submit: strings live in the struct. */
struct submit {
	Mhs__V1__SubmitRequest rq;
	char key[64], nhs[11], rx[21], body[128];
};

static Mhs__V1__SubmitRequest *
submit_init(struct submit *s, unsigned seed, const char *ods)
{
	Mhs__V1__SubmitRequest init = MHS__V1__SUBMIT_REQUEST__INIT;

	s->rq = init;
	snprintf(
	    s->key, sizeof(s->key), "gw-test-%u-%d", seed, (int) getpid());
	test_nhs_number(seed, s->nhs);
	test_rx_id(seed, s->rx);
	snprintf(s->body, sizeof(s->body),
	    "<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"><id root=\"%u\"/>"
	    "</PORX_IN020101SM31>",
	    seed);
	s->rq.idempotency_key = s->key;
	s->rq.interaction_id = "PORX_IN020101SM31";
	s->rq.prescription_id = s->rx;
	s->rq.nhs_number = s->nhs;
	s->rq.sender_ods = (char *) ods;
	s->rq.content_type = "text/xml";
	s->rq.payload.data = (uint8_t *) s->body;
	s->rq.payload.len = strlen(s->body);
	return &s->rq;
}

static response *
get_status(const char *bearer)
{
	Mhs__V1__GetStatusRequest gs = MHS__V1__GET_STATUS_REQUEST__INIT;
	char id[37];

	cr_assert_eq(mhs_uuid_upper(id), 0);
	gs.message_id = id;
	return call(GET_STATUS, &gs.base, bearer);
}

static bool
wait_metric(const char *http, const char *name, double want)
{
	for (int i = 0; i < WAIT_MS / 50; i++) {
		if (stack_metric(http, name) == want)
			return true;
		usleep(50000);
	}
	return false;
}

/* ---- requests left in flight (nng contexts) ---- */

struct pending {
	nng_ctx ctx;
	nng_aio *aio;
};

static void
pending_start(struct pending *p, nng_socket s, nng_msg *msg)
{
	cr_assert_eq(nng_aio_alloc(&p->aio, NULL, NULL), 0);
	cr_assert_eq(nng_ctx_open(&p->ctx, s), 0);
	nng_aio_set_timeout(p->aio, WAIT_MS * 2);
	nng_aio_set_msg(p->aio, msg);
	nng_ctx_send(p->ctx, p->aio);
	nng_aio_wait(p->aio);
	cr_assert_eq(nng_aio_result(p->aio), 0, "send failed");
	nng_ctx_recv(p->ctx, p->aio);
}

/* pending_reply waits for p's reply (NULL if none came) and frees p. */
static response *
pending_reply(struct pending *p)
{
	response *r = NULL;
	nng_msg *msg;

	nng_aio_wait(p->aio);
	if (nng_aio_result(p->aio) == 0) {
		msg = nng_aio_get_msg(p->aio);
		r = mhs__rpc__v1__response__unpack(
		    NULL, nng_msg_len(msg), nng_msg_body(msg));
		nng_msg_free(msg);
	}
	nng_ctx_close(p->ctx);
	nng_aio_free(p->aio);
	return r;
}

static int
pending_code(struct pending *p)
{
	return code_of(pending_reply(p));
}

static pid_t
store_stop(void)
{
	pid_t store = stack_pid(&stk, "store");

	cr_assert(store > 0, "no store pid");
	cr_assert_eq(kill(store, SIGSTOP), 0);
	return store;
}

/* ---- the bad-input matrix ---- */

static void
matrix_wire(void)
{
	static const uint8_t garbage[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	struct submit s;
	nng_msg *msg;

	expect_code(raw_call(sock, garbage, sizeof(garbage), WAIT_MS), 3,
	    "not an mhs.rpc.v1.Request", "garbage bytes");
	still_serves("garbage bytes");
	/* Empty bytes are an empty Request: method "" is no method. */
	expect_code(raw_call(sock, "", 0, WAIT_MS), 12, "unknown method",
	    "empty message");
	still_serves("empty message");
	/* Cut inside the payload field (after method and the payload's
	 * tag and length): undecodable. */
	msg =
	    request_msg(SUBMIT, &submit_init(&s, 1, "FA565")->base, admin, 0);
	expect_code(
	    raw_call(sock, nng_msg_body(msg), strlen(SUBMIT) + 12, WAIT_MS), 3,
	    "not an mhs.rpc.v1.Request", "truncated protobuf");
	nng_msg_free(msg);
	still_serves("truncated protobuf");
}

static void
matrix_types(void)
{
	Mhs__V1__MessageStatus ms = MHS__V1__MESSAGE_STATUS__INIT;
	struct submit s;

	/* Field 6 is a string in SubmitRequest, an enum here. */
	ms.message_id = "x";
	ms.state = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED;
	expect_code(call(SUBMIT, &ms.base, admin), 3,
	    "not a valid mhs.v1.SubmitRequest", "wrong payload type (decode)");
	still_serves("wrong payload type");
	/* Decodes, but with fields GetStatusRequest does not have. */
	expect_code(
	    call(GET_STATUS, &submit_init(&s, 2, "FA565")->base, admin), 3,
	    "is not part of mhs.v1.GetStatusRequest",
	    "wrong payload type (unknown fields)");
	still_serves("wrong payload type");
}

static void
matrix_sizes(void)
{
	static uint8_t big[20000];
	Mhs__V1__GetStatusRequest gs = MHS__V1__GET_STATUS_REQUEST__INIT;
	struct submit s;
	Mhs__V1__SubmitRequest *rq = submit_init(&s, 3, "FA565");
	response *r;
	nng_msg *msg;

	/* Over --max-request-bytes 4096, within the grace: answered. */
	gs.message_id = (char *) memset(big, 'A', 5000);
	big[5000] = '\0';
	expect_code(call(GET_STATUS, &gs.base, admin), 3,
	    "request:", "oversize request");
	still_serves("oversize request");
	/* Beyond --oversize-grace-bytes: nng drops the connection unread,
	 * so no reply; the gateway serves the reconnected client. */
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	msg = request_msg(GET_STATUS, &gs.base, admin, 0);
	r = raw_call(sock, nng_msg_body(msg), nng_msg_len(msg), 2000);
	nng_msg_free(msg);
	cr_assert_null(r, "a request beyond the grace must not be answered");
	still_serves("request beyond the grace");
	/* Over --max-payload-bytes 1024, under the request limit. */
	memset(big, 'x', 2000);
	rq->payload.data = big;
	rq->payload.len = 2000;
	expect_code(
	    call(SUBMIT, &rq->base, admin), 3, "payload:", "oversize payload");
	still_serves("oversize payload");
}

static void
matrix_auth(void)
{
	Mhs__V1__SearchRequest sr = MHS__V1__SEARCH_REQUEST__INIT;
	Mhs__V1__ListDeadLettersRequest dl =
	    MHS__V1__LIST_DEAD_LETTERS_REQUEST__INIT;
	struct submit s;
	response *r;

	expect_code(get_status(NULL), 16, "bearer", "no token");
	expect_code(
	    get_status("Bearer wrong-token"), 16, "bearer", "wrong token");
	expect_code(get_status("Basic abc"), 16, "bearer", "not a bearer");
	sr.sender_ods = "FA565";
	expect_code(call(SEARCH, &sr.base, pharm), 7, "may not call",
	    "method not allowed");
	expect_code(call(DEAD, &dl.base, pharm), 7, "may not call",
	    "admin method for a non-admin");
	expect_code(call(SUBMIT, &submit_init(&s, 4, "FB123")->base, pharm), 7,
	    "sender_ods", "sender ODS not allowed");
	expect_code(call(SUBMIT, &submit_init(&s, 5, "FA565")->base, pharm), 0,
	    NULL, "the pharmacy as itself");
	r = call(DEAD, &dl.base, admin); /* 12 until the store serves it */
	cr_assert(r != NULL && (r->code == 0 || r->code == 12),
	    "an admin client must reach ListDeadLetters");
	code_of(r);
	still_serves("authorisation rows");
}

static void
matrix_validation(void)
{
	struct submit s;
	Mhs__V1__SubmitRequest *rq = submit_init(&s, 6, "FA565");

	expect_code(call("/mhs.v1.Nope/Nope", &rq->base, admin), 12,
	    "unknown method", "unknown method");
	rq->nhs_number = "9434765918";
	expect_code(call(SUBMIT, &rq->base, admin), 3, "nhs_number",
	    "invalid NHS number");
	rq->nhs_number = s.nhs;
	rq->prescription_id = "04F4C2-A99968-7F717Q";
	expect_code(call(SUBMIT, &rq->base, admin), 3, "prescription_id",
	    "invalid prescription ID check character");
	rq->prescription_id = s.rx;
	rq->interaction_id = "PORX_IN999999SM99";
	expect_code(call(SUBMIT, &rq->base, admin), 3, "interaction_id",
	    "unknown interaction");
	rq->interaction_id = "PORX_IN020101SM31";
	rq->idempotency_key = "";
	expect_code(call(SUBMIT, &rq->base, admin), 3, "idempotency_key",
	    "missing idempotency key");
	rq->idempotency_key = s.key;
	expect_code(call(SUBMIT, &rq->base, admin), 0, NULL, "valid Submit");
}

static void
matrix_metrics(void)
{
	static const char *const reasons[] = {
	    "oversize", "auth", "permission", "validation", "unknown_method"};
	char name[100];

	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		snprintf(name, sizeof(name),
		    "mhs_gateway_rejects_total{reason=\"%s\"}", reasons[i]);
		cr_assert_gt(
		    stack_metric(gw_http, name), 0, "%s not counted", name);
	}
	cr_assert_eq(stack_metric(gw_http,
	                 "mhs_gateway_rejects_total{reason="
	                 "\"rate\"}"),
	    0);
	cr_assert_gt(
	    stack_metric(gw_http, "mhs_gateway_request_seconds_count"), 0);
	cr_assert_gt(
	    stack_metric(gw_http, "mhs_gateway_store_seconds_count"), 0);
}

Test(
    gateway, bad_input_matrix, .init = setup, .fini = teardown, .timeout = 300)
{
	response *r;
	nng_socket ipc;

	gw_start("--max-request-bytes", "4096", "--oversize-grace-bytes",
	    "8192", "--max-payload-bytes", "1024", NULL);
	matrix_wire();
	matrix_types();
	matrix_sizes();
	matrix_auth();
	matrix_validation();
	/* x-request-id is echoed, on refusals too. */
	r = get_status(NULL);
	cr_assert_str_eq(meta_of(r, "x-request-id"), "gw-test-1");
	code_of(r);
	matrix_metrics();
	/* The ipc:// listener serves the same. */
	ipc = req_open(gw_ipc);
	cr_assert_eq(health_on(ipc, ""), SERVING);
	nng_close(ipc);
}

/* ---- TLS ---- */

static void
tls_client_files(char partner[300], char intruder[300])
{
	char cmd[2400], d[264];

	snprintf(d, sizeof(d), "%.250s/gw-test-pki", stk.dir);
	snprintf(partner, 300, "%s/partner.pem", d);
	snprintf(intruder, 300, "%s/intruder.pem", d);
	snprintf(cmd, sizeof(cmd),
	    "(set -e; mkdir -p %s; cd %s; "
	    "cat ../certs/router.pem ../certs/router.key > partner.pem; "
	    "openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key "
	    "-out other-ca.pem -days 30 -subj /CN=other-ca; "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-nodes -keyout intruder.key -out intruder.csr -subj "
	    "/CN=intruder; "
	    "openssl x509 -req -in intruder.csr -CA other-ca.pem -CAkey "
	    "other-ca.key -CAcreateserial -out intruder.crt -days 30; "
	    "cat intruder.crt intruder.key > intruder.pem) >/dev/null 2>&1",
	    d, d);
	cr_assert_eq(system(cmd), 0, "openssl failed");
}

/* tls_open dials our tls+tcp:// listener, with cert_key (a PEM file of
 * certificate and key) or without a client certificate (NULL). */
static nng_socket
tls_open(const char *cert_key)
{
	nng_tls_config *cfg;
	nng_dialer d;
	nng_socket s;
	char ca[300];

	snprintf(ca, sizeof(ca), "%s/certs/ca.pem", stk.dir);
	cr_assert_eq(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	cr_assert_eq(nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT), 0);
	cr_assert_eq(nng_tls_config_ca_file(cfg, ca), 0);
	cr_assert_eq(nng_tls_config_server_name(cfg, "localhost"), 0);
	if (cert_key != NULL)
		cr_assert_eq(
		    nng_tls_config_cert_key_file(cfg, cert_key, NULL), 0);
	cr_assert_eq(nng_dialer_create(&d, s, gw_tls), 0);
	cr_assert_eq(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg), 0);
	nng_tls_config_free(cfg); /* the dialer holds it */
	cr_assert_eq(nng_dialer_start(d, NNG_FLAG_NONBLOCK), 0);
	return s;
}

static void
tls_refused(const char *cert_key, const char *row)
{
	nng_socket s = tls_open(cert_key);
	Grpc__Health__V1__HealthCheckRequest hc =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;

	expect_code(call_on(s, HEALTH, &hc.base, NULL, 0), 16,
	    "client certificate", row);
	nng_close(s);
}

Test(gateway, tls_client_certificates, .init = setup, .fini = teardown,
    .timeout = 300)
{
	char partner[300], intruder[300];
	struct submit s;
	nng_socket ok;

	tls_client_files(partner, intruder);
	gw_start(NULL);
	/* A certificate from the partners' CA, and the token: served. */
	ok = tls_open(partner);
	cr_assert_eq(health_on(ok, ""), SERVING);
	expect_code(
	    call_on(ok, SUBMIT, &submit_init(&s, 10, "FA565")->base, admin, 0),
	    0, NULL, "valid client certificate");
	/* Both must pass: a verified certificate with a bad token is 16. */
	expect_code(call_on(ok, SUBMIT, &submit_init(&s, 11, "FA565")->base,
	                "Bearer wrong", 0),
	    16, "bearer", "valid certificate, wrong token");
	nng_close(ok);
	tls_refused(intruder, "certificate from another CA");
	tls_refused(NULL, "no certificate when one is required");
	/* The plain listeners of the same gateway are not affected. */
	still_serves("TLS refusals");
}

/* ---- overload ---- */

Test(gateway, rate_limit_per_client, .init = setup, .fini = teardown,
    .timeout = 300)
{
	response *r = NULL;
	const char *retry;
	int admitted = 0, code = 0;

	gw_start("--rate-per-client", "1", "--burst", "3", NULL);
	/* A burst of 3 passes (NOT_FOUND from the store), then 8. */
	for (int i = 0; i < 10 && code != 8; i++) {
		mhs__rpc__v1__response__free_unpacked(r, NULL);
		r = get_status(admin);
		cr_assert_not_null(r);
		code = r->code;
		admitted += code == 5;
		cr_assert(code == 5 || code == 8, "code %d", code);
	}
	cr_assert_eq(code, 8, "10 requests at once never hit the limit");
	cr_assert_geq(admitted, 3, "the burst was not admitted");
	cr_assert_not_null(retry = meta_of(r, "retry-after-ms"));
	cr_assert_gt(atoi(retry), 0);
	code_of(r);
	/* Another client has a bucket of its own. */
	expect_code(get_status(pharm), 5, NULL, "another client");
	/* After the hinted wait the client is admitted again. */
	code = 8;
	for (int i = 0; i < 50 && code == 8; i++) {
		usleep(200000);
		code = code_of(get_status(admin));
	}
	cr_assert_eq(code, 5, "still limited after waiting");
	cr_assert_gt(stack_metric(gw_http,
	                 "mhs_gateway_rejects_total{reason="
	                 "\"rate\"}"),
	    0);
}

Test(gateway, in_flight_cap, .init = setup, .fini = teardown, .timeout = 300)
{
	struct pending p[2];
	struct submit s;
	response *r;
	pid_t store;

	/* A stopped store keeps calls in flight; a long readiness timeout
	 * keeps the gateway forwarding to it meanwhile. */
	gw_start("--max-in-flight", "2", "--store-check-timeout-ms", "600000",
	    NULL);
	store = store_stop();
	for (int i = 0; i < 2; i++)
		pending_start(&p[i], sock,
		    request_msg(SUBMIT,
		        &submit_init(&s, 20 + (unsigned) i, "FA565")->base,
		        admin, 0));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_in_flight", 2),
	    "the two calls did not reach the store");
	r = call(SUBMIT, &submit_init(&s, 22, "FA565")->base, admin);
	cr_assert_not_null(r);
	cr_assert_eq(r->code, 8, "code %d (%s)", r->code, r->message);
	cr_assert_not_null(meta_of(r, "retry-after-ms"));
	code_of(r);
	/* Local answers are not store calls: Health still answers. */
	cr_assert_eq(health_on(sock, ""), SERVING);
	kill(store, SIGCONT);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pending_code(&p[i]), 0);
	expect_code(call(SUBMIT, &submit_init(&s, 22, "FA565")->base, admin),
	    0, NULL, "after the cap cleared");
}

/* ---- batching Submits into AppendMany ---- */

/* submit_id decodes r (code 0) into its message id and duplicate flag. */
static void
submit_id(response *r, char id[37], bool *duplicate, const char *row)
{
	Mhs__V1__SubmitResponse *sr;

	cr_assert_not_null(r, "%s: no reply", row);
	cr_assert_eq(r->code, 0, "%s: code %d (%s)", row, r->code, r->message);
	sr = mhs__v1__submit_response__unpack(
	    NULL, r->payload.len, r->payload.data);
	cr_assert_not_null(sr, "%s: no SubmitResponse", row);
	snprintf(id, 37, "%s", sr->message_id);
	*duplicate = sr->duplicate;
	mhs__v1__submit_response__free_unpacked(sr, NULL);
	mhs__rpc__v1__response__free_unpacked(r, NULL);
}

/*
 * Submits that arrive while the store call is busy wait and go together
 * in one AppendMany; each gets what Append would have answered it: a new
 * message, the original id for a repeat in the same batch, 6 for a key
 * reused with other content.
 */
Test(gateway, submits_queued_behind_a_busy_call_go_as_one_batch, .init = setup,
    .fini = teardown, .timeout = 300)
{
	enum { N = 20 };
	static struct pending p[N + 2];
	struct submit s, other;
	char ids[N][37], first[37], again[37];
	bool dup;
	pid_t store;
	response *r;

	gw_start("--store-batch-calls", "1", "--store-check-timeout-ms",
	    "600000", NULL);
	store = store_stop();
	/* The first Submit takes the one call; the store is stopped. */
	pending_start(&p[0], sock,
	    request_msg(
	        SUBMIT, &submit_init(&s, 60, "FA565")->base, admin, 120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_batches_total", 1),
	    "the first Submit did not go to the store");
	/* These queue behind it: N - 1 new ones, then (once those are
	 * queued: contexts may queue in any order) a repeat of #61, then
	 * #61's key with other content. */
	for (unsigned i = 1; i < N; i++)
		pending_start(&p[i], sock,
		    request_msg(SUBMIT,
		        &submit_init(&s, 60 + i, "FA565")->base, admin,
		        120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_in_flight", N),
	    "the Submits did not all wait on the store");
	pending_start(&p[N], sock,
	    request_msg(
	        SUBMIT, &submit_init(&s, 61, "FA565")->base, admin, 120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_in_flight", N + 1));
	submit_init(&other, 61, "FA565");
	other.rq.payload.data = (uint8_t *) "<PORX_IN020101SM31 "
	                                    "xmlns=\"urn:hl7-org:v3\"/>";
	other.rq.payload.len = strlen((const char *) other.rq.payload.data);
	pending_start(&p[N + 1], sock,
	    request_msg(SUBMIT, &other.rq.base, admin, 120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_in_flight", N + 2));
	kill(store, SIGCONT);

	for (unsigned i = 0; i < N; i++) {
		char row[32];
		snprintf(row, sizeof(row), "Submit %u", i);
		submit_id(pending_reply(&p[i]), ids[i], &dup, row);
		cr_assert(
		    !dup, "%s: a new message answered as a duplicate", row);
		for (unsigned j = 0; j < i; j++)
			cr_assert_str_neq(
			    ids[i], ids[j], "%s: a repeated id", row);
	}
	submit_id(pending_reply(&p[N]), again, &dup, "repeat in the batch");
	cr_assert(dup, "the repeat was not answered as a duplicate");
	cr_assert_str_eq(again, ids[1], "the repeat got another id");
	r = pending_reply(&p[N + 1]);
	cr_assert_not_null(r);
	cr_assert_eq(r->code, 6, "key reused with other content: code %d (%s)",
	    r->code, r->message);
	mhs__rpc__v1__response__free_unpacked(r, NULL);
	/* A few calls carried all N + 2: the queued ones went in batches
	 * (the first alone; those queued more than 20 ms apart may go in
	 * separate calls). */
	cr_assert_eq(
	    stack_metric(gw_http, "mhs_gateway_store_batched_total"), N + 2);
	cr_assert_geq(
	    stack_metric(gw_http, "mhs_gateway_store_batches_total"), 2);
	cr_assert_leq(stack_metric(gw_http, "mhs_gateway_store_batches_total"),
	    4, "the queued Submits were not batched");
	/* Repeated later on its own, #60 is still the same message. */
	submit_id(call(SUBMIT, &submit_init(&s, 60, "FA565")->base, admin),
	    first, &dup, "repeat of #60");
	cr_assert(dup);
	cr_assert_str_eq(first, ids[0]);
}

/* A Submit queued behind a call the store does not answer is answered 4
 * at its own deadline, not when that call gives up. */
Test(gateway, a_queued_submit_is_answered_at_its_own_deadline, .init = setup,
    .fini = teardown, .timeout = 300)
{
	struct pending first;
	struct submit s;
	pid_t store;

	gw_start("--store-batch-calls", "1", "--store-check-timeout-ms",
	    "600000", NULL);
	store = store_stop();
	pending_start(&first, sock,
	    request_msg(
	        SUBMIT, &submit_init(&s, 80, "FA565")->base, admin, 120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_batches_total", 1));
	/* Queued: the one call waits on the stopped store for 120 s. The
	 * reply must come at this one's 500 ms deadline, well within the
	 * test's own WAIT_MS. */
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 81, "FA565")->base,
	                admin, 500),
	    4, "deadline", "queued Submit past its deadline");
	kill(store, SIGCONT);
	cr_assert_eq(pending_code(&first), 0);
}

/* The store checks an AppendMany as a whole before it queues any of it. */
Test(gateway, store_refuses_an_empty_or_oversize_append_many, .init = setup,
    .fini = teardown, .timeout = 300)
{
	static Mhs__Store__V1__AppendRequest ar[1025];
	static Mhs__Store__V1__AppendRequest *arp[1025];
	Mhs__Store__V1__AppendManyRequest rq =
	    MHS__STORE__V1__APPEND_MANY_REQUEST__INIT;
	Mhs__Store__V1__AppendManyResponse *resp = NULL;
	struct mhs_client *st;
	struct submit s;
	char url[400], *why = NULL;

	snprintf(url, sizeof(url), "ipc://%s/store.ipc", stk.dir);
	cr_assert_eq(mhs_client_open(&st, url), 0);
	cr_assert_eq(mhs_client_call(st, "/mhs.store.v1.Store/AppendMany",
	                 &rq.base, NULL, NULL, NULL, 0, WAIT_MS, &why),
	    3, "empty AppendMany");
	free(why);
	submit_init(&s, 70, "FA565");
	for (size_t i = 0; i < 1025; i++) {
		mhs__store__v1__append_request__init(&ar[i]);
		ar[i].submit = &s.rq;
		ar[i].client_id = "test";
		arp[i] = &ar[i];
	}
	rq.appends = arp;
	rq.n_appends = 1025;
	cr_assert_eq(mhs_client_call(st, "/mhs.store.v1.Store/AppendMany",
	                 &rq.base, NULL, NULL, NULL, 0, WAIT_MS, NULL),
	    3, "1025 appends");
	/* Nothing of it was journaled: one Append is a new message. */
	rq.n_appends = 1;
	cr_assert_eq(
	    mhs_client_call(st, "/mhs.store.v1.Store/AppendMany", &rq.base,
	        &mhs__store__v1__append_many_response__descriptor,
	        (ProtobufCMessage **) &resp, NULL, 0, WAIT_MS, NULL),
	    0, "one append");
	cr_assert_eq(resp->n_results, 1);
	cr_assert_eq(resp->results[0]->code, 0);
	cr_assert_not_null(resp->results[0]->response);
	cr_assert(!resp->results[0]->response->duplicate,
	    "a refused AppendMany left something behind");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	mhs_client_close(st);
}

/* ---- deadlines ---- */

Test(gateway, deadlines, .init = setup, .fini = teardown, .timeout = 300)
{
	struct submit s;
	pid_t store;

	gw_start("--store-check-timeout-ms", "600000", "--default-timeout-ms",
	    "300", "--max-timeout-ms", "1000", NULL);
	store = store_stop();
	/* The caller's deadline passes while the store is silent. */
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 30, "FA565")->base,
	                admin, 200),
	    4, "deadline", "expired deadline");
	/* No timeout_ms: the default deadline. */
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 31, "FA565")->base,
	                admin, 0),
	    4, "deadline", "default deadline");
	/* A longer deadline than allowed is cut to --max-timeout-ms (the
	 * client would otherwise wait 10 minutes, far past WAIT_MS). */
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 32, "FA565")->base,
	                admin, 600000),
	    4, "deadline", "deadline above the maximum");
	kill(store, SIGCONT);
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 33, "FA565")->base,
	                admin, 60000),
	    0, NULL, "after the store resumed");
	cr_assert_gt(stack_metric(gw_http,
	                 "mhs_gateway_rejects_total{reason="
	                 "\"deadline\"}"),
	    2);
}

/* ---- shutdown ---- */

Test(
    gateway, drain_on_sigterm, .init = setup, .fini = teardown, .timeout = 300)
{
	struct pending p[3];
	struct submit s;
	char readyz[100];
	pid_t store;
	int st;

	gw_start("--store-check-timeout-ms", "600000", "--drain-timeout-ms",
	    "120000", NULL);
	store = store_stop();
	for (int i = 0; i < 3; i++)
		pending_start(&p[i], sock,
		    request_msg(SUBMIT,
		        &submit_init(&s, 40 + (unsigned) i, "FA565")->base,
		        admin, 120000));
	cr_assert(wait_metric(gw_http, "mhs_gateway_store_in_flight", 3));
	cr_assert_eq(kill(gw_pid, SIGTERM), 0);
	snprintf(readyz, sizeof(readyz), "%s/readyz", gw_http);
	cr_assert(wait_http(readyz, 503), "readiness did not go 503");
	/* New requests are refused at once; Health says NOT_SERVING. */
	expect_code(call(SUBMIT, &submit_init(&s, 43, "FA565")->base, admin),
	    14, "shutting down", "request while draining");
	cr_assert_eq(health_on(sock, ""), NOT_SERVING);
	cr_assert_eq(stack_wait_exit(gw_pid, 0), -1, "exited before drained");
	/* The requests in flight finish, then the gateway exits 0. */
	kill(store, SIGCONT);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(
		    pending_code(&p[i]), 0, "in-flight request %d", i);
	st = stack_wait_exit(gw_pid, WAIT_MS);
	cr_assert(st != -1, "the gateway did not exit after draining");
	gw_pid = 0;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}

/* ---- health and readiness of the stack's gateway ---- */

Test(gateway, health_follows_the_store, .init = setup, .fini = teardown,
    .timeout = 300)
{
	char readyz[200];
	struct submit s;
	pid_t store;

	sock = req_open(stk.gateway_url);
	snprintf(readyz, sizeof(readyz), "%s/readyz", stk.http_url);
	cr_assert_eq(stack_probe_get(readyz, NULL), 200);
	cr_assert_eq(health_on(sock, "mhs.v1.Prescriptions"), SERVING);
	store = store_stop();
	cr_assert(wait_http(readyz, 503), "readiness stayed 200");
	cr_assert_eq(health_on(sock, ""), NOT_SERVING);
	cr_assert_eq(health_on(sock, "mhs.v1.Prescriptions"), NOT_SERVING);
	cr_assert_eq(health_on(sock, "no.such.Service"), -5);
	/* Not ready: refused at once with 14, not held to the deadline. */
	expect_code(call_on(sock, SUBMIT, &submit_init(&s, 50, "FA565")->base,
	                admin, 600000),
	    14, "store", "Submit while the store is stopped");
	kill(store, SIGCONT);
	cr_assert(wait_http(readyz, 200), "readiness did not come back");
	cr_assert_eq(health_on(sock, ""), SERVING);
	expect_code(call(SUBMIT, &submit_init(&s, 50, "FA565")->base, admin),
	    0, NULL, "Submit after the store resumed");
	cr_assert_eq(stack_metric(stk.http_url, "mhs_gateway_ready"), 1);
}

/* submitted_id submits s with bearer and returns its message_id. */
static void
submitted_id(struct submit *s, const char *bearer, char id[37])
{
	response *r = call(SUBMIT, &s->rq.base, bearer);
	Mhs__V1__SubmitResponse *sr;

	cr_assert(r != NULL && r->code == 0, "submit: %s",
	    r != NULL ? r->message : "no reply");
	sr = mhs__v1__submit_response__unpack(
	    NULL, r->payload.len, r->payload.data);
	cr_assert_not_null(sr);
	snprintf(id, 37, "%s", sr->message_id);
	mhs__v1__submit_response__free_unpacked(sr, NULL);
	code_of(r);
}

Test(gateway, reads_are_scoped_to_the_callers_organisations, .init = setup,
    .fini = teardown, .timeout = 300)
{
	Mhs__V1__GetStatusRequest gs = MHS__V1__GET_STATUS_REQUEST__INIT;
	struct submit s;
	char own[37], other[37];

	/* A pharmacy sees its own messages, and another organisation's
	 * message is unknown to it (its existence is not disclosed). */
	gw_start(NULL);
	submit_init(&s, 60, "FA565");
	submitted_id(&s, pharm, own);
	submit_init(&s, 61, "FB123");
	submitted_id(&s, admin, other);
	gs.message_id = own;
	expect_code(call(GET_STATUS, &gs.base, pharm), 0, NULL, "own message");
	gs.message_id = other;
	expect_code(call(GET_STATUS, &gs.base, pharm), 5, "no such message",
	    "another organisation's message");
	expect_code(call(GET_STATUS, &gs.base, admin), 0, NULL,
	    "an operator sees every message");
}
