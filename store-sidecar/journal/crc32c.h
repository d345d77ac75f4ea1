/*
 * Design notes: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum every journal record carries. The CPU's CRC32 instruction where
 * there is one (x86-64 with SSE4.2), else software slicing-by-8; no global
 * state after a one-time setup, safe from any thread.
 */
#ifndef MHS_CRC32C_H
#define MHS_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * mhs_crc32c continues crc (0 to start) over len bytes, so that
 * mhs_crc32c(mhs_crc32c(0, a, n), b, m) is the CRC of a followed by b.
 * mhs_crc32c(0, "123456789", 9) == 0xe3069283.
 */
uint32_t mhs_crc32c(uint32_t crc, const void *data, size_t len);

/* The same, always in software (tests compare the two). */
uint32_t mhs_crc32c_soft(uint32_t crc, const void *data, size_t len);

/* mhs_crc32c_hardware: whether mhs_crc32c uses the CPU's instruction. */
bool mhs_crc32c_hardware(void);

#endif /* MHS_CRC32C_H */
