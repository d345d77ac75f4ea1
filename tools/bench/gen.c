/*
 * Design notes: the requests mhs-bench sends to the gateway. A Submit is
 * durable work that Routers deliver to Spine, so every one is valid and
 * unique:
 *  - idempotency_key "bench-<run id>-<n>": the run id is 64 random bits,
 *    so runs never collide and a run's messages are easy to find;
 *  - prescription_id: 44 bits (6 + 5 hex digits) from a bijection of n
 *    (an odd multiplier and a random offset, mod 2^44), so IDs are unique
 *    within a run (Spine rejects a repeated prescription ID as a
 *    duplicate prescription) and unlikely to repeat across runs; prescriber
 *    "0FA565"; the MOD 37-2 check character from common/validate.c;
 *  - nhs_number from a pool of valid Modulus 11 numbers built at start;
 *  - payload: one XML-ish buffer of exactly --payload-bytes.
 * bench_gen_make runs on nng callback threads: it only formats and packs
 * (no locks, no I/O); the request counter is an atomic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench.h"
#include "error.h"
#include "grpc/health/v1/health.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"
#include "validate.h"

#define SUBMIT      "/mhs.v1.Prescriptions/Submit"
#define GET_STATUS  "/mhs.v1.Prescriptions/GetStatus"
#define HEALTH      "/grpc.health.v1.Health/Check"
#define INTERACTION "PORX_IN020101SM31"
#define RX_MASK     ((1ull << 44) - 1)
#define RX_MULT     0x9E3779B97F4A7C15ull /* odd: a bijection mod 2^44 */

static uint64_t
gen_random64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t) sizeof(v))
		v = (uint64_t) bench_now_ns() * RX_MULT;
	return v;
}

/* gen_nhs writes a valid NHS number (9 + 8 random digits + check). */
static void
gen_nhs(uint64_t *rng, char out[11])
{
	for (;;) {
		int sum = 0, check;

		out[0] = '9';
		for (int i = 1; i < 9; i++) {
			*rng = *rng * 6364136223846793005ull +
			    1442695040888963407ull;
			out[i] = (char) ('0' + (*rng >> 33) % 10);
		}
		for (int i = 0; i < 9; i++)
			sum += (out[i] - '0') * (10 - i);
		check = (11 - sum % 11) % 11;
		if (check == 10)
			continue; /* no valid number with these digits */
		out[9] = (char) ('0' + check);
		out[10] = '\0';
		return;
	}
}

static void
gen_rx_id(const struct bench_gen *g, uint64_t n, char out[21])
{
	uint64_t x = (n * RX_MULT + g->rx_base) & RX_MASK;
	char body[18];

	snprintf(body, sizeof(body), "%06llX0FA565%05llX",
	    (unsigned long long) (x >> 20),
	    (unsigned long long) (x & 0xfffff));
	snprintf(out, 21, "%.6s-%.6s-%.5s%c", body, body + 6, body + 12,
	    mhs_rx_id_check_char(body));
}

static int
gen_payload(struct bench_gen *g, size_t len)
{
	static const char head[] =
	    "<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\">"
	    "<!-- mhs-bench ";
	static const char tail[] = " --></PORX_IN020101SM31>";
	size_t hl = sizeof(head) - 1, tl = sizeof(tail) - 1;

	if (len < hl + tl)
		return MHS_EINVAL;
	if ((g->payload = malloc(len)) == NULL)
		return MHS_ENOMEM;
	memcpy(g->payload, head, hl);
	memset(g->payload + hl, 'x', len - hl - tl);
	memcpy(g->payload + len - tl, tail, tl);
	g->payload_len = len;
	return 0;
}

int
bench_gen_init(struct bench_gen *g, enum bench_method method,
    const char *token, const char *sender, size_t payload_bytes,
    int timeout_ms)
{
	uint64_t rng = gen_random64();
	int rv;

	memset(g, 0, sizeof(*g));
	g->method = method;
	g->sender = sender;
	g->timeout_ms = (uint32_t) timeout_ms;
	if (token[0] != '\0') /* else no authorization (health only) */
		snprintf(g->bearer, sizeof(g->bearer), "Bearer %s", token);
	snprintf(g->run_id, sizeof(g->run_id), "%016llx",
	    (unsigned long long) gen_random64());
	g->rx_base = gen_random64() & RX_MASK;
	if ((rv = gen_payload(g, payload_bytes)) != 0)
		return rv;
	if ((g->nhs = calloc(BENCH_NHS_POOL, sizeof(*g->nhs))) == NULL) {
		bench_gen_fini(g);
		return MHS_ENOMEM;
	}
	for (size_t i = 0; i < BENCH_NHS_POOL; i++)
		gen_nhs(&rng, g->nhs[i]);
	return 0;
}

