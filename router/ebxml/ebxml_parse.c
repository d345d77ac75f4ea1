/*
 * Design notes: the receiver's side of SPINE-EBXML.md §1-2. Steps:
 *  1. bound the body, read boundary and start from the Content-Type
 *     (a bare text/xml SOAP envelope is accepted too: asynchronous acks);
 *  2. split the multipart body and pick the start part (the first part
 *     when there is no start parameter);
 *  3. parse that part as a SOAP envelope (ebxml_xml.c's safe reader) and
 *     copy the header fields out, refusing values too long for them;
 *  4. locate the payload through the Manifest's cid: reference, else the
 *     part after the start part.
 * Nothing is copied from the payload; out->payload points into the body.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

#define HDR "soap:Envelope/soap:Header/"
#define MH  HDR "eb:MessageHeader/"

static int
fail(char *reason, size_t cap, int rv, const char *what)
{
	if (reason != NULL && cap > 0) {
		reason[0] = '\0';
		ebxml_reason_add(reason, cap, what);
	}
	return rv;
}

struct field {
	const char *expr, *name;
	size_t off, cap;
};

#define FIELD(expr, name, m)                                                  \
	{                                                                     \
		MH expr, name, offsetof(struct mhs_ebxml_request, m),         \
		    sizeof(((struct mhs_ebxml_request *) 0)->m)               \
	}

static const struct field fields[] = {
    FIELD("eb:MessageData/eb:MessageId", "eb:MessageId", message_id),
    FIELD("eb:ConversationId", "eb:ConversationId", conversation_id),
    FIELD("eb:Action", "eb:Action", action),
    FIELD("eb:CPAId", "eb:CPAId", cpa_id),
    FIELD("eb:Service", "eb:Service", service),
    FIELD("eb:From/eb:PartyId", "eb:From/eb:PartyId", from_party),
    FIELD("eb:To/eb:PartyId", "eb:To/eb:PartyId", to_party),
    FIELD("eb:MessageData/eb:RefToMessageId", "eb:RefToMessageId",
        ref_to_message_id),
    FIELD("eb:MessageData/eb:Timestamp", "eb:Timestamp", timestamp),
};

/* The DOM's answers (when the scan is unsure). */
static int
envelope_read(struct ebxml_doc *d, struct mhs_ebxml_request *out, char *reason,
    size_t cap)
{
	char msg[96];

	if (!ebxml_doc_has_path(d, HDR "eb:MessageHeader"))
		return fail(reason, cap, MHS_EINVAL,
		    "no SOAP Envelope/Header/eb:MessageHeader");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const struct field *f = &fields[i];
		char *dst = (char *) out + f->off;
		int rv = ebxml_doc_find_text(d, NULL, f->expr, dst, f->cap);

		if (rv == MHS_ENOMEM)
			return fail(reason, cap, rv, "out of memory");
		if (rv == MHS_ETOOBIG) {
			snprintf(msg, sizeof(msg), "%s too long", f->name);
			return fail(reason, cap, MHS_EINVAL, msg);
		}
	}
	out->duplicate_elimination =
	    ebxml_doc_has_path(d, MH "eb:DuplicateElimination");
	out->ack_requested = ebxml_doc_has_path(d, HDR "eb:AckRequested");
	out->sync_reply = ebxml_doc_has_path(d, HDR "eb:SyncReply");
	return 0;
}

static const struct ebxml_part *
part_by_id(const struct ebxml_part *parts, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(parts[i].content_id, id) == 0)
			return &parts[i];
	return NULL;
}

struct cid_ref {
	char href[300];
	int rv; /* of copying href */
};

/*
 * A Reference whose xlink:href, trimmed, starts with "cid:" (a cut copy
 * still does: c->rv says whether it was cut).
 */
static bool
cid_reference(xmlNodePtr n, void *arg)
{
	struct cid_ref *c = arg;

	c->rv = ebxml_attr_text(n, "xlink", "href", c->href, sizeof(c->href));
	return c->rv != MHS_ENOTFOUND && strncmp(c->href, "cid:", 4) == 0;
}

/* href without "cid:", stripped as a Content-Id is. */
static void
cid_strip(const char *href, char *out, size_t cap)
{
	ebxml_id_strip(href + 4, strlen(href + 4), out, cap);
}

