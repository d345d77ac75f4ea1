/*
 * Design notes: mhsctl, the operator's command line. Each subcommand is a
 * small program with its own option table (common/config.h), so every one
 * has --help. The gateway URL and token come from MHS_GATEWAY_URL and
 * MHS_TOKEN (so ". run/stack.env; mhsctl status ID" works), or --url and
 * --token. Exit codes: 0 ok, 1 the call failed (the gRPC code is printed),
 * 2 bad usage, 3 the gateway could not be reached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mhsctl.h"
#include "error.h"
#include "grpc/health/v1/health.pb-c.h"
#include "mhs/v1/admin.pb-c.h"
#include "mhs/v1/prescriptions.pb-c.h"
#include "rpc.h"
#include "status.h"

static const char *const state_names[] = {"UNSPECIFIED", "ACCEPTED", "SENDING",
    "RETRYING", "DELIVERED", "RESPONDED", "FAILED", "EXPIRED"};

static struct {
	char *url, *token, *interaction, *rx, *nhs, *sender, *recipient;
	char *ctype, *payload_file, *key, *state, *page_token;
	char *journal_dir, *month, *output;
	bool fix;
	long long timeout_ms, since_ms, until_ms, page_size;
	bool json;
} o;

#define COMMON_OPTS                                                           \
	{"url", MHS_OPT_STR, "", 0, 0,                                        \
	    "gateway URL (default: $MHS_GATEWAY_URL)", &o.url},               \
	    {"token", MHS_OPT_STR, "", 0, 0,                                  \
	        "bearer token (default: $MHS_TOKEN)", &o.token},              \
	    {"timeout-ms", MHS_OPT_INT, "10000", 1, 600000,                   \
	        "deadline of the call", &o.timeout_ms},                       \
	{                                                                     \
		"json", MHS_OPT_BOOL, "false", 0, 0, "print JSON", &o.json    \
	}

static struct mhs_opt submit_opts[] = {
    COMMON_OPTS,
    {"interaction", MHS_OPT_STR, "PORX_IN020101SM31", 0, 0,
        "HL7 interaction id", &o.interaction},
    {"prescription-id", MHS_OPT_STR, "", 0, 0, "short-form prescription ID",
        &o.rx},
    {"nhs-number", MHS_OPT_STR, "", 0, 0, "patient's NHS number", &o.nhs},
    {"sender-ods", MHS_OPT_STR, "", 0, 0, "sending organisation", &o.sender},
    {"recipient-ods", MHS_OPT_STR, "", 0, 0, "receiving organisation",
        &o.recipient},
    {"content-type", MHS_OPT_STR, "text/xml", 0, 0, "payload MIME type",
        &o.ctype},
    {"payload-file", MHS_OPT_STR, "", 0, 0, "HL7 payload file (- = stdin)",
        &o.payload_file},
    {"idempotency-key", MHS_OPT_STR, "", 0, 0,
        "the partner's key for this message (required)", &o.key},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static struct mhs_opt search_opts[] = {
    COMMON_OPTS,
    {"prescription-id", MHS_OPT_STR, "", 0, 0, "prescription ID", &o.rx},
    {"nhs-number", MHS_OPT_STR, "", 0, 0, "patient's NHS number", &o.nhs},
    {"sender-ods", MHS_OPT_STR, "", 0, 0, "sending organisation", &o.sender},
    {"state", MHS_OPT_STR, "", 0, 0,
        "only this state (ACCEPTED, DELIVERED, FAILED, ...)", &o.state},
    {"since-ms", MHS_OPT_INT, "0", 0, 9223372036854775807LL,
        "accepted at or after (epoch ms)", &o.since_ms},
    {"until-ms", MHS_OPT_INT, "0", 0, 9223372036854775807LL,
        "accepted at or before (epoch ms)", &o.until_ms},
    {"page-size", MHS_OPT_INT, "50", 1, 1000, "results per page",
        &o.page_size},
    {"page-token", MHS_OPT_STR, "", 0, 0,
        "page to show (from a previous "
        "page)",
        &o.page_token},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static struct mhs_opt journal_opts[] = {
    {"journal-dir", MHS_OPT_STR, "", 0, 0,
        "journal directory (default: $MHS_JOURNAL_DIR)", &o.journal_dir},
    {"fix", MHS_OPT_BOOL, "false", 0, 0,
        "check: cut a corrupt record and what follows (store stopped)",
        &o.fix},
    {"month", MHS_OPT_STR, "", 0, 0, "export: only this month (YYYY-MM)",
        &o.month},
    {"interaction", MHS_OPT_STR, "", 0, 0, "export: only this interaction id",
        &o.interaction},
    {"output", MHS_OPT_STR, "", 0, 0, "export: write here (default stdout)",
        &o.output},
    {"json", MHS_OPT_BOOL, "false", 0, 0, "stats: print JSON lines", &o.json},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static struct mhs_opt plain_opts[] = {
    COMMON_OPTS, {NULL, 0, NULL, 0, 0, NULL, NULL}};

static int
connect_gateway(struct mhs_client **cl)
{
	const char *env;
	int rv;

	if (o.url[0] == '\0' && (env = getenv("MHS_GATEWAY_URL")) != NULL) {
		free(o.url);
		o.url = strdup(env);
	}
	if (o.token[0] == '\0' && (env = getenv("MHS_TOKEN")) != NULL) {
		free(o.token);
		o.token = strdup(env);
	}
	if (o.url[0] == '\0') {
		fprintf(stderr,
		    "mhsctl: no gateway: set MHS_GATEWAY_URL or "
		    "--url (e.g. . run/stack.env)\n");
		return 2;
	}
	if ((rv = mhs_client_open(cl, o.url)) != 0) {
		fprintf(stderr, "mhsctl: cannot use %s: %s\n", o.url,
		    mhs_strerror(rv));
		return 3;
	}
	return 0;
}

/* call_result prints why a call failed and gives the exit code. */
static int
call_result(int code, char *err)
{
	if (code < 0) {
		fprintf(stderr, "mhsctl: no answer from %s: %s\n", o.url,
		    mhs_strerror(code));
		free(err);
		return 3;
	}
	if (code > 0)
		fprintf(stderr, "mhsctl: %s (code %d): %s\n",
		    mhs_code_name(code), code, err ? err : "");
	free(err);
	return code == 0 ? 0 : 1;
}

