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
 *   P:applied_seq:NODE last sequence of NODE's journal applied: nodes
 *                      sharing one Redis and prefix each replay their own
 *                      journal (docs/two-nodes.md)
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

/*
 * APPLY_LUA applies up to ST_APPLY_MAX journal records in one call.
 * ARGV[1] is the prefix, ARGV[2] this node's id, ARGV[3] the replay delay
 * (0 when applying live records; during a replay, a message whose last
 * record is SENDING may still be in flight from before the crash, so it
 * is rescheduled that many ms later instead of queued at once, and every
 * later record removes the stream entry its ACCEPTED record made: nothing
 * is queued twice). Then each record takes ST_APPLY_WIDTH arguments:
 *   seq, kind ("A" or "S"), message id, time ms, then
 *   A: interaction, rx, ods, recipient, content type, payload, raw idem
 *      key, scoped idem key, idem value, idem expiry ms, NHS index HMAC, ""
 *   S: state, attempts, reason, response, retry at ms, final expiry ms,
 *      spine fault ("1": a retriable Spine fault, counted in 'faults'),
 *      inbound MessageId (RESPONDED; "" otherwise), its dedup expiry ms,
 *      "" x 3
 *   U: action, from party, reason, payload, RefToMessageId, final expiry
 *      ms, inbound dedup expiry ms, "" x 5 (id is the inbound MessageId)
 * An idempotency key keeps the first message that used it (SET NX).
 * Records at or below applied_seq are skipped (replay is idempotent);
 * without applied_seq it refuses, so an emptied Redis is noticed.
 */
