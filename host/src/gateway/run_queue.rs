//! Run scheduling settings and the per-session lanes: one run at a time per
//! session, later messages waiting in a bounded FIFO behind it (each handed
//! the session in turn, or all collected into the next turn), and what a
//! full queue drops. The global cap on executing runs is a fair semaphore
//! owned by the run manager (`gateway::runs`); this module holds no tasks.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

/// What a message to a busy session does (OpenClaw's `queue` modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// Each queued message gets its own run, in order, after the current
    /// one ends (default).
    #[default]
    Followup,
    /// Everything queued while a run was busy is answered by one run: the
    /// messages are joined into the next turn.
    Collect,
}

/// Which message a full session queue gives up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueDrop {
    /// Refuse the new message (default): `chat.send`/`agent` answer
    /// `UNAVAILABLE` (retryable), a channel sender is told to resend later.
    #[default]
    New,
    /// Drop the oldest waiting message: its run ends `aborted` with
    /// `stopReason: "queue_overflow"` (a channel sender is told), and the
    /// new one is queued.
    Old,
}

/// `[gateway.runs]`: how agent runs are ordered and bounded. Every field
/// has a safe default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimits {
    /// Most runs executing at once over all sessions (default 32); more
    /// wait, in order, for a slot. At least 1.
    pub max_concurrent: usize,
    /// Slots of `max_concurrent` that only operator runs (`chat.send`,
    /// `agent`) may take: channel runs together never hold more than
    /// `max_concurrent - operator_reserve`, so an operator's run does not
    /// wait behind a channel flood (default 4; at most `max_concurrent -
    /// 1`).
    pub operator_reserve: usize,
    /// Most runs of one channel executing at once, so one channel's flood
    /// cannot take every channel slot (default 16; 0: no cap beyond the
    /// channel share).
    pub channel_max_concurrent: usize,
    /// Most messages waiting behind a session's current run (default 20).
    pub queue_cap: usize,
    /// `followup` (default) or `collect`.
    pub queue_mode: QueueMode,
    /// `new` (default) or `old`: which message a full queue drops.
    pub queue_drop: QueueDrop,
    /// Channel messages each sender may start per minute, the steady rate
    /// of a token bucket (default 12; 0 turns the limit off).
    pub sender_per_minute: u32,
    /// Messages a sender may send in a burst, the bucket size (default 5).
    pub sender_burst: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_concurrent: 32,
            operator_reserve: 4,
            channel_max_concurrent: 16,
            queue_cap: 20,
            queue_mode: QueueMode::Followup,
            queue_drop: QueueDrop::New,
            sender_per_minute: 12,
            sender_burst: 5,
        }
    }
}

impl RunLimits {
    /// The global cap (at least 1).
    pub fn total_slots(&self) -> usize {
        self.max_concurrent.max(1)
    }

    /// Slots all channel runs together may hold: the global cap less the
    /// operator reserve, at least 1.
    pub fn channel_slots(&self) -> usize {
        let total = self.total_slots();
        total - self.operator_reserve.min(total - 1)
    }

    /// The per-channel cap, when it binds (below the channel share).
    pub fn per_channel_slots(&self) -> Option<usize> {
        let cap = self.channel_max_concurrent;
        (cap > 0 && cap < self.channel_slots()).then_some(cap)
    }
}

/// What [`Lanes::admit`] did with a new entry.
#[derive(Debug)]
pub enum Admit<T> {
    /// The session was idle: the entry owns it now and may run.
    RunNow(T),
    /// The entry waits at `position` (1 = next).
    Queued {
        /// Place in the session's queue.
        position: usize,
        /// The oldest waiting entry, dropped to make room
        /// ([`QueueDrop::Old`]).
        dropped: Option<T>,
    },
    /// The queue was full and the new entry is refused ([`QueueDrop::New`]).
    Full(T),
}

/// Sessions with a run: each present key is busy, with its waiting
/// entries oldest first.
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: HashMap<String, VecDeque<T>>,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes {
            lanes: HashMap::new(),
        }
    }
}

impl<T> Lanes<T> {
    /// Admit `entry` to session `key`: it runs now if the session is idle,
    /// else waits (at most `cap` wait; `drop` says who gives way).
    pub fn admit(&mut self, key: &str, entry: T, cap: usize, drop: QueueDrop) -> Admit<T> {
        let Some(queue) = self.lanes.get_mut(key) else {
            self.lanes.insert(key.to_string(), VecDeque::new());
            return Admit::RunNow(entry);
        };
        let mut dropped = None;
        if queue.len() >= cap {
            match drop {
                QueueDrop::New => return Admit::Full(entry),
                QueueDrop::Old => match queue.pop_front() {
                    Some(old) => dropped = Some(old),
                    // A cap of 0 keeps nothing waiting.
                    None => return Admit::Full(entry),
                },
            }
        }
        queue.push_back(entry);
        Admit::Queued {
            position: queue.len(),
            dropped,
        }
    }

