/*
 * Design notes: the store's nng side. N REP contexts on the ipc:// URL
 * that the node's gateway and routers dial. A context decodes one request
 * into an st_op and queues it for the worker (never blocking: the worker
 * answers through st_op_finish, which only starts an nng send). Ready is
 * answered at once from atomics, so readiness polls never wait behind a
 * group commit.
 *
 * AppendMany becomes a group: one ST_APPEND op per Submit, queued
 * together, each settled by the worker exactly as a lone Append is (same
 * checks, same group commit); the worker finishing the last one sends the
 * one reply with every result in order. The group owns the decoded
 * request, and the ops only borrow their part of it.
 *
 * Locking: a context is touched by its callback or, while its op is
 * queued, by the worker alone: never both.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "spfix.h"
#include "status.h"
#include "store.h"

enum st_ctx_state { ST_CTX_RECV, ST_CTX_WAIT, ST_CTX_SEND };

struct st_ctx {
	struct store *st;
	enum st_ctx_state state;
	nng_ctx ctx;
	nng_aio *aio;
	struct st_op op; /* one op per context: no allocation per request */
};

struct st_binding {
	enum st_kind kind;
	bool ready; /* answered at once, not queued */
};

static const struct st_binding bind_append = {ST_APPEND, false};
static const struct st_binding bind_get = {ST_GET, false};
static const struct st_binding bind_search = {ST_SEARCH, false};
static const struct st_binding bind_lease = {ST_LEASE, false};
static const struct st_binding bind_report = {ST_REPORT, false};
static const struct st_binding bind_dead = {ST_DEAD_LETTERS, false};
static const struct st_binding bind_redeliver = {ST_REDELIVER, false};
static const struct st_binding bind_unsolicited = {ST_UNSOLICITED, false};
static const struct st_binding bind_report_many = {ST_REPORT_MANY, false};
static const struct st_binding bind_ready = {0, true};
/* kind is unused: an AppendMany is queued as one ST_APPEND per Submit. */
static const struct st_binding bind_append_many = {ST_APPEND, false};

#define ST_GROUP_MAX 1024 /* Submits in one AppendMany */

struct st_group {
	struct st_ctx *ctx;
	Mhs__Store__V1__AppendManyRequest *req;
	size_t n, pending; /* pending: worker thread only */
	struct st_op ops[];
};

/* st_reply encodes a reply; NULL only when even an empty one cannot be
 * had (then the context just receives again). */
static nng_msg *
st_reply(int code, const char *message, const ProtobufCMessage *payload)
{
	nng_msg *msg;

	if (mhs_rpc_response_msg(&msg, code, message, payload, NULL, 0) != 0 &&
	    nng_msg_alloc(&msg, 0) != 0)
		return NULL;
	return msg;
}

static void
st_send_msg(struct st_ctx *c, nng_msg *msg)
{
	if (msg == NULL) {
		c->state = ST_CTX_RECV;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	c->state = ST_CTX_SEND;
	nng_aio_set_msg(c->aio, msg);
	nng_ctx_send(c->ctx, c->aio);
}

static void
st_send(struct st_ctx *c, int code, const char *message,
    const ProtobufCMessage *payload)
{
	st_send_msg(c, st_reply(code, message, payload));
}

/* group_free frees a group, its ops' replies and the request. */
static void
group_free(struct st_group *g)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->ops[i].out != NULL && g->ops[i].out_free != NULL)
			g->ops[i].out_free(g->ops[i].out);
	protobuf_c_message_free_unpacked(&g->req->base, NULL);
	free(g);
}

/* group_finish sends an AppendMany's reply once its last op is settled
 * (worker thread), then frees the group. */
static void
group_finish(struct st_group *g)
{
	Mhs__Store__V1__AppendManyResponse resp =
	    MHS__STORE__V1__APPEND_MANY_RESPONSE__INIT;
	Mhs__Store__V1__AppendResult *res = calloc(g->n, sizeof(*res));
	Mhs__Store__V1__AppendResult **ptrs = calloc(g->n, sizeof(*ptrs));
	struct st_ctx *c = g->ctx;
	nng_msg *msg;

	if (res == NULL || ptrs == NULL) {
		msg = st_reply(MHS_CODE_INTERNAL, "out of memory", NULL);
	} else {
		for (size_t i = 0; i < g->n; i++) {
			struct st_op *op = &g->ops[i];

			mhs__store__v1__append_result__init(&res[i]);
			res[i].code = op->code;
			res[i].message = op->message;
			if (op->code == 0)
				res[i].response =
				    (Mhs__V1__SubmitResponse *) op->out;
			ptrs[i] = &res[i];
		}
		resp.n_results = g->n;
		resp.results = ptrs;
		msg = st_reply(0, NULL, &resp.base);
	}
	free(res);
	free(ptrs);
	group_free(g);
	st_send_msg(c, msg); /* the last touch: see st_op_finish */
}

