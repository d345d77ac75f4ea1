/*
 * Design notes: mhsctl's offline journal commands. They read a journal
 * directory directly (never through the gateway), so they work with the
 * store stopped, and `check` without --fix and the readers also work
 * while it runs (a torn tail being written is reported, not repaired).
 *
 *   journal check [--fix]  framing and CRCs (the journal library's check)
 *   journal verify         check, and every body decodes as a record
 *   journal export         JSON lines for analytics, by month/interaction
 *   stats                  counts by month, interaction and final state
 *
 * Exports never contain NHS numbers or payloads: analytics get message
 * metadata only (payload sizes, not contents).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "error.h"
#include "journal.h"
#include "mhs/store/v1/journal.pb-c.h"
#include "mhsctl.h"
#include "util.h"

static const char *const state_names[] = {"UNSPECIFIED", "ACCEPTED", "SENDING",
    "RETRYING", "DELIVERED", "RESPONDED", "FAILED", "EXPIRED"};
static const char *const kind_names[] = {
    "unspecified", "accepted", "state", "unsolicited"};

/* ---- progress ---- */

struct progress {
	bool tty;
	uint64_t n;
	int64_t start, last;
};

static void
progress_tick(struct progress *p, const char *what)
{
	int64_t now;

	if (!p->tty || (++p->n & 1023) != 0)
		return;
	now = mhs_mono_ms();
	if (now - p->last < 200)
		return;
	p->last = now;
	fprintf(stderr, "\r%s %llu records (%.0f/s)", what,
	    (unsigned long long) p->n,
	    (double) p->n * 1000.0 / (double) (now - p->start + 1));
}

static void
progress_done(struct progress *p, const char *what)
{
	if (p->tty)
		fprintf(stderr, "\r%s %llu records in %.1f s          \n",
		    what, (unsigned long long) p->n,
		    (double) (mhs_mono_ms() - p->start) / 1000.0);
}

static void
progress_init(struct progress *p)
{
	p->tty = isatty(STDERR_FILENO);
	p->n = 0;
	p->start = p->last = mhs_mono_ms();
}

/* ---- helpers ---- */

static void
month_of(int64_t ms, char out[8])
{
	time_t t = (time_t) (ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 8, "%Y-%m", &tm);
}

static const char *
journal_dir(const char *opt)
{
	const char *env = getenv("MHS_JOURNAL_DIR");

	if (opt != NULL && opt[0] != '\0')
		return opt;
	return env != NULL ? env : NULL;
}

/*
 * A set of message ids with their insertion index (open addressing, FNV-1a,
 * grown at half full): the interaction filter of export and the
 * per-message state of stats, for journals of millions of records.
 */
struct idset {
	char (*v)[37];
	size_t n, cap;
	uint32_t *slot; /* index + 1; 0 = empty */
	size_t nslots;
};

static uint32_t
id_hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (; *id != '\0'; id++)
		h = (h ^ (uint8_t) *id) * 16777619u;
	return h;
}

static long
idset_find(const struct idset *s, const char *id)
{
	if (s->nslots == 0)
		return -1;
	for (size_t i = id_hash(id) & (s->nslots - 1);;
	     i = (i + 1) & (s->nslots - 1)) {
		if (s->slot[i] == 0)
			return -1;
		if (strcmp(s->v[s->slot[i] - 1], id) == 0)
			return (long) s->slot[i] - 1;
	}
}

static bool
idset_has(const struct idset *s, const char *id)
{
	return idset_find(s, id) >= 0;
}

static void
idset_place(struct idset *s, size_t idx)
{
	size_t i = id_hash(s->v[idx]) & (s->nslots - 1);

	while (s->slot[i] != 0)
		i = (i + 1) & (s->nslots - 1);
	s->slot[i] = (uint32_t) idx + 1;
}

static bool
idset_grow(struct idset *s)
{
	size_t nslots = s->nslots ? s->nslots * 2 : 4096;
	uint32_t *slot = calloc(nslots, sizeof(*slot));
	void *v = realloc(s->v, nslots / 2 * sizeof(*s->v));

	if (slot == NULL || v == NULL) {
		free(slot);
		if (v != NULL)
			s->v = v;
		return false;
	}
	s->v = v;
	s->cap = nslots / 2;
	free(s->slot);
	s->slot = slot;
	s->nslots = nslots;
	for (size_t i = 0; i < s->n; i++)
		idset_place(s, i);
	return true;
}

