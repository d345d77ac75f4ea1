/*
 * Design notes: the per-message questions answered in one SAX pass, with
 * no tree built. Building libxml2's DOM is about half of what parsing an
 * ebXML header or Spine's ack costs (nodes, names, text, all allocated,
 * then freed); the questions asked of every message are a handful of
 * child paths from the root, so they are matched while libxml2 reads.
 *  - The reader is ebxml_xml.c's, with the same safety: the same bound,
 *    options (no network, no entity substitution, no DTD loading, no
 *    error output) and a DOCTYPE stops the parser before its internal
 *    subset is read. A document that is not well-formed answers nothing.
 *  - A query's answers are what ebxml_doc_find on the DOM would give: the
 *    first element in document order whose ancestry from the root is the
 *    path's steps (namespace URI and local name), and its text the
 *    concatenated character data below it (xmlNodeGetContent's).
 *  - Matching is a counter per query: how many leading steps the open
 *    elements match. An element at depth D extends a query matched to
 *    D-1; closing it takes the counter back. No names are kept.
 *  - Each thread keeps its parser context (ebxml_xml.c's thread state):
 *    making and freeing one per document was a tenth of a scan. Its
 *    dictionary interns the names it has seen; names come from the
 *    network, so past SCAN_DICT_MAX of them, or after a document that
 *    failed, the context is dropped and the next scan makes a new one.
 *  - libxml2 decodes attribute values before SAX sees them, except an
 *    ampersand, which it hands on still encoded (&#38;) for the tree to
 *    decode. An attribute value we need that holds one is not decoded
 *    here: the scan reports itself unsure and the caller asks the DOM.
 *    Real Spine traffic never has one.
 */
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

#define SCAN_STEPS_MAX 8
#define SCAN_DICT_MAX  4096 /* our documents use about 60 names */

struct scan_step {
	const char *ns, *local;
	size_t len;
};

struct scan_q {
	struct ebxml_query *q;
	struct scan_step steps[SCAN_STEPS_MAX];
	int nsteps;
	int matched;   /* leading steps matched by the open elements */
	int capturing; /* depth of the element whose text is taken; 0: none */
};

/* saw_dtd first: ebxml_refuse_dtd reads ctxt->_private as a bool *. */
struct scan {
	bool saw_dtd;
	bool unsure;
	struct scan_q *qs;
	size_t n;
	int depth;
};

/* Splits q->path into steps; MHS_EINVAL for a path we cannot follow. */
static int
steps_compile(struct scan_q *s)
{
	const char *p = s->q->path;

	s->nsteps = 0;
	while (*p != '\0') {
		const char *slash = strchr(p, '/');
		const char *end = slash != NULL ? slash : p + strlen(p);
		const char *colon = memchr(p, ':', (size_t) (end - p));
		struct scan_step *st;

		if (colon == NULL || s->nsteps == SCAN_STEPS_MAX)
			return MHS_EINVAL;
		st = &s->steps[s->nsteps++];
		/* An unknown prefix (NULL) matches nothing, as in the DOM. */
		st->ns = ebxml_prefix_ns(p, (size_t) (colon - p));
		st->local = colon + 1;
		st->len = (size_t) (end - st->local);
		p = slash != NULL ? slash + 1 : end;
	}
	return s->nsteps > 0 ? 0 : MHS_EINVAL;
}

static bool
step_is(const struct scan_step *st, const xmlChar *local, const xmlChar *uri)
{
	return uri != NULL && st->ns != NULL &&
	    strlen((const char *) local) == st->len &&
	    memcmp(local, st->local, st->len) == 0 &&
	    strcmp((const char *) uri, st->ns) == 0;
}

static bool
space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	    c == '\r';
}

/*
 * The attribute (ns, name) of a SAX2 attribute array (five pointers per
 * attribute: local, prefix, URI, value, end of value): 1 with the value
 * trimmed into b, 0 absent, -1 when it holds a reference (see above).
 */
static int
attr_get(const xmlChar **attrs, int nattrs, const char *ns, const char *name,
    struct mhs_buf *b)
{
	for (int i = 0; i < nattrs; i++) {
		const xmlChar **a = &attrs[i * 5];
		const char *v = (const char *) a[3], *e = (const char *) a[4];

		if (a[2] == NULL || strcmp((const char *) a[0], name) != 0 ||
		    strcmp((const char *) a[2], ns) != 0)
			continue;
		if (memchr(v, '&', (size_t) (e - v)) != NULL)
			return -1;
		while (v < e && space(*v))
			v++;
		while (e > v && space(e[-1]))
			e--;
		mhs_buf_reset(b);
		mhs_buf_append(b, v, (size_t) (e - v));
		return 1;
	}
	return 0;
}

