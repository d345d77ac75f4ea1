/*
 * Design notes: the journal's guarantees (DESIGN §4), one suite each:
 * journal_append (format, sequence, group commit), journal_recovery (torn
 * tails, corruption, repair), journal_faults (failed writes and fsyncs
 * through the I/O shim latch and cut back), journal_policies (everysec,
 * no). Every test gets a fresh mkdtemp directory. Criterion runs each test
 * in its own process, so the shim's globals start at zero; its counters are
 * atomic because the EVERYSEC thread calls it too. No sleeps except
 * bounded waits on a condition.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "error.h"
#include "journal.h"
#include "log.h"
#include "util.h"

#define OCT "2026-10.seg"
#define NOV "2026-11.seg"

static char dir[64];

/* 2026-10-15 and 2026-11-15, 12:00 UTC. */
static const int64_t t_oct = INT64_C(1791979200000);
static const int64_t t_nov = INT64_C(1794657600000);

static void
setup(void)
{
	mhs_log_init("test_journal", MHS_LOG_ERROR + 1); /* quiet */
	snprintf(dir, sizeof(dir), "/tmp/mhs-journal-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	return remove(path);
}

static void
teardown(void)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the I/O shim ----------------------------------------------------- */

static struct {
	atomic_int writes, syncs;
	atomic_int write_errno;  /* fail writes with this */
	atomic_bool write_short; /* write half and report it */
	atomic_int sync_errno;   /* fail fdatasync with this */
	char events[64];         /* W = write, S = fdatasync, R = returned */
	atomic_int nevents;
} shim;

static void
shim_event(char c)
{
	int i = atomic_fetch_add(&shim.nevents, 1);

	if (i < (int) sizeof(shim.events) - 1)
		shim.events[i] = c;
}

static ssize_t
shim_write(int fd, const void *buf, size_t len)
{
	atomic_fetch_add(&shim.writes, 1);
	shim_event('W');
	if (atomic_load(&shim.write_errno) != 0) {
		errno = atomic_load(&shim.write_errno);
		return -1;
	}
	if (atomic_load(&shim.write_short))
		return write(fd, buf, len / 2);
	return write(fd, buf, len);
}

static int
shim_fdatasync(int fd)
{
	atomic_fetch_add(&shim.syncs, 1);
	shim_event('S');
	if (atomic_load(&shim.sync_errno) != 0) {
		errno = atomic_load(&shim.sync_errno);
		return -1;
	}
	return fdatasync(fd);
}

static const struct mhs_journal_io shim_io = {
    .write = shim_write,
    .fdatasync = shim_fdatasync,
};

static void
shim_reset(void)
{
	atomic_store(&shim.writes, 0);
	atomic_store(&shim.syncs, 0);
	atomic_store(&shim.nevents, 0);
	memset(shim.events, 0, sizeof(shim.events));
}

/* ---- helpers ---------------------------------------------------------- */

/* body_make: a body determined by its sequence number, 8..40 bytes. */
static size_t
body_make(uint64_t seq, char *out)
{
	int n = snprintf(out, 64, "rx:%llu:", (unsigned long long) seq);
	size_t len = (size_t) n + seq * 7 % 29;

	for (size_t i = (size_t) n; i < len; i++)
		out[i] = (char) ('a' + (seq + i) % 26);
	return len;
}

static struct mhs_journal *
jopen(enum mhs_fsync_policy policy, const struct mhs_journal_io *io,
    struct mhs_journal_recovery *rec)
{
	struct mhs_journal_options o = {
	    .policy = policy, .io = io, .node_id = "node-a"};
	struct mhs_journal *j = NULL;
	int rv = mhs_journal_open(&j, dir, &o, rec);

	cr_assert_eq(rv, 0, "open: %s", mhs_strerror(rv));
	return j;
}

/* append n records at time t in one batch; returns append's result. */
static int
append(struct mhs_journal *j, size_t n, int64_t t)
{
	struct mhs_journal_entry e[16];
	char bodies[16][64];
	uint64_t first = 0, next = mhs_journal_last_seq(j) + 1;
	int rv;

	cr_assert_leq(n, 16);
	for (size_t i = 0; i < n; i++) {
		e[i].len = body_make(next + i, bodies[i]);
		e[i].body = bodies[i];
		e[i].time_ms = t;
	}
	rv = mhs_journal_append(j, e, n, &first);
	if (rv == 0) {
		cr_assert_eq(first, next);
		cr_assert_eq(mhs_journal_last_seq(j), next + n - 1);
	}
	return rv;
}

static void
append_ok(struct mhs_journal *j, size_t n, int64_t t)
{
	int rv = append(j, n, t);

	cr_assert_eq(rv, 0, "append: %s", mhs_strerror(rv));
}

struct seen {
	uint64_t seq[256];
	size_t n;
};

static int
collect(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct seen *s = arg;
	char want[64];

	cr_assert_eq(len, body_make(seq, want), "seq %llu length",
	    (unsigned long long) seq);
	cr_assert_eq(memcmp(body, want, len), 0, "seq %llu body",
	    (unsigned long long) seq);
	cr_assert_lt(s->n, 256);
	s->seq[s->n++] = seq;
	return 0;
}

/* scan_expect: a scan after `after` sees exactly seqs[0..n). */
static void
scan_expect(uint64_t after, const uint64_t *seqs, size_t n)
{
	struct seen s = {.n = 0};
	char where[256];
	int rv =
	    mhs_journal_scan(dir, after, collect, &s, where, sizeof(where));

	cr_assert_eq(rv, 0, "scan: %s (%s)", mhs_strerror(rv), where);
	cr_assert_eq(s.n, n, "scan saw %zu records, want %zu", s.n, n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(s.seq[i], seqs[i], "record %zu", i);
}

/* scan_range: a scan after `after` sees after+1 .. last. */
static void
scan_range(uint64_t after, uint64_t last)
{
	uint64_t seqs[256] = {0};
	size_t n = 0;

	for (uint64_t s = after + 1; s <= last; s++)
		seqs[n++] = s;
	scan_expect(after, seqs, n);
}

static char *
path(const char *name)
{
	static char p[4][128];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static off_t
file_size(const char *name)
{
	struct stat st;

	cr_assert_eq(stat(path(name), &st), 0, "stat %s", name);
	return st.st_size;
}

static bool
file_exists(const char *name)
{
	struct stat st;

	return stat(path(name), &st) == 0;
}

static size_t
file_read(const char *name, uint8_t *buf, size_t cap)
{
	int fd = open(path(name), O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0);
	n = read(fd, buf, cap);
	close(fd);
	cr_assert_geq(n, 0);
	cr_assert_lt((size_t) n, cap);
	return (size_t) n;
}

static void
file_write(const char *name, const void *buf, size_t len)
{
	int fd = open(path(name), O_WRONLY | O_CREAT | O_TRUNC, 0640);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t) len);
	close(fd);
}

/* flip xors one byte of a file in place. */
static void
flip(const char *name, off_t off)
{
	int fd = open(path(name), O_RDWR);
	uint8_t b;

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* rec_offset: where record k (0-based) of a segment starts. */
static off_t
rec_offset(uint64_t first_seq, unsigned k)
{
	char b[64];
	off_t off = 0;

	for (unsigned i = 0; i < k; i++)
		off += MHS_JOURNAL_HDR_SIZE + body_make(first_seq + i, b);
	return off;
}

static int
open_rv(void)
{
	struct mhs_journal *j = NULL;
	int rv = mhs_journal_open(&j, dir, NULL, NULL);

	cr_assert((rv == 0) == (j != NULL));
	mhs_journal_close(j);
	return rv;
}

/* scan_corrupt: scan fails with MHS_ECORRUPT and says where. */
static void
scan_corrupt(const char *file, off_t off)
{
	struct seen s = {.n = 0};
	char where[256], want[160];
	int rv = mhs_journal_scan(dir, 0, collect, &s, where, sizeof(where));

	cr_assert_eq(rv, MHS_ECORRUPT, "scan: %s", mhs_strerror(rv));
	snprintf(want, sizeof(want), "%s at offset %lld:", path(file),
	    (long long) off);
	cr_assert_not_null(
	    strstr(where, want), "where: %s, want %s", where, want);
}

/* ---- journal_append --------------------------------------------------- */

TestSuite(journal_append, .init = setup, .fini = teardown);

Test(journal_append, roundtrip_across_two_months)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);

	cr_assert_eq(rec.last_seq, 0);
	cr_assert_eq(rec.segments, 0);
	cr_assert(file_exists("MANIFEST"));
	append_ok(j, 1, t_oct);
	append_ok(j, 2, t_oct + 1000);
	append_ok(j, 3, t_nov);
	mhs_journal_close(j);

	cr_assert_eq(file_size(OCT), rec_offset(1, 3));
	cr_assert_eq(file_size(NOV), rec_offset(4, 3));
	scan_range(0, 6);
	scan_range(2, 6);
	scan_range(4, 6);
	scan_range(6, 6);

	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.last_seq, 6);
	cr_assert_eq(rec.records, 6);
	cr_assert_eq(rec.segments, 2);
	cr_assert_eq(rec.torn_bytes, 0);
	cr_assert_str_empty(rec.torn_file);
	mhs_journal_close(j);
}

