/*
 * The small pieces of libmhs_common: the growable buffer, JSON escaping
 * and log lines, error and status names, identifiers and hashing, and
 * the route table.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "error.h"
#include "log.h"
#include "routes.h"
#include "status.h"
#include "util.h"
#include "validate.h"

/* ---- capturing stderr into a file ----------------------------------- */

struct capture {
	int fd, saved;
	char path[64];
};

static void
capture_begin(struct capture *c)
{
	snprintf(c->path, sizeof(c->path), "/tmp/mhs-test-cap-XXXXXX");
	c->fd = mkstemp(c->path);
	cr_assert_geq(c->fd, 0);
	unlink(c->path); /* gone even if an assertion fails */
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	cr_assert_geq(c->saved, 0);
	cr_assert_geq(dup2(c->fd, STDERR_FILENO), 0);
}

/* capture_take returns what was written since the last take (free it);
 * the length (NULs included) in *lenp. */
static char *
capture_take(struct capture *c, size_t *lenp)
{
	off_t n;
	char *text;

	fflush(stderr);
	n = lseek(c->fd, 0, SEEK_END);
	cr_assert_geq(n, 0);
	text = calloc(1, (size_t) n + 1);
	cr_assert_not_null(text);
	cr_assert_eq(pread(c->fd, text, (size_t) n, 0), n);
	cr_assert_eq(ftruncate(c->fd, 0), 0);
	lseek(c->fd, 0, SEEK_SET);
	if (lenp != NULL)
		*lenp = (size_t) n;
	return text;
}

static void
capture_end(struct capture *c)
{
	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	close(c->fd);
}

/* ---- mhs_buf -------------------------------------------------------- */

Test(buf, grows_past_a_megabyte)
{
	struct mhs_buf b = MHS_BUF_INIT;
	char chunk[1000];
	size_t want = 0;

	for (int i = 0; i < 1500; i++) {
		memset(chunk, 'a' + i % 26, sizeof(chunk));
		mhs_buf_append(&b, chunk, sizeof(chunk));
		want += sizeof(chunk);
	}
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.len, want);
	cr_assert_gt(b.len, 1u << 20);
	cr_assert_geq(b.cap, b.len + 1);
	cr_assert_eq(b.data[b.len], '\0');
	for (size_t i = 0; i < b.len; i += 997)
		cr_assert_eq(
		    b.data[i], 'a' + (int) (i / 1000) % 26, "at %zu", i);
	cr_assert_eq(strlen(b.data), b.len);
	mhs_buf_fini(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.cap, 0);
}

Test(buf, one_append_larger_than_doubling)
{
	struct mhs_buf b = MHS_BUF_INIT;
	size_t n = (3u << 20) + 7;
	char *big = malloc(n);

	memset(big, 'z', n);
	mhs_buf_puts(&b, "head:");
	mhs_buf_append(&b, big, n);
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.len, n + 5);
	cr_assert_eq(memcmp(b.data, "head:zzz", 8), 0);
	cr_assert_eq(b.data[b.len - 1], 'z');
	cr_assert_eq(b.data[b.len], '\0');
	free(big);
	mhs_buf_fini(&b);
}

Test(buf, printf_appends_formatted)
{
	struct mhs_buf b = MHS_BUF_INIT;
	char big[5000];

	mhs_buf_printf(&b, "%s=%d;", "retries", 3);
	mhs_buf_printf(&b, "%lld %s", -9000000000LL, "");
	cr_assert_str_eq(b.data, "retries=3;-9000000000 ");
	cr_assert_eq(b.len, strlen("retries=3;-9000000000 "));

	/* Past the first capacity and across a doubling in one call. */
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	mhs_buf_printf(&b, "[%s]", big);
	cr_assert_eq(b.len, 22 + 4999 + 2);
	cr_assert_eq(b.data[22], '[');
	cr_assert_eq(b.data[b.len - 1], ']');
	cr_assert_eq(strlen(b.data), b.len);

	/* Many small printfs keep the content exact. */
	mhs_buf_reset(&b);
	for (int i = 0; i < 200000; i++)
		mhs_buf_printf(&b, "%06d\n", i);
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.len, 200000u * 7);
	cr_assert_eq(memcmp(b.data + 7 * 123456, "123456\n", 7), 0);
	mhs_buf_fini(&b);
}

