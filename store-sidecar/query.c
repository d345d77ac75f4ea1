/*
 * Design notes: the store's read-only queries, run on the worker thread
 * (the only owner of the hiredis context): Search over the time-ordered
 * indexes, and the dead-letter list. Pages are offsets into the index or
 * list, carried as a decimal page_token; a page may hold fewer matches
 * than page_size when filters drop some (the next token still advances),
 * and an empty next_page_token means the end. Entries whose message has
 * expired from Redis are skipped (the journal still has them).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "store.h"
#include "util.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX     1000

static bool
page_parse(
    const char *token, unsigned req_size, long long *offset, unsigned *size)
{
	char *end;

	*size = req_size == 0 ? PAGE_DEFAULT : req_size;
	if (*size > PAGE_MAX)
		*size = PAGE_MAX;
	*offset = 0;
	if (token == NULL || token[0] == '\0')
		return true;
	*offset = strtoll(token, &end, 10);
	return *end == '\0' && *offset >= 0 &&
	    isdigit((unsigned char) token[0]);
}

static void
upper(char *dst, size_t len, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < len && src[i] != '\0'; i++)
		dst[i] = (char) toupper((unsigned char) src[i]);
	dst[i] = '\0';
}

/* search_index picks the most selective index the request names. */
static void
search_index(struct store *st, const Mhs__V1__SearchRequest *in, char *key,
    size_t len, char *nhsix)
{
	char up[64];

	nhsix[0] = '\0';
	if (in->nhs_number[0] != '\0')
		st_nhs_index(st, in->nhs_number, nhsix);
	if (in->prescription_id[0] != '\0') {
		upper(up, sizeof(up), in->prescription_id);
		snprintf(key, len, "%s:ix:rx:%s", st->cfg.prefix, up);
	} else if (nhsix[0] != '\0') {
		snprintf(key, len, "%s:ix:nhs:%s", st->cfg.prefix, nhsix);
	} else {
		upper(up, sizeof(up), in->sender_ods);
		snprintf(key, len, "%s:ix:ods:%s", st->cfg.prefix, up);
	}
}

static bool
field_is(const redisReply *h, const char *name, const char *want)
{
	redisReply *v = st_hash_field(h, name);

	return v != NULL && v->str != NULL && strcasecmp(v->str, want) == 0;
}

static bool
search_match(
    const Mhs__V1__SearchRequest *in, const redisReply *h, const char *nhsix)
{
	if (in->state != 0 && st_hash_ll(h, "state") != in->state)
		return false;
	if (in->prescription_id[0] != '\0' &&
	    !field_is(h, "rx", in->prescription_id))
		return false;
	if (in->sender_ods[0] != '\0' && !field_is(h, "ods", in->sender_ods))
		return false;
	return nhsix[0] == '\0' || field_is(h, "nhs_ix", nhsix);
}

static void
search_free(ProtobufCMessage *m)
{
	mhs__v1__search_response__free_unpacked(
	    (Mhs__V1__SearchResponse *) m, NULL);
}

static char *
next_token(long long offset, size_t fetched, unsigned size)
{
	char buf[24] = "";

	if (fetched == size)
		snprintf(
		    buf, sizeof(buf), "%lld", offset + (long long) fetched);
	return strdup(buf);
}

