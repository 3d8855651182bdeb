//! One run at a time per session, cluster-wide: before a run of this node
//! executes it takes its session's claim in the shared store (a row with
//! the holder's node id and a fencing token, see
//! [`ClusterStore::claim_session`](crate::store::ClusterStore::claim_session)),
//! waiting while a run on another node holds it; the claim is released
//! once the run's end is in the stream log, so the next run's events, on
//! whichever node, come after it. A claim lives as long as its node's
//! heartbeat: a dead node's claims are free once the node times out. A
//! node that finds one of its claims taken over (it was cut off past the
//! node timeout) aborts that run.
//!
//! Why a row and not `pg_advisory_lock` on a dedicated connection: an
//! advisory lock dies with its connection, so any reconnect (a
//! PostgreSQL restart, a network blip) would silently free every session
//! while the runs go on; and a stalled but connected node would keep its
//! locks past the point where the others ended its runs as lost. The row
//! outlives connections and expires with the node's heartbeat, like the
//! runs themselves.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Cluster, lock};
use crate::store::StoreError;

/// A session claim a run of this node holds; released when dropped (after
/// every event published so far is in the log).
pub struct SessionClaim {
    cluster: Arc<Cluster>,
    session_key: String,
    token: i64,
}

impl std::fmt::Debug for SessionClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionClaim")
            .field("session_key", &self.session_key)
            .field("token", &self.token)
            .finish()
    }
}

/// A claim this node holds: the run, and whether it is being released.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub run_id: String,
    pub token: i64,
    pub releasing: bool,
}

impl Cluster {
    /// Take `session_key`'s cluster-wide claim for run `run_id`, waiting
    /// (woken by a release anywhere, else every `poll_ms`) while another
    /// node's run holds it. `Ok(None)` if `cancel` fired first.
    pub async fn claim_session(
        self: &Arc<Self>,
        session_key: &str,
        run_id: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<SessionClaim>, StoreError> {
        let timeout = self.config.node_timeout_ms as i64;
        let mut waited = false;
        loop {
            let freed = self.session_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let taken = self
                .store
                .claim_session(session_key, run_id, &self.node_id, timeout)?;
            if let Some(token) = taken {
                lock(&self.sessions).insert(
                    session_key.to_owned(),
                    Held {
                        run_id: run_id.to_owned(),
                        token,
                        releasing: false,
                    },
                );
                if waited {
                    tracing::debug!(
                        run_id,
                        session = session_key,
                        token,
                        "session claim taken after waiting"
                    );
                }
                return Ok(Some(SessionClaim {
                    cluster: self.clone(),
                    session_key: session_key.to_owned(),
                    token,
                }));
            }
            if !waited {
                tracing::debug!(
                    run_id,
                    session = session_key,
                    "another node runs this session; waiting"
                );
                waited = true;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(None),
                _ = &mut freed => {}
                _ = tokio::time::sleep(self.poll()) => {}
            }
        }
    }

    /// Whether a run of `session_key` holds its claim on another live
    /// node (a new run of it will wait for that run's end). A store error
    /// counts as no (the run then finds out when it claims the session).
    pub fn session_busy_elsewhere(&self, session_key: &str) -> bool {
        let timeout = self.config.node_timeout_ms as i64;
        match self
            .store
            .session_claimed_elsewhere(session_key, &self.node_id, timeout)
        {
            Ok(busy) => busy,
            Err(e) => {
                tracing::debug!(session = session_key, error = %e, "reading the session's claim failed");
                false
            }
        }
    }

    /// This node's claims still held by running runs: (session, held).
    pub(super) fn held_sessions(&self) -> Vec<(String, Held)> {
        lock(&self.sessions)
            .iter()
            .filter(|(_, h)| !h.releasing)
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    /// Abort the runs whose claims another node took over (this node was
    /// taken for dead): `held` was read before `in_store`, the claims the
    /// store still gives this node.
    pub(super) fn claims_lost(
        &self,
        gw: &crate::gateway::Gateway,
        held: Vec<(String, Held)>,
        in_store: &[(String, i64)],
    ) {
        for (key, h) in held {
            if in_store.iter().any(|(k, t)| *k == key && *t == h.token) {
                continue;
            }
            let still = lock(&self.sessions)
                .get(&key)
                .is_some_and(|now| now.token == h.token && !now.releasing);
            if still && gw.runs.abort(&h.run_id, "session_claim_lost") {
                tracing::warn!(run_id = %h.run_id, session = %key, token = h.token, "another node took this session over; the run is aborted");
            }
        }
    }
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        {
            let mut held = lock(&self.cluster.sessions);
            match held.get_mut(&self.session_key) {
                Some(h) if h.token == self.token => h.releasing = true,
                _ => {}
            }
        }
        // Everything this node published so far (the run's end included)
        // goes into the log before the session is free for another node.
        let upto = self.cluster.published_total();
        let cluster = self.cluster.clone();
        let key = std::mem::take(&mut self.session_key);
        let token = self.token;
        let release = async move {
            cluster.wait_written(upto).await;
            let mut backoff = std::time::Duration::from_millis(100);
            loop {
                let c = cluster.clone();
                let k = key.clone();
                let done =
                    tokio::task::spawn_blocking(move || c.store.release_session(&k, token)).await;
                match done {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) if !cluster.stopping() => {
                        tracing::warn!(session = %key, token, error = %e, "releasing a session claim failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    }
                    _ => break,
                }
            }
            let mut held = lock(&cluster.sessions);
            if held.get(&key).is_some_and(|h| h.token == token) {
                held.remove(&key);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(release);
            }
            Err(_) => tracing::debug!(
                token,
                "no runtime to release a session claim; it expires with the node"
            ),
        }
    }
}
