//! The store's request and answer types.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use model::{ErrorKind, Message, MessageId, MessageStatus};

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The stored message (the existing one for a duplicate idempotency key).
    pub message: Message,
    /// False when an existing message with the same idempotency key was returned.
    pub created: bool,
}

/// What a worker asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Service to serve.
    pub service: String,
    /// Role to serve.
    pub role: String,
    /// Shards to serve; `""` is the unsharded queue. Empty means `[""]`.
    pub shards: Vec<String>,
    /// The claiming process.
    pub agent_id: String,
    /// Most messages to take.
    pub limit: u32,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
}

impl ClaimRequest {
    /// A claim of up to `limit` messages of `service/role` on the unsharded queue.
    pub fn new(service: &str, role: &str, agent_id: &str, limit: u32, lease: Duration) -> Self {
        Self {
            service: service.to_owned(),
            role: role.to_owned(),
            shards: vec![String::new()],
            agent_id: agent_id.to_owned(),
            limit,
            lease,
        }
    }

    /// Serves these shards (and the unsharded queue).
    pub fn with_shards(mut self, shards: &[&str]) -> Self {
        self.shards = std::iter::once(String::new()).chain(shards.iter().map(|s| (*s).to_owned())).collect();
        self
    }

    pub(crate) fn shard_list(&self) -> Vec<String> {
        if self.shards.is_empty() { vec![String::new()] } else { self.shards.clone() }
    }
}

/// A successful finish.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The message.
    pub id: MessageId,
    /// Bounded inline result.
    pub result: Option<Value>,
    /// Artifact link for a large result.
    pub result_url: Option<String>,
    /// Fields the handler adds to the `<intent>_succeeded` event's payload (a JSON object).
    pub detail: Option<Value>,
}

impl Completion {
    /// A completion with an inline result.
    pub fn new(id: MessageId, result: Option<Value>) -> Self {
        Self { id, result, result_url: None, detail: None }
    }
}

/// What happens to a message after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum FailAction {
    /// Back to the queue, claimable after this delay.
    Retry {
        /// Delay before the next attempt.
        after: Duration,
    },
    /// To the dead-letter queue; the message ends `failed`.
    DeadLetter {
        /// Short reason (`max_attempts`, `not_retryable`, `deadline`).
        reason: String,
    },
}

impl FailAction {
    /// The action for a retry decision.
    pub fn from_decision(decision: model::retry::RetryDecision) -> Self {
        match decision {
            model::retry::RetryDecision::RetryAfter(after) => Self::Retry { after },
            model::retry::RetryDecision::GiveUp(reason) => Self::DeadLetter { reason: reason.as_str().to_owned() },
        }
    }
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The message.
    pub id: MessageId,
    /// How it failed.
    pub kind: ErrorKind,
    /// What the handler said (stored as `last_error`; keep secrets out).
    pub error: String,
    /// Retry or dead-letter.
    pub action: FailAction,
    /// Fields the handler adds to the `<intent>_failed` event's payload (a JSON object).
    pub detail: Option<Value>,
}

/// What became of one completion or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded as done.
    Done,
    /// Back in the queue for another attempt at this time.
    Retrying {
        /// When it becomes claimable.
        run_at: DateTime<Utc>,
    },
    /// Moved to the dead-letter queue.
    DeadLettered,
    /// The caller no longer held the lease: nothing was recorded.
    LeaseLost,
}

/// Filters for messages and dead letters; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Tenant.
    pub tenant: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Status.
    pub status: Option<MessageStatus>,
    /// Intent.
    pub intent: Option<String>,
    /// Trace.
    pub trace_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Filters for events; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Tenant.
    pub tenant: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// Message concerned.
    pub message_id: Option<MessageId>,
    /// Trace.
    pub trace_id: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// Largest page size.
pub const MAX_PAGE: u32 = 1000;

/// A page request: keyset pagination after a cursor returned by the previous page.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Items per page (1 to 1000; 0 means 100).
    pub limit: u32,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    pub(crate) fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(MAX_PAGE),
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, when there may be more.
    pub next: Option<String>,
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeadLetter {
    /// The message.
    pub message_id: MessageId,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// Tenant.
    pub tenant: String,
    /// Service.
    pub service: String,
    /// Role.
    pub role: String,
    /// Intent.
    pub intent: String,
    /// Why (`max_attempts`, `not_retryable`, `deadline`).
    pub reason: String,
    /// The last error.
    pub last_error: Option<String>,
    /// The message row as it was dead-lettered.
    pub original: Value,
    /// When an operator requeued it, if they did.
    pub requeued_at: Option<DateTime<Utc>>,
}

