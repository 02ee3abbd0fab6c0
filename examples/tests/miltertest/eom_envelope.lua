-- eom_envelope.lua: the envelope modifications at end of message (BEHAVIOUR.md, end of
-- message, steps 10-13): add <added@example.test>; with BODY=8BITMIME add
-- <added-args@example.test> with NOTIFY=NEVER; delete removed@example.test exactly as
-- the MTA presented it (case kept); change a change-from@example.test sender.
--
-- miltertest limits: mt.eom_check has no check for "add recipient with ESMTP arguments"
-- (`2`) or "change sender" (`e`), and MT_RCPTADD sees only plain `+` requests. So this
-- script checks that <added-args@example.test> is never sent as a plain add; the `2`
-- and `e` requests themselves are checked by the raw-protocol part of the Rust runner.
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

run("eom_envelope", function()
  local conn = open_session()

  -- Everything at once; a rejected recipient is not counted.
  step("macros", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "change-from@example.test"))
  step("mail", mt.mailfrom(conn, "<change-from@example.test>", "BODY=8BITMIME", "SIZE=100"))
  expect(conn, SMFIR_CONTINUE, "mail")
  step("rcpt", mt.rcptto(conn, "<REMOVED@Example.TEST>"))
  expect(conn, SMFIR_CONTINUE, "rcpt <REMOVED@Example.TEST>")
  step("rcpt", mt.rcptto(conn, "<reject-rcpt@example.test>"))
  expect(conn, SMFIR_REPLYCODE, "rcpt <reject-rcpt@example.test>")
  step("rcpt", mt.rcptto(conn, "<keep@example.test>", "NOTIFY=SUCCESS"))
  expect(conn, SMFIR_CONTINUE, "rcpt <keep@example.test>")
  step("header", mt.header(conn, "Subject", "envelope"))
  expect(conn, SMFIR_CONTINUE, "header")
  step("eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, "eom")
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, false, "<added-args@example.test> as a plain add (it needs NOTIFY=NEVER)",
    MT_RCPTADD, "<added-args@example.test>")
  expect_eom(conn, true, "delete <REMOVED@Example.TEST> as presented",
    MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  expect_eom(conn, false, "delete in another case", MT_RCPTDELETE, "<removed@example.test>")
  expect_eom(conn, false, "delete <keep@example.test>", MT_RCPTDELETE, "<keep@example.test>")
  expect_eom(conn, false, "delete the rejected recipient",
    MT_RCPTDELETE, "<reject-rcpt@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "2", "accepted recipients")

  -- Without angle brackets: matched all the same, deleted exactly as presented.
  send_message(conn, "addresses without brackets", {
    mail = { "Change-From@Example.Test" },
    rcpts = { "removed@example.test" },
    headers = { { "Subject", "no brackets" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, true, "delete removed@example.test as presented",
    MT_RCPTDELETE, "removed@example.test")
  expect_eom(conn, false, "delete with brackets added",
    MT_RCPTDELETE, "<removed@example.test>")

  -- Nothing special: only <added@example.test>. BODY=8BITMIME of the first message and
  -- its recipients do not leak into this one.
  send_message(conn, "plain message", {
    mail = { "<plain@example.test>", "BODY=7BIT" },
    rcpts = { "<other@example.test>" },
    headers = { { "Subject", "plain" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, false, "any recipient delete", MT_RCPTDELETE, "<REMOVED@Example.TEST>")
  expect_eom(conn, false, "delete <other@example.test>",
    MT_RCPTDELETE, "<other@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "1", "accepted recipients")

  -- BODY=8BITMIME in any case, between other arguments.
  send_message(conn, "body=8bitmime lower case", {
    mail = { "<sender@example.test>", "SIZE=10", "body=8bitmime" },
    rcpts = { "<removed@EXAMPLE.test>", "<Removed@example.test>" },
    headers = { { "Subject", "8bit" } },
  })
  expect_eom(conn, true, "add <added@example.test>", MT_RCPTADD, "<added@example.test>")
  expect_eom(conn, true, "delete <removed@EXAMPLE.test>", MT_RCPTDELETE,
    "<removed@EXAMPLE.test>")
  expect_eom(conn, true, "delete <Removed@example.test>", MT_RCPTDELETE,
    "<Removed@example.test>")
  expect_added(conn, "X-Conformance-Rcpts", "2", "accepted recipients")
  mt.disconnect(conn)
end)