/* A full match of s at depth d: take it when the query wants it. */
static void
scan_hit(struct scan *sc, struct scan_q *s, int d, const xmlChar **attrs,
    int nattrs)
{
	struct ebxml_query *q = s->q;
	int rv;

	if (q->found)
		return;
	if (q->want != EBXML_WANT_CID_HREF) {
		q->found = true;
		if (q->want == EBXML_WANT_TEXT)
			s->capturing = d;
		return;
	}
	rv = attr_get(attrs, nattrs, EBXML_NS_XLINK, "href", &q->text);
	if (rv < 0)
		sc->unsure = true;
	else if (rv > 0 && q->text.len >= 4 &&
	    strncmp(q->text.data, "cid:", 4) == 0)
		q->found = true;
	else
		mhs_buf_reset(&q->text);
}

static void
scan_start(void *ctx, const xmlChar *local, const xmlChar *prefix,
    const xmlChar *uri, int nns, const xmlChar **ns, int nattrs,
    int ndefaulted, const xmlChar **attrs)
{
	struct scan *sc = ((xmlParserCtxtPtr) ctx)->_private;
	int d = ++sc->depth;

	(void) prefix, (void) nns, (void) ns, (void) ndefaulted;
	for (size_t i = 0; i < sc->n; i++) {
		struct scan_q *s = &sc->qs[i];

		if (s->matched != d - 1 || d > s->nsteps ||
		    !step_is(&s->steps[d - 1], local, uri))
			continue;
		s->matched = d;
		if (d == s->nsteps)
			scan_hit(sc, s, d, attrs, nattrs);
	}
}

static void
scan_end(
    void *ctx, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri)
{
	struct scan *sc = ((xmlParserCtxtPtr) ctx)->_private;
	int d = sc->depth--;

	(void) local, (void) prefix, (void) uri;
	for (size_t i = 0; i < sc->n; i++) {
		struct scan_q *s = &sc->qs[i];

		if (s->matched == d)
			s->matched = d - 1;
		if (s->capturing == d)
			s->capturing = 0;
	}
}

static void
scan_chars(void *ctx, const xmlChar *ch, int len)
{
	struct scan *sc = ((xmlParserCtxtPtr) ctx)->_private;

	for (size_t i = 0; i < sc->n; i++)
		if (sc->qs[i].capturing != 0)
			mhs_buf_append(&sc->qs[i].q->text, ch, (size_t) len);
}

/* A parser context whose SAX callbacks are the scan's, no tree built. */
static xmlParserCtxtPtr
scan_ctxt(void)
{
	xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
	xmlSAXHandlerPtr sax;

	if (ctxt == NULL)
		return NULL;
	sax = ctxt->sax;
	sax->internalSubset = ebxml_refuse_dtd;
	sax->startElementNs = scan_start;
	sax->endElementNs = scan_end;
	sax->characters = scan_chars;
	sax->ignorableWhitespace = scan_chars;
	sax->cdataBlock = scan_chars;
	sax->comment = NULL;
	sax->processingInstruction = NULL;
	sax->reference = NULL;
	return ctxt;
}

int
ebxml_scan(const char *xml, size_t len, struct ebxml_query *qs, size_t n,
    bool *unsure)
{
	struct scan_q sq[EBXML_SCAN_MAX];
	struct scan sc = {.qs = sq, .n = n};
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	int rv = 0;

	*unsure = false;
	for (size_t i = 0; i < n; i++) {
		qs[i].found = false;
		mhs_buf_reset(&qs[i].text);
	}
	if (len > MHS_EBXML_MAX_ENVELOPE)
		return MHS_ETOOBIG;
	if (len == 0 || n > EBXML_SCAN_MAX)
		return MHS_EINVAL;
	for (size_t i = 0; i < n; i++) {
		sq[i] = (struct scan_q) {.q = &qs[i]};
		if ((rv = steps_compile(&sq[i])) != 0)
			return rv;
	}
	if (ebxml_xml_init() != 0 ||
	    (ctxt = ebxml_scan_ctxt_get(scan_ctxt)) == NULL)
		return MHS_ENOMEM;
	ctxt->_private = &sc;
	/* The document node only: the callbacks above build nothing. */
	doc = xmlCtxtReadMemory(
	    ctxt, xml, (int) len, NULL, NULL, EBXML_READ_OPTS);
	if (doc == NULL || sc.saw_dtd || !ctxt->wellFormed)
		rv = MHS_EINVAL;
	xmlFreeDoc(doc);
	ctxt->_private = NULL;
	if (rv != 0 || ctxt->dict == NULL ||
	    xmlDictSize(ctxt->dict) > SCAN_DICT_MAX)
		ebxml_scan_ctxt_drop();
	for (size_t i = 0; i < n; i++)
		if (qs[i].text.err != 0)
			rv = MHS_ENOMEM;
	*unsure = sc.unsure;
	return rv;
}

void
ebxml_queries_fini(struct ebxml_query *qs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mhs_buf_fini(&qs[i].text);
}

int
ebxml_query_text(const struct ebxml_query *q, char *out, size_t cap)
{
	const char *s = q->text.len > 0 ? q->text.data : "";

	out[0] = '\0';
	if (!q->found)
		return MHS_ENOTFOUND;
	return ebxml_text_copy(s, out, cap);
}