static char *
read_payload(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n;

	*len = 0;
	if (f == NULL)
		return NULL;
	do {
		char *g = realloc(buf, cap + 65536);
		if (g == NULL) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = g;
		cap += 65536;
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
	} while (n > 0 && cap - *len == 0);
	if (f != stdin)
		fclose(f);
	return buf;
}

static int
cmd_submit(struct mhs_client *cl)
{
	Mhs__V1__SubmitRequest rq = MHS__V1__SUBMIT_REQUEST__INIT;
	Mhs__V1__SubmitResponse *r = NULL;
	char auth[300], *err = NULL, *payload;
	struct mhs_rpc_meta meta[] = {{"authorization", auth}};
	size_t len;
	int code;

	if (o.payload_file[0] == '\0' || o.key[0] == '\0') {
		fprintf(stderr,
		    "mhsctl submit: --payload-file and "
		    "--idempotency-key are required (see --help)\n");
		return 2;
	}
	if ((payload = read_payload(o.payload_file, &len)) == NULL) {
		fprintf(
		    stderr, "mhsctl submit: cannot read %s\n", o.payload_file);
		return 2;
	}
	snprintf(auth, sizeof(auth), "Bearer %s", o.token);
	rq.idempotency_key = o.key;
	rq.interaction_id = o.interaction;
	rq.prescription_id = o.rx;
	rq.nhs_number = o.nhs;
	rq.sender_ods = o.sender;
	rq.recipient_ods = o.recipient;
	rq.content_type = o.ctype;
	rq.payload.data = (uint8_t *) payload;
	rq.payload.len = len;
	code = mhs_client_call(cl, "/mhs.v1.Prescriptions/Submit", &rq.base,
	    &mhs__v1__submit_response__descriptor, (ProtobufCMessage **) &r,
	    meta, 1, (int) o.timeout_ms, &err);
	free(payload);
	if (code == 0) {
		if (o.json)
			printf("{\"message_id\":\"%s\",\"state\":\"%s\","
			       "\"duplicate\":%s,\"accepted_at_ms\":%lld}\n",
			    r->message_id, state_names[r->state & 7],
			    r->duplicate ? "true" : "false",
			    (long long) r->accepted_at_ms);
		else
			printf("%s %s%s\n", r->message_id,
			    state_names[r->state & 7],
			    r->duplicate ? " (duplicate)" : "");
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return call_result(code, err);
}

static int
cmd_status(struct mhs_client *cl, const char *id)
{
	Mhs__V1__GetStatusRequest rq = MHS__V1__GET_STATUS_REQUEST__INIT;
	Mhs__V1__MessageStatus *s = NULL;
	char auth[300], *err = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", auth}};
	int code;

	snprintf(auth, sizeof(auth), "Bearer %s", o.token);
	rq.message_id = (char *) id;
	code = mhs_client_call(cl, "/mhs.v1.Prescriptions/GetStatus", &rq.base,
	    &mhs__v1__message_status__descriptor, (ProtobufCMessage **) &s,
	    meta, 1, (int) o.timeout_ms, &err);
	if (code == 0) {
		if (o.json)
			printf(
			    "{\"message_id\":\"%s\",\"state\":\"%s\","
			    "\"interaction_id\":\"%s\",\"prescription_id\":"
			    "\"%s\",\"attempts\":%u,\"accepted_at_ms\":%lld,"
			    "\"updated_at_ms\":%lld}\n",
			    s->message_id, state_names[s->state & 7],
			    s->interaction_id, s->prescription_id, s->attempts,
			    (long long) s->accepted_at_ms,
			    (long long) s->updated_at_ms);
		else
			printf("message_id      %s\nstate           %s\n"
			       "interaction     %s\nprescription_id %s\n"
			       "sender_ods      %s\nattempts        %u\n"
			       "last_error      %s\n",
			    s->message_id, state_names[s->state & 7],
			    s->interaction_id, s->prescription_id,
			    s->sender_ods, s->attempts, s->last_error);
		protobuf_c_message_free_unpacked(&s->base, NULL);
	}
	return call_result(code, err);
}

static int
state_parse(const char *name)
{
	for (int i = 1; i < 8; i++)
		if (strcasecmp(name, state_names[i]) == 0)
			return i;
	return -1;
}

static void
print_status_line(const Mhs__V1__MessageStatus *s, const char *extra)
{
	if (o.json) {
		printf("{\"message_id\":\"%s\",\"state\":\"%s\","
		       "\"interaction_id\":\"%s\",\"prescription_id\":\"%s\","
		       "\"sender_ods\":\"%s\",\"attempts\":%u,"
		       "\"accepted_at_ms\":%lld,\"updated_at_ms\":%lld}\n",
		    s->message_id, state_names[s->state & 7],
		    s->interaction_id, s->prescription_id, s->sender_ods,
		    s->attempts, (long long) s->accepted_at_ms,
		    (long long) s->updated_at_ms);
		return;
	}
	printf("%-36s  %-9s  %-17s  %-20s  %-8s  %3u  %s\n", s->message_id,
	    state_names[s->state & 7], s->interaction_id, s->prescription_id,
	    s->sender_ods, s->attempts, extra ? extra : s->last_error);
}

static int
cmd_search(struct mhs_client *cl)
{
	Mhs__V1__SearchRequest rq = MHS__V1__SEARCH_REQUEST__INIT;
	Mhs__V1__SearchResponse *r = NULL;
	char auth[300], *err = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", auth}};
	int code, state = 0;

	if (o.state[0] != '\0' && (state = state_parse(o.state)) < 0) {
		fprintf(stderr, "mhsctl search: --state: unknown state %s\n",
		    o.state);
		return 2;
	}
	snprintf(auth, sizeof(auth), "Bearer %s", o.token);
	rq.prescription_id = o.rx;
	rq.nhs_number = o.nhs;
	rq.sender_ods = o.sender;
	rq.state = state;
	rq.since_ms = o.since_ms;
	rq.until_ms = o.until_ms;
	rq.page_size = (uint32_t) o.page_size;
	rq.page_token = o.page_token;
	code = mhs_client_call(cl, "/mhs.v1.Prescriptions/Search", &rq.base,
	    &mhs__v1__search_response__descriptor, (ProtobufCMessage **) &r,
	    meta, 1, (int) o.timeout_ms, &err);
	if (code == 0) {
		if (!o.json)
			printf("%-36s  %-9s  %-17s  %-20s  %-8s  %3s  %s\n",
			    "MESSAGE_ID", "STATE", "INTERACTION",
			    "PRESCRIPTION_ID", "SENDER", "TRY", "LAST_ERROR");
		for (size_t i = 0; i < r->n_messages; i++)
			print_status_line(r->messages[i], NULL);
		if (r->next_page_token[0] != '\0')
			fprintf(stderr, "more: --page-token %s\n",
			    r->next_page_token);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return call_result(code, err);
}

static int
cmd_dead_letters(struct mhs_client *cl)
{
	Mhs__V1__ListDeadLettersRequest rq =
	    MHS__V1__LIST_DEAD_LETTERS_REQUEST__INIT;
	Mhs__V1__ListDeadLettersResponse *r = NULL;
	char auth[300], *err = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", auth}};
	int code;

	snprintf(auth, sizeof(auth), "Bearer %s", o.token);
	rq.page_size = (uint32_t) o.page_size;
	rq.page_token = o.page_token;
	code = mhs_client_call(cl, "/mhs.v1.Admin/ListDeadLetters", &rq.base,
	    &mhs__v1__list_dead_letters_response__descriptor,
	    (ProtobufCMessage **) &r, meta, 1, (int) o.timeout_ms, &err);
	if (code == 0) {
		for (size_t i = 0; i < r->n_dead_letters; i++)
			if (r->dead_letters[i]->status != NULL)
				print_status_line(r->dead_letters[i]->status,
				    r->dead_letters[i]->reason);
		if (r->next_page_token[0] != '\0')
			fprintf(stderr, "more: --page-token %s\n",
			    r->next_page_token);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return call_result(code, err);
}

static int
cmd_redeliver(struct mhs_client *cl, char **ids, size_t n)
{
	Mhs__V1__RedeliverRequest rq = MHS__V1__REDELIVER_REQUEST__INIT;
	Mhs__V1__RedeliverResponse *r = NULL;
	char auth[300], *err = NULL;
	struct mhs_rpc_meta meta[] = {{"authorization", auth}};
	int code, failed = 0;

	snprintf(auth, sizeof(auth), "Bearer %s", o.token);
	rq.message_ids = ids;
	rq.n_message_ids = n;
	code = mhs_client_call(cl, "/mhs.v1.Admin/Redeliver", &rq.base,
	    &mhs__v1__redeliver_response__descriptor, (ProtobufCMessage **) &r,
	    meta, 1, (int) o.timeout_ms, &err);
	if (code == 0) {
		for (size_t i = 0; i < r->n_results; i++) {
			printf("%s %s: %s\n", r->results[i]->message_id,
			    mhs_code_name(r->results[i]->code),
			    r->results[i]->message);
			failed += r->results[i]->code != 0;
		}
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	code = call_result(code, err);
	return code == 0 && failed ? 1 : code;
}

static int
cmd_health(struct mhs_client *cl)
{
	Grpc__Health__V1__HealthCheckRequest rq =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *r = NULL;
	char *err = NULL;
	int code, serving = 0;

	code = mhs_client_call(cl, "/grpc.health.v1.Health/Check", &rq.base,
	    &grpc__health__v1__health_check_response__descriptor,
	    (ProtobufCMessage **) &r, NULL, 0, (int) o.timeout_ms, &err);
	if (code == 0) {
		serving = r->status ==
		    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
		printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	code = call_result(code, err);
	return code == 0 && !serving ? 1 : code;
}

/* offline_main runs the commands that read a journal directory. */
static int
offline_main(int argc, char **argv)
{
	struct mhs_program prog = {"mhsctl stats", "mhsctl",
	    "Counts by month, interaction and state, from the journal.",
	    journal_opts};
	const char *sub = "stats";
	int rv, skip = 1;

	if (strcmp(argv[1], "journal") == 0) {
		sub = argc > 2 ? argv[2] : "";
		skip = 2;
		if (strcmp(sub, "check") == 0) {
			prog.name = "mhsctl journal check [--fix]";
			prog.summary = "Check the journal's framing and "
			               "checksums; --fix repairs (store "
			               "stopped).";
		} else if (strcmp(sub, "verify") == 0) {
			prog.name = "mhsctl journal verify";
			prog.summary =
			    "Check the journal and decode every record.";
		} else if (strcmp(sub, "export") == 0) {
			prog.name = "mhsctl journal export";
			prog.summary = "Export records as JSON lines (no NHS "
			               "numbers, no payloads).";
		} else {
			bool help = strcmp(sub, "--help") == 0 ||
			    strcmp(sub, "-h") == 0;
			fprintf(help ? stdout : stderr,
			    "Usage: mhsctl journal check [--fix] | verify | "
			    "export [OPTIONS]\n(each takes --help)\n");
			return help ? 0 : 2;
		}
	}
	if ((rv = mhs_config_load(&prog, argc - skip, argv + skip)) != 0)
		return rv > 0 ? 0 : 2;
	if (strcmp(sub, "check") == 0)
		return mhsctl_journal_check(o.journal_dir, o.fix);
	if (strcmp(sub, "verify") == 0)
		return mhsctl_journal_verify(o.journal_dir);
	if (strcmp(sub, "export") == 0)
		return mhsctl_journal_export(
		    o.journal_dir, o.month, o.interaction, o.output);
	return mhsctl_stats(o.journal_dir, o.json);
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "Usage: mhsctl COMMAND [OPTIONS]\n"
	    "Commands:\n"
	    "  submit --payload-file F --idempotency-key K ...  submit a "
	    "message\n"
	    "  status MESSAGE_ID                               show a "
	    "message's state\n"
	    "  search --prescription-id ID | --nhs-number N | --sender-ods O\n"
	    "                                                  find "
	    "messages (table or --json)\n"
	    "  dead-letters                                    list FAILED "
	    "and EXPIRED messages\n"
	    "  redeliver MESSAGE_ID...                         requeue "
	    "dead-lettered messages\n"
	    "  health                                          ask the "
	    "gateway whether it is serving\n"
	    "  journal check [--fix] | verify | export         read a "
	    "journal directory offline\n"
	    "  stats                                           counts by "
	    "month, interaction, state\n"
	    "Every command takes --help. The gateway and token come from "
	    "MHS_GATEWAY_URL\nand MHS_TOKEN (. run/stack.env) or --url and "
	    "--token; the journal from\nMHS_JOURNAL_DIR or --journal-dir.\n"
	    "Exit codes: 0 ok, 1 the call failed, 2 bad usage, 3 gateway "
	    "unreachable.\n");
}

int
main(int argc, char **argv)
{
	struct mhs_program prog = {"mhsctl", "mhsctl", "", plain_opts};
	struct mhs_client *cl = NULL;
	const char *cmd, *arg = NULL;
	int rv, skip = 1;
	size_t nids = 0;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("mhsctl %s\n", MHS_VERSION);
		return 0;
	}
	cmd = argv[1];
	if (strcmp(cmd, "journal") == 0 || strcmp(cmd, "stats") == 0)
		return offline_main(argc, argv);
	if (strcmp(cmd, "submit") == 0) {
		prog.name = "mhsctl submit";
		prog.summary = "Submit one prescription message.";
		prog.opts = submit_opts;
	} else if (strcmp(cmd, "status") == 0) {
		prog.name = "mhsctl status MESSAGE_ID";
		prog.summary = "Show one message's state.";
		if (argc > 2 && strncmp(argv[2], "--", 2) != 0) {
			arg = argv[2];
			skip = 2;
		}
	} else if (strcmp(cmd, "search") == 0) {
		prog.name = "mhsctl search";
		prog.summary =
		    "Find messages by prescription ID, NHS number or "
		    "sender ODS.";
		prog.opts = search_opts;
	} else if (strcmp(cmd, "dead-letters") == 0) {
		prog.name = "mhsctl dead-letters";
		prog.summary = "List FAILED and EXPIRED messages (admin).";
		prog.opts = search_opts;
	} else if (strcmp(cmd, "redeliver") == 0) {
		prog.name = "mhsctl redeliver MESSAGE_ID...";
		prog.summary = "Requeue dead-lettered messages (admin).";
		while (
		    skip + 1 < argc && strncmp(argv[skip + 1], "--", 2) != 0)
			skip++;
		nids = (size_t) skip - 1;
	} else if (strcmp(cmd, "health") == 0) {
		prog.name = "mhsctl health";
		prog.summary = "Ask the gateway whether it is serving.";
	} else {
		fprintf(stderr, "mhsctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		return 2;
	}
	if ((rv = mhs_config_load(&prog, argc - skip, argv + skip)) != 0)
		return rv > 0 ? 0 : 2;
	if (strcmp(cmd, "status") == 0 && arg == NULL) {
		fprintf(stderr, "mhsctl status: give a MESSAGE_ID\n");
		return 2;
	}
	if (strcmp(cmd, "redeliver") == 0 && nids == 0) {
		fprintf(stderr,
		    "mhsctl redeliver: give one or more "
		    "MESSAGE_IDs\n");
		return 2;
	}
	if ((rv = connect_gateway(&cl)) != 0)
		return rv;
	if (strcmp(cmd, "submit") == 0)
		rv = cmd_submit(cl);
	else if (strcmp(cmd, "status") == 0)
		rv = cmd_status(cl, arg);
	else if (strcmp(cmd, "search") == 0)
		rv = cmd_search(cl);
	else if (strcmp(cmd, "dead-letters") == 0)
		rv = cmd_dead_letters(cl);
	else if (strcmp(cmd, "redeliver") == 0)
		rv = cmd_redeliver(cl, argv + 2, nids);
	else
		rv = cmd_health(cl);
	mhs_client_close(cl);
	return rv;
}
