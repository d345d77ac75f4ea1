/*
 * Design notes: the store's in-memory idempotency window: the last N
 * accepted Submits by scoped idempotency key (CLIENT/KEY), so that while
 * Redis is down a partner's retry is still answered with the original
 * message_id instead of being accepted twice (G3). Bounded: the oldest
 * entry is evicted when full. A retry of a message older than the window,
 * made while Redis is down, is the one case it cannot catch (documented in
 * docs/architecture.md).
 *
 * Owner: the worker thread alone; no locking.
 */
#ifndef MHS_STORE_WINDOW_H
#define MHS_STORE_WINDOW_H

#include <stddef.h>
#include <stdint.h>

struct st_window_entry {
	char *key; /* NULL when the slot is free */
	char message_id[37];
	uint8_t fingerprint[32];
	int64_t accepted_at_ms;
	uint32_t next; /* index + 1 of the next entry in the bucket */
};

struct st_window {
	struct st_window_entry *ring;
	uint32_t cap, head, count;
	uint32_t *buckets; /* index + 1 of the first entry; 0 = empty */
	uint32_t nbuckets;
};

int st_window_init(struct st_window *w, uint32_t cap);
void st_window_fini(struct st_window *w);
/* st_window_put remembers key (copied); evicts the oldest when full. */
int st_window_put(struct st_window *w, const char *key, const char *id,
    const uint8_t fp[32], int64_t accepted_at_ms);
/* st_window_get returns the entry for key, or NULL. */
const struct st_window_entry *st_window_get(
    const struct st_window *w, const char *key);

#endif /* MHS_STORE_WINDOW_H */
