/*
 * Design notes: see validate.h. Algorithms:
 * - NHS number: sum of digit[i] * (10 - i) for the first nine digits;
 *   check = 11 - (sum mod 11); 11 means 0; 10 means the number is invalid.
 * - MOD 37-2 (ISO 7064, pure system): p = 0; for each character value v:
 *   p = ((p + v) * 2) mod 37; the check value is (38 - p) mod 37.
 */
#include <ctype.h>
#include <string.h>

#include "validate.h"

static const char rx_alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+";

bool
mhs_nhs_number_check(const char *s)
{
	int sum = 0, check;

	if (s == NULL || strlen(s) != 10)
		return false;
	for (int i = 0; i < 10; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	for (int i = 0; i < 9; i++)
		sum += (s[i] - '0') * (10 - i);
	check = 11 - sum % 11;
	if (check == 11)
		check = 0;
	if (check == 10)
		return false;
	return s[9] - '0' == check;
}

static int
rx_value(char c)
{
	const char *p;

	c = (char) toupper((unsigned char) c);
	if (c == '\0' || (p = strchr(rx_alphabet, c)) == NULL)
		return -1;
	return (int) (p - rx_alphabet);
}

char
mhs_rx_id_check_char(const char *body17)
{
	int p = 0;

	for (int i = 0; i < 17; i++) {
		int v = rx_value(body17[i]);
		if (v < 0)
			return '\0';
		p = ((p + v) * 2) % 37;
	}
	return rx_alphabet[(38 - p) % 37];
}

bool
mhs_rx_id_check(const char *s)
{
	char body[17];
	int n = 0;

	if (s == NULL || strlen(s) != 20 || s[6] != '-' || s[13] != '-')
		return false;
	for (int i = 0; i < 19; i++) {
		unsigned char c = (unsigned char) s[i];
		if (i == 6 || i == 13)
			continue;
		if (i < 6 || i > 13) {
			if (!isxdigit(c))
				return false;
		} else if (!(isdigit(c) || (c >= 'A' && c <= 'Z'))) {
			return false;
		}
		body[n++] = (char) toupper(c);
	}
	return mhs_rx_id_check_char(body) ==
	    (char) toupper((unsigned char) s[19]);
}

bool
mhs_ods_check(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) < 1 || n > 8)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && s[i] != '-')
			return false;
	return true;
}

bool
mhs_message_id_check(const char *s)
{
	if (s == NULL || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') ||
		               (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return true;
}

bool
mhs_interaction_shape_check(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) < 1 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isupper((unsigned char) s[i]) ||
		        isdigit((unsigned char) s[i]) || s[i] == '_'))
			return false;
	return true;
}
