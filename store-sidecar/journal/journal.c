/*
 * Design notes: see journal.h for the format and the contract. This file
 * owns the journal directory: the manifest, the segment files and the one
 * append fd. Reading is shared by open (recovery), scan and check through
 * one walker, so the three can never disagree about what is corrupt.
 *
 * Torn or corrupt? A bad record (short, length over the limit, CRC
 * mismatch) is a torn tail only if it is in the last segment and no valid
 * record follows it anywhere in that file; a torn write cannot leave a
 * complete, valid record behind it. Anything else (a bad record followed
 * by good ones, a valid record with the wrong sequence number, a bad tail
 * in an earlier segment) is corruption: open refuses, an operator decides.
 *
 * Never: log a record body; retry a failed write or fsync (the fd's state
 * is unknown afterwards: truncate back, latch, and wait for a reopen);
 * append to a segment the manifest does not list.
 *
 * Locking: the owner thread does everything except the EVERYSEC fdatasync.
 * mtx guards dirty/syncing/stop and the fd switch at rotation; the
 * syncer drops mtx around fdatasync so append never waits for the disk,
 * and rotation waits for !syncing before it touches the fd. failed is
 * atomic (first error wins) and may be read from any thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "crc32c.h"
#include "error.h"
#include "journal.h"
#include "log.h"

#define JR_HDR          MHS_JOURNAL_HDR_SIZE
#define JR_VERSION      1
#define JR_MANIFEST     "MANIFEST"
#define JR_MANIFEST_TMP "MANIFEST.tmp"
#define JR_MANIFEST_MAX (1u << 20) /* bytes; bounds what we read */
#define JR_SEGS_MAX     4096       /* 341 years of months */
#define JR_LOST_MAX     1024       /* repaired ranges */
#define JR_NODE_MAX     64
#define JR_NAME_SIZE    16         /* "YYYY-MM.seg" and a NUL, rounded up */
#define JR_WINDOW       (1u << 20) /* read-ahead of the segment reader */
#define JR_BUF_KEEP     (1u << 20) /* batch buffer kept between appends */
#define JR_RESYNC_SPAN  (UINT64_C(1) << 32) /* plausible seq after a hole */

struct jr_seg {
	char name[JR_NAME_SIZE];
	int month;      /* year * 12 + month - 1 */
	uint64_t first; /* sequence number of its first record */
};

struct jr_lost {
	uint64_t from, to; /* inclusive; declared lost by a repair */
};

struct jr_manifest {
	char node[JR_NODE_MAX + 1];
	struct jr_seg *segs;
	unsigned nsegs;
	struct jr_lost *lost;
	unsigned nlost;
};

struct mhs_journal {
	char *dir;
	int dirfd; /* holds the flock */
	enum mhs_fsync_policy policy;
	struct mhs_journal_io io;
	struct jr_manifest mf;
	int fd;        /* last segment, O_APPEND; -1 before the first */
	int month;     /* its month; -1 before the first */
	uint64_t size; /* last good offset in it */
	uint64_t last_seq;
	atomic_int failed;
	uint8_t *buf; /* frames of one batch */
	size_t cap;
	bool syncer; /* EVERYSEC thread running */
	pthread_t thread;
	pthread_mutex_t mtx; /* guards the fields below and the fd switch */
	pthread_cond_t cv;
	bool dirty, syncing, stop;
};

/* ---- small helpers ---------------------------------------------------- */

static int
jr_errno(void)
{
	int rv = mhs_err_errno(errno);

	return rv != 0 ? rv : MHS_EIO;
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
	    (uint32_t) p[3] << 24;
}

static uint64_t
get64(const uint8_t *p)
{
	return (uint64_t) get32(p) | (uint64_t) get32(p + 4) << 32;
}

static void
put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t) (v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t) v);
	put32(p + 4, (uint32_t) (v >> 32));
}

/* month_of maps a UTC time to year * 12 + month - 1, or -1. */
static int
month_of(int64_t ms)
{
	time_t s;
	struct tm tm;

	if (ms < 0)
		return -1;
	s = (time_t) (ms / 1000);
	if (gmtime_r(&s, &tm) == NULL || tm.tm_year + 1900 > 9999)
		return -1;
	return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

static void
seg_name(int month, char name[JR_NAME_SIZE])
{
	unsigned m = (unsigned) month; /* 0 .. 9999 * 12 + 11, see month_of */

	snprintf(
	    name, JR_NAME_SIZE, "%04u-%02u.seg", m / 12 % 10000, m % 12 + 1);
}

/* seg_month parses "YYYY-MM.seg" strictly; -1 if name is not one. */
static int
seg_month(const char *name)
{
	int y = 0, m = 0;

	if (strlen(name) != 11 || name[4] != '-' ||
	    strcmp(name + 7, ".seg") != 0)
		return -1;
	for (int i = 0; i < 7; i++) {
		if (i == 4)
			continue;
		if (name[i] < '0' || name[i] > '9')
			return -1;
		if (i < 4)
			y = y * 10 + name[i] - '0';
		else
			m = m * 10 + name[i] - '0';
	}
	return m >= 1 && m <= 12 ? y * 12 + m - 1 : -1;
}

static int
parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (*s < '0' || *s > '9')
		return MHS_ECORRUPT;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0' ? 0 : MHS_ECORRUPT;
}

static int
read_all(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n =
		    pread(fd, (char *) buf + got, len - got, (off_t) got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return jr_errno();
		if (n == 0)
			return MHS_EIO; /* shrank under us */
		got += (size_t) n;
	}
	return 0;
}

/* write_all is for the manifest only; segment data is never retried. */
static int
write_all(int fd, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t n = write(fd, (const char *) buf + put, len - put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? jr_errno() : MHS_EIO;
		put += (size_t) n;
	}
	return 0;
}

/* ---- manifest --------------------------------------------------------- */

static void
mf_fini(struct jr_manifest *mf)
{
	free(mf->segs);
	free(mf->lost);
	memset(mf, 0, sizeof(*mf));
}

static int
mf_add_seg(struct jr_manifest *mf, const char *name, int month, uint64_t first)
{
	struct jr_seg *s;

	if (mf->nsegs >= JR_SEGS_MAX)
		return MHS_ETOOBIG;
	s = realloc(mf->segs, (mf->nsegs + 1) * sizeof(*s));
	if (s == NULL)
		return MHS_ENOMEM;
	mf->segs = s;
	s += mf->nsegs++;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->month = month;
	s->first = first;
	return 0;
}

