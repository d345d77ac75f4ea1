/*
 * Design notes: see stack.h. Waits are bounded and poll a condition
 * (stack.env present, process gone); failures say what was awaited.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "stack.h"
#include "util.h"
#include "validate.h"

static bool
port_free(int port)
{
	struct sockaddr_in a = {0};
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t) port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/*
 * free_port_base picks n consecutive free ports below the kernel's
 * ephemeral range, so that the stack's own outgoing connections can never
 * take a port one of its servers is about to listen on.
 */
static int
free_port_base(int n)
{
	int lo = 32768, hi = 60999, top;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

	if (f != NULL) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	top = lo - n - 1;
	if (top <= 12000)
		top = 12000 + 8000;
	srand((unsigned) (getpid() ^ time(NULL)));
	for (int tries = 0; tries < 200; tries++) {
		int base = 10000 + rand() % (top - 10000), i;
		for (i = 0; i < n && port_free(base + i); i++)
			;
		if (i == n)
			return base;
	}
	return -1;
}

static void
env_value(const char *line, const char *key, char *out, size_t len)
{
	size_t k = strlen(key);

	if (strncmp(line, key, k) == 0 && line[k] == '=') {
		snprintf(out, len, "%s", line + k + 1);
		out[strcspn(out, "\n")] = '\0';
	}
}

static bool
stack_read_env(struct stack *s)
{
	char path[300], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/stack.env", s->dir);
	if ((f = fopen(path, "r")) == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL) {
		env_value(line, "MHS_GATEWAY_URL", s->gateway_url,
		    sizeof(s->gateway_url));
		env_value(
		    line, "MHS_HTTP_URL", s->http_url, sizeof(s->http_url));
		env_value(
		    line, "MHS_SPINE_URL", s->spine_url, sizeof(s->spine_url));
		env_value(
		    line, "MHS_SPINE_CA", s->spine_ca, sizeof(s->spine_ca));
		env_value(line, "MHS_SPINE_CLIENT_CERT", s->client_cert,
		    sizeof(s->client_cert));
		env_value(line, "MHS_SPINE_CLIENT_KEY", s->client_key,
		    sizeof(s->client_key));
		env_value(line, "MHS_TOKEN", s->token, sizeof(s->token));
		env_value(
		    line, "MHS_PIDS_DIR", s->pids_dir, sizeof(s->pids_dir));
	}
	fclose(f);
	return s->gateway_url[0] && s->token[0] && s->pids_dir[0];
}

bool
stack_start(struct stack *s, int routers)
{
	char base[16], nrouters[16], log[300];

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/mhs-it-XXXXXX");
	if (mkdtemp(s->dir) == NULL)
		return false;
	if ((s->port_base = free_port_base(6 + 2 * routers)) < 0)
		return false;
	snprintf(base, sizeof(base), "%d", s->port_base);
	snprintf(nrouters, sizeof(nrouters), "%d", routers);
	snprintf(log, sizeof(log), "%s/run.out", s->dir);
	if ((s->pid = fork()) == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		setpgid(0, 0);
		execl("/bin/bash", "bash", MHS_SOURCE_DIR "/scripts/run",
		    "--dir", s->dir, "--port-base", base, "--routers",
		    nrouters, "--bin", MHS_BUILD_DIR, (char *) NULL);
		_exit(127);
	}
	for (int i = 0; i < 1200;
	     i++) { /* up to 120 s: ASan builds are slow */
		int st;
		if (stack_read_env(s))
			return true;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			fprintf(
			    stderr, "scripts/run exited early; see %s\n", log);
			s->pid = 0;
			return false;
		}
		usleep(100000);
	}
	fprintf(stderr, "stack.env did not appear in 120 s; see %s\n", log);
	return false;
}

static int
pids_collect(const struct stack *s, pid_t *out, int max)
{
	DIR *d = opendir(s->pids_dir);
	struct dirent *e;
	int n = 0;

	while (d != NULL && (e = readdir(d)) != NULL && n < max) {
		char path[600];
		FILE *f;
		int pid;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", s->pids_dir, e->d_name);
		if ((f = fopen(path, "r")) != NULL) {
			if (fscanf(f, "%d", &pid) == 1)
				out[n++] = pid;
			fclose(f);
		}
	}
	if (d != NULL)
		closedir(d);
	return n;
}

bool
stack_stop(struct stack *s)
{
	pid_t pids[32];
	int n = pids_collect(s, pids, 32), st;
	bool exited = false;

	if (s->pid <= 0)
		return false;
	kill(s->pid, SIGTERM);
	for (int i = 0; i < 600 && !exited; i++) { /* 60 s */
		exited = waitpid(s->pid, &st, WNOHANG) == s->pid;
		if (!exited)
			usleep(100000);
	}
	if (!exited) {
		fprintf(stderr, "scripts/run did not stop within 60 s\n");
		kill(-s->pid, SIGKILL);
		waitpid(s->pid, &st, 0);
		return false;
	}
	for (int i = 0; i < n; i++) {
		if (kill(pids[i], 0) == 0 || errno != ESRCH) {
			fprintf(stderr,
			    "process %d still running after stop\n",
			    (int) pids[i]);
			return false;
		}
	}
	if (n == 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "scripts/run: %d pid files, exit status %d\n",
		    n, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return false;
	}
	return true;
}