Test(journal_append, reopen_continues_the_sequence)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	cr_assert_eq(mhs_journal_last_seq(j), 3);
	append_ok(j, 2, t_oct); /* asserts first_seq == 4 */
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	scan_range(0, 6);
}

Test(journal_append, batch_is_one_write_and_one_fdatasync_before_return)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, &shim_io, NULL);

	append_ok(j, 1, t_oct); /* starts the segment */
	shim_reset();
	append_ok(j, 7, t_oct);
	shim_event('R');
	cr_assert_eq(atomic_load(&shim.writes), 1);
	cr_assert_eq(atomic_load(&shim.syncs), 1);
	cr_assert_str_eq(shim.events, "WSR");
	mhs_journal_close(j);
	cr_assert_eq(atomic_load(&shim.syncs), 1, "close synced again");
	scan_range(0, 8);
}

Test(journal_append, clock_stepping_back_stays_in_the_current_segment)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 1, t_nov);
	append_ok(j, 1, t_oct);
	mhs_journal_close(j);
	cr_assert_not(file_exists(OCT));
	cr_assert_eq(file_size(NOV), rec_offset(1, 2));
	scan_range(0, 2);
}

Test(journal_append, bad_input_changes_nothing)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	struct mhs_journal_entry e = {.body = "x", .len = 1, .time_ms = t_oct};
	uint64_t first;

	append_ok(j, 1, t_oct);
	cr_assert_eq(mhs_journal_append(j, &e, 0, &first), MHS_EINVAL);
	e.time_ms = -1;
	cr_assert_eq(mhs_journal_append(j, &e, 1, &first), MHS_EINVAL);
	e.time_ms = t_oct;
	e.body = NULL;
	cr_assert_eq(mhs_journal_append(j, &e, 1, &first), MHS_EINVAL);
	e.body = "x";
	e.len = MHS_JOURNAL_BODY_MAX + 1;
	cr_assert_eq(mhs_journal_append(j, &e, 1, &first), MHS_ETOOBIG);
	cr_assert_eq(mhs_journal_failed(j), 0);
	cr_assert_eq(mhs_journal_last_seq(j), 1);
	cr_assert_eq(file_size(OCT), rec_offset(1, 1));
	append_ok(j, 1, t_oct);
	mhs_journal_close(j);
	scan_range(0, 2);
}

