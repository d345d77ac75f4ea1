/*
 * Design notes: mhs-gateway's shared state. The gateway is the only
 * partner-facing process (DESIGN §2): it decodes the envelope, checks
 * credentials, enforces limits, validates, and forwards to mhs-store over
 * ipc. It keeps no message state of its own, so any number can run side
 * by side.
 *
 * Files: server.c (request contexts, dispatch, lifecycle), methods.c
 * (the dispatch table, payload checks, Health), store.c (forwarding and
 * the store readiness poller), batch.c (Submits batched into AppendMany
 * calls), limits.c (rate limit, in-flight cap),
 * listen.c (listeners, TLS), auth.c (clients file), metrics.c, main.c.
 *
 * Threads: nng's callback threads run the per-context state machines and
 * the readiness poller (never blocking); nng's HTTP threads read metrics;
 * the main thread waits for signals, then drains. Everything shared is
 * read-only after start or an atomic, but for the batcher's queue (a
 * mutex, batch.c); the one mutable per-client datum (the rate limiter's
 * state) is a single atomic word per client.
 */
#ifndef MHS_GATEWAY_H
#define MHS_GATEWAY_H

#include <nng/nng.h>
#include <pthread.h>
#include <nng/supplemental/tls/tls.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "routes.h"
#include "rpc.h"
#include "spfix.h"

struct gw_client {
	char id[64];
	unsigned char token_hash[32]; /* SHA-256 of the bearer token */
	char **methods;               /* see auth.c for the patterns */
	size_t n_methods;
	char **ods; /* "*" or the sender ODS codes allowed */
	size_t n_ods;
	size_t index; /* position in gw.clients: the rate limiter's slot */
};

struct gw_config {
	char *listen; /* comma-separated nng URLs */
	char *http;   /* probe URL */
	char *store_url;
	char *clients_file;
	char *routes_file;
	char *log_level;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	bool tls_require_client_cert;
	long long contexts;
	long long max_request_bytes;
	long long oversize_grace_bytes;
	long long max_payload_bytes;
	long long default_timeout_ms;
	long long max_timeout_ms;
	long long drain_timeout_ms;
	long long rate_per_client;
	long long burst;
	long long max_in_flight;
	long long store_check_interval_ms;
	long long store_check_timeout_ms;
	long long store_batch_calls; /* AppendMany calls at once; 0: none */
};

#define GW_CODES   17
#define GW_SLOTS   32 /* methods in the table; the last is "unknown" */
#define GW_BUCKETS 16

/* Why a request was refused (the reason label of the rejects counter). */
enum gw_reason {
	GW_R_NONE,
	GW_R_RATE,
	GW_R_IN_FLIGHT,
	GW_R_AUTH,
	GW_R_PERMISSION,
	GW_R_VALIDATION,
	GW_R_OVERSIZE,
	GW_R_DEADLINE,
	GW_R_UNAVAILABLE,
	GW_R_DRAINING,
	GW_R_UNKNOWN_METHOD,
	GW_R_COUNT,
};

/* A latency histogram: bucket b holds times up to 250 us << b. */
struct gw_hist {
	atomic_ullong bucket[GW_BUCKETS];
	atomic_ullong sum_us;
	atomic_ullong count;
};

struct gw_metrics {
	atomic_ullong requests[GW_SLOTS][GW_CODES]; /* by method and code */
	atomic_ullong rejects[GW_R_COUNT];
	struct gw_hist latency;
	struct gw_hist store_rtt;
	atomic_uint in_flight;       /* received, reply not yet sent */
	atomic_uint store_in_flight; /* waiting on the store (capped) */
	atomic_ullong store_batches, store_batched; /* AppendMany, Submits */
	atomic_ullong store_rtt_ewma_us;
};

struct gw_listener {
	nng_listener l;
	bool tls;
	struct mhs_listen_guard *guard; /* ipc:// only (spfix.h) */
};

/* The store readiness poller (store.c): a REQ context with its aio, and
 * a timer aio of its own (never one aio for both: see store.c). */
struct gw_ready_poll {
	nng_aio *aio;
	nng_aio *timer;
	nng_ctx ctx;
	int state;
};

struct gw_ctx;
struct gw_call;

/* Submits batched into AppendMany calls (batch.c). */
struct gw_batcher {
	pthread_mutex_t lock;
	struct gw_ctx *head, **tail; /* waiting for a call */
	struct gw_call **calls;
	size_t n_calls;
	nng_aio *timer;     /* expires queued Submits */
	bool ticking;       /* the timer is armed (lock held) */
	int64_t tick_at_us; /* for this deadline, or earlier (lock held) */
	bool stopping;      /* closing: nothing more is queued (lock held) */
	atomic_bool off;    /* the store does not know AppendMany */
};

struct gw {
	struct gw_config cfg;
	struct mhs_routes routes;
	struct gw_client *clients;
	size_t n_clients;
	_Atomic int64_t *rate_tat; /* per client: GCRA arrival time, ns */
	struct mhs_rpc_table table;
	nng_socket rep;               /* partners */
	nng_socket store;             /* REQ to mhs-store */
	struct mhs_redial store_dial; /* spfix.h: nng 1.5.2's ipc bug */
	struct gw_listener *listeners;
	size_t n_listeners;
	nng_tls_config *tls;
	bool tls_check; /* requests over tls+tcp need a verified cert */
	struct gw_ctx **ctxs;
	size_t n_ctxs;
	struct gw_ready_poll ready;
	struct gw_batcher batch;
	atomic_bool store_ready;
	atomic_bool draining; /* SIGTERM: answer 14, finish in-flight */
	atomic_bool closing;  /* stopping: callbacks start nothing new */
	struct gw_metrics m;
};