void
bench_gen_fini(struct bench_gen *g)
{
	free(g->payload);
	free(g->nhs);
	g->payload = NULL;
	g->nhs = NULL;
}

/* gen_submit fills rq for request n; key and rx are the caller's. */
static void
gen_submit(struct bench_gen *g, uint64_t n, Mhs__V1__SubmitRequest *rq,
    char key[64], char rx[21])
{
	snprintf(key, 64, "bench-%s-%llu", g->run_id, (unsigned long long) n);
	gen_rx_id(g, n, rx);
	rq->idempotency_key = key;
	rq->interaction_id = INTERACTION;
	rq->prescription_id = rx;
	rq->nhs_number = g->nhs[n % BENCH_NHS_POOL];
	rq->sender_ods = (char *) g->sender;
	rq->recipient_ods = "T1450";
	rq->content_type = "text/xml";
	rq->payload.data = g->payload;
	rq->payload.len = g->payload_len;
}

int
bench_gen_make(void *arg, nng_msg **mp)
{
	struct bench_gen *g = arg;
	uint64_t n =
	    atomic_fetch_add_explicit(&g->seq, 1, memory_order_relaxed);
	struct mhs_rpc_meta meta[] = {{"authorization", g->bearer}};
	Mhs__V1__SubmitRequest sub = MHS__V1__SUBMIT_REQUEST__INIT;
	Mhs__V1__GetStatusRequest gs = MHS__V1__GET_STATUS_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckRequest hc =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	size_t nmeta = g->bearer[0] != '\0' ? 1 : 0;
	char key[64], rx[21];

	switch (g->method) {
	case BENCH_SUBMIT:
		gen_submit(g, n, &sub, key, rx);
		return mhs_rpc_request_msg(
		    mp, SUBMIT, &sub.base, meta, nmeta, g->timeout_ms);
	case BENCH_GET_STATUS:
		gs.message_id = g->ids[n % g->n_ids];
		return mhs_rpc_request_msg(
		    mp, GET_STATUS, &gs.base, meta, nmeta, g->timeout_ms);
	case BENCH_HEALTH:
		return mhs_rpc_request_msg(
		    mp, HEALTH, &hc.base, meta, nmeta, g->timeout_ms);
	}
	return MHS_EINVAL;
}

int
bench_gen_reply_code(void *arg, nng_msg *m)
{
	Mhs__Rpc__V1__Response *r = mhs__rpc__v1__response__unpack(
	    NULL, nng_msg_len(m), nng_msg_body(m));
	int code;

	if (r == NULL)
		return -1;
	code = r->code < 0 ? BENCH_CODES - 1 : r->code;
	mhs__rpc__v1__response__free_unpacked(r, NULL);
	return code;
}

/* gen_seed_one submits request n and keeps its message id. */
static int
gen_seed_one(
    struct bench_gen *g, struct mhs_client *cl, uint64_t n, char **why)
{
	struct mhs_rpc_meta meta[] = {{"authorization", g->bearer}};
	Mhs__V1__SubmitRequest rq = MHS__V1__SUBMIT_REQUEST__INIT;
	Mhs__V1__SubmitResponse *r = NULL;
	char key[64], rx[21];
	int code;

	gen_submit(g, n, &rq, key, rx);
	code = mhs_client_call(cl, SUBMIT, &rq.base,
	    &mhs__v1__submit_response__descriptor, (ProtobufCMessage **) &r,
	    meta, 1, (int) g->timeout_ms, why);
	if (code != 0)
		return code;
	snprintf(g->ids[g->n_ids], sizeof(g->ids[0]), "%s", r->message_id);
	g->n_ids++;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return 0;
}

int
bench_gen_seed(struct bench_gen *g, const char *url, size_t n, char **why)
{
	struct mhs_client *cl;
	int rv;

	*why = NULL;
	if (n > BENCH_SEEDS_MAX)
		n = BENCH_SEEDS_MAX;
	if ((rv = mhs_client_open(&cl, url)) != 0)
		return rv;
	for (size_t i = 0; i < n && rv == 0; i++)
		rv = gen_seed_one(g, cl, atomic_fetch_add(&g->seq, 1), why);
	mhs_client_close(cl);
	return rv;
}