Test(buf, reset_keeps_capacity)
{
	struct mhs_buf b = MHS_BUF_INIT;
	size_t cap;

	mhs_buf_puts(&b, "hello");
	cap = b.cap;
	mhs_buf_reset(&b);
	cr_assert_eq(b.len, 0);
	cr_assert_str_eq(b.data, "");
	cr_assert_eq(b.cap, cap);
	mhs_buf_puts(&b, "x");
	cr_assert_str_eq(b.data, "x");
	mhs_buf_fini(&b);

	/* Reset and fini of a never-used buffer are harmless. */
	mhs_buf_reset(&b);
	mhs_buf_fini(&b);
	mhs_buf_fini(NULL);
}

Test(buf, latched_error_ignores_appends)
{
	struct mhs_buf b = MHS_BUF_INIT;

	mhs_buf_puts(&b, "ok");
	b.err = MHS_ENOMEM;
	mhs_buf_puts(&b, "more");
	mhs_buf_printf(&b, "%d", 42);
	mhs_buf_json_str(&b, "x");
	cr_assert_eq(b.len, 2);
	cr_assert_str_eq(b.data, "ok");
	mhs_buf_fini(&b);
	cr_assert_eq(b.err, 0);
}

Test(buf, json_str_escapes)
{
	struct mhs_buf b = MHS_BUF_INIT;

	mhs_buf_json_str(&b, "a\"b\\c\nd\te\x01\x1f/\x7f\xc3\xa9");
	cr_assert_str_eq(b.data,
	    "\"a\\\"b\\\\c\\u000ad\\u0009e\\u0001\\u001f/"
	    "\x7f\xc3\xa9\"");
	mhs_buf_reset(&b);
	mhs_buf_json_str(&b, "");
	cr_assert_str_eq(b.data, "\"\"");
	mhs_buf_reset(&b);
	mhs_buf_json_str(&b, NULL);
	cr_assert_str_eq(b.data, "\"\"");
	mhs_buf_fini(&b);
}

/* ---- JSON escaping and log lines ------------------------------------ */

Test(json_escape, quotes_backslash_control_chars)
{
	char buf[128];
	size_t n;

	n = mhs_json_escape(buf, 0, sizeof(buf), "say \"hi\" \\ now");
	cr_assert_str_eq(buf, "say \\\"hi\\\" \\\\ now");
	cr_assert_eq(n, strlen(buf));

	n = mhs_json_escape(buf, 0, sizeof(buf), "a\nb\rc\td\x01\x1f\x7f");
	cr_assert_str_eq(buf, "a\\nb\\u000dc\\u0009d\\u0001\\u001f\x7f");
	cr_assert_eq(n, strlen(buf));

	/* Non-ASCII bytes (UTF-8) pass through unchanged. */
	n = mhs_json_escape(buf, 0, sizeof(buf), "caf\xc3\xa9");
	cr_assert_str_eq(buf, "caf\xc3\xa9");

	/* Appends at len; NULL appends nothing. */
	memcpy(buf, "pre:", 5);
	n = mhs_json_escape(buf, 4, sizeof(buf), "\"x\"");
	cr_assert_str_eq(buf, "pre:\\\"x\\\"");
	cr_assert_eq(n, 9);
	n = mhs_json_escape(buf, n, sizeof(buf), NULL);
	cr_assert_eq(n, 9);
	cr_assert_str_eq(buf, "pre:\\\"x\\\"");
}

/*
 * For every capacity: the output stays inside it (canary after it), is
 * NUL-terminated, and is a prefix of the full escaping that ends on a
 * whole escape, never half of one.
 */
