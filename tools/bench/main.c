/*
 * Design notes: mhs-bench's main: options (common/config.h), the phases,
 * and all output. A run is:
 *   1. (get-status only) seed a few messages with synchronous Submits;
 *   2. with --baseline, a measurement (as in 3: warm-up included, same
 *      concurrency, count or duration) against an in-process nng REP
 *      echo server, whose requests are buffers as long as one gateway
 *      request; it runs first, while the stack is idle;
 *   3. the measurement against the gateway: --warmup-s unrecorded, then
 *      --count requests or --duration-s seconds, --concurrency in flight.
 * With --rate N both measurements are open-loop at N requests a second
 * (load.c), for latency at a fixed load: "p99 at 5k/s".
 * stdout gets a report per measurement and, last, the one line of the
 * contract (DESIGN §6):
 *   ratio=R submit_per_s=N baseline_per_s=N p50_us=N p99_us=N
 * or, without --baseline, "submit_per_s=N p50_us=N p99_us=N". The key
 * names are the same whatever --method is: submit_per_s is the gateway
 * method's rate of code-0 replies. stderr gets progress (a line a second,
 * only on a terminal, not with --quiet) and errors. Exit: 0 all replies
 * were code 0; 1 some error reply or transport failure (counted by name);
 * 2 bad usage; 3 gateway unreachable; 130 interrupted (after reporting).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "config.h"
#include "error.h"
#include "status.h"

static struct {
	char *url, *token, *method, *sender;
	long long concurrency, sockets, payload_bytes, duration_s, count;
	long long warmup_s, timeout_ms, rate;
	bool baseline, quiet;
} o;

static struct mhs_opt opts[] = {
    {"url", MHS_OPT_STR, "", 0, 0, "gateway URL; empty: $MHS_GATEWAY_URL",
        &o.url},
    {"token", MHS_OPT_STR, "", 0, 0, "bearer token; empty: $MHS_TOKEN",
        &o.token},
    {"method", MHS_OPT_STR, "submit", 0, 0,
        "submit, get-status (of a few seeded messages) or health", &o.method},
    {"concurrency", MHS_OPT_INT, "32", 1, 4096,
        "requests in flight (one REQ context each)", &o.concurrency},
    {"sockets", MHS_OPT_INT, "1", 1, 64,
        "REQ sockets (TCP connections) the contexts share", &o.sockets},
    {"payload-bytes", MHS_OPT_INT, "1024", 128, 16777216,
        "size of each Submit's HL7 payload", &o.payload_bytes},
    {"duration-s", MHS_OPT_INT, "10", 1, 86400,
        "length of each measurement (unless --count)", &o.duration_s},
    {"count", MHS_OPT_INT, "0", 0, 1000000000000LL,
        "requests per measurement; 0: run for --duration-s", &o.count},
    {"rate", MHS_OPT_INT, "0", 0, 10000000,
        "open-loop: requests per second, latency from when each was due "
        "(0: each context sends again as soon as answered)",
        &o.rate},
    {"warmup-s", MHS_OPT_INT, "1", 0, 3600,
        "unrecorded load before each measurement", &o.warmup_s},
    {"baseline", MHS_OPT_BOOL, "false", 0, 0,
        "also measure a plain nng REQ/REP echo (same load) and print ratio",
        &o.baseline},
    {"timeout-ms", MHS_OPT_INT, "10000", 10, 600000,
        "deadline of each request (also sent as timeout_ms)", &o.timeout_ms},
    {"sender-ods", MHS_OPT_STR, "FA565", 0, 0, "sender ODS of each Submit",
        &o.sender},
    {"quiet", MHS_OPT_BOOL, "false", 0, 0, "no progress lines", &o.quiet},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program prog = {
    "mhs-bench",
    "bench",
    "Load generator: drives the gateway over nng REQ/REP and reports "
    "throughput and latency.",
    opts,
};

/* One measured target: warm-up and measurement stats. */
struct bench_result {
	const char *label;
	struct bench_stats warm, main;
	size_t request_bytes;
	bool ran;
};

