/*
 * Design notes: mhs-gateway's entry point: the option table (every limit
 * with its bounds), the clients file, the route table, the RPC server and
 * the HTTP probes. SIGTERM/SIGINT: readiness goes 503 and new requests
 * are answered 14 at once, the requests in flight finish (up to
 * --drain-timeout-ms), then the process exits 0. Signals are blocked in
 * every thread and taken by sigwait in main.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "gateway.h"
#include "log.h"
#include "util.h"
#include "probe.h"

static struct gw gw;

static struct mhs_opt gw_opts[] = {
    {"listen", MHS_OPT_STR, "tcp://127.0.0.1:7700", 0, 0,
        "partner RPC listeners, comma-separated nng URLs (tcp://, ipc://, "
        "tls+tcp://)",
        &gw.cfg.listen},
    {"http", MHS_OPT_STR, "http://127.0.0.1:7701", 0, 0,
        "HTTP probe URL (/livez /readyz /metrics)", &gw.cfg.http},
    {"store", MHS_OPT_STR, "ipc:///tmp/mhs-store.ipc", 0, 0,
        "mhs-store RPC URL", &gw.cfg.store_url},
    {"clients", MHS_OPT_STR, "", 0, 0,
        "clients file: id sha256(token) methods ods (mode 600)",
        &gw.cfg.clients_file},
    {"routes", MHS_OPT_STR, "", 0, 0,
        "route table INI file (built-in EPS routes when empty)",
        &gw.cfg.routes_file},
    {"tls-cert", MHS_OPT_STR, "", 0, 0,
        "server certificate (PEM) of tls+tcp:// listeners", &gw.cfg.tls_cert},
    {"tls-key", MHS_OPT_STR, "", 0, 0, "private key (PEM) of --tls-cert",
        &gw.cfg.tls_key},
    {"tls-client-ca", MHS_OPT_STR, "", 0, 0,
        "partners' CA (PEM): verify client certificates on tls+tcp://",
        &gw.cfg.tls_client_ca},
    {"tls-require-client-cert", MHS_OPT_BOOL, "true", 0, 0,
        "with --tls-client-ca, answer 16 to requests over tls+tcp:// "
        "without a verified client certificate",
        &gw.cfg.tls_require_client_cert},
    {"contexts", MHS_OPT_INT, "256", 1, 8192,
        "requests read and served concurrently", &gw.cfg.contexts},
    {"max-request-bytes", MHS_OPT_INT, "1048576", 1024, 67108864,
        "largest request accepted (larger: code 3)",
        &gw.cfg.max_request_bytes},
    {"oversize-grace-bytes", MHS_OPT_INT, "1048576", 0, 67108864,
        "requests up to this much over --max-request-bytes are still read "
        "and answered 3; larger ones make nng drop the connection",
        &gw.cfg.oversize_grace_bytes},
    {"max-payload-bytes", MHS_OPT_INT, "524288", 256, 67108864,
        "largest Request.payload, the encoded method message (at most "
        "--max-request-bytes)",
        &gw.cfg.max_payload_bytes},
    {"default-timeout-ms", MHS_OPT_INT, "10000", 10, 600000,
        "deadline when the caller gives none", &gw.cfg.default_timeout_ms},
    {"max-timeout-ms", MHS_OPT_INT, "60000", 10, 600000,
        "longest deadline a caller may ask for", &gw.cfg.max_timeout_ms},
    {"rate-per-client", MHS_OPT_INT, "0", 0, 1000000,
        "requests a second each client may make (token bucket; 0: no "
        "limit); over it: code 8 with retry-after-ms",
        &gw.cfg.rate_per_client},
    {"burst", MHS_OPT_INT, "100", 1, 1000000,
        "token bucket size: requests a client may make at once",
        &gw.cfg.burst},
    {"max-in-flight", MHS_OPT_INT, "128", 1, 65536,
        "requests waiting on the store at once; over it: code 8 with "
        "retry-after-ms",
        &gw.cfg.max_in_flight},
    {"store-check-interval-ms", MHS_OPT_INT, "250", 10, 60000,
        "how often the store's readiness is asked",
        &gw.cfg.store_check_interval_ms},
    {"store-check-timeout-ms", MHS_OPT_INT, "1000", 10, 600000,
        "a readiness answer later than this makes the gateway not ready",
        &gw.cfg.store_check_timeout_ms},
    {"store-batch-calls", MHS_OPT_INT, "4", 0, 64,
        "Submits go to the store in batches (AppendMany), this many calls "
        "at once; a Submit that finds none free joins the next batch (0: "
        "one Append per Submit)",
        &gw.cfg.store_batch_calls},
    {"drain-timeout-ms", MHS_OPT_INT, "10000", 0, 600000,
        "how long SIGTERM waits for in-flight requests",
        &gw.cfg.drain_timeout_ms},
    {"log-level", MHS_OPT_STR, "info", 0, 0, "debug, info, warn or error",
        &gw.cfg.log_level},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program gw_program = {
    "mhs-gateway",
    "gateway",
    "The partner-facing RPC server of the MHS (nng REQ/REP, DESIGN §3).",
    gw_opts,
};

static bool
gw_ready_probe(void *arg, char *why, size_t whylen)
{
	struct gw *g = arg;

	if (atomic_load(&g->draining)) {
		snprintf(why, whylen, "draining");
		return false;
	}
	if (!atomic_load(&g->store_ready)) {
		snprintf(why, whylen, "store not ready");
		return false;
	}
	return true;
}

/* gw_config_check settles limits that depend on each other. */
static void
gw_config_check(struct gw_config *cfg)
{
	if (cfg->max_payload_bytes > cfg->max_request_bytes) {
		mhs_info("config",
		    "max-payload-bytes lowered to "
		    "max-request-bytes (%lld)",
		    cfg->max_request_bytes);
		cfg->max_payload_bytes = cfg->max_request_bytes;
	}
	if ((cfg->tls_cert[0] != '\0' || cfg->tls_client_ca[0] != '\0') &&
	    strstr(cfg->listen, "tls+tcp://") == NULL)
		mhs_warn("config",
		    "TLS options given but no tls+tcp:// "
		    "listener: they have no effect");
	if (cfg->default_timeout_ms > cfg->max_timeout_ms) {
		mhs_info("config",
		    "default-timeout-ms lowered to "
		    "max-timeout-ms (%lld)",
		    cfg->max_timeout_ms);
		cfg->default_timeout_ms = cfg->max_timeout_ms;
	}
}