enum gw_state {
	GW_RECV,
	GW_STORE_SEND,
	GW_STORE_RECV,
	GW_STORE_BATCH,
	GW_SEND
};

/* One request context: touched only by its own callbacks (never two at
 * once: the partner aio and the store aio are never both busy). */
struct gw_ctx {
	struct gw *gw;
	enum gw_state state;
	nng_ctx rep;
	nng_aio *aio;
	nng_ctx req;
	nng_aio *saio;
	int slot; /* metrics slot of the method */
	int64_t start_us;
	int64_t deadline_us; /* monotonic */
	int64_t store_start_us;
	bool transport_ok; /* TLS client certificate check passed */
	/* Whose request this is, for scoping what the store answers. */
	const struct gw_client *client;
	const struct mhs_rpc_method *method;
	char request_id[80];
	/* GW_STORE_BATCH: the encoded AppendRequest, and the queue link. */
	ProtobufCBinaryData bitem;
	struct gw_ctx *bnext;
};

/* auth.c */
int gw_clients_load(struct gw *gw, const char *file);
void gw_clients_free(struct gw *gw);
/* Returns the client whose token matches the bearer header, or NULL. */
const struct gw_client *gw_authenticate(
    const struct gw *gw, const char *authorization);
bool gw_client_may_call(const struct gw_client *c, const char *path);
bool gw_client_may_send_as(const struct gw_client *c, const char *ods);
/* Does the client speak for every organisation ("*")? */
bool gw_client_all_ods(const struct gw_client *c);

/* limits.c: both return 0 to admit, else the milliseconds to wait. */
int gw_limits_init(struct gw *gw);
void gw_limits_fini(struct gw *gw);
int64_t gw_rate_take(struct gw *gw, const struct gw_client *client);
int64_t gw_in_flight_take(struct gw *gw);
void gw_in_flight_give(struct gw *gw, int64_t rtt_us);

/* listen.c */
int gw_listen_all(struct gw *gw);
/* Stops the listeners' guards (before the socket closes). */
void gw_listen_stop(struct gw *gw);
void gw_listen_fini(struct gw *gw);
/* False when p came in over tls+tcp without a verified certificate
 * while one is required. */
bool gw_transport_ok(const struct gw *gw, nng_pipe p);

/* methods.c */
int gw_table_build(struct gw *gw);
/* Unpacks and checks the payload; answers the request itself on error. */
void gw_method_run(struct gw_ctx *c, const struct mhs_rpc_method *m,
    const struct gw_client *client, const mhs_rpc_request *req);
bool gw_method_public(const struct mhs_rpc_method *m);

/* store.c */
void gw_forward(struct gw_ctx *c, const char *store_method,
    const ProtobufCBinaryData *payload);
/* The two halves of gw_forward: the checks (refuses and returns false,
 * else holds an in-flight slot), then the call on c's own REQ context. */
bool gw_forward_admit(struct gw_ctx *c);
void gw_forward_send(struct gw_ctx *c, const char *store_method,
    const ProtobufCBinaryData *payload);
/* Relays the store's answer to one forwarded request (code, message and,
 * for 0, the method's reply), unless its deadline has passed. */
void gw_store_result(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload);

/* batch.c */
int gw_batch_start(struct gw *gw);
/* Stopping is two steps: halt (after the sockets close: no call or tick
 * runs any more), then, once the request contexts' aios are stopped,
 * free. */
void gw_batch_halt(struct gw *gw);
void gw_batch_free(struct gw *gw);
/* Queues an admitted Submit (its AppendRequest, taken) for AppendMany. */
void gw_batch_forward(struct gw_ctx *c, ProtobufCBinaryData *item);
void gw_store_sent(struct gw_ctx *c);
void gw_store_failed(struct gw_ctx *c, int rv);
void gw_store_answered(struct gw_ctx *c, nng_msg *smsg);
int gw_ready_start(struct gw *gw);
void gw_ready_stop(struct gw *gw);
bool gw_ready(struct gw *gw);

/* server.c */
int gw_server_start(struct gw *gw);
/* Stops serving (new requests answer 14) and waits, bounded, for the
 * requests already in flight. */
void gw_server_drain(struct gw *gw, int timeout_ms);
void gw_server_stop(struct gw *gw);
int64_t gw_now_us(void);
/* gw_reply answers the request (code 0 with payload, or a refusal). */
void gw_reply(struct gw_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload);
/* gw_refuse answers a refusal counted under reason; retry_ms > 0 adds
 * a retry-after-ms metadata entry. */
void gw_refuse(struct gw_ctx *c, int code, enum gw_reason reason,
    int64_t retry_ms, const char *message);
/* gw_send sends msg (owned by the context from here) as the reply. */
void gw_send(struct gw_ctx *c, nng_msg *msg, int code);

/* metrics.c */
void gw_hist_observe(struct gw_hist *h, uint64_t us);
void gw_metrics_write(void *arg, struct mhs_buf *out);

#endif /* MHS_GATEWAY_H */
