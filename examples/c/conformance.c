/*
 * conformance.c -- the "conformance" milter of docs/CONFORMANCE.md, written on libmilter.
 *
 * It is the reference the Rust example (examples/conformance.rs) is compared with: for
 * the same MTA conversation both must send the same replies and the same modification
 * requests, in the same order. Every rule below cites the part of docs/CONFORMANCE.md it
 * implements.
 *
 * Build:  cc -O2 -Wall -Wextra -o conformance conformance.c -lmilter -lpthread
 * Run:    ./conformance [SOCKET]     (default inet:7357@127.0.0.1)
 *         SOCKET: inet:PORT@HOST, inet6:PORT@HOST, unix:PATH or local:PATH.
 *
 * One line per message goes to standard error: queue id, sender, accepted recipients,
 * verdict. SIGINT/SIGTERM stop it the libmilter way (smfi_stop: no new connections,
 * connections in flight may finish); it then exits with status 0.
 */

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <libmilter/mfapi.h>

#define DEFAULT_SOCKET "inet:7357@127.0.0.1"

/* Actions requested: 0xFF (all modifications and quarantine) plus SETSYMLIST (0x100). */
#define WANTED_ACTIONS                                                             \
    (SMFIF_ADDHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_DELRCPT | SMFIF_CHGHDRS | \
     SMFIF_QUARANTINE | SMFIF_CHGFROM | SMFIF_ADDRCPT_PAR | SMFIF_SETSYMLIST)

/* BIG-BODY: 200,000 lines of "0123456789abcdef\r\n" (3,600,000 bytes). */
#define BIG_LINE "0123456789abcdef\r\n"
#define BIG_LINE_LEN 18
#define BIG_LINES 200000
#define BIG_BODY_LEN ((size_t)BIG_LINE_LEN * BIG_LINES)
/* Largest replace-body packet payload. */
#define BODY_CHUNK_MAX 65535

enum action { ACTION_NONE, ACTION_DISCARD, ACTION_REJECT, ACTION_ACCEPT };

/* Per-message state (docs/CONFORMANCE.md, "Per-message state"), plus the remembered queue id. */
struct message {
    bool active;     /* a MAIL was seen and no verdict was logged yet */
    char *sender;    /* as presented by the MTA */
    bool body_8bitmime;
    char **rcpts;    /* accepted recipients, exactly as presented */
    size_t nrcpts;
    size_t rcpt_cap;
    unsigned long headers; /* counted headers */
    char *subject;   /* value of the first Subject */
    bool delete_me_seen;
    enum action action;
    unsigned long long body_bytes;
    char *queue_id;  /* latest value of macro i seen in this message */
};

/* Per-connection state, attached with smfi_setpriv. */
struct connection {
    char *client_host;
    char *client_addr;
    struct message msg;
};

