//! Timers of a socket channel's account: each fires `TIMER` events (in the
//! account's event order) after its delay and then every repeat interval,
//! until cancelled, replaced or the account ends. Dropping a [`Timer`]
//! cancels it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{AccountSockets, Event};
use crate::plugins::bindings::WebhookRequest;

/// One timer; dropping it cancels it.
pub(super) struct Timer {
    pub(super) id: u64,
    task: Option<JoinHandle<()>>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Timer {
    /// Fire `TIMER` `name` for `account` after `delay`, then every `repeat`.
    pub(super) fn spawn(
        account: Arc<AccountSockets>,
        name: String,
        id: u64,
        generation: u64,
        delay: Duration,
        repeat: Option<Duration>,
    ) -> Timer {
        let weak = Arc::downgrade(&account);
        drop(account);
        Timer {
            id,
            task: Some(tokio::spawn(run(weak, name, id, generation, delay, repeat))),
        }
    }

    /// Forget the timer without stopping its task (a one-shot timer
    /// forgetting itself as it fires).
    pub(super) fn detach(mut self) {
        self.task = None;
    }
}

async fn run(
    account: Weak<AccountSockets>,
    name: String,
    id: u64,
    generation: u64,
    delay: Duration,
    repeat: Option<Duration>,
) {
    tokio::time::sleep(delay).await;
    loop {
        let Some(acct) = account.upgrade() else {
            return;
        };
        let request = WebhookRequest {
            method: "TIMER".into(),
            path: name.clone(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            verified: Some(super::VERIFIED.to_string()),
        };
        // A one-shot timer stays set until its firing is delivered (then
        // the delivery task forgets it), so cancelling it in between drops
        // the firing.
        acct.queue(Event {
            generation,
            timer: Some((name.clone(), id, repeat.is_none())),
            request: Some(Box::new(request)),
        })
        .await;
        drop(acct);
        match repeat {
            None => return,
            Some(every) => tokio::time::sleep(every).await,
        }
    }
}
