//! The [`Tool`] trait an agent tool implements.

use crate::Error;

pub use crate::bindings::tool::exports::pincer::plugin::tool::ToolInfo;

/// Describe a tool: the name the model calls (`[a-z0-9_-]+`), what it does,
/// and the JSON Schema of its arguments object.
pub fn tool_info(name: &str, description: &str, parameters_schema: &str) -> ToolInfo {
    ToolInfo {
        name: name.to_string(),
        description: description.to_string(),
        parameters_schema: parameters_schema.to_string(),
    }
}

/// An agent tool. Register it with [`crate::export_tool!`].
///
/// Every call runs in a fresh instance: nothing in memory survives between
/// calls, so keep anything durable in [`crate::kv`].
pub trait Tool {
    /// The plugin's stable name.
    fn name() -> String;
    /// How the model sees the tool.
    fn describe() -> ToolInfo;
    /// Run the tool with the parsed JSON arguments; the result is returned to
    /// the model as JSON text.
    fn invoke(arguments: serde_json::Value) -> Result<serde_json::Value, Error>;
    /// Unix ms of the last call (defaults to the SDK's [`crate::touch`] record).
    fn last_activity() -> u64 {
        crate::last_touched()
    }
    /// Reset state; the default has nothing to reset.
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}
