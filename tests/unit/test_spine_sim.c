/*
 * Design notes: proves mhs-spine-sim's contract (DESIGN §5, SPINE-EBXML.md
 * §3-4, tools/spine-sim/README.md) against the real binary: every test
 * gets a throwaway CA, server and client certificate (openssl CLI, EC
 * P-256), a sim on a free 127.0.0.1 port with client certificates
 * required, and talks to it with libcurl exactly as the router will.
 * Replies are judged with mhs_ebxml_classify, so the router's view and the
 * sim's behaviour are tested together. The message table and the config
 * reader are also tested in-process ("spine_sim_table", "spine_sim_json").
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <curl/curl.h>

#include "ebxml.h"
#include "error.h"
#include "sim.h"
#include "util.h"

extern char **environ;

static struct {
	char dir[64];
	char base[64]; /* https://127.0.0.1:PORT */
	pid_t pid;
	bool respond; /* send async responses to the sim itself */
} fx;

/* ---- fixture ---- */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static void
certs_make(const char *d)
{
	const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	                 "-nodes";

	sh("(cd %s && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n'"
	   " > san.cnf && "
	   "openssl req -x509 %s -keyout ca.key -out ca.pem -days 1 "
	   "-subj /CN=mhs-test-ca && "
	   "openssl req %s -keyout server.key -out server.csr "
	   "-subj /CN=localhost && "
	   "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
	   "-CAcreateserial -out server.pem -days 1 -extfile san.cnf && "
	   "openssl req %s -keyout client.key -out client.csr "
	   "-subj /CN=mhs-router && "
	   "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
	   "-CAcreateserial -out client.pem -days 1) >/dev/null 2>&1",
	    d, ec, ec, ec);
}

static int
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0);
	cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

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

/* One request; with_cert false leaves out the client certificate. */
static CURL *
req_new(const char *method, const char *path, struct curl_slist *hdrs,
    const void *body, size_t len, bool with_cert, struct reply *r)
{
	CURL *c = curl_easy_init();
	char url[256], f[128];

	cr_assert_not_null(c);
	memset(r, 0, sizeof(*r));
	snprintf(url, sizeof(url), "%s%s", fx.base, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	snprintf(f, sizeof(f), "%s/ca.pem", fx.dir);
	curl_easy_setopt(c, CURLOPT_CAINFO, f);
	if (with_cert) {
		snprintf(f, sizeof(f), "%s/client.pem", fx.dir);
		curl_easy_setopt(c, CURLOPT_SSLCERT, f);
		snprintf(f, sizeof(f), "%s/client.key", fx.dir);
		curl_easy_setopt(c, CURLOPT_SSLKEY, f);
	}
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long) len);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reply_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	return c;
}

static void
req_done(CURL *c, struct reply *r)
{
	char *ct = NULL;

	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof(r->ctype), "%s", ct != NULL ? ct : "");
	mhs_buf_append(&r->body, "", 0); /* NUL-terminated even if empty */
	curl_easy_cleanup(c);
}

static void
http(const char *method, const char *path, const char *json, struct reply *r)
{
	struct curl_slist *h = curl_slist_append(NULL, "Expect:");
	CURL *c =
	    req_new(method, path, h, json, json ? strlen(json) : 0, true, r);

	r->rc = curl_easy_perform(c);
	req_done(c, r);
	curl_slist_free_all(h);
}