Test(json_escape, truncation_never_overflows)
{
	const char *in = "q\"b\\n\nc\x01\x02z\"\"\\\\end";
	char full[256], buf[256 + 16];
	size_t full_len, bounds[64], nb = 0;

	/* Where each input character's escape ends in the full output. */
	bounds[nb++] = 0;
	for (size_t i = 0; in[i] != '\0'; i++) {
		char one[2] = {in[i], '\0'}, tmp[16];

		bounds[nb] = bounds[nb - 1] + mhs_json_escape(tmp, 0, 16, one);
		nb++;
	}
	full_len = mhs_json_escape(full, 0, sizeof(full), in);
	cr_assert_eq(full_len, bounds[nb - 1]);

	for (size_t cap = 1; cap <= full_len + 2; cap++) {
		size_t n;
		bool on_bound = false;

		memset(buf, 0xa5, sizeof(buf));
		n = mhs_json_escape(buf, 0, cap, in);
		for (size_t i = cap; i < sizeof(buf); i++)
			cr_assert_eq((unsigned char) buf[i], 0xa5,
			    "cap %zu: canary at %zu", cap, i);
		cr_assert_lt(n, cap, "cap %zu", cap);
		cr_assert_eq(buf[n], '\0');
		cr_assert_eq(strlen(buf), n);
		cr_assert_eq(memcmp(buf, full, n), 0);
		for (size_t b = 0; b < nb; b++)
			on_bound |= bounds[b] == n;
		cr_assert(
		    on_bound, "cap %zu: cut inside an escape at %zu", cap, n);
		/* The longest whole-escape prefix that fits was taken. */
		for (size_t b = 0; b < nb; b++)
			if (bounds[b] < cap)
				cr_assert_geq(n, bounds[b], "cap %zu", cap);
	}

	/* Capacity 0: nothing written at all. */
	memset(buf, 0xa5, sizeof(buf));
	cr_assert_eq(mhs_json_escape(buf, 0, 0, in), 0);
	cr_assert_eq((unsigned char) buf[0], 0xa5);
}

Test(json_escape, truncation_when_appending)
{
	char buf[32];

	memset(buf, 0xa5, sizeof(buf));
	memcpy(buf, "0123456789", 11);
	/* cap 16: 10 used, room for 5 more and the NUL; \u0001 is 6. */
	cr_assert_eq(mhs_json_escape(buf, 10, 16, "ab\x01"), 12);
	cr_assert_str_eq(buf, "0123456789ab");
	for (size_t i = 16; i < sizeof(buf); i++)
		cr_assert_eq((unsigned char) buf[i], 0xa5);
}

/*
 * json_line_ok checks one log line: a single JSON object on one line, no
 * NUL bytes, strings closed, ending "}\n".
 */
static bool
json_line_ok(const char *s, size_t len)
{
	bool in_str = false;

	if (len < 3 || s[0] != '{' || s[len - 2] != '}' || s[len - 1] != '\n')
		return false;
	for (size_t i = 0; i < len - 1; i++) {
		unsigned char c = (unsigned char) s[i];

		if (c == '\0' || c == '\n')
			return false;
		if (in_str && c == '\\') {
			i++;
			continue;
		}
		if (in_str && c < 0x20)
			return false;
		if (c == '"')
			in_str = !in_str;
	}
	return !in_str;
}

Test(log_line, one_escaped_json_object_per_line)
{
	struct capture c;
	size_t len;
	char *out;

	mhs_log_init("gateway", MHS_LOG_INFO);
	capture_begin(&c);
	mhs_log(MHS_LOG_WARN, "req-\"7\"", "submit_rejected",
	    "field %s: \"%s\"\nnext", "nhs_number", "a\\b");
	out = capture_take(&c, &len);
	capture_end(&c);
	cr_assert(json_line_ok(out, len), "%s", out);
	cr_assert_not_null(strstr(out, "\"level\":\"warn\""), "%s", out);
	cr_assert_not_null(
	    strstr(out, "\"component\":\"gateway\""), "%s", out);
	cr_assert_not_null(
	    strstr(out, "\"request_id\":\"req-\\\"7\\\"\""), "%s", out);
	cr_assert_not_null(
	    strstr(out, "\"event\":\"submit_rejected\""), "%s", out);
	cr_assert_not_null(
	    strstr(out, "\"msg\":\"field nhs_number: \\\"a\\\\b\\\"\\nnext\""),
	    "%s", out);
	free(out);
}

Test(log_line, below_level_not_written)
{
	struct capture c;
	size_t len;
	char *out;

	mhs_log_init("router", MHS_LOG_WARN);
	capture_begin(&c);
	mhs_info("quiet", "%s", "not written");
	mhs_debug("quiet", "%s", "not written");
	mhs_error("loud", "%s", "written");
	out = capture_take(&c, &len);
	capture_end(&c);
	cr_assert(json_line_ok(out, len), "%s", out);
	cr_assert_null(strstr(out, "quiet"), "%s", out);
	cr_assert_not_null(strstr(out, "\"event\":\"loud\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"level\":\"error\""), "%s", out);
	cr_assert_null(strstr(out, "request_id"), "%s", out);
	free(out);
}

