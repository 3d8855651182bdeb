//! How values are stored in SQLite columns, shared by the store modules:
//! JSON text columns (decoded with an error naming the column) and limits.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::StoreError;

/// Decode a JSON column; `what` names it for the error.
pub(super) fn parse<T: DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))
}

/// A list of strings as a JSON array column.
pub(super) fn list_json(items: &[String]) -> String {
    Value::from(items.to_vec()).to_string()
}

/// A JSON object column.
pub(super) fn map_json(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}

/// A `usize` limit as SQLite wants it.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
