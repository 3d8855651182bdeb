//! Secrets stay in the host. Put [`placeholder`] where a secret belongs in an
//! outgoing request (the URL path, or the header or JSON body field the
//! manifest binds it to); the host fills in the value on the way out and
//! refuses the request if the placeholder is anywhere else. Responses come
//! back with the value replaced by the placeholder.

/// Whether the operator granted this plugin a secret called `name`.
pub fn exists(name: &str) -> bool {
    crate::pincer_sdk::bindings::host::secrets::exists(name)
}

/// The text standing for secret `name` where the manifest binds it.
pub fn placeholder(name: &str) -> String {
    crate::pincer_sdk::bindings::host::secrets::placeholder(name)
}
