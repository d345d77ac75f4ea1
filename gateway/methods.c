/*
 * Design notes: what the gateway serves, per method. The dispatch table is
 * built from the protobuf-c service descriptors (common/rpc.c); each
 * served method is bound to a gw_binding saying how to check its payload
 * and whether it is answered here (Health) or forwarded to the store.
 *
 * Payload rules, for every method:
 *   - at most --max-payload-bytes (3, reason oversize);
 *   - decodes as the method's input type (3);
 *   - no unknown fields, at any depth (3). A payload of another message
 *     type either fails to decode (a field number with another wire type)
 *     or leaves fields the input type does not have. Field numbers are
 *     never reused (DESIGN §3: contracts only grow), so an unknown field
 *     means either the wrong message or a client newer than this gateway
 *     using a field it does not know yet; both are refused rather than
 *     having part of a prescription message silently dropped. New fields
 *     therefore reach the gateway before partners may send them.
 *   - the method's own checks (DESIGN §3 validation: 3 naming the field;
 *     7 for a sender ODS the client may not use).
 * The envelope (mhs.rpc.v1.Request) itself may carry unknown fields:
 * they are transport metadata and are ignored.
 *
 * Never blocks; no state of its own after the table is sealed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gateway.h"
#include "grpc/health/v1/health.pb-c.h"
#include "mhs/store/v1/store.pb-c.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "status.h"
#include "validate.h"

#define GW_MAX_PAGE      1000
#define GW_MAX_REDELIVER 1000

typedef int (*gw_check_fn)(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen);
typedef void (*gw_local_fn)(struct gw_ctx *c, const ProtobufCMessage *in);

/* How the gateway serves one method (the dispatch table's handler). */
struct gw_binding {
	const char *store_method; /* forward here; NULL = answered locally */
	bool public;              /* no credentials needed (health) */
	gw_check_fn check;        /* returns a code, 0 = ok */
	gw_local_fn local;
	bool wrap_submit; /* wrap in an AppendRequest for the store */
};

#define FAIL(code, ...)                                                       \
	do {                                                                  \
		snprintf(why, whylen, __VA_ARGS__);                           \
		return (code);                                                \
	} while (0)

static int
check_submit_ids(const struct gw_ctx *c, const Mhs__V1__SubmitRequest *r,
    char *why, size_t whylen)
{
	size_t klen = strlen(r->idempotency_key);

	if (klen == 0 || klen > 128)
		FAIL(3, "idempotency_key: required, 1 to 128 characters");
	if (!mhs_interaction_shape_check(r->interaction_id) ||
	    mhs_route_find(&c->gw->routes, r->interaction_id) == NULL)
		FAIL(3, "interaction_id: not in the route table");
	if (!mhs_rx_id_check(r->prescription_id))
		FAIL(3,
		    "prescription_id: not a valid short-form prescription "
		    "ID (XXXXXX-XXXXXX-XXXXXC, MOD 37-2 check)");
	if (!mhs_nhs_number_check(r->nhs_number))
		FAIL(3,
		    "nhs_number: not a valid NHS number (10 digits, "
		    "Modulus 11)");
	return 0;
}

static int
check_submit(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__SubmitRequest *r = (const void *) in;
	int code;

	if ((code = check_submit_ids(c, r, why, whylen)) != 0)
		return code;
	if (!mhs_ods_check(r->sender_ods))
		FAIL(3, "sender_ods: 1 to 8 of A-Z, a-z, 0-9, '-'");
	if (r->recipient_ods[0] != '\0' && !mhs_ods_check(r->recipient_ods))
		FAIL(3, "recipient_ods: 1 to 8 of A-Z, a-z, 0-9, '-'");
	if (strlen(r->content_type) > 100)
		FAIL(3, "content_type: longer than 100 characters");
	if (r->payload.len == 0)
		FAIL(3, "payload: required");
	if (!gw_client_may_send_as(client, r->sender_ods))
		FAIL(7,
		    "sender_ods: this client may not submit for that "
		    "organisation");
	return 0;
}

static int
check_get_status(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__GetStatusRequest *r = (const void *) in;

	if (!mhs_message_id_check(r->message_id))
		FAIL(3, "message_id: expected an upper-case UUID");
	return 0;
}