Test(journal_append, second_owner_is_refused)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	struct mhs_journal *k = NULL;

	cr_assert_eq(mhs_journal_open(&k, dir, NULL, NULL), MHS_ESTATE);
	cr_assert_null(k);
	mhs_journal_close(j);
	cr_assert_eq(open_rv(), 0);
}

Test(journal_append, policy_names_and_crc32c)
{
	cr_assert_eq(mhs_fsync_policy_parse("always"), MHS_FSYNC_ALWAYS);
	cr_assert_eq(mhs_fsync_policy_parse("everysec"), MHS_FSYNC_EVERYSEC);
	cr_assert_eq(mhs_fsync_policy_parse("no"), MHS_FSYNC_NO);
	cr_assert_eq(mhs_fsync_policy_parse("sometimes"), -1);
	cr_assert_eq(mhs_fsync_policy_parse(NULL), -1);
	cr_assert_eq(mhs_crc32c(0, "123456789", 9), 0xe3069283u);
	cr_assert_eq(
	    mhs_crc32c(mhs_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
	cr_assert_eq(mhs_crc32c_soft(0, "123456789", 9), 0xe3069283u);
}

/*
 * The CPU's CRC32 instruction and the tables must agree at every length
 * and alignment, whole or continued: a record written by one build is
 * checked by another, perhaps on another machine.
 */
Test(journal_append, crc32c_hardware_matches_software)
{
	static uint8_t buf[4096 + 16];
	uint32_t seed = 12345;

	for (size_t i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t) (seed >> 16);
	}
	/* RFC 3720 B.4: 32 bytes of 0xff. */
	memset(buf, 0xff, 32);
	cr_assert_eq(mhs_crc32c(0, buf, 32), 0x62a8ab43u);
	cr_assert_eq(mhs_crc32c_soft(0, buf, 32), 0x62a8ab43u);
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len <= 300; len++) {
			uint32_t soft = mhs_crc32c_soft(0, buf + off, len);
			size_t cut = len / 3;

			cr_assert_eq(mhs_crc32c(0, buf + off, len), soft,
			    "offset %zu length %zu", off, len);
			cr_assert_eq(mhs_crc32c(mhs_crc32c(0, buf + off, cut),
			                 buf + off + cut, len - cut),
			    soft, "offset %zu length %zu, split", off, len);
		}
	cr_assert_eq(mhs_crc32c(7, buf, 4096), mhs_crc32c_soft(7, buf, 4096));
	cr_log_info("crc32c: %s", mhs_crc32c_hardware() ? "SSE4.2" : "tables");
}

