/*
 * Design notes: mhs-spine-sim, a Spine stand-in over HTTP(S) for tests, the
 * demo stack and benchmarks (DESIGN §5, SPINE-EBXML.md). One process
 * state, struct sim, shared by nng's HTTP callbacks (which run on nng's
 * threads, concurrently):
 *  - sim->mtx guards cfg, table and rng, and is held only for table and
 *    config updates: never while parsing, building or sending;
 *  - the table is a hash index over an insertion-ordered array, so a
 *    lookup is O(1) and GET /_sim/messages lists in arrival order;
 *  - replies delayed by latency_ms wait on an nng sleep aio, never on a
 *    callback thread; sim->pending counts them so shutdown can drain.
 *
 * Magic MessageIds (case-insensitive prefixes), for deterministic tests:
 *   FFFFFFF2-...  a retriable SOAP fault (code 206) on its first two
 *                 deliveries, then acknowledged;
 *   FFFFFFFE-...  always a permanent ebXML ErrorList (DeliveryFailure);
 *   FFFFFFD2-...  (a release request) its asynchronous response is sent
 *                 twice under one inbound MessageId.
 *
 * Asynchronous responses (sim_respond.c): the first acknowledgement of a
 * release request queues Spine's business response for the sender thread,
 * which POSTs it to --respond-url; nng's threads never send.
 */
#ifndef MHS_SPINE_SIM_H
#define MHS_SPINE_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SIM_MAGIC_RETRY2   "FFFFFFF2-"
#define SIM_MAGIC_PERM     "FFFFFFFE-"
#define SIM_MAGIC_RESPOND2 "FFFFFFD2-"
/* eb:Action of the asynchronous response to a release request. */
#define SIM_RESPONSE_ACTION "PORX_IN070101UK31"
/* eb:Action of a new prescription (the duplicate-prescription rule). */
#define SIM_NEW_PRESCRIPTION "PORX_IN020101SM31"
#define SIM_LATENCY_MAX      600000 /* ms */
#define SIM_CONFIG_MAX       4096   /* bytes of a PUT /_sim/config body */

enum sim_fault {
	SIM_FAULT_RETRIABLE, /* 500 + SOAP fault, NHS code 206 */
	SIM_FAULT_PERMANENT, /* error_status + ebXML ErrorList */
	SIM_FAULT_DROP,      /* connection closed without an answer */
};

/* The runtime configuration (PUT /_sim/config). */
struct sim_config {
	int fail_rate; /* percent of messages that get `fault` */
	enum sim_fault fault;
	int latency_ms;   /* delay before every ebXML answer */
	bool down;        /* answer 503 without an ebXML body */
	int error_status; /* HTTP status of ErrorLists: 500 or 200 */
};

/* What one delivery got, as listed by GET /_sim/messages. */
enum sim_outcome {
	SIM_OUT_ACK,
	SIM_OUT_RETRIABLE,
	SIM_OUT_PERMANENT,
	SIM_OUT_DROP,
};

struct sim_msg {
	char id[64];          /* MessageId, upper-cased */
	char interaction[64]; /* eb:Action of its first delivery */
	uint32_t deliveries;  /* every well-formed POST, replays included */
	uint32_t acks;        /* deliveries answered 202 */
	enum sim_outcome last;
};

struct sim_table {
	struct sim_msg *msgs; /* insertion order */
	size_t n, cap, max;
	uint32_t *slots; /* open addressing: index + 1, 0 = empty */
	size_t nslots;   /* power of two, kept at most half full */
};

struct sim_responder;
struct sim_reply;

struct sim {
	pthread_mutex_t mtx;
	struct sim_config cfg;
	struct sim_table table;
	/* prescription ID -> MessageId of the new prescription that first
	 * carried it (entries reuse sim_msg: id = prescription ID,
	 * interaction = that MessageId) */
	struct sim_table rx;
	uint64_t rng;
	atomic_int pending;
	atomic_ullong posts, down_refused; /* GET /_sim/stats */
	struct sim_responder *resp;        /* NULL: no --respond-url */
	/* replies kept for reuse (sim_http.c) */
	pthread_mutex_t pool_mtx;
	struct sim_reply *pool;
	size_t npool;
};