bool
stack_restarts(const struct stack *s)
{
	char path[300], line[512];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/run.out", s->dir);
	if ((f = fopen(path, "r")) == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, "exited; restarting") != NULL;
	fclose(f);
	return found;
}

bool
stack_sanitizer_clean(const struct stack *s)
{
	char cmd[400];

	/* ASan, LSan and UBSan reports of any process land in its log. */
	snprintf(cmd, sizeof(cmd),
	    "grep -lE 'Sanitizer|runtime error:' '%s'/logs/*.log >&2", s->dir);
	return system(cmd) != 0;
}

void
stack_cleanup(const struct stack *s)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (strncmp(s->dir, "/tmp/mhs-it-", 12) == 0)
		(void) !system(cmd);
}

static size_t
http_write(char *data, size_t size, size_t n, void *arg)
{
	mhs_buf_append(arg, data, size * n);
	return size * n;
}

int
stack_http(const struct stack *s, const char *method, const char *url,
    const char *body, struct mhs_buf *out)
{
	CURL *c = curl_easy_init();
	long status = -1;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_CAINFO, s->spine_ca);
	curl_easy_setopt(c, CURLOPT_SSLCERT, s->client_cert);
	curl_easy_setopt(c, CURLOPT_SSLKEY, s->client_key);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return (int) status;
}

void
test_nhs_number(unsigned seed, char out[11])
{
	for (unsigned k = 0;; k++) {
		int sum = 0, check;
		snprintf(out, 11, "%09u0",
		    (seed * 7919u + k * 104729u) % 1000000000u);
		for (int i = 0; i < 9; i++)
			sum += (out[i] - '0') * (10 - i);
		check = (11 - sum % 11) % 11;
		if (check == 10)
			continue;
		out[9] = (char) ('0' + check);
		return;
	}
}

void
test_rx_id(unsigned seed, char out[21])
{
	char body[18];

	snprintf(body, sizeof(body), "%06XA99968%05X", seed & 0xffffff,
	    (seed * 2654435761u) & 0xfffff);
	snprintf(out, 21, "%.6s-%.6s-%.5s%c", body, body + 6, body + 12,
	    mhs_rx_id_check_char(body));
}

/* ---- helpers for tests that break the stack on purpose ---- */

bool
stack_env_get(const struct stack *s, const char *key, char *out, size_t len)
{
	char path[300], line[1024];
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/stack.env", s->dir);
	if ((f = fopen(path, "r")) == NULL)
		return false;
	while (out[0] == '\0' && fgets(line, sizeof(line), f) != NULL)
		env_value(line, key, out, len);
	fclose(f);
	return out[0] != '\0';
}

pid_t
stack_pid(const struct stack *s, const char *name)
{
	char path[400];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/%s.pid", s->pids_dir, name);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t) pid;
}

bool
stack_kill_restarted(const struct stack *s, const char *name, int timeout_s)
{
	pid_t old = stack_pid(s, name), now = 0;

	if (old <= 0 || kill(old, SIGKILL) != 0) {
		fprintf(stderr, "cannot kill %s (pid %d)\n", name, (int) old);
		return false;
	}
	for (int i = 0; i < timeout_s * 10; i++) {
		now = stack_pid(s, name);
		if (now > 0 && now != old && kill(now, 0) == 0)
			return true;
		usleep(100000);
	}
	fprintf(stderr, "%s was not restarted within %d s (pid %d)\n", name,
	    timeout_s, (int) now);
	return false;
}

bool
stack_sim_config(const struct stack *s, const char *json)
{
	struct mhs_buf out = MHS_BUF_INIT;
	char url[200];
	int status;

	snprintf(url, sizeof(url), "%s/_sim/config", s->spine_url);
	status = stack_http(s, "PUT", url, json, &out);
	if (status != 200)
		fprintf(stderr, "PUT /_sim/config %s: %d %s\n", json, status,
		    out.data ? out.data : "");
	mhs_buf_fini(&out);
	return status == 200;
}

bool
stack_sim_messages(const struct stack *s, struct mhs_buf *out)
{
	char url[200];

	snprintf(url, sizeof(url), "%s/_sim/messages", s->spine_url);
	mhs_buf_reset(out);
	return stack_http(s, "GET", url, NULL, out) == 200 && out->len > 0;
}