/* idset_add adds id (once); returns its index, or -1 without memory. */
static long
idset_add(struct idset *s, const char *id)
{
	long at = idset_find(s, id);

	if (at >= 0)
		return at;
	if (s->n == s->cap && !idset_grow(s))
		return -1;
	snprintf(s->v[s->n], 37, "%s", id);
	idset_place(s, s->n);
	return (long) s->n++;
}

static void
idset_free(struct idset *s)
{
	free(s->v);
	free(s->slot);
}

/* ---- check, verify ---- */

int
mhsctl_journal_check(const char *dir_opt, bool fix)
{
	const char *dir = journal_dir(dir_opt);
	char report[4096] = "";
	int rv;

	if (dir == NULL) {
		fprintf(stderr,
		    "mhsctl journal: give --journal-dir or set "
		    "MHS_JOURNAL_DIR\n");
		return 2;
	}
	rv = mhs_journal_check(dir, fix, report, sizeof(report));
	if (report[0] != '\0')
		printf("%s%s", report,
		    report[strlen(report) - 1] == '\n' ? "" : "\n");
	if (rv == 0) {
		printf("%s: journal is good\n", dir);
		return 0;
	}
	fprintf(stderr, "mhsctl journal check: %s: %s%s\n", dir,
	    mhs_strerror(rv),
	    rv == MHS_ECORRUPT && !fix ? " (repair: mhsctl journal check "
	                                 "--fix, with the store stopped)"
	                               : "");
	return rv == MHS_ENOTFOUND || rv == MHS_ESTATE ? 2 : 1;
}

struct verify {
	struct progress pr;
	uint64_t records, bad;
	uint64_t by_kind[4];
};

static int
verify_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct verify *v = arg;
	Mhs__Store__V1__JournalRecord *r;

	r = mhs__store__v1__journal_record__unpack(NULL, len, body);
	v->records++;
	progress_tick(&v->pr, "verified");
	if (r == NULL || r->kind < 1 || r->kind > 3 ||
	    r->message_id[0] == '\0') {
		if (v->bad++ < 10)
			fprintf(stderr,
			    "record %llu: body is not a valid "
			    "journal record\n",
			    (unsigned long long) seq);
	} else {
		v->by_kind[r->kind]++;
	}
	if (r != NULL)
		mhs__store__v1__journal_record__free_unpacked(r, NULL);
	return 0;
}

int
mhsctl_journal_verify(const char *dir_opt)
{
	const char *dir = journal_dir(dir_opt);
	struct verify v = {0};
	char where[512] = "";
	int rv;

	if (dir == NULL)
		return mhsctl_journal_check(dir_opt, false);
	progress_init(&v.pr);
	rv = mhs_journal_scan(dir, 0, verify_one, &v, where, sizeof(where));
	progress_done(&v.pr, "verified");
	if (rv != 0) {
		fprintf(stderr, "mhsctl journal verify: %s: %s %s\n", dir,
		    mhs_strerror(rv), where);
		return rv == MHS_ENOTFOUND ? 2 : 1;
	}
	printf("%s: %llu records (%llu accepted, %llu state changes, %llu "
	       "unsolicited), %llu undecodable\n",
	    dir, (unsigned long long) v.records,
	    (unsigned long long) v.by_kind[1],
	    (unsigned long long) v.by_kind[2],
	    (unsigned long long) v.by_kind[3], (unsigned long long) v.bad);
	return v.bad == 0 ? 0 : 1;
}

/* ---- export ---- */

struct export
{
	const char *month, *interaction;
	struct idset ids;
	struct progress pr;
	struct mhs_buf line;
	FILE *out;
	uint64_t written;
};

static bool
export_wanted(struct export *x, const Mhs__Store__V1__JournalRecord *r)
{
	char month[8];

	if (x->interaction[0] != '\0') {
		if (r->kind ==
		        MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED &&
		    r->submit != NULL &&
		    strcmp(r->submit->interaction_id, x->interaction) == 0)
			idset_add(&x->ids, r->message_id);
		else if (r->kind ==
		    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_UNSOLICITED)
			return strcmp(r->action, x->interaction) == 0;
		if (!idset_has(&x->ids, r->message_id))
			return false;
	}
	month_of(r->time_ms, month);
	return x->month[0] == '\0' || strcmp(month, x->month) == 0;
}

