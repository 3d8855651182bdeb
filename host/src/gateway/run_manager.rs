//! The run manager: which runs exist, when each may execute, and that each
//! ends exactly once. Every run gets a task at once; the task waits for its
//! session's turn (one run at a time per session, later ones in a bounded
//! FIFO, see [`run_queue`](super::run_queue)), then for one of the global
//! slots (a fair semaphore: excess runs wait in order), then executes
//! (`runs::execute`). Operators have their own lane: a channel run first
//! takes a slot of its channel (`channel_max_concurrent`) and one of the
//! channel share (`max_concurrent - operator_reserve`), and only then a
//! global slot, so channel floods never hold the reserve and one channel
//! cannot hold every channel slot. A [`RunGuard`] owns the run's end: whether the run
//! finishes, is aborted while waiting, is dropped from a full queue, panics
//! or is cancelled, its end is published (`chat` terminal event,
//! `agent.wait`), it leaves the in-flight set and the session passes on.
//! Finished results are kept 5 minutes for idempotent retries and
//! `agent.wait`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, json};
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::run_queue::{Admit, Lanes, RunLimits};
use super::runs::{Emitter, Origin, RunEnd, RunResult, RunSpec, assistant_message, execute};
use super::sender_rate::{SenderLimiter, Verdict};
use super::{Gateway, now_ms};

/// The error of a run whose session could not be claimed cluster-wide.
pub const SESSION_CLAIM_FAILED: &str =
    "the cluster store is unavailable (the session could not be claimed); retry";

/// Finished runs are remembered this long.
pub const DEDUPE_TTL: Duration = Duration::from_secs(300);
/// At most this many finished runs are remembered.
pub const DEDUPE_MAX: usize = 1000;
/// The longest run timeout honoured: larger requests (up to
/// `u64::MAX` seconds) are clamped to it.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What the notice to a channel sender whose message was dropped from a
/// full queue says.
pub const QUEUE_FULL_NOTICE: &str = "⚠️ Too many messages are waiting in this chat, so this one \
     was not answered. Please wait for the replies and send it again.";

/// What `start` did.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// A new run started (or waits only for a global slot).
    Started,
    /// A new run waits behind the session's current run.
    Queued {
        /// Place in the session's queue (1 = next).
        position: usize,
    },
    /// A run with this id is still going.
    InFlight,
    /// A run with this id finished recently.
    Done(RunResult),
    /// The session's queue is full; nothing was started.
    QueueFull {
        /// The queue's size.
        cap: usize,
    },
}

/// Where an unfinished run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Behind its session's current run.
    Queued,
    /// Its session's turn, waiting for a global slot (or collected into
    /// another run).
    Waiting,
    /// Executing.
    Running,
}

/// Unfinished runs by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Waiting behind their session's current run.
    pub queued: usize,
    /// Their session's turn, waiting for a global slot.
    pub waiting: usize,
    /// Executing.
    pub running: usize,
}

struct Active {
    session_key: String,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    done: watch::Receiver<Option<RunResult>>,
    phase: Phase,
}

/// A queued run's place in its session's lane.
struct Waiter {
    run_id: String,
    message: String,
    turn: oneshot::Sender<Turn>,
}

/// What a queued run is told when the session is handed to it.
enum Turn {
    /// Run now, answering these collected messages too (`collect` mode).
    Run { collected: Vec<String> },
    /// Answered by run `lead`, which collected this message.
    Collected { lead: String },
}

/// The in-flight runs and the session lanes, under one lock.
#[derive(Default)]
struct Sched {
    active: HashMap<String, Active>,
    lanes: Lanes<Waiter>,
}

/// Finished runs by id, and their ids oldest first (for the size cap).
type Finished = (HashMap<String, (RunResult, Instant)>, VecDeque<String>);

/// All runs.
pub struct RunManager {
    sched: Mutex<Sched>,
    finished: Mutex<Finished>,
    idle: Notify,
    /// The timeout of runs that ask for none, ms.
    default_timeout_ms: AtomicU64,
    limits: RunLimits,
    /// The global cap: every executing run holds one.
    slots: Arc<Semaphore>,
    /// The channel share: every executing channel run also holds one.
    channel_slots: Arc<Semaphore>,
    /// Per-channel caps, by channel name (created on first use).
    per_channel: Mutex<HashMap<String, Arc<Semaphore>>>,
    senders: SenderLimiter,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("counts", &self.counts())
            .finish()
    }
}

