/*
 * Design notes: the store's single worker thread (see store.h for the
 * batch steps). It owns the journal and the hiredis context; nothing else
 * touches them. Every op taken from the queue is answered exactly once,
 * by st_op_finish, after the batch's journal write is durable.
 *
 * A journal failure is never retried: the journal latches failed, the ops
 * of that batch are answered 14 and readiness goes false until an operator
 * restarts the store. A Redis failure after the journal write loses
 * nothing: the records are durable, and the next connection replays them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "status.h"
#include "store.h"
#include "util.h"
#include "validate.h"

/* One journal record made by this batch. */
struct st_rec {
	Mhs__Store__V1__JournalRecord r;
	struct st_op *op;
	uint8_t *packed;
	size_t len;
	uint64_t seq;
};

struct st_batch {
	struct store *st;
	struct st_rec *recs;
	size_t n, cap;
	int64_t now_ms;
	char **acks; /* lease ids this batch settles (copies) */
	size_t nacks, capacks;
};

static void
batch_ack(struct st_batch *b, const char *lease_id)
{
	if (lease_id[0] == '\0')
		return;
	if (b->nacks == b->capacks) {
		size_t cap = b->capacks ? b->capacks * 2 : 64;
		char **g = realloc(b->acks, cap * sizeof(*g));
		if (g == NULL)
			return; /* the lease expires and is settled then */
		b->acks = g;
		b->capacks = cap;
	}
	if ((b->acks[b->nacks] = strdup(lease_id)) != NULL)
		b->nacks++;
}

void
st_idem_key(const char *client, const char *key, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", client, key);
}

void
st_enqueue(struct store *st, struct st_op *op)
{
	st_enqueue_many(st, op, 1);
}

void
st_enqueue_many(struct store *st, struct st_op *ops, size_t n)
{
	int64_t now = mhs_mono_ms();

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < n; i++) {
		ops[i].next = NULL;
		ops[i].queued_ms = now;
		*st->tail = &ops[i];
		st->tail = &ops[i].next;
	}
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->lock);
}

static struct st_rec *
batch_rec(
    struct st_batch *b, struct st_op *op, const char *message_id, int kind)
{
	struct st_rec *r;

	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct st_rec *g = realloc(b->recs, cap * sizeof(*g));
		if (g == NULL)
			return NULL;
		b->recs = g;
		b->cap = cap;
	}
	r = &b->recs[b->n++];
	memset(r, 0, sizeof(*r));
	mhs__store__v1__journal_record__init(&r->r);
	r->op = op;
	r->r.node_id = b->st->cfg.node_id;
	r->r.time_ms = b->now_ms;
	r->r.kind = kind;
	r->r.message_id = (char *) message_id;
	if (op != NULL)
		op->journal = true;
	return r;
}

/* ---- reading Redis ---- */

redisReply *
st_hash_field(const redisReply *h, const char *name)
{
	if (h == NULL || h->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < h->elements; i += 2)
		if (strcmp(h->element[i]->str, name) == 0)
			return h->element[i + 1];
	return NULL;
}

static char *
hash_str(const redisReply *h, const char *name)
{
	redisReply *v = st_hash_field(h, name);
	return strdup(v != NULL && v->str != NULL ? v->str : "");
}

long long
st_hash_ll(const redisReply *h, const char *name)
{
	redisReply *v = st_hash_field(h, name);
	return v != NULL && v->str != NULL ? strtoll(v->str, NULL, 10) : 0;
}

