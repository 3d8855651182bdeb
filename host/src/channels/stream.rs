//! How a reply appears while the agent is still writing, as a state
//! machine with no I/O: [`Streamer`] turns "the answer so far" into the
//! channel operations ([`Step`]) the channel's declared style calls for,
//! at most one edit or draft per interval on the caller's clock.
//!
//! - `final-only`: nothing until the end, then every chunk.
//! - `edit`: one message, then edits; when the text outgrows the limit,
//!   the message is finished with its final chunk and the rest continues
//!   in a new message.
//! - `draft` (direct chats only; groups stream as `edit`): native drafts
//!   with a stable draft id, finished with ordinary sends. A draft that
//!   outgrows the limit sends its full chunks and drafts the rest under a
//!   new id.
//!
//! The caller reports what the platform said ([`Streamer::opened`],
//! [`Streamer::unsupported`]); an edit or draft the channel turns out not
//! to support makes the rest of the answer `final-only`.

use serde::{Deserialize, Serialize};

use super::chunk::{self, Measure};

/// What of a reply has reached the platform: enough to resume streaming it
/// after a restart without sending any of it again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Bytes of the answer delivered in finished chunks.
    pub consumed: usize,
    /// Those bytes.
    pub frozen: String,
    /// The fence line the rest continues inside, if a chunk cut a code block.
    pub carry: Option<String>,
    /// The message being edited: platform id and the text it shows.
    pub live: Option<(String, String)>,
}

/// Edit interval used when a channel declares 0.
pub const DEFAULT_EDIT_INTERVAL_MS: u64 = 1_000;

/// The streaming style in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One delivery at the end.
    FinalOnly,
    /// A message edited in place.
    Edit,
    /// Native drafts, then a send.
    Draft,
}

/// What the channel declared, for one reply.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The style (already resolved for the chat: `draft` only in direct chats).
    pub style: Style,
    /// Smallest gap between two edits/drafts (0: [`DEFAULT_EDIT_INTERVAL_MS`]).
    pub interval_ms: u64,
    /// Longest message (0: no limit).
    pub limit: usize,
    /// How the limit is counted.
    pub measure: Measure,
}

/// One channel operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send a new message that later edits will change; report its id with
    /// [`Streamer::opened`].
    Open {
        /// Text.
        text: String,
    },
    /// Replace the text of an earlier message.
    Edit {
        /// Platform message id.
        id: String,
        /// New text.
        text: String,
        /// This is the message's final text.
        last: bool,
    },
    /// Show or update a native draft.
    Draft {
        /// Stable per drafted message.
        draft_id: u64,
        /// Text.
        text: String,
    },
    /// Deliver a finished chunk as a message of its own.
    Post {
        /// Text.
        text: String,
    },
}

/// The streaming state of one reply.
#[derive(Debug)]
pub struct Streamer {
    settings: Settings,
    interval: u64,
    /// Bytes of the answer already delivered in finished chunks.
    consumed: usize,
    /// Those bytes (to check that later text continues them).
    frozen: String,
    /// The fence line the rest continues inside, if a chunk cut a code block.
    carry: Option<String>,
    /// The message being edited: (id, text it shows).
    live: Option<(String, String)>,
    /// An `Open` was issued and its id is not known yet.
    opening: bool,
    /// Text the current draft shows.
    drafted: Option<String>,
    draft_id: u64,
    last_at: Option<u64>,
    latest: String,
    pending: bool,
}

impl Streamer {
    /// A streamer for one reply; `draft_seed` makes draft ids unique per
    /// reply (drafts of one reply use `draft_seed`, `draft_seed + 1`, ...).
    pub fn new(settings: Settings, draft_seed: u64) -> Self {
        let interval = if settings.interval_ms == 0 {
            DEFAULT_EDIT_INTERVAL_MS
        } else {
            settings.interval_ms
        };
        Streamer {
            settings,
            interval,
            consumed: 0,
            frozen: String::new(),
            carry: None,
            live: None,
            opening: false,
            drafted: None,
            draft_id: draft_seed.max(1),
            last_at: None,
            latest: String::new(),
            pending: false,
        }
    }

