/*
 * Design notes: mhs-store's Redis side. Redis is a rebuildable index of the
 * journal (DESIGN §4): every change reaches Redis only as the application
 * of a journal record, through one Lua script (APPLY_LUA) that is
 * idempotent and ordered by the record's sequence number, with the last
 * applied sequence kept in Redis itself. So:
 *   - replaying records Redis already has changes nothing;
 *   - after a crash, a Redis restart, or a Redis that lost everything, the
 *     store replays the journal from the last applied sequence (from 0 for
 *     an empty Redis) and Redis is whole again;
 *   - a Redis emptied under a running store (FLUSHALL, failover to an empty
 *     replica) has no applied_seq: the script then refuses with MHSREPLAY,
 *     the store drops the connection, reconnects and replays.
 * Keys, all under the configured prefix P, one hash tag per message:
 *   P:m:{ID}           hash: state, attempts, fields, payload, response,
 *                      clock (acceptance or redelivery time: the persist
 *                      duration runs from it), nhs_ix (the index HMAC)
 *   P:idem:CLIENT/KEY  "ID FINGERPRINT-HEX ACCEPTED-MS", expires (keys
 *                      are scoped by client: partners cannot collide)
 *   P:ix:rx:RXID, P:ix:ods:ODS, P:ix:nhs:HMAC   zsets by accepted time
 *   P:deliver          stream for routers, consumer group "routers"
 *   P:retry            zset of message ids by due time
 *   P:dead             list of dead-lettered ids
 *   P:applied_seq      last journal sequence applied
 * The NHS number never appears in a key: its index is keyed by an
 * HMAC-SHA256 under a configured secret.
 *
 * Owner: the worker thread alone (one hiredis context, never shared). A
 * context that failed is freed, never reused; reconnects back off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "error.h"
#include "log.h"
#include "store.h"
#include "util.h"

static const char APPLY_LUA[] =
    "local p, seq, kind, id, t = ARGV[1], tonumber(ARGV[2]), ARGV[3], "
    "ARGV[4], ARGV[5]\n"
    "local mk = p .. ':m:{' .. id .. '}'\n"
    "local sk = p .. ':applied_seq'\n"
    "local applied = redis.call('GET', sk)\n"
    "if not applied then\n"
    "  return redis.error_reply('MHSREPLAY applied_seq is missing')\n"
    "end\n"
    "if seq <= tonumber(applied) then return 0 end\n"
    "redis.call('SET', sk, seq)\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    "if kind == 'A' then\n"
    "  if redis.call('EXISTS', mk) == 1 then return 1 end\n"
    "  redis.call('HSET', mk, 'state', '1', 'attempts', '0',\n"
    "    'interaction', ARGV[6], 'rx', ARGV[7], 'ods', ARGV[8],\n"
    "    'recipient', ARGV[9], 'ctype', ARGV[10], 'payload', ARGV[11],\n"
    "    'idem', ARGV[12], 'accepted_at', t, 'updated_at', t,\n"
    "    'clock', t, 'nhs_ix', ARGV[16], 'last_error', '')\n"
    "  redis.call('XADD', p .. ':deliver', '*', 'id', id)\n"
    "  if tonumber(ARGV[15]) > now then\n"
    "    redis.call('SET', p .. ':idem:' .. ARGV[13], ARGV[14], 'PXAT', "
    "ARGV[15])\n"
    "  end\n"
    "  for _, ix in ipairs({p .. ':ix:rx:' .. string.upper(ARGV[7]),\n"
    "      p .. ':ix:ods:' .. string.upper(ARGV[8]),\n"
    "      p .. ':ix:nhs:' .. ARGV[16]}) do\n"
    "    redis.call('ZADD', ix, t, id)\n"
    "    redis.call('ZREMRANGEBYSCORE', ix, '-inf', '(' .. ARGV[17])\n"
    "    redis.call('PEXPIREAT', ix, ARGV[18])\n"
    "  end\n"
    "  return 1\n"
    "end\n"
    "if redis.call('EXISTS', mk) == 0 then return 1 end\n"
    "local st = tonumber(ARGV[6])\n"
    "redis.call('HSET', mk, 'state', ARGV[6], 'attempts', ARGV[7],\n"
    "  'last_error', ARGV[8], 'updated_at', t)\n"
    "if ARGV[9] ~= '' then redis.call('HSET', mk, 'response', ARGV[9]) end\n"
    "if st == 3 then redis.call('ZADD', p .. ':retry', ARGV[10], id) end\n"
    "if st == 1 then\n"
    "  redis.call('HSET', mk, 'clock', t)\n"
    "  redis.call('PERSIST', mk)\n"
    "  redis.call('LREM', p .. ':dead', 0, id)\n"
    "  redis.call('XADD', p .. ':deliver', '*', 'id', id)\n"
    "end\n"
    "if st == 6 or st == 7 then\n"
    "  redis.call('LREM', p .. ':dead', 0, id)\n"
    "  redis.call('LPUSH', p .. ':dead', id)\n"
    "end\n"
    "if st >= 4 then\n"
    "  if tonumber(ARGV[11]) <= now then redis.call('DEL', mk)\n"
    "  else redis.call('PEXPIREAT', mk, ARGV[11]) end\n"
    "end\n"
    "return 1\n";

void
st_redis_drop(struct store *st, const char *why)
{
	struct st_redis *r = &st->redis;

	if (r->c != NULL) {
		mhs_warn("redis_lost", "Redis connection dropped: %s", why);
		redisFree(r->c);
		r->c = NULL;
		atomic_fetch_add(&st->stats.redis_errors, 1);
	}
	atomic_store(&st->redis_ok, false);
	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
	if (r->backoff_ms > 5000)
		r->backoff_ms = 5000;
	r->next_attempt_ms = mhs_mono_ms() + r->backoff_ms;
}

redisReply *
st_redis_cmd(struct store *st, int argc, const char **argv, const size_t *lens)
{
	redisReply *rep;

	if (st->redis.c == NULL)
		return NULL;
	rep = redisCommandArgv(st->redis.c, argc, argv, lens);
	if (rep == NULL) {
		st_redis_drop(st, st->redis.c->errstr);
		return NULL;
	}
	return rep;
}

static int
redis_setup(struct store *st)
{
	char stream[128];
	const char *load[] = {"SCRIPT", "LOAD", APPLY_LUA};
	const char *grp[] = {
	    "XGROUP", "CREATE", stream, "routers", "0", "MKSTREAM"};
	redisReply *rep;

	snprintf(stream, sizeof(stream), "%s:deliver", st->cfg.prefix);
	if (st->cfg.redis_password[0] != '\0') {
		const char *auth[] = {"AUTH", st->cfg.redis_password};
		if ((rep = st_redis_cmd(st, 2, auth, NULL)) == NULL)
			return MHS_EUNAVAIL;
		freeReplyObject(rep);
	}
	if ((rep = st_redis_cmd(st, 3, load, NULL)) == NULL)
		return MHS_EUNAVAIL;
	if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
		freeReplyObject(rep);
		st_redis_drop(st, "SCRIPT LOAD failed");
		return MHS_EUNAVAIL;
	}
	memcpy(st->redis.apply_sha, rep->str, 40);
	st->redis.apply_sha[40] = '\0';
	freeReplyObject(rep);
	/* BUSYGROUP (already there) is fine. */
	if ((rep = st_redis_cmd(st, 6, grp, NULL)) == NULL)
		return MHS_EUNAVAIL;
	freeReplyObject(rep);
	return 0;
}

