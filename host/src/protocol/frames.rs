//! Frame envelopes: `req` (client → server), `res` and `event` (server →
//! client), and the v4 `cancel` frame. Serialization never emits `null` for
//! an optional field and never adds keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::ErrorShape;

/// A client frame, parsed loosely enough to answer anything with a clear
/// error: the `type` decides, then the fields are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// A request.
    Req(Request),
    /// A v4 cancel of a pending request.
    Cancel {
        /// The request id to cancel.
        id: String,
    },
}

/// A request frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Caller-chosen id, echoed in the response.
    pub id: String,
    /// Method name.
    pub method: String,
    /// Parameters (`null` when absent).
    pub params: Value,
}

/// Why a text frame is not a valid client frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// JSON, but not a valid frame; `id` is the frame's id when it had a
    /// string one (so the error response can carry it).
    #[error("invalid request frame: {reason}")]
    Invalid {
        /// The frame's id, if any.
        id: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

impl ClientFrame {
    /// Parse one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(FrameError::Invalid {
                id: None,
                reason: "frame must be an object".into(),
            });
        };
        let id = obj.get("id").and_then(Value::as_str).map(str::to_string);
        let invalid = |reason: &str| FrameError::Invalid {
            id: id.clone(),
            reason: reason.to_string(),
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("req") => {}
            Some("cancel") => {
                return match &id {
                    Some(id) if !id.is_empty() => Ok(ClientFrame::Cancel { id: id.clone() }),
                    _ => Err(invalid("cancel frame must have a non-empty string id")),
                };
            }
            Some(other) => return Err(invalid(&format!("unknown frame type {other:?}"))),
            None => return Err(invalid("must have required property 'type'")),
        }
        for key in obj.keys() {
            if !matches!(key.as_str(), "type" | "id" | "method" | "params") {
                return Err(invalid(&format!(
                    "must NOT have additional property {key:?}"
                )));
            }
        }
        let id = match &id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => return Err(invalid("'id' must be a non-empty string")),
        };
        let method = match obj.get("method").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return Err(invalid("'method' must be a non-empty string")),
        };
        let params = obj.get("params").cloned().unwrap_or(Value::Null);
        Ok(ClientFrame::Req(Request { id, method, params }))
    }
}

/// `stateVersion` on `presence` and `health` events and in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateVersion {
    /// Presence counter (from 1).
    pub presence: u64,
    /// Health counter (from 1).
    pub health: u64,
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request id.
    pub id: String,
    /// Success?
    pub ok: bool,
    /// The result (also allowed on failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The error, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorShape>,
}

impl Response {
    /// A success.
    pub fn ok(id: impl Into<String>, payload: Value) -> Self {
        Response {
            kind: "res",
            id: id.into(),
            ok: true,
            payload: Some(payload),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: impl Into<String>, error: ErrorShape) -> Self {
        Response {
            kind: "res",
            id: id.into(),
            ok: false,
            payload: None,
            error: Some(error),
        }
    }

    /// A failure that also carries a payload (`chat.send`, `agent`).
    pub fn err_with(id: impl Into<String>, error: ErrorShape, payload: Value) -> Self {
        Response {
            payload: Some(payload),
            ..Response::err(id, error)
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Only non-string map keys can fail, and Value has none.
            String::from(r#"{"type":"res","id":"invalid","ok":false}"#)
        })
    }
}

/// An event frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Event name.
    pub event: &'a str,
    /// Payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
    /// Per-connection sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// State counters (presence and health events).
    #[serde(rename = "stateVersion", skip_serializing_if = "Option::is_none")]
    pub state_version: Option<StateVersion>,
}

impl<'a> EventFrame<'a> {
    /// An event.
    pub fn new(
        event: &'a str,
        payload: Option<&'a Value>,
        seq: Option<u64>,
        state_version: Option<StateVersion>,
    ) -> Self {
        EventFrame {
            kind: "event",
            event,
            payload,
            seq,
            state_version,
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"type":"event","event":"invalid"}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_requests_and_cancel() {
        let f = ClientFrame::parse(r#"{"type":"req","id":"1:x","method":"health","params":{}}"#)
            .unwrap();
        assert_eq!(
            f,
            ClientFrame::Req(Request {
                id: "1:x".into(),
                method: "health".into(),
                params: json!({})
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"cancel","id":"7"}"#).unwrap(),
            ClientFrame::Cancel { id: "7".into() }
        );
    }

    #[test]
    fn rejects_bad_frames_with_id_when_known() {
        assert!(matches!(
            ClientFrame::parse("nope"),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"req","id":"9"}"#),
            Err(FrameError::Invalid { id: Some(id), .. }) if id == "9"
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"req","id":"9","method":"x","extra":1}"#),
            Err(FrameError::Invalid { .. })
        ));
        assert!(matches!(
            ClientFrame::parse(r#"[1,2]"#),
            Err(FrameError::Invalid { id: None, .. })
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"req","id":"","method":"x"}"#),
            Err(FrameError::Invalid { .. })
        ));
    }

    #[test]
    fn envelopes_have_no_nulls() {
        let r = Response::ok("1", json!({"a":1})).to_text();
        assert_eq!(r, r#"{"type":"res","id":"1","ok":true,"payload":{"a":1}}"#);
        let p = json!({"ts":1});
        let e = EventFrame::new("tick", Some(&p), Some(3), None).to_text();
        assert_eq!(
            e,
            r#"{"type":"event","event":"tick","payload":{"ts":1},"seq":3}"#
        );
    }
}
