/*
 * Design notes: rebuilding an empty Redis from the journal, fast.
 *
 * The record-by-record replay (redis.c) runs every record through
 * APPLY_LUA: every state a message ever passed through is written,
 * indexed and unindexed again, and a message long expired is written and
 * then deleted. When Redis holds nothing of this node (applied_seq absent
 * or 0), none of that is needed, and the rebuild instead:
 *   1. scans the journal once and folds every message's records into its
 *      final state, in memory (a compact entry per message, strings in
 *      one arena);
 *   2. scans it again and, at each message's ACCEPTED (or UNSOLICITED)
 *      record, writes that message once, in its final state, with plain
 *      pipelined commands (HSET, indexes, idempotency key, its place in
 *      the stream, retry schedule or expiry): one write per message
 *      instead of one script run per record, and nothing at all for a
 *      final message already past its expiry;
 *   3. writes the dead-letter list in the order messages died, the
 *      inbound duplicate-elimination keys, and applied_seq.
 * The result is what APPLY_LUA would have left, as the store tests check
 * (they empty Redis under a running stack and compare). Measured (see
 * docs/architecture.md): half the time for delivered messages, a tenth
 * for expired ones; for messages still waiting it is Redis's own cost of
 * the keys that bounds both paths.
 *
 * Each chunk of messages is one MULTI/EXEC, so no message is ever half
 * written. A marker key (P:rebuild:NODE) is set while the rebuild runs;
 * a store that finds it (the last rebuild was interrupted) uses the
 * record-by-record replay instead, which skips what is already there.
 * The stream entry id of a queued message is only known from XADD's
 * reply, so it is recorded in the hash by the next chunk; an interrupted
 * rebuild can leave at most one chunk of entries without it (they are
 * still delivered; the entry is then left acknowledged in the stream).
 *
 * Owner: the worker thread, from st_redis_replay.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define RB_CHUNK    128 /* messages per MULTI/EXEC */
#define RB_INFLIGHT 4   /* chunks written ahead of their replies */
#define RB_MAXARGS  40
#define RB_UNPACK   (64 * 1024) /* unpack arena; larger records malloc */
#define RB_SERVE_MS 2           /* how often queued Submits are answered */

enum {
	S_ACCEPTED = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_ACCEPTED,
	S_SENDING = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_SENDING,
	S_RETRYING = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RETRYING,
	S_DELIVERED = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED,
	S_FAILED = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_FAILED,
	S_EXPIRED = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_EXPIRED,
};

/* One message's final state; strings are offsets into the arena. */
struct rb_msg {
	uint64_t first_seq; /* its ACCEPTED or UNSOLICITED record */
	uint64_t dead_seq;  /* when it was last dead-lettered; 0: not dead */
	int64_t updated_at, clock, retry_at, final_exp;
	size_t id_off, err_off, resp_off, resp_len;
	uint32_t attempts, faults;
	uint8_t state;
	bool has_err, has_resp;
	bool has_faults; /* APPLY_LUA writes 'faults' only once counted */
};

/* An inbound duplicate-elimination key to set at the end. */
struct rb_inbound {
	size_t id_off; /* the inbound MessageId */
	size_t msg;    /* its message */
	int64_t expiry;
};

/* One chunk's XADDs, whose replies name the stream entries. */
struct rb_xadd {
	size_t msg;
	size_t exec_index;
};

