/*
 * Design notes: project error numbers. Every function that can fail returns
 * 0 or one of these (negative); mhs_strerror() names them. errno and nng
 * errors are translated here and nowhere else, so callers never compare
 * against errno values or nng numbers directly.
 */
#ifndef MHS_ERROR_H
#define MHS_ERROR_H

enum mhs_err {
	MHS_OK = 0,
	MHS_ENOMEM = -1,    /* out of memory */
	MHS_EINVAL = -2,    /* bad argument or malformed input */
	MHS_EIO = -3,       /* I/O error */
	MHS_ENOSPC = -4,    /* no space left on device */
	MHS_ETIMEDOUT = -5, /* deadline passed */
	MHS_ENOTFOUND = -6, /* no such item */
	MHS_EEXIST = -7,    /* already exists with other content */
	MHS_EUNAVAIL = -8,  /* dependency unreachable */
	MHS_ECORRUPT = -9,  /* stored data failed its check */
	MHS_ECLOSED = -10,  /* object closed or failed earlier */
	MHS_ETOOBIG = -11,  /* input larger than its limit */
	MHS_EPERM = -12,    /* not permitted */
	MHS_EPROTO = -13,   /* peer broke the protocol */
	MHS_ESTATE = -14,   /* wrong state for this operation */
};

/* mhs_strerror names an mhs_err; unknown values give "unknown error". */
const char *mhs_strerror(int err);

/* mhs_err_errno translates an errno value into an mhs_err. */
int mhs_err_errno(int errnum);

/* mhs_err_nng translates an nng error number into an mhs_err. */
int mhs_err_nng(int nngerr);

#endif /* MHS_ERROR_H */