/* The Manifest's first cid: reference, or "" when there is none. */
static void
manifest_cid(struct ebxml_doc *d, char *out, size_t cap)
{
	struct cid_ref c;

	out[0] = '\0';
	if (ebxml_doc_find(d, NULL,
	        "soap:Envelope/soap:Body/eb:Manifest/eb:Reference",
	        cid_reference, &c) == NULL ||
	    c.rv != 0)
		return;
	cid_strip(c.href, out, cap);
}

static int
payload_find(const char *cid, const struct ebxml_part *parts, size_t n,
    const struct ebxml_part *start, struct mhs_ebxml_request *out,
    char *reason, size_t cap)
{
	const struct ebxml_part *p = NULL;

	if (cid[0] != '\0' && (p = part_by_id(parts, n, cid)) == NULL)
		return fail(reason, cap, MHS_EINVAL,
		    "eb:Manifest references a missing MIME part");
	if (p == NULL && start + 1 < parts + n)
		p = start + 1;
	if (p != NULL) {
		out->payload = p->data;
		out->payload_len = p->len;
	}
	return 0;
}

/* What is not well-formed or too large, in the caller's words. */
struct header_words {
	const char *too_big, *malformed;
};

static int
parse_fail(char *reason, size_t cap, int rv, const struct header_words *w)
{
	return fail(reason, cap, rv,
	    rv == MHS_ETOOBIG      ? w->too_big
	        : rv == MHS_ENOMEM ? "out of memory"
	                           : w->malformed);
}

/* envelope_read and manifest_cid on a tree: the scan's fallback. */
static int
header_dom(const char *xml, size_t len, struct mhs_ebxml_request *out,
    char *cid, size_t cidcap, char *reason, size_t cap,
    const struct header_words *w)
{
	struct ebxml_doc d;
	int rv;

	if ((rv = ebxml_doc_parse(&d, xml, len)) != 0)
		return parse_fail(reason, cap, rv, w);
	if ((rv = envelope_read(&d, out, reason, cap)) == 0 && cid != NULL)
		manifest_cid(&d, cid, cidcap);
	ebxml_doc_fini(&d);
	return rv;
}

enum {
	Q_HEADER,
	Q_FIELD0,
	Q_DUP = Q_FIELD0 + sizeof(fields) / sizeof(fields[0]),
	Q_ACK,
	Q_SYNC,
	Q_CID,
	Q_N
};

/* The scan's answers into out and cid, in envelope_read's order. */
static int
header_answers(const struct ebxml_query *q, struct mhs_ebxml_request *out,
    char *cid, size_t cidcap, char *reason, size_t cap)
{
	char msg[96], href[300];

	if (!q[Q_HEADER].found)
		return fail(reason, cap, MHS_EINVAL,
		    "no SOAP Envelope/Header/eb:MessageHeader");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const struct field *f = &fields[i];

		if (ebxml_query_text(&q[Q_FIELD0 + i], (char *) out + f->off,
		        f->cap) == MHS_ETOOBIG) {
			snprintf(msg, sizeof(msg), "%s too long", f->name);
			return fail(reason, cap, MHS_EINVAL, msg);
		}
	}
	out->duplicate_elimination = q[Q_DUP].found;
	out->ack_requested = q[Q_ACK].found;
	out->sync_reply = q[Q_SYNC].found;
	if (cid != NULL) {
		cid[0] = '\0';
		/* manifest_cid's rule: a reference cut short is none. */
		if (q[Q_CID].found &&
		    ebxml_text_copy(q[Q_CID].text.data, href, sizeof(href)) ==
		        0)
			cid_strip(href, cid, cidcap);
	}
	return 0;
}

/*
 * header_read fills out's header fields from the ebXML header xml (and
 * cid, when not NULL, from its Manifest), in one SAX pass when it can,
 * through the DOM when the scan is unsure: the same answers either way.
 */
