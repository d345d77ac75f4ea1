/*
 * Design notes: proves the ebXML wire contract (shared/SPINE-EBXML.md).
 *  - ebxml_build: the request has §1-2's exact MIME layout, escapes every
 *    value, refuses header injection, and parses back to what was built.
 *  - ebxml_classify: the §5.2-5.4 examples and every retry rule of §3.3
 *    (all codes retriable, empty or unreadable lists are not), prefixes
 *    never matter, namespaces do, and garbage never crashes or delivers.
 *  - ebxml_parse: the §5.1 example as the MHS sends it (bare LF, unbracketed
 *    start), every truncation of a request, DTDs refused.
 *  - ebxml_scan: the one-pass SAX answers (no tree) are the DOM's, path
 *    by path and text by text, on every fixture; what it cannot decide
 *    (a reference in an href) is answered through the DOM.
 *  - ebxml_xpath: a query through the per-thread compiled-expression cache
 *    finds exactly the nodes a fresh libxml2 context and an uncompiled
 *    evaluation find, from the document and from a node, first time and
 *    cached, past the cache's bound too; and many threads parsing and
 *    classifying at once (threads coming and going) all get the answers
 *    one thread gets.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <libxml/xpathInternals.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

#define MSG_ID  "AAAAAAAA-0000-4000-8000-000000000001"
#define CONV_ID "C0C0C0C0-0000-4000-8000-000000000001"
#define PAYLOAD                                                               \
	"<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"><id root=\"" MSG_ID      \
	"\"/></PORX_IN020101SM31>"

/* ---- fixtures: the SPINE-EBXML.md §5 examples, verbatim ---- */

static const char spec_ack[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<soap:Envelope "
    "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"\n"
    "  xmlns:eb=\"http://www.oasis-open.org/committees/ebxml-msg/schema/"
    "msg-header-2_0.xsd\">\n"
    " <soap:Header>\n"
    "  <eb:MessageHeader soap:mustUnderstand=\"1\" eb:version=\"2.0\">\n"
    "   <eb:From><eb:PartyId "
    "eb:type=\"urn:nhs:names:partyType:ocs+serviceInstance\">YES-0000806"
    "</eb:PartyId></eb:From>\n"
    "   <eb:To><eb:PartyId "
    "eb:type=\"urn:nhs:names:partyType:ocs+serviceInstance\">FAKE01-0000001"
    "</eb:PartyId></eb:To>\n"
    "   <eb:CPAId>S1001A1630</eb:CPAId>\n"
    "   <eb:ConversationId>" CONV_ID "</eb:ConversationId>\n"
    "   <eb:Service>urn:oasis:names:tc:ebxml-msg:service</eb:Service>\n"
    "   <eb:Action>Acknowledgment</eb:Action>\n"
    "   <eb:MessageData>\n"
    "    <eb:MessageId>BBBBBBBB-0000-4000-8000-000000000002</eb:MessageId>\n"
    "    <eb:Timestamp>2024-01-02T03:04:06Z</eb:Timestamp>\n"
    "    <eb:RefToMessageId>" MSG_ID "</eb:RefToMessageId>\n"
    "   </eb:MessageData>\n"
    "  </eb:MessageHeader>\n"
    "  <eb:Acknowledgment soap:mustUnderstand=\"1\" eb:version=\"2.0\"\n"
    "    soap:actor=\"urn:oasis:names:tc:ebxml-msg:actor:toPartyMSH\">\n"
    "   <eb:Timestamp>2024-01-02T03:04:06Z</eb:Timestamp>\n"
    "   <eb:RefToMessageId>" MSG_ID "</eb:RefToMessageId>\n"
    "   <eb:From><eb:PartyId "
    "eb:type=\"urn:nhs:names:partyType:ocs+serviceInstance\">YES-0000806"
    "</eb:PartyId></eb:From>\n"
    "  </eb:Acknowledgment>\n"
    " </soap:Header>\n"
    " <soap:Body/>\n"
    "</soap:Envelope>\n";

static const char spec_error[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<soap:Envelope "
    "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"\n"
    "  xmlns:eb=\"http://www.oasis-open.org/committees/ebxml-msg/schema/"
    "msg-header-2_0.xsd\">\n"
    " <soap:Header>\n"
    "  <eb:MessageHeader soap:mustUnderstand=\"1\" eb:version=\"2.0\">\n"
    "   <eb:CPAId>S1001A1630</eb:CPAId>\n"
    "   <eb:Action>MessageError</eb:Action>\n"
    "   <eb:MessageData>\n"
    "    <eb:MessageId>CCCCCCCC-0000-4000-8000-000000000003</eb:MessageId>\n"
    "    <eb:RefToMessageId>" MSG_ID "</eb:RefToMessageId>\n"
    "   </eb:MessageData>\n"
    "  </eb:MessageHeader>\n"
    "  <eb:ErrorList soap:mustUnderstand=\"1\" eb:version=\"2.0\" "
    "eb:highestSeverity=\"Error\">\n"
    "   <eb:Error "
    "eb:codeContext=\"urn:oasis:names:tc:ebxml-msg:service:errors\"\n"
    "     eb:errorCode=\"ValueNotRecognized\" eb:severity=\"Error\">\n"
    "    <eb:Description xml:lang=\"en-GB\">501319:Unknown eb:CPAId"
    "</eb:Description>\n"
    "   </eb:Error>\n"
    "  </eb:ErrorList>\n"
    " </soap:Header>\n"
    " <soap:Body/>\n"
    "</soap:Envelope>\n";

/* §5.4 with its error list replaced by errors (each: code, description). */
static char *
fault_with(const char *errors)
{
	static const char head[] =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<SOAP-ENV:Envelope "
	    "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">\n"
	    " <SOAP-ENV:Body>\n  <SOAP-ENV:Fault>\n"
	    "   <faultcode>SOAP-ENV:Server</faultcode>\n"
	    "   <faultstring>Application Exception</faultstring>\n"
	    "   <detail>\n"
	    "    <nasp:errorList "
	    "xmlns:nasp=\"http://national.carerecords.nhs.uk/schema/\">\n";
	static const char tail[] = "    </nasp:errorList>\n   </detail>\n"
	                           "  </SOAP-ENV:Fault>\n </SOAP-ENV:Body>\n"
	                           "</SOAP-ENV:Envelope>\n";
	size_t n = strlen(head) + strlen(errors) + strlen(tail) + 1;
	char *s = malloc(n);

	cr_assert_not_null(s);
	snprintf(s, n, "%s%s%s", head, errors, tail);
	return s;
}

#define NASP_ERROR(code)                                                      \
	"     <nasp:error>\n"                                                 \
	"      "                                                              \
	"<nasp:codeContext>urn:nhs:names:error:tms</nasp:codeContext>\n"      \
	"      <nasp:errorCode>" code "</nasp:errorCode>\n"                   \
	"      <nasp:severity>Error</nasp:severity>\n"                        \
	"      <nasp:location>Not Supported</nasp:location>\n"                \
	"      <nasp:description>Routing delivery failure (simulated)"        \
	"</nasp:description>\n"                                               \
	"     </nasp:error>\n"

static enum mhs_ebxml_verdict
classify_str(
    int status, const char *body, bool expect_ack, char *reason, size_t cap)
{
	return mhs_ebxml_classify(status, "text/xml", body, strlen(body),
	    MSG_ID, expect_ack, reason, cap);
}

static enum mhs_ebxml_verdict
classify_fault(int status, const char *errors)
{
	char *body = fault_with(errors), reason[256];
	enum mhs_ebxml_verdict v =
	    classify_str(status, body, true, reason, sizeof(reason));

	free(body);
	return v;
}

static struct mhs_ebxml_msg
reliable_msg(void)
{
	struct mhs_ebxml_msg m = {
	    .message_id = MSG_ID,
	    .conversation_id = CONV_ID,
	    .interaction = "PORX_IN020101SM31",
	    .service = "urn:nhs:names:services:mm",
	    .cpa_id = "S1001A1630",
	    .from_party = "FAKE01-0000001",
	    .to_party = "YES-0000806",
	    .duplicate_elimination = true,
	    .ack_requested = true,
	    .sync_reply = true,
	    .timestamp_ms = 1704164645000LL,
	    .payload = PAYLOAD,
	    .payload_len = strlen(PAYLOAD),
	};
	return m;
}

static void
build_ok(const struct mhs_ebxml_msg *m, struct mhs_buf *body, char *ct,
    size_t ctlen)
{
	char sa[256];

	cr_assert_eq(mhs_ebxml_build(m, body, ct, ctlen, sa, sizeof(sa)), 0);
}

/* ---- ebxml_build ---- */

Test(ebxml_build, request_layout_follows_the_contract)
{
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256], sa[256];

	cr_assert_eq(
	    mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, sizeof(sa)), 0);
	cr_assert_str_eq(ct,
	    "multipart/related; boundary=\"--=_MIME-Boundary\"; "
	    "type=\"text/xml\"; start=\"<ebXMLHeader@spine.nhs.uk>\"");
	cr_assert_str_eq(sa, "urn:nhs:names:services:mm/PORX_IN020101SM31");
	cr_assert(strncmp(b.data,
	              "----=_MIME-Boundary\r\n"
	              "Content-Id: <ebXMLHeader@spine.nhs.uk>\r\n"
	              "Content-Type: text/xml; charset=UTF-8\r\n"
	              "Content-Transfer-Encoding: 8bit\r\n\r\n<?xml",
	              strlen("----=_MIME-Boundary\r\nContent-Id: ")) == 0);
	cr_assert_not_null(strstr(b.data,
	    "\r\n----=_MIME-Boundary\r\nContent-Id: <" MSG_ID
	    "@spine.nhs.uk>\r\nContent-Type: text/xml; charset=UTF-8\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n\r\n" PAYLOAD
	    "\r\n----=_MIME-Boundary--\r\n"));
	cr_assert_not_null(
	    strstr(b.data, "xlink:href=\"cid:" MSG_ID "@spine.nhs.uk\""));
	cr_assert_not_null(strstr(
	    b.data, "<eb:Timestamp>2024-01-02T03:04:05Z</eb:Timestamp>"));
	/* Part order: the ebXML header first, the payload second. */
	cr_assert(strstr(b.data, "<SOAP:Envelope") < strstr(b.data, PAYLOAD));
	mhs_buf_fini(&b);
}

