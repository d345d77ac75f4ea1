/*
 * Design notes: the Spine ebXML wire format (shared/SPINE-EBXML.md), both
 * sides of it. The router builds requests and classifies Spine's replies;
 * the Spine simulator (and later the router's inbound listener) parses
 * requests and builds the replies Spine would send.
 *
 * - Pure functions: no global state of our own, no I/O, no logging, safe
 *   from any thread (libxml2 is initialised once through pthread_once).
 * - XML is read with libxml2 only, matched on namespace URIs (never on
 *   prefixes, never by string search). Documents with a DTD are refused
 *   (SOAP 1.1 forbids them), entities are never expanded, the network is
 *   never touched, and every input is bounded before it is parsed.
 * - Every text value written into XML is escaped; values that end up in
 *   MIME or HTTP headers are checked for CR/LF so a field cannot inject a
 *   header.
 * - Reasons are short human text for logs and GetStatus: built from ebXML
 *   codes and descriptions, never from the payload.
 */
#ifndef MHS_EBXML_H
#define MHS_EBXML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define MHS_EBXML_BOUNDARY "--=_MIME-Boundary"
#define MHS_EBXML_START_ID "ebXMLHeader@spine.nhs.uk"
#define MHS_EBXML_CONTENT_TYPE                                                \
	"multipart/related; boundary=\"" MHS_EBXML_BOUNDARY                   \
	"\"; type=\"text/xml\"; start=\"<" MHS_EBXML_START_ID ">\""
/* Replies are a bare SOAP envelope with exactly this Content-Type. */
#define MHS_EBXML_REPLY_TYPE "text/xml"

/* Bounds: a whole body we look at, and the XML part handed to libxml2. */
#define MHS_EBXML_MAX_BODY     (16u * 1024 * 1024)
#define MHS_EBXML_MAX_ENVELOPE (1024u * 1024)
#define MHS_EBXML_MAX_PARTS    32

struct mhs_ebxml_msg {
	const char *message_id;      /* upper-case UUID; also part 2's cid */
	const char *conversation_id; /* UUID */
	const char *interaction;     /* eb:Action, e.g. PORX_IN020101SM31 */
	const char *service;         /* urn:nhs:names:services:mm */
	const char *cpa_id, *from_party, *to_party;
	bool duplicate_elimination, ack_requested, sync_reply;
	int64_t timestamp_ms; /* 0: now */
	/* part 2's Content-Type; NULL or "": text/xml; charset=UTF-8 */
	const char *payload_content_type;
	const void *payload;
	size_t payload_len;
	/* eb:RefToMessageId, on responses only; NULL or "": none */
	const char *ref_to_message_id;
};

/*
 * mhs_ebxml_build writes the multipart/related body of SPINE-EBXML.md
 * §1-2 into body (reset first; the caller owns and frees it), the
 * Content-Type header value into content_type and the SOAPAction value
 * (service/interaction) into soap_action. Every field except the payload
 * and ref_to_message_id must be non-empty UTF-8 without control
 * characters; message_id, service, interaction and (when set)
 * ref_to_message_id must also be header-safe tokens. ref_to_message_id
 * is written in eb:MessageData after eb:Timestamp (SPINE-EBXML.md §2).
 * Returns 0, MHS_EINVAL (bad field, or a payload containing the MIME
 * delimiter), MHS_ETOOBIG (ctlen or salen too small) or MHS_ENOMEM.
 */
int mhs_ebxml_build(const struct mhs_ebxml_msg *m, struct mhs_buf *body,
    char *content_type, size_t ctlen, char *soap_action, size_t salen);

enum mhs_ebxml_verdict {
	MHS_EBXML_DELIVERED,
	MHS_EBXML_RETRY,      /* SOAP fault whose codes are all 200/206/208 */
	MHS_EBXML_FAILED,     /* ErrorList, or any other SOAP fault */
	MHS_EBXML_UNEXPECTED, /* no usable ebXML reply: retry as transport */
};

