/*
 * Design notes: see rpc.h. The dispatch table is built at start on one
 * thread and only read afterwards (sealed on first lookup), so lookups
 * need no lock.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rpc.h"
#include "spfix.h"

mhs_rpc_request *
mhs_rpc_request_decode(const void *buf, size_t len)
{
	return mhs__rpc__v1__request__unpack(NULL, len, buf);
}

void
mhs_rpc_request_free(mhs_rpc_request *req)
{
	if (req != NULL)
		mhs__rpc__v1__request__free_unpacked(req, NULL);
}

const char *
mhs_rpc_meta_get(const mhs_rpc_request *req, const char *key)
{
	for (size_t i = 0; i < req->n_metadata; i++)
		if (strcmp(req->metadata[i]->key, key) == 0)
			return req->metadata[i]->value;
	return NULL;
}

/*
 * pack_into_msg packs m into a new nng_msg of exactly its size. The
 * envelope and payload are packed separately: the payload first into a
 * temporary, since the envelope holds it as bytes.
 */
static int
pack_into_msg(nng_msg **mp, const ProtobufCMessage *m)
{
	size_t sz = protobuf_c_message_get_packed_size(m);
	int rv;

	if ((rv = nng_msg_alloc(mp, sz)) != 0)
		return mhs_err_nng(rv);
	protobuf_c_message_pack(m, nng_msg_body(*mp));
	return 0;
}

static int
pack_payload(const ProtobufCMessage *m, ProtobufCBinaryData *out)
{
	out->len = 0;
	out->data = NULL;
	if (m == NULL)
		return 0;
	out->len = protobuf_c_message_get_packed_size(m);
	if (out->len == 0)
		return 0;
	if ((out->data = malloc(out->len)) == NULL)
		return MHS_ENOMEM;
	protobuf_c_message_pack(m, out->data);
	return 0;
}

int
mhs_rpc_response_msg(nng_msg **mp, int code, const char *message,
    const ProtobufCMessage *payload, const struct mhs_rpc_meta *meta,
    size_t nmeta)
{
	Mhs__Rpc__V1__Response resp = MHS__RPC__V1__RESPONSE__INIT;
	Mhs__Rpc__V1__Response__MetadataEntry ents[8], *ptrs[8];
	int rv;

	if (nmeta > 8)
		return MHS_EINVAL;
	for (size_t i = 0; i < nmeta; i++) {
		Mhs__Rpc__V1__Response__MetadataEntry e =
		    MHS__RPC__V1__RESPONSE__METADATA_ENTRY__INIT;
		e.key = (char *) meta[i].key;
		e.value = (char *) meta[i].value;
		ents[i] = e;
		ptrs[i] = &ents[i];
	}
	resp.code = code;
	resp.message = (char *) (message ? message : "");
	resp.n_metadata = nmeta;
	resp.metadata = ptrs;
	if (code == 0 && (rv = pack_payload(payload, &resp.payload)) != 0)
		return rv;
	rv = pack_into_msg(mp, &resp.base);
	free(resp.payload.data);
	return rv;
}

int
mhs_rpc_request_msg(nng_msg **mp, const char *method,
    const ProtobufCMessage *payload, const struct mhs_rpc_meta *meta,
    size_t nmeta, uint32_t timeout_ms)
{
	Mhs__Rpc__V1__Request req = MHS__RPC__V1__REQUEST__INIT;
	Mhs__Rpc__V1__Request__MetadataEntry ents[8], *ptrs[8];
	int rv;

	if (nmeta > 8)
		return MHS_EINVAL;
	for (size_t i = 0; i < nmeta; i++) {
		Mhs__Rpc__V1__Request__MetadataEntry e =
		    MHS__RPC__V1__REQUEST__METADATA_ENTRY__INIT;
		e.key = (char *) meta[i].key;
		e.value = (char *) meta[i].value;
		ents[i] = e;
		ptrs[i] = &ents[i];
	}
	req.method = (char *) method;
	req.n_metadata = nmeta;
	req.metadata = ptrs;
	req.timeout_ms = timeout_ms;
	if ((rv = pack_payload(payload, &req.payload)) != 0)
		return rv;
	rv = pack_into_msg(mp, &req.base);
	free(req.payload.data);
	return rv;
}

int
mhs_rpc_table_add_service(
    struct mhs_rpc_table *t, const ProtobufCServiceDescriptor *svc)
{
	struct mhs_rpc_method *m;

	if (t->sealed)
		return MHS_ESTATE;
	m = realloc(t->methods, (t->n + svc->n_methods) * sizeof(*m));
	if (m == NULL)
		return MHS_ENOMEM;
	t->methods = m;
	for (unsigned i = 0; i < svc->n_methods; i++) {
		struct mhs_rpc_method *e = &t->methods[t->n++];
		int n = snprintf(e->path, sizeof(e->path), "/%s/%s", svc->name,
		    svc->methods[i].name);

		if (n < 0 || (size_t) n >= sizeof(e->path))
			return MHS_ETOOBIG;
		e->service = svc;
		e->desc = &svc->methods[i];
		e->handler = NULL;
	}
	return 0;
}