int
st_redis_ensure(struct store *st)
{
	struct st_redis *r = &st->redis;
	struct timeval tv = {st->cfg.redis_timeout_ms / 1000,
	    (st->cfg.redis_timeout_ms % 1000) * 1000};
	int rv;

	if (r->c != NULL)
		return 0;
	if (mhs_mono_ms() < r->next_attempt_ms)
		return MHS_EUNAVAIL;
	r->c = redisConnectWithTimeout(
	    st->cfg.redis_host, (int) st->cfg.redis_port, tv);
	if (r->c == NULL || r->c->err) {
		if (r->c != NULL) {
			mhs_debug("redis_connect", "%s", r->c->errstr);
			redisFree(r->c);
			r->c = NULL;
		}
		st_redis_drop(st, "connect failed");
		return MHS_EUNAVAIL;
	}
	redisSetTimeout(r->c, tv);
	if ((rv = redis_setup(st)) != 0)
		return rv;
	if ((rv = st_redis_replay(st)) != 0)
		return rv;
	r->backoff_ms = 0;
	atomic_store(&st->redis_ok, true);
	mhs_info("redis_connected", "Redis %s:%lld ready, applied to seq %llu",
	    st->cfg.redis_host, st->cfg.redis_port,
	    (unsigned long long) r->applied_seq);
	return 0;
}

