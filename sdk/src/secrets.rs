//! Secrets stay in the host. Put [`placeholder`] where a secret belongs in an
//! outgoing request's URL or header; the host fills in the value on the way out.

/// Whether the operator granted this plugin a secret called `name`.
pub fn exists(name: &str) -> bool {
    crate::bindings::host::secrets::exists(name)
}

/// The text standing for secret `name` in a URL or header value.
pub fn placeholder(name: &str) -> String {
    crate::bindings::host::secrets::placeholder(name)
}