    /// The style in effect (after any fallback).
    pub fn style(&self) -> Style {
        self.settings.style
    }

    /// What has been handed out so far (finished chunks and the message
    /// being edited), to record once those steps went through.
    pub fn snapshot(&self) -> Resume {
        Resume {
            consumed: self.consumed,
            frozen: self.frozen.clone(),
            carry: self.carry.clone(),
            live: self.live.clone(),
        }
    }

    /// Continue from `r`: what an earlier attempt at this reply delivered
    /// (after a restart, or to step back from steps that failed).
    pub fn resume(&mut self, r: Resume) {
        self.consumed = r.consumed;
        self.frozen = r.frozen;
        self.carry = r.carry;
        self.live = r.live;
        self.opening = false;
        self.drafted = None;
        self.pending = false;
    }

    /// When (caller's clock, ms) the held-back text is due, if any.
    pub fn due_at(&self) -> Option<u64> {
        if !self.pending || self.settings.style == Style::FinalOnly || self.opening {
            return None;
        }
        Some(self.last_at.map_or(0, |t| t.saturating_add(self.interval)))
    }

    /// The id of an `Open` step (or `None`: it failed; the rest of the
    /// answer is delivered at the end).
    pub fn opened(&mut self, id: Option<String>, text: String) {
        self.opening = false;
        match id {
            Some(id) => self.live = Some((id, text)),
            None => self.fall_back(),
        }
    }

    /// An `Edit` of message `id` (or a `Draft`) failed for now: what the
    /// message shows is unknown, so the next flush, at the latest the
    /// finish, sends the text again even when it has not changed since.
    pub fn step_failed(&mut self, step: &Step) {
        match step {
            Step::Edit { id, .. } => {
                if let Some((live, shown)) = &mut self.live
                    && live == id
                {
                    shown.clear();
                }
            }
            Step::Draft { .. } => self.drafted = None,
            Step::Open { .. } | Step::Post { .. } => {}
        }
    }

    /// The channel does not support edits/drafts (or they fail for good):
    /// deliver the rest at the end.
    pub fn unsupported(&mut self) {
        self.fall_back();
    }

    fn fall_back(&mut self) {
        self.settings.style = Style::FinalOnly;
        self.pending = false;
    }

    /// The answer so far is `text`; what to do at `now`.
    pub fn update(&mut self, text: &str, now: u64) -> Vec<Step> {
        if !text.starts_with(&self.frozen) {
            // Never expected (answers only grow): deliver at the end.
            self.fall_back();
            return Vec::new();
        }
        self.latest = text.to_string();
        if self.settings.style == Style::FinalOnly || text[self.consumed..].trim().is_empty() {
            return Vec::new();
        }
        self.pending = true;
        match self.due_at() {
            Some(due) if now >= due => self.flush(now),
            _ => Vec::new(),
        }
    }

    /// Show the held-back text if it is due at `now`.
    pub fn tick(&mut self, now: u64) -> Vec<Step> {
        match self.due_at() {
            Some(due) if now >= due => self.flush(now),
            _ => Vec::new(),
        }
    }

    fn rest_chunks(&self, text: &str) -> Vec<chunk::Chunk> {
        chunk::split_from(
            &text[self.consumed..],
            self.carry.as_deref(),
            self.settings.limit,
            self.settings.measure,
        )
    }