/* mf_add_lost records [from, to]; a range already covered is a no-op. */
static int
mf_add_lost(struct jr_manifest *mf, uint64_t from, uint64_t to)
{
	struct jr_lost *l;

	for (unsigned i = 0; i < mf->nlost; i++)
		if (mf->lost[i].from <= from && to <= mf->lost[i].to)
			return 0;
	if (mf->nlost >= JR_LOST_MAX)
		return MHS_ETOOBIG;
	l = realloc(mf->lost, (mf->nlost + 1) * sizeof(*l));
	if (l == NULL)
		return MHS_ENOMEM;
	mf->lost = l;
	l[mf->nlost].from = from;
	l[mf->nlost++].to = to;
	return 0;
}

/* mf_skip returns seq, or the first number after the lost ranges at it. */
static uint64_t
mf_skip(const struct jr_manifest *mf, uint64_t seq)
{
	for (bool moved = true; moved;) {
		moved = false;
		for (unsigned i = 0; i < mf->nlost; i++)
			if (seq >= mf->lost[i].from && seq <= mf->lost[i].to) {
				seq = mf->lost[i].to + 1;
				moved = true;
			}
	}
	return seq;
}

static bool
mf_lists(const struct jr_manifest *mf, const char *name)
{
	for (unsigned i = 0; i < mf->nsegs; i++)
		if (strcmp(mf->segs[i].name, name) == 0)
			return true;
	return false;
}

static void
mf_format(const struct jr_manifest *mf, struct mhs_buf *b)
{
	mhs_buf_printf(b, "mhs-journal %d\n", JR_VERSION);
	if (mf->node[0] != '\0')
		mhs_buf_printf(b, "node %s\n", mf->node);
	for (unsigned i = 0; i < mf->nlost; i++)
		mhs_buf_printf(b, "lost %" PRIu64 " %" PRIu64 "\n",
		    mf->lost[i].from, mf->lost[i].to);
	for (unsigned i = 0; i < mf->nsegs; i++)
		mhs_buf_printf(b, "segment %s %" PRIu64 "\n", mf->segs[i].name,
		    mf->segs[i].first);
	if (b->err == 0)
		mhs_buf_printf(
		    b, "end %08" PRIx32 "\n", mhs_crc32c(0, b->data, b->len));
}

/*
 * mf_write replaces the manifest atomically:
 * 1. write MANIFEST.tmp and fsync it;
 * 2. rename it over MANIFEST;
 * 3. fsync the directory (this also makes new segment files durable).
 * A crash before 2 leaves a MANIFEST.tmp that open removes.
 */
static int
mf_write(int dirfd, const struct jr_manifest *mf)
{
	struct mhs_buf b = MHS_BUF_INIT;
	int fd = -1, rv;

	mf_format(mf, &b);
	if (b.err != 0) {
		rv = MHS_ENOMEM;
		goto fail;
	}
	fd = openat(dirfd, JR_MANIFEST_TMP,
	    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		rv = jr_errno();
		goto fail;
	}
	if ((rv = write_all(fd, b.data, b.len)) != 0)
		goto fail;
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		rv = jr_errno();
		goto fail;
	}
	fd = -1;
	if (renameat(dirfd, JR_MANIFEST_TMP, dirfd, JR_MANIFEST) != 0 ||
	    fsync(dirfd) != 0) {
		rv = jr_errno();
		goto fail;
	}
	mhs_buf_fini(&b);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dirfd, JR_MANIFEST_TMP, 0);
	mhs_buf_fini(&b);
	return rv;
}

static int
mf_bad(const char **why, const char *what)
{
	*why = what;
	return MHS_ECORRUPT;
}

/* mf_check_end verifies the "end <crc>" trailer and cuts it off. */
static int
mf_check_end(char *text, size_t len, const char **why)
{
	char *end, *hex_end;
	unsigned long crc;

	if (len == 0 || text[len - 1] != '\n' || memchr(text, '\0', len))
		return mf_bad(why, "manifest malformed");
	text[len - 1] = '\0';
	end = strrchr(text, '\n');
	end = end != NULL ? end + 1 : text;
	if (strncmp(end, "end ", 4) != 0 || strlen(end) != 12)
		return mf_bad(why, "manifest has no end line");
	crc = strtoul(end + 4, &hex_end, 16);
	if (*hex_end != '\0' ||
	    crc != mhs_crc32c(0, text, (size_t) (end - text)))
		return mf_bad(why, "manifest checksum mismatch");
	*end = '\0';
	return 0;
}

static int
mf_line_segment(struct jr_manifest *mf, char **tok, const char **why)
{
	uint64_t first;
	int month = seg_month(tok[1]);

	if (month < 0 || parse_u64(tok[2], &first) != 0 || first == 0)
		return mf_bad(why, "manifest segment line malformed");
	if (mf->nsegs > 0 && month <= mf->segs[mf->nsegs - 1].month)
		return mf_bad(why, "manifest segments out of order");
	return mf_add_seg(mf, tok[1], month, first);
}

static int
mf_line_lost(struct jr_manifest *mf, char **tok, const char **why)
{
	uint64_t from, to;

	if (parse_u64(tok[1], &from) != 0 || parse_u64(tok[2], &to) != 0 ||
	    from == 0 || to < from)
		return mf_bad(why, "manifest lost line malformed");
	return mf_add_lost(mf, from, to);
}

static int
mf_line(struct jr_manifest *mf, char *line, bool first, const char **why)
{
	char *tok[4], *save = NULL;
	int n = 0;

	for (char *t = strtok_r(line, " ", &save); t != NULL && n < 4;
	     t = strtok_r(NULL, " ", &save))
		tok[n++] = t;
	if (first)
		return n == 2 && strcmp(tok[0], "mhs-journal") == 0 &&
		        strcmp(tok[1], "1") == 0
		    ? 0
		    : mf_bad(why, "not a version 1 journal manifest");
	if (n == 2 && strcmp(tok[0], "node") == 0 &&
	    strlen(tok[1]) <= JR_NODE_MAX) {
		snprintf(mf->node, sizeof(mf->node), "%s", tok[1]);
		return 0;
	}
	if (n == 3 && strcmp(tok[0], "segment") == 0)
		return mf_line_segment(mf, tok, why);
	if (n == 3 && strcmp(tok[0], "lost") == 0)
		return mf_line_lost(mf, tok, why);
	return mf_bad(why, "manifest line not understood");
}

static int
mf_parse(struct jr_manifest *mf, char *text, size_t len, const char **why)
{
	char *save = NULL;
	bool first = true;
	int rv;

	if ((rv = mf_check_end(text, len, why)) != 0)
		return rv;
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save), first = false)
		if ((rv = mf_line(mf, line, first, why)) != 0)
			return rv;
	return first ? mf_bad(why, "manifest empty") : 0;
}

/*
 * mf_load reads and verifies MANIFEST into mf (empty on entry; the caller
 * finis it either way). MHS_ENOTFOUND if there is none; MHS_ECORRUPT with
 * *why set if it fails its checks.
 */
