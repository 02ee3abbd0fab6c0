//! Signing: keys, the streamed body hash, and the DKIM-Signature header.

use mail_auth::common::crypto::{
    DkimKey, Ed25519Key, HashAlgorithm, HashContext, HashImpl, RsaKey, Sha1, Sha256,
    SigningKey as _,
};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::canonicalize::BodyHasher;
use mail_auth::dkim::{Canonicalization, Signature};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::fmt;
use std::path::Path;

/// One key of the key table.
pub struct SigningKey {
    pub domain: String,
    pub selector: String,
    key: DkimKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.domain,
            self.selector,
            self.algorithm()
        )
    }
}

impl SigningKey {
    /// Reads a PEM key file: PKCS#8 (RSA or Ed25519) or PKCS#1 RSA.
    pub fn load(domain: &str, selector: &str, file: &Path) -> Result<SigningKey, String> {
        let pem = std::fs::read(file)
            .map_err(|e| format!("{}: cannot read the key: {e}", file.display()))?;
        SigningKey::from_pem(domain, selector, &pem).map_err(|e| format!("{}: {e}", file.display()))
    }

    /// A key from PEM text.
    pub fn from_pem(domain: &str, selector: &str, pem: &[u8]) -> Result<SigningKey, String> {
        if selector.is_empty()
            || !selector
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!("{selector:?} is not a selector"));
        }
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key: {e}"))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(p) => {
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der()) {
                    Ok(k) => DkimKey::Ed25519(k),
                    Err(_) => DkimKey::Rsa(
                        RsaKey::<Sha256>::from_key_der(der.clone_key())
                            .map_err(|e| format!("neither an Ed25519 nor an RSA key: {e}"))?,
                    ),
                }
            }
            PrivateKeyDer::Pkcs1(_) => DkimKey::Rsa(
                RsaKey::<Sha256>::from_key_der(der.clone_key())
                    .map_err(|e| format!("not a usable RSA key: {e}"))?,
            ),
            _ => return Err("unsupported key type (use RSA or Ed25519)".into()),
        };
        Ok(SigningKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key,
        })
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            DkimKey::Rsa(_) => "rsa-sha256",
            DkimKey::Ed25519(_) => "ed25519-sha256",
        }
    }
}

/// A body hash computed as the chunks stream past: nothing of the body is kept.
pub enum BodyHash {
    Sha1(BodyHasher<<Sha1 as HashImpl>::Context>),
    Sha256(BodyHasher<<Sha256 as HashImpl>::Context>),
}

impl BodyHash {
    /// A hash of the body in `canonicalization`, of the first `limit` bytes
    /// (0: all).
    pub fn new(algorithm: HashAlgorithm, canonicalization: Canonicalization, limit: u64) -> Self {
        match algorithm {
            HashAlgorithm::Sha1 => {
                BodyHash::Sha1(BodyHasher::new(Sha1::hasher(), canonicalization, limit))
            }
            HashAlgorithm::Sha256 => {
                BodyHash::Sha256(BodyHasher::new(Sha256::hasher(), canonicalization, limit))
            }
        }
    }

    pub fn write(&mut self, chunk: &[u8]) {
        match self {
            BodyHash::Sha1(h) => h.write(chunk),
            BodyHash::Sha256(h) => h.write(chunk),
        }
    }

    /// The hash, and the body bytes hashed.
    pub fn finish(self) -> (Vec<u8>, u64) {
        match self {
            BodyHash::Sha1(h) => {
                let (ctx, len) = h.finish();
                (ctx.complete().as_ref().to_vec(), len)
            }
            BodyHash::Sha256(h) => {
                let (ctx, len) = h.finish();
                (ctx.complete().as_ref().to_vec(), len)
            }
        }
    }
}

/// How to sign: the header list and the canonicalization.
#[derive(Debug, Clone)]
pub struct SignSettings {
    pub headers: Vec<String>,
    pub oversign: Vec<String>,
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
}

/// What was signed, for the log.
#[derive(Debug)]
pub struct Signed {
    /// The DKIM-Signature header value as a milter sends it: leading space,
    /// folds as LF + tab, no final line end.
    pub value: String,
    /// `d=`, `s=`, `a=`, for the log.
    pub summary: String,
}

/// A header field: the name and the value with its final CRLF.
type Field<'a> = (&'a [u8], &'a [u8]);

