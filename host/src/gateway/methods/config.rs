//! `config.reload` (and `POST /v1/config/reload`): read the gateway's
//! configuration file again and apply what can change live (see
//! `crate::config_reload`), answering what changed.

use crate::config_reload::{ReloadReport, Trigger};
use crate::gateway::Gateway;
use crate::protocol::errors::ErrorShape;

/// Why `config.reload` did nothing.
#[derive(Debug)]
pub enum ReloadRefused {
    /// The gateway was started without a configuration file.
    NoFile,
    /// The file is invalid: nothing changed (the report says why).
    Invalid(ReloadReport),
}

/// The message of [`ReloadRefused::NoFile`].
pub const NO_FILE: &str =
    "this gateway runs without a configuration file (start it with `pincer serve --config FILE`)";

/// Reload the configuration file now.
pub async fn reload(gw: &Gateway) -> Result<ReloadReport, ReloadRefused> {
    let reloader = gw.config_reload.get().ok_or(ReloadRefused::NoFile)?;
    let report = reloader.reload(Trigger::Operator).await;
    if report.ok {
        Ok(report)
    } else {
        Err(ReloadRefused::Invalid(report))
    }
}

/// The protocol error of a refused reload.
pub fn error_shape(refused: &ReloadRefused) -> ErrorShape {
    match refused {
        ReloadRefused::NoFile => ErrorShape::unavailable(NO_FILE),
        ReloadRefused::Invalid(r) => ErrorShape::invalid(format!(
            "configuration refused, nothing changed: {}",
            r.error.as_deref().unwrap_or("invalid")
        )),
    }
}
