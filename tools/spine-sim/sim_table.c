/*
 * Design notes: the simulator's record of every MessageId it has seen.
 * Entries live in an array in arrival order (what /_sim/messages lists);
 * a power-of-two open-addressing index (FNV-1a, linear probing) maps an
 * id to its entry, so a delivery costs O(1) however many messages the
 * run has seen. The index is rebuilt at double size when half full. The
 * table is bounded by max entries. Not thread-safe: the caller holds
 * sim->mtx.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sim.h"

static uint32_t
id_hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char) *id) * 16777619u;
	return h;
}

int
sim_table_init(struct sim_table *t, size_t max)
{
	memset(t, 0, sizeof(*t));
	t->max = max;
	t->nslots = 1024;
	if ((t->slots = calloc(t->nslots, sizeof(*t->slots))) == NULL)
		return MHS_ENOMEM;
	return 0;
}

void
sim_table_fini(struct sim_table *t)
{
	if (t == NULL)
		return;
	free(t->msgs);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

void
sim_table_clear(struct sim_table *t)
{
	t->n = 0;
	memset(t->slots, 0, t->nslots * sizeof(*t->slots));
}

/* The slot holding id, or the empty slot where it would go. */
static size_t
slot_find(const struct sim_table *t, const char *id)
{
	size_t mask = t->nslots - 1, i = id_hash(id) & mask;

	while (
	    t->slots[i] != 0 && strcmp(t->msgs[t->slots[i] - 1].id, id) != 0)
		i = (i + 1) & mask;
	return i;
}

static int
index_grow(struct sim_table *t)
{
	size_t nslots = t->nslots * 2, mask = nslots - 1;
	uint32_t *slots = calloc(nslots, sizeof(*slots));

	if (slots == NULL)
		return MHS_ENOMEM;
	for (size_t k = 0; k < t->n; k++) {
		size_t i = id_hash(t->msgs[k].id) & mask;

		while (slots[i] != 0)
			i = (i + 1) & mask;
		slots[i] = (uint32_t) (k + 1);
	}
	free(t->slots);
	t->slots = slots;
	t->nslots = nslots;
	return 0;
}

static int
array_grow(struct sim_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 1024;
	struct sim_msg *msgs = realloc(t->msgs, cap * sizeof(*msgs));

	if (msgs == NULL)
		return MHS_ENOMEM;
	t->msgs = msgs;
	t->cap = cap;
	return 0;
}

static size_t
copy_trunc(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

struct sim_msg *
sim_table_get(
    struct sim_table *t, const char *id, const char *interaction, int *err)
{
	struct sim_msg *m;
	size_t i = slot_find(t, id);

	*err = 0;
	if (t->slots[i] != 0)
		return &t->msgs[t->slots[i] - 1];
	if (t->n >= t->max || t->n >= UINT32_MAX - 1) {
		*err = MHS_ETOOBIG;
		return NULL;
	}
	if ((t->n == t->cap && (*err = array_grow(t)) != 0) ||
	    ((t->n + 1) * 2 > t->nslots && (*err = index_grow(t)) != 0))
		return NULL;
	i = slot_find(t, id); /* the index may have been rebuilt */
	m = &t->msgs[t->n];
	memset(m, 0, sizeof(*m));
	copy_trunc(m->id, sizeof(m->id), id);
	copy_trunc(m->interaction, sizeof(m->interaction), interaction);
	t->slots[i] = (uint32_t) ++t->n;
	return m;
}

void
sim_table_json(const struct sim_table *t, struct mhs_buf *out)
{
	mhs_buf_puts(out, "[");
	for (size_t k = 0; k < t->n; k++) {
		const struct sim_msg *m = &t->msgs[k];

		mhs_buf_puts(
		    out, k > 0 ? ",\n{\"message_id\":" : "{\"message_id\":");
		mhs_buf_json_str(out, m->id);
		mhs_buf_puts(out, ",\"interaction_id\":");
		mhs_buf_json_str(out, m->interaction);
		mhs_buf_printf(out,
		    ",\"deliveries\":%u,\"acks\":%u,\"last_outcome\":\"%s\"}",
		    m->deliveries, m->acks, sim_outcome_name(m->last));
	}
	mhs_buf_puts(out, "]\n");
}
