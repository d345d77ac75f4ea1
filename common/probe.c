/*
 * Design notes: see probe.h. One nng HTTP server with three handlers; the
 * probe object is the handlers' data and outlives them (closed after the
 * server is stopped).
 */
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "probe.h"

struct mhs_probe {
	nng_http_server *server;
	mhs_ready_fn ready;
	mhs_metrics_fn metrics;
	void *arg;
};

static void
probe_reply(nng_aio *aio, uint16_t status, const char *ctype, const char *body,
    size_t len)
{
	nng_http_res *res;
	int rv;

	if ((rv = nng_http_res_alloc(&res)) != 0) {
		nng_aio_finish(aio, rv);
		return;
	}
	nng_http_res_set_status(res, status);
	nng_http_res_set_header(res, "Content-Type", ctype);
	nng_http_res_set_header(res, "Cache-Control", "no-store");
	if ((rv = nng_http_res_copy_data(res, body, len)) != 0) {
		nng_http_res_free(res);
		nng_aio_finish(aio, rv);
		return;
	}
	nng_aio_set_output(aio, 0, res);
	nng_aio_finish(aio, 0);
}

static struct mhs_probe *
probe_of(nng_aio *aio)
{
	return nng_http_handler_get_data(nng_aio_get_input(aio, 1));
}

static void
probe_livez(nng_aio *aio)
{
	probe_reply(aio, 200, "text/plain", "ok\n", 3);
}

static void
probe_readyz(nng_aio *aio)
{
	struct mhs_probe *p = probe_of(aio);
	char why[200] = "not ready", body[256];
	bool ok = p->ready == NULL || p->ready(p->arg, why, sizeof(why));
	int n = snprintf(body, sizeof(body), "%s\n", ok ? "ready" : why);

	probe_reply(aio, ok ? 200 : 503, "text/plain", body,
	    n > 0 && (size_t) n < sizeof(body) ? (size_t) n : strlen(body));
}

static void
probe_metrics(nng_aio *aio)
{
	struct mhs_probe *p = probe_of(aio);
	struct mhs_buf b = MHS_BUF_INIT;

	if (p->metrics != NULL)
		p->metrics(p->arg, &b);
	if (b.err != 0)
		probe_reply(aio, 500, "text/plain", "out of memory\n", 14);
	else
		probe_reply(aio, 200, "text/plain; version=0.0.4",
		    b.data ? b.data : "", b.len);
	mhs_buf_fini(&b);
}

static int
probe_add(struct mhs_probe *p, const char *path, void (*fn)(nng_aio *))
{
	nng_http_handler *h;
	int rv;

	if ((rv = nng_http_handler_alloc(&h, path, fn)) != 0)
		return rv;
	if ((rv = nng_http_handler_set_method(h, "GET")) != 0 ||
	    (rv = nng_http_handler_set_data(h, p, NULL)) != 0 ||
	    (rv = nng_http_server_add_handler(p->server, h)) != 0) {
		nng_http_handler_free(h);
		return rv;
	}
	return 0;
}

int
mhs_probe_open(struct mhs_probe **pp, const char *url, mhs_ready_fn ready,
    mhs_metrics_fn metrics, void *arg)
{
	struct mhs_probe *p;
	nng_url *u = NULL;
	int rv;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return MHS_ENOMEM;
	p->ready = ready;
	p->metrics = metrics;
	p->arg = arg;
	if ((rv = nng_url_parse(&u, url)) != 0)
		goto fail;
	if ((rv = nng_http_server_hold(&p->server, u)) != 0)
		goto fail;
	if ((rv = probe_add(p, "/livez", probe_livez)) != 0 ||
	    (rv = probe_add(p, "/readyz", probe_readyz)) != 0 ||
	    (rv = probe_add(p, "/metrics", probe_metrics)) != 0 ||
	    (rv = nng_http_server_start(p->server)) != 0)
		goto fail;
	nng_url_free(u);
	*pp = p;
	return 0;
fail:
	if (p->server != NULL)
		nng_http_server_release(p->server);
	nng_url_free(u);
	free(p);
	return mhs_err_nng(rv);
}

void
mhs_probe_close(struct mhs_probe *p)
{
	if (p == NULL)
		return;
	nng_http_server_stop(p->server);
	nng_http_server_release(p->server);
	free(p);
}