/*
 * mhs_ebxml_classify reads Spine's reply (SPINE-EBXML.md §3-4):
 *  - eb:ErrorList -> FAILED (ebXML errors are never retried);
 *  - SOAP Fault -> RETRY iff its nasp:errorList is non-empty and every
 *    nasp:errorCode is 200, 206 or 208, else FAILED (an empty or
 *    unreadable list is not retriable);
 *  - 202 + eb:Acknowledgment whose RefToMessageId equals message_id
 *    (case-insensitive) -> DELIVERED; another RefToMessageId, or an ack
 *    with another status -> UNEXPECTED;
 *  - 202 without an ack (empty or not ebXML) -> DELIVERED only when
 *    expect_ack is false (express and forward-reliable), else UNEXPECTED;
 *  - anything else (e.g. 503 with an HTML page) -> UNEXPECTED.
 * content_type may be NULL; a multipart/related reply is read through its
 * start part. message_id NULL accepts any ack. reason (may be NULL) gets
 * a short text for every verdict.
 */
enum mhs_ebxml_verdict mhs_ebxml_classify(int http_status,
    const char *content_type, const void *body, size_t len,
    const char *message_id, bool expect_ack, char *reason, size_t reasonlen);

/* mhs_ebxml_verdict_name: "delivered", "retry", "failed", "unexpected". */
const char *mhs_ebxml_verdict_name(enum mhs_ebxml_verdict v);

/*
 * The receiver's view of one request. Text fields are trimmed copies;
 * absent elements leave them empty (the caller decides what is required).
 * payload points into the body given to mhs_ebxml_parse_request (not
 * copied): the part named by the Manifest's cid: reference, else the part
 * after the ebXML header; NULL/0 when there is none.
 */
struct mhs_ebxml_request {
	char message_id[64], conversation_id[64], action[64], cpa_id[64];
	char service[128], from_party[65], to_party[65];
	char ref_to_message_id[64];
	char timestamp[40];
	bool duplicate_elimination, ack_requested, sync_reply;
	const char *payload;
	size_t payload_len;
};

/*
 * mhs_ebxml_parse_request parses a multipart/related request: boundary
 * from content_type, CRLF or bare LF, start parameter quoted or not, with
 * or without <> (the first part when absent). The start part must hold a
 * SOAP 1.1 Envelope with an eb:MessageHeader. Returns 0, or MHS_EINVAL /
 * MHS_ETOOBIG with a reason (may be NULL) naming what was wrong.
 */
int mhs_ebxml_parse_request(const char *content_type, const void *body,
    size_t len, struct mhs_ebxml_request *out, char *reason, size_t reasonlen);

/*
 * Reply bodies (bare SOAP envelopes, Content-Type MHS_EBXML_REPLY_TYPE),
 * written into out (reset first; the caller owns it). req supplies the
 * parties, CPAId, ConversationId and RefToMessageId; the reply goes From
 * req->to_party To req->from_party. Return 0, MHS_EINVAL or MHS_ENOMEM.
 */
int mhs_ebxml_build_ack(const struct mhs_ebxml_request *req,
    const char *ack_message_id, int64_t now_ms, struct mhs_buf *out);

/*
 * A MessageError with one eb:Error carrying all four of codeContext,
 * errorCode (e.g. "ValueNotRecognized"), severity "Error" and Description.
 * req may be NULL when the request could not be parsed (header fields are
 * then left empty).
 */
int mhs_ebxml_build_error_list(const struct mhs_ebxml_request *req,
    const char *msg_id, int64_t now_ms, const char *error_code,
    const char *description, struct mhs_buf *out);

/* A SOAP-ENV:Fault with one nasp:error carrying nhs_error_code. */
int mhs_ebxml_build_soap_fault(
    int nhs_error_code, const char *description, struct mhs_buf *out);

/*
 * mhs_ebxml_soap_action_eq compares a received SOAPAction header with
 * service/action: surrounding quotes stripped, "urn:urn:" collapsed.
 */
bool mhs_ebxml_soap_action_eq(
    const char *header, const char *service, const char *action);

/*
 * mhs_ebxml_hl7_prescription_id copies the short-form prescription ID of
 * an HL7 v3 payload (the extension of the first element whose root is
 * the EPS prescription-ID OID 2.16.840.1.113883.2.1.3.2.4.18.8) into out.
 * Returns 0, MHS_ENOTFOUND (none), MHS_EINVAL (not well-formed XML) or
 * MHS_ETOOBIG (payload over MHS_EBXML_MAX_ENVELOPE, or out too small).
 */
int mhs_ebxml_hl7_prescription_id(
    const void *payload, size_t len, char *out, size_t cap);

#endif /* MHS_EBXML_H */
