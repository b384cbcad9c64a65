//! The message: one unit of work on the bus (`agent_messages`), its lifecycle and its naming rules.
//!
//! Invariant: a message moves only along `queued → claimed → done | queued (retry) | failed`,
//! `queued → failed` (cancel) and `failed → queued` (requeue from the dead-letter queue).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::MessageId;

/// Default tenant when a caller names none.
pub const DEFAULT_TENANT: &str = "default";
/// Largest accepted `payload`, in bytes of JSON, unless the store is configured otherwise.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest `result` stored inline, in bytes of JSON; larger results go to an artifact (`result_url`).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest accepted name (tenant, service, role, shard, project), in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Largest accepted `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: i32 = 100;
/// Accepted priority range (higher is claimed first).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// A message as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Message {
    /// UUIDv7.
    pub id: MessageId,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Owning tenant.
    pub tenant: String,
    /// Optional project within the tenant.
    pub project_id: Option<String>,
    /// Service that handles it (`mcp`, `agent`, …).
    pub service: String,
    /// Role within the service (`gateway`, `research`, …).
    pub role: String,
    /// Routing shard (`gateway`, `browser-01`, or empty for any).
    pub shard: String,
    /// What to do (`mcp_call`, `research`, …).
    pub intent: Intent,
    /// Intent-specific JSON.
    pub payload: Value,
    /// 32 hex digits, shared by every message and event of one trace.
    pub trace_id: String,
    /// The message that caused this one.
    pub parent_id: Option<MessageId>,
    /// Unique per tenant when set.
    pub idempotency_key: Option<String>,
    /// Higher is claimed first.
    pub priority: i32,
    /// Lifecycle state.
    pub status: MessageStatus,
    /// Claims so far in the current attempt series.
    pub attempts: i32,
    /// Attempts allowed before dead-lettering.
    pub max_attempts: i32,
    /// Not to be claimed before this instant.
    pub run_at: DateTime<Utc>,
    /// Agent holding the current claim.
    pub claimed_by: Option<String>,
    /// When the current claim was taken.
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the current claim expires unless extended.
    pub lease_until: Option<DateTime<Utc>>,
    /// When it reached `done` or `failed`.
    pub done_at: Option<DateTime<Utc>>,
    /// The last failure, as said by the handler.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Bounded inline result.
    pub result: Option<Value>,
    /// Artifact link for a result too large to keep inline.
    pub result_url: Option<String>,
}

/// Lifecycle state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting to be claimed (possibly not before `run_at`).
    Queued,
    /// Held by a worker under a lease.
    Claimed,
    /// Finished successfully.
    Done,
    /// Finished without success (dead-lettered or cancelled).
    Failed,
}

impl MessageStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [MessageStatus; 4] = [Self::Queued, Self::Claimed, Self::Done, Self::Failed];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == value)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: MessageStatus) -> bool {
        use MessageStatus::*;
        matches!(
            (self, next),
            (Queued, Claimed)
                | (Queued, Failed)
                | (Claimed, Done)
                | (Claimed, Queued)
                | (Claimed, Failed)
                | (Failed, Queued)
        )
    }

    /// Whether no further work happens unless an operator requeues.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message asks for: lower-case ASCII letters, digits and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Intent(String);

/// Well-known intents.
impl Intent {
    /// An MCP tool call through the gateway.
    pub const MCP_CALL: &'static str = "mcp_call";
    /// Retrieval and an answer with citations.
    pub const RESEARCH: &'static str = "research";
    /// Ingest documents into the knowledge layer.
    pub const INDEX: &'static str = "index";
    /// Collect graph evidence.
    pub const GRAPHRAG: &'static str = "graphrag";
    /// Produce and check code.
    pub const CODEGEN: &'static str = "codegen";
    /// Run an allowlisted command.
    pub const EXECUTE: &'static str = "execute";
    /// A whole goal for the orchestrator.
    pub const GOAL: &'static str = "goal";
    /// A message that does nothing (benchmarks and tests).
    pub const NOOP: &'static str = "noop";

    /// Validates and wraps an intent name.
    pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
        let value = value.into();
        validate_intent(&value)?;
        Ok(Self(value))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event type for a phase of this intent: `<intent>_<phase>`.
    pub fn event_type(&self, phase: Phase) -> String {
        event_type(&self.0, phase)
    }
}

