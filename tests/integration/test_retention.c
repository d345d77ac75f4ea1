/*
 * Design notes: journal retention in the running store (issue 3): month
 * segments past --retention-months are deleted once every message in them
 * is final, and kept while one is not. Journals are prepared with
 * mhs-journal-bench (records dated months ago), then a real redis-server
 * and mhs-store start on them; the store replays them into the empty
 * Redis and runs retention. Waits are bounded and poll a condition.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stack.h"

static struct stack st;
static pid_t redis_pid, store_pid;

static void
run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static void
old_month(char out[8], int months_ago)
{
	time_t t = time(NULL) - (time_t) months_ago * 31 * 24 * 3600;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 8, "%Y-%m", &tm);
}

static bool
exists(const char *name)
{
	char path[400];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/journal/%s", st.dir, name);
	return stat(path, &sb) == 0;
}

static bool
log_has(const char *what)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "grep -q '%s' '%s/logs/store.log'", what,
	    st.dir);
	return system(cmd) == 0;
}

static char rport[16], hport[16];

/* start_store runs mhs-store on DIR/journal, and redis-server unless it
 * runs already. */
static void
start_store(void)
{
	char listen[400], jdir[400], http[64];

	if (redis_pid == 0) {
		int base = stack_free_ports(2);

		cr_assert(base > 0);
		snprintf(rport, sizeof(rport), "%d", base);
		snprintf(hport, sizeof(hport), "%d", base + 1);
		char *argv[] = {"/usr/bin/redis-server", "--port", rport,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    "--dir", st.dir, NULL};
		cr_assert((redis_pid = stack_spawn(&st, "redis", argv)) > 0);
		usleep(200000);
	}
	snprintf(listen, sizeof(listen), "ipc://%s/store.ipc", st.dir);
	snprintf(jdir, sizeof(jdir), "%s/journal", st.dir);
	snprintf(http, sizeof(http), "http://127.0.0.1:%s", hport);
	{
		char *argv[] = {MHS_STORE_BIN, "--listen", listen, "--http",
		    http, "--journal-dir", jdir, "--redis-port", rport,
		    "--node-id", "retention-test", "--retention-months", "1",
		    "--nhs-index-key", "k", NULL};
		cr_assert((store_pid = stack_spawn(&st, "store", argv)) > 0);
	}
}

static void
stop_store(void)
{
	kill(store_pid, SIGTERM);
	cr_assert_neq(
	    stack_wait_exit(store_pid, 10000), -1, "mhs-store did not stop");
	store_pid = 0;
}

/* redis_applied reads this node's applied_seq. */
static long long
redis_applied(void)
{
	char cmd[200], out[32] = "";
	FILE *f;

	snprintf(cmd, sizeof(cmd),
	    "redis-cli -p %s GET mhs:applied_seq:retention-test", rport);
	cr_assert_not_null(f = popen(cmd, "r"));
	if (fgets(out, sizeof(out), f) == NULL)
		out[0] = '\0';
	pclose(f);
	return atoll(out);
}

static void
setup(void)
{
	char logs[400];

	memset(&st, 0, sizeof(st));
	snprintf(st.dir, sizeof(st.dir), "/tmp/mhs-it-ret-XXXXXX");
	cr_assert_not_null(mkdtemp(st.dir));
	snprintf(logs, sizeof(logs), "%s/logs", st.dir);
	mkdir(logs, 0700);
}

static void
teardown(void)
{
	if (store_pid > 0) {
		kill(store_pid, SIGTERM);
		stack_wait_exit(store_pid, 10000);
	}
	if (redis_pid > 0) {
		kill(redis_pid, SIGTERM);
		stack_wait_exit(redis_pid, 10000);
	}
	store_pid = redis_pid = 0;
	if (stack_sanitizer_clean(&st))
		run("rm -rf '%s'", st.dir);
}

TestSuite(store_retention, .init = setup, .fini = teardown, .timeout = 120);

Test(store_retention, final_month_past_retention_is_deleted)
{
	char month[8], seg[16];

	old_month(month, 3);
	snprintf(seg, sizeof(seg), "%s.seg", month);
	run("'%s' --mode generate --dir '%s/journal' --records 20 "
	    "--month-offset 3 --final --payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	run("'%s' --mode generate --dir '%s/journal' --records 2 "
	    "--payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	cr_assert(exists(seg), "the old segment %s was not generated", seg);
	start_store();
	for (int i = 0; i < 300 && exists(seg); i++)
		usleep(100000);
	cr_assert(!exists(seg),
	    "%s holds only final messages and is past retention, yet was "
	    "kept (see %s/logs/store.log)",
	    seg, st.dir);
	cr_assert(log_has("journal_segment_dropped"));
}

Test(store_retention, month_with_a_pending_message_is_kept)
{
	char month[8], seg[16];

	old_month(month, 3);
	snprintf(seg, sizeof(seg), "%s.seg", month);
	run("'%s' --mode generate --dir '%s/journal' --records 20 "
	    "--month-offset 3 --payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	run("'%s' --mode generate --dir '%s/journal' --records 2 "
	    "--payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	start_store();
	for (int i = 0; i < 300 && !log_has("journal_retention_kept"); i++)
		usleep(100000);
	cr_assert(log_has("journal_retention_kept"),
	    "retention never looked at %s (see %s/logs/store.log)", seg,
	    st.dir);
	cr_assert(exists(seg),
	    "%s holds messages not yet final: it must be "
	    "kept",
	    seg);
}

/*
 * A Redis older than the journal's horizon (an old snapshot or backup,
 * restored after retention removed the segments it had not yet seen)
 * cannot be caught up: the store refuses it, says so, and leaves it as it
 * found it, instead of replaying from the first segment left and
 * delivering again what the removed records had finished.
 */
Test(store_retention, redis_older_than_the_journal_is_refused)
{
	char month[8], seg[16];

	old_month(month, 3);
	snprintf(seg, sizeof(seg), "%s.seg", month);
	run("'%s' --mode generate --dir '%s/journal' --records 20 "
	    "--month-offset 3 --final --payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	run("'%s' --mode generate --dir '%s/journal' --records 2 "
	    "--payload-bytes 64 >/dev/null 2>&1",
	    JOURNAL_BENCH_BIN, st.dir);
	start_store();
	for (int i = 0; i < 300 && exists(seg); i++)
		usleep(100000);
	cr_assert(
	    !exists(seg), "%s was kept (see %s/logs/store.log)", seg, st.dir);
	cr_assert_eq(redis_applied(), 42, "Redis is not in step");
	stop_store();

	/* Redis as a copy from before the old month's records. */
	run("redis-cli -p %s SET mhs:applied_seq:retention-test 5 >/dev/null",
	    rport);
	start_store();
	for (int i = 0; i < 300 && !log_has("redis_older_than_journal"); i++)
		usleep(100000);
	cr_assert(log_has("redis_older_than_journal"),
	    "the store did not refuse a Redis older than its journal (see "
	    "%s/logs/store.log)",
	    st.dir);
	cr_assert_eq(redis_applied(), 5, "the store replayed into it anyway");
	cr_assert(!log_has("applying journal records 6"),
	    "the store replayed from the first record left");
}
