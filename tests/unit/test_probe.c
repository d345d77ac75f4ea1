/*
 * The probe server (common/probe.c): its three endpoints, and what makes
 * it safe for an owner to free what ready/metrics read as soon as
 * mhs_probe_close returns: no callback is inside them then, and none
 * enters them later, while clients keep asking. probe.c relies on nng
 * 1.5.2 for this (nng_http_server_stop waits for running handlers and
 * closes every connection); this suite checks that it still does.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "probe.h"

static int
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0);
	cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* http_get returns the status of GET path, or -1 if there was none. */
static int
http_get(int port, const char *path, char *body, size_t cap)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 5};
	char req[256], resp[4096];
	size_t got = 0;
	ssize_t n;
	int fd, status = -1;
	const char *b;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t) port);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	n = snprintf(req, sizeof(req),
	    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
	    path);
	if (write(fd, req, (size_t) n) != n) {
		close(fd);
		return -1;
	}
	while (got + 1 < sizeof(resp) &&
	    (n = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0)
		got += (size_t) n;
	close(fd);
	resp[got] = '\0';
	if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
		return -1;
	if (body != NULL && cap > 0) {
		b = strstr(resp, "\r\n\r\n");
		snprintf(body, cap, "%s", b != NULL ? b + 4 : "");
	}
	return status;
}

struct owner {
	atomic_bool ready;
	atomic_int inside; /* callbacks inside ready/metrics */
	atomic_int calls;  /* ready/metrics calls */
	atomic_bool freed; /* set once close returned */
	atomic_int late;   /* calls that began after close returned */
	atomic_bool stop;  /* clients stop */
	int port;
};

static bool
owner_ready(void *arg, char *why, size_t len)
{
	struct owner *o = arg;

	if (atomic_load(&o->freed))
		atomic_fetch_add(&o->late, 1);
	atomic_fetch_add(&o->inside, 1);
	atomic_fetch_add(&o->calls, 1);
	usleep(2000); /* long enough for close to arrive meanwhile */
	atomic_fetch_sub(&o->inside, 1);
	snprintf(why, len, "store not ready");
	return atomic_load(&o->ready);
}

static void
owner_metrics(void *arg, struct mhs_buf *out)
{
	struct owner *o = arg;

	if (atomic_load(&o->freed))
		atomic_fetch_add(&o->late, 1);
	atomic_fetch_add(&o->calls, 1);
	mhs_buf_puts(out, "mhs_test_up 1\n");
}

Test(probe, answers_livez_readyz_and_metrics)
{
	static struct owner o;
	struct mhs_probe *p;
	char url[64], body[256];

	o.port = free_port();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", o.port);
	cr_assert_eq(
	    mhs_probe_open(&p, url, owner_ready, owner_metrics, &o), 0);
	cr_assert_eq(http_get(o.port, "/livez", body, sizeof(body)), 200);
	cr_assert_str_eq(body, "ok\n");
	cr_assert_eq(http_get(o.port, "/readyz", body, sizeof(body)), 503);
	cr_assert_str_eq(body, "store not ready\n");
	atomic_store(&o.ready, true);
	cr_assert_eq(http_get(o.port, "/readyz", body, sizeof(body)), 200);
	cr_assert_str_eq(body, "ready\n");
	cr_assert_eq(http_get(o.port, "/metrics", body, sizeof(body)), 200);
	cr_assert_str_eq(body, "mhs_test_up 1\n");
	cr_assert_eq(http_get(o.port, "/nothing", NULL, 0), 404);
	mhs_probe_close(p);
	cr_assert_eq(http_get(o.port, "/livez", NULL, 0), -1,
	    "the port still answers after close");
}

static void *
client_run(void *arg)
{
	struct owner *o = arg;

	while (!atomic_load(&o->stop)) {
		http_get(o->port, "/readyz", NULL, 0);
		http_get(o->port, "/metrics", NULL, 0);
	}
	return NULL;
}

Test(probe, close_waits_for_callbacks_and_none_starts_after)
{
	static struct owner o;
	struct mhs_probe *p;
	pthread_t t[4];
	char url[64];
	int i, calls;

	o.port = free_port();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", o.port);
	cr_assert_eq(
	    mhs_probe_open(&p, url, owner_ready, owner_metrics, &o), 0);
	for (i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, client_run, &o), 0);
	for (i = 0; i < 500 && atomic_load(&o.calls) < 50; i++)
		usleep(10000);
	cr_assert_geq(atomic_load(&o.calls), 50,
	    "the clients made only %d calls in 5 s", atomic_load(&o.calls));
	mhs_probe_close(p);
	/* What the owner would free now must be out of every callback, and
	 * no callback may start later, while the clients keep asking. */
	calls = atomic_load(&o.calls);
	cr_assert_eq(atomic_load(&o.inside), 0,
	    "a ready callback was still running when close returned");
	atomic_store(&o.freed, true);
	usleep(100000);
	atomic_store(&o.stop, true);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(atomic_load(&o.calls), calls,
	    "%d callbacks began after close returned",
	    atomic_load(&o.calls) - calls);
	cr_assert_eq(atomic_load(&o.late), 0);
}

Test(probe, refuses_a_bad_url_cleanly)
{
	struct mhs_probe *p = NULL;

	cr_assert_neq(mhs_probe_open(&p, "not a url", NULL, NULL, NULL), 0);
	cr_assert_null(p);
}
