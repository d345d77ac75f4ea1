/*
 * Design notes: the mhs.rpc.v1 envelope (DESIGN §3) and method dispatch.
 *
 * - Codec: decode a Request from wire bytes (NULL when undecodable, which
 *   the caller answers with code 3); encode a Response straight into an
 *   nng_msg.
 * - Dispatch: a table of method paths built from protobuf-c service
 *   descriptors, never from hand-kept strings. Every method the descriptor
 *   names gets a path "/<package.Service>/<Method>"; a program binds a
 *   handler (any pointer) to the ones it serves. A path in the table with
 *   no handler, or not in it at all, is answered 12 by the caller.
 * - Client: a synchronous caller over nng REQ for routers, tools and
 *   tests. Calls on one client may be made from several threads at once;
 *   each uses its own nng context.
 */
#ifndef MHS_RPC_H
#define MHS_RPC_H

#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "mhs/rpc/v1/rpc.pb-c.h"

typedef Mhs__Rpc__V1__Request mhs_rpc_request;
typedef Mhs__Rpc__V1__Response mhs_rpc_response;

/* One metadata pair for a reply or a call. */
struct mhs_rpc_meta {
	const char *key;
	const char *value;
};

/* mhs_rpc_request_decode returns NULL when buf is not a Request. */
mhs_rpc_request *mhs_rpc_request_decode(const void *buf, size_t len);
void mhs_rpc_request_free(mhs_rpc_request *req);

/* mhs_rpc_meta_get returns the value for key (exact, lower case) or NULL. */
const char *mhs_rpc_meta_get(const mhs_rpc_request *req, const char *key);

/*
 * mhs_rpc_response_msg encodes a Response into a new nng_msg. payload may
 * be NULL; it is sent only when code is 0. On success *mp belongs to the
 * caller.
 */
int mhs_rpc_response_msg(nng_msg **mp, int code, const char *message,
    const ProtobufCMessage *payload, const struct mhs_rpc_meta *meta,
    size_t nmeta);

/* mhs_rpc_request_msg encodes a Request into a new nng_msg. */
int mhs_rpc_request_msg(nng_msg **mp, const char *method,
    const ProtobufCMessage *payload, const struct mhs_rpc_meta *meta,
    size_t nmeta, uint32_t timeout_ms);

struct mhs_rpc_method {
	char path[128];
	const ProtobufCServiceDescriptor *service;
	const ProtobufCMethodDescriptor *desc; /* ->input, ->output */
	const void *handler;                   /* NULL: not served (12) */
};

struct mhs_rpc_table {
	struct mhs_rpc_method *methods; /* sorted by path once sealed */
	size_t n;
	bool sealed;
};

/* mhs_rpc_table_add_service adds every method of svc, unbound. */
int mhs_rpc_table_add_service(
    struct mhs_rpc_table *t, const ProtobufCServiceDescriptor *svc);

/* mhs_rpc_table_bind sets the handler of "/pkg.Service/Method". */
int mhs_rpc_table_bind(
    struct mhs_rpc_table *t, const char *path, const void *handler);

/* mhs_rpc_table_seal sorts the table; call once, before serving. */
void mhs_rpc_table_seal(struct mhs_rpc_table *t);

/* mhs_rpc_table_find returns the method for path, or NULL (also before
 * the table is sealed). Safe from any thread once sealed. */
const struct mhs_rpc_method *mhs_rpc_table_find(
    const struct mhs_rpc_table *t, const char *path);

void mhs_rpc_table_fini(struct mhs_rpc_table *t);

struct mhs_client;

/*
 * mhs_client_open dials url (tcp://, ipc://) in the background; calls made
 * before the connection is up wait for it until their timeout. REQ resends
 * are disabled: a caller that needs a retry makes it, with the same
 * idempotency key.
 */
int mhs_client_open(struct mhs_client **cp, const char *url);
void mhs_client_close(struct mhs_client *c);

/*
 * mhs_client_call sends one call and waits up to timeout_ms for the reply.
 * Returns the reply's status code (>= 0), or a negative mhs_err when no
 * reply came (MHS_ETIMEDOUT, MHS_EUNAVAIL, ...). When the code is 0 and
 * out_desc is not NULL, *outp is the decoded reply payload (free it with
 * protobuf_c_message_free_unpacked). When errmsg is not NULL it receives
 * the reply's message text (caller frees).
 */
int mhs_client_call(struct mhs_client *c, const char *method,
    const ProtobufCMessage *in, const ProtobufCMessageDescriptor *out_desc,
    ProtobufCMessage **outp, const struct mhs_rpc_meta *meta, size_t nmeta,
    int timeout_ms, char **errmsg);

#endif /* MHS_RPC_H */
