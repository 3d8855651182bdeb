//! The Telegram fake's smaller methods: `sendMessageDraft` (Bot API 9.3+
//! native streaming in private chats), `deleteMessage`,
//! `setMessageReaction`, `answerCallbackQuery`, and `setMyCommands` /
//! `getMyCommands` / `deleteMyCommands`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::BotCore;
use super::api::{ApiError, ApiRequest, ok};
use super::markup::{ParseMode, plain_text};
use super::state::Draft;

/// `sendMessageDraft`: a live draft in a private chat; `text` may be empty
/// (a placeholder), at most 4096 characters after parsing.
pub(super) fn send_message_draft(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let draft_id = req.int("draft_id")?.unwrap_or(0);
    if draft_id == 0 {
        return Err(ApiError::bad("draft_id must be non-zero"));
    }
    let text = req.str("text").unwrap_or_default();
    let mode = if req.json("entities")?.is_some() {
        None
    } else {
        ParseMode::from_param(&req.str("parse_mode").unwrap_or_default()).map_err(ApiError::bad)?
    };
    let plain =
        plain_text(&text, mode).map_err(|e| ApiError::bad(format!("can't parse entities: {e}")))?;
    if plain.chars().count() > 4096 {
        return Err(ApiError::bad("message is too long"));
    }
    let thread_id = req.int("message_thread_id")?;
    {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        if chat.chat["type"] != "private" {
            return Err(ApiError::bad("TEXTDRAFT_PEER_INVALID"));
        }
        s.drafts.push(Draft {
            chat_id,
            draft_id,
            text: plain,
            thread_id,
        });
    }
    bot.changes.bump();
    Ok(ok(json!(true)))
}

/// `deleteMessage` (the bot's own messages; others' too in groups, where
/// the fake assumes admin rights).
pub(super) fn delete_message(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let Some(id) = req.int("message_id")? else {
        return Err(ApiError::bad("message identifier is not specified"));
    };
    {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        let own = chat.sent.contains(&id);
        if !chat.messages.contains_key(&id) || (!own && chat.chat["type"] == "private") {
            return Err(ApiError::bad("message to delete not found"));
        }
        chat.messages.remove(&id);
        chat.sent.retain(|m| *m != id);
        chat.sent_source.remove(&id);
    }
    bot.changes.bump();
    Ok(ok(json!(true)))
}

/// `setMessageReaction` (e.g. an ack reaction on the user's message).
pub(super) fn set_message_reaction(
    bot: &Arc<BotCore>,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let Some(id) = req.int("message_id")? else {
        return Err(ApiError::bad("message identifier is not specified"));
    };
    let reaction = req.json("reaction")?.unwrap_or_else(|| json!([]));
    if !reaction.is_array() {
        return Err(ApiError::bad("can't parse reaction JSON array"));
    }
    {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        let Some(m) = chat.messages.get_mut(&id) else {
            return Err(ApiError::bad("message to react not found"));
        };
        m["fake_bot_reaction"] = reaction;
    }
    bot.changes.bump();
    Ok(ok(json!(true)))
}

/// `answerCallbackQuery` (accepted; recorded in the call log).
pub(super) fn answer_callback_query(req: &ApiRequest) -> Result<Value, ApiError> {
    match req.str("callback_query_id") {
        Some(id) if !id.is_empty() => Ok(ok(json!(true))),
        _ => Err(ApiError::bad(
            "query is too old and response timeout expired or query ID is invalid",
        )),
    }
}

/// `setMyCommands` / `getMyCommands` / `deleteMyCommands` (one default
/// scope and language).
pub(super) fn my_commands(
    bot: &Arc<BotCore>,
    method: &str,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    let mut s = bot.state.lock();
    match method {
        "setMyCommands" => {
            let Some(Value::Array(commands)) = req.json("commands")? else {
                return Err(ApiError::bad("can't parse commands JSON array"));
            };
            let valid = commands.iter().all(|c| {
                c["command"].as_str().is_some_and(|n| {
                    (1..=32).contains(&n.len())
                        && n.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }) && c["description"]
                    .as_str()
                    .is_some_and(|d| (1..=256).contains(&d.chars().count()))
            });
            if !valid {
                return Err(ApiError::bad("BOT_COMMAND_INVALID"));
            }
            s.commands = commands;
            Ok(ok(json!(true)))
        }
        "deleteMyCommands" => {
            s.commands.clear();
            Ok(ok(json!(true)))
        }
        _ => Ok(ok(Value::Array(s.commands.clone()))),
    }
}
