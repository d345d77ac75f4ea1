/*
 * Design notes: the edge validators of DESIGN §3. Pure functions of their
 * input: no allocation, no logging (the input may be patient data). Each
 * returns true only for a fully valid value; NULL is invalid.
 */
#ifndef MHS_VALIDATE_H
#define MHS_VALIDATE_H

#include <stdbool.h>

/* NHS number: exactly 10 digits, Modulus 11 check digit (weights 10..2). */
bool mhs_nhs_number_check(const char *s);

/*
 * Prescription ID, short form XXXXXX-XXXXXX-XXXXXC: 6 hex, 6 of [A-Z0-9],
 * 5 hex, and an ISO 7064 MOD 37-2 check character over 0-9, A-Z, '+'.
 * Hex digits may be either case; the check is computed on upper case.
 */
bool mhs_rx_id_check(const char *s);

/* mhs_rx_id_check_char computes the MOD 37-2 character of 17 characters. */
char mhs_rx_id_check_char(const char *body17);

/* ODS code: 1 to 8 of [A-Za-z0-9-]. */
bool mhs_ods_check(const char *s);

/* message_id: an upper-case UUID, 8-4-4-4-12 hex digits. */
bool mhs_message_id_check(const char *s);

/* Interaction id shape: 1 to 32 of [A-Z0-9_] (the route table decides). */
bool mhs_interaction_shape_check(const char *s);

#endif /* MHS_VALIDATE_H */
