/*
 * Design notes: the append-only journal (DESIGN §4), the durable truth the
 * store answers from and Redis is rebuilt from. It owns one directory:
 *
 *   MANIFEST       format version, node id, segments in order with the
 *                  sequence number each starts at, and sequence ranges an
 *                  operator repair declared lost. Replaced only atomically
 *                  (write MANIFEST.tmp, fsync, rename, fsync the directory).
 *   YYYY-MM.seg    one segment per UTC month, records back to back.
 *
 * A record is, little-endian: u32 body length, u32 CRC32C (over the length,
 * the sequence number and the body), u64 sequence number, body. Sequence
 * numbers start at 1 and are continuous across segments; they are never
 * reused, not even after a repair.
 *
 * It must never: log a record body (patient data), retry a failed write or
 * fsync, reuse a journal object after a failure (it latches; close and
 * reopen), or let two owners append to one directory (open takes an
 * exclusive flock on the directory).
 *
 * Threads: one owner thread calls append/close. Under EVERYSEC a background
 * thread fdatasyncs once a second; the two share only a mutex-protected
 * dirty flag and the atomic failure latch. scan and check are offline
 * readers and take no journal object.
 */
#ifndef MHS_JOURNAL_H
#define MHS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Limits: a corrupt length can never make a reader allocate more. */
#define MHS_JOURNAL_BODY_MAX  (16u << 20) /* one record body */
#define MHS_JOURNAL_BATCH_MAX (64u << 20) /* one append, framing included */
#define MHS_JOURNAL_HDR_SIZE  16u         /* framing bytes per record */

enum mhs_fsync_policy {
	MHS_FSYNC_ALWAYS = 0,   /* fdatasync inside every append */
	MHS_FSYNC_EVERYSEC = 1, /* background fdatasync once a second */
	MHS_FSYNC_NO = 2,       /* leave it to the kernel */
};

/* "always"|"everysec"|"no" -> policy, or -1. */
int mhs_fsync_policy_parse(const char *name);

struct mhs_journal_entry {
	const void *body; /* borrowed for the call; never logged */
	size_t len;       /* at most MHS_JOURNAL_BODY_MAX */
	int64_t time_ms;  /* >= 0; picks the month segment */
};

struct mhs_journal_recovery {
	uint64_t last_seq; /* 0 for an empty journal */
	uint64_t records;  /* records found in all segments */
	unsigned segments;
	uint64_t torn_bytes; /* cut from the tail, 0 if none */
	char torn_file[256]; /* segment name ("2026-11.seg"), "" if none */
};

/*
 * I/O shim so tests can inject short writes, ENOSPC, EIO, fsync failure.
 * NULL (or a NULL member) = the real syscall. Sees every write and
 * fdatasync of segment data (the manifest uses the real syscalls). Under
 * EVERYSEC fdatasync is also called from the background thread. The
 * callbacks do not receive arg; it is there for the caller's bookkeeping.
 */
struct mhs_journal_io {
	ssize_t (*write)(int fd, const void *buf, size_t len);
	int (*fdatasync)(int fd);
	void *arg;
};

struct mhs_journal_options {
	enum mhs_fsync_policy policy;
	const struct mhs_journal_io *io; /* must outlive the journal */
	const char *node_id; /* recorded in a new manifest; may be NULL */
};

struct mhs_journal;

/*
 * mhs_journal_open opens (creating it, mode 0750, if missing) the journal
 * in dir and recovers it: every segment is verified; a torn record at the
 * end of the last segment is cut off (ftruncate + fsync) and reported in
 * rec; a bad record anywhere else, a sequence gap or regression, or a
 * listed segment that is missing refuses with MHS_ECORRUPT (logged with
 * file and offset). A leftover MANIFEST.tmp is removed. MHS_ESTATE if
 * another owner has the directory open. opts and rec may be NULL
 * (defaults: ALWAYS, real syscalls). On success *jp belongs to the caller
 * until mhs_journal_close.
 */
