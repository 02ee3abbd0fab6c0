-- abort.lua: abort in the middle of a message empties the per-message state
-- (docs/CONFORMANCE.md, "Per-message state"): nothing of the aborted message (sender and its
-- BODY=8BITMIME, recipients, headers, Subject, X-Delete-Me, remembered action, body
-- bytes, queue id) shows in the next message on the same connection. Aborts outside a
-- message (Postfix sends them after every transaction, sometimes twice) are harmless.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

-- The next message after an abort: a plain one whose end of message must show only
-- its own state.
local function clean_message(conn, what)
  send_message(conn, what, {
    mail = { "<sender@example.test>" },
    rcpts = { "<rcpt@example.test>" },
    headers = { { "From", "<sender@example.test>" } },
    body = { "12345\r\n" },
  })
  expect_eom(conn, false, what .. ": header change", MT_HDRCHANGE)
  expect_eom(conn, false, what .. ": header delete", MT_HDRDELETE)
  expect_eom(conn, false, what .. ": recipient delete", MT_RCPTDELETE,
    "<REMOVED@Example.TEST>")
  expect_eom(conn, false, what .. ": body replaced", MT_BODYCHANGE)
  expect_eom(conn, false, what .. ": quarantine", MT_QUARANTINE)
  expect_eom(conn, true, what .. ": add <added@example.test>",
    MT_RCPTADD, "<added@example.test>")
  expect_added(conn, "X-Conformance-Queue-Id", "unknown", what .. ": queue id")
  expect_added(conn, "X-Conformance-Body-Bytes", "7", what .. ": body bytes")
  expect_added(conn, "X-Conformance-Rcpts", "1", what .. ": recipients")
  expect_added(conn, "X-Conformance-Headers", "1", what .. ": headers")
end

-- Starts a message full of state, up to `stage` (mail, rcpt, data or header).
local STAGES = { "mail", "rcpt", "data", "header" }
local function dirty_message(conn, stage)
  local what = "message aborted after " .. stage
  step(what .. ": macros", mt.macro(conn, SMFIC_MAIL, "i", "ABORTED-" .. stage))
  step(what .. ": mail", mt.mailfrom(conn, "<change-from@example.test>", "BODY=8BITMIME"))
  expect(conn, SMFIR_CONTINUE, what .. ": mail")
  if stage == "mail" then return end
  for _, r in ipairs({ "<REMOVED@Example.TEST>", "<a@example.test>", "<b@example.test>" }) do
    step(what .. ": rcpt", mt.rcptto(conn, r))
    expect(conn, SMFIR_CONTINUE, what .. ": rcpt")
  end
  if stage == "rcpt" then return end
  step(what .. ": macros", mt.macro(conn, string.byte("T"), "i", "ABORTED-DATA"))
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  if stage == "data" then return end
  for _, h in ipairs({ { "Subject", "REPLACE-BODY QUARANTINE" }, { "X-Delete-Me", "1" },
    { "To", "<a@example.test>" }, { "X-Conformance-Action", "reject" } }) do
    step(what .. ": header", mt.header(conn, h[1], h[2]))
    expect(conn, SMFIR_CONTINUE, what .. ": header")
  end
end

run("abort", function()
  local conn = open_session()
  for _, stage in ipairs(STAGES) do
    dirty_message(conn, stage)
    step("abort", mt.abort(conn))
    clean_message(conn, "message after an abort after " .. stage)
  end

  -- Abort after end of headers and body chunks (no remembered action this time).
  step("macros", mt.macro(conn, SMFIC_MAIL, "i", "ABORTED-BODY"))
  step("mail", mt.mailfrom(conn, "<change-from@example.test>", "BODY=8BITMIME"))
  expect(conn, SMFIR_CONTINUE, "mail")
  step("rcpt", mt.rcptto(conn, "<REMOVED@Example.TEST>"))
  expect(conn, SMFIR_CONTINUE, "rcpt")
  step("header", mt.header(conn, "Subject", "REPLACE-BODY QUARANTINE"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("header", mt.header(conn, "X-Delete-Me", "1"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("eoh", mt.eoh(conn))
  expect(conn, SMFIR_CONTINUE, "eoh")
  step("body", mt.bodystring(conn, string.rep("x", 1000)))
  expect(conn, SMFIR_CONTINUE, "body")
  step("abort", mt.abort(conn))
  clean_message(conn, "message after an abort after body")

  -- The remembered action of an aborted message does not reject the next one.
  dirty_message(conn, "header")
  step("abort", mt.abort(conn))
  clean_message(conn, "message after an abort with a remembered reject")

  -- Aborts outside a message, also twice in a row, like Postfix.
  step("abort", mt.abort(conn))
  step("abort", mt.abort(conn))
  clean_message(conn, "message after two aborts outside a message")
  step("abort", mt.abort(conn))
  clean_message(conn, "message after an abort after end of message")
  mt.disconnect(conn)
end)