static struct bench_result gw_res;
static struct bench_result echo_res = {.label = "baseline"};
static volatile int stop_flag;

static void
on_signal(int sig)
{
	(void) sig;
	stop_flag = 1;
}

static int
opts_env(char **dst, const char *env)
{
	const char *v = getenv(env);

	if ((*dst)[0] != '\0' || v == NULL)
		return 0;
	free(*dst);
	return (*dst = strdup(v)) == NULL ? MHS_ENOMEM : 0;
}

/* opts_resolve applies the environment and checks what the table can't;
 * returns the method, or -1 after a message (exit 2). */
static int
opts_resolve(void)
{
	static const char *const names[] = {"submit", "get-status", "health"};
	int m = -1;

	if (opts_env(&o.url, "MHS_GATEWAY_URL") != 0 ||
	    opts_env(&o.token, "MHS_TOKEN") != 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (strcmp(o.method, names[i]) == 0)
			m = i;
	if (m < 0)
		fprintf(stderr,
		    "mhs-bench: --method: expected submit, get-status or "
		    "health, got \"%s\"\n",
		    o.method);
	else if (o.url[0] == '\0')
		fprintf(stderr,
		    "mhs-bench: no gateway: set MHS_GATEWAY_URL "
		    "or --url (e.g. . run/stack.env)\n");
	else if (m != BENCH_HEALTH && o.token[0] == '\0')
		fprintf(stderr,
		    "mhs-bench: no token: set MHS_TOKEN or "
		    "--token\n");
	else
		return m;
	return -1;
}

/* open_failed explains why a target could not be dialed; exit code. */
static int
open_failed(const char *what, const char *url, int rv)
{
	if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL) {
		fprintf(stderr, "mhs-bench: bad URL \"%s\": %s\n", url,
		    nng_strerror(rv));
		return 2;
	}
	fprintf(stderr, "mhs-bench: cannot reach the %s at %s: %s\n", what,
	    url, nng_strerror(rv));
	return 3;
}

/* print_header says what is about to run (stderr: stdout is the report). */
static void
print_header(const struct bench_gen *g)
{
	char rate[48] = "";

	if (o.rate > 0)
		snprintf(rate, sizeof(rate), "at %lld/s, ", o.rate);
	fprintf(stderr,
	    "mhs-bench: %s to %s, concurrency %lld, request %zu bytes, "
	    "%s%s%lld %s; run id %s\n",
	    o.method, o.url, o.concurrency, gw_res.request_bytes, rate,
	    o.baseline ? "with baseline, " : "",
	    o.count > 0 ? o.count : o.duration_s,
	    o.count > 0 ? "requests" : "s", g->run_id);
}

/* open_target dials a target for measure; 0 or an exit code. */
static int
open_target(struct bench_load **lp, const char *what, const char *url,
    const struct bench_target *t)
{
	int rv = bench_load_open(lp, url, t, (int) o.concurrency,
	    (int) o.sockets, (int) o.timeout_ms);

	if (rv != 0)
		return open_failed(what, url, rv);
	bench_load_set_rate(*lp, (double) o.rate);
	return 0;
}

/* measure runs the warm-up, then the measurement, on an open target. */
static void
measure(struct bench_result *res, struct bench_load *l)
{
	bool tty = !o.quiet && isatty(2);
	char label[64];

	snprintf(label, sizeof(label), "%s warm-up", res->label);
	if (o.warmup_s > 0 && !stop_flag)
		bench_load_run(l, &res->warm, 0, o.warmup_s * 1000000000LL,
		    tty ? label : NULL, &stop_flag);
	if (stop_flag)
		return;
	bench_load_run(l, &res->main, (uint64_t) o.count,
	    o.duration_s * 1000000000LL, tty ? res->label : NULL, &stop_flag);
	res->ran = true;
}