static char *dup_or_null(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

static void message_clear(struct message *msg)
{
    size_t i;

    free(msg->sender);
    for (i = 0; i < msg->nrcpts; i++)
        free(msg->rcpts[i]);
    free(msg->rcpts);
    free(msg->subject);
    free(msg->queue_id);
    memset(msg, 0, sizeof *msg);
}

/* The connection state, created on first use. NULL only when out of memory. */
static struct connection *conn_get(SMFICTX *ctx)
{
    struct connection *conn = smfi_getpriv(ctx);

    if (conn == NULL) {
        conn = calloc(1, sizeof *conn);
        if (conn == NULL)
            return NULL;
        if (smfi_setpriv(ctx, conn) != MI_SUCCESS) {
            free(conn);
            return NULL;
        }
    }
    return conn;
}

/* Remembers the current value of macro i (also found as {i}): the most recent wins. */
static void remember_queue_id(SMFICTX *ctx, struct message *msg)
{
    char *value = smfi_getsymval(ctx, "i");
    char *copy;

    if (value == NULL)
        return;
    copy = strdup(value);
    if (copy == NULL)
        return;
    free(msg->queue_id);
    msg->queue_id = copy;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Address comparison (docs/CONFORMANCE.md, "Conventions"): strip surrounding white space and one
 * pair of angle brackets, then compare case-insensitively.
 */
static bool address_is(const char *presented, const char *wanted)
{
    const char *start = presented;
    const char *end;
    size_t len, wanted_len = strlen(wanted);

    if (presented == NULL)
        return false;
    end = presented + strlen(presented);
    while (start < end && is_space(*start))
        start++;
    while (end > start && is_space(end[-1]))
        end--;
    if (end - start >= 2 && *start == '<' && end[-1] == '>') {
        start++;
        end--;
    }
    len = (size_t)(end - start);
    return len == wanted_len && strncasecmp(start, wanted, len) == 0;
}

/* The value with leading and trailing spaces, tabs, CRs and LFs removed, compared
 * case-insensitively. */
static bool trimmed_is(const char *value, const char *wanted)
{
    const char *start = value;
    const char *end;
    size_t len;

    if (value == NULL)
        return false;
    end = value + strlen(value);
    while (start < end && is_space(*start))
        start++;
    while (end > start && is_space(end[-1]))
        end--;
    len = (size_t)(end - start);
    return len == strlen(wanted) && strncasecmp(start, wanted, len) == 0;
}

/* One log line per message: queue id, sender, accepted recipients, verdict. */
static void log_message(struct message *msg, const char *verdict)
{
    size_t i, len = 1;
    char *rcpts;

    if (!msg->active)
        return;
    msg->active = false;
    for (i = 0; i < msg->nrcpts; i++)
        len += strlen(msg->rcpts[i]) + 1;
    rcpts = malloc(len);
    if (rcpts != NULL) {
        rcpts[0] = '\0';
        for (i = 0; i < msg->nrcpts; i++) {
            if (i > 0)
                strcat(rcpts, ",");
            strcat(rcpts, msg->rcpts[i]);
        }
    }
    fprintf(stderr, "conformance: queue_id=%s from=%s rcpts=%s verdict=%s\n",
            msg->queue_id != NULL ? msg->queue_id : "unknown",
            msg->sender != NULL ? msg->sender : "", rcpts != NULL ? rcpts : "?",
            verdict);
    fflush(stderr);
    free(rcpts);
}

static sfsistat reply(SMFICTX *ctx, sfsistat status, char *code, char *xcode, char *text)
{
    smfi_setreply(ctx, code, xcode, text);
    return status;
}

/* Negotiation: protocol flags 0, actions 0x1FF within the offer, symbol lists only if
 * SETSYMLIST is offered. Version: libmilter answers min(offered, 6) itself. */
static sfsistat cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                             unsigned long f2, unsigned long f3, unsigned long *pf0,
                             unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    (void)f1;
    (void)f2;
    (void)f3;
    if (conn_get(ctx) == NULL)
        return SMFIS_TEMPFAIL;
    *pf0 = f0 & WANTED_ACTIONS;
    *pf1 = 0;
    *pf2 = 0;
    *pf3 = 0;
    if ((f0 & SMFIF_SETSYMLIST) != 0) {
        smfi_setsymlist(ctx, SMFIM_CONNECT, "{j} {daemon_name} {client_addr}");
        smfi_setsymlist(ctx, SMFIM_ENVFROM, "{i} {auth_authen} {mail_addr}");
        smfi_setsymlist(ctx, SMFIM_ENVRCPT, "{rcpt_addr}");
        smfi_setsymlist(ctx, SMFIM_EOM, "{i} {msg_id}");
    }
    return SMFIS_CONTINUE;
}

static sfsistat cb_connect(SMFICTX *ctx, char *hostname, struct sockaddr *hostaddr)
{
    struct connection *conn = conn_get(ctx);
    char buf[INET6_ADDRSTRLEN];
    const char *addr = NULL;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    if (hostaddr != NULL && hostaddr->sa_family == AF_INET)
        addr = inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)hostaddr)->sin_addr, buf,
                         sizeof buf);
    else if (hostaddr != NULL && hostaddr->sa_family == AF_INET6)
        addr = inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)hostaddr)->sin6_addr,
                         buf, sizeof buf);
    free(conn->client_host);
    free(conn->client_addr);
    conn->client_host = dup_or_null(hostname);
    conn->client_addr = dup_or_null(addr);
    return SMFIS_CONTINUE;
}

