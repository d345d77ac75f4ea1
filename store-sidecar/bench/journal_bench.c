/*
 * Design notes: mhs-journal-bench, the store's durability benchmarks
 * (issue 3 "Measure"). Not a test: it prints figures.
 *
 *   group-commit: C caller threads each append one ~1 KiB record and wait
 *     for it to be durable, for D seconds, twice in the same run: once
 *     with a committer that takes everything queued as one batch (one
 *     write, one fdatasync: what mhs-store's worker does), once with one
 *     fdatasync per append. Prints appends/s of each and the ratio.
 *   generate: writes N ACCEPTED journal records (realistic Submits) into a
 *     journal directory, for timing a replay into an empty Redis. With
 *     --final each message also gets a DELIVERED record (2N records).
 *     With --lifecycle, N counts records instead, and each message gets
 *     the records a live store writes for it (ACCEPTED, SENDING at lease,
 *     DELIVERED), except --waiting-percent of them left ACCEPTED; senders
 *     are spread over 2000 pharmacies and NHS numbers over patients with
 *     about three messages each (--final puts every message under one of
 *     each).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "journal.h"
#include "log.h"
#include "mhs/store/v1/journal.pb-c.h"
#include "util.h"
#include "validate.h"

static struct {
	char *mode, *dir;
	long long callers, seconds, records, payload, month_offset;
	long long waiting;
	bool final, lifecycle;
} o;

static struct mhs_opt opts[] = {
    {"mode", MHS_OPT_STR, "group-commit", 0, 0, "group-commit or generate",
        &o.mode},
    {"dir", MHS_OPT_STR, "", 0, 0, "journal directory (created)", &o.dir},
    {"callers", MHS_OPT_INT, "64", 1, 4096, "concurrent appenders",
        &o.callers},
    {"seconds", MHS_OPT_INT, "3", 1, 600, "duration of each measurement",
        &o.seconds},
    {"records", MHS_OPT_INT, "1000000", 1, 100000000, "records to generate",
        &o.records},
    {"month-offset", MHS_OPT_INT, "0", 0, 1200,
        "generate: date the records this many months ago", &o.month_offset},
    {"final", MHS_OPT_BOOL, "false", 0, 0,
        "generate: also a DELIVERED record for every message", &o.final},
    {"lifecycle", MHS_OPT_BOOL, "false", 0, 0,
        "generate: --records counts records (up to 2 fewer: messages are "
        "whole); messages ACCEPTED, SENDING, DELIVERED",
        &o.lifecycle},
    {"waiting-percent", MHS_OPT_INT, "10", 0, 100,
        "generate --lifecycle: messages left waiting (ACCEPTED only)",
        &o.waiting},
    {"payload-bytes", MHS_OPT_INT, "1024", 1, 1048576,
        "size of each record's payload", &o.payload},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program prog = {"mhs-journal-bench", "bench",
    "Benchmarks of the journal: group commit and replay input.", opts};

/* ---- group commit ---- */

struct waiter {
	struct waiter *next;
	bool done;
	int rv;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv, done_cv;
	struct waiter *head;
	bool stop, batch;
	struct mhs_journal *j;
	uint8_t *body;
	atomic_ullong appends;
} gc = {.mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER};

static void *
committer(void *arg)
{
	struct mhs_journal_entry *e = calloc(4096, sizeof(*e));

	pthread_mutex_lock(&gc.mu);
	while (!gc.stop || gc.head != NULL) {
		struct waiter *w = gc.head, *last = NULL;
		size_t n = 0;
		int rv;

		if (w == NULL) {
			pthread_cond_wait(&gc.cv, &gc.mu);
			continue;
		}
		/* Take all (batch) or one (per-append fsync). */
		for (last = w; n < 4096; last = last->next) {
			e[n].body = gc.body;
			e[n].len = (size_t) o.payload;
			e[n].time_ms = mhs_now_ms();
			n++;
			if (!gc.batch || last->next == NULL)
				break;
		}
		gc.head = last->next;
		pthread_mutex_unlock(&gc.mu);
		rv = mhs_journal_append(gc.j, e, n, NULL);
		pthread_mutex_lock(&gc.mu);
		for (struct waiter *x = w;; x = x->next) {
			x->rv = rv;
			x->done = true;
			if (x == last)
				break;
		}
		atomic_fetch_add(&gc.appends, n);
		pthread_cond_broadcast(&gc.done_cv);
	}
	pthread_mutex_unlock(&gc.mu);
	free(e);
	return arg;
}

