/*
 * The option table (common/config.h): defaults, then an INI file, then
 * flags, in rising precedence; bad input is an error naming the option;
 * --help and --version return 1.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "error.h"

static char *listen_url;
static long long max_payload;
static bool tls;
static char *token_file;
static char *log_level;

static struct mhs_opt opts[] = {
    {"listen", MHS_OPT_STR, "tcp://127.0.0.1:5555", 0, 0, "listen URL",
        &listen_url},
    {"max-payload", MHS_OPT_INT, "100", 1, 1000, "largest payload",
        &max_payload},
    {"tls", MHS_OPT_BOOL, "false", 0, 0, "require TLS", &tls},
    {"token-file", MHS_OPT_STR, NULL, 0, 0, "bearer tokens", &token_file},
    {"log-level", MHS_OPT_STR, "info", 0, 0, "lowest level logged",
        &log_level},
    {NULL, MHS_OPT_STR, NULL, 0, 0, NULL, NULL},
};

static const struct mhs_program prog = {
    "mhs-test", "gateway", "a program for the config tests", opts};

static void
free_values(void)
{
	free(listen_url);
	free(token_file);
	free(log_level);
	listen_url = token_file = log_level = NULL;
}

/* load runs mhs_config_load on a NULL-terminated argument list. */
#define load(...) load_argv((char *[]) {"mhs-test", __VA_ARGS__, NULL})

static int
load_argv(char **argv)
{
	int argc = 0;

	while (argv[argc] != NULL)
		argc++;
	free_values();
	return mhs_config_load(&prog, argc, argv);
}

/* ---- capturing stdout/stderr into a file ---------------------------- */

struct capture {
	int fd, saved;
	FILE *stream;
	char path[64];
};

static void
capture_begin(struct capture *c, FILE *stream)
{
	c->stream = stream;
	snprintf(c->path, sizeof(c->path), "/tmp/mhs-test-cap-XXXXXX");
	c->fd = mkstemp(c->path);
	cr_assert_geq(c->fd, 0);
	unlink(c->path); /* gone even if an assertion fails */
	fflush(stream);
	c->saved = dup(fileno(stream));
	cr_assert_geq(c->saved, 0);
	cr_assert_geq(dup2(c->fd, fileno(stream)), 0);
}

/* capture_end restores the stream and returns what was written (free). */
static char *
capture_end(struct capture *c)
{
	char *text;
	off_t n;

	fflush(c->stream);
	dup2(c->saved, fileno(c->stream));
	close(c->saved);
	n = lseek(c->fd, 0, SEEK_END);
	cr_assert_geq(n, 0);
	text = calloc(1, (size_t) n + 1);
	cr_assert_not_null(text);
	cr_assert_eq(pread(c->fd, text, (size_t) n, 0), n);
	close(c->fd);
	return text;
}

/* load_err runs load_argv and returns its stderr text (free). */
static char *
load_err(int *rv, char **argv)
{
	struct capture c;

	capture_begin(&c, stderr);
	*rv = load_argv(argv);
	return capture_end(&c);
}

#define load_stderr(rvp, ...)                                                 \
	load_err(rvp, (char *[]) {"mhs-test", __VA_ARGS__, NULL})

/* ---- INI files ------------------------------------------------------ */

static char ini_path[64];

