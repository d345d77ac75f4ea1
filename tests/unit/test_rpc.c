/*
 * The mhs.rpc.v1 envelope (DESIGN §3) and the dispatch table built from
 * protobuf-c service descriptors (common/rpc.h).
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "grpc/health/v1/health.pb-c.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"

/* ---- envelope ------------------------------------------------------- */

static Mhs__V1__SubmitRequest
sample_submit(void)
{
	static uint8_t hl7[] = "<PORX_IN020101SM31>\0binary\xff</>";
	Mhs__V1__SubmitRequest s = MHS__V1__SUBMIT_REQUEST__INIT;

	s.idempotency_key = "key-1";
	s.interaction_id = "PORX_IN020101SM31";
	s.prescription_id = "04F4C2-A99968-7F717P";
	s.nhs_number = "9434765919";
	s.sender_ods = "Y12345";
	s.recipient_ods = "";
	s.content_type = "text/xml";
	s.payload.data = hl7;
	s.payload.len = sizeof(hl7) - 1;
	return s;
}

static const struct mhs_rpc_meta sample_meta[] = {
    {"authorization", "Bearer secret-token"},
    {"x-request-id", "req-42"},
};

/* packed returns a malloc'd packing of m, its size in *len. */
static uint8_t *
packed(const ProtobufCMessage *m, size_t *len)
{
	uint8_t *p;

	*len = protobuf_c_message_get_packed_size(m);
	p = malloc(*len ? *len : 1);
	cr_assert_not_null(p);
	cr_assert_eq(protobuf_c_message_pack(m, p), *len);
	return p;
}

/* decode_copy decodes len bytes from an exact-size heap copy (for ASan). */
static mhs_rpc_request *
decode_copy(const void *buf, size_t len)
{
	void *copy = malloc(len ? len : 1);
	mhs_rpc_request *req;

	cr_assert_not_null(copy);
	if (len > 0)
		memcpy(copy, buf, len);
	req = mhs_rpc_request_decode(copy, len);
	free(copy);
	return req;
}