/* st_hgetall returns the message hash, NULL when absent or on error. */
redisReply *
st_hgetall(struct store *st, const char *id)
{
	char key[256];
	const char *argv[] = {"HGETALL", key};
	redisReply *rep;

	snprintf(key, sizeof(key), "%s:m:{%s}", st->cfg.prefix, id);
	rep = st_redis_cmd(st, 2, argv, NULL);
	if (rep != NULL &&
	    (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0)) {
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

void
st_status_free(ProtobufCMessage *m)
{
	mhs__v1__message_status__free_unpacked(
	    (Mhs__V1__MessageStatus *) m, NULL);
}

/*
 * status_from_hash makes a heap MessageStatus (freed as if unpacked: every
 * string and bytes field is its own allocation).
 */
Mhs__V1__MessageStatus *
st_status_from_hash(const char *id, const redisReply *h)
{
	Mhs__V1__MessageStatus *s = malloc(sizeof(*s));
	redisReply *resp = st_hash_field(h, "response");

	if (s == NULL)
		return NULL;
	mhs__v1__message_status__init(s);
	s->message_id = strdup(id);
	s->idempotency_key = hash_str(h, "idem");
	s->interaction_id = hash_str(h, "interaction");
	s->prescription_id = hash_str(h, "rx");
	s->sender_ods = hash_str(h, "ods");
	s->last_error = hash_str(h, "last_error");
	s->state = (Mhs__V1__MessageState) st_hash_ll(h, "state");
	s->attempts = (uint32_t) st_hash_ll(h, "attempts");
	s->accepted_at_ms = st_hash_ll(h, "accepted_at");
	s->updated_at_ms = st_hash_ll(h, "updated_at");
	if (resp != NULL && resp->len > 0 &&
	    (s->response_payload.data = malloc(resp->len)) != NULL) {
		memcpy(s->response_payload.data, resp->str, resp->len);
		s->response_payload.len = resp->len;
	}
	return s;
}

static void
do_get(struct st_batch *b, struct st_op *op)
{
	const Mhs__V1__GetStatusRequest *in = (const void *) op->in;
	redisReply *h = st_hgetall(b->st, in->message_id);
	Mhs__V1__MessageStatus *s;

	if (h == NULL) {
		/* Not there: unknown, or Redis lost its data under us (then
		 * the journal is replayed and the caller retries). */
		if (b->st->redis.c != NULL && st_redis_check(b->st) == 0 &&
		    b->st->redis.c != NULL && st_redis_ok_since_check(b->st))
			st_op_fail(op, MHS_CODE_NOT_FOUND, "no such message");
		else
			st_op_fail(op, MHS_CODE_UNAVAILABLE,
			    "store rebuilding its index; retry");
		return;
	}
	if ((s = st_status_from_hash(in->message_id, h)) == NULL)
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
	op->out = &s->base;
	op->out_free = st_status_free;
	freeReplyObject(h);
}

/* ---- Append ---- */

static int
append_fingerprint(struct st_op *op)
{
	const Mhs__Store__V1__AppendRequest *in = (const void *) op->in;
	size_t len = protobuf_c_message_get_packed_size(&in->submit->base);
	uint8_t *buf = malloc(len ? len : 1);

	if (buf == NULL)
		return MHS_ENOMEM;
	protobuf_c_message_pack(&in->submit->base, buf);
	mhs_sha256(buf, len, op->fingerprint);
	free(buf);
	return 0;
}

/* append_match settles op as a repeat of an earlier message, or code 6. */
static void
append_match(
    struct st_op *op, const char *id, const uint8_t *fp, int64_t accepted_at)
{
	if (memcmp(fp, op->fingerprint, 32) != 0) {
		st_op_fail(op, MHS_CODE_ALREADY_EXISTS,
		    "idempotency_key was used before with different content");
		return;
	}
	snprintf(op->message_id, sizeof(op->message_id), "%s", id);
	op->accepted_at_ms = accepted_at;
	op->duplicate = true;
}

static void
append_match_stored(struct st_op *op, const char *val)
{
	char id[37], fphex[65];
	long long at;
	uint8_t fp[32];

	if (sscanf(val, "%36s %64s %lld", id, fphex, &at) != 3) {
		st_op_fail(op, MHS_CODE_INTERNAL, "bad idempotency record");
		return;
	}
	for (int i = 0; i < 32; i++) {
		unsigned v;
		sscanf(fphex + 2 * i, "%2x", &v);
		fp[i] = (uint8_t) v;
	}
	append_match(op, id, fp, at);
}

static void
append_scoped_key(const struct st_op *op, char *out, size_t len)
{
	const Mhs__Store__V1__AppendRequest *in = (const void *) op->in;

	st_idem_key(in->client_id, in->submit->idempotency_key, out, len);
}

/* appends_window answers repeats from the in-memory window (Redis down). */
static void
appends_window(struct st_batch *b, struct st_op **apps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct st_window_entry *e;
		char scoped[256];

		append_scoped_key(apps[i], scoped, sizeof(scoped));
		if ((e = st_window_get(&b->st->window, scoped)) != NULL)
			append_match(apps[i], e->message_id, e->fingerprint,
			    e->accepted_at_ms);
	}
}

/* appends_redis looks every Append's key up in Redis in one pipeline. */
/*
 * appends_redis looks every Append's key up in Redis in one pipeline,
 * after a check that Redis still holds this node's applied sequence: a
 * Redis emptied under us (FLUSHALL, failover) would otherwise answer "no
 * such key" for a repeat and a second message would be made. If it was
 * emptied, the connection is dropped (the next batch replays the journal)
 * and the caller falls back to the in-memory window.
 */
static int
appends_redis(struct st_batch *b, struct st_op **apps, size_t n)
{
	struct store *st = b->st;
	char key[300];
	bool lost = false;

	snprintf(key, sizeof(key), "%s:applied_seq:%s", st->cfg.prefix,
	    st->cfg.node_id);
	for (size_t i = 0; i <= n; i++) {
		char scoped[256];
		const char *argv[] = {"GET", key};

		if (i > 0) {
			append_scoped_key(apps[i - 1], scoped, sizeof(scoped));
			snprintf(key, sizeof(key), "%s:idem:%s",
			    st->cfg.prefix, scoped);
		}
		if (st->redis.c == NULL ||
		    redisAppendCommandArgv(st->redis.c, 2, argv, NULL) !=
		        REDIS_OK) {
			st_redis_drop(st, "pipeline append failed");
			return MHS_EUNAVAIL;
		}
	}
	for (size_t i = 0; i <= n; i++) {
		redisReply *rep = NULL;

		if (redisGetReply(st->redis.c, (void **) &rep) != REDIS_OK) {
			st_redis_drop(st, st->redis.c->errstr);
			return MHS_EUNAVAIL;
		}
		if (i == 0)
			lost = rep->type == REDIS_REPLY_NIL;
		else if (!lost && rep->type == REDIS_REPLY_STRING)
			append_match_stored(apps[i - 1], rep->str);
		freeReplyObject(rep);
	}
	if (lost) {
		st_redis_drop(
		    st, "Redis lost its data; replaying the journal");
		st->redis.next_attempt_ms = 0;
		return MHS_EUNAVAIL;
	}
	return 0;
}

/*
 * appends_dedup settles repeats: from Redis when it answers, else from the
 * in-memory window; then repeats inside this batch; then gives every new
 * message its id.
 */
static void
appends_dedup(struct st_batch *b, struct st_op **apps, size_t n, bool redis_up)
{
	if (!redis_up || appends_redis(b, apps, n) != 0)
		appends_window(b, apps, n);
	/* Repeats inside this batch answer with the first one's id. */
	for (size_t i = 0; i < n; i++) {
		const Mhs__Store__V1__AppendRequest *a =
		    (const void *) apps[i]->in;
		if (apps[i]->code != 0 || apps[i]->duplicate)
			continue;
		for (size_t j = 0; j < i; j++) {
			const Mhs__Store__V1__AppendRequest *p =
			    (const void *) apps[j]->in;
			if (apps[j]->code != 0 || apps[j]->duplicate ||
			    strcmp(a->client_id, p->client_id) != 0 ||
			    strcmp(a->submit->idempotency_key,
			        p->submit->idempotency_key) != 0)
				continue;
			append_match(apps[i], apps[j]->message_id,
			    apps[j]->fingerprint, apps[j]->accepted_at_ms);
			break;
		}
		if (!apps[i]->duplicate && apps[i]->code == 0 &&
		    mhs_uuid_upper(apps[i]->message_id) != 0)
			st_op_fail(
			    apps[i], MHS_CODE_INTERNAL, "no randomness");
		apps[i]->accepted_at_ms = b->now_ms;
	}
}

/* appends_remember puts the batch's new messages in the window. */
static void
appends_remember(struct st_batch *b, struct st_op **apps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char scoped[256];

		if (apps[i]->code != 0 || apps[i]->duplicate)
			continue;
		append_scoped_key(apps[i], scoped, sizeof(scoped));
		st_window_put(&b->st->window, scoped, apps[i]->message_id,
		    apps[i]->fingerprint, apps[i]->accepted_at_ms);
	}
}

static void
appends_record(struct st_batch *b, struct st_op **apps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const Mhs__Store__V1__AppendRequest *in =
		    (const void *) apps[i]->in;
		struct st_rec *r;

		if (apps[i]->code != 0 || apps[i]->duplicate)
			continue;
		r = batch_rec(b, apps[i], apps[i]->message_id,
		    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_ACCEPTED);
		if (r == NULL) {
			st_op_fail(
			    apps[i], MHS_CODE_INTERNAL, "out of memory");
			continue;
		}
		r->r.submit = in->submit;
		r->r.fingerprint.data = apps[i]->fingerprint;
		r->r.fingerprint.len = 32;
		r->r.client_id = in->client_id;
	}
}

static void
submit_response_free(ProtobufCMessage *m)
{
	Mhs__V1__SubmitResponse *r = (Mhs__V1__SubmitResponse *) m;
	free(r->message_id);
	free(r);
}

/* appends_answer fills replies (after the journal write); duplicates ask
 * Redis for the original's current state. */