    /// Finish chunks `0..n-1` of the rest (the text outgrew a message).
    fn freeze(&mut self, chunks: &[chunk::Chunk], steps: &mut Vec<Step>) {
        let (last, done) = match chunks.split_last() {
            Some(x) => x,
            None => return,
        };
        let _ = last;
        for (i, c) in done.iter().enumerate() {
            match (&self.live, i) {
                (Some((id, shown)), 0) => {
                    if *shown != c.text {
                        steps.push(Step::Edit {
                            id: id.clone(),
                            text: c.text.clone(),
                            last: true,
                        });
                    }
                    self.live = None;
                }
                _ => steps.push(Step::Post {
                    text: c.text.clone(),
                }),
            }
        }
        if let Some(c) = done.last() {
            self.consumed += c.end;
            self.frozen = self.latest[..self.consumed].to_string();
            self.carry = c.reopen.clone();
            if self.settings.style == Style::Draft {
                self.draft_id += 1;
                self.drafted = None;
            }
        }
    }

    fn flush(&mut self, now: u64) -> Vec<Step> {
        self.pending = false;
        let text = self.latest.clone();
        let chunks = self.rest_chunks(&text);
        let mut steps = Vec::new();
        if chunks.len() > 1 {
            self.freeze(&chunks, &mut steps);
        }
        let Some(current) = chunks.last().map(|c| c.text.clone()) else {
            return steps;
        };
        match self.settings.style {
            Style::FinalOnly => {}
            Style::Edit => match &self.live {
                None => {
                    self.opening = true;
                    steps.push(Step::Open { text: current });
                }
                Some((id, shown)) if *shown != current => {
                    steps.push(Step::Edit {
                        id: id.clone(),
                        text: current.clone(),
                        last: false,
                    });
                    self.live = Some((id.clone(), current));
                }
                Some(_) => {}
            },
            Style::Draft => {
                if self.drafted.as_deref() != Some(current.as_str()) {
                    steps.push(Step::Draft {
                        draft_id: self.draft_id,
                        text: current.clone(),
                    });
                    self.drafted = Some(current);
                }
            }
        }
        if !steps.is_empty() {
            self.last_at = Some(now);
        }
        steps
    }

    /// The answer is complete: the steps that deliver its final state
    /// (always, whatever the throttle says).
    pub fn finish(&mut self, text: &str) -> Vec<Step> {
        self.pending = false;
        if !text.starts_with(&self.frozen) {
            // The final text does not continue what was delivered (an
            // error notice): deliver it whole, in new messages.
            self.consumed = 0;
            self.frozen.clear();
            self.carry = None;
            self.live = None;
        }
        let chunks = self.rest_chunks(text);
        let mut steps = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            match (&self.live, i) {
                (Some((id, shown)), 0) if self.settings.style == Style::Edit => {
                    if *shown != c.text {
                        steps.push(Step::Edit {
                            id: id.clone(),
                            text: c.text.clone(),
                            last: true,
                        });
                    }
                }
                _ => steps.push(Step::Post {
                    text: c.text.clone(),
                }),
            }
        }
        self.live = None;
        self.consumed = text.len();
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(style: Style, interval_ms: u64, limit: usize) -> Settings {
        Settings {
            style,
            interval_ms,
            limit,
            measure: Measure::Chars,
        }
    }

    /// Feed `words` one per `step_ms` of a manual clock, executing steps
    /// (sends get ids `m1`, `m2`, ...); returns every step and the total
    /// time.
    fn run(s: &mut Streamer, words: &[&str], step_ms: u64) -> (Vec<Step>, u64) {
        let mut all = Vec::new();
        let mut text = String::new();
        let mut now = 10_000;
        let mut ids = 0;
        for w in words {
            text.push_str(w);
            let mut steps = s.update(&text, now);
            steps.extend(s.tick(now));
            for st in &steps {
                if let Step::Open { text } = st {
                    ids += 1;
                    s.opened(Some(format!("m{ids}")), text.clone());
                }
            }
            all.extend(steps);
            now += step_ms;
        }
        all.extend(s.finish(&text));
        (all, now - 10_000)
    }

    fn count(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
        steps.iter().filter(|s| f(s)).count()
    }

