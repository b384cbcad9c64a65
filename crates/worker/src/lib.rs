//! The worker runtime every role runs on: claim a batch, run handlers concurrently, keep their
//! leases alive, complete or fail them in batches, and stop gracefully.
//!
//! Invariants:
//! - a handler's outcome is recorded only through the store's lease check, so a completion is never
//!   recorded twice;
//! - on shutdown nothing new is claimed; in-flight work finishes within the deadline or is released
//!   back to the queue (not counted as an attempt);
//! - idle workers wait on wake-ups; polling happens only every `poll_interval`.

mod maintenance;
mod queue;
mod runtime;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use model::{ErrorKind, Message};

pub use maintenance::{Maintenance, MaintenanceConfig};
pub use queue::{Queue, QueueError};
pub use runtime::{Runtime, RuntimeConfig, RuntimeStats};

/// Resolves the retry policy that applies to a message.
pub type RetryResolver = Arc<dyn Fn(&Message) -> model::retry::RetryPolicy + Send + Sync>;

/// What a handler produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerOutput {
    /// Inline result (bounded by the store's limit).
    pub result: Option<Value>,
    /// Artifact link for a large result.
    pub result_url: Option<String>,
    /// Fields added to the `<intent>_succeeded` event (a JSON object), e.g. the tool and its latency.
    pub detail: Option<Value>,
}

/// A failed attempt, with the kind that decides retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct HandlerError {
    /// How it failed.
    pub kind: ErrorKind,
    /// What happened (stored as `last_error`: keep secrets out).
    pub message: String,
    /// Fields added to the `<intent>_failed` event (a JSON object).
    pub detail: Option<Value>,
    /// The earliest a retry is worth making (an open breaker's time until it lets a probe
    /// through): the retry waits at least this long, so attempts are not spent failing fast.
    pub retry_after: Option<std::time::Duration>,
}

impl HandlerError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), detail: None, retry_after: None }
    }

    /// The same failure, not worth retrying before `after`.
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The same failure with `detail` for its event.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// The work of one role.
pub trait Handler: Send + Sync + 'static {
    /// Handles one claimed message.
    fn handle(&self, message: Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>>;
}

/// The `noop` role: completes every message at once with `{"ok": true}`. Used by benchmarks and
/// smoke tests of the bus itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

impl Handler for NoopHandler {
    fn handle(&self, _message: Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        Box::pin(async {
            Ok(HandlerOutput { result: Some(serde_json::json!({"ok": true})), ..HandlerOutput::default() })
        })
    }
}

impl<F> Handler for F
where
    F: Fn(Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> + Send + Sync + 'static,
{
    fn handle(&self, message: Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        self(message)
    }
}

/// The retry policy key of a message: `mcp.call.<toolset>.<tool>` for MCP calls, `bus.<intent>` otherwise.
pub fn policy_key(message: &Message) -> String {
    if message.intent.as_str() == model::Intent::MCP_CALL {
        let toolset = message.payload.get("toolset").and_then(Value::as_str);
        let tool = message.payload.get("tool").and_then(Value::as_str);
        if let (Some(toolset), Some(tool)) = (toolset, tool) {
            return model::policy::mcp_call_key(toolset, tool);
        }
    }
    format!("bus.{}", message.intent)
}