struct rb {
	struct store *st;
	int64_t now_ms;
	struct mhs_buf arena;
	struct rb_msg *msgs;
	size_t n, cap;
	uint32_t *table; /* open addressing: index + 1, 0 empty */
	size_t tcap;
	struct rb_inbound *inb;
	size_t ninb, capinb;
	uint64_t records, last_seq;
	/* Pass 2: */
	struct st_argv v; /* the command being built */
	size_t off[RB_MAXARGS], len[RB_MAXARGS];
	size_t chunk_msgs, chunk_cmds;
	struct rb_xadd xadds[RB_INFLIGHT + 1][RB_CHUNK];
	size_t nxadd[RB_INFLIGHT + 1];
	size_t queued[RB_INFLIGHT + 1]; /* commands inside each MULTI */
	size_t head, inflight;          /* chunks sent, replies not yet read */
	char **entries; /* "id\0entry" pairs to record next chunk */
	size_t nentries, capentries;
	size_t written, skipped;
	int64_t progress_at, serve_at;
	int err;
	/* Each record is unpacked into this buffer (not the arena above,
	 * which keeps the folded strings), emptied after it. */
	ProtobufCAllocator alloc;
	size_t unpacked;
	_Alignas(16) uint8_t unpack[RB_UNPACK];
};

/* rb_unpack_alloc: protobuf-c's allocations for one record, bump-style. */
static void *
rb_unpack_alloc(void *arg, size_t size)
{
	struct rb *b = arg;
	size_t need;

	if (size == 0 || size > RB_UNPACK)
		return malloc(size == 0 ? 1 : size);
	need = (size + 15) & ~(size_t) 15;
	if (need <= RB_UNPACK - b->unpacked) {
		void *p = b->unpack + b->unpacked;
		b->unpacked += need;
		return p;
	}
	return malloc(size);
}

static void
rb_unpack_free(void *arg, void *p)
{
	struct rb *b = arg;
	uintptr_t a = (uintptr_t) p, lo = (uintptr_t) b->unpack;

	if (a < lo || a >= lo + RB_UNPACK)
		free(p);
}

/*
 * rb_serve lets Submits in every few ms while the rebuild runs: the worker
 * answers what is queued, journal only (st_worker_serve_offline), on this
 * thread, between two records. A record it appends is folded by pass 1
 * if that scan reaches it; past pass 1's last record, pass 2 skips it and
 * the record-by-record replay after the rebuild applies it.
 */
static void
rb_serve(struct rb *b, int64_t now)
{
	if (now < b->serve_at)
		return;
	b->serve_at = now + RB_SERVE_MS;
	st_worker_serve_offline(b->st);
}

/* rb_record decodes one journal record into b->unpack (NULL: corrupt). */
static Mhs__Store__V1__JournalRecord *
rb_record(struct rb *b, const void *body, size_t len)
{
	b->unpacked = 0;
	return mhs__store__v1__journal_record__unpack(&b->alloc, len, body);
}

static const char *
rb_str(const struct rb *b, size_t off)
{
	return b->arena.data + off;
}

static size_t
rb_put(struct rb *b, const void *p, size_t n)
{
	size_t off = b->arena.len;

	mhs_buf_append(&b->arena, n ? p : "", n);
	mhs_buf_append(&b->arena, "", 1); /* NUL */
	return off;
}

static int
rb_grow_table(struct rb *b)
{
	size_t cap = b->tcap ? b->tcap * 2 : 1 << 16;
	uint32_t *t = calloc(cap, sizeof(*t));

	if (t == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < b->n; i++) {
		size_t h = mhs_fnv1a(rb_str(b, b->msgs[i].id_off)) & (cap - 1);
		while (t[h] != 0)
			h = (h + 1) & (cap - 1);
		t[h] = (uint32_t) i + 1;
	}
	free(b->table);
	b->table = t;
	b->tcap = cap;
	return 0;
}

/* rb_find returns the message with this id, or NULL. */
static struct rb_msg *
rb_find(struct rb *b, const char *id)
{
	size_t h;

	if (b->tcap == 0)
		return NULL;
	for (h = mhs_fnv1a(id) & (b->tcap - 1); b->table[h] != 0;
	     h = (h + 1) & (b->tcap - 1)) {
		struct rb_msg *m = &b->msgs[b->table[h] - 1];
		if (strcmp(rb_str(b, m->id_off), id) == 0)
			return m;
	}
	return NULL;
}