static void
appends_answer(struct st_batch *b, struct st_op **apps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct st_op *op = apps[i];
		Mhs__V1__SubmitResponse *r;

		if (op->code != 0)
			continue;
		if ((r = malloc(sizeof(*r))) == NULL) {
			st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
			continue;
		}
		mhs__v1__submit_response__init(r);
		r->message_id = strdup(op->message_id);
		r->duplicate = op->duplicate;
		r->accepted_at_ms = op->accepted_at_ms;
		r->state = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_ACCEPTED;
		if (op->duplicate) {
			redisReply *h = st_hgetall(b->st, op->message_id);
			if (h != NULL)
				r->state = (Mhs__V1__MessageState) st_hash_ll(
				    h, "state");
			if (h != NULL)
				freeReplyObject(h);
			atomic_fetch_add(&b->st->stats.duplicates, 1);
		} else {
			atomic_fetch_add(&b->st->stats.appends, 1);
		}
		op->out = &r->base;
		op->out_free = submit_response_free;
	}
}

/* ---- Lease and Report ---- */

static void
lease_free(ProtobufCMessage *m)
{
	mhs__store__v1__lease_response__free_unpacked(
	    (Mhs__Store__V1__LeaseResponse *) m, NULL);
}

static bool
state_final(long long s)
{
	return s >= MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED;
}

/*
 * LEASE_LUA claims entries whose lease ran out (XAUTOCLAIM, when ARGV[5]
 * is "1"), then new ones (XREADGROUP), and returns each as {entry id,
 * message id or ""}. The messages' hashes are then read by plain pipelined
 * HMGETs of the fields a Delivery needs (lease_hashes): returned from a
 * script, every field became a Lua string and then a reply again, about 9 us
 * of Redis per message, a quarter of Redis's work per delivery. XAUTOCLAIM
 * walks the pending list from its start, every lease in flight, so it is asked
 * at most every LEASE_CLAIM_MS (leases run for seconds).
 */
#define LEASE_CLAIM_MS 500
/* Messages in one Lease; the script returns at most as many entries. */
#define LEASE_MAX 256
static const char LEASE_LUA[] =
    "local p, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local stream = p .. ':deliver'\n"
    "local entries = {}\n"
    "if ARGV[5] == '1' then\n"
    "  local c = redis.call('XAUTOCLAIM', stream, 'routers', consumer,\n"
    "    ARGV[4], '0-0', 'COUNT', count)\n"
    "  for _, e in ipairs(c[2]) do entries[#entries + 1] = e end\n"
    "end\n"
    "if #entries < count then\n"
    "  local r = redis.call('XREADGROUP', 'GROUP', 'routers', consumer,\n"
    "    'COUNT', count - #entries, 'STREAMS', stream, '>')\n"
    "  if r then\n"
    "    for _, e in ipairs(r[1][2]) do entries[#entries + 1] = e end\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for _, e in ipairs(entries) do\n"
    "  local id = ''\n"
    "  if e[2] and e[2][2] then id = e[2][2] end\n"
    "  out[#out + 1] = {e[1], id}\n"
    "end\n"
    "return out\n";

static redisReply *
lease_read(
    struct store *st, const Mhs__Store__V1__LeaseRequest *in, unsigned max)
{
	char count[16], idle[16];
	bool claim = mhs_mono_ms() - st->lease_claim_at_ms >= LEASE_CLAIM_MS;
	const char *argv[] = {"EVAL", LEASE_LUA, "0", st->cfg.prefix,
	    in->consumer, count, idle, claim ? "1" : "0"};

	if (claim)
		st->lease_claim_at_ms = mhs_mono_ms();
	snprintf(count, sizeof(count), "%u", max);
	snprintf(
	    idle, sizeof(idle), "%u", in->lease_ms ? in->lease_ms : 30000);
	return st_redis_cmd(st, 8, argv, NULL);
}

/* The fields a Delivery needs, read by HMGET in this order. */
static const char *const lease_fields[] = {"state", "payload", "interaction",
    "rx", "ods", "recipient", "ctype", "attempts", "faults", "clock",
    "accepted_at"};
enum {
	LF_STATE,
	LF_PAYLOAD,
	LF_INTERACTION,
	LF_RX,
	LF_ODS,
	LF_RECIPIENT,
	LF_CTYPE,
	LF_ATTEMPTS,
	LF_FAULTS,
	LF_CLOCK,
	LF_ACCEPTED_AT,
	LF_N
};

/* lf: field f of an HMGET of lease_fields; NULL when absent. */
static const redisReply *
lf(const redisReply *h, int f)
{
	if (h == NULL || h->type != REDIS_REPLY_ARRAY || h->elements != LF_N ||
	    h->element[f]->type != REDIS_REPLY_STRING)
		return NULL;
	return h->element[f];
}

static char *
lf_str(const redisReply *h, int f)
{
	const redisReply *v = lf(h, f);
	return strdup(v != NULL ? v->str : "");
}

static long long
lf_ll(const redisReply *h, int f)
{
	const redisReply *v = lf(h, f);
	return v != NULL ? strtoll(v->str, NULL, 10) : 0;
}

/* lease_delivery makes the Delivery of one leased message from its hash. */
static Mhs__Store__V1__Delivery *
lease_delivery(const char *id, const char *lease_id, const redisReply *h)
{
	Mhs__Store__V1__Delivery *d = malloc(sizeof(*d));
	const redisReply *p = lf(h, LF_PAYLOAD);

	if (d == NULL)
		return NULL;
	mhs__store__v1__delivery__init(d);
	d->message_id = strdup(id);
	d->lease_id = strdup(lease_id);
	d->interaction_id = lf_str(h, LF_INTERACTION);
	d->prescription_id = lf_str(h, LF_RX);
	d->sender_ods = lf_str(h, LF_ODS);
	d->recipient_ods = lf_str(h, LF_RECIPIENT);
	d->content_type = lf_str(h, LF_CTYPE);
	d->attempts = (uint32_t) lf_ll(h, LF_ATTEMPTS);
	d->spine_faults = (uint32_t) lf_ll(h, LF_FAULTS);
	/* The persist duration runs from acceptance or redelivery. */
	d->accepted_at_ms = lf_ll(h, LF_CLOCK);
	if (d->accepted_at_ms == 0)
		d->accepted_at_ms = lf_ll(h, LF_ACCEPTED_AT);
	d->payload.len = p ? p->len : 0;
	d->payload.data = malloc(d->payload.len + 1);
	if (p != NULL && d->payload.data != NULL)
		memcpy(d->payload.data, p->str, p->len);
	return d;
}

static bool
lease_entry_ok(const redisReply *e)
{
	return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
	    e->element[0]->type == REDIS_REPLY_STRING &&
	    e->element[1]->type == REDIS_REPLY_STRING;
}