static int
gw_run(void)
{
	struct mhs_probe *probe = NULL;
	sigset_t set;
	int rv, sig;

	mhs_signals_block(&set);

	if ((rv = gw_server_start(&gw)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot start: %s\n",
		    mhs_strerror(rv));
		gw_server_stop(&gw);
		return 1;
	}
	if ((rv = mhs_probe_open(&probe, gw.cfg.http, gw_ready_probe,
	         gw_metrics_write, &gw)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot serve probes on %s: %s\n",
		    gw.cfg.http, mhs_strerror(rv));
		gw_server_stop(&gw);
		return 1;
	}
	mhs_info("started", "mhs-gateway %s ready for requests", MHS_VERSION);
	sigwait(&set, &sig);
	mhs_info("stopping", "signal %d: draining", sig);
	gw_server_drain(&gw, (int) gw.cfg.drain_timeout_ms);
	mhs_probe_close(probe); /* metrics read what stop frees */
	gw_server_stop(&gw);
	mhs_info("stopped", "mhs-gateway stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	int rv;

	if ((rv = mhs_config_load(&gw_program, argc, argv)) != 0)
		return rv > 0 ? 0 : 2;
	if (mhs_log_setup("mhs-gateway", "gateway", gw.cfg.log_level) != 0)
		return 2;
	gw_config_check(&gw.cfg);
	if (gw.cfg.clients_file[0] == '\0') {
		fprintf(stderr, "mhs-gateway: --clients FILE is required\n");
		return 2;
	}
	if (gw_clients_load(&gw, gw.cfg.clients_file) != 0)
		return 2;
	if (mhs_routes_load(&gw.routes, gw.cfg.routes_file) != 0)
		return 2;
	rv = gw_run();
	gw_clients_free(&gw);
	mhs_routes_fini(&gw.routes);
	return rv;
}
