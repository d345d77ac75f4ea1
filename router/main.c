/*
 * Design notes: mhs-router's entry point: options, route table, the store
 * client, HTTP probes, the inbound listener (when --inbound-listen is
 * set) and the engine on its own thread; main waits for SIGTERM/SIGINT,
 * then stops the inbound listener (unanswered responses are retried by
 * Spine), then the engine (in-flight deliveries are abandoned to lease
 * expiry, never lost) and exits 0.
 */
#include <curl/curl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "inbound.h"
#include "log.h"
#include "util.h"
#include "probe.h"
#include "router.h"

static struct router rt;

static struct mhs_opt rt_opts[] = {
    {"store", MHS_OPT_STR, "ipc:///tmp/mhs-store.ipc", 0, 0,
        "mhs-store RPC URL", &rt.cfg.store_url},
    {"http", MHS_OPT_STR, "http://127.0.0.1:7703", 0, 0,
        "HTTP probe URL (/livez /readyz /metrics)", &rt.cfg.http},
    {"spine-url", MHS_OPT_STR, "https://127.0.0.1:8443", 0, 0,
        "Spine base URL; a route's endpoint path is appended",
        &rt.cfg.spine_url},
    {"spine-ca", MHS_OPT_STR, "", 0, 0,
        "CA bundle that Spine's certificate must verify against",
        &rt.cfg.spine_ca},
    {"client-cert", MHS_OPT_STR, "", 0, 0,
        "client certificate (PEM) for mutual TLS", &rt.cfg.client_cert},
    {"client-key", MHS_OPT_STR, "", 0, 0, "client key (PEM)",
        &rt.cfg.client_key},
    {"tls-ciphers", MHS_OPT_STR, "", 0, 0,
        "TLS 1.2 cipher suites offered to Spine, an OpenSSL cipher list "
        "such as ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256 "
        "(TLS 1.3 suites are not affected; empty: libcurl's defaults)",
        &rt.cfg.tls_ciphers},
    {"tls-curves", MHS_OPT_STR, "X25519:P-256", 0, 0,
        "key-exchange groups offered to Spine, an OpenSSL group list; "
        "X25519 and P-256 are what every TLS server supports and the "
        "cheapest to compute, and a server that prefers P-521 otherwise "
        "takes it (e.g. X25519:P-256:P-384; empty: libcurl's defaults)",
        &rt.cfg.tls_curves},
    {"routes", MHS_OPT_STR, "", 0, 0,
        "route table INI file (built-in EPS routes when empty)",
        &rt.cfg.routes_file},
    {"consumer", MHS_OPT_STR, "", 0, 0,
        "this router's lease name (default: router-PID)", &rt.cfg.consumer},
    {"party-key", MHS_OPT_STR, "MHS-0000001", 0, 0, "our ebXML From party key",
        &rt.cfg.party_key},
    {"max-in-flight", MHS_OPT_INT, "64", 1, 4096,
        "deliveries in flight at once", &rt.cfg.max_in_flight},
    {"lease-ms", MHS_OPT_INT, "60000", 1000, 3600000,
        "after this long a crashed router's messages go to another",
        &rt.cfg.lease_ms},
    {"request-timeout-ms", MHS_OPT_INT, "30000", 100, 600000,
        "longest wait for Spine's answer to one POST",
        &rt.cfg.request_timeout_ms},
    {"breaker-failures", MHS_OPT_INT, "5", 1, 1000,
        "attempts that fail to reach Spine before its circuit opens",
        &rt.cfg.breaker_failures},
    {"breaker-open-ms", MHS_OPT_INT, "1000", 10, 600000,
        "first cool-down of an open circuit (doubles per failed probe)",
        &rt.cfg.breaker_open_ms},
    {"breaker-max-open-ms", MHS_OPT_INT, "30000", 10, 3600000,
        "longest cool-down of an open circuit", &rt.cfg.breaker_max_open_ms},
    {"poll-ms", MHS_OPT_INT, "50", 1, 10000,
        "how often an idle router asks for work", &rt.cfg.poll_ms},
    {"inbound-listen", MHS_OPT_STR, "", 0, 0,
        "URL for Spine's asynchronous responses (https://127.0.0.1:PORT; "
        "empty: no inbound listener)",
        &rt.cfg.inbound_listen},
    {"inbound-cert", MHS_OPT_STR, "", 0, 0,
        "inbound listener's server certificate chain (PEM)",
        &rt.cfg.inbound_cert},
    {"inbound-key", MHS_OPT_STR, "", 0, 0,
        "inbound listener's private key (PEM)", &rt.cfg.inbound_key},
    {"inbound-client-ca", MHS_OPT_STR, "", 0, 0,
        "CA that Spine's client certificate must verify against; when set "
        "a client certificate is required",
        &rt.cfg.inbound_client_ca},
    {"inbound-workers", MHS_OPT_INT, "4", 1, 64,
        "threads making the store calls for inbound messages",
        &rt.cfg.inbound_workers},
    {"inbound-queue", MHS_OPT_INT, "256", 1, 65536,
        "inbound messages waiting for a worker before 503",
        &rt.cfg.inbound_queue},
    {"inbound-max-body", MHS_OPT_INT, "4194304", 1024, 16777216,
        "largest inbound request body (bytes)", &rt.cfg.inbound_max_body},
    {"log-level", MHS_OPT_STR, "info", 0, 0, "debug, info, warn or error",
        &rt.cfg.log_level},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program rt_program = {
    "mhs-router",
    "router",
    "Delivers stored messages to Spine as ebXML over HTTPS (DESIGN §5).",
    rt_opts,
};

static bool
rt_ready_probe(void *arg, char *why, size_t whylen)
{
	struct router *r = arg;

	if (!atomic_load(&r->store_ok)) {
		snprintf(why, whylen, "store unreachable");
		return false;
	}
	return true;
}

/* Inbound listener counters: one family, one label per kind. */
static void
rt_metrics_inbound(struct mhs_buf *out, const struct rt_stats *s)
{
	mhs_buf_printf(out,
	    "# TYPE mhs_router_inbound_total counter\n"
	    "mhs_router_inbound_total{kind=\"response\"} %llu\n"
	    "mhs_router_inbound_total{kind=\"duplicate\"} %llu\n"
	    "mhs_router_inbound_total{kind=\"unsolicited\"} %llu\n"
	    "mhs_router_inbound_total{kind=\"ack\"} %llu\n"
	    "mhs_router_inbound_total{kind=\"error\"} %llu\n"
	    "mhs_router_inbound_total{kind=\"unavailable\"} %llu\n",
	    atomic_load(&s->in_responses), atomic_load(&s->in_duplicates),
	    atomic_load(&s->in_unsolicited), atomic_load(&s->in_acks),
	    atomic_load(&s->in_errors), atomic_load(&s->in_unavailable));
}

static void
rt_metrics_write(void *arg, struct mhs_buf *out)
{
	struct router *r = arg;
	struct rt_stats *s = &r->stats;

	mhs_buf_printf(out,
	    "# TYPE mhs_router_attempts_total counter\n"
	    "mhs_router_attempts_total %llu\n"
	    "# TYPE mhs_router_outcomes_total counter\n"
	    "mhs_router_outcomes_total{outcome=\"delivered\"} %llu\n"
	    "mhs_router_outcomes_total{outcome=\"retry\"} %llu\n"
	    "mhs_router_outcomes_total{outcome=\"failed\"} %llu\n"
	    "mhs_router_outcomes_total{outcome=\"expired\"} %llu\n"
	    "# TYPE mhs_router_transport_errors_total counter\n"
	    "mhs_router_transport_errors_total %llu\n"
	    "# TYPE mhs_router_report_errors_total counter\n"
	    "mhs_router_report_errors_total %llu\n"
	    "# TYPE mhs_router_circuit_refused_total counter\n"
	    "mhs_router_circuit_refused_total %llu\n"
	    "# TYPE mhs_router_in_flight gauge\nmhs_router_in_flight %u\n",
	    atomic_load(&s->attempts), atomic_load(&s->delivered),
	    atomic_load(&s->retried), atomic_load(&s->failed),
	    atomic_load(&s->expired), atomic_load(&s->transport_errors),
	    atomic_load(&s->report_errors), atomic_load(&s->circuit_refused),
	    atomic_load(&s->in_flight));
	rt_metrics_inbound(out, s);
}

static void *
rt_engine_main(void *arg)
{
	rt_engine_run(arg);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct mhs_probe *probe = NULL;
	struct rt_inbound *inbound = NULL;
	pthread_t engine;
	sigset_t set;
	int rv, sig;
	char name[64];

	mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TOP_PAD, 4 * 1024 * 1024);
	if ((rv = mhs_config_load(&rt_program, argc, argv)) != 0)
		return rv > 0 ? 0 : 2;
	if (mhs_log_setup("mhs-router", "router", rt.cfg.log_level) != 0)
		return 2;
	if ((rv = rt_tls_ciphers_check(rt.cfg.tls_ciphers)) != 0) {
		if (rv == MHS_EINVAL)
			fprintf(stderr,
			    "mhs-router: tls-ciphers: \"%s\" names no TLS 1.2 "
			    "cipher suite that OpenSSL knows (see: openssl "
			    "ciphers -v)\n",
			    rt.cfg.tls_ciphers);
		else
			fprintf(stderr, "mhs-router: tls-ciphers: %s\n",
			    mhs_strerror(rv));
		return 2;
	}
	if ((rv = rt_tls_curves_check(rt.cfg.tls_curves)) != 0) {
		if (rv == MHS_EINVAL)
			fprintf(stderr,
			    "mhs-router: tls-curves: \"%s\" names a group "
			    "OpenSSL does not know (names such as X25519, "
			    "P-256, P-384, P-521, X448, ffdhe2048)\n",
			    rt.cfg.tls_curves);
		else
			fprintf(stderr, "mhs-router: tls-curves: %s\n",
			    mhs_strerror(rv));
		return 2;
	}
	if (rt.cfg.consumer[0] == '\0') {
		snprintf(name, sizeof(name), "router-%d", (int) getpid());
		free(rt.cfg.consumer);
		rt.cfg.consumer = strdup(name);
	}
	if (mhs_routes_load(&rt.routes, rt.cfg.routes_file) != 0)
		return 2;
	rt.breakers.threshold = (int) rt.cfg.breaker_failures;
	rt.breakers.min_ms = rt.cfg.breaker_open_ms;
	rt.breakers.max_ms = rt.cfg.breaker_max_open_ms;
	srand((unsigned) time(NULL) ^ (unsigned) getpid());
	mhs_signals_block(&set);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	if ((rv = mhs_client_open(&rt.store, rt.cfg.store_url)) != 0) {
		fprintf(stderr, "mhs-router: cannot dial store %s: %s\n",
		    rt.cfg.store_url, mhs_strerror(rv));
		return 1;
	}
	if ((rv = mhs_probe_open(&probe, rt.cfg.http, rt_ready_probe,
	         rt_metrics_write, &rt)) != 0) {
		fprintf(stderr, "mhs-router: cannot serve probes on %s: %s\n",
		    rt.cfg.http, mhs_strerror(rv));
		return 1;
	}
	if (rt.cfg.inbound_listen[0] != '\0' &&
	    (rv = rt_inbound_start(&inbound, &rt)) != 0) {
		fprintf(stderr, "mhs-router: inbound listener %s: %s\n",
		    rt.cfg.inbound_listen, mhs_strerror(rv));
		return rv == MHS_EINVAL ? 2 : 1;
	}
	pthread_create(&engine, NULL, rt_engine_main, &rt);
	mhs_info("started", "mhs-router %s (%s) delivering to %s", MHS_VERSION,
	    rt.cfg.consumer, rt.cfg.spine_url);
	sigwait(&set, &sig);
	mhs_info("stopping", "signal %d", sig);
	atomic_store(&rt.stopping, true);
	rt_inbound_stop(inbound);
	pthread_join(engine, NULL);
	mhs_probe_close(probe);
	mhs_client_close(rt.store);
	mhs_routes_fini(&rt.routes);
	curl_global_cleanup();
	mhs_info("stopped", "mhs-router stopped");
	return 0;
}