impl RunManager {
    /// A manager whose runs time out after `default_timeout`, scheduled by
    /// `limits`.
    pub fn new(default_timeout: Duration, limits: RunLimits) -> Self {
        RunManager {
            sched: Mutex::new(Sched::default()),
            finished: Mutex::new((HashMap::new(), VecDeque::new())),
            idle: Notify::new(),
            default_timeout_ms: AtomicU64::new(ms(default_timeout)),
            slots: Arc::new(Semaphore::new(limits.total_slots())),
            channel_slots: Arc::new(Semaphore::new(limits.channel_slots())),
            per_channel: Mutex::new(HashMap::new()),
            senders: SenderLimiter::new(limits.sender_per_minute, limits.sender_burst),
            limits,
        }
    }

    /// Runs that ask for no timeout get `timeout` (`[agent]
    /// run_timeout_ms`; clamped to [`MAX_RUN_TIMEOUT`]; zero is ignored).
    pub fn set_default_timeout(&self, timeout: Duration) {
        if !timeout.is_zero() {
            self.default_timeout_ms
                .store(ms(timeout), Ordering::Relaxed);
        }
    }

    /// The timeout for a run that asked for `requested`.
    fn timeout(&self, requested: Option<Duration>) -> Duration {
        requested
            .unwrap_or_else(|| {
                Duration::from_millis(self.default_timeout_ms.load(Ordering::Relaxed))
            })
            .min(MAX_RUN_TIMEOUT)
    }

