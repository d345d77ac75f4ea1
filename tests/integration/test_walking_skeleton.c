/*
 * Design notes: the walking skeleton, end to end on real parts
 * (issue 2): a partner client -> mhs-gateway -> mhs-store (journal +
 * Redis) -> mhs-router -> Spine simulator over HTTPS. Proves G1's visible
 * half (ACCEPTED answers carry a message_id that GetStatus knows), G3
 * (same key + content -> same id, duplicate), and delivery: 100 messages
 * reach DELIVERED and the simulator saw every MessageId. Also the first
 * rows of the bad-input matrix, and a clean stop that leaves no process.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"
#include "stack.h"
#include "util.h"
#include "validate.h"

#define SUBMIT     "/mhs.v1.Prescriptions/Submit"
#define GET_STATUS "/mhs.v1.Prescriptions/GetStatus"
#define N_MESSAGES 100

static struct stack stk;
static struct mhs_client *cl;
static char bearer[160];

static void
setup(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	cr_assert(stack_start(&stk, 2), "the stack did not start");
	snprintf(bearer, sizeof(bearer), "Bearer %s", stk.token);
	cr_assert_eq(mhs_client_open(&cl, stk.gateway_url), 0);
}

static void
teardown(void)
{
	mhs_client_close(cl);
	if (stk.pid > 0 && stack_stop(&stk) && stack_sanitizer_clean(&stk))
		stack_cleanup(&stk);
}

static int
submit(unsigned i, const char *key, Mhs__V1__SubmitResponse **out, char **err)
{
	Mhs__V1__SubmitRequest rq = MHS__V1__SUBMIT_REQUEST__INIT;
	struct mhs_rpc_meta meta[] = {
	    {"authorization", bearer}, {"x-request-id", "it-submit"}};
	char nhs[11], rx[21], payload[200];

	test_nhs_number(i + 1, nhs);
	test_rx_id(i + 1, rx);
	snprintf(payload, sizeof(payload),
	    "<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"><id root=\"%u\"/>"
	    "</PORX_IN020101SM31>",
	    i);
	rq.idempotency_key = (char *) key;
	rq.interaction_id = "PORX_IN020101SM31";
	rq.prescription_id = rx;
	rq.nhs_number = nhs;
	rq.sender_ods = "FA565";
	rq.recipient_ods = "T1450";
	rq.content_type = "text/xml";
	rq.payload.data = (uint8_t *) payload;
	rq.payload.len = strlen(payload);
	return mhs_client_call(cl, SUBMIT, &rq.base,
	    &mhs__v1__submit_response__descriptor, (ProtobufCMessage **) out,
	    meta, 2, 10000, err);
}

static int
get_state(const char *id)
{
	Mhs__V1__GetStatusRequest rq = MHS__V1__GET_STATUS_REQUEST__INIT;
	struct mhs_rpc_meta meta[] = {{"authorization", bearer}};
	Mhs__V1__MessageStatus *st = NULL;
	int code, state;

	rq.message_id = (char *) id;
	code = mhs_client_call(cl, GET_STATUS, &rq.base,
	    &mhs__v1__message_status__descriptor, (ProtobufCMessage **) &st,
	    meta, 1, 5000, NULL);
	if (code != 0)
		return -code;
	state = st->state;
	protobuf_c_message_free_unpacked(&st->base, NULL);
	return state;
}

Test(walking_skeleton, hundred_messages_reach_spine, .init = setup,
    .fini = teardown, .timeout = 300)
{
	static char ids[N_MESSAGES][37];
	struct mhs_buf sim = MHS_BUF_INIT;
	char url[200], key[64];
	int delivered = 0;

	/* 1. Submit 100 valid messages: each answered ACCEPTED with an id. */
	for (unsigned i = 0; i < N_MESSAGES; i++) {
		Mhs__V1__SubmitResponse *r = NULL;
		char *err = NULL;
		int code;

		snprintf(key, sizeof(key), "it-key-%u", i);
		code = submit(i, key, &r, &err);
		cr_assert_eq(code, 0, "submit %u: code %d (%s)", i, code,
		    err ? err : "");
		cr_assert(mhs_message_id_check(r->message_id),
		    "message_id %s is not an upper-case UUID", r->message_id);
		cr_assert_eq(r->duplicate, 0);
		snprintf(ids[i], sizeof(ids[i]), "%s", r->message_id);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}

	/* 2. G3: the same key and content answers the original id. */
	{
		Mhs__V1__SubmitResponse *r = NULL;
		cr_assert_eq(submit(7, "it-key-7", &r, NULL), 0);
		cr_assert_str_eq(r->message_id, ids[7]);
		cr_assert(r->duplicate, "a repeat must say duplicate = true");
		protobuf_c_message_free_unpacked(&r->base, NULL);
		cr_assert_eq(submit(8, "it-key-7", &r, NULL), 6,
		    "same key, other content must be ALREADY_EXISTS");
	}

	/* 3. Every message reaches DELIVERED (bounded wait). */
	for (int round = 0; round < 600 && delivered < N_MESSAGES; round++) {
		delivered = 0;
		for (int i = 0; i < N_MESSAGES; i++)
			if (get_state(ids[i]) ==
			    MHS__V1__MESSAGE_STATE__MESSAGE_STATE_DELIVERED)
				delivered++;
		if (delivered < N_MESSAGES)
			usleep(100000);
	}
	cr_assert_eq(delivered, N_MESSAGES,
	    "only %d of %d messages reached DELIVERED within 60 s", delivered,
	    N_MESSAGES);

	/* 4. The simulator saw every MessageId. */
	snprintf(url, sizeof(url), "%s/_sim/messages", stk.spine_url);
	cr_assert_eq(stack_http(&stk, "GET", url, NULL, &sim), 200);
	for (int i = 0; i < N_MESSAGES; i++) {
		char needle[64];
		snprintf(needle, sizeof(needle), "\"message_id\":\"%.36s\"",
		    ids[i]);
		cr_assert(sim.data != NULL && strstr(sim.data, needle) != NULL,
		    "simulator did not see %s", ids[i]);
	}
	mhs_buf_fini(&sim);

	/* 5. Nothing crashed on the way, and a clean stop leaves no process
	 * behind. */
	cr_assert(!stack_restarts(&stk),
	    "a process exited and was restarted; see %s/run.out", stk.dir);
	cr_assert(stack_stop(&stk), "scripts/run did not stop cleanly");
	stk.pid = 0;
	cr_assert(stack_sanitizer_clean(&stk),
	    "a sanitizer reported an error; see %s/logs", stk.dir);
	stack_cleanup(&stk);
}

