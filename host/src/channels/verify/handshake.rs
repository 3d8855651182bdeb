//! Meta's subscription handshake, answered by the host: `GET
//! ?hub.mode=subscribe&hub.verify_token=<token>&hub.challenge=<n>` gets 200
//! with the bare challenge when the mode and token match, else 403.

use super::shared_header::secret_eq;
use super::{Answer, Reason, Rejection};

/// Longest challenge echoed back.
pub const MAX_CHALLENGE: usize = 256;

/// The answer to a handshake with `query`, whose verify token must be `token`.
pub fn answer(query: &str, token: &str) -> Result<Answer, Rejection> {
    let mut mode = None;
    let mut given = None;
    let mut challenge = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut given,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        if slot.is_some() {
            return Err(Rejection::new(
                Reason::Handshake,
                format!("`{k}` given more than once"),
            ));
        }
        *slot = Some(v.into_owned());
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(Rejection::new(
            Reason::Handshake,
            "`hub.mode` is not `subscribe`",
        ));
    }
    let given = given.unwrap_or_default();
    if !secret_eq(given.as_bytes(), token.as_bytes()) {
        return Err(Rejection::new(
            Reason::Handshake,
            "`hub.verify_token` does not match",
        ));
    }
    let challenge = challenge.unwrap_or_default();
    let printable = challenge.bytes().all(|b| b.is_ascii_graphic());
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE || !printable {
        return Err(Rejection::new(
            Reason::Handshake,
            "`hub.challenge` missing, too long or not printable",
        ));
    }
    Ok(Answer {
        status: 200,
        body: challenge,
    })
}