static void
sim_start(void)
{
	char listen[64], cert[96], key[96], ca[96], logf[96], ccert[96];
	char ckey[96];
	char *argv[32] = {MHS_SPINE_SIM_BIN, "--listen", listen, "--cert",
	    cert, "--key", key, "--client-ca", ca, "--log-level", "warn"};
	posix_spawn_file_actions_t fa;
	int64_t deadline;
	struct reply r;

	snprintf(
	    fx.base, sizeof(fx.base), "https://127.0.0.1:%d", free_port());
	snprintf(listen, sizeof(listen), "%s", fx.base);
	snprintf(cert, sizeof(cert), "%s/server.pem", fx.dir);
	snprintf(key, sizeof(key), "%s/server.key", fx.dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", fx.dir);
	snprintf(logf, sizeof(logf), "%s/sim.log", fx.dir);
	snprintf(ccert, sizeof(ccert), "%s/client.pem", fx.dir);
	snprintf(ckey, sizeof(ckey), "%s/client.key", fx.dir);
	if (fx.respond) { /* the sim answers its own responses: 202 + ack */
		char *more[] = {"--respond-url", fx.base, "--respond-cert",
		    ccert, "--respond-key", ckey, "--respond-ca", ca,
		    "--respond-delay-ms", "50", NULL};
		memcpy(argv + 11, more, sizeof(more));
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(
	    &fa, 2, logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
	cr_assert_eq(
	    posix_spawn(&fx.pid, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	for (deadline = mhs_mono_ms() + 10000;; usleep(20000)) {
		http("GET", "/_sim/config", NULL, &r);
		mhs_buf_fini(&r.body);
		if (r.rc == CURLE_OK && r.status == 200)
			return;
		cr_assert(waitpid(fx.pid, NULL, WNOHANG) == 0, "sim exited");
		cr_assert(mhs_mono_ms() < deadline, "sim never became ready");
	}
}

static void
sim_setup(void)
{
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/mhs-spine-sim-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	certs_make(fx.dir);
	sim_start();
}

/* Stops the sim with SIGTERM: it must exit 0. */
static int
sim_stop(void)
{
	int st = -1;

	if (fx.pid > 0) {
		kill(fx.pid, SIGTERM);
		waitpid(fx.pid, &st, 0);
		fx.pid = 0;
	}
	return st;
}

static void
sim_teardown(void)
{
	bool running = fx.pid > 0, clean;
	int st = sim_stop();

	clean = !running || (WIFEXITED(st) && WEXITSTATUS(st) == 0);

	if (!clean)
		sh("cat %s/sim.log >&2", fx.dir);
	sh("rm -rf %s", fx.dir);
	curl_global_cleanup();
	/* A sim that died, or a sanitizer report at exit, fails the test. */
	cr_assert(clean, "mhs-spine-sim exit status %d", st);
}

TestSuite(spine_sim, .init = sim_setup, .fini = sim_teardown, .timeout = 90);

/* ---- helpers ---- */

static struct mhs_ebxml_msg
msg(const char *id, bool reliable)
{
	static const char payload[] =
	    "<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"/>";
	struct mhs_ebxml_msg m = {
	    .message_id = id,
	    .conversation_id = id,
	    .interaction = "PORX_IN020101SM31",
	    .service = "urn:nhs:names:services:mm",
	    .cpa_id = "S1001A1630",
	    .from_party = "FAKE01-0000001",
	    .to_party = "YES-0000806",
	    .duplicate_elimination = reliable,
	    .ack_requested = reliable,
	    .sync_reply = true,
	    .payload = payload,
	    .payload_len = strlen(payload),
	};
	return m;
}

/* Posts a built message; soap_action NULL uses the built one. */
static CURL *
post_new(const struct mhs_ebxml_msg *m, const char *soap_action,
    struct mhs_buf *body, struct curl_slist **hdrs, struct reply *r)
{
	char ct[256], sa[256], h[300];

	cr_assert_eq(
	    mhs_ebxml_build(m, body, ct, sizeof(ct), sa, sizeof(sa)), 0);
	*hdrs = curl_slist_append(NULL, "Expect:");
	snprintf(h, sizeof(h), "Content-Type: %s", ct);
	*hdrs = curl_slist_append(*hdrs, h);
	snprintf(h, sizeof(h), "SOAPAction: %s",
	    soap_action != NULL ? soap_action : sa);
	*hdrs = curl_slist_append(*hdrs, h);
	return req_new("POST", "/reliablemessaging/reliablerequest", *hdrs,
	    body->data, body->len, true, r);
}

static enum mhs_ebxml_verdict
post(const struct mhs_ebxml_msg *m, const char *soap_action, struct reply *r)
{
	struct mhs_buf body = MHS_BUF_INIT;
	struct curl_slist *h;
	CURL *c = post_new(m, soap_action, &body, &h, r);

	r->rc = curl_easy_perform(c);
	req_done(c, r);
	curl_slist_free_all(h);
	mhs_buf_fini(&body);
	return mhs_ebxml_classify((int) r->status, r->ctype, r->body.data,
	    r->body.len, m->message_id, m->ack_requested && m->sync_reply,
	    NULL, 0);
}

static enum mhs_ebxml_verdict
post_id(const char *id, struct reply *r)
{
	struct mhs_ebxml_msg m = msg(id, true);

	return post(&m, NULL, r);
}

static void
config_put(const char *json)
{
	struct reply r;

	http("PUT", "/_sim/config", json, &r);
	cr_assert_eq(
	    r.status, 200, "%s -> %ld %s", json, r.status, r.body.data);
	mhs_buf_fini(&r.body);
}

/* The "deliveries" of id in GET /_sim/messages, or -1 when absent. */
static int
deliveries(const char *id)
{
	struct reply r;
	char key[128];
	const char *p;
	int n = -1;

	http("GET", "/_sim/messages", NULL, &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.ctype, "application/json");
	snprintf(key, sizeof(key), "{\"message_id\":\"%s\",", id);
	if ((p = strstr(r.body.data, key)) != NULL) {
		cr_assert_not_null(strstr(p,
		    "\"interaction_id\":\"PORX_IN02"
		    "0101SM31\",\"deliveries\":"));
		n = atoi(strstr(p, "\"deliveries\":") + 13);
	}
	mhs_buf_fini(&r.body);
	return n;
}

#define ID1 "AAAAAAAA-0000-4000-8000-000000000001"

/* ---- spine_sim: the contract, against the real binary ---- */

Test(spine_sim, reliable_message_is_acknowledged_and_recorded)
{
	struct reply r;

	cr_assert_eq(deliveries(ID1), -1);
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_DELIVERED, "%ld %s", r.status,
	    r.body.data);
	cr_assert_eq(r.status, 202);
	cr_assert_str_eq(r.ctype, "text/xml");
	cr_assert_not_null(strstr(r.body.data, "<eb:RefToMessageId>" ID1));
	mhs_buf_fini(&r.body);
	cr_assert_eq(deliveries(ID1), 1);
}

Test(spine_sim, replay_is_acknowledged_again)
{
	struct reply r;

	for (int i = 1; i <= 3; i++) {
		cr_assert_eq(post_id(ID1, &r), MHS_EBXML_DELIVERED);
		mhs_buf_fini(&r.body);
		cr_assert_eq(deliveries(ID1), i);
	}
	/* MessageIds compare case-insensitively. */
	cr_assert_eq(post_id("aaaaaaaa-0000-4000-8000-000000000001", &r),
	    MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert_eq(deliveries(ID1), 4);
}

Test(spine_sim, express_is_accepted_with_an_empty_202)
{
	struct mhs_ebxml_msg m = msg(ID1, false);
	struct reply r;

	cr_assert_eq(post(&m, NULL, &r), MHS_EBXML_DELIVERED);
	cr_assert_eq(r.status, 202);
	cr_assert_eq(r.body.len, 0);
	cr_assert_str_eq(r.ctype, "text/xml");
	mhs_buf_fini(&r.body);
}

Test(spine_sim, magic_retry_id_faults_twice_then_acks)
{
	const char *id = "FFFFFFF2-0000-4000-8000-000000000001";
	struct reply r;

	for (int i = 0; i < 2; i++) {
		cr_assert_eq(post_id(id, &r), MHS_EBXML_RETRY);
		cr_assert_eq(r.status, 500);
		cr_assert_str_eq(r.ctype, "text/xml");
		mhs_buf_fini(&r.body);
	}
	cr_assert_eq(post_id(id, &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert_eq(deliveries(id), 3);
}

Test(spine_sim, magic_permanent_id_always_gets_an_error_list)
{
	const char *id = "fffffffe-0000-4000-8000-000000000001";
	struct reply r;

	for (int i = 0; i < 2; i++) {
		cr_assert_eq(post_id(id, &r), MHS_EBXML_FAILED);
		cr_assert_eq(r.status, 500);
		cr_assert_not_null(strstr(r.body.data, "eb:codeContext=\""));
		cr_assert_not_null(strstr(r.body.data, "eb:errorCode=\""));
		cr_assert_not_null(strstr(r.body.data, "eb:severity=\""));
		cr_assert_not_null(strstr(r.body.data, "<eb:Description"));
		mhs_buf_fini(&r.body);
	}
	cr_assert_eq(deliveries("FFFFFFFE-0000-4000-8000-000000000001"), 2);
}

Test(spine_sim, malformed_requests_get_an_error_list)
{
	struct mhs_ebxml_msg m = msg(ID1, true);
	struct curl_slist *h =
	    curl_slist_append(NULL, "Content-Type: " MHS_EBXML_CONTENT_TYPE);
	struct reply r;
	CURL *c;

	cr_assert_eq(post(&m, "urn:nhs:names:services:mm/PORX_IN999999", &r),
	    MHS_EBXML_FAILED);
	cr_assert_eq(r.status, 500);
	cr_assert_not_null(strstr(r.body.data, "SOAPAction"));
	mhs_buf_fini(&r.body);
	/* Quoted and urn:urn: forms are Spine's own quirks: accepted. */
	cr_assert_eq(
	    post(
	        &m, "\"urn:urn:nhs:names:services:mm/PORX_IN020101SM31\"", &r),
	    MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);

	c = req_new("POST", "/x", h, "garbage", 7, true, &r);
	r.rc = curl_easy_perform(c);
	req_done(c, &r);
	cr_assert_eq(r.status, 500);
	cr_assert_eq(mhs_ebxml_classify((int) r.status, r.ctype, r.body.data,
	                 r.body.len, ID1, true, NULL, 0),
	    MHS_EBXML_FAILED);
	mhs_buf_fini(&r.body);
	curl_slist_free_all(h);
	cr_assert_eq(deliveries(ID1), 1); /* only the well-formed one */
}

Test(spine_sim, config_is_read_patched_and_validated)
{
	struct reply r;

	http("GET", "/_sim/config", NULL, &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.body.data,
	    "{\"fail_rate\":0,\"fault\":\"retriable\",\"latency_ms\":0,"
	    "\"down\":false,\"error_status\":500}\n");
	mhs_buf_fini(&r.body);
	http("PUT", "/_sim/config", "{\"fail_rate\":5, \"fault\":\"drop\"}",
	    &r);
	cr_assert_eq(r.status, 200);
	cr_assert_not_null(strstr(r.body.data,
	    "\"fail_rate\":5,\"fault\":\"drop\",\"latency_ms\":0"));
	mhs_buf_fini(&r.body);
	http("PUT", "/_sim/config", "{\"fail_rate\":\"5\"}", &r);
	cr_assert_eq(r.status, 400);
	cr_assert_not_null(strstr(r.body.data, "\"error\":"));
	mhs_buf_fini(&r.body);
	http("PUT", "/_sim/config", "{\"down\":true,\"fault\":\"x\"}", &r);
	cr_assert_eq(r.status, 400);
	mhs_buf_fini(&r.body);
	http("GET", "/_sim/config", NULL,
	    &r); /* a refused PUT changed nothing */
	cr_assert_not_null(strstr(r.body.data, "\"down\":false"));
	mhs_buf_fini(&r.body);
	http("GET", "/_sim/nope", NULL, &r);
	cr_assert_eq(r.status, 404);
	mhs_buf_fini(&r.body);
	http("POST", "/_sim/config", "{}", &r);
	cr_assert_eq(r.status, 405);
	mhs_buf_fini(&r.body);
}

Test(spine_sim, injected_faults)
{
	struct reply r;

	config_put("{\"fail_rate\":100,\"fault\":\"retriable\"}");
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_RETRY);
	mhs_buf_fini(&r.body);
	config_put("{\"fault\":\"permanent\",\"error_status\":200}");
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_FAILED);
	cr_assert_eq(r.status, 200);
	mhs_buf_fini(&r.body);
	config_put("{\"fault\":\"drop\"}");
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_UNEXPECTED);
	cr_assert_eq(r.rc, CURLE_GOT_NOTHING, "%s", curl_easy_strerror(r.rc));
	mhs_buf_fini(&r.body);
	cr_assert_eq(deliveries(ID1), 3);
	config_put("{\"fail_rate\":0,\"down\":true}");
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_UNEXPECTED);
	cr_assert_eq(r.status, 503);
	mhs_buf_fini(&r.body);
	cr_assert_eq(deliveries(ID1), 3); /* down: never reached "Spine" */
	config_put("{\"down\":false}");
	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
}

Test(spine_sim, latency_never_blocks_other_requests)
{
	enum { N = 32 };
	struct mhs_ebxml_msg m[N];
	struct mhs_buf bodies[N];
	struct curl_slist *hdrs[N];
	struct reply r[N];
	CURL *c[N];
	CURLM *multi = curl_multi_init();
	char ids[N][40];
	int64_t t0;
	int running = 1;

	config_put("{\"latency_ms\":600}");
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]),
		    "BBBBBBBB-0000-4000-8000-%012d", i);
		m[i] = msg(ids[i], true);
		bodies[i] = (struct mhs_buf) MHS_BUF_INIT;
		c[i] = post_new(&m[i], NULL, &bodies[i], &hdrs[i], &r[i]);
		curl_multi_add_handle(multi, c[i]);
	}
	t0 = mhs_mono_ms();
	while (running > 0) {
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	/* 32 replies of 600 ms each overlapped: nothing slept on a thread. */
	cr_assert_lt(mhs_mono_ms() - t0, 2000);
	for (int i = 0; i < N; i++) {
		curl_multi_remove_handle(multi, c[i]);
		req_done(c[i], &r[i]);
		cr_assert_eq(r[i].status, 202);
		mhs_buf_fini(&r[i].body);
		mhs_buf_fini(&bodies[i]);
		curl_slist_free_all(hdrs[i]);
	}
	curl_multi_cleanup(multi);
	t0 = mhs_mono_ms();
	cr_assert_eq(deliveries(ids[0]), 1); /* /_sim is never delayed */
	cr_assert_lt(mhs_mono_ms() - t0, 500);
}