static const char *
write_ini(const char *text)
{
	int fd;

	if (ini_path[0] != '\0')
		unlink(ini_path);
	snprintf(ini_path, sizeof(ini_path), "/tmp/mhs-test-ini-XXXXXX");
	fd = mkstemp(ini_path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
	close(fd);
	return ini_path;
}

static void
suite_fini(void)
{
	free_values();
	if (ini_path[0] != '\0')
		unlink(ini_path);
	ini_path[0] = '\0';
}

TestSuite(config_flags, .fini = suite_fini);
TestSuite(config_ini, .fini = suite_fini);

/* ---- flags ---------------------------------------------------------- */

Test(config_flags, defaults_applied)
{
	cr_assert_eq(load_argv((char *[]) {"mhs-test", NULL}), 0);
	cr_assert_str_eq(listen_url, "tcp://127.0.0.1:5555");
	cr_assert_eq(max_payload, 100);
	cr_assert_eq(tls, false);
	cr_assert_str_eq(log_level, "info");
	/* A NULL default is an empty string, never a NULL pointer. */
	cr_assert_not_null(token_file);
	cr_assert_str_eq(token_file, "");
}

Test(config_flags, defaults_reset_on_every_load)
{
	cr_assert_eq(load("--max-payload", "7", "--tls"), 0);
	cr_assert_eq(max_payload, 7);
	cr_assert_eq(load("--listen", "ipc:///x"), 0);
	cr_assert_eq(max_payload, 100);
	cr_assert_eq(tls, false);
}

Test(config_flags, name_space_value)
{
	cr_assert_eq(load("--listen", "tcp://0.0.0.0:7000", "--max-payload",
	                 "250", "--token-file", "/etc/mhs/tokens"),
	    0);
	cr_assert_str_eq(listen_url, "tcp://0.0.0.0:7000");
	cr_assert_eq(max_payload, 250);
	cr_assert_str_eq(token_file, "/etc/mhs/tokens");
	cr_assert_str_eq(log_level, "info");
}

Test(config_flags, name_equals_value)
{
	cr_assert_eq(load("--listen=tcp://0.0.0.0:7001", "--max-payload=3",
	                 "--tls=true", "--token-file="),
	    0);
	cr_assert_str_eq(listen_url, "tcp://0.0.0.0:7001");
	cr_assert_eq(max_payload, 3);
	cr_assert_eq(tls, true);
	cr_assert_str_eq(token_file, "");
}

Test(config_flags, value_containing_equals_kept_whole)
{
	cr_assert_eq(load("--listen=tls+tcp://h:1?a=b"), 0);
	cr_assert_str_eq(listen_url, "tls+tcp://h:1?a=b");
}

Test(config_flags, later_flag_wins)
{
	cr_assert_eq(load("--max-payload", "5", "--max-payload=6"), 0);
	cr_assert_eq(max_payload, 6);
}

Test(config_flags, int_bounds_inclusive)
{
	cr_assert_eq(load("--max-payload", "1"), 0);
	cr_assert_eq(max_payload, 1);
	cr_assert_eq(load("--max-payload", "1000"), 0);
	cr_assert_eq(max_payload, 1000);
}

Test(config_flags, int_out_of_bounds_or_not_a_number_is_error)
{
	const char *bad[] = {"0", "1001", "-5", "abc", "", "12x", "1 ", " ",
	    "0x10", "99999999999999999999", "-99999999999999999999"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rv;
		char *err = load_stderr(&rv, "--max-payload", (char *) bad[i]);

		cr_assert_eq(rv, MHS_EINVAL, "--max-payload \"%s\"", bad[i]);
		cr_assert_not_null(strstr(err, "max-payload"), "%s", err);
		cr_assert_not_null(strstr(err, "1 to 1000"), "%s", err);
		free(err);
	}
}

Test(config_flags, bool_forms)
{
	const char *yes[] = {"true", "1", "yes", "on"};
	const char *no[] = {"false", "0", "no", "off"};
	char arg[32];

	for (size_t i = 0; i < 4; i++) {
		snprintf(arg, sizeof(arg), "--tls=%s", yes[i]);
		cr_assert_eq(load(arg), 0, "%s", arg);
		cr_assert_eq(tls, true, "%s", arg);
		cr_assert_eq(load("--tls=true", "--tls", (char *) no[i]), 0);
		cr_assert_eq(tls, false, "--tls %s", no[i]);
	}
	/* A bare bool flag means true, at the end or before another flag. */
	cr_assert_eq(load("--tls"), 0);
	cr_assert_eq(tls, true);
	cr_assert_eq(load("--tls", "--max-payload", "9"), 0);
	cr_assert_eq(tls, true);
	cr_assert_eq(max_payload, 9);
}

Test(config_flags, bool_bad_value_is_error)
{
	const char *bad[] = {"maybe", "TRUE", "", "2", "y"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char arg[32];
		int rv;
		char *err;

		snprintf(arg, sizeof(arg), "--tls=%s", bad[i]);
		err = load_stderr(&rv, arg);
		cr_assert_eq(rv, MHS_EINVAL, "%s", arg);
		cr_assert_not_null(strstr(err, "tls"), "%s", err);
		free(err);
	}
}

Test(config_flags, unknown_flag_is_error)
{
	int rv;
	char *err = load_stderr(&rv, "--listen", "x", "--no-such-thing", "1");

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "no-such-thing"), "%s", err);
	free(err);

	err = load_stderr(&rv, "--no-such-thing=1");
	cr_assert_eq(rv, MHS_EINVAL);
	free(err);
}

