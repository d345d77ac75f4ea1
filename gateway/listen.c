/*
 * Design notes: the partner listeners, one per URL of --listen: tcp://,
 * ipc:// and tls+tcp://. Every tls+tcp:// listener shares one nng TLS
 * server configuration: --tls-cert and --tls-key (PEM files, required
 * when any tls+tcp:// URL is given) and, optionally, --tls-client-ca.
 *
 * Client certificates. With --tls-client-ca the handshake verifies any
 * certificate a client presents (nng's OPTIONAL auth mode, so that the
 * handshake completes either way), and with --tls-require-client-cert
 * (the default) a request that arrives over a connection whose
 * certificate did not verify, or that presented none, is answered 16 in
 * the protocol rather than by a dropped connection, so the partner sees
 * why. nng 1.5.2 tells only that the peer verified (NNG_OPT_TLS_VERIFIED),
 * not who it is: the bearer token still names the client, and both must
 * pass (DESIGN §3).
 *
 * The request size limit is a socket option (NNG_OPT_RECVMAXSZ, set in
 * server.c before the listeners exist, which inherit it).
 *
 * ipc:// listeners are watched by common/spfix.c's guard (nng 1.5.2 stops
 * accepting on one for good after a peer closes mid-handshake).
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gateway.h"
#include "log.h"
#include "spfix.h"

#define GW_PEM_MAX (1 << 20)

/* pem_read reads a whole PEM file (at most 1 MiB) as a string. */
static char *
pem_read(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t n;

	if (f == NULL || (buf = malloc(GW_PEM_MAX + 1)) == NULL)
		goto fail;
	n = fread(buf, 1, GW_PEM_MAX + 1, f);
	if (ferror(f) || n > GW_PEM_MAX)
		goto fail;
	buf[n] = '\0';
	fclose(f);
	return buf;
fail:
	fprintf(stderr,
	    "mhs-gateway: cannot read %s (a PEM file of at most "
	    "1 MiB)\n",
	    path);
	if (f != NULL)
		fclose(f);
	free(buf);
	return NULL;
}

static int
gw_tls_own_cert(struct gw *gw)
{
	char *cert = pem_read(gw->cfg.tls_cert), *key = NULL;
	int rv = NNG_EINVAL;

	if (cert != NULL && (key = pem_read(gw->cfg.tls_key)) != NULL &&
	    (rv = nng_tls_config_own_cert(gw->tls, cert, key, NULL)) != 0)
		fprintf(stderr,
		    "mhs-gateway: --tls-cert/--tls-key: not a usable "
		    "certificate and key: %s\n",
		    nng_strerror(rv));
	free(cert);
	free(key);
	return rv;
}

static int
gw_tls_client_ca(struct gw *gw)
{
	int rv;

	if (gw->cfg.tls_client_ca[0] == '\0')
		return 0;
	if ((rv = nng_tls_config_ca_file(gw->tls, gw->cfg.tls_client_ca)) !=
	        0 ||
	    (rv = nng_tls_config_auth_mode(
	         gw->tls, NNG_TLS_AUTH_MODE_OPTIONAL)) != 0) {
		fprintf(stderr, "mhs-gateway: --tls-client-ca %s: %s\n",
		    gw->cfg.tls_client_ca, nng_strerror(rv));
		return rv;
	}
	gw->tls_check = gw->cfg.tls_require_client_cert;
	return 0;
}

static int
gw_tls_config(struct gw *gw)
{
	int rv;

	if (gw->tls != NULL)
		return 0;
	if (gw->cfg.tls_cert[0] == '\0' || gw->cfg.tls_key[0] == '\0') {
		fprintf(stderr,
		    "mhs-gateway: a tls+tcp:// listener needs "
		    "--tls-cert and --tls-key\n");
		return NNG_EINVAL;
	}
	if ((rv = nng_tls_config_alloc(&gw->tls, NNG_TLS_MODE_SERVER)) != 0)
		return rv;
	if ((rv = gw_tls_own_cert(gw)) != 0 ||
	    (rv = gw_tls_client_ca(gw)) != 0)
		return rv;
	return 0;
}

/* gw->listeners has room for every URL (its guards point into it). */
static int
gw_listen_one(struct gw *gw, const char *url)
{
	struct gw_listener *gl = &gw->listeners[gw->n_listeners];
	int rv;

	gl->tls = strncmp(url, "tls+tcp://", 10) == 0;
	if ((rv = nng_listener_create(&gl->l, gw->rep, url)) != 0)
		return rv;
	gw->n_listeners++;
	if (gl->tls &&
	    ((rv = gw_tls_config(gw)) != 0 ||
	        (rv = nng_listener_set_ptr(
	             gl->l, NNG_OPT_TLS_CONFIG, gw->tls)) != 0))
		return rv;
	if ((rv = nng_listener_start(gl->l, 0)) != 0)
		return rv;
	rv = mhs_listen_guard_start(
	    &gl->guard, gw->rep, &gl->l, url, nng_req0_open);
	return rv == 0 ? 0 : NNG_ENOMEM;
}

int
gw_listen_all(struct gw *gw)
{
	char *list = strdup(gw->cfg.listen), *save = NULL, *url;
	int rv = 0;

	size_t n = 1;

	if (list == NULL)
		return MHS_ENOMEM;
	for (const char *c = list; *c != '\0'; c++)
		n += *c == ',';
	if ((gw->listeners = calloc(n, sizeof(*gw->listeners))) == NULL) {
		free(list);
		return MHS_ENOMEM;
	}
	for (url = strtok_r(list, ",", &save); url != NULL && rv == 0;
	     url = strtok_r(NULL, ",", &save)) {
		if ((rv = gw_listen_one(gw, url)) != 0)
			fprintf(stderr,
			    "mhs-gateway: cannot listen on %s: %s\n", url,
			    nng_strerror(rv));
		else
			mhs_info("listening", "partner RPC on %s%s", url,
			    gw->tls_check &&
			            gw->listeners[gw->n_listeners - 1].tls
			        ? " (client certificate required)"
			        : "");
	}
	free(list);
	return rv == 0 ? 0 : mhs_err_nng(rv);
}

void
gw_listen_stop(struct gw *gw)
{
	for (size_t i = 0; i < gw->n_listeners; i++) {
		mhs_listen_guard_stop(gw->listeners[i].guard);
		gw->listeners[i].guard = NULL;
	}
}

void
gw_listen_fini(struct gw *gw)
{
	free(gw->listeners); /* closed with the socket */
	gw->listeners = NULL;
	gw->n_listeners = 0;
	if (gw->tls != NULL)
		nng_tls_config_free(gw->tls);
	gw->tls = NULL;
}

bool
gw_transport_ok(const struct gw *gw, nng_pipe p)
{
	nng_listener l;
	bool verified = false;

	if (!gw->tls_check)
		return true;
	l = nng_pipe_listener(p);
	for (size_t i = 0; i < gw->n_listeners; i++)
		if (gw->listeners[i].l.id == l.id)
			return !gw->listeners[i].tls ||
			    (nng_pipe_get_bool(
			         p, NNG_OPT_TLS_VERIFIED, &verified) == 0 &&
			        verified);
	return false; /* not from any listener of ours: refuse */
}
