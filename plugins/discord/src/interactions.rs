//! Discord's HTTP interactions endpoint (slash commands), optional: Discord
//! POSTs an interaction to `/channels/discord/webhook`, signed with the
//! application's Ed25519 key. The **host** checks `X-Signature-Ed25519`
//! over `X-Signature-Timestamp` + body against the operator's
//! `public_key` before this plugin runs (the manifest's
//! `[webhook.verify]`); a push reaches [`handle`] only verified.
//!
//! A PING (type 1) is answered `{"type":1}`. An APPLICATION_COMMAND (type
//! 2, e.g. `/ask text:...`) becomes an inbound message (id
//! `interaction:<id>`) and is answered at once with a deferred response
//! (type 5: Discord shows "thinking..."); the agent's answer later replaces
//! it through the follow-up webhook (`PATCH /webhooks/{app}/{token}/
//! messages/@original`, see [`send`]), further pieces are follow-up
//! messages (`POST /webhooks/{app}/{token}`). The interaction token (valid
//! 15 minutes) is kept in kv under `ix:<id>` until then.

use pincer_sdk::{ChatType, Error, InboundMessage, WebhookRequest, WebhookResponse, clock, kv};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rest;

/// Prefix of an interaction's inbound id (and so of the `reply_to` of its
/// answer), and of the message ids [`send`] returns.
pub const PREFIX: &str = "interaction:";
/// The `verified` value of a push the host checked with Ed25519.
pub const VERIFIED: &str = "ed25519";
/// How long Discord accepts an interaction token, ms.
pub const TOKEN_TTL_MS: u64 = 15 * 60 * 1000;
/// kv prefix of stored interaction tokens.
const KEY_PREFIX: &str = "ix:";

/// Interaction types (Discord's `type`).
const PING: u64 = 1;
const APPLICATION_COMMAND: u64 = 2;
const AUTOCOMPLETE: u64 = 4;

/// What an answer needs of an interaction, kept until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The application id (the follow-up webhook's id).
    pub app_id: String,
    /// The interaction token (the follow-up webhook's token).
    pub token: String,
    /// When the interaction arrived, Unix ms.
    pub at: u64,
    /// Whether the deferred response was replaced already (later pieces
    /// are follow-up messages).
    pub answered: bool,
}

/// Where an answer to an interaction goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The interaction id.
    pub id: &'a str,
    /// A follow-up message's id (`None`: the original response).
    pub message: Option<&'a str>,
}

/// Parse a `reply_to` or message id written by this module.
pub fn target(id: &str) -> Option<Target<'_>> {
    let rest = id.strip_prefix(PREFIX)?;
    Some(match rest.split_once('/') {
        Some((id, m)) => Target {
            id,
            message: Some(m),
        },
        None => Target {
            id: rest,
            message: None,
        },
    })
}

fn json_answer(status: u16, body: &Value, messages: Vec<InboundMessage>) -> WebhookResponse {
    pincer_sdk::webhook_json(status, body, messages)
}