/* ---- sim_table.c: the message table (caller holds sim->mtx) ---- */

int sim_table_init(struct sim_table *t, size_t max);
void sim_table_fini(struct sim_table *t);
void sim_table_clear(struct sim_table *t);

/*
 * sim_table_get returns the entry for id (already upper-cased), adding it
 * with interaction when new. The pointer is valid until the next call.
 * Returns NULL with MHS_ENOMEM, or MHS_ETOOBIG when the table is full.
 */
struct sim_msg *sim_table_get(
    struct sim_table *t, const char *id, const char *interaction, int *err);

/* Appends the JSON array of GET /_sim/messages. */
void sim_table_json(const struct sim_table *t, struct mhs_buf *out);

/* ---- sim_json.c: the /_sim/config document ---- */

const char *sim_fault_name(enum sim_fault f);
int sim_fault_parse(const char *name, enum sim_fault *f);
const char *sim_outcome_name(enum sim_outcome o);

/*
 * sim_config_patch applies a JSON object with any of fail_rate, fault,
 * latency_ms, down, error_status to a copy of cfg; cfg changes only when
 * the whole document is valid. Returns 0 or MHS_EINVAL with a message.
 */
int sim_config_patch(struct sim_config *cfg, const char *json, size_t len,
    char *err, size_t errlen);

/* Validates a whole configuration (option values at start). */
int sim_config_check(const struct sim_config *cfg, char *err, size_t errlen);

void sim_config_json(const struct sim_config *cfg, struct mhs_buf *out);

/* ---- sim_http.c: the handlers ---- */

struct nng_http_server;

/* Registers the ebXML (POST, any path) and /_sim handlers on server. */
int sim_http_register(struct sim *s, struct nng_http_server *server);

/* Frees the replies kept for reuse; after the server is released. */
void sim_http_fini(struct sim *s);

/* One delivery, as sim_deliver sees it. */
struct sim_delivery {
	const char *id;          /* MessageId, upper-cased */
	const char *interaction; /* eb:Action */
	bool refuse;             /* Spine's own rule refused it: permanent */
	bool first_ack;          /* out: the message's first acknowledgement */
};

/* Records delivery d and decides its outcome (holds sim->mtx briefly). */
enum sim_outcome sim_deliver(struct sim *s, struct sim_delivery *d, int *err);

/*
 * sim_rx_claim records prescription ID rx as first sent by MessageId id.
 * Returns true when rx is new or was first sent by id itself (a replay);
 * false, with that MessageId in first, for a duplicate prescription.
 * Holds sim->mtx briefly.
 */
bool sim_rx_claim(
    struct sim *s, const char *rx, const char *id, char first[64], int *err);

/* ---- sim_respond.c: asynchronous business responses ---- */

struct mhs_ebxml_request;

struct sim_respond_opts {
	const char *urls;       /* comma-separated; tried in turn */
	const char *cert, *key; /* client certificate ("": none) */
	const char *ca;         /* CA for the receiver ("": system's) */
	int delay_ms, retries, max_pending;
};

/* Starts the sender thread; *rp belongs to the caller (stop it). */
int sim_respond_start(
    struct sim_responder **rp, const struct sim_respond_opts *o);

/* Stops the sender (responses still queued are dropped); NULL is fine. */
void sim_respond_stop(struct sim_responder *r);

/* Does a request with this eb:Action get an asynchronous response? */
bool sim_respond_wanted(const char *action);

/* Queues the response to release request req (r may be NULL: none).
 * Never blocks and never sends: safe on nng's threads. */
void sim_respond_queue(
    struct sim_responder *r, const struct mhs_ebxml_request *req);

/* Appends "responses":{...} (or null) for GET /_sim/stats. */
void sim_respond_stats_json(struct sim_responder *r, struct mhs_buf *out);

#endif /* MHS_SPINE_SIM_H */