Test(ebxml_build, roundtrip_escapes_every_value)
{
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_ebxml_request r;
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256], why[128];

	m.cpa_id = "a<b>&\"c'";
	m.from_party = "<from>&amp;";
	m.to_party = "to'\"";
	m.conversation_id = "]]><x/>";
	build_ok(&m, &b, ct, sizeof(ct));
	cr_assert_null(strstr(b.data, "<from>"));
	cr_assert_eq(
	    mhs_ebxml_parse_request(ct, b.data, b.len, &r, why, sizeof(why)),
	    0, "%s", why);
	cr_assert_str_eq(r.cpa_id, m.cpa_id);
	cr_assert_str_eq(r.from_party, m.from_party);
	cr_assert_str_eq(r.to_party, m.to_party);
	cr_assert_str_eq(r.conversation_id, m.conversation_id);
	cr_assert_str_eq(r.message_id, MSG_ID);
	cr_assert_str_eq(r.action, "PORX_IN020101SM31");
	cr_assert_str_eq(r.service, "urn:nhs:names:services:mm");
	cr_assert_str_eq(r.timestamp, "2024-01-02T03:04:05Z");
	cr_assert(r.duplicate_elimination && r.ack_requested && r.sync_reply);
	cr_assert_eq(r.payload_len, strlen(PAYLOAD));
	cr_assert(memcmp(r.payload, PAYLOAD, r.payload_len) == 0);
	cr_assert(r.payload >= b.data && r.payload < b.data + b.len);
	mhs_buf_fini(&b);
}

Test(ebxml_build, response_carries_ref_to_message_id_after_timestamp)
{
	static const char ref[] = "AAAAAAAA-0000-4000-8000-0000000000FF";
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_ebxml_request r;
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256], sa[256], why[128];
	const char *ts, *rf, *end;

	/* Absent by default: requests carry no RefToMessageId. */
	build_ok(&m, &b, ct, sizeof(ct));
	cr_assert_null(strstr(b.data, "RefToMessageId"));
	/* SPINE-EBXML.md §2: in eb:MessageData, after eb:Timestamp. */
	m.ref_to_message_id = ref;
	build_ok(&m, &b, ct, sizeof(ct));
	ts = strstr(b.data, "<eb:Timestamp>");
	rf = strstr(b.data,
	    "<eb:RefToMessageId>"
	    "AAAAAAAA-0000-4000-8000-"
	    "0000000000FF</eb:RefToMessageId>");
	end = strstr(b.data, "</eb:MessageData>");
	cr_assert(ts != NULL && rf != NULL && end != NULL);
	cr_assert(ts < rf && rf < end);
	cr_assert_eq(
	    mhs_ebxml_parse_request(ct, b.data, b.len, &r, why, sizeof(why)),
	    0, "%s", why);
	cr_assert_str_eq(r.ref_to_message_id, ref);
	cr_assert_str_eq(r.message_id, MSG_ID);
	/* A RefToMessageId that could inject markup or headers is refused. */
	m.ref_to_message_id = "A<B>";
	cr_assert_eq(mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, sizeof(sa)),
	    MHS_EINVAL);
	m.ref_to_message_id = "A\r\nX: y";
	cr_assert_eq(mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, sizeof(sa)),
	    MHS_EINVAL);
	mhs_buf_fini(&b);
}

Test(ebxml_build, express_pattern_omits_reliability_elements)
{
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_ebxml_request r;
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256];

	m.duplicate_elimination = m.ack_requested = false;
	m.payload_content_type = "application/xml";
	build_ok(&m, &b, ct, sizeof(ct));
	cr_assert_null(strstr(b.data, "DuplicateElimination"));
	cr_assert_null(strstr(b.data, "AckRequested"));
	cr_assert_not_null(
	    strstr(b.data, "Content-Type: application/xml\r\n"));
	cr_assert_eq(
	    mhs_ebxml_parse_request(ct, b.data, b.len, &r, NULL, 0), 0);
	cr_assert(!r.duplicate_elimination && !r.ack_requested);
	cr_assert(r.sync_reply);
	mhs_buf_fini(&b);
}

Test(ebxml_build, refuses_header_injection_and_bad_text)
{
	struct mhs_ebxml_msg m;
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256], sa[256];
	static const char boundary_payload[] =
	    "x\r\n----=_MIME-Boundary--\r\n";

#define REFUSED(field, value)                                                 \
	do {                                                                  \
		m = reliable_msg();                                           \
		m.field = value;                                              \
		cr_assert_eq(                                                 \
		    mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, sizeof(sa)),  \
		    MHS_EINVAL, #field " = " #value);                         \
	} while (0)
	REFUSED(message_id, "A\r\nX-Evil: 1");
	REFUSED(message_id, "A>B");
	REFUSED(message_id, "");
	REFUSED(message_id, NULL);
	REFUSED(interaction, "PORX IN");
	REFUSED(service, "urn:x\r\n");
	REFUSED(cpa_id, NULL);
	REFUSED(cpa_id, "");
	REFUSED(from_party, "bad\x01");
	REFUSED(to_party, "\xff\xfe");
	REFUSED(payload_content_type, "text/xml\r\nX-Evil: 1");
#undef REFUSED
	m = reliable_msg();
	m.payload_len = strlen(boundary_payload);
	m.payload = boundary_payload;
	cr_assert_eq(mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, sizeof(sa)),
	    MHS_EINVAL);
	m = reliable_msg();
	cr_assert_eq(
	    mhs_ebxml_build(&m, &b, ct, 10, sa, sizeof(sa)), MHS_ETOOBIG);
	cr_assert_eq(
	    mhs_ebxml_build(&m, &b, ct, sizeof(ct), sa, 10), MHS_ETOOBIG);
	mhs_buf_fini(&b);
}

static void
parsed_request(struct mhs_ebxml_request *r)
{
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256];

	build_ok(&m, &b, ct, sizeof(ct));
	cr_assert_eq(
	    mhs_ebxml_parse_request(ct, b.data, b.len, r, NULL, 0), 0);
	r->payload = NULL; /* b is gone */
	r->payload_len = 0;
	mhs_buf_fini(&b);
}

Test(ebxml_build, replies_classify_as_spine_means_them)
{
	struct mhs_ebxml_request r;
	struct mhs_buf b = MHS_BUF_INIT;
	char why[256];

	parsed_request(&r);
	cr_assert_eq(mhs_ebxml_build_ack(&r,
	                 "BBBBBBBB-0000-4000-8000-0000000"
	                 "00002",
	                 1704164646000LL, &b),
	    0);
	cr_assert_eq(classify_str(202, b.data, true, why, sizeof(why)),
	    MHS_EBXML_DELIVERED, "%s", why);
	cr_assert_not_null(strstr(b.data, "<eb:Action>Acknowledgment<"));

	cr_assert_eq(mhs_ebxml_build_error_list(&r, "CCCC", 0,
	                 "ValueNotRecognized", "501319:Unknown eb:CPAId", &b),
	    0);
	cr_assert_eq(classify_str(500, b.data, true, why, sizeof(why)),
	    MHS_EBXML_FAILED);
	cr_assert_not_null(strstr(why, "501319:Unknown eb:CPAId"), "%s", why);
	cr_assert_not_null(strstr(b.data, "eb:codeContext=\""));
	cr_assert_not_null(
	    strstr(b.data, "eb:errorCode=\"ValueNotRecognized\""));
	cr_assert_not_null(strstr(b.data, "eb:severity=\"Error\""));
	cr_assert_not_null(
	    strstr(b.data, "<eb:Description xml:lang=\"en-GB\">"));

	cr_assert_eq(mhs_ebxml_build_error_list(
	                 NULL, "CCCC", 0, "OtherXml", "not <xml> & co", &b),
	    0);
	cr_assert_eq(
	    classify_str(500, b.data, true, NULL, 0), MHS_EBXML_FAILED);

	cr_assert_eq(mhs_ebxml_build_soap_fault(206, "a & b", &b), 0);
	cr_assert_eq(
	    classify_str(500, b.data, true, NULL, 0), MHS_EBXML_RETRY);
	cr_assert_eq(
	    mhs_ebxml_build_soap_fault(201, "not well formed", &b), 0);
	cr_assert_eq(
	    classify_str(500, b.data, true, NULL, 0), MHS_EBXML_FAILED);
	mhs_buf_fini(&b);
}