static struct rb_msg *
rb_add(struct rb *b, const char *id, uint64_t seq)
{
	struct rb_msg *m;
	size_t h;

	if (b->n >= UINT32_MAX - 1) {
		b->err = MHS_ETOOBIG;
		return NULL;
	}
	if ((b->n + 1) * 2 > b->tcap && (b->err = rb_grow_table(b)) != 0)
		return NULL;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1 << 14;
		struct rb_msg *g = realloc(b->msgs, cap * sizeof(*g));
		if (g == NULL) {
			b->err = MHS_ENOMEM;
			return NULL;
		}
		b->msgs = g;
		b->cap = cap;
	}
	m = &b->msgs[b->n];
	memset(m, 0, sizeof(*m));
	m->id_off = rb_put(b, id, strlen(id));
	m->first_seq = seq;
	for (h = mhs_fnv1a(id) & (b->tcap - 1); b->table[h] != 0;
	     h = (h + 1) & (b->tcap - 1))
		;
	b->table[h] = (uint32_t) ++b->n;
	return m;
}

static void
rb_inbound(struct rb *b, const char *inbound_id, struct rb_msg *m, int64_t exp)
{
	if (b->ninb == b->capinb) {
		size_t cap = b->capinb ? b->capinb * 2 : 64;
		struct rb_inbound *g = realloc(b->inb, cap * sizeof(*g));
		if (g == NULL) {
			b->err = MHS_ENOMEM;
			return;
		}
		b->inb = g;
		b->capinb = cap;
	}
	b->inb[b->ninb].id_off = rb_put(b, inbound_id, strlen(inbound_id));
	b->inb[b->ninb].msg = (size_t) (m - b->msgs);
	b->inb[b->ninb++].expiry = exp;
}

/* ---- pass 1: fold ---- */

/* rb_fold_state applies a state record the way APPLY_LUA does. */
static void
rb_fold_state(struct rb *b, struct rb_msg *m, uint64_t seq,
    const Mhs__Store__V1__JournalRecord *r)
{
	const struct st_config *cfg = &b->st->cfg;
	int state = (int) r->state;

	m->state = (uint8_t) state;
	m->attempts = r->attempts;
	m->updated_at = r->time_ms;
	m->has_err = r->reason != NULL && r->reason[0] != '\0';
	if (m->has_err)
		m->err_off = rb_put(b, r->reason, strlen(r->reason));
	if (r->response_payload.len > 0) {
		m->resp_off = rb_put(
		    b, r->response_payload.data, r->response_payload.len);
		m->resp_len = r->response_payload.len;
		m->has_resp = true;
	}
	if (r->inbound_message_id != NULL && r->inbound_message_id[0] != '\0')
		rb_inbound(b, r->inbound_message_id, m,
		    r->time_ms + cfg->inbound_dedup_s * 1000);
	if (state == S_RETRYING) {
		m->retry_at = r->retry_at_ms;
		if (r->spine_fault) {
			m->faults++;
			m->has_faults = true;
		}
	} else if (state == S_ACCEPTED) {
		m->clock = r->time_ms; /* redelivered */
		m->faults = 0;
		m->has_faults = true;
		m->dead_seq = 0;
		m->final_exp = 0;
	} else if (state == S_FAILED || state == S_EXPIRED) {
		m->dead_seq = seq;
	}
	if (state >= S_DELIVERED)
		m->final_exp = r->time_ms + cfg->final_ttl_s * 1000;
}

