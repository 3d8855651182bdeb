//! The plugin's durable key-value store, persisted by the host. It survives
//! restarts, reloads and upgrades, and is private to the plugin (for a
//! channel, to the account the instance serves).
//!
//! Several instances of a plugin run at once (one polling, others sending or
//! handling pushes), so a read-then-write of the same key can race: use
//! [`increment`] for counters and [`compare_and_swap`] (or [`update`]) for
//! anything else that must change atomically. A poll channel does not keep its
//! cursor here: the host owns it (see [`crate::Channel::poll`]).

use crate::Error;
use crate::bindings::host::kv;

/// Raw bytes under `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    kv::get(key).map_err(Into::into)
}
/// Store raw bytes under `key`, replacing any previous value.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    kv::set(key, value).map_err(Into::into)
}
/// Remove `key` (removing a missing key is not an error).
pub fn delete(key: &str) -> Result<(), Error> {
    kv::delete(key).map_err(Into::into)
}
/// Keys starting with `prefix`, in lexical order.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
    kv::list_keys(prefix).map_err(Into::into)
}
/// A UTF-8 string under `key` (invalid UTF-8 is replaced lossily).
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    Ok(get(key)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}
/// Store a UTF-8 string under `key`.
pub fn set_string(key: &str, value: &str) -> Result<(), Error> {
    set(key, value.as_bytes())
}
/// A JSON value under `key`.
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match get(key)? {
        Some(b) => Ok(Some(serde_json::from_slice(&b)?)),
        None => Ok(None),
    }
}
/// Store a JSON value under `key`.
pub fn set_json<T: serde::Serialize>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &serde_json::to_vec(value)?)
}

/// Atomically add `delta` to the signed 64-bit counter under `key` (a missing
/// key counts as 0) and return the new value. Safe across instances: every
/// caller gets a distinct value.
///
/// The counter is stored as decimal ASCII text, so [`get_string`] reads it
/// too; a key holding anything else gives [`Error::Permanent`].
///
/// ```no_run
/// # fn main() -> Result<(), pincer_sdk::Error> {
/// // A unique id for every outgoing message, even with many instances sending.
/// let id = format!("msg-{}", pincer_sdk::kv::increment("next_id", 1)?);
/// # let _ = id; Ok(()) }
/// ```
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    kv::increment(key, delta).map_err(Into::into)
}

/// Atomically replace the value under `key` with `new` (`None` deletes it) if
/// the current value equals `expected` (`None`: the key is absent). Returns
/// whether the swap happened; on `false`, read the key again and retry (or use
/// [`update`], which does that for you).
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<bool, Error> {
    kv::compare_and_swap(key, expected, new).map_err(Into::into)
}

/// How many times [`update`] retries a swap that lost a race.
const UPDATE_ATTEMPTS: usize = 64;

/// Atomically change the value under `key`: `f` gets the current value
/// (`None`: absent) and returns the new one (`None`: delete). If another
/// instance changed the key in between, `f` runs again on the fresh value, so
/// it must not have side effects. Returns what was stored. Gives
/// [`Error::Transient`] if the key kept changing for 64 attempts.
///
/// ```no_run
/// # fn main() -> Result<(), pincer_sdk::Error> {
/// // Remember the newest message id seen, whichever instance saw it.
/// let seen = 1042u64;
/// pincer_sdk::kv::update("newest", |old| {
///     let old: u64 = old
///         .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
///         .unwrap_or(0);
///     Some(old.max(seen).to_string().into_bytes())
/// })?;
/// # Ok(()) }
/// ```
pub fn update<F>(key: &str, mut f: F) -> Result<Option<Vec<u8>>, Error>
where
    F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get(key)?;
        let new = f(current.as_deref());
        if compare_and_swap(key, current.as_deref(), new.as_deref())? {
            return Ok(new);
        }
    }
    Err(Error::transient(format!(
        "kv key `{key}` kept changing: gave up after {UPDATE_ATTEMPTS} attempts"
    )))
}
