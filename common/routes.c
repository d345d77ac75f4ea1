/*
 * Design notes: see routes.h. Persist durations are realistic (minutes):
 * a Spine outage shorter than that must finalise nothing (DESIGN §5).
 */
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "routes.h"

static const char *const eps_interactions[] = {
    "PORX_IN020101SM31", /* parent prescription */
    "PORX_IN030101SM32", /* cancel request */
    "PORX_IN060102SM30", /* nominated release request */
    "PORX_IN132004SM30", /* patient release request */
    "PORX_IN080101SM31", /* dispense notification */
    "PORX_IN090101SM31", /* dispense claim */
    "PORX_IN100101SM31", /* dispense proposal return */
    "PORX_IN510101SM31", /* withdraw */
};

static int
routes_add(
    struct mhs_routes *t, const char *interaction, struct mhs_route **rp)
{
	struct mhs_route *r;

	if (strlen(interaction) >= sizeof(r->interaction))
		return MHS_EINVAL;
	r = realloc(t->routes, (t->n + 1) * sizeof(*r));
	if (r == NULL)
		return MHS_ENOMEM;
	t->routes = r;
	r = &t->routes[t->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->interaction, sizeof(r->interaction), "%s", interaction);
	snprintf(r->endpoint, sizeof(r->endpoint),
	    "/reliablemessaging/reliablerequest");
	snprintf(r->pattern, sizeof(r->pattern), "async-reliable");
	r->retries = 3;
	r->retry_interval_ms = 30000;
	r->persist_duration_ms = 600000;
	r->duplicate_elimination = true;
	r->ack_requested = true;
	r->sync_reply = true;
	snprintf(r->cpa_id, sizeof(r->cpa_id), "S1001A1630");
	snprintf(r->to_party, sizeof(r->to_party), "YES-0000806");
	snprintf(r->service, sizeof(r->service), "urn:nhs:names:services:mm");
	*rp = r;
	return 0;
}

struct routes_ini {
	struct mhs_routes *t;
	const char *file;
	int err;
};

/* ini_bool and ini_num take what config.c takes, and nothing else. */
static int
ini_bool(const char *v, bool *out)
{
	if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
	    strcmp(v, "1") == 0 || strcmp(v, "on") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
	    strcmp(v, "0") == 0 || strcmp(v, "off") == 0)
		*out = false;
	else
		return MHS_EINVAL;
	return 0;
}

static int
ini_num(const char *v, int *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < 0 || n > INT_MAX)
		return MHS_EINVAL;
	*out = (int) n;
	return 0;
}

static int
routes_ini_entry(
    void *arg, const char *section, const char *key, const char *val)
{
	struct routes_ini *ri = arg;
	struct mhs_route *r = NULL;
	const char *name;

	if (ri->err != 0)
		return 0; /* keep the first error: inih parses on after it */
	if (strncmp(section, "route ", 6) != 0)
		return 1;
	name = section + 6;
	for (size_t i = 0; i < ri->t->n; i++)
		if (strcmp(ri->t->routes[i].interaction, name) == 0)
			r = &ri->t->routes[i];
	if (r == NULL && (ri->err = routes_add(ri->t, name, &r)) != 0)
		return 0;
#define STR(f)                                                                \
	if (strcmp(key, #f) == 0) {                                           \
		snprintf(r->f, sizeof(r->f), "%s", val);                      \
		return 1;                                                     \
	}
#define NUM(f)                                                                \
	if (strcmp(key, #f) == 0) {                                           \
		if ((ri->err = ini_num(val, &r->f)) == 0)                     \
			return 1;                                             \
		fprintf(stderr,                                               \
		    "%s: [route %s]: %s: expected a number "                  \
		    "from 0, got \"%s\"\n",                                   \
		    ri->file, name, key, val);                                \
		return 0;                                                     \
	}
#define BOOL(f)                                                               \
	if (strcmp(key, #f) == 0) {                                           \
		if ((ri->err = ini_bool(val, &r->f)) == 0)                    \
			return 1;                                             \
		fprintf(stderr,                                               \
		    "%s: [route %s]: %s: expected true or "                   \
		    "false, got \"%s\"\n",                                    \
		    ri->file, name, key, val);                                \
		return 0;                                                     \
	}
	STR(endpoint)
	STR(pattern)
	STR(cpa_id)
	STR(to_party)
	STR(service)
	NUM(retries)
	NUM(retry_interval_ms)
	NUM(persist_duration_ms)
	BOOL(duplicate_elimination)
	BOOL(ack_requested)
	BOOL(sync_reply)
#undef STR
#undef NUM
#undef BOOL
	fprintf(stderr, "%s: [route %s]: unknown key \"%s\"\n", ri->file, name,
	    key);
	ri->err = MHS_EINVAL;
	return 0;
}

int
mhs_routes_load(struct mhs_routes *t, const char *file)
{
	struct routes_ini ri = {t, file, 0};
	int rv, line;

	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < sizeof(eps_interactions) / sizeof(char *);
	     i++) {
		struct mhs_route *r;
		if ((rv = routes_add(t, eps_interactions[i], &r)) != 0)
			goto fail;
	}
	if (file == NULL || file[0] == '\0')
		return 0;
	if ((line = ini_parse(file, routes_ini_entry, &ri)) < 0) {
		fprintf(stderr, "cannot read route file %s\n", file);
		rv = MHS_EIO;
		goto fail;
	}
	if ((rv = ri.err) != 0)
		goto fail;
	if (line > 0) {
		fprintf(stderr, "%s: line %d: syntax error\n", file, line);
		rv = MHS_EINVAL;
		goto fail;
	}
	return 0;
fail:
	mhs_routes_fini(t);
	return rv;
}

void
mhs_routes_fini(struct mhs_routes *t)
{
	free(t->routes);
	t->routes = NULL;
	t->n = 0;
}

const struct mhs_route *
mhs_route_find(const struct mhs_routes *t, const char *interaction)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->routes[i].interaction, interaction) == 0)
			return &t->routes[i];
	return NULL;
}