    #[test]
    fn final_only_sends_nothing_until_the_end() {
        let mut s = Streamer::new(settings(Style::FinalOnly, 0, 10), 1);
        let (steps, _) = run(&mut s, &["hello ", "there ", "world"], 5_000);
        assert_eq!(
            steps,
            vec![
                Step::Post {
                    text: "hello".into()
                },
                Step::Post {
                    text: "there".into()
                },
                Step::Post {
                    text: "world".into()
                }
            ]
        );
    }

    #[test]
    fn edits_are_throttled_and_the_last_state_lands() {
        let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut s = Streamer::new(settings(Style::Edit, 1_000, 0), 1);
        let (steps, elapsed) = run(&mut s, &words, 100);
        let edits = count(&steps, |s| matches!(s, Step::Edit { .. }));
        let opens = count(&steps, |s| matches!(s, Step::Open { .. }));
        assert_eq!(opens, 1);
        // At most one edit per interval, plus the final one.
        assert!(
            edits <= (elapsed / 1_000) as usize + 1,
            "{edits} edits in {elapsed} ms"
        );
        assert!(edits >= 5, "{edits}");
        let Some(Step::Edit { text, last, .. }) = steps.last() else {
            panic!("{:?}", steps.last())
        };
        assert!(last);
        assert_eq!(*text, words.concat().trim_end());
    }

    #[test]
    fn zero_interval_means_the_default() {
        let mut s = Streamer::new(settings(Style::Edit, 0, 0), 1);
        assert!(matches!(s.update("a", 0)[..], [Step::Open { .. }]));
        s.opened(Some("m1".into()), "a".into());
        assert!(s.update("a b", 999).is_empty());
        assert_eq!(s.due_at(), Some(DEFAULT_EDIT_INTERVAL_MS));
        assert!(s.tick(999).is_empty());
        assert!(matches!(&s.tick(1_000)[..], [Step::Edit { text, .. }] if text == "a b"));
    }

