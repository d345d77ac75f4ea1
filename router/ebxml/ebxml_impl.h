/*
 * Design notes: internals shared by the ebXML files, not part of the API.
 *  - ebxml_mime.c: Content-Type parameters and multipart/related splitting.
 *    Pure byte handling over a caller's buffer; nothing is copied except
 *    header values into bounded caller arrays.
 *  - ebxml_xml.c: the one place libxml2 documents are opened (safe options,
 *    DTDs refused) and queried with namespace-aware XPath (a context and
 *    compiled expressions kept per thread).
 *  - ebxml_text.c: escaping and validation of text written into XML.
 */
#ifndef MHS_EBXML_IMPL_H
#define MHS_EBXML_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include "buf.h"

#define EBXML_NS_SOAP "http://schemas.xmlsoap.org/soap/envelope/"
#define EBXML_NS_EB                                                           \
	"http://www.oasis-open.org/committees/ebxml-msg/schema/"              \
	"msg-header-2_0.xsd"
#define EBXML_NS_XLINK "http://www.w3.org/1999/xlink"
#define EBXML_NS_HL7   "urn:hl7-org:transport/ebXML/DSTUv1.0"
#define EBXML_NS_NASP  "http://national.carerecords.nhs.uk/schema/"

/* ---- MIME ---- */

struct ebxml_part {
	const char *data; /* content after the part's headers */
	size_t len;
	char content_id[256]; /* trimmed, without <> */
};

/* Media type of ct (before ';') equals type, case-insensitively. */
bool ebxml_mime_type_is(const char *ct, const char *type);

/*
 * ebxml_mime_param copies parameter name of Content-Type ct into out,
 * unquoted. Returns 0, MHS_ENOTFOUND or MHS_ETOOBIG.
 */
int ebxml_mime_param(const char *ct, const char *name, char *out, size_t cap);

/*
 * ebxml_mime_split finds up to max parts of a multipart body delimited by
 * "--boundary" lines (CRLF or LF). Parts point into body. Returns 0,
 * MHS_EINVAL (no parts, no closing delimiter, bad headers) or MHS_ETOOBIG
 * (more than max parts).
 */
int ebxml_mime_split(const char *boundary, const char *body, size_t len,
    struct ebxml_part *parts, size_t max, size_t *nparts);

/* ebxml_id_strip trims whitespace, then one pair of quotes and of <>. */
void ebxml_id_strip(const char *in, size_t len, char *out, size_t cap);

/* ---- XML ---- */

struct ebxml_doc {
	xmlDocPtr doc;
};

/*
 * ebxml_doc_parse parses len bytes of XML (at most MHS_EBXML_MAX_ENVELOPE)
 * with the network off, no entity expansion and DTDs refused. Queries
 * know the soap, eb, xlink, hl7 and nasp prefixes. Returns 0, MHS_EINVAL,
 * MHS_ETOOBIG or MHS_ENOMEM; on error d needs no fini.
 */
int ebxml_doc_parse(struct ebxml_doc *d, const char *xml, size_t len);
void ebxml_doc_fini(struct ebxml_doc *d);

/*
 * Nodes matching expr from at (NULL: the document); NULL when none. The
 * caller frees the result (xmlXPathFreeObject). expr is compiled once per
 * thread and kept (the first 64 distinct texts; later ones are evaluated
 * uncompiled): pass constant expressions, never text built from input.
 */
xmlXPathObjectPtr ebxml_doc_nodes(
    struct ebxml_doc *d, xmlNodePtr at, const char *expr);

/* Expressions compiled and kept by the calling thread (for tests). */
size_t ebxml_xpath_cached(void);

/* Whether expr matches at least one node. */
bool ebxml_doc_has(struct ebxml_doc *d, xmlNodePtr at, const char *expr);

/*
 * ebxml_doc_text copies the trimmed text of the first node matching expr
 * into out. Returns 0, MHS_ENOTFOUND or MHS_ETOOBIG (out then truncated).
 */
int ebxml_doc_text(struct ebxml_doc *d, xmlNodePtr at, const char *expr,
    char *out, size_t cap);

/*
 * Child paths without XPath, for the per-message queries: path is
 * "prefix:local/prefix:local/..." (the prefixes XPath queries use), each
 * step an element child of the one before, starting from the children of
 * at (NULL: the document, so the first step is the root element).
 * ebxml_doc_find returns the first match in document order for which ok
 * (NULL: any) holds, exactly what XPath's first node of the same path,
 * with [ok] as the last step's predicate, would be; NULL when none.
 */
