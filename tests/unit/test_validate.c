/*
 * The edge validators of DESIGN §3: NHS number (Modulus 11), prescription
 * ID (ISO 7064 MOD 37-2), ODS code, message_id and interaction id shape.
 * Known-good values are checked against reference computations written
 * out here, independently of common/validate.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

/* ---- NHS number ---------------------------------------------------- */

/*
 * nhs_ref_check is the Modulus 11 check digit of a 9-digit prefix as the
 * NHS Data Dictionary states it, or 10 when no valid number has it.
 */
static int
nhs_ref_check(const char *p9)
{
	int sum = 0, r;

	for (int i = 0; i < 9; i++)
		sum += (p9[i] - '0') * (10 - i);
	r = 11 - sum % 11;
	return r == 11 ? 0 : r;
}

Test(nhs_number, known_valid_numbers)
{
	/*
	 * By hand, weights 10..2:
	 * 943476591: 90+36+24+28+42+30+20+27+2 = 299; 299 % 11 = 2; 11-2 = 9.
	 * 943476587: 90+36+24+28+42+30+20+24+14 = 308; 308 % 11 = 0 -> 0.
	 * 401023213: 40+0+8+0+12+15+8+3+6 = 92; 92 % 11 = 4; 11-4 = 7.
	 */
	cr_assert(mhs_nhs_number_check("9434765919"));
	cr_assert(mhs_nhs_number_check("9434765870"));
	cr_assert(mhs_nhs_number_check("4010232137"));
	cr_assert_eq(nhs_ref_check("943476591"), 9);
	cr_assert_eq(nhs_ref_check("943476587"), 0);
	cr_assert_eq(nhs_ref_check("401023213"), 7);
}

Test(nhs_number, wrong_check_digit_invalid)
{
	const char *valid[] = {"9434765919", "9434765870", "4010232137"};

	for (size_t v = 0; v < sizeof(valid) / sizeof(valid[0]); v++) {
		char s[11];

		memcpy(s, valid[v], sizeof(s));
		for (char d = '0'; d <= '9'; d++) {
			s[9] = d;
			cr_assert_eq(mhs_nhs_number_check(s), d == valid[v][9],
			    "%s", s);
		}
	}
}

Test(nhs_number, check_digit_ten_means_invalid)
{
	/*
	 * 123456789: 10+18+24+28+30+30+28+24+18 = 210; 210 % 11 = 1;
	 * 11-1 = 10: no final digit makes a valid number.
	 */
	const char *prefixes[] = {"123456789", "000000006"};

	for (size_t p = 0; p < 2; p++) {
		char s[11];

		cr_assert_eq(nhs_ref_check(prefixes[p]), 10);
		memcpy(s, prefixes[p], 9);
		s[10] = '\0';
		for (char d = '0'; d <= '9'; d++) {
			s[9] = d;
			cr_assert_not(mhs_nhs_number_check(s), "%s", s);
		}
	}
}

Test(nhs_number, remainder_zero_means_check_zero)
{
	/* 943476590: 90+36+24+28+42+30+20+27+0 = 297 = 27 * 11. */
	cr_assert_eq(nhs_ref_check("943476590"), 0);
	cr_assert(mhs_nhs_number_check("9434765900"));
	cr_assert_not(mhs_nhs_number_check("9434765901"));
	cr_assert(mhs_nhs_number_check("9434765870"));
	cr_assert_not(mhs_nhs_number_check("9434765871"));
}

Test(nhs_number, agrees_with_reference_on_many_prefixes)
{
	unsigned x = 12345u;

	for (int n = 0; n < 3000; n++) {
		char s[11];
		int ref;

		x = x * 1103515245u + 12345u;
		snprintf(s, sizeof(s), "%09u", (x >> 2) % 1000000000u);
		ref = nhs_ref_check(s);
		for (int d = 0; d <= 9; d++) {
			s[9] = (char) ('0' + d);
			s[10] = '\0';
			cr_assert_eq(
			    mhs_nhs_number_check(s), d == ref, "%s", s);
		}
	}
}

Test(nhs_number, wrong_length_invalid)
{
	cr_assert_not(mhs_nhs_number_check("943476591"));   /* 9 */
	cr_assert_not(mhs_nhs_number_check("94347659190")); /* 11 */
	cr_assert_not(mhs_nhs_number_check("94347659199"));
	cr_assert_not(mhs_nhs_number_check(""));
	cr_assert_not(mhs_nhs_number_check(NULL));
}

