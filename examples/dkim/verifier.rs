//! Verifying: the body hashes each signature needs, computed as the body
//! streams past, and the results per signature.

use crate::resolver::Resolver;
use crate::signer::BodyHash;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::dkim::{Canonicalization, DkimError};
use mail_auth::{AuthenticatedMessage, DkimResult};

/// One body hash a signature of the message asks for.
type HashSpec = (Canonicalization, HashAlgorithm, u64);

/// The body hashes a message's signatures need, fed chunk by chunk.
#[derive(Default)]
pub struct BodyHashes {
    hashes: Vec<(HashSpec, BodyHash)>,
}

impl BodyHashes {
    /// The hashes the signatures in `header_block` (headers ending in CRLF,
    /// then the empty line) ask for; none when it has no signature.
    pub fn for_headers(message: &[u8]) -> BodyHashes {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return BodyHashes::default();
        };
        let hashes = parsed
            .body_hashes
            .iter()
            .map(|(c, h, l, _)| ((*c, *h, *l), BodyHash::new(*h, *c, *l)))
            .collect();
        BodyHashes { hashes }
    }

    pub fn write(&mut self, chunk: &[u8]) {
        for (_, h) in &mut self.hashes {
            h.write(chunk);
        }
    }

    fn finish(self) -> Vec<(HashSpec, Vec<u8>)> {
        self.hashes
            .into_iter()
            .map(|(spec, h)| (spec, h.finish().0))
            .collect()
    }
}

/// The result for one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// RFC 8601 result: pass, fail, neutral, temperror, permerror.
    pub result: &'static str,
    /// Why, when not pass.
    pub reason: Option<String>,
    pub domain: String,
    pub selector: String,
    /// The first 8 characters of b=, to tell signatures apart.
    pub b_prefix: String,
}

/// Verifies the signatures of a message whose header block (with the empty
/// line) is `message` and whose body was fed to `body`.
pub fn verify(message: &[u8], body: BodyHashes, resolver: &Resolver) -> Vec<Verdict> {
    let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
        return Vec::new();
    };
    for (spec, hash) in body.finish() {
        if let Some(entry) = parsed
            .body_hashes
            .iter_mut()
            .find(|(c, h, l, _)| (*c, *h, *l) == spec)
        {
            entry.3 = hash;
        }
    }
    let outputs = resolver.verify(&parsed);
    outputs
        .iter()
        .map(|o| {
            let (result, reason) = match o.result() {
                DkimResult::Pass => ("pass", None),
                // RFC 6376 §6.1.3: a body hash mismatch is a failure.
                DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => {
                    ("fail", Some("body hash did not verify".to_string()))
                }
                DkimResult::Fail(e) => ("fail", Some(e.to_string())),
                DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
                DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
                DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
                DkimResult::None => ("none", None),
            };
            let (domain, selector, b_prefix) = match o.signature() {
                Some(s) => {
                    let b = BASE64.encode(&s.b);
                    (s.d.clone(), s.s.clone(), b.chars().take(8).collect())
                }
                None => Default::default(),
            };
            Verdict {
                result,
                reason,
                domain,
                selector,
                b_prefix,
            }
        })
        .collect()
}