Test(walking_skeleton, bad_input_gets_a_code, .init = setup, .fini = teardown,
    .timeout = 300)
{
	Grpc__Health__V1__HealthCheckRequest hc =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Mhs__V1__GetStatusRequest gs = MHS__V1__GET_STATUS_REQUEST__INIT;
	struct mhs_rpc_meta good[] = {{"authorization", bearer}};
	struct mhs_rpc_meta bad[] = {{"authorization", "Bearer nope"}};
	Grpc__Health__V1__HealthCheckResponse *hr = NULL;
	char id[37];

	cr_assert_eq(mhs_client_call(cl, "/mhs.v1.Nope/Nope", &gs.base, NULL,
	                 NULL, good, 1, 5000, NULL),
	    12);
	cr_assert_eq(mhs_client_call(cl, GET_STATUS, &gs.base, NULL, NULL, bad,
	                 1, 5000, NULL),
	    16);
	cr_assert_eq(mhs_client_call(cl, GET_STATUS, &gs.base, NULL, NULL,
	                 NULL, 0, 5000, NULL),
	    16);
	gs.message_id = "not-a-uuid";
	cr_assert_eq(mhs_client_call(cl, GET_STATUS, &gs.base, NULL, NULL,
	                 good, 1, 5000, NULL),
	    3);
	cr_assert_eq(mhs_uuid_upper(id), 0);
	gs.message_id = id;
	cr_assert_eq(mhs_client_call(cl, GET_STATUS, &gs.base, NULL, NULL,
	                 good, 1, 5000, NULL),
	    5);
	cr_assert_eq(
	    mhs_client_call(cl, "/grpc.health.v1.Health/Check", &hc.base,
	        &grpc__health__v1__health_check_response__descriptor,
	        (ProtobufCMessage **) &hr, NULL, 0, 5000, NULL),
	    0);
	cr_assert_eq(hr->status,
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	protobuf_c_message_free_unpacked(&hr->base, NULL);
	hc.service = "no.such.Service";
	cr_assert_eq(mhs_client_call(cl, "/grpc.health.v1.Health/Check",
	                 &hc.base, NULL, NULL, NULL, 0, 5000, NULL),
	    5);
	{
		Mhs__V1__SubmitResponse *r = NULL;
		char nhs[11], rx[21];
		Mhs__V1__SubmitRequest rq = MHS__V1__SUBMIT_REQUEST__INIT;
		test_nhs_number(1, nhs);
		test_rx_id(1, rx);
		rq.idempotency_key = "k";
		rq.interaction_id = "PORX_IN020101SM31";
		rq.prescription_id = rx;
		rq.nhs_number = "9434765918"; /* wrong check digit */
		rq.sender_ods = "FA565";
		rq.payload.data = (uint8_t *) "<x/>";
		rq.payload.len = 4;
		cr_assert_eq(mhs_client_call(cl, SUBMIT, &rq.base, NULL, NULL,
		                 good, 1, 5000, NULL),
		    3);
		rq.nhs_number = nhs;
		rq.prescription_id = "04F4C2-A99968-7F717Q";
		cr_assert_eq(mhs_client_call(cl, SUBMIT, &rq.base, NULL, NULL,
		                 good, 1, 5000, NULL),
		    3);
		rq.prescription_id = rx;
		rq.interaction_id = "PORX_IN999999SM99";
		cr_assert_eq(mhs_client_call(cl, SUBMIT, &rq.base, NULL, NULL,
		                 good, 1, 5000, NULL),
		    3);
		rq.interaction_id = "PORX_IN020101SM31";
		rq.idempotency_key = "";
		cr_assert_eq(mhs_client_call(cl, SUBMIT, &rq.base, NULL, NULL,
		                 good, 1, 5000, NULL),
		    3);
		(void) r;
	}
}
