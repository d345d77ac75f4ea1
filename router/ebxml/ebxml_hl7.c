/*
 * Design notes: the one thing read from an HL7 v3 payload: a new
 * prescription's short-form prescription ID, which Spine's duplicate-
 * prescription rule (DESIGN §5) keys on. In EPS messages it is the
 * extension of an id whose root is the prescription-ID OID below
 * (ParentPrescription/.../pertinentPrescription/id). The payload is read
 * with the same safe libxml2 reader as the envelope (no DTD, no network,
 * bounded); a payload that does not even mention the OID is not parsed,
 * which keeps the common case cheap.
 */
#include <string.h>

#include "ebxml.h"
#include "ebxml_impl.h"
#include "error.h"

#define RX_ID_OID "2.16.840.1.113883.2.1.3.2.4.18.8"

int
mhs_ebxml_hl7_prescription_id(
    const void *payload, size_t len, char *out, size_t cap)
{
	struct ebxml_doc d;
	int rv;

	if (cap > 0)
		out[0] = '\0';
	if (payload == NULL || len == 0 || cap == 0 ||
	    memmem(payload, len, RX_ID_OID, strlen(RX_ID_OID)) == NULL)
		return MHS_ENOTFOUND;
	if ((rv = ebxml_doc_parse(&d, payload, len)) != 0)
		return rv;
	rv = ebxml_doc_text(&d, NULL,
	    "(//*[@root='" RX_ID_OID "'][@extension])[1]/@extension", out,
	    cap);
	ebxml_doc_fini(&d);
	if (rv == 0 && out[0] == '\0')
		rv = MHS_ENOTFOUND;
	return rv;
}