Test(nhs_number, non_digits_invalid)
{
	cr_assert_not(mhs_nhs_number_check("94347659A9"));
	cr_assert_not(mhs_nhs_number_check("A434765919"));
	cr_assert_not(mhs_nhs_number_check("943 476 5919"));
	cr_assert_not(mhs_nhs_number_check("943476591 "));
	cr_assert_not(mhs_nhs_number_check(" 943476591"));
	cr_assert_not(mhs_nhs_number_check("+943476591"));
	cr_assert_not(mhs_nhs_number_check("943-476-59"));
	/* ':' is '9' + 1: a range check off by one would take it. */
	cr_assert_not(mhs_nhs_number_check("943476591:"));
	cr_assert_not(mhs_nhs_number_check("/434765919"));
}

/* ---- Prescription ID ----------------------------------------------- */

static const char rx_alpha[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+";

/*
 * rx_ref_valid checks 18 upper-case characters (body and check) the way
 * ISO 7064 states a pure system's check: the recursive sum over all of
 * them, check included, is 1 modulo 37.
 */
static bool
rx_ref_valid(const char *s18)
{
	int p = 0;

	for (int i = 0; i < 17; i++)
		p = ((p + (int) (strchr(rx_alpha, s18[i]) - rx_alpha)) * 2) %
		    37;
	return (p + (int) (strchr(rx_alpha, s18[17]) - rx_alpha)) % 37 == 1;
}

/* rx_make writes "XXXXXX-XXXXXX-XXXXX" from body17 and its check char. */
static void
rx_make(char out[21], const char *body17)
{
	snprintf(out, 21, "%.6s-%.6s-%.5s%c", body17, body17 + 6, body17 + 12,
	    mhs_rx_id_check_char(body17));
}

Test(rx_id, spine_example_valid)
{
	cr_assert(mhs_rx_id_check("04F4C2-A99968-7F717P"));
	cr_assert(rx_ref_valid("04F4C2A999687F717P"));
}

Test(rx_id, every_other_final_character_invalid)
{
	char s[] = "04F4C2-A99968-7F717P";

	for (int c = 1; c < 256; c++) {
		if (c == 'P' || c == 'p')
			continue;
		s[19] = (char) c;
		cr_assert_not(mhs_rx_id_check(s), "final char 0x%02x", c);
	}
}

Test(rx_id, check_char_compared_case_insensitively)
{
	/* validate.h: the check is computed on upper case. */
	cr_assert(mhs_rx_id_check("04F4C2-A99968-7F717p"));
}

Test(rx_id, lowercase_hex_accepted)
{
	char s[21];

	cr_assert(mhs_rx_id_check("04f4c2-A99968-7f717P"));
	rx_make(s, "ABCDEFA99968BCDEF");
	cr_assert(mhs_rx_id_check(s), "%s", s);
	for (int i = 0; i < 19; i++)
		if (i < 6 || i > 13)
			s[i] = (char) (s[i] - 'A' + 'a');
	cr_assert(mhs_rx_id_check(s), "%s", s);
}

Test(rx_id, lowercase_in_ods_group_invalid)
{
	/* Same check character: the check is computed on upper case. */
	cr_assert_eq(mhs_rx_id_check_char("04F4C2a999687F717"), 'P');
	cr_assert_not(mhs_rx_id_check("04F4C2-a99968-7F717P"));
	cr_assert_not(mhs_rx_id_check("04f4c2-a99968-7f717p"));
}

Test(rx_id, ods_group_letters_and_digits_valid)
{
	char s[21];

	rx_make(s, "04F4C2ABC1237F717");
	cr_assert(mhs_rx_id_check(s), "%s", s);
	rx_make(s, "04F4C2ZZZZZZ7F717");
	cr_assert(mhs_rx_id_check(s), "%s", s);
	rx_make(s, "04F4C200000A7F717");
	cr_assert(mhs_rx_id_check(s), "%s", s);
}

Test(rx_id, plus_as_check_char_valid)
{
	char body[18], s[21], s18[19];
	const char *hex = "0123456789ABCDEF";
	int found = 0;

	/* Search 256 bodies for those whose check character is '+'. */
	for (int a = 0; a < 16; a++) {
		for (int b = 0; b < 16; b++) {
			snprintf(body, sizeof(body), "04F4C2A999687F7%c%c",
			    hex[a], hex[b]);
			if (mhs_rx_id_check_char(body) != '+')
				continue;
			found++;
			rx_make(s, body);
			cr_assert_eq(s[19], '+');
			cr_assert(mhs_rx_id_check(s), "%s", s);
			snprintf(s18, sizeof(s18), "%s+", body);
			cr_assert(rx_ref_valid(s18), "%s", s18);
			for (int c = 1; c < 256; c++) {
				if (c == '+')
					continue;
				s[19] = (char) c;
				cr_assert_not(mhs_rx_id_check(s), "%s", s);
			}
		}
	}
	/* 04F4C2A999687F74E, ...7F75C, ...: eight of the 256. */
	cr_assert_eq(found, 8);
	cr_assert(mhs_rx_id_check("04F4C2-A99968-7F74E+"));
}

Test(rx_id, wrong_dash_positions_invalid)
{
	cr_assert_not(mhs_rx_id_check("04F4C2A-99968-7F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C-2A99968-7F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2-A999687-F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2-A9996-87F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2_A99968_7F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2 A99968 7F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2-A99968+7F717P"));
}

Test(rx_id, wrong_length_invalid)
{
	cr_assert_not(mhs_rx_id_check("04F4C2A999687F717P"));    /* 18 */
	cr_assert_not(mhs_rx_id_check("04F4C2-A99968-7F717"));   /* 19 */
	cr_assert_not(mhs_rx_id_check("04F4C2-A99968-7F717PP")); /* 21 */
	cr_assert_not(mhs_rx_id_check("04F4C2-A99968-7F717P "));
	cr_assert_not(mhs_rx_id_check(" 04F4C2-A99968-7F717P"));
	/* The long (UUID) form is not accepted here. */
	cr_assert_not(mhs_rx_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert_not(mhs_rx_id_check(""));
	cr_assert_not(mhs_rx_id_check(NULL));
}

Test(rx_id, non_hex_in_hex_groups_invalid)
{
	static const int hex_pos[] = {0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16};
	static const char bad[] = "GZ+";

	/*
	 * Each replacement is in the MOD 37-2 alphabet and the check char is
	 * recomputed, so only the character class can make it invalid.
	 */
	for (size_t i = 0; i < sizeof(hex_pos) / sizeof(hex_pos[0]); i++) {
		for (size_t k = 0; k < strlen(bad); k++) {
			char body[] = "04F4C2A999687F717", s[21];

			body[hex_pos[i]] = bad[k];
			rx_make(s, body);
			cr_assert_neq(s[19], '\0');
			cr_assert_not(mhs_rx_id_check(s), "%s", s);
		}
	}
}

Test(rx_id, non_alnum_in_ods_group_invalid)
{
	char s[21];

	rx_make(s, "04F4C2A9996+7F717");
	cr_assert_neq(s[19], '\0');
	cr_assert_not(mhs_rx_id_check(s), "%s", s);
	cr_assert_not(mhs_rx_id_check("04F4C2-A9996 -7F717P"));
	cr_assert_not(mhs_rx_id_check("04F4C2-A9996--7F717P"));
}

Test(rx_id, check_char_known_values)
{
	/* Worked separately with p = ((p + v) * 2) % 37, (38 - p) % 37. */
	cr_assert_eq(mhs_rx_id_check_char("04F4C2A999687F717"), 'P');
	cr_assert_eq(mhs_rx_id_check_char("00000000000000000"), '1');
	cr_assert_eq(mhs_rx_id_check_char("FFFFFFZZZZZZFFFFF"), 'T');
	cr_assert_eq(mhs_rx_id_check_char("123456ABC12312345"), 'M');
	cr_assert_eq(mhs_rx_id_check_char("A0B1C2A99968D3E4F"), 'G');
	cr_assert_eq(mhs_rx_id_check_char("04F4C2A999687F74E"), '+');
	/* Lower case is computed as upper case. */
	cr_assert_eq(mhs_rx_id_check_char("04f4c2a999687f717"), 'P');
	/* A character outside the alphabet has no check character. */
	cr_assert_eq(mhs_rx_id_check_char("04F4C2A999687F71_"), '\0');
	cr_assert_eq(mhs_rx_id_check_char("04F4C2-99687F7172"), '\0');
}

Test(rx_id, check_char_agrees_with_iso7064_reference)
{
	unsigned x = 777u;

	for (int n = 0; n < 2000; n++) {
		char s18[19];
		char c;

		for (int i = 0; i < 17; i++) {
			x = x * 1103515245u + 12345u;
			s18[i] = rx_alpha[(x >> 8) % 37];
		}
		s18[18] = '\0';
		c = mhs_rx_id_check_char(s18);
		cr_assert_neq(c, '\0');
		cr_assert_neq(strchr(rx_alpha, c), NULL);
		for (int k = 0; k < 37; k++) {
			s18[17] = rx_alpha[k];
			cr_assert_eq(
			    rx_ref_valid(s18), rx_alpha[k] == c, "%s", s18);
		}
	}
}

/* ---- ODS code ------------------------------------------------------ */

Test(ods, one_to_eight_allowed_chars_valid)
{
	cr_assert(mhs_ods_check("A"));
	cr_assert(mhs_ods_check("9"));
	cr_assert(mhs_ods_check("-"));
	cr_assert(mhs_ods_check("Y12345"));
	cr_assert(mhs_ods_check("RBA-01"));
	cr_assert(mhs_ods_check("abc12345"));
	cr_assert(mhs_ods_check("ABCDEFGH"));
	cr_assert(mhs_ods_check("a-B-c-D-"));
}

Test(ods, wrong_length_invalid)
{
	cr_assert_not(mhs_ods_check(""));
	cr_assert_not(mhs_ods_check("ABCDEFGHI"));
	cr_assert_not(mhs_ods_check("123456789"));
	cr_assert_not(mhs_ods_check(NULL));
}

Test(ods, other_characters_invalid)
{
	cr_assert_not(mhs_ods_check("A_B"));
	cr_assert_not(mhs_ods_check("A B"));
	cr_assert_not(mhs_ods_check(" AB"));
	cr_assert_not(mhs_ods_check("AB."));
	cr_assert_not(mhs_ods_check("AB/"));
	cr_assert_not(mhs_ods_check("AB\n"));
	cr_assert_not(mhs_ods_check("\xc3\xa9"));
	cr_assert_not(mhs_ods_check("A\x80"));
}

/* ---- message_id ---------------------------------------------------- */

Test(message_id, upper_case_uuid_valid)
{
	cr_assert(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert(
	    mhs_message_id_check("00000000-0000-0000-0000-000000000000"));
	cr_assert(
	    mhs_message_id_check("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"));
}

Test(message_id, lower_case_invalid)
{
	cr_assert_not(
	    mhs_message_id_check("6f3a2c1e-8b4d-4e2a-9c1b-0d2e3f4a5b6c"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6c"));
}

Test(message_id, wrong_dashes_invalid)
{
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E8-B4D-4E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D4-E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A9-C1B-0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B0-D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E_8B4D_4E2A_9C1B_0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B-C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E8B4D4E2A9C1B0D2E3F4A5B6C"));
}

Test(message_id, wrong_length_invalid)
{
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C0"));
	cr_assert_not(
	    mhs_message_id_check("{6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C}"));
	cr_assert_not(mhs_message_id_check(""));
	cr_assert_not(mhs_message_id_check(NULL));
}

Test(message_id, non_hex_invalid)
{
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1G-8B4D-4E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check("6F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6 "));
	/* '@' and 'G' sit either side of 'A'..'F'; ':' after '9'. */
	cr_assert_not(
	    mhs_message_id_check("@F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C"));
	cr_assert_not(
	    mhs_message_id_check(":F3A2C1E-8B4D-4E2A-9C1B-0D2E3F4A5B6C"));
}

/* ---- interaction id shape ------------------------------------------ */

Test(interaction, shape)
{
	cr_assert(mhs_interaction_shape_check("PORX_IN020101SM31"));
	cr_assert(mhs_interaction_shape_check("A"));
	cr_assert(mhs_interaction_shape_check("_"));
	cr_assert(mhs_interaction_shape_check(
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345")); /* 32 */
	cr_assert_not(mhs_interaction_shape_check(
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456")); /* 33 */
	cr_assert_not(mhs_interaction_shape_check("porx_in020101sm31"));
	cr_assert_not(mhs_interaction_shape_check("PORX-IN020101SM31"));
	cr_assert_not(mhs_interaction_shape_check("PORX IN020101SM31"));
	cr_assert_not(mhs_interaction_shape_check("PORX_IN020101SM31\n"));
	cr_assert_not(mhs_interaction_shape_check(""));
	cr_assert_not(mhs_interaction_shape_check(NULL));
}