void
st_do_search(struct store *st, struct st_op *op)
{
	const Mhs__V1__SearchRequest *in = (const void *) op->in;
	char key[300], nhsix[65], hi[24] = "+inf", lo[24] = "-inf", off[24],
	                          cnt[16];
	const char *argv[] = {
	    "ZREVRANGEBYSCORE", key, hi, lo, "LIMIT", off, cnt};
	Mhs__V1__SearchResponse *resp;
	long long offset;
	unsigned size;
	redisReply *ids;

	if (!page_parse(in->page_token, in->page_size, &offset, &size)) {
		st_op_fail(
		    op, MHS_CODE_INVALID_ARGUMENT, "page_token: invalid");
		return;
	}
	search_index(st, in, key, sizeof(key), nhsix);
	if (in->until_ms > 0)
		snprintf(hi, sizeof(hi), "%lld", (long long) in->until_ms);
	if (in->since_ms > 0)
		snprintf(lo, sizeof(lo), "%lld", (long long) in->since_ms);
	snprintf(off, sizeof(off), "%lld", offset);
	snprintf(cnt, sizeof(cnt), "%u", size);
	if ((ids = st_redis_cmd(st, 7, argv, NULL)) == NULL) {
		st_op_fail(op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
		return;
	}
	resp = malloc(sizeof(*resp));
	if (resp != NULL)
		mhs__v1__search_response__init(resp);
	if (resp == NULL || ids->type != REDIS_REPLY_ARRAY ||
	    (resp->messages = calloc(ids->elements + 1, sizeof(void *))) ==
	        NULL) {
		free(resp);
		freeReplyObject(ids);
		st_op_fail(op, MHS_CODE_INTERNAL, "search failed");
		return;
	}
	for (size_t i = 0; i < ids->elements; i++) {
		redisReply *h = st_hgetall(st, ids->element[i]->str);
		Mhs__V1__MessageStatus *m;

		if (h == NULL)
			continue;
		if (search_match(in, h, nhsix) &&
		    (m = st_status_from_hash(ids->element[i]->str, h)) != NULL)
			resp->messages[resp->n_messages++] = m;
		freeReplyObject(h);
	}
	resp->next_page_token = next_token(offset, ids->elements, size);
	freeReplyObject(ids);
	op->out = &resp->base;
	op->out_free = search_free;
}

static void
dead_free(ProtobufCMessage *m)
{
	mhs__v1__list_dead_letters_response__free_unpacked(
	    (Mhs__V1__ListDeadLettersResponse *) m, NULL);
}

static Mhs__V1__DeadLetter *
dead_letter(const char *id, const redisReply *h)
{
	Mhs__V1__DeadLetter *d = malloc(sizeof(*d));
	redisReply *why = st_hash_field(h, "last_error");

	if (d == NULL)
		return NULL;
	mhs__v1__dead_letter__init(d);
	d->status = st_status_from_hash(id, h);
	d->reason = strdup(why != NULL && why->str != NULL ? why->str : "");
	d->dead_lettered_at_ms = st_hash_ll(h, "updated_at");
	return d;
}

void
st_do_dead_letters(struct store *st, struct st_op *op)
{
	const Mhs__V1__ListDeadLettersRequest *in = (const void *) op->in;
	char key[256], from[24], to[24];
	const char *argv[] = {"LRANGE", key, from, to};
	Mhs__V1__ListDeadLettersResponse *resp;
	long long offset;
	unsigned size;
	redisReply *ids;

	if (!page_parse(in->page_token, in->page_size, &offset, &size)) {
		st_op_fail(
		    op, MHS_CODE_INVALID_ARGUMENT, "page_token: invalid");
		return;
	}
	snprintf(key, sizeof(key), "%s:dead", st->cfg.prefix);
	snprintf(from, sizeof(from), "%lld", offset);
	snprintf(to, sizeof(to), "%lld", offset + size - 1);
	if ((ids = st_redis_cmd(st, 4, argv, NULL)) == NULL) {
		st_op_fail(op, MHS_CODE_UNAVAILABLE, "Redis unavailable");
		return;
	}
	resp = malloc(sizeof(*resp));
	if (resp != NULL)
		mhs__v1__list_dead_letters_response__init(resp);
	if (resp == NULL || ids->type != REDIS_REPLY_ARRAY ||
	    (resp->dead_letters = calloc(ids->elements + 1, sizeof(void *))) ==
	        NULL) {
		free(resp);
		freeReplyObject(ids);
		st_op_fail(op, MHS_CODE_INTERNAL, "listing failed");
		return;
	}
	for (size_t i = 0; i < ids->elements; i++) {
		redisReply *h = st_hgetall(st, ids->element[i]->str);
		Mhs__V1__DeadLetter *d;

		if (h == NULL)
			continue; /* expired from Redis; the journal keeps it
			           */
		if ((d = dead_letter(ids->element[i]->str, h)) != NULL)
			resp->dead_letters[resp->n_dead_letters++] = d;
		freeReplyObject(h);
	}
	resp->next_page_token = next_token(offset, ids->elements, size);
	freeReplyObject(ids);
	op->out = &resp->base;
	op->out_free = dead_free;
}
