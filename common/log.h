/*
 * Design notes: JSON-lines logging to stderr, one object per line:
 *   {"ts":"2026-11-25T02:30:00.123Z","level":"info","component":"gateway",
 *    "request_id":"...","event":"submit_accepted","msg":"..."}
 * The message text is escaped; the caller must never pass patient data
 * (NHS numbers, payloads) or credentials into a log line. Safe from any
 * thread: each line is formatted privately and written with one write(2).
 */
#ifndef MHS_LOG_H
#define MHS_LOG_H

enum mhs_log_level {
	MHS_LOG_DEBUG = 0,
	MHS_LOG_INFO = 1,
	MHS_LOG_WARN = 2,
	MHS_LOG_ERROR = 3,
};

/* mhs_log_init names the component and the lowest level written. */
void mhs_log_init(const char *component, int level);

/*
 * mhs_log_setup parses level ("debug|info|warn|error") and starts logging
 * as component; on a bad level it prints why, naming program, and returns
 * MHS_EINVAL (the caller exits 2).
 */
int mhs_log_setup(
    const char *program, const char *component, const char *level);

/* mhs_log_level_parse turns "debug|info|warn|error" into a level, or -1. */
int mhs_log_level_parse(const char *name);

/*
 * mhs_log writes one line. request_id may be NULL; event is a short
 * snake_case name operators can grep and alert on.
 */
void mhs_log(int level, const char *request_id, const char *event,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define mhs_debug(ev, ...) mhs_log(MHS_LOG_DEBUG, NULL, ev, __VA_ARGS__)
#define mhs_info(ev, ...)  mhs_log(MHS_LOG_INFO, NULL, ev, __VA_ARGS__)
#define mhs_warn(ev, ...)  mhs_log(MHS_LOG_WARN, NULL, ev, __VA_ARGS__)
#define mhs_error(ev, ...) mhs_log(MHS_LOG_ERROR, NULL, ev, __VA_ARGS__)

/*
 * mhs_json_escape appends s to buf (NUL-terminated, size cap) escaped for
 * a JSON string, truncating cleanly. Returns the new length.
 */
size_t mhs_json_escape(char *buf, size_t len, size_t cap, const char *s);

#endif /* MHS_LOG_H */
