/*
 * Design notes: the load driver (nng demo/async's shape, client side).
 *
 * Each worker owns one REQ context and one aio; its callback is the whole
 * state machine:
 *   SEND done -> RECV; RECV done -> record -> SEND the next, or IDLE when
 *   the phase is over (count reached, time up, or stopped).
 * Callbacks never block. A failed send or receive is counted (by nng
 * error) and the worker goes on with a new request; the aio timeout
 * (--timeout-ms) bounds every wait, so a dead peer costs time, not a hang.
 *
 * Sockets: REQ resends are off (NNG_OPT_REQ_RESENDTIME infinite, DESIGN
 * §7): a Submit is durable work and must not be sent twice behind our
 * back, and nng 1.5.2 would keep a resend timer per outstanding context.
 * Contexts are spread round-robin over --sockets sockets, one TCP
 * connection each.
 *
 * With a rate (bench_load_set_rate) the driver is open-loop: a pacer
 * thread releases request k at start + k / rate (clock_nanosleep to an
 * absolute time: nng's timers woke contexts up to tens of milliseconds
 * late at a few thousand a second, which showed as latency). A released
 * request goes to a parked (idle) context at once, or, when every context
 * is busy, is owed and taken by the next context to finish; either way
 * its latency runs from its due time, so a stall is measured, not hidden.
 *
 * Locking: stats are atomics. l->mtx guards l->active (workers not idle)
 * and is taken by a callback only when its worker goes idle; the main
 * thread waits on l->cv for active == 0, waking once a second to print
 * progress and to notice a stop request. Before a phase starts, the main
 * thread waits (nng_aio_wait) for the previous phase's callbacks to have
 * returned, so an aio is never restarted from two threads.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define BENCH_SOCKETS_MAX 64
#define RECV_MAX          (64u << 20) /* largest reply accepted */

enum worker_state {
	W_IDLE,
	W_SEND,
	W_RECV,
};

struct bench_worker {
	struct bench_load *load;
	nng_aio *aio;
	nng_ctx ctx;
	enum worker_state state;
	int64_t t0;  /* when the current request was made (or due) */
	int64_t due; /* open-loop: when the next request is due */
};

struct bench_load {
	const struct bench_target *t;
	nng_socket socks[BENCH_SOCKETS_MAX];
	int nsocks;
	struct bench_worker *w;
	int nw;
	/* the current phase */
	struct bench_stats *st;
	uint64_t count;
	int64_t end_ns;
	double interval_ns; /* open-loop: between due times; 0: closed */
	/* Open-loop, under mtx: requests released by the pacer, the next
	 * one to send, contexts waiting for one, and the pacer's end. */
	uint64_t released, next_send;
	struct bench_worker **parked;
	int nparked;
	bool pacing_done;
	pthread_t pacer;
	atomic_bool stop;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	int active;
};

int64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t
bench_stats_ok(struct bench_stats *st)
{
	return atomic_load(&st->codes[0]);
}

uint64_t
bench_stats_errors(struct bench_stats *st)
{
	uint64_t n = atomic_load(&st->bad_replies);

	for (int i = 1; i < BENCH_CODES; i++)
		n += atomic_load(&st->codes[i]);
	for (int i = 0; i < BENCH_TERRS; i++)
		n += atomic_load(&st->terrs[i]);
	return n;
}

static void
count_terr(struct bench_stats *st, int rv)
{
	atomic_fetch_add(&st->terrs[rv > 0 && rv < BENCH_TERRS ? rv : 0], 1);
}

static void
count_reply(struct bench_worker *w, nng_msg *m)
{
	struct bench_stats *st = w->load->st;
	int code = w->load->t->reply_code(w->load->t->arg, m);

	if (code < 0) {
		atomic_fetch_add(&st->bad_replies, 1);
		return;
	}
	atomic_fetch_add(
	    &st->codes[code < BENCH_CODES - 1 ? code : BENCH_CODES - 1], 1);
	if (code == 0)
		bench_hist_record(
		    &st->hist, (uint64_t) (bench_now_ns() - w->t0));
}

/* phase_over takes a ticket for one more request (closed loop), or says
 * the phase is over. */
static bool
phase_over(struct bench_load *l)
{
	if (atomic_load_explicit(&l->stop, memory_order_relaxed))
		return true;
	if (l->count > 0)
		return atomic_fetch_add(&l->st->issued, 1) >= l->count;
	if (bench_now_ns() >= l->end_ns)
		return true;
	atomic_fetch_add(&l->st->issued, 1);
	return false;
}

static void
worker_idle(struct bench_worker *w)
{
	struct bench_load *l = w->load;

	w->state = W_IDLE;
	pthread_mutex_lock(&l->mtx);
	if (--l->active == 0) {
		l->st->t_end = bench_now_ns();
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mtx);
}

