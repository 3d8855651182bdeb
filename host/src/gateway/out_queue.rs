//! A connection's outgoing queue: what the hub and the request handlers
//! hand to the connection's writer, in order.
//!
//! A `Mutex<VecDeque>` and a [`Notify`] rather than a tokio `mpsc`
//! channel: an unbounded channel allocates its first block of 32 slots
//! (about 2 KiB for [`Outgoing`]) when created and keeps it for the
//! channel's life, while this queue holds no allocation while empty (it is
//! freed when the writer has taken the last item). Budgets (bytes queued,
//! slow consumers) are the hub's; this type only orders and wakes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::hub::Outgoing;

/// The queue, held by its connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outgoing>,
    /// The receiver is gone: nothing more is accepted.
    closed: bool,
}

impl OutQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `item`; handed back if the receiver is gone.
    pub fn push(&self, item: Outgoing) -> Result<(), Outgoing> {
        {
            let mut s = self.state();
            if s.closed {
                return Err(item);
            }
            s.items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Outgoing> {
        let mut s = self.state();
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > 0 {
            // Idle connections hold no queue storage.
            s.items = VecDeque::new();
        }
        item
    }
}

/// The writer's end of an [`OutQueue`]; dropping it closes the queue.
#[derive(Debug)]
pub struct Receiver<T: AsRef<OutQueue>> {
    owner: Arc<T>,
}

impl<T: AsRef<OutQueue>> Receiver<T> {
    /// The receiving end of the queue `owner` holds.
    pub fn new(owner: Arc<T>) -> Self {
        Receiver { owner }
    }

    fn queue(&self) -> &OutQueue {
        (*self.owner).as_ref()
    }

    /// The next item, waiting for one (single consumer).
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            // `notify_one` stores a permit when nobody waits, so an item
            // pushed between `pop` and `notified` is not missed.
            if let Some(item) = self.queue().pop() {
                return Some(item);
            }
            self.queue().ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.queue().pop()
    }
}

impl<T: AsRef<OutQueue>> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.queue().state();
        s.closed = true;
        s.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owner(OutQueue);
    impl AsRef<OutQueue> for Owner {
        fn as_ref(&self) -> &OutQueue {
            &self.0
        }
    }

    #[tokio::test]
    async fn delivers_in_order_wakes_and_closes() {
        let owner = Arc::new(Owner(OutQueue::default()));
        let mut rx = Receiver::new(owner.clone());
        assert!(rx.try_recv().is_none());
        let waiter = tokio::spawn(async move {
            let a = rx.recv().await;
            let b = rx.recv().await;
            (a, b, rx)
        });
        owner.0.push(Outgoing::Response("a".into())).unwrap();
        owner.0.push(Outgoing::Response("b".into())).unwrap();
        let (a, b, rx) = waiter.await.unwrap();
        assert!(matches!(a, Some(Outgoing::Response(t)) if t == "a"));
        assert!(matches!(b, Some(Outgoing::Response(t)) if t == "b"));
        assert_eq!(owner.0.state().items.capacity(), 0, "freed when empty");
        drop(rx);
        assert!(owner.0.push(Outgoing::Response("c".into())).is_err());
    }
}