/* ---- journal_recovery ------------------------------------------------- */

TestSuite(journal_recovery, .init = setup, .fini = teardown);

/*
 * Two records in October, five in November; the November file is cut at
 * every byte offset. Every cut must recover exactly the complete records
 * and report exactly the bytes after them.
 */
Test(journal_recovery, truncation_at_every_offset_keeps_complete_records)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	uint8_t orig[4096];
	size_t size;

	append_ok(j, 2, t_oct);
	append_ok(j, 2, t_nov);
	append_ok(j, 3, t_nov);
	mhs_journal_close(j);
	size = file_read(NOV, orig, sizeof(orig));
	cr_assert_eq(size, (size_t) rec_offset(3, 5));

	for (size_t cut = 0; cut <= size; cut++) {
		unsigned done = 0;

		while (done < 5 && (size_t) rec_offset(3, done + 1) <= cut)
			done++;
		file_write(NOV, orig, cut);
		j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
		cr_assert_eq(rec.last_seq, 2 + done, "cut %zu", cut);
		cr_assert_eq(rec.records, 2 + done, "cut %zu", cut);
		cr_assert_eq(rec.torn_bytes,
		    cut - (size_t) rec_offset(3, done), "cut %zu", cut);
		cr_assert_str_eq(rec.torn_file, rec.torn_bytes ? NOV : "");
		cr_assert_eq(file_size(NOV), rec_offset(3, done));
		mhs_journal_close(j);
		scan_range(0, 2 + done);
	}
}

Test(journal_recovery, appends_continue_after_a_cut_tail)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	cr_assert_eq(truncate(path(OCT), rec_offset(1, 3) - 5), 0);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.last_seq, 2);
	append_ok(j, 2, t_oct);
	mhs_journal_close(j);
	scan_range(0, 4);
}