Test(config_flags, positional_argument_is_error)
{
	int rv;
	char *err = load_stderr(&rv, "stray");

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "stray"), "%s", err);
	free(err);

	err = load_stderr(&rv, "--listen", "x", "-v");
	cr_assert_eq(rv, MHS_EINVAL);
	free(err);
}

Test(config_flags, missing_value_is_error)
{
	int rv;
	char *err = load_stderr(&rv, "--listen");

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "listen"), "%s", err);
	free(err);

	err = load_stderr(&rv, "--max-payload");
	cr_assert_eq(rv, MHS_EINVAL);
	free(err);
}

Test(config_flags, help_returns_one_and_lists_options)
{
	struct capture c;
	char *out;

	capture_begin(&c, stdout);
	cr_assert_eq(load("--help"), 1);
	out = capture_end(&c);
	cr_assert_not_null(strstr(out, "mhs-test"), "%s", out);
	cr_assert_not_null(strstr(out, "--listen"), "%s", out);
	cr_assert_not_null(strstr(out, "--max-payload"), "%s", out);
	cr_assert_not_null(strstr(out, "[1..1000]"), "%s", out);
	cr_assert_not_null(strstr(out, "tcp://127.0.0.1:5555"), "%s", out);
	cr_assert_not_null(strstr(out, "[gateway]"), "%s", out);
	free(out);

	/* --help wins over bad flags anywhere on the line, and -h too. */
	capture_begin(&c, stdout);
	cr_assert_eq(load("--no-such-thing", "--help"), 1);
	cr_assert_eq(load("-h"), 1);
	free(capture_end(&c));
}

Test(config_flags, version_returns_one)
{
	struct capture c;
	char *out;

	capture_begin(&c, stdout);
	cr_assert_eq(load("--version"), 1);
	out = capture_end(&c);
	cr_assert_str_eq(out, "mhs-test " MHS_VERSION "\n");
	free(out);
}

Test(config_flags, missing_config_file_is_error)
{
	int rv;
	char *err = load_stderr(&rv, "--config", "/nonexistent/mhs.ini");

	cr_assert_lt(rv, 0);
	cr_assert_not_null(strstr(err, "/nonexistent/mhs.ini"), "%s", err);
	free(err);

	err = load_stderr(&rv, "--config=/nonexistent/mhs.ini");
	cr_assert_lt(rv, 0);
	free(err);
}

/* Regression: "--config" as the last argument was silently ignored. */
Test(config_flags, config_flag_without_file_is_error)
{
	int rv;
	char *err = load_stderr(&rv, "--listen", "x", "--config");

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "config"), "%s", err);
	free(err);
}

/* ---- INI file ------------------------------------------------------- */

Test(config_ini, section_overrides_defaults)
{
	const char *f = write_ini("[gateway]\n"
	                          "listen = tcp://10.0.0.1:6000\n"
	                          "max-payload = 20\n"
	                          "tls = yes\n");

	cr_assert_eq(load("--config", (char *) f), 0);
	cr_assert_str_eq(listen_url, "tcp://10.0.0.1:6000");
	cr_assert_eq(max_payload, 20);
	cr_assert_eq(tls, true);
	cr_assert_str_eq(log_level, "info");
}

Test(config_ini, flags_override_ini_whatever_the_order)
{
	const char *f = write_ini("[gateway]\n"
	                          "max-payload = 20\n"
	                          "listen = tcp://10.0.0.1:6000\n");
	char arg[96];

	cr_assert_eq(load("--config", (char *) f, "--max-payload", "30"), 0);
	cr_assert_eq(max_payload, 30);
	cr_assert_str_eq(listen_url, "tcp://10.0.0.1:6000");

	snprintf(arg, sizeof(arg), "--config=%s", f);
	cr_assert_eq(load("--max-payload", "40", arg), 0);
	cr_assert_eq(max_payload, 40);
	cr_assert_str_eq(listen_url, "tcp://10.0.0.1:6000");
}

