-- eom_headers.lua: the header modifications at end of message (docs/CONFORMANCE.md, end of
-- message, steps 2-9): add X-Conformance, insert X-Conformance-First at index 0, change
-- the first Subject (only the first), delete the first X-Delete-Me (index 1, later ones
-- stay), and the four informational headers.
--
-- miltertest quirks: mt.eom_check(conn, MT_HDRCHANGE, name, value, index) compares the
-- index with the *value* argument read as a number (a bug), so the change index (1) is
-- not checkable; MT_HDRDELETE and MT_HDRINSERT check their index correctly. Names are
-- compared case-sensitively. Order and number of requests are not visible.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

run("eom_headers", function()
  local conn = open_session()

  -- Every header step at once. The Subject value arrives as the MTA sends it (one space
  -- after the colon already removed): leading white space, CR and LF go, the fold stays.
  send_message(conn, "all header steps", {
    macros = { "i", "HDR0001" },
    mail = { "<sender@example.test>" },
    rcpts = { "<one@example.test>", "<two@example.test>" },
    headers = {
      { "From", "<sender@example.test>" },
      { "Subject", " \t\r\n Hello\n\tfolded world" },
      { "X-Delete-Me", "first" },
      { "Subject", "second subject" },
      { "X-Delete-Me", "second" },
      { "X-Conformance-Action", "bogus" }, -- not a known action: counted like any header
      { "x-delete-me", "third" },
    },
    body = { "line one\r\n", "line two\r\n" },
  })
  expect_eom(conn, true, "add X-Conformance: seen", MT_HDRADD, "X-Conformance", "seen")
  expect_eom(conn, true, "insert X-Conformance-First: 1 at index 0",
    MT_HDRINSERT, "X-Conformance-First", "1", 0)
  expect_eom(conn, false, "X-Conformance-First added at the end instead of inserted",
    MT_HDRADD, "X-Conformance-First")
  expect_eom(conn, true, "change the first Subject",
    MT_HDRCHANGE, "Subject", "[filtered] Hello\n\tfolded world")
  expect_eom(conn, false, "change the second Subject",
    MT_HDRCHANGE, "Subject", "[filtered] second subject")
  expect_eom(conn, true, "delete X-Delete-Me index 1", MT_HDRDELETE, "X-Delete-Me", 1)
  for _, name in ipairs({ "X-Delete-Me", "x-delete-me" }) do
    for index = 2, 3 do
      expect_eom(conn, false, "delete " .. name .. " index " .. index,
        MT_HDRDELETE, name, index)
    end
  end
  expect_added(conn, "X-Conformance-Queue-Id", "HDR0001", "queue id")
  expect_added(conn, "X-Conformance-Body-Bytes", "20", "body bytes (two chunks)")
  expect_added(conn, "X-Conformance-Rcpts", "2", "accepted recipients")
  expect_added(conn, "X-Conformance-Headers", "7", "counted headers")

  -- No Subject, no X-Delete-Me: no change or delete at all; no body sent, so miltertest
  -- sends its own 21-byte "Dummy message body.\r\n".
  send_message(conn, "no Subject, no X-Delete-Me", {
    mail = { "<sender@example.test>" },
    rcpts = { "<one@example.test>" },
    headers = { { "From", "<sender@example.test>" }, { "To", "<one@example.test>" } },
  })
  expect_eom(conn, true, "add X-Conformance: seen", MT_HDRADD, "X-Conformance", "seen")
  expect_eom(conn, true, "insert X-Conformance-First", MT_HDRINSERT, "X-Conformance-First",
    "1", 0)
  expect_eom(conn, false, "any header change", MT_HDRCHANGE)
  expect_eom(conn, false, "any header delete", MT_HDRDELETE)
  expect_added(conn, "X-Conformance-Queue-Id", "unknown", "queue id without macro i")
  expect_added(conn, "X-Conformance-Body-Bytes", "21", "body bytes (miltertest's body)")
  expect_added(conn, "X-Conformance-Rcpts", "1", "accepted recipients")
  expect_added(conn, "X-Conformance-Headers", "2", "counted headers")

  -- A Subject of white space only becomes "[filtered] "; the name is matched in any case.
  send_message(conn, "blank Subject", {
    mail = { "<sender@example.test>" },
    rcpts = { "<one@example.test>" },
    headers = { { "Subject", " \t " } },
    body = { "x" },
  })
  expect_eom(conn, true, "change blank Subject", MT_HDRCHANGE, "Subject", "[filtered] ")
  expect_added(conn, "X-Conformance-Body-Bytes", "1", "body bytes")
  expect_added(conn, "X-Conformance-Headers", "1", "counted headers")

  -- An empty Subject value still counts as "a Subject was seen".
  send_message(conn, "empty Subject", {
    mail = { "<sender@example.test>" },
    rcpts = { "<one@example.test>" },
    headers = { { "Subject", "" }, { "Subject", "later" } },
    body = { "x\r\n" },
  })
  expect_eom(conn, true, "change empty Subject", MT_HDRCHANGE, "Subject", "[filtered] ")
  expect_eom(conn, false, "change the later Subject",
    MT_HDRCHANGE, "Subject", "[filtered] later")
  expect_added(conn, "X-Conformance-Headers", "2", "counted headers")
  mt.disconnect(conn)
end)