Test(journal_recovery, zero_filled_tail_is_cut)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	off_t good;

	append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	good = file_size(OCT);
	cr_assert_eq(truncate(path(OCT), good + 4096), 0);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.torn_bytes, 4096);
	cr_assert_eq(rec.last_seq, 3);
	cr_assert_eq(file_size(OCT), good);
	mhs_journal_close(j);
}

/* Every byte of the middle record, flipped in turn, is corruption. */
Test(journal_recovery, flipped_byte_in_a_middle_record_is_corrupt)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	off_t from = rec_offset(1, 1), to = rec_offset(1, 2), size;

	append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	size = file_size(OCT);
	for (off_t off = from; off < to; off++) {
		flip(OCT, off);
		cr_assert_eq(
		    open_rv(), MHS_ECORRUPT, "byte %lld", (long long) off);
		cr_assert_eq(file_size(OCT), size, "open changed the file");
		scan_corrupt(OCT, from);
		flip(OCT, off);
	}
	cr_assert_eq(open_rv(), 0);
}

Test(journal_recovery, bad_tail_of_an_earlier_segment_is_corrupt)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 2, t_oct);
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	flip(OCT, file_size(OCT) - 1);
	cr_assert_eq(open_rv(), MHS_ECORRUPT);
	scan_corrupt(OCT, rec_offset(1, 1));
	/* but a scan that starts after October never reads it */
	scan_range(2, 3);
}

/* rewrite_seq gives record k of OCT a new sequence number, valid CRC. */
static void
rewrite_seq(unsigned k, uint64_t seq)
{
	uint8_t b[4096];
	size_t size = file_read(OCT, b, sizeof(b));
	uint8_t *p = b + rec_offset(1, k);
	uint32_t len = (uint32_t) p[0] | (uint32_t) p[1] << 8, crc;

	for (int i = 0; i < 8; i++)
		p[8 + i] = (uint8_t) (seq >> (8 * i));
	crc = mhs_crc32c(mhs_crc32c(0, p, 4), p + 8, 8 + (size_t) len);
	for (int i = 0; i < 4; i++)
		p[4 + i] = (uint8_t) (crc >> (8 * i));
	file_write(OCT, b, size);
}

Test(journal_recovery, sequence_regression_is_corrupt_even_at_the_tail)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	rewrite_seq(2, 2);
	cr_assert_eq(open_rv(), MHS_ECORRUPT);
	scan_corrupt(OCT, rec_offset(1, 2));
	rewrite_seq(2, 5); /* a gap */
	cr_assert_eq(open_rv(), MHS_ECORRUPT);
	rewrite_seq(2, 3);
	cr_assert_eq(open_rv(), 0);
}

Test(journal_recovery, missing_segment_is_corrupt)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	char where[256];
	struct seen s = {.n = 0};

	append_ok(j, 1, t_oct);
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	cr_assert_eq(unlink(path(OCT)), 0);
	cr_assert_eq(open_rv(), MHS_ECORRUPT);
	cr_assert_eq(
	    mhs_journal_scan(dir, 0, collect, &s, where, sizeof(where)),
	    MHS_ECORRUPT);
	cr_assert_not_null(strstr(where, OCT), "%s", where);
	cr_assert_not_null(strstr(where, "missing"), "%s", where);
}

Test(journal_recovery, corrupt_manifest_refuses)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 1, t_oct);
	mhs_journal_close(j);
	flip("MANIFEST", 3);
	cr_assert_eq(open_rv(), MHS_ECORRUPT);
	cr_assert_eq(unlink(path("MANIFEST")), 0);
	cr_assert_eq(open_rv(), MHS_ECORRUPT, "segments without manifest");
}

Test(journal_recovery, leftover_manifest_temp_file_is_ignored_and_removed)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 2, t_oct);
	mhs_journal_close(j);
	/* a crash after writing the temp file, before the rename */
	file_write("MANIFEST.tmp", "mhs-journal 1\nsegment 2026-12", 29);
	scan_range(0, 2);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.last_seq, 2);
	cr_assert_not(file_exists("MANIFEST.tmp"));
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	scan_range(0, 3);
}