/* worker_send makes the request of the ticket taken and sends it. */
static void
worker_send(struct bench_worker *w)
{
	struct bench_load *l = w->load;
	int64_t now = bench_now_ns();
	nng_msg *m;

	while (l->t->make(l->t->arg, &m) != 0)
		atomic_fetch_add(&l->st->terrs[NNG_ENOMEM], 1);
	w->t0 = now;
	if (l->interval_ns > 0 && w->due < now) {
		w->t0 = w->due; /* late: the wait is part of the latency */
		if (now - w->due > 1000000)
			atomic_fetch_add(&l->st->late, 1);
	}
	w->state = W_SEND;
	nng_aio_set_msg(w->aio, m);
	nng_ctx_send(w->ctx, w->aio);
}

static int64_t
due_of(const struct bench_load *l, uint64_t k)
{
	return l->st->t_start + (int64_t) ((double) k * l->interval_ns);
}

/* worker_next starts the next request, parks the worker (open loop,
 * nothing owed), or idles it (the phase is over). */
static void
worker_next(struct bench_worker *w)
{
	struct bench_load *l = w->load;

	if (l->interval_ns <= 0) {
		if (phase_over(l))
			worker_idle(w);
		else
			worker_send(w);
		return;
	}
	pthread_mutex_lock(&l->mtx);
	if (l->next_send < l->released && !atomic_load(&l->stop)) {
		w->due = due_of(l, l->next_send++);
		pthread_mutex_unlock(&l->mtx);
		worker_send(w);
		return;
	}
	if (l->pacing_done || atomic_load(&l->stop)) {
		pthread_mutex_unlock(&l->mtx);
		worker_idle(w);
		return;
	}
	w->state = W_IDLE;
	l->parked[l->nparked++] = w;
	pthread_mutex_unlock(&l->mtx);
}

/*
 * pacer_main releases each request at its due time to a parked worker,
 * or leaves it owed; at the end it idles the parked workers.
 */
static void *
pacer_main(void *arg)
{
	struct bench_load *l = arg;
	struct bench_worker *go;

	for (uint64_t k = 0;; k++) {
		int64_t due = due_of(l, k);
		struct timespec ts = {due / 1000000000, due % 1000000000};

		if (atomic_load(&l->stop) ||
		    (l->count > 0 ? k >= l->count : due >= l->end_ns))
			break;
		while (clock_nanosleep(
		           CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0 &&
		    !atomic_load(&l->stop))
			;
		atomic_fetch_add(&l->st->issued, 1);
		pthread_mutex_lock(&l->mtx);
		l->released = k + 1;
		go = NULL;
		if (l->nparked > 0 && l->next_send < l->released) {
			go = l->parked[--l->nparked];
			go->due = due_of(l, l->next_send++);
		}
		pthread_mutex_unlock(&l->mtx);
		if (go != NULL)
			worker_send(go);
	}
	for (;;) {
		pthread_mutex_lock(&l->mtx);
		l->pacing_done = true;
		go = l->nparked > 0 ? l->parked[--l->nparked] : NULL;
		pthread_mutex_unlock(&l->mtx);
		if (go == NULL)
			break;
		worker_idle(go);
	}
	return NULL;
}

static void
worker_cb(void *arg)
{
	struct bench_worker *w = arg;
	int rv = nng_aio_result(w->aio);

	if (rv == NNG_ECLOSED || (rv == NNG_ECANCELED && w->load->stop)) {
		if (w->state == W_SEND)
			nng_msg_free(nng_aio_get_msg(w->aio));
		worker_idle(w);
		return;
	}
	if (rv != 0) {
		if (w->state == W_SEND)
			nng_msg_free(nng_aio_get_msg(w->aio));
		count_terr(w->load->st, rv);
		worker_next(w);
		return;
	}
	if (w->state == W_SEND) {
		w->state = W_RECV;
		nng_ctx_recv(w->ctx, w->aio);
		return;
	}
	nng_msg *m = nng_aio_get_msg(w->aio);
	count_reply(w, m);
	nng_msg_free(m);
	worker_next(w);
}

static int
load_socket_open(nng_socket *s, const char *url)
{
	int rv;

	if ((rv = nng_req0_open(s)) != 0)
		return rv;
	/* Before any context is opened: contexts copy it at creation. */
	nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, RECV_MAX);
	nng_socket_set_ms(*s, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(*s, NNG_OPT_RECONNMAXT, 1000);
	if ((rv = nng_dial(*s, url, NULL, 0)) != 0) {
		nng_close(*s);
		*s = (nng_socket) NNG_SOCKET_INITIALIZER;
	}
	return rv;
}

static int
load_workers_open(struct bench_load *l, int timeout_ms)
{
	for (int i = 0; i < l->nw; i++) {
		struct bench_worker *w = &l->w[i];
		int rv;

		w->load = l;
		if ((rv = nng_aio_alloc(&w->aio, worker_cb, w)) != 0)
			return rv;
		nng_aio_set_timeout(w->aio, timeout_ms);
		if ((rv = nng_ctx_open(&w->ctx, l->socks[i % l->nsocks])) != 0)
			return rv;
	}
	return 0;
}

int
bench_load_open(struct bench_load **lp, const char *url,
    const struct bench_target *t, int concurrency, int nsocks, int timeout_ms)
{
	struct bench_load *l;
	int rv = NNG_ENOMEM;

	if (nsocks > BENCH_SOCKETS_MAX)
		nsocks = BENCH_SOCKETS_MAX;
	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    (l->w = calloc((size_t) concurrency, sizeof(*l->w))) == NULL ||
	    (l->parked = calloc((size_t) concurrency, sizeof(*l->parked))) ==
	        NULL)
		goto fail;
	l->t = t;
	l->nw = concurrency;
	pthread_mutex_init(&l->mtx, NULL);
	pthread_cond_init(&l->cv, NULL);
	for (; l->nsocks < nsocks; l->nsocks++)
		if ((rv = load_socket_open(&l->socks[l->nsocks], url)) != 0)
			goto fail;
	if ((rv = load_workers_open(l, timeout_ms)) != 0)
		goto fail;
	*lp = l;
	return 0;
fail:
	bench_load_close(l);
	return rv;
}