static sfsistat cb_helo(SMFICTX *ctx, char *helohost)
{
    if (helohost != NULL && strcasecmp(helohost, "reject.helo.test") == 0)
        return reply(ctx, SMFIS_REJECT, "550", "5.7.0", "helo rejected by conformance milter");
    return SMFIS_CONTINUE;
}

static sfsistat cb_envfrom(SMFICTX *ctx, char **argv)
{
    struct connection *conn = conn_get(ctx);
    struct message *msg;
    char *sender = argv != NULL ? argv[0] : NULL;
    size_t i;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    msg = &conn->msg;
    /* A message that never got a verdict (no abort seen) ends here. */
    log_message(msg, "abandoned");
    message_clear(msg);
    msg->active = true;
    msg->sender = dup_or_null(sender);
    remember_queue_id(ctx, msg);

    if (address_is(sender, "reject-mail@example.test")) {
        log_message(msg, "reject at mail");
        return reply(ctx, SMFIS_REJECT, "550", "5.7.1", "mail rejected by conformance milter");
    }
    if (address_is(sender, "tempfail-mail@example.test")) {
        log_message(msg, "tempfail at mail");
        return reply(ctx, SMFIS_TEMPFAIL, "451", "4.7.1",
                     "mail tempfailed by conformance milter");
    }
    for (i = 1; argv != NULL && argv[0] != NULL && argv[i] != NULL; i++) {
        if (strcasecmp(argv[i], "BODY=8BITMIME") == 0)
            msg->body_8bitmime = true;
    }
    return SMFIS_CONTINUE;
}

static sfsistat cb_envrcpt(SMFICTX *ctx, char **argv)
{
    struct connection *conn = conn_get(ctx);
    struct message *msg;
    char *rcpt = argv != NULL ? argv[0] : NULL;
    char *copy;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    msg = &conn->msg;
    remember_queue_id(ctx, msg);

    if (address_is(rcpt, "reject-rcpt@example.test"))
        return reply(ctx, SMFIS_REJECT, "550", "5.1.1", "rcpt rejected by conformance milter");
    if (address_is(rcpt, "tempfail-rcpt@example.test"))
        return reply(ctx, SMFIS_TEMPFAIL, "451", "4.7.1",
                     "rcpt tempfailed by conformance milter");
    if (address_is(rcpt, "discard-rcpt@example.test")) {
        log_message(msg, "discard at rcpt");
        return SMFIS_DISCARD;
    }
    if (msg->nrcpts == msg->rcpt_cap) {
        size_t cap = msg->rcpt_cap == 0 ? 4 : msg->rcpt_cap * 2;
        char **grown = realloc(msg->rcpts, cap * sizeof *grown);

        if (grown == NULL)
            return SMFIS_TEMPFAIL;
        msg->rcpts = grown;
        msg->rcpt_cap = cap;
    }
    copy = strdup(rcpt != NULL ? rcpt : "");
    if (copy == NULL)
        return SMFIS_TEMPFAIL;
    msg->rcpts[msg->nrcpts++] = copy;
    return SMFIS_CONTINUE;
}

static sfsistat cb_data(SMFICTX *ctx)
{
    struct connection *conn = conn_get(ctx);

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    remember_queue_id(ctx, &conn->msg);
    return SMFIS_CONTINUE;
}

static sfsistat cb_header(SMFICTX *ctx, char *name, char *value)
{
    struct connection *conn = conn_get(ctx);
    struct message *msg;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    msg = &conn->msg;
    remember_queue_id(ctx, msg);

    if (name != NULL && strcasecmp(name, "X-Conformance-Action") == 0) {
        if (trimmed_is(value, "discard")) {
            msg->action = ACTION_DISCARD;
            return SMFIS_CONTINUE;
        }
        if (trimmed_is(value, "reject")) {
            msg->action = ACTION_REJECT;
            return SMFIS_CONTINUE;
        }
        if (trimmed_is(value, "accept")) {
            msg->action = ACTION_ACCEPT;
            return SMFIS_CONTINUE;
        }
    }
    msg->headers++;
    if (name != NULL && strcasecmp(name, "Subject") == 0 && msg->subject == NULL) {
        msg->subject = strdup(value != NULL ? value : "");
        if (msg->subject == NULL)
            return SMFIS_TEMPFAIL;
    }
    if (name != NULL && strcasecmp(name, "X-Delete-Me") == 0)
        msg->delete_me_seen = true;
    return SMFIS_CONTINUE;
}