static int
check_search(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__SearchRequest *r = (const void *) in;

	if (r->prescription_id[0] == '\0' && r->nhs_number[0] == '\0' &&
	    r->sender_ods[0] == '\0')
		FAIL(3,
		    "search: give prescription_id, nhs_number or "
		    "sender_ods");
	if (r->prescription_id[0] != '\0' &&
	    !mhs_rx_id_check(r->prescription_id))
		FAIL(3, "prescription_id: not a valid prescription ID");
	if (r->nhs_number[0] != '\0' && !mhs_nhs_number_check(r->nhs_number))
		FAIL(3, "nhs_number: not a valid NHS number");
	if (r->sender_ods[0] != '\0' && !mhs_ods_check(r->sender_ods))
		FAIL(3, "sender_ods: not a valid ODS code");
	if (r->page_size > GW_MAX_PAGE)
		FAIL(3, "page_size: at most %d", GW_MAX_PAGE);
	return 0;
}

static int
check_dead_letters(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__ListDeadLettersRequest *r = (const void *) in;

	if (r->page_size > GW_MAX_PAGE)
		FAIL(3, "page_size: at most %d", GW_MAX_PAGE);
	return 0;
}

static int
check_redeliver(struct gw_ctx *c, const ProtobufCMessage *in,
    const struct gw_client *client, char *why, size_t whylen)
{
	const Mhs__V1__RedeliverRequest *r = (const void *) in;

	if (r->n_message_ids == 0 || r->n_message_ids > GW_MAX_REDELIVER)
		FAIL(3, "message_ids: 1 to %d required", GW_MAX_REDELIVER);
	for (size_t i = 0; i < r->n_message_ids; i++)
		if (!mhs_message_id_check(r->message_ids[i]))
			FAIL(3,
			    "message_ids[%zu]: expected an upper-case UUID",
			    i);
	return 0;
}

#undef FAIL

static void
local_health_check(struct gw_ctx *c, const ProtobufCMessage *in)
{
	const Grpc__Health__V1__HealthCheckRequest *r = (const void *) in;
	Grpc__Health__V1__HealthCheckResponse resp =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

	if (r->service[0] != '\0' &&
	    strcmp(r->service, "mhs.v1.Prescriptions") != 0 &&
	    strcmp(r->service, "mhs.v1.Admin") != 0) {
		gw_reply(c, MHS_CODE_NOT_FOUND, "unknown service", NULL);
		return;
	}
	resp.status = gw_ready(c->gw)
	    ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	gw_reply(c, 0, NULL, &resp.base);
}

static const struct gw_binding bind_submit = {
    "/mhs.store.v1.Store/Append", false, check_submit, NULL, true};
static const struct gw_binding bind_get_status = {
    "/mhs.store.v1.Store/Get", false, check_get_status, NULL, false};
static const struct gw_binding bind_search = {
    "/mhs.store.v1.Store/Search", false, check_search, NULL, false};
static const struct gw_binding bind_dead_letters = {
    "/mhs.store.v1.Store/ListDeadLetters", false, check_dead_letters, NULL,
    false};
static const struct gw_binding bind_redeliver = {
    "/mhs.store.v1.Store/Redeliver", false, check_redeliver, NULL, false};
static const struct gw_binding bind_health = {
    NULL, true, NULL, local_health_check, false};

int
gw_table_build(struct gw *gw)
{
	static const struct {
		const char *path;
		const struct gw_binding *b;
	} binds[] = {
	    {"/mhs.v1.Prescriptions/Submit", &bind_submit},
	    {"/mhs.v1.Prescriptions/GetStatus", &bind_get_status},
	    {"/mhs.v1.Prescriptions/Search", &bind_search},
	    {"/mhs.v1.Admin/ListDeadLetters", &bind_dead_letters},
	    {"/mhs.v1.Admin/Redeliver", &bind_redeliver},
	    {"/grpc.health.v1.Health/Check", &bind_health},
	};
	int rv;

	if ((rv = mhs_rpc_table_add_service(
	         &gw->table, &mhs__v1__prescriptions__descriptor)) != 0 ||
	    (rv = mhs_rpc_table_add_service(
	         &gw->table, &mhs__v1__admin__descriptor)) != 0 ||
	    (rv = mhs_rpc_table_add_service(
	         &gw->table, &grpc__health__v1__health__descriptor)) != 0)
		return rv;
	for (size_t i = 0; i < sizeof(binds) / sizeof(binds[0]); i++)
		if ((rv = mhs_rpc_table_bind(
		         &gw->table, binds[i].path, binds[i].b)) != 0)
			return rv;
	mhs_rpc_table_seal(&gw->table);
	return gw->table.n < GW_SLOTS ? 0 : MHS_ETOOBIG;
}

bool
gw_method_public(const struct mhs_rpc_method *m)
{
	return ((const struct gw_binding *) m->handler)->public;
}