/* ---- ebxml_classify ---- */

Test(ebxml_classify, spec_ack_is_delivered)
{
	char why[128];

	cr_assert_eq(classify_str(202, spec_ack, true, why, sizeof(why)),
	    MHS_EBXML_DELIVERED, "%s", why);
	/* MessageIds compare case-insensitively. */
	cr_assert_eq(
	    mhs_ebxml_classify(202, "text/xml", spec_ack, strlen(spec_ack),
	        "aaaaaaaa-0000-4000-8000-000000000001", true, NULL, 0),
	    MHS_EBXML_DELIVERED);
}

Test(ebxml_classify, ack_for_another_message_is_not_delivered)
{
	char why[256];

	cr_assert_eq(
	    mhs_ebxml_classify(202, "text/xml", spec_ack, strlen(spec_ack),
	        "AAAAAAAA-0000-4000-8000-000000000009", true, why,
	        sizeof(why)),
	    MHS_EBXML_UNEXPECTED);
	cr_assert_not_null(strstr(why, "another message"), "%s", why);
	cr_assert_eq(
	    classify_str(200, spec_ack, true, NULL, 0), MHS_EBXML_UNEXPECTED);
}

Test(ebxml_classify, spec_error_list_fails_whatever_the_status)
{
	char why[256];

	cr_assert_eq(classify_str(500, spec_error, true, why, sizeof(why)),
	    MHS_EBXML_FAILED);
	cr_assert_not_null(strstr(why, "ValueNotRecognized"), "%s", why);
	cr_assert_not_null(strstr(why, "501319:Unknown eb:CPAId"), "%s", why);
	cr_assert_eq(
	    classify_str(200, spec_error, true, NULL, 0), MHS_EBXML_FAILED);
	cr_assert_eq(
	    classify_str(202, spec_error, false, NULL, 0), MHS_EBXML_FAILED);
}

Test(ebxml_classify, spec_fault_206_is_retried)
{
	char *body = fault_with(NASP_ERROR("206")), why[256];

	cr_assert_eq(classify_str(500, body, true, why, sizeof(why)),
	    MHS_EBXML_RETRY, "%s", why);
	cr_assert_not_null(strstr(why, "Application Exception"), "%s", why);
	cr_assert_not_null(strstr(why, "206"), "%s", why);
	free(body);
}

Test(ebxml_classify, fault_retry_rules)
{
	cr_assert_eq(classify_fault(500, NASP_ERROR("200") NASP_ERROR("208")),
	    MHS_EBXML_RETRY);
	cr_assert_eq(
	    classify_fault(500, NASP_ERROR(" 206 ")), MHS_EBXML_RETRY);
	/* The MHS pitfall: a fault without status 500 still has codes. */
	cr_assert_eq(classify_fault(200, NASP_ERROR("206")), MHS_EBXML_RETRY);
	cr_assert_eq(classify_fault(500, NASP_ERROR("201")), MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, NASP_ERROR("206") NASP_ERROR("300")),
	    MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, ""), MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, NASP_ERROR("")), MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, NASP_ERROR("abc")), MHS_EBXML_FAILED);
	cr_assert_eq(
	    classify_fault(500, NASP_ERROR("2060")), MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, NASP_ERROR("99999999999999999999")),
	    MHS_EBXML_FAILED);
	cr_assert_eq(classify_fault(500, "<nasp:error/>"), MHS_EBXML_FAILED);
}

Test(ebxml_classify, fault_without_detail_fails)
{
	static const char body[] =
	    "<e:Envelope "
	    "xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\">"
	    "<e:Body><e:Fault><faultcode>e:Server</faultcode>"
	    "<faultstring>boom</faultstring></e:Fault></e:Body></e:Envelope>";
	char why[128];

	cr_assert_eq(
	    classify_str(500, body, true, why, sizeof(why)), MHS_EBXML_FAILED);
	cr_assert_not_null(strstr(why, "boom"), "%s", why);
}

Test(ebxml_classify, prefixes_never_matter_namespaces_do)
{
	static const char other_prefix[] =
	    "<x:Envelope "
	    "xmlns:x=\"http://schemas.xmlsoap.org/soap/envelope/\" "
	    "xmlns:y=\"http://www.oasis-open.org/committees/ebxml-msg/schema/"
	    "msg-header-2_0.xsd\"><x:Header><y:Acknowledgment>"
	    "<y:RefToMessageId>" MSG_ID "</y:RefToMessageId>"
	    "</y:Acknowledgment></x:Header><x:Body/></x:Envelope>";
	static const char wrong_ns[] =
	    "<soap:Envelope xmlns:soap=\"urn:not-soap\" "
	    "xmlns:eb=\"http://www.oasis-open.org/committees/ebxml-msg/schema/"
	    "msg-header-2_0.xsd\"><soap:Header><eb:Acknowledgment>"
	    "<eb:RefToMessageId>" MSG_ID "</eb:RefToMessageId>"
	    "</eb:Acknowledgment></soap:Header></soap:Envelope>";
	static const char default_ns[] =
	    "<Envelope xmlns=\"http://schemas.xmlsoap.org/soap/envelope/\">"
	    "<Header><Acknowledgment xmlns=\"http://www.oasis-open.org/"
	    "committees/ebxml-msg/schema/msg-header-2_0.xsd\">"
	    "<RefToMessageId>" MSG_ID "</RefToMessageId></Acknowledgment>"
	    "</Header></Envelope>";

	cr_assert_eq(classify_str(202, other_prefix, true, NULL, 0),
	    MHS_EBXML_DELIVERED);
	cr_assert_eq(
	    classify_str(202, default_ns, true, NULL, 0), MHS_EBXML_DELIVERED);
	cr_assert_eq(
	    classify_str(202, wrong_ns, true, NULL, 0), MHS_EBXML_UNEXPECTED);
}

Test(ebxml_classify, empty_202_depends_on_the_pattern)
{
	cr_assert_eq(
	    mhs_ebxml_classify(202, NULL, NULL, 0, MSG_ID, false, NULL, 0),
	    MHS_EBXML_DELIVERED);
	cr_assert_eq(
	    mhs_ebxml_classify(202, "text/xml", "", 0, MSG_ID, true, NULL, 0),
	    MHS_EBXML_UNEXPECTED);
	cr_assert_eq(
	    classify_str(202, "not xml", false, NULL, 0), MHS_EBXML_DELIVERED);
	cr_assert_eq(
	    classify_str(202, "not xml", true, NULL, 0), MHS_EBXML_UNEXPECTED);
}

Test(ebxml_classify, non_ebxml_errors_are_unexpected)
{
	char why[128];

	cr_assert_eq(mhs_ebxml_classify(503, "text/html",
	                 "<html><body>down</body></html>", 30, MSG_ID, true,
	                 why, sizeof(why)),
	    MHS_EBXML_UNEXPECTED);
	cr_assert_not_null(strstr(why, "503"), "%s", why);
	cr_assert_eq(
	    mhs_ebxml_classify(500, NULL, NULL, 0, MSG_ID, false, NULL, 0),
	    MHS_EBXML_UNEXPECTED);
	cr_assert_eq(classify_str(500, "<unclosed>", true, NULL, 0),
	    MHS_EBXML_UNEXPECTED);
	cr_assert_eq(
	    classify_str(202, "<a/>", true, NULL, 0), MHS_EBXML_UNEXPECTED);
}

Test(ebxml_classify, multipart_reply_is_read_through_its_start_part)
{
	char body[4096],
	    ct[] = "multipart/related; boundary=\"b1\"; "
	           "type=\"text/xml\"; start=\"<root@x>\"";
	char *fault = fault_with(NASP_ERROR("206"));

	snprintf(body, sizeof(body),
	    "--b1\r\nContent-Id: <other@x>\r\n\r\n<a/>\r\n"
	    "--b1\r\nContent-Id: <root@x>\r\n\r\n%s\r\n--b1--\r\n",
	    fault);
	cr_assert_eq(mhs_ebxml_classify(
	                 500, ct, body, strlen(body), MSG_ID, true, NULL, 0),
	    MHS_EBXML_RETRY);
	free(fault);
}

Test(ebxml_classify, truncated_replies_never_deliver)
{
	const char *end = strstr(spec_ack, "</soap:Envelope>");
	size_t full = (size_t) (end - spec_ack) + strlen("</soap:Envelope>");
	char *err = fault_with(NASP_ERROR("206"));

	for (size_t n = 0; n < full; n++) {
		enum mhs_ebxml_verdict v = mhs_ebxml_classify(
		    202, "text/xml", spec_ack, n, MSG_ID, true, NULL, 0);

		cr_assert_eq(v, MHS_EBXML_UNEXPECTED, "prefix %zu", n);
	}
	for (size_t n = 0; n + 2 < strlen(err); n++) {
		enum mhs_ebxml_verdict v = mhs_ebxml_classify(
		    500, "text/xml", err, n, MSG_ID, true, NULL, 0);

		cr_assert_eq(v, MHS_EBXML_UNEXPECTED, "prefix %zu", n);
	}
	free(err);
}

