"""Check digits for the identifiers the gateway validates (DESIGN §3), and
generators of valid ones for tests and examples.

- NHS number: ten digits; the last is 11 - (sum of digit[i] * (10 - i) over
  the first nine) mod 11, where 11 means 0 and 10 makes the number invalid.
- Prescription ID, short form XXXXXX-XXXXXX-XXXXXC: 6 hex, the prescriber's
  ODS code zero-padded to 6 of [A-Z0-9], 5 hex, then an ISO 7064 MOD 37-2
  check character over 0-9, A-Z, '+'.
"""
import random
import re

_RX_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"
_RX_SHAPE = re.compile(r"[0-9A-Fa-f]{6}-[0-9A-Z]{6}-[0-9A-Fa-f]{5}[0-9A-Za-z+]\Z")


def nhs_check_digit(nine):
    """The check digit for nine digits, or None when none exists (10)."""
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(nine)) % 11
    check = 0 if check == 11 else check
    return None if check == 10 else check


def is_valid_nhs_number(s):
    if not (isinstance(s, str) and len(s) == 10 and s.isascii() and s.isdigit()):
        return False
    return nhs_check_digit(s[:9]) == int(s[9])


def make_nhs_number(rng=random):
    """A valid NHS number in the 999 range, which is reserved for testing
    and never issued to a patient."""
    while True:
        nine = "999" + "".join(rng.choice("0123456789") for _ in range(6))
        check = nhs_check_digit(nine)
        if check is not None:
            return nine + str(check)


def mod37_2_check_char(body):
    """ISO 7064 MOD 37-2 check character of body (dashes ignored)."""
    p = 0
    for c in body.replace("-", "").upper():
        p = ((p + _RX_ALPHABET.index(c)) * 2) % 37
    return _RX_ALPHABET[(38 - p) % 37]


def is_valid_prescription_id(s):
    if not isinstance(s, str) or not _RX_SHAPE.match(s):
        return False
    return mod37_2_check_char(s[:19]) == s[19].upper()


def make_prescription_id(prescriber_ods="A99968", rng=random):
    """A valid short-form prescription ID for the given prescriber."""
    ods = prescriber_ods.upper().rjust(6, "0")
    if not re.fullmatch(r"[0-9A-Z]{6}", ods):
        raise ValueError("prescriber_ods: 1-6 letters or digits")
    hexd = "0123456789ABCDEF"
    body = ("".join(rng.choice(hexd) for _ in range(6)) + "-" + ods + "-"
            + "".join(rng.choice(hexd) for _ in range(5)))
    return body + mod37_2_check_char(body)