static int
mf_load(int dirfd, struct jr_manifest *mf, const char **why)
{
	struct stat st;
	char *text = NULL;
	int fd, rv;

	*why = "manifest unreadable";
	fd = openat(dirfd, JR_MANIFEST, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return jr_errno();
	if (fstat(fd, &st) != 0) {
		rv = jr_errno();
		goto out;
	}
	if (st.st_size > JR_MANIFEST_MAX) {
		rv = mf_bad(why, "manifest too large");
		goto out;
	}
	if ((text = malloc((size_t) st.st_size + 1)) == NULL) {
		rv = MHS_ENOMEM;
		goto out;
	}
	if ((rv = read_all(fd, text, (size_t) st.st_size)) == 0)
		rv = mf_parse(mf, text, (size_t) st.st_size, why);
out:
	free(text);
	close(fd);
	return rv;
}

/* ---- segment reader --------------------------------------------------- */

/*
 * A read-ahead window over one segment, so that walking records costs one
 * pread per JR_WINDOW bytes. Pointers from rd_get are valid until the next
 * rd_get.
 */
struct jr_reader {
	int fd;
	uint64_t size; /* at open; appends after that are not seen */
	uint8_t *win;
	size_t cap;
	uint64_t wstart;
	size_t wlen;
};

static int
rd_open(struct jr_reader *r, int dirfd, const char *name)
{
	struct stat st;

	memset(r, 0, sizeof(*r));
	r->fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
		return jr_errno();
	if (fstat(r->fd, &st) != 0) {
		int rv = jr_errno();

		close(r->fd);
		return rv;
	}
	r->size = (uint64_t) st.st_size;
	return 0;
}

static void
rd_close(struct jr_reader *r)
{
	close(r->fd);
	free(r->win);
}

static int
rd_fill(struct jr_reader *r, uint64_t off, size_t len)
{
	size_t want = len > JR_WINDOW ? len : JR_WINDOW;
	size_t got = 0;

	if (want > r->size - off)
		want = (size_t) (r->size - off);
	if (want > r->cap) {
		uint8_t *w = realloc(r->win, want);

		if (w == NULL)
			return MHS_ENOMEM;
		r->win = w;
		r->cap = want;
	}
	while (got < want) {
		ssize_t n = pread(
		    r->fd, r->win + got, want - got, (off_t) (off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return jr_errno();
		if (n == 0)
			break;
		got += (size_t) n;
	}
	r->wstart = off;
	r->wlen = got;
	return got < len ? MHS_EIO : 0;
}

/* rd_get: bytes [off, off + len); MHS_ENOTFOUND if that passes the end. */
static int
rd_get(struct jr_reader *r, uint64_t off, size_t len, const uint8_t **p)
{
	int rv;

	if (off > r->size || len > r->size - off)
		return MHS_ENOTFOUND;
	if (off < r->wstart || off + len > r->wstart + r->wlen)
		if ((rv = rd_fill(r, off, len)) != 0)
			return rv;
	*p = r->win + (off - r->wstart);
	return 0;
}

/* ---- records ---------------------------------------------------------- */

struct jr_rec {
	uint64_t seq;
	const uint8_t *body;
	uint32_t len;
	uint64_t total;  /* header and body */
	const char *why; /* when bad */
};

/* rec_crc covers the length, the sequence number and the body. */
static uint32_t
rec_crc(const uint8_t *frame, uint32_t len)
{
	return mhs_crc32c(
	    mhs_crc32c(0, frame, 4), frame + 8, 8 + (size_t) len);
}

static size_t
rec_frame(uint8_t *p, uint64_t seq, const void *body, size_t len)
{
	put32(p, (uint32_t) len);
	put64(p + 8, seq);
	if (len > 0)
		memcpy(p + JR_HDR, body, len);
	put32(p + 4, rec_crc(p, (uint32_t) len));
	return JR_HDR + len;
}

static int
rec_bad(struct jr_rec *rec, const char *why)
{
	rec->why = why;
	return 1;
}

/* rec_read: 0 = a valid record, 1 = a bad one (rec->why), < 0 = error. */
static int
rec_read(struct jr_reader *r, uint64_t off, struct jr_rec *rec)
{
	const uint8_t *p;
	uint32_t len;
	int rv;

	if ((rv = rd_get(r, off, JR_HDR, &p)) != 0)
		return rv == MHS_ENOTFOUND ? rec_bad(rec, "truncated header")
		                           : rv;
	len = get32(p);
	if (len > MHS_JOURNAL_BODY_MAX)
		return rec_bad(rec, "length over limit");
	if ((rv = rd_get(r, off, JR_HDR + len, &p)) != 0)
		return rv == MHS_ENOTFOUND ? rec_bad(rec, "truncated body")
		                           : rv;
	if (rec_crc(p, len) != get32(p + 4))
		return rec_bad(rec, "checksum mismatch");
	rec->seq = get64(p + 8);
	rec->body = p + JR_HDR;
	rec->len = len;
	rec->total = JR_HDR + (uint64_t) len;
	return 0;
}

/*
 * rec_resync looks for a valid record starting after off whose sequence
 * number is plausible (lo or a little above); 1 and *at if there is one,
 * 0 if none, < 0 on error. The cheap checks come before the CRC so that
 * garbage costs little.
 */
static int
rec_resync(struct jr_reader *r, uint64_t off, uint64_t lo, uint64_t *at)
{
	struct jr_rec rec;
	const uint8_t *p;
	int rv;

	for (uint64_t pos = off + 1; pos + JR_HDR <= r->size; pos++) {
		if ((rv = rd_get(r, pos, JR_HDR, &p)) != 0)
			return rv;
		if (get32(p) > r->size - pos - JR_HDR || get64(p + 8) < lo ||
		    get64(p + 8) - lo > JR_RESYNC_SPAN)
			continue;
		if ((rv = rec_read(r, pos, &rec)) < 0)
			return rv;
		if (rv == 0) {
			*at = pos;
			return 1;
		}
	}
	return 0;
}

/*
 * rec_after counts the valid records at or after off (*n) and finds the
 * highest sequence number among them (*max), skipping over bad bytes.
 */
static int
rec_after(
    struct jr_reader *r, uint64_t off, uint64_t lo, uint64_t *n, uint64_t *max)
{
	struct jr_rec rec;
	int rv;

	*n = *max = 0;
	while (off < r->size) {
		if ((rv = rec_read(r, off, &rec)) < 0)
			return rv;
		if (rv == 0) {
			(*n)++;
			*max = rec.seq > *max ? rec.seq : *max;
			off += rec.total;
			continue;
		}
		if ((rv = rec_resync(r, off, lo, &off)) <= 0)
			return rv;
	}
	return 0;
}

/* ---- walker: shared by open, scan and check --------------------------- */

enum jr_state {
	JR_SEG_OK,
	JR_SEG_TORN,    /* bad from end to EOF, nothing valid after it */
	JR_SEG_CORRUPT, /* bad at end, something valid after it */
	JR_SEG_MISSING, /* listed but not there */
};

struct jr_walk {
	const struct jr_manifest *mf;
	mhs_journal_scan_fn fn; /* NULL: verify only */
	void *arg;
	uint64_t after;
	uint64_t expected; /* next sequence number due */
	uint64_t records;  /* valid records so far */
	/* outcome of the last segment walked */
	enum jr_state state;
	uint64_t end;       /* offset after the last good record */
	uint64_t size;      /* of the file */
	uint64_t max_after; /* highest valid seq at or after end */
	const char *why;
};

/* walk_start: does segment i start where the previous one stopped? */
static int
walk_start(struct jr_walk *w, unsigned i)
{
	uint64_t first = mf_skip(w->mf, w->mf->segs[i].first);

	if (i == 0)
		w->expected = first;
	if (w->expected == first)
		return 0;
	w->why = w->expected < first
	    ? "sequence gap before this segment"
	    : "sequence regression before this segment";
	return MHS_ECORRUPT;
}

static int
walk_bad(struct jr_walk *w, struct jr_reader *r, const char *why)
{
	uint64_t n;
	int rv = rec_after(r, w->end, w->expected, &n, &w->max_after);

	w->why = why;
	w->state = n > 0 ? JR_SEG_CORRUPT : JR_SEG_TORN;
	return rv;
}

static int
walk_segment(struct jr_walk *w, struct jr_reader *r)
{
	struct jr_rec rec;
	int rv;

	while (w->end < r->size) {
		if ((rv = rec_read(r, w->end, &rec)) < 0)
			return rv;
		if (rv > 0)
			return walk_bad(w, r, rec.why);
		if (rec.seq != w->expected)
			return walk_bad(w, r, "sequence gap or regression");
		if (w->fn != NULL && rec.seq > w->after &&
		    (rv = w->fn(w->arg, rec.seq, rec.body, rec.len)) != 0)
			return rv;
		w->records++;
		w->expected = mf_skip(w->mf, rec.seq + 1);
		w->end += rec.total;
	}
	return 0;
}

/* walk_file walks one segment; the outcome is in w->state. */
static int
walk_file(struct jr_walk *w, int dirfd, const char *name)
{
	struct jr_reader r;
	int rv;

	w->state = JR_SEG_OK;
	w->end = w->size = w->max_after = 0;
	if ((rv = rd_open(&r, dirfd, name)) == MHS_ENOTFOUND) {
		w->state = JR_SEG_MISSING;
		w->why = "listed in the manifest but missing";
		return 0;
	}
	if (rv != 0)
		return rv;
	w->size = r.size;
	rv = walk_segment(w, &r);
	rd_close(&r);
	return rv;
}

/* seg_truncate cuts name at off and makes that durable. */
static int
seg_truncate(int dirfd, const char *name, uint64_t off)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
	int rv = 0;

	if (fd < 0)
		return jr_errno();
	if (ftruncate(fd, (off_t) off) != 0 || fsync(fd) != 0)
		rv = jr_errno();
	close(fd);
	return rv;
}

/*
 * dir_unlisted calls fn for every "YYYY-MM.seg" in the directory that the
 * manifest does not list, stopping at the first non-zero return.
 */
static int
dir_unlisted(int dirfd, const struct jr_manifest *mf,
    int (*fn)(void *, const char *, int, uint64_t), void *arg)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd, rv = 0;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		rv = jr_errno();
		if (fd >= 0)
			close(fd);
		return rv;
	}
	while (rv == 0 && (de = readdir(d)) != NULL) {
		int month = seg_month(de->d_name);

		if (month < 0 || mf_lists(mf, de->d_name) ||
		    fstatat(dirfd, de->d_name, &st, 0) != 0)
			continue;
		rv = fn(arg, de->d_name, month, (uint64_t) st.st_size);
	}
	closedir(d);
	return rv;
}