static int
rb_fold_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct rb *b = arg;
	Mhs__Store__V1__JournalRecord *r;
	struct rb_msg *m;

	if ((r = rb_record(b, body, len)) == NULL) {
		mhs_error("replay_bad_record", "record %llu undecodable",
		    (unsigned long long) seq);
		return MHS_ECORRUPT;
	}
	b->records++;
	b->last_seq = seq;
	m = rb_find(b, r->message_id);
	switch (r->kind) {
	case MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED:
		if (m == NULL && r->submit != NULL &&
		    (m = rb_add(b, r->message_id, seq)) != NULL) {
			m->state = S_ACCEPTED;
			m->updated_at = m->clock = r->time_ms;
		}
		break;
	case MHS__STORE__V1__RECORD_KIND__RECORD_KIND_UNSOLICITED:
		if (m == NULL && (m = rb_add(b, r->message_id, seq)) != NULL) {
			m->state = S_FAILED;
			m->dead_seq = seq;
			m->updated_at = m->clock = r->time_ms;
			m->final_exp =
			    r->time_ms + b->st->cfg.final_ttl_s * 1000;
		}
		if (m != NULL)
			rb_inbound(b, r->message_id, m,
			    r->time_ms + b->st->cfg.inbound_dedup_s * 1000);
		break;
	default:
		if (m != NULL) /* else: never accepted here, or expired */
			rb_fold_state(b, m, seq, r);
		break;
	}
	mhs__store__v1__journal_record__free_unpacked(r, &b->alloc);
	if (b->arena.err != 0)
		b->err = b->arena.err;
	rb_serve(b, mhs_mono_ms());
	return b->err;
}

/* ---- pass 2: write ---- */

/* cmd_key adds the key "PREFIX:" kind name. */
static void
cmd_key(struct rb *b, const char *kind, const char *name)
{
	char key[400];

	snprintf(key, sizeof(key), "%s:%s%s", b->st->cfg.prefix, kind, name);
	st_argv_str(&b->v, key);
}

/* cmd_mkey adds the key of message id's hash. */
static void
cmd_mkey(struct rb *b, const char *id)
{
	char key[200];

	snprintf(key, sizeof(key), "%s:m:{%s}", b->st->cfg.prefix, id);
	st_argv_str(&b->v, key);
}

/* cmd_send queues the command built so far into the pipeline. */
static void
cmd_send(struct rb *b)
{
	int rv = st_argv_send(b->st, &b->v);

	if (rv != 0 && b->err == 0)
		b->err = rv;
	b->chunk_cmds++;
}

static void
rb_upper(char *out, size_t outlen, const char *s)
{
	size_t i = 0;

	for (; s[i] != '\0' && i + 1 < outlen; i++)
		out[i] =
		    (char) ((s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i]);
	out[i] = '\0';
}

/* rb_entries keeps the stream entry ids that a chunk's XADDs made. */
static void
rb_entries(struct rb *b, size_t slot, const redisReply *rep)
{
	for (size_t x = 0; rep->type == REDIS_REPLY_ARRAY &&
	     x < b->nxadd[slot] && b->err == 0;
	     x++) {
		const struct rb_xadd *xa = &b->xadds[slot][x];
		const redisReply *e;
		const char *id;
		size_t idlen;
		char *pair;

		if (xa->exec_index >= rep->elements ||
		    (e = rep->element[xa->exec_index])->type !=
		        REDIS_REPLY_STRING)
			continue;
		id = rb_str(b, b->msgs[xa->msg].id_off);
		idlen = strlen(id);
		if (b->nentries == b->capentries) {
			size_t cap =
			    b->capentries ? b->capentries * 2 : RB_CHUNK;
			char **g = realloc(b->entries, cap * sizeof(*g));
			if (g == NULL) {
				b->err = MHS_ENOMEM;
				return;
			}
			b->entries = g;
			b->capentries = cap;
		}
		if ((pair = malloc(idlen + e->len + 2)) == NULL) {
			b->err = MHS_ENOMEM;
			return;
		}
		memcpy(pair, id, idlen + 1);
		memcpy(pair + idlen + 1, e->str, e->len + 1);
		b->entries[b->nentries++] = pair;
	}
}

