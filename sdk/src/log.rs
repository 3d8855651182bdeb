//! Structured logging into the host's log, tagged with the plugin's name.
//! The host rate-limits and truncates records (see `wit/README.md`), so log
//! what an operator needs, with the ids as fields rather than in the text.
//!
//! ```no_run
//! pincer_sdk::log::warn("sendMessage failed", &[("chat", "42"), ("status", "429")]);
//! ```

use crate::bindings::host::log::{Level, write};

/// Log at `trace` with structured fields.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Trace, message, fields)
}
/// Log at `debug` with structured fields.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Debug, message, fields)
}
/// Log at `info` with structured fields.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Info, message, fields)
}
/// Log at `warn` with structured fields.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Warn, message, fields)
}
/// Log at `error` with structured fields.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Error, message, fields)
}

fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write(level, message, &fields);
}
