/*
 * Design notes: the HTTP probe server every process runs (DESIGN §3):
 *   GET /livez   200 "ok" while the process runs;
 *   GET /readyz  200 "ready" or 503 with the reason, from ready_fn;
 *   GET /metrics Prometheus text from metrics_fn.
 * Built on nng's HTTP server; the callbacks run on nng's threads and must
 * not block (read atomics or a mutex-protected snapshot only).
 */
#ifndef MHS_PROBE_H
#define MHS_PROBE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* ready_fn answers readiness; on false it writes a short reason. */
typedef bool (*mhs_ready_fn)(void *arg, char *why, size_t whylen);
/* metrics_fn appends Prometheus text exposition lines to out. */
typedef void (*mhs_metrics_fn)(void *arg, struct mhs_buf *out);

struct mhs_probe;

/* mhs_probe_open serves url ("http://127.0.0.1:8081") until closed. */
int mhs_probe_open(struct mhs_probe **pp, const char *url, mhs_ready_fn ready,
    mhs_metrics_fn metrics, void *arg);
void mhs_probe_close(struct mhs_probe *p);

#endif /* MHS_PROBE_H */
