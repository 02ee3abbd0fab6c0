-- eom_envelope.lua: the envelope modifications at end of message (docs/CONFORMANCE.md, end of
-- message, steps 10-13): add <added@example.test>; with BODY=8BITMIME add
-- <added-args@example.test> with NOTIFY=NEVER; delete removed@example.test exactly as
-- the MTA presented it (case kept); change a change-from@example.test sender.
--
-- miltertest limits: mt.eom_check has no check for "add recipient with ESMTP arguments"
-- (`2`) or "change sender" (`e`), and MT_RCPTADD sees only plain `+` requests. So this
-- script checks that <added-args@example.test> is never sent as a plain add; the `2`
-- and `e` requests themselves are checked by the raw-protocol part of the Rust runner.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

run("eom_envelope", function()
  local conn = open_session()

  -- Everything at once; a rejected recipient is not counted.
  step("macros", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "change-from@example.test"))
  step("mail", mt.mailfrom(conn, "<change-from@example.test>", "BODY=8BITMIME", "SIZE=100"))
  expect(conn, SMFIR_CONTINUE, "mail")
  step("rcpt", mt.rcptto(conn, "<REMOVED@Example.TEST>"))
  expect(conn, SMFIR_CONTINUE, "rcpt <REMOVED@Example.TEST>")
  step("rcpt", mt.rcptto(conn, "<reject-rcpt@example.test>"))
  expect(conn, SMFIR_REPLYCODE, "rcpt <reject-rcpt@example.test>")
  step("rcpt", mt.rcptto(conn, "<keep@example.test>", "NOTIFY=SUCCESS"))
  expect(conn, SMFIR_CONTINUE, "rcpt <keep@example.test>")
  step("header", mt.header(conn, "Subject", "envelope"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom")
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, false, "<added-args@example.test> as a plain add (it needs NOTIFY=NEVER)",
    MT_RCPTADD, "<added-args@example.test>")
  expect_eom(conn, true, "delete <REMOVED@Example.TEST> as presented",
    MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  expect_eom(conn, false, "delete in another case", MT_RCPTDELETE, "<removed@example.test>")
  expect_eom(conn, false, "delete <keep@example.test>", MT_RCPTDELETE, "<keep@example.test>")
  expect_eom(conn, false, "delete the rejected recipient",
    MT_RCPTDELETE, "<reject-rcpt@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "2", "accepted recipients")

  -- Without angle brackets: matched all the same, deleted exactly as presented.
  send_message(conn, "addresses without brackets", {
    mail = { "Change-From@Example.Test" },
    rcpts = { "removed@example.test" },
    headers = { { "Subject", "no brackets" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, true, "delete removed@example.test as presented",
    MT_RCPTDELETE, "removed@example.test")
  expect_eom(conn, false, "delete with brackets added",
    MT_RCPTDELETE, "<removed@example.test>")

  -- Nothing special: only <added@example.test>. BODY=8BITMIME of the first message and
  -- its recipients do not leak into this one.
  send_message(conn, "plain message", {
    mail = { "<plain@example.test>", "BODY=7BIT" },
    rcpts = { "<other@example.test>" },
    headers = { { "Subject", "plain" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, false, "any recipient delete", MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  expect_eom(conn, false, "delete <other@example.test>",
    MT_RCPTDELETE, "<other@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "1", "accepted recipients")

  -- BODY=8BITMIME in any case, between other arguments.
  send_message(conn, "body=8bitmime lower case", {
    mail = { "<sender@example.test>", "SIZE=10", "body=8bitmime" },
    rcpts = { "<removed@EXAMPLE.test>", "<Removed@example.test>" },
    headers = { { "Subject", "8bit" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, true, "delete <removed@EXAMPLE.test>", MT_RCPTDELETE,
    "<removed@EXAMPLE.test>")
  expect_eom(conn, true, "delete <Removed@example.test>", MT_RCPTDELETE,
    "<Removed@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "2", "accepted recipients")
  mt.disconnect(conn)
end)
