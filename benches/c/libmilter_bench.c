/*
 * The benchmark workload on libmilter (the sendmail C reference library).
 *
 * Build: cc -O2 -o libmilter_bench libmilter_bench.c -lmilter -lpthread
 * Usage: libmilter_bench inet:PORT@127.0.0.1 | unix:/path
 *
 * Every stage has a callback (so libmilter negotiates protocol flags 0 and
 * the MTA sends and expects a reply for every stage); each returns continue.
 * Body bytes are counted per message; end of message adds
 * "X-Bench: <body bytes>" and continues. Actions: SMFIF_ADDHDRS only.
 * smfi_main() stops on SIGTERM/SIGINT/SIGHUP by itself.
 *
 * TCP_NODELAY: libmilter offers no way to reach the accepted socket, and it
 * writes the add-header reply and the final continue at end of message with
 * two separate writes, so over TCP Nagle holds the second one until the
 * MTA's delayed ACK (~40 ms per message). This program therefore defines its
 * own accept(), which the dynamic linker binds libmilter's accept() calls to
 * (the executable's definition comes first in symbol lookup); it calls
 * accept4() and sets TCP_NODELAY on inet sockets. Set the environment
 * variable LIBMILTER_BENCH_NAGLE=1 to get stock libmilter behaviour.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <libmilter/mfapi.h>

static int set_nodelay; /* set once in main, before any accept */

int
accept(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len)
{
	int s = accept4(fd, addr, len, 0);

	if (s >= 0 && set_nodelay) {
		int one = 1;
		(void) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return s;
}

struct conn {
	unsigned long long body_bytes;
};

static struct conn *
get_conn(SMFICTX *ctx)
{
	struct conn *c = smfi_getpriv(ctx);

	if (c == NULL) {
		c = calloc(1, sizeof *c);
		if (c != NULL)
			smfi_setpriv(ctx, c);
	}
	return c;
}

static void
reset(SMFICTX *ctx)
{
	struct conn *c = smfi_getpriv(ctx);

	if (c != NULL)
		c->body_bytes = 0;
}

static sfsistat
on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
	(void) host;
	(void) addr;
	return get_conn(ctx) != NULL ? SMFIS_CONTINUE : SMFIS_TEMPFAIL;
}

static sfsistat
on_helo(SMFICTX *ctx, char *helo)
{
	(void) ctx;
	(void) helo;
	return SMFIS_CONTINUE;
}

static sfsistat
on_envfrom(SMFICTX *ctx, char **argv)
{
	(void) argv;
	if (get_conn(ctx) == NULL)
		return SMFIS_TEMPFAIL;
	reset(ctx);
	return SMFIS_CONTINUE;
}

static sfsistat
on_envrcpt(SMFICTX *ctx, char **argv)
{
	(void) ctx;
	(void) argv;
	return SMFIS_CONTINUE;
}

static sfsistat
on_data(SMFICTX *ctx)
{
	(void) ctx;
	return SMFIS_CONTINUE;
}

static sfsistat
on_header(SMFICTX *ctx, char *name, char *value)
{
	(void) ctx;
	(void) name;
	(void) value;
	return SMFIS_CONTINUE;
}

static sfsistat
on_eoh(SMFICTX *ctx)
{
	(void) ctx;
	return SMFIS_CONTINUE;
}

static sfsistat
on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct conn *c = get_conn(ctx);

	(void) chunk;
	if (c == NULL)
		return SMFIS_TEMPFAIL;
	c->body_bytes += len;
	return SMFIS_CONTINUE;
}

static sfsistat
on_eom(SMFICTX *ctx)
{
	struct conn *c = get_conn(ctx);
	char value[32];

	if (c == NULL)
		return SMFIS_TEMPFAIL;
	snprintf(value, sizeof value, "%llu", c->body_bytes);
	c->body_bytes = 0;
	if (smfi_addheader(ctx, "X-Bench", value) != MI_SUCCESS)
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat
on_abort(SMFICTX *ctx)
{
	reset(ctx);
	return SMFIS_CONTINUE;
}

static sfsistat
on_close(SMFICTX *ctx)
{
	struct conn *c = smfi_getpriv(ctx);

	if (c != NULL) {
		smfi_setpriv(ctx, NULL);
		free(c);
	}
	return SMFIS_CONTINUE;
}

static sfsistat
on_unknown(SMFICTX *ctx, const char *cmd)
{
	(void) ctx;
	(void) cmd;
	return SMFIS_CONTINUE;
}

int
main(int argc, char **argv)
{
	struct smfiDesc desc;
	const char *nagle;

	if (argc != 2 || (strncmp(argv[1], "inet:", 5) != 0 &&
	    strncmp(argv[1], "unix:", 5) != 0 &&
	    strncmp(argv[1], "local:", 6) != 0)) {
		fprintf(stderr, "usage: %s inet:PORT@127.0.0.1 | unix:/path\n",
		    argv[0]);
		return 2;
	}
	nagle = getenv("LIBMILTER_BENCH_NAGLE");
	set_nodelay = strncmp(argv[1], "inet", 4) == 0 &&
	    !(nagle != NULL && strcmp(nagle, "1") == 0);

	memset(&desc, 0, sizeof desc);
	desc.xxfi_name = "libmilter_bench";
	desc.xxfi_version = SMFI_VERSION;
	desc.xxfi_flags = SMFIF_ADDHDRS;
	desc.xxfi_connect = on_connect;
	desc.xxfi_helo = on_helo;
	desc.xxfi_envfrom = on_envfrom;
	desc.xxfi_envrcpt = on_envrcpt;
	desc.xxfi_header = on_header;
	desc.xxfi_eoh = on_eoh;
	desc.xxfi_body = on_body;
	desc.xxfi_eom = on_eom;
	desc.xxfi_abort = on_abort;
	desc.xxfi_close = on_close;
	desc.xxfi_unknown = on_unknown;
	desc.xxfi_data = on_data;
	desc.xxfi_negotiate = NULL; /* default: registered flags, protocol 0 */

	if (smfi_setconn(argv[1]) != MI_SUCCESS) {
		fprintf(stderr, "smfi_setconn %s failed\n", argv[1]);
		return 1;
	}
	if (smfi_register(desc) != MI_SUCCESS) {
		fprintf(stderr, "smfi_register failed\n");
		return 1;
	}
	(void) smfi_setbacklog(4096);
	(void) smfi_settimeout(7210);
	if (smfi_opensocket(1) != MI_SUCCESS) { /* 1: remove a stale socket */
		fprintf(stderr, "smfi_opensocket %s failed\n", argv[1]);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
