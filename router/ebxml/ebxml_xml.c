/*
 * Design notes: the only place an XML document is opened. Inputs come from
 * the network, so:
 *  - the size is bounded before libxml2 sees a byte;
 *  - XML_PARSE_NONET, and neither NOENT nor DTDLOAD: no entity is ever
 *    substituted and nothing is fetched;
 *  - a DOCTYPE stops the parser from its SAX callback before the internal
 *    subset is read, so entity bombs are never even declared (SOAP 1.1
 *    forbids a DTD anyway);
 *  - NOERROR/NOWARNING: libxml2 never writes to stderr on our behalf;
 *  - COMPACT: a document is only ever read once parsed.
 * libxml2 is initialised once (pthread_once). Each document is private to
 * its caller, so any thread may parse.
 *
 * XPath state is per thread (struct xml_thread, a pthread key freed when
 * the thread exits): one XPath context with the soap, eb, xlink, hl7 and
 * nasp prefixes registered once, and up to XML_XPATH_CACHE_MAX compiled
 * expressions keyed by their text. A query points the context at its
 * document and node, resets the evaluation state a new context would
 * have, and runs the compiled expression; an expression beyond the bound
 * is evaluated uncompiled, as before. Per thread, not process-wide, on
 * purpose: libxml2 2.9 writes into a compiled expression while evaluating
 * it (XPATH_OP_FUNCTION caches its function lookup in the step), so one
 * xmlXPathCompExpr must not be evaluated by two threads at once. Nothing
 * is locked; nothing is shared.
 *
 * The queries asked of every message do not use XPath at all:
 * ebxml_doc_find walks element children along a path of prefix:local
 * steps, depth first, so its answer is the first node in document order,
 * as XPath's would be. XPath stays for the rare replies (ErrorList and
 * SOAP-fault details) and for tests.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xpathInternals.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"
#include "util.h"

/* Far more than the distinct expressions in router/ebxml (about 25). */
#define XML_XPATH_CACHE_MAX 64

struct xml_xpath {
	char *expr; /* our copy: the key */
	uint32_t hash;
	xmlXPathCompExprPtr comp;
};

struct xml_thread {
	xmlXPathContextPtr xp; /* prefixes registered; doc set per query */
	xmlParserCtxtPtr scan; /* ebxml_scan's, kept; NULL: none yet */
	size_t n;
	struct xml_xpath cache[XML_XPATH_CACHE_MAX];
};

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static pthread_key_t xml_key;
static int xml_key_err; /* pthread_key_create's result */

static void
xml_thread_free(void *arg)
{
	struct xml_thread *t = arg;

	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		xmlXPathFreeCompExpr(t->cache[i].comp);
		free(t->cache[i].expr);
	}
	xmlXPathFreeContext(t->xp);
	xmlFreeParserCtxt(t->scan);
	free(t);
}

static void
xml_init(void)
{
	xmlInitParser();
	xml_key_err = pthread_key_create(&xml_key, xml_thread_free);
}

void
ebxml_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id,
    const xmlChar *sys_id)
{
	xmlParserCtxtPtr ctxt = ctx;

	(void) name, (void) ext_id, (void) sys_id;
	*(bool *) ctxt->_private = true;
	xmlStopParser(ctxt);
}

static xmlDocPtr
xml_read(const char *xml, size_t len)
{
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	bool saw_dtd = false;
	/* COMPACT: short text inline in its node, fewer allocations; our
	 * documents are read, never changed. */
	int opts = EBXML_READ_OPTS | XML_PARSE_COMPACT;

	if ((ctxt = xmlNewParserCtxt()) == NULL)
		return NULL;
	ctxt->_private = &saw_dtd;
	ctxt->sax->internalSubset = ebxml_refuse_dtd;
	doc = xmlCtxtReadMemory(ctxt, xml, (int) len, NULL, NULL, opts);
	if (doc != NULL &&
	    (saw_dtd || !ctxt->wellFormed || doc->intSubset != NULL)) {
		xmlFreeDoc(doc);
		doc = NULL;
	}
	xmlFreeParserCtxt(ctxt);
	return doc;
}

/* The prefixes every query may use, XPath or path. */
static const char *const xml_ns[][2] = {{"soap", EBXML_NS_SOAP},
    {"eb", EBXML_NS_EB}, {"xlink", EBXML_NS_XLINK}, {"hl7", EBXML_NS_HL7},
    {"nasp", EBXML_NS_NASP}};

#define XML_NS_N (sizeof(xml_ns) / sizeof(xml_ns[0]))