    #[test]
    fn edit_continues_in_a_new_message_past_the_limit() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 12), 1);
        let (steps, _) = run(&mut s, &["aaaa ", "bbbb ", "cccc ", "dddd ", "eeee"], 10);
        let opens: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s, Step::Open { .. }))
            .collect();
        assert!(opens.len() >= 2, "{steps:#?}");
        // Final texts of each message, in order, rebuild the answer.
        let mut finals: Vec<(String, String)> = Vec::new();
        let mut id = 0;
        for st in &steps {
            match st {
                Step::Open { text } => {
                    id += 1;
                    finals.push((format!("m{id}"), text.clone()));
                }
                Step::Edit { id, text, .. } => {
                    finals.iter_mut().find(|(i, _)| i == id).unwrap().1 = text.clone();
                }
                Step::Post { text } => finals.push((String::new(), text.clone())),
                Step::Draft { .. } => panic!("no drafts"),
            }
        }
        let joined: Vec<String> = finals.into_iter().map(|f| f.1).collect();
        assert_eq!(joined.join(" "), "aaaa bbbb cccc dddd eeee");
        assert!(joined.iter().all(|t| t.chars().count() <= 12));
    }

    #[test]
    fn drafts_are_throttled_and_finished_with_sends() {
        let mut s = Streamer::new(settings(Style::Draft, 500, 0), 7);
        let (steps, elapsed) = run(&mut s, &["a ", "b ", "c ", "d ", "e ", "f"], 200);
        let drafts = count(&steps, |s| matches!(s, Step::Draft { draft_id: 7, .. }));
        assert!(
            drafts >= 2 && drafts <= (elapsed / 500) as usize + 1,
            "{steps:#?}"
        );
        assert_eq!(
            steps.last(),
            Some(&Step::Post {
                text: "a b c d e f".into()
            })
        );
        assert_eq!(
            count(&steps, |s| matches!(
                s,
                Step::Open { .. } | Step::Edit { .. }
            )),
            0
        );
    }

    #[test]
    fn unsupported_falls_back_to_final_only() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 0), 1);
        assert!(matches!(s.update("a", 0)[..], [Step::Open { .. }]));
        s.opened(Some("m1".into()), "a".into());
        assert!(matches!(s.update("a b", 10)[..], [Step::Edit { .. }]));
        s.unsupported();
        assert_eq!(s.style(), Style::FinalOnly);
        assert!(s.update("a b c", 100).is_empty());
        assert_eq!(
            s.finish("a b c d"),
            vec![Step::Post {
                text: "a b c d".into()
            }]
        );
    }

    #[test]
    fn a_failed_open_delivers_everything_at_the_end() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 0), 1);
        assert!(matches!(s.update("a", 0)[..], [Step::Open { .. }]));
        s.opened(None, "a".into());
        assert!(s.update("a b", 10).is_empty());
        assert_eq!(s.finish("a b"), vec![Step::Post { text: "a b".into() }]);
    }

    #[test]
    fn an_error_notice_replaces_the_streamed_text() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 0), 1);
        assert!(matches!(s.update("partial", 0)[..], [Step::Open { .. }]));
        s.opened(Some("m1".into()), "partial".into());
        // Nothing was finished yet: the streamed message shows the notice.
        assert_eq!(
            s.finish("⚠️ failed"),
            vec![Step::Edit {
                id: "m1".into(),
                text: "⚠️ failed".into(),
                last: true
            }]
        );
    }

    #[test]
    fn a_failed_edit_is_sent_again_by_the_finish() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 0), 1);
        assert!(matches!(s.update("please", 0)[..], [Step::Open { .. }]));
        s.opened(Some("m1".into()), "please".into());
        let steps = s.update("please echo", 10);
        let [edit @ Step::Edit { .. }] = &steps[..] else {
            panic!("{steps:?}")
        };
        // The edit was rate limited: the message still shows "please".
        s.step_failed(edit);
        assert_eq!(
            s.finish("please echo"),
            vec![Step::Edit {
                id: "m1".into(),
                text: "please echo".into(),
                last: true
            }]
        );
    }

    #[test]
    fn a_message_whose_text_is_unknown_is_edited_at_the_finish_even_to_the_same_text() {
        // An open that found an earlier attempt's message (same key, older
        // text) and could not update it records its text as unknown.
        let mut s = Streamer::new(settings(Style::Edit, 1, 0), 1);
        assert!(matches!(
            s.update("whole answer", 0)[..],
            [Step::Open { .. }]
        ));
        s.opened(Some("m1".into()), String::new());
        assert_eq!(
            s.finish("whole answer"),
            vec![Step::Edit {
                id: "m1".into(),
                text: "whole answer".into(),
                last: true
            }]
        );
    }

    #[test]
    fn a_resumed_reply_edits_its_message_and_sends_only_the_rest() {
        let mut s = Streamer::new(settings(Style::Edit, 1, 12), 1);
        assert!(matches!(s.update("aaaa ", 0)[..], [Step::Open { .. }]));
        s.opened(Some("m1".into()), "aaaa".into());
        // The text outgrows the first message: it is finished and the rest
        // opens a second one.
        let steps = s.update("aaaa bbbb cccc", 10);
        assert!(
            matches!(&steps[..], [Step::Edit { last: true, .. }, Step::Open { text }] if text == "cccc"),
            "{steps:?}"
        );
        s.opened(Some("m2".into()), "cccc".into());
        // Recorded once those steps went through; then the process dies.
        let done = s.snapshot();
        assert_eq!(done.live, Some(("m2".into(), "cccc".into())));
        // The answer is produced again after the restart.
        let mut r = Streamer::new(settings(Style::Edit, 1, 12), 1);
        r.resume(done);
        let mut steps = r.update("aaaa bbbb cccc dd", 20);
        steps.extend(r.finish("aaaa bbbb cccc dd"));
        assert!(
            steps
                .iter()
                .all(|st| matches!(st, Step::Edit { id, .. } if id == "m2")),
            "only edits of the second message: {steps:#?}"
        );
        assert!(
            matches!(steps.last(), Some(Step::Edit { text, .. }) if text == "cccc dd"),
            "{steps:#?}"
        );
    }
}