/* rb_read_chunk reads the replies of the oldest chunk in flight. */
static int
rb_read_chunk(struct rb *b)
{
	size_t slot =
	    (b->head + RB_INFLIGHT + 1 - b->inflight) % (RB_INFLIGHT + 1);
	redisReply *rep = NULL;

	/* +OK for MULTI, +QUEUED for each command, then EXEC's array. */
	for (size_t i = 0; i < b->queued[slot] + 2; i++) {
		if (redisGetReply(b->st->redis.c, (void **) &rep) != REDIS_OK)
			goto lost;
		if (rep->type == REDIS_REPLY_ERROR) {
			mhs_error("redis_error", "rebuild: %.200s", rep->str);
			b->err = MHS_EIO;
		}
		if (i == b->queued[slot] + 1 &&
		    rep->type == REDIS_REPLY_ARRAY) {
			for (size_t e = 0; e < rep->elements; e++)
				if (rep->element[e]->type ==
				    REDIS_REPLY_ERROR) {
					mhs_error("redis_error",
					    "rebuild: %.200s",
					    rep->element[e]->str);
					b->err = MHS_EIO;
					break;
				}
			rb_entries(b, slot, rep);
		}
		freeReplyObject(rep);
	}
	b->inflight--;
	return b->err;
lost:
	st_redis_drop(b->st, b->st->redis.c->errstr);
	return b->err = MHS_EUNAVAIL;
}

static void
chunk_begin(struct rb *b)
{
	size_t slot = b->head;

	b->nxadd[slot] = 0;
	b->chunk_msgs = 0;
	b->chunk_cmds = 0;
	st_argv_str(&b->v, "MULTI");
	cmd_send(b);
	b->chunk_cmds = 0;
	/* The stream entries learnt from earlier chunks. */
	for (size_t i = 0; i < b->nentries; i++) {
		const char *id = b->entries[i];
		st_argv_str(&b->v, "HSET");
		cmd_mkey(b, id);
		st_argv_str(&b->v, "entry");
		st_argv_str(&b->v, id + strlen(id) + 1);
		cmd_send(b);
		free(b->entries[i]);
	}
	b->nentries = 0;
}

static int
chunk_end(struct rb *b)
{
	b->queued[b->head] = b->chunk_cmds;
	st_argv_str(&b->v, "EXEC");
	cmd_send(b);
	return b->err;
}

/* rb_write_accepted: false when the message is final and past its
 * expiry (only its idempotency key, if still live, is written). */
static bool
rb_write_accepted(
    struct rb *b, struct rb_msg *m, const Mhs__Store__V1__JournalRecord *r)
{
	const struct st_config *cfg = &b->st->cfg;
	const Mhs__V1__SubmitRequest *s = r->submit;
	const char *id = r->message_id;
	char fp[65], idemv[160], idemk[256], nhsix[65], up[200];
	int64_t idem_exp = r->time_ms + cfg->idempotency_ttl_s * 1000;
	bool gone = m->state >= S_DELIVERED && m->final_exp <= b->now_ms;

