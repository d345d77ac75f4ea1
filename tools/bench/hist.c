/*
 * Design notes: a log-linear histogram (the idea of HdrHistogram, not its
 * code). Values under 256 have a bucket each; from 256 up, the top eight
 * significant bits pick one of 128 buckets per power of two, so a bucket
 * spans under 1% of its value and the whole uint64_t range fits in 7,424
 * counters (58 KiB) whatever the run's length. Recording is lock-free
 * (relaxed atomics: the reader runs after every writer has finished).
 */
#include "bench.h"

static size_t
hist_index(uint64_t v)
{
	int m, shift;

	if (v < 256)
		return (size_t) v;
	m = 63 - __builtin_clzll(v); /* 8..63 */
	shift = m - 7;
	return 256 + (size_t) (m - 8) * 128 + (size_t) ((v >> shift) - 128);
}

/* hist_value is the middle of bucket i. */
static uint64_t
hist_value(size_t i)
{
	size_t octave, off;
	int shift;

	if (i < 256)
		return i;
	octave = (i - 256) / 128;
	off = (i - 256) % 128;
	shift = (int) octave + 1;
	return ((128 + (uint64_t) off) << shift) + ((1ull << shift) >> 1);
}

void
bench_hist_record(struct bench_hist *h, uint64_t v)
{
	uint64_t max = atomic_load_explicit(&h->max, memory_order_relaxed);

	atomic_fetch_add_explicit(
	    &h->counts[hist_index(v)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
	while (v > max &&
	    !atomic_compare_exchange_weak_explicit(
	        &h->max, &max, v, memory_order_relaxed, memory_order_relaxed))
		;
}

uint64_t
bench_hist_quantile(struct bench_hist *h, double q)
{
	uint64_t total = atomic_load(&h->total), max = atomic_load(&h->max);
	uint64_t rank, seen = 0;

	if (total == 0)
		return 0;
	rank = (uint64_t) (q * (double) total + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank >= total)
		return max;
	for (size_t i = 0; i < BENCH_HIST_N; i++) {
		seen += atomic_load(&h->counts[i]);
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return v < max ? v : max;
		}
	}
	return max;
}
