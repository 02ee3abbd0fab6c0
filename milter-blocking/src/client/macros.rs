//! Which macros a client sends before each command, with which values, and the
//! encoding of the `D` packet straight into the write buffer.

use super::config::Profile;
use milter_core::client::ClientNegotiated;
use milter_core::{MacroStage, Stage};

/// Host name the imitated MTA claims (`j`, `{daemon_name}` for Postfix).
pub(crate) const MTA_HOST: &str = "mx.example.org";

/// Per-stage lists of Postfix 3.7 (`postconf -d milter_*_macros`), in wire-index
/// order. The queue id is `i` everywhere by default (observed with 3.7.11 and a
/// milter that sends no symbol lists); Postfix spells it `{i}` only when the
/// milter's own list does.
const POSTFIX_LISTS: [&str; 7] = [
    "j {daemon_name} {daemon_addr} v _",
    "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    "i",
    "i",
    "i",
];

/// Stalwart's fixed lists (it offers no `SETSYMLIST`): connect, HELO (the TLS
/// macros, without a value on a plain connection), MAIL, RCPT; nothing later.
const STALWART_LISTS: [&str; 7] = [
    "{daemon_name} j {client_addr} {client_port} {client_ptr}",
    "{cipher} {tls_version}",
    "{mail_addr}",
    "{rcpt_addr}",
    "",
    "",
    "",
];

/// Per-stage lists of the Sendmail 8.17 and 8.18 m4 kit (`confMILTER_MACROS_*`).
const SENDMAIL_LISTS: [&str; 7] = [
    "j _ {daemon_name} {if_name} {if_addr}",
    "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    "i {auth_type} {auth_authen} {auth_ssf} {auth_author} {mail_mailer} {mail_host} {mail_addr}",
    "{rcpt_mailer} {rcpt_host} {rcpt_addr}",
    "",
    "{msg_id}",
    "",
];

/// The index of a stage in per-stage arrays.
pub(crate) fn stage_index(stage: Stage) -> usize {
    match stage {
        Stage::Connect => 0,
        Stage::Helo => 1,
        Stage::Mail => 2,
        Stage::Rcpt => 3,
        Stage::Data => 4,
        Stage::Header => 5,
        Stage::Eoh => 6,
        Stage::Body => 7,
        Stage::Eom => 8,
        Stage::Unknown => 9,
    }
}

/// `{name}` and `name` are one macro.
fn normalize(name: &[u8]) -> &[u8] {
    match name {
        [b'{', inner @ .., b'}'] => inner,
        n => n,
    }
}

/// What the caller configured about macros.
#[derive(Debug, Clone, Default)]
pub(crate) struct MacroConfig {
    /// Global overrides, by normalized name: `None` means "has no value".
    values: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Extra pairs per command stage.
    stage_pairs: [Vec<(Vec<u8>, Vec<u8>)>; 10],
}

impl MacroConfig {
    pub(crate) fn set_value(&mut self, name: &str, value: Option<&[u8]>) {
        let key = normalize(name.as_bytes()).to_vec();
        let value = value.map(<[u8]>::to_vec);
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key, value)),
        }
    }

    pub(crate) fn add_stage_pair(&mut self, stage: Stage, name: &str, value: &[u8]) {
        let pairs = &mut self.stage_pairs[stage_index(stage)];
        let key = normalize(name.as_bytes());
        pairs.retain(|(n, _)| normalize(n) != key);
        pairs.push((name.as_bytes().to_vec(), value.to_vec()));
    }

    pub(crate) fn clear_stage(&mut self, stage: Stage) {
        self.stage_pairs[stage_index(stage)].clear();
    }

    fn override_for(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }
}