	st_idem_key(r->client_id, s->idempotency_key, idemk, sizeof(idemk));
	if (idem_exp > b->now_ms) {
		mhs_hex(r->fingerprint.data, r->fingerprint.len == 32 ? 32 : 0,
		    fp);
		snprintf(idemv, sizeof(idemv), "%s %s %lld", id, fp,
		    (long long) r->time_ms);
		st_argv_str(&b->v, "SET");
		cmd_key(b, "idem:", idemk);
		st_argv_str(&b->v, idemv);
		st_argv_str(&b->v, "PXAT");
		st_argv_num(&b->v, idem_exp);
		st_argv_str(&b->v, "NX");
		cmd_send(b);
	}
	if (gone)
		return false; /* APPLY_LUA would write it, then delete it */
	st_nhs_index(b->st, s->nhs_number, nhsix);
	st_argv_str(&b->v, "HSET");
	cmd_mkey(b, id);
	st_argv_str(&b->v, "state");
	st_argv_num(&b->v, m->state);
	st_argv_str(&b->v, "attempts");
	st_argv_num(&b->v, m->attempts);
	st_argv_str(&b->v, "interaction");
	st_argv_str(&b->v, s->interaction_id);
	st_argv_str(&b->v, "rx");
	st_argv_str(&b->v, s->prescription_id);
	st_argv_str(&b->v, "ods");
	st_argv_str(&b->v, s->sender_ods);
	st_argv_str(&b->v, "recipient");
	st_argv_str(&b->v, s->recipient_ods);
	st_argv_str(&b->v, "ctype");
	st_argv_str(&b->v, s->content_type[0] ? s->content_type : "text/xml");
	st_argv_str(&b->v, "idem");
	st_argv_str(&b->v, s->idempotency_key);
	st_argv_str(&b->v, "accepted_at");
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, "updated_at");
	st_argv_num(&b->v, m->updated_at);
	st_argv_str(&b->v, "clock");
	st_argv_num(&b->v, m->clock);
	st_argv_str(&b->v, "nhs_ix");
	st_argv_str(&b->v, nhsix);
	st_argv_str(&b->v, "last_error");
	st_argv_str(&b->v, m->has_err ? rb_str(b, m->err_off) : "");
	if (m->has_faults) {
		st_argv_str(&b->v, "faults");
		st_argv_num(&b->v, m->faults);
	}
	if (m->has_resp) {
		st_argv_str(&b->v, "response");
		st_argv_add(&b->v, rb_str(b, m->resp_off), m->resp_len);
	}
	/* Last: Redis appends each field to the hash's listpack, and every
	 * append after a 1 KiB payload would move it. */
	st_argv_str(&b->v, "payload");
	st_argv_add(&b->v, s->payload.data, s->payload.len);
	cmd_send(b);
	rb_upper(up, sizeof(up), s->prescription_id);
	st_argv_str(&b->v, "ZADD");
	cmd_key(b, "ix:rx:", up);
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, id);
	cmd_send(b);
	rb_upper(up, sizeof(up), s->sender_ods);
	st_argv_str(&b->v, "ZADD");
	cmd_key(b, "ix:ods:", up);
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, id);
	cmd_send(b);
	st_argv_str(&b->v, "ZADD");
	cmd_key(b, "ix:nhs:", nhsix);
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, id);
	cmd_send(b);
	return true;
}

/* rb_write_place puts a written message where its state says. */
static void
rb_write_place(struct rb *b, struct rb_msg *m, size_t slot)
{
	const char *id = rb_str(b, m->id_off);

	switch (m->state) {
	case S_ACCEPTED:
		b->xadds[slot][b->nxadd[slot]].msg = (size_t) (m - b->msgs);
		b->xadds[slot][b->nxadd[slot]++].exec_index = b->chunk_cmds;
		st_argv_str(&b->v, "XADD");
		cmd_key(b, "deliver", "");
		st_argv_str(&b->v, "*");
		st_argv_str(&b->v, "id");
		st_argv_str(&b->v, id);
		cmd_send(b);
		break;
	case S_SENDING: /* may still be in flight from before: later */
	case S_RETRYING:
		st_argv_str(&b->v, "ZADD");
		cmd_key(b, "retry", "");
		st_argv_num(&b->v,
		    m->state == S_SENDING
		        ? b->now_ms + b->st->cfg.replay_redelivery_ms
		        : m->retry_at);
		st_argv_str(&b->v, id);
		cmd_send(b);
		break;
	default:
		st_argv_str(&b->v, "PEXPIREAT");
		cmd_mkey(b, id);
		st_argv_num(&b->v, m->final_exp);
		cmd_send(b);
		break;
	}
}