/* load_wait waits for every worker to go idle; progress once a second. */
static void
load_wait(struct bench_load *l, const char *progress, volatile int *stop)
{
	uint64_t last = 0;
	int64_t tick = bench_now_ns();

	pthread_mutex_lock(&l->mtx);
	while (l->active > 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000; /* 100 ms: notice *stop soon */
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&l->cv, &l->mtx, &ts);
		if (stop != NULL && *stop)
			atomic_store(&l->stop, true);
		if (progress != NULL && bench_now_ns() - tick >= 1000000000) {
			uint64_t done =
			    bench_stats_ok(l->st) + bench_stats_errors(l->st);

			tick = bench_now_ns();
			fprintf(stderr,
			    "%s %4.0fs: %llu done, %llu/s, %llu errors\n",
			    progress, (double) (tick - l->st->t_start) / 1e9,
			    (unsigned long long) done,
			    (unsigned long long) (done - last),
			    (unsigned long long) bench_stats_errors(l->st));
			last = done;
		}
	}
	pthread_mutex_unlock(&l->mtx);
}

void
bench_load_run(struct bench_load *l, struct bench_stats *st, uint64_t count,
    int64_t duration_ns, const char *progress, volatile int *stop)
{
	/* 1. The previous phase's callbacks have all returned. */
	for (int i = 0; i < l->nw; i++)
		nng_aio_wait(l->w[i].aio);
	/* 2. Arm the phase, then start every worker. */
	l->st = st;
	l->count = count;
	l->active = l->nw;
	atomic_store(&l->stop, false);
	st->t_start = bench_now_ns();
	st->t_end = st->t_start;
	l->end_ns = st->t_start + duration_ns;
	l->released = l->next_send = 0;
	l->nparked = 0;
	l->pacing_done = false;
	for (int i = 0; i < l->nw; i++) /* open loop: they park */
		worker_next(&l->w[i]);
	if (l->interval_ns > 0 &&
	    pthread_create(&l->pacer, NULL, pacer_main, l) != 0) {
		atomic_store(&l->stop, true);
		pacer_main(l); /* releases nothing: idles everyone */
		load_wait(l, progress, stop);
		return;
	}
	/* 3. Wait for the last worker to go idle (it stamps t_end). */
	load_wait(l, progress, stop);
	if (l->interval_ns > 0)
		pthread_join(l->pacer, NULL);
}

void
bench_load_set_rate(struct bench_load *l, double per_s)
{
	l->interval_ns = per_s > 0 ? 1e9 / per_s : 0;
}

void
bench_load_close(struct bench_load *l)
{
	if (l == NULL)
		return;
	for (int i = 0; l->w != NULL && i < l->nw; i++)
		if (l->w[i].aio != NULL)
			nng_aio_stop(l->w[i].aio);
	for (int i = 0; l->w != NULL && i < l->nw; i++) {
		if (nng_ctx_id(l->w[i].ctx) > 0)
			nng_ctx_close(l->w[i].ctx);
		nng_aio_free(l->w[i].aio);
	}
	for (int i = 0; i < l->nsocks; i++)
		nng_close(l->socks[i]);
	if (l->w != NULL) {
		pthread_mutex_destroy(&l->mtx);
		pthread_cond_destroy(&l->cv);
	}
	free(l->w);
	free(l->parked);
	free(l);
}
