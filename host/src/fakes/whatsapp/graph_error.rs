//! Graph API error answers as the WhatsApp Cloud API sends them:
//! `{"error":{"message","type","code","error_data"?,"fbtrace_id"}}` with the
//! documented HTTP status per code (decide by `error.code`, not status).

use serde_json::{Value, json};

/// One Graph error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphError {
    pub(crate) status: u16,
    pub(crate) code: i64,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<String>,
    pub(crate) subcode: Option<i64>,
}

impl GraphError {
    /// The documented error for `code` (unknown codes: 400 with a generic
    /// title).
    pub(crate) fn for_code(code: i64) -> GraphError {
        let (status, title, details): (u16, &str, Option<&str>) = match code {
            190 => (
                401,
                "Error validating access token: Session has expired.",
                None,
            ),
            4 => (
                400,
                "(#4) Application request limit reached",
                Some("API Too Many Calls"),
            ),
            80007 => (
                400,
                "(#80007) Rate limit issues",
                Some("The WhatsApp Business Account has reached its rate limit."),
            ),
            130429 => (
                400,
                "(#130429) Rate limit hit",
                Some("Cloud API message throughput has been reached."),
            ),
            131056 => (
                400,
                "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                Some(
                    "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
                ),
            ),
            131047 => (
                400,
                "(#131047) Re-engagement message",
                Some(
                    "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
                ),
            ),
            131026 => (
                400,
                "(#131026) Message Undeliverable",
                Some("Unable to deliver message."),
            ),
            131048 => (
                400,
                "(#131048) Spam rate limit hit",
                Some(
                    "Message failed to send because there are restrictions on how many messages can be sent from this phone number.",
                ),
            ),
            1 => (500, "An unknown error occurred", None),
            2 => (
                503,
                "An unexpected error has occurred. Please retry your request later.",
                None,
            ),
            _ => (400, "(#{code}) Error", None),
        };
        GraphError {
            status,
            code,
            kind: "OAuthException",
            message: title.replace("{code}", &code.to_string()),
            details: details.map(str::to_string),
            subcode: None,
        }
    }

    /// 401 for a missing or wrong bearer token.
    pub(crate) fn bad_token() -> GraphError {
        GraphError {
            status: 401,
            code: 190,
            kind: "OAuthException",
            message: "Invalid OAuth access token - Cannot parse access token".into(),
            details: None,
            subcode: None,
        }
    }

    /// `(#100)` invalid parameter.
    pub(crate) fn param(message: impl Into<String>) -> GraphError {
        GraphError {
            status: 400,
            code: 100,
            kind: "OAuthException",
            message: message.into(),
            details: None,
            subcode: None,
        }
    }

    /// An id that is not an object this token can see.
    pub(crate) fn no_object(id: &str) -> GraphError {
        GraphError {
            status: 400,
            code: 100,
            kind: "GraphMethodException",
            message: format!(
                "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
            details: None,
            subcode: Some(33),
        }
    }

    /// A status-only server failure (`5xx`), Graph's code 1 or 2.
    pub(crate) fn server(status: u16) -> GraphError {
        let mut e = GraphError::for_code(if status == 503 { 2 } else { 1 });
        e.status = status;
        e
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        let mut e = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "fbtrace_id": format!("AFake{}", uuid::Uuid::new_v4().simple()),
        });
        if let Some(d) = &self.details {
            e["error_data"] = json!({"messaging_product": "whatsapp", "details": d});
        }
        if let Some(s) = self.subcode {
            e["error_subcode"] = json!(s);
        }
        json!({ "error": e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_have_their_status_and_shape() {
        let e = GraphError::for_code(130429);
        assert_eq!(e.status, 400);
        let b = e.body();
        assert_eq!(b["error"]["code"], 130429);
        assert_eq!(b["error"]["type"], "OAuthException");
        assert_eq!(b["error"]["message"], "(#130429) Rate limit hit");
        assert!(b["error"]["error_data"]["details"].is_string());
        assert!(b["error"]["fbtrace_id"].is_string());
        assert_eq!(GraphError::for_code(190).status, 401);
        assert_eq!(GraphError::for_code(131047).body()["error"]["code"], 131047);
        assert_eq!(GraphError::for_code(99).message, "(#99) Error");
        assert_eq!(GraphError::server(503).body()["error"]["code"], 2);
    }
}