/*
 * st_op_finish answers op from the worker thread. The send is the last
 * thing it does: once started, the context may complete it, receive its
 * next request and refill op (its own) on an nng thread at once, so op
 * must not be touched after (a free of op->in after the send freed the
 * next request under load: the store crashed on a NULL request).
 */
void
st_op_finish(struct st_op *op)
{
	struct st_ctx *c = op->ctx;
	nng_msg *msg;

	if (op->group != NULL) { /* one Submit of an AppendMany */
		if (--op->group->pending == 0)
			group_finish(op->group);
		return;
	}
	msg = st_reply(op->code, op->message, op->code == 0 ? op->out : NULL);

	if (op->out != NULL && op->out_free != NULL)
		op->out_free(op->out);
	protobuf_c_message_free_unpacked(op->in, NULL);
	op->in = NULL;
	op->out = NULL;
	st_send_msg(c, msg);
}

static void
st_answer_ready(struct st_ctx *c)
{
	Mhs__Store__V1__ReadyResponse r = MHS__STORE__V1__READY_RESPONSE__INIT;
	bool jok = atomic_load(&c->st->journal_ok);
	bool rok =
	    atomic_load(&c->st->redis_ok) || atomic_load(&c->st->backlog_ok);

	bool replay = atomic_load(&c->st->replaying);

	r.ready = jok && rok && !replay;
	r.reason = (char *) (!jok ? "journal failed"
	        : !rok            ? "Redis unavailable"
	        : replay          ? "replaying the journal into Redis"
	                          : "");
	st_send(c, 0, NULL, &r.base);
}

