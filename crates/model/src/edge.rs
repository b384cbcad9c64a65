//! The edge worker protocol: JSON text frames over one WebSocket (`GET /api/edge/connect`), opened
//! by the worker, so a worker behind NAT or a firewall needs only outbound HTTPS.
//!
//! The worker says [`ClientFrame::Hello`] first and the server answers [`ServerFrame::Welcome`]
//! with the agent id it acts under (`edge:<token id>:<name>`). Then the worker sends requests,
//! each with its own `id`, and the server answers each with one frame carrying that `id`, in any
//! order. The server pushes [`ServerFrame::Wake`] when a queue the worker serves may have work.
//! Every store write is done by the server under the connection's agent id and lease checks, so a
//! result the worker sends twice (after a reconnect) is recorded once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorKind, Message, MessageId};

/// Protocol version this build speaks (2 added [`ClientFrame::Circuit`]).
pub const PROTOCOL_VERSION: u32 = 2;
/// Oldest version a server still accepts (a version-1 worker just never records circuits), so
/// servers can be upgraded before their edge workers.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Longest circuit breaker key a worker may record.
pub const MAX_BREAKER_KEY: usize = 256;
/// Largest frame either side accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Most messages one claim may take.
pub const MAX_CLAIM: u32 = 256;
/// Most ids, completions or failures in one request.
pub const MAX_ITEMS: usize = 4096;
/// Longest lease a worker may ask for, in milliseconds.
pub const MAX_LEASE_MS: u64 = 3_600_000;
/// Shortest lease a worker may ask for, in milliseconds.
pub const MIN_LEASE_MS: u64 = 1_000;
/// Most queues one connection may serve.
pub const MAX_QUEUES: usize = 32;
/// Path of the WebSocket route.
pub const CONNECT_PATH: &str = "/api/edge/connect";

/// A queue a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRef {
    /// Service (`bus`, `mcp`, …).
    pub service: String,
    /// Role (`noop`, `gateway`, …); the edge token must name it.
    pub role: String,
    /// Shards served besides the unsharded queue.
    #[serde(default)]
    pub shards: Vec<String>,
}

/// A successful finish, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCompletion {
    /// The message.
    pub id: MessageId,
    /// Bounded inline result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Artifact link for a large result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// Fields for the `<intent>_succeeded` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// What happens after a failed attempt, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireAction {
    /// Back to the queue after this many milliseconds.
    RetryAfterMs(u64),
    /// To the dead-letter queue, for this reason.
    DeadLetter(String),
}

/// A failed attempt, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFailure {
    /// The message.
    pub id: MessageId,
    /// How it failed.
    pub kind: ErrorKind,
    /// What the handler said.
    pub error: String,
    /// Retry or dead-letter.
    pub action: WireAction,
    /// Fields for the `<intent>_failed` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// What became of one completion or failure, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum WireOutcome {
    /// Recorded as done.
    Done,
    /// Back in the queue, claimable at `run_at`.
    Retrying {
        /// When it becomes claimable.
        run_at: DateTime<Utc>,
    },
    /// Moved to the dead-letter queue.
    DeadLettered,
    /// The worker no longer held the lease: nothing was recorded.
    LeaseLost,
}

