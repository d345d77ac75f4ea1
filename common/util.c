/*
 * Design notes: see util.h. Randomness comes from OpenSSL's CSPRNG.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "util.h"

int64_t
mhs_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint32_t
mhs_fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t) *s) * 16777619u;
	return h;
}

int64_t
mhs_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
mhs_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * UUIDs take their bytes from a per-thread pool filled by RAND_bytes 32
 * ids at a time: one CSPRNG call (with its locks) per 32 ids instead of
 * one per id; the bytes are the same CSPRNG's. A child of fork empties
 * its copy of the forking thread's pool, so it never repeats an id of its
 * parent.
 */
static _Thread_local struct {
	uint8_t bytes[512];
	size_t used;
} uuid_pool = {.used = sizeof(uuid_pool.bytes)};
static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;

static void
uuid_forked(void)
{
	uuid_pool.used = sizeof(uuid_pool.bytes);
}

static void
uuid_init(void)
{
	pthread_atfork(NULL, NULL, uuid_forked);
}

int
mhs_uuid_upper(char out[37])
{
	static const char digits[] = "0123456789ABCDEF";
	uint8_t *b;
	size_t i, o = 0;

	pthread_once(&uuid_once, uuid_init);
	if (uuid_pool.used + 16 > sizeof(uuid_pool.bytes)) {
		if (RAND_bytes(uuid_pool.bytes, sizeof(uuid_pool.bytes)) != 1)
			return MHS_EIO;
		uuid_pool.used = 0;
	}
	b = uuid_pool.bytes + uuid_pool.used;
	uuid_pool.used += 16;
	b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = digits[b[i] >> 4];
		out[o++] = digits[b[i] & 15];
	}
	out[o] = '\0';
	return 0;
}

void
mhs_sha256(const void *data, size_t len, uint8_t out[32])
{
	SHA256(data, len, out);
}

void
mhs_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

void
mhs_time_iso(int64_t ms, char out[21])
{
	time_t t = (time_t) (ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
mhs_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
    uint8_t out[32])
{
	unsigned int outlen = 32;

	HMAC(EVP_sha256(), key, (int) keylen, data, len, out, &outlen);
}

struct mhs_hmac {
	EVP_MAC_CTX *ctx; /* initialised with the key; re-init reuses it */
};

int
mhs_hmac_open(struct mhs_hmac **hp, const void *key, size_t keylen)
{
	struct mhs_hmac *h;
	EVP_MAC *mac;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(
	        OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0),
	    OSSL_PARAM_construct_end()};
	static const uint8_t none = 0;
	uint8_t want[32], got[32];

	*hp = NULL;
	mhs_hmac_sha256(key, keylen, "mhs", 3, want);
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return MHS_ENOMEM;
	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL) {
		free(h);
		return MHS_EIO;
	}
	h->ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac); /* the context keeps its own reference */
	/* An empty key is a valid HMAC key; OpenSSL wants a pointer. */
	if (h->ctx == NULL ||
	    !EVP_MAC_init(h->ctx, keylen > 0 ? key : &none, keylen, params)) {
		mhs_hmac_close(h);
		return MHS_EIO;
	}
	/* Digests re-init with the key already set. OpenSSL 3.0.0 to 3.0.2
	 * answered such a re-init with success and did nothing (every digest
	 * then covered all the data so far): check that this one resets. */
	for (int i = 0; i < 2; i++)
		if (mhs_hmac_digest(h, "mhs", 3, got) != 0 ||
		    memcmp(got, want, sizeof(got)) != 0) {
			mhs_hmac_close(h);
			return MHS_EIO;
		}
	*hp = h;
	return 0;
}

void
mhs_hmac_close(struct mhs_hmac *h)
{
	if (h == NULL)
		return;
	EVP_MAC_CTX_free(h->ctx);
	free(h);
}

int
mhs_hmac_digest(
    struct mhs_hmac *h, const void *data, size_t len, uint8_t out[32])
{
	size_t outlen = 0;

	/* A NULL key restarts with the key already set (OpenSSL 3). */
	if (!EVP_MAC_init(h->ctx, NULL, 0, NULL) ||
	    !EVP_MAC_update(h->ctx, data, len) ||
	    !EVP_MAC_final(h->ctx, out, &outlen, 32) || outlen != 32)
		return MHS_EIO;
	return 0;
}

size_t
mhs_fmt_ll(long long n, char out[24])
{
	char tmp[24];
	unsigned long long u =
	    n < 0 ? 0ULL - (unsigned long long) n : (unsigned long long) n;
	size_t len = 0, i = 0;

	do {
		tmp[len++] = (char) ('0' + u % 10);
		u /= 10;
	} while (u > 0);
	if (n < 0)
		out[i++] = '-';
	while (len > 0)
		out[i++] = tmp[--len];
	out[i] = '\0';
	return i;
}

void
mhs_signals_block(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}
