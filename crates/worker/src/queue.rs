//! Where a runtime's work comes from: the store itself, or a server that does the store work on
//! the worker's behalf (an edge worker's connection).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use model::{Message, MessageId};
use store::{ClaimRequest, Completion, Failure, Outcome, Store};

/// A queue operation that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    /// What went wrong.
    pub message: String,
    /// Worth retrying: the database or the connection to the server may come back.
    pub transient: bool,
}

impl QueueError {
    /// A failure that a retry may get past.
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true }
    }

    /// A failure that a retry will meet again.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }
}

impl From<store::Error> for QueueError {
    fn from(err: store::Error) -> Self {
        // a database error on a write is retried too: a dropped connection must not lose a result
        let transient = err.is_transient() || matches!(err, store::Error::Database { .. });
        Self { message: err.to_string(), transient }
    }
}

/// The queue operations a runtime needs. Every result goes through the lease check of the store
/// behind it, so an implementation cannot record a completion twice.
pub trait Queue: Send + Sync + 'static {
    /// Claims up to `request.limit` messages under a lease.
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Message>, QueueError>>;

    /// Extends the leases `agent_id` holds; returns the ids still held.
    fn extend_leases<'a>(
        &'a self,
        agent_id: &'a str,
        ids: &'a [MessageId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>>;

    /// Records completions (one outcome each, in order).
    fn complete<'a>(
        &'a self,
        agent_id: &'a str,
        completions: Vec<Completion>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>>;

    /// Records failed attempts (one outcome each, in order).
    fn fail<'a>(&'a self, agent_id: &'a str, failures: Vec<Failure>)
    -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>>;

    /// Gives claimed messages back without counting an attempt; returns the ids released.
    fn release<'a>(
        &'a self,
        agent_id: &'a str,
        ids: &'a [MessageId],
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>>;

    /// Now, by the clock the queue's time rules use.
    fn now(&self) -> DateTime<Utc>;

    /// Notified when `service/role` may have new work.
    fn wakeup(&self, service: &str, role: &str) -> Arc<Notify>;

    /// Outcome writes worth having in flight at once.
    fn concurrent_writes(&self) -> usize;
}

/// Outcome writes in flight at once on PostgreSQL (SQLite has one writer: one at a time).
const POSTGRES_CONCURRENT_WRITES: usize = 4;

impl Queue for Store {
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Message>, QueueError>> {
        Box::pin(async move { Ok(Store::claim(self, request).await?) })
    }

    fn extend_leases<'a>(
        &'a self,
        agent_id: &'a str,
        ids: &'a [MessageId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>> {
        Box::pin(async move { Ok(Store::extend_leases(self, agent_id, ids, lease).await?) })
    }

    fn complete<'a>(
        &'a self,
        agent_id: &'a str,
        completions: Vec<Completion>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>> {
        Box::pin(async move { Ok(Store::complete(self, agent_id, completions).await?) })
    }

    fn fail<'a>(
        &'a self,
        agent_id: &'a str,
        failures: Vec<Failure>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>> {
        Box::pin(async move { Ok(Store::fail(self, agent_id, failures).await?) })
    }

    fn release<'a>(
        &'a self,
        agent_id: &'a str,
        ids: &'a [MessageId],
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>> {
        Box::pin(async move { Ok(Store::release(self, agent_id, ids).await?) })
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    fn wakeup(&self, service: &str, role: &str) -> Arc<Notify> {
        self.wakeups().queue(service, role)
    }

    fn concurrent_writes(&self) -> usize {
        match self.kind() {
            store::BackendKind::Sqlite => 1,
            store::BackendKind::Postgres => POSTGRES_CONCURRENT_WRITES,
        }
    }
}
