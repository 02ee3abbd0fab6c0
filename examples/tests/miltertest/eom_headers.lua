-- eom_headers.lua: the header modifications at end of message (BEHAVIOUR.md, end of
-- message, steps 2-9): add X-Conformance, insert X-Conformance-First at index 0, change
-- the first Subject (only the first), delete the first X-Delete-Me (index 1, later ones
-- stay), and the four informational headers.
--
-- miltertest quirks: mt.eom_check(conn, MT_HDRCHANGE, name, value, index) compares the
-- index with the *value* argument read as a number (a bug), so the change index (1) is
-- not checkable; MT_HDRDELETE and MT_HDRINSERT check their index correctly. Names are
-- compared case-sensitively. Order and number of requests are not visible.
-- ---- prelude: the same in every script of this folder ----
-- Run by hand: MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s THIS_FILE
-- Any mismatch raises error(); run() prints it (miltertest 1.6.0 exits 1 on an error
-- but does not print its message) and miltertest exits non-zero.
local SOCKET = os.getenv("MILTER_SOCKET") or "inet:7357@127.0.0.1"
mt.set_timeout(10)

local function reply_name(code)
  if code == nil or code == 0 then return "nothing" end
  return string.format("'%s'", string.char(math.tointeger(code)))
end

-- A miltertest call returns nil on success or an error string.
local function step(what, result)
  if result ~= nil then error(what .. " failed: " .. tostring(result), 2) end
end

local function check(cond, what)
  if not cond then error("FAILED: " .. what, 2) end
end

-- The last reply must be `want` (SMFIR_CONTINUE, SMFIR_REPLYCODE, ...).
local function expect(conn, want, what)
  local got = mt.getreply(conn)
  if got ~= want then
    error(string.format("FAILED: %s: reply %s, expected %s", what, reply_name(got),
      reply_name(want)), 2)
  end
end

-- The header `name` added or inserted at end of message must have the value `want`.
local function expect_added(conn, name, want, what)
  local got = mt.getheader(conn, name, 0)
  if got ~= want then
    error(string.format("FAILED: %s: header %s is %q, expected %q", what, name,
      tostring(got), tostring(want)), 2)
  end
end

-- Connects, negotiates with miltertest's default offer (version 6, all actions and
-- protocol flags, like Sendmail) and sends connection information and HELO.
local function open_session(helo)
  local conn = mt.connect(SOCKET, 40, 0.25)
  check(conn ~= nil, "connect to " .. SOCKET)
  step("negotiate", mt.negotiate(conn, nil, nil, nil))
  step("conninfo", mt.conninfo(conn, "client.example.test", "192.0.2.10"))
  expect(conn, SMFIR_CONTINUE, "connect")
  step("helo", mt.helo(conn, helo or "client.example.test"))
  expect(conn, SMFIR_CONTINUE, "helo")
  return conn
end

-- Sends a whole message that the milter must continue at every stage, through end of
-- message. `m.mail` is the MAIL argument list, `m.rcpts` the recipients, `m.headers` a
-- list of {name, value}, `m.body` a list of body chunks (miltertest sends its own
-- 21-byte body when there is none), `m.macros` the MAIL macros. Like both MTAs it
-- always sends MAIL macros (default `{mail_addr}`): libmilter keeps the previous
-- message's MAIL macros, `i` included, when a MAIL comes without any.
local function send_message(conn, what, m)
  local macros = m.macros or { "{mail_addr}", (m.mail[1]:gsub("^<(.*)>$", "%1")) }
  step(what .. ": macros", mt.macro(conn, SMFIC_MAIL, table.unpack(macros)))
  step(what .. ": mail", mt.mailfrom(conn, table.unpack(m.mail)))
  expect(conn, SMFIR_CONTINUE, what .. ": mail")
  for _, rcpt in ipairs(m.rcpts) do
    step(what .. ": rcpt", mt.rcptto(conn, rcpt))
    expect(conn, SMFIR_CONTINUE, what .. ": rcpt " .. rcpt)
  end
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  for _, h in ipairs(m.headers or {}) do
    step(what .. ": header", mt.header(conn, h[1], h[2]))
    expect(conn, SMFIR_CONTINUE, what .. ": header " .. h[1])
  end
  step(what .. ": eoh", mt.eoh(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eoh")
  for _, chunk in ipairs(m.body or {}) do
    step(what .. ": body", mt.bodystring(conn, chunk))
    expect(conn, SMFIR_CONTINUE, what .. ": body")
  end
  step(what .. ": eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": eom")
end

-- mt.eom_check(conn, ...) must be true (`want` true) or false (`want` false).
local function expect_eom(conn, want, what, ...)
  if mt.eom_check(conn, ...) ~= want then
    error("FAILED: " .. what .. (want and ": not requested" or ": requested, must not be"), 2)
  end
end

-- Runs the script's checks; prints the first failure with a traceback and fails.
local function run(name, checks)
  local ok, err = xpcall(checks, debug.traceback)
  if not ok then
    io.stderr:write(name .. ": " .. tostring(err) .. "\n")
    error(err, 0)
  end
  mt.echo(name .. ": all checks passed")
end
-- ---- end of prelude ----

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
