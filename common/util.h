/*
 * Design notes: small helpers every process needs: clocks, identifiers,
 * hashing. Safe from any thread. The one hidden state is mhs_uuid_upper's
 * per-thread pool of random bytes (a child of fork discards its copy).
 */
#ifndef MHS_UTIL_H
#define MHS_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* Wall-clock milliseconds since the epoch (for records and replies). */
int64_t mhs_now_ms(void);

/* Monotonic milliseconds (for deadlines and durations). */
int64_t mhs_mono_ms(void);
int64_t mhs_mono_us(void);
/* mhs_fnv1a: 32-bit FNV-1a of a C string (hash tables, not security). */
uint32_t mhs_fnv1a(const char *s);

/* mhs_uuid_upper writes a random (v4) upper-case UUID and a NUL (37 bytes). */
int mhs_uuid_upper(char out[37]);

/*
 * mhs_signals_block blocks SIGINT and SIGTERM in this thread and every
 * thread it starts later (call it before nng or curl start theirs), so
 * main can take them with sigwait(set); SIGPIPE is ignored.
 */
void mhs_signals_block(sigset_t *set);

/* mhs_sha256 hashes len bytes into out[32]. */
void mhs_sha256(const void *data, size_t len, uint8_t out[32]);

/* mhs_hmac_sha256 computes HMAC-SHA256(key, data) into out[32]. */
void mhs_hmac_sha256(const void *key, size_t keylen, const void *data,
    size_t len, uint8_t out[32]);

/*
 * A prepared HMAC-SHA256 key, for one that hashes many messages (the
 * store's NHS-number index): the key schedule is done once, where
 * mhs_hmac_sha256 redoes it, and looks the algorithm up, on every call.
 * One thread at a time per object.
 */
struct mhs_hmac;
int mhs_hmac_open(struct mhs_hmac **hp, const void *key, size_t keylen);
void mhs_hmac_close(struct mhs_hmac *h); /* accepts NULL */
/* HMAC-SHA256(h's key, data) into out[32]; 0 or MHS_EIO. */
int mhs_hmac_digest(
    struct mhs_hmac *h, const void *data, size_t len, uint8_t out[32]);

/* mhs_fmt_ll writes n in decimal and a NUL into out; returns its length. */
size_t mhs_fmt_ll(long long n, char out[24]);

/* mhs_hex writes 2*len lower-case hex digits and a NUL into out. */
void mhs_hex(const uint8_t *in, size_t len, char *out);

/* mhs_time_iso writes "YYYY-MM-DDThh:mm:ssZ" for ms into out[21]. */
void mhs_time_iso(int64_t ms, char out[21]);

#endif /* MHS_UTIL_H */
