/*
 * Design notes: mhs-gateway's shared state. The gateway is the only
 * partner-facing process (DESIGN §2): it decodes the envelope, checks
 * credentials, validates, and forwards to mhs-store over ipc. It keeps no
 * message state of its own, so any number can run side by side.
 *
 * Threads: nng's callback threads run the per-context state machines in
 * server.c (never blocking); one readiness thread polls the store; the main
 * thread waits for signals. Shared fields are atomics or read-only after
 * start.
 */
#ifndef MHS_GATEWAY_H
#define MHS_GATEWAY_H

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "buf.h"
#include "routes.h"
#include "rpc.h"

struct gw_client {
	char id[64];
	unsigned char token_hash[32]; /* SHA-256 of the bearer token */
	char **methods;               /* see auth.c for the patterns */
	size_t n_methods;
	char **ods; /* "*" or the sender ODS codes allowed */
	size_t n_ods;
};

struct gw_config {
	char *listen; /* comma-separated nng URLs */
	char *http;   /* probe URL */
	char *store_url;
	char *clients_file;
	char *routes_file;
	char *log_level;
	long long contexts;
	long long max_request_bytes;
	long long max_payload_bytes;
	long long default_timeout_ms;
	long long max_timeout_ms;
	long long drain_timeout_ms;
};

#define GW_CODES 17

struct gw_metrics {
	atomic_ullong requests[32][GW_CODES]; /* by method slot and code */
	atomic_ullong latency_us_bucket[16];
	atomic_ullong latency_us_sum;
	atomic_ullong latency_count;
	atomic_uint in_flight;
	atomic_ullong store_rtt_us_sum;
	atomic_ullong store_calls;
};

struct gw {
	struct gw_config cfg;
	struct mhs_routes routes;
	struct gw_client *clients;
	size_t n_clients;
	struct mhs_rpc_table table;
	nng_socket rep;   /* partners */
	nng_socket store; /* REQ to mhs-store */
	struct gw_ctx **ctxs;
	size_t n_ctxs;
	atomic_bool store_ready;
	atomic_bool draining;
	char store_why[128];
	struct gw_metrics m;
};

/* auth.c */
int gw_clients_load(struct gw *gw, const char *file);
void gw_clients_free(struct gw *gw);
/* Returns the client whose token matches the bearer header, or NULL. */
const struct gw_client *gw_authenticate(
    const struct gw *gw, const char *authorization);
bool gw_client_may_call(const struct gw_client *c, const char *path);
bool gw_client_may_send_as(const struct gw_client *c, const char *ods);

/* server.c */
int gw_server_start(struct gw *gw);
/* Stops taking requests and waits (bounded) for in-flight ones. */
void gw_server_drain(struct gw *gw, int timeout_ms);
void gw_server_stop(struct gw *gw);
void gw_metrics_write(void *arg, struct mhs_buf *out);

#endif /* MHS_GATEWAY_H */
