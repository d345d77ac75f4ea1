/*
 * Design notes: mhs-store, the only process that touches the journal and
 * Redis (DESIGN §4). Requests arrive on nng REP contexts (server.c); every
 * one that needs the journal or Redis becomes an st_op on one queue, and a
 * single worker thread (worker.c) owns both the journal fd and the hiredis
 * context. The worker takes everything queued as one batch and, for the
 * batch:
 *   1. reads what it needs from Redis (idempotency keys, leases, lookups),
 *   2. appends every state change to the journal in one write and one
 *      fdatasync (group commit),
 *   3. applies the same records to Redis in one pipeline,
 *   4. answers every op of the batch.
 * So nothing is answered before it is durable (G1), and Redis only ever
 * holds what the journal holds (it can be rebuilt from it: redis.c).
 *
 * Locking: the queue is guarded by st->lock; everything else the worker
 * owns alone. Readiness flags are atomics read by the nng callbacks and
 * the probe server.
 */
#ifndef MHS_STORE_H
#define MHS_STORE_H

#include <hiredis/hiredis.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "journal.h"
#include "mhs/store/v1/journal.pb-c.h"
#include "mhs/store/v1/store.pb-c.h"
#include "rpc.h"
#include "window.h"

struct st_config {
	char *listen;
	char *http;
	char *journal_dir;
	char *fsync;
	char *redis_host;
	long long redis_port;
	char *redis_password;
	char *prefix;
	char *node_id;
	char *nhs_index_key; /* HMAC key for the NHS number index */
	char *log_level;
	long long contexts;
	long long max_batch;
	long long final_ttl_s;
	long long idempotency_ttl_s;
	long long redis_timeout_ms;
	long long idem_window;
	long long max_backlog;
	long long retention_months;
	long long inbound_dedup_s;
	long long replay_redelivery_ms;
	long long lease_defer_ms;
};

enum st_kind {
	ST_APPEND,
	ST_GET,
	ST_SEARCH,
	ST_LEASE,
	ST_REPORT,
	ST_DEAD_LETTERS,
	ST_REDELIVER,
	ST_UNSOLICITED,
	ST_REPORT_MANY,
};

struct st_group;

/* One request waiting for the worker. */
struct st_op {
	struct st_op *next;
	struct st_ctx *ctx;     /* NULL for one Append of an AppendMany */
	struct st_group *group; /* that AppendMany, which owns in */
	enum st_kind kind;
	int64_t queued_ms;    /* mono: when it was queued */
	ProtobufCMessage *in; /* decoded request; freed after the reply */
	/* Filled by the worker: */
	int code;
	char message[200];
	ProtobufCMessage *out; /* reply payload, freed with out_free */
	void (*out_free)(ProtobufCMessage *);
	/* Append: */
	char message_id[37];
	uint8_t fingerprint[32];
	int64_t accepted_at_ms;
	bool duplicate;
	bool journal; /* has a record in this batch */
};

struct st_redis {
	redisContext
	    *c; /* NULL while disconnected: never reused after error */
	char apply_sha[41];
	int64_t next_attempt_ms;
	int backoff_ms;
	uint64_t applied_seq;
	unsigned replays, replays_seen; /* replays after a loss of data */
};

struct st_stats {
	atomic_ullong appends, duplicates, batches, batch_ops, fsync_us_sum;
	atomic_ullong reports, leases, redis_errors, journal_bytes;
	atomic_ullong journal_only_appends, backlog;
	atomic_ullong read_us_sum, apply_wait_us_sum; /* worker phases */
	atomic_ullong leases_deferred;
};

#define ST_APPLY_MAX   64
#define ST_APPLY_WIDTH 16
#define ST_APPLY_ARGS  (6 + ST_APPLY_MAX * ST_APPLY_WIDTH)

struct store;

/*
 * One Redis command being built: every argument's bytes back to back in
 * one buffer, with offsets and lengths (redisAppendCommandArgv is binary
 * safe). off and len point at arrays of max entries owned by the user.
 */
struct st_argv {
	struct mhs_buf bytes;
	size_t *off, *len;
	size_t n, max;
};
/* Add one argument; too many sets bytes.err (MHS_ETOOBIG). */
void st_argv_add(struct st_argv *v, const void *p, size_t n);
void st_argv_str(struct st_argv *v, const char *s);
void st_argv_num(struct st_argv *v, long long n);
/* st_argv_send queues the command into the pipeline and empties v; 0 or
 * a negative mhs_err (the connection is dropped on failure). */
int st_argv_send(struct store *st, struct st_argv *v);

struct st_apply {
	struct st_argv v; /* the EVALSHA being built */
	size_t off[ST_APPLY_ARGS], len[ST_APPLY_ARGS];
	size_t nrecs, calls;
	long long replay_delay_ms; /* 0: live records */
};

