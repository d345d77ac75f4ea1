/*
 * Design notes: mhs-bench, the load generator (DESIGN §6). Internal to
 * tools/bench/; four parts, one file each:
 *  - hist.c: a log-linear latency histogram of fixed size (HDR-like,
 *    under 1% relative error), so memory stays bounded however long the
 *    run; every counter is an atomic, so callbacks record without a lock;
 *  - load.c: the driver. One or a few nng REQ sockets and N contexts, each
 *    a small state machine in one aio callback (SEND -> RECV -> record ->
 *    SEND the next). Callbacks never block: the only lock they take is the
 *    phase mutex, once, when a worker goes idle at the end of a phase;
 *  - gen.c: the requests against the gateway: valid, unique Submits (they
 *    are durable work), GetStatus of a few seeded messages, Health Check;
 *  - echo.c: the baseline, an in-process nng REP echo server on a free
 *    loopback port, served by contexts in the same callback style.
 * main.c wires them together and owns all output. Nothing here logs a
 * payload, an NHS number or a token.
 */
#ifndef MHS_BENCH_H
#define MHS_BENCH_H

#include <nng/nng.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- hist.c ---- */

/*
 * Values below 256 are exact; above, each power of two is split into 128
 * buckets. 56 octaves after the first 256 values cover all of uint64_t.
 */
#define BENCH_HIST_N (256 + 56 * 128)

struct bench_hist {
	_Atomic uint64_t counts[BENCH_HIST_N];
	_Atomic uint64_t total;
	_Atomic uint64_t max;
};

void bench_hist_record(struct bench_hist *h, uint64_t v);
/* bench_hist_quantile gives the value at q (0..1); 0 when empty. */
uint64_t bench_hist_quantile(struct bench_hist *h, double q);

/* ---- load.c ---- */

/* Per-code reply counts: gRPC codes 0..16, then one for any other code. */
#define BENCH_CODES 18
/* Transport failures by nng error number; [0] holds any other error. */
#define BENCH_TERRS 32

/* What one phase saw. Zero it (memset) before a phase. */
struct bench_stats {
	_Atomic uint64_t issued;
	_Atomic uint64_t codes[BENCH_CODES];
	_Atomic uint64_t terrs[BENCH_TERRS];
	_Atomic uint64_t bad_replies; /* replies that did not decode */
	_Atomic uint64_t late;        /* --rate: sent over 1 ms after due */
	struct bench_hist hist;       /* latency (ns) of code-0 replies */
	int64_t t_start, t_end;       /* monotonic ns */
};

/*
 * A target: how to make a request and read a reply. make is called from
 * nng callbacks, concurrently: it must not block. On success *mp belongs
 * to the caller. reply_code gives the reply's status code (>= 0), or -1
 * when the reply is not a valid answer; the caller keeps m.
 */
struct bench_target {
	int (*make)(void *arg, nng_msg **mp);
	int (*reply_code)(void *arg, nng_msg *m);
	void *arg;
};

struct bench_load;

/*
 * bench_load_open dials url (synchronously: a refused connection fails
 * here) on nsocks REQ sockets and prepares concurrency contexts. Returns
 * 0 or an nng error number.
 */
int bench_load_open(struct bench_load **lp, const char *url,
    const struct bench_target *t, int concurrency, int nsocks, int timeout_ms);

/*
 * bench_load_run runs one phase: count requests (count > 0), else for
 * duration_ns, with every context busy. When progress is not NULL, a line
 * a second goes to stderr prefixed by it. *stop (set from a signal
 * handler) ends the phase early.
 */
void bench_load_run(struct bench_load *l, struct bench_stats *st,
    uint64_t count, int64_t duration_ns, const char *progress,
    volatile int *stop);

/*
 * bench_load_set_rate makes later phases open-loop: request k is due at
 * k / per_s seconds after the phase starts (0: closed loop, each context
 * sends its next request as soon as the last is answered). Latency is
 * then measured from when a request was due, not when a context got to
 * send it, so a stall shows in the percentiles (no coordinated
 * omission); stats->late counts requests sent over 1 ms late (every
 * context was busy: raise --concurrency).
 */
void bench_load_set_rate(struct bench_load *l, double per_s);

/* bench_load_close stops every aio, then frees everything. NULL is ok. */
void bench_load_close(struct bench_load *l);

/* bench_now_ns: monotonic nanoseconds. */
int64_t bench_now_ns(void);

/* bench_stats_errors: error replies plus transport failures. */
uint64_t bench_stats_errors(struct bench_stats *st);

/* bench_stats_ok: replies with code 0. */
uint64_t bench_stats_ok(struct bench_stats *st);

/* ---- gen.c ---- */

enum bench_method {
	BENCH_SUBMIT,
	BENCH_GET_STATUS,
	BENCH_HEALTH,
};

#define BENCH_NHS_POOL  4096
#define BENCH_SEEDS_MAX 64

struct bench_gen {
	enum bench_method method;
	char bearer[300];
	char run_id[17];    /* 16 hex digits, random per run */
	const char *sender; /* sender ODS */
	uint32_t timeout_ms;
	_Atomic uint64_t seq; /* next request number */
	uint64_t rx_base;     /* random 44-bit offset for prescription IDs */
	uint8_t *payload;
	size_t payload_len;
	char (*nhs)[11]; /* BENCH_NHS_POOL valid NHS numbers */
	char ids[BENCH_SEEDS_MAX][37];
	size_t n_ids; /* seeded message ids for get-status */
};

/* bench_gen_init prepares g; 0 or an mhs_err. */
int bench_gen_init(struct bench_gen *g, enum bench_method method,
    const char *token, const char *sender, size_t payload_bytes,
    int timeout_ms);
void bench_gen_fini(struct bench_gen *g);

/*
 * bench_gen_seed submits n messages synchronously (for get-status) and
 * keeps their ids. Returns 0, a gRPC code > 0 (the gateway refused), or a
 * negative mhs_err (no answer). *why gets the reply's text (caller frees).
 */
int bench_gen_seed(struct bench_gen *g, const char *url, size_t n, char **why);

/* The target callbacks for the gateway (arg is the bench_gen). */
int bench_gen_make(void *arg, nng_msg **mp);
int bench_gen_reply_code(void *arg, nng_msg *m);

/* ---- echo.c ---- */

struct bench_echo;

/*
 * bench_echo_start listens on a free 127.0.0.1 tcp port with contexts
 * REP contexts that send every request back. url (cap bytes) receives
 * its address. Returns 0 or an nng error number.
 */
int bench_echo_start(struct bench_echo **ep, int contexts, size_t max_bytes,
    char *url, size_t cap);
void bench_echo_stop(struct bench_echo *e);

/*
 * The baseline target: each request is a copy of a fixed buffer; a reply
 * is valid when it has the same length.
 */
struct bench_blob {
	uint8_t *data;
	size_t len;
};
int bench_blob_make(void *arg, nng_msg **mp);
int bench_blob_reply_code(void *arg, nng_msg *m);

#endif /* MHS_BENCH_H */
