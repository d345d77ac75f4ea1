/*
 * Design notes: see log.h. The component and level are set once at start
 * and only read afterwards, so no lock is needed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

static const char *log_component = "mhs";
static int log_min = MHS_LOG_INFO;
static const char *const log_names[] = {"debug", "info", "warn", "error"};

void
mhs_log_init(const char *component, int level)
{
	log_component = component;
	log_min = level;
}

int
mhs_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, log_names[i]) == 0)
			return i;
	return -1;
}

int
mhs_log_setup(const char *program, const char *component, const char *level)
{
	int l = mhs_log_level_parse(level);

	if (l < 0) {
		fprintf(stderr,
		    "%s: --log-level: expected debug, info, warn or error\n",
		    program);
		return MHS_EINVAL;
	}
	mhs_log_init(component, l);
	return 0;
}

size_t
mhs_json_escape(char *buf, size_t len, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char) *s;
		char esc[7];
		size_t n = 0;

		if (c == '"' || c == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char) c;
		} else if (c == '\n') {
			esc[n++] = '\\';
			esc[n++] = 'n';
		} else if (c < 0x20) {
			memcpy(esc, "\\u00", 4);
			n = 4;
			esc[n++] = hex[c >> 4];
			esc[n++] = hex[c & 15];
		} else {
			esc[n++] = (char) c;
		}
		if (len + n + 1 > cap)
			break;
		memcpy(buf + len, esc, n);
		len += n;
	}
	if (cap > 0)
		buf[len < cap ? len : cap - 1] = '\0';
	return len;
}

static size_t
log_field(char *buf, size_t len, size_t cap, const char *key, const char *val)
{
	int n = snprintf(buf + len, cap - len, ",\"%s\":\"", key);

	/* The escaper needs len < its cap (cap - 2) to write even a NUL. */
	if (n < 0 || (size_t) n + 2 >= cap - len)
		return len;
	len = mhs_json_escape(buf, len + (size_t) n, cap - 2, val);
	buf[len++] = '"';
	buf[len] = '\0';
	return len;
}

void
mhs_log(
    int level, const char *request_id, const char *event, const char *fmt, ...)
{
	char line[2048], msg[1024], ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;
	size_t len;

	if (level < log_min)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	len = (size_t) snprintf(line, sizeof(line),
	    "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\"", ts,
	    now.tv_nsec / 1000000, log_names[level & 3], log_component);
	if (request_id != NULL && request_id[0] != '\0')
		len = log_field(
		    line, len, sizeof(line) - 2, "request_id", request_id);
	len = log_field(line, len, sizeof(line) - 2, "event", event);
	len = log_field(line, len, sizeof(line) - 2, "msg", msg);
	line[len++] = '}';
	line[len++] = '\n';
	(void) !write(STDERR_FILENO, line, len);
}