/// A breaker's state in one process.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CircuitState {
    /// Breaker key (`mcp.call.browser.get_title.0`).
    pub key: String,
    /// The process.
    pub agent_id: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// When probing may start, for an open breaker.
    pub open_until: Option<DateTime<Utc>>,
    /// When this was recorded.
    pub updated_at: DateTime<Utc>,
}

/// Live queue figures for one service and role.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct QueueStats {
    /// Service.
    pub service: String,
    /// Role.
    pub role: String,
    /// Queued and due now.
    pub ready: i64,
    /// Queued for later (`run_at` in the future).
    pub delayed: i64,
    /// Claimed by a worker.
    pub claimed: i64,
    /// Age of the oldest ready message, in ms.
    pub oldest_ready_age_ms: Option<i64>,
    /// Messages that finished done in the last minute (throughput).
    #[serde(default)]
    pub done_last_minute: i64,
    /// Messages that failed for good (dead-lettered) in the last minute.
    #[serde(default)]
    pub failed_last_minute: i64,
}

/// Messages of one service and role that finished since a time: done and failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Service.
    pub service: String,
    /// Role.
    pub role: String,
    /// Finished done.
    pub done: i64,
    /// Failed for good.
    pub failed: i64,
}

impl QueueStats {
    /// Adds the last minute's finished counts to the live figures; a queue that is empty now but
    /// finished work in that minute gets a row of its own. Keeps the order by service and role.
    pub fn with_throughput(mut stats: Vec<Self>, finished: Vec<Finished>) -> Vec<Self> {
        for f in finished {
            match stats.iter_mut().find(|q| q.service == f.service && q.role == f.role) {
                Some(q) => {
                    q.done_last_minute = f.done;
                    q.failed_last_minute = f.failed;
                }
                None => stats.push(Self {
                    service: f.service,
                    role: f.role,
                    ready: 0,
                    delayed: 0,
                    claimed: 0,
                    oldest_ready_age_ms: None,
                    done_last_minute: f.done,
                    failed_last_minute: f.failed,
                }),
            }
        }
        stats.sort_by(|a, b| (&a.service, &a.role).cmp(&(&b.service, &b.role)));
        stats
    }
}

/// One MCP call attempt as its `mcp_call_succeeded|failed` event recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCallRecord {
    /// `<toolset>.<tool>`.
    pub tool: String,
    /// The attempt failed (an error or a tool error).
    pub failed: bool,
    /// Its error kind, when it failed.
    pub error_kind: Option<String>,
    /// Its latency.
    pub latency_ms: Option<f64>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// Its event's `seq`.
    pub seq: i64,
}

/// MCP call figures of one tool or of all: calls, failures, latency percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpFigures {
    /// Attempts recorded.
    pub calls: u64,
    /// Attempts that failed.
    pub fails: u64,
    /// Median latency (ms).
    pub p50: Option<f64>,
    /// 95th percentile latency (ms).
    pub p95: Option<f64>,
    /// Failures by error kind.
    pub fails_by_kind: BTreeMap<String, u64>,
}

/// The MCP part of the metrics summary, computed from the store's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct McpSummary {
    /// All tools together.
    #[serde(flatten)]
    pub total: McpFigures,
    /// By `<toolset>.<tool>`.
    pub detail: BTreeMap<String, McpFigures>,
    /// Start of the window the figures cover.
    pub since: DateTime<Utc>,
    /// Records were left out because the window held more than the limit.
    pub truncated: bool,
}

/// The most MCP call events one summary reads.
pub const MCP_SUMMARY_MAX_EVENTS: i64 = 200_000;