/* lease_has_id: an entry naming a message (its hash is read). */
static bool
lease_has_id(const redisReply *e)
{
	return lease_entry_ok(e) && e->element[1]->len > 0;
}

/*
 * lease_hashes reads the hash of each leased message, in one pipeline:
 * h[i] for rep's entry i (NULL for an entry without a message id).
 */
static int
lease_hashes(struct store *st, const redisReply *rep, redisReply **h)
{
	char key[200];
	size_t n = 0;

	for (size_t i = 0; i < rep->elements; i++)
		h[i] = NULL;
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i];
		const char *argv[2 + LF_N] = {"HMGET", key};
		/* Fits: main.c keeps the prefix to 64 characters, and the
		 * ids are the store's own UUIDs, from its stream. */

		if (!lease_has_id(e))
			continue;
		snprintf(key, sizeof(key), "%s:m:{%s}", st->cfg.prefix,
		    e->element[1]->str);
		for (int f = 0; f < LF_N; f++)
			argv[2 + f] = lease_fields[f];
		if (redisAppendCommandArgv(
		        st->redis.c, 2 + LF_N, argv, NULL) != REDIS_OK) {
			st_redis_drop(st, st->redis.c->errstr);
			return MHS_EUNAVAIL;
		}
		n++;
	}
	for (size_t i = 0; i < rep->elements && n > 0; i++) {
		const redisReply *e = rep->element[i];

		if (!lease_has_id(e))
			continue;
		if (redisGetReply(st->redis.c, (void **) &h[i]) != REDIS_OK) {
			st_redis_drop(st, st->redis.c->errstr);
			for (size_t k = 0; k < i; k++)
				if (h[k] != NULL)
					freeReplyObject(h[k]);
			return MHS_EUNAVAIL;
		}
		n--;
	}
	return 0;
}

/*
 * lease_take turns the lease script's answer into deliveries, with a
 * SENDING record for each message still due; entries of final or
 * vanished messages are acknowledged away.
 */
static int
lease_take(struct st_batch *b, struct st_op *op,
    Mhs__Store__V1__LeaseResponse *resp, const redisReply *rep,
    redisReply *const *hashes, unsigned max)
{
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i], *h = hashes[i];
		Mhs__Store__V1__Delivery *d;
		struct st_rec *r;

		if (!lease_entry_ok(e))
			continue;
		if (lease_has_id(e) &&
		    (h == NULL || h->type != REDIS_REPLY_ARRAY ||
		        h->elements != LF_N)) {
			/* Redis refused the read (an error reply): the entry
			 * stays pending and is claimed again after the lease
			 * time. Acknowledging it would lose the message. */
			mhs_error("lease_read_failed", "%.200s",
			    h != NULL && h->type == REDIS_REPLY_ERROR
			        ? h->str
			        : "unexpected reply");
			continue;
		}
		/* No state: the message vanished (expired, or never here). */
		if (e->element[1]->len == 0 || lf(h, LF_STATE) == NULL ||
		    state_final(lf_ll(h, LF_STATE)) ||
		    resp->n_deliveries >= max) {
			if (resp->n_deliveries < max)
				batch_ack(b, e->element[0]->str);
			continue;
		}
		d = lease_delivery(e->element[1]->str, e->element[0]->str, h);
		if (d == NULL)
			continue; /* the entry stays pending: claimed later */
		resp->deliveries[resp->n_deliveries++] = d;
		r = batch_rec(b, op, d->message_id,
		    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_STATE);
		if (r == NULL)
			return MHS_ENOMEM;
		r->r.state = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_SENDING;
		r->r.attempts = d->attempts + 1;
		r->r.reason = "";
	}
	return 0;
}

static void
do_lease(struct st_batch *b, struct st_op *op)
{
	const Mhs__Store__V1__LeaseRequest *in = (const void *) op->in;
	unsigned max = in->max_messages ? in->max_messages : 16;
	Mhs__Store__V1__LeaseResponse *resp = malloc(sizeof(*resp));

	if (max > LEASE_MAX)
		max = LEASE_MAX;
	if (resp != NULL)
		mhs__store__v1__lease_response__init(resp);
	if (resp == NULL ||
	    (resp->deliveries = calloc(max, sizeof(void *))) == NULL) {
		free(resp);
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		return;
	}
	op->out = &resp->base;
	op->out_free = lease_free;
	{
		redisReply *rep = lease_read(b->st, in, max),
		           *h[LEASE_MAX * 2];
		bool shape = rep != NULL && rep->type == REDIS_REPLY_ARRAY &&
		    rep->elements <= LEASE_MAX * 2;
		size_t n = 0;

		if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
			mhs_error("lease_failed", "%.200s", rep->str);
		else if (rep != NULL && !shape)
			mhs_error("lease_failed",
			    "unexpected reply to the lease script (type %d, "
			    "%zu elements)",
			    rep->type, rep->elements);
		/* lease_hashes logs (redis_lost) when the connection drops. */
		if (!shape || lease_hashes(b->st, rep, h) != 0) {
			if (rep != NULL)
				freeReplyObject(rep);
			st_op_fail(
			    op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
			return;
		}
		n = rep->elements;
		if (lease_take(b, op, resp, rep, h, max) != 0)
			st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		for (size_t i = 0; i < n; i++)
			if (h[i] != NULL)
				freeReplyObject(h[i]);
		freeReplyObject(rep);
	}
	atomic_fetch_add(&b->st->stats.leases, resp->n_deliveries);
}

static const int outcome_state[] = {
    [MHS__STORE__V1__OUTCOME__OUTCOME_DELIVERED] =
        MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED,
    [MHS__STORE__V1__OUTCOME__OUTCOME_RETRY] =
        MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RETRYING,
    [MHS__STORE__V1__OUTCOME__OUTCOME_FAILED] =
        MHS__V1__MESSAGE_STATE__MESSAGE_STATE_FAILED,
    [MHS__STORE__V1__OUTCOME__OUTCOME_EXPIRED] =
        MHS__V1__MESSAGE_STATE__MESSAGE_STATE_EXPIRED,
    [MHS__STORE__V1__OUTCOME__OUTCOME_RESPONDED] =
        MHS__V1__MESSAGE_STATE__MESSAGE_STATE_RESPONDED,
};

static void
report_free(ProtobufCMessage *m)
{
	free(m);
}

/* inbound_seen: is this inbound Spine MessageId already stored? */
static bool
inbound_seen(struct store *st, const char *inbound_id)
{
	char key[200];
	const char *argv[] = {"EXISTS", key};
	redisReply *rep;
	bool seen;

	snprintf(
	    key, sizeof(key), "%s:inbound:%s", st->cfg.prefix, inbound_id);
	if ((rep = st_redis_cmd(st, 2, argv, NULL)) == NULL)
		return false;
	seen = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
	freeReplyObject(rep);
	return seen;
}

struct rep_info {
	bool exists;
	long long state, attempts;
};

/* reports_load reads state and attempts of n messages in one pipeline. */
static int
reports_load(struct store *st, Mhs__Store__V1__ReportRequest *const *in,
    size_t n, struct rep_info *info)
{
	char key[256];

	for (size_t i = 0; i < n; i++) {
		const char *argv[] = {"HMGET", key, "state", "attempts"};
		snprintf(key, sizeof(key), "%s:m:{%s}", st->cfg.prefix,
		    in[i]->message_id);
		if (st->redis.c == NULL ||
		    redisAppendCommandArgv(st->redis.c, 4, argv, NULL) !=
		        REDIS_OK) {
			st_redis_drop(st, "pipeline append failed");
			return MHS_EUNAVAIL;
		}
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *rep = NULL;

		if (redisGetReply(st->redis.c, (void **) &rep) != REDIS_OK) {
			st_redis_drop(st, st->redis.c->errstr);
			return MHS_EUNAVAIL;
		}
		memset(&info[i], 0, sizeof(info[i]));
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
		    rep->element[0]->type == REDIS_REPLY_STRING) {
			info[i].exists = true;
			info[i].state = atoll(rep->element[0]->str);
			if (rep->element[1]->type == REDIS_REPLY_STRING)
				info[i].attempts = atoll(rep->element[1]->str);
		}
		freeReplyObject(rep);
	}
	return 0;
}

