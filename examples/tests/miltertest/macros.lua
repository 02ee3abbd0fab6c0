-- macros.lua: the queue id header X-Conformance-Queue-Id (BEHAVIOUR.md, end of message,
-- step 6) from macro `i`, spelled `i` or `{i}`, sent at MAIL like Sendmail or at DATA,
-- end of headers and end of message like Postfix. The most recent value of the current
-- message wins; a value from an earlier message is never used; no value gives `unknown`.
--
-- Every message sends a macro packet for MAIL, as both MTAs do (Sendmail with `i`,
-- Postfix with `{mail_addr}` but no `i`). libmilter ignores `D` packets for header and
-- body chunks, so values sent only there are not tested.
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