Test(ebxml_classify, garbage_never_crashes_or_delivers)
{
	char buf[2048], why[64];

	srand(12345);
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t) (rand() % (int) sizeof(buf));
		enum mhs_ebxml_verdict v;

		for (size_t i = 0; i < n; i++)
			buf[i] =
			    (char) (rand() % 4 == 0 ? "<>/:\"= a"[rand() % 8]
			                            : rand());
		v = mhs_ebxml_classify(500, round % 2 ? "text/xml" : NULL, buf,
		    n, MSG_ID, true, why, sizeof(why));
		cr_assert(v == MHS_EBXML_UNEXPECTED || v == MHS_EBXML_FAILED);
	}
}

Test(ebxml_classify, dtd_and_entities_are_refused)
{
	static const char bomb[] =
	    "<?xml version=\"1.0\"?>\n<!DOCTYPE e [\n"
	    " <!ENTITY a "
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">\n"
	    " <!ENTITY b "
	    "\"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\n"
	    " <!ENTITY c "
	    "\"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">\n"
	    " <!ENTITY d "
	    "\"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">\n"
	    " <!ENTITY e "
	    "\"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">\n"
	    " <!ENTITY f "
	    "\"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">\n"
	    "]>\n"
	    "<soap:Envelope "
	    "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
	    "<soap:Body><soap:Fault><faultstring>&f;</faultstring>"
	    "</soap:Fault></soap:Body></soap:Envelope>";
	static const char xxe[] =
	    "<?xml version=\"1.0\"?>\n<!DOCTYPE e SYSTEM "
	    "\"file:///etc/passwd\">"
	    "<soap:Envelope "
	    "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
	    "<soap:Body/></soap:Envelope>";
	char why[128];
	clock_t t0 = clock();

	char harmless[2048], *fault, *decl_end;

	cr_assert_eq(classify_str(500, bomb, true, why, sizeof(why)),
	    MHS_EBXML_UNEXPECTED, "%s", why);
	cr_assert_not_null(strstr(why, "without an ebXML body"), "%s", why);
	/* Even a DTD without entities: SOAP 1.1 forbids it. */
	fault = fault_with(NASP_ERROR("206"));
	decl_end = strstr(fault, "?>") + 2;
	snprintf(harmless, sizeof(harmless), "%.*s<!DOCTYPE x>%s",
	    (int) (decl_end - fault), fault, decl_end);
	cr_assert_eq(classify_str(500, decl_end, true, NULL, 0),
	    MHS_EBXML_RETRY); /* the same fault without its DTD */
	cr_assert_eq(classify_str(500, harmless, true, why, sizeof(why)),
	    MHS_EBXML_UNEXPECTED, "%s", why);
	free(fault);
	cr_assert_eq(classify_str(202, xxe, true, why, sizeof(why)),
	    MHS_EBXML_UNEXPECTED, "%s", why);
	cr_assert(clock() - t0 < CLOCKS_PER_SEC);
}

Test(ebxml_classify, oversized_reply_is_not_parsed)
{
	size_t n = MHS_EBXML_MAX_ENVELOPE + 10;
	char *big = malloc(n);

	cr_assert_not_null(big);
	memset(big, ' ', n);
	memcpy(big, spec_ack, strlen(spec_ack));
	cr_assert_eq(
	    mhs_ebxml_classify(202, "text/xml", big, n, MSG_ID, true, NULL, 0),
	    MHS_EBXML_UNEXPECTED);
	free(big);
}

Test(ebxml_classify, verdict_names)
{
	cr_assert_str_eq(
	    mhs_ebxml_verdict_name(MHS_EBXML_DELIVERED), "delivered");
	cr_assert_str_eq(mhs_ebxml_verdict_name(MHS_EBXML_RETRY), "retry");
	cr_assert_str_eq(mhs_ebxml_verdict_name(MHS_EBXML_FAILED), "failed");
	cr_assert_str_eq(
	    mhs_ebxml_verdict_name(MHS_EBXML_UNEXPECTED), "unexpected");
}

/* ---- ebxml_parse ---- */

/* §5.1's body as the MHS templates emit it: bare LF line ends. */
static const char spec_request_lf[] =
    "----=_MIME-Boundary\n"
    "Content-Id: <ebXMLHeader@spine.nhs.uk>\n"
    "Content-Type: text/xml; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"\n"
    "  xmlns:eb=\"http://www.oasis-open.org/committees/ebxml-msg/schema/"
    "msg-header-2_0.xsd\"\n"
    "  xmlns:hl7ebxml=\"urn:hl7-org:transport/ebXML/DSTUv1.0\"\n"
    "  xmlns:xlink=\"http://www.w3.org/1999/xlink\">\n"
    " <SOAP:Header>\n"
    "  <eb:MessageHeader SOAP:mustUnderstand=\"1\" eb:version=\"2.0\">\n"
    "   <eb:From><eb:PartyId "
    "eb:type=\"urn:nhs:names:partyType:ocs+serviceInstance\">FAKE01-0000001"
    "</eb:PartyId></eb:From>\n"
    "   <eb:To><eb:PartyId "
    "eb:type=\"urn:nhs:names:partyType:ocs+serviceInstance\">YES-0000806"
    "</eb:PartyId></eb:To>\n"
    "   <eb:CPAId>S1001A1630</eb:CPAId>\n"
    "   <eb:ConversationId>" CONV_ID "</eb:ConversationId>\n"
    "   <eb:Service>urn:nhs:names:services:mm</eb:Service>\n"
    "   <eb:Action>PORX_IN020101SM31</eb:Action>\n"
    "   <eb:MessageData>\n"
    "    <eb:MessageId>" MSG_ID "</eb:MessageId>\n"
    "    <eb:Timestamp>2024-01-02T03:04:05Z</eb:Timestamp>\n"
    "   </eb:MessageData>\n"
    "   <eb:DuplicateElimination/>\n"
    "  </eb:MessageHeader>\n"
    "  <eb:AckRequested SOAP:mustUnderstand=\"1\" eb:version=\"2.0\" "
    "eb:signed=\"false\"\n"
    "    SOAP:actor=\"urn:oasis:names:tc:ebxml-msg:actor:toPartyMSH\"/>\n"
    "  <eb:SyncReply SOAP:mustUnderstand=\"1\" eb:version=\"2.0\"\n"
    "    SOAP:actor=\"http://schemas.xmlsoap.org/soap/actor/next\"/>\n"
    " </SOAP:Header>\n"
    " <SOAP:Body>\n"
    "  <eb:Manifest SOAP:mustUnderstand=\"1\" eb:version=\"2.0\">\n"
    "   <eb:Reference xlink:href=\"cid:" MSG_ID "@spine.nhs.uk\">\n"
    "    <eb:Schema eb:location=\"http://www.nhsia.nhs.uk/schemas/"
    "HL7-Message.xsd\" eb:version=\"1.0\"/>\n"
    "    <eb:Description xml:lang=\"en\">HL7 payload</eb:Description>\n"
    "    <hl7ebxml:Payload style=\"HL7\" encoding=\"XML\" "
    "version=\"3.0\"/>\n"
    "   </eb:Reference>\n"
    "  </eb:Manifest>\n"
    " </SOAP:Body>\n"
    "</SOAP:Envelope>\n"
    "----=_MIME-Boundary\n"
    "Content-Id: <" MSG_ID "@spine.nhs.uk>\n"
    "Content-Type: text/xml; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n" PAYLOAD "\n"
    "----=_MIME-Boundary--\n";

#define CT_BRACKETED                                                          \
	"multipart/related; boundary=\"--=_MIME-Boundary\"; "                 \
	"type=\"text/xml\"; start=\"<ebXMLHeader@spine.nhs.uk>\""
#define CT_MHS                                                                \
	"multipart/related; boundary=\"--=_MIME-Boundary\"; type=text/xml; "  \
	"start=ebXMLHeader@spine.nhs.uk"

static void
assert_spec_fields(const struct mhs_ebxml_request *r)
{
	cr_assert_str_eq(r->message_id, MSG_ID);
	cr_assert_str_eq(r->conversation_id, CONV_ID);
	cr_assert_str_eq(r->action, "PORX_IN020101SM31");
	cr_assert_str_eq(r->cpa_id, "S1001A1630");
	cr_assert_str_eq(r->service, "urn:nhs:names:services:mm");
	cr_assert_str_eq(r->from_party, "FAKE01-0000001");
	cr_assert_str_eq(r->to_party, "YES-0000806");
	cr_assert_str_eq(r->ref_to_message_id, "");
	cr_assert(
	    r->duplicate_elimination && r->ack_requested && r->sync_reply);
	cr_assert_eq(r->payload_len, strlen(PAYLOAD));
	cr_assert(memcmp(r->payload, PAYLOAD, r->payload_len) == 0);
}

Test(ebxml_parse, spec_request_with_bare_lf)
{
	struct mhs_ebxml_request r;
	char why[128];

	cr_assert_eq(mhs_ebxml_parse_request(CT_BRACKETED, spec_request_lf,
	                 strlen(spec_request_lf), &r, why, sizeof(why)),
	    0, "%s", why);
	assert_spec_fields(&r);
}

