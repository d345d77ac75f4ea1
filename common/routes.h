/*
 * Design notes: the route table (DESIGN §5): what each interaction needs
 * to reach Spine. The gateway validates interaction ids against it; the
 * router takes endpoint, retry and ebXML settings from it. Built-in
 * defaults cover the EPS interactions; an INI file may override or add
 * routes, one section per interaction:
 *   [route PORX_IN020101SM31]
 *   endpoint = /reliablemessaging/reliablerequest   ; path or full URL
 *   retries = 3
 *   retry_interval_ms = 30000
 *   persist_duration_ms = 600000
 * The table is read-only once loaded.
 */
#ifndef MHS_ROUTES_H
#define MHS_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

struct mhs_route {
	char interaction[33];
	char endpoint[256]; /* path under the Spine URL, or a full URL */
	char pattern[24];   /* "async-reliable", "async-express", ... */
	int retries;        /* Spine's retriable faults only */
	int retry_interval_ms;
	int persist_duration_ms;
	bool duplicate_elimination;
	bool ack_requested;
	bool sync_reply;
	char cpa_id[33];
	char to_party[65]; /* Spine's party key */
	char service[65];  /* eb:Service */
};

struct mhs_routes {
	struct mhs_route *routes;
	size_t n;
};

/* mhs_routes_load fills t with the defaults, then file (may be NULL). */
int mhs_routes_load(struct mhs_routes *t, const char *file);
void mhs_routes_fini(struct mhs_routes *t);

/* mhs_route_find returns the route for interaction, or NULL. */
const struct mhs_route *mhs_route_find(
    const struct mhs_routes *t, const char *interaction);

#endif /* MHS_ROUTES_H */
