//! The account's configuration (`mode`, `api_base`) and the bot's identity
//! learnt from `auth.test`, validated once by `start` and kept for the
//! instance's calls.

use std::cell::RefCell;

use pincer_sdk::{Config, Error};

/// The Web API root used when the operator names none.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// How Slack delivers events to this account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Slack POSTs to `/channels/slack/webhook` (the default).
    Events,
    /// The plugin opens a Socket Mode WebSocket (no public URL needed).
    Socket,
}

/// Who the bot is (from `auth.test`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Me {
    /// The bot user's id (`U…`): mentions are `<@U…>`.
    pub user_id: String,
    /// The bot's id (`B…`): its own messages carry it as `bot_id`.
    pub bot_id: String,
    /// The workspace (`T…`).
    pub team_id: String,
}

/// One account's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Events API or Socket Mode.
    pub mode: Mode,
    /// `scheme://host[:port]/path` without a trailing slash.
    pub api_base: String,
    /// The bot's identity.
    pub me: Me,
    /// Socket Mode: a session with no frame for this long is replaced.
    pub idle_ms: u64,
}

/// Socket Mode's default idle time before a session counts as dead.
pub const DEFAULT_IDLE_S: u64 = 75;

/// `socket_idle_s` (default [`DEFAULT_IDLE_S`], at least 1) in ms.
pub fn idle_ms(config: &Config) -> Result<u64, Error> {
    let s = config
        .parse::<u64>("socket_idle_s")?
        .unwrap_or(DEFAULT_IDLE_S);
    if s == 0 {
        return Err(Error::config(
            "config key `socket_idle_s` must be at least 1",
        ));
    }
    Ok(s * 1000)
}

thread_local! {
    static CURRENT: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// Validate `mode` and `api_base` (the identity is filled in by `start`).
pub fn parse(config: &Config) -> Result<(Mode, String), Error> {
    let mode = match config.get_or("mode", "events").trim() {
        "events" | "" => Mode::Events,
        "socket" => Mode::Socket,
        other => {
            return Err(Error::config(format!(
                "config key `mode` = {other:?}: expected `events` (Events API pushes) or `socket` (Socket Mode)"
            )));
        }
    };
    let api_base = config
        .get_or("api_base", DEFAULT_API_BASE)
        .trim()
        .trim_end_matches('/')
        .to_string();
    let rest = api_base
        .strip_prefix("https://")
        .or_else(|| api_base.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(['?', '#'])) {
        return Err(Error::config(format!(
            "config key `api_base` = {api_base:?}: expected an http(s) URL such as {DEFAULT_API_BASE}"
        )));
    }
    Ok((mode, api_base))
}

impl Settings {
    /// Keep these settings for the instance's later calls.
    pub fn install(self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self));
    }

    /// The settings `start` installed.
    pub fn current() -> Result<Settings, Error> {
        CURRENT
            .with(|c| c.borrow().clone())
            .ok_or_else(|| Error::config("the channel was not started"))
    }

    /// `{api_base}/{method}`.
    pub fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.api_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_validation() {
        assert_eq!(
            parse(&config(&[])).unwrap(),
            (Mode::Events, DEFAULT_API_BASE.to_string())
        );
        assert_eq!(
            parse(&config(&[
                ("mode", "socket"),
                ("api_base", "http://127.0.0.1:9/api/")
            ]))
            .unwrap(),
            (Mode::Socket, "http://127.0.0.1:9/api".to_string())
        );
        for bad in [
            vec![("mode", "rtm")],
            vec![("api_base", "ftp://x")],
            vec![("api_base", "https://")],
        ] {
            assert!(
                matches!(parse(&config(&bad)), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }
}
