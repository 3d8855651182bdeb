//! A header whose value must equal a granted secret, compared in constant
//! time (Telegram echoes the `secret_token` given to `setWebhook` as
//! `X-Telegram-Bot-Api-Secret-Token`). Never read from the query string.

use subtle::ConstantTimeEq;

use super::{Push, Reason, Rejection};

/// Whether `a` equals `b`, in time independent of where they differ.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Check that header `header` of `push` equals `secret`.
pub fn verify(push: &Push<'_>, header: &str, secret: &str) -> Result<(), Rejection> {
    let given = push.required(header)?;
    if secret_eq(given.as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::Invalid,
            format!("`{header}` does not match the secret"),
        ))
    }
}
