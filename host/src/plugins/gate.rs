//! Per-plugin admission: each plugin name has one [`Gate`], shared by all its
//! versions, that caps how many instances of it exist at once (live calls
//! plus idle pooled instances). Tool calls over the cap are refused at once
//! with [`CallError::Busy`]; channel traffic waits for a place (queued, not
//! dropped). Because the registry only loads a plugin whose cap still fits
//! in the engine's instance pool (see [`ENGINE_INSTANCES`]), no plugin can
//! exhaust the pool for the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::instance::CallError;

/// Component instances the engine's pooling allocator provides in total,
/// unless `[sandbox] engine_instances` says otherwise.
pub const ENGINE_INSTANCES: usize = 1000;
/// Instances kept outside every plugin's share: load-time smoke tests and
/// slack for versions being swapped.
pub const ENGINE_RESERVE: usize = 40;
/// Default cap on one plugin's instances.
pub const DEFAULT_MAX_INSTANCES: usize = 16;
/// What a refused caller is told to wait before retrying.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The admission gate of one plugin.
#[derive(Debug)]
pub struct Gate {
    plugin: Arc<str>,
    cap: usize,
    places: Arc<Semaphore>,
}

/// A place in a [`Gate`], held by a live instance and given back when the
/// instance is dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    /// A gate admitting `cap` instances of `plugin` (at least one).
    pub fn new(plugin: &str, cap: usize) -> Arc<Self> {
        let cap = cap.max(1);
        Arc::new(Gate {
            plugin: Arc::from(plugin),
            cap,
            places: Arc::new(Semaphore::new(cap)),
        })
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Instances admitted now.
    pub fn in_use(&self) -> usize {
        self.cap - self.places.available_permits()
    }

    fn busy(&self) -> CallError {
        CallError::Busy {
            plugin: self.plugin.to_string(),
            cap: self.cap,
            retry_after_ms: RETRY_AFTER.as_millis() as u64,
        }
    }

    /// A place now, or [`CallError::Busy`].
    pub fn try_admit(&self) -> Result<Admission, CallError> {
        match self.places.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admission { _permit: permit }),
            Err(_) => {
                tracing::warn!(plugin = %self.plugin, cap = self.cap, "plugin busy: instance cap reached, call refused");
                Err(self.busy())
            }
        }
    }

    /// A place, waiting in line for one (first come, first served); with
    /// `max_wait`, [`CallError::Busy`] once that has passed.
    pub async fn admit(&self, max_wait: Option<Duration>) -> Result<Admission, CallError> {
        let acquire = self.places.clone().acquire_owned();
        let permit = match max_wait {
            None => acquire.await,
            Some(wait) => match tokio::time::timeout(wait, acquire).await {
                Ok(p) => p,
                Err(_) => {
                    tracing::warn!(plugin = %self.plugin, cap = self.cap, "plugin busy: no instance freed in time");
                    return Err(self.busy());
                }
            },
        };
        // The semaphore is never closed.
        permit
            .map(|p| Admission { _permit: p })
            .map_err(|_| self.busy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_and_queues() {
        let gate = Gate::new("p", 2);
        let a = gate.try_admit().unwrap();
        let _b = gate.try_admit().unwrap();
        assert!(matches!(
            gate.try_admit(),
            Err(CallError::Busy { cap: 2, .. })
        ));
        assert_eq!(gate.in_use(), 2);
        let waiter = {
            let gate = Gate::new("q", 1);
            let held = gate.try_admit().unwrap();
            let g2 = gate.clone();
            let t = tokio::spawn(async move { g2.admit(None).await.is_ok() });
            drop(held);
            t
        };
        assert!(waiter.await.unwrap());
        drop(a);
        assert!(gate.try_admit().is_ok());
    }
}
