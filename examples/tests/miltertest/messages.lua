-- messages.lua: several messages on one connection, with no abort in between (as
-- Sendmail does after a message the milter rejected, discarded or accepted, and after a
-- normal end of message), and several connections at once. The verdict and state of
-- one message never leak into the next one (BEHAVIOUR.md, "Per-message state").
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
