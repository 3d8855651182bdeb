//! Device identity: Ed25519 signatures over the v2/v3 connect payloads.
//!
//! `device.id` is the lowercase hex SHA-256 of the raw 32-byte public key;
//! keys and signatures are base64url (standard base64 and padding are
//! accepted too); the server tries the v3 payload, then v2.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::DEVICE_SIGNATURE_SKEW_MS;
use super::connect::ConnectParams;

/// Why a device signature was refused: (detail code, reason, message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAuthError {
    /// `DEVICE_AUTH_*` detail code.
    pub code: &'static str,
    /// Reference reason (`device-signature`, ...).
    pub reason: &'static str,
    /// Message for the client.
    pub message: &'static str,
}

const fn err(code: &'static str, reason: &'static str, message: &'static str) -> DeviceAuthError {
    DeviceAuthError {
        code,
        reason,
        message,
    }
}

/// Decode base64 in any of the accepted alphabets.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// The device id of a raw public key.
pub fn device_id(raw_public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(raw_public_key))
}

fn normalize_meta(s: Option<&str>) -> String {
    s.unwrap_or("")
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The token the signature covers: `auth.token ?? auth.deviceToken ??
/// auth.bootstrapToken ?? ""`.
pub fn signature_token(p: &ConnectParams) -> String {
    let a = p.auth.clone().unwrap_or_default();
    a.token
        .or(a.device_token)
        .or(a.bootstrap_token)
        .unwrap_or_default()
}

/// The payload string for `version` (2 or 3).
pub fn payload(p: &ConnectParams, version: u8) -> Option<String> {
    let d = p.device.as_ref()?;
    let base = format!(
        "v{version}|{}|{}|{}|{}|{}|{}|{}|{}",
        d.id,
        p.client.id,
        p.client.mode,
        p.role(),
        p.scopes.join(","),
        d.signed_at,
        signature_token(p),
        d.nonce
    );
    Some(match version {
        3 => format!(
            "{base}|{}|{}",
            normalize_meta(Some(&p.client.platform)),
            normalize_meta(p.client.device_family.as_deref())
        ),
        _ => base,
    })
}

/// Verify the device identity in `p` against the challenge `nonce` at time
/// `now_ms`. `Ok` carries the raw public key.
pub fn verify(p: &ConnectParams, nonce: &str, now_ms: i64) -> Result<Vec<u8>, DeviceAuthError> {
    let Some(d) = &p.device else {
        return Err(err(
            "DEVICE_IDENTITY_REQUIRED",
            "device-missing",
            "device identity required",
        ));
    };
    let key_bytes = decode_b64(&d.public_key)
        .filter(|k| k.len() == 32)
        .ok_or(err(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            "device-public-key",
            "device public key invalid",
        ))?;
    if device_id(&key_bytes) != d.id.to_ascii_lowercase() {
        return Err(err(
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            "device-id-mismatch",
            "device identity mismatch",
        ));
    }
    if (now_ms - d.signed_at).abs() > DEVICE_SIGNATURE_SKEW_MS {
        return Err(err(
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device-signature-stale",
            "device signature expired",
        ));
    }
    if d.nonce.is_empty() {
        return Err(err(
            "DEVICE_AUTH_NONCE_REQUIRED",
            "device-nonce-missing",
            "device nonce required",
        ));
    }
    if d.nonce != nonce {
        return Err(err(
            "DEVICE_AUTH_NONCE_MISMATCH",
            "device-nonce-mismatch",
            "device nonce mismatch",
        ));
    }
    let key_arr: [u8; 32] = key_bytes.as_slice().try_into().map_err(|_| {
        err(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            "device-public-key",
            "device public key invalid",
        )
    })?;
    let key = VerifyingKey::from_bytes(&key_arr).map_err(|_| {
        err(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            "device-public-key",
            "device public key invalid",
        )
    })?;
    let bad_sig = err(
        "DEVICE_AUTH_SIGNATURE_INVALID",
        "device-signature",
        "device signature invalid",
    );
    let sig_bytes = decode_b64(&d.signature).ok_or(bad_sig)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| bad_sig)?;
    for version in [3, 2] {
        if let Some(msg) = payload(p, version)
            && key.verify(msg.as_bytes(), &sig).is_ok()
        {
            return Ok(key_bytes);
        }
    }
    Err(bad_sig)
}
