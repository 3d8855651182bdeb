//! The plugin's durable key-value store, persisted by the host. It survives
//! restarts, reloads and upgrades: keep cursors (update offsets) here.

use crate::pincer_sdk::Error;
use crate::pincer_sdk::bindings::host::kv;

/// Raw bytes under `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    kv::get(key).map_err(Into::into)
}
/// Store raw bytes under `key`.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    kv::set(key, value).map_err(Into::into)
}
/// Remove `key`.
pub fn delete(key: &str) -> Result<(), Error> {
    kv::delete(key).map_err(Into::into)
}
/// Keys starting with `prefix`, in order.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
    kv::list_keys(prefix).map_err(Into::into)
}
/// A UTF-8 string under `key`.
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