/*
 * unknown_field returns the number of the first field m (or a message
 * inside it) does not define, or 0 when there is none.
 */
static uint32_t
unknown_field(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	uint32_t n = 0;

	if (m->n_unknown_fields > 0)
		return m->unknown_fields[0].tag;
	for (unsigned i = 0; i < d->n_fields && n == 0; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *) m + f->offset;
		size_t count = 1;
		ProtobufCMessage *const *subs = (void *) base;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *) ((const char *) m +
		        f->quantifier_offset) != f->id)
			continue; /* another member of the oneof is set */
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			count = *(const size_t *) ((const char *) m +
			    f->quantifier_offset);
			subs = *(ProtobufCMessage *const *const *) base;
		}
		for (size_t k = 0; k < count && n == 0; k++)
			if (subs[k] != NULL)
				n = unknown_field(subs[k]);
	}
	return n;
}

/* gw_payload_unpack decodes the payload or refuses the request. */
static ProtobufCMessage *
gw_payload_unpack(struct gw_ctx *c, const ProtobufCMessageDescriptor *d,
    const ProtobufCBinaryData *p)
{
	ProtobufCMessage *in;
	char why[256];
	uint32_t field;

	if (p->len > (size_t) c->gw->cfg.max_payload_bytes) {
		snprintf(why, sizeof(why),
		    "payload: %zu bytes, more than the limit of %lld", p->len,
		    c->gw->cfg.max_payload_bytes);
		gw_refuse(c, MHS_CODE_INVALID_ARGUMENT, GW_R_OVERSIZE, 0, why);
		return NULL;
	}
	if ((in = protobuf_c_message_unpack(d, NULL, p->len, p->data)) ==
	    NULL) {
		snprintf(why, sizeof(why), "payload: not a valid %s", d->name);
		gw_refuse(
		    c, MHS_CODE_INVALID_ARGUMENT, GW_R_VALIDATION, 0, why);
		return NULL;
	}
	if ((field = unknown_field(in)) != 0) {
		snprintf(why, sizeof(why),
		    "payload: field %u is not part of %s (wrong message "
		    "type?)",
		    field, d->name);
		gw_refuse(
		    c, MHS_CODE_INVALID_ARGUMENT, GW_R_VALIDATION, 0, why);
		protobuf_c_message_free_unpacked(in, NULL);
		return NULL;
	}
	return in;
}

/* gw_submit_forward wraps a checked Submit for the store's Append. */
static void
gw_submit_forward(struct gw_ctx *c, const struct gw_binding *b,
    const struct gw_client *client, ProtobufCMessage *in)
{
	Mhs__Store__V1__AppendRequest ar =
	    MHS__STORE__V1__APPEND_REQUEST__INIT;
	ProtobufCBinaryData out;

	ar.submit = (Mhs__V1__SubmitRequest *) in;
	ar.client_id = (char *) client->id;
	ar.request_id = c->request_id;
	out.len = protobuf_c_message_get_packed_size(&ar.base);
	if ((out.data = malloc(out.len ? out.len : 1)) == NULL) {
		gw_reply(c, MHS_CODE_INTERNAL, "out of memory", NULL);
		return;
	}
	protobuf_c_message_pack(&ar.base, out.data);
	if (!gw_forward_admit(c))
		free(out.data);
	else if (c->gw->cfg.store_batch_calls > 0 &&
	    !atomic_load(&c->gw->batch.off))
		gw_batch_forward(c, &out); /* takes out.data */
	else {
		gw_forward_send(c, b->store_method, &out);
		free(out.data);
	}
}

void
gw_method_run(struct gw_ctx *c, const struct mhs_rpc_method *m,
    const struct gw_client *client, const mhs_rpc_request *req)
{
	const struct gw_binding *b = m->handler;
	ProtobufCMessage *in;
	char why[256] = "";
	int code;

	if ((in = gw_payload_unpack(c, m->desc->input, &req->payload)) == NULL)
		return;
	if (b->check != NULL &&
	    (code = b->check(c, in, client, why, sizeof(why))) != 0)
		gw_refuse(c, code,
		    code == MHS_CODE_PERMISSION_DENIED ? GW_R_PERMISSION
		                                       : GW_R_VALIDATION,
		    0, why);
	else if (b->local != NULL)
		b->local(c, in);
	else if (b->wrap_submit)
		gw_submit_forward(c, b, client, in);
	else /* checked, so forwarded as sent: the store decodes the same */
		gw_forward(c, b->store_method, &req->payload);
	protobuf_c_message_free_unpacked(in, NULL);
}
