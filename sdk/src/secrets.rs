//! Secrets stay in the host. Put [`placeholder`] where a secret belongs in an
//! outgoing request: the URL path, or the header, JSON body field
//! ([`crate::http::Request::json`]) or `media.upload` form field
//! ([`crate::media::Upload::field`]) the manifest binds it to. The host fills
//! in the value on the way out, refuses the request if the placeholder is
//! anywhere else, and hands back responses with the value replaced by the
//! placeholder, so the secret never enters guest memory.
//!
//! ```no_run
//! use pincer_sdk::{Error, secrets};
//!
//! # fn main() -> Result<(), Error> {
//! if !secrets::exists("bot_token") {
//!     return Err(Error::config("grant the secret `bot_token` to this plugin"));
//! }
//! let url = format!("https://api.telegram.org/bot{}/getMe", secrets::placeholder("bot_token"));
//! # let _ = url; Ok(()) }
//! ```

/// Whether the operator granted this plugin a secret called `name` (or the
/// host generated it).
pub fn exists(name: &str) -> bool {
    crate::bindings::host::secrets::exists(name)
}

/// The text standing for secret `name` (`{{secret:NAME}}`) where the
/// manifest binds it.
pub fn placeholder(name: &str) -> String {
    crate::bindings::host::secrets::placeholder(name)
}