static const char APPLY_LUA[] =
    "local p = ARGV[1]\n"
    "local sk = p .. ':applied_seq:' .. ARGV[2]\n"
    "local applied = redis.call('GET', sk)\n"
    "if not applied then\n"
    "  return redis.error_reply('MHSREPLAY applied_seq is missing')\n"
    "end\n"
    "applied = tonumber(applied)\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    "local n = 0\n"
    "local replay = tonumber(ARGV[3])\n"
    "for b = 3, #ARGV - 3, 16 do\n"
    "  local seq = tonumber(ARGV[b + 1])\n"
    "  if seq > applied then\n"
    "    applied = seq\n"
    "    n = n + 1\n"
    "    local id, t = ARGV[b + 3], ARGV[b + 4]\n"
    "    local mk = p .. ':m:{' .. id .. '}'\n"
    "    local kind = ARGV[b + 2]\n"
    "    local exists, cur = false, nil\n"
    "    if kind == 'S' then\n"
    "      cur = redis.call('HMGET', mk, 'state', 'entry')\n"
    "      exists = cur[1] ~= false\n"
    "    elseif replay > 0 or kind == 'U' then\n"
    "      exists = redis.call('EXISTS', mk) == 1\n"
    "    end\n"
    "    if kind == 'A' then\n"
    "      if not exists then\n"
    "        redis.call('HSET', mk, 'state', '1', 'attempts', '0',\n"
    "          'interaction', ARGV[b + 5], 'rx', ARGV[b + 6],\n"
    "          'ods', ARGV[b + 7], 'recipient', ARGV[b + 8],\n"
    "          'ctype', ARGV[b + 9], 'idem', ARGV[b + 11],\n"
    "          'accepted_at', t, 'updated_at', t, 'clock', t,\n"
    "          'nhs_ix', ARGV[b + 15], 'last_error', '',\n"
    "          'entry', redis.call('XADD', p .. ':deliver', '*', 'id', id),\n"
    "          'payload', ARGV[b + 10])\n"
    "        if tonumber(ARGV[b + 14]) > now then\n"
    "          redis.call('SET', p .. ':idem:' .. ARGV[b + 12],\n"
    "            ARGV[b + 13], 'PXAT', ARGV[b + 14], 'NX')\n"
    "        end\n"
    "        redis.call('ZADD', p .. ':ix:rx:' .. string.upper(ARGV[b + 6]),\n"
    "          t, id)\n"
    "        redis.call('ZADD', p .. ':ix:ods:' .. string.upper(ARGV[b + "
    "7]),\n"
    "          t, id)\n"
    "        redis.call('ZADD', p .. ':ix:nhs:' .. ARGV[b + 15], t, id)\n"
    "      end\n"
    "    elseif kind == 'U' then\n"
    "      if not exists then\n"
    "        redis.call('HSET', mk, 'state', '6', 'attempts', '0',\n"
    "          'interaction', ARGV[b + 5], 'rx', '', 'ods', ARGV[b + 6],\n"
    "          'recipient', '', 'ctype', 'text/xml', 'payload', '',\n"
    "          'idem', '', 'accepted_at', t, 'updated_at', t, 'clock', t,\n"
    "          'last_error', ARGV[b + 7], 'response', ARGV[b + 8],\n"
    "          'ref_to', ARGV[b + 9])\n"
    "        redis.call('LPUSH', p .. ':dead', id)\n"
    "        redis.call('PEXPIREAT', mk, ARGV[b + 10])\n"
    "      end\n"
    "      redis.call('SET', p .. ':inbound:' .. id, id, 'PXAT',\n"
    "        ARGV[b + 11])\n"
    "    elseif exists then\n"
    "      local st = tonumber(ARGV[b + 5])\n"
    "      local entry = cur[2]\n"
    "      if entry and st ~= 1 and (st ~= 2 or replay > 0) then\n"
    "        redis.call('XDEL', p .. ':deliver', entry)\n"
    "        if st < 4 then redis.call('HDEL', mk, 'entry') end\n"
    "      end\n"
    "      if st == 2 and replay > 0 then\n"
    "        redis.call('ZADD', p .. ':retry', now + replay, id)\n"
    "      elseif st ~= 3 and st ~= 2 then\n"
    "        redis.call('ZREM', p .. ':retry', id)\n"
    "      end\n"
    "      redis.call('HSET', mk, 'state', ARGV[b + 5],\n"
    "        'attempts', ARGV[b + 6], 'last_error', ARGV[b + 7],\n"
    "        'updated_at', t)\n"
    "      if ARGV[b + 8] ~= '' then\n"
    "        redis.call('HSET', mk, 'response', ARGV[b + 8])\n"
    "      end\n"
    "      if ARGV[b + 12] ~= '' then\n"
    "        redis.call('SET', p .. ':inbound:' .. ARGV[b + 12], id, 'PXAT',\n"
    "          ARGV[b + 13])\n"
    "      end\n"
    "      if st == 3 then\n"
    "        redis.call('ZADD', p .. ':retry', ARGV[b + 9], id)\n"
    "        if ARGV[b + 11] == '1' then\n"
    "          redis.call('HINCRBY', mk, 'faults', 1)\n"
    "        end\n"
    "      elseif st == 1 then\n"
    "        redis.call('HSET', mk, 'clock', t, 'faults', '0')\n"
    "        redis.call('PERSIST', mk)\n"
    "        redis.call('LREM', p .. ':dead', 0, id)\n"
    "        redis.call('HSET', mk, 'entry',\n"
    "          redis.call('XADD', p .. ':deliver', '*', 'id', id))\n"
    "      elseif st == 6 or st == 7 then\n"
    "        redis.call('LREM', p .. ':dead', 0, id)\n"
    "        redis.call('LPUSH', p .. ':dead', id)\n"
    "      end\n"
    "      if st >= 4 then\n"
    "        if tonumber(ARGV[b + 10]) <= now then redis.call('DEL', mk)\n"
    "        else redis.call('PEXPIREAT', mk, ARGV[b + 10]) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('SET', sk, applied)\n"
    "return n\n";

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

void
st_argv_add(struct st_argv *v, const void *p, size_t n)
{
	if (v->n == v->max) {
		v->bytes.err = MHS_ETOOBIG;
		return;
	}
	v->off[v->n] = v->bytes.len;
	v->len[v->n++] = n;
	mhs_buf_append(&v->bytes, n ? p : "", n);
}

void
st_argv_str(struct st_argv *v, const char *s)
{
	st_argv_add(v, s, strlen(s));
}

void
st_argv_num(struct st_argv *v, long long n)
{
	char num[24];

	st_argv_add(v, num, mhs_fmt_ll(n, num));
}

void
st_nhs_index(struct store *st, const char *nhs_number, char out[65])
{
	uint8_t mac[32];

	if (st->nhs_mac == NULL ||
	    mhs_hmac_digest(
	        st->nhs_mac, nhs_number, strlen(nhs_number), mac) != 0)
		mhs_hmac_sha256(st->cfg.nhs_index_key,
		    strlen(st->cfg.nhs_index_key), nhs_number,
		    strlen(nhs_number), mac);
	mhs_hex(mac, 32, out);
}

int
st_argv_send(struct store *st, struct st_argv *v)
{
	const char *argv[ST_APPLY_ARGS];
	int rv = v->bytes.err;

	for (size_t i = 0; rv == 0 && i < v->n; i++)
		argv[i] = v->bytes.data + v->off[i];
	if (rv == 0 && st->redis.c == NULL)
		rv = MHS_EUNAVAIL;
	else if (rv == 0 &&
	    redisAppendCommandArgv(st->redis.c, (int) v->n, argv, v->len) !=
	        REDIS_OK) {
		st_redis_drop(st, "pipeline append failed");
		rv = MHS_EUNAVAIL;
	}
	mhs_buf_reset(&v->bytes);
	v->n = 0;
	return rv;
}

