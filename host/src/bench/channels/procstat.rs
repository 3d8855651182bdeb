//! This process's memory and CPU time from `/proc` (Linux; zeros
//! elsewhere): resident and proportional set sizes split into anonymous and
//! file-backed pages, and CPU time in total and for the threads whose name
//! starts with a prefix (the benchmark runs its fakes on threads of their
//! own so their CPU can be told apart from the gateway's).

use serde::{Deserialize, Serialize};

/// `/proc` reports CPU time in clock ticks of `USER_HZ`, which is 100 on
/// every Linux architecture this runs on.
const USER_HZ: f64 = 100.0;

/// Memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Memory {
    /// Resident set size.
    pub(crate) rss: u64,
    /// Resident anonymous memory (heap, stacks, wasm linear memories).
    pub(crate) anon: u64,
    /// Resident file-backed memory (the binary, mapped compiled plugins),
    /// counted once per mapping.
    pub(crate) file: u64,
    /// Proportional set size: a page mapped several times is counted once.
    pub(crate) pss: u64,
}

/// A `kB` field of a `/proc` file, in bytes.
fn kb_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Memory {
    /// Now.
    pub(crate) fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        Memory {
            rss: kb_field(&status, "VmRSS"),
            anon: kb_field(&status, "RssAnon"),
            file: kb_field(&status, "RssFile"),
            pss: kb_field(&rollup, "Pss"),
        }
    }

    /// `self - earlier`, per field (saturating).
    pub(crate) fn since(&self, earlier: &Memory) -> Memory {
        Memory {
            rss: self.rss.saturating_sub(earlier.rss),
            anon: self.anon.saturating_sub(earlier.anon),
            file: self.file.saturating_sub(earlier.file),
            pss: self.pss.saturating_sub(earlier.pss),
        }
    }
}

/// User + system CPU seconds from the fields after the `(comm)` of a
/// `stat` line.
fn stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields are numbered from 1 with `pid` and `comm` first: utime is
    // field 14 and stime 15, i.e. 11 and 12 after the comm.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU seconds used so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// By the whole process (threads that ended included).
    pub(crate) total: f64,
    /// By the live threads whose name starts with the prefix asked for.
    pub(crate) named: f64,
}

impl Cpu {
    /// Now, with `named` summing threads whose name starts with `prefix`.
    pub(crate) fn now(prefix: &str) -> Cpu {
        let total = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_cpu(&s))
            .unwrap_or(0.0);
        let mut named = 0.0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if !comm.starts_with(prefix) {
                    continue;
                }
                named += std::fs::read_to_string(path.join("stat"))
                    .ok()
                    .and_then(|s| stat_cpu(&s))
                    .unwrap_or(0.0);
            }
        }
        Cpu { total, named }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu(line), Some(3.0));
        assert_eq!(stat_cpu("42 (x) S 1"), None);
    }

    #[test]
    fn kb_fields_read_as_bytes() {
        let text = "Name:\tpincer\nVmRSS:\t  2048 kB\nRssAnon:\t 1024 kB\n";
        assert_eq!(kb_field(text, "VmRSS"), 2 << 20);
        assert_eq!(kb_field(text, "RssAnon"), 1 << 20);
        assert_eq!(kb_field(text, "Pss"), 0);
    }
}