Test(ebxml_parse, start_parameter_in_every_form)
{
	static const char *const cts[] = {CT_MHS,
	    "multipart/related; boundary=\"--=_MIME-Boundary\"; "
	    "start=\"ebXMLHeader@spine.nhs.uk\"",
	    "Multipart/Related;boundary=--=_MIME-Boundary ; "
	    "START = <ebXMLHeader@spine.nhs.uk> ; charset=\"UTF-8\"",
	    "multipart/related; boundary=\"--=_MIME-Boundary\""};

	for (size_t i = 0; i < sizeof(cts) / sizeof(cts[0]); i++) {
		struct mhs_ebxml_request r;
		char why[128];

		cr_assert_eq(
		    mhs_ebxml_parse_request(cts[i], spec_request_lf,
		        strlen(spec_request_lf), &r, why, sizeof(why)),
		    0, "%s: %s", cts[i], why);
		assert_spec_fields(&r);
	}
}

Test(ebxml_parse, start_part_need_not_be_first)
{
	char body[8192];
	const char *second =
	    strstr(spec_request_lf + 1, "----=_MIME-Boundary");
	size_t first_len = (size_t) (second - spec_request_lf);
	size_t second_len = strlen(second) - strlen("----=_MIME-Boundary--\n");
	struct mhs_ebxml_request r;
	char why[128];

	/* preamble, payload part, header part, close, epilogue */
	snprintf(body, sizeof(body),
	    "preamble\r\n%.*s%.*s"
	    "----=_MIME-Boundary--  \nepilogue",
	    (int) second_len, second, (int) first_len, spec_request_lf);
	cr_assert_eq(mhs_ebxml_parse_request(CT_BRACKETED, body, strlen(body),
	                 &r, why, sizeof(why)),
	    0, "%s", why);
	assert_spec_fields(&r);
}

Test(ebxml_parse, bare_soap_envelope_is_accepted)
{
	struct mhs_ebxml_request r;

	cr_assert_eq(mhs_ebxml_parse_request(
	                 "text/xml", spec_ack, strlen(spec_ack), &r, NULL, 0),
	    0);
	cr_assert_str_eq(r.action, "Acknowledgment");
	cr_assert_str_eq(r.ref_to_message_id, MSG_ID);
	cr_assert_null(r.payload);
}

static void
assert_refused(const char *ct, const char *body, size_t len, const char *why)
{
	struct mhs_ebxml_request r;
	char reason[128];
	int rv =
	    mhs_ebxml_parse_request(ct, body, len, &r, reason, sizeof(reason));

	cr_assert(rv == MHS_EINVAL || rv == MHS_ETOOBIG, "rv %d", rv);
	if (why != NULL)
		cr_assert_not_null(
		    strstr(reason, why), "reason \"%s\"", reason);
}

Test(ebxml_parse, malformed_requests_are_refused_with_a_reason)
{
	const char *b = spec_request_lf;
	size_t n = strlen(b);
	char buf[8192];

	assert_refused(CT_BRACKETED, "", 0, "empty");
	assert_refused("text/plain", b, n, "Content-Type");
	assert_refused(NULL, b, n, "Content-Type");
	assert_refused("multipart/related", b, n, "boundary");
	assert_refused("multipart/related; boundary=other", b, n, "multipart");
	assert_refused(CT_BRACKETED, b, n - strlen("--\n") - 1, "multipart");
	assert_refused("multipart/related; boundary=\"--=_MIME-Boundary\"; "
	               "start=\"<nope@x>\"",
	    b, n, "start");
	snprintf(buf, sizeof(buf),
	    "----=_MIME-Boundary\r\nContent-Id: <ebXMLHeader@spine.nhs.uk>\r\n"
	    "\r\n<a><b></a>\r\n----=_MIME-Boundary--\r\n");
	assert_refused(CT_BRACKETED, buf, strlen(buf), "XML");
	snprintf(buf, sizeof(buf),
	    "----=_MIME-Boundary\r\nContent-Id: <ebXMLHeader@spine.nhs.uk>\r\n"
	    "\r\n<a/>\r\n----=_MIME-Boundary--\r\n");
	assert_refused(CT_BRACKETED, buf, strlen(buf), "MessageHeader");
}

Test(ebxml_parse, overlong_field_is_refused)
{
	struct mhs_ebxml_msg m = reliable_msg();
	struct mhs_buf b = MHS_BUF_INIT;
	char ct[256];

	m.cpa_id = "0123456789012345678901234567890123456789012345678901234567"
	           "890123456789";
	build_ok(&m, &b, ct, sizeof(ct));
	assert_refused(ct, b.data, b.len, "eb:CPAId too long");
	mhs_buf_fini(&b);
}

Test(ebxml_parse, manifest_must_name_a_present_part)
{
	char body[8192], *p;

	snprintf(body, sizeof(body), "%s", spec_request_lf);
	p = strstr(body, "cid:" MSG_ID);
	cr_assert_not_null(p);
	p[4] = 'B'; /* the reference no longer matches part 2's Content-Id */
	assert_refused(CT_BRACKETED, body, strlen(body), "Manifest");
}

Test(ebxml_parse, every_truncation_is_refused)
{
	size_t n = strlen(spec_request_lf);
	size_t close_at = n - strlen("----=_MIME-Boundary--\n");

	/* Every prefix missing the closing delimiter is incomplete. */
	for (size_t i = 0; i < close_at + strlen("----=_MIME-Boundary--") - 1;
	     i++) {
		char *copy =
		    malloc(i + 1); /* exact size: ASan sees overreads */

		cr_assert_not_null(copy);
		memcpy(copy, spec_request_lf, i);
		assert_refused(CT_BRACKETED, copy, i, NULL);
		free(copy);
	}
}

Test(ebxml_parse, garbage_is_refused)
{
	char buf[4096];

	srand(54321);
	for (int round = 0; round < 2000; round++) {
		size_t n = 1 + (size_t) (rand() % (int) sizeof(buf));
		struct mhs_ebxml_request r;

		memcpy(buf, "----=_MIME-Boundary\r\n", 21);
		for (size_t i = round % 2 ? 21 : 0; i < n; i++)
			buf[i] =
			    (char) (rand() % 3 == 0 ? "-\r\n<>:"[rand() % 6]
			                            : rand());
		cr_assert_neq(
		    mhs_ebxml_parse_request(CT_BRACKETED, buf, n, &r, NULL, 0),
		    0);
	}
}

Test(ebxml_parse, soap_action_forms)
{
	const char *svc = "urn:nhs:names:services:mm",
	           *act = "PORX_IN020101SM31";

	cr_assert(mhs_ebxml_soap_action_eq(
	    "urn:nhs:names:services:mm/PORX_IN020101SM31", svc, act));
	cr_assert(mhs_ebxml_soap_action_eq(
	    "\"urn:nhs:names:services:mm/PORX_IN020101SM31\"", svc, act));
	cr_assert(mhs_ebxml_soap_action_eq(
	    " urn:urn:nhs:names:services:mm/PORX_IN020101SM31", svc, act));
	cr_assert(!mhs_ebxml_soap_action_eq(
	    "urn:nhs:names:services:mm/PORX_IN020101SM3", svc, act));
	cr_assert(!mhs_ebxml_soap_action_eq(
	    "urn:nhs:names:services:mmX/PORX_IN020101SM31", svc, act));
	cr_assert(!mhs_ebxml_soap_action_eq("ebXML", svc, act));
	cr_assert(!mhs_ebxml_soap_action_eq(NULL, svc, act));
	cr_assert(!mhs_ebxml_soap_action_eq("\"", svc, act));
}

/* ---- ebxml_hl7: the prescription ID of a new prescription ---- */

#define RX_OID "2.16.840.1.113883.2.1.3.2.4.18.8"

static int
rx_of(const char *xml, char *out, size_t cap)
{
	return mhs_ebxml_hl7_prescription_id(xml, strlen(xml), out, cap);
}

Test(ebxml_hl7, prescription_id_is_read_from_its_oid)
{
	char rx[32];

	cr_assert_eq(rx_of("<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\">"
	                   "<ParentPrescription><id root=\"1.2.3\" "
	                   "extension=\"x\"/><pertinentInformation1>"
	                   "<pertinentPrescription><id root=\"" RX_OID
	                   "\" extension=\"04F4C2-A99968-7F717P\"/>"
	                   "</pertinentPrescription></pertinentInformation1>"
	                   "</ParentPrescription></PORX_IN020101SM31>",
	                 rx, sizeof(rx)),
	    0);
	cr_assert_str_eq(rx, "04F4C2-A99968-7F717P");
}

