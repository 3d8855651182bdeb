//! What a user sends, built for [`super::TelegramBot::push`]: chats, users
//! and messages in the Bot API's shapes, with the entities Telegram itself
//! would detect (`@mention`, `/command`, links) computed in UTF-16 units.

use serde_json::{Value, json};

use super::FileRef;

/// A chat as the Bot API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    /// `chat.id` (negative for groups by Telegram's convention).
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    pub kind: &'static str,
    /// `title` (groups), or the private chat's `first_name`.
    pub title: String,
    /// `is_forum` (supergroups with topics).
    pub is_forum: bool,
}

impl Chat {
    /// A private chat with a user (`id` is the user's id).
    pub fn private(id: i64, first_name: &str) -> Chat {
        Chat {
            id,
            kind: "private",
            title: first_name.into(),
            is_forum: false,
        }
    }

    /// A basic group.
    pub fn group(id: i64, title: &str) -> Chat {
        Chat {
            id,
            kind: "group",
            title: title.into(),
            is_forum: false,
        }
    }

    /// A supergroup.
    pub fn supergroup(id: i64, title: &str) -> Chat {
        Chat {
            id,
            kind: "supergroup",
            title: title.into(),
            is_forum: false,
        }
    }

    /// A supergroup with forum topics enabled.
    pub fn forum(id: i64, title: &str) -> Chat {
        Chat {
            id,
            kind: "supergroup",
            title: title.into(),
            is_forum: true,
        }
    }

    /// The `Chat` object.
    pub fn to_json(&self) -> Value {
        if self.kind == "private" {
            json!({"id": self.id, "type": "private", "first_name": self.title})
        } else if self.is_forum {
            json!({"id": self.id, "type": self.kind, "title": self.title, "is_forum": true})
        } else {
            json!({"id": self.id, "type": self.kind, "title": self.title})
        }
    }
}

/// A user (or another bot) as the Bot API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// `id`.
    pub id: i64,
    /// `first_name`.
    pub first_name: String,
    /// `username`, without `@`.
    pub username: Option<String>,
    /// `is_bot`.
    pub is_bot: bool,
}

impl User {
    /// A human user.
    pub fn new(id: i64, first_name: &str) -> User {
        User {
            id,
            first_name: first_name.into(),
            username: None,
            is_bot: false,
        }
    }

    /// With `username`.
    pub fn username(mut self, username: &str) -> User {
        self.username = Some(username.trim_start_matches('@').into());
        self
    }

    /// Marked as a bot.
    pub fn bot(mut self) -> User {
        self.is_bot = true;
        self
    }

    /// The `User` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name,
            "language_code": "en"});
        if let Some(u) = &self.username {
            v["username"] = json!(u);
        }
        v
    }
}

/// A message a user sends, pushed as an update with
/// [`super::TelegramBot::push`].
#[derive(Debug, Clone)]
pub struct UserMessage {
    pub(crate) chat: Chat,
    pub(crate) from: User,
    pub(crate) text: Option<String>,
    pub(crate) caption: Option<String>,
    pub(crate) extra_entities: Vec<Value>,
    pub(crate) thread_id: Option<i64>,
    pub(crate) reply_to: Option<i64>,
    pub(crate) photo: Option<FileRef>,
    pub(crate) document: Option<FileRef>,
    pub(crate) edit_of: Option<i64>,
}

impl UserMessage {
    fn base(chat: &Chat, from: &User) -> UserMessage {
        UserMessage {
            chat: chat.clone(),
            from: from.clone(),
            text: None,
            caption: None,
            extra_entities: Vec::new(),
            thread_id: None,
            reply_to: None,
            photo: None,
            document: None,
            edit_of: None,
        }
    }

    /// A text message (mentions, bot commands and links get their
    /// entities automatically, as Telegram detects them).
    pub fn text(chat: &Chat, from: &User, text: &str) -> UserMessage {
        let mut m = UserMessage::base(chat, from);
        m.text = Some(text.into());
        m
    }

    /// A photo (a file added with `add_file`), optionally captioned.
    pub fn photo(chat: &Chat, from: &User, file: &FileRef, caption: Option<&str>) -> UserMessage {
        let mut m = UserMessage::base(chat, from);
        m.photo = Some(file.clone());
        m.caption = caption.map(str::to_string);
        m
    }

    /// A document (a file added with `add_file`), optionally captioned.
    pub fn document(
        chat: &Chat,
        from: &User,
        file: &FileRef,
        caption: Option<&str>,
    ) -> UserMessage {
        let mut m = UserMessage::base(chat, from);
        m.document = Some(file.clone());
        m.caption = caption.map(str::to_string);
        m
    }

