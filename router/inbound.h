/*
 * Design notes: the router's inbound listener (DESIGN §5, issue 5 item 4).
 * Spine POSTs asynchronous business responses (a release response after a
 * release request) to it over HTTPS with a client certificate. Each one is
 * matched to our message by RefToMessageId (else ConversationId) and
 * reported to the store as RESPONDED with its payload; a repeat of the
 * same inbound MessageId inside the store's durable window is acknowledged
 * again but not stored twice; anything unmatched is journaled and
 * dead-lettered by the store's Unsolicited call, then acknowledged.
 *
 * Answers (SPINE-EBXML.md §4): 202 with an eb:Acknowledgment (or empty
 * when no ack was requested); 500 with an ebXML ErrorList for a body that
 * is not ebXML; 503 when the store cannot take it now (Spine retries) or
 * the work queue is full. Never a 500 for a well-formed unsolicited
 * message.
 *
 * Threads: nng's HTTP callback only queues the request (bounded); worker
 * threads of the listener's own make the store calls (blocking RPCs) and
 * write the answer. No store call ever runs on an nng thread.
 */
#ifndef MHS_ROUTER_INBOUND_H
#define MHS_ROUTER_INBOUND_H

struct router;
struct rt_inbound;

/*
 * rt_inbound_start serves r->cfg.inbound_listen (https:// needs
 * inbound_cert and inbound_key; with inbound_client_ca every client must
 * present a certificate that verifies against it). On success *ip belongs
 * to the caller (rt_inbound_stop); returns 0 or an mhs_err, logged.
 */
int rt_inbound_start(struct rt_inbound **ip, struct router *r);

/*
 * rt_inbound_stop stops taking requests, answers nothing more (queued
 * requests are dropped: Spine retries them), waits for every write in
 * flight and frees the listener. NULL is accepted.
 */
void rt_inbound_stop(struct rt_inbound *in);

#endif /* MHS_ROUTER_INBOUND_H */
