//! HMAC-SHA256 over the signed base string, keyed with a granted secret:
//! Meta's `X-Hub-Signature-256: sha256=<hex>` over the raw body, Slack's
//! `X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{body}` within a
//! timestamp window. Compared in constant time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::Signature;
use super::{Push, Reason, Rejection, signed};

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn mac<'a>(key: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut m = keyed(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// Check `push` against `sig` with `key` at host time `now_s`.
pub fn verify(push: &Push<'_>, sig: &Signature, key: &[u8], now_s: u64) -> Result<(), Rejection> {
    let given = signed::signature_bytes(push, sig)?;
    let ts = signed::timestamp(push, sig, now_s)?;
    let mut m = keyed(key);
    for p in signed::base_string(sig, push, ts) {
        m.update(p);
    }
    m.verify_slice(&given).map_err(|_| {
        Rejection::new(
            Reason::Invalid,
            format!("`{}` does not match the body", sig.header),
        )
    })
}