static void
export_line(
    struct export *x, uint64_t seq, const Mhs__Store__V1__JournalRecord *r)
{
	struct mhs_buf *b = &x->line;
	char iso[21];

	mhs_buf_reset(b);
	mhs_time_iso(r->time_ms, iso);
	mhs_buf_printf(b,
	    "{\"seq\":%llu,\"time_ms\":%lld,\"time\":\"%s\","
	    "\"kind\":\"%s\",\"node\":",
	    (unsigned long long) seq, (long long) r->time_ms, iso,
	    kind_names[r->kind & 3]);
	mhs_buf_json_str(b, r->node_id);
	mhs_buf_puts(b, ",\"message_id\":");
	mhs_buf_json_str(b, r->message_id);
	if (r->submit != NULL) {
		mhs_buf_puts(b, ",\"interaction_id\":");
		mhs_buf_json_str(b, r->submit->interaction_id);
		mhs_buf_puts(b, ",\"prescription_id\":");
		mhs_buf_json_str(b, r->submit->prescription_id);
		mhs_buf_puts(b, ",\"sender_ods\":");
		mhs_buf_json_str(b, r->submit->sender_ods);
		mhs_buf_puts(b, ",\"recipient_ods\":");
		mhs_buf_json_str(b, r->submit->recipient_ods);
		mhs_buf_puts(b, ",\"client_id\":");
		mhs_buf_json_str(b, r->client_id);
		mhs_buf_printf(
		    b, ",\"payload_bytes\":%zu", r->submit->payload.len);
	} else {
		mhs_buf_printf(b, ",\"state\":\"%s\",\"attempts\":%u",
		    state_names[r->state & 7], r->attempts);
		mhs_buf_puts(b, ",\"reason\":");
		mhs_buf_json_str(b, r->reason);
		if (r->action[0] != '\0') {
			mhs_buf_puts(b, ",\"action\":");
			mhs_buf_json_str(b, r->action);
		}
	}
	mhs_buf_puts(b, "}\n");
	if (b->err == 0 && fwrite(b->data, 1, b->len, x->out) == b->len)
		x->written++;
}

static int
export_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct export *x = arg;
	Mhs__Store__V1__JournalRecord *r;

	progress_tick(&x->pr, "exported");
	r = mhs__store__v1__journal_record__unpack(NULL, len, body);
	if (r == NULL) {
		fprintf(stderr, "record %llu: undecodable, skipped\n",
		    (unsigned long long) seq);
		return 0;
	}
	if (export_wanted(x, r))
		export_line(x, seq, r);
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	return ferror(x->out) ? MHS_EIO : 0;
}

int
mhsctl_journal_export(const char *dir_opt, const char *month,
    const char *interaction, const char *output)
{
	const char *dir = journal_dir(dir_opt);
	struct export x = {
	    month, interaction, {0}, {0}, MHS_BUF_INIT, stdout, 0};
	char where[512] = "";
	int rv;

	if (dir == NULL)
		return mhsctl_journal_check(dir_opt, false);
	if (month[0] != '\0' && (strlen(month) != 7 || month[4] != '-')) {
		fprintf(stderr, "mhsctl journal export: --month YYYY-MM\n");
		return 2;
	}
	if (output[0] != '\0' && strcmp(output, "-") != 0 &&
	    (x.out = fopen(output, "w")) == NULL) {
		fprintf(stderr, "mhsctl journal export: cannot write %s\n",
		    output);
		return 2;
	}
	progress_init(&x.pr);
	rv = mhs_journal_scan(dir, 0, export_one, &x, where, sizeof(where));
	progress_done(&x.pr, "read");
	if (x.out != stdout && fclose(x.out) != 0 && rv == 0)
		rv = MHS_EIO;
	fflush(stdout);
	idset_free(&x.ids);
	mhs_buf_fini(&x.line);
	fprintf(
	    stderr, "exported %llu records\n", (unsigned long long) x.written);
	if (rv != 0) {
		fprintf(stderr, "mhsctl journal export: %s: %s %s\n", dir,
		    mhs_strerror(rv), where);
		return rv == MHS_ENOTFOUND ? 2 : 1;
	}
	return 0;
}

/* ---- stats ---- */

struct stat_row {
	char month[8], interaction[33];
	uint64_t accepted, by_state[8];
};

struct stats {
	struct stat_row *rows;
	size_t n;
	/* last known state and row of each message, by id */
	struct idset ids;
	uint32_t *row_of;
	uint8_t *state_of;
	size_t mapcap;
	struct progress pr;
};

