-- abort.lua: abort in the middle of a message empties the per-message state
-- (BEHAVIOUR.md, "Per-message state"): nothing of the aborted message (sender and its
-- BODY=8BITMIME, recipients, headers, Subject, X-Delete-Me, remembered action, body
-- bytes, queue id) shows in the next message on the same connection. Aborts outside a
-- message (Postfix sends them after every transaction, sometimes twice) are harmless.
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
