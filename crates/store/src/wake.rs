//! Wake-ups: workers wait here instead of polling; enqueues (local or, on PostgreSQL, from any
//! process through LISTEN/NOTIFY) wake the waiters of their queue.
//!
//! Invariant: a waiter that registered before checking the queue never misses a wake-up that
//! happens after its check (callers `enable` the `Notified` future first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type QueueMap = HashMap<(String, String), Arc<Notify>>;

/// The wake-up hub of one store.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    queues: Arc<Mutex<QueueMap>>,
    events: Arc<Notify>,
}

impl Wakeups {
    /// The notifier of the `service/role` queue.
    pub fn queue(&self, service: &str, role: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.entry((service.to_owned(), role.to_owned())).or_default().clone()
    }

    /// Wakes every waiter of `service/role`.
    pub fn notify_queue(&self, service: &str, role: &str) {
        let queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(notify) = queues.get(&(service.to_owned(), role.to_owned())) {
            notify.notify_waiters();
        }
    }

    /// Wakes every queue waiter (e.g. after a reconnect, when notifications may have been lost).
    pub fn notify_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.values().for_each(|notify| notify.notify_waiters());
        self.events.notify_waiters();
    }

    /// The notifier of "new events were written".
    pub fn events(&self) -> Arc<Notify> {
        self.events.clone()
    }

    /// Parses a `cogo_bus` notification payload (`service/role,service/role`) and wakes those queues.
    pub fn notify_from_payload(&self, payload: &str) {
        for queue in payload.split(',') {
            if let Some((service, role)) = queue.split_once('/') {
                self.notify_queue(service, role);
            }
        }
        self.events.notify_waiters();
    }
}
