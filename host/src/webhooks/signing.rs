//! Standard Webhooks signing (the `v1` symmetric scheme).
//!
//! This module owns the endpoint secrets (`whsec_<base64>`: generating,
//! parsing and printing them) and the `webhook-signature` header value: an
//! HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`, base64-encoded and
//! prefixed `v1,`. During a secret rotation a delivery is signed with the new
//! and the old secret, space-separated, so receivers holding either verify.
//! See <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a printed secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes in a generated secret.
pub const GENERATED_SECRET_LEN: usize = 32;
/// The longest secret accepted, in decoded bytes (the spec's upper bound).
pub const MAX_SECRET_LEN: usize = 64;

/// Why a secret string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing after the optional `whsec_` prefix.
    #[error("webhook secret is empty (expected `whsec_<base64>`)")]
    Empty,
    /// The part after `whsec_` is not standard base64.
    #[error("webhook secret is not valid base64 (expected `whsec_<base64>`): {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded key is longer than [`MAX_SECRET_LEN`] bytes.
    #[error("webhook secret is {0} bytes long; at most {MAX_SECRET_LEN} are allowed")]
    TooLong(usize),
}

/// A symmetric signing key: the raw bytes behind `whsec_<base64>`.
///
/// `Debug` prints only the length, never the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A fresh random secret of [`GENERATED_SECRET_LEN`] bytes from the
    /// thread-local CSPRNG.
    pub fn generate() -> Secret {
        Secret {
            key: rand::random::<[u8; GENERATED_SECRET_LEN]>().to_vec(),
        }
    }

    /// Parse `whsec_<standard base64>`; the prefix may be left out. The key
    /// must be non-empty and at most [`MAX_SECRET_LEN`] bytes.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        if b64.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = STANDARD.decode(b64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        if key.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong(key.len()));
        }
        Ok(Secret { key })
    }

    /// The printed form, `whsec_<standard base64>`.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// One signature, `v1,<base64 HMAC-SHA256>` over
    /// `{msg_id}.{timestamp_secs}.{body}`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("len", &self.key.len())
            .finish_non_exhaustive()
    }
}

/// The `webhook-signature` header value: one signature per secret,
/// space-separated, in the order given (during a rotation: new, then old).
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TS: i64 = 1649367553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn spec_test_vector() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(secret.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        // The prefix is optional.
        let bare = Secret::parse(SPEC_SECRET.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(bare.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert_eq!(bare.to_whsec(), SPEC_SECRET);
    }

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_ne!(secret.sign("msg_other", SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert_ne!(secret.sign(SPEC_ID, SPEC_TS + 1, SPEC_BODY), SPEC_SIG);
        assert_ne!(secret.sign(SPEC_ID, SPEC_TS, b"{}"), SPEC_SIG);
    }

    #[test]
    fn generate_round_trips() {
        let a = Secret::generate();
        let printed = a.to_whsec();
        assert!(printed.starts_with("whsec_"), "{printed}");
        let b = Secret::parse(&printed).unwrap();
        assert_eq!(a.key.len(), GENERATED_SECRET_LEN);
        assert_eq!(a.key, b.key);
        assert_eq!(b.to_whsec(), printed);
        assert_eq!(a.sign("m", 1, b"x"), b.sign("m", 1, b"x"));
        assert_ne!(a.key, Secret::generate().key, "two secrets differ");
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(matches!(Secret::parse(""), Err(SecretError::Empty)));
        assert!(matches!(Secret::parse("whsec_"), Err(SecretError::Empty)));
        assert!(matches!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::Base64(_))
        ));
        // URL-safe alphabet is not standard base64.
        assert!(matches!(
            Secret::parse("whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD"),
            Err(SecretError::Base64(_))
        ));
        let long = format!("whsec_{}", STANDARD.encode([7u8; MAX_SECRET_LEN + 1]));
        assert!(matches!(
            Secret::parse(&long),
            Err(SecretError::TooLong(n)) if n == MAX_SECRET_LEN + 1
        ));
        let max = format!("whsec_{}", STANDARD.encode([7u8; MAX_SECRET_LEN]));
        assert!(Secret::parse(&max).is_ok());
        let msg = Secret::parse(&long).unwrap_err().to_string();
        assert!(msg.contains("at most 64"), "{msg}");
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("C2FVsBQIhrscChlQIMV"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", secret.key)), "{shown}");
        assert!(shown.contains("len"), "{shown}");
    }

    #[test]
    fn header_signs_with_every_secret() {
        let new = Secret::parse(SPEC_SECRET).unwrap();
        let old = Secret::generate();
        let header = signature_header(&[&new, &old], SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], SPEC_SIG);
        assert_eq!(parts[1], old.sign(SPEC_ID, SPEC_TS, SPEC_BODY));
        assert_eq!(
            signature_header(&[&new], SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIG
        );
        assert_eq!(signature_header(&[], SPEC_ID, SPEC_TS, SPEC_BODY), "");
    }
}
