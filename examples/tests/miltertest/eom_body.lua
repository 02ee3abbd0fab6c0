-- eom_body.lua: replace body and quarantine at end of message (BEHAVIOUR.md, end of
-- message, steps 14-16), triggered by words in the first Subject (case-sensitive).
--
-- BIG-BODY is not here: miltertest 1.6.0 reads every reply packet into a 1024-byte
-- buffer without a bound check and crashes (SIGSEGV) on the 65535-byte replace-body
-- packets. The Rust runner checks BIG-BODY over the raw protocol instead.
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
