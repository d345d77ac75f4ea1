/*
 * Design notes: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum every journal record carries. Software slicing-by-8; no global
 * state after a one-time table build, safe from any thread.
 */
#ifndef MHS_CRC32C_H
#define MHS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * mhs_crc32c continues crc (0 to start) over len bytes, so that
 * mhs_crc32c(mhs_crc32c(0, a, n), b, m) is the CRC of a followed by b.
 * mhs_crc32c(0, "123456789", 9) == 0xe3069283.
 */
uint32_t mhs_crc32c(uint32_t crc, const void *data, size_t len);

#endif /* MHS_CRC32C_H */
