/*
 * mhs-ebxml-bench: what one delivery costs in router/ebxml, per call,
 * on one thread: building a request (router), parsing it (simulator and
 * inbound listener), building Spine's ack (simulator) and classifying it
 * (router). A 1 KiB payload, as mhs-bench sends. Not installed, not a
 * test: a microbenchmark whose figures are steadier than whole-stack runs
 * on a shared machine (docs/architecture.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ebxml.h"
#include "util.h"

static struct {
	long long iterations, payload_bytes;
} o;

static struct mhs_opt opts[] = {
    {"iterations", MHS_OPT_INT, "20000", 1, 100000000,
        "calls of each function timed", &o.iterations},
    {"payload-bytes", MHS_OPT_INT, "1024", 16, 1048576,
        "size of the HL7 payload in the request", &o.payload_bytes},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program prog = {"mhs-ebxml-bench", "bench",
    "time router/ebxml's per-delivery functions on one thread", opts};

static void
report(const char *what, int64_t t0_us)
{
	printf("%-14s %8.2f us per call\n", what,
	    (double) (mhs_mono_us() - t0_us) / (double) o.iterations);
}

int
main(int argc, char **argv)
{
	struct mhs_ebxml_msg m = {
	    .message_id = "8F4E2C1A-1111-2222-3333-444455556666",
	    .conversation_id = "8F4E2C1A-1111-2222-3333-444455556667",
	    .interaction = "PORX_IN020101SM31",
	    .service = "urn:nhs:names:services:mm",
	    .cpa_id = "S20001A000100",
	    .from_party = "YES-0000806",
	    .to_party = "T141D-822234",
	    .duplicate_elimination = true,
	    .ack_requested = true,
	    .sync_reply = true};
	struct mhs_buf body = MHS_BUF_INIT, ack = MHS_BUF_INIT;
	struct mhs_ebxml_request r;
	char ct[256], sa[256], why[160];
	char *payload;
	int64_t t0;
	int rv;

	if ((rv = mhs_config_load(&prog, argc, argv)) != 0)
		return rv > 0 ? 0 : 2;
	if ((payload = malloc((size_t) o.payload_bytes)) == NULL)
		return 1;
	memset(payload, 'x', (size_t) o.payload_bytes);
	memcpy(payload, "<a>", 3);
	memcpy(payload + o.payload_bytes - 4, "</a>", 4);
	m.payload = payload;
	m.payload_len = (size_t) o.payload_bytes;

	t0 = mhs_mono_us();
	for (long long i = 0; i < o.iterations; i++)
		if (mhs_ebxml_build(&m, &body, ct, sizeof(ct), sa, sizeof(sa)))
			return 1;
	report("build", t0);
	t0 = mhs_mono_us();
	for (long long i = 0; i < o.iterations; i++)
		if (mhs_ebxml_parse_request(
		        ct, body.data, body.len, &r, why, sizeof(why))) {
			fprintf(stderr, "parse: %s\n", why);
			return 1;
		}
	report("parse_request", t0);
	t0 = mhs_mono_us();
	for (long long i = 0; i < o.iterations; i++)
		if (mhs_ebxml_build_ack(&r,
		        "8F4E2C1A-1111-2222-3333-444455556699",
		        1700000000000LL, &ack))
			return 1;
	report("build_ack", t0);
	t0 = mhs_mono_us();
	for (long long i = 0; i < o.iterations; i++)
		if (mhs_ebxml_classify(202, MHS_EBXML_REPLY_TYPE, ack.data,
		        ack.len, m.message_id, true, why,
		        sizeof(why)) != MHS_EBXML_DELIVERED) {
			fprintf(stderr, "classify: %s\n", why);
			return 1;
		}
	report("classify", t0);
	printf("request %zu bytes, ack %zu bytes, %lld iterations\n", body.len,
	    ack.len, o.iterations);
	mhs_buf_fini(&body);
	mhs_buf_fini(&ack);
	free(payload);
	return 0;
}
