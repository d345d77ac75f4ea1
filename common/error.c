/*
 * Design notes: the one place errno and nng error numbers become project
 * errors. Keep the table in enum order.
 */
#include <errno.h>
#include <nng/nng.h>

#include "error.h"

static const char *const mhs_err_names[] = {
    [0] = "success",
    [1] = "out of memory",
    [2] = "invalid argument",
    [3] = "I/O error",
    [4] = "no space left on device",
    [5] = "deadline exceeded",
    [6] = "not found",
    [7] = "already exists",
    [8] = "unavailable",
    [9] = "data corrupt",
    [10] = "closed",
    [11] = "too big",
    [12] = "permission denied",
    [13] = "protocol error",
    [14] = "wrong state",
};

const char *
mhs_strerror(int err)
{
	unsigned idx = 0u - (unsigned) err;

	if (err > 0 || idx >= sizeof(mhs_err_names) / sizeof(mhs_err_names[0]))
		return "unknown error";
	return mhs_err_names[idx];
}

int
mhs_err_errno(int errnum)
{
	switch (errnum) {
	case 0:
		return MHS_OK;
	case ENOMEM:
		return MHS_ENOMEM;
	case EINVAL:
		return MHS_EINVAL;
	case ENOSPC:
	case EDQUOT:
		return MHS_ENOSPC;
	case ETIMEDOUT:
		return MHS_ETIMEDOUT;
	case ENOENT:
		return MHS_ENOTFOUND;
	case EEXIST:
		return MHS_EEXIST;
	case EACCES:
	case EPERM:
		return MHS_EPERM;
	case EFBIG:
		return MHS_ETOOBIG;
	default:
		return MHS_EIO;
	}
}

int
mhs_err_nng(int nngerr)
{
	switch (nngerr) {
	case 0:
		return MHS_OK;
	case NNG_ENOMEM:
		return MHS_ENOMEM;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
		return MHS_EINVAL;
	case NNG_ETIMEDOUT:
		return MHS_ETIMEDOUT;
	case NNG_ECLOSED:
	case NNG_ECANCELED:
		return MHS_ECLOSED;
	case NNG_ECONNREFUSED:
	case NNG_ECONNRESET:
	case NNG_ECONNSHUT:
	case NNG_EUNREACHABLE:
		return MHS_EUNAVAIL;
	case NNG_EMSGSIZE:
		return MHS_ETOOBIG;
	case NNG_EPERM:
	case NNG_EPEERAUTH:
		return MHS_EPERM;
	case NNG_EPROTO:
		return MHS_EPROTO;
	case NNG_ENOENT:
		return MHS_ENOTFOUND;
	case NNG_EADDRINUSE:
		return MHS_EEXIST;
	default:
		return MHS_EIO;
	}
}
