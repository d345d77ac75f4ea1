/*
 * Design notes: helpers for integration tests that run the real stack:
 * scripts/run in a temporary directory on free loopback ports, with the
 * programs of this build. Nothing is mocked: a real redis-server, the real
 * store, routers, gateway and Spine simulator over real HTTPS.
 */
#ifndef MHS_TEST_STACK_H
#define MHS_TEST_STACK_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"

struct stack {
	char dir[256];
	int port_base;
	pid_t pid; /* scripts/run */
	char gateway_url[128];
	char http_url[128];
	char spine_url[128];
	char spine_ca[300];
	char client_cert[300];
	char client_key[300];
	char token[128];
	char pids_dir[300];
};

/* stack_start runs scripts/run and waits (bounded) for stack.env. */
bool stack_start(struct stack *s, int routers);
/* stack_stop sends SIGTERM and checks that no process is left behind. */
bool stack_stop(struct stack *s);
/* stack_restarts: did scripts/run have to restart a crashed process? */
bool stack_restarts(const struct stack *s);
/* stack_sanitizer_clean: no sanitizer report in any process's log. */
bool stack_sanitizer_clean(const struct stack *s);
/* stack_cleanup removes the stack's directory (after a clean stop). */
void stack_cleanup(const struct stack *s);
/* stack_http_get fetches url (HTTPS with the stack's CA and client cert);
 * returns the HTTP status or -1. */
int stack_http(const struct stack *s, const char *method, const char *url,
    const char *body, struct mhs_buf *out);

/* Valid test identifiers. */
void test_nhs_number(unsigned seed, char out[11]);
void test_rx_id(unsigned seed, char out[21]);

/*
 * Helpers for tests that break the stack on purpose (store suites).
 */
/* stack_env_get copies KEY's value from DIR/stack.env; false if absent. */
bool stack_env_get(
    const struct stack *s, const char *key, char *out, size_t len);
/* stack_pid reads DIR/pids/NAME.pid ("store", "redis", "router-1", ...);
 * 0 when there is none. */
pid_t stack_pid(const struct stack *s, const char *name);
/* stack_kill_restarted sends SIGKILL to NAME and waits (bounded by
 * timeout_s) until scripts/run has started a new NAME: a different pid
 * that is alive. False (with the reason on stderr) otherwise. */
bool stack_kill_restarted(
    const struct stack *s, const char *name, int timeout_s);
/* stack_sim_config PUTs json to the simulator's /_sim/config; true on
 * 200. */
bool stack_sim_config(const struct stack *s, const char *json);
/* stack_sim_messages GETs the simulator's /_sim/messages JSON into out;
 * true on 200. */
bool stack_sim_messages(const struct stack *s, struct mhs_buf *out);
/* stack_sim_deliveries: the "deliveries" count of message id in a
 * /_sim/messages JSON array; 0 when the simulator never saw it. */
int stack_sim_deliveries(const char *json, const char *id);
/* stack_probe_get: a plain HTTP GET of a probe url (/readyz, /metrics);
 * returns the status or -1, and the body in out (may be NULL). */
int stack_probe_get(const char *url, struct mhs_buf *out);

/* stack_metric: the value of the line "name value" of http's /metrics
 * (http is a probe base URL such as http://127.0.0.1:7701), or -1. */
double stack_metric(const char *http, const char *name);

/*
 * Helpers for tests that run extra processes beside the stack (gateway
 * suites: a gateway with its own flags against the stack's store).
 */
/* stack_free_ports: the first of n consecutive free loopback ports below
 * the ephemeral range, or -1. */
int stack_free_ports(int n);
/* stack_spawn starts argv[0] (a path) with argv, its output appended to
 * DIR/logs/NAME.log (so stack_sanitizer_clean reads it too); returns the
 * pid, or -1. The caller reaps it (stack_wait_exit). */
pid_t stack_spawn(const struct stack *s, const char *name, char *const argv[]);
/* stack_wait_exit waits up to timeout_ms for pid to exit; returns its
 * wait status, or -1 when it is still running. */
int stack_wait_exit(pid_t pid, int timeout_ms);

/*
 * Helpers for router suites (flags that name the stack's own directory).
 */
/* stack_start_args is stack_start with extra_ports more free ports
 * reserved after the stack's (the first is stack_extra_port(s, routers))
 * and with MHS_ROUTER_ARGS / MHS_SIM_ARGS set from the templates (NULL:
 * none), in which @DIR@ becomes the stack's directory (its certificates
 * are in @DIR@/certs) and @PORT@ the first extra port. Other MHS_*_ARGS
 * are taken from the environment as they are. */
bool stack_start_args(struct stack *s, int routers, int extra_ports,
    const char *router_args, const char *sim_args);
/* stack_extra_port: the first port after a stack of that many routers. */
int stack_extra_port(const struct stack *s, int routers);

#endif
