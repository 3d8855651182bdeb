//! The call record of a fake: every request it received, in order, with
//! its method, parameters, headers, multipart parts and (once answered) the
//! status and body it was answered with.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::Value;

use super::multipart::Part;
use super::wait::Changes;

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The API method: a Bot API method name (`sendMessage`), or for the
    /// WhatsApp fake the endpoint (`messages`, `media_upload`, `media`,
    /// `media_download`).
    pub method: String,
    /// The HTTP method (`GET`, `POST`).
    pub http_method: String,
    /// Every parameter as one JSON object (query string, JSON body, form
    /// fields and multipart text fields merged; form values stay strings).
    pub params: Value,
    /// The request headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// The multipart parts (file parts with their bytes), if the body was
    /// `multipart/form-data`.
    pub parts: Vec<Part>,
    /// The status it was answered with; `None` while unanswered (hanging,
    /// or abandoned by the client before the answer).
    pub status: Option<u16>,
    /// The JSON body of the answer (`Null` while unanswered or for a
    /// non-JSON answer such as a file download).
    pub response: Value,
    /// When the request arrived.
    pub at: Instant,
}

impl Call {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The multipart part named `name`, if any.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// The ordered call record.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    calls: Mutex<Vec<Call>>,
    /// Answered calls per method (so waits on big runs stay O(1)).
    answered: Mutex<HashMap<String, usize>>,
}

/// The newest `n` calls of `calls` as `method->status`, newest first: what
/// a fake's failed wait prints so the test author sees what did happen.
pub(crate) fn recent(calls: &[Call], n: usize) -> String {
    let calls: Vec<String> = calls
        .iter()
        .rev()
        .take(n)
        .map(|c| format!("{}->{:?}", c.method, c.status))
        .collect();
    format!("last calls (newest first) {calls:?}")
}

impl Recorder {
    /// Record a new call; returns its index for [`Recorder::answer`].
    pub(crate) fn begin(&self, call: Call, changes: &Changes) -> usize {
        let i = {
            let mut calls = self.calls.lock();
            calls.push(call);
            calls.len() - 1
        };
        changes.bump();
        i
    }

    /// Record the answer to call `i`.
    pub(crate) fn answer(&self, i: usize, status: u16, response: Value, changes: &Changes) {
        if let Some(c) = self.calls.lock().get_mut(i) {
            c.status = Some(status);
            c.response = response;
            *self.answered.lock().entry(c.method.clone()).or_default() += 1;
        }
        changes.bump();
    }

    /// A copy of every call so far.
    pub(crate) fn all(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    /// Calls of `method` so far.
    pub(crate) fn of(&self, method: &str) -> Vec<Call> {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many calls of `method` have been answered.
    pub(crate) fn answered(&self, method: &str) -> usize {
        self.answered.lock().get(method).copied().unwrap_or(0)
    }

    /// Forget every call (for benchmarks that reuse a fake).
    pub(crate) fn clear(&self) {
        self.calls.lock().clear();
        self.answered.lock().clear();
    }
}

/// Request headers as `(lower-case name, value)` pairs (non-UTF-8 values
/// lossily converted).
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
