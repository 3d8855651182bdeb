//! The account's configuration (`phone_number_id`, `api_version`,
//! `api_base`), validated once by `start` and kept for the instance's calls.

use std::cell::RefCell;

use pincer_sdk::{Config, Error};

/// The Graph version used when the operator names none.
pub const DEFAULT_API_VERSION: &str = "v21.0";
/// The Graph root used when the operator names none.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com";

/// One account's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The business phone number id (messages URL, push routing).
    pub phone_number_id: String,
    /// `vN.M`.
    pub api_version: String,
    /// `scheme://host[:port]` without a trailing slash.
    pub api_base: String,
}

thread_local! {
    static CURRENT: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

impl Settings {
    /// Validate the operator's configuration.
    pub fn from_config(config: &Config) -> Result<Settings, Error> {
        let phone_number_id = config.require("phone_number_id")?.trim().to_string();
        if phone_number_id.is_empty() || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::config(format!(
                "config key `phone_number_id` = {phone_number_id:?}: expected the digits of the phone number id from WhatsApp > API Setup"
            )));
        }
        let api_version = config
            .get_or("api_version", DEFAULT_API_VERSION)
            .trim()
            .to_string();
        if !is_version(&api_version) {
            return Err(Error::config(format!(
                "config key `api_version` = {api_version:?}: expected a Graph version such as {DEFAULT_API_VERSION}"
            )));
        }
        let api_base = config
            .get_or("api_base", DEFAULT_API_BASE)
            .trim()
            .trim_end_matches('/')
            .to_string();
        let rest = api_base
            .strip_prefix("https://")
            .or_else(|| api_base.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(['/', '?', '#'])) {
            return Err(Error::config(format!(
                "config key `api_base` = {api_base:?}: expected an http(s) root such as {DEFAULT_API_BASE}"
            )));
        }
        Ok(Settings {
            phone_number_id,
            api_version,
            api_base,
        })
    }

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

    /// `{api_base}/{api_version}/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.api_base,
            self.api_version,
            path.trim_start_matches('/')
        )
    }

    /// The messages endpoint of this number.
    pub fn messages_url(&self) -> String {
        self.url(&format!("{}/messages", self.phone_number_id))
    }

    /// The media upload endpoint of this number.
    pub fn media_url(&self) -> String {
        self.url(&format!("{}/media", self.phone_number_id))
    }
}

/// `v` followed by dot-separated numbers (`v21.0`).
fn is_version(s: &str) -> bool {
    s.strip_prefix('v').is_some_and(|v| {
        !v.is_empty()
            && v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
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
        let s = Settings::from_config(&config(&[("phone_number_id", "106540352242922")])).unwrap();
        assert_eq!(s.api_version, "v21.0");
        assert_eq!(
            s.messages_url(),
            "https://graph.facebook.com/v21.0/106540352242922/messages"
        );
        let s = Settings::from_config(&config(&[
            ("phone_number_id", "1"),
            ("api_version", "v23.0"),
            ("api_base", "http://127.0.0.1:9000/"),
        ]))
        .unwrap();
        assert_eq!(s.media_url(), "http://127.0.0.1:9000/v23.0/1/media");
        for bad in [
            vec![],
            vec![("phone_number_id", "12a")],
            vec![("phone_number_id", "1"), ("api_version", "21")],
            vec![("phone_number_id", "1"), ("api_base", "ftp://x")],
            vec![("phone_number_id", "1"), ("api_base", "https://x/path")],
        ] {
            assert!(
                matches!(Settings::from_config(&config(&bad)), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }
}
