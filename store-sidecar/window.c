/*
 * Design notes: see window.h. A ring of entries in arrival order, chained
 * into a power-of-two bucket array by an FNV-1a hash of the key.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "util.h"
#include "window.h"

int
st_window_init(struct st_window *w, uint32_t cap)
{
	memset(w, 0, sizeof(*w));
	w->cap = cap > 0 ? cap : 1;
	w->nbuckets = 1;
	while (w->nbuckets < w->cap)
		w->nbuckets <<= 1;
	w->ring = calloc(w->cap, sizeof(*w->ring));
	w->buckets = calloc(w->nbuckets, sizeof(*w->buckets));
	if (w->ring == NULL || w->buckets == NULL) {
		st_window_fini(w);
		return MHS_ENOMEM;
	}
	return 0;
}

void
st_window_fini(struct st_window *w)
{
	for (uint32_t i = 0; w->ring != NULL && i < w->cap; i++)
		free(w->ring[i].key);
	free(w->ring);
	free(w->buckets);
	memset(w, 0, sizeof(*w));
}

static void
window_unlink(struct st_window *w, uint32_t idx)
{
	uint32_t *pp =
	    &w->buckets[mhs_fnv1a(w->ring[idx].key) & (w->nbuckets - 1)];

	while (*pp != 0 && *pp != idx + 1)
		pp = &w->ring[*pp - 1].next;
	if (*pp == idx + 1)
		*pp = w->ring[idx].next;
	free(w->ring[idx].key);
	w->ring[idx].key = NULL;
	w->count--;
}

int
st_window_put(struct st_window *w, const char *key, const char *id,
    const uint8_t fp[32], int64_t accepted_at_ms)
{
	struct st_window_entry *e = &w->ring[w->head];
	uint32_t b;
	char *copy = strdup(key);

	if (copy == NULL)
		return MHS_ENOMEM;
	if (e->key != NULL)
		window_unlink(w, w->head);
	e->key = copy;
	memcpy(e->message_id, id, sizeof(e->message_id));
	e->message_id[36] = '\0';
	memcpy(e->fingerprint, fp, 32);
	e->accepted_at_ms = accepted_at_ms;
	b = mhs_fnv1a(key) & (w->nbuckets - 1);
	e->next = w->buckets[b];
	w->buckets[b] = w->head + 1;
	w->head = (w->head + 1) % w->cap;
	w->count++;
	return 0;
}

const struct st_window_entry *
st_window_get(const struct st_window *w, const char *key)
{
	uint32_t i = w->buckets[mhs_fnv1a(key) & (w->nbuckets - 1)];

	for (; i != 0; i = w->ring[i - 1].next)
		if (strcmp(w->ring[i - 1].key, key) == 0)
			return &w->ring[i - 1];
	return NULL;
}