static void
ap_accepted(struct store *st, struct st_apply *a,
    const Mhs__Store__V1__JournalRecord *r)
{
	const Mhs__V1__SubmitRequest *s = r->submit;
	char fp[65], idemv[160], idemk[256], nhsix[65];

	mhs_hex(r->fingerprint.data, r->fingerprint.len == 32 ? 32 : 0, fp);
	snprintf(idemv, sizeof(idemv), "%s %s %lld", r->message_id, fp,
	    (long long) r->time_ms);
	st_idem_key(r->client_id, s->idempotency_key, idemk, sizeof(idemk));
	st_nhs_index(st, s->nhs_number, nhsix);
	st_argv_str(&a->v, s->interaction_id);
	st_argv_str(&a->v, s->prescription_id);
	st_argv_str(&a->v, s->sender_ods);
	st_argv_str(&a->v, s->recipient_ods);
	st_argv_str(&a->v, s->content_type[0] ? s->content_type : "text/xml");
	st_argv_add(&a->v, s->payload.data, s->payload.len);
	st_argv_str(&a->v, s->idempotency_key);
	st_argv_str(&a->v, idemk);
	st_argv_str(&a->v, idemv);
	st_argv_num(&a->v, r->time_ms + st->cfg.idempotency_ttl_s * 1000);
	st_argv_str(&a->v, nhsix);
	st_argv_str(&a->v, "");
}

static void
ap_state(struct store *st, struct st_apply *a,
    const Mhs__Store__V1__JournalRecord *r)
{
	st_argv_num(&a->v, r->state);
	st_argv_num(&a->v, r->attempts);
	st_argv_str(&a->v, r->reason);
	st_argv_add(&a->v, r->response_payload.data, r->response_payload.len);
	st_argv_num(&a->v, r->retry_at_ms);
	st_argv_num(&a->v, r->time_ms + st->cfg.final_ttl_s * 1000);
	st_argv_str(&a->v, r->spine_fault ? "1" : "0");
	st_argv_str(&a->v, r->inbound_message_id);
	st_argv_num(&a->v, r->time_ms + st->cfg.inbound_dedup_s * 1000);
	for (int i = 0; i < 3; i++)
		st_argv_str(&a->v, "");
}

static void
ap_unsolicited(struct store *st, struct st_apply *a,
    const Mhs__Store__V1__JournalRecord *r)
{
	st_argv_str(&a->v, r->action);
	st_argv_str(&a->v, r->from_party);
	st_argv_str(&a->v, r->reason);
	st_argv_add(&a->v, r->response_payload.data, r->response_payload.len);
	st_argv_str(&a->v, r->ref_to_message_id);
	st_argv_num(&a->v, r->time_ms + st->cfg.final_ttl_s * 1000);
	st_argv_num(&a->v, r->time_ms + st->cfg.inbound_dedup_s * 1000);
	for (int i = 0; i < 5; i++)
		st_argv_str(&a->v, "");
}

int
st_apply_add(struct store *st, struct st_apply *a, uint64_t seq,
    const Mhs__Store__V1__JournalRecord *r)
{
	bool acc =
	    r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED &&
	    r->submit != NULL;
	bool uns =
	    r->kind == MHS__STORE__V1__RECORD_KIND__RECORD_KIND_UNSOLICITED;
	int rv;

	if (a->v.n == 0) {
		a->v.off = a->off;
		a->v.len = a->len;
		a->v.max = ST_APPLY_ARGS;
		st_argv_str(&a->v, "EVALSHA");
		st_argv_str(&a->v, st->redis.apply_sha);
		st_argv_str(&a->v, "0");
		st_argv_str(&a->v, st->cfg.prefix);
		st_argv_str(&a->v, st->cfg.node_id);
		st_argv_num(&a->v, a->replay_delay_ms);
	}
	st_argv_num(&a->v, (long long) seq);
	st_argv_str(&a->v, acc ? "A" : uns ? "U" : "S");
	st_argv_str(&a->v, r->message_id);
	st_argv_num(&a->v, r->time_ms);
	if (acc)
		ap_accepted(st, a, r);
	else if (uns)
		ap_unsolicited(st, a, r);
	else
		ap_state(st, a, r);
	if (a->v.bytes.err != 0)
		return a->v.bytes.err;
	if (++a->nrecs == ST_APPLY_MAX && (rv = st_apply_flush(st, a)) != 0)
		return rv;
	return 0;
}

