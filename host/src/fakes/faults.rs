//! Fault injection shared by the fakes: per-method queues of faults that
//! the next N calls of that method answer with, and hang/resume (calls stop
//! being answered until [`Faults::resume`]).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::wait::Changes;

/// Fault queues of one fake; `F` is the fake's fault type.
#[derive(Debug)]
pub(crate) struct Faults<F> {
    queues: Mutex<HashMap<String, VecDeque<F>>>,
    /// `(held, resumes)`: `held` = every call hangs; `resumes` counts
    /// [`Faults::resume`] calls (a single hung call waits for the next).
    gate: watch::Sender<(bool, u64)>,
    hanging: Mutex<usize>,
}

impl<F: Clone> Default for Faults<F> {
    fn default() -> Self {
        Faults {
            queues: Mutex::new(HashMap::new()),
            gate: watch::channel((false, 0)).0,
            hanging: Mutex::new(0),
        }
    }
}

impl<F: Clone> Faults<F> {
    /// The next `n` calls of `method` answer with `fault`, after any
    /// faults already queued for it.
    pub(crate) fn push(&self, method: &str, n: usize, fault: F) {
        let mut q = self.queues.lock();
        let q = q.entry(method.to_string()).or_default();
        q.extend(std::iter::repeat_n(fault, n));
    }

    /// The fault for this call of `method`, if one is queued.
    pub(crate) fn take(&self, method: &str) -> Option<F> {
        self.queues.lock().get_mut(method)?.pop_front()
    }

    /// Drop every queued fault.
    pub(crate) fn clear(&self) {
        self.queues.lock().clear();
    }

    /// Every call from now on hangs until [`Faults::resume`].
    pub(crate) fn hold(&self) {
        self.gate.send_modify(|g| g.0 = true);
    }

    /// Release every hanging call (they are then answered normally) and
    /// stop holding new ones.
    pub(crate) fn resume(&self) {
        self.gate.send_modify(|g| {
            g.0 = false;
            g.1 += 1;
        });
    }

    /// Whether calls are being held.
    pub(crate) fn held(&self) -> bool {
        self.gate.borrow().0
    }

    /// How many calls are hanging right now.
    pub(crate) fn hanging(&self) -> usize {
        *self.hanging.lock()
    }

    /// Hang while calls are held (returns at once otherwise).
    pub(crate) async fn pass_gate(&self, changes: &Changes) {
        if !self.held() {
            return;
        }
        let _h = HangCount::new(self, changes);
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|g| !g.0).await;
    }

    /// Hang until the next [`Faults::resume`] (a single injected hang).
    pub(crate) async fn hang_once(&self, changes: &Changes) {
        let _h = HangCount::new(self, changes);
        let mut rx = self.gate.subscribe();
        let start = rx.borrow().1;
        let _ = rx.wait_for(|g| g.1 > start && !g.0).await;
    }
}

/// Counts a hanging call while alive (also when the client gives up and
/// the request future is dropped).
struct HangCount<'a, F> {
    faults: &'a Faults<F>,
    changes: &'a Changes,
}

impl<'a, F> HangCount<'a, F> {
    fn new(faults: &'a Faults<F>, changes: &'a Changes) -> Self {
        *faults.hanging.lock() += 1;
        changes.bump();
        HangCount { faults, changes }
    }
}

impl<F> Drop for HangCount<'_, F> {
    fn drop(&mut self) {
        *self.faults.hanging.lock() -= 1;
        self.changes.bump();
    }
}
