/*
 * Design notes: living with nng 1.5.2's ipc transport (Debian 12's nng;
 * nng issue #1518, "Disconnect during negotiation breaks listener", fixed
 * in later releases). When a peer of an ipc:// listener closes its
 * connection during the 8-byte SP handshake, the listener's accept loop
 * ends for good: later connections still complete the handshake, so
 * clients believe they are connected, but their pipes never reach the
 * socket and every request times out. A client killed while it connects
 * (or any local process that connects and closes) leaves the store
 * serving no new connection until it restarts, and nng logs nothing.
 * An ipc:// dialer can give up the same way: when its peer closes before
 * the dialer has written its half of the handshake (a store killed while
 * a client connects), the write fails and the dialer never dials again
 * (a third of the time in test_spfix's loop). tcp:// and tls+tcp:// are
 * not affected (measured: twenty raw connect-and-close, then a REQ
 * client).
 *
 * mhs_redial replaces a dialer that has had no pipe for idle_ms (a
 * healthy dialer that cannot reach its peer loses nothing by being
 * replaced). mhs_listen_guard dials an ipc:// listener from a probe
 * socket every MHS_GUARD_MS; when two probes in a row see no pipe added
 * to the listening socket, it closes the listener and listens again (REQ
 * peers resend what was in flight on the pipes that closed with it).
 */
#ifndef MHS_SPFIX_H
#define MHS_SPFIX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <nng/nng.h>

#define MHS_GUARD_MS  1000
#define MHS_REDIAL_MS 3000

struct mhs_redial {
	nng_socket sock;
	nng_dialer dialer;
	char *url;
	int idle_ms;                   /* MHS_REDIAL_MS unless changed */
	atomic_int pipes;              /* negotiated pipes now */
	_Atomic int64_t idle_since_ms; /* mono: last pipe gone, or dial */
	atomic_uint redials;
	pthread_mutex_t mtx;
};

/*
 * mhs_redial_start dials url from sock in the background (NONBLOCK) and
 * takes sock's ADD_PRE and REM_POST pipe notifications (nothing else may
 * set them). Returns 0 or an MHS_ error.
 */
int mhs_redial_start(struct mhs_redial *r, nng_socket sock, const char *url);

/* mhs_redial_check replaces the dialer when it has been without a pipe
 * for idle_ms; cheap, call it often (before each call). */
void mhs_redial_check(struct mhs_redial *r);

/* After the socket is closed. */
void mhs_redial_fini(struct mhs_redial *r);

struct mhs_listen_guard;

/*
 * mhs_listen_guard_start watches listener *lp of sock on url when url is
 * ipc:// (for other transports it does nothing and *gp is NULL). open
 * opens a socket of the peer protocol for the probes (nng_req0_open for
 * a REP listener). It takes sock's ADD_POST pipe notification (nothing
 * else may set it; guards of several listeners on one socket share it). *lp is
 * replaced when the listener is restarted; it is only written by the guard's
 * thread. Returns 0 or an MHS_ error.
 */
int mhs_listen_guard_start(struct mhs_listen_guard **gp, nng_socket sock,
    nng_listener *lp, const char *url, int (*open)(nng_socket *));

/* Listener restarts so far (tests, metrics). */
unsigned mhs_listen_guard_restarts(const struct mhs_listen_guard *g);

/* Stops the guard's thread (before the socket is closed); NULL is fine. */
void mhs_listen_guard_stop(struct mhs_listen_guard *g);

#endif /* MHS_SPFIX_H */
