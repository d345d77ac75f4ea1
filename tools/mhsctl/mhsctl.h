/*
 * Design notes: mhsctl's commands that do not talk to the gateway
 * (journal_cmds.c). Each returns the process exit code: 0 ok, 1 the
 * journal has a problem, 2 bad usage or no journal.
 */
#ifndef MHSCTL_H
#define MHSCTL_H

#include <stdbool.h>

int mhsctl_journal_check(const char *dir, bool fix);
int mhsctl_journal_verify(const char *dir);
int mhsctl_journal_export(const char *dir, const char *month,
    const char *interaction, const char *output);
int mhsctl_stats(const char *dir, bool json);

#endif
