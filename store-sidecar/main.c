/*
 * Design notes: mhs-store's entry point. Opens (and recovers) the journal
 * before anything else, starts the worker that owns journal and Redis,
 * then the nng server and the HTTP probes. Readiness (DESIGN §3): the
 * journal is writable and Redis is reachable. SIGTERM/SIGINT stop in order:
 * server, worker, journal (synced), exit 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "probe.h"
#include "store.h"
#include "util.h"

static struct store st;
static char hostname[64];

static struct mhs_opt st_opts[] = {
    {"listen", MHS_OPT_STR, "ipc:///tmp/mhs-store.ipc", 0, 0,
        "RPC URL the node's gateway and routers dial", &st.cfg.listen},
    {"http", MHS_OPT_STR, "http://127.0.0.1:7702", 0, 0,
        "HTTP probe URL (/livez /readyz /metrics)", &st.cfg.http},
    {"journal-dir", MHS_OPT_STR, "journal", 0, 0,
        "directory of the journal's month segments", &st.cfg.journal_dir},
    {"fsync", MHS_OPT_STR, "always", 0, 0,
        "journal fsync policy: always (group commit), everysec or no",
        &st.cfg.fsync},
    {"redis-host", MHS_OPT_STR, "127.0.0.1", 0, 0, "Redis host",
        &st.cfg.redis_host},
    {"redis-port", MHS_OPT_INT, "6379", 1, 65535, "Redis port",
        &st.cfg.redis_port},
    {"redis-password", MHS_OPT_STR, "", 0, 0, "Redis AUTH password",
        &st.cfg.redis_password},
    {"redis-timeout-ms", MHS_OPT_INT, "2000", 10, 60000,
        "Redis connect and command timeout", &st.cfg.redis_timeout_ms},
    {"prefix", MHS_OPT_STR, "mhs", 0, 0,
        "prefix of every Redis key (1 to 64 characters)", &st.cfg.prefix},
    {"node-id", MHS_OPT_STR, "", 0, 0,
        "this node's name in journal records, at most 64 characters "
        "(default: host name)",
        &st.cfg.node_id},
    {"nhs-index-key", MHS_OPT_STR, "", 0, 0,
        "secret keying the NHS number search index (HMAC-SHA256)",
        &st.cfg.nhs_index_key},
    {"contexts", MHS_OPT_INT, "128", 1, 4096, "requests accepted concurrently",
        &st.cfg.contexts},
    {"max-batch", MHS_OPT_INT, "1024", 1, 65536,
        "most requests in one group commit", &st.cfg.max_batch},
    {"final-ttl-s", MHS_OPT_INT, "604800", 60, 315360000,
        "how long Redis keeps a message after it is final",
        &st.cfg.final_ttl_s},
    {"idempotency-ttl-s", MHS_OPT_INT, "86400", 60, 315360000,
        "how long an idempotency key is remembered",
        &st.cfg.idempotency_ttl_s},
    {"idem-window", MHS_OPT_INT, "100000", 1, 100000000,
        "recent Submits remembered in memory for repeats while Redis is "
        "down",
        &st.cfg.idem_window},
    {"replay-redelivery-ms", MHS_OPT_INT, "60000", 1000, 3600000,
        "after a replay into an emptied Redis, when messages that were "
        "in flight are sent again (at least the routers' lease time)",
        &st.cfg.replay_redelivery_ms},
    {"inbound-dedup-s", MHS_OPT_INT, "604800", 60, 315360000,
        "how long an inbound Spine MessageId is remembered (duplicate "
        "elimination)",
        &st.cfg.inbound_dedup_s},
    {"lease-defer-ms", MHS_OPT_INT, "100", 0, 10000,
        "while Submits queue behind a full group commit, a router's Lease "
        "waits up to this long for a batch without them (acceptance "
        "first; 0: never)",
        &st.cfg.lease_defer_ms},
    {"retention-months", MHS_OPT_INT, "0", 0, 1200,
        "delete journal months older than this once all their messages "
        "are final (0: keep forever)",
        &st.cfg.retention_months},
    {"max-backlog", MHS_OPT_INT, "1000000", 0, 1000000000,
        "journal records not yet in Redis before Submit answers 14",
        &st.cfg.max_backlog},
    {"log-level", MHS_OPT_STR, "info", 0, 0, "debug, info, warn or error",
        &st.cfg.log_level},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program st_program = {
    "mhs-store",
    "store",
    "The MHS store sidecar: journal (the truth) and Redis (the index).",
    st_opts,
};

static bool
st_ready_probe(void *arg, char *why, size_t whylen)
{
	struct store *s = arg;

	if (!atomic_load(&s->journal_ok)) {
		snprintf(why, whylen, "journal failed");
		return false;
	}
	if (atomic_load(&s->replaying)) {
		snprintf(why, whylen, "replaying the journal into Redis");
		return false;
	}
	if (!atomic_load(&s->redis_ok) && !atomic_load(&s->backlog_ok)) {
		snprintf(why, whylen,
		    "Redis unavailable and the journal-only backlog is full");
		return false;
	}
	return true;
}

void
st_metrics_write(void *arg, struct mhs_buf *out)
{
	struct store *s = arg;
	struct st_stats *t = &s->stats;

	mhs_buf_printf(out,
	    "# TYPE mhs_store_appends_total counter\n"
	    "mhs_store_appends_total %llu\n"
	    "# TYPE mhs_store_duplicates_total counter\n"
	    "mhs_store_duplicates_total %llu\n"
	    "# TYPE mhs_store_batches_total counter\n"
	    "mhs_store_batches_total %llu\n"
	    "# TYPE mhs_store_batch_ops_total counter\n"
	    "mhs_store_batch_ops_total %llu\n"
	    "# TYPE mhs_store_journal_write_seconds_total counter\n"
	    "mhs_store_journal_write_seconds_total %g\n"
	    "# TYPE mhs_store_redis_read_seconds_total counter\n"
	    "mhs_store_redis_read_seconds_total %g\n"
	    "# TYPE mhs_store_redis_apply_wait_seconds_total counter\n"
	    "mhs_store_redis_apply_wait_seconds_total %g\n"
	    "# TYPE mhs_store_journal_bytes_total counter\n"
	    "mhs_store_journal_bytes_total %llu\n"
	    "# TYPE mhs_store_leased_total counter\n"
	    "mhs_store_leased_total %llu\n"
	    "# TYPE mhs_store_leases_deferred_total counter\n"
	    "mhs_store_leases_deferred_total %llu\n"
	    "# TYPE mhs_store_reports_total counter\n"
	    "mhs_store_reports_total %llu\n"
	    "# TYPE mhs_store_redis_errors_total counter\n"
	    "mhs_store_redis_errors_total %llu\n"
	    "# TYPE mhs_store_journal_only_records_total counter\n"
	    "mhs_store_journal_only_records_total %llu\n"
	    "# TYPE mhs_store_redis_backlog gauge\n"
	    "mhs_store_redis_backlog %llu\n"
	    "# TYPE mhs_store_journal_ok gauge\nmhs_store_journal_ok %d\n"
	    "# TYPE mhs_store_redis_ok gauge\nmhs_store_redis_ok %d\n",
	    atomic_load(&t->appends), atomic_load(&t->duplicates),
	    atomic_load(&t->batches), atomic_load(&t->batch_ops),
	    atomic_load(&t->fsync_us_sum) / 1e6,
	    atomic_load(&t->read_us_sum) / 1e6,
	    atomic_load(&t->apply_wait_us_sum) / 1e6,
	    atomic_load(&t->journal_bytes), atomic_load(&t->leases),
	    atomic_load(&t->leases_deferred), atomic_load(&t->reports),
	    atomic_load(&t->redis_errors),
	    atomic_load(&t->journal_only_appends), atomic_load(&t->backlog),
	    atomic_load(&s->journal_ok) ? 1 : 0,
	    atomic_load(&s->redis_ok) ? 1 : 0);
}

static int
warm_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct store *s = arg;
	Mhs__Store__V1__JournalRecord *r;
	char scoped[256];

	(void) seq;
	r = mhs__store__v1__journal_record__unpack(NULL, len, body);
	if (r == NULL)
		return 0;
	if (r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED &&
	    r->submit != NULL && r->fingerprint.len == 32) {
		st_idem_key(r->client_id, r->submit->idempotency_key, scoped,
		    sizeof(scoped));
		st_window_put(&s->window, scoped, r->message_id,
		    r->fingerprint.data, r->time_ms);
	}
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	return 0;
}

/*
 * st_window_warm fills the idempotency window from the journal's tail, so
 * that a repeat arriving after a restart while Redis is down is still
 * recognised (G3). Records of other kinds are interleaved, so it reads up
 * to four records per window slot.
 */
