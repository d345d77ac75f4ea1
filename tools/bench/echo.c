/*
 * Design notes: the baseline of --baseline, a plain nng REP echo server in
 * the bench's own process, on a free 127.0.0.1 tcp port (port 0; the
 * kernel's choice is read back from the listener). Each REP context is
 * nng demo/async's state machine in one callback: RECV -> SEND the same
 * message back -> RECV. Callbacks never block and do no work beyond that,
 * so the baseline measures nng, TCP and the client, nothing else. A
 * context stops at NNG_ECLOSED or NNG_ECANCELED (the server is stopping).
 * Stop order: stop every aio (waits for callbacks), close, free.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum echo_state {
	E_RECV,
	E_SEND,
};

struct echo_ctx {
	nng_aio *aio;
	nng_ctx ctx;
	enum echo_state state;
};

struct bench_echo {
	nng_socket sock;
	bool open;
	struct echo_ctx *c;
	int n;
};

static void
echo_cb(void *arg)
{
	struct echo_ctx *c = arg;
	int rv = nng_aio_result(c->aio);

	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		if (c->state == E_SEND)
			nng_msg_free(nng_aio_get_msg(c->aio));
		return;
	}
	if (rv != 0 && c->state == E_SEND)
		nng_msg_free(nng_aio_get_msg(c->aio));
	if (rv != 0 || c->state == E_SEND) {
		c->state = E_RECV;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	c->state = E_SEND; /* the request goes back as it came */
	nng_aio_set_msg(c->aio, nng_aio_get_msg(c->aio));
	nng_ctx_send(c->ctx, c->aio);
}

static int
echo_listen(struct bench_echo *e, size_t max_bytes, char *url, size_t cap)
{
	nng_listener lst;
	int rv, port;

	if ((rv = nng_rep0_open(&e->sock)) != 0)
		return rv;
	e->open = true;
	nng_socket_set_size(e->sock, NNG_OPT_RECVMAXSZ, max_bytes);
	if ((rv = nng_listen(e->sock, "tcp://127.0.0.1:0", &lst, 0)) != 0)
		return rv;
	if ((rv = nng_listener_get_int(lst, NNG_OPT_TCP_BOUND_PORT, &port)) !=
	    0)
		return rv;
	snprintf(url, cap, "tcp://127.0.0.1:%d", port);
	return 0;
}

int
bench_echo_start(struct bench_echo **ep, int contexts, size_t max_bytes,
    char *url, size_t cap)
{
	struct bench_echo *e;
	int rv = NNG_ENOMEM;

	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->c = calloc((size_t) contexts, sizeof(*e->c))) == NULL)
		goto fail;
	if ((rv = echo_listen(e, max_bytes, url, cap)) != 0)
		goto fail;
	for (; e->n < contexts; e->n++) {
		struct echo_ctx *c = &e->c[e->n];

		if ((rv = nng_aio_alloc(&c->aio, echo_cb, c)) != 0)
			goto fail;
		if ((rv = nng_ctx_open(&c->ctx, e->sock)) != 0) {
			nng_aio_free(c->aio);
			goto fail;
		}
	}
	for (int i = 0; i < e->n; i++) {
		e->c[i].state = E_RECV;
		nng_ctx_recv(e->c[i].ctx, e->c[i].aio);
	}
	*ep = e;
	return 0;
fail:
	bench_echo_stop(e);
	return rv;
}

void
bench_echo_stop(struct bench_echo *e)
{
	if (e == NULL)
		return;
	for (int i = 0; i < e->n; i++)
		nng_aio_stop(e->c[i].aio);
	for (int i = 0; i < e->n; i++) {
		nng_ctx_close(e->c[i].ctx);
		nng_aio_free(e->c[i].aio);
	}
	if (e->open)
		nng_close(e->sock);
	free(e->c);
	free(e);
}

int
bench_blob_make(void *arg, nng_msg **mp)
{
	const struct bench_blob *b = arg;
	int rv;

	if ((rv = nng_msg_alloc(mp, b->len)) != 0)
		return rv;
	memcpy(nng_msg_body(*mp), b->data, b->len);
	return 0;
}

int
bench_blob_reply_code(void *arg, nng_msg *m)
{
	const struct bench_blob *b = arg;

	return nng_msg_len(m) == b->len ? 0 : -1;
}