    /// The session's run ended: the entries that get it next (one in
    /// `followup` mode, every waiting one in `collect` mode, the first
    /// leading). Empty when nothing waits: the session is idle again.
    pub fn hand_over(&mut self, key: &str, mode: QueueMode) -> Vec<T> {
        let Some(queue) = self.lanes.get_mut(key) else {
            return Vec::new();
        };
        let next: Vec<T> = match mode {
            QueueMode::Followup => queue.pop_front().into_iter().collect(),
            QueueMode::Collect => queue.drain(..).collect(),
        };
        if next.is_empty() {
            self.lanes.remove(key);
        }
        next
    }

    /// Take the first waiting entry of `key` matching `pred` out of the
    /// queue (a waiting run that was aborted).
    pub fn remove(&mut self, key: &str, pred: impl Fn(&T) -> bool) -> Option<T> {
        let queue = self.lanes.get_mut(key)?;
        let i = queue.iter().position(pred)?;
        queue.remove(i)
    }

    /// Entries waiting in all sessions.
    pub fn waiting(&self) -> usize {
        self.lanes.values().map(VecDeque::len).sum()
    }

    /// Sessions with a run.
    pub fn busy(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runs_others_wait_in_order_and_the_lane_frees_when_empty() {
        let mut l = Lanes::default();
        assert!(matches!(
            l.admit("s", 1, 2, QueueDrop::New),
            Admit::RunNow(1)
        ));
        assert!(matches!(
            l.admit("s", 2, 2, QueueDrop::New),
            Admit::Queued {
                position: 1,
                dropped: None
            }
        ));
        assert!(matches!(
            l.admit("t", 9, 2, QueueDrop::New),
            Admit::RunNow(9)
        ));
        assert!(matches!(
            l.admit("s", 3, 2, QueueDrop::New),
            Admit::Queued { position: 2, .. }
        ));
        assert!(matches!(l.admit("s", 4, 2, QueueDrop::New), Admit::Full(4)));
        assert_eq!(l.waiting(), 2);
        assert_eq!(l.hand_over("s", QueueMode::Followup), vec![2]);
        assert_eq!(l.hand_over("s", QueueMode::Followup), vec![3]);
        assert_eq!(l.hand_over("s", QueueMode::Followup), Vec::<i32>::new());
        assert_eq!(l.busy(), 1, "s is idle again, t still runs");
        assert!(matches!(
            l.admit("s", 5, 2, QueueDrop::New),
            Admit::RunNow(5)
        ));
    }

    #[test]
    fn the_reserve_and_channel_caps_stay_within_the_global_cap() {
        let l = |max, reserve, per| RunLimits {
            max_concurrent: max,
            operator_reserve: reserve,
            channel_max_concurrent: per,
            ..RunLimits::default()
        };
        let d = RunLimits::default();
        assert_eq!((d.total_slots(), d.channel_slots()), (32, 28));
        assert_eq!(d.per_channel_slots(), Some(16));
        // A reserve as big as the cap still leaves channels one slot.
        assert_eq!(l(2, 5, 0).channel_slots(), 1);
        assert_eq!(l(0, 0, 0).total_slots(), 1);
        assert_eq!(l(0, 4, 0).channel_slots(), 1);
        // A per-channel cap at or above the channel share does not bind.
        assert_eq!(l(8, 2, 6).per_channel_slots(), None);
        assert_eq!(l(8, 2, 5).per_channel_slots(), Some(5));
        assert_eq!(l(8, 2, 0).per_channel_slots(), None);
    }

    #[test]
    fn drop_old_makes_room_and_collect_takes_everything() {
        let mut l = Lanes::default();
        l.admit("s", 1, 2, QueueDrop::Old);
        l.admit("s", 2, 2, QueueDrop::Old);
        l.admit("s", 3, 2, QueueDrop::Old);
        assert!(matches!(
            l.admit("s", 4, 2, QueueDrop::Old),
            Admit::Queued {
                position: 2,
                dropped: Some(2)
            }
        ));
        assert_eq!(l.remove("s", |e| *e == 4), Some(4));
        l.admit("s", 5, 2, QueueDrop::Old);
        assert_eq!(l.hand_over("s", QueueMode::Collect), vec![3, 5]);
        assert!(l.hand_over("s", QueueMode::Collect).is_empty());
        assert_eq!(l.busy(), 0);
        // With no room at all, even dropping old refuses.
        l.admit("s", 1, 0, QueueDrop::Old);
        assert!(matches!(l.admit("s", 2, 0, QueueDrop::Old), Admit::Full(2)));
    }
}