static int
xml_register(xmlXPathContextPtr xp)
{
	for (size_t i = 0; i < XML_NS_N; i++)
		if (xmlXPathRegisterNs(xp, (const xmlChar *) xml_ns[i][0],
		        (const xmlChar *) xml_ns[i][1]) != 0)
			return MHS_ENOMEM;
	return 0;
}

/* The calling thread's XPath state, made on first use; NULL: no memory. */
static struct xml_thread *
xml_thread_get(void)
{
	struct xml_thread *t;

	pthread_once(&xml_once, xml_init);
	if (xml_key_err != 0)
		return NULL;
	if ((t = pthread_getspecific(xml_key)) != NULL)
		return t;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if ((t->xp = xmlXPathNewContext(NULL)) == NULL ||
	    xml_register(t->xp) != 0 || pthread_setspecific(xml_key, t) != 0) {
		xml_thread_free(t);
		return NULL;
	}
	return t;
}

/*
 * xml_compiled returns expr compiled, from t's cache or compiled now and
 * kept there. NULL: not cached (the cache is full, expr does not compile,
 * or no memory); the caller then evaluates expr uncompiled, as libxml2
 * would have anyway.
 */
static xmlXPathCompExprPtr
xml_compiled(struct xml_thread *t, const char *expr)
{
	uint32_t h = mhs_fnv1a(expr);
	struct xml_xpath *e;

	for (size_t i = 0; i < t->n; i++)
		if (t->cache[i].hash == h &&
		    strcmp(t->cache[i].expr, expr) == 0)
			return t->cache[i].comp;
	if (t->n == XML_XPATH_CACHE_MAX)
		return NULL;
	e = &t->cache[t->n];
	if ((e->expr = strdup(expr)) == NULL)
		return NULL;
	if ((e->comp = xmlXPathCtxtCompile(t->xp, (const xmlChar *) expr)) ==
	    NULL) {
		free(e->expr);
		e->expr = NULL;
		return NULL;
	}
	e->hash = h;
	t->n++;
	return e->comp;
}

xmlParserCtxtPtr
ebxml_scan_ctxt_get(xmlParserCtxtPtr (*make)(void))
{
	struct xml_thread *t = xml_thread_get();

	if (t == NULL)
		return NULL;
	if (t->scan == NULL)
		t->scan = make();
	return t->scan;
}

void
ebxml_scan_ctxt_drop(void)
{
	struct xml_thread *t = xml_thread_get();

	if (t != NULL) {
		xmlFreeParserCtxt(t->scan);
		t->scan = NULL;
	}
}

int
ebxml_xml_init(void)
{
	pthread_once(&xml_once, xml_init);
	return xml_key_err != 0 ? MHS_ENOMEM : 0;
}

size_t
ebxml_xpath_cached(void)
{
	struct xml_thread *t = xml_thread_get();

	return t != NULL ? t->n : 0;
}

int
ebxml_doc_parse(struct ebxml_doc *d, const char *xml, size_t len)
{
	d->doc = NULL;
	if (len > MHS_EBXML_MAX_ENVELOPE)
		return MHS_ETOOBIG;
	if (len == 0)
		return MHS_EINVAL;
	if (xml_thread_get() == NULL)
		return MHS_ENOMEM;
	if ((d->doc = xml_read(xml, len)) == NULL)
		return MHS_EINVAL;
	return 0;
}

void
ebxml_doc_fini(struct ebxml_doc *d)
{
	if (d == NULL)
		return;
	xmlFreeDoc(d->doc);
	d->doc = NULL;
}

xmlXPathObjectPtr
ebxml_doc_nodes(struct ebxml_doc *d, xmlNodePtr at, const char *expr)
{
	struct xml_thread *t = xml_thread_get();
	xmlXPathCompExprPtr comp;
	xmlXPathObjectPtr o;

	if (t == NULL)
		return NULL;
	/* What xmlXPathNewContext(d->doc) would start from. */
	t->xp->doc = d->doc;
	t->xp->node = at != NULL ? at : (xmlNodePtr) d->doc;
	t->xp->contextSize = -1;
	t->xp->proximityPosition = -1;
	t->xp->depth = 0;
	t->xp->opCount = 0;
	if ((comp = xml_compiled(t, expr)) != NULL)
		o = xmlXPathCompiledEval(comp, t->xp);
	else
		o = xmlXPathEvalExpression((const xmlChar *) expr, t->xp);
	t->xp->doc = NULL; /* the context never points at a freed document */
	t->xp->node = NULL;
	if (o != NULL &&
	    (o->type != XPATH_NODESET || o->nodesetval == NULL ||
	        o->nodesetval->nodeNr == 0)) {
		xmlXPathFreeObject(o);
		o = NULL;
	}
	return o;
}