static sfsistat cb_eoh(SMFICTX *ctx)
{
    struct connection *conn = conn_get(ctx);
    struct message *msg;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    msg = &conn->msg;
    remember_queue_id(ctx, msg);

    switch (msg->action) {
    case ACTION_DISCARD:
        log_message(msg, "discard at eoh");
        return SMFIS_DISCARD;
    case ACTION_REJECT:
        log_message(msg, "reject at eoh");
        return reply(ctx, SMFIS_REJECT, "554", "5.7.1",
                     "message rejected by conformance milter");
    case ACTION_ACCEPT:
        log_message(msg, "accept at eoh");
        return SMFIS_ACCEPT;
    case ACTION_NONE:
        break;
    }
    return SMFIS_CONTINUE;
}

static sfsistat cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    struct connection *conn = conn_get(ctx);

    (void)chunk;
    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    remember_queue_id(ctx, &conn->msg);
    conn->msg.body_bytes += len;
    return SMFIS_CONTINUE;
}

static void add_number_header(SMFICTX *ctx, char *name, unsigned long long value)
{
    char buf[32];

    snprintf(buf, sizeof buf, "%llu", value);
    smfi_addheader(ctx, name, buf);
}

/* BIG-BODY, built in main() before any connection is accepted. */
static unsigned char *big_body;

static bool build_big_body(void)
{
    size_t i;

    big_body = malloc(BIG_BODY_LEN);
    if (big_body == NULL)
        return false;
    for (i = 0; i < BIG_LINES; i++)
        memcpy(big_body + i * BIG_LINE_LEN, BIG_LINE, BIG_LINE_LEN);
    return true;
}

static sfsistat cb_eom(SMFICTX *ctx)
{
    struct connection *conn = conn_get(ctx);
    struct message *msg;
    size_t i;

    if (conn == NULL)
        return SMFIS_TEMPFAIL;
    msg = &conn->msg;
    remember_queue_id(ctx, msg);

    /* 1. progress */
    smfi_progress(ctx);
    /* 2. add header */
    smfi_addheader(ctx, "X-Conformance", "seen");
    /* 3. insert header at index 0 */
    smfi_insheader(ctx, 0, "X-Conformance-First", "1");
    /* 4. change the first Subject */
    if (msg->subject != NULL) {
        const char *rest = msg->subject;
        char *value;

        while (is_space(*rest))
            rest++;
        value = malloc(strlen("[filtered] ") + strlen(rest) + 1);
        if (value != NULL) {
            strcpy(value, "[filtered] ");
            strcat(value, rest);
            smfi_chgheader(ctx, "Subject", 1, value);
            free(value);
        }
    }
    /* 5. delete the first X-Delete-Me */
    if (msg->delete_me_seen)
        smfi_chgheader(ctx, "X-Delete-Me", 1, NULL);
    /* 6.-9. informational headers */
    smfi_addheader(ctx, "X-Conformance-Queue-Id",
                   msg->queue_id != NULL ? msg->queue_id : "unknown");
    add_number_header(ctx, "X-Conformance-Body-Bytes", msg->body_bytes);
    add_number_header(ctx, "X-Conformance-Rcpts", msg->nrcpts);
    add_number_header(ctx, "X-Conformance-Headers", msg->headers);
    /* 10. add recipient */
    smfi_addrcpt(ctx, "<added@example.test>");
    /* 11. add recipient with ESMTP arguments */
    if (msg->body_8bitmime)
        smfi_addrcpt_par(ctx, "<added-args@example.test>", "NOTIFY=NEVER");
    /* 12. delete recipient, exactly as presented */
    for (i = 0; i < msg->nrcpts; i++) {
        if (address_is(msg->rcpts[i], "removed@example.test"))
            smfi_delrcpt(ctx, msg->rcpts[i]);
    }
    /* 13. change sender */
    if (address_is(msg->sender, "change-from@example.test"))
        smfi_chgfrom(ctx, "<changed-from@example.test>", NULL);
    /* 14. replace body, small */
    if (msg->subject != NULL && strstr(msg->subject, "REPLACE-BODY") != NULL)
        smfi_replacebody(ctx, (unsigned char *)"REPLACED BODY\r\n", 15);
    /* 15. replace body, BIG-BODY, in calls of at most 65535 bytes */
    if (msg->subject != NULL && strstr(msg->subject, "BIG-BODY") != NULL) {
        size_t off = 0;

        while (off < BIG_BODY_LEN) {
            size_t n = BIG_BODY_LEN - off;

            if (n > BODY_CHUNK_MAX)
                n = BODY_CHUNK_MAX;
            if (smfi_replacebody(ctx, big_body + off, (int)n) != MI_SUCCESS)
                break;
            off += n;
        }
    }
    /* 16. quarantine */
    if (msg->subject != NULL && strstr(msg->subject, "QUARANTINE") != NULL)
        smfi_quarantine(ctx, "conformance quarantine");
    /* 17. continue, then empty the per-message state */
    log_message(msg, "continue at eom");
    message_clear(msg);
    return SMFIS_CONTINUE;
}

