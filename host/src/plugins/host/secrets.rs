//! Secrets factor: `pincer:plugin/secrets`. Values stay in the host; the guest
//! only sees names and placeholders, which [`super::http`] replaces in the
//! URL and headers of outgoing requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::plugins::bindings::channel::pincer::plugin::secrets::Host;

/// The secrets granted to one plugin (name → value).
#[derive(Default)]
pub struct SecretValues(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print values.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    /// The placeholder text for secret `name`.
    pub fn placeholder(name: &str) -> String {
        format!("{{{{secret:{name}}}}}")
    }

    /// Replace every granted secret's placeholder in `text`. Returns `None` if
    /// `text` has no placeholder at all (the common case, no allocation).
    pub fn fill(&self, text: &str) -> Option<String> {
        if !text.contains("{{secret:") {
            return None;
        }
        let mut out = text.to_string();
        for (name, value) in &self.0 {
            out = out.replace(&Self::placeholder(name), value);
        }
        Some(out)
    }

    /// Replace secret values in `text` with `[secret:NAME]` (for logs and errors).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.0 {
            if !value.is_empty() {
                out = out.replace(value, &format!("[secret:{name}]"));
            }
        }
        out
    }
}

/// Per-instance handle.
#[derive(Clone, Default)]
pub struct PluginSecrets(pub Arc<SecretValues>);

impl Host for super::HostState {
    async fn exists(&mut self, name: String) -> bool {
        self.secrets.0.0.contains_key(&name)
    }
    async fn placeholder(&mut self, name: String) -> String {
        SecretValues::placeholder(&name)
    }
}