Test(ebxml_hl7, absent_malformed_or_hostile_payloads_give_none)
{
	char rx[32];

	cr_assert_eq(rx_of("<a xmlns=\"urn:hl7-org:v3\"><id root=\"1\"/></a>",
	                 rx, sizeof(rx)),
	    MHS_ENOTFOUND);
	cr_assert_str_eq(rx, "");
	cr_assert_eq(rx_of("<a><id root=\"" RX_OID "\"/></a>", rx, sizeof(rx)),
	    MHS_ENOTFOUND);
	cr_assert_eq(rx_of("<a><id root=\"" RX_OID "\" extension=\"x\">", rx,
	                 sizeof(rx)),
	    MHS_EINVAL);
	cr_assert_eq(
	    rx_of("<!DOCTYPE a [<!ENTITY e \"X\">]><a><id root=\"" RX_OID
	          "\" extension=\"&e;\"/></a>",
	        rx, sizeof(rx)),
	    MHS_EINVAL);
	cr_assert_eq(mhs_ebxml_hl7_prescription_id(NULL, 0, rx, sizeof(rx)),
	    MHS_ENOTFOUND);
	cr_assert_eq(rx_of("<a><id root=\"" RX_OID
	                   "\" extension=\"0123456789ABCDEF0123456789\"/></a>",
	                 rx, 8),
	    MHS_ETOOBIG);
}

/* ---- ebxml_xpath: compiled once per thread, same answers ---- */

/* The expressions router/ebxml asks (from the document), and more. */
static const char *const doc_exprs[] = {
    "/soap:Envelope",
    "/soap:Envelope/soap:Header/eb:MessageHeader/.",
    "/soap:Envelope/soap:Header/eb:MessageHeader/eb:MessageData/eb:MessageId",
    "/soap:Envelope/soap:Header/eb:MessageHeader/eb:ConversationId",
    "/soap:Envelope/soap:Header/eb:MessageHeader/eb:From/eb:PartyId",
    "/soap:Envelope/soap:Header/eb:MessageHeader/eb:MessageData/"
    "eb:RefToMessageId",
    "/soap:Envelope/soap:Header/eb:MessageHeader/eb:DuplicateElimination",
    "/soap:Envelope/soap:Header/eb:AckRequested",
    "/soap:Envelope/soap:Header/eb:SyncReply",
    "/soap:Envelope/soap:Body/eb:Manifest/eb:Reference"
    "[starts-with(normalize-space(@xlink:href), 'cid:')][1]/@xlink:href",
    "/soap:Envelope/soap:Header/eb:ErrorList",
    "/soap:Envelope/soap:Header/eb:ErrorList/eb:Error",
    "/soap:Envelope/soap:Header/eb:Acknowledgment",
    "/soap:Envelope/soap:Header/eb:Acknowledgment/eb:RefToMessageId",
    "/soap:Envelope/soap:Body/soap:Fault",
    "/soap:Envelope/soap:Body/soap:Fault/faultstring",
    "/soap:Envelope/soap:Body/soap:Fault//nasp:errorList/nasp:error",
    "(//*[@root='1.2.3'][@extension])[1]/@extension",
    "//eb:PartyId[2]",
    "//eb:*[position() = last()]",
    "count(//*)", /* not a node-set: none */
    "//nosuch",
};

/* The relative ones, asked from every element. */
static const char *const node_exprs[] = {
    "@eb:errorCode",
    "eb:Description",
    "nasp:errorCode",
    "nasp:description",
    "eb:Timestamp",
    "..",
    "*[1]",
};

/* node-sets a and b (either NULL: none) hold the same nodes in order */
static bool
same_nodes(xmlXPathObjectPtr a, xmlXPathObjectPtr b)
{
	int na = a != NULL && a->type == XPATH_NODESET && a->nodesetval
	    ? a->nodesetval->nodeNr
	    : 0;
	int nb = b != NULL && b->type == XPATH_NODESET && b->nodesetval
	    ? b->nodesetval->nodeNr
	    : 0;

	if (na != nb)
		return false;
	for (int i = 0; i < na; i++)
		if (a->nodesetval->nodeTab[i] != b->nodesetval->nodeTab[i])
			return false;
	return true;
}

/* A fresh context and an uncompiled evaluation: what ebxml_xml.c did. */
static xmlXPathObjectPtr
eval_plain(struct ebxml_doc *d, xmlNodePtr at, const char *expr)
{
	xmlXPathContextPtr xp = xmlXPathNewContext(d->doc);
	xmlXPathObjectPtr o;

	cr_assert_not_null(xp);
	xmlXPathRegisterNs(xp, BAD_CAST "soap", BAD_CAST EBXML_NS_SOAP);
	xmlXPathRegisterNs(xp, BAD_CAST "eb", BAD_CAST EBXML_NS_EB);
	xmlXPathRegisterNs(xp, BAD_CAST "xlink", BAD_CAST EBXML_NS_XLINK);
	xmlXPathRegisterNs(xp, BAD_CAST "hl7", BAD_CAST EBXML_NS_HL7);
	xmlXPathRegisterNs(xp, BAD_CAST "nasp", BAD_CAST EBXML_NS_NASP);
	xp->node = at != NULL ? at : (xmlNodePtr) d->doc;
	o = xmlXPathEvalExpression(BAD_CAST expr, xp);
	xmlXPathFreeContext(xp);
	return o;
}

/* ebxml_doc_nodes(d, at, expr), twice (compiled, then cached), finds
 * what eval_plain finds; returns how many nodes that was. */
static int
assert_same(struct ebxml_doc *d, xmlNodePtr at, const char *expr)
{
	xmlXPathObjectPtr want = eval_plain(d, at, expr);
	int n = 0;

	for (int round = 0; round < 2; round++) {
		xmlXPathObjectPtr got = ebxml_doc_nodes(d, at, expr);

		cr_assert(same_nodes(got, want), "%s (round %d)", expr, round);
		if (got != NULL)
			n = got->nodesetval->nodeNr;
		xmlXPathFreeObject(got);
	}
	xmlXPathFreeObject(want);
	return n;
}

/* Every expression, from the document and from every element of xml. */
static int
assert_same_everywhere(const char *xml)
{
	struct ebxml_doc d;
	xmlXPathObjectPtr all;
	int found = 0;

	cr_assert_eq(ebxml_doc_parse(&d, xml, strlen(xml)), 0);
	for (size_t i = 0; i < sizeof(doc_exprs) / sizeof(doc_exprs[0]); i++)
		found += assert_same(&d, NULL, doc_exprs[i]);
	all = ebxml_doc_nodes(&d, NULL, "//*");
	cr_assert_not_null(all);
	for (int k = 0; k < all->nodesetval->nodeNr; k++)
		for (size_t i = 0;
		     i < sizeof(node_exprs) / sizeof(node_exprs[0]); i++)
			found += assert_same(
			    &d, all->nodesetval->nodeTab[k], node_exprs[i]);
	xmlXPathFreeObject(all);
	ebxml_doc_fini(&d);
	return found;
}

/* The SOAP envelope of spec_request_lf (its first MIME part). */
static char *
spec_request_envelope(void)
{
	const char *b = strstr(spec_request_lf, "<?xml");
	const char *e = strstr(spec_request_lf, "</SOAP:Envelope>");

	cr_assert(b != NULL && e != NULL);
	return strndup(b, (size_t) (e - b) + strlen("</SOAP:Envelope>"));
}

Test(ebxml_xpath, compiled_queries_find_what_uncompiled_ones_find)
{
	char *fault = fault_with(NASP_ERROR("206") NASP_ERROR("208"));
	char *req = spec_request_envelope();
	const char *rx = "<a xmlns:eb=\"" EBXML_NS_EB "\"><b root=\"1.2.3\"/>"
	                 "<c root=\"1.2.3\" extension=\"x\"/></a>";
	int found = 0;

	found += assert_same_everywhere(spec_ack);
	found += assert_same_everywhere(spec_error);
	found += assert_same_everywhere(fault);
	found += assert_same_everywhere(req);
	found += assert_same_everywhere(rx);
	cr_assert_gt(found, 100, "the fixtures must match something");
	cr_assert_leq(ebxml_xpath_cached(), 64);
	free(fault);
	free(req);
}

/* ---- child paths: the XPath answers, without XPath ---- */

/* The paths router/ebxml walks, and more. */
static const char *const child_paths[] = {
    "soap:Envelope",
    "soap:Envelope/soap:Header",
    "soap:Envelope/soap:Header/eb:MessageHeader",
    "soap:Envelope/soap:Header/eb:MessageHeader/eb:MessageData/"
    "eb:MessageId",
    "soap:Envelope/soap:Header/eb:MessageHeader/eb:Action",
    "soap:Envelope/soap:Header/eb:MessageHeader/eb:From/eb:PartyId",
    "soap:Envelope/soap:Header/eb:MessageHeader/eb:DuplicateElimination",
    "soap:Envelope/soap:Header/eb:AckRequested",
    "soap:Envelope/soap:Header/eb:ErrorList",
    "soap:Envelope/soap:Header/eb:Acknowledgment/eb:RefToMessageId",
    "soap:Envelope/soap:Body/soap:Fault",
    "soap:Envelope/soap:Body/eb:Manifest/eb:Reference",
    "eb:MessageHeader",
    "eb:Action",
    "nosuch:Envelope",
    "soap:Nosuch",
};

/* ebxml_doc_find(path) from at is XPath's first node of at's "path"
 * (the document: "/path"), and its text is ebxml_doc_text's. */
