/*
 * Design notes: see spfix.h. Only nng's public API is used: pipe
 * notifications, nng_dial, nng_dialer_close, nng_listener_close and
 * nng_listen.
 *
 * What breaks in a listener is its accept loop: the transport still
 * completes handshakes, so a client sees a connection, but the pipe is
 * never handed to the socket and requests go nowhere. A dialer-side view
 * of the probe therefore proves nothing; the guard watches the listening
 * socket's own ADD_POST instead. The listener has read the probe's whole
 * handshake by then, so closing the probe never strands a handshake; a
 * probe that got nothing is closed against a listener that is already
 * stuck, which is what is being repaired.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "spfix.h"
#include "util.h"

/* ---- dialers ---- */

static void
redial_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct mhs_redial *r = arg;

	(void) p;
	/* nng reports REM_POST exactly for the pipes it reported ADD_PRE. */
	if (ev == NNG_PIPE_EV_ADD_PRE)
		atomic_fetch_add(&r->pipes, 1);
	else if (atomic_fetch_sub(&r->pipes, 1) == 1)
		atomic_store(&r->idle_since_ms, mhs_mono_ms());
}

int
mhs_redial_start(struct mhs_redial *r, nng_socket sock, const char *url)
{
	int rv;

	memset(r, 0, sizeof(*r));
	r->sock = sock;
	r->idle_ms = MHS_REDIAL_MS;
	if ((r->url = strdup(url)) == NULL)
		return MHS_ENOMEM;
	pthread_mutex_init(&r->mtx, NULL);
	atomic_store(&r->idle_since_ms, mhs_mono_ms());
	if ((rv = nng_pipe_notify(
	         sock, NNG_PIPE_EV_ADD_PRE, redial_pipe_cb, r)) != 0 ||
	    (rv = nng_pipe_notify(
	         sock, NNG_PIPE_EV_REM_POST, redial_pipe_cb, r)) != 0 ||
	    (rv = nng_dial(sock, url, &r->dialer, NNG_FLAG_NONBLOCK)) != 0) {
		mhs_redial_fini(r);
		return mhs_err_nng(rv);
	}
	return 0;
}

static bool
redial_due(struct mhs_redial *r, int64_t now)
{
	return atomic_load(&r->pipes) == 0 &&
	    now - atomic_load(&r->idle_since_ms) >= r->idle_ms;
}

void
mhs_redial_check(struct mhs_redial *r)
{
	int64_t now = mhs_mono_ms();

	if (!redial_due(r, now))
		return;
	pthread_mutex_lock(&r->mtx);
	if (redial_due(r, now)) {
		nng_dialer_close(r->dialer);
		if (nng_dial(r->sock, r->url, &r->dialer, NNG_FLAG_NONBLOCK) !=
		    0)
			r->dialer = (nng_dialer) NNG_DIALER_INITIALIZER;
		atomic_store(&r->idle_since_ms, now);
		atomic_fetch_add(&r->redials, 1);
		mhs_log(MHS_LOG_DEBUG, NULL, "redial",
		    "no connection to %s for %d ms: dialing anew", r->url,
		    r->idle_ms);
	}
	pthread_mutex_unlock(&r->mtx);
}

void
mhs_redial_fini(struct mhs_redial *r)
{
	if (r->url == NULL)
		return;
	free(r->url);
	r->url = NULL;
	pthread_mutex_destroy(&r->mtx);
}

/* ---- listeners ---- */

struct mhs_listen_guard {
	struct mhs_listen_guard *next; /* guards, under guards_mtx */
	nng_socket sock;
	nng_listener *lp;
	char *url;
	int (*open)(nng_socket *);
	atomic_bool accepted; /* a pipe was added since the probe began */
	atomic_uint restarts;
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool stop;
};

/*
 * A socket has one ADD_POST notification, and a gateway may have several
 * ipc:// listeners on one socket: one callback for all guards, which
 * credits the guard of the pipe's listener.
 */
static pthread_mutex_t guards_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct mhs_listen_guard *guards;

static void
guard_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	nng_listener l = nng_pipe_listener(p);

	(void) ev;
	(void) arg;
	pthread_mutex_lock(&guards_mtx);
	for (struct mhs_listen_guard *g = guards; g != NULL; g = g->next)
		if (g->lp->id == l.id && g->sock.id == nng_pipe_socket(p).id)
			atomic_store(&g->accepted, true);
	pthread_mutex_unlock(&guards_mtx);
}

