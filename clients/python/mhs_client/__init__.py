"""Python partner client for the MHS gateway (nng REQ/REP + protobuf).

    from mhs_client import Client
    with Client() as c:          # MHS_GATEWAY_URL, MHS_TOKEN
        r = c.submit(idempotency_key=..., interaction_id=..., ...)

See clients/python/README.md.
"""
from .client import FINAL_STATES, SERVING, Client, MessageState, state_name
from .errors import (AlreadyExists, DeadlineExceeded, Internal,
                     InvalidArgument, MhsError, NotFound, PermissionDenied,
                     ResourceExhausted, Unauthenticated, Unavailable,
                     Unimplemented, error_for)
from .ids import (is_valid_nhs_number, is_valid_prescription_id,
                  make_nhs_number, make_prescription_id, mod37_2_check_char,
                  nhs_check_digit)

__all__ = [
    "Client", "MessageState", "FINAL_STATES", "SERVING", "state_name",
    "MhsError", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "Unimplemented",
    "Internal", "Unavailable", "Unauthenticated", "error_for",
    "nhs_check_digit", "is_valid_nhs_number", "make_nhs_number",
    "mod37_2_check_char", "is_valid_prescription_id", "make_prescription_id",
]