    /// The semaphores a run from `origin` takes before it executes, in
    /// order: an operator run a global slot; a channel run a slot of its
    /// channel (when that cap binds), one of the channel share, then a
    /// global slot. Always taken in this order, so no two runs wait on
    /// each other's permits.
    fn gates(&self, origin: &Origin) -> Vec<Arc<Semaphore>> {
        let Origin::Channel { channel, .. } = origin else {
            return vec![self.slots.clone()];
        };
        let mut gates = Vec::with_capacity(3);
        if let Some(cap) = self.limits.per_channel_slots() {
            let mut per = self.per_channel.lock().unwrap_or_else(|p| p.into_inner());
            gates.push(
                per.entry(channel.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(cap)))
                    .clone(),
            );
        }
        gates.push(self.channel_slots.clone());
        gates.push(self.slots.clone());
        gates
    }

    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unfinished runs (executing, waiting for a slot or queued).
    pub fn active_count(&self) -> usize {
        self.sched().active.len()
    }

    /// Unfinished runs by phase.
    pub fn counts(&self) -> RunCounts {
        let s = self.sched();
        let mut c = RunCounts::default();
        for a in s.active.values() {
            match a.phase {
                Phase::Queued => c.queued += 1,
                Phase::Waiting => c.waiting += 1,
                Phase::Running => c.running += 1,
            }
        }
        c
    }

    /// Unfinished runs by phase in each session that has any, by session
    /// key (`diagnostics.lanes`' per-session lanes).
    pub fn counts_by_session(&self) -> std::collections::BTreeMap<String, RunCounts> {
        let s = self.sched();
        let mut by = std::collections::BTreeMap::<String, RunCounts>::new();
        for a in s.active.values() {
            let c = by.entry(a.session_key.clone()).or_default();
            match a.phase {
                Phase::Queued => c.queued += 1,
                Phase::Waiting => c.waiting += 1,
                Phase::Running => c.running += 1,
            }
        }
        by
    }

    /// The ordering and bounds runs are scheduled by (`[gateway.runs]`).
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// Unfinished run ids in `session_key` (queued ones included).
    pub fn active_in(&self, session_key: &str) -> Vec<String> {
        self.sched()
            .active
            .iter()
            .filter(|(_, a)| a.session_key == session_key)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The session of an unfinished run.
    pub fn session_of(&self, run_id: &str) -> Option<String> {
        self.sched()
            .active
            .get(run_id)
            .map(|a| a.session_key.clone())
    }

    /// A recently finished run.
    pub fn finished(&self, run_id: &str) -> Option<RunResult> {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        match f.0.get(run_id) {
            Some((r, at)) if at.elapsed() < DEDUPE_TTL => Some(r.clone()),
            Some(_) => {
                f.0.remove(run_id);
                None
            }
            None => None,
        }
    }

    fn record(&self, result: RunResult) {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *f;
        if map
            .insert(result.run_id.clone(), (result.clone(), Instant::now()))
            .is_none()
        {
            order.push_back(result.run_id.clone());
        }
        while order.len() > DEDUPE_MAX {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Whether a channel message from `sender` may start a run now (the
    /// per-sender token bucket).
    pub fn admit_sender(&self, channel: &str, sender: &str) -> Verdict {
        self.senders.check(channel, sender, Instant::now())
    }

    /// Abort run `run_id` with `reason` (`rpc`, `stop`, `shutdown`, ...),
    /// whether it runs or waits; whether it was unfinished.
    pub fn abort(&self, run_id: &str, reason: &str) -> bool {
        match self.sched().active.get(run_id) {
            Some(a) => {
                a.reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| reason.to_string());
                a.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Abort every run in `session_key` (queued ones too); the aborted ids.
    pub fn abort_session(&self, session_key: &str, reason: &str) -> Vec<String> {
        let ids = self.active_in(session_key);
        for id in &ids {
            self.abort(id, reason);
        }
        ids
    }

    /// Abort everything.
    pub fn abort_all(&self, reason: &str) {
        let ids: Vec<String> = self.sched().active.keys().cloned().collect();
        for id in ids {
            self.abort(&id, reason);
        }
    }

    /// Wait until no run is unfinished.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.sched().active.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Wait for run `run_id` to finish, at most `timeout`. `None` if the
    /// run is unknown; `Some(None)` on timeout.
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Option<Option<RunResult>> {
        if let Some(r) = self.finished(run_id) {
            return Some(Some(r));
        }
        let mut rx = match self.sched().active.get(run_id) {
            Some(a) => a.done.clone(),
            None => return self.finished(run_id).map(Some),
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| r.is_some())).await;
        match waited {
            Ok(Ok(r)) => Some(r.clone()),
            Ok(Err(_)) => Some(self.finished(run_id)),
            Err(_) => Some(None),
        }
    }

    /// Start a run unless one with this id is unfinished or recently
    /// finished: at once if its session is idle (when a global slot is
    /// free), else queued behind the session's current run.
    pub fn start(&self, gw: &Arc<Gateway>, spec: RunSpec) -> StartOutcome {
        self.start_after(gw, spec, None)
    }

    /// [`RunManager::start`], with the run's execution held until `after`
    /// fires (or is dropped, or `pong_barrier_timeout_ms` passes):
    /// `chat.send` holds it until the client's Pong proves it read the
    /// answer, so the answer comes in an earlier read than the run's events
    /// (see [`super::ping_barrier`]). A run that has its session at once
    /// has its user message in the transcript when this returns.
    pub fn start_after(
        &self,
        gw: &Arc<Gateway>,
        spec: RunSpec,
        after: Option<oneshot::Receiver<()>>,
    ) -> StartOutcome {
        if let Some(r) = self.finished(&spec.run_id) {
            return StartOutcome::Done(r);
        }
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let (done_tx, done_rx) = watch::channel(None);
        let (turn_tx, turn_rx) = oneshot::channel();
        let waiter = Waiter {
            run_id: spec.run_id.clone(),
            message: spec.message.clone(),
            turn: turn_tx,
        };
        let (outcome, turn, dropped) = {
            let mut s = self.sched();
            if s.active.contains_key(&spec.run_id) {
                return StartOutcome::InFlight;
            }
            let admitted = s.lanes.admit(
                &spec.session_key,
                waiter,
                self.limits.queue_cap,
                self.limits.queue_drop,
            );
            let (outcome, turn, dropped, phase) = match admitted {
                Admit::RunNow(_) => (StartOutcome::Started, None, None, Phase::Waiting),
                Admit::Queued { position, dropped } => (
                    StartOutcome::Queued { position },
                    Some(turn_rx),
                    dropped,
                    Phase::Queued,
                ),
                Admit::Full(_) => {
                    return StartOutcome::QueueFull {
                        cap: self.limits.queue_cap,
                    };
                }
            };
            s.active.insert(
                spec.run_id.clone(),
                Active {
                    session_key: spec.session_key.clone(),
                    cancel: cancel.clone(),
                    reason: reason.clone(),
                    done: done_rx,
                    phase,
                },
            );
            (outcome, turn, dropped)
        };
        // Dropping its turn sender tells the oldest waiting run it was
        // dropped; its task ends it.
        drop(dropped);
        // Idle here, but in a cluster another node may be running the
        // session: the run then waits for that run's end (its claim, see
        // `drive`), and is answered as queued, next in line, as it is
        // behind a run of this node. (This node cannot see runs queued on
        // other nodes, so the position is 1.) Its user message waits for
        // its turn too.
        let admitted_now = matches!(outcome, StartOutcome::Started);
        let outcome = match (&outcome, gw.cluster.get()) {
            (StartOutcome::Started, Some(c)) if c.session_busy_elsewhere(&spec.session_key) => {
                StartOutcome::Queued { position: 1 }
            }
            _ => outcome,
        };
        // A `chat.send` run that has its session at once: the user's turn
        // goes into the transcript now, before the answer says `started`
        // (as OpenClaw does), so history shows it even if the run is
        // aborted before it executes. A queued run's message waits for its
        // turn (it would otherwise land inside the current run's turn). On
        // a store error the run tries again when it executes (and reports
        // the error then).
        let user_saved = after.is_some()
            && matches!(outcome, StartOutcome::Started)
            && match super::runs::save_user_message(gw, &spec, false) {
                Ok(()) => true,
                Err(e) => {
                    warn!(run_id = %spec.run_id, session = %spec.session_key, error = %e, "persisting the user's message at acceptance");
                    false
                }
            };
        let span = info_span!("run", run_id = %spec.run_id, session = %spec.session_key);
        let guard = RunGuard {
            gw: gw.clone(),
            run_id: spec.run_id.clone(),
            session_key: spec.session_key.clone(),
            origin: spec.origin.clone(),
            done_tx,
            seq: AtomicU64::new(0),
            turn,
            holds_lane: admitted_now,
            user_saved,
            ended: false,
        };
        // A run that may start now joins its first slot queue here, in the
        // order runs start; its task may first run in any order.
        let gates = self.gates(&spec.origin);
        let slot = admitted_now.then(|| join_slot_queue(&gates[0]));
        tokio::spawn(drive(guard, spec, cancel, reason, gates, slot, after).instrument(span));
        outcome
    }

    fn set_phase(&self, run_id: &str, phase: Phase) {
        if let Some(a) = self.sched().active.get_mut(run_id) {
            a.phase = phase;
        }
    }

    /// Pass session `key` on to its next waiting run(s) (called with the
    /// lock held by the run that held it).
    fn hand_over(&self, s: &mut Sched, key: &str) {
        let mode = self.limits.queue_mode;
        loop {
            let mut next = s.lanes.hand_over(key, mode);
            if next.is_empty() {
                return; // the session is idle
            }
            while !next.is_empty() {
                let lead = next.remove(0);
                let collected = next.iter().map(|w| w.message.clone()).collect();
                if lead.turn.send(Turn::Run { collected }).is_err() {
                    continue; // its task is gone; the next one leads
                }
                if let Some(a) = s.active.get_mut(&lead.run_id) {
                    a.phase = Phase::Waiting;
                }
                for w in next {
                    if let Some(a) = s.active.get_mut(&w.run_id) {
                        a.phase = Phase::Waiting;
                    }
                    let _ = w.turn.send(Turn::Collected {
                        lead: lead.run_id.clone(),
                    });
                }
                return;
            }
        }
    }
}

/// `d` in whole ms, clamped to [`MAX_RUN_TIMEOUT`].
fn ms(d: Duration) -> u64 {
    d.min(MAX_RUN_TIMEOUT).as_millis() as u64
}

/// The text of a run that answers collected messages: all of them, in
/// order.
fn collected_message(first: &str, collected: &[String]) -> String {
    let mut text = first.to_string();
    for m in collected {
        text.push_str("\n\n");
        text.push_str(m);
    }
    text
}

/// A pending wait for a global run slot.
type SlotWait = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
            > + Send,
    >,
>;

/// A run's place in the global slot queue, taken when it starts.
enum Slot {
    /// A slot was free.
    Held(tokio::sync::OwnedSemaphorePermit),
    /// Queued (FIFO) behind the runs that started before it.
    Waiting(SlotWait),
}

/// Join the global slot queue now: the first poll of a semaphore wait puts
/// it in the semaphore's FIFO queue (or takes a free slot), so waiting runs
/// get slots in the order they started, not in the order their tasks happen
/// to be scheduled. The task's own poll later replaces the no-op waker.
fn join_slot_queue(slots: &Arc<Semaphore>) -> Slot {
    let mut wait: SlotWait = Box::pin(slots.clone().acquire_owned());
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    match wait.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(permit)) => Slot::Held(permit),
        std::task::Poll::Pending => Slot::Waiting(wait),
        // The semaphore is never closed; if it were, the task's own wait
        // would report it.
        std::task::Poll::Ready(Err(_)) => Slot::Waiting(Box::pin(slots.clone().acquire_owned())),
    }
}

/// Take a permit of each of `gates` in order (the first from `slot` when
/// the run already joined its queue); `None` if cancelled meanwhile (the
/// permits taken so far are released).
async fn take_gates(
    gates: &[Arc<Semaphore>],
    slot: Option<Slot>,
    cancel: &CancellationToken,
) -> Option<Vec<tokio::sync::OwnedSemaphorePermit>> {
    let mut permits = Vec::with_capacity(gates.len());
    let mut slot = slot;
    for gate in gates {
        let wait: SlotWait = match slot.take() {
            Some(Slot::Held(p)) => Box::pin(async move { Ok(p) }),
            Some(Slot::Waiting(w)) => w,
            None => Box::pin(gate.clone().acquire_owned()),
        };
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            p = wait => p.ok(),
        };
        permits.push(permit?);
    }
    Some(permits)
}

/// A run's task: its session's turn, its slots, execution, the end.
async fn drive(
    mut guard: RunGuard,
    mut spec: RunSpec,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    gates: Vec<Arc<Semaphore>>,
    slot: Option<Slot>,
    after: Option<oneshot::Receiver<()>>,
) {
    // 0. The caller's go: the Pong proving it read its answer (see
    // `ping_barrier`); a dropped sender (the connection closed) is a go
    // too, and so is the bound (a client that never answers pings).
    if let Some(after) = after {
        let bound = Duration::from_millis(guard.gw.config.pong_barrier_timeout_ms);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            waited = tokio::time::timeout(bound, after) => {
                if waited.is_err() {
                    guard
                        .gw
                        .counters
                        .pong_barrier_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(run_id = %guard.run_id, bound_ms = bound.as_millis() as u64, "no Pong to the chat.send barrier: the run goes ahead");
                }
            }
        }
    }
    let why = |fallback: &str| {
        reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| fallback.to_string())
    };
    // 1. The session's turn.
    if let Some(rx) = guard.turn.as_mut() {
        let got = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            t = rx => Some(t.ok()),
        };
        let turn = match got {
            Some(t) => {
                guard.turn = None;
                t
            }
            None => guard.leave_queue(),
        };
        match turn {
            Some(Turn::Run { collected }) => {
                guard.holds_lane = true;
                if !collected.is_empty() {
                    spec.message = collected_message(&spec.message, &collected);
                }
            }
            Some(Turn::Collected { lead }) => {
                let result = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        // Aborting a collected message aborts its turn.
                        guard.gw.runs.abort(&lead, &why("rpc"));
                        guard.gw.runs.wait(&lead, MAX_RUN_TIMEOUT).await
                    }
                    r = guard.gw.runs.wait(&lead, MAX_RUN_TIMEOUT) => r,
                };
                match result.flatten() {
                    Some(r) => guard.end_collected(r),
                    None => guard.end_unexpected(),
                }
                return;
            }
            None if cancel.is_cancelled() => {
                // Aborted while queued behind another run: it never had
                // the session's turn, so its message stays out of the
                // transcript (it would land inside the other run's turn).
                guard.end_unstarted(&why("rpc"));
                return;
            }
            None => {
                // Dropped from a full queue.
                guard.notify_sender(QUEUE_FULL_NOTICE);
                guard.end_unstarted("queue_overflow");
                return;
            }
        }
    }
    // 1b. In a cluster, its session's claim: one run at a time per session
    // across nodes (waiting while another node runs the session). Held to
    // the end of this task; released once the run's end is in the log.
    let _claim = match guard.gw.cluster.get() {
        Some(c) => match c
            .claim_session(&guard.session_key, &guard.run_id, &cancel)
            .await
        {
            Ok(Some(claim)) => Some(claim),
            Ok(None) => {
                guard.end_aborted_unstarted(&spec, &why("rpc"));
                return;
            }
            Err(e) => {
                warn!(error = %e, "claiming the session cluster-wide failed");
                guard.end_error(SESSION_CLAIM_FAILED);
                return;
            }
        },
        None => None,
    };
    // 2. Its slots (each fair: in the order runs got there).
    let Some(permit) = take_gates(&gates, slot, &cancel).await else {
        guard.end_aborted_unstarted(&spec, &why("rpc"));
        return;
    };
    if cancel.is_cancelled() {
        drop(permit);
        guard.end_aborted_unstarted(&spec, &why("rpc"));
        return;
    }
    // 3. Execute.
    guard.gw.runs.set_phase(&guard.run_id, Phase::Running);
    let timeout = guard.gw.runs.timeout(spec.timeout);
    let (result, end) = execute(
        &guard.gw,
        &spec,
        guard.user_saved,
        cancel,
        reason.clone(),
        timeout,
        &guard.seq,
    )
    .await;
    drop(permit);
    guard.finish(result, Some(end));
}

