-- replies.lua: every reject, tempfail, discard and accept rule of docs/CONFORMANCE.md ("Per
-- stage"), with the addresses and names in the spellings the conventions allow.
--
-- Every reply with text arrives as SMFIR_REPLYCODE ('y'). miltertest 1.6.0 keeps the
-- text only at end of message (MT_SMTPREPLY), and the conformance milter never answers
-- end of message with a text, so neither the text nor reject-versus-tempfail is visible
-- here: the Rust runner's raw-protocol part checks the exact texts.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

local function mail(conn, sender, want, what)
  step(what .. ": macros", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "x@example.test"))
  step(what .. ": mail", mt.mailfrom(conn, sender))
  expect(conn, want, what)
end

local function rcpt(conn, recipient, want, what)
  step(what .. ": rcpt", mt.rcptto(conn, recipient))
  expect(conn, want, what)
end

local function header(conn, name, value, what)
  step(what .. ": header", mt.header(conn, name, value))
  expect(conn, SMFIR_CONTINUE, what .. ": header " .. name)
end

-- A message whose X-Conformance-Action headers decide at end of headers.
local function eoh_action(conn, what, actions, want)
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, what .. ": mail")
  rcpt(conn, "<rcpt@example.test>", SMFIR_CONTINUE, what .. ": rcpt")
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  header(conn, "Subject", "REPLACE-BODY", what)
  for _, value in ipairs(actions) do header(conn, "X-Conformance-Action", value, what) end
  step(what .. ": eoh", mt.eoh(conn))
  expect(conn, want, what .. ": eoh")
end

run("replies", function()
  -- HELO: reject.helo.test in any case is rejected (550 5.7.0), anything else continues.
  for _, name in ipairs({ "reject.helo.test", "REJECT.Helo.TEST" }) do
    local conn = mt.connect(SOCKET, 40, 0.25)
    check(conn ~= nil, "connect to " .. SOCKET)
    step("conninfo", mt.conninfo(conn, "client.example.test", "192.0.2.10"))
    expect(conn, SMFIR_CONTINUE, "connect")
    step("helo", mt.helo(conn, name))
    expect(conn, SMFIR_REPLYCODE, "HELO " .. name)
    mt.disconnect(conn)
  end
  local conn = open_session("reject.helo.test.example")
  mt.disconnect(conn)

  conn = open_session()
  -- MAIL: reject-mail (550 5.7.1) and tempfail-mail (451 4.7.1), in any spelling.
  for _, sender in ipairs({ "<reject-mail@example.test>", "<Reject-Mail@EXAMPLE.test>",
    "reject-mail@example.test", " <reject-mail@example.test> " }) do
    mail(conn, sender, SMFIR_REPLYCODE, "MAIL " .. sender)
  end
  for _, sender in ipairs({ "<tempfail-mail@example.test>", "TEMPFAIL-MAIL@example.test" }) do
    mail(conn, sender, SMFIR_REPLYCODE, "MAIL " .. sender)
  end
  -- Look-alikes continue.
  for _, sender in ipairs({ "<reject-mail@example.test.other>", "<xreject-mail@example.test>",
    "<>" }) do
    mail(conn, sender, SMFIR_CONTINUE, "MAIL " .. sender)
    step("abort", mt.abort(conn))
  end

  -- RCPT: reject-rcpt (550 5.1.1) and tempfail-rcpt (451 4.7.1) are not counted;
  -- the message goes on.
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, "MAIL before RCPT rules")
  rcpt(conn, "<Reject-Rcpt@Example.Test>", SMFIR_REPLYCODE, "RCPT reject-rcpt")
  rcpt(conn, "tempfail-rcpt@example.test", SMFIR_REPLYCODE, "RCPT tempfail-rcpt")
  rcpt(conn, "<ok@example.test>", SMFIR_CONTINUE, "RCPT ok")
  step("header", mt.header(conn, "Subject", "rcpt rules"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom after rejected recipients")
  expect_added(conn, "X-Conformance-Rcpts", "1", "rejected recipients are not counted")

  -- RCPT discard-rcpt discards the whole message.
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, "MAIL before discard-rcpt")
  rcpt(conn, "<ok@example.test>", SMFIR_CONTINUE, "RCPT ok")
  rcpt(conn, "<DISCARD-rcpt@example.test>", SMFIR_DISCARD, "RCPT discard-rcpt")

  -- End of headers: the remembered X-Conformance-Action (trimmed, any case); a later
  -- one replaces an earlier one; other values are ordinary headers.
  eoh_action(conn, "discard", { "discard" }, SMFIR_DISCARD)
  eoh_action(conn, "reject", { " \tReject \t" }, SMFIR_REPLYCODE)
  eoh_action(conn, "accept", { "ACCEPT" }, SMFIR_ACCEPT)
  eoh_action(conn, "later action wins", { "reject", "discard" }, SMFIR_DISCARD)
  eoh_action(conn, "later action wins", { "discard", "accept" }, SMFIR_ACCEPT)
  eoh_action(conn, "unknown value ignored", { "reject", "bounce" }, SMFIR_REPLYCODE)
  eoh_action(conn, "no action", { "reject it", "" }, SMFIR_CONTINUE)
  step("body", mt.bodystring(conn, "body\r\n"))
  expect(conn, SMFIR_CONTINUE, "body")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom")
  expect_added(conn, "X-Conformance-Headers", "3",
    "X-Conformance-Action headers with other values are counted")

  -- A message after an accepted one continues normally.
  send_message(conn, "after accept", {
    mail = { "<sender@example.test>" }, rcpts = { "<rcpt@example.test>" },
    headers = { { "Subject", "after" } },
  })
  expect_added(conn, "X-Conformance-Headers", "1", "counted headers")

  -- Unknown SMTP command: rejected (500 5.5.1).
  step("unknown", mt.unknown(conn, "XYZZY plugh"))
  expect(conn, SMFIR_REPLYCODE, "unknown command")
  mt.disconnect(conn)
end)