/// What the imitated MTA knows about the session, for computed macro values.
#[derive(Debug, Clone, Default)]
pub(crate) struct MacroState {
    pub(crate) client_name: String,
    pub(crate) client_addr: String,
    pub(crate) client_port: String,
    pub(crate) sender: Vec<u8>,
    pub(crate) rcpt: Vec<u8>,
    pub(crate) queue_id: String,
    /// The furthest message stage reached in the current message.
    pub(crate) phase: Option<Stage>,
    /// Postfix has opened the queue file: a recipient was accepted.
    pub(crate) queue_file_open: bool,
    pub(crate) msg_id: Option<Vec<u8>>,
}

fn domain(addr: &[u8]) -> &[u8] {
    match addr.iter().rposition(|&b| b == b'@') {
        Some(at) => &addr[at + 1..],
        None => b"",
    }
}

/// Everything needed to write the `D` packet for one command.
pub(crate) struct MacroWriter<'a> {
    pub(crate) profile: Profile,
    pub(crate) config: &'a MacroConfig,
    pub(crate) state: &'a MacroState,
    pub(crate) negotiated: &'a ClientNegotiated,
}

impl MacroWriter<'_> {
    /// The macro list in force for the command `code`: the milter's symbol list
    /// where the MTA honours it, else the profile's list.
    fn list(&self, code: u8) -> &[u8] {
        let postfix = self.profile.is_postfix();
        let stage = match code {
            b'L' if postfix => Some(MacroStage::Eoh),
            b'B' if postfix => Some(MacroStage::Eom),
            _ => MacroStage::from_command_code(code),
        };
        let Some(stage) = stage else {
            // U (Postfix: milter_unknown_command_macros, empty by default).
            return b"";
        };
        let index = stage.index() as usize;
        // Postfix sends its end-of-headers list (`i`) before each header and end of
        // headers at every protocol version (observed at 2, 4 and 6).
        let default: &'static [u8] = match self.profile {
            p if p.is_postfix() => POSTFIX_LISTS[index].as_bytes(),
            p if p.is_sendmail() => SENDMAIL_LISTS[index].as_bytes(),
            // Stalwart ignores symbol lists (it does not offer them).
            Profile::Stalwart => return STALWART_LISTS[index].as_bytes(),
            _ => b"",
        };
        let milter = self.negotiated.macros_for(stage);
        match self.profile {
            // Postfix: an empty list means "use the defaults".
            p if p.is_postfix() => match milter {
                Some(l) if !l.is_empty() => l,
                _ => default,
            },
            // Sendmail 8.17.1 and 8.18.0 (`milter_data`): the milter's end-of-message
            // list counts only when it also sent an end-of-headers list.
            p if p.is_sendmail() && stage == MacroStage::Eom => {
                if self.negotiated.macros_for(MacroStage::Eoh).is_some() {
                    milter.unwrap_or(b"")
                } else {
                    default
                }
            }
            _ => milter.unwrap_or(default),
        }
    }

    /// Appends the `D` packet for command `code` to `out` if the profile sends one.
    /// `skipped`: the milter negotiated the command away.
    pub(crate) fn write(&self, out: &mut Vec<u8>, code: u8, stage: Stage, skipped: bool) {
        // No D for skipped content commands (both MTAs decide those before the
        // macro step), and none for commands the negotiated version lacks.
        if skipped
            && (self.profile == Profile::Stalwart
                || matches!(stage, Stage::Header | Stage::Eoh | Stage::Body)
                || (stage == Stage::Data && self.negotiated.version < 4)
                || (stage == Stage::Unknown && self.negotiated.version < 3))
        {
            return;
        }
        let list = self.list(code);
        let pairs = &self.config.stage_pairs[stage_index(stage)];
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, b'D', code]);
        let mut count = 0usize;
        for (name, value) in pairs {
            push_pair(out, name, value);
            count += 1;
        }
        for name in list.split(|&b| b == b' ').filter(|n| !n.is_empty()) {
            let key = normalize(name);
            if pairs.iter().any(|(n, _)| normalize(n) == key) {
                continue;
            }
            let mark = out.len();
            out.extend_from_slice(name);
            out.push(0);
            if self.value(key, stage, out) {
                out.push(0);
                count += 1;
            } else {
                out.truncate(mark);
            }
        }
        let send = match self.profile {
            p if p.is_postfix() => true,
            p if p.is_sendmail() => {
                count > 0 || (!list.is_empty() && code != b'U' && code != b'L' && code != b'B')
            }
            // Stalwart: a `D` before each of `C H M R`, never before the others.
            Profile::Stalwart => matches!(code, b'C' | b'H' | b'M' | b'R') || count > 0,
            _ => count > 0,
        };
        if !send {
            out.truncate(start);
            return;
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Writes the value of the macro `key` (normalized) and returns whether it has
    /// one.
    fn value(&self, key: &[u8], stage: Stage, out: &mut Vec<u8>) -> bool {
        if let Some(v) = self.config.override_for(key) {
            return match v {
                Some(v) => {
                    out.extend_from_slice(v);
                    true
                }
                None => false,
            };
        }
        let s = self.state;
        let sendmail = self.profile.is_sendmail();
        let text: &[u8] = match key {
            b"j" => MTA_HOST.as_bytes(),
            b"daemon_name" if sendmail => b"MTA",
            // `DAEMON_NAME` of the source checked.
            b"daemon_name" if self.profile == Profile::Stalwart => b"Stalwart v0.16.19",
            b"daemon_name" => MTA_HOST.as_bytes(),
            b"daemon_addr" => b"127.0.0.1",
            // Sendmail leaves `{if_addr}` unset for connections on the loopback
            // interface (observed with 8.17.1.9), which is where these profiles say
            // the MTA listens: not sent.
            b"if_addr" => return false,
            b"daemon_port" => b"25",
            b"if_name" => b"localhost",
            b"v" => self.profile.version_text().as_bytes(),
            b"_" if !s.client_name.is_empty() => {
                out.extend_from_slice(s.client_name.as_bytes());
                out.extend_from_slice(b" [");
                out.extend_from_slice(s.client_addr.as_bytes());
                out.push(b']');
                return true;
            }
            b"client_name" => s.client_name.as_bytes(),
            b"client_addr" => s.client_addr.as_bytes(),
            b"client_port" => s.client_port.as_bytes(),
            // Stalwart: the verified PTR name, else "unknown".
            b"client_ptr" => s.client_name.as_bytes(),
            b"i" => {
                let known = match self.profile {
                    p if p.is_sendmail() => s.phase.is_some(),
                    // Postfix opens its queue file, and so has a queue id, once
                    // the first recipient is accepted (observed with 3.7.11: `i`
                    // before the second RCPT, not before the first).
                    p if p.is_postfix() => {
                        s.phase.is_some_and(|p| p >= Stage::Data)
                            || (stage == Stage::Rcpt && s.queue_file_open)
                            || matches!(
                                stage,
                                Stage::Data | Stage::Header | Stage::Eoh | Stage::Body | Stage::Eom
                            )
                    }
                    _ => false,
                };
                if known {
                    s.queue_id.as_bytes()
                } else {
                    b""
                }
            }
            b"mail_addr" => bare(&s.sender),
            b"mail_host" => domain(bare(&s.sender)),
            b"mail_mailer" | b"rcpt_mailer" if sendmail => b"esmtp",
            b"mail_mailer" | b"rcpt_mailer" => b"smtp",
            b"rcpt_addr" => bare(&s.rcpt),
            b"rcpt_host" => domain(bare(&s.rcpt)),
            b"msg_id" => match &s.msg_id {
                Some(id) => id,
                // Sendmail adds a Message-Id of its own when the message has none.
                None if !s.queue_id.is_empty() => {
                    out.push(b'<');
                    out.extend_from_slice(s.queue_id.as_bytes());
                    out.push(b'@');
                    out.extend_from_slice(MTA_HOST.as_bytes());
                    out.push(b'>');
                    return true;
                }
                None => b"",
            },
            _ => b"",
        };
        // Macros without a value are not sent (Postfix, Sendmail); Stalwart sends
        // its fixed list whatever the values (`{cipher}` is empty without TLS).
        if text.is_empty() {
            return self.profile == Profile::Stalwart;
        }
        out.extend_from_slice(text);
        true
    }
}