/// The fields of a header block (each `Name:value` CRLF, folds as CRLF +
/// white space): the name and the value with its final CRLF, as the
/// canonicalization takes them.
fn fields(block: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    let mut lines = block.split_inclusive(|&b| b == b'\n').peekable();
    let mut pos = 0;
    while let Some(line) = lines.next() {
        pos += line.len();
        if lines
            .peek()
            .is_some_and(|next| next.starts_with(b" ") || next.starts_with(b"\t"))
        {
            continue;
        }
        let field = &block[start..pos];
        start = pos;
        if let Some(colon) = field.iter().position(|&b| b == b':') {
            out.push((&field[..colon], &field[colon + 1..]));
        }
    }
    out
}

/// The h= list and the header fields it covers, in signing order: for each
/// configured name, its occurrences from the bottom up, then once more if it
/// is over-signed (covering a header that does not exist, so none can be
/// added).
fn select_headers<'a>(
    header_block: &'a [u8],
    settings: &SignSettings,
) -> (Vec<String>, Vec<Field<'a>>) {
    let fields = fields(header_block);
    let mut names = Vec::new();
    let mut covered = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in &settings.headers {
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            continue;
        }
        seen.push(name);
        for field in fields
            .iter()
            .rev()
            .filter(|(n, _)| n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        {
            names.push(name.clone());
            covered.push(*field);
        }
        if settings
            .oversign
            .iter()
            .any(|o| o.eq_ignore_ascii_case(name))
        {
            names.push(name.clone());
        }
    }
    (names, covered)
}

/// The canonical headers and the signature header without b=, as hashed.
struct Signable<'a> {
    canonicalization: Canonicalization,
    headers: Vec<Field<'a>>,
    signature: &'a Signature,
}

impl Writable for Signable<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.canonicalization
            .canonicalize_headers(self.headers.into_iter(), writer);
        self.signature.write(writer, false);
    }
}

/// Signs a message: `header_block` is its header fields as received (each
/// ending in CRLF), `body_hash` the finished hash of its body in
/// `settings.body_canonicalization`, `now` the signing time (`t=`).
pub fn sign(
    key: &SigningKey,
    settings: &SignSettings,
    header_block: &[u8],
    body_hash: &[u8],
    now: u64,
) -> Result<Signed, mail_auth::Error> {
    let (names, covered) = select_headers(header_block, settings);
    if covered.is_empty() {
        return Err(mail_auth::Error::NoHeadersFound);
    }
    let mut signature = Signature {
        v: 1,
        a: key.key.algorithm(),
        d: key.domain.clone(),
        s: key.selector.clone(),
        bh: body_hash.to_vec(),
        h: names,
        t: now,
        ch: settings.header_canonicalization,
        cb: settings.body_canonicalization,
        ..Signature::default()
    };
    signature.b = key.key.sign(Signable {
        canonicalization: settings.header_canonicalization,
        headers: covered,
        signature: &signature,
    })?;
    let header = signature.to_header();
    let value = header
        .strip_prefix("DKIM-Signature:")
        .unwrap_or(&header)
        .trim_end_matches("\r\n")
        .replace("\r\n", "\n");
    Ok(Signed {
        value: no_fold_before_end(&value),
        summary: format!("d={} s={} a={}", key.domain, key.selector, key.algorithm()),
    })
}

/// The header with no white space between the b= value and the final `;`.
/// mail-auth may fold there (`b=...\n\t;`); RFC 6376 §3.7 has verifiers
/// delete that white space with the b= value, and OpenDKIM does, but dkimpy
/// keeps it and then fails the signature.
fn no_fold_before_end(value: &str) -> String {
    match value.trim_end().strip_suffix(';') {
        Some(rest) => format!("{};", rest.trim_end()),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_final_semicolon_follows_the_signature_directly() {
        assert_eq!(
            super::no_fold_before_end(" a=1; b=abc\n\tdef\n\t;"),
            " a=1; b=abc\n\tdef;"
        );
        assert_eq!(super::no_fold_before_end(" a=1; b=abc;"), " a=1; b=abc;");
        assert_eq!(super::no_fold_before_end(" a=1; b=abc"), " a=1; b=abc");
    }

    #[test]
    fn fields_keep_folds_and_line_ends() {
        let block = b"A: 1\r\nB: 2\r\n\t3\r\nC:4\r\n";
        assert_eq!(
            super::fields(block),
            [
                (&b"A"[..], &b" 1\r\n"[..]),
                (b"B", b" 2\r\n\t3\r\n"),
                (b"C", b"4\r\n")
            ]
        );
    }
}
