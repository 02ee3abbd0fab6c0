-- eom_body.lua: replace body and quarantine at end of message (docs/CONFORMANCE.md, end of
-- message, steps 14-16), triggered by words in the first Subject (case-sensitive).
--
-- BIG-BODY is not here: miltertest 1.6.0 reads every reply packet into a 1024-byte
-- buffer without a bound check and crashes (SIGSEGV) on the 65535-byte replace-body
-- packets. The Rust runner checks BIG-BODY over the raw protocol instead.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

local REPLACED = "REPLACED BODY\r\n"
local REASON = "conformance quarantine"

local function message(conn, what, subjects)
  local headers = {}
  for _, subject in ipairs(subjects) do headers[#headers + 1] = { "Subject", subject } end
  send_message(conn, what, {
    mail = { "<sender@example.test>" },
    rcpts = { "<rcpt@example.test>" },
    headers = headers,
    body = { "original body\r\n" },
  })
end

run("eom_body", function()
  local conn = open_session()

  message(conn, "REPLACE-BODY", { "please REPLACE-BODY now" })
  expect_eom(conn, true, "replace body with the 15 bytes", MT_BODYCHANGE, REPLACED)
  expect_eom(conn, false, "quarantine", MT_QUARANTINE)

  message(conn, "QUARANTINE", { "QUARANTINE me" })
  expect_eom(conn, true, "quarantine with the reason", MT_QUARANTINE, REASON)
  expect_eom(conn, false, "replace body", MT_BODYCHANGE)

  message(conn, "both", { "REPLACE-BODY and QUARANTINE" })
  expect_eom(conn, true, "replace body", MT_BODYCHANGE, REPLACED)
  expect_eom(conn, true, "quarantine", MT_QUARANTINE, REASON)

  message(conn, "lower case words", { "replace-body quarantine big-body" })
  expect_eom(conn, false, "replace body (the words are case-sensitive)", MT_BODYCHANGE)
  expect_eom(conn, false, "quarantine (the words are case-sensitive)", MT_QUARANTINE)

  message(conn, "words in the second Subject", { "plain", "REPLACE-BODY QUARANTINE" })
  expect_eom(conn, false, "replace body (only the first Subject counts)", MT_BODYCHANGE)
  expect_eom(conn, false, "quarantine (only the first Subject counts)", MT_QUARANTINE)

  message(conn, "word after a fold", { "folded\n\tREPLACE-BODY" })
  expect_eom(conn, true, "replace body", MT_BODYCHANGE, REPLACED)

  message(conn, "no Subject", {})
  expect_eom(conn, false, "replace body", MT_BODYCHANGE)
  expect_eom(conn, false, "quarantine", MT_QUARANTINE)
  mt.disconnect(conn)
end)