int
st_apply_flush(struct store *st, struct st_apply *a)
{
	int rv;

	if (a->nrecs == 0)
		return 0;
	if ((rv = st_argv_send(st, &a->v)) == 0)
		a->calls++;
	a->nrecs = 0;
	return rv;
}

void
st_apply_fini(struct st_apply *a)
{
	mhs_buf_fini(&a->v.bytes);
	memset(a, 0, sizeof(*a));
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
	struct st_apply ap;
	uint64_t applied;
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
	rv = st_apply_add(rp->st, &rp->ap, seq, r);
	mhs__store__v1__journal_record__free_unpacked(r, NULL);
	if (rv != 0)
		return rv;
	rp->applied = seq;
	if (rp->ap.calls >= 16) { /* bound what is in flight */
		if ((rv = st_redis_drain(rp->st, rp->ap.calls)) != 0)
			return rv;
		rp->ap.calls = 0;
	}
	return 0;
}

/*
 * rebuild_marker runs cmd (EXISTS, SET or DEL) on this node's "rebuild
 * running" key; returns the integer reply (0 or 1) or -1.
 */
static int
rebuild_marker(struct store *st, const char *cmd)
{
	char key[256];
	const char *argv[] = {cmd, key, "1"};
	redisReply *rep;
	int rv;

	snprintf(key, sizeof(key), "%s:rebuild:%s", st->cfg.prefix,
	    st->cfg.node_id);
	if ((rep = st_redis_cmd(
	         st, strcmp(cmd, "SET") == 0 ? 3 : 2, argv, NULL)) == NULL)
		return -1;
	rv = rep->type == REDIS_REPLY_INTEGER ? (int) rep->integer
	    : rep->type == REDIS_REPLY_STATUS ? 0
	                                      : -1;
	freeReplyObject(rep);
	return rv;
}

/* redis_rebuild fills an empty Redis from the journal (rebuild.c). */
static int
redis_rebuild(struct store *st)
{
	char key[256], num[24];
	const char *set[] = {"SET", key, num};
	uint64_t applied = 0;
	redisReply *rep;
	int rv;

	mhs_info("replay_start",
	    "Redis holds nothing of this node: rebuilding it from journal "
	    "records 1..%llu",
	    (unsigned long long) mhs_journal_last_seq(st->journal));
	if (rebuild_marker(st, "SET") != 0)
		return MHS_EUNAVAIL;
	/* Submits go on meanwhile, journaled only (rebuild.c calls
	 * st_worker_serve_offline between its steps); they reach Redis by
	 * the record-by-record replay that follows. */
	st->rebuild_from = mhs_journal_last_seq(st->journal);
	atomic_store(&st->rebuilding, true);
	rv = st_redis_rebuild(st, &applied);
	atomic_store(&st->rebuilding, false);
	if (rv != 0) {
		st_redis_drop(st, "rebuild failed");
		return rv;
	}
	snprintf(key, sizeof(key), "%s:applied_seq:%s", st->cfg.prefix,
	    st->cfg.node_id);
	snprintf(num, sizeof(num), "%llu", (unsigned long long) applied);
	if ((rep = st_redis_cmd(st, 3, set, NULL)) == NULL)
		return MHS_EUNAVAIL;
	freeReplyObject(rep);
	if (rebuild_marker(st, "DEL") < 0)
		return MHS_EUNAVAIL;
	st->redis.applied_seq = applied;
	return 0;
}

/*
 * replay_horizon refuses a Redis whose applied_seq is older than the
 * journal's first record: retention has removed the segments in between
 * (a snapshot or backup restored long after it was taken), so what those
 * records did (messages delivered, failed, answered) cannot be replayed,
 * and Redis would deliver such messages again. An operator must empty
 * Redis so that the store rebuilds it; until then the
 * connection is dropped and Submits are journaled only.
 */
static int
replay_horizon(struct store *st, uint64_t applied)
{
	struct mhs_journal_segment seg;

	if (applied == 0 || mhs_journal_segment(st->journal, 0, &seg) != 0 ||
	    applied + 1 >= seg.first_seq)
		return 0;
	mhs_error("redis_older_than_journal",
	    "Redis has applied this node's journal up to seq %llu, but the "
	    "journal now starts at seq %llu (%s; older segments were removed "
	    "by retention): Redis is an old copy that cannot be brought up to "
	    "date. Not using it. Empty Redis (FLUSHALL; nodes sharing the "
	    "prefix each rebuild their part) and the store rebuilds it from "
	    "the journal",
	    (unsigned long long) applied, (unsigned long long) seg.first_seq,
	    seg.name);
	st_redis_drop(st, "Redis is older than the journal");
	return MHS_ESTATE;
}