static double
stats_rate(struct bench_stats *st)
{
	double s = (double) (st->t_end - st->t_start) / 1e9;

	return s > 0 ? (double) bench_stats_ok(st) / s : 0;
}

static long long
us(uint64_t ns)
{
	return (long long) ((ns + 500) / 1000);
}

/* print_errors lists every error reply and transport failure by name. */
static void
print_errors(const char *prefix, struct bench_stats *st)
{
	if (bench_stats_errors(st) == 0)
		return;
	printf("%s errors:", prefix);
	for (int c = 1; c < BENCH_CODES; c++)
		if (atomic_load(&st->codes[c]) > 0)
			printf(" %s=%llu",
			    c < BENCH_CODES - 1 ? mhs_code_name(c) : "OTHER",
			    (unsigned long long) atomic_load(&st->codes[c]));
	for (int e = 0; e < BENCH_TERRS; e++)
		if (atomic_load(&st->terrs[e]) > 0)
			printf(" \"%s\"=%llu",
			    e > 0 ? nng_strerror(e) : "transport error",
			    (unsigned long long) atomic_load(&st->terrs[e]));
	if (atomic_load(&st->bad_replies) > 0)
		printf(" \"undecodable reply\"=%llu",
		    (unsigned long long) atomic_load(&st->bad_replies));
	printf("\n");
}

static void
print_result(struct bench_result *r, const char *title)
{
	struct bench_stats *st = &r->main;
	struct bench_hist *h = &st->hist;

	if (!r->ran)
		return;
	printf("%s: %llu ok in %.3f s = %.0f/s (concurrency %lld, %lld "
	       "socket%s, request %zu bytes)\n",
	    title, (unsigned long long) bench_stats_ok(st),
	    (double) (st->t_end - st->t_start) / 1e9, stats_rate(st),
	    o.concurrency, o.sockets, o.sockets > 1 ? "s" : "",
	    r->request_bytes);
	printf("  latency us: p50=%lld p90=%lld p99=%lld p99.9=%lld "
	       "max=%lld\n",
	    us(bench_hist_quantile(h, 0.5)), us(bench_hist_quantile(h, 0.9)),
	    us(bench_hist_quantile(h, 0.99)),
	    us(bench_hist_quantile(h, 0.999)), us(bench_hist_quantile(h, 1)));
	if (o.rate > 0)
		printf("  open loop at %lld/s: %llu requests sent over 1 ms "
		       "after due%s\n",
		    o.rate, (unsigned long long) atomic_load(&st->late),
		    atomic_load(&st->late) > 0
		        ? " (all contexts busy, or a loaded machine)"
		        : "");
	print_errors("  warm-up", &r->warm);
	print_errors(" ", st);
}

static void
print_contract(void)
{
	struct bench_hist *h = &gw_res.main.hist;
	long long sub = (long long) (stats_rate(&gw_res.main) + 0.5);
	long long base = (long long) (stats_rate(&echo_res.main) + 0.5);

	if (o.baseline)
		printf("ratio=%.3f submit_per_s=%lld baseline_per_s=%lld "
		       "p50_us=%lld p99_us=%lld\n",
		    base > 0 ? (double) sub / (double) base : 0.0, sub, base,
		    us(bench_hist_quantile(h, 0.5)),
		    us(bench_hist_quantile(h, 0.99)));
	else
		printf("submit_per_s=%lld p50_us=%lld p99_us=%lld\n", sub,
		    us(bench_hist_quantile(h, 0.5)),
		    us(bench_hist_quantile(h, 0.99)));
	fflush(stdout);
}

/* request_size is the length of one gateway request (for the baseline). */
static size_t
request_size(struct bench_gen *g)
{
	nng_msg *m;
	size_t n;

	if (bench_gen_make(g, &m) != 0)
		return 0;
	n = nng_msg_len(m);
	nng_msg_free(m);
	return n;
}

