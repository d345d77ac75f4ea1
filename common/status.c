/*
 * Design notes: names of gRPC status codes and the mapping from internal
 * errors, so every process answers the same failure with the same code.
 */
#include "status.h"
#include "error.h"

static const char *const mhs_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *
mhs_code_name(int code)
{
	if (code < 0 || code > MHS_CODE_UNAUTHENTICATED)
		return "UNKNOWN";
	return mhs_code_names[code];
}

int
mhs_code_from_err(int err)
{
	switch (err) {
	case MHS_OK:
		return MHS_CODE_OK;
	case MHS_EINVAL:
	case MHS_ETOOBIG:
		return MHS_CODE_INVALID_ARGUMENT;
	case MHS_ETIMEDOUT:
		return MHS_CODE_DEADLINE_EXCEEDED;
	case MHS_ENOTFOUND:
		return MHS_CODE_NOT_FOUND;
	case MHS_EEXIST:
		return MHS_CODE_ALREADY_EXISTS;
	case MHS_EPERM:
		return MHS_CODE_PERMISSION_DENIED;
	case MHS_ENOMEM:
		return MHS_CODE_RESOURCE_EXHAUSTED;
	case MHS_EUNAVAIL:
	case MHS_ECLOSED:
	case MHS_EIO:
	case MHS_ENOSPC:
		return MHS_CODE_UNAVAILABLE;
	case MHS_ESTATE:
		return MHS_CODE_FAILED_PRECONDITION;
	default:
		return MHS_CODE_INTERNAL;
	}
}
