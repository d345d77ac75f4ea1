/*
 * Design notes: the operator's paths of the README, as a person runs them:
 * mhsctl with the stack's environment (. stack.env) submits a
 * prescription, sees it delivered, finds it by prescription ID, checks
 * health, and exports the month of the journal; plus its exit codes for
 * bad usage and an unreachable gateway. Runs the real mhsctl binary
 * against the real stack.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "stack.h"

static struct stack stk;
static char env_path[400];

static void
setup(void)
{
	cr_assert(stack_start(&stk, 1), "the stack did not start");
	snprintf(env_path, sizeof(env_path), "%s/stack.env", stk.dir);
}

static void
teardown(void)
{
	if (stk.pid > 0 && stack_stop(&stk) && stack_sanitizer_clean(&stk))
		stack_cleanup(&stk);
}

/* mhsctl runs "mhsctl ARGS" in a shell that sourced stack.env, as the
 * README says; returns the exit status and the output in out. */
static int
mhsctl(struct mhs_buf *out, const char *fmt, ...)
{
	char args[1024], cmd[2048], line[512];
	va_list ap;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), ". '%s' && '%s' %s 2>&1", env_path,
	    MHSCTL_BIN, args);
	mhs_buf_reset(out);
	cr_assert_not_null(p = popen(cmd, "r"));
	while (fgets(line, sizeof(line), p) != NULL)
		mhs_buf_puts(out, line);
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(mhsctl, readme_paths, .init = setup, .fini = teardown, .timeout = 240)
{
	struct mhs_buf out = MHS_BUF_INIT;
	char id[37] = "", rx[21], nhs[11], payload[300], month[8];
	time_t now = time(NULL);
	struct tm tm;
	bool delivered = false;

	test_rx_id(4242, rx);
	test_nhs_number(4242, nhs);
	snprintf(payload, sizeof(payload), "%s/rx.xml", stk.dir);
	{
		FILE *f = fopen(payload, "w");
		cr_assert_not_null(f);
		fputs("<PORX_IN020101SM31 xmlns=\"urn:hl7-org:v3\"/>\n", f);
		fclose(f);
	}
	cr_assert_eq(mhsctl(&out, "health"), 0, "%s", out.data);
	cr_assert(strstr(out.data, "SERVING") != NULL);

	cr_assert_eq(mhsctl(&out,
	                 "submit --payload-file '%s' --idempotency-key "
	                 "ctl-1 --prescription-id %s --nhs-number %s "
	                 "--sender-ods FA565",
	                 payload, rx, nhs),
	    0, "%s", out.data);
	cr_assert_eq(sscanf(out.data, "%36s", id), 1);
	cr_assert(strstr(out.data, "ACCEPTED") != NULL, "%s", out.data);

	for (int i = 0; i < 300 && !delivered; i++) {
		cr_assert_eq(mhsctl(&out, "status %s", id), 0, "%s", out.data);
		delivered = strstr(out.data, "DELIVERED") != NULL;
		if (!delivered)
			usleep(100000);
	}
	cr_assert(delivered, "not delivered in 30 s: %s", out.data);

	cr_assert_eq(mhsctl(&out, "search --prescription-id %s", rx), 0);
	cr_assert(strstr(out.data, id) != NULL, "search: %s", out.data);
	cr_assert_eq(mhsctl(&out, "search --nhs-number %s --json", nhs), 0);
	cr_assert(strstr(out.data, id) != NULL, "search: %s", out.data);

	gmtime_r(&now, &tm);
	strftime(month, sizeof(month), "%Y-%m", &tm);
	cr_assert_eq(mhsctl(&out, "journal export --month %s", month), 0, "%s",
	    out.data);
	cr_assert(strstr(out.data, id) != NULL, "export: %s", out.data);
	cr_assert(strstr(out.data, nhs) == NULL,
	    "the export must not contain NHS numbers");
	cr_assert_eq(mhsctl(&out, "journal verify"), 0, "%s", out.data);
	cr_assert_eq(mhsctl(&out, "stats"), 0, "%s", out.data);
	cr_assert(strstr(out.data, "PORX_IN020101SM31") != NULL);

	/* Exit codes: bad usage 2, a call refused 1, unreachable 3. */
	cr_assert_eq(mhsctl(&out, "status"), 2);
	cr_assert_eq(mhsctl(&out, "status not-a-uuid"), 1);
	cr_assert(strstr(out.data, "INVALID_ARGUMENT") != NULL);
	cr_assert_eq(mhsctl(&out, "frobnicate"), 2);
	cr_assert_eq(mhsctl(&out,
	                 "health --url tcp://127.0.0.1:1 "
	                 "--timeout-ms 300"),
	    3);
	mhs_buf_fini(&out);
}