/// A frame from the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first frame: who the worker is and what it serves.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's name, unique per token (1 to 64 of `A-Z a-z 0-9 . _ -`).
        name: String,
        /// Its host name, for presence.
        host: String,
        /// Its COGO version.
        software: String,
        /// The queues it serves.
        queues: Vec<QueueRef>,
    },
    /// Claims up to `limit` messages of a queue named in the hello.
    Claim {
        /// Request id.
        id: u64,
        /// Service.
        service: String,
        /// Role.
        role: String,
        /// Shards besides the unsharded queue.
        #[serde(default)]
        shards: Vec<String>,
        /// Most messages (at most [`MAX_CLAIM`]).
        limit: u32,
        /// Lease in milliseconds.
        lease_ms: u64,
    },
    /// Extends the leases of messages the worker holds.
    Extend {
        /// Request id.
        id: u64,
        /// The messages.
        ids: Vec<MessageId>,
        /// New lease in milliseconds from now.
        lease_ms: u64,
    },
    /// Records completions.
    Complete {
        /// Request id.
        id: u64,
        /// The completions.
        completions: Vec<WireCompletion>,
    },
    /// Records failed attempts.
    Fail {
        /// Request id.
        id: u64,
        /// The failures.
        failures: Vec<WireFailure>,
    },
    /// Gives messages back without counting an attempt.
    Release {
        /// Request id.
        id: u64,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Records a transition of one of the worker's circuit breakers (its event and the circuit's
    /// state under the worker's agent id), as a process with a store does itself.
    Circuit {
        /// Request id.
        id: u64,
        /// The breaker key (at most [`MAX_BREAKER_KEY`] printable characters).
        key: String,
        /// What happened.
        transition: crate::breaker::Transition,
        /// For an opening: when probing may start, on the server's clock.
        #[serde(default)]
        open_until: Option<DateTime<Utc>>,
    },
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerFrame {
    /// The answer to a good hello.
    Welcome {
        /// The agent id the server claims and completes under.
        agent_id: String,
        /// The server's clock when it answered.
        now: DateTime<Utc>,
    },
    /// Claimed messages.
    Claimed {
        /// Request id.
        id: u64,
        /// The messages, leased to the worker.
        messages: Vec<Message>,
    },
    /// Ids still held (extend) or given back (release).
    Ids {
        /// Request id.
        id: u64,
        /// The ids.
        ids: Vec<MessageId>,
    },
    /// One outcome per completion or failure, in order.
    Outcomes {
        /// Request id.
        id: u64,
        /// The outcomes.
        outcomes: Vec<WireOutcome>,
    },
    /// A request (or, without `id`, the connection) failed.
    Error {
        /// Request id, when a request failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What went wrong and what to do.
        message: String,
        /// Worth retrying (the database is away), as opposed to a refused request.
        transient: bool,
    },
    /// A request that records something was done (circuit).
    Recorded {
        /// Request id.
        id: u64,
    },
    /// A queue the worker serves may have new work.
    Wake {
        /// Service.
        service: String,
        /// Role.
        role: String,
    },
}

/// Whether `name` is a usable edge worker name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `key` is a circuit breaker key a worker may record: 1 to [`MAX_BREAKER_KEY`] printable
/// ASCII characters, no spaces.
pub fn valid_breaker_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_BREAKER_KEY && key.chars().all(|c| c.is_ascii_graphic())
}

/// The agent id of worker `name` connected with the edge token `token_id`.
pub fn agent_id(token_id: &str, name: &str) -> String {
    format!("edge:{token_id}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_unknown_fields_are_refused() {
        let hello = ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            name: "pc-1".into(),
            host: "pc".into(),
            software: "0.1.0".into(),
            queues: vec![QueueRef { service: "bus".into(), role: "noop".into(), shards: vec![] }],
        };
        let text = serde_json::to_string(&hello).expect("encodes");
        assert!(text.starts_with(r#"{"type":"hello""#), "{text}");
        assert_eq!(serde_json::from_str::<ClientFrame>(&text).expect("decodes"), hello);
        let failure = ClientFrame::Fail {
            id: 3,
            failures: vec![WireFailure {
                id: MessageId(crate::new_id()),
                kind: ErrorKind::Timeout,
                error: "slow".into(),
                action: WireAction::RetryAfterMs(250),
                detail: None,
            }],
        };
        let text = serde_json::to_string(&failure).expect("encodes");
        assert_eq!(serde_json::from_str::<ClientFrame>(&text).expect("decodes"), failure);
        let outcomes = ServerFrame::Outcomes { id: 3, outcomes: vec![WireOutcome::Done, WireOutcome::LeaseLost] };
        let text = serde_json::to_string(&outcomes).expect("encodes");
        assert!(text.contains(r#"{"outcome":"lease_lost"}"#), "{text}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).expect("decodes"), outcomes);
        for bad in [
            r#"{"type":"claim","id":1,"service":"bus","role":"noop","limit":1,"lease_ms":1000,"agent_id":"x"}"#,
            r#"{"type":"steal","id":1}"#,
            r#"{"type":"release","id":-1,"ids":[]}"#,
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad} was accepted");
        }
        assert!(valid_name("pc-1.local_2") && !valid_name("") && !valid_name("a b") && !valid_name(&"x".repeat(65)));
        assert_eq!(agent_id("0a1b", "pc-1"), "edge:0a1b:pc-1");
    }
}
