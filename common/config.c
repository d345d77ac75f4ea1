/*
 * Design notes: see config.h. Runs once at start on the main thread. Bad
 * values are reported on stderr with the option name and its bounds; the
 * program then exits 2 without starting anything.
 */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"

static struct mhs_opt *
config_find(const struct mhs_program *prog, const char *name)
{
	for (struct mhs_opt *o = prog->opts; o->name != NULL; o++) {
		size_t i;

		for (i = 0; o->name[i] != '\0' && name[i] != '\0'; i++) {
			char a = o->name[i],
			     b = name[i] == '_' ? '-' : name[i];
			if (a != b)
				break;
		}
		if (o->name[i] == '\0' && name[i] == '\0')
			return o;
	}
	return NULL;
}

static int
config_set(const char *origin, struct mhs_opt *o, const char *val)
{
	char *end;
	long long n;

	switch (o->type) {
	case MHS_OPT_STR:
		free(*(char **) o->dst);
		if ((*(char **) o->dst = strdup(val)) == NULL)
			return MHS_ENOMEM;
		return 0;
	case MHS_OPT_BOOL:
		if (strcmp(val, "true") == 0 || strcmp(val, "1") == 0 ||
		    strcmp(val, "yes") == 0 || strcmp(val, "on") == 0) {
			*(bool *) o->dst = true;
			return 0;
		}
		if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0 ||
		    strcmp(val, "no") == 0 || strcmp(val, "off") == 0) {
			*(bool *) o->dst = false;
			return 0;
		}
		fprintf(stderr, "%s: %s: expected true or false, got \"%s\"\n",
		    origin, o->name, val);
		return MHS_EINVAL;
	case MHS_OPT_INT:
		errno = 0;
		n = strtoll(val, &end, 10);
		if (errno != 0 || end == val || *end != '\0' || n < o->min ||
		    n > o->max) {
			fprintf(stderr,
			    "%s: %s: expected an integer from %lld to %lld, "
			    "got \"%s\"\n",
			    origin, o->name, o->min, o->max, val);
			return MHS_EINVAL;
		}
		*(long long *) o->dst = n;
		return 0;
	}
	return MHS_EINVAL;
}

struct ini_ctx {
	const struct mhs_program *prog;
	const char *path;
	int err;
};

static int
config_ini_entry(
    void *arg, const char *section, const char *name, const char *value)
{
	struct ini_ctx *ctx = arg;
	struct mhs_opt *o;

	if (ctx->err != 0)
		return 0; /* keep the first error: inih parses on after it */
	if (section[0] != '\0' && strcmp(section, ctx->prog->section) != 0)
		return 1; /* another program's section */
	if ((o = config_find(ctx->prog, name)) == NULL) {
		fprintf(stderr, "%s: unknown option \"%s\" in [%s]\n",
		    ctx->path, name, section);
		ctx->err = MHS_EINVAL;
		return 0;
	}
	if ((ctx->err = config_set(ctx->path, o, value)) != 0)
		return 0;
	return 1;
}

void
mhs_config_usage(const struct mhs_program *prog)
{
	printf("Usage: %s [--config FILE] [--OPTION VALUE]...\n%s\n\n"
	       "Options (also as keys in FILE, section [%s]):\n",
	    prog->name, prog->summary, prog->section);
	printf(
	    "  %-22s %s\n", "--config FILE", "read options from an INI file");
	for (struct mhs_opt *o = prog->opts; o->name != NULL; o++) {
		char flag[64], bounds[80] = "";

		snprintf(flag, sizeof(flag), "--%s%s", o->name,
		    o->type == MHS_OPT_BOOL      ? " BOOL"
		        : o->type == MHS_OPT_INT ? " N"
		                                 : " VALUE");
		if (o->type == MHS_OPT_INT)
			snprintf(bounds, sizeof(bounds), " [%lld..%lld]",
			    o->min, o->max);
		printf("  %-22s %s%s (default: %s)\n", flag, o->help, bounds,
		    o->def != NULL && o->def[0] != '\0' ? o->def : "none");
	}
	printf("  %-22s %s\n  %-22s %s\n", "--help", "show this help",
	    "--version", "show the version");
}

static int
config_defaults(const struct mhs_program *prog)
{
	for (struct mhs_opt *o = prog->opts; o->name != NULL; o++) {
		int rv;

		if (o->type == MHS_OPT_STR)
			*(char **) o->dst = NULL;
		if ((rv = config_set("default", o, o->def ? o->def : "")) != 0)
			return rv;
	}
	return 0;
}

int
mhs_config_load(const struct mhs_program *prog, int argc, char **argv)
{
	const char *file = NULL;
	int rv;

	if ((rv = config_defaults(prog)) != 0)
		return rv;
	/* 1. --help, --version and --config first: the file is the base. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			mhs_config_usage(prog);
			return 1;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("%s %s\n", prog->name, MHS_VERSION);
			return 1;
		}
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
	}
	if (file != NULL) {
		struct ini_ctx ctx = {prog, file, 0};
		int line = ini_parse(file, config_ini_entry, &ctx);

		if (line < 0) {
			fprintf(
			    stderr, "%s: cannot read %s\n", prog->name, file);
			return MHS_EIO;
		}
		if (ctx.err != 0)
			return ctx.err;
		if (line > 0) {
			fprintf(
			    stderr, "%s: line %d: syntax error\n", file, line);
			return MHS_EINVAL;
		}
	}
	/* 2. Flags override the file. */
	for (int i = 1; i < argc; i++) {
		char name[64];
		const char *arg = argv[i], *val, *eq;
		struct mhs_opt *o;

		if (strncmp(arg, "--", 2) != 0) {
			fprintf(stderr,
			    "%s: unexpected argument \"%s\" "
			    "(try --help)\n",
			    prog->name, arg);
			return MHS_EINVAL;
		}
		arg += 2;
		eq = strchr(arg, '=');
		snprintf(name, sizeof(name), "%.*s",
		    (int) (eq ? (size_t) (eq - arg) : strlen(arg)), arg);
		if (strcmp(name, "config") == 0) {
			if (eq == NULL && i + 1 >= argc) {
				fprintf(stderr, "%s: --config needs a file\n",
				    prog->name);
				return MHS_EINVAL;
			}
			i += eq ? 0 : 1;
			continue;
		}
		if ((o = config_find(prog, name)) == NULL) {
			fprintf(stderr,
			    "%s: unknown option --%s (try --help)\n",
			    prog->name, name);
			return MHS_EINVAL;
		}
		if (eq != NULL)
			val = eq + 1;
		else if (o->type == MHS_OPT_BOOL &&
		    (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
			val = "true";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "%s: --%s needs a value\n", prog->name,
			    name);
			return MHS_EINVAL;
		}
		if ((rv = config_set("command line", o, val)) != 0)
			return rv;
	}
	return 0;
}
