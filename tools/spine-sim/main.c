/*
 * Design notes: mhs-spine-sim's process: options (common/config.h), TLS,
 * the nng HTTP server, and an orderly stop. SIGINT/SIGTERM are blocked
 * before nng starts its threads and taken by sigwait() on the main
 * thread, so no handler runs in signal context. Stop order: stop the
 * server (no new requests, connections closed), wait for delayed replies
 * to fire, release the server, stop the response sender (responses not
 * yet sent are dropped), free the state. Exit codes: 0 after a
 * signal (or --help/--version), 1 when it cannot serve, 2 on bad options.
 * The private key is read into memory only long enough to hand to nng,
 * then wiped.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>

#include "config.h"
#include "ebxml.h"
#include "error.h"
#include "log.h"
#include "sim.h"
#include "util.h"

#define PEM_MAX (1024 * 1024)

static char *opt_listen, *opt_cert, *opt_key, *opt_client_ca, *opt_fault;
static char *opt_log_level;
static char *opt_respond_url, *opt_respond_cert, *opt_respond_key;
static char *opt_respond_ca;
static long long opt_fail_rate, opt_latency, opt_error_status, opt_max_msgs;
static long long opt_respond_delay, opt_respond_retries, opt_respond_max;
static bool opt_down;

static struct mhs_opt sim_opts[] = {
    {"listen", MHS_OPT_STR, "https://127.0.0.1:8443", 0, 0,
        "URL to serve (https:// or http://)", &opt_listen},
    {"cert", MHS_OPT_STR, NULL, 0, 0,
        "server certificate chain, PEM (required for https)", &opt_cert},
    {"key", MHS_OPT_STR, NULL, 0, 0, "server private key, PEM", &opt_key},
    {"client-ca", MHS_OPT_STR, NULL, 0, 0,
        "CA for client certificates, PEM; when set a client certificate "
        "is required",
        &opt_client_ca},
    {"fail-rate", MHS_OPT_INT, "0", 0, 100,
        "percent of messages that get --fault", &opt_fail_rate},
    {"fault", MHS_OPT_STR, "retriable", 0, 0,
        "injected fault: retriable|permanent|drop", &opt_fault},
    {"latency-ms", MHS_OPT_INT, "0", 0, SIM_LATENCY_MAX,
        "delay before every ebXML answer", &opt_latency},
    {"down", MHS_OPT_BOOL, "false", 0, 0,
        "start down: answer 503 without an ebXML body", &opt_down},
    {"error-status", MHS_OPT_INT, "500", 200, 500,
        "HTTP status of ebXML ErrorLists: 500 or 200", &opt_error_status},
    {"max-messages", MHS_OPT_INT, "10000000", 1, 100000000,
        "MessageIds remembered before answering 503", &opt_max_msgs},
    {"respond-url", MHS_OPT_STR, "", 0, 0,
        "where asynchronous responses to release requests go: the "
        "router's inbound listener (comma-separated URLs are tried in "
        "turn; empty: no responses)",
        &opt_respond_url},
    {"respond-cert", MHS_OPT_STR, "", 0, 0,
        "client certificate (PEM) presented to --respond-url",
        &opt_respond_cert},
    {"respond-key", MHS_OPT_STR, "", 0, 0, "its private key (PEM)",
        &opt_respond_key},
    {"respond-ca", MHS_OPT_STR, "", 0, 0,
        "CA that --respond-url's certificate must verify against",
        &opt_respond_ca},
    {"respond-delay-ms", MHS_OPT_INT, "200", 0, SIM_LATENCY_MAX,
        "delay between acknowledging a release request and sending its "
        "response",
        &opt_respond_delay},
    {"respond-retries", MHS_OPT_INT, "5", 0, 100,
        "resends of a response not answered 202 (doubling backoff)",
        &opt_respond_retries},
    {"respond-max-pending", MHS_OPT_INT, "10000", 1, 1000000,
        "responses waiting to be sent before new ones are dropped",
        &opt_respond_max},
    {"log-level", MHS_OPT_STR, "info", 0, 0, "debug|info|warn|error",
        &opt_log_level},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program sim_prog = {
    "mhs-spine-sim",
    "spine-sim",
    "Spine simulator: ebXML over HTTPS with fault injection and /_sim/.",
    sim_opts,
};

/* Reads a whole (small) file into a NUL-terminated heap string. */
static int
file_read(const char *path, char **out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;
	int rv = MHS_EIO;

	*out = NULL;
	if (f == NULL)
		return MHS_ENOTFOUND;
	if ((buf = malloc(PEM_MAX + 1)) == NULL) {
		rv = MHS_ENOMEM;
		goto fail;
	}
	n = fread(buf, 1, PEM_MAX + 1, f);
	if (ferror(f) || n > PEM_MAX)
		goto fail;
	buf[n] = '\0';
	fclose(f);
	*out = buf;
	return 0;
fail:
	free(buf);
	fclose(f);
	return rv;
}