/* ---- open and recovery ------------------------------------------------ */

static int
jr_corrupt(const struct mhs_journal *j, const char *name, uint64_t off,
    const char *why)
{
	mhs_error("journal_corrupt", "%s/%s at offset %" PRIu64 ": %s", j->dir,
	    name, off, why);
	return MHS_ECORRUPT;
}

static bool
node_valid(const char *node)
{
	if (strlen(node) > JR_NODE_MAX)
		return false;
	for (; *node != '\0'; node++)
		if ((unsigned char) *node <= ' ' || *node == 0x7f)
			return false;
	return true;
}

static int
jr_alloc(struct mhs_journal **jp, const char *dir,
    const struct mhs_journal_options *opts)
{
	struct mhs_journal *j;
	pthread_condattr_t ca;

	if (opts != NULL &&
	    ((unsigned) opts->policy > MHS_FSYNC_NO ||
	        (opts->node_id && !node_valid(opts->node_id))))
		return MHS_EINVAL;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return MHS_ENOMEM;
	j->fd = j->dirfd = j->month = -1;
	pthread_mutex_init(&j->mtx, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	*jp = j;
	if (opts != NULL) {
		j->policy = opts->policy;
		if (opts->io != NULL)
			j->io = *opts->io;
	}
	return (j->dir = strdup(dir)) != NULL ? 0 : MHS_ENOMEM;
}

/* jr_mkdir creates dir (0750) and makes its name durable in the parent. */
static int
jr_mkdir(const char *dir)
{
	char *parent;
	int fd, rv = 0;

	if (mkdir(dir, 0750) != 0)
		return errno == EEXIST ? 0 : jr_errno();
	if ((parent = strdup(dir)) == NULL)
		return MHS_ENOMEM;
	fd = open(dirname(parent), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
		rv = jr_errno();
	if (fd >= 0)
		close(fd);
	free(parent);
	return rv;
}

/* jr_dir_lock makes sure nobody else appends here (and check --fix). */
static int
jr_dir_lock(int dirfd, const char *dir)
{
	if (flock(dirfd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return jr_errno();
	mhs_error("journal_locked", "%s: journal open by another owner", dir);
	return MHS_ESTATE;
}

static int
jr_dir_open(struct mhs_journal *j)
{
	int rv;

	if ((rv = jr_mkdir(j->dir)) != 0)
		return rv;
	j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0)
		return jr_errno();
	if ((rv = jr_dir_lock(j->dirfd, j->dir)) != 0)
		return rv;
	if (unlinkat(j->dirfd, JR_MANIFEST_TMP, 0) == 0)
		mhs_warn("journal_manifest_tmp",
		    "%s: removed " JR_MANIFEST_TMP " left by a crash", j->dir);
	return 0;
}

/*
 * An unlisted segment is left by a crash between creating it and listing
 * it (then it is empty: remove it), or by someone else. A non-empty one
 * after the last listed month would be appended to by the next rotation:
 * refuse. Older ones are not ours to delete: warn.
 */
static int
jr_unlisted_open(void *arg, const char *name, int month, uint64_t size)
{
	struct mhs_journal *j = arg;
	const struct jr_manifest *mf = &j->mf;

	if (size == 0) {
		unlinkat(j->dirfd, name, 0);
		mhs_info("journal_segment_removed",
		    "%s/%s: empty and not in the manifest", j->dir, name);
		return 0;
	}
	if (mf->nsegs == 0 || month > mf->segs[mf->nsegs - 1].month)
		return jr_corrupt(j, name, 0, "segment not in the manifest");
	mhs_warn("journal_segment_unlisted", "%s/%s: not in the manifest",
	    j->dir, name);
	return 0;
}

static int
jr_manifest_open(struct mhs_journal *j, const char *node)
{
	const char *why;
	int rv = mf_load(j->dirfd, &j->mf, &why);

	if (rv == MHS_ECORRUPT)
		return jr_corrupt(j, JR_MANIFEST, 0, why);
	if (rv != 0 && rv != MHS_ENOTFOUND)
		return rv;
	if (node != NULL && j->mf.node[0] != '\0' &&
	    strcmp(node, j->mf.node) != 0)
		mhs_warn("journal_node_mismatch",
		    "%s: journal written by node %s, opened by %s", j->dir,
		    j->mf.node, node);
	if (node != NULL && j->mf.node[0] == '\0')
		snprintf(j->mf.node, sizeof(j->mf.node), "%s", node);
	if (rv == MHS_ENOTFOUND) {
		if ((rv = dir_unlisted(j->dirfd, &j->mf, jr_unlisted_open, j)))
			return rv;
		return mf_write(j->dirfd, &j->mf);
	}
	return dir_unlisted(j->dirfd, &j->mf, jr_unlisted_open, j);
}

static int
jr_cut_tail(struct mhs_journal *j, const char *name, const struct jr_walk *w,
    struct mhs_journal_recovery *rec)
{
	int rv = seg_truncate(j->dirfd, name, w->end);

	if (rv != 0) {
		mhs_error("journal_truncate_failed", "%s/%s: %s", j->dir, name,
		    mhs_strerror(rv));
		return rv;
	}
	rec->torn_bytes = w->size - w->end;
	snprintf(rec->torn_file, sizeof(rec->torn_file), "%s", name);
	mhs_warn("journal_torn_tail",
	    "%s/%s: cut %" PRIu64 " bytes at offset %" PRIu64 " (%s)", j->dir,
	    name, rec->torn_bytes, w->end, w->why);
	return 0;
}

static int
jr_recover_seg(struct mhs_journal *j, struct jr_walk *w, unsigned i,
    struct mhs_journal_recovery *rec)
{
	const struct jr_seg *s = &j->mf.segs[i];
	int rv;

	if (walk_start(w, i) != 0)
		return jr_corrupt(j, s->name, 0, w->why);
	if ((rv = walk_file(w, j->dirfd, s->name)) != 0)
		return rv;
	j->size = w->end;
	if (w->state == JR_SEG_OK)
		return 0;
	if (i + 1 < j->mf.nsegs || w->state != JR_SEG_TORN)
		return jr_corrupt(j, s->name, w->end, w->why);
	return jr_cut_tail(j, s->name, w, rec);
}

/*
 * jr_recover verifies every segment, cuts a torn tail, and opens the last
 * segment for appending.
 */
static int
jr_recover(struct mhs_journal *j, struct mhs_journal_recovery *rec)
{
	struct jr_walk w = {.mf = &j->mf};
	const struct jr_seg *last;
	int rv;

	for (unsigned i = 0; i < j->mf.nsegs; i++)
		if ((rv = jr_recover_seg(j, &w, i, rec)) != 0)
			return rv;
	rec->records = w.records;
	rec->segments = j->mf.nsegs;
	if (j->mf.nsegs == 0)
		return 0;
	last = &j->mf.segs[j->mf.nsegs - 1];
	j->last_seq = rec->last_seq = w.expected - 1;
	j->month = last->month;
	j->fd = openat(j->dirfd, last->name, O_WRONLY | O_APPEND | O_CLOEXEC);
	return j->fd >= 0 ? 0 : jr_errno();
}

/* ---- EVERYSEC syncer -------------------------------------------------- */

static int
jr_fdatasync(struct mhs_journal *j, int fd)
{
	int r = j->io.fdatasync != NULL ? j->io.fdatasync(fd) : fdatasync(fd);

	return r == 0 ? 0 : jr_errno();
}

static void
jr_latch(struct mhs_journal *j, int err)
{
	int none = 0;

	atomic_compare_exchange_strong(&j->failed, &none, err);
}

/* Called and returns with mtx held; drops it around the fdatasync. */
static void
jr_syncer_sync(struct mhs_journal *j)
{
	int fd = j->fd, rv;

	if (!j->dirty || fd < 0 || atomic_load(&j->failed) != 0)
		return;
	j->dirty = false;
	j->syncing = true;
	pthread_mutex_unlock(&j->mtx);
	rv = jr_fdatasync(j, fd);
	pthread_mutex_lock(&j->mtx);
	j->syncing = false;
	pthread_cond_broadcast(&j->cv);
	if (rv != 0) {
		jr_latch(j, rv);
		mhs_error("journal_fsync_failed",
		    "%s: background fdatasync failed: %s; journal stopped",
		    j->dir, mhs_strerror(rv));
	}
}

static void *
jr_syncer_main(void *arg)
{
	struct mhs_journal *j = arg;
	struct timespec due;

	pthread_mutex_lock(&j->mtx);
	while (!j->stop) {
		clock_gettime(CLOCK_MONOTONIC, &due);
		due.tv_sec += 1;
		while (!j->stop &&
		    pthread_cond_timedwait(&j->cv, &j->mtx, &due) != ETIMEDOUT)
			;
		if (!j->stop)
			jr_syncer_sync(j);
	}
	pthread_mutex_unlock(&j->mtx);
	return NULL;
}

static int
jr_syncer_start(struct mhs_journal *j)
{
	if (j->policy != MHS_FSYNC_EVERYSEC)
		return 0;
	if (pthread_create(&j->thread, NULL, jr_syncer_main, j) != 0)
		return MHS_ENOMEM;
	j->syncer = true;
	return 0;
}

static void
jr_syncer_stop(struct mhs_journal *j)
{
	if (!j->syncer)
		return;
	pthread_mutex_lock(&j->mtx);
	j->stop = true;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mtx);
	pthread_join(j->thread, NULL);
	j->syncer = false;
}

/* jr_hold takes mtx and waits out a background fdatasync in flight. */
static void
jr_hold(struct mhs_journal *j)
{
	pthread_mutex_lock(&j->mtx);
	while (j->syncing)
		pthread_cond_wait(&j->cv, &j->mtx);
}

static void
jr_mark_dirty(struct mhs_journal *j)
{
	pthread_mutex_lock(&j->mtx);
	j->dirty = true;
	pthread_mutex_unlock(&j->mtx);
}

/* ---- public: open, close ---------------------------------------------- */

int
mhs_fsync_policy_parse(const char *name)
{
	static const char *const names[] = {"always", "everysec", "no"};

	for (int i = 0; name != NULL && i < 3; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

int
mhs_journal_open(struct mhs_journal **jp, const char *dir,
    const struct mhs_journal_options *opts, struct mhs_journal_recovery *rec)
{
	struct mhs_journal_recovery scratch;
	struct mhs_journal *j = NULL;
	int rv;

	if (jp == NULL || dir == NULL || *dir == '\0')
		return MHS_EINVAL;
	*jp = NULL;
	rec = rec != NULL ? rec : &scratch;
	memset(rec, 0, sizeof(*rec));
	if ((rv = jr_alloc(&j, dir, opts)) != 0 ||
	    (rv = jr_dir_open(j)) != 0 ||
	    (rv = jr_manifest_open(j, opts ? opts->node_id : NULL)) != 0 ||
	    (rv = jr_recover(j, rec)) != 0 || (rv = jr_syncer_start(j)) != 0)
		goto fail;
	mhs_info("journal_open",
	    "%s: %u segments, %" PRIu64 " records, last seq %" PRIu64, dir,
	    rec->segments, rec->records, rec->last_seq);
	*jp = j;
	return 0;
fail:
	memset(rec, 0, sizeof(*rec));
	mhs_journal_close(j);
	return rv;
}

void
mhs_journal_close(struct mhs_journal *j)
{
	int rv;

	if (j == NULL)
		return;
	jr_syncer_stop(j);
	if (j->dirty && j->fd >= 0 && atomic_load(&j->failed) == 0 &&
	    (rv = jr_fdatasync(j, j->fd)) != 0)
		mhs_error("journal_fsync_failed", "%s: fdatasync at close: %s",
		    j->dir, mhs_strerror(rv));
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	mf_fini(&j->mf);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mtx);
	free(j->buf);
	free(j->dir);
	free(j);
}

int
mhs_journal_failed(const struct mhs_journal *j)
{
	return atomic_load(&((struct mhs_journal *) j)->failed);
}

uint64_t
mhs_journal_last_seq(const struct mhs_journal *j)
{
	return j->last_seq;
}

/* ---- append ----------------------------------------------------------- */

static const char *
jr_cur_name(const struct mhs_journal *j)
{
	return j->mf.nsegs > 0 ? j->mf.segs[j->mf.nsegs - 1].name : "-";
}

/*
 * jr_rotate starts the segment for month:
 * 1. fdatasync the current segment, whatever the policy, so that an older
 *    segment can never lose records a newer one has;
 * 2. create the new file (O_EXCL: never append to a file we did not make);
 * 3. list it in the manifest (atomic replace, directory fsynced);
 * 4. switch the fd, under mtx so the syncer never sees a closed fd.
 * Any failure latches. A created but unlisted file is empty and removed
 * at the next open; a listed empty one is valid.
 */
static int
jr_rotate(struct mhs_journal *j, int month)
{
	char name[JR_NAME_SIZE];
	int fd = -1, rv;

	seg_name(month, name);
	jr_hold(j);
	if (j->fd >= 0 && (rv = jr_fdatasync(j, j->fd)) != 0)
		goto fail;
	fd = openat(j->dirfd, name,
	    O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0) {
		rv = jr_errno();
		goto fail;
	}
	if ((rv = mf_add_seg(&j->mf, name, month, j->last_seq + 1)) != 0 ||
	    (rv = mf_write(j->dirfd, &j->mf)) != 0)
		goto fail;
	if (j->fd >= 0)
		close(j->fd);
	j->fd = fd;
	j->month = month;
	j->size = 0;
	j->dirty = false;
	pthread_mutex_unlock(&j->mtx);
	mhs_info("journal_segment_started", "%s/%s: first seq %" PRIu64,
	    j->dir, name, j->last_seq + 1);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	jr_latch(j, rv);
	pthread_mutex_unlock(&j->mtx);
	mhs_error("journal_rotate_failed", "%s/%s: %s; journal stopped",
	    j->dir, name, mhs_strerror(rv));
	return rv;
}

/* jr_batch_check bounds a batch and finds its latest month. */
static int
jr_batch_check(
    const struct mhs_journal_entry *e, size_t n, size_t *total, int *month)
{
	*total = 0;
	*month = -1;
	if (n > MHS_JOURNAL_BATCH_MAX / JR_HDR)
		return MHS_ETOOBIG;
	for (size_t i = 0; i < n; i++) {
		int m = month_of(e[i].time_ms);

		if (m < 0 || (e[i].body == NULL && e[i].len > 0))
			return MHS_EINVAL;
		if (e[i].len > MHS_JOURNAL_BODY_MAX)
			return MHS_ETOOBIG;
		*total += JR_HDR + e[i].len;
		if (*total > MHS_JOURNAL_BATCH_MAX)
			return MHS_ETOOBIG;
		*month = m > *month ? m : *month;
	}
	return 0;
}

static int
jr_frame(struct mhs_journal *j, const struct mhs_journal_entry *e, size_t n,
    size_t total)
{
	uint8_t *p;

	if (total > j->cap) {
		if ((p = realloc(j->buf, total)) == NULL)
			return MHS_ENOMEM;
		j->buf = p;
		j->cap = total;
	}
	p = j->buf;
	for (size_t i = 0; i < n; i++)
		p += rec_frame(p, j->last_seq + 1 + i, e[i].body, e[i].len);
	return 0;
}

/* jr_fail: truncate back to the last good offset and latch. No retry. */
static int
jr_fail(struct mhs_journal *j, int err, const char *what)
{
	jr_latch(j, err);
	if (ftruncate(j->fd, (off_t) j->size) != 0)
		mhs_error("journal_truncate_failed",
		    "%s/%s: cannot cut back to %" PRIu64 ": %s", j->dir,
		    jr_cur_name(j), j->size, mhs_strerror(jr_errno()));
	mhs_error("journal_append_failed",
	    "%s/%s: %s failed: %s; journal stopped until reopened", j->dir,
	    jr_cur_name(j), what, mhs_strerror(err));
	return err;
}

static int
jr_write_batch(struct mhs_journal *j, size_t total)
{
	ssize_t n;
	int rv;

	n = j->io.write != NULL ? j->io.write(j->fd, j->buf, total)
	                        : write(j->fd, j->buf, total);
	if (n < 0)
		return jr_fail(j, jr_errno(), "write");
	if ((size_t) n != total)
		return jr_fail(j, MHS_EIO, "short write");
	if (j->policy == MHS_FSYNC_ALWAYS &&
	    (rv = jr_fdatasync(j, j->fd)) != 0)
		return jr_fail(j, rv, "fdatasync");
	if (j->policy == MHS_FSYNC_EVERYSEC)
		jr_mark_dirty(j);
	return 0;
}

int
mhs_journal_append(struct mhs_journal *j, const struct mhs_journal_entry *e,
    size_t n, uint64_t *first_seq)
{
	size_t total;
	int month, rv;

	if (j == NULL || e == NULL || n == 0)
		return MHS_EINVAL;
	if ((rv = mhs_journal_failed(j)) != 0 ||
	    (rv = jr_batch_check(e, n, &total, &month)) != 0)
		return rv;
	if (month > j->month && (rv = jr_rotate(j, month)) != 0)
		return rv;
	if ((rv = jr_frame(j, e, n, total)) != 0 ||
	    (rv = jr_write_batch(j, total)) != 0)
		return rv;
	if (first_seq != NULL)
		*first_seq = j->last_seq + 1;
	j->last_seq += n;
	j->size += total;
	if (j->cap > JR_BUF_KEEP) {
		free(j->buf);
		j->buf = NULL;
		j->cap = 0;
	}
	return 0;
}

/* ---- scan ------------------------------------------------------------- */

struct jr_where {
	const char *dir;
	char *buf;
	size_t len;
};

static int
jr_where(
    const struct jr_where *wh, const char *name, uint64_t off, const char *why)
{
	if (wh->buf != NULL && wh->len > 0)
		snprintf(wh->buf, wh->len, "%s/%s at offset %" PRIu64 ": %s",
		    wh->dir, name, off, why);
	return MHS_ECORRUPT;
}

/* scan_skip passes over segment i, wholly at or below after_seq. */
static int
scan_skip(struct jr_walk *w, int dirfd, unsigned i, const struct jr_where *wh)
{
	struct stat st;

	if (fstatat(dirfd, w->mf->segs[i].name, &st, 0) != 0)
		return errno == ENOENT
		    ? jr_where(wh, w->mf->segs[i].name, 0,
		          "listed in the manifest but missing")
		    : jr_errno();
	w->expected = mf_skip(w->mf, w->mf->segs[i + 1].first);
	return 0;
}

static int
scan_seg(struct jr_walk *w, int dirfd, unsigned i, const struct jr_where *wh)
{
	const char *name = w->mf->segs[i].name;
	bool last = i + 1 == w->mf->nsegs;
	int rv;

	if (walk_start(w, i) != 0)
		return jr_where(wh, name, 0, w->why);
	if (!last && w->mf->segs[i + 1].first <= w->after + 1)
		return scan_skip(w, dirfd, i, wh);
	if ((rv = walk_file(w, dirfd, name)) != 0 || w->state == JR_SEG_OK)
		return rv;
	if (last && w->state == JR_SEG_TORN)
		return 0;
	return jr_where(wh, name, w->end, w->why);
}

int
mhs_journal_scan(const char *dir, uint64_t after_seq, mhs_journal_scan_fn fn,
    void *arg, char *where, size_t wherelen)
{
	struct jr_manifest mf = {0};
	struct jr_walk w = {
	    .mf = &mf, .fn = fn, .arg = arg, .after = after_seq};
	struct jr_where wh = {dir, where, wherelen};
	const char *why;
	int dirfd, rv;

	if (dir == NULL || fn == NULL)
		return MHS_EINVAL;
	if (where != NULL && wherelen > 0)
		where[0] = '\0';
	if ((dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return jr_errno();
	if ((rv = mf_load(dirfd, &mf, &why)) == MHS_ECORRUPT)
		rv = jr_where(&wh, JR_MANIFEST, 0, why);
	for (unsigned i = 0; rv == 0 && i < mf.nsegs; i++)
		rv = scan_seg(&w, dirfd, i, &wh);
	mf_fini(&mf);
	close(dirfd);
	return rv;
}

/* ---- check and repair ------------------------------------------------- */

struct jr_cut {
	unsigned seg;
	uint64_t off;
};

struct jr_check {
	bool fix;
	int dirfd;
	struct jr_manifest mf;
	struct jr_walk w;
	struct mhs_buf rp;   /* the report */
	unsigned bad;        /* corruption left unrepaired */
	bool mf_dirty;       /* lost ranges to write */
	struct jr_cut *cuts; /* truncations to make */
	unsigned ncuts;
};

/* check_resume: after an unrepaired segment, carry on from the next. */
static void
check_resume(struct jr_check *c, unsigned i)
{
	c->bad++;
	if (i + 1 < c->mf.nsegs)
		c->w.expected = mf_skip(&c->mf, c->mf.segs[i + 1].first);
}

static int
check_lost(struct jr_check *c, uint64_t from, uint64_t to)
{
	int rv = mf_add_lost(&c->mf, from, to);

	mhs_buf_printf(&c->rp,
	    "  sequence numbers %" PRIu64 "..%" PRIu64 " recorded as lost\n",
	    from, to);
	c->mf_dirty = true;
	return rv;
}

static int
check_plan_cut(struct jr_check *c, unsigned i)
{
	struct jr_cut *cuts = realloc(c->cuts, (c->ncuts + 1) * sizeof(*cuts));

	if (cuts == NULL)
		return MHS_ENOMEM;
	c->cuts = cuts;
	cuts[c->ncuts].seg = i;
	cuts[c->ncuts++].off = c->w.end;
	mhs_buf_printf(
	    &c->rp, "  truncating %" PRIu64 " bytes\n", c->w.size - c->w.end);
	return 0;
}

/* check_gap: segment i does not start where the previous one stopped. */
static int
check_gap(struct jr_check *c, unsigned i)
{
	const struct jr_seg *s = &c->mf.segs[i];
	uint64_t from = c->w.expected;
	int rv = 0;

	mhs_buf_printf(&c->rp,
	    "%s: %s (expected %" PRIu64 ", manifest says %" PRIu64 ")\n",
	    s->name, c->w.why, from, s->first);
	if (c->fix && from < s->first)
		rv = check_lost(c, from, s->first - 1);
	else
		c->bad++;
	c->w.expected = mf_skip(&c->mf, s->first);
	return rv;
}

static int
check_corrupt(struct jr_check *c, unsigned i)
{
	struct jr_walk *w = &c->w;
	bool last = i + 1 == c->mf.nsegs;
	uint64_t to = last ? w->max_after : c->mf.segs[i + 1].first - 1;
	int rv;

	mhs_buf_printf(&c->rp, "%s at offset %" PRIu64 ": %s (corrupt)\n",
	    c->mf.segs[i].name, w->end, w->why);
	if (!c->fix) {
		check_resume(c, i);
		return 0;
	}
	if (to >= w->expected && (rv = check_lost(c, w->expected, to)) != 0)
		return rv;
	if (!last)
		w->expected = mf_skip(&c->mf, c->mf.segs[i + 1].first);
	return check_plan_cut(c, i);
}

static int
check_seg(struct jr_check *c, unsigned i)
{
	struct jr_walk *w = &c->w;
	const char *name = c->mf.segs[i].name;
	uint64_t before = w->records;
	int rv;

	if (walk_start(w, i) != 0 && (rv = check_gap(c, i)) != 0)
		return rv;
	if ((rv = walk_file(w, c->dirfd, name)) != 0)
		return rv;
	if (w->state == JR_SEG_OK) {
		mhs_buf_printf(&c->rp, "%s: %" PRIu64 " records, ok\n", name,
		    w->records - before);
		return 0;
	}
	if (w->state == JR_SEG_MISSING) {
		mhs_buf_printf(&c->rp, "%s: %s\n", name, w->why);
		check_resume(c, i);
		return 0;
	}
	if (w->state == JR_SEG_CORRUPT || i + 1 < c->mf.nsegs)
		return check_corrupt(c, i);
	mhs_buf_printf(&c->rp, "%s at offset %" PRIu64 ": %s (torn tail)\n",
	    name, w->end, w->why);
	return c->fix ? check_plan_cut(c, i) : 0;
}

static int
check_open(struct jr_check *c, const char *dir)
{
	const char *why;
	int rv;

	if ((c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return jr_errno();
	if (c->fix && (rv = jr_dir_lock(c->dirfd, dir)) != 0) {
		mhs_buf_printf(&c->rp, "%s: in use by a running store\n", dir);
		return rv;
	}
	if (faccessat(c->dirfd, JR_MANIFEST_TMP, F_OK, 0) == 0) {
		mhs_buf_printf(&c->rp,
		    JR_MANIFEST_TMP ": left by a crash, %s\n",
		    c->fix ? "removed" : "ignored");
		if (c->fix)
			unlinkat(c->dirfd, JR_MANIFEST_TMP, 0);
	}
	rv = mf_load(c->dirfd, &c->mf, &why);
	if (rv == MHS_ENOTFOUND || rv == MHS_ECORRUPT)
		mhs_buf_printf(&c->rp, JR_MANIFEST ": %s\n",
		    rv == MHS_ENOTFOUND ? "missing" : why);
	return rv;
}

/*
 * check_apply makes the planned repair, lost ranges first: a crash between
 * the two steps leaves the bad record in place for a second run to cut,
 * never a cut journal that would reuse sequence numbers.
 */
static int
check_apply(struct jr_check *c)
{
	int rv;

	if (c->mf_dirty && (rv = mf_write(c->dirfd, &c->mf)) != 0)
		return rv;
	for (unsigned k = 0; k < c->ncuts; k++)
		if ((rv = seg_truncate(c->dirfd,
		         c->mf.segs[c->cuts[k].seg].name, c->cuts[k].off)) !=
		    0)
			return rv;
	return 0;
}

int
mhs_journal_check(const char *dir, bool fix, char *report, size_t reportlen)
{
	struct jr_check c = {.fix = fix, .dirfd = -1, .rp = MHS_BUF_INIT};
	int rv;

	if (dir == NULL)
		return MHS_EINVAL;
	c.w.mf = &c.mf;
	rv = check_open(&c, dir);
	for (unsigned i = 0; rv == 0 && i < c.mf.nsegs; i++)
		rv = check_seg(&c, i);
	if (rv == 0 && fix)
		rv = check_apply(&c);
	if (rv == 0 && c.bad > 0)
		rv = MHS_ECORRUPT;
	mhs_buf_printf(
	    &c.rp, "result: %s\n", rv == 0 ? "ok" : mhs_strerror(rv));
	if (report != NULL && reportlen > 0)
		snprintf(report, reportlen, "%s",
		    c.rp.err == 0 ? c.rp.data : "out of memory\n");
	mf_fini(&c.mf);
	free(c.cuts);
	mhs_buf_fini(&c.rp);
	if (c.dirfd >= 0)
		close(c.dirfd);
	return rv;
}

/* ---- public: retention ------------------------------------------------ */

int
mhs_journal_segment(
    const struct mhs_journal *j, unsigned i, struct mhs_journal_segment *out)
{
	const struct jr_seg *s;

	if (i >= j->mf.nsegs)
		return MHS_ENOTFOUND;
	s = &j->mf.segs[i];
	snprintf(out->name, sizeof(out->name), "%s", s->name);
	out->year = s->month / 12;
	out->month = s->month % 12 + 1;
	out->first_seq = s->first;
	out->last_seq =
	    i + 1 < j->mf.nsegs ? j->mf.segs[i + 1].first - 1 : j->last_seq;
	if (out->last_seq < out->first_seq)
		out->last_seq = 0;
	return 0;
}

int
mhs_journal_drop_oldest(struct mhs_journal *j)
{
	struct jr_seg gone;
	int rv;

	if (j->mf.nsegs < 2)
		return MHS_ESTATE;
	jr_hold(j);
	gone = j->mf.segs[0];
	memmove(&j->mf.segs[0], &j->mf.segs[1],
	    (j->mf.nsegs - 1) * sizeof(j->mf.segs[0]));
	j->mf.nsegs--;
	if ((rv = mf_write(j->dirfd, &j->mf)) != 0) {
		memmove(&j->mf.segs[1], &j->mf.segs[0],
		    j->mf.nsegs * sizeof(j->mf.segs[0]));
		j->mf.segs[0] = gone;
		j->mf.nsegs++;
		pthread_mutex_unlock(&j->mtx);
		mhs_error("journal_retention_failed", "%s/%s: manifest: %s",
		    j->dir, gone.name, mhs_strerror(rv));
		return rv;
	}
	pthread_mutex_unlock(&j->mtx);
	if (unlinkat(j->dirfd, gone.name, 0) != 0 || fsync(j->dirfd) != 0) {
		rv = jr_errno();
		mhs_warn("journal_retention_unlink",
		    "%s/%s: %s (unlisted now)", j->dir, gone.name,
		    mhs_strerror(rv));
		return 0; /* unlisted: open warns; nothing is lost */
	}
	mhs_info("journal_segment_dropped", "%s/%s: past retention", j->dir,
	    gone.name);
	return 0;
}