Test(envelope, request_roundtrip)
{
	Mhs__V1__SubmitRequest in = sample_submit();
	Mhs__V1__SubmitRequest *out;
	mhs_rpc_request *req;
	nng_msg *msg;
	uint8_t *want;
	size_t want_len;

	cr_assert_eq(mhs_rpc_request_msg(&msg, "/mhs.v1.Prescriptions/Submit",
	                 &in.base, sample_meta, 2, 1500),
	    0);
	req = decode_copy(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	cr_assert_not_null(req);

	cr_assert_str_eq(req->method, "/mhs.v1.Prescriptions/Submit");
	cr_assert_eq(req->timeout_ms, 1500);
	want = packed(&in.base, &want_len);
	cr_assert_eq(req->payload.len, want_len);
	cr_assert_eq(memcmp(req->payload.data, want, want_len), 0);
	free(want);

	cr_assert_eq(req->n_metadata, 2);
	cr_assert_str_eq(
	    mhs_rpc_meta_get(req, "authorization"), "Bearer secret-token");
	cr_assert_str_eq(mhs_rpc_meta_get(req, "x-request-id"), "req-42");

	out = mhs__v1__submit_request__unpack(
	    NULL, req->payload.len, req->payload.data);
	cr_assert_not_null(out);
	cr_assert_str_eq(out->idempotency_key, "key-1");
	cr_assert_str_eq(out->interaction_id, "PORX_IN020101SM31");
	cr_assert_str_eq(out->prescription_id, "04F4C2-A99968-7F717P");
	cr_assert_str_eq(out->nhs_number, "9434765919");
	cr_assert_str_eq(out->sender_ods, "Y12345");
	cr_assert_str_eq(out->content_type, "text/xml");
	cr_assert_eq(out->payload.len, in.payload.len);
	cr_assert_eq(
	    memcmp(out->payload.data, in.payload.data, in.payload.len), 0);
	mhs__v1__submit_request__free_unpacked(out, NULL);
	mhs_rpc_request_free(req);
}

Test(envelope, request_without_payload_or_metadata)
{
	mhs_rpc_request *req;
	nng_msg *msg;

	cr_assert_eq(mhs_rpc_request_msg(&msg, "/grpc.health.v1.Health/Check",
	                 NULL, NULL, 0, 0),
	    0);
	req = decode_copy(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	cr_assert_not_null(req);
	cr_assert_str_eq(req->method, "/grpc.health.v1.Health/Check");
	cr_assert_eq(req->payload.len, 0);
	cr_assert_eq(req->n_metadata, 0);
	cr_assert_eq(req->timeout_ms, 0);
	cr_assert_null(mhs_rpc_meta_get(req, "authorization"));
	mhs_rpc_request_free(req);
}

Test(envelope, meta_get_exact_key)
{
	mhs_rpc_request *req;
	nng_msg *msg;

	cr_assert_eq(
	    mhs_rpc_request_msg(&msg, "/m/x", NULL, sample_meta, 2, 10), 0);
	req = decode_copy(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	cr_assert_not_null(req);
	cr_assert_str_eq(mhs_rpc_meta_get(req, "x-request-id"), "req-42");
	cr_assert_null(mhs_rpc_meta_get(req, "Authorization"));
	cr_assert_null(mhs_rpc_meta_get(req, "authorization "));
	cr_assert_null(mhs_rpc_meta_get(req, "x-request"));
	cr_assert_null(mhs_rpc_meta_get(req, ""));
	mhs_rpc_request_free(req);
}

Test(envelope, too_much_metadata_refused)
{
	struct mhs_rpc_meta m[9];
	nng_msg *msg = NULL;

	for (int i = 0; i < 9; i++)
		m[i] = (struct mhs_rpc_meta) {"k", "v"};
	cr_assert_eq(
	    mhs_rpc_request_msg(&msg, "/m/x", NULL, m, 9, 0), MHS_EINVAL);
	cr_assert_eq(
	    mhs_rpc_response_msg(&msg, 0, "", NULL, m, 9), MHS_EINVAL);
	cr_assert_null(msg);
	cr_assert_eq(mhs_rpc_request_msg(&msg, "/m/x", NULL, m, 8, 0), 0);
	nng_msg_free(msg);
}

Test(envelope, garbage_is_not_a_request)
{
	static const struct {
		const char *bytes;
		size_t len;
	} bad[] = {
	    {"\xff\xff\xff", 3},
	    {"\xff", 1},
	    /* method: length 2^32-1, no data */
	    {"\x0a\xff\xff\xff\xff\x0f", 6},
	    /* method (field 1, a string) sent as a varint */
	    {"\x08\x01", 2},
	    /* field 0 is never valid */
	    {"\x00\x00", 2},
	    /* wire types 6 and 7 do not exist */
	    {"\x0e\x00", 2},
	    {"\x0f\x00", 2},
	    /* varint longer than 10 bytes */
	    {"\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 13},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_null(
		    decode_copy(bad[i].bytes, bad[i].len), "case %zu", i);
}

Test(envelope, empty_buffer_is_empty_request)
{
	mhs_rpc_request *req = decode_copy("", 0);

	cr_assert_not_null(req);
	cr_assert_not_null(req->method);
	cr_assert_str_eq(req->method, "");
	cr_assert_eq(req->payload.len, 0);
	cr_assert_eq(req->n_metadata, 0);
	cr_assert_eq(req->timeout_ms, 0);
	mhs_rpc_request_free(req);
}

/*
 * Cut at every byte offset: only the field boundaries give a Request (a
 * protobuf prefix ending between fields is a valid message); every cut
 * inside a field is refused.
 */
Test(envelope, truncated_encoding_is_not_a_request)
{
	Mhs__V1__SubmitRequest in = sample_submit();
	Mhs__Rpc__V1__Request r = MHS__RPC__V1__REQUEST__INIT;
	Mhs__Rpc__V1__Request__MetadataEntry e[2] = {
	    MHS__RPC__V1__REQUEST__METADATA_ENTRY__INIT,
	    MHS__RPC__V1__REQUEST__METADATA_ENTRY__INIT};
	Mhs__Rpc__V1__Request__MetadataEntry *ep[2] = {&e[0], &e[1]};
	size_t bound[5], nb = 0, len;
	uint8_t *full, *tmp;
	nng_msg *msg;

	cr_assert_eq(mhs_rpc_request_msg(&msg, "/mhs.v1.Prescriptions/Submit",
	                 &in.base, sample_meta, 2, 1500),
	    0);
	len = nng_msg_len(msg);
	full = malloc(len);
	memcpy(full, nng_msg_body(msg), len);
	nng_msg_free(msg);

	/* Field boundaries: pack the fields up to each in turn. */
	r.method = "/mhs.v1.Prescriptions/Submit";
	bound[nb++] = protobuf_c_message_get_packed_size(&r.base);
	tmp = packed(&in.base, &r.payload.len);
	r.payload.data = tmp;
	bound[nb++] = protobuf_c_message_get_packed_size(&r.base);
	for (int i = 0; i < 2; i++) {
		e[i].key = (char *) sample_meta[i].key;
		e[i].value = (char *) sample_meta[i].value;
	}
	r.metadata = ep;
	r.n_metadata = 1;
	bound[nb++] = protobuf_c_message_get_packed_size(&r.base);
	r.n_metadata = 2;
	bound[nb++] = protobuf_c_message_get_packed_size(&r.base);
	r.timeout_ms = 1500;
	bound[nb++] = protobuf_c_message_get_packed_size(&r.base);
	free(tmp);
	cr_assert_eq(bound[nb - 1], len);

	for (size_t cut = 1; cut < len; cut++) {
		mhs_rpc_request *req = decode_copy(full, cut);
		bool at_boundary = false;

		for (size_t b = 0; b < nb; b++)
			at_boundary |= cut == bound[b];
		if (!at_boundary) {
			cr_assert_null(req, "cut at %zu of %zu", cut, len);
			continue;
		}
		cr_assert_not_null(req, "cut at %zu of %zu", cut, len);
		cr_assert_str_eq(req->method, "/mhs.v1.Prescriptions/Submit");
		cr_assert_eq(req->n_metadata,
		    cut >= bound[3]       ? 2
		        : cut >= bound[2] ? 1
		                          : 0);
		cr_assert_eq(req->timeout_ms, 0);
		mhs_rpc_request_free(req);
	}
	free(full);
}

/* Every byte of a good request replaced by 0xff: no crash, no over-read. */
Test(envelope, corrupted_byte_never_crashes)
{
	Mhs__V1__SubmitRequest in = sample_submit();
	nng_msg *msg;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(mhs_rpc_request_msg(&msg, "/mhs.v1.Prescriptions/Submit",
	                 &in.base, sample_meta, 2, 1500),
	    0);
	len = nng_msg_len(msg);
	buf = malloc(len);
	for (size_t i = 0; i < len; i++) {
		static const uint8_t vals[] = {0x00, 0x7f, 0x80, 0xff};

		for (size_t v = 0; v < sizeof(vals); v++) {
			mhs_rpc_request *req;

			memcpy(buf, nng_msg_body(msg), len);
			buf[i] = vals[v];
			req = decode_copy(buf, len);
			if (req == NULL)
				continue;
			cr_assert_not_null(req->method);
			(void) strlen(req->method);
			for (size_t k = 0; k < req->n_metadata; k++)
				cr_assert_not_null(req->metadata[k]->key);
			(void) mhs_rpc_meta_get(req, "x-request-id");
			mhs_rpc_request_free(req);
		}
	}
	free(buf);
	nng_msg_free(msg);
}

Test(envelope, response_ok_carries_payload)
{
	Mhs__V1__SubmitResponse sr = MHS__V1__SUBMIT_RESPONSE__INIT;
	Mhs__Rpc__V1__Response *resp;
	Mhs__V1__SubmitResponse *out;
	const struct mhs_rpc_meta meta[] = {{"x-request-id", "req-42"}};
	nng_msg *msg;

	sr.message_id = "6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C";
	sr.state = MHS__V1__MESSAGE_STATE__MESSAGE_STATE_ACCEPTED;
	sr.duplicate = 1;
	sr.accepted_at_ms = 1700000000123;
	cr_assert_eq(
	    mhs_rpc_response_msg(&msg, 0, NULL, &sr.base, meta, 1), 0);
	resp = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->code, 0);
	cr_assert_str_eq(resp->message, "");
	cr_assert_eq(resp->n_metadata, 1);
	cr_assert_str_eq(resp->metadata[0]->key, "x-request-id");
	cr_assert_str_eq(resp->metadata[0]->value, "req-42");
	cr_assert_gt(resp->payload.len, 0);
	out = mhs__v1__submit_response__unpack(
	    NULL, resp->payload.len, resp->payload.data);
	cr_assert_not_null(out);
	cr_assert_str_eq(out->message_id, sr.message_id);
	cr_assert_eq(out->state, sr.state);
	cr_assert_eq(out->duplicate, 1);
	cr_assert_eq(out->accepted_at_ms, 1700000000123);
	mhs__v1__submit_response__free_unpacked(out, NULL);
	mhs__rpc__v1__response__free_unpacked(resp, NULL);
}

Test(envelope, response_error_omits_payload)
{
	Mhs__V1__SubmitResponse sr = MHS__V1__SUBMIT_RESPONSE__INIT;
	Mhs__Rpc__V1__Response *resp;
	const struct mhs_rpc_meta meta[] = {{"retry-after-ms", "250"}};
	nng_msg *msg;

	sr.message_id = "6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C";
	cr_assert_eq(mhs_rpc_response_msg(&msg, 3,
	                 "nhs_number: bad check digit", &sr.base, meta, 1),
	    0);
	resp = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->code, 3);
	cr_assert_str_eq(resp->message, "nhs_number: bad check digit");
	cr_assert_eq(resp->payload.len, 0);
	cr_assert_eq(resp->n_metadata, 1);
	cr_assert_str_eq(resp->metadata[0]->value, "250");
	mhs__rpc__v1__response__free_unpacked(resp, NULL);

	/* Negative and large codes travel as they are. */
	cr_assert_eq(mhs_rpc_response_msg(&msg, 16, "", NULL, NULL, 0), 0);
	resp = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->code, 16);
	mhs__rpc__v1__response__free_unpacked(resp, NULL);
}

Test(envelope, response_ok_with_empty_payload)
{
	Mhs__V1__SubmitResponse sr = MHS__V1__SUBMIT_RESPONSE__INIT;
	Mhs__Rpc__V1__Response *resp;
	nng_msg *msg;

	/* All defaults pack to zero bytes: payload present but empty. */
	cr_assert_eq(mhs_rpc_response_msg(&msg, 0, "", &sr.base, NULL, 0), 0);
	resp = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->code, 0);
	cr_assert_eq(resp->payload.len, 0);
	mhs__rpc__v1__response__free_unpacked(resp, NULL);
}