static void
st_window_warm(struct store *s)
{
	uint64_t last = mhs_journal_last_seq(s->journal);
	uint64_t span = (uint64_t) s->cfg.idem_window * 4;
	int64_t t0 = mhs_mono_ms();

	mhs_journal_scan(s->cfg.journal_dir, last > span ? last - span : 0,
	    warm_one, s, NULL, 0);
	mhs_info("idem_window_warm", "%u recent Submits remembered (%lld ms)",
	    s->window.count, (long long) (mhs_mono_ms() - t0));
}

static int
st_open_journal(void)
{
	struct mhs_journal_options o = {0};
	struct mhs_journal_recovery rec = {0};
	int policy = mhs_fsync_policy_parse(st.cfg.fsync), rv;

	if (policy < 0) {
		fprintf(stderr,
		    "mhs-store: --fsync: expected always, "
		    "everysec or no\n");
		return MHS_EINVAL;
	}
	o.policy = (enum mhs_fsync_policy) policy;
	o.node_id = st.cfg.node_id;
	if ((rv = mhs_journal_open(
	         &st.journal, st.cfg.journal_dir, &o, &rec)) != 0) {
		fprintf(stderr, "mhs-store: cannot open journal %s: %s\n",
		    st.cfg.journal_dir, mhs_strerror(rv));
		return rv;
	}
	/* The journal logs what recovery found (torn tail, counts). */
	mhs_info("journal_fsync", "fsync policy %s", st.cfg.fsync);
	atomic_store(&st.journal_ok, true);
	return 0;
}