int
st_redis_replay(struct store *st)
{
	char key[256], where[300] = "";
	const char *get[] = {"GET", key};
	struct replay rp = {.st = st};

	rp.ap.replay_delay_ms = st->cfg.replay_redelivery_ms;
	redisReply *rep;
	int rv;

	snprintf(key, sizeof(key), "%s:applied_seq:%s", st->cfg.prefix,
	    st->cfg.node_id);
	if ((rep = st_redis_cmd(st, 2, get, NULL)) == NULL)
		return MHS_EUNAVAIL;
	if (rep->type == REDIS_REPLY_STRING)
		rp.applied = strtoull(rep->str, NULL, 10);
	freeReplyObject(rep);
	if (rp.applied > mhs_journal_last_seq(st->journal)) {
		/* Redis has applied records this journal does not hold (a
		 * journal restored from a backup, or replaced): new records
		 * would reuse their sequence numbers and be skipped. The
		 * journal is the truth: continue from its end, loudly. */
		char num[24];
		const char *set[] = {"SET", key, num};

		mhs_error("journal_behind_redis",
		    "Redis has applied up to seq %llu but the journal ends at "
		    "%llu: restored or replaced journal? Messages applied "
		    "after "
		    "%llu are in Redis only",
		    (unsigned long long) rp.applied,
		    (unsigned long long) mhs_journal_last_seq(st->journal),
		    (unsigned long long) mhs_journal_last_seq(st->journal));
		rp.applied = mhs_journal_last_seq(st->journal);
		snprintf(
		    num, sizeof(num), "%llu", (unsigned long long) rp.applied);
		if ((rep = st_redis_cmd(st, 3, set, NULL)) == NULL)
			return MHS_EUNAVAIL;
		freeReplyObject(rep);
	}
	if ((rv = replay_horizon(st, rp.applied)) != 0)
		return rv;
	if (rp.applied == 0 && mhs_journal_last_seq(st->journal) > 0) {
		/* Nothing of this node in Redis: rebuild it in one pass per
		 * message (rebuild.c), unless a rebuild was interrupted. */
		switch (rebuild_marker(st, "EXISTS")) {
		case 0:
			if ((rv = redis_rebuild(st)) != 0)
				return rv;
			/* Then what was journaled during the rebuild. */
			rp.applied = st->redis.applied_seq;
			break;
		case 1:
			mhs_warn("replay_resumed",
			    "an earlier rebuild of Redis was interrupted; "
			    "replaying record by record");
			break;
		default:
			return MHS_EUNAVAIL;
		}
	}
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
	atomic_store(&st->replaying, true);
	rv = mhs_journal_scan(st->cfg.journal_dir, rp.applied, replay_one, &rp,
	    where, sizeof(where));
	if (rv == 0 && (rv = st_apply_flush(st, &rp.ap)) == 0)
		rv = st_redis_drain(st, rp.ap.calls);
	st_apply_fini(&rp.ap);
	atomic_store(&st->replaying, false);
	if (rv != 0) {
		mhs_error("replay_failed", "%s %s", mhs_strerror(rv), where);
		st_redis_drop(st, "replay failed");
		return rv;
	}
	st->redis.applied_seq = rp.applied;
	return rebuild_marker(st, "DEL") < 0 ? MHS_EUNAVAIL : 0;
}

int
st_redis_check(struct store *st)
{
	char key[256];
	const char *get[] = {"GET", key};
	redisReply *rep;
	bool lost;

	snprintf(key, sizeof(key), "%s:applied_seq:%s", st->cfg.prefix,
	    st->cfg.node_id);
	if ((rep = st_redis_cmd(st, 2, get, NULL)) == NULL)
		return MHS_EUNAVAIL;
	lost = rep->type == REDIS_REPLY_NIL;
	freeReplyObject(rep);
	if (lost) {
		/* Emptied under us: reconnect, which replays the journal. */
		st_redis_drop(
		    st, "Redis lost its data; replaying the journal");
		st->redis.next_attempt_ms = 0;
		st->redis.replays++;
		return st_redis_ensure(st);
	}
	return 0;
}

bool
st_redis_ok_since_check(struct store *st)
{
	/* A replay just ran: what was missing may be there now, but the
	 * caller's read came before it. */
	bool fresh = st->redis.replays == st->redis.replays_seen;

	st->redis.replays_seen = st->redis.replays;
	return fresh;
}
