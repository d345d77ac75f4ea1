/*
 * Design notes: mhs-router. Leases due messages from its node's store,
 * wraps each in ebXML (router/ebxml), POSTs it to the Spine endpoint of its
 * interaction with libcurl's multi interface (many in flight on one
 * thread, connections reused, TLS verified), classifies Spine's answer and
 * reports the outcome to the store, which journals it (G5). The MessageId
 * is the message_id on every attempt (G4).
 *
 * Threads: one engine thread does everything above but the store calls,
 * which its store link thread makes (each waits for a journal sync, and
 * curl must not wait with it); the HTTP probe server reads atomics.
 * The inbound listener (inbound.h), when configured, takes Spine's
 * asynchronous responses on nng's HTTP threads and hands them to worker
 * threads of its own; it shares only cfg (read-only) and stats (atomics).
 */
#ifndef MHS_ROUTER_H
#define MHS_ROUTER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "breaker.h"
#include "routes.h"
#include "rpc.h"

struct rt_config {
	char *store_url;
	char *http;
	char *spine_url;
	char *spine_ca;
	char *client_cert;
	char *client_key;
	char *tls_ciphers; /* TLS 1.2 suites (OpenSSL list); "": curl's */
	char *tls_curves;  /* key-exchange groups (OpenSSL list); "": curl's */
	char *routes_file;
	char *consumer;
	char *party_key;
	char *log_level;
	long long max_in_flight;
	long long lease_ms;
	long long request_timeout_ms;
	long long poll_ms;
	long long breaker_failures;
	long long breaker_open_ms;
	long long breaker_max_open_ms;
	char *inbound_listen; /* "": no inbound listener */
	char *inbound_cert;
	char *inbound_key;
	char *inbound_client_ca;
	long long inbound_workers;
	long long inbound_queue;
	long long inbound_max_body;
};

struct rt_stats {
	atomic_ullong attempts, delivered, retried, failed, expired;
	atomic_ullong transport_errors, report_errors, circuit_refused;
	atomic_uint in_flight;
	/* inbound listener: responses stored, repeats acknowledged again,
	 * unsolicited dead-lettered, Spine acks ignored, malformed (500),
	 * unavailable (503: queue full or store unreachable) */
	atomic_ullong in_responses, in_duplicates, in_unsolicited, in_acks;
	atomic_ullong in_errors, in_unavailable;
};

struct router {
	struct rt_config cfg;
	struct mhs_routes routes;
	struct mhs_client *store;
	atomic_bool store_ok;
	atomic_bool stopping;
	struct rt_stats stats;
	struct rt_breakers breakers; /* engine thread only */
};

/* Runs the delivery engine until r->stopping; returns 0 or an mhs_err. */
int rt_engine_run(struct router *r);

/*
 * rt_tls_ciphers_check tells at start-up whether libcurl's TLS library
 * will take list (--tls-ciphers) as CURLOPT_SSL_CIPHER_LIST: with OpenSSL,
 * whether at least one suite in it is known (unknown ones are skipped, as
 * libcurl skips them). "" (libcurl's defaults) is fine. Returns 0,
 * MHS_EINVAL or MHS_ENOMEM. With a TLS library other than OpenSSL nothing
 * is checked here; each transfer would then fail with CURLE_SSL_CIPHER.
 */
int rt_tls_ciphers_check(const char *list);

/*
 * rt_tls_curves_check: the same for --tls-curves (CURLOPT_SSL_EC_CURVES):
 * with OpenSSL, whether every group named is one it knows, since one
 * unknown name makes libcurl fail every handshake. Same returns.
 */
int rt_tls_curves_check(const char *list);

/* Delay before retry number `attempt` (1-based): exponential from 500 ms,
 * capped by the route's retry interval, with jitter in [cap/2, cap]. */
int64_t rt_backoff_ms(
    const struct mhs_route *route, unsigned attempt, unsigned rnd);

#endif /* MHS_ROUTER_H */