static void
secret_free(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

static int
tls_fail(const char *what, const char *path, int nngrv)
{
	mhs_error("sim_tls", "%s %s: %s", what, path != NULL ? path : "",
	    nng_strerror(nngrv));
	return mhs_err_nng(nngrv);
}

static int
tls_setup(nng_http_server *srv)
{
	nng_tls_config *cfg = NULL;
	char *cert = NULL, *key = NULL;
	int rv;

	if (file_read(opt_cert, &cert) != 0 || file_read(opt_key, &key) != 0) {
		mhs_error("sim_tls", "cannot read --cert %s or --key %s",
		    opt_cert, opt_key);
		rv = MHS_EIO;
		goto fail;
	}
	if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER)) != 0) {
		rv = tls_fail("tls config", NULL, rv);
		goto fail;
	}
	if ((rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
		rv = tls_fail("certificate or key", opt_cert, rv);
		goto fail;
	}
	if (opt_client_ca[0] != '\0' &&
	    ((rv = nng_tls_config_ca_file(cfg, opt_client_ca)) != 0 ||
	        (rv = nng_tls_config_auth_mode(
	             cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0)) {
		rv = tls_fail("client CA", opt_client_ca, rv);
		goto fail;
	}
	if ((rv = nng_http_server_set_tls(srv, cfg)) != 0)
		rv = tls_fail("server TLS", NULL, rv);
fail:
	nng_tls_config_free(cfg); /* the server holds its own reference */
	free(cert);
	secret_free(key);
	return rv;
}

static int
server_start(struct sim *s, nng_http_server **out)
{
	nng_http_server *srv = NULL;
	nng_url *url = NULL;
	int rv;

	*out = NULL;
	if ((rv = nng_url_parse(&url, opt_listen)) != 0 ||
	    (rv = nng_http_server_hold(&srv, url)) != 0) {
		mhs_error("sim_listen", "--listen %s: %s", opt_listen,
		    nng_strerror(rv));
		nng_url_free(url);
		return mhs_err_nng(rv);
	}
	if ((strcmp(url->u_scheme, "https") == 0 &&
	        (rv = tls_setup(srv)) != 0) ||
	    (rv = sim_http_register(s, srv)) != 0)
		goto fail;
	if ((rv = nng_http_server_start(srv)) != 0) {
		mhs_error("sim_listen", "cannot listen on %s: %s", opt_listen,
		    nng_strerror(rv));
		rv = mhs_err_nng(rv);
		goto fail;
	}
	nng_url_free(url);
	*out = srv;
	return 0;
fail:
	nng_http_server_release(srv);
	nng_url_free(url);
	return rv;
}

/* Checks what the option table cannot; prints why and returns false. */
static bool
options_ok(struct sim_config *cfg)
{
	char err[160];
	bool https = strncmp(opt_listen, "https://", 8) == 0;

	if (mhs_log_level_parse(opt_log_level) < 0)
		snprintf(err, sizeof(err),
		    "--log-level: expected "
		    "debug|info|warn|error");
	else if (sim_fault_parse(opt_fault, &cfg->fault) != 0)
		snprintf(err, sizeof(err),
		    "--fault: expected "
		    "retriable|permanent|drop");
	else if (!https && strncmp(opt_listen, "http://", 7) != 0)
		snprintf(err, sizeof(err),
		    "--listen: expected an http:// or "
		    "https:// URL");
	else if (https && (opt_cert[0] == '\0' || opt_key[0] == '\0'))
		snprintf(err, sizeof(err),
		    "--cert and --key are required "
		    "for https");
	else if (!https && opt_client_ca[0] != '\0')
		snprintf(err, sizeof(err), "--client-ca needs https");
	else if ((opt_respond_cert[0] != '\0') != (opt_respond_key[0] != '\0'))
		snprintf(err, sizeof(err),
		    "--respond-cert and --respond-key go together");
	else if (sim_config_check(cfg, err, sizeof(err)) != 0)
		; /* err says which */
	else
		return true;
	fprintf(stderr, "%s: %s\n", sim_prog.name, err);
	return false;
}

static int
sim_init(struct sim *s, const struct sim_config *cfg)
{
	uint8_t seed[32];
	int64_t t = mhs_mono_ms() ^ ((int64_t) getpid() << 32);

	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	mhs_sha256(&t, sizeof(t), seed);
	memcpy(&s->rng, seed, sizeof(s->rng));
	s->rng |= 1; /* xorshift must not start at zero */
	atomic_init(&s->pending, 0);
	if (pthread_mutex_init(&s->mtx, NULL) != 0 ||
	    pthread_mutex_init(&s->pool_mtx, NULL) != 0)
		return MHS_ENOMEM;
	if (sim_table_init(&s->table, (size_t) opt_max_msgs) != 0 ||
	    sim_table_init(&s->rx, (size_t) opt_max_msgs) != 0)
		return MHS_ENOMEM;
	return 0;
}

/* Starts the response sender when --respond-url is set. */
static int
responder_start(struct sim *s)
{
	struct sim_respond_opts o = {opt_respond_url, opt_respond_cert,
	    opt_respond_key, opt_respond_ca, (int) opt_respond_delay,
	    (int) opt_respond_retries, (int) opt_respond_max};

	if (opt_respond_url[0] == '\0')
		return 0;
	if (sim_respond_start(&s->resp, &o) != 0) {
		mhs_error("sim_respond", "cannot start responses to %s",
		    opt_respond_url);
		return MHS_EINVAL;
	}
	mhs_info("sim_respond", "release responses go to %s after %lld ms",
	    opt_respond_url, opt_respond_delay);
	return 0;
}

/* Waits (bounded) for replies still sleeping out their latency; false
 * if some are still pending (their callbacks still use s). */
static bool
sim_drain(struct sim *s)
{
	int64_t deadline = mhs_mono_ms() + SIM_LATENCY_MAX + 1000;
	struct timespec ts = {0, 10 * 1000 * 1000};

	while (atomic_load(&s->pending) > 0 && mhs_mono_ms() < deadline)
		nanosleep(&ts, NULL);
	return atomic_load(&s->pending) == 0;
}

int
main(int argc, char **argv)
{
	struct sim_config cfg = {0};
	nng_http_server *srv;
	struct sim *s;
	sigset_t sigs;
	int rv, sig;

	mhs_signals_block(&sigs); /* before nng's threads */
	if ((rv = mhs_config_load(&sim_prog, argc, argv)) != 0)
		return rv == 1 ? 0 : 2;
	cfg = (struct sim_config) {(int) opt_fail_rate, SIM_FAULT_RETRIABLE,
	    (int) opt_latency, opt_down, (int) opt_error_status};
	if (!options_ok(&cfg))
		return 2;
	mhs_log_init("spine-sim", mhs_log_level_parse(opt_log_level));
	curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread */
	if ((s = malloc(sizeof(*s))) == NULL || sim_init(s, &cfg) != 0 ||
	    responder_start(s) != 0 || server_start(s, &srv) != 0)
		return 1;
	mhs_info("sim_listening", "serving %s (client certificate %s)",
	    opt_listen, opt_client_ca[0] != '\0' ? "required" : "not asked");
	sigwait(&sigs, &sig);
	mhs_info("sim_stopping", "signal %d", sig);
	nng_http_server_stop(srv);
	if (!sim_drain(s)) {
		/* A reply still pending would touch s after it is freed. */
		mhs_warn("sim_stopping", "replies still pending: exiting");
		fflush(NULL);
		_exit(0);
	}
	nng_http_server_release(srv);
	sim_http_fini(s);
	sim_respond_stop(s->resp);
	curl_global_cleanup();
	sim_table_fini(&s->table);
	sim_table_fini(&s->rx);
	pthread_mutex_destroy(&s->mtx);
	pthread_mutex_destroy(&s->pool_mtx);
	free(s);
	return 0;
}