int mhs_journal_open(struct mhs_journal **jp, const char *dir,
    const struct mhs_journal_options *opts, struct mhs_journal_recovery *rec);

/*
 * mhs_journal_append appends n (>= 1) bodies with consecutive sequence
 * numbers using ONE write(2) and, under ALWAYS, ONE fdatasync, before
 * returning 0. *first_seq (if not NULL) gets the first sequence number.
 * The bodies are copied; the caller keeps them.
 *
 * A batch goes into the segment of its latest entry's month, and never
 * into an earlier segment than the current one (a clock stepping back
 * leaves records in the later month). Crossing into a new month first
 * fdatasyncs the old segment and lists the new one in the manifest.
 *
 * Bad input (MHS_EINVAL, MHS_ETOOBIG) changes nothing. On any write or
 * fsync failure nothing is retried: the file is truncated back to the
 * last good offset, the journal latches failed and every later append
 * returns the same error (MHS_EIO, MHS_ENOSPC, ...) until it is closed
 * and reopened.
 */
int mhs_journal_append(struct mhs_journal *j,
    const struct mhs_journal_entry *e, size_t n, uint64_t *first_seq);

/* mhs_journal_failed returns 0 or the latched error. Any thread. */
int mhs_journal_failed(const struct mhs_journal *j);

/* mhs_journal_last_seq: the last sequence number used, 0 if none. */
uint64_t mhs_journal_last_seq(const struct mhs_journal *j);

/* mhs_journal_close accepts NULL; under EVERYSEC it syncs first. */
void mhs_journal_close(struct mhs_journal *j);

/*
 * Offline/replay read: calls fn for every record with seq > after_seq, in
 * order across segments (segments wholly at or below after_seq are not
 * read). body is valid only during the call. Stops and returns fn's value
 * if non-zero. Returns MHS_ECORRUPT (and writes "file at offset N: why"
 * into where[wherelen] if where != NULL) on corruption that is not a torn
 * tail of the last segment; fn may have seen the records before it.
 * A torn tail ends the scan quietly. MHS_ENOTFOUND if there is no journal.
 */
typedef int (*mhs_journal_scan_fn)(
    void *arg, uint64_t seq, const void *body, size_t len);
int mhs_journal_scan(const char *dir, uint64_t after_seq,
    mhs_journal_scan_fn fn, void *arg, char *where, size_t wherelen);

/*
 * Repair (for `mhsctl journal check --fix`): verify every segment and
 * write one line per finding into report (truncated to reportlen). With
 * fix, truncate the first bad record and everything after it in that
 * segment, and record the sequence numbers so lost in the manifest, so
 * that open accepts the gap and never reuses them; a torn tail is cut.
 * fix takes the directory lock (MHS_ESTATE while the store has it open).
 * Returns 0 if the journal is (now) good, MHS_ECORRUPT if corruption
 * remains (always without fix, or a missing segment), MHS_ENOTFOUND if
 * there is no journal.
 */
int mhs_journal_check(
    const char *dir, bool fix, char *report, size_t reportlen);

/* One segment, as listed in the manifest (oldest first). */
struct mhs_journal_segment {
	char name[32];      /* "2026-11.seg" */
	int year, month;    /* UTC; month 1..12 */
	uint64_t first_seq; /* first sequence number it may hold */
	uint64_t last_seq;  /* last one (0 when it is empty) */
};

/* mhs_journal_segment describes segment i; MHS_ENOTFOUND past the end. */
int mhs_journal_segment(
    const struct mhs_journal *j, unsigned i, struct mhs_journal_segment *out);

/*
 * mhs_journal_drop_oldest removes the oldest segment (retention): the
 * manifest is rewritten without it first (atomically), then the file is
 * unlinked and the directory fsync'd, so a crash in between leaves an
 * unlisted old segment that open only warns about. The segment being
 * appended to is never dropped (MHS_ESTATE). The caller decides that
 * nothing in the segment is still needed. Owner thread only.
 */
int mhs_journal_drop_oldest(struct mhs_journal *j);

#endif /* MHS_JOURNAL_H */
