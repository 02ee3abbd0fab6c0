-- messages.lua: several messages on one connection, with no abort in between (as
-- Sendmail does after a message the milter rejected, discarded or accepted, and after a
-- normal end of message), and several connections at once. The verdict and state of
-- one message never leak into the next one (docs/CONFORMANCE.md, "Per-message state").
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

local function start(conn, what, sender, rcpts, headers)
  step(what .. ": macros", mt.macro(conn, SMFIC_MAIL, "i", what))
  step(what .. ": mail", mt.mailfrom(conn, sender))
  expect(conn, SMFIR_CONTINUE, what .. ": mail")
  for _, r in ipairs(rcpts) do
    step(what .. ": rcpt", mt.rcptto(conn, r))
    expect(conn, SMFIR_CONTINUE, what .. ": rcpt " .. r)
  end
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  for _, h in ipairs(headers) do
    step(what .. ": header", mt.header(conn, h[1], h[2]))
    expect(conn, SMFIR_CONTINUE, what .. ": header " .. h[1])
  end
end

local function finish(conn, what, body, counts)
  step(what .. ": eoh", mt.eoh(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eoh")
  step(what .. ": body", mt.bodystring(conn, body))
  expect(conn, SMFIR_CONTINUE, what .. ": body")
  step(what .. ": eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eom")
  expect_added(conn, "X-Conformance-Queue-Id", what, what .. ": queue id")
  expect_added(conn, "X-Conformance-Body-Bytes", tostring(#body), what .. ": body bytes")
  expect_added(conn, "X-Conformance-Rcpts", tostring(counts.rcpts), what .. ": recipients")
  expect_added(conn, "X-Conformance-Headers", tostring(counts.headers), what .. ": headers")
end

run("messages", function()
  local conn = open_session()

  -- 1: rejected at end of headers.
  start(conn, "M1", "<change-from@example.test>", { "<REMOVED@Example.TEST>" },
    { { "Subject", "REPLACE-BODY" }, { "X-Conformance-Action", "reject" } })
  step("M1: eoh", mt.eoh(conn))
  expect(conn, SMFIR_REPLYCODE, "M1: eoh reject")

  -- 2: normal; nothing of M1 (its action, Subject, recipient) is left.
  start(conn, "M2", "<sender@example.test>", { "<a@example.test>", "<b@example.test>" },
    { { "From", "<sender@example.test>" } })
  finish(conn, "M2", "two\r\n", { rcpts = 2, headers = 1 })
  expect_eom(conn, false, "M2: Subject change from M1", MT_HDRCHANGE)
  expect_eom(conn, false, "M2: recipient delete from M1", MT_RCPTDELETE,
    "<REMOVED@Example.TEST>")
  expect_eom(conn, false, "M2: body replaced", MT_BODYCHANGE)

  -- 3: accepted at end of headers: no further callbacks, no modifications.
  start(conn, "M3", "<sender@example.test>", { "<a@example.test>" },
    { { "X-Conformance-Action", "accept" }, { "Subject", "QUARANTINE" } })
  step("M3: eoh", mt.eoh(conn))
  expect(conn, SMFIR_ACCEPT, "M3: eoh accept")

  -- 4: every modification at once, right after the accepted message.
  start(conn, "M4", "<change-from@example.test>", { "<REMOVED@Example.TEST>", "<c@example.test>" },
    { { "Subject", "REPLACE-BODY QUARANTINE" }, { "X-Delete-Me", "x" }, { "To", "c" } })
  finish(conn, "M4", "four four\r\n", { rcpts = 2, headers = 3 })
  expect_eom(conn, true, "M4: Subject change", MT_HDRCHANGE, "Subject",
    "[filtered] REPLACE-BODY QUARANTINE")
  expect_eom(conn, true, "M4: delete X-Delete-Me", MT_HDRDELETE, "X-Delete-Me", 1)
  expect_eom(conn, true, "M4: delete recipient", MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  expect_eom(conn, true, "M4: replace body", MT_BODYCHANGE, "REPLACED BODY\r\n")
  expect_eom(conn, true, "M4: quarantine", MT_QUARANTINE, "conformance quarantine")

  -- 5: discarded at RCPT.
  step("M5: macros", mt.macro(conn, SMFIC_MAIL, "i", "M5"))
  step("M5: mail", mt.mailfrom(conn, "<sender@example.test>"))
  expect(conn, SMFIR_CONTINUE, "M5: mail")
  step("M5: rcpt", mt.rcptto(conn, "<x@example.test>"))
  expect(conn, SMFIR_CONTINUE, "M5: rcpt")
  step("M5: rcpt", mt.rcptto(conn, "<discard-rcpt@example.test>"))
  expect(conn, SMFIR_DISCARD, "M5: rcpt discard")

  -- 6: normal again, then 7: discarded at end of headers, 8: normal.
  start(conn, "M6", "<sender@example.test>", { "<d@example.test>" }, { { "To", "d" } })
  finish(conn, "M6", "6", { rcpts = 1, headers = 1 })
  expect_eom(conn, false, "M6: quarantine", MT_QUARANTINE)
  start(conn, "M7", "<sender@example.test>", { "<d@example.test>" },
    { { "X-Conformance-Action", "discard" }, { "X-Delete-Me", "y" } })
  step("M7: eoh", mt.eoh(conn))
  expect(conn, SMFIR_DISCARD, "M7: eoh discard")
  start(conn, "M8", "<sender@example.test>", { "<e@example.test>", "<f@example.test>",
    "<g@example.test>" }, { { "To", "e" }, { "Cc", "f" } })
  finish(conn, "M8", "eight\r\n\r\n", { rcpts = 3, headers = 2 })
  expect_eom(conn, false, "M8: header delete from M7", MT_HDRDELETE)
  mt.disconnect(conn)

  -- Several connections at once, their messages interleaved.
  local c1, c2, c3 = open_session(), open_session(), open_session()
  start(c1, "C1", "<change-from@example.test>", { "<REMOVED@Example.TEST>" },
    { { "Subject", "REPLACE-BODY" } })
  start(c2, "C2", "<sender@example.test>", { "<a@example.test>", "<b@example.test>" },
    { { "X-Conformance-Action", "reject" } })
  start(c3, "C3", "<sender@example.test>", { "<a@example.test>" }, { { "To", "a" } })
  step("C2: eoh", mt.eoh(c2))
  expect(c2, SMFIR_REPLYCODE, "C2: eoh reject")
  finish(c3, "C3", "c3", { rcpts = 1, headers = 1 })
  expect_eom(c3, false, "C3: body replaced", MT_BODYCHANGE)
  finish(c1, "C1", "c1c1", { rcpts = 1, headers = 1 })
  expect_eom(c1, true, "C1: replace body", MT_BODYCHANGE, "REPLACED BODY\r\n")
  expect_eom(c1, true, "C1: delete recipient", MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  start(c2, "C2b", "<sender@example.test>", { "<a@example.test>" }, { { "To", "a" } })
  finish(c2, "C2b", "c2", { rcpts = 1, headers = 1 })
  mt.disconnect(c1)
  mt.disconnect(c2)
  mt.disconnect(c3)
end)