static int
method_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mhs_rpc_method *) a)->path,
	    ((const struct mhs_rpc_method *) b)->path);
}

int
mhs_rpc_table_bind(
    struct mhs_rpc_table *t, const char *path, const void *handler)
{
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->methods[i].path, path) == 0) {
			t->methods[i].handler = handler;
			return 0;
		}
	}
	return MHS_ENOTFOUND;
}

const struct mhs_rpc_method *
mhs_rpc_table_find(const struct mhs_rpc_table *t, const char *path)
{
	struct mhs_rpc_method key;

	if (!t->sealed || t->n == 0 || path == NULL ||
	    strlen(path) >= sizeof(key.path))
		return NULL;
	strcpy(key.path, path);
	return bsearch(
	    &key, t->methods, t->n, sizeof(*t->methods), method_cmp);
}

void
mhs_rpc_table_seal(struct mhs_rpc_table *t)
{
	if (t->n > 0) /* methods is NULL when empty: qsort's UB */
		qsort(t->methods, t->n, sizeof(*t->methods), method_cmp);
	t->sealed = true;
}

void
mhs_rpc_table_fini(struct mhs_rpc_table *t)
{
	free(t->methods);
	t->methods = NULL;
	t->n = 0;
	t->sealed = false;
}

struct mhs_client {
	nng_socket sock;
	struct mhs_redial dial; /* spfix.h: nng 1.5.2's ipc bug */
};

int
mhs_client_open(struct mhs_client **cp, const char *url)
{
	struct mhs_client *c;
	int rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return MHS_ENOMEM;
	if ((rv = nng_req0_open(&c->sock)) != 0) {
		free(c);
		return mhs_err_nng(rv);
	}
	nng_socket_set_ms(
	    c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 1000);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, 64u << 20);
	if ((rv = mhs_redial_start(&c->dial, c->sock, url)) != 0) {
		nng_close(c->sock);
		free(c);
		return rv;
	}
	*cp = c;
	return 0;
}

void
mhs_client_close(struct mhs_client *c)
{
	if (c == NULL)
		return;
	nng_close(c->sock);
	mhs_redial_fini(&c->dial);
	free(c);
}

/* client_exchange sends msg (always consumed) and receives the reply. */
static int
client_exchange(
    struct mhs_client *c, nng_msg *msg, int timeout_ms, nng_msg **replyp)
{
	nng_ctx ctx;
	nng_aio *aio;
	int rv;

	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
		nng_msg_free(msg);
		return mhs_err_nng(rv);
	}
	if ((rv = nng_ctx_open(&ctx, c->sock)) != 0) {
		nng_aio_free(aio);
		nng_msg_free(msg);
		return mhs_err_nng(rv);
	}
	nng_aio_set_timeout(aio, timeout_ms);
	nng_aio_set_msg(aio, msg);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		goto done;
	}
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) == 0)
		*replyp = nng_aio_get_msg(aio);
done:
	nng_ctx_close(ctx);
	nng_aio_free(aio);
	return mhs_err_nng(rv);
}

int
mhs_client_call(struct mhs_client *c, const char *method,
    const ProtobufCMessage *in, const ProtobufCMessageDescriptor *out_desc,
    ProtobufCMessage **outp, const struct mhs_rpc_meta *meta, size_t nmeta,
    int timeout_ms, char **errmsg)
{
	Mhs__Rpc__V1__Response *resp;
	nng_msg *msg, *reply = NULL;
	int rv, code;

	if (outp != NULL)
		*outp = NULL;
	if (errmsg != NULL)
		*errmsg = NULL;
	mhs_redial_check(&c->dial);
	rv = mhs_rpc_request_msg(&msg, method, in, meta, nmeta,
	    timeout_ms > 0 ? (uint32_t) timeout_ms : 0);
	if (rv != 0)
		return rv;
	if ((rv = client_exchange(c, msg, timeout_ms, &reply)) != 0)
		return rv;
	resp = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(reply), nng_msg_body(reply));
	nng_msg_free(reply);
	if (resp == NULL)
		return MHS_EPROTO;
	code = resp->code;
	if (errmsg != NULL && resp->message[0] != '\0')
		*errmsg = strdup(resp->message);
	if (code == 0 && out_desc != NULL && outp != NULL) {
		*outp = protobuf_c_message_unpack(
		    out_desc, NULL, resp->payload.len, resp->payload.data);
		if (*outp == NULL)
			code = MHS_EPROTO;
	}
	mhs__rpc__v1__response__free_unpacked(resp, NULL);
	return code;
}