static int
header_read(const char *xml, size_t len, struct mhs_ebxml_request *out,
    char *cid, size_t cidcap, char *reason, size_t cap,
    const struct header_words *w)
{
	struct ebxml_query q[Q_N];
	size_t n = cid != NULL ? Q_N : Q_CID;
	bool unsure;
	int rv;

	memset(q, 0, sizeof(q));
	q[Q_HEADER] = (struct ebxml_query) {.path = HDR "eb:MessageHeader"};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		q[Q_FIELD0 + i] = (struct ebxml_query) {
		    .path = fields[i].expr, .want = EBXML_WANT_TEXT};
	q[Q_DUP] = (struct ebxml_query) {.path = MH "eb:DuplicateElimination"};
	q[Q_ACK] = (struct ebxml_query) {.path = HDR "eb:AckRequested"};
	q[Q_SYNC] = (struct ebxml_query) {.path = HDR "eb:SyncReply"};
	q[Q_CID] = (struct ebxml_query) {
	    .path = "soap:Envelope/soap:Body/eb:Manifest/eb:Reference",
	    .want = EBXML_WANT_CID_HREF};
	if ((rv = ebxml_scan(xml, len, q, n, &unsure)) != 0)
		rv = parse_fail(reason, cap, rv, w);
	else if (unsure)
		rv = header_dom(xml, len, out, cid, cidcap, reason, cap, w);
	else
		rv = header_answers(q, out, cid, cidcap, reason, cap);
	ebxml_queries_fini(q, n);
	return rv;
}

static int
multipart_read(const char *ct, const char *body, size_t len,
    struct mhs_ebxml_request *out, char *reason, size_t cap)
{
	static const struct header_words w = {"ebXML header part too large",
	    "ebXML header is not well-formed XML"};
	struct ebxml_part parts[MHS_EBXML_MAX_PARTS];
	const struct ebxml_part *start = NULL;
	char boundary[128], sid[256], cid[256];
	size_t n;
	int rv;

	if (ebxml_mime_param(ct, "boundary", boundary, sizeof(boundary)) != 0)
		return fail(reason, cap, MHS_EINVAL, "no MIME boundary");
	rv = ebxml_mime_split(
	    boundary, body, len, parts, MHS_EBXML_MAX_PARTS, &n);
	if (rv != 0)
		return fail(reason, cap, rv,
		    rv == MHS_ETOOBIG ? "too many MIME parts"
		                      : "malformed multipart body");
	if (ebxml_mime_param(ct, "start", sid, sizeof(sid)) != 0)
		start = &parts[0];
	else {
		ebxml_id_strip(sid, strlen(sid), sid, sizeof(sid));
		if ((start = part_by_id(parts, n, sid)) == NULL)
			return fail(reason, cap, MHS_EINVAL,
			    "no MIME part matches the start parameter");
	}
	if ((rv = header_read(start->data, start->len, out, cid, sizeof(cid),
	         reason, cap, &w)) != 0)
		return rv;
	return payload_find(cid, parts, n, start, out, reason, cap);
}

static int
bare_read(const char *body, size_t len, struct mhs_ebxml_request *out,
    char *reason, size_t cap)
{
	static const struct header_words w = {
	    "SOAP envelope too large", "body is not well-formed XML"};

	return header_read(body, len, out, NULL, 0, reason, cap, &w);
}

int
mhs_ebxml_parse_request(const char *content_type, const void *body, size_t len,
    struct mhs_ebxml_request *out, char *reason, size_t reasonlen)
{
	memset(out, 0, sizeof(*out));
	if (reason != NULL && reasonlen > 0)
		reason[0] = '\0';
	if (body == NULL || len == 0)
		return fail(reason, reasonlen, MHS_EINVAL, "empty body");
	if (len > MHS_EBXML_MAX_BODY)
		return fail(reason, reasonlen, MHS_ETOOBIG, "body too large");
	if (ebxml_mime_type_is(content_type, "multipart/related"))
		return multipart_read(
		    content_type, body, len, out, reason, reasonlen);
	if (ebxml_mime_type_is(content_type, "text/xml") ||
	    ebxml_mime_type_is(content_type, "application/xml"))
		return bare_read(body, len, out, reason, reasonlen);
	return fail(reason, reasonlen, MHS_EINVAL,
	    "Content-Type is not multipart/related");
}

bool
mhs_ebxml_soap_action_eq(
    const char *header, const char *service, const char *action)
{
	size_t len, slen;

	if (header == NULL || service == NULL || action == NULL)
		return false;
	while (*header == ' ' || *header == '\t')
		header++;
	len = strlen(header);
	while (len > 0 && (header[len - 1] == ' ' || header[len - 1] == '\t'))
		len--;
	if (len >= 2 && header[0] == '"' && header[len - 1] == '"')
		header++, len -= 2;
	while (len >= 8 && strncmp(header, "urn:urn:", 8) == 0)
		header += 4, len -= 4;
	slen = strlen(service);
	return len == slen + 1 + strlen(action) &&
	    strncmp(header, service, slen) == 0 && header[slen] == '/' &&
	    strncmp(header + slen + 1, action, len - slen - 1) == 0;
}
