//! Custom SMTP replies (`y`): validated when built, escaped for the MTA.

use crate::error::ReplyError;
use crate::limits::{MAX_REPLY_LINE, MAX_REPLY_LINES};

/// A custom SMTP reply: a 4xx or 5xx code, an optional enhanced status code of the
/// same class, and one or more lines of text.
///
/// Built by [`SmtpReply::new`] or [`SmtpReply::multiline`], which check every rule
/// Sendmail and Postfix apply to a custom reply (a reply breaking one is replaced
/// by the MTA's default text, or treated as a milter failure): a code from 400 to
/// 599; an optional enhanced status code `class.subject.detail` (RFC 3463) whose
/// class is the code's first digit; 1 to 32 lines of at most 980 bytes, without
/// CR, LF or NUL. `%` in the text is doubled so that neither MTA treats it as a
/// format directive.
///
/// ```
/// use milter_core::SmtpReply;
/// let r = SmtpReply::new(550, Some("5.7.1"), "100% spam").unwrap();
/// assert_eq!(r.wire_text(), b"550 5.7.1 100%% spam");
/// assert!(r.is_permanent());
///
/// let ml = SmtpReply::multiline(451, None, &["try", "later"]).unwrap();
/// assert_eq!(ml.wire_text(), b"451-4.0.0 try\r\n451 4.0.0 later");
///
/// assert!(SmtpReply::new(250, None, "ok").is_err());
/// assert!(SmtpReply::new(550, Some("4.7.1"), "mismatch").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmtpReply {
    code: u16,
    text: Vec<u8>,
}

impl SmtpReply {
    /// A single-line reply: `code [enhanced] text`.
    pub fn new(code: u16, enhanced: Option<&str>, text: &str) -> Result<SmtpReply, ReplyError> {
        Self::build(code, enhanced, &[text], false)
    }

    /// A multi-line reply, `code-enhanced line` CRLF ... `code enhanced last`.
    /// Without an enhanced code, `4.0.0`/`5.0.0` is used on every line, as
    /// libmilter's `smfi_setmlreply` does, also for a single line:
    ///
    /// ```
    /// use milter_core::SmtpReply;
    /// let one = SmtpReply::multiline(550, None, &["only"]).unwrap();
    /// assert_eq!(one.wire_text(), b"550 5.0.0 only");
    /// ```
    pub fn multiline(
        code: u16,
        enhanced: Option<&str>,
        lines: &[&str],
    ) -> Result<SmtpReply, ReplyError> {
        Self::build(code, enhanced, lines, true)
    }

    fn build(
        code: u16,
        enhanced: Option<&str>,
        lines: &[&str],
        multi: bool,
    ) -> Result<SmtpReply, ReplyError> {
        if !(400..=599).contains(&code) {
            return Err(ReplyError::BadCode(code.to_string()));
        }
        if lines.is_empty() || lines.len() > MAX_REPLY_LINES {
            return Err(ReplyError::LineCount(lines.len()));
        }
        let class = (code / 100) as u8;
        if let Some(e) = enhanced {
            check_enhanced(e, class)?;
        }
        let default_enhanced = if class == 4 { "4.0.0" } else { "5.0.0" };
        // libmilter's smfi_setmlreply puts the default enhanced code on every
        // line, also when it is given a single line (`550 5.0.0 only`);
        // smfi_setreply adds none.
        let enhanced = match (enhanced, multi) {
            (Some(e), _) => Some(e),
            (None, true) => Some(default_enhanced),
            (None, false) => None,
        };
        let mut text = Vec::with_capacity(16 + lines.iter().map(|l| l.len() + 12).sum::<usize>());
        for (i, line) in lines.iter().enumerate() {
            if line.len() > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong {
                    line: i,
                    len: line.len(),
                });
            }
            if line.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(ReplyError::ControlCharacter { line: i });
            }
            if i > 0 {
                text.extend_from_slice(b"\r\n");
            }
            let last = i + 1 == lines.len();
            text.extend_from_slice(code.to_string().as_bytes());
            text.push(if last { b' ' } else { b'-' });
            if let Some(e) = enhanced {
                text.extend_from_slice(e.as_bytes());
                if !line.is_empty() {
                    text.push(b' ');
                }
            }
            for b in line.bytes() {
                if b == b'%' {
                    text.push(b'%');
                }
                text.push(b);
            }
        }
        Ok(SmtpReply { code, text })
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Whether this is a 5xx (permanent) reply; otherwise it is 4xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Whether the MTA will close the SMTP session after sending it (421).
    pub fn closes_session(&self) -> bool {
        self.code == 421
    }

    /// The text exactly as it goes into the `y` packet (without the NUL).
    pub fn wire_text(&self) -> &[u8] {
        &self.text
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.text))
    }
}

