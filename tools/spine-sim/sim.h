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
 *   FFFFFFFE-...  always a permanent ebXML ErrorList (DeliveryFailure).
 */
#ifndef MHS_SPINE_SIM_H
#define MHS_SPINE_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SIM_MAGIC_RETRY2 "FFFFFFF2-"
#define SIM_MAGIC_PERM   "FFFFFFFE-"
#define SIM_LATENCY_MAX  600000 /* ms */
#define SIM_CONFIG_MAX   4096   /* bytes of a PUT /_sim/config body */

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

struct sim {
	pthread_mutex_t mtx;
	struct sim_config cfg;
	struct sim_table table;
	uint64_t rng;
	atomic_int pending;
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

/* Decides the outcome of one delivery of id (holds sim->mtx briefly). */
enum sim_outcome sim_deliver(
    struct sim *s, const char *id, const char *interaction, int *err);

#endif /* MHS_SPINE_SIM_H */
