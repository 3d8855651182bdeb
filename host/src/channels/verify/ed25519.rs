//! Ed25519 over the signed base string (Discord: `X-Signature-Ed25519`, hex,
//! over `X-Signature-Timestamp` followed by the raw body) with the public
//! key from the plugin's config, within a timestamp window.

use ed25519_dalek::{Signature as EdSignature, VerifyingKey};

use super::config::Signature;
use super::{Push, Reason, Rejection, signed};

/// Parse a hex public key (64 hex digits).
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "is not hex".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "is not 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "is not a valid Ed25519 public key".to_string())
}

/// Check `push` against `sig` with `key` at host time `now_s`.
pub fn verify(
    push: &Push<'_>,
    sig: &Signature,
    key: &VerifyingKey,
    now_s: u64,
) -> Result<(), Rejection> {
    let given = signed::signature_bytes(push, sig)?;
    let ts = signed::timestamp(push, sig, now_s)?;
    let invalid = |what: &str| Rejection::new(Reason::Invalid, format!("`{}` {what}", sig.header));
    let given = EdSignature::from_slice(&given).map_err(|_| invalid("is not 64 bytes"))?;
    let message: Vec<u8> = signed::base_string(sig, push, ts)
        .flatten()
        .copied()
        .collect();
    key.verify_strict(&message, &given)
        .map_err(|_| invalid("does not match the body"))
}