/*
 * Regression: when a long request_id (a client sends it) left the line
 * buffer just short of room for the next field, the escaper was called
 * with len >= cap, wrote a NUL inside the line and the line went out
 * with a NUL byte and an unclosed string.
 */
Test(log_line, long_request_id_never_breaks_the_line)
{
	static char rid[2300], msg[1100];
	struct capture c;

	memset(msg, '"', sizeof(msg) - 1);
	mhs_log_init("gateway", MHS_LOG_DEBUG);
	capture_begin(&c);
	for (size_t n = 1800; n < sizeof(rid); n++) {
		size_t len;
		char *out;

		memset(rid, 'r', n);
		rid[n] = '\0';
		mhs_log(MHS_LOG_INFO, rid, "submit_accepted", "%s", "m");
		mhs_log(MHS_LOG_INFO, rid, "e", "%s", msg);
		out = capture_take(&c, &len);
		cr_assert_gt(len, 0);
		for (char *line = out, *end; line < out + len; line = end) {
			end = memchr(line, '\n', (size_t) (out + len - line));
			cr_assert_not_null(end, "request_id length %zu", n);
			end++;
			cr_assert(json_line_ok(line, (size_t) (end - line)),
			    "request_id length %zu: %.*s", n,
			    (int) (end - line), line);
			cr_assert_leq(end - line, 2048);
		}
		free(out);
	}
	capture_end(&c);
}

Test(log_line, level_names_parse)
{
	cr_assert_eq(mhs_log_level_parse("debug"), MHS_LOG_DEBUG);
	cr_assert_eq(mhs_log_level_parse("info"), MHS_LOG_INFO);
	cr_assert_eq(mhs_log_level_parse("warn"), MHS_LOG_WARN);
	cr_assert_eq(mhs_log_level_parse("error"), MHS_LOG_ERROR);
	cr_assert_eq(mhs_log_level_parse("INFO"), -1);
	cr_assert_eq(mhs_log_level_parse("warning"), -1);
	cr_assert_eq(mhs_log_level_parse(""), -1);
}

/* ---- error and status names ----------------------------------------- */

Test(error_names, every_error_named)
{
	static const struct {
		int err;
		const char *name;
	} want[] = {
	    {MHS_OK, "success"},
	    {MHS_ENOMEM, "out of memory"},
	    {MHS_EINVAL, "invalid argument"},
	    {MHS_EIO, "I/O error"},
	    {MHS_ENOSPC, "no space left on device"},
	    {MHS_ETIMEDOUT, "deadline exceeded"},
	    {MHS_ENOTFOUND, "not found"},
	    {MHS_EEXIST, "already exists"},
	    {MHS_EUNAVAIL, "unavailable"},
	    {MHS_ECORRUPT, "data corrupt"},
	    {MHS_ECLOSED, "closed"},
	    {MHS_ETOOBIG, "too big"},
	    {MHS_EPERM, "permission denied"},
	    {MHS_EPROTO, "protocol error"},
	    {MHS_ESTATE, "wrong state"},
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		cr_assert_str_eq(mhs_strerror(want[i].err), want[i].name,
		    "err %d", want[i].err);
		/* Distinct names. */
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(mhs_strerror(want[i].err),
			    mhs_strerror(want[j].err));
	}
	/* The table covers the enum: the next value is unknown. */
	cr_assert_str_eq(mhs_strerror(MHS_ESTATE - 1), "unknown error");
}

Test(error_names, unknown_values)
{
	const int bad[] = {
	    1, 2, 14, -15, -100, -1000000, INT_MAX, INT_MIN + 1};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_str_eq(
		    mhs_strerror(bad[i]), "unknown error", "%d", bad[i]);
}

Test(error_names, errno_and_nng_translated)
{
	cr_assert_eq(mhs_err_errno(0), MHS_OK);
	cr_assert_eq(mhs_err_errno(ENOSPC), MHS_ENOSPC);
	cr_assert_eq(mhs_err_errno(ENOENT), MHS_ENOTFOUND);
	cr_assert_eq(mhs_err_errno(EACCES), MHS_EPERM);
	cr_assert_eq(mhs_err_errno(EBADF), MHS_EIO);
	cr_assert_eq(mhs_err_nng(0), MHS_OK);
	cr_assert_eq(mhs_err_nng(NNG_ETIMEDOUT), MHS_ETIMEDOUT);
	cr_assert_eq(mhs_err_nng(NNG_ECONNREFUSED), MHS_EUNAVAIL);
	cr_assert_eq(mhs_err_nng(NNG_EMSGSIZE), MHS_ETOOBIG);
	cr_assert_eq(mhs_err_nng(NNG_ECLOSED), MHS_ECLOSED);
}

