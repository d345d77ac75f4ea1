/*
 * Design notes: writers for every ebXML body we send (SPINE-EBXML.md §1-3,
 * §5): the router's multipart request, and the ack, MessageError and SOAP
 * fault a Spine (the simulator) answers with. Layout follows the examples
 * in SPINE-EBXML.md §5 element for element; all line ends are CRLF. Every
 * value goes through ebxml_esc(); values that also land in a MIME or HTTP
 * header are checked to be header-safe first. Builders validate before
 * they write, so a failed call leaves nothing half-built worth sending.
 */
#include <stdio.h>
#include <string.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"
#include "util.h"

#define CRLF                 "\r\n"
#define PARTY_TYPE           "urn:nhs:names:partyType:ocs+serviceInstance"
#define ACTOR_TO             "urn:oasis:names:tc:ebxml-msg:actor:toPartyMSH"
#define ACTOR_NEXT           "http://schemas.xmlsoap.org/soap/actor/next"
#define EB_SERVICE           "urn:oasis:names:tc:ebxml-msg:service"
#define XML_DECL             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>" CRLF
#define DEFAULT_PAYLOAD_TYPE "text/xml; charset=UTF-8"

/*
 * Sizes reserved before building, so a body is one allocation: the
 * request's MIME headers and envelope, and a whole reply, come to about
 * 1.5 KiB with ordinary ids and parties.
 */
#define BUILD_RESERVE 2048

/* Appends open tag, escaped text and close tag (no printf: per message). */
static void
put_elem(
    struct mhs_buf *b, const char *indent, const char *tag, const char *text)
{
	mhs_buf_puts(b, indent);
	mhs_buf_puts(b, "<");
	mhs_buf_puts(b, tag);
	mhs_buf_puts(b, ">");
	ebxml_esc(b, text);
	mhs_buf_puts(b, "</");
	mhs_buf_puts(b, tag);
	mhs_buf_puts(b, ">" CRLF);
}

static void
put_party(
    struct mhs_buf *b, const char *indent, const char *tag, const char *party)
{
	mhs_buf_puts(b, indent);
	mhs_buf_puts(b, "<eb:");
	mhs_buf_puts(b, tag);
	mhs_buf_puts(b, "><eb:PartyId eb:type=\"" PARTY_TYPE "\">");
	ebxml_esc(b, party);
	mhs_buf_puts(b, "</eb:PartyId></eb:");
	mhs_buf_puts(b, tag);
	mhs_buf_puts(b, ">" CRLF);
}

static int
buf_result(struct mhs_buf *b)
{
	return b->err != 0 ? MHS_ENOMEM : 0;
}

/* ---- request ---- */

static bool
msg_fields_ok(const struct mhs_ebxml_msg *m)
{
	const char *text[] = {
	    m->conversation_id, m->cpa_id, m->from_party, m->to_party};

	for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
		if (text[i] == NULL || text[i][0] == '\0' ||
		    !ebxml_text_ok(text[i]))
			return false;
	if (strlen(m->message_id != NULL ? m->message_id : "") > 63)
		return false;
	if (m->ref_to_message_id != NULL && m->ref_to_message_id[0] != '\0' &&
	    (strlen(m->ref_to_message_id) > 63 ||
	        !ebxml_token_ok(m->ref_to_message_id)))
		return false;
	if (!ebxml_token_ok(m->message_id) || !ebxml_token_ok(m->service) ||
	    !ebxml_token_ok(m->interaction))
		return false;
	if (m->payload_content_type != NULL &&
	    (!ebxml_text_ok(m->payload_content_type) ||
	        strpbrk(m->payload_content_type, "\r\n") != NULL))
		return false;
	return m->payload != NULL || m->payload_len == 0;
}