int
stack_sim_deliveries(const char *json, const char *id)
{
	char needle[64];
	const char *p, *end, *d;

	snprintf(needle, sizeof(needle), "\"message_id\":\"%.36s\"", id);
	if (json == NULL || (p = strstr(json, needle)) == NULL)
		return 0;
	end = strchr(p, '}');
	d = strstr(p, "\"deliveries\":");
	if (d == NULL || (end != NULL && d > end))
		return 0;
	return atoi(d + strlen("\"deliveries\":"));
}

int
stack_probe_get(const char *url, struct mhs_buf *out)
{
	struct mhs_buf ignore = MHS_BUF_INIT;
	CURL *c = curl_easy_init();
	long status = -1;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out != NULL ? out : &ignore);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	mhs_buf_fini(&ignore);
	return (int) status;
}

/* ---- helpers for tests that run extra processes beside the stack ---- */

int
stack_free_ports(int n)
{
	return free_port_base(n);
}

pid_t
stack_spawn(const struct stack *s, const char *name, char *const argv[])
{
	char log[400];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/logs/%s.log", s->dir, name);
	if ((pid = fork()) == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

int
stack_wait_exit(pid_t pid, int timeout_ms)
{
	int st;

	for (int i = 0; i < timeout_ms / 10 + 1; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
		usleep(10000);
	}
	return -1;
}

/* ---- helpers for router suites: flags that name the stack's dir ---- */

/* args_expand copies tmpl with @DIR@ and @PORT@ replaced into out. */
static bool
args_expand(const char *tmpl, const char *dir, int port, char *out, size_t cap)
{
	size_t n = 0;
	char num[16];

	snprintf(num, sizeof(num), "%d", port);
	for (const char *p = tmpl; *p != '\0';) {
		const char *rep = NULL;
		size_t skip = 1, len;

		if (strncmp(p, "@DIR@", 5) == 0)
			rep = dir, skip = 5;
		else if (strncmp(p, "@PORT@", 6) == 0)
			rep = num, skip = 6;
		len = rep != NULL ? strlen(rep) : 1;
		if (n + len + 1 > cap)
			return false;
		memcpy(out + n, rep != NULL ? rep : p, len);
		n += len;
		p += skip;
	}
	out[n] = '\0';
	return true;
}

int
stack_extra_port(const struct stack *s, int routers)
{
	return s->port_base + 6 + 2 * routers; /* after scripts/run's */
}

bool
stack_start_args(struct stack *s, int routers, int extra_ports,
    const char *router_args, const char *sim_args)
{
	char base[16], nrouters[16], log[300], ra[2048], sa[2048];
	int port;

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/mhs-it-XXXXXX");
	if (mkdtemp(s->dir) == NULL)
		return false;
	if ((s->port_base = free_port_base(6 + 2 * routers + extra_ports)) < 0)
		return false;
	port = stack_extra_port(s, routers);
	if (!args_expand(router_args ? router_args : "", s->dir, port, ra,
	        sizeof(ra)) ||
	    !args_expand(
	        sim_args ? sim_args : "", s->dir, port, sa, sizeof(sa)))
		return false;
	setenv("MHS_ROUTER_ARGS", ra, 1);
	setenv("MHS_SIM_ARGS", sa, 1);
	snprintf(base, sizeof(base), "%d", s->port_base);
	snprintf(nrouters, sizeof(nrouters), "%d", routers);
	snprintf(log, sizeof(log), "%s/run.out", s->dir);
	if ((s->pid = fork()) == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		setpgid(0, 0);
		execl("/bin/bash", "bash", MHS_SOURCE_DIR "/scripts/run",
		    "--dir", s->dir, "--port-base", base, "--routers",
		    nrouters, "--bin", MHS_BUILD_DIR, (char *) NULL);
		_exit(127);
	}
	for (int i = 0; i < 1200; i++) { /* up to 120 s: ASan is slow */
		int st;
		if (stack_read_env(s))
			return true;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			fprintf(
			    stderr, "scripts/run exited early; see %s\n", log);
			s->pid = 0;
			return false;
		}
		usleep(100000);
	}
	fprintf(stderr, "stack.env did not appear in 120 s; see %s\n", log);
	return false;
}

double
stack_metric(const char *http, const char *name)
{
	struct mhs_buf b = MHS_BUF_INIT;
	size_t n = strlen(name);
	const char *p, *next;
	char url[128];
	double v = -1;

	snprintf(url, sizeof(url), "%s/metrics", http);
	if (stack_probe_get(url, &b) == 200 && b.data != NULL)
		for (p = b.data; p != NULL && *p != '\0'; p = next) {
			next = strchr(p, '\n');
			next = next != NULL ? next + 1 : NULL;
			if (strncmp(p, name, n) == 0 && p[n] == ' ') {
				v = atof(p + n + 1);
				break;
			}
		}
	mhs_buf_fini(&b);
	return v;
}