typedef bool (*ebxml_node_ok)(xmlNodePtr n, void *arg);
xmlNodePtr ebxml_doc_find(struct ebxml_doc *d, xmlNodePtr at, const char *path,
    ebxml_node_ok ok, void *arg);

/* Whether path (from the document) finds an element. */
bool ebxml_doc_has_path(struct ebxml_doc *d, const char *path);

/* ebxml_doc_text's answers for the node ebxml_doc_find gives. */
int ebxml_doc_find_text(struct ebxml_doc *d, xmlNodePtr at, const char *path,
    char *out, size_t cap);

/* n's attribute prefix:name, trimmed, as ebxml_doc_text would copy it. */
int ebxml_attr_text(
    xmlNodePtr n, const char *prefix, const char *name, char *out, size_t cap);

/* What every reader passes libxml2: no network, no entity substitution
 * or DTD loading (neither NOENT nor DTDLOAD), no output of its own. */
#define EBXML_READ_OPTS                                                       \
	(XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

/*
 * SAX internalSubset for every reader: called at <!DOCTYPE, before any
 * declaration; sets the bool ctxt->_private points to and stops the
 * parser, so entities are never even declared.
 */
void ebxml_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id,
    const xmlChar *sys_id);

/* libxml2 initialised (once); MHS_ENOMEM if it could not be. */
int ebxml_xml_init(void);

/* The namespace URI of a query prefix (len bytes); NULL: unknown. */
const char *ebxml_prefix_ns(const char *prefix, size_t len);

/* Copies s trimmed into out; MHS_ETOOBIG when it had to cut. */
int ebxml_text_copy(const char *s, char *out, size_t cap);

/*
 * The calling thread's kept parser context for ebxml_scan, made by make
 * the first time (NULL: no memory); ebxml_scan_ctxt_drop frees it, and
 * the next get makes a new one. Freed when the thread exits.
 */
xmlParserCtxtPtr ebxml_scan_ctxt_get(xmlParserCtxtPtr (*make)(void));
void ebxml_scan_ctxt_drop(void);

/* ---- one SAX pass, no tree (ebxml_scan.c) ---- */

enum ebxml_want {
	EBXML_WANT_NODE,     /* whether the path finds an element */
	EBXML_WANT_TEXT,     /* and the first one's text */
	EBXML_WANT_CID_HREF, /* the first whose xlink:href starts "cid:" */
};

struct ebxml_query {
	const char *path; /* child path from the document, as ebxml_doc_find */
	enum ebxml_want want;
	/* answers */
	bool found;
	struct mhs_buf text; /* TEXT: untrimmed; CID_HREF: the href, trimmed */
};

#define EBXML_SCAN_MAX 16

/*
 * ebxml_scan reads len bytes of XML as ebxml_doc_parse would (same bound,
 * options and DTD refusal), building no tree, and answers the n queries
 * (at most EBXML_SCAN_MAX) as ebxml_doc_find on the DOM would. unsure:
 * an answer needs the DOM (an attribute value with a reference); ask it
 * there. Returns 0, MHS_EINVAL (not well-formed, a DTD, a path without
 * prefixes or deeper than 8 steps), MHS_ETOOBIG or MHS_ENOMEM; free the
 * answers with ebxml_queries_fini.
 */
int ebxml_scan(const char *xml, size_t len, struct ebxml_query *qs, size_t n,
    bool *unsure);
void ebxml_queries_fini(struct ebxml_query *qs, size_t n);

/* A TEXT query's text, as ebxml_doc_find_text would copy it. */
int ebxml_query_text(const struct ebxml_query *q, char *out, size_t cap);

/* ---- text ---- */

/* Valid UTF-8 without control characters other than TAB, LF, CR. */
bool ebxml_text_ok(const char *s);

/* Non-empty, printable ASCII, no space, quotes, <, >: fits in a header. */
bool ebxml_token_ok(const char *s);

/* Appends s escaped for XML text and attribute values (&<>"'). */
void ebxml_esc(struct mhs_buf *b, const char *s);

/*
 * ebxml_reason_add appends s to reason (NUL-terminated, cap bytes) with
 * control characters turned into spaces, truncating cleanly.
 */
void ebxml_reason_add(char *reason, size_t cap, const char *s);

#endif /* MHS_EBXML_IMPL_H */