static void
put_msg_header(struct mhs_buf *b, const struct mhs_ebxml_msg *m)
{
	char ts[21];

	mhs_time_iso(
	    m->timestamp_ms != 0 ? m->timestamp_ms : mhs_now_ms(), ts);
	mhs_buf_puts(b,
	    "  <eb:MessageHeader SOAP:mustUnderstand=\"1\" "
	    "eb:version=\"2.0\">" CRLF);
	put_party(b, "   ", "From", m->from_party);
	put_party(b, "   ", "To", m->to_party);
	put_elem(b, "   ", "eb:CPAId", m->cpa_id);
	put_elem(b, "   ", "eb:ConversationId", m->conversation_id);
	put_elem(b, "   ", "eb:Service", m->service);
	put_elem(b, "   ", "eb:Action", m->interaction);
	mhs_buf_puts(b, "   <eb:MessageData>" CRLF);
	put_elem(b, "    ", "eb:MessageId", m->message_id);
	put_elem(b, "    ", "eb:Timestamp", ts);
	if (m->ref_to_message_id != NULL && m->ref_to_message_id[0] != '\0')
		put_elem(b, "    ", "eb:RefToMessageId", m->ref_to_message_id);
	mhs_buf_puts(b, "   </eb:MessageData>" CRLF);
	if (m->duplicate_elimination)
		mhs_buf_puts(b, "   <eb:DuplicateElimination/>" CRLF);
	mhs_buf_puts(b, "  </eb:MessageHeader>" CRLF);
}

static void
put_envelope(struct mhs_buf *b, const struct mhs_ebxml_msg *m)
{
	mhs_buf_puts(b,
	    XML_DECL "<SOAP:Envelope xmlns:SOAP=\"" EBXML_NS_SOAP "\"" CRLF
	             "  xmlns:eb=\"" EBXML_NS_EB "\"" CRLF
	             "  xmlns:hl7ebxml=\"" EBXML_NS_HL7 "\"" CRLF
	             "  xmlns:xlink=\"" EBXML_NS_XLINK "\">" CRLF
	             " <SOAP:Header>" CRLF);
	put_msg_header(b, m);
	if (m->ack_requested)
		mhs_buf_puts(b,
		    "  <eb:AckRequested SOAP:mustUnderstand=\"1\" "
		    "eb:version=\"2.0\" eb:signed=\"false\" "
		    "SOAP:actor=\"" ACTOR_TO "\"/>" CRLF);
	if (m->sync_reply)
		mhs_buf_puts(b,
		    "  <eb:SyncReply SOAP:mustUnderstand=\"1\" "
		    "eb:version=\"2.0\" SOAP:actor=\"" ACTOR_NEXT "\"/>" CRLF);
	mhs_buf_puts(b,
	    " </SOAP:Header>" CRLF " <SOAP:Body>" CRLF
	    "  <eb:Manifest SOAP:mustUnderstand=\"1\" "
	    "eb:version=\"2.0\">" CRLF "   <eb:Reference xlink:href=\"cid:");
	ebxml_esc(b, m->message_id);
	mhs_buf_puts(b,
	    "@spine.nhs.uk\">" CRLF
	    "    <eb:Schema eb:location=\"http://www.nhsia.nhs.uk/schemas/"
	    "HL7-Message.xsd\" eb:version=\"1.0\"/>" CRLF
	    "    <eb:Description xml:lang=\"en\">HL7 "
	    "payload</eb:Description>" CRLF
	    "    <hl7ebxml:Payload style=\"HL7\" encoding=\"XML\" "
	    "version=\"3.0\"/>" CRLF "   </eb:Reference>" CRLF
	    "  </eb:Manifest>" CRLF " </SOAP:Body>" CRLF
	    "</SOAP:Envelope>" CRLF);
}

static void
put_part_headers(struct mhs_buf *b, const char *cid, const char *ctype)
{
	mhs_buf_puts(b, "--" MHS_EBXML_BOUNDARY CRLF "Content-Id: <");
	mhs_buf_puts(b, cid);
	mhs_buf_puts(b, ">" CRLF "Content-Type: ");
	mhs_buf_puts(b, ctype);
	mhs_buf_puts(b, CRLF "Content-Transfer-Encoding: 8bit" CRLF CRLF);
}