int
st_redis_append_apply(
    struct store *st, uint64_t seq, const Mhs__Store__V1__JournalRecord *r)
{
	char seqs[24], t[24], state[8], att[12], retry[24], exp[24];
	char idemv[160], idemx[24], nhsix[65], ixmin[24], ixexp[24];
	char idemk[256];
	const char *argv[24];
	size_t lens[24];
	int n = 0;
	int64_t final_exp = r->time_ms + st->cfg.final_ttl_s * 1000;

#define ARG(s, l) (argv[n] = (s), lens[n] = (l), n++)
#define STR(s)    ARG((s), strlen(s))
	snprintf(seqs, sizeof(seqs), "%llu", (unsigned long long) seq);
	snprintf(t, sizeof(t), "%lld", (long long) r->time_ms);
	STR("EVALSHA");
	STR(st->redis.apply_sha);
	STR("0");
	STR(st->cfg.prefix);
	STR(seqs);
	STR(r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED
	        ? "A"
	        : "S");
	STR(r->message_id);
	STR(t);
	if (r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED &&
	    r->submit != NULL) {
		const Mhs__V1__SubmitRequest *s = r->submit;
		uint8_t mac[32];
		char fp[65];

		mhs_hex(r->fingerprint.data, r->fingerprint.len == 32 ? 32 : 0,
		    fp);
		snprintf(idemv, sizeof(idemv), "%s %s %lld", r->message_id, fp,
		    (long long) r->time_ms);
		snprintf(idemx, sizeof(idemx), "%lld",
		    (long long) (r->time_ms +
		        st->cfg.idempotency_ttl_s * 1000));
		mhs_hmac_sha256(st->cfg.nhs_index_key,
		    strlen(st->cfg.nhs_index_key), s->nhs_number,
		    strlen(s->nhs_number), mac);
		mhs_hex(mac, 32, nhsix);
		snprintf(ixmin, sizeof(ixmin), "%lld",
		    (long long) (r->time_ms - st->cfg.final_ttl_s * 1000));
		snprintf(ixexp, sizeof(ixexp), "%lld", (long long) final_exp);
		STR(s->interaction_id);
		STR(s->prescription_id);
		STR(s->sender_ods);
		STR(s->recipient_ods);
		STR(s->content_type[0] ? s->content_type : "text/xml");
		ARG((const char *) s->payload.data, s->payload.len);
		st_idem_key(
		    r->client_id, s->idempotency_key, idemk, sizeof(idemk));
		STR(s->idempotency_key);
		STR(idemk);
		STR(idemv);
		STR(idemx);
		STR(nhsix);
		STR(ixmin);
		STR(ixexp);
	} else {
		snprintf(state, sizeof(state), "%d", (int) r->state);
		snprintf(att, sizeof(att), "%u", r->attempts);
		snprintf(
		    retry, sizeof(retry), "%lld", (long long) r->retry_at_ms);
		snprintf(exp, sizeof(exp), "%lld", (long long) final_exp);
		STR(state);
		STR(att);
		STR(r->reason);
		ARG((const char *) r->response_payload.data,
		    r->response_payload.len);
		STR(retry);
		STR(exp);
	}
#undef STR
#undef ARG
	if (st->redis.c == NULL)
		return MHS_EUNAVAIL;
	if (redisAppendCommandArgv(st->redis.c, n, argv, lens) != REDIS_OK) {
		st_redis_drop(st, "pipeline append failed");
		return MHS_EUNAVAIL;
	}
	return 0;
}

