-- negotiation.lua: the option negotiation of docs/CONFORMANCE.md ("Negotiation").
--
-- The milter asks for no protocol flag at all (field 0) whatever the MTA offers, and
-- for actions 0x1FF (0xFF + SETSYMLIST) intersected with the offer. Each offer is
-- followed by one message whose end-of-message modifications must use only the
-- negotiated actions.
--
-- miltertest quirks: mt.negotiate(conn, version, PROTOCOL, ACTIONS) takes the protocol
-- mask third and the actions fourth (the man page says the reverse); the reply's
-- version and symbol lists are not visible to a script.
-- Shared helpers (SOCKET, open_session, send_message, expect, expect_eom, run, ...).
-- Run by hand from the repository root:
--   MILTER_SOCKET=inet:PORT@127.0.0.1 miltertest -s examples/tests/miltertest/THIS_FILE
dofile(os.getenv("MILTERTEST_PRELUDE") or "examples/tests/miltertest/prelude.lua")

local ACTION_BITS = {
  ADDHDRS = SMFIF_ADDHDRS, CHGBODY = SMFIF_CHGBODY, ADDRCPT = SMFIF_ADDRCPT,
  DELRCPT = SMFIF_DELRCPT, CHGHDRS = SMFIF_CHGHDRS, QUARANTINE = SMFIF_QUARANTINE,
  CHGFROM = SMFIF_CHGFROM, ADDRCPT_PAR = SMFIF_ADDRCPT_PAR, SETSYMLIST = SMFIF_SETSYMLIST,
}

local function requested_actions(conn)
  local mask = 0
  for _, bit in pairs(ACTION_BITS) do
    if mt.test_action(conn, bit) then mask = mask | math.tointeger(bit) end
  end
  return mask
end

-- Negotiates with the given offer (nil: miltertest's defaults, 6 / 0x1FF / 0x1FFFFF),
-- checks the reply and runs one message through end of message.
local function offer(name, version, actions, protocol, want_actions)
  local conn = mt.connect(SOCKET, 40, 0.25)
  check(conn ~= nil, name .. ": connect to " .. SOCKET)
  step(name .. ": negotiate", mt.negotiate(conn, version, protocol, actions))
  expect(conn, string.byte("O"), name .. ": negotiation reply")

  local got = requested_actions(conn)
  check(got == want_actions, string.format("%s: actions 0x%X, expected 0x%X", name, got,
    want_actions))
  check(not mt.test_option(conn, 0xFFFFFFFF),
    name .. ": the milter asked for protocol flags; it must ask for none")

  step(name .. ": conninfo", mt.conninfo(conn, "client.example.test", "192.0.2.10"))
  expect(conn, SMFIR_CONTINUE, name .. ": connect")
  step(name .. ": helo", mt.helo(conn, "client.example.test"))
  expect(conn, SMFIR_CONTINUE, name .. ": helo")
  step(name .. ": mail", mt.mailfrom(conn, "<sender@example.test>"))
  expect(conn, SMFIR_CONTINUE, name .. ": mail")
  step(name .. ": rcpt", mt.rcptto(conn, "<removed@example.test>"))
  expect(conn, SMFIR_CONTINUE, name .. ": rcpt")
  step(name .. ": header", mt.header(conn, "Subject", "REPLACE-BODY QUARANTINE"))
  expect(conn, SMFIR_CONTINUE, name .. ": header")
  step(name .. ": header", mt.header(conn, "X-Delete-Me", "yes"))
  expect(conn, SMFIR_CONTINUE, name .. ": header")
  step(name .. ": eoh", mt.eoh(conn))
  expect(conn, SMFIR_CONTINUE, name .. ": eoh")
  step(name .. ": body", mt.bodystring(conn, "body\r\n"))
  expect(conn, SMFIR_CONTINUE, name .. ": body")
  step(name .. ": eom", mt.eom(conn))
  expect(conn, SMFIR_CONTINUE, name .. ": eom")

  local function allowed(bit) return want_actions & math.tointeger(bit) ~= 0 end
  local function same(what, present, bit)
    check(present == allowed(bit), string.format("%s: %s %s", name, what,
      allowed(bit) and "missing although negotiated" or "sent although not negotiated"))
  end
  same("add header X-Conformance", mt.eom_check(conn, MT_HDRADD, "X-Conformance", "seen"),
    SMFIF_ADDHDRS)
  same("insert header X-Conformance-First",
    mt.eom_check(conn, MT_HDRINSERT, "X-Conformance-First", "1", 0), SMFIF_ADDHDRS)
  same("change header Subject", mt.eom_check(conn, MT_HDRCHANGE, "Subject"), SMFIF_CHGHDRS)
  same("delete header X-Delete-Me", mt.eom_check(conn, MT_HDRDELETE, "X-Delete-Me", 1),
    SMFIF_CHGHDRS)
  same("add recipient", mt.eom_check(conn, MT_RCPTADD, "<added@example.test>"),
    SMFIF_ADDRCPT)
  same("delete recipient", mt.eom_check(conn, MT_RCPTDELETE, "<removed@example.test>"),
    SMFIF_DELRCPT)
  same("replace body", mt.eom_check(conn, MT_BODYCHANGE, "REPLACED BODY\r\n"),
    SMFIF_CHGBODY)
  same("quarantine", mt.eom_check(conn, MT_QUARANTINE, "conformance quarantine"),
    SMFIF_QUARANTINE)
  mt.disconnect(conn)
end

run("negotiation", function()
  -- Sendmail 8.14+ and Postfix 2.6+ (milter_protocol = 6) offer everything.
  offer("miltertest defaults", nil, nil, nil, 0x1FF)
  offer("Sendmail 8.14+", 6, 0x1FF, 0x1FFFFF, 0x1FF)
  -- Postfix offers all nine actions at every protocol version, with smaller masks.
  offer("Postfix milter_protocol=4", 4, 0x1FF, 0x37F, 0x1FF)
  offer("Postfix milter_protocol=3", 3, 0x1FF, 0x17F, 0x1FF)
  offer("Postfix milter_protocol=2", 2, 0x1FF, 0x7F, 0x1FF)
  -- An MTA that offers less gets a milter that asks for nothing it did not offer.
  offer("version 2 MTA (v2 actions)", 2, 0x3F, 0x7F, 0x3F)
  offer("no SETSYMLIST", 6, 0xFF, 0x1FFFFF, 0xFF)
  offer("add header only", 6, SMFIF_ADDHDRS, 0x1FFFFF, 0x01)
  offer("headers and recipients", 6, 0x1D, 0x1FFFFF, 0x1D)
  -- libmilter reads an offer of actions 0 as the version 1 set 0x0F, and protocol 0 as 0x3F.
  offer("actions 0 (read as 0x0F)", 6, 0, 0x1FFFFF, 0x0F)
  offer("protocol 0 (read as 0x3F)", 6, 0x1FF, 0, 0x1FF)
end)