Test(status_names, every_code_named)
{
	static const char *const want[] = {"OK", "CANCELLED", "UNKNOWN",
	    "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

	for (int i = 0; i < 17; i++)
		cr_assert_str_eq(mhs_code_name(i), want[i], "code %d", i);
	/* The DESIGN §3 numbers. */
	cr_assert_str_eq(mhs_code_name(3), "INVALID_ARGUMENT");
	cr_assert_str_eq(mhs_code_name(12), "UNIMPLEMENTED");
	cr_assert_str_eq(mhs_code_name(16), "UNAUTHENTICATED");
	cr_assert_str_eq(mhs_code_name(-1), "UNKNOWN");
	cr_assert_str_eq(mhs_code_name(17), "UNKNOWN");
	cr_assert_str_eq(mhs_code_name(INT_MAX), "UNKNOWN");
	cr_assert_str_eq(mhs_code_name(INT_MIN), "UNKNOWN");
}

Test(status_names, errors_map_to_codes)
{
	cr_assert_eq(mhs_code_from_err(MHS_OK), 0);
	cr_assert_eq(mhs_code_from_err(MHS_EINVAL), 3);
	cr_assert_eq(mhs_code_from_err(MHS_ETOOBIG), 3);
	cr_assert_eq(mhs_code_from_err(MHS_ETIMEDOUT), 4);
	cr_assert_eq(mhs_code_from_err(MHS_ENOTFOUND), 5);
	cr_assert_eq(mhs_code_from_err(MHS_EEXIST), 6);
	cr_assert_eq(mhs_code_from_err(MHS_EPERM), 7);
	cr_assert_eq(mhs_code_from_err(MHS_ENOMEM), 8);
	cr_assert_eq(mhs_code_from_err(MHS_EUNAVAIL), 14);
	cr_assert_eq(mhs_code_from_err(MHS_ECORRUPT), 13);
	cr_assert_eq(mhs_code_from_err(-12345), 13);
}

/* ---- util ------------------------------------------------------------ */

Test(util, uuid_upper_is_a_message_id)
{
	char a[37], b[37];

	cr_assert_eq(mhs_uuid_upper(a), 0);
	cr_assert_eq(mhs_uuid_upper(b), 0);
	cr_assert(mhs_message_id_check(a), "%s", a);
	cr_assert(mhs_message_id_check(b), "%s", b);
	cr_assert_str_neq(a, b);
	/* Version 4, RFC 4122 variant. */
	cr_assert_eq(a[14], '4', "%s", a);
	cr_assert_neq(strchr("89AB", a[19]), NULL, "%s", a);
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(mhs_uuid_upper(b), 0);
		cr_assert(mhs_message_id_check(b), "%s", b);
		cr_assert_eq(b[14], '4');
		cr_assert_neq(strchr("89AB", b[19]), NULL, "%s", b);
	}
}

/* Ids from the per-thread pool: distinct across many refills, and a
 * child of fork does not repeat the ids its parent takes next. The fork
 * must come with ids left in the pool (32 per fill): 2000 ids leave 16. */
Test(util, uuid_pool_never_repeats_even_across_fork)
{
	enum { N = 2000 };
	static char ids[N][37];
	char parent[37], child[37];
	int fds[2], status;
	pid_t pid;

	for (int i = 0; i < N; i++)
		cr_assert_eq(mhs_uuid_upper(ids[i]), 0);
	qsort(ids, N, sizeof(ids[0]),
	    (int (*)(const void *, const void *)) strcmp);
	for (int i = 1; i < N; i++)
		cr_assert_str_neq(ids[i - 1], ids[i], "repeated id");
	cr_assert_eq(pipe(fds), 0);
	if ((pid = fork()) == 0) {
		if (mhs_uuid_upper(child) != 0 ||
		    write(fds[1], child, sizeof(child)) != sizeof(child))
			_exit(1);
		_exit(0);
	}
	cr_assert(pid > 0);
	cr_assert_eq(mhs_uuid_upper(parent), 0);
	cr_assert_eq(read(fds[0], child, sizeof(child)), sizeof(child));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_str_neq(parent, child, "the child repeated its parent's id");
	close(fds[0]);
	close(fds[1]);
}