/// Owns a run's end: [`RunGuard::end`] (or one of its variants) publishes
/// it once; if the task unwinds (a panic) or is dropped before that, `Drop`
/// publishes an error end instead. Either way the run leaves the in-flight
/// set, `agent.wait` answers and the session passes to its next run.
struct RunGuard {
    gw: Arc<Gateway>,
    run_id: String,
    session_key: String,
    origin: Origin,
    done_tx: watch::Sender<Option<RunResult>>,
    /// The run's agent event `seq` (shared with its emitter).
    seq: AtomicU64,
    /// The turn, while queued behind the session's current run.
    turn: Option<oneshot::Receiver<Turn>>,
    /// Whether this run holds its session (and must pass it on).
    holds_lane: bool,
    /// Whether its user message is in the transcript already (saved when
    /// `chat.send` accepted it).
    user_saved: bool,
    ended: bool,
}

impl RunGuard {
    /// Leave the session's queue (the run was aborted while queued): the
    /// turn if it had just been given, `None` if the run was still waiting
    /// (now removed) or had been dropped.
    fn leave_queue(&mut self) -> Option<Turn> {
        let mut rx = self.turn.take()?;
        let runs = &self.gw.runs;
        let mut s = runs.sched();
        let id = &self.run_id;
        if s.lanes
            .remove(&self.session_key, |w| &w.run_id == id)
            .is_some()
        {
            return None;
        }
        rx.try_recv().ok()
    }

