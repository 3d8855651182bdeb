//! How the `pincer` binary writes its log: human-readable text (colours
//! only when stderr is a terminal, so redirected log files hold no ANSI
//! escapes) or one JSON object per line (`--log-format json`), filtered by
//! `RUST_LOG`, with every event also kept in the gateway's log buffer
//! (`logs.tail`).

use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::gateway::logbuf::{self, LogBuffer};

/// The log line format (`--log-format`, `PINCER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default); coloured on a terminal only.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format: `timestamp`,
    /// `level`, `fields`, `target`, `spans`).
    Json,
}

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,wasmtime=warn,cranelift=warn";

/// The formatting layer for `format` writing to `writer`; `ansi` turns
/// colours on (text only: JSON never carries escapes).
pub fn fmt_layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
    }
}

/// Install the global subscriber: `format` on stderr (colours only when
/// stderr is a terminal) plus the log buffer `logs`.
pub fn init(format: LogFormat, logs: Arc<LogBuffer>) {
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_FILTER.into()),
        )
        .with(fmt_layer(format, ansi, std::io::stderr))
        .with(logbuf::Layer(logs))
        .init();
}