Test(config_ini, underscore_keys)
{
	const char *f = write_ini("[gateway]\n"
	                          "max_payload = 42\n"
	                          "token_file = /run/secrets/tokens\n"
	                          "log_level = debug\n");

	cr_assert_eq(load("--config", (char *) f), 0);
	cr_assert_eq(max_payload, 42);
	cr_assert_str_eq(token_file, "/run/secrets/tokens");
	cr_assert_str_eq(log_level, "debug");
}

Test(config_ini, keys_before_any_section_apply)
{
	const char *f = write_ini("log-level = warn\n"
	                          "[gateway]\n"
	                          "max-payload = 11\n");

	cr_assert_eq(load("--config", (char *) f), 0);
	cr_assert_str_eq(log_level, "warn");
	cr_assert_eq(max_payload, 11);
}

Test(config_ini, other_programs_section_ignored)
{
	const char *f = write_ini("[router]\n"
	                          "listen = tcp://10.9.9.9:1\n"
	                          "spine-url = https://spine.example\n"
	                          "[gateway]\n"
	                          "max-payload = 12\n"
	                          "[store]\n"
	                          "max-payload = 999\n");

	cr_assert_eq(load("--config", (char *) f), 0);
	cr_assert_str_eq(listen_url, "tcp://127.0.0.1:5555");
	cr_assert_eq(max_payload, 12);
}

Test(config_ini, unknown_key_is_error)
{
	const char *f = write_ini("[gateway]\n"
	                          "no-such-key = 1\n");
	int rv;
	char *err = load_stderr(&rv, "--config", (char *) f);

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "no-such-key"), "%s", err);
	free(err);
}

/*
 * Regression: an error was forgotten when a later key in the file was
 * good, and the program then blamed a "syntax error" instead.
 */
Test(config_ini, first_error_reported_when_later_keys_are_good)
{
	const char *f = write_ini("[gateway]\n"
	                          "no-such-key = 1\n"
	                          "max-payload = 12\n");
	int rv;
	char *err = load_stderr(&rv, "--config", (char *) f);

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "no-such-key"), "%s", err);
	cr_assert_null(strstr(err, "syntax error"), "%s", err);
	free(err);

	f = write_ini("[gateway]\n"
	              "max-payload = 5000\n"
	              "tls = on\n");
	err = load_stderr(&rv, "--config", (char *) f);
	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "max-payload"), "%s", err);
	cr_assert_null(strstr(err, "syntax error"), "%s", err);
	free(err);
}

Test(config_ini, bad_values_are_errors)
{
	const char *bad[] = {"max-payload = 0\n", "max-payload = 1001\n",
	    "max-payload = lots\n", "tls = sometimes\n"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];
		int rv;
		char *err;

		snprintf(text, sizeof(text), "[gateway]\n%s", bad[i]);
		err = load_stderr(&rv, "--config", (char *) write_ini(text));
		cr_assert_eq(rv, MHS_EINVAL, "%s", bad[i]);
		free(err);
	}
}

Test(config_ini, syntax_error_is_error)
{
	const char *f = write_ini("[gateway]\n"
	                          "this line has no equals sign\n");
	int rv;
	char *err = load_stderr(&rv, "--config", (char *) f);

	cr_assert_eq(rv, MHS_EINVAL);
	cr_assert_not_null(strstr(err, "line 2"), "%s", err);
	free(err);
}

Test(config_ini, bool_forms)
{
	const char *yes[] = {"true", "1", "yes", "on"};
	const char *no[] = {"false", "0", "no", "off"};

	for (size_t i = 0; i < 4; i++) {
		char text[64];

		snprintf(text, sizeof(text), "[gateway]\ntls = %s\n", yes[i]);
		cr_assert_eq(load("--config", (char *) write_ini(text)), 0);
		cr_assert_eq(tls, true, "%s", yes[i]);
		snprintf(text, sizeof(text), "[gateway]\ntls = %s\n", no[i]);
		cr_assert_eq(
		    load("--tls", "--config", (char *) write_ini(text)), 0);
		/* The flag still overrides the file. */
		cr_assert_eq(tls, true, "%s", no[i]);
		cr_assert_eq(load("--config", (char *) write_ini(text)), 0);
		cr_assert_eq(tls, false, "%s", no[i]);
	}
}
