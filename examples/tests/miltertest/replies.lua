-- replies.lua: every reject, tempfail, discard and accept rule of BEHAVIOUR.md ("Per
-- stage"), with the addresses and names in the spellings the conventions allow.
--
-- Every reply with text arrives as SMFIR_REPLYCODE ('y'). miltertest 1.6.0 keeps the
-- text only at end of message (MT_SMTPREPLY), and the conformance milter never answers
-- end of message with a text, so neither the text nor reject-versus-tempfail is visible
-- here: the Rust runner's raw-protocol part checks the exact texts.
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

local function mail(conn, sender, want, what)
  step(what .. ": macros", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "x@example.test"))
  step(what .. ": mail", mt.mailfrom(conn, sender))
  expect(conn, want, what)
end

local function rcpt(conn, recipient, want, what)
  step(what .. ": rcpt", mt.rcptto(conn, recipient))
  expect(conn, want, what)
end

local function header(conn, name, value, what)
  step(what .. ": header", mt.header(conn, name, value))
  expect(conn, SMFIR_CONTINUE, what .. ": header " .. name)
end

-- A message whose X-Conformance-Action headers decide at end of headers.
local function eoh_action(conn, what, actions, want)
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, what .. ": mail")
  rcpt(conn, "<rcpt@example.test>", SMFIR_CONTINUE, what .. ": rcpt")
  step(what .. ": data", mt.data(conn))
  expect(conn, SMFIR_CONTINUE, what .. ": data")
  header(conn, "Subject", "REPLACE-BODY", what)
  for _, value in ipairs(actions) do header(conn, "X-Conformance-Action", value, what) end
  step(what .. ": eoh", mt.eoh(conn))
  expect(conn, want, what .. ": eoh")
end

run("replies", function()
  -- HELO: reject.helo.test in any case is rejected (550 5.7.0), anything else continues.
  for _, name in ipairs({ "reject.helo.test", "REJECT.Helo.TEST" }) do
    local conn = mt.connect(SOCKET, 40, 0.25)
    check(conn ~= nil, "connect to " .. SOCKET)
    step("conninfo", mt.conninfo(conn, "client.example.test", "192.0.2.10"))
    expect(conn, SMFIR_CONTINUE, "connect")
    step("helo", mt.helo(conn, name))
    expect(conn, SMFIR_REPLYCODE, "HELO " .. name)
    mt.disconnect(conn)
  end
  local conn = open_session("reject.helo.test.example")
  mt.disconnect(conn)

  conn = open_session()
  -- MAIL: reject-mail (550 5.7.1) and tempfail-mail (451 4.7.1), in any spelling.
  for _, sender in ipairs({ "<reject-mail@example.test>", "<Reject-Mail@EXAMPLE.test>",
    "reject-mail@example.test", " <reject-mail@example.test> " }) do
    mail(conn, sender, SMFIR_REPLYCODE, "MAIL " .. sender)
  end
  for _, sender in ipairs({ "<tempfail-mail@example.test>", "TEMPFAIL-MAIL@example.test" }) do
    mail(conn, sender, SMFIR_REPLYCODE, "MAIL " .. sender)
  end
  -- Look-alikes continue.
  for _, sender in ipairs({ "<reject-mail@example.test.other>", "<xreject-mail@example.test>",
    "<>" }) do
    mail(conn, sender, SMFIR_CONTINUE, "MAIL " .. sender)
    step("abort", mt.abort(conn))
  end

  -- RCPT: reject-rcpt (550 5.1.1) and tempfail-rcpt (451 4.7.1) are not counted;
  -- the message goes on.
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, "MAIL before RCPT rules")
  rcpt(conn, "<Reject-Rcpt@Example.Test>", SMFIR_REPLYCODE, "RCPT reject-rcpt")
  rcpt(conn, "tempfail-rcpt@example.test", SMFIR_REPLYCODE, "RCPT tempfail-rcpt")
  rcpt(conn, "<ok@example.test>", SMFIR_CONTINUE, "RCPT ok")
  step("header", mt.header(conn, "Subject", "rcpt rules"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom after rejected recipients")
  expect_added(conn, "X-Conformance-Rcpts", "1", "rejected recipients are not counted")

  -- RCPT discard-rcpt discards the whole message.
  mail(conn, "<sender@example.test>", SMFIR_CONTINUE, "MAIL before discard-rcpt")
  rcpt(conn, "<ok@example.test>", SMFIR_CONTINUE, "RCPT ok")
  rcpt(conn, "<DISCARD-rcpt@example.test>", SMFIR_DISCARD, "RCPT discard-rcpt")

  -- End of headers: the remembered X-Conformance-Action (trimmed, any case); a later
  -- one replaces an earlier one; other values are ordinary headers.
  eoh_action(conn, "discard", { "discard" }, SMFIR_DISCARD)
  eoh_action(conn, "reject", { " \tReject \t" }, SMFIR_REPLYCODE)
  eoh_action(conn, "accept", { "ACCEPT" }, SMFIR_ACCEPT)
  eoh_action(conn, "later action wins", { "reject", "discard" }, SMFIR_DISCARD)
  eoh_action(conn, "later action wins", { "discard", "accept" }, SMFIR_ACCEPT)
  eoh_action(conn, "unknown value ignored", { "reject", "bounce" }, SMFIR_REPLYCODE)
  eoh_action(conn, "no action", { "reject it", "" }, SMFIR_CONTINUE)
  step("body", mt.bodystring(conn, "body\r\n"))
  expect(conn, SMFIR_CONTINUE, "body")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom")
  expect_added(conn, "X-Conformance-Headers", "3",
    "X-Conformance-Action headers with other values are counted")

  -- A message after an accepted one continues normally.
  send_message(conn, "after accept", {
    mail = { "<sender@example.test>" }, rcpts = { "<rcpt@example.test>" },
    headers = { { "Subject", "after" } },
  })
  expect_added(conn, "X-Conformance-Headers", "1", "counted headers")

  -- Unknown SMTP command: rejected (500 5.5.1).
  step("unknown", mt.unknown(conn, "XYZZY plugh"))
  expect(conn, SMFIR_REPLYCODE, "unknown command")
  mt.disconnect(conn)
end)