int
st_redis_drain(struct store *st, size_t n)
{
	int rv = 0;

	for (size_t i = 0; i < n; i++) {
		redisReply *rep = NULL;

		if (st->redis.c == NULL)
			return MHS_EUNAVAIL;
		if (redisGetReply(st->redis.c, (void **) &rep) != REDIS_OK) {
			st_redis_drop(st, st->redis.c->errstr);
			return MHS_EUNAVAIL;
		}
		if (rep->type == REDIS_REPLY_ERROR) {
			mhs_error("redis_error", "%.200s", rep->str);
			rv = MHS_EIO;
		}
		freeReplyObject(rep);
	}
	if (rv != 0)
		st_redis_drop(st, "command failed");
	return rv;
}

struct replay {
	struct store *st;
	size_t pending;
	uint64_t applied;
	int err;
};

static int
replay_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct replay *rp = arg;
	Mhs__Store__V1__JournalRecord *r;
	int rv;

	r = mhs__store__v1__journal_record__unpack(NULL, len, body);
	if (r == NULL) {
		mhs_error("replay_bad_record", "record %llu undecodable",
		    (unsigned long long) seq);
		return MHS_ECORRUPT;
	}
	rv = st_redis_append_apply(rp->st, seq, r);
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	if (rv != 0)
		return rv;
	rp->applied = seq;
	if (++rp->pending >= 512) {
		if ((rv = st_redis_drain(rp->st, rp->pending)) != 0)
			return rv;
		rp->pending = 0;
	}
	return 0;
}

int
st_redis_replay(struct store *st)
{
	char key[128], where[300] = "";
	const char *get[] = {"GET", key};
	struct replay rp = {st, 0, 0, 0};
	redisReply *rep;
	int rv;

	snprintf(key, sizeof(key), "%s:applied_seq", st->cfg.prefix);
	if ((rep = st_redis_cmd(st, 2, get, NULL)) == NULL)
		return MHS_EUNAVAIL;
	if (rep->type == REDIS_REPLY_STRING)
		rp.applied = strtoull(rep->str, NULL, 10);
	freeReplyObject(rep);
	if (rp.applied == 0) {
		/* An empty (or emptied) Redis: the script refuses to apply
		 * anything until this key exists, so a FLUSHALL under a live
		 * store is noticed at the next write and replayed. */
		const char *set[] = {"SET", key, "0"};
		if ((rep = st_redis_cmd(st, 3, set, NULL)) == NULL)
			return MHS_EUNAVAIL;
		freeReplyObject(rep);
	}
	if (rp.applied < mhs_journal_last_seq(st->journal))
		mhs_info("replay_start",
		    "applying journal records %llu..%llu to Redis",
		    (unsigned long long) rp.applied + 1,
		    (unsigned long long) mhs_journal_last_seq(st->journal));
	rv = mhs_journal_scan(st->cfg.journal_dir, rp.applied, replay_one, &rp,
	    where, sizeof(where));
	if (rv == 0 && rp.pending > 0)
		rv = st_redis_drain(st, rp.pending);
	if (rv != 0) {
		mhs_error("replay_failed", "%s %s", mhs_strerror(rv), where);
		st_redis_drop(st, "replay failed");
		return rv;
	}
	st->redis.applied_seq = rp.applied;
	return 0;
}

int
st_redis_check(struct store *st)
{
	char key[128];
	const char *get[] = {"GET", key};
	redisReply *rep;
	bool lost;

	snprintf(key, sizeof(key), "%s:applied_seq", st->cfg.prefix);
	if ((rep = st_redis_cmd(st, 2, get, NULL)) == NULL)
		return MHS_EUNAVAIL;
	lost = rep->type == REDIS_REPLY_NIL;
	freeReplyObject(rep);
	if (lost) {
		/* Emptied under us: reconnect, which replays the journal. */
		st_redis_drop(
		    st, "Redis lost its data; replaying the journal");
		st->redis.next_attempt_ms = 0;
		return st_redis_ensure(st);
	}
	return 0;
}
