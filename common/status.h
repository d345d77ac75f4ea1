/*
 * Design notes: gRPC status codes, the numbers every Response carries
 * (DESIGN §3, contract). Never renumber.
 */
#ifndef MHS_STATUS_H
#define MHS_STATUS_H

enum mhs_code {
	MHS_CODE_OK = 0,
	MHS_CODE_CANCELLED = 1,
	MHS_CODE_UNKNOWN = 2,
	MHS_CODE_INVALID_ARGUMENT = 3,
	MHS_CODE_DEADLINE_EXCEEDED = 4,
	MHS_CODE_NOT_FOUND = 5,
	MHS_CODE_ALREADY_EXISTS = 6,
	MHS_CODE_PERMISSION_DENIED = 7,
	MHS_CODE_RESOURCE_EXHAUSTED = 8,
	MHS_CODE_FAILED_PRECONDITION = 9,
	MHS_CODE_ABORTED = 10,
	MHS_CODE_OUT_OF_RANGE = 11,
	MHS_CODE_UNIMPLEMENTED = 12,
	MHS_CODE_INTERNAL = 13,
	MHS_CODE_UNAVAILABLE = 14,
	MHS_CODE_DATA_LOSS = 15,
	MHS_CODE_UNAUTHENTICATED = 16,
};

/* mhs_code_name gives gRPC's name ("INVALID_ARGUMENT") or "UNKNOWN". */
const char *mhs_code_name(int code);

/* mhs_code_from_err maps an mhs_err to the status code a caller sees. */
int mhs_code_from_err(int err);

#endif /* MHS_STATUS_H */
