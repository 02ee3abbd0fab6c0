/*
 * stamp: a small libmilter milter the client tests compare with an equivalent Rust
 * milter behind our server (tests/client_libmilter.rs). Same inputs, same replies,
 * same modifications.
 *
 *   stamp SOCKET        e.g. stamp unix:/run/stamp.sock
 *
 * Behaviour (addresses compared case-insensitively without angle brackets):
 *   MAIL   blocked@example.org   -> 550 5.7.1 sender blocked by stamp
 *          tempfail@example.org  -> tempfail
 *   RCPT   nobody@example.com    -> reject
 *          remove@example.com    -> continue; deleted again at end of message
 *   header X-Stamp-Discard       -> discard
 *          X-Stamp-Replace       -> the body is replaced at end of message
 *          X-Stamp-Quarantine    -> quarantine at end of message
 *   EOM    in this order: add X-Stamp: stamped; change the first Subject to
 *          "[stamp] " + its value; add recipient <copy@example.net>; delete the
 *          remove@ recipient as it was received; change the sender to
 *          <changed@example.org> if it was change@example.org; replace the body
 *          with "replaced\r\n" if asked; quarantine "stamp quarantine" if asked;
 *          insert X-Stamp-Top: 1 at index 0; add X-Stamp-Headers: <count>;
 *          continue.
 * Per-message state is reset at MAIL, at abort and after end of message.
 */

#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct msg {
    char sender[256];
    char removed[256];
    char subject[1024];
    int have_subject;
    int replace;
    int quarantine;
    int headers;
};

static struct msg *state(SMFICTX *ctx) {
    struct msg *m = smfi_getpriv(ctx);
    if (m == NULL) {
        m = calloc(1, sizeof *m);
        smfi_setpriv(ctx, m);
    }
    return m;
}

static void reset(SMFICTX *ctx) {
    struct msg *m = smfi_getpriv(ctx);
    if (m != NULL)
        memset(m, 0, sizeof *m);
}

/* Copies the address without white space and one pair of angle brackets. */
static void bare(const char *in, char *out, size_t n) {
    size_t len;
    while (*in == ' ' || *in == '\t')
        in++;
    if (*in == '<')
        in++;
    snprintf(out, n, "%s", in);
    len = strlen(out);
    while (len > 0 && (out[len - 1] == ' ' || out[len - 1] == '\t'))
        out[--len] = '\0';
    if (len > 0 && out[len - 1] == '>')
        out[--len] = '\0';
}

static sfsistat on_mail(SMFICTX *ctx, char **argv) {
    char addr[256];
    struct msg *m;
    reset(ctx);
    m = state(ctx);
    bare(argv[0], addr, sizeof addr);
    if (strcasecmp(addr, "blocked@example.org") == 0) {
        smfi_setreply(ctx, "550", "5.7.1", "sender blocked by stamp");
        return SMFIS_REJECT;
    }
    if (strcasecmp(addr, "tempfail@example.org") == 0)
        return SMFIS_TEMPFAIL;
    snprintf(m->sender, sizeof m->sender, "%s", addr);
    return SMFIS_CONTINUE;
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv) {
    char addr[256];
    struct msg *m = state(ctx);
    bare(argv[0], addr, sizeof addr);
    if (strcasecmp(addr, "nobody@example.com") == 0)
        return SMFIS_REJECT;
    if (strcasecmp(addr, "remove@example.com") == 0)
        snprintf(m->removed, sizeof m->removed, "%s", argv[0]);
    return SMFIS_CONTINUE;
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value) {
    struct msg *m = state(ctx);
    if (strcasecmp(name, "X-Stamp-Discard") == 0)
        return SMFIS_DISCARD;
    m->headers++;
    if (strcasecmp(name, "X-Stamp-Replace") == 0)
        m->replace = 1;
    if (strcasecmp(name, "X-Stamp-Quarantine") == 0)
        m->quarantine = 1;
    if (strcasecmp(name, "Subject") == 0 && !m->have_subject) {
        snprintf(m->subject, sizeof m->subject, "%s", value);
        m->have_subject = 1;
    }
    return SMFIS_CONTINUE;
}

static sfsistat on_eom(SMFICTX *ctx) {
    struct msg *m = state(ctx);
    char buf[1100];
    smfi_addheader(ctx, "X-Stamp", "stamped");
    if (m->have_subject) {
        snprintf(buf, sizeof buf, "[stamp] %s", m->subject);
        smfi_chgheader(ctx, "Subject", 1, buf);
    }
    smfi_addrcpt(ctx, "<copy@example.net>");
    if (m->removed[0] != '\0')
        smfi_delrcpt(ctx, m->removed);
    if (strcasecmp(m->sender, "change@example.org") == 0)
        smfi_chgfrom(ctx, "<changed@example.org>", NULL);
    if (m->replace)
        smfi_replacebody(ctx, (unsigned char *)"replaced\r\n", 10);
    if (m->quarantine)
        smfi_quarantine(ctx, "stamp quarantine");
    smfi_insheader(ctx, 0, "X-Stamp-Top", "1");
    snprintf(buf, sizeof buf, "%d", m->headers);
    smfi_addheader(ctx, "X-Stamp-Headers", buf);
    reset(ctx);
    return SMFIS_CONTINUE;
}

static sfsistat on_abort(SMFICTX *ctx) {
    reset(ctx);
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx) {
    free(smfi_getpriv(ctx));
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv) {
    struct smfiDesc desc;
    memset(&desc, 0, sizeof desc);
    desc.xxfi_name = "stamp";
    desc.xxfi_version = SMFI_VERSION;
    desc.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_ADDRCPT | SMFIF_DELRCPT |
                      SMFIF_CHGBODY | SMFIF_QUARANTINE | SMFIF_CHGFROM;
    desc.xxfi_envfrom = on_mail;
    desc.xxfi_envrcpt = on_rcpt;
    desc.xxfi_header = on_header;
    desc.xxfi_eom = on_eom;
    desc.xxfi_abort = on_abort;
    desc.xxfi_close = on_close;
    if (argc != 2) {
        fprintf(stderr, "usage: stamp SOCKET\n");
        return 64;
    }
    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
        fprintf(stderr, "stamp: cannot set up %s\n", argv[1]);
        return 69;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 70;
}