bool
ebxml_doc_has(struct ebxml_doc *d, xmlNodePtr at, const char *expr)
{
	xmlXPathObjectPtr o = ebxml_doc_nodes(d, at, expr);

	xmlXPathFreeObject(o);
	return o != NULL;
}

int
ebxml_text_copy(const char *s, char *out, size_t cap)
{
	size_t len;

	while (isspace((unsigned char) *s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	if (len + 1 > cap) {
		memcpy(out, s, cap - 1);
		out[cap - 1] = '\0';
		return MHS_ETOOBIG;
	}
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Copies the trimmed text content of node n into out. */
static int
node_text(xmlNodePtr n, char *out, size_t cap)
{
	xmlChar *s = xmlNodeGetContent(n);
	int rv;

	if (s == NULL)
		return MHS_ENOMEM;
	rv = ebxml_text_copy((const char *) s, out, cap);
	xmlFree(s);
	return rv;
}

int
ebxml_doc_text(struct ebxml_doc *d, xmlNodePtr at, const char *expr, char *out,
    size_t cap)
{
	xmlXPathObjectPtr o = ebxml_doc_nodes(d, at, expr);
	int rv;

	out[0] = '\0';
	if (o == NULL)
		return MHS_ENOTFOUND;
	rv = node_text(o->nodesetval->nodeTab[0], out, cap);
	xmlXPathFreeObject(o);
	return rv;
}

/* ---- child paths, without XPath ---- */

const char *
ebxml_prefix_ns(const char *prefix, size_t len)
{
	for (size_t i = 0; i < XML_NS_N; i++)
		if (strlen(xml_ns[i][0]) == len &&
		    memcmp(xml_ns[i][0], prefix, len) == 0)
			return xml_ns[i][1];
	return NULL;
}

/* Element n is prefix:local of the step [step, end). */
static bool
step_match(xmlNodePtr n, const char *step, const char *end)
{
	const char *colon = memchr(step, ':', (size_t) (end - step));
	const char *ns;

	if (n->type != XML_ELEMENT_NODE || n->ns == NULL || colon == NULL ||
	    (ns = ebxml_prefix_ns(step, (size_t) (colon - step))) == NULL)
		return false;
	colon++;
	return strlen((const char *) n->name) == (size_t) (end - colon) &&
	    memcmp(n->name, colon, (size_t) (end - colon)) == 0 &&
	    strcmp((const char *) n->ns->href, ns) == 0;
}

/*
 * path_first searches the siblings from first on for path's first step,
 * then below each match for the rest, depth first: the first node in
 * document order, as XPath would give.
 */
static xmlNodePtr
path_first(xmlNodePtr first, const char *path, ebxml_node_ok ok, void *arg)
{
	const char *slash = strchr(path, '/');
	const char *end = slash != NULL ? slash : path + strlen(path);

	for (xmlNodePtr n = first; n != NULL; n = n->next) {
		xmlNodePtr hit;

		if (!step_match(n, path, end))
			continue;
		if (slash == NULL && (ok == NULL || ok(n, arg)))
			return n;
		if (slash != NULL &&
		    (hit = path_first(n->children, slash + 1, ok, arg)) !=
		        NULL)
			return hit;
	}
	return NULL;
}

xmlNodePtr
ebxml_doc_find(struct ebxml_doc *d, xmlNodePtr at, const char *path,
    ebxml_node_ok ok, void *arg)
{
	xmlNodePtr from = at != NULL ? at : (xmlNodePtr) d->doc;

	return from != NULL ? path_first(from->children, path, ok, arg) : NULL;
}

bool
ebxml_doc_has_path(struct ebxml_doc *d, const char *path)
{
	return ebxml_doc_find(d, NULL, path, NULL, NULL) != NULL;
}

int
ebxml_doc_find_text(struct ebxml_doc *d, xmlNodePtr at, const char *path,
    char *out, size_t cap)
{
	xmlNodePtr n = ebxml_doc_find(d, at, path, NULL, NULL);

	out[0] = '\0';
	return n != NULL ? node_text(n, out, cap) : MHS_ENOTFOUND;
}

int
ebxml_attr_text(
    xmlNodePtr n, const char *prefix, const char *name, char *out, size_t cap)
{
	const char *ns = ebxml_prefix_ns(prefix, strlen(prefix));
	xmlChar *s;
	int rv;

	out[0] = '\0';
	if (ns == NULL ||
	    (s = xmlGetNsProp(
	         n, (const xmlChar *) name, (const xmlChar *) ns)) == NULL)
		return MHS_ENOTFOUND;
	rv = ebxml_text_copy((const char *) s, out, cap);
	xmlFree(s);
	return rv;
}