impl TryFrom<String> for Intent {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Intent> for String {
    fn from(intent: Intent) -> Self {
        intent.0
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lifecycle phase; with an intent it names an event: `<intent>_<phase>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Enqueued.
    Scheduled,
    /// Taken by a worker.
    Claimed,
    /// Finished successfully.
    Succeeded,
    /// Finished without success, or one attempt failed.
    Failed,
    /// Failed and queued again for a later attempt.
    RetryScheduled,
    /// Taken out of the dead-letter queue by an operator.
    Requeued,
    /// Moved to the dead-letter queue after its last attempt.
    DeadLettered,
}

impl Phase {
    /// Every phase. `RetryScheduled` precedes `Scheduled` so suffix matching finds the longer one first.
    pub const ALL: [Phase; 7] = [
        Self::RetryScheduled,
        Self::Scheduled,
        Self::Claimed,
        Self::Succeeded,
        Self::Failed,
        Self::Requeued,
        Self::DeadLettered,
    ];

    /// The spelling used in event types.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Claimed => "claimed",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RetryScheduled => "retry_scheduled",
            Self::Requeued => "requeued",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// `<intent>_<phase>`, the rule every lifecycle event type follows.
pub fn event_type(intent: &str, phase: Phase) -> String {
    let phase = phase.as_str();
    let mut out = String::with_capacity(intent.len() + 1 + phase.len());
    out.push_str(intent);
    out.push('_');
    out.push_str(phase);
    out
}

/// Splits a lifecycle event type into its intent and phase; `None` for other event types.
pub fn split_event_type(event_type: &str) -> Option<(&str, Phase)> {
    Phase::ALL.into_iter().find_map(|phase| {
        let intent = event_type.strip_suffix(phase.as_str())?.strip_suffix('_')?;
        validate_intent(intent).ok().map(|()| (intent, phase))
    })
}

/// How a piece of work failed; decides retry and whether a circuit breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection failed or dropped.
    Transport,
    /// No answer within the timeout.
    Timeout,
    /// The upstream asked us to slow down.
    RateLimited,
    /// The upstream broke the protocol (bad frame, unknown method).
    Protocol,
    /// The tool ran and reported an error (`isError: true`).
    ToolError,
    /// The request itself is wrong; retrying cannot help.
    InvalidInput,
    /// A bug or unexpected condition in COGO.
    Internal,
    /// The lease ran out before the worker finished (counted as an attempt).
    LeaseExpired,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 8] = [
        Self::Transport,
        Self::Timeout,
        Self::RateLimited,
        Self::Protocol,
        Self::ToolError,
        Self::InvalidInput,
        Self::Internal,
        Self::LeaseExpired,
    ];

    /// The stored spelling (also the `kind` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Protocol => "protocol",
            Self::ToolError => "tool_error",
            Self::InvalidInput => "invalid_input",
            Self::Internal => "internal",
            Self::LeaseExpired => "lease_expired",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// Whether the failure says something about the upstream's health (a breaker counts it).
    pub fn counts_for_breaker(self) -> bool {
        matches!(self, Self::Transport | Self::Timeout | Self::RateLimited | Self::LeaseExpired)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to put a message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Owning tenant (default `default`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Optional project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Handling service.
    pub service: String,
    /// Handling role.
    pub role: String,
    /// Routing shard (empty: any).
    #[serde(default)]
    pub shard: String,
    /// What to do.
    pub intent: Intent,
    /// Intent-specific JSON.
    #[serde(default)]
    pub payload: Value,
    /// Trace to join; a new one is started when absent.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Causing message.
    #[serde(default)]
    pub parent_id: Option<MessageId>,
    /// Deduplication key, unique per tenant.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Higher is claimed first.
    #[serde(default)]
    pub priority: i32,
    /// Attempts before dead-lettering (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// Not before this instant (default: now).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
}

fn default_tenant() -> String {
    DEFAULT_TENANT.to_owned()
}

fn default_max_attempts() -> i32 {
    3
}

impl NewMessage {
    /// A message for `service/role` with the defaults for everything else.
    pub fn new(service: impl Into<String>, role: impl Into<String>, intent: Intent, payload: Value) -> Self {
        Self {
            tenant: default_tenant(),
            project_id: None,
            service: service.into(),
            role: role.into(),
            shard: String::new(),
            intent,
            payload,
            trace_id: None,
            parent_id: None,
            idempotency_key: None,
            priority: 0,
            max_attempts: default_max_attempts(),
            run_at: None,
        }
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Sets the shard.
    pub fn with_shard(mut self, shard: impl Into<String>) -> Self {
        self.shard = shard.into();
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the trace id.
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the attempt budget.
    pub fn with_max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the earliest claim time.
    pub fn with_run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// Sets the parent message.
    pub fn with_parent(mut self, parent: MessageId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Sets the project.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project_id = Some(project.into());
        self
    }

    /// The stored form of this message right after it was enqueued as `id` at `now` in trace
    /// `trace_id`: queued, no attempt yet, claimable from `run_at` (default `now`).
    pub fn to_queued(&self, id: MessageId, now: DateTime<Utc>, trace_id: String) -> Message {
        Message {
            id,
            created_at: now,
            tenant: self.tenant.clone(),
            project_id: self.project_id.clone(),
            service: self.service.clone(),
            role: self.role.clone(),
            shard: self.shard.clone(),
            intent: self.intent.clone(),
            payload: self.payload.clone(),
            trace_id,
            parent_id: self.parent_id,
            idempotency_key: self.idempotency_key.clone(),
            priority: self.priority,
            status: MessageStatus::Queued,
            attempts: 0,
            max_attempts: self.max_attempts,
            run_at: self.run_at.unwrap_or(now),
            claimed_by: None,
            claimed_at: None,
            lease_until: None,
            done_at: None,
            last_error: None,
            last_error_at: None,
            result: None,
            result_url: None,
        }
    }

    /// Checks every field against the bus's rules; the error names the field and the problem.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<(), InvalidMessage> {
        let name = |field: &'static str, value: &str, allow_empty: bool| {
            validate_name(value, allow_empty).map_err(|problem| InvalidMessage { field, problem: problem.to_string() })
        };
        name("tenant", &self.tenant, false)?;
        name("service", &self.service, false)?;
        name("role", &self.role, false)?;
        name("shard", &self.shard, true)?;
        if let Some(project) = &self.project_id {
            name("project_id", project, false)?;
        }
        if let Some(trace) = &self.trace_id
            && !crate::trace::is_valid_trace_id(trace)
        {
            return Err(InvalidMessage {
                field: "trace_id",
                problem: "must be 32 lower-case hex digits, not all zero".into(),
            });
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(InvalidMessage {
                field: "idempotency_key",
                problem: format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}", key.len()),
            });
        }
        if !PRIORITY_RANGE.contains(&self.priority) {
            return Err(InvalidMessage {
                field: "priority",
                problem: format!(
                    "must be within {}..={}, got {}",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end(),
                    self.priority
                ),
            });
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(InvalidMessage {
                field: "max_attempts",
                problem: format!("must be within 1..={MAX_ATTEMPTS_LIMIT}, got {}", self.max_attempts),
            });
        }
        let size = payload_size(&self.payload);
        if size > max_payload_bytes {
            return Err(InvalidMessage {
                field: "payload",
                problem: format!("is {size} bytes of JSON, larger than the limit of {max_payload_bytes}"),
            });
        }
        Ok(())
    }
}

/// Size of a JSON value once serialized, in bytes.
pub fn payload_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// A message that breaks the bus's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message: {field} {problem}")]
pub struct InvalidMessage {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty where a value is required.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("must be at most {max} bytes, got {len}")]
    TooLong {
        /// The limit.
        max: usize,
        /// The actual length.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("contains {found:?}; allowed are {allowed}")]
    BadChar {
        /// The first bad character.
        found: char,
        /// A description of the allowed set.
        allowed: &'static str,
    },
}

/// Names (tenant, service, role, shard, project): ASCII letters, digits, `-`, `_`, `.`, at most 128 bytes.
pub fn validate_name(value: &str, allow_empty: bool) -> Result<(), NameError> {
    if value.is_empty() {
        return if allow_empty { Ok(()) } else { Err(NameError::Empty) };
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { max: MAX_NAME_LEN, len: value.len() });
    }
    if let Some(found) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(NameError::BadChar { found, allowed: "ASCII letters, digits, '-', '_' and '.'" });
    }
    Ok(())
}

fn validate_intent(value: &str) -> Result<(), NameError> {
    const ALLOWED: &str = "lower-case ASCII letters, digits and '_', starting with a letter";
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > 64 {
        return Err(NameError::TooLong { max: 64, len: value.len() });
    }
    let mut chars = value.chars();
    if let Some(first) = chars.next().filter(|c| !c.is_ascii_lowercase()) {
        return Err(NameError::BadChar { found: first, allowed: ALLOWED });
    }
    if let Some(found) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        return Err(NameError::BadChar { found, allowed: ALLOWED });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
