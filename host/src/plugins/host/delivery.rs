//! `pincer:delivery@0.1.0`: the idempotency key of the outbound message the
//! current `send`, `edit` or `draft` call delivers. The caller (the outbox,
//! the reply streamer) sets it on the instance for the duration of one call
//! ([`crate::plugins::Instance::send_keyed`]); the plugin reads it with
//! `send-context.idempotency-key` (Matrix's transaction id, Discord's nonce).
//! Keys are built here ([`outbox_key`], [`derived_key`]) so every path makes
//! them the same way: at most [`MAX_KEY_LEN`] characters of `[a-z0-9-]`.

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use crate::plugins::bindings::delivery::pincer::delivery::send_context;

/// Longest key the contract allows.
pub const MAX_KEY_LEN: usize = 32;

/// The per-instance part: the key of the call in progress, if any.
#[derive(Debug, Default)]
pub struct SendContext {
    key: Option<String>,
}

impl SendContext {
    /// Set (or clear) the key for the next call.
    pub fn set(&mut self, key: Option<String>) {
        self.key = key;
    }
}

/// The key of outbox row `id` (one row is one chunk; ids are never reused
/// within a store, so a retry or a restart gets the same key).
pub fn outbox_key(id: i64) -> String {
    format!("o{id}")
}

/// A key derived from `parts` (which must identify the delivery, for
/// example the inbox row, the position in the reply and the text): `prefix`
/// then a hex SHA-256 prefix, [`MAX_KEY_LEN`] characters in all.
pub fn derived_key(prefix: char, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut key = String::with_capacity(MAX_KEY_LEN);
    key.push(prefix);
    key.push_str(&hex::encode(h.finalize())[..MAX_KEY_LEN - 1]);
    key
}

impl send_context::Host for HostState {
    async fn idempotency_key(&mut self) -> Option<String> {
        self.delivery.key.clone()
    }
}

/// Link `pincer:delivery/send-context` (every 0.2 plugin may import it).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    send_context::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(k: &str) -> bool {
        k.len() <= MAX_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    #[test]
    fn keys_fit_the_contract_and_are_stable() {
        assert!(valid(&outbox_key(i64::MAX)));
        let a = derived_key('e', &["room", "$ev", "hello"]);
        assert!(valid(&a), "{a}");
        assert_eq!(a.len(), MAX_KEY_LEN);
        assert_eq!(a, derived_key('e', &["room", "$ev", "hello"]));
        assert_ne!(a, derived_key('e', &["room", "$ev", "hello!"]));
        // Part boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            derived_key('s', &["ab", "c"]),
            derived_key('s', &["a", "bc"])
        );
        assert_ne!(outbox_key(1), outbox_key(2));
    }
}
