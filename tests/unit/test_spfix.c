/*
 * common/spfix.c against the bug it works around: nng 1.5.2's ipc://
 * endpoints give up for good when a peer closes during the SP handshake.
 *  - spfix_listen: twenty raw connect-and-close on a REP listener, then a
 *    REQ client must be answered within 10 s, with the guard having
 *    restarted the listener (without the guard no answer ever comes);
 *  - spfix_dial: a server that accepts and closes at once (a store killed
 *    while a client connects), then a real REP listener on the same path:
 *    the client must be answered within 5 s, twelve rounds in a row
 *    (without mhs_redial_check, about a third of rounds never are).
 * Real sockets in a private directory; bounded waits, no sleeps as
 * synchronisation except the bounded retry loops themselves.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "spfix.h"
#include "util.h"

static char dir[64], path[128], url[140];

static void
paths(void)
{
	strcpy(dir, "/tmp/mhs-spfix-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s.ipc", dir);
	snprintf(url, sizeof(url), "ipc://%s", path);
}

static void
paths_fini(void)
{
	unlink(path);
	rmdir(dir);
}

/* An echo server on a REP socket, until the socket closes. */
static void *
echo_main(void *arg)
{
	nng_socket s = *(nng_socket *) arg;
	nng_msg *m;

	while (nng_recvmsg(s, &m, 0) == 0)
		if (nng_sendmsg(s, m, 0) != 0)
			nng_msg_free(m);
	return NULL;
}

/* A unix-socket connection to path, closed before any handshake. */
static void
raw_connect_close(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	strcpy(a.sun_path, path);
	cr_assert_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
	close(fd);
}

/* One request with a 500 ms timeout; true when it was answered. */
static bool
ask(nng_socket req)
{
	char *buf = NULL;
	size_t n = 0;
	bool ok;

	nng_socket_set_ms(req, NNG_OPT_SENDTIMEO, 500);
	nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 500);
	ok = nng_send(req, "ping", 5, 0) == 0 &&
	    nng_recv(req, &buf, &n, NNG_FLAG_ALLOC) == 0 && n == 5 &&
	    strcmp(buf, "ping") == 0;
	if (buf != NULL)
		nng_free(buf, n);
	return ok;
}

Test(spfix_listen, a_listener_stuck_by_a_mid_handshake_close_is_restarted)
{
	struct mhs_listen_guard *g = NULL;
	nng_socket rep, req;
	nng_listener l;
	pthread_t echo;
	bool answered = false;

	paths();
	cr_assert_eq(nng_rep0_open(&rep), 0);
	cr_assert_eq(nng_listen(rep, url, &l, 0), 0);
	cr_assert_eq(pthread_create(&echo, NULL, echo_main, &rep), 0);
	cr_assert_eq(
	    mhs_listen_guard_start(&g, rep, &l, url, nng_req0_open), 0);
	cr_assert_not_null(g, "ipc:// listeners are guarded");
	/*
	 * One close breaks the listener about half the time (measured), twenty
	 * nearly always; on a loaded machine (CI runs tests two at a time) a
	 * round can miss, so up to five rounds, each with a new client: an
	 * answer must come within 10 s, and some round must have needed the
	 * guard's restart.
	 */
	for (int round = 0; round < 5 && mhs_listen_guard_restarts(g) == 0;
	     round++) {
		for (int i = 0; i < 20; i++)
			raw_connect_close();
		cr_assert_eq(nng_req0_open(&req), 0);
		cr_assert_eq(nng_dial(req, url, NULL, NNG_FLAG_NONBLOCK), 0);
		answered = false;
		for (int64_t t0 = mhs_mono_ms();
		     !answered && mhs_mono_ms() - t0 < 10000;)
			answered = ask(req);
		nng_close(req);
		cr_assert(answered,
		    "round %d: no answer within 10 s (the listener stayed "
		    "stuck; %u restarts)",
		    round + 1, mhs_listen_guard_restarts(g));
	}
	cr_assert_geq(mhs_listen_guard_restarts(g), 1,
	    "five rounds answered without a restart: is nng's ipc bug gone? "
	    "then spfix can go too");

	mhs_listen_guard_stop(g);
	nng_close(rep);
	pthread_join(echo, NULL);
	paths_fini();
}

Test(spfix_listen, other_transports_are_not_guarded)
{
	struct mhs_listen_guard *g = (void *) 1;
	nng_socket rep;
	nng_listener l;

	cr_assert_eq(nng_rep0_open(&rep), 0);
	cr_assert_eq(mhs_listen_guard_start(
	                 &g, rep, &l, "tcp://127.0.0.1:1", nng_req0_open),
	    0);
	cr_assert_null(g);
	mhs_listen_guard_stop(g);
	nng_close(rep);
}

/* A server that accepts one connection and closes it at once. */
static void *
slam_main(void *arg)
{
	int lfd = *(int *) arg, fd;

	if ((fd = accept(lfd, NULL, NULL)) >= 0)
		close(fd);
	return NULL;
}

/*
 * One round: a client dials a server that dies as it connects, then the
 * real server comes up on the same path. Whether the dialer gives up
 * depends on a race inside nng (about a third of rounds), so the test
 * runs rounds enough that a missing mhs_redial_check would be caught.
 */
static void
dial_round(int round)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct mhs_redial r;
	nng_socket rep, req;
	pthread_t slam, echo;
	bool answered = false;
	int lfd;

	paths();
	strcpy(a.sun_path, path);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *) &a, sizeof(a)), 0);
	cr_assert_eq(listen(lfd, 4), 0);
	cr_assert_eq(pthread_create(&slam, NULL, slam_main, &lfd), 0);
	cr_assert_eq(nng_req0_open(&req), 0);
	nng_socket_set_ms(req, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(req, NNG_OPT_RECONNMAXT, 200);
	cr_assert_eq(mhs_redial_start(&r, req, url), 0);
	r.idle_ms = 300;
	pthread_join(slam, NULL);
	close(lfd);
	unlink(path);

	cr_assert_eq(nng_rep0_open(&rep), 0);
	cr_assert_eq(nng_listen(rep, url, NULL, 0), 0);
	cr_assert_eq(pthread_create(&echo, NULL, echo_main, &rep), 0);
	for (int64_t t0 = mhs_mono_ms();
	     !answered && mhs_mono_ms() - t0 < 5000;) {
		mhs_redial_check(&r);
		answered = ask(req);
	}
	cr_assert(answered,
	    "round %d: no answer within 5 s: the dialer gave up (%u "
	    "redials)",
	    round, atomic_load(&r.redials));
	nng_close(req);
	mhs_redial_fini(&r);
	nng_close(rep);
	pthread_join(echo, NULL);
	paths_fini();
}

Test(spfix_dial, a_dialer_whose_peer_closed_mid_handshake_is_replaced)
{
	for (int round = 1; round <= 12; round++)
		dial_round(round);
}
