/*
 * Design notes: see crc32c.h. The eight tables are built once, under
 * pthread_once, and only read afterwards.
 */
#include <pthread.h>

#include "crc32c.h"

#define CRC32C_POLY 0x82f63b78u

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void
crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++) {
			uint32_t c = crc32c_table[t - 1][i];

			crc32c_table[t][i] =
			    (c >> 8) ^ crc32c_table[0][c & 0xff];
		}
}

static uint32_t
crc32c_le32(const uint8_t *p)
{
	return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
	    (uint32_t) p[3] << 24;
}

static uint32_t
crc32c_word8(uint32_t crc, const uint8_t *p)
{
	uint32_t lo = crc ^ crc32c_le32(p);
	uint32_t hi = crc32c_le32(p + 4);

	return crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
	    crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
	    crc32c_table[3][hi & 0xff] ^ crc32c_table[2][(hi >> 8) & 0xff] ^
	    crc32c_table[1][(hi >> 16) & 0xff] ^ crc32c_table[0][hi >> 24];
}

uint32_t
mhs_crc32c(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	pthread_once(&crc32c_once, crc32c_init);
	crc = ~crc;
	for (; len >= 8; len -= 8, p += 8)
		crc = crc32c_word8(crc, p);
	for (; len > 0; len--, p++)
		crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p) & 0xff];
	return ~crc;
}