/* rb_write_unsolicited: false when past its expiry (nothing written). */
static bool
rb_write_unsolicited(
    struct rb *b, struct rb_msg *m, const Mhs__Store__V1__JournalRecord *r)
{
	if (m->final_exp <= b->now_ms)
		return false;
	st_argv_str(&b->v, "HSET");
	cmd_mkey(b, r->message_id);
	st_argv_str(&b->v, "state");
	st_argv_num(&b->v, m->state);
	st_argv_str(&b->v, "attempts");
	st_argv_str(&b->v, "0");
	st_argv_str(&b->v, "interaction");
	st_argv_str(&b->v, r->action);
	st_argv_str(&b->v, "rx");
	st_argv_str(&b->v, "");
	st_argv_str(&b->v, "ods");
	st_argv_str(&b->v, r->from_party);
	st_argv_str(&b->v, "recipient");
	st_argv_str(&b->v, "");
	st_argv_str(&b->v, "ctype");
	st_argv_str(&b->v, "text/xml");
	st_argv_str(&b->v, "payload");
	st_argv_str(&b->v, "");
	st_argv_str(&b->v, "idem");
	st_argv_str(&b->v, "");
	st_argv_str(&b->v, "accepted_at");
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, "updated_at");
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, "clock");
	st_argv_num(&b->v, r->time_ms);
	st_argv_str(&b->v, "last_error");
	st_argv_str(&b->v, r->reason);
	st_argv_str(&b->v, "response");
	st_argv_add(&b->v, r->response_payload.data, r->response_payload.len);
	st_argv_str(&b->v, "ref_to");
	st_argv_str(&b->v, r->ref_to_message_id);
	cmd_send(b);
	st_argv_str(&b->v, "PEXPIREAT");
	cmd_mkey(b, r->message_id);
	st_argv_num(&b->v, m->final_exp);
	cmd_send(b);
	return true;
}

static int rb_flush_chunk(struct rb *b);

static int
rb_write_one(void *arg, uint64_t seq, const void *body, size_t len)
{
	struct rb *b = arg;
	Mhs__Store__V1__JournalRecord *r;
	struct rb_msg *m;
	int64_t now;
	bool wrote;

	if (seq > b->last_seq)
		return 0; /* appended after pass 1: not while replaying */
	if ((r = rb_record(b, body, len)) == NULL)
		return MHS_ECORRUPT;
	m = rb_find(b, r->message_id);
	if (m != NULL && m->first_seq == seq) {
		if (b->chunk_msgs == 0)
			chunk_begin(b);
		if (r->kind ==
		    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_UNSOLICITED)
			wrote = rb_write_unsolicited(b, m, r);
		else if ((wrote = rb_write_accepted(b, m, r)))
			rb_write_place(b, m, b->head);
		if (wrote)
			b->written++;
		else
			b->skipped++;
		if (++b->chunk_msgs == RB_CHUNK)
			rb_flush_chunk(b);
	}
	mhs__store__v1__journal_record__free_unpacked(r, &b->alloc);
	now = mhs_mono_ms();
	rb_serve(b, now);
	if (now >= b->progress_at) {
		b->progress_at = now + 2000;
		mhs_info("replay_progress",
		    "rebuilding Redis: record %llu of %llu, %zu messages "
		    "written",
		    (unsigned long long) seq, (unsigned long long) b->last_seq,
		    b->written);
	}
	return b->err;
}

/*
 * rb_flush_chunk closes the chunk being built and, with RB_INFLIGHT
 * chunks outstanding, reads the oldest one's replies: Redis works on one
 * chunk while the next is built.
 */
static int
rb_flush_chunk(struct rb *b)
{
	if (b->chunk_msgs == 0 || chunk_end(b) != 0)
		return b->err;
	b->head = (b->head + 1) % (RB_INFLIGHT + 1);
	b->inflight++;
	b->chunk_msgs = 0;
	while (b->err == 0 && b->inflight >= RB_INFLIGHT)
		rb_read_chunk(b);
	return b->err;
}

static int
rb_drain(struct rb *b)
{
	rb_flush_chunk(b);
	while (b->err == 0 && b->inflight > 0)
		rb_read_chunk(b);
	return b->err;
}

static int
rb_cmp_dead(const void *x, const void *y)
{
	const struct rb_msg *a = *(struct rb_msg *const *) x;
	const struct rb_msg *c = *(struct rb_msg *const *) y;

	return a->dead_seq < c->dead_seq ? -1 : a->dead_seq > c->dead_seq;
}

