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
/// tests of the bus itself, which shape the work through the payload:
/// - `"sleep_ms": n` works for n ms first (at most 10 s);
/// - `"fail_attempts": n` fails the first n attempts as a transport error (retried);
/// - `"fail": "<kind>"` fails every attempt with that error kind (`invalid_input` is not retried).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

/// Longest `sleep_ms` the noop role honours.
const NOOP_MAX_SLEEP_MS: u64 = 10_000;

impl Handler for NoopHandler {
    fn handle(&self, message: Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let payload = &message.payload;
        let sleep_ms = payload.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0).min(NOOP_MAX_SLEEP_MS);
        let fail_attempts = payload.get("fail_attempts").and_then(Value::as_i64).unwrap_or(0);
        let fail = payload.get("fail").map(|kind| {
            serde_json::from_value::<ErrorKind>(kind.clone()).map_err(|_| {
                HandlerError::new(ErrorKind::InvalidInput, format!("noop: fail {kind} is not an error kind"))
            })
        });
        let attempt = message.attempts;
        Box::pin(async move {
            if sleep_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
            }
            match fail {
                Some(Ok(kind)) => return Err(HandlerError::new(kind, "noop: failing as the payload asks")),
                Some(Err(bad)) => return Err(bad),
                None => {}
            }
            if i64::from(attempt) <= fail_attempts {
                return Err(HandlerError::new(
                    ErrorKind::Transport,
                    format!("noop: attempt {attempt} of the first {fail_attempts} fails as the payload asks"),
                ));
            }
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

#[cfg(test)]
mod noop_tests {
    use super::*;

    fn message(payload: Value, attempts: i32) -> Message {
        let intent = model::Intent::new("noop").expect("intent");
        let new = model::NewMessage::new("bus", "noop", intent, payload);
        let mut message = new.to_queued(model::MessageId(model::new_id()), chrono::Utc::now(), "trace".to_owned());
        message.attempts = attempts;
        message
    }

    #[tokio::test]
    async fn the_payload_shapes_the_noop_work() {
        let noop = NoopHandler;
        assert!(noop.handle(message(serde_json::json!({"n": 1}), 1)).await.is_ok());
        let first = noop.handle(message(serde_json::json!({"fail_attempts": 1}), 1)).await.expect_err("fails");
        assert_eq!(first.kind, ErrorKind::Transport);
        assert!(noop.handle(message(serde_json::json!({"fail_attempts": 1}), 2)).await.is_ok());
        let refused = noop.handle(message(serde_json::json!({"fail": "invalid_input"}), 5)).await.expect_err("fails");
        assert_eq!(refused.kind, ErrorKind::InvalidInput);
        let bad = noop.handle(message(serde_json::json!({"fail": "meltdown"}), 1)).await.expect_err("fails");
        assert!(bad.message.contains("meltdown") && bad.kind == ErrorKind::InvalidInput, "{bad}");
        assert!(noop.handle(message(serde_json::json!({"sleep_ms": 5}), 1)).await.is_ok());
    }
}