Test(journal_recovery, unlisted_empty_segment_is_removed)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 1, t_oct);
	mhs_journal_close(j);
	/* a crash after creating the next segment, before listing it */
	file_write(NOV, "", 0);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	cr_assert_not(file_exists(NOV));
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	scan_range(0, 2);
}

Test(journal_recovery, check_fix_repairs_a_middle_record)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	char report[1024];
	off_t bad = rec_offset(1, 2), size;

	append_ok(j, 5, t_oct);
	mhs_journal_close(j);
	flip(OCT, bad + 20);
	size = file_size(OCT);

	cr_assert_eq(mhs_journal_check(dir, false, report, sizeof(report)),
	    MHS_ECORRUPT);
	cr_assert_not_null(strstr(report, OCT " at offset"), "%s", report);
	cr_assert_eq(file_size(OCT), size, "check without fix changed it");

	cr_assert_eq(mhs_journal_check(dir, true, report, sizeof(report)), 0,
	    "%s", report);
	cr_assert_not_null(strstr(report, "truncating"), "%s", report);
	cr_assert_eq(file_size(OCT), bad);
	cr_assert_eq(mhs_journal_check(dir, false, report, sizeof(report)), 0,
	    "%s", report);

	/* 3..5 are lost, never reused */
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.records, 2);
	cr_assert_eq(rec.last_seq, 5);
	append_ok(j, 1, t_oct);
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	scan_expect(0, (const uint64_t[]) {1, 2, 6, 7}, 4);
	scan_expect(2, (const uint64_t[]) {6, 7}, 2);
}

Test(journal_recovery, check_fix_repairs_an_earlier_segment)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	char report[1024];

	append_ok(j, 3, t_oct);
	append_ok(j, 2, t_nov);
	mhs_journal_close(j);
	flip(OCT, rec_offset(1, 1) + 2);
	cr_assert_eq(open_rv(), MHS_ECORRUPT);

	cr_assert_eq(mhs_journal_check(dir, true, report, sizeof(report)), 0,
	    "%s", report);
	cr_assert_not_null(
	    strstr(report, "2..3 recorded as lost"), "%s", report);
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.records, 3);
	cr_assert_eq(rec.last_seq, 5);
	mhs_journal_close(j);
	scan_expect(0, (const uint64_t[]) {1, 4, 5}, 3);
}

Test(journal_recovery, check_fix_refuses_while_the_store_runs)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	char report[256];

	append_ok(j, 1, t_oct);
	cr_assert_eq(mhs_journal_check(dir, false, report, sizeof(report)), 0,
	    "%s", report);
	cr_assert_eq(
	    mhs_journal_check(dir, true, report, sizeof(report)), MHS_ESTATE);
	mhs_journal_close(j);
}

/* ---- journal_faults --------------------------------------------------- */

TestSuite(journal_faults, .init = setup, .fini = teardown);

/*
 * fault_case: two good records, then arm() and a batch of three. The
 * append fails with want, the file is back at the last good offset, the
 * failure is latched (nothing more reaches the shim), and a reopen sees
 * only the two durable records.
 */
static void
fault_case(void (*arm)(void), int want)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, &shim_io, NULL);
	off_t good;
	int writes, syncs;

	append_ok(j, 2, t_oct);
	good = file_size(OCT);
	shim_reset();
	arm();
	cr_assert_eq(append(j, 3, t_oct), want);
	cr_assert_eq(mhs_journal_failed(j), want);
	cr_assert_eq(file_size(OCT), good, "not cut back");
	cr_assert_eq(mhs_journal_last_seq(j), 2);
	cr_assert_eq(atomic_load(&shim.writes), 1);
	cr_assert_leq(atomic_load(&shim.syncs), 1, "fdatasync retried");

	atomic_store(&shim.write_errno, 0);
	atomic_store(&shim.write_short, false);
	atomic_store(&shim.sync_errno, 0);
	writes = atomic_load(&shim.writes);
	syncs = atomic_load(&shim.syncs);
	cr_assert_eq(append(j, 1, t_oct), want, "not latched");
	cr_assert_eq(append(j, 1, t_nov), want, "not latched");
	cr_assert_eq(
	    atomic_load(&shim.writes), writes, "written after failure");
	cr_assert_eq(atomic_load(&shim.syncs), syncs, "synced after failure");
	cr_assert_not(file_exists(NOV));
	mhs_journal_close(j);

	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.last_seq, 2);
	cr_assert_eq(rec.torn_bytes, 0);
	cr_assert_eq(mhs_journal_failed(j), 0, "reopen clears the latch");
	append_ok(j, 1, t_oct);
	mhs_journal_close(j);
	scan_range(0, 3);
}