/* ---- dispatch ------------------------------------------------------- */

static int h_submit, h_status, h_check;

static void
table_build(struct mhs_rpc_table *t)
{
	memset(t, 0, sizeof(*t));
	cr_assert_eq(
	    mhs_rpc_table_add_service(t, &mhs__v1__prescriptions__descriptor),
	    0);
	cr_assert_eq(
	    mhs_rpc_table_add_service(t, &mhs__v1__admin__descriptor), 0);
	cr_assert_eq(mhs_rpc_table_add_service(
	                 t, &grpc__health__v1__health__descriptor),
	    0);
	cr_assert_eq(
	    mhs_rpc_table_bind(t, "/mhs.v1.Prescriptions/Submit", &h_submit),
	    0);
	cr_assert_eq(mhs_rpc_table_bind(
	                 t, "/mhs.v1.Prescriptions/GetStatus", &h_status),
	    0);
	cr_assert_eq(
	    mhs_rpc_table_bind(t, "/grpc.health.v1.Health/Check", &h_check),
	    0);
}

Test(dispatch, every_descriptor_method_has_a_path)
{
	const ProtobufCServiceDescriptor *svcs[] = {
	    &mhs__v1__prescriptions__descriptor, &mhs__v1__admin__descriptor,
	    &grpc__health__v1__health__descriptor};
	struct mhs_rpc_table t;
	size_t total = 0;

	table_build(&t);
	mhs_rpc_table_seal(&t);
	for (size_t s = 0; s < 3; s++) {
		for (unsigned m = 0; m < svcs[s]->n_methods; m++) {
			const struct mhs_rpc_method *e;
			char path[128];

			snprintf(path, sizeof(path), "/%s/%s", svcs[s]->name,
			    svcs[s]->methods[m].name);
			e = mhs_rpc_table_find(&t, path);
			cr_assert_not_null(e, "%s", path);
			cr_assert_str_eq(e->path, path);
			cr_assert_eq(e->service, svcs[s]);
			cr_assert_eq(e->desc, &svcs[s]->methods[m]);
			total++;
		}
	}
	/* Submit, GetStatus, Search; ListDeadLetters, Redeliver; Check,
	 * Watch. */
	cr_assert_eq(total, 7);
	cr_assert_eq(t.n, 7);
	mhs_rpc_table_fini(&t);
}