/* rb_finish writes the dead letters, inbound keys and the entries left. */
static int
rb_finish(struct rb *b)
{
	struct rb_msg **dead = NULL;
	size_t ndead = 0;

	for (size_t i = 0; i < b->n; i++)
		if (b->msgs[i].dead_seq != 0 &&
		    b->msgs[i].final_exp > b->now_ms)
			ndead++;
	if (ndead > 0 && (dead = malloc(ndead * sizeof(*dead))) == NULL)
		return b->err = MHS_ENOMEM;
	ndead = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->msgs[i].dead_seq != 0 &&
		    b->msgs[i].final_exp > b->now_ms)
			dead[ndead++] = &b->msgs[i];
	if (ndead > 0)
		qsort(dead, ndead, sizeof(*dead), rb_cmp_dead);
	for (size_t i = 0; i < ndead && b->err == 0; i++) {
		if (b->chunk_msgs == 0)
			chunk_begin(b);
		st_argv_str(&b->v, "LPUSH");
		cmd_key(b, "dead", "");
		st_argv_str(&b->v, rb_str(b, dead[i]->id_off));
		cmd_send(b);
		if (++b->chunk_msgs == RB_CHUNK)
			rb_flush_chunk(b);
	}
	free(dead);
	for (size_t i = 0; i < b->ninb && b->err == 0; i++) {
		const struct rb_inbound *in = &b->inb[i];
		if (in->expiry <= b->now_ms)
			continue;
		if (b->chunk_msgs == 0)
			chunk_begin(b);
		st_argv_str(&b->v, "SET");
		cmd_key(b, "inbound:", rb_str(b, in->id_off));
		st_argv_str(&b->v, rb_str(b, b->msgs[in->msg].id_off));
		st_argv_str(&b->v, "PXAT");
		st_argv_num(&b->v, in->expiry);
		cmd_send(b);
		if (++b->chunk_msgs == RB_CHUNK)
			rb_flush_chunk(b);
	}
	rb_drain(b);
	if (b->err == 0 && b->nentries > 0) { /* the last chunk's entries */
		chunk_begin(b);
		b->chunk_msgs = 1;
		rb_drain(b);
	}
	return b->err;
}

static void
rb_fini(struct rb *b)
{
	mhs_buf_fini(&b->arena);
	mhs_buf_fini(&b->v.bytes);
	free(b->msgs);
	free(b->table);
	free(b->inb);
	for (size_t i = 0; i < b->nentries; i++)
		free(b->entries[i]);
	free(b->entries);
}

int
st_redis_rebuild(struct store *st, uint64_t *applied)
{
	struct rb *b = calloc(1, sizeof(*b));
	char where[300] = "";
	int64_t t0 = mhs_mono_ms(), t1;
	int rv;

	if (b == NULL)
		return MHS_ENOMEM;
	b->st = st;
	b->now_ms = mhs_now_ms();
	b->v.off = b->off;
	b->v.len = b->len;
	b->v.max = RB_MAXARGS;
	b->alloc.alloc = rb_unpack_alloc;
	b->alloc.free = rb_unpack_free;
	b->alloc.allocator_data = b;
	rv = mhs_journal_scan(
	    st->cfg.journal_dir, 0, rb_fold_one, b, where, sizeof(where));
	t1 = mhs_mono_ms();
	if (rv == 0) {
		mhs_info("replay_folded",
		    "%llu records fold into %zu messages (%lld ms); writing "
		    "them",
		    (unsigned long long) b->records, b->n,
		    (long long) (t1 - t0));
		b->progress_at = mhs_mono_ms() + 2000;
		rv = mhs_journal_scan(st->cfg.journal_dir, 0, rb_write_one, b,
		    where, sizeof(where));
	}
	if (rv == 0)
		rv = rb_finish(b);
	if (rv == 0) {
		*applied = b->last_seq;
		mhs_info("replay_rebuilt",
		    "%zu messages written, %zu past their expiry skipped, in "
		    "%lld ms",
		    b->written, b->skipped, (long long) (mhs_mono_ms() - t0));
	} else {
		mhs_error("replay_failed", "rebuild: %s %s", mhs_strerror(rv),
		    where);
	}
	rb_fini(b);
	free(b);
	return rv;
}