struct store {
	struct st_config cfg;
	struct mhs_journal *journal;
	enum mhs_fsync_policy policy;
	struct st_redis redis;
	struct mhs_rpc_table table;
	nng_socket rep;
	nng_listener listener;
	struct mhs_listen_guard *guard; /* spfix.h: nng 1.5.2's ipc bug */
	struct st_ctx **ctxs;
	size_t n_ctxs;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct st_op *head, **tail;
	struct st_op *deferred, **deferred_tail; /* worker only: Leases */
	bool stop;
	pthread_t worker;
	atomic_bool journal_ok;
	atomic_bool redis_ok;
	atomic_bool backlog_ok; /* Redis down, but the backlog is bounded */
	atomic_bool replaying;  /* a replay holds the worker: not ready */
	/* Redis is being rebuilt (rebuild.c): Submits are journaled only,
	 * between its steps, and count in the backlog from rebuild_from. */
	atomic_bool rebuilding;
	uint64_t rebuild_from; /* worker only */
	struct st_window window;
	struct mhs_hmac *nhs_mac;  /* worker only: the NHS index key */
	struct st_apply apply;     /* worker only */
	int64_t retention_at_ms;   /* worker only */
	int64_t lease_claim_at_ms; /* worker only: last XAUTOCLAIM */
	struct st_stats stats;
};

/* server.c: nng side. */
int st_server_start(struct store *st);
void st_server_stop(struct store *st);
/* Called by the worker: sends op's reply and frees op. */
void st_op_finish(struct st_op *op);

/* worker.c */
int st_worker_start(struct store *st);
void st_worker_stop(struct store *st);
void st_enqueue(struct store *st, struct st_op *op);
/* Queues ops[0..n-1] at once (one wake-up of the worker). */
void st_enqueue_many(struct store *st, struct st_op *ops, size_t n);
/*
 * st_worker_serve_offline, called by the worker from inside a rebuild of
 * Redis, answers what is queued without touching Redis: Submits are
 * journaled (repeats caught by the window), the rest answer 14.
 */
void st_worker_serve_offline(struct store *st);

/* redis.c: connection, the apply script, replay. */
int st_redis_ensure(struct store *st);
void st_redis_drop(struct store *st, const char *why);
/*
 * Applying journal records to Redis: st_apply_add queues one record into
 * an EVALSHA of up to ST_APPLY_MAX records (sent into the pipeline when
 * full); st_apply_flush sends what is queued. a->calls counts the calls
 * sent, whose replies st_redis_drain must then read.
 */
int st_apply_add(struct store *st, struct st_apply *a, uint64_t seq,
    const Mhs__Store__V1__JournalRecord *r);
int st_apply_flush(struct store *st, struct st_apply *a);
void st_apply_fini(struct st_apply *a);
/* Reads n pipelined replies; returns 0 or a negative mhs_err. */
int st_redis_drain(struct store *st, size_t n);
/* Notices a Redis emptied under the store and replays into it. */
int st_redis_check(struct store *st);
/* Was there no such replay since the last time this was asked? */
bool st_redis_ok_since_check(struct store *st);
/* Replays every journal record after the last one Redis applied. */
int st_redis_replay(struct store *st);
/* rebuild.c: fills a Redis holding nothing of this node from the journal,
 * one write per message; *applied is the last record it covers. */
int st_redis_rebuild(struct store *st, uint64_t *applied);
/* One command, returning the reply (caller frees) or NULL after dropping. */
redisReply *st_redis_cmd(
    struct store *st, int argc, const char **argv, const size_t *lens);

/* worker.c helpers shared with query.c (worker thread only). */
void st_op_fail(struct st_op *op, int code, const char *msg);
redisReply *st_hgetall(struct store *st, const char *id);
redisReply *st_hash_field(const redisReply *h, const char *name);
long long st_hash_ll(const redisReply *h, const char *name);
Mhs__V1__MessageStatus *st_status_from_hash(
    const char *id, const redisReply *h);
void st_status_free(ProtobufCMessage *m);

/* query.c: read-only ops (worker thread only). */
void st_do_search(struct store *st, struct st_op *op);
void st_do_dead_letters(struct store *st, struct st_op *op);

/* st_nhs_index writes the hex HMAC that keys an NHS number's index
 * (worker thread only). */
void st_nhs_index(struct store *st, const char *nhs_number, char out[65]);

/* st_idem_key writes the scoped idempotency key "CLIENT/KEY". */
void st_idem_key(
    const char *client, const char *key, char *out, size_t outlen);

void st_metrics_write(void *arg, struct mhs_buf *out);

/* retention.c (worker thread): drops month segments past retention. */
void st_retention_tick(struct store *st, bool force);
int st_month_age(int year, int month, int64_t now_ms);

#endif /* MHS_STORE_H */