/*
 * report_one records one delivery outcome. The first final outcome
 * stands; a response (RESPONDED) may follow DELIVERED, and one whose
 * inbound MessageId was stored before is a duplicate, not stored. Returns
 * a status code (why says what went wrong) and fills resp.
 */
static int
report_one(struct st_batch *b, struct st_op *op,
    const Mhs__Store__V1__ReportRequest *in, const struct rep_info *ri,
    Mhs__Store__V1__ReportResponse *resp, const char **why)
{
	bool responded =
	    in->outcome == MHS__STORE__V1__OUTCOME__OUTCOME_RESPONDED;
	struct st_rec *r;

	if (in->outcome < 1 || in->outcome > 5 ||
	    strlen(in->inbound_message_id) > 64) {
		*why = "outcome: unknown";
		return MHS_CODE_INVALID_ARGUMENT;
	}
	if (!ri->exists) {
		*why = "no such message";
		return MHS_CODE_NOT_FOUND;
	}
	batch_ack(b, in->lease_id);
	resp->state = (Mhs__V1__MessageState) ri->state;
	if (responded && in->inbound_message_id[0] != '\0' &&
	    inbound_seen(b->st, in->inbound_message_id)) {
		resp->duplicate = true;
		return 0;
	}
	if (state_final(ri->state) && !responded)
		return 0; /* already settled: the first outcome stands */
	r = batch_rec(b, op, in->message_id,
	    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_STATE);
	if (r == NULL) {
		*why = "out of memory";
		return MHS_CODE_INTERNAL;
	}
	r->r.state = outcome_state[in->outcome];
	r->r.attempts = (uint32_t) ri->attempts;
	r->r.reason = in->reason;
	r->r.retry_at_ms = in->retry_at_ms;
	r->r.response_payload = in->response_payload;
	r->r.spine_fault = in->spine_fault;
	r->r.inbound_message_id = in->inbound_message_id;
	resp->state = outcome_state[in->outcome];
	atomic_fetch_add(&b->st->stats.reports, 1);
	return 0;
}