static int
assert_path_same(struct ebxml_doc *d, xmlNodePtr at, const char *path)
{
	char expr[256], want[128], got[128];
	xmlXPathObjectPtr o;
	xmlNodePtr n;
	int wrv, grv;

	snprintf(expr, sizeof(expr), "%s%s", at == NULL ? "/" : "", path);
	n = ebxml_doc_find(d, at, path, NULL, NULL);
	if (strncmp(path, "nosuch:", 7) == 0) {
		/* XPath refuses an unbound prefix; nothing is found. */
		cr_assert_null(n, "%s", expr);
		return 0;
	}
	o = eval_plain(d, at, expr);
	if (o == NULL || o->nodesetval == NULL || o->nodesetval->nodeNr == 0)
		cr_assert_null(n, "%s: XPath finds nothing", expr);
	else
		cr_assert_eq(n, o->nodesetval->nodeTab[0],
		    "%s: not XPath's first node", expr);
	xmlXPathFreeObject(o);
	wrv = ebxml_doc_text(d, at, expr, want, sizeof(want));
	grv = ebxml_doc_find_text(d, at, path, got, sizeof(got));
	cr_assert_eq(grv, wrv, "%s", expr);
	cr_assert_str_eq(got, want, "%s", expr);
	return n != NULL;
}

static int
assert_paths_everywhere(const char *xml)
{
	struct ebxml_doc d;
	xmlXPathObjectPtr all;
	int found = 0;

	cr_assert_eq(ebxml_doc_parse(&d, xml, strlen(xml)), 0);
	for (size_t i = 0; i < sizeof(child_paths) / sizeof(*child_paths); i++)
		found += assert_path_same(&d, NULL, child_paths[i]);
	all = ebxml_doc_nodes(&d, NULL, "//*");
	cr_assert_not_null(all);
	for (int k = 0; k < all->nodesetval->nodeNr; k++)
		for (size_t i = 0;
		     i < sizeof(child_paths) / sizeof(*child_paths); i++)
			found += assert_path_same(
			    &d, all->nodesetval->nodeTab[k], child_paths[i]);
	xmlXPathFreeObject(all);
	ebxml_doc_fini(&d);
	return found;
}

/* Two headers, the first without what is asked; the same names in the
 * wrong namespace and in none; text split by a comment and a CDATA. */
#define SOAP_OPEN                                                             \
	"<SOAP:Envelope xmlns:SOAP=\"" EBXML_NS_SOAP                          \
	"\" xmlns:eb=\"" EBXML_NS_EB "\" xmlns:x=\"urn:other\">"
static const char awkward_paths[] = SOAP_OPEN
    "<Header/><x:Header><eb:MessageHeader><eb:Action>wrong ns"
    "</eb:Action></eb:MessageHeader></x:Header>"
    "<SOAP:Header><eb:MessageHeader><eb:From><eb:PartyId>A</eb:PartyId>"
    "</eb:From><x:Action>no</x:Action><Action>no</Action>"
    "</eb:MessageHeader><eb:MessageHeader><eb:Action> P<!-- c -->OR"
    "<![CDATA[X]]> </eb:Action><eb:MessageData><eb:MessageId>m2"
    "</eb:MessageId></eb:MessageData></eb:MessageHeader></SOAP:Header>"
    "<SOAP:Header><eb:AckRequested/></SOAP:Header>"
    "<SOAP:Body><eb:Manifest><eb:Reference/></eb:Manifest></SOAP:Body>"
    "</SOAP:Envelope>";

Test(ebxml_paths, child_paths_find_what_xpath_finds_first)
{
	char *fault = fault_with(NASP_ERROR("206") NASP_ERROR("208"));
	char *req = spec_request_envelope();
	int found = 0;

	found += assert_paths_everywhere(spec_ack);
	found += assert_paths_everywhere(spec_error);
	found += assert_paths_everywhere(fault);
	found += assert_paths_everywhere(req);
	found += assert_paths_everywhere(awkward_paths);
	cr_assert_gt(found, 30, "the fixtures must match something");
	free(fault);
	free(req);
}

Test(ebxml_paths, the_manifest_reference_is_the_first_cid_one)
{
	/* The first Reference is not a cid: one; the second is, with
	 * space before it; the payload must be the part it names. */
	static const char body[] =
	    "--B\r\nContent-Id: <h>\r\n\r\n" SOAP_OPEN
	    "<SOAP:Header><eb:MessageHeader><eb:MessageData><eb:MessageId>m"
	    "</eb:MessageId></eb:MessageData></eb:MessageHeader></SOAP:Header>"
	    "<SOAP:Body><eb:Manifest xmlns:xlink=\"" EBXML_NS_XLINK "\">"
	    "<eb:Reference xlink:href=\"http://x/\"/>"
	    "<eb:Reference xlink:href=\" \n cid:p2 \"/>"
	    "</eb:Manifest></SOAP:Body></SOAP:Envelope>\r\n"
	    "--B\r\nContent-Id: <p1>\r\n\r\none\r\n"
	    "--B\r\nContent-Id: <p2>\r\n\r\ntwo\r\n--B--\r\n";
	struct mhs_ebxml_request r;
	char why[160];

	cr_assert_eq(mhs_ebxml_parse_request("multipart/related; boundary=B",
	                 body, strlen(body), &r, why, sizeof(why)),
	    0, "%s", why);
	cr_assert_str_eq(r.message_id, "m");
	cr_assert_eq(r.payload_len, 3);
	cr_assert(memcmp(r.payload, "two", 3) == 0, "payload %.*s",
	    (int) r.payload_len, r.payload);
}

Test(ebxml_xpath, expressions_past_the_bound_are_evaluated_uncompiled)
{
	struct ebxml_doc d;
	char expr[80];

	cr_assert_eq(ebxml_doc_parse(&d, spec_ack, strlen(spec_ack)), 0);
	for (int i = 1; i <= 100; i++) {
		snprintf(expr, sizeof(expr),
		    "(/soap:Envelope/soap:Header//*)[%d]", i % 30 + 1);
		if (i > 30)
			snprintf(expr + strlen(expr),
			    sizeof(expr) - strlen(expr), "[%d > 0]", i);
		assert_same(&d, NULL, expr);
	}
	cr_assert_eq(ebxml_xpath_cached(), 64, "the cache is bounded");
	/* Past the bound nothing changes: the expressions already kept are
	 * still kept and still right. */
	cr_assert_eq(assert_same(&d, NULL, "/soap:Envelope"), 1);
	cr_assert_eq(assert_same(&d, NULL,
	                 "/soap:Envelope/soap:Header/eb:Acknowledgment/"
	                 "eb:RefToMessageId"),
	    1);
	cr_assert_eq(ebxml_xpath_cached(), 64);
	ebxml_doc_fini(&d);
}

/* libxml2 reports a malformed expression on stderr: not here. */
static void
errors_ignored(void *ctx, const char *msg, ...)
{
	(void) ctx;
	(void) msg;
}

Test(ebxml_xpath, a_bad_expression_finds_nothing_and_is_not_kept)
{
	struct ebxml_doc d;
	size_t before;

	cr_assert_eq(ebxml_doc_parse(&d, spec_ack, strlen(spec_ack)), 0);
	xmlSetGenericErrorFunc(NULL, errors_ignored);
	before = ebxml_xpath_cached();
	cr_assert_null(ebxml_doc_nodes(&d, NULL, "/soap:Envelope["));
	cr_assert_eq(ebxml_xpath_cached(), before, "a bad one is not kept");
	/* A prefix nobody bound compiles; it fails when run. */
	cr_assert_null(ebxml_doc_nodes(&d, NULL, "/nosuch:Envelope"));
	cr_assert_null(ebxml_doc_nodes(&d, NULL, "/nosuch:Envelope"));
	cr_assert_eq(assert_same(&d, NULL, "/soap:Envelope"), 1);
	xmlSetGenericErrorFunc(NULL, NULL);
	ebxml_doc_fini(&d);
}

#define XP_THREADS 8
#define XP_ROUNDS  100

static atomic_int xp_wrong;

#define XP_RX_PAYLOAD                                                         \
	"<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"><pertinentPrescription>" \
	"<id root=\"" RX_OID "\" extension=\"04F4C2-A99968-7F717P\"/>"        \
	"</pertinentPrescription></PORX_IN020101SM31>"

/* One thread's share: everything router/ebxml parses, answers checked. */
static void *
xpath_worker(void *arg)
{
	const char *fault = arg;
	struct mhs_ebxml_request r;
	char why[256], rx[32];
	int wrong = 0;

	for (int i = 0; i < XP_ROUNDS; i++) {
		wrong += classify_str(202, spec_ack, true, NULL, 0) !=
		    MHS_EBXML_DELIVERED;
		wrong += classify_str(500, spec_error, true, NULL, 0) !=
		    MHS_EBXML_FAILED;
		wrong += classify_str(500, fault, true, why, sizeof(why)) !=
		    MHS_EBXML_RETRY;
		wrong +=
		    mhs_ebxml_parse_request(CT_MHS, spec_request_lf,
		        strlen(spec_request_lf), &r, why, sizeof(why)) != 0 ||
		    strcmp(r.message_id, MSG_ID) != 0 ||
		    strcmp(r.to_party, "YES-0000806") != 0 || !r.sync_reply ||
		    r.payload_len != strlen(PAYLOAD);
		wrong += rx_of(XP_RX_PAYLOAD, rx, sizeof(rx)) != 0 ||
		    strcmp(rx, "04F4C2-A99968-7F717P") != 0;
	}
	atomic_fetch_add(&xp_wrong, wrong);
	return NULL;
}