fn bare(a: &[u8]) -> &[u8] {
    milter_core::bare_address(a)
}

fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(value);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use milter_core::frame::decode_frame;
    use milter_core::{Actions, MacroDef, ProtocolOpts, SymbolList};

    fn negotiated(lists: Vec<SymbolList>) -> ClientNegotiated {
        ClientNegotiated {
            version: 6,
            actions: Actions::empty(),
            protocol: ProtocolOpts::empty(),
            skipped: Default::default(),
            no_reply: Default::default(),
            symbol_lists: lists,
        }
    }

    fn pairs(out: &[u8]) -> Vec<(String, String)> {
        let (frame, _) = decode_frame(out, 1 << 20).unwrap().unwrap();
        assert_eq!(frame.code, b'D');
        let d = MacroDef::decode(frame.payload).unwrap();
        d.pairs()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn state() -> MacroState {
        MacroState {
            client_name: "client.example.net".into(),
            client_addr: "192.0.2.1".into(),
            client_port: "4711".into(),
            sender: b"<a@example.org>".to_vec(),
            rcpt: b"<b@example.com>".to_vec(),
            queue_id: "4F2A1B3C5D".into(),
            phase: Some(Stage::Mail),
            queue_file_open: false,
            msg_id: None,
        }
    }

    #[test]
    fn postfix_sends_empty_d_and_no_queue_id_at_mail() {
        let n = negotiated(vec![]);
        let config = MacroConfig::default();
        let st = state();
        let w = MacroWriter {
            profile: Profile::Postfix,
            config: &config,
            state: &st,
            negotiated: &n,
        };
        let mut out = Vec::new();
        w.write(&mut out, b'H', Stage::Helo, false);
        assert_eq!(out, b"\0\0\0\x02DH");
        out.clear();
        w.write(&mut out, b'M', Stage::Mail, false);
        let p = pairs(&out);
        assert!(!p.iter().any(|(n, _)| n == "i"));
        assert!(p.contains(&("{mail_addr}".into(), "a@example.org".into())));
        out.clear();
        w.write(&mut out, b'B', Stage::Body, false);
        assert_eq!(pairs(&out), [("i".to_string(), "4F2A1B3C5D".to_string())]);
    }

    #[test]
    fn sendmail_skips_empty_lists_and_honours_symbol_lists() {
        let lists = vec![SymbolList {
            index: 0,
            macros: b"{client_addr} j".to_vec(),
        }];
        let n = negotiated(lists);
        let mut config = MacroConfig::default();
        config.set_value("{j}", Some(b"mta.test"));
        let st = state();
        let w = MacroWriter {
            profile: Profile::Sendmail,
            config: &config,
            state: &st,
            negotiated: &n,
        };
        let mut out = Vec::new();
        w.write(&mut out, b'T', Stage::Data, false);
        assert!(out.is_empty());
        w.write(&mut out, b'C', Stage::Connect, true);
        assert_eq!(
            pairs(&out),
            [
                ("{client_addr}".to_string(), "192.0.2.1".to_string()),
                ("j".to_string(), "mta.test".to_string())
            ]
        );
        out.clear();
        w.write(&mut out, b'M', Stage::Mail, false);
        assert!(pairs(&out).contains(&("i".into(), "4F2A1B3C5D".into())));
        out.clear();
        // The EOM list without an EOH list: Sendmail 8.17.1 keeps its default.
        w.write(&mut out, b'E', Stage::Eom, false);
        assert_eq!(
            pairs(&out),
            [(
                "{msg_id}".to_string(),
                "<4F2A1B3C5D@mx.example.org>".to_string()
            )]
        );
        out.clear();
        // A listed macro without a value: Sendmail still sends the stage byte.
        w.write(&mut out, b'H', Stage::Helo, false);
        assert_eq!(out, b"\0\0\0\x02DH");
    }
}