/* The prepared key gives what the one-shot HMAC gives (RFC 4231 test
 * case 2), on every reuse, and for empty and long keys too. */
Test(util, hmac_prepared_key_matches_one_shot)
{
	static const char *keys[] = {"Jefe", "",
	    "a key longer than the sixty-four byte block of SHA-256, so that "
	    "HMAC hashes it first"};
	struct mhs_hmac *h;
	uint8_t a[32], b[32];
	char hex[65], msg[40];

	cr_assert_eq(mhs_hmac_open(&h, "Jefe", 4), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(
		    mhs_hmac_digest(h, "what do ya want for nothing?", 28, a),
		    0);
		mhs_hex(a, 32, hex);
		cr_assert_str_eq(hex,
		    "5bdcc146bf60754e6a042426089575c7"
		    "5a003f089d2739839dec58b964ec3843");
	}
	mhs_hmac_close(h);
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		cr_assert_eq(mhs_hmac_open(&h, keys[k], strlen(keys[k])), 0);
		for (int i = 0; i < 50; i++) {
			int n = snprintf(msg, sizeof(msg), "943 476 %04d", i);
			cr_assert_eq(
			    mhs_hmac_digest(h, msg, (size_t) n, a), 0);
			mhs_hmac_sha256(
			    keys[k], strlen(keys[k]), msg, (size_t) n, b);
			cr_assert_eq(
			    memcmp(a, b, 32), 0, "key %zu, %s", k, msg);
		}
		mhs_hmac_close(h);
	}
	mhs_hmac_close(NULL);
}

Test(util, fmt_ll_matches_printf)
{
	static const long long v[] = {0, 7, -7, 10, 1795589162304LL,
	    -1795589162304LL, 9223372036854775807LL,
	    -9223372036854775807LL - 1};
	char a[24], b[24];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = mhs_fmt_ll(v[i], a);
		snprintf(b, sizeof(b), "%lld", v[i]);
		cr_assert_str_eq(a, b);
		cr_assert_eq(n, strlen(b));
	}
}

Test(util, sha256_and_hex_known_vectors)
{
	uint8_t d[32];
	char hex[65];
	const uint8_t bytes[] = {0x00, 0xff, 0x10, 0xa5};

	mhs_sha256("abc", 3, d);
	mhs_hex(d, sizeof(d), hex);
	cr_assert_str_eq(hex,
	    "ba7816bf8f01cfea414140de5dae2223"
	    "b00361a396177a9cb410ff61f20015ad");
	mhs_sha256("", 0, d);
	mhs_hex(d, sizeof(d), hex);
	cr_assert_str_eq(hex,
	    "e3b0c44298fc1c149afbf4c8996fb924"
	    "27ae41e4649b934ca495991b7852b855");
	mhs_hex(bytes, sizeof(bytes), hex);
	cr_assert_str_eq(hex, "00ff10a5");
	hex[0] = 'x';
	mhs_hex(bytes, 0, hex);
	cr_assert_str_eq(hex, "");
}

Test(util, time_iso)
{
	char out[21];

	mhs_time_iso(0, out);
	cr_assert_str_eq(out, "1970-01-01T00:00:00Z");
	mhs_time_iso(1700000000999, out);
	cr_assert_str_eq(out, "2023-11-14T22:13:20Z");
}

Test(util, clocks)
{
	int64_t a = mhs_mono_ms(), b = mhs_mono_ms();

	cr_assert_geq(b, a);
	/* After 2020-01-01 and before 2100. */
	cr_assert_gt(mhs_now_ms(), 1577836800000LL);
	cr_assert_lt(mhs_now_ms(), 4102444800000LL);
}

/* ---- routes ---------------------------------------------------------- */

static const char *const eps[] = {"PORX_IN020101SM31", "PORX_IN030101SM32",
    "PORX_IN060102SM30", "PORX_IN132004SM30", "PORX_IN080101SM31",
    "PORX_IN090101SM31", "PORX_IN100101SM31", "PORX_IN510101SM31"};

static char route_path[64];