static void
do_report(struct st_batch *b, struct st_op *op)
{
	Mhs__Store__V1__ReportRequest *in = (void *) op->in;
	Mhs__Store__V1__ReportResponse *resp;
	struct rep_info ri;
	const char *why = "";
	int code;

	if (reports_load(b->st, &in, 1, &ri) != 0) {
		st_op_fail(op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
		return;
	}
	if ((resp = malloc(sizeof(*resp))) == NULL) {
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		return;
	}
	mhs__store__v1__report_response__init(resp);
	op->out = &resp->base;
	op->out_free = report_free;
	if ((code = report_one(b, op, in, &ri, resp, &why)) != 0)
		st_op_fail(op, code, why);
}

static void
report_many_free(ProtobufCMessage *m)
{
	Mhs__Store__V1__ReportManyResponse *r = (void *) m;

	for (size_t i = 0; i < r->n_results; i++) {
		free(r->results[i]->response);
		free(r->results[i]);
	}
	free(r->results);
	free(r);
}

/* do_report_many records a router's outcomes in this group commit. */
static void
do_report_many(struct st_batch *b, struct st_op *op)
{
	const Mhs__Store__V1__ReportManyRequest *in = (const void *) op->in;
	Mhs__Store__V1__ReportManyResponse *resp = calloc(1, sizeof(*resp));
	struct rep_info *ri = calloc(in->n_reports + 1, sizeof(*ri));

	if (resp != NULL)
		mhs__store__v1__report_many_response__init(resp);
	if (resp == NULL || ri == NULL || in->n_reports > 4096 ||
	    (resp->results = calloc(in->n_reports + 1, sizeof(void *))) ==
	        NULL) {
		free(resp);
		free(ri);
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory or too many");
		return;
	}
	op->out = &resp->base;
	op->out_free = report_many_free;
	if (reports_load(b->st, in->reports, in->n_reports, ri) != 0) {
		free(ri);
		st_op_fail(op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
		return;
	}
	for (size_t i = 0; i < in->n_reports; i++) {
		Mhs__Store__V1__ReportResult *res = malloc(sizeof(*res));
		Mhs__Store__V1__ReportResponse *rr = malloc(sizeof(*rr));
		const char *why = "";

		if (res == NULL || rr == NULL) {
			free(res);
			free(rr);
			break;
		}
		mhs__store__v1__report_result__init(res);
		mhs__store__v1__report_response__init(rr);
		res->response = rr;
		res->code =
		    report_one(b, op, in->reports[i], &ri[i], rr, &why);
		res->message = (char *) why; /* static text, not freed */
		resp->results[resp->n_results++] = res;
	}
	free(ri);
}

static void
unsolicited_free(ProtobufCMessage *m)
{
	free(m);
}

/* do_unsolicited journals and dead-letters an unmatched inbound message. */
static void
do_unsolicited(struct st_batch *b, struct st_op *op)
{
	const Mhs__Store__V1__UnsolicitedRequest *in = (const void *) op->in;
	Mhs__Store__V1__UnsolicitedResponse *resp;
	struct st_rec *r;

	if (in->inbound_message_id[0] == '\0' ||
	    strlen(in->inbound_message_id) > 64) {
		st_op_fail(op, MHS_CODE_INVALID_ARGUMENT,
		    "inbound_message_id: required, at most 64 characters");
		return;
	}
	if ((resp = malloc(sizeof(*resp))) == NULL) {
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		return;
	}
	mhs__store__v1__unsolicited_response__init(resp);
	op->out = &resp->base;
	op->out_free = unsolicited_free;
	if ((resp->duplicate = inbound_seen(b->st, in->inbound_message_id)))
		return;
	r = batch_rec(b, op, in->inbound_message_id,
	    MHS__STORE__V1__RECORD_KIND__RECORD_KIND_UNSOLICITED);
	if (r == NULL) {
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		return;
	}
	r->r.reason = in->reason;
	r->r.response_payload = in->payload;
	r->r.inbound_message_id = in->inbound_message_id;
	r->r.ref_to_message_id = in->ref_to_message_id;
	r->r.action = in->action;
	r->r.from_party = in->from_party;
	mhs_warn("inbound_unsolicited", "inbound %s dead-lettered: %s",
	    in->inbound_message_id, in->reason);
}

/* ---- Redeliver ---- */

static void
redeliver_free(ProtobufCMessage *m)
{
	mhs__v1__redeliver_response__free_unpacked(
	    (Mhs__V1__RedeliverResponse *) m, NULL);
}

/* redeliver_one requeues one dead-lettered message; returns a code. */
static int
redeliver_one(
    struct st_batch *b, struct st_op *op, const char *id, const char **why)
{
	redisReply *h;
	long long state;
	struct st_rec *r;

	if (!mhs_message_id_check(id)) {
		*why = "not a message_id (upper-case UUID)";
		return MHS_CODE_INVALID_ARGUMENT;
	}
	if ((h = st_hgetall(b->st, id)) == NULL) {
		*why = "no such message (or expired from Redis)";
		return MHS_CODE_NOT_FOUND;
	}
	state = st_hash_ll(h, "state");
	if (st_hash_field(h, "ref_to") != NULL) {
		freeReplyObject(h);
		*why = "an unsolicited inbound message from Spine: nothing of "
		       "ours to send";
		return MHS_CODE_FAILED_PRECONDITION;
	}
	freeReplyObject(h);
	if (state != MHS__V1__MESSAGE_STATE__MESSAGE_STATE_FAILED &&
	    state != MHS__V1__MESSAGE_STATE__MESSAGE_STATE_EXPIRED) {
		*why = "not dead-lettered (only FAILED or EXPIRED messages)";
		return MHS_CODE_FAILED_PRECONDITION;
	}
	r = batch_rec(
	    b, op, id, MHS__STORE__V1__RECORD_KIND__RECORD_KIND_STATE);
	if (r == NULL) {
		*why = "out of memory";
		return MHS_CODE_INTERNAL;
	}
	r->r.state = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_ACCEPTED;
	r->r.attempts = 0;
	r->r.reason = "redelivered by an operator";
	*why = "requeued";
	return MHS_CODE_OK;
}

static void
do_redeliver(struct st_batch *b, struct st_op *op)
{
	const Mhs__V1__RedeliverRequest *in = (const void *) op->in;
	Mhs__V1__RedeliverResponse *resp;

	if (in->n_message_ids == 0 || in->n_message_ids > 1000) {
		st_op_fail(op, MHS_CODE_INVALID_ARGUMENT,
		    "message_ids: give 1 to 1000");
		return;
	}
	if ((resp = malloc(sizeof(*resp))) != NULL)
		mhs__v1__redeliver_response__init(resp);
	if (resp == NULL ||
	    (resp->results = calloc(in->n_message_ids, sizeof(void *))) ==
	        NULL) {
		free(resp);
		st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		return;
	}
	op->out = &resp->base;
	op->out_free = redeliver_free;
	for (size_t i = 0; i < in->n_message_ids; i++) {
		Mhs__V1__RedeliverResult *res = malloc(sizeof(*res));
		const char *why = "";

		if (res == NULL)
			break;
		mhs__v1__redeliver_result__init(res);
		res->code = redeliver_one(b, op, in->message_ids[i], &why);
		res->message_id = strdup(in->message_ids[i]);
		res->message = strdup(why);
		resp->results[resp->n_results++] = res;
	}
}

/* ---- the batch ---- */

void
st_op_fail(struct st_op *op, int code, const char *msg)
{
	op->code = code;
	snprintf(op->message, sizeof(op->message), "%s", msg);
}

static int
batch_journal(struct st_batch *b)
{
	struct mhs_journal_entry *e;
	uint64_t first = 0;
	int rv = 0;

	if (b->n == 0)
		return 0;
	if ((e = calloc(b->n, sizeof(*e))) == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < b->n && rv == 0; i++) {
		struct st_rec *r = &b->recs[i];
		r->len = protobuf_c_message_get_packed_size(&r->r.base);
		if ((r->packed = malloc(r->len ? r->len : 1)) == NULL) {
			rv = MHS_ENOMEM;
			break;
		}
		protobuf_c_message_pack(&r->r.base, r->packed);
		e[i].body = r->packed;
		e[i].len = r->len;
		e[i].time_ms = r->r.time_ms;
		atomic_fetch_add(&b->st->stats.journal_bytes, r->len);
	}
	if (rv == 0) {
		int64_t t0 = mhs_mono_us();
		rv = mhs_journal_append(b->st->journal, e, b->n, &first);
		atomic_fetch_add(&b->st->stats.fsync_us_sum,
		    (unsigned long long) (mhs_mono_us() - t0));
	}
	for (size_t i = 0; rv == 0 && i < b->n; i++)
		b->recs[i].seq = first + i;
	free(e);
	return rv;
}

/*
 * batch_apply queues the batch's records for Redis in EVALSHA calls of up
 * to ST_APPLY_MAX records, then the XACKs of settled leases, all in one
 * pipeline (arguments are copied: the ops may be answered and freed
 * before batch_apply_wait reads the replies). Returns the number of
 * replies to wait for.
 */
static size_t
batch_apply(struct st_batch *b)
{
	struct st_apply *a = &b->st->apply;
	char stream[128];
	size_t acks = 0;
	int rv = 0;

	a->calls = 0;
	for (size_t i = 0; i < b->n && rv == 0; i++)
		rv = st_apply_add(b->st, a, b->recs[i].seq, &b->recs[i].r);
	if (rv == 0)
		rv = st_apply_flush(b->st, a);
	snprintf(stream, sizeof(stream), "%s:deliver", b->st->cfg.prefix);
	for (size_t i = 0; i < b->nacks && rv == 0; i++) {
		const char *argv[4] = {"XACK", stream, "routers", b->acks[i]};

		if (redisAppendCommandArgv(b->st->redis.c, 4, argv, NULL) !=
		    REDIS_OK) {
			st_redis_drop(b->st, "pipeline append failed");
			rv = MHS_EUNAVAIL;
		}
		acks++;
	}
	if (rv != 0) {
		mhs_buf_reset(&a->v.bytes);
		a->v.n = a->nrecs = 0;
		return 0; /* the records are durable: replay applies them */
	}
	return a->calls + acks;
}

/* batch_apply_wait reads the replies of what batch_apply queued. */
static void
batch_apply_wait(struct st_batch *b, size_t pending)
{
	if (pending > 0 && st_redis_drain(b->st, pending) == 0 && b->n > 0)
		b->st->redis.applied_seq = b->recs[b->n - 1].seq;
}

static void
batch_read(
    struct st_batch *b, struct st_op *ops, struct st_op **apps, size_t *napps)
{
	for (struct st_op *op = ops; op != NULL; op = op->next) {
		switch (op->kind) {
		case ST_APPEND:
			if (append_fingerprint(op) != 0)
				st_op_fail(
				    op, MHS_CODE_INTERNAL, "out of memory");
			else
				apps[(*napps)++] = op;
			break;
		case ST_GET:
			do_get(b, op);
			break;
		case ST_LEASE:
			do_lease(b, op);
			break;
		case ST_REPORT:
			do_report(b, op);
			break;
		case ST_SEARCH:
			st_do_search(b->st, op);
			break;
		case ST_DEAD_LETTERS:
			st_do_dead_letters(b->st, op);
			break;
		case ST_REDELIVER:
			do_redeliver(b, op);
			break;
		case ST_UNSOLICITED:
			do_unsolicited(b, op);
			break;
		case ST_REPORT_MANY:
			do_report_many(b, op);
			break;
		}
	}
}

/* st_backlog: journal records not yet applied to Redis. */
static uint64_t
st_backlog(const struct store *st)
{
	uint64_t last = mhs_journal_last_seq(st->journal);
	uint64_t base = st->redis.applied_seq;

	/* While rebuilding, what the rebuild writes is not a backlog. */
	if (atomic_load(&st->rebuilding) && st->rebuild_from > base)
		base = st->rebuild_from;
	return last > base ? last - base : 0;
}

/* batch_without_redis answers every op that needs Redis while it is down. */
static void
batch_without_redis(
    struct st_batch *b, struct st_op *ops, struct st_op **apps, size_t *napps)
{
	struct store *st = b->st;
	uint64_t backlog = st_backlog(st);

	for (struct st_op *op = ops; op != NULL; op = op->next) {
		if (op->kind != ST_APPEND)
			st_op_fail(
			    op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
		else if (backlog >= (uint64_t) st->cfg.max_backlog)
			st_op_fail(op, MHS_CODE_UNAVAILABLE,
			    "Redis unavailable and the journal-only backlog "
			    "is "
			    "full");
		else if (append_fingerprint(op) != 0)
			st_op_fail(op, MHS_CODE_INTERNAL, "out of memory");
		else
			apps[(*napps)++] = op;
	}
}

static void
batch_journal_failed(struct st_batch *b, int rv)
{
	mhs_error("journal_failed",
	    "append failed, the store stops accepting until restarted: %s",
	    mhs_strerror(rv));
	atomic_store(&b->st->journal_ok, false);
	for (size_t i = 0; i < b->n; i++)
		if (b->recs[i].op != NULL)
			st_op_fail(b->recs[i].op, MHS_CODE_UNAVAILABLE,
			    "journal write failed");
}

/*
 * worker_batch runs one group commit (see store.h). While Redis is down,
 * Submits are still made durable (journal only, repeats caught by the
 * window) and everything else answers 14; the journal records reach Redis
 * by replay when it returns.
 */
static void
worker_batch(struct store *st, struct st_op *ops, size_t nops)
{
	struct st_batch b = {.st = st, .now_ms = mhs_now_ms()};
	struct st_op **apps = calloc(nops, sizeof(*apps)), *next;
	size_t napps = 0, pending = 0;
	bool redis_up;
	int64_t t0;
	int rv;

	if (apps == NULL || mhs_journal_failed(st->journal) != 0) {
		for (struct st_op *op = ops; op != NULL; op = op->next)
			st_op_fail(op, MHS_CODE_UNAVAILABLE,
			    apps == NULL
			        ? "out of memory"
			        : "journal failed: store not accepting");
		goto answer;
	}
	/* Inside a rebuild (st_worker_serve_offline) the connection is the
	 * rebuild's, mid-pipeline: not a word to Redis. */
	redis_up = !atomic_load(&st->rebuilding) && st_redis_ensure(st) == 0;
	t0 = mhs_mono_us();
	if (redis_up)
		batch_read(&b, ops, apps, &napps);
	else
		batch_without_redis(&b, ops, apps, &napps);
	if (napps > 0)
		appends_dedup(
		    &b, apps, napps, redis_up && st->redis.c != NULL);
	atomic_fetch_add(
	    &st->stats.read_us_sum, (unsigned long long) (mhs_mono_us() - t0));
	appends_record(&b, apps, napps);
	if ((rv = batch_journal(&b)) != 0)
		batch_journal_failed(&b, rv);
	else
		appends_remember(&b, apps, napps);
	appends_answer(&b, apps, napps);
	/* Durable now: queue the Redis writes (copied), answer every op, and
	 * only then wait for Redis, so no caller waits for Redis's round trip
	 * (a later batch reads Redis only after this one's writes). */
	if (rv == 0 && redis_up && st->redis.c != NULL)
		pending = batch_apply(&b);
	else if (rv == 0)
		atomic_fetch_add(&st->stats.journal_only_appends, b.n);
	atomic_fetch_add(&st->stats.batches, 1);
	atomic_fetch_add(&st->stats.batch_ops, nops);
answer:
	/* Once answered, an op belongs to its context again: nothing of the
	 * batch may point into it (record fields do; they are not read). */
	for (size_t i = 0; i < b.n; i++)
		b.recs[i].op = NULL;
	for (struct st_op *op = ops; op != NULL; op = next) {
		next = op->next;
		st_op_finish(op);
	}
	t0 = mhs_mono_us();
	batch_apply_wait(&b, pending);
	atomic_fetch_add(&st->stats.apply_wait_us_sum,
	    (unsigned long long) (mhs_mono_us() - t0));
	for (size_t i = 0; i < b.n; i++)
		free(b.recs[i].packed);
	free(b.recs);
	for (size_t i = 0; i < b.nacks; i++)
		free(b.acks[i]);
	free(b.acks);
	free(apps);
}

static void worker_health(struct store *st);
static size_t ops_count(const struct st_op *ops);

/* queue_take takes up to max_batch ops off the queue (st->lock held). */
static struct st_op *
queue_take(struct store *st)
{
	struct st_op *ops = st->head, **pp = &st->head;
	size_t n = 0;

	while (*pp != NULL && n < (size_t) st->cfg.max_batch) {
		pp = &(*pp)->next;
		n++;
	}
	st->head = *pp;
	*pp = NULL;
	if (st->head == NULL)
		st->tail = &st->head;
	return ops;
}

void
st_worker_serve_offline(struct store *st)
{
	struct st_op *ops;
	size_t n;

	pthread_mutex_lock(&st->lock);
	ops = queue_take(st);
	pthread_mutex_unlock(&st->lock);
	if ((n = ops_count(ops)) > 0)
		worker_batch(st, ops, n);
	worker_health(st);
}

/* worker_health refreshes what readiness reads (store.h). */
static void
worker_health(struct store *st)
{
	uint64_t backlog = st_backlog(st);

	atomic_store(&st->stats.backlog, backlog);
	atomic_store(
	    &st->backlog_ok, backlog < (uint64_t) st->cfg.max_backlog);
}

/*
 * PROMOTE_LUA moves due retries back onto the delivery stream, atomically
 * (two stores sharing a prefix never both move one message) and only for
 * messages not yet final.
 */
static const char PROMOTE_LUA[] =
    "local p = ARGV[1]\n"
    "local ids = redis.call('ZRANGEBYSCORE', p .. ':retry', '-inf',\n"
    "  ARGV[2], 'LIMIT', 0, 256)\n"
    "for _, id in ipairs(ids) do\n"
    "  redis.call('ZREM', p .. ':retry', id)\n"
    "  local mk = p .. ':m:{' .. id .. '}'\n"
    "  local st = tonumber(redis.call('HGET', mk, 'state') or '0')\n"
    "  if st >= 1 and st <= 3 then\n"
    "    redis.call('HSET', mk, 'entry',\n"
    "      redis.call('XADD', p .. ':deliver', '*', 'id', id))\n"
    "  end\n"
    "end\n"
    "return #ids\n";

/* Moves retries that are due back onto the delivery stream. */
static void
worker_promote_retries(struct store *st)
{
	char now[24];
	const char *argv[] = {"EVAL", PROMOTE_LUA, "0", st->cfg.prefix, now};
	redisReply *rep;

	snprintf(now, sizeof(now), "%lld", (long long) mhs_now_ms());
	if ((rep = st_redis_cmd(st, 5, argv, NULL)) != NULL)
		freeReplyObject(rep);
}

/*
 * Acceptance first. A partner waits on every Submit; a router's Lease only
 * feeds deliveries that wait in the durable queue anyway, and a Lease
 * costs its batch a Redis script over every message it hands out. So a
 * Lease that lands in a batch with Submits is held back (st->deferred,
 * worker only) and runs in the first batch formed after LEASE_IDLE_MS
 * without a Submit, or with them once it has waited lease_defer_ms. At
 * light load that is a wait of about LEASE_IDLE_MS; while Submits keep
 * the worker busy, each Lease waits lease_defer_ms, which paces the
 * routers until the burst is over.
 */
#define LEASE_IDLE_MS 5

static bool
ops_have_append(const struct st_op *ops)
{
	for (; ops != NULL; ops = ops->next)
		if (ops->kind == ST_APPEND)
			return true;
	return false;
}

/* worker_defer moves ops' young Leases to st->deferred when busy; due
 * (or all, when not busy) deferred Leases join ops. Returns ops. */
static struct st_op *
worker_defer(struct store *st, struct st_op *ops, bool busy)
{
	int64_t now = mhs_mono_ms();
	struct st_op *kept = NULL, **kt = &kept, *next, *due = NULL,
	             **dt = &due, **pp;

	for (struct st_op *op = ops; op != NULL; op = next) {
		next = op->next;
		op->next = NULL;
		if (busy && op->kind == ST_LEASE &&
		    now - op->queued_ms < st->cfg.lease_defer_ms) {
			*st->deferred_tail = op;
			st->deferred_tail = &op->next;
			atomic_fetch_add(&st->stats.leases_deferred, 1);
		} else {
			*kt = op;
			kt = &op->next;
		}
	}
	for (pp = &st->deferred; *pp != NULL;) {
		struct st_op *op = *pp;

		if (!busy || now - op->queued_ms >= st->cfg.lease_defer_ms) {
			*pp = op->next;
			op->next = NULL;
			*dt = op;
			dt = &op->next;
		} else {
			pp = &op->next;
		}
	}
	st->deferred_tail = pp;
	*dt = kept; /* due Leases first: they waited longest */
	return due;
}

static size_t
ops_count(const struct st_op *ops)
{
	size_t n = 0;

	for (; ops != NULL; ops = ops->next)
		n++;
	return n;
}

static void *
worker_main(void *arg)
{
	struct store *st = arg;
	int64_t last_tick = 0;

	pthread_mutex_lock(&st->lock);
	while (!st->stop) {
		struct st_op *ops;
		size_t n;
		bool busy;

		/* Nothing queued: wait for work. With Leases held back, wait
		 * only LEASE_IDLE_MS: the gap between two of the gateway's
		 * calls is no lull, and Leases run in the next batch only if
		 * no Submit arrived meanwhile. */
		if (st->head == NULL) {
			struct timespec ts;
			long ms = st->deferred != NULL ? LEASE_IDLE_MS : 100;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += ms * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&st->cv, &st->lock, &ts);
		}
		ops = queue_take(st);
		/* Busy: Submits are waiting for this very batch. */
		busy = st->cfg.lease_defer_ms > 0 && ops_have_append(ops);
		pthread_mutex_unlock(&st->lock);
		if (st->deferred != NULL || busy)
			ops = worker_defer(st, ops, busy);
		if ((n = ops_count(ops)) > 0)
			worker_batch(st, ops, n);
		if (mhs_mono_ms() - last_tick >= 100) {
			last_tick = mhs_mono_ms();
			if (st_redis_ensure(st) == 0 &&
			    st_redis_check(st) == 0)
				worker_promote_retries(st);
			worker_health(st);
			st_retention_tick(st, false);
		}
		pthread_mutex_lock(&st->lock);
	}
	/* Held-back Leases go back to the queue: st_queue_release frees
	 * what is left there once the worker has stopped. */
	if (st->deferred != NULL) {
		*st->deferred_tail = st->head;
		if (st->head == NULL)
			st->tail = st->deferred_tail;
		st->head = st->deferred;
		st->deferred = NULL;
		st->deferred_tail = &st->deferred;
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

int
st_worker_start(struct store *st)
{
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cv, NULL);
	st->head = NULL;
	st->tail = &st->head;
	st->deferred = NULL;
	st->deferred_tail = &st->deferred;
	return pthread_create(&st->worker, NULL, worker_main, st) == 0
	    ? 0
	    : MHS_ENOMEM;
}

void
st_worker_stop(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	st->stop = true;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->lock);
	pthread_join(st->worker, NULL);
}
