//! What the signature schemes ([`super::hmac`], [`super::ed25519`]) share:
//! reading and decoding the signature header, the timestamp window, and the
//! signed base string built from the exact raw body.

use base64::Engine;

use super::config::{Encoding, Part, Signature};
use super::{Push, Reason, Rejection};

/// The signature header decoded to bytes (401 if absent; 403 if the
/// prefix is missing or the encoding is wrong).
pub fn signature_bytes(push: &Push<'_>, sig: &Signature) -> Result<Vec<u8>, Rejection> {
    let raw = push.required(&sig.header)?.trim();
    let invalid = |what: &str| Rejection::new(Reason::Invalid, format!("`{}` {what}", sig.header));
    let encoded = raw
        .strip_prefix(sig.prefix.as_str())
        .ok_or_else(|| invalid("lacks the declared prefix"))?;
    match sig.encoding {
        Encoding::Hex => hex::decode(encoded).map_err(|_| invalid("is not hex")),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| invalid("is not base64")),
    }
}

/// The timestamp the base string uses, checked against the window around
/// `now_s` (Unix seconds). `None` when the scheme signs no timestamp.
pub fn timestamp<'a>(
    push: &Push<'a>,
    sig: &Signature,
    now_s: u64,
) -> Result<Option<&'a str>, Rejection> {
    let Some(name) = &sig.timestamp_header else {
        return Ok(None);
    };
    let text = push.required(name)?.trim();
    let ts: u64 =
        if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse()
                .map_err(|_| Rejection::new(Reason::Invalid, format!("`{name}` is not a number")))?
        } else {
            return Err(Rejection::new(
                Reason::Invalid,
                format!("`{name}` is not Unix seconds"),
            ));
        };
    let skew = now_s.abs_diff(ts);
    if skew > sig.tolerance_s {
        let when = if ts < now_s { "old" } else { "in the future" };
        return Err(Rejection::new(
            Reason::Stale,
            format!(
                "timestamp {skew} s {when} (tolerance {} s)",
                sig.tolerance_s
            ),
        ));
    }
    Ok(Some(text))
}

/// The pieces of the signed base string, in order: literal text, the
/// timestamp as sent, and the raw body (never re-serialised).
pub fn base_string<'a>(
    sig: &'a Signature,
    push: &Push<'a>,
    ts: Option<&'a str>,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let body = push.body;
    sig.signed.iter().map(move |p| match p {
        Part::Text(t) => t.as_bytes(),
        Part::Body => body,
        Part::Timestamp => ts.unwrap_or_default().as_bytes(),
    })
}