static void
arm_enospc(void)
{
	atomic_store(&shim.write_errno, ENOSPC);
}

static void
arm_eio(void)
{
	atomic_store(&shim.write_errno, EIO);
}

static void
arm_short(void)
{
	atomic_store(&shim.write_short, true);
}

static void
arm_fsync(void)
{
	atomic_store(&shim.sync_errno, EIO);
}

Test(journal_faults, enospc_latches_and_cuts_back)
{
	fault_case(arm_enospc, MHS_ENOSPC);
}

Test(journal_faults, eio_latches_and_cuts_back)
{
	fault_case(arm_eio, MHS_EIO);
}

Test(journal_faults, short_write_latches_and_cuts_back)
{
	fault_case(arm_short, MHS_EIO);
}

Test(journal_faults, fdatasync_failure_is_never_retried_and_cuts_back)
{
	fault_case(arm_fsync, MHS_EIO);
	/* fault_case checked: one write, one fdatasync, nothing after */
}

Test(journal_faults, fdatasync_failure_at_month_change_latches)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_NO, &shim_io, NULL);

	append_ok(j, 2, t_oct);
	arm_fsync();
	cr_assert_eq(append(j, 1, t_nov), MHS_EIO);
	cr_assert_eq(atomic_load(&shim.syncs), 1);
	cr_assert_eq(mhs_journal_failed(j), MHS_EIO);
	atomic_store(&shim.sync_errno, 0);
	cr_assert_eq(append(j, 1, t_nov), MHS_EIO, "not latched");
	mhs_journal_close(j);
	cr_assert_not(file_exists(NOV));
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.last_seq, 2);
	mhs_journal_close(j);
}

/* ---- journal_policies ------------------------------------------------- */

TestSuite(journal_policies, .init = setup, .fini = teardown);

/* wait_for: a bounded wait (5 s) for a condition the syncer sets. */
static bool
wait_for(bool (*cond)(struct mhs_journal *), struct mhs_journal *j)
{
	int64_t until = mhs_mono_ms() + 5000;
	struct timespec tick = {0, 10 * 1000 * 1000};

	while (!cond(j) && mhs_mono_ms() < until)
		nanosleep(&tick, NULL);
	return cond(j);
}

static bool
synced_once(struct mhs_journal *j)
{
	return atomic_load(&shim.syncs) >= 1;
}

static bool
latched(struct mhs_journal *j)
{
	return mhs_journal_failed(j) != 0;
}

Test(journal_policies, everysec_appends_scans_and_syncs_in_background)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_EVERYSEC, &shim_io, NULL);

	append_ok(j, 3, t_oct);
	append_ok(j, 2, t_oct);
	cr_assert_eq(atomic_load(&shim.writes), 2);
	cr_assert(wait_for(synced_once, j), "no background fdatasync");
	append_ok(j, 2, t_nov);
	mhs_journal_close(j);
	scan_range(0, 7);
	j = jopen(MHS_FSYNC_EVERYSEC, NULL, NULL);
	cr_assert_eq(mhs_journal_last_seq(j), 7);
	append_ok(j, 1, t_nov);
	mhs_journal_close(j);
	scan_range(0, 8);
}

Test(journal_policies, everysec_close_syncs_what_is_pending)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_EVERYSEC, &shim_io, NULL);

	append_ok(j, 2, t_oct);
	mhs_journal_close(j);
	cr_assert_geq(atomic_load(&shim.syncs), 1, "close did not sync");
}