Test(dispatch, submit_found_with_its_descriptors)
{
	struct mhs_rpc_table t;
	const struct mhs_rpc_method *m;

	table_build(&t);
	mhs_rpc_table_seal(&t);
	m = mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit");
	cr_assert_not_null(m);
	cr_assert_eq(m->desc->input, &mhs__v1__submit_request__descriptor);
	cr_assert_eq(m->desc->output, &mhs__v1__submit_response__descriptor);
	cr_assert_eq(m->service, &mhs__v1__prescriptions__descriptor);
	cr_assert_eq(m->handler, &h_submit);

	m = mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/GetStatus");
	cr_assert_not_null(m);
	cr_assert_eq(m->desc->input, &mhs__v1__get_status_request__descriptor);
	cr_assert_eq(m->desc->output, &mhs__v1__message_status__descriptor);
	cr_assert_eq(m->handler, &h_status);

	m = mhs_rpc_table_find(&t, "/grpc.health.v1.Health/Check");
	cr_assert_not_null(m);
	cr_assert_eq(m->desc->input,
	    &grpc__health__v1__health_check_request__descriptor);
	cr_assert_eq(m->handler, &h_check);
	mhs_rpc_table_fini(&t);
}

Test(dispatch, unknown_path_not_found)
{
	struct mhs_rpc_table t;

	table_build(&t);
	mhs_rpc_table_seal(&t);
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Delete"));
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Sub"));
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/submit"));
	cr_assert_null(mhs_rpc_table_find(&t, "mhs.v1.Prescriptions/Submit"));
	cr_assert_null(
	    mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit/"));
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions"));
	cr_assert_null(mhs_rpc_table_find(&t, "/"));
	cr_assert_null(mhs_rpc_table_find(&t, ""));
	cr_assert_null(mhs_rpc_table_find(&t, NULL));
	mhs_rpc_table_fini(&t);
}

Test(dispatch, unbound_method_found_without_handler)
{
	struct mhs_rpc_table t;
	const struct mhs_rpc_method *m;

	table_build(&t);
	mhs_rpc_table_seal(&t);
	m = mhs_rpc_table_find(&t, "/grpc.health.v1.Health/Watch");
	cr_assert_not_null(m);
	cr_assert_null(m->handler);
	m = mhs_rpc_table_find(&t, "/mhs.v1.Admin/Redeliver");
	cr_assert_not_null(m);
	cr_assert_null(m->handler);
	mhs_rpc_table_fini(&t);
}

Test(dispatch, bind_unknown_path_is_not_found)
{
	struct mhs_rpc_table t;

	table_build(&t);
	cr_assert_eq(
	    mhs_rpc_table_bind(&t, "/mhs.v1.Prescriptions/Delete", &h_submit),
	    MHS_ENOTFOUND);
	cr_assert_eq(mhs_rpc_table_bind(&t, "", &h_submit), MHS_ENOTFOUND);
	mhs_rpc_table_seal(&t);
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Delete"));
	mhs_rpc_table_fini(&t);
}

Test(dispatch, find_before_seal_is_null)
{
	struct mhs_rpc_table t;

	table_build(&t);
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit"));
	mhs_rpc_table_seal(&t);
	cr_assert_not_null(
	    mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit"));
	mhs_rpc_table_fini(&t);
	cr_assert_eq(t.n, 0);
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit"));
}

Test(dispatch, add_after_seal_refused)
{
	struct mhs_rpc_table t;

	table_build(&t);
	mhs_rpc_table_seal(&t);
	cr_assert_eq(
	    mhs_rpc_table_add_service(&t, &mhs__v1__admin__descriptor),
	    MHS_ESTATE);
	cr_assert_eq(t.n, 7);
	mhs_rpc_table_fini(&t);
}

Test(dispatch, overlong_path_is_null)
{
	struct mhs_rpc_table t;
	char path[300];

	table_build(&t);
	mhs_rpc_table_seal(&t);
	/* A known path followed by padding, at and past the 127 limit. */
	for (size_t n = 120; n < sizeof(path); n++) {
		memset(path, 'x', n);
		memcpy(path, "/mhs.v1.Prescriptions/Submit", 28);
		path[n] = '\0';
		cr_assert_null(mhs_rpc_table_find(&t, path), "length %zu", n);
	}
	mhs_rpc_table_fini(&t);
}

/*
 * Regression: sealing and searching an empty table passed a NULL array to
 * qsort and bsearch (undefined behaviour; UBSan aborts).
 */
Test(dispatch, empty_table_finds_nothing)
{
	struct mhs_rpc_table t;

	memset(&t, 0, sizeof(t));
	mhs_rpc_table_seal(&t);
	cr_assert_null(mhs_rpc_table_find(&t, "/mhs.v1.Prescriptions/Submit"));
	cr_assert_eq(mhs_rpc_table_bind(&t, "/x/y", &h_submit), MHS_ENOTFOUND);
	mhs_rpc_table_fini(&t);
}
