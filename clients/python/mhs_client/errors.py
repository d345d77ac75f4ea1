"""Typed exceptions, one per gRPC status code the gateway answers."""


class MhsError(Exception):
    """A call that did not succeed: .code (gRPC status number), .message
    (the gateway's text), .request_id (x-request-id), .metadata."""

    code = None

    def __init__(self, code, message, request_id="", metadata=None):
        self.code = code
        self.message = message
        self.request_id = request_id
        self.metadata = dict(metadata or {})
        rid = f" [request {request_id}]" if request_id else ""
        super().__init__(f"{type(self).__name__} ({code}): {message}{rid}")


class InvalidArgument(MhsError):
    code = 3


class DeadlineExceeded(MhsError):
    code = 4


class NotFound(MhsError):
    code = 5


class AlreadyExists(MhsError):
    code = 6


class PermissionDenied(MhsError):
    code = 7


class ResourceExhausted(MhsError):
    code = 8

    @property
    def retry_after_ms(self):
        """The gateway's "retry-after-ms" hint, or None."""
        try:
            return int(self.metadata["retry-after-ms"])
        except (KeyError, ValueError):
            return None


class Unimplemented(MhsError):
    code = 12


class Internal(MhsError):
    code = 13


class Unavailable(MhsError):
    code = 14


class Unauthenticated(MhsError):
    code = 16


_BY_CODE = {c.code: c for c in (
    InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
    PermissionDenied, ResourceExhausted, Unimplemented, Internal,
    Unavailable, Unauthenticated)}


def error_for(code, message, request_id="", metadata=None):
    """The exception for a non-zero status code (MhsError when unlisted)."""
    return _BY_CODE.get(code, MhsError)(code, message, request_id, metadata)