    /// In forum topic `thread_id` (`message_thread_id`, `is_topic_message`).
    pub fn in_topic(mut self, thread_id: i64) -> UserMessage {
        self.thread_id = Some(thread_id);
        self
    }

    /// Replying to message `message_id` of the same chat (the fake embeds
    /// that message as `reply_to_message`).
    pub fn reply_to(mut self, message_id: i64) -> UserMessage {
        self.reply_to = Some(message_id);
        self
    }

    /// Add an entity by hand (e.g. `text_mention`), offsets in UTF-16 units.
    pub fn entity(mut self, entity: Value) -> UserMessage {
        self.extra_entities.push(entity);
        self
    }

    /// Add a `text_mention` of `user` over UTF-16 range `offset..offset+length`.
    pub fn text_mention(self, offset: usize, length: usize, user: &User) -> UserMessage {
        self.entity(
            json!({"type": "text_mention", "offset": offset, "length": length,
            "user": user.to_json()}),
        )
    }

    /// Make this an edit of the user's earlier message `message_id`
    /// (pushed as an `edited_message` update).
    pub fn edit_of(mut self, message_id: i64) -> UserMessage {
        self.edit_of = Some(message_id);
        self
    }

    /// The entities for this message's text or caption.
    pub(crate) fn entities(&self) -> Vec<Value> {
        let body = self
            .text
            .as_deref()
            .or(self.caption.as_deref())
            .unwrap_or("");
        let mut e = detect_entities(body);
        e.extend(self.extra_entities.iter().cloned());
        e.sort_by_key(|v| v["offset"].as_u64().unwrap_or(0));
        e
    }
}

/// The entities Telegram detects in plain text: `mention` (`@name`, 5-32
/// word characters), `bot_command` (`/cmd` or `/cmd@bot` at a word start)
/// and `url` (`http://`, `https://`), with UTF-16 offsets and lengths.
pub fn detect_entities(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let utf16_at = |k: usize| chars[..k].iter().map(|c| c.len_utf16()).sum::<usize>();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut k = 0;
    while k < chars.len() {
        let starts_word = k == 0 || chars[k - 1].is_whitespace();
        let c = chars[k];
        if starts_word && (c == '@' || c == '/') {
            let mut j = k + 1;
            while j < chars.len() && word(chars[j]) {
                j += 1;
            }
            let name_len = j - k - 1;
            if c == '/' && (1..=64).contains(&name_len) {
                if j < chars.len() && chars[j] == '@' {
                    let mut b = j + 1;
                    while b < chars.len() && word(chars[b]) {
                        b += 1;
                    }
                    if b > j + 1 {
                        j = b;
                    }
                }
                out.push(entity(
                    "bot_command",
                    utf16_at(k),
                    utf16_at(j) - utf16_at(k),
                ));
                k = j;
                continue;
            }
            if c == '@' && (5..=32).contains(&name_len) {
                out.push(entity("mention", utf16_at(k), utf16_at(j) - utf16_at(k)));
                k = j;
                continue;
            }
        }
        if starts_word {
            let rest: String = chars[k..chars.len().min(k + 8)].iter().collect();
            if rest.starts_with("http://") || rest.starts_with("https://") {
                let mut j = k;
                while j < chars.len() && !chars[j].is_whitespace() {
                    j += 1;
                }
                out.push(entity("url", utf16_at(k), utf16_at(j) - utf16_at(k)));
                k = j;
                continue;
            }
        }
        k += 1;
    }
    out
}

fn entity(kind: &str, offset: usize, length: usize) -> Value {
    json!({"type": kind, "offset": offset, "length": length})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_commands_and_urls_are_detected_in_utf16_units() {
        let e = detect_entities("/start@pincer_bot hi @alice_b and 🦀 @bob_12 https://x.y/z /x");
        let kinds: Vec<_> = e.iter().map(|v| v["type"].as_str().unwrap_or("")).collect();
        assert_eq!(
            kinds,
            ["bot_command", "mention", "mention", "url", "bot_command"]
        );
        assert_eq!(e[0]["length"], 17);
        assert_eq!(e[1]["offset"], 21);
        // The crab is two UTF-16 units.
        assert_eq!(e[2]["offset"], 37);
        assert_eq!(e[2]["length"], 7);
    }

    #[test]
    fn short_names_and_mid_word_markers_are_not_entities() {
        assert!(detect_entities("@abc a/b mail@example.com").is_empty());
    }
}