/* guard_wait sleeps ms unless stopped; returns false once stopped. */
static bool
guard_wait(struct mhs_listen_guard *g, int ms)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long) (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&g->mtx);
	if (!g->stop)
		pthread_cond_timedwait(&g->cv, &g->mtx, &ts);
	stop = g->stop;
	pthread_mutex_unlock(&g->mtx);
	return !stop;
}

/*
 * One probe: whether the listener handed a pipe to its socket within
 * MHS_GUARD_MS of the probe's dial (true when the probe cannot even be
 * tried: nothing to repair then). Any pipe counts, the probe's or a
 * client's: either shows that the listener still accepts.
 */
static bool
guard_probe(struct mhs_listen_guard *g)
{
	nng_socket ps;
	bool up = false;

	atomic_store(&g->accepted, false);
	if (g->open(&ps) != 0)
		return true;
	if (nng_dial(ps, g->url, NULL, NNG_FLAG_NONBLOCK) != 0) {
		nng_close(ps);
		return true;
	}
	for (int waited = 0; waited < MHS_GUARD_MS; waited += 10) {
		if ((up = atomic_load(&g->accepted)))
			break;
		if (!guard_wait(g, 10)) {
			up = true; /* stopping: repair nothing */
			break;
		}
	}
	nng_close(ps);
	return up;
}

static void
guard_restart(struct mhs_listen_guard *g)
{
	nng_listener fresh;
	int rv;

	mhs_warn("listener_restarted",
	    "%s made no connection for two probes in a row (nng 1.5.2 stops "
	    "accepting on ipc:// after a peer closes mid-handshake): "
	    "listening again",
	    g->url);
	nng_listener_close(*g->lp);
	rv = nng_listen(g->sock, g->url, &fresh, 0);
	pthread_mutex_lock(&guards_mtx); /* guard_pipe_cb reads *lp */
	if (rv == 0)
		*g->lp = fresh;
	pthread_mutex_unlock(&guards_mtx);
	if (rv != 0)
		mhs_error("listener_restart_failed",
		    "%s: %s (tried again in "
		    "%d ms)",
		    g->url, nng_strerror(rv), MHS_GUARD_MS);
	atomic_fetch_add(&g->restarts, 1);
}

static void *
guard_main(void *arg)
{
	struct mhs_listen_guard *g = arg;
	int fails = 0;

	while (guard_wait(g, MHS_GUARD_MS)) {
		if (guard_probe(g)) {
			fails = 0;
			continue;
		}
		if (++fails >= 2) {
			guard_restart(g);
			fails = 0;
		}
	}
	return NULL;
}

static void
guard_unlink(struct mhs_listen_guard *g)
{
	pthread_mutex_lock(&guards_mtx);
	for (struct mhs_listen_guard **pp = &guards; *pp != NULL;
	     pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	pthread_mutex_unlock(&guards_mtx);
}

int
mhs_listen_guard_start(struct mhs_listen_guard **gp, nng_socket sock,
    nng_listener *lp, const char *url, int (*open)(nng_socket *))
{
	struct mhs_listen_guard *g;

	*gp = NULL;
	if (strncmp(url, "ipc://", 6) != 0)
		return 0;
	if ((g = calloc(1, sizeof(*g))) == NULL ||
	    (g->url = strdup(url)) == NULL) {
		free(g);
		return MHS_ENOMEM;
	}
	g->sock = sock;
	g->lp = lp;
	g->open = open;
	pthread_mutex_init(&g->mtx, NULL);
	pthread_cond_init(&g->cv, NULL);
	pthread_mutex_lock(&guards_mtx);
	g->next = guards;
	guards = g;
	pthread_mutex_unlock(&guards_mtx);
	if (nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, guard_pipe_cb, NULL) !=
	        0 ||
	    pthread_create(&g->thread, NULL, guard_main, g) != 0) {
		guard_unlink(g);
		free(g->url);
		free(g);
		return MHS_ENOMEM;
	}
	*gp = g;
	return 0;
}

unsigned
mhs_listen_guard_restarts(const struct mhs_listen_guard *g)
{
	return g != NULL ? atomic_load(&g->restarts) : 0;
}

void
mhs_listen_guard_stop(struct mhs_listen_guard *g)
{
	if (g == NULL)
		return;
	pthread_mutex_lock(&g->mtx);
	g->stop = true;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mtx);
	pthread_join(g->thread, NULL);
	guard_unlink(g);
	pthread_mutex_destroy(&g->mtx);
	pthread_cond_destroy(&g->cv);
	free(g->url);
	free(g);
}
