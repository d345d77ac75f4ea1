/*
 * Design notes: mhs-gateway's entry point: options, the clients file, the
 * route table, the RPC server, the HTTP probes, and a readiness thread that
 * asks the store every 250 ms whether a Submit can be made durable.
 * SIGTERM/SIGINT drain in-flight requests (bounded) and exit 0. Signals
 * are blocked in every thread and taken by sigwait in main.
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
#include "mhs/store/v1/store.pb-c.h"
#include "probe.h"

static struct gw gw;

static struct mhs_opt gw_opts[] = {
    {"listen", MHS_OPT_STR, "tcp://127.0.0.1:7700", 0, 0,
        "partner RPC listeners, comma-separated nng URLs (tcp://, ipc://)",
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
    {"contexts", MHS_OPT_INT, "64", 1, 4096, "requests served concurrently",
        &gw.cfg.contexts},
    {"max-request-bytes", MHS_OPT_INT, "1048576", 1024, 67108864,
        "largest request accepted on the wire", &gw.cfg.max_request_bytes},
    {"max-payload-bytes", MHS_OPT_INT, "524288", 256, 67108864,
        "largest Submit payload", &gw.cfg.max_payload_bytes},
    {"default-timeout-ms", MHS_OPT_INT, "10000", 10, 600000,
        "deadline when the caller gives none", &gw.cfg.default_timeout_ms},
    {"max-timeout-ms", MHS_OPT_INT, "60000", 10, 600000,
        "longest deadline a caller may ask for", &gw.cfg.max_timeout_ms},
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

static atomic_bool stopping;

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

/* Polls the store's readiness; the only blocking work of the gateway. */
static void *
gw_readiness_main(void *arg)
{
	struct gw *g = arg;
	struct mhs_client *cl;
	Mhs__Store__V1__ReadyRequest rq = MHS__STORE__V1__READY_REQUEST__INIT;

	if (mhs_client_open(&cl, g->cfg.store_url) != 0)
		return NULL;
	while (!atomic_load(&stopping)) {
		ProtobufCMessage *out = NULL;
		bool ready = false, was = atomic_load(&g->store_ready);
		int code = mhs_client_call(cl, "/mhs.store.v1.Store/Ready",
		    &rq.base, &mhs__store__v1__ready_response__descriptor,
		    &out, NULL, 0, 1000, NULL);

		if (code == 0 && out != NULL)
			ready = ((Mhs__Store__V1__ReadyResponse *) out)->ready;
		if (out != NULL)
			protobuf_c_message_free_unpacked(out, NULL);
		atomic_store(&g->store_ready, ready);
		if (ready != was)
			mhs_info("store_readiness", "store %s",
			    ready ? "ready" : "not ready");
		nng_msleep(250);
	}
	mhs_client_close(cl);
	return NULL;
}

static int
gw_run(void)
{
	struct mhs_probe *probe = NULL;
	pthread_t ready_thread;
	sigset_t set;
	int rv, sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((rv = gw_server_start(&gw)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot start: %s\n",
		    mhs_strerror(rv));
		return 1;
	}
	if ((rv = mhs_probe_open(&probe, gw.cfg.http, gw_ready_probe,
	         gw_metrics_write, &gw)) != 0) {
		fprintf(stderr, "mhs-gateway: cannot serve probes on %s: %s\n",
		    gw.cfg.http, mhs_strerror(rv));
		gw_server_stop(&gw);
		return 1;
	}
	pthread_create(&ready_thread, NULL, gw_readiness_main, &gw);
	mhs_info("started", "mhs-gateway %s ready for requests", MHS_VERSION);
	sigwait(&set, &sig);
	mhs_info("stopping", "signal %d: draining", sig);
	gw_server_drain(&gw, (int) gw.cfg.drain_timeout_ms);
	atomic_store(&stopping, true);
	pthread_join(ready_thread, NULL);
	mhs_probe_close(probe);
	gw_server_stop(&gw);
	mhs_info("stopped", "mhs-gateway stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	int rv, level;

	if ((rv = mhs_config_load(&gw_program, argc, argv)) != 0)
		return rv > 0 ? 0 : 2;
	if ((level = mhs_log_level_parse(gw.cfg.log_level)) < 0) {
		fprintf(stderr,
		    "mhs-gateway: --log-level: expected debug, "
		    "info, warn or error\n");
		return 2;
	}
	mhs_log_init("gateway", level);
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