static int
run_baseline(size_t len)
{
	struct bench_blob blob = {NULL, len};
	struct bench_target t = {
	    bench_blob_make, bench_blob_reply_code, &blob};
	struct bench_echo *e = NULL;
	struct bench_load *l = NULL;
	char url[64];
	int rv;

	if ((blob.data = malloc(len)) == NULL)
		return 1;
	memset(blob.data, 'b', len);
	echo_res.request_bytes = len;
	rv = bench_echo_start(
	    &e, (int) o.concurrency, len + 1024, url, sizeof(url));
	if (rv != 0) {
		fprintf(
		    stderr, "mhs-bench: echo server: %s\n", nng_strerror(rv));
		free(blob.data);
		return 1;
	}
	if ((rv = open_target(&l, "echo server", url, &t)) == 0)
		measure(&echo_res, l);
	bench_load_close(l);
	bench_echo_stop(e);
	free(blob.data);
	return rv;
}

static int
seed_for_get_status(struct bench_gen *g)
{
	char *why = NULL;
	int rv = bench_gen_seed(g, o.url, 16, &why);

	if (rv < 0)
		fprintf(stderr,
		    "mhs-bench: cannot reach the gateway at %s: %s\n", o.url,
		    mhs_strerror(rv));
	else if (rv > 0)
		fprintf(stderr, "mhs-bench: seeding Submit refused: %s: %s\n",
		    mhs_code_name(rv), why ? why : "");
	free(why);
	return rv < 0 ? 3 : rv > 0 ? 1 : 0;
}

/*
 * run does the steps of the design notes. The gateway is dialed first (an
 * unreachable one fails at once), but the baseline is measured before it:
 * after a Submit run the routers are still delivering its backlog, which
 * would take CPU from the baseline. Returns 0 or an exit code.
 */
static int
run(struct bench_gen *g)
{
	struct bench_target t = {bench_gen_make, bench_gen_reply_code, g};
	struct bench_load *l = NULL;
	int rv;

	if (g->method == BENCH_GET_STATUS && (rv = seed_for_get_status(g)))
		return rv;
	gw_res.request_bytes = request_size(g);
	if ((rv = open_target(&l, "gateway", o.url, &t)) != 0)
		return rv;
	if (!o.quiet)
		print_header(g);
	if (o.baseline)
		rv = run_baseline(gw_res.request_bytes);
	if (rv == 0)
		measure(&gw_res, l);
	bench_load_close(l);
	return rv;
}

static uint64_t
result_errors(struct bench_result *r)
{
	return bench_stats_errors(&r->warm) + bench_stats_errors(&r->main);
}

static int
report(void)
{
	uint64_t errs = result_errors(&gw_res) + result_errors(&echo_res);
	print_result(&gw_res, o.method);
	print_result(&echo_res, "baseline (nng REQ/REP echo)");
	print_contract();
	if (errs > 0)
		fprintf(stderr,
		    "mhs-bench: %llu requests failed (error replies or "
		    "transport failures; see above)\n",
		    (unsigned long long) errs);
	if (stop_flag)
		return 130;
	return errs > 0 ? 1 : 0;
}

int
main(int argc, char **argv)
{
	struct bench_gen g;
	int method, rv;

	if ((rv = mhs_config_load(&prog, argc, argv)) != 0)
		return rv == 1 ? 0 : 2;
	if ((method = opts_resolve()) < 0)
		return 2;
	gw_res.label = o.method;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (bench_gen_init(&g, (enum bench_method) method, o.token, o.sender,
	        (size_t) o.payload_bytes, (int) o.timeout_ms) != 0) {
		fprintf(stderr, "mhs-bench: out of memory\n");
		return 1;
	}
	if ((rv = run(&g)) == 0)
		rv = report();
	bench_gen_fini(&g);
	return rv;
}