static const char *
write_routes(const char *text)
{
	int fd;

	if (route_path[0] != '\0')
		unlink(route_path);
	snprintf(
	    route_path, sizeof(route_path), "/tmp/mhs-test-routes-XXXXXX");
	fd = mkstemp(route_path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
	close(fd);
	return route_path;
}

static void
routes_suite_fini(void)
{
	if (route_path[0] != '\0')
		unlink(route_path);
	route_path[0] = '\0';
}

TestSuite(routes, .fini = routes_suite_fini);

/* routes_load_err loads file with stderr captured; returns the text. */
static char *
routes_load_err(struct mhs_routes *t, const char *file, int *rv)
{
	struct capture c;
	char *err;

	capture_begin(&c);
	*rv = mhs_routes_load(t, file);
	err = capture_take(&c, NULL);
	capture_end(&c);
	return err;
}

Test(routes, defaults_cover_every_eps_interaction)
{
	struct mhs_routes t;
	const struct mhs_route *r;

	cr_assert_eq(mhs_routes_load(&t, NULL), 0);
	cr_assert_eq(t.n, 8);
	for (size_t i = 0; i < 8; i++) {
		r = mhs_route_find(&t, eps[i]);
		cr_assert_not_null(r, "%s", eps[i]);
		cr_assert_str_eq(r->interaction, eps[i]);
		cr_assert(mhs_interaction_shape_check(r->interaction));
	}
	r = mhs_route_find(&t, "PORX_IN020101SM31");
	cr_assert_str_eq(r->endpoint, "/reliablemessaging/reliablerequest");
	cr_assert_str_eq(r->pattern, "async-reliable");
	cr_assert_eq(r->retries, 3);
	cr_assert_eq(r->retry_interval_ms, 30000);
	/* Minutes, not seconds (DESIGN §5). */
	cr_assert_geq(r->persist_duration_ms, 60000);
	cr_assert(r->duplicate_elimination);
	cr_assert(r->ack_requested);
	cr_assert_null(mhs_route_find(&t, "PORX_IN999999SM99"));
	cr_assert_null(mhs_route_find(&t, "porx_in020101sm31"));
	cr_assert_null(mhs_route_find(&t, ""));
	mhs_routes_fini(&t);
	cr_assert_eq(t.n, 0);
	cr_assert_null(t.routes);

	cr_assert_eq(mhs_routes_load(&t, ""), 0);
	cr_assert_eq(t.n, 8);
	mhs_routes_fini(&t);
}

Test(routes, ini_overrides_a_field)
{
	struct mhs_routes t;
	const struct mhs_route *r;
	const char *f = write_routes(
	    "[gateway]\n"
	    "listen = tcp://0.0.0.0:1\n"
	    "[route PORX_IN020101SM31]\n"
	    "endpoint = https://spine.example/reliablemessaging/x\n"
	    "retries = 5\n"
	    "retry_interval_ms = 1000\n"
	    "persist_duration_ms = 900000\n"
	    "sync_reply = false\n"
	    "to_party = YES-0000999\n");

	cr_assert_eq(mhs_routes_load(&t, f), 0);
	cr_assert_eq(t.n, 8);
	r = mhs_route_find(&t, "PORX_IN020101SM31");
	cr_assert_not_null(r);
	cr_assert_str_eq(
	    r->endpoint, "https://spine.example/reliablemessaging/x");
	cr_assert_eq(r->retries, 5);
	cr_assert_eq(r->retry_interval_ms, 1000);
	cr_assert_eq(r->persist_duration_ms, 900000);
	cr_assert_not(r->sync_reply);
	cr_assert_str_eq(r->to_party, "YES-0000999");
	/* Fields not named keep their defaults... */
	cr_assert_str_eq(r->pattern, "async-reliable");
	cr_assert(r->ack_requested);
	/* ...and so do other routes. */
	r = mhs_route_find(&t, "PORX_IN030101SM32");
	cr_assert_eq(r->retries, 3);
	cr_assert_str_eq(r->endpoint, "/reliablemessaging/reliablerequest");
	mhs_routes_fini(&t);
}

Test(routes, ini_adds_an_interaction)
{
	struct mhs_routes t;
	const struct mhs_route *r;
	const char *f = write_routes("[route QUPC_IN160101UK05]\n"
	                             "pattern = sync\n"
	                             "endpoint = /sync-service\n");

	cr_assert_eq(mhs_routes_load(&t, f), 0);
	cr_assert_eq(t.n, 9);
	r = mhs_route_find(&t, "QUPC_IN160101UK05");
	cr_assert_not_null(r);
	cr_assert_str_eq(r->pattern, "sync");
	cr_assert_str_eq(r->endpoint, "/sync-service");
	cr_assert_eq(r->retries, 3);
	for (size_t i = 0; i < 8; i++)
		cr_assert_not_null(mhs_route_find(&t, eps[i]), "%s", eps[i]);
	mhs_routes_fini(&t);
}

Test(routes, unknown_key_is_error)
{
	struct mhs_routes t;
	int rv;
	char *err = routes_load_err(
	    &t, write_routes("[route PORX_IN020101SM31]\nretires = 5\n"), &rv);

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "retires"), "%s", err);
	cr_assert_null(t.routes);
	cr_assert_eq(t.n, 0);
	free(err);
}