int
mhs_ebxml_build(const struct mhs_ebxml_msg *m, struct mhs_buf *body,
    char *content_type, size_t ctlen, char *soap_action, size_t salen)
{
	const char *ptype = m->payload_content_type;
	char cid[96];
	int n;

	mhs_buf_reset(body);
	if (!msg_fields_ok(m))
		return MHS_EINVAL;
	if (m->payload_len > 0 &&
	    memmem(m->payload, m->payload_len, "--" MHS_EBXML_BOUNDARY,
	        strlen("--" MHS_EBXML_BOUNDARY)) != NULL)
		return MHS_EINVAL;
	if (strlen(MHS_EBXML_CONTENT_TYPE) + 1 > ctlen)
		return MHS_ETOOBIG;
	n = snprintf(soap_action, salen, "%s/%s", m->service, m->interaction);
	if (n < 0 || (size_t) n >= salen)
		return MHS_ETOOBIG;
	snprintf(content_type, ctlen, "%s", MHS_EBXML_CONTENT_TYPE);
	snprintf(cid, sizeof(cid), "%s@spine.nhs.uk", m->message_id);

	mhs_buf_reserve(body, BUILD_RESERVE + m->payload_len);
	put_part_headers(body, MHS_EBXML_START_ID, DEFAULT_PAYLOAD_TYPE);
	put_envelope(body, m);
	put_part_headers(body, cid,
	    ptype != NULL && ptype[0] != '\0' ? ptype : DEFAULT_PAYLOAD_TYPE);
	if (m->payload_len > 0)
		mhs_buf_append(body, m->payload, m->payload_len);
	mhs_buf_puts(body, CRLF "--" MHS_EBXML_BOUNDARY "--" CRLF);
	return buf_result(body);
}

/* ---- replies ---- */

static bool
req_fields_ok(const struct mhs_ebxml_request *r)
{
	return ebxml_text_ok(r->message_id) &&
	    ebxml_text_ok(r->conversation_id) && ebxml_text_ok(r->cpa_id) &&
	    ebxml_text_ok(r->from_party) && ebxml_text_ok(r->to_party);
}

static void
put_reply_start(struct mhs_buf *b, const struct mhs_ebxml_request *r,
    const char *action, const char *msg_id, const char *ts)
{
	mhs_buf_puts(b,
	    XML_DECL "<soap:Envelope xmlns:soap=\"" EBXML_NS_SOAP "\"" CRLF
	             "  xmlns:eb=\"" EBXML_NS_EB "\">" CRLF
	             " <soap:Header>" CRLF
	             "  <eb:MessageHeader soap:mustUnderstand=\"1\" "
	             "eb:version=\"2.0\">" CRLF);
	put_party(b, "   ", "From", r->to_party);
	put_party(b, "   ", "To", r->from_party);
	put_elem(b, "   ", "eb:CPAId", r->cpa_id);
	put_elem(b, "   ", "eb:ConversationId", r->conversation_id);
	put_elem(b, "   ", "eb:Service", EB_SERVICE);
	put_elem(b, "   ", "eb:Action", action);
	mhs_buf_puts(b, "   <eb:MessageData>" CRLF);
	put_elem(b, "    ", "eb:MessageId", msg_id);
	put_elem(b, "    ", "eb:Timestamp", ts);
	if (r->message_id[0] != '\0')
		put_elem(b, "    ", "eb:RefToMessageId", r->message_id);
	mhs_buf_puts(
	    b, "   </eb:MessageData>" CRLF "  </eb:MessageHeader>" CRLF);
}

static void
put_reply_end(struct mhs_buf *b)
{
	mhs_buf_puts(b,
	    " </soap:Header>" CRLF " <soap:Body/>" CRLF
	    "</soap:Envelope>" CRLF);
}