Test(spine_sim, client_certificate_is_required)
{
	struct reply r;
	CURL *c = req_new("GET", "/_sim/config", NULL, NULL, 0, false, &r);

	r.rc = curl_easy_perform(c);
	req_done(c, &r);
	cr_assert_neq(r.rc, CURLE_OK);
	cr_assert_eq(r.status, 0);
	mhs_buf_fini(&r.body);
}

Test(spine_sim, messages_can_be_cleared)
{
	struct reply r;

	cr_assert_eq(post_id(ID1, &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	http("DELETE", "/_sim/messages", NULL, &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.body.data, "{\"cleared\":1}\n");
	mhs_buf_fini(&r.body);
	http("GET", "/_sim/messages", NULL, &r);
	cr_assert_str_eq(r.body.data, "[]\n");
	mhs_buf_fini(&r.body);
}

Test(spine_sim, sigterm_exits_zero)
{
	int st = sim_stop();

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
}

Test(spine_sim, bad_options_exit_two)
{
	int st;
	pid_t pid;
	char *argv[] = {MHS_SPINE_SIM_BIN, "--fault", "sometimes", NULL};
	posix_spawn_file_actions_t fa;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	cr_assert_eq(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
}

/* ---- spine_sim_table: the message table, in-process ---- */

Test(spine_sim_table, hundred_thousand_messages)
{
	struct sim_table t;
	char id[64];
	int err;

	cr_assert_eq(sim_table_init(&t, 200000), 0);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 100000; i++) {
			struct sim_msg *m;

			snprintf(id, sizeof(id), "%08X-0000-4000-8000-%012d",
			    (unsigned) i * 2654435761u, i);
			m = sim_table_get(&t, id, "PORX_IN020101SM31", &err);
			cr_assert_not_null(m);
			cr_assert_str_eq(m->id, id);
			cr_assert_eq(m->deliveries, (uint32_t) round);
			m->deliveries++;
		}
	cr_assert_eq(t.n, 100000);
	sim_table_clear(&t);
	cr_assert_eq(t.n, 0);
	cr_assert_eq(sim_table_get(&t, id, "X", &err)->deliveries, 0);
	sim_table_fini(&t);
}

Test(spine_sim_table, bounded_and_listed_in_arrival_order)
{
	struct sim_table t;
	struct mhs_buf b = MHS_BUF_INIT;
	int err;

	cr_assert_eq(sim_table_init(&t, 2), 0);
	cr_assert_not_null(sim_table_get(&t, "B", "X\"Y", &err));
	cr_assert_not_null(sim_table_get(&t, "A", "Z", &err));
	cr_assert_null(sim_table_get(&t, "C", "Z", &err));
	cr_assert_eq(err, MHS_ETOOBIG);
	cr_assert_not_null(sim_table_get(&t, "A", "Z", &err)); /* known */
	sim_table_json(&t, &b);
	cr_assert_str_eq(b.data,
	    "[{\"message_id\":\"B\",\"interaction_id\":\"X\\\"Y\","
	    "\"deliveries\":0,\"acks\":0,\"last_outcome\":\"ack\"},\n"
	    "{\"message_id\":\"A\",\"interaction_id\":\"Z\",\"deliveries\":0,"
	    "\"acks\":0,\"last_outcome\":\"ack\"}]\n");
	mhs_buf_fini(&b);
	sim_table_fini(&t);
}

/* ---- spine_sim_json: the /_sim/config reader ---- */

static int
patch(struct sim_config *c, const char *json)
{
	char err[160];

	return sim_config_patch(c, json, strlen(json), err, sizeof(err));
}

Test(spine_sim_json, accepts_any_subset)
{
	struct sim_config c = {0, SIM_FAULT_RETRIABLE, 0, false, 500};

	cr_assert_eq(patch(&c, " { } "), 0);
	cr_assert_eq(patch(&c,
	                 "{\"fail_rate\":100,\"fault\":\"permanent\","
	                 "\"latency_ms\":25,\"down\":true,"
	                 "\"error_status\":200}"),
	    0);
	cr_assert(c.fail_rate == 100 && c.fault == SIM_FAULT_PERMANENT &&
	    c.latency_ms == 25 && c.down && c.error_status == 200);
	cr_assert_eq(patch(&c, "{\n\t\"down\" : false\n}\n"), 0);
	cr_assert(!c.down && c.latency_ms == 25);
}

Test(spine_sim_json, refuses_anything_else_and_changes_nothing)
{
	static const char *const bad[] = {"", "[]", "{", "{\"down\":true",
	    "{\"down\":1}", "{\"fail_rate\":1.5}", "{\"fail_rate\":1e2}",
	    "{\"fail_rate\":-1}", "{\"fail_rate\":101}",
	    "{\"fail_rate\":9999999999}", "{\"latency_ms\":600001}",
	    "{\"error_status\":404}", "{\"fault\":\"Drop\"}",
	    "{\"fault\":\"dr\\u006fp\"}", "{\"other\":1}", "{\"down\":true}x",
	    "{\"down\":true,}", "{,}", "{\"down\":null}",
	    "{\"fault\":{\"a\":1}}", "{\"fail_rate\":\"5\"}"};
	struct sim_config c = {7, SIM_FAULT_DROP, 3, true, 200};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sim_config before = c;

		cr_assert_eq(patch(&c, bad[i]), MHS_EINVAL, "%s", bad[i]);
		cr_assert(memcmp(&before, &c, sizeof(c)) == 0, "%s", bad[i]);
	}
	cr_assert_eq(sim_config_patch(&c, "{\"down\":false}\0", 15, NULL, 0),
	    MHS_EINVAL);
}

Test(spine_sim_json, oversized_document_is_refused)
{
	size_t n = SIM_CONFIG_MAX + 1;
	char *big = malloc(n), err[160];
	struct sim_config c = {0, SIM_FAULT_RETRIABLE, 0, false, 500};

	cr_assert_not_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	cr_assert_eq(
	    sim_config_patch(&c, big, n, err, sizeof(err)), MHS_EINVAL);
	free(big);
}

/* ---- Spine's duplicate-prescription rule ---- */

#define RX_OID "2.16.840.1.113883.2.1.3.2.4.18.8"

static enum mhs_ebxml_verdict
post_rx(const char *id, const char *rx, struct reply *r)
{
	struct mhs_ebxml_msg m = msg(id, true);
	char payload[300];

	snprintf(payload, sizeof(payload),
	    "<PORX_IN020101SM31 "
	    "xmlns=\"urn:hl7-org:v3\"><pertinentPrescription>"
	    "<id root=\"" RX_OID
	    "\" extension=\"%s\"/></pertinentPrescription>"
	    "</PORX_IN020101SM31>",
	    rx);
	m.payload = payload;
	m.payload_len = strlen(payload);
	return post(&m, NULL, r);
}

Test(spine_sim, same_prescription_id_under_a_new_message_id_is_refused)
{
	struct reply r;

	cr_assert_eq(
	    post_rx(ID1, "04F4C2-A99968-7F717P", &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	/* A replay (same MessageId) is not a duplicate prescription. */
	cr_assert_eq(
	    post_rx(ID1, "04F4C2-A99968-7F717P", &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert_eq(post_rx("AAAAAAAA-0000-4000-8000-000000000003",
	                 "04F4C2-A99968-7F717P", &r),
	    MHS_EBXML_FAILED);
	cr_assert_eq(r.status, 500);
	cr_assert_not_null(strstr(r.body.data,
	    "Duplicate prescription ID "
	    "04F4C2-A99968-7F717P"));
	mhs_buf_fini(&r.body);
	cr_assert_eq(post_rx("AAAAAAAA-0000-4000-8000-000000000004",
	                 "A0B1C2-A99968-00001X", &r),
	    MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
}

/* ---- spine_sim_respond: asynchronous responses to release requests,
 * sent to the simulator itself (which acknowledges any ebXML) ---- */

static void
respond_setup(void)
{
	fx.respond = true;
	sim_setup();
}

TestSuite(spine_sim_respond, .init = respond_setup, .fini = sim_teardown,
    .timeout = 90);

static enum mhs_ebxml_verdict
post_action(const char *id, const char *action, struct reply *r)
{
	struct mhs_ebxml_msg m = msg(id, true);

	m.interaction = action;
	return post(&m, NULL, r);
}

/* The value of "key":N in GET /_sim/stats. */
static long
stat_of(const char *key)
{
	struct reply r;
	char k[64];
	const char *p;
	long v = -1;

	http("GET", "/_sim/stats", NULL, &r);
	cr_assert_eq(r.status, 200);
	snprintf(k, sizeof(k), "\"%s\":", key);
	if ((p = strstr(r.body.data, k)) != NULL)
		v = atol(p + strlen(k));
	mhs_buf_fini(&r.body);
	return v;
}

/* Waits (bounded) until stat key reaches want. */
static bool
stat_reaches(const char *key, long want)
{
	for (int64_t end = mhs_mono_ms() + 10000; mhs_mono_ms() < end;
	     usleep(20000))
		if (stat_of(key) >= want)
			return true;
	return false;
}

/* The deliveries of the response entry (PORX_IN070101UK31), or -1. */
static int
response_deliveries(void)
{
	struct reply r;
	const char *p;
	int n = -1;

	http("GET", "/_sim/messages", NULL, &r);
	p = strstr(r.body.data, "\"interaction_id\":\"PORX_IN070101UK31\"");
	if (p != NULL)
		n = atoi(strstr(p, "\"deliveries\":") + 13);
	mhs_buf_fini(&r.body);
	return n;
}

Test(spine_sim_respond, release_request_gets_one_async_response)
{
	struct reply r;

	cr_assert_eq(
	    post_action(ID1, "PORX_IN060102SM30", &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	/* A replay is acknowledged again but answered only once. */
	cr_assert_eq(
	    post_action(ID1, "PORX_IN060102SM30", &r), MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert(stat_reaches("acked", 1), "no response acknowledged");
	cr_assert_eq(stat_of("queued"), 1);
	cr_assert_eq(stat_of("failed"), 0);
	cr_assert_eq(response_deliveries(), 1);
	/* Other interactions get no response. */
	cr_assert_eq(post_action("AAAAAAAA-0000-4000-8000-000000000002",
	                 "PORX_IN080101SM31", &r),
	    MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert_eq(stat_of("queued"), 1);
}

Test(spine_sim_respond, magic_id_gets_its_response_twice)
{
	struct reply r;

	cr_assert_eq(post_action("FFFFFFD2-0000-4000-8000-000000000001",
	                 "PORX_IN132004SM30", &r),
	    MHS_EBXML_DELIVERED);
	mhs_buf_fini(&r.body);
	cr_assert(stat_reaches("acked", 2), "the response was not sent twice");
	/* Both copies carry the same inbound MessageId: one entry, two
	 * deliveries (the second a replay to the receiver). */
	cr_assert_eq(response_deliveries(), 2);
	cr_assert_eq(stat_of("queued"), 1);
}
