//! Providers for the run-scheduling tests: [`GateProvider`] holds every run
//! at a gate the test opens one run at a time and reports which runs
//! entered and how many were inside at once; [`PanicProvider`] panics on
//! request (inside its future, or before returning one).

use std::sync::Arc;

use futures::future::BoxFuture;
use pincer::agent::{
    AgentError, AgentEvent, ModelInfo, Provider, RunOutcome, RunRequest, ToolHost,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Who is inside a [`GateProvider`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateState {
    /// Messages of the runs that entered, in order.
    pub entered: Vec<String>,
    /// Runs inside now.
    pub inside: usize,
    /// The most runs ever inside at once.
    pub high_water: usize,
    /// Runs that left.
    pub left: usize,
}

/// A provider whose runs wait at a gate until [`GateProvider::open`], then
/// answer with their message.
pub struct GateProvider {
    gate: Semaphore,
    state: watch::Sender<GateState>,
}

impl Default for GateProvider {
    fn default() -> Self {
        GateProvider {
            gate: Semaphore::new(0),
            state: watch::Sender::new(GateState::default()),
        }
    }
}

impl GateProvider {
    /// A shared gate provider.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Let `n` more runs through the gate (in the order they reached it).
    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// The state now.
    pub fn state(&self) -> GateState {
        self.state.borrow().clone()
    }

    /// Wait until `pred` holds (a hang guard of 60 s, not a timing check).
    pub async fn until(&self, pred: impl Fn(&GateState) -> bool) -> GateState {
        let mut rx = self.state.subscribe();
        let r = tokio::time::timeout(std::time::Duration::from_secs(60), rx.wait_for(|s| pred(s)))
            .await;
        match r {
            Ok(Ok(s)) => s.clone(),
            _ => panic!("gate state never matched: {:?}", self.state()),
        }
    }
}

impl Provider for GateProvider {
    fn name(&self) -> &str {
        "gate"
    }

    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    fn run<'a>(
        &'a self,
        req: RunRequest,
        _tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        Box::pin(async move {
            self.state.send_modify(|s| {
                s.entered.push(req.message.clone());
                s.inside += 1;
                s.high_water = s.high_water.max(s.inside);
            });
            let passed = tokio::select! {
                _ = cancel.cancelled() => false,
                p = self.gate.acquire() => p.map(|p| p.forget()).is_ok(),
            };
            self.state.send_modify(|s| {
                s.inside -= 1;
                s.left += 1;
            });
            if !passed {
                return Err(AgentError::Aborted);
            }
            let _ = events.send(AgentEvent::TextDelta(req.message.clone()));
            Ok(RunOutcome {
                text: req.message,
                stop_reason: Some("stop".into()),
                usage: None,
            })
        })
    }
}

/// A provider that panics when the message is `panic-in-run` (inside its
/// future) or `panic-before-run` (before returning a future), and echoes
/// anything else.
#[derive(Debug, Default)]
pub struct PanicProvider;

impl Provider for PanicProvider {
    fn name(&self) -> &str {
        "panic"
    }

    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    fn run<'a>(
        &'a self,
        req: RunRequest,
        _tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        if req.message == "panic-before-run" {
            panic!("test provider panics before running");
        }
        Box::pin(async move {
            let _ = events.send(AgentEvent::TextDelta("partial ".into()));
            tokio::task::yield_now().await;
            if req.message == "panic-in-run" {
                panic!("test provider panics while running");
            }
            let _ = events.send(AgentEvent::TextDelta(req.message.clone()));
            Ok(RunOutcome {
                text: format!("partial {}", req.message),
                stop_reason: Some("stop".into()),
                usage: None,
            })
        })
    }
}
