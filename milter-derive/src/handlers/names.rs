//! The handler names, and what an unknown name most likely meant.

/// A handler of the `Milter` trait: its name and, for stage handlers, the
/// `Stage` variant whose negotiation its return type decides.
pub(crate) struct Handler {
    pub(crate) name: &'static str,
    pub(crate) stage: Option<&'static str>,
}

const fn handler(name: &'static str, stage: Option<&'static str>) -> Handler {
    Handler { name, stage }
}

/// Every handler, in call order.
pub(crate) const HANDLERS: [Handler; 13] = [
    handler("negotiate", None),
    handler("connect", Some("Connect")),
    handler("helo", Some("Helo")),
    handler("mail", Some("Mail")),
    handler("rcpt", Some("Rcpt")),
    handler("data", Some("Data")),
    handler("header", Some("Header")),
    handler("eoh", Some("Eoh")),
    handler("body", Some("Body")),
    handler("eom", Some("Eom")),
    handler("abort", None),
    handler("close", None),
    handler("unknown", Some("Unknown")),
];

/// Names from libmilter (`xxfi_envfrom`), other milter libraries and plain
/// English, and the handler each stands for.
const ALIASES: [(&str, &str); 22] = [
    ("envfrom", "mail"),
    ("env_from", "mail"),
    ("mail_from", "mail"),
    ("from", "mail"),
    ("sender", "mail"),
    ("envrcpt", "rcpt"),
    ("env_rcpt", "rcpt"),
    ("rcpt_to", "rcpt"),
    ("recipient", "rcpt"),
    ("hello", "helo"),
    ("ehlo", "helo"),
    ("headers", "header"),
    ("end_of_headers", "eoh"),
    ("end_of_header", "eoh"),
    ("end_of_message", "eom"),
    ("body_chunk", "body"),
    ("chunk", "body"),
    ("connection", "connect"),
    ("unknown_command", "unknown"),
    ("negotiation", "negotiate"),
    ("quit", "close"),
    ("cleanup", "close"),
];

/// The handler called `name`, if any.
pub(crate) fn find(name: &str) -> Option<&'static Handler> {
    HANDLERS.iter().find(|h| h.name == name)
}

/// The error message for a method of `impl Milter` that is not a handler.
pub(crate) fn unknown(name: &str) -> String {
    let list = HANDLERS
        .iter()
        .map(|h| h.name)
        .collect::<Vec<_>>()
        .join(", ");
    if name == "reset_message" {
        return "`reset_message` is not a handler: `#[derive(Milter)]` writes it from the fields \
                marked `#[milter(per_message)]` (a hand-written `Declaration` implements it)"
            .to_string();
    }
    let helper = "a helper method goes in an inherent `impl Type` block";
    match closest(name) {
        Some((handler, Some(alias))) => format!(
            "no milter handler is called `{name}`: libmilter's `xxfi_{alias}` is `{handler}` here \
             (the handlers are {list}; {helper})"
        ),
        Some((handler, None)) => format!(
            "no milter handler is called `{name}`; did you mean `{handler}`? (the handlers are \
             {list}; {helper})"
        ),
        None => format!("no milter handler is called `{name}`; the handlers are {list} ({helper})"),
    }
}

/// The handler `name` most likely means, and the libmilter-style alias it was
/// recognised by, if any.
fn closest(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    let lower = name.to_ascii_lowercase();
    let mut bare = lower.as_str();
    for prefix in ["xxfi_", "smfi_", "on_", "handle_"] {
        bare = bare.strip_prefix(prefix).unwrap_or(bare);
    }
    let bare = bare.trim_matches('_');
    if let Some(h) = find(bare) {
        return Some((h.name, None));
    }
    if let Some((alias, handler)) = ALIASES.iter().find(|(alias, _)| *alias == bare) {
        let libmilter = ["envfrom", "envrcpt"].contains(alias).then_some(*alias);
        return Some((handler, libmilter));
    }
    HANDLERS
        .iter()
        .map(|h| (distance(bare, h.name), h.name))
        .filter(|(d, handler)| *d <= 2 && *d < handler.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, handler)| (handler, None))
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_a_misspelt_name_meant() {
        let cases = [
            ("recpt", "rcpt"),
            ("hello", "helo"),
            ("envfrom", "mail"),
            ("envrcpt", "rcpt"),
            ("eom_", "eom"),
            ("xxfi_eom", "eom"),
            ("xxfi_envfrom", "mail"),
            ("on_connect", "connect"),
            ("conect", "connect"),
            ("Header", "header"),
            ("headers", "header"),
            ("end_of_message", "eom"),
        ];
        for (written, meant) in cases {
            assert_eq!(closest(written).map(|(h, _)| h), Some(meant), "{written}");
        }
        assert_eq!(closest("frobnicate"), None);
        assert_eq!(closest("new"), None);
    }

    #[test]
    fn names_libmilter_aliases() {
        assert_eq!(
            unknown("envfrom"),
            "no milter handler is called `envfrom`: libmilter's `xxfi_envfrom` is `mail` here \
             (the handlers are negotiate, connect, helo, mail, rcpt, data, header, eoh, body, \
             eom, abort, close, unknown; a helper method goes in an inherent `impl Type` block)"
        );
        assert!(unknown("recpt").contains("did you mean `rcpt`?"));
    }

    #[test]
    fn measures_edit_distance() {
        assert_eq!(distance("recpt", "rcpt"), 1);
        assert_eq!(distance("", "eom"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
