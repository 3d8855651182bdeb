//! Recent log lines kept in memory for `logs.tail`: a `tracing` layer that
//! formats each event as one line into a bounded ring.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept.
pub const CAPACITY: usize = 5000;

/// The ring of recent lines; `cursor` counts every line ever written.
#[derive(Debug, Default)]
pub struct LogBuffer {
    inner: Mutex<(VecDeque<String>, u64)>,
}

impl LogBuffer {
    /// A new, empty buffer.
    pub fn new() -> Arc<Self> {
        Arc::new(LogBuffer::default())
    }

    /// Append a line.
    pub fn push(&self, line: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.len() == CAPACITY {
            g.0.pop_front();
        }
        g.0.push_back(line);
        g.1 += 1;
    }

    /// Lines after `cursor` (at most `limit` and `max_bytes`), the new
    /// cursor, and whether lines were lost (`reset`) or cut (`truncated`).
    pub fn tail(
        &self,
        cursor: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<String>, u64, bool, bool) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (lines, total) = (&g.0, g.1);
        let first = total - lines.len() as u64;
        let (start, reset) = match cursor {
            Some(c) if c >= first && c <= total => (c, false),
            Some(_) => (first, true),
            None => (total.saturating_sub(limit as u64).max(first), false),
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut truncated = false;
        let mut next = start;
        for line in lines.iter().skip((start - first) as usize) {
            if out.len() >= limit || bytes + line.len() > max_bytes {
                truncated = true;
                break;
            }
            bytes += line.len();
            out.push(line.clone());
            next += 1;
        }
        (out, next, reset, truncated)
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// A `tracing` layer writing into a [`LogBuffer`].
pub struct Layer(pub Arc<LogBuffer>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields(format!(
            "{} {} {}:",
            super::now_ms(),
            meta.level(),
            meta.target()
        ));
        event.record(&mut f);
        self.0.push(f.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_with_cursor() {
        let b = LogBuffer::new();
        for i in 0..10 {
            b.push(format!("l{i}"));
        }
        let (lines, cur, reset, _) = b.tail(None, 3, 1000);
        assert_eq!(lines, vec!["l7", "l8", "l9"]);
        assert_eq!((cur, reset), (10, false));
        b.push("l10".into());
        let (lines, cur, _, _) = b.tail(Some(cur), 100, 1000);
        assert_eq!((lines, cur), (vec!["l10".to_string()], 11));
    }
}
