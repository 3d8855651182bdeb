//! The methods behind the Control UI's remaining pages: /skills
//! (`skills.library.list`, `skills.search`, `skills.status`),
//! /settings/devices (`exec.approvals.get`), /settings/general
//! (`themes.list`), /settings/model-providers (`usage.status`,
//! `sessions.usage`) and /systems (`environments.list`, `system.info`).
//!
//! Real data where Pincer has it (the host, the process, token counts the
//! model provider reported on stored assistant messages); truthful empty
//! answers where it has no such feature (skills, exec approvals, provider
//! quota reporting, remote environments). Shapes follow OpenClaw 2026.9.6's
//! server handlers and its Control UI client code.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::params;
use crate::gateway::{Gateway, VERSION, now_ms};
use crate::protocol::errors::ErrorShape;

/// The methods this module answers.
pub const METHODS: &[&str] = &[
    "skills.library.list",
    "skills.search",
    "skills.status",
    "exec.approvals.get",
    "themes.list",
    "usage.status",
    "sessions.usage",
    "environments.list",
    "system.info",
];

/// The answer to `method` (one of [`METHODS`]), given its params; `None`
/// for any other method.
pub fn answer(gw: &Gateway, method: &str, p: &Value) -> Option<Result<Value, ErrorShape>> {
    Some(Ok(match method {
        // No skills: Pincer's agent uses tool plugins, not skill files.
        "skills.library.list" => json!({
            "entries": [],
            "profileId": null,
            "multipleProfiles": false,
            "defaultTarget": "unavailable",
            "canManageWorkspace": false,
            "defaultSelectionLimit": 64,
        }),
        // No skill registry to search.
        "skills.search" => json!({"results": []}),
        "skills.status" => json!({
            "workspaceDir": "",
            "managedSkillsDir": "",
            "agentId": "main",
            "skills": [],
        }),
        // Pincer never runs host commands: nothing to approve, and the
        // policy is "deny" (read-only: there is no `exec.approvals.set`).
        "exec.approvals.get" => json!({
            "path": null,
            "exists": false,
            "hash": "pincer",
            "file": {"version": 1, "defaults": {"security": "deny", "ask": "off"}, "agents": {}},
            "resolvedDefaults": {
                "security": "deny", "ask": "off", "askFallback": "deny", "autoAllowSkills": false,
            },
        }),
        "themes.list" => themes_list(),
        // No provider reports plan, quota or billing windows.
        "usage.status" => json!({"updatedAt": now_ms(), "providers": []}),
        "sessions.usage" => return Some(sessions_usage(gw, p)),
        "environments.list" => environments_list(p),
        "system.info" => system_info(gw),
        _ => return None,
    }))
}

/// OpenClaw's built-in themes (the Control UI ships their styles; the
/// gateway lists them). No profiles: the selection is the gateway default.
const THEMES: &[(&str, &str, &str)] = &[
    (
        "claw",
        "Claw",
        "Signature coral red and teal on charcoal or pale surfaces, with Instrument Sans throughout. A balanced everyday workspace.",
    ),
    (
        "knot",
        "Knot",
        "Crimson accents on true black or clean white, with Geist typography. Sharp, minimal, and high contrast.",
    ),
    (
        "dash",
        "Dash",
        "Toasted caramel on deep cocoa or warm cream, with DM Sans controls and Fraunces serif chat. Warm and bookish.",
    ),
    (
        "absolutely",
        "Absolutely",
        "Terracotta clay on warm graphite or soft cream, with Space Grotesk controls and Lora serif chat. Quiet editorial character.",
    ),
    (
        "tide",
        "Tide",
        "Steel cyan on cool slate or pale blue-gray, with IBM Plex Sans throughout. Calm, technical, and understated.",
    ),
    (
        "beacon",
        "Beacon",
        "High-visibility amber on black or white, bold focus rings, and Atkinson Hyperlegible typography. Designed for maximum readability.",
    ),
    (
        "phosphor",
        "Phosphor",
        "Luminous green on green-tinted black or pale green, with JetBrains Mono throughout. A classic green terminal atmosphere.",
    ),
    (
        "crt",
        "CRT",
        "White phosphor and amber on tube black, with a light counterpart, JetBrains Mono, and nearly square corners. A retro computer console.",
    ),
    (
        "manuscript",
        "Manuscript",
        "Lapis blue and gold on aged paper, with a dark reading-room variant and Lora serif throughout. A quiet illuminated manuscript.",
    ),
    (
        "rose",
        "Rosé",
        "Dried rose and gold on deep plum-gray or soft rose-tinted cream, with DM Sans. Gentle, muted, and warm.",
    ),
    (
        "miami",
        "Miami",
        "Hot magenta and cyan on violet-black or pale lavender, with Space Grotesk. Bright neon energy and a synthwave character.",
    ),
];

