/*
 * Design notes: the only place an XML document is opened. Inputs come from
 * the network, so:
 *  - the size is bounded before libxml2 sees a byte;
 *  - XML_PARSE_NONET, and neither NOENT nor DTDLOAD: no entity is ever
 *    substituted and nothing is fetched;
 *  - a DOCTYPE stops the parser from its SAX callback before the internal
 *    subset is read, so entity bombs are never even declared (SOAP 1.1
 *    forbids a DTD anyway);
 *  - NOERROR/NOWARNING: libxml2 never writes to stderr on our behalf.
 * libxml2 is initialised once (pthread_once); after that every document
 * and XPath context is private to its caller, so any thread may parse.
 */
#include <ctype.h>
#include <pthread.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xpathInternals.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void
xml_init(void)
{
	xmlInitParser();
}

/* SAX internalSubset: called at <!DOCTYPE, before any declaration. */
static void
xml_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id,
    const xmlChar *sys_id)
{
	xmlParserCtxtPtr ctxt = ctx;

	*(bool *) ctxt->_private = true;
	xmlStopParser(ctxt);
}

static xmlDocPtr
xml_read(const char *xml, size_t len)
{
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	bool saw_dtd = false;
	int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;

	if ((ctxt = xmlNewParserCtxt()) == NULL)
		return NULL;
	ctxt->_private = &saw_dtd;
	ctxt->sax->internalSubset = xml_refuse_dtd;
	doc = xmlCtxtReadMemory(ctxt, xml, (int) len, NULL, NULL, opts);
	if (doc != NULL &&
	    (saw_dtd || !ctxt->wellFormed || doc->intSubset != NULL)) {
		xmlFreeDoc(doc);
		doc = NULL;
	}
	xmlFreeParserCtxt(ctxt);
	return doc;
}

static int
xml_register(xmlXPathContextPtr xp)
{
	static const char *const ns[][2] = {{"soap", EBXML_NS_SOAP},
	    {"eb", EBXML_NS_EB}, {"xlink", EBXML_NS_XLINK},
	    {"hl7", EBXML_NS_HL7}, {"nasp", EBXML_NS_NASP}};

	for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
		if (xmlXPathRegisterNs(xp, (const xmlChar *) ns[i][0],
		        (const xmlChar *) ns[i][1]) != 0)
			return MHS_ENOMEM;
	return 0;
}

int
ebxml_doc_parse(struct ebxml_doc *d, const char *xml, size_t len)
{
	int rv = MHS_EINVAL;

	d->doc = NULL;
	d->xp = NULL;
	if (len > MHS_EBXML_MAX_ENVELOPE)
		return MHS_ETOOBIG;
	if (len == 0)
		return MHS_EINVAL;
	pthread_once(&xml_once, xml_init);
	if ((d->doc = xml_read(xml, len)) == NULL)
		goto fail;
	rv = MHS_ENOMEM;
	if ((d->xp = xmlXPathNewContext(d->doc)) == NULL)
		goto fail;
	if ((rv = xml_register(d->xp)) != 0)
		goto fail;
	return 0;
fail:
	ebxml_doc_fini(d);
	return rv;
}

void
ebxml_doc_fini(struct ebxml_doc *d)
{
	if (d == NULL)
		return;
	xmlXPathFreeContext(d->xp);
	xmlFreeDoc(d->doc);
	d->xp = NULL;
	d->doc = NULL;
}

xmlXPathObjectPtr
ebxml_doc_nodes(struct ebxml_doc *d, xmlNodePtr at, const char *expr)
{
	xmlXPathObjectPtr o;

	d->xp->node = at != NULL ? at : (xmlNodePtr) d->doc;
	o = xmlXPathEvalExpression((const xmlChar *) expr, d->xp);
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

/* Copies s trimmed into out; MHS_ETOOBIG when it had to cut. */
static int
text_copy(const char *s, char *out, size_t cap)
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

int
ebxml_doc_text(struct ebxml_doc *d, xmlNodePtr at, const char *expr, char *out,
    size_t cap)
{
	xmlXPathObjectPtr o = ebxml_doc_nodes(d, at, expr);
	xmlChar *s;
	int rv;

	out[0] = '\0';
	if (o == NULL)
		return MHS_ENOTFOUND;
	s = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
	xmlXPathFreeObject(o);
	if (s == NULL)
		return MHS_ENOMEM;
	rv = text_copy((const char *) s, out, cap);
	xmlFree(s);
	return rv;
}
