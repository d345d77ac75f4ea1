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

#endif