int
mhs_ebxml_build_ack(const struct mhs_ebxml_request *req,
    const char *ack_message_id, int64_t now_ms, struct mhs_buf *out)
{
	char ts[21];

	mhs_buf_reset(out);
	if (!req_fields_ok(req) || ack_message_id == NULL ||
	    !ebxml_text_ok(ack_message_id))
		return MHS_EINVAL;
	mhs_time_iso(now_ms, ts);
	mhs_buf_reserve(out, BUILD_RESERVE);
	put_reply_start(out, req, "Acknowledgment", ack_message_id, ts);
	mhs_buf_puts(out,
	    "  <eb:Acknowledgment soap:mustUnderstand=\"1\" "
	    "eb:version=\"2.0\"" CRLF "    soap:actor=\"" ACTOR_TO "\">" CRLF);
	put_elem(out, "   ", "eb:Timestamp", ts);
	put_elem(out, "   ", "eb:RefToMessageId", req->message_id);
	put_party(out, "   ", "From", req->to_party);
	mhs_buf_puts(out, "  </eb:Acknowledgment>" CRLF);
	put_reply_end(out);
	return buf_result(out);
}

int
mhs_ebxml_build_error_list(const struct mhs_ebxml_request *req,
    const char *msg_id, int64_t now_ms, const char *error_code,
    const char *description, struct mhs_buf *out)
{
	static const struct mhs_ebxml_request none;
	char ts[21];

	mhs_buf_reset(out);
	if (req == NULL)
		req = &none;
	if (!req_fields_ok(req) || msg_id == NULL || !ebxml_text_ok(msg_id) ||
	    error_code == NULL || !ebxml_text_ok(error_code) ||
	    description == NULL || !ebxml_text_ok(description))
		return MHS_EINVAL;
	mhs_time_iso(now_ms, ts);
	put_reply_start(out, req, "MessageError", msg_id, ts);
	mhs_buf_puts(out,
	    "  <eb:ErrorList soap:mustUnderstand=\"1\" "
	    "eb:version=\"2.0\" eb:highestSeverity=\"Error\">" CRLF
	    "   <eb:Error eb:codeContext=\"urn:oasis:names:tc:"
	    "ebxml-msg:service:errors\"" CRLF "     eb:errorCode=\"");
	ebxml_esc(out, error_code);
	mhs_buf_puts(out, "\" eb:severity=\"Error\">" CRLF);
	mhs_buf_puts(out, "    <eb:Description xml:lang=\"en-GB\">");
	ebxml_esc(out, description);
	mhs_buf_puts(out,
	    "</eb:Description>" CRLF "   </eb:Error>" CRLF
	    "  </eb:ErrorList>" CRLF);
	put_reply_end(out);
	return buf_result(out);
}

int
mhs_ebxml_build_soap_fault(
    int nhs_error_code, const char *description, struct mhs_buf *out)
{
	mhs_buf_reset(out);
	if (description == NULL || !ebxml_text_ok(description))
		return MHS_EINVAL;
	mhs_buf_printf(out,
	    XML_DECL
	    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"" EBXML_NS_SOAP "\">" CRLF
	    " <SOAP-ENV:Body>" CRLF "  <SOAP-ENV:Fault>" CRLF
	    "   <faultcode>SOAP-ENV:Server</faultcode>" CRLF
	    "   <faultstring>Application Exception</faultstring>" CRLF
	    "   <detail>" CRLF
	    "    <nasp:errorList xmlns:nasp=\"" EBXML_NS_NASP "\">" CRLF
	    "     <nasp:error>" CRLF
	    "      <nasp:codeContext>urn:nhs:names:error:tms"
	    "</nasp:codeContext>" CRLF
	    "      <nasp:errorCode>%d</nasp:errorCode>" CRLF
	    "      <nasp:severity>Error</nasp:severity>" CRLF
	    "      <nasp:location>Not Supported</nasp:location>" CRLF
	    "      <nasp:description>",
	    nhs_error_code);
	ebxml_esc(out, description);
	mhs_buf_puts(out,
	    "</nasp:description>" CRLF "     </nasp:error>" CRLF
	    "    </nasp:errorList>" CRLF "   </detail>" CRLF
	    "  </SOAP-ENV:Fault>" CRLF " </SOAP-ENV:Body>" CRLF
	    "</SOAP-ENV:Envelope>" CRLF);
	return buf_result(out);
}
