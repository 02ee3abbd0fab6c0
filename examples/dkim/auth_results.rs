//! Authentication-Results (RFC 8601): ours, and recognising forged ones.

use crate::verifier::Verdict;

/// The header value (after the colon, leading space, folds as LF + tab): one
/// `dkim=` result per signature, `dkim=none` without any.
pub fn header_value(authserv_id: &str, verdicts: &[Verdict]) -> String {
    let mut v = format!(" {authserv_id}");
    if verdicts.is_empty() {
        v.push_str("; dkim=none");
        return v;
    }
    for r in verdicts {
        v.push_str(";\n\tdkim=");
        v.push_str(r.result);
        if let Some(reason) = &r.reason {
            v.push_str(" reason=\"");
            v.extend(
                reason
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control()),
            );
            v.push('"');
        }
        if !r.domain.is_empty() {
            v.push_str(&format!(" header.d={} header.s={}", r.domain, r.selector));
        }
        if !r.b_prefix.is_empty() {
            v.push_str(&format!(" header.b={}", r.b_prefix));
        }
    }
    v
}

/// The authserv-id an Authentication-Results value claims: its first token,
/// after any comment, before `;` or white space (RFC 8601 §2.2; an optional
/// version number may follow it).
pub fn authserv_id(value: &[u8]) -> &[u8] {
    let mut rest = value.trim_ascii_start();
    // Skip leading comments: "(comment) id;".
    while let Some(after) = rest.strip_prefix(b"(") {
        let end = after
            .iter()
            .position(|&b| b == b')')
            .map_or(after.len(), |p| p + 1);
        rest = after[end..].trim_ascii_start();
    }
    let end = rest
        .iter()
        .position(|&b| b == b';' || b.is_ascii_whitespace() || b == b'(')
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_authserv_id() {
        assert_eq!(
            authserv_id(b" mx.example.com; dkim=pass"),
            b"mx.example.com"
        );
        assert_eq!(authserv_id(b"\tmx.example.com 1; none"), b"mx.example.com");
        assert_eq!(authserv_id(b" (forged) mx.example.com;"), b"mx.example.com");
        assert_eq!(authserv_id(b"mx.example.com"), b"mx.example.com");
        assert_eq!(authserv_id(b""), b"");
    }

    #[test]
    fn one_result_per_signature() {
        let pass = Verdict {
            result: "pass",
            reason: None,
            domain: "example.com".into(),
            selector: "s1".into(),
            b_prefix: "abcdEFGH".into(),
        };
        let fail = Verdict {
            result: "fail",
            reason: Some("body hash \"did\" not verify".into()),
            ..pass.clone()
        };
        assert_eq!(
            header_value("mx.example.net", &[pass, fail]),
            " mx.example.net;\n\tdkim=pass header.d=example.com header.s=s1 header.b=abcdEFGH;\n\t\
dkim=fail reason=\"body hash did not verify\" header.d=example.com header.s=s1 header.b=abcdEFGH"
        );
        assert_eq!(header_value("mx", &[]), " mx; dkim=none");
    }
}
