//! `diagnostics.lanes`: how busy the run scheduler is, in the shape of
//! OpenClaw's command-lane diagnostics (its Control UI's debug page and
//! "System busyness" overlay read it; without an answer the debug page
//! holds back its Status and Health blocks).
//!
//! Pincer has one global lane, `main` (every run executing takes one of
//! `[gateway.runs] max_concurrent` slots; runs whose session's turn has
//! come wait there for a slot), and one lane per session (a run holds its
//! session's turn; later messages queue behind it). The per-session lanes
//! are summed into `dynamic`, as OpenClaw does.

use serde_json::{Value, json};

use super::super::{Gateway, now_ms};

/// The `diagnostics.lanes` answer: `{ts, lanes, dynamic}`.
pub fn lanes(gw: &Gateway) -> Value {
    let runs = &gw.runs;
    let global = runs.counts();
    let main = json!({
        "lane": "main",
        "activeCount": global.running,
        "queuedCount": global.waiting,
        "maxConcurrent": runs.limits().total_slots(),
        "draining": gw.shutting_down(),
        "generation": 0,
        "blockedBy": null,
    });
    let sessions = runs.counts_by_session();
    let dynamic = (!sessions.is_empty()).then(|| {
        let active: usize = sessions.values().map(|c| c.running + c.waiting).sum();
        let queued: usize = sessions.values().map(|c| c.queued).sum();
        let queued_lanes = sessions.values().filter(|c| c.queued > 0).count();
        json!({
            "laneCount": sessions.len(),
            "activeCount": active,
            "queuedCount": queued,
            "queuedLaneCount": queued_lanes,
        })
    });
    json!({"ts": now_ms(), "lanes": [main], "dynamic": dynamic})
}