static sfsistat cb_abort(SMFICTX *ctx)
{
    struct connection *conn = smfi_getpriv(ctx);

    if (conn != NULL) {
        log_message(&conn->msg, "aborted");
        message_clear(&conn->msg);
    }
    return SMFIS_CONTINUE;
}

static sfsistat cb_close(SMFICTX *ctx)
{
    struct connection *conn = smfi_getpriv(ctx);

    if (conn != NULL) {
        log_message(&conn->msg, "connection closed");
        message_clear(&conn->msg);
        free(conn->client_host);
        free(conn->client_addr);
        free(conn);
        smfi_setpriv(ctx, NULL);
    }
    return SMFIS_CONTINUE;
}

static sfsistat cb_unknown(SMFICTX *ctx, const char *cmd)
{
    (void)cmd;
    return reply(ctx, SMFIS_REJECT, "500", "5.5.1",
                 "command not recognised by conformance milter");
}

int main(int argc, char **argv)
{
    char *spec = argc > 1 ? argv[1] : DEFAULT_SOCKET;
    struct smfiDesc desc;

    if (argc > 2) {
        fprintf(stderr, "usage: %s [SOCKET]\n", argv[0]);
        return 2;
    }
    memset(&desc, 0, sizeof desc);
    desc.xxfi_name = "conformance";
    desc.xxfi_version = SMFI_VERSION;
    desc.xxfi_flags = WANTED_ACTIONS;
    desc.xxfi_connect = cb_connect;
    desc.xxfi_helo = cb_helo;
    desc.xxfi_envfrom = cb_envfrom;
    desc.xxfi_envrcpt = cb_envrcpt;
    desc.xxfi_header = cb_header;
    desc.xxfi_eoh = cb_eoh;
    desc.xxfi_body = cb_body;
    desc.xxfi_eom = cb_eom;
    desc.xxfi_abort = cb_abort;
    desc.xxfi_close = cb_close;
    desc.xxfi_unknown = cb_unknown;
    desc.xxfi_data = cb_data;
    desc.xxfi_negotiate = cb_negotiate;

    if (!build_big_body()) {
        fprintf(stderr, "conformance: out of memory\n");
        return 1;
    }
    if (smfi_setconn(spec) != MI_SUCCESS) {
        fprintf(stderr, "conformance: bad socket spec %s\n", spec);
        return 1;
    }
    if (smfi_register(desc) != MI_SUCCESS) {
        fprintf(stderr, "conformance: smfi_register failed\n");
        return 1;
    }
    if (smfi_opensocket(true) != MI_SUCCESS) {
        fprintf(stderr, "conformance: cannot listen on %s\n", spec);
        return 1;
    }
    fprintf(stderr, "conformance: listening on %s\n", spec);
    fflush(stderr);
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
