/*
 * Design notes: what Spine's reply means for a delivery (SPINE-EBXML.md §3,
 * §4). Order matters: an ErrorList or a SOAP fault decides whatever the
 * status says (the MHS's "status 500 only" pitfall is exactly what this
 * avoids); an ack counts only on 202 and only for our MessageId; whatever
 * is left is judged by the status alone. The verdict is conservative:
 * RETRY needs a readable, non-empty list of retriable codes, and anything
 * we cannot read is UNEXPECTED (the caller retries it as a transport
 * failure until the persist duration runs out) rather than DELIVERED.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

/* XPath for the rare replies (errors, faults); child paths for the rest. */
#define HDR     "/soap:Envelope/soap:Header/"
#define FAULT   "/soap:Envelope/soap:Body/soap:Fault"
#define ENV     "soap:Envelope"
#define PHDR    ENV "/soap:Header/"
#define ACK_REF PHDR "eb:Acknowledgment/eb:RefToMessageId"

struct why {
	char *text; /* may be NULL */
	size_t cap;
};

static void why_add(struct why *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
why_add(struct why *w, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	ebxml_reason_add(w->text, w->cap, tmp);
}

const char *
mhs_ebxml_verdict_name(enum mhs_ebxml_verdict v)
{
	switch (v) {
	case MHS_EBXML_DELIVERED:
		return "delivered";
	case MHS_EBXML_RETRY:
		return "retry";
	case MHS_EBXML_FAILED:
		return "failed";
	case MHS_EBXML_UNEXPECTED:
		return "unexpected";
	}
	return "unknown";
}

/* No ebXML verdict in the body: the status alone decides. */
static enum mhs_ebxml_verdict
by_status(int status, bool expect_ack, const char *what, struct why *w)
{
	if (status == 202 && !expect_ack) {
		why_add(w, "HTTP 202 accepted");
		return MHS_EBXML_DELIVERED;
	}
	why_add(w, "HTTP %d %s", status, what);
	return MHS_EBXML_UNEXPECTED;
}

static enum mhs_ebxml_verdict
error_list(struct ebxml_doc *d, int status, struct why *w)
{
	xmlXPathObjectPtr o =
	    ebxml_doc_nodes(d, NULL, HDR "eb:ErrorList/eb:Error");
	int n = o != NULL ? o->nodesetval->nodeNr : 0;

	why_add(w, "ebXML ErrorList (HTTP %d):", status);
	if (n == 0)
		why_add(w, " no eb:Error");
	for (int i = 0; i < n; i++) {
		xmlNodePtr e = o->nodesetval->nodeTab[i];
		char code[64], desc[256];

		ebxml_doc_text(d, e, "@eb:errorCode", code, sizeof(code));
		ebxml_doc_text(d, e, "eb:Description", desc, sizeof(desc));
		why_add(w, "%s %s %s", i > 0 ? ";" : "", code, desc);
	}
	xmlXPathFreeObject(o);
	return MHS_EBXML_FAILED;
}

/* An NHS error code: 1 to 6 digits, nothing else; -1 if unreadable. */
static int
nhs_code(const char *s)
{
	size_t n = strspn(s, "0123456789");

	if (n == 0 || n > 6 || s[n] != '\0')
		return -1;
	return atoi(s);
}

static enum mhs_ebxml_verdict
soap_fault(struct ebxml_doc *d, struct why *w)
{
	xmlXPathObjectPtr o;
	char fs[128];
	bool retriable = true;
	int n;

	ebxml_doc_text(d, NULL, FAULT "/faultstring", fs, sizeof(fs));
	o = ebxml_doc_nodes(d, NULL, FAULT "//nasp:errorList/nasp:error");
	n = o != NULL ? o->nodesetval->nodeNr : 0;
	why_add(w, "SOAP fault (%s):", fs[0] != '\0' ? fs : "no faultstring");
	if (n == 0) {
		why_add(w, " no NHS error codes");
		retriable = false;
	}
	for (int i = 0; i < n; i++) {
		xmlNodePtr e = o->nodesetval->nodeTab[i];
		char code[32], desc[256];
		int c;

		ebxml_doc_text(d, e, "nasp:errorCode", code, sizeof(code));
		ebxml_doc_text(d, e, "nasp:description", desc, sizeof(desc));
		c = nhs_code(code);
		if (c != 200 && c != 206 && c != 208)
			retriable = false;
		why_add(w, "%s %s %s", i > 0 ? ";" : "",
		    c < 0 ? "(unreadable code)" : code, desc);
	}
	xmlXPathFreeObject(o);
	return retriable ? MHS_EBXML_RETRY : MHS_EBXML_FAILED;
}

/* An eb:Acknowledgment whose RefToMessageId (cut to 127 bytes) is ref. */
static enum mhs_ebxml_verdict
acknowledgment(
    const char *ref, int status, const char *message_id, struct why *w)
{
	if (status != 202) {
		why_add(w, "HTTP %d with an eb:Acknowledgment", status);
		return MHS_EBXML_UNEXPECTED;
	}
	if (message_id == NULL || strcasecmp(ref, message_id) == 0) {
		why_add(w, "acknowledged");
		return MHS_EBXML_DELIVERED;
	}
	why_add(w,
	    "eb:Acknowledgment for another message (RefToMessageId "
	    "\"%s\")",
	    ref);
	return MHS_EBXML_UNEXPECTED;
}

static enum mhs_ebxml_verdict
doc_classify(struct ebxml_doc *d, int status, const char *message_id,
    bool expect_ack, struct why *w)
{
	if (!ebxml_doc_has_path(d, ENV))
		return by_status(
		    status, expect_ack, "without a SOAP envelope", w);
	if (ebxml_doc_has_path(d, PHDR "eb:ErrorList"))
		return error_list(d, status, w);
	if (ebxml_doc_has_path(d, ENV "/soap:Body/soap:Fault"))
		return soap_fault(d, w);
	if (ebxml_doc_has_path(d, PHDR "eb:Acknowledgment")) {
		char ref[128];

		ebxml_doc_find_text(d, NULL, ACK_REF, ref, sizeof(ref));
		return acknowledgment(ref, status, message_id, w);
	}
	return by_status(
	    status, expect_ack, "without an eb:Acknowledgment", w);
}

enum { Q_ENV, Q_ERRORS, Q_FAULT, Q_ACK, Q_REF, Q_N };

/*
 * doc_classify's verdict from one SAX pass, no tree: what every ack
 * costs. Error lists and faults, whose details doc_classify reads with
 * XPath, are left to it: *ask_dom is set and nothing is decided.
 */
static enum mhs_ebxml_verdict
scan_classify(const struct ebxml_query *q, int status, const char *message_id,
    bool expect_ack, struct why *w, bool *ask_dom)
{
	char ref[128];

	*ask_dom = q[Q_ERRORS].found || q[Q_FAULT].found;
	if (*ask_dom)
		return MHS_EBXML_UNEXPECTED;
	if (!q[Q_ENV].found)
		return by_status(
		    status, expect_ack, "without a SOAP envelope", w);
	if (q[Q_ACK].found) {
		ebxml_query_text(&q[Q_REF], ref, sizeof(ref));
		return acknowledgment(ref, status, message_id, w);
	}
	return by_status(
	    status, expect_ack, "without an eb:Acknowledgment", w);
}

/* For a multipart reply, the start part (else the first); else the body. */
static void
reply_xml(const char *ct, const char *body, size_t len, const char **xml,
    size_t *xlen)
{
	struct ebxml_part parts[MHS_EBXML_MAX_PARTS];
	char boundary[128], sid[256];
	size_t n, i = 0;

	*xml = body;
	*xlen = len;
	if (!ebxml_mime_type_is(ct, "multipart/related"))
		return;
	*xlen = 0;
	if (ebxml_mime_param(ct, "boundary", boundary, sizeof(boundary)) !=
	        0 ||
	    ebxml_mime_split(
	        boundary, body, len, parts, MHS_EBXML_MAX_PARTS, &n) != 0)
		return;
	if (ebxml_mime_param(ct, "start", sid, sizeof(sid)) == 0) {
		ebxml_id_strip(sid, strlen(sid), sid, sizeof(sid));
		while (i < n && strcasecmp(parts[i].content_id, sid) != 0)
			i++;
		if (i == n)
			return;
	}
	*xml = parts[i].data;
	*xlen = parts[i].len;
}

enum mhs_ebxml_verdict
mhs_ebxml_classify(int http_status, const char *content_type, const void *body,
    size_t len, const char *message_id, bool expect_ack, char *reason,
    size_t reasonlen)
{
	struct why w = {reasonlen > 0 ? reason : NULL, reasonlen};
	struct ebxml_query q[Q_N] = {
	    [Q_ENV] = {.path = ENV},
	    [Q_ERRORS] = {.path = PHDR "eb:ErrorList"},
	    [Q_FAULT] = {.path = ENV "/soap:Body/soap:Fault"},
	    [Q_ACK] = {.path = PHDR "eb:Acknowledgment"},
	    [Q_REF] = {.path = ACK_REF, .want = EBXML_WANT_TEXT},
	};
	struct ebxml_doc d;
	enum mhs_ebxml_verdict v;
	const char *xml;
	size_t xlen;
	bool unsure, ask_dom;
	int rv;

	if (w.text != NULL)
		w.text[0] = '\0';
	if (body == NULL || len == 0)
		return by_status(
		    http_status, expect_ack, "with an empty body", &w);
	if (len > MHS_EBXML_MAX_BODY)
		return by_status(
		    http_status, expect_ack, "with an oversized body", &w);
	reply_xml(content_type, body, len, &xml, &xlen);
	rv = xlen == 0 ? MHS_EINVAL : ebxml_scan(xml, xlen, q, Q_N, &unsure);
	v = rv != 0
	    ? by_status(http_status, expect_ack, "without an ebXML body", &w)
	    : scan_classify(
	          q, http_status, message_id, expect_ack, &w, &ask_dom);
	ebxml_queries_fini(q, Q_N);
	if (rv != 0 || !ask_dom)
		return v;
	if (ebxml_doc_parse(&d, xml, xlen) != 0)
		return by_status(
		    http_status, expect_ack, "without an ebXML body", &w);
	v = doc_classify(&d, http_status, message_id, expect_ack, &w);
	ebxml_doc_fini(&d);
	return v;
}
