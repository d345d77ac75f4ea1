/*
 * Design notes: journal retention (DESIGN §4, G5). Whole month segments
 * older than --retention-months are deleted, oldest first, and never one
 * that still holds a message that is not final: the walk stops at the
 * first segment with an ACCEPTED message whose state in Redis is
 * ACCEPTED, SENDING or RETRYING. A message missing from Redis counts as
 * final, since only final messages expire there; so retention runs only
 * while Redis is in step with the journal (connected, no backlog). The
 * segment being appended to is never deleted.
 *
 * Runs on the worker thread (it owns the journal and the hiredis context),
 * at start and then at most once an hour.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define RET_CHUNK 512

struct ret_scan {
	struct store *st;
	uint64_t last_seq;
	char ids[RET_CHUNK][37];
	size_t n;
	bool open_found; /* a message that is not final */
	int err;
};

/* ret_check asks Redis for the state of the ids collected so far. */
static int
ret_check(struct ret_scan *rs)
{
	struct store *st = rs->st;
	char key[256];

	for (size_t i = 0; i < rs->n; i++) {
		const char *argv[] = {"HGET", key, "state"};
		snprintf(
		    key, sizeof(key), "%s:m:{%s}", st->cfg.prefix, rs->ids[i]);
		if (st->redis.c == NULL ||
		    redisAppendCommandArgv(st->redis.c, 3, argv, NULL) !=
		        REDIS_OK) {
			st_redis_drop(st, "retention check failed");
			return MHS_EUNAVAIL;
		}
	}
	for (size_t i = 0; i < rs->n; i++) {
		redisReply *rep = NULL;
		long long state;

		if (redisGetReply(st->redis.c, (void **) &rep) != REDIS_OK) {
			st_redis_drop(st, "retention check failed");
			return MHS_EUNAVAIL;
		}
		state = rep->type == REDIS_REPLY_STRING ? atoll(rep->str) : 0;
		if (state >= MHS__V1__MESSAGE_STATE__MESSAGE_STATE_ACCEPTED &&
		    state <= MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RETRYING)
			rs->open_found = true;
		freeReplyObject(rep);
	}
	rs->n = 0;
	return 0;
}

static int
ret_record(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct ret_scan *rs = arg;
	Mhs__Store__V1__JournalRecord *r;

	if (seq > rs->last_seq)
		return 1; /* past the segment: done */
	r = mhs__store__v1__journal_record__unpack(NULL, len, body);
	if (r == NULL)
		return MHS_ECORRUPT;
	if (r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED)
		snprintf(rs->ids[rs->n++], 37, "%s", r->message_id);
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	if (rs->n == RET_CHUNK && (rs->err = ret_check(rs)) != 0)
		return rs->err;
	return rs->open_found ? 1 : 0;
}

/* ret_all_final: does seg hold only messages that are final? */
static bool
ret_all_final(struct store *st, const struct mhs_journal_segment *seg)
{
	struct ret_scan *rs = calloc(1, sizeof(*rs));
	bool ok;
	int rv;

	if (rs == NULL)
		return false;
	rs->st = st;
	rs->last_seq = seg->last_seq;
	rv = mhs_journal_scan(st->cfg.journal_dir,
	    seg->first_seq > 0 ? seg->first_seq - 1 : 0, ret_record, rs, NULL,
	    0);
	if ((rv == 0 || rv == 1) && rs->n > 0 && !rs->open_found)
		rv = ret_check(rs) == 0 ? 0 : -1;
	ok = (rv == 0 || rv == 1) && rs->err == 0 && !rs->open_found;
	if (rs->open_found)
		mhs_info("journal_retention_kept",
		    "%s is past retention but holds messages not yet final",
		    seg->name);
	free(rs);
	return ok;
}

/* st_month_age: whole months from (year, month) to now, UTC. */
int
st_month_age(int year, int month, int64_t now_ms)
{
	time_t t = (time_t) (now_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	return (tm.tm_year + 1900) * 12 + tm.tm_mon - (year * 12 + month - 1);
}

void
st_retention_tick(struct store *st, bool force)
{
	int64_t now = mhs_now_ms();
	struct mhs_journal_segment seg, next;

	if (st->cfg.retention_months <= 0 || st->redis.c == NULL ||
	    mhs_journal_last_seq(st->journal) != st->redis.applied_seq)
		return;
	if (!force && now - st->retention_at_ms < 3600 * 1000)
		return;
	st->retention_at_ms = now;
	while (mhs_journal_segment(st->journal, 0, &seg) == 0 &&
	    mhs_journal_segment(st->journal, 1, &next) == 0 &&
	    st_month_age(seg.year, seg.month, now) >
	        st->cfg.retention_months &&
	    ret_all_final(st, &seg))
		if (mhs_journal_drop_oldest(st->journal) != 0)
			break;
}
