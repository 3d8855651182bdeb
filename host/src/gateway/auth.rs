//! Shared-secret and device-token authentication for `connect`.
//! Secrets are compared in constant time; device tokens are stored hashed.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// How operators authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// No shared secret (loopback only).
    None,
    /// A shared token.
    Token(Secret),
    /// A shared password.
    Password(Secret),
}

/// Only the mode's name: never the secret.
impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuthMode {
    /// `none`, `token` or `password` (as in `snapshot.authMode`).
    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Token(_) => "token",
            AuthMode::Password(_) => "password",
        }
    }
}

/// Constant-time equality of two secrets (length leaks, content does not).
pub fn secret_eq(a: &str, b: &str) -> bool {
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.ct_eq(&hb).into()
}

/// A fresh random token (256 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a device token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("abc", "abcd"));
        assert_ne!(new_token(), new_token());
    }
}