static size_t
stats_row(struct stats *s, const char *month, const char *interaction)
{
	struct stat_row *g;

	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->rows[i].month, month) == 0 &&
		    strcmp(s->rows[i].interaction, interaction) == 0)
			return i;
	if ((g = realloc(s->rows, (s->n + 1) * sizeof(*g))) == NULL)
		return SIZE_MAX;
	s->rows = g;
	memset(&g[s->n], 0, sizeof(g[0]));
	snprintf(g[s->n].month, 8, "%s", month);
	snprintf(g[s->n].interaction, 33, "%s", interaction);
	return s->n++;
}

static int
stats_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct stats *s = arg;
	Mhs__Store__V1__JournalRecord *r;
	char month[8];

	(void) seq;
	progress_tick(&s->pr, "read");
	if ((r = mhs__store__v1__journal_record__unpack(NULL, len, body)) ==
	    NULL)
		return 0;
	if (r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED &&
	    r->submit != NULL) {
		size_t row, n = s->ids.n;
		long at;

		month_of(r->time_ms, month);
		row = stats_row(s, month, r->submit->interaction_id);
		at = idset_add(&s->ids, r->message_id);
		if (row != SIZE_MAX && at == (long) n) {
			if (s->ids.cap > s->mapcap) {
				s->row_of = realloc(s->row_of, s->ids.cap * 4);
				s->state_of = realloc(s->state_of, s->ids.cap);
				s->mapcap = s->ids.cap;
			}
			s->row_of[n] = (uint32_t) row;
			s->state_of[n] = 1;
			s->rows[row].accepted++;
		}
	} else if (r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_STATE) {
		long at = idset_find(&s->ids, r->message_id);
		if (at >= 0)
			s->state_of[at] = (uint8_t) (r->state & 7);
	}
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	return 0;
}

int
mhsctl_stats(const char *dir_opt, bool json)
{
	const char *dir = journal_dir(dir_opt);
	struct stats s = {0};
	char where[512] = "";
	int rv;

	if (dir == NULL)
		return mhsctl_journal_check(dir_opt, false);
	progress_init(&s.pr);
	rv = mhs_journal_scan(dir, 0, stats_one, &s, where, sizeof(where));
	progress_done(&s.pr, "read");
	for (size_t i = 0; i < s.ids.n; i++)
		s.rows[s.row_of[i]].by_state[s.state_of[i]]++;
	if (!json)
		printf("%-7s  %-17s  %8s  %8s  %8s  %8s  %8s  %8s\n", "MONTH",
		    "INTERACTION", "ACCEPTED", "PENDING", "DELIVERED",
		    "RESPONDED", "FAILED", "EXPIRED");
	for (size_t i = 0; i < s.n; i++) {
		struct stat_row *w = &s.rows[i];
		uint64_t pending =
		    w->by_state[1] + w->by_state[2] + w->by_state[3];
		if (json)
			printf("{\"month\":\"%s\",\"interaction_id\":\"%s\","
			       "\"accepted\":%llu,\"pending\":%llu,"
			       "\"delivered\":%llu,\"responded\":%llu,"
			       "\"failed\":%llu,\"expired\":%llu}\n",
			    w->month, w->interaction,
			    (unsigned long long) w->accepted,
			    (unsigned long long) pending,
			    (unsigned long long) w->by_state[4],
			    (unsigned long long) w->by_state[5],
			    (unsigned long long) w->by_state[6],
			    (unsigned long long) w->by_state[7]);
		else
			printf(
			    "%-7s  %-17s  %8llu  %8llu  %8llu  %8llu  %8llu  "
			    "%8llu\n",
			    w->month, w->interaction,
			    (unsigned long long) w->accepted,
			    (unsigned long long) pending,
			    (unsigned long long) w->by_state[4],
			    (unsigned long long) w->by_state[5],
			    (unsigned long long) w->by_state[6],
			    (unsigned long long) w->by_state[7]);
	}
	free(s.rows);
	idset_free(&s.ids);
	free(s.row_of);
	free(s.state_of);
	if (rv != 0) {
		fprintf(stderr, "mhsctl stats: %s: %s %s\n", dir,
		    mhs_strerror(rv), where);
		return rv == MHS_ENOTFOUND ? 2 : 1;
	}
	return 0;
}