    fn result(&self, status: &'static str, error: Option<String>, text: String) -> RunResult {
        let now = now_ms();
        RunResult {
            run_id: self.run_id.clone(),
            session_key: self.session_key.clone(),
            status,
            started_at: now,
            ended_at: now,
            error,
            text,
        }
    }

    fn emitter(&self) -> Emitter<'_> {
        Emitter {
            gw: &self.gw,
            run_id: &self.run_id,
            session_key: &self.session_key,
            seq: &self.seq,
        }
    }

    /// A short notice to the channel sender of this run's message.
    fn notify_sender(&self, text: &str) {
        if let Origin::Channel {
            channel,
            conversation,
            reply_to,
            ..
        } = &self.origin
        {
            crate::channels::reply::notify(
                &self.gw.runtime.channels,
                channel,
                conversation,
                reply_to.clone(),
                text.to_string(),
            );
        }
    }

    /// The run ended (it published its own events).
    fn end(&mut self, result: RunResult) {
        self.finish(result, None);
    }

    /// The run ended: it is recorded and leaves the in-flight set, then its
    /// end events (`end`) are published, then its session passes to the
    /// next waiting run and `agent.wait` answers. So a client that saw the
    /// final event finds the run over (`chat.send` for the session is
    /// accepted, `sessions.list` shows it idle), and a run queued behind
    /// this one publishes nothing before this one's final event.
    fn finish(&mut self, result: RunResult, end: Option<RunEnd>) {
        info!(status = result.status, "run finished");
        self.ended = true;
        let runs = &self.gw.runs;
        runs.record(result.clone());
        // Recorded and out of the in-flight set together (`agent.wait`
        // answers from the record at once), before any store round trip.
        {
            let mut s = runs.sched();
            s.active.remove(&self.run_id);
            if let Some(_rx) = self.turn.take() {
                let id = &self.run_id;
                s.lanes.remove(&self.session_key, |w| &w.run_id == id);
            }
        }
        // In a cluster, a run the other nodes already ended as lost (this
        // node was cut off) keeps its one terminal event.
        let end = match self.gw.cluster.get() {
            Some(c) if !c.run_finished(&result) => None,
            _ => end,
        };
        if let Some(end) = end {
            end.publish(&mut self.emitter());
        }
        if self.holds_lane {
            self.holds_lane = false;
            let mut s = runs.sched();
            runs.hand_over(&mut s, &self.session_key);
        }
        let _ = self.done_tx.send(Some(result));
        runs.idle.notify_waiters();
    }

    /// The run ends before it started (aborted while waiting, or dropped
    /// from a full queue): one `chat` `aborted` event, nothing in the
    /// transcript.
    /// The run was aborted after it got its session's turn but before it
    /// executed (waiting for its client to read the `chat.send` answer, or
    /// for a run slot): its message still goes into the transcript (marked
    /// aborted), since the client saw it accepted, then the run ends
    /// unstarted.
    fn end_aborted_unstarted(&mut self, spec: &RunSpec, why: &str) {
        if self.user_saved {
            self.end_unstarted(why);
            return;
        }
        if let Err(e) = super::runs::save_user_message(&self.gw, spec, true) {
            warn!(run_id = %self.run_id, session = %self.session_key, error = %e, "persisting an aborted run's message");
        }
        self.end_unstarted(why);
    }

    fn end_unstarted(&mut self, why: &str) {
        let mut p = Map::new();
        p.insert("state".into(), json!("aborted"));
        p.insert("stopReason".into(), json!(why));
        self.emitter().chat(p, false);
        let result = self.result("aborted", None, String::new());
        self.end(result);
    }

    /// The run's message was answered by run `lead` (`collect` mode): the
    /// same end under this run's id.
    fn end_collected(&mut self, lead: RunResult) {
        let mut p = Map::new();
        match lead.status {
            "ok" => {
                p.insert("state".into(), json!("final"));
                if !lead.text.is_empty() {
                    p.insert(
                        "message".into(),
                        assistant_message(&lead.text, lead.ended_at),
                    );
                }
            }
            "aborted" => {
                p.insert("state".into(), json!("aborted"));
            }
            _ => {
                p.insert("state".into(), json!("error"));
                p.insert(
                    "errorMessage".into(),
                    json!(lead.error.clone().unwrap_or_default()),
                );
                p.insert("errorKind".into(), json!("unknown"));
            }
        }
        self.emitter().chat(p, false);
        let result = RunResult {
            run_id: self.run_id.clone(),
            session_key: self.session_key.clone(),
            ..lead
        };
        self.end(result);
    }

    /// The run ended without publishing its end (a panic, or its task was
    /// dropped): an `agent` lifecycle error and a `chat` error event.
    fn end_unexpected(&mut self) {
        const MSG: &str = "the run ended unexpectedly";
        warn!("{MSG}");
        self.end_error(MSG);
    }

    /// The run ends with error `msg` (without having published its end):
    /// an `agent` lifecycle error and a `chat` error event.
    fn end_error(&mut self, msg: &str) {
        let mut em = self.emitter();
        em.agent(
            "lifecycle",
            json!({"phase": "error", "endedAt": now_ms(), "error": msg}),
            false,
        );
        let mut p = Map::new();
        p.insert("state".into(), json!("error"));
        p.insert("errorMessage".into(), json!(msg));
        p.insert("errorKind".into(), json!("unknown"));
        em.chat(p, false);
        if let Err(e) = self.gw.sessions.append_event(
            "agent.error",
            Some(&self.session_key),
            json!({"runId": self.run_id, "sessionKey": self.session_key, "error": msg}),
        ) {
            warn!(error = %e, "recording event");
        }
        let result = self.result("error", Some(msg.into()), String::new());
        self.end(result);
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Still queued: leave the queue, or take the session if it was
        // just handed over (so it passes on).
        if self.turn.is_some() && matches!(self.leave_queue(), Some(Turn::Run { .. })) {
            self.holds_lane = true;
        }
        self.end_unexpected();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_messages_join_in_order() {
        assert_eq!(collected_message("a", &[]), "a");
        assert_eq!(
            collected_message("a", &["b".into(), "c".into()]),
            "a\n\nb\n\nc"
        );
    }
}
