/*
 * Design notes: every program's settings live in one table of options with
 * type, default, bounds and help (redis config.c's idea). Values come from,
 * in rising precedence: the defaults, an INI file (--config FILE; keys in
 * the program's section or before any section), then command-line flags
 * (--name VALUE or --name=VALUE). --help and --version are generated from
 * the table. Option names use dashes; INI keys may use underscores.
 */
#ifndef MHS_CONFIG_H
#define MHS_CONFIG_H

#include <stdbool.h>

enum mhs_opt_type {
	MHS_OPT_STR,
	MHS_OPT_INT,
	MHS_OPT_BOOL,
};

struct mhs_opt {
	const char *name; /* "listen" for --listen */
	enum mhs_opt_type type;
	const char *def;    /* default as text; NULL means empty */
	long long min, max; /* bounds for MHS_OPT_INT */
	const char *help;
	void *dst; /* char ** | long long * | bool * */
};

struct mhs_program {
	const char *name;     /* "mhs-gateway" */
	const char *section;  /* INI section: "gateway" */
	const char *summary;  /* one line for --help */
	struct mhs_opt *opts; /* terminated by an entry with name NULL */
};

/*
 * mhs_config_load fills every option's dst. Returns 0 to run, 1 when
 * --help or --version was printed (exit 0), or a negative mhs_err after
 * printing a message that names the bad option (exit 2). String values
 * are heap copies owned by the program for its lifetime.
 */
int mhs_config_load(const struct mhs_program *prog, int argc, char **argv);

/* mhs_config_usage prints --help text for prog to stdout. */
void mhs_config_usage(const struct mhs_program *prog);

#endif /* MHS_CONFIG_H */
