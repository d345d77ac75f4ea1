/*
 * Design notes: who may call what. The clients file holds one client per
 * line:
 *     <client-id> <sha256-hex-of-token> <methods> <sender-ods>
 * methods: "*", or a comma list of "pkg.Service/Method" entries and
 * of "pkg.Service/" followed by a star for a whole service;
 * sender-ods: "*" or a comma list of ODS codes the client may submit as.
 * Admin methods (mhs.v1.Admin/...) are like any other: only a client whose
 * list names them, or "mhs.v1.Admin/" plus a star, or "*" (which allows
 * every method, so makes an admin client), may call them. A pharmacy's
 * line is typically
 *     pharm-fa565 <hash>
 * mhs.v1.Prescriptions/Submit,mhs.v1.Prescriptions/GetStatus FA565 Health
 * needs no token at all. Only a hash of each token is stored; tokens are
 * compared by hash in constant time against every client. The file is refused
 * when group or others can read or write it. Read once at start; read-only
 * afterwards.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "gateway.h"
#include "log.h"
#include "util.h"

static int
split_list(const char *s, char ***outp, size_t *np)
{
	char *copy = strdup(s), *save = NULL, *tok;
	char **out = NULL;
	size_t n = 0;

	if (copy == NULL)
		return MHS_ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		char **grown = realloc(out, (n + 1) * sizeof(*out));
		if (grown == NULL || (grown[n] = strdup(tok)) == NULL) {
			free(grown ? grown : out);
			free(copy);
			return MHS_ENOMEM;
		}
		out = grown;
		n++;
	}
	free(copy);
	*outp = out;
	*np = n;
	return 0;
}

static int
hex_decode32(const char *hex, unsigned char out[32])
{
	if (strlen(hex) != 64)
		return MHS_EINVAL;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return MHS_EINVAL;
		out[i] = (unsigned char) v;
	}
	return 0;
}

static int
clients_parse_line(struct gw *gw, const char *file, int lineno, char *line)
{
	char id[64], hash[80], methods[1024], ods[1024];
	struct gw_client *c, *grown;
	int rv;

	if (sscanf(line, "%63s %79s %1023s %1023s", id, hash, methods, ods) !=
	    4) {
		fprintf(stderr, "%s:%d: expected \"id sha256 methods ods\"\n",
		    file, lineno);
		return MHS_EINVAL;
	}
	grown = realloc(gw->clients, (gw->n_clients + 1) * sizeof(*c));
	if (grown == NULL)
		return MHS_ENOMEM;
	gw->clients = grown;
	c = &gw->clients[gw->n_clients];
	memset(c, 0, sizeof(*c));
	c->index = gw->n_clients;
	snprintf(c->id, sizeof(c->id), "%s", id);
	if (hex_decode32(hash, c->token_hash) != 0) {
		fprintf(stderr, "%s:%d: token hash must be 64 hex digits\n",
		    file, lineno);
		return MHS_EINVAL;
	}
	gw->n_clients++;
	if ((rv = split_list(methods, &c->methods, &c->n_methods)) != 0)
		return rv;
	return split_list(ods, &c->ods, &c->n_ods);
}

int
gw_clients_load(struct gw *gw, const char *file)
{
	char line[4096];
	struct stat st;
	FILE *f;
	int rv = 0, lineno = 0;

	if ((f = fopen(file, "r")) == NULL) {
		fprintf(stderr, "cannot open clients file %s: %s\n", file,
		    strerror(errno));
		return mhs_err_errno(errno);
	}
	if (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0) {
		fprintf(stderr,
		    "clients file %s must not be readable or writable by "
		    "group or others (chmod 600)\n",
		    file);
		fclose(f);
		return MHS_EPERM;
	}
	while (rv == 0 && fgets(line, sizeof(line), f) != NULL) {
		char *p = line + strspn(line, " \t");
		lineno++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		rv = clients_parse_line(gw, file, lineno, p);
	}
	fclose(f);
	if (rv == 0 && gw->n_clients == 0) {
		fprintf(stderr, "clients file %s names no client\n", file);
		rv = MHS_EINVAL;
	}
	return rv;
}

static void
list_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
gw_clients_free(struct gw *gw)
{
	for (size_t i = 0; i < gw->n_clients; i++) {
		list_free(gw->clients[i].methods, gw->clients[i].n_methods);
		list_free(gw->clients[i].ods, gw->clients[i].n_ods);
	}
	free(gw->clients);
	gw->clients = NULL;
	gw->n_clients = 0;
}

const struct gw_client *
gw_authenticate(const struct gw *gw, const char *authorization)
{
	const struct gw_client *found = NULL;
	unsigned char h[32];
	const char *tok;

	if (authorization == NULL ||
	    strncasecmp(authorization, "Bearer ", 7) != 0)
		return NULL;
	tok = authorization + 7;
	if (*tok == '\0')
		return NULL;
	mhs_sha256(tok, strlen(tok), h);
	/* Compare against every client so timing does not say which. */
	for (size_t i = 0; i < gw->n_clients; i++)
		if (CRYPTO_memcmp(h, gw->clients[i].token_hash, 32) == 0)
			found = &gw->clients[i];
	return found;
}

static bool
method_matches(const char *pattern, const char *path)
{
	size_t n = strlen(pattern);

	if (strcmp(pattern, "*") == 0)
		return true;
	if (path[0] == '/')
		path++;
	if (n >= 2 && strcmp(pattern + n - 2, "/*") == 0)
		return strncmp(pattern, path, n - 1) == 0;
	return strcmp(pattern, path) == 0;
}

bool
gw_client_may_call(const struct gw_client *c, const char *path)
{
	for (size_t i = 0; i < c->n_methods; i++)
		if (method_matches(c->methods[i], path))
			return true;
	return false;
}

bool
gw_client_may_send_as(const struct gw_client *c, const char *ods)
{
	for (size_t i = 0; i < c->n_ods; i++)
		if (strcmp(c->ods[i], "*") == 0 ||
		    strcasecmp(c->ods[i], ods) == 0)
			return true;
	return false;
}

bool
gw_client_all_ods(const struct gw_client *c)
{
	for (size_t i = 0; i < c->n_ods; i++)
		if (strcmp(c->ods[i], "*") == 0)
			return true;
	return false;
}