static void *
caller(void *arg)
{
	for (;;) {
		struct waiter w = {NULL, false, 0}, **pp;

		pthread_mutex_lock(&gc.mu);
		if (gc.stop) {
			pthread_mutex_unlock(&gc.mu);
			return arg;
		}
		for (pp = &gc.head; *pp != NULL; pp = &(*pp)->next)
			;
		*pp = &w;
		pthread_cond_signal(&gc.cv);
		while (!w.done)
			pthread_cond_wait(&gc.done_cv, &gc.mu);
		pthread_mutex_unlock(&gc.mu);
		if (w.rv != 0) {
			fprintf(
			    stderr, "append failed: %s\n", mhs_strerror(w.rv));
			exit(1);
		}
	}
}

static double
run_group_commit(const char *dir, bool batch)
{
	pthread_t com, *th = calloc((size_t) o.callers, sizeof(*th));
	int64_t t0;
	int rv;

	if ((rv = mhs_journal_open(&gc.j, dir, NULL, NULL)) != 0) {
		fprintf(stderr, "cannot open %s: %s\n", dir, mhs_strerror(rv));
		exit(1);
	}
	gc.batch = batch;
	gc.stop = false;
	atomic_store(&gc.appends, 0);
	pthread_create(&com, NULL, committer, NULL);
	for (long long i = 0; i < o.callers; i++)
		pthread_create(&th[i], NULL, caller, NULL);
	t0 = mhs_mono_ms();
	while (mhs_mono_ms() - t0 < o.seconds * 1000)
		usleep(10000);
	pthread_mutex_lock(&gc.mu);
	gc.stop = true;
	pthread_cond_broadcast(&gc.cv);
	pthread_mutex_unlock(&gc.mu);
	for (long long i = 0; i < o.callers; i++)
		pthread_join(th[i], NULL);
	pthread_join(com, NULL);
	mhs_journal_close(gc.j);
	free(th);
	return (double) atomic_load(&gc.appends) /
	    ((double) (mhs_mono_ms() - t0) / 1000.0);
}

static int
group_commit(void)
{
	char a[600], b[600];
	double batched, single;

	mkdir(o.dir, 0750);
	snprintf(a, sizeof(a), "%s/batched", o.dir);
	snprintf(b, sizeof(b), "%s/single", o.dir);
	gc.body = calloc(1, (size_t) o.payload);
	memset(gc.body, 'x', (size_t) o.payload);
	batched = run_group_commit(a, true);
	single = run_group_commit(b, false);
	printf("callers=%lld payload_bytes=%lld seconds=%lld fsync=always\n",
	    o.callers, o.payload, o.seconds);
	printf("group_commit_per_s=%.0f one_fsync_per_append_per_s=%.0f "
	       "ratio=%.2f\n",
	    batched, single, single > 0 ? batched / single : 0.0);
	free(gc.body);
	return 0;
}

/* ---- generate ---- */

/*
 * generate_states appends the batch's ACCEPTED records, then, for each
 * message not left waiting, a SENDING record (--lifecycle) and a
 * DELIVERED one. Returns the records appended, or an error (< 0).
 */
static long long
generate_states(struct mhs_journal *j, char ids[][37], const bool *waiting,
    size_t n, struct mhs_journal_entry *e)
{
	Mhs__Store__V1__JournalRecord r = MHS__STORE__V1__JOURNAL_RECORD__INIT;
	struct mhs_journal_entry d[512];
	uint8_t buf[512][128];
	size_t nd = 0;
	int rv;

	if ((rv = mhs_journal_append(j, e, n, NULL)) != 0)
		return rv;
	for (int step = o.lifecycle ? 0 : 1; step < 2; step++)
		for (size_t i = 0; i < n; i++) {
			if (waiting[i])
				continue;
			r.node_id = "bench";
			r.time_ms = e[i].time_ms + 1000 * (step + 1);
			r.kind =
			    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_STATE;
			r.message_id = ids[i];
			r.state = step == 0
			    ? MHS__V1__MESSAGE_STATE__MESSAGE_STATE_SENDING
			    : MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED;
			r.attempts = 1;
			r.reason = "";
			d[nd].body = buf[nd];
			d[nd].len = protobuf_c_message_pack(&r.base, buf[nd]);
			d[nd].time_ms = r.time_ms;
			nd++;
		}
	if (nd > 0 && (rv = mhs_journal_append(j, d, nd, NULL)) != 0)
		return rv;
	return (long long) (n + nd);
}

/* gen_nhs writes a valid NHS number for patient p (mod 11 check). */
static void
gen_nhs(long long p, char out[11])
{
	for (;; p++) {
		int sum = 0, check;

		snprintf(out, 11, "9%08lld", p % 100000000);
		for (int i = 0; i < 9; i++)
			sum += (out[i] - '0') * (10 - i);
		check = 11 - sum % 11;
		if (check == 11)
			check = 0;
		if (check != 10) {
			out[9] = (char) ('0' + check);
			out[10] = '\0';
			return;
		}
	}
}

