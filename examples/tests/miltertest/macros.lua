-- macros.lua: the queue id header X-Conformance-Queue-Id (docs/CONFORMANCE.md, end of message,
-- step 6) from macro `i`, spelled `i` or `{i}`, sent at MAIL like Sendmail or at DATA,
-- end of headers and end of message like Postfix. The most recent value of the current
-- message wins; a value from an earlier message is never used; no value gives `unknown`.
--
-- Every message sends a macro packet for MAIL, as both MTAs do (Sendmail with `i`,
-- Postfix with `{mail_addr}` but no `i`). libmilter ignores `D` packets for header and
-- body chunks, so values sent only there are not tested.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

local STAGE_DATA = string.byte("T")
local STAGE_EOH = string.byte("N")
local STAGE_EOM = string.byte("E")

local counter = 0

-- One message; `macros` maps a stage (mail, data, eoh, eom) to a list of name, value
-- pairs sent just before that stage. Returns after checking the queue id header.
local function message(conn, what, macros, want)
  counter = counter + 1
  local function send(stage, pairs_)
    if pairs_ ~= nil then
      step(what .. ": macros", mt.macro(conn, stage, table.unpack(pairs_)))
    end
  end
  send(SMFIC_MAIL, macros.mail or { "{mail_addr}", "sender@example.test" })
  step(what .. ": mail", mt.mailfrom(conn, "<sender@example.test>"))
  expect(conn, SMFIR_CONTINUE, what .. ": mail")
  step(what .. ": rcpt", mt.rcptto(conn, "<rcpt@example.test>"))
  expect(conn, SMFIR_CONTINUE, what .. ": rcpt")
  send(STAGE_DATA, macros.data)
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  step(what .. ": header", mt.header(conn, "Subject", "message " .. counter))
  expect(conn, SMFIR_CONTINUE, what .. ": header")
  send(STAGE_EOH, macros.eoh)
  step(what .. ": eoh", mt.eoh(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eoh")
  step(what .. ": body", mt.bodystring(conn, "body\r\n"))
  expect(conn, SMFIR_CONTINUE, what .. ": body")
  send(STAGE_EOM, macros.eom)
  step(what .. ": eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eom")
  expect_added(conn, "X-Conformance-Queue-Id", want, what)
end

run("macros", function()
  local conn = open_session()

  -- Sendmail: `i` with MAIL only.
  message(conn, "Sendmail-style i at MAIL", { mail = { "i", "SM00001" } }, "SM00001")
  -- The next message's MAIL macros carry no `i`: the previous value must not leak.
  message(conn, "message after a Sendmail-style one", {}, "unknown")
  message(conn, "{i} at MAIL", { mail = { "{i}", "SM00002", "{mail_addr}", "a@b.test" } },
    "SM00002")

  -- Postfix: `i` at DATA and end of headers, `{i}` at end of message.
  message(conn, "Postfix-style i from DATA on", {
    data = { "i", "PF00003" }, eoh = { "i", "PF00003" }, eom = { "{i}", "PF00003" },
  }, "PF00003")
  message(conn, "message after a Postfix-style one", {}, "unknown")
  message(conn, "i at DATA only", { data = { "i", "PF00004" } }, "PF00004")
  message(conn, "i at end of headers only", { eoh = { "i", "PF00005" } }, "PF00005")
  message(conn, "{i} at end of message only", { eom = { "{i}", "PF00006" } }, "PF00006")

  -- The most recent value wins.
  message(conn, "MAIL then end of message", {
    mail = { "i", "EARLY" }, eom = { "{i}", "LATE" },
  }, "LATE")
  message(conn, "MAIL then DATA", { mail = { "{i}", "EARLY" }, data = { "i", "MIDDLE" } },
    "MIDDLE")
  message(conn, "MAIL, DATA, end of headers, end of message", {
    mail = { "i", "Q1" }, data = { "i", "Q2" }, eoh = { "i", "Q3" }, eom = { "{i}", "Q4" },
  }, "Q4")
  message(conn, "no i at all", {}, "unknown")

  -- A message rejected at MAIL, with a queue id, leaves nothing behind.
  step("macros", mt.macro(conn, SMFIC_MAIL, "i", "REJECTED1"))
  step("mail", mt.mailfrom(conn, "<reject-mail@example.test>"))
  expect(conn, SMFIR_REPLYCODE, "reject-mail")
  message(conn, "message after a rejected MAIL", {}, "unknown")

  -- An aborted message, with a queue id at DATA, leaves nothing behind.
  step("macros", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "sender@example.test"))
  step("mail", mt.mailfrom(conn, "<sender@example.test>"))
  expect(conn, SMFIR_CONTINUE, "mail")
  step("rcpt", mt.rcptto(conn, "<rcpt@example.test>"))
  expect(conn, SMFIR_CONTINUE, "rcpt")
  step("macros", mt.macro(conn, STAGE_DATA, "i", "ABORTED1"))
  step("data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, "data")
  step("abort", mt.abort(conn))
  message(conn, "message after an aborted one", {}, "unknown")
  mt.disconnect(conn)

  -- A new connection starts without any queue id.
  conn = open_session()
  message(conn, "first message of a new connection", {}, "unknown")
  mt.disconnect(conn)
end)