fn figures(records: &[&McpCallRecord]) -> McpFigures {
    let mut latencies: Vec<f64> = records.iter().filter_map(|r| r.latency_ms).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pick = |p: f64| {
        (!latencies.is_empty()).then(|| {
            let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            (latencies[index.min(latencies.len() - 1)] * 1000.0).round() / 1000.0
        })
    };
    let mut fails_by_kind = BTreeMap::new();
    for record in records.iter().filter(|r| r.failed) {
        *fails_by_kind.entry(record.error_kind.clone().unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
    }
    McpFigures {
        calls: records.len() as u64,
        fails: records.iter().filter(|r| r.failed).count() as u64,
        p50: pick(0.5),
        p95: pick(0.95),
        fails_by_kind,
    }
}

impl McpSummary {
    /// Figures over `records`, overall and per tool.
    pub fn from_records(records: &[McpCallRecord], since: DateTime<Utc>) -> Self {
        let all: Vec<&McpCallRecord> = records.iter().collect();
        let mut by_tool: BTreeMap<&str, Vec<&McpCallRecord>> = BTreeMap::new();
        for record in records {
            by_tool.entry(record.tool.as_str()).or_default().push(record);
        }
        Self {
            total: figures(&all),
            detail: by_tool.into_iter().map(|(tool, rs)| (tool.to_owned(), figures(&rs))).collect(),
            since,
            truncated: all.len() as i64 >= MCP_SUMMARY_MAX_EVENTS,
        }
    }
}

/// MCP call figures of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Attempts recorded in it.
    pub calls: u64,
    /// Attempts that failed.
    pub fails: u64,
    /// Median latency (ms).
    pub p50: Option<f64>,
    /// 95th percentile latency (ms).
    pub p95: Option<f64>,
}

/// MCP calls over time, in equal buckets from `since` to `until`, for one tool or for all.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpSeries {
    /// The `<toolset>.<tool>` it covers (`None`: every tool).
    pub tool: Option<String>,
    /// Start of the first bucket.
    pub since: DateTime<Utc>,
    /// End of the last bucket.
    pub until: DateTime<Utc>,
    /// Length of a bucket.
    pub bucket_ms: i64,
    /// Every bucket, oldest first, empty ones included.
    pub buckets: Vec<McpBucket>,
    /// Records were left out because the window held more than the limit.
    pub truncated: bool,
}

/// The most buckets one series has.
pub const MCP_SERIES_MAX_BUCKETS: usize = 240;

impl McpSeries {
    /// Buckets `records` (of `tool`, or all) from `since` to `until` into `buckets` equal parts
    /// (1 to [`MCP_SERIES_MAX_BUCKETS`], each at least a second long).
    pub fn from_records(
        records: &[McpCallRecord],
        tool: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        buckets: usize,
    ) -> Self {
        let count = buckets.clamp(1, MCP_SERIES_MAX_BUCKETS);
        let span_ms = (until - since).num_milliseconds().max(1000);
        let bucket_ms = ((span_ms + count as i64 - 1) / count as i64).max(1000);
        let mut slots: Vec<Vec<&McpCallRecord>> = vec![Vec::new(); count];
        for record in records.iter().filter(|r| tool.is_none_or(|t| r.tool == t)) {
            let offset = (record.at - since).num_milliseconds();
            if offset < 0 || record.at > until {
                continue;
            }
            // a record at `until` itself belongs to the last bucket
            let index = ((offset / bucket_ms) as usize).min(count - 1);
            slots[index].push(record);
        }
        let buckets = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let f = figures(slot);
                McpBucket {
                    start: since + chrono::Duration::milliseconds(bucket_ms * i as i64),
                    calls: f.calls,
                    fails: f.fails,
                    p50: f.p50,
                    p95: f.p95,
                }
            })
            .collect();
        Self {
            tool: tool.map(str::to_owned),
            since,
            until: since + chrono::Duration::milliseconds(bucket_ms * count as i64),
            bucket_ms,
            buckets,
            truncated: records.len() as i64 >= MCP_SUMMARY_MAX_EVENTS,
        }
    }
}

/// A secret as stored: sealed by the `secrets` crate, opaque here.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Name (an environment variable name).
    pub name: String,
    /// Fingerprint of the master key that sealed it.
    pub key_id: String,
    /// The nonce.
    pub nonce: Vec<u8>,
    /// The sealed value.
    pub ciphertext: Vec<u8>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret").field("name", &self.name).field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A tenant-scoped API token as stored: a hash of its secret part, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public id (the token's middle part).
    pub id: String,
    /// The one tenant the token sees.
    pub tenant: String,
    /// What it is for.
    pub name: String,
    /// SHA-256 of the secret part.
    pub hash: Vec<u8>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The roles an edge worker token may serve; `None` for a tenant token. A token with roles
    /// reaches only the edge workers' WebSocket.
    pub roles: Option<Vec<String>>,
}

/// The `roles` column: comma-separated role names, or NULL for a tenant token.
pub(crate) fn roles_column(text: Option<String>) -> Option<Vec<String>> {
    text.map(|text| text.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect())
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("revoked_at", &self.revoked_at)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}