Test(ebxml_xpath, threads_parsing_at_once_get_one_threads_answers)
{
	char *fault = fault_with(NASP_ERROR("206"));
	pthread_t th[XP_THREADS];

	/* One thread alone first: the answers the others must give. */
	xpath_worker(fault);
	cr_assert_eq(atomic_load(&xp_wrong), 0);
	/* Threads exit (freeing their state) while others still parse;
	 * then a second wave starts with none. */
	for (int wave = 0; wave < 2; wave++) {
		for (int i = 0; i < XP_THREADS; i++)
			cr_assert_eq(
			    pthread_create(&th[i], NULL, xpath_worker, fault),
			    0);
		for (int i = 0; i < XP_THREADS; i++)
			pthread_join(th[i], NULL);
	}
	cr_assert_eq(atomic_load(&xp_wrong), 0, "%d wrong answers",
	    atomic_load(&xp_wrong));
	free(fault);
}

/* ---- the SAX scan: the DOM's answers without a tree ---- */

/* Every child path's answer from ebxml_scan is ebxml_doc_find's. */
static int
assert_scan_same(const char *xml)
{
	enum { N = sizeof(child_paths) / sizeof(*child_paths) };
	static const size_t caps[] = {128, 4};
	struct ebxml_query q[N];
	struct ebxml_doc d;
	bool unsure;
	int found = 0;

	cr_assert_leq(N, EBXML_SCAN_MAX);
	memset(q, 0, sizeof(q));
	for (size_t i = 0; i < N; i++)
		q[i] = (struct ebxml_query) {
		    .path = child_paths[i], .want = EBXML_WANT_TEXT};
	cr_assert_eq(ebxml_doc_parse(&d, xml, strlen(xml)), 0);
	cr_assert_eq(ebxml_scan(xml, strlen(xml), q, N, &unsure), 0);
	cr_assert_not(unsure);
	for (size_t i = 0; i < N; i++) {
		xmlNodePtr n = ebxml_doc_find(&d, NULL, q[i].path, NULL, NULL);

		cr_assert_eq(q[i].found, n != NULL, "%s", q[i].path);
		found += q[i].found;
		for (size_t c = 0; c < sizeof(caps) / sizeof(*caps); c++) {
			char want[128], got[128];
			int wrv = ebxml_doc_find_text(
			    &d, NULL, q[i].path, want, caps[c]);
			int grv = ebxml_query_text(&q[i], got, caps[c]);

			cr_assert_eq(
			    grv, wrv, "%s (cap %zu)", q[i].path, caps[c]);
			cr_assert_str_eq(
			    got, want, "%s (cap %zu)", q[i].path, caps[c]);
		}
	}
	ebxml_queries_fini(q, N);
	ebxml_doc_fini(&d);
	return found;
}

/* Nested same names, entities and character references in text. */
static const char nested_paths[] = SOAP_OPEN
    "<SOAP:Header><eb:MessageHeader><eb:Action>a&amp;b&#65;<eb:Action>"
    "in</eb:Action> z </eb:Action><eb:Action>second</eb:Action>"
    "<eb:MessageData/><eb:MessageData><eb:MessageId>   </eb:MessageId>"
    "</eb:MessageData></eb:MessageHeader></SOAP:Header></SOAP:Envelope>";

Test(ebxml_scan, answers_what_the_dom_finds)
{
	char *fault = fault_with(NASP_ERROR("206") NASP_ERROR("208"));
	char *req = spec_request_envelope();
	int found = 0;

	found += assert_scan_same(spec_ack);
	found += assert_scan_same(spec_error);
	found += assert_scan_same(fault);
	found += assert_scan_same(req);
	found += assert_scan_same(awkward_paths);
	found += assert_scan_same(nested_paths);
	cr_assert_gt(found, 20, "the fixtures must match something");
	free(fault);
	free(req);
}

Test(ebxml_scan, refuses_what_the_dom_refuses)
{
	static const char *const bad[] = {
	    "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY e \"x\">]><a/>",
	    "<a><b></a>",
	    "<a>&undeclared;</a>",
	    "not xml at all",
	    "<a/><b/>",
	};
	struct ebxml_query q = {.path = "soap:Envelope"};
	struct ebxml_doc d;
	bool unsure;

	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		cr_assert_neq(ebxml_doc_parse(&d, bad[i], strlen(bad[i])), 0,
		    "%s", bad[i]);
		cr_assert_eq(
		    ebxml_scan(bad[i], strlen(bad[i]), &q, 1, &unsure),
		    MHS_EINVAL, "%s", bad[i]);
		ebxml_queries_fini(&q, 1);
	}
}

Test(ebxml_scan, a_reference_in_the_manifest_href_is_read_through_the_dom)
{
	/* "cid:p&amp;2" is cid:p&2 once decoded: the part the DOM finds.
	 * libxml2 hands SAX an ampersand still encoded (&#38;). */
	static const char body[] =
	    "--B\r\nContent-Id: <h>\r\n\r\n" SOAP_OPEN
	    "<SOAP:Header><eb:MessageHeader><eb:MessageData><eb:MessageId>m"
	    "</eb:MessageId></eb:MessageData></eb:MessageHeader></SOAP:Header>"
	    "<SOAP:Body><eb:Manifest xmlns:xlink=\"" EBXML_NS_XLINK "\">"
	    "<eb:Reference xlink:href=\"cid:p&amp;2\"/>"
	    "</eb:Manifest></SOAP:Body></SOAP:Envelope>\r\n"
	    "--B\r\nContent-Id: <p1>\r\n\r\none\r\n"
	    "--B\r\nContent-Id: <p&2>\r\n\r\ntwo\r\n--B--\r\n";
	struct ebxml_query q = {
	    .path = "soap:Envelope/soap:Body/eb:Manifest/eb:Reference",
	    .want = EBXML_WANT_CID_HREF};
	const char *xml = strstr(body, "<SOAP:Envelope");
	struct mhs_ebxml_request r;
	bool unsure;
	char why[160];

	cr_assert_eq(ebxml_scan(xml,
	                 (size_t) (strstr(body,
	                               "\r\n--B\r\nC"
	                               "ontent-Id: <p1>") -
	                     xml),
	                 &q, 1, &unsure),
	    0);
	cr_assert(unsure, "an encoded href is the DOM's to read");
	ebxml_queries_fini(&q, 1);
	cr_assert_eq(mhs_ebxml_parse_request("multipart/related; boundary=B",
	                 body, strlen(body), &r, why, sizeof(why)),
	    0, "%s", why);
	cr_assert_eq(r.payload_len, 3);
	cr_assert(memcmp(r.payload, "two", 3) == 0, "payload %.*s",
	    (int) r.payload_len, r.payload);
}

Test(ebxml_scan, an_ack_split_by_a_comment_and_a_cdata_is_still_ours)
{
	static const char ack[] = SOAP_OPEN
	    "<SOAP:Header><eb:Acknowledgment><eb:RefToMessageId> AB<!-- x -->"
	    "<![CDATA[CD]]>&#69; </eb:RefToMessageId></eb:Acknowledgment>"
	    "</SOAP:Header></SOAP:Envelope>";
	char why[160];

	cr_assert_eq(mhs_ebxml_classify(202, "text/xml", ack, strlen(ack),
	                 "abcde", true, why, sizeof(why)),
	    MHS_EBXML_DELIVERED, "%s", why);
	cr_assert_eq(mhs_ebxml_classify(202, "text/xml", ack, strlen(ack),
	                 "ABCDF", true, why, sizeof(why)),
	    MHS_EBXML_UNEXPECTED, "%s", why);
	cr_assert(strstr(why, "\"ABCDE\"") != NULL, "%s", why);
}

Test(ebxml_scan, a_kept_context_answers_after_failures_and_invented_names)
{
	struct mhs_buf big = MHS_BUF_INIT;
	char *req = spec_request_envelope();
	static const char bad[] = "<a><b></a>";
	bool unsure;

	/* Many distinct names (past the dictionary's bound) and a document
	 * that fails, each followed by the request: the same answers. */
	mhs_buf_puts(&big, "<r>");
	for (int i = 0; i < 6000; i++)
		mhs_buf_printf(&big, "<n%d/>", i);
	mhs_buf_puts(&big, "</r>");
	for (int round = 0; round < 3; round++) {
		struct ebxml_query q = {.path = "soap:Envelope/soap:Header/"
		                                "eb:MessageHeader/eb:Action",
		    .want = EBXML_WANT_TEXT};
		char action[64];

		if (round == 1)
			cr_assert_eq(
			    ebxml_scan(big.data, big.len, &q, 1, &unsure), 0);
		if (round == 2)
			cr_assert_eq(
			    ebxml_scan(bad, strlen(bad), &q, 1, &unsure),
			    MHS_EINVAL);
		cr_assert_eq(ebxml_scan(req, strlen(req), &q, 1, &unsure), 0);
		cr_assert(q.found, "round %d", round);
		cr_assert_eq(ebxml_query_text(&q, action, sizeof(action)), 0);
		cr_assert_str_eq(
		    action, "PORX_IN020101SM31", "round %d", round);
		ebxml_queries_fini(&q, 1);
	}
	mhs_buf_fini(&big);
	free(req);
}
