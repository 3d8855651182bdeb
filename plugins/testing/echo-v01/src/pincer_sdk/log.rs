//! Structured logging into the host's log, tagged with the plugin's name.

use crate::pincer_sdk::bindings::host::log::{Level, write};

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
/// Log at `debug` with structured fields.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Debug, message, fields)
}

fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write(level, message, &fields);
}