/// `class.subject.detail`, class equal to the reply code's, 1–3 digits each.
fn check_enhanced(e: &str, class: u8) -> Result<(), ReplyError> {
    let bad = || ReplyError::BadEnhancedCode(e.to_string());
    let mut parts = e.split('.');
    let (Some(c), Some(s), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    if c.len() != 1 || c.as_bytes()[0] != b'0' + class || !digits(s, 3) || !digits(d, 3) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_layouts() {
        let r = SmtpReply::new(550, Some("5.7.1"), "Blocked").unwrap();
        assert_eq!(r.wire_text(), b"550 5.7.1 Blocked");
        let r = SmtpReply::new(451, None, "later").unwrap();
        assert_eq!(r.wire_text(), b"451 later");
        let r = SmtpReply::new(421, Some("4.7.0"), "").unwrap();
        assert_eq!(r.wire_text(), b"421 4.7.0");
        assert!(r.closes_session());
    }

    #[test]
    fn refuses_bad_codes_and_text() {
        assert!(matches!(
            SmtpReply::new(399, None, "x"),
            Err(ReplyError::BadCode(_))
        ));
        assert!(matches!(
            SmtpReply::new(600, None, "x"),
            Err(ReplyError::BadCode(_))
        ));
        assert!(SmtpReply::new(550, Some("5.7"), "x").is_err());
        assert!(SmtpReply::new(550, Some("5.7.1234"), "x").is_err());
        assert!(SmtpReply::new(450, Some("5.7.1"), "x").is_err());
        assert!(matches!(
            SmtpReply::new(550, None, "a\r\nb"),
            Err(ReplyError::ControlCharacter { line: 0 })
        ));
        let long = "x".repeat(981);
        assert!(matches!(
            SmtpReply::new(550, None, &long),
            Err(ReplyError::LineTooLong { .. })
        ));
        assert!(SmtpReply::new(550, None, &"x".repeat(980)).is_ok());
    }

    #[test]
    fn multiline_limits() {
        let lines: Vec<String> = (0..32).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let r = SmtpReply::multiline(550, Some("5.7.1"), &refs).unwrap();
        let text = String::from_utf8(r.wire_text().to_vec()).unwrap();
        assert_eq!(text.matches("\r\n").count(), 31);
        assert!(text.starts_with("550-5.7.1 line 0\r\n"));
        assert!(text.ends_with("550 5.7.1 line 31"));
        let mut more = refs.clone();
        more.push("one too many");
        assert_eq!(
            SmtpReply::multiline(550, None, &more),
            Err(ReplyError::LineCount(33))
        );
    }

    /// As libmilter: `smfi_setmlreply` with one line still carries the default
    /// enhanced code; `smfi_setreply` carries none.
    #[test]
    fn a_one_line_multiline_reply_has_the_default_enhanced_code() {
        let one = SmtpReply::multiline(550, None, &["only"]).unwrap();
        assert_eq!(one.wire_text(), b"550 5.0.0 only");
        let temp = SmtpReply::multiline(451, None, &["later"]).unwrap();
        assert_eq!(temp.wire_text(), b"451 4.0.0 later");
        assert_eq!(
            SmtpReply::new(550, None, "only").unwrap().wire_text(),
            b"550 only"
        );
    }
}