/*
 * Regression: an error was forgotten when the file went on to add a new
 * route, and the load then blamed a "syntax error" instead.
 */
Test(routes, first_error_reported_when_later_sections_are_good)
{
	struct mhs_routes t;
	int rv;
	char *err = routes_load_err(&t,
	    write_routes("[route PORX_IN020101SM31]\n"
	                 "retires = 5\n"
	                 "[route QUPC_IN160101UK05]\n"
	                 "pattern = sync\n"),
	    &rv);

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "retires"), "%s", err);
	cr_assert_null(strstr(err, "syntax error"), "%s", err);
	free(err);
}

/*
 * Regression: numbers were read with atoi, so "30s" became 30 and "many"
 * became 0 retries without a word.
 */
Test(routes, non_numeric_number_is_error)
{
	const char *bad[] = {"retries = many\n", "retry_interval_ms = 30s\n",
	    "persist_duration_ms = \n", "retries = -1\n",
	    "retries = 99999999999\n"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mhs_routes t;
		char text[128], *err;
		int rv;

		snprintf(text, sizeof(text), "[route PORX_IN020101SM31]\n%s",
		    bad[i]);
		err = routes_load_err(&t, write_routes(text), &rv);
		cr_assert_eq(rv, MHS_EINVAL, "%s", bad[i]);
		free(err);
	}
}

/*
 * Regression: booleans other than true/yes/1 read as false, so "on"
 * (which every program's config accepts) turned a setting off and a typo
 * went unnoticed.
 */
Test(routes, bool_forms_match_config)
{
	const char *yes[] = {"true", "1", "yes", "on"};
	const char *no[] = {"false", "0", "no", "off"};

	for (size_t i = 0; i < 4; i++) {
		struct mhs_routes t;
		char text[128];

		snprintf(text, sizeof(text),
		    "[route PORX_IN020101SM31]\nack_requested = %s\n"
		    "duplicate_elimination = %s\n",
		    yes[i], no[i]);
		cr_assert_eq(mhs_routes_load(&t, write_routes(text)), 0);
		cr_assert(t.routes[0].ack_requested, "%s", yes[i]);
		cr_assert_not(t.routes[0].duplicate_elimination, "%s", no[i]);
		mhs_routes_fini(&t);
	}
	{
		struct mhs_routes t;
		int rv;
		char *err = routes_load_err(&t,
		    write_routes("[route PORX_IN020101SM31]\n"
		                 "sync_reply = ture\n"),
		    &rv);

		cr_assert_eq(rv, MHS_EINVAL);
		cr_assert_not_null(strstr(err, "sync_reply"), "%s", err);
		free(err);
	}
}

Test(routes, overlong_interaction_is_error)
{
	struct mhs_routes t;
	int rv;
	char *err = routes_load_err(&t,
	    write_routes("[route PORX_IN020101SM31_AND_MUCH_TOO_LONG_X]\n"
	                 "retries = 1\n"),
	    &rv);

	cr_assert_eq(rv, MHS_EINVAL);
	free(err);
}

Test(routes, missing_file_is_error)
{
	struct mhs_routes t;
	int rv;
	char *err = routes_load_err(&t, "/nonexistent/routes.ini", &rv);

	cr_assert_eq(rv, MHS_EIO);
	cr_assert_not_null(strstr(err, "/nonexistent/routes.ini"), "%s", err);
	cr_assert_null(t.routes);
	free(err);
}