Test(journal_policies, everysec_fsync_failure_latches)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_EVERYSEC, &shim_io, NULL);

	arm_fsync();
	cr_assert_eq(append(j, 2, t_oct), 0, "everysec append waits for disk");
	cr_assert(wait_for(latched, j), "background failure not latched");
	cr_assert_eq(mhs_journal_failed(j), MHS_EIO);
	cr_assert_eq(append(j, 1, t_oct), MHS_EIO);
	mhs_journal_close(j);
}

Test(journal_policies, no_policy_never_syncs_within_a_month)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_NO, &shim_io, NULL);

	for (int i = 0; i < 5; i++)
		append_ok(j, 3, t_oct);
	mhs_journal_close(j);
	cr_assert_eq(atomic_load(&shim.writes), 5);
	cr_assert_eq(atomic_load(&shim.syncs), 0);
	scan_range(0, 15);
	j = jopen(MHS_FSYNC_NO, &shim_io, NULL);
	append_ok(j, 1, t_nov); /* a month change syncs the old segment */
	cr_assert_eq(atomic_load(&shim.syncs), 1);
	mhs_journal_close(j);
	scan_range(0, 16);
}

Test(journal_policies, bad_options_are_refused)
{
	struct mhs_journal_options o = {.policy = (enum mhs_fsync_policy) 7};
	struct mhs_journal *j = NULL;

	cr_assert_eq(mhs_journal_open(&j, dir, &o, NULL), MHS_EINVAL);
	o.policy = MHS_FSYNC_ALWAYS;
	o.node_id = "has space";
	cr_assert_eq(mhs_journal_open(&j, dir, &o, NULL), MHS_EINVAL);
	cr_assert_null(j);
}

/* ---- retention ---------------------------------------------------------- */

Test(journal_retention, segments_listed_oldest_first, .init = setup,
    .fini = teardown)
{
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);
	struct mhs_journal_segment s;

	append_ok(j, 2, t_oct);
	append_ok(j, 3, t_nov);
	cr_assert_eq(mhs_journal_segment(j, 0, &s), 0);
	cr_assert_str_eq(s.name, OCT);
	cr_assert_eq(s.year, 2026);
	cr_assert_eq(s.month, 10);
	cr_assert_eq(s.first_seq, 1);
	cr_assert_eq(s.last_seq, 2);
	cr_assert_eq(mhs_journal_segment(j, 1, &s), 0);
	cr_assert_str_eq(s.name, NOV);
	cr_assert_eq(s.first_seq, 3);
	cr_assert_eq(s.last_seq, 5);
	cr_assert_eq(mhs_journal_segment(j, 2, &s), MHS_ENOTFOUND);
	mhs_journal_close(j);
}

Test(journal_retention, drop_oldest_never_the_current_segment, .init = setup,
    .fini = teardown)
{
	struct mhs_journal_recovery rec;
	struct mhs_journal *j = jopen(MHS_FSYNC_ALWAYS, NULL, NULL);

	append_ok(j, 2, t_oct);
	append_ok(j, 3, t_nov);
	cr_assert_eq(mhs_journal_drop_oldest(j), 0);
	cr_assert(!file_exists(OCT), "the dropped segment must be deleted");
	cr_assert(file_exists(NOV));
	cr_assert_eq(mhs_journal_drop_oldest(j), MHS_ESTATE,
	    "the segment being appended to must never be dropped");
	append_ok(j, 1, t_nov); /* appends go on: seq 6 */
	mhs_journal_close(j);

	/* Reopen: the sequence continues from the remaining segment, and
	 * a scan from the start sees only what is left. */
	j = jopen(MHS_FSYNC_ALWAYS, NULL, &rec);
	cr_assert_eq(rec.segments, 1);
	cr_assert_eq(rec.last_seq, 6);
	mhs_journal_close(j);
	scan_range(2, 6);
	{
		uint64_t left[] = {3, 4, 5, 6};
		scan_expect(0, left, 4);
	}
}