int
main(int argc, char **argv)
{
	struct mhs_probe *probe = NULL;
	sigset_t set;
	int rv, sig;

	if ((rv = mhs_config_load(&st_program, argc, argv)) != 0)
		return rv > 0 ? 0 : 2;
	if (mhs_log_setup("mhs-store", "store", st.cfg.log_level) != 0)
		return 2;
	/* Every key is built in a fixed buffer: a prefix that long would be
	 * cut, and the store would read and write other keys. */
	if (st.cfg.prefix[0] == '\0' || strlen(st.cfg.prefix) > 64) {
		fprintf(stderr,
		    "mhs-store: --prefix must be 1 to 64 characters (got "
		    "%zu)\n",
		    strlen(st.cfg.prefix));
		return 2;
	}
	if (st.cfg.node_id[0] == '\0') {
		gethostname(hostname, sizeof(hostname) - 1);
		free(st.cfg.node_id);
		st.cfg.node_id = strdup(hostname);
	}
	if (st.cfg.node_id == NULL || strlen(st.cfg.node_id) > 64) {
		fprintf(stderr,
		    "mhs-store: --node-id must be at most 64 characters\n");
		return 2;
	}
	if (st.cfg.nhs_index_key[0] == '\0')
		mhs_warn("nhs_index_key_unset",
		    "--nhs-index-key is empty: "
		    "set a secret so NHS number index keys cannot be "
		    "guessed");
	mhs_signals_block(&set);

	if (st_open_journal() != 0)
		return 1;
	if (st_window_init(&st.window, (uint32_t) st.cfg.idem_window) != 0) {
		fprintf(stderr,
		    "mhs-store: no memory for the idempotency "
		    "window\n");
		return 1;
	}
	if (mhs_hmac_open(&st.nhs_mac, st.cfg.nhs_index_key,
	        strlen(st.cfg.nhs_index_key)) != 0)
		mhs_warn("nhs_index_key_slow",
		    "this OpenSSL cannot reuse a prepared HMAC key: the NHS "
		    "number index is computed the slow way");
	atomic_store(&st.backlog_ok, true);
	st_window_warm(&st);
	if (st_worker_start(&st) != 0 || (rv = st_server_start(&st)) != 0) {
		fprintf(stderr, "mhs-store: cannot start\n");
		return 1;
	}
	if ((rv = mhs_probe_open(&probe, st.cfg.http, st_ready_probe,
	         st_metrics_write, &st)) != 0) {
		fprintf(stderr, "mhs-store: cannot serve probes on %s: %s\n",
		    st.cfg.http, mhs_strerror(rv));
		st_server_stop(&st);
		return 1;
	}
	mhs_info("started", "mhs-store %s serving on %s", MHS_VERSION,
	    st.cfg.listen);
	sigwait(&set, &sig);
	mhs_info("stopping", "signal %d", sig);
	mhs_probe_close(probe);
	st_server_stop(&st);
	mhs_journal_close(st.journal);
	st_window_fini(&st.window);
	mhs_hmac_close(st.nhs_mac);
	if (st.redis.c != NULL)
		redisFree(st.redis.c);
	mhs_info("stopped", "mhs-store stopped");
	return 0;
}
