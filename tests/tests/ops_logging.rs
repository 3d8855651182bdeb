//! The binary's log format (`pincer::logging`): JSON lines parse as JSON
//! with the event's fields, and text without colours (what a redirected
//! stderr gets) holds no ANSI escape.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pincer::logging::{LogFormat, fmt_layer};
use tracing_subscriber::layer::SubscriberExt;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

/// The log text of one `warn!` event written in `format`.
fn log_one(format: LogFormat, ansi: bool) -> String {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(fmt_layer(format, ansi, buf.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(plugin = "telegram", attempt = 3, "channel restart failed");
    });
    let bytes = buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8(bytes).expect("utf-8 log")
}

#[test]
fn json_lines_carry_the_event_fields() {
    let out = log_one(LogFormat::Json, true);
    let line = out.lines().next().expect("one line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["fields"]["message"], "channel restart failed", "{v}");
    assert_eq!(v["fields"]["plugin"], "telegram", "{v}");
    assert_eq!(v["fields"]["attempt"], 3, "{v}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
}

#[test]
fn text_without_a_terminal_has_no_colour_escapes() {
    let plain = log_one(LogFormat::Text, false);
    assert!(plain.contains("channel restart failed"), "{plain}");
    assert!(
        plain.contains("plugin=\"telegram\"") || plain.contains("plugin=telegram"),
        "{plain}"
    );
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    // On a terminal the same event is coloured (the switch is real).
    assert!(log_one(LogFormat::Text, true).contains('\u{1b}'));
}