/// Handle one verified interaction push.
pub fn handle(request: &WebhookRequest) -> Result<WebhookResponse, Error> {
    if request.verified.as_deref() != Some(VERIFIED) {
        // The manifest makes the host verify every push; anything else is
        // a host without that section: refuse rather than trust it.
        return Ok(pincer_sdk::webhook_text(401, "unverified interaction"));
    }
    if !request.method.eq_ignore_ascii_case("POST") {
        return Ok(pincer_sdk::webhook_text(405, "interactions are POSTed"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return Ok(pincer_sdk::webhook_text(400, "the interaction is not JSON"));
    };
    match body["type"].as_u64() {
        Some(PING) => Ok(json_answer(200, &json!({"type": 1}), Vec::new())),
        Some(APPLICATION_COMMAND) => command(&body),
        Some(AUTOCOMPLETE) => Ok(json_answer(
            200,
            &json!({"type": 8, "data": {"choices": []}}),
            Vec::new(),
        )),
        Some(_) => Ok(json_answer(
            200,
            &json!({"type": 4, "data": {
                "content": "This bot answers slash commands only.",
                "flags": 64,
            }}),
            Vec::new(),
        )),
        None => Ok(pincer_sdk::webhook_text(400, "the interaction has no type")),
    }
}

/// An APPLICATION_COMMAND: keep its token, hand its text to the agent and
/// defer the response.
fn command(d: &Value) -> Result<WebhookResponse, Error> {
    let (Some(id), Some(app_id), Some(token)) = (
        d["id"].as_str(),
        d["application_id"].as_str(),
        d["token"].as_str(),
    ) else {
        return Ok(pincer_sdk::webhook_text(
            400,
            "the interaction lacks id, application_id or token",
        ));
    };
    let now = clock::now_ms();
    let Some(message) = inbound(d, now) else {
        return Ok(pincer_sdk::webhook_text(
            400,
            "the interaction names no channel or user",
        ));
    };
    prune(now);
    let stored = Stored {
        app_id: app_id.to_string(),
        token: token.to_string(),
        at: now,
        answered: false,
    };
    kv::set_json(&format!("{KEY_PREFIX}{id}"), &stored)?;
    Ok(json_answer(200, &json!({"type": 5}), vec![message]))
}

/// Forget tokens Discord no longer accepts.
fn prune(now: u64) {
    let Ok(keys) = kv::list_keys(KEY_PREFIX) else {
        return;
    };
    for key in keys {
        let expired = kv::get_json::<Stored>(&key)
            .ok()
            .flatten()
            .is_none_or(|s| now.saturating_sub(s.at) > TOKEN_TTL_MS);
        if expired {
            let _ = kv::delete(&key);
        }
    }
}

/// The inbound message an APPLICATION_COMMAND carries: its options' values
/// as the text (`/ask text:hello` gives `hello`; a command without options
/// gives `/name`), from the invoking user, in the channel it was used in,
/// at `now` (Discord delivers an interaction as it is made).
pub fn inbound(d: &Value, now: u64) -> Option<InboundMessage> {
    let id = d["id"].as_str()?;
    let conversation = d["channel_id"]
        .as_str()
        .or_else(|| d["channel"]["id"].as_str())?;
    let in_guild = d["guild_id"].as_str().is_some();
    let user = if d["member"]["user"].is_object() {
        &d["member"]["user"]
    } else {
        &d["user"]
    };
    let sender = user["id"].as_str()?;
    let mut values = Vec::new();
    option_values(&d["data"]["options"], &mut values);
    let text = if values.is_empty() {
        format!("/{}", d["data"]["name"].as_str().unwrap_or_default())
    } else {
        values.join(" ")
    };
    Some(InboundMessage {
        id: format!("{PREFIX}{id}"),
        conversation: conversation.to_string(),
        chat_type: if in_guild {
            ChatType::Group
        } else {
            ChatType::Direct
        },
        thread: None,
        sender: sender.to_string(),
        sender_name: user["global_name"]
            .as_str()
            .or_else(|| user["username"].as_str())
            .map(str::to_string),
        sender_is_bot: user["bot"].as_bool() == Some(true),
        // A slash command addresses the bot.
        mentioned: true,
        reply_to: None,
        text,
        attachments: Vec::new(),
        reaction: None,
        timestamp: now,
    })
}

/// The values of a command's options, depth first (sub-commands and
/// groups nest theirs).
fn option_values(options: &Value, out: &mut Vec<String>) {
    for o in options.as_array().into_iter().flatten() {
        match &o["value"] {
            Value::String(s) => out.push(s.trim().to_string()),
            Value::Null => {}
            v => out.push(v.to_string()),
        }
        option_values(&o["options"], out);
    }
}

/// The stored token of interaction `id`, unless it expired.
pub fn load(id: &str) -> Result<Option<Stored>, Error> {
    let stored = kv::get_json::<Stored>(&format!("{KEY_PREFIX}{id}"))?;
    Ok(stored.filter(|s| clock::now_ms().saturating_sub(s.at) <= TOKEN_TTL_MS))
}

fn webhook_path(s: &Stored) -> String {
    format!("/webhooks/{}/{}", s.app_id, s.token)
}

/// Answer interaction `id` with `body` (`content`, `allowed_mentions`):
/// the first piece replaces the deferred response, later pieces are
/// follow-up messages. The message id to edit it by.
pub fn send(api_base: &str, id: &str, stored: Stored, body: &Value) -> Result<String, Error> {
    let base = webhook_path(&stored);
    if !stored.answered {
        rest::call_webhook(
            api_base,
            "PATCH",
            &format!("{base}/messages/@original"),
            body,
        )?;
        kv::set_json(
            &format!("{KEY_PREFIX}{id}"),
            &Stored {
                answered: true,
                ..stored
            },
        )?;
        return Ok(format!("{PREFIX}{id}"));
    }
    let v = rest::call_webhook(api_base, "POST", &format!("{base}?wait=true"), body)?;
    let message = v["id"]
        .as_str()
        .ok_or_else(|| Error::transient("Discord's follow-up answer has no message id"))?;
    Ok(format!("{PREFIX}{id}/{message}"))
}

/// Edit an answer [`send`] posted.
pub fn edit(api_base: &str, target: &Target<'_>, text: &str) -> Result<(), Error> {
    let stored = load(target.id)?.ok_or_else(|| {
        Error::permanent(format!(
            "interaction {} expired (Discord accepts answers for 15 minutes)",
            target.id
        ))
    })?;
    let path = format!(
        "{}/messages/{}",
        webhook_path(&stored),
        target.message.unwrap_or("@original")
    );
    rest::call_webhook(api_base, "PATCH", &path, &json!({"content": text})).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(target("123"), None);
        assert_eq!(
            target("interaction:9"),
            Some(Target {
                id: "9",
                message: None
            })
        );
        assert_eq!(
            target("interaction:9/77"),
            Some(Target {
                id: "9",
                message: Some("77")
            })
        );
    }

    #[test]
    fn slash_command_options_become_the_text() {
        let d = json!({
            "id": "1300000000000000001", "type": 2, "application_id": "5", "token": "t",
            "channel_id": "42", "guild_id": "7",
            "member": {"user": {"id": "11", "username": "ann"}},
            "data": {"name": "ask", "options": [{"name": "text", "type": 3, "value": " what time is it? "}]},
        });
        let m = inbound(&d, 5).unwrap();
        assert_eq!(m.id, "interaction:1300000000000000001");
        assert_eq!(m.conversation, "42");
        assert_eq!(m.sender, "11");
        assert_eq!(m.text, "what time is it?");
        assert!(matches!(m.chat_type, ChatType::Group));
        assert!(m.mentioned);
        let dm = json!({"id": "2", "channel": {"id": "43"}, "user": {"id": "12"},
            "data": {"name": "ping"}});
        let m = inbound(&dm, 5).unwrap();
        assert_eq!((m.conversation.as_str(), m.text.as_str()), ("43", "/ping"));
        assert!(matches!(m.chat_type, ChatType::Direct));
        assert!(inbound(&json!({"id": "3", "data": {}}), 5).is_none());
    }
}