fn themes_list() -> Value {
    let themes: Vec<Value> = THEMES
        .iter()
        .map(|(id, name, description)| {
            json!({
                "id": id, "name": name, "description": description,
                "source": "builtin", "modes": ["light", "dark"],
            })
        })
        .collect();
    json!({
        "current": {"id": "claw", "mode": "system", "scope": "gateway", "overrides": {}},
        "theme": themes[0],
        "themes": themes,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentsParams {
    projection: Option<String>,
}

/// `environments.list`: the gateway itself (it hosts sessions and runs the
/// agent with its tool plugins); Pincer has no nodes or cloud workers.
fn environments_list(p: &Value) -> Value {
    let profiles_only = serde_json::from_value::<EnvironmentsParams>(p.clone())
        .ok()
        .and_then(|e| e.projection)
        .is_some_and(|pr| pr == "profiles");
    if profiles_only {
        return json!({"environments": []});
    }
    json!({"environments": [{
        "id": "gateway",
        "type": "local",
        "label": "Gateway local",
        "status": "available",
        "platform": std::env::consts::OS,
        "sessionHost": true,
        "trust": "persistent",
        "capabilities": ["agent.run", "sessions", "tools"],
    }]})
}

/// The machine's host name (`/proc/sys/kernel/hostname`, `HOSTNAME`), or
/// `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// `(total, available)` bytes from `/proc/meminfo`.
fn memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The kernel release (`/proc/sys/kernel/osrelease`).
fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `(total, available)` bytes of the file system holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is plain data, for which all zeroes is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize;
    Some((
        st.f_blocks.saturating_mul(frsize),
        st.f_bavail.saturating_mul(frsize),
    ))
}

/// The directory of the SQLite store, or the working directory (a
/// PostgreSQL store lives elsewhere).
fn data_dir(gw: &Gateway) -> Option<std::path::PathBuf> {
    let store = std::path::Path::new(&gw.store_path);
    match store.parent() {
        Some(p) if store.is_file() => std::fs::canonicalize(p).ok(),
        _ => std::env::current_dir().ok(),
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `system.info`: the host, the gateway process and the disk holding its
/// data.
fn system_info(gw: &Gateway) -> Value {
    let host = hostname();
    let os = std::env::consts::OS;
    let release = os_release();
    let mut v = json!({
        "machineName": host,
        "hostname": host,
        "platform": os,
        "release": release,
        "arch": std::env::consts::ARCH,
        "osLabel": if release.is_empty() { os.to_string() } else { format!("{os} {release}") },
        "port": gw.config.listen.port(),
        "runtime": format!("pincer {VERSION}"),
        "serverVersion": VERSION,
        "pid": std::process::id(),
        "uptimeMs": gw.uptime_ms(),
        "cpuCount": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "processMemory": {"rssBytes": rss_bytes()},
        "defaultAgentUtilityModel": {"status": "unavailable"},
    });
    if let Some((total, free)) = memory() {
        v["memoryTotalBytes"] = json!(total);
        v["memoryFreeBytes"] = json!(free);
    }
    if let Some(dir) = data_dir(gw)
        && let Some((total, available)) = disk_space(&dir).filter(|(t, _)| *t > 0)
    {
        let path = dir.display().to_string();
        v["disks"] = json!([{"path": path, "totalBytes": total, "availableBytes": available}]);
        v["diskTotalBytes"] = json!(total);
        v["diskAvailableBytes"] = json!(available);
        v["diskPath"] = json!(path);
    }
    if let Some(load) = load_average().filter(|l| l.iter().any(|x| *x != 0.0)) {
        v["loadAverage"] = json!(load);
    }
    v
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageParams {
    start_date: Option<String>,
    end_date: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
}

/// Unix ms of 00:00 UTC on `YYYY-MM-DD`.
fn day_start_ms(date: &str) -> Option<i64> {
    let mut it = date.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

/// Token counts and message counts of one session (or a sum).
#[derive(Default)]
struct Tally {
    input: u64,
    output: u64,
    user: u64,
    assistant: u64,
    tool: u64,
    errors: u64,
    with_usage: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.input += o.input;
        self.output += o.output;
        self.user += o.user;
        self.assistant += o.assistant;
        self.tool += o.tool;
        self.errors += o.errors;
        self.with_usage += o.with_usage;
    }

    /// OpenClaw's cost-usage totals: Pincer knows no prices, so every
    /// message with usage counts as a missing cost entry.
    fn totals(&self) -> Value {
        json!({
            "input": self.input, "output": self.output, "cacheRead": 0, "cacheWrite": 0,
            "totalTokens": self.input + self.output,
            "totalCost": 0, "inputCost": 0, "outputCost": 0, "cacheReadCost": 0, "cacheWriteCost": 0,
            "missingCostEntries": self.with_usage,
        })
    }

    fn messages(&self) -> Value {
        json!({
            "total": self.user + self.assistant + self.tool,
            "user": self.user, "assistant": self.assistant,
            "toolCalls": 0, "toolResults": self.tool, "errors": self.errors,
        })
    }
}

/// At most this many messages of one session are read.
const USAGE_MESSAGES_PER_SESSION: usize = 10_000;

/// `sessions.usage`: per-session token counts from the `usage` the model
/// provider reported on stored assistant messages (`{input, output}`), in
/// `[startDate, endDate]` (UTC days; both optional). No prices: costs are 0.
fn sessions_usage(gw: &Gateway, p: &Value) -> Result<Value, ErrorShape> {
    let up: UsageParams = params("sessions.usage", p)?;
    let start = match up.start_date.as_deref() {
        Some(d) => Some(day_start_ms(d).ok_or_else(|| {
            ErrorShape::invalid(format!("sessions.usage: bad startDate {d:?} (YYYY-MM-DD)"))
        })?),
        None => None,
    };
    let end = match up.end_date.as_deref() {
        Some(d) => Some(day_start_ms(d).map(|ms| ms + 86_400_000).ok_or_else(|| {
            ErrorShape::invalid(format!("sessions.usage: bad endDate {d:?} (YYYY-MM-DD)"))
        })?),
        None => None,
    };
    let limit = up.limit.unwrap_or(50).clamp(1, 1000);
    let store = |e: crate::store::StoreError| ErrorShape::unavailable(format!("store: {e}"));
    let entries = match up.key.as_deref() {
        Some(k) => gw
            .sessions
            .get_session(&crate::gateway::canonical_key(k))
            .map_err(store)?
            .into_iter()
            .collect(),
        None => gw.sessions.list_sessions(limit).map_err(store)?,
    };
    let in_range = |ts: i64| start.is_none_or(|s| ts >= s) && end.is_none_or(|e| ts < e);
    let mut all = Tally::default();
    let mut sessions = Vec::new();
    let mut by_channel: Map<String, Value> = Map::new();
    let mut channel_tallies: Vec<(String, Tally)> = Vec::new();
    let mut counted = 0u64;
    for e in entries {
        let mut t = Tally::default();
        for m in gw
            .sessions
            .history(&e.key, USAGE_MESSAGES_PER_SESSION)
            .map_err(store)?
        {
            if !in_range(m.timestamp) {
                continue;
            }
            match m.role.as_str() {
                "user" => t.user += 1,
                "assistant" => t.assistant += 1,
                "tool" => t.tool += 1,
                _ => {}
            }
            if m.stop_reason.as_deref() == Some("error") {
                t.errors += 1;
            }
            if let Some(u) = m.meta.get("usage") {
                t.input += u.get("input").and_then(Value::as_u64).unwrap_or(0);
                t.output += u.get("output").and_then(Value::as_u64).unwrap_or(0);
                t.with_usage += 1;
            }
        }
        let total = t.user + t.assistant + t.tool;
        if total == 0 {
            continue;
        }
        counted += 1;
        all.add(&t);
        let channel = e.channel.clone().unwrap_or_else(|| "webchat".into());
        match channel_tallies.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, ct)) => ct.add(&t),
            None => {
                let mut ct = Tally::default();
                ct.add(&t);
                channel_tallies.push((channel.clone(), ct));
            }
        }
        let mut usage = t.totals();
        usage["messageCounts"] = t.messages();
        sessions.push(json!({
            "key": e.key,
            "sessionId": e.session_id,
            "scope": "instance",
            "updatedAt": e.updated_ms,
            "agentId": e.agent_id,
            "channel": channel,
            "usage": usage,
            "hasContextWeight": false,
        }));
    }
    for (c, t) in &channel_tallies {
        by_channel.insert(c.clone(), json!({"channel": c, "totals": t.totals()}));
    }
    let date = |d: Option<String>| d.map(Value::String).unwrap_or(Value::Null);
    Ok(json!({
        "updatedAt": now_ms(),
        "startDate": date(up.start_date),
        "endDate": date(up.end_date),
        "sessions": sessions,
        "totals": all.totals(),
        "aggregates": {
            "sessionCount": counted,
            "messages": all.messages(),
            "tools": {"totalCalls": 0, "uniqueTools": 0, "tools": []},
            "byModel": [],
            "byProvider": [],
            "byAgent": if counted > 0 { json!([{"agentId": "main", "totals": all.totals()}]) } else { json!([]) },
            "byChannel": by_channel.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "byCreator": [],
            "costDaily": [],
            "dailyLatency": [],
            "modelDaily": [],
            "daily": [],
        },
        "creatorOptions": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2026-11-30"), Some(1_795_996_800_000));
        assert_eq!(day_start_ms("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(day_start_ms("2026-13-01"), None);
        assert_eq!(day_start_ms("yesterday"), None);
    }
}