static int
generate(void)
{
	Mhs__V1__SubmitRequest s = MHS__V1__SUBMIT_REQUEST__INIT;
	Mhs__Store__V1__JournalRecord r = MHS__STORE__V1__JOURNAL_RECORD__INIT;
	struct mhs_journal_entry e[256];
	uint8_t *bufs = malloc(256 * ((size_t) o.payload + 512)), fp[32];
	char *payload = malloc((size_t) o.payload), ids[256][37],
	     keys[256][40];
	char rx[256][21], nhs[256][11], ods[256][8], body17[18];
	bool waiting[256];
	long long done = 0, k = 0, per = o.final ? 2 : 1;
	struct mhs_journal *j;
	int rv;

	memset(payload, 'x', (size_t) o.payload);
	memset(fp, 7, sizeof(fp));
	if ((rv = mhs_journal_open(&j, o.dir, NULL, NULL)) != 0) {
		fprintf(
		    stderr, "cannot open %s: %s\n", o.dir, mhs_strerror(rv));
		return 1;
	}
	/* Without --lifecycle, --records counts messages. */
	for (long long target = o.lifecycle ? o.records : o.records * per;
	     done < target;) {
		size_t n = 0, off = 0;
		long long batch = 0;

		for (; n < 256; n++, k++) {
			long long cost = 1;

			waiting[n] = !o.final && !o.lifecycle;
			if (o.lifecycle) {
				/* spread: a short run has some of each */
				waiting[n] = k * 37 % 100 < o.waiting;
				cost = waiting[n] ? 1 : 3;
			} else if (o.final)
				cost = 2;
			if (done + batch + cost > target)
				break;
			batch += cost;
			mhs_uuid_upper(ids[n]);
			snprintf(keys[n], sizeof(keys[n]), "gen-%lld", k);
			snprintf(body17, sizeof(body17), "%06llXA99968%05llX",
			    k & 0xffffff, (k * 7) & 0xfffff);
			snprintf(rx[n], 21, "%.6s-%.6s-%.5s%c", body17,
			    body17 + 6, body17 + 12,
			    mhs_rx_id_check_char(body17));
			if (o.lifecycle) {
				gen_nhs(k / 3 * 7919 % 33333331, nhs[n]);
				snprintf(ods[n], sizeof(ods[n]), "F%04llX",
				    (unsigned long long) k * 2654435761ULL %
				        2000);
			} else {
				snprintf(nhs[n], sizeof(nhs[n]), "9434765919");
				snprintf(ods[n], sizeof(ods[n]), "FA565");
			}
			s.idempotency_key = keys[n];
			s.interaction_id = "PORX_IN020101SM31";
			s.prescription_id = rx[n];
			s.nhs_number = nhs[n];
			s.sender_ods = ods[n];
			s.payload.data = (uint8_t *) payload;
			s.payload.len = (size_t) o.payload;
			r.node_id = "bench";
			r.time_ms = mhs_now_ms() -
			    o.month_offset * 31LL * 24 * 3600 * 1000;
			r.kind =
			    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED;
			r.message_id = ids[n];
			r.submit = &s;
			r.fingerprint.data = fp;
			r.fingerprint.len = 32;
			r.client_id = "bench";
			e[n].body = bufs + off;
			e[n].len =
			    protobuf_c_message_pack(&r.base, bufs + off);
			e[n].time_ms = r.time_ms;
			off += e[n].len;
		}
		if (n == 0)
			break; /* the next message would pass the target */
		if ((batch = generate_states(j, ids, waiting, n, e)) < 0) {
			fprintf(
			    stderr, "append: %s\n", mhs_strerror((int) batch));
			return 1;
		}
		if (done / 100000 != (done + batch) / 100000)
			fprintf(stderr, "\rgenerated %lld/%lld records",
			    done + batch, target);
		done += batch;
	}
	fprintf(stderr, "\n");
	printf("records=%lld messages=%lld last_seq=%llu dir=%s\n", done, k,
	    (unsigned long long) mhs_journal_last_seq(j), o.dir);
	mhs_journal_close(j);
	free(bufs);
	free(payload);
	return 0;
}

int
main(int argc, char **argv)
{
	int rv = mhs_config_load(&prog, argc, argv);

	if (rv != 0)
		return rv > 0 ? 0 : 2;
	mhs_log_init("journal-bench", MHS_LOG_WARN);
	if (o.dir[0] == '\0') {
		fprintf(stderr, "mhs-journal-bench: --dir is required\n");
		return 2;
	}
	if (strcmp(o.mode, "group-commit") == 0)
		return group_commit();
	if (strcmp(o.mode, "generate") == 0)
		return generate();
	fprintf(stderr, "mhs-journal-bench: --mode group-commit|generate\n");
	return 2;
}