/* st_received_many queues an AppendMany as a group (consumes req). */
static void
st_received_many(struct st_ctx *c, mhs_rpc_request *req)
{
	Mhs__Store__V1__AppendManyRequest *in =
	    mhs__store__v1__append_many_request__unpack(
	        NULL, req->payload.len, req->payload.data);
	struct st_group *g;

	mhs_rpc_request_free(req);
	if (in == NULL || in->n_appends == 0 || in->n_appends > ST_GROUP_MAX) {
		mhs__store__v1__append_many_request__free_unpacked(in, NULL);
		st_send(c, MHS_CODE_INVALID_ARGUMENT,
		    "undecodable payload, or not 1 to 1024 appends", NULL);
		return;
	}
	for (size_t i = 0; i < in->n_appends; i++)
		if (in->appends[i]->submit == NULL) {
			mhs__store__v1__append_many_request__free_unpacked(
			    in, NULL);
			st_send(c, MHS_CODE_INVALID_ARGUMENT,
			    "undecodable payload: an append without a submit",
			    NULL);
			return;
		}
	g = calloc(1, sizeof(*g) + in->n_appends * sizeof(g->ops[0]));
	if (g == NULL) {
		mhs__store__v1__append_many_request__free_unpacked(in, NULL);
		st_send(c, MHS_CODE_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	g->ctx = c;
	g->req = in;
	g->n = g->pending = in->n_appends;
	for (size_t i = 0; i < g->n; i++) {
		g->ops[i].kind = ST_APPEND;
		g->ops[i].group = g;
		g->ops[i].in = &in->appends[i]->base;
	}
	c->state = ST_CTX_WAIT;
	st_enqueue_many(c->st, g->ops, g->n);
}

static void
st_received(struct st_ctx *c, nng_msg *msg)
{
	mhs_rpc_request *req =
	    mhs_rpc_request_decode(nng_msg_body(msg), nng_msg_len(msg));
	const struct mhs_rpc_method *m;
	const struct st_binding *b;
	struct st_op *op = &c->op;

	nng_msg_free(msg);
	if (req == NULL) {
		st_send(
		    c, MHS_CODE_INVALID_ARGUMENT, "undecodable request", NULL);
		return;
	}
	m = mhs_rpc_table_find(&c->st->table, req->method);
	if (m == NULL || m->handler == NULL) {
		mhs_rpc_request_free(req);
		st_send(c, MHS_CODE_UNIMPLEMENTED, "unknown method", NULL);
		return;
	}
	b = m->handler;
	if (b->ready) {
		mhs_rpc_request_free(req);
		st_answer_ready(c);
		return;
	}
	if (b == &bind_append_many) {
		st_received_many(c, req);
		return;
	}
	memset(op, 0, sizeof(*op));
	op->ctx = c;
	op->kind = b->kind;
	op->in = protobuf_c_message_unpack(
	    m->desc->input, NULL, req->payload.len, req->payload.data);
	mhs_rpc_request_free(req);
	if (op->in == NULL ||
	    (op->kind == ST_APPEND &&
	        ((Mhs__Store__V1__AppendRequest *) op->in)->submit == NULL)) {
		protobuf_c_message_free_unpacked(op->in, NULL);
		op->in = NULL;
		st_send(
		    c, MHS_CODE_INVALID_ARGUMENT, "undecodable payload", NULL);
		return;
	}
	c->state = ST_CTX_WAIT;
	st_enqueue(c->st, op);
}

static void
st_ctx_cb(void *arg)
{
	struct st_ctx *c = arg;
	int rv = nng_aio_result(c->aio);

	switch (c->state) {
	case ST_CTX_RECV:
		if (rv != 0) {
			if (rv != NNG_ECLOSED)
				nng_ctx_recv(c->ctx, c->aio);
			return;
		}
		st_received(c, nng_aio_get_msg(c->aio));
		return;
	case ST_CTX_SEND:
		if (rv != 0)
			nng_msg_free(nng_aio_get_msg(c->aio));
		if (rv == NNG_ECLOSED)
			return;
		c->state = ST_CTX_RECV;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	case ST_CTX_WAIT:
		return; /* not driven by the aio */
	}
}

static int
st_table_build(struct store *st)
{
	static const struct {
		const char *method;
		const struct st_binding *b;
	} binds[] = {
	    {"Append", &bind_append},
	    {"Get", &bind_get},
	    {"Search", &bind_search},
	    {"Lease", &bind_lease},
	    {"Report", &bind_report},
	    {"ListDeadLetters", &bind_dead},
	    {"Redeliver", &bind_redeliver},
	    {"Unsolicited", &bind_unsolicited},
	    {"ReportMany", &bind_report_many},
	    {"AppendMany", &bind_append_many},
	    {"Ready", &bind_ready},
	};
	int rv;

	if ((rv = mhs_rpc_table_add_service(
	         &st->table, &mhs__store__v1__store__descriptor)) != 0)
		return rv;
	for (size_t i = 0; i < sizeof(binds) / sizeof(binds[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/mhs.store.v1.Store/%s",
		    binds[i].method);
		if ((rv = mhs_rpc_table_bind(&st->table, path, binds[i].b)) !=
		    0)
			return rv;
	}
	mhs_rpc_table_seal(&st->table);
	return 0;
}

int
st_server_start(struct store *st)
{
	int rv;

	if ((rv = st_table_build(st)) != 0)
		return rv;
	if ((rv = nng_rep0_open(&st->rep)) != 0)
		return mhs_err_nng(rv);
	nng_socket_set_size(st->rep, NNG_OPT_RECVMAXSZ, 64u << 20);
	st->n_ctxs = (size_t) st->cfg.contexts;
	if ((st->ctxs = calloc(st->n_ctxs, sizeof(*st->ctxs))) == NULL)
		return MHS_ENOMEM;
	for (size_t i = 0; i < st->n_ctxs; i++) {
		struct st_ctx *c = calloc(1, sizeof(*c));
		if (c == NULL)
			return MHS_ENOMEM;
		st->ctxs[i] = c;
		c->st = st;
		if ((rv = nng_aio_alloc(&c->aio, st_ctx_cb, c)) != 0 ||
		    (rv = nng_ctx_open(&c->ctx, st->rep)) != 0)
			return mhs_err_nng(rv);
	}
	if ((rv = nng_listen(st->rep, st->cfg.listen, &st->listener, 0)) !=
	    0) {
		fprintf(stderr, "mhs-store: cannot listen on %s: %s\n",
		    st->cfg.listen, nng_strerror(rv));
		return mhs_err_nng(rv);
	}
	if ((rv = mhs_listen_guard_start(&st->guard, st->rep, &st->listener,
	         st->cfg.listen, nng_req0_open)) != 0)
		return rv;
	for (size_t i = 0; i < st->n_ctxs; i++)
		nng_ctx_recv(st->ctxs[i]->ctx, st->ctxs[i]->aio);
	return 0;
}

/* st_queue_release frees what is still queued once the worker has
 * stopped (nothing answers it any more). A group is freed with its last
 * queued op: its settled ops are no longer in the queue. */
static void
st_queue_release(struct store *st)
{
	struct st_op *op, *next;

	for (op = st->head; op != NULL; op = next) {
		next = op->next;
		if (op->group == NULL) {
			protobuf_c_message_free_unpacked(op->in, NULL);
			op->in = NULL;
		} else if (--op->group->pending == 0) {
			group_free(op->group);
		}
	}
	st->head = NULL;
	st->tail = &st->head;
}

void
st_server_stop(struct store *st)
{
	/* 1. No new requests; sends of the worker's last answers fail fast.
	 * 2. The worker finishes its batch and exits.
	 * 3. Only then are the contexts stopped and freed. */
	mhs_listen_guard_stop(st->guard);
	st->guard = NULL;
	nng_close(st->rep);
	st_worker_stop(st);
	st_queue_release(st);
	for (size_t i = 0; i < st->n_ctxs; i++)
		if (st->ctxs[i] != NULL)
			nng_aio_stop(st->ctxs[i]->aio);
	for (size_t i = 0; i < st->n_ctxs; i++) {
		if (st->ctxs[i] == NULL)
			continue;
		nng_aio_free(st->ctxs[i]->aio);
		free(st->ctxs[i]);
	}
	free(st->ctxs);
	st->ctxs = NULL;
	mhs_rpc_table_fini(&st->table);
}
