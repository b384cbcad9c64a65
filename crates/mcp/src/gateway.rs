//! The gateway: an MCP call goes breaker check → call on the toolset's session → artifacts →
//! metrics, and comes back with a result or an error kind. `GatewayHandler` runs it for
//! `mcp_call` messages claimed from the bus (`service=mcp, role=gateway`); the bus does the retries.
//!
//! Invariants: one long-lived session per toolset, shared by concurrent calls, dropped after a
//! transport failure and reopened with backoff; every call leaves `request.json`, `summary.json`
//! and `response.json` or `error.json` under `artifacts/mcp/<toolset>/<ts>/`, with secrets
//! redacted and images kept as files beside the JSON. The files are written behind the answer
//! (`artifacts::Artifacts::put_all_behind`): `request.json` while the call is in flight, the rest
//! once it has answered. Readers of the same store wait for them, and every caller that records
//! the call (the bus worker, the API) or links to a file waits for them too ([`Attempt::settled`]),
//! so no event or result points at a file that is not there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use model::ErrorKind;
use model::artifact::{TsAllocator, mcp_files};
use model::config::mcp::Toolset;

use crate::{Error, McpClient};

/// The payload of an `mcp_call` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpCall {
    /// Toolset name from mcp.json.
    pub toolset: String,
    /// Tool name.
    pub tool: String,
    /// Tool arguments (a JSON object).
    #[serde(default)]
    pub params: Value,
}

/// Who asked, for the artifacts.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Trace of the call.
    pub trace_id: Option<String>,
    /// Bus message, when the call came from the bus.
    pub message_id: Option<String>,
    /// Attempt number (1 for the first).
    pub attempt: u32,
}

/// A finished call.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayAnswer {
    /// The tool's result (content, structuredContent…).
    pub result: Value,
    /// The tool reported `isError: true`.
    pub is_error: bool,
    /// Milliseconds from request to answer.
    pub latency_ms: f64,
    /// Artifact directory, relative to the data dir.
    pub artifact_dir: String,
    /// Image files written beside the JSON (names inside `artifact_dir`).
    pub images: Vec<String>,
    /// Why the artifacts could not be written (a full or read-only disk), when they could not;
    /// the answer itself is whole and must then be kept inline. Known once the attempt is
    /// [`Attempt::settled`]; `None` before.
    pub artifacts_error: Option<String>,
}

/// One attempt's outcome and the fields of its `mcp_call_succeeded|failed` event
/// (`toolset`, `tool`, `attempt`, `latency_ms`, `artifacts`, `error_kind` when it failed).
#[derive(Debug)]
pub struct Attempt {
    /// The answer or the failure.
    pub outcome: Result<GatewayAnswer, GatewayError>,
    /// Event fields.
    pub detail: Value,
    /// The attempt's artifact writes, still in flight behind the answer.
    pub written: Vec<artifacts::Written>,
}

impl Attempt {
    /// Waits for the attempt's artifact files. When one could not be written, says why in
    /// `detail.artifacts_error` and in the answer's `artifacts_error`.
    pub async fn settled(mut self) -> Self {
        let mut error = None;
        for written in std::mem::take(&mut self.written) {
            if let Err(why) = written.outcome().await {
                error.get_or_insert(format!("could not write the artifacts: {why}"));
            }
        }
        if let Some(why) = error {
            self.detail["artifacts_error"] = json!(why);
            if let Ok(answer) = &mut self.outcome {
                answer.artifacts_error = Some(why);
            }
        }
        self
    }

    /// True when the tool answered without `isError`.
    pub fn succeeded(&self) -> bool {
        matches!(&self.outcome, Ok(answer) if !answer.is_error)
    }
}

/// A call that did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The toolset is not configured or disabled.
    #[error("unknown or disabled MCP toolset {0:?}")]
    UnknownToolset(String),
    /// The breaker refused the call.
    #[error(transparent)]
    Open(#[from] resilience::BreakerOpen),
    /// The MCP client failed.
    #[error(transparent)]
    Client(#[from] Error),
}

impl GatewayError {
    /// How the failure counts for retry.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownToolset(_) => ErrorKind::InvalidInput,
            Self::Open(_) => ErrorKind::Transport,
            Self::Client(err) => err.kind(),
        }
    }
}

/// The MCP gateway of one process.
pub struct Gateway {
    toolsets: BTreeMap<String, Arc<Session>>,
    /// Secret values replaced by `***` wherever they appear in answers and artifacts.
    scrub: Vec<String>,
    breakers: Arc<resilience::Breakers>,
    artifacts: artifacts::Artifacts,
    stamps: TsAllocator,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("toolsets", &self.toolsets.keys().collect::<Vec<_>>()).finish()
    }
}

/// First wait after a failed connect; doubles per failure up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest wait between connect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The long-lived session with one toolset: opened on first use, reopened with backoff after it
/// drops. Calls share it concurrently; one connect runs at a time.
struct Session {
    name: String,
    config: Toolset,
    client: Mutex<Option<Arc<McpClient>>>,
    reconnect: std::sync::Mutex<Reconnect>,
}

#[derive(Debug, Default)]
struct Reconnect {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    connects: u64,
}

impl Session {
    /// The open session, connecting (or reconnecting, after the backoff) when there is none.
    async fn client(&self) -> Result<Arc<McpClient>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        if slot.take().is_some() {
            tracing::warn!(toolset = %self.name, "the MCP session dropped; reconnecting");
        }
        let waiting = self.lock_reconnect().retry_at.and_then(|at| at.checked_duration_since(Instant::now()));
        if let Some(wait) = waiting {
            let state = self.lock_reconnect();
            return Err(Error::Reconnecting {
                toolset: self.name.clone(),
                in_ms: wait.as_millis() as u64,
                failures: state.failures,
                last: state.last_error.clone().unwrap_or_default(),
            });
        }
        match McpClient::connect(&self.name, &self.config, Duration::from_millis(self.config.timeout_ms)).await {
            Ok(client) => {
                let client = Arc::new(client);
                let mut state = self.lock_reconnect();
                if state.connects > 0 {
                    tracing::info!(toolset = %self.name, after_failures = state.failures, "MCP session reopened");
                }
                *state = Reconnect { connects: state.connects + 1, ..Reconnect::default() };
                *slot = Some(client.clone());
                Ok(client)
            }
            Err(err) => {
                let mut state = self.lock_reconnect();
                state.failures += 1;
                let delay = reconnect_delay(state.failures, rand::random::<f64>());
                state.retry_at = Some(Instant::now() + delay);
                state.last_error = Some(err.to_string());
                tracing::warn!(toolset = %self.name, failures = state.failures, retry_in_ms = delay.as_millis() as u64, error = %err, "MCP connect failed");
                Err(err)
            }
        }
    }

    fn lock_reconnect(&self) -> std::sync::MutexGuard<'_, Reconnect> {
        self.reconnect.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the session after a transport failure, unless another call already replaced it.
    async fn forget(&self, broken: &Arc<McpClient>) {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            tracing::warn!(toolset = %self.name, "dropping the MCP session after a transport failure; the next call reconnects");
            *slot = None;
        }
    }
}

/// Backoff before connect attempt `failures + 1`: doubling from 100 ms, at most 5 s, equal jitter.
fn reconnect_delay(failures: u32, random: f64) -> Duration {
    let raw = RECONNECT_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(10)).min(RECONNECT_MAX);
    raw / 2 + raw.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// One toolset's answer to a health ping.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolsetHealth {
    /// Toolset name.
    pub toolset: String,
    /// `websocket`, `stdio` or `http`.
    pub transport: &'static str,
    /// The ping was answered in time.
    pub ok: bool,
    /// Round-trip time of the ping (connect included when the session was not open).
    pub latency_ms: f64,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's kind, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
}

/// Keys whose values are replaced by `***` in artifacts.
const SECRET_KEYS: [&str; 8] =
    ["password", "secret", "token", "api_key", "apikey", "authorization", "cookie", "credential"];

/// A copy of `value` with the values of secret-looking keys replaced by `***`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (key.clone(), Value::String("***".into()))
                    } else {
                        (key.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

impl Gateway {
    /// A gateway over the enabled toolsets; its artifacts go to `artifacts` (the data directory's
    /// `artifacts/`, or the shared object store).
    pub fn new(
        toolsets: BTreeMap<String, Toolset>,
        breakers: Arc<resilience::Breakers>,
        artifacts: artifacts::Artifacts,
        instance: &str,
    ) -> Self {
        let toolsets = toolsets
            .into_iter()
            .filter(|(_, t)| t.enabled)
            .map(|(name, config)| {
                let session = Session {
                    name: name.clone(),
                    config,
                    client: Mutex::default(),
                    reconnect: std::sync::Mutex::default(),
                };
                (name, Arc::new(session))
            })
            .collect();
        Self { toolsets, scrub: Vec::new(), breakers, artifacts, stamps: TsAllocator::new(instance) }
    }

    /// Replaces these values (secrets) by `***` wherever they appear in answers (object keys too),
    /// errors and artifacts. Values shorter than 4 characters are ignored (they would blank ordinary text).
    pub fn with_scrubbed_values(mut self, values: impl IntoIterator<Item = String>) -> Self {
        self.scrub = values.into_iter().filter(|v| v.chars().count() >= 4).collect();
        // longest first, so a value that contains another is replaced whole
        self.scrub.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self
    }

    /// `text` with the scrubbed values replaced by `***`, until none is left: a replacement can make
    /// a value whole again (`a***b` around a `***`); each round shortens the text, so this ends.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        while let Some(value) = self.scrub.iter().find(|value| text.contains(value.as_str())) {
            text = text.replace(value.as_str(), "***");
        }
        text
    }

    /// What the gateway keeps of a tool's result, as written to `response.json` and answered to the
    /// caller: the result with the scrubbed values replaced by `***` and its base64 images taken
    /// out as files to write beside the JSON (`image-<n>.<ext>`), a reference left in their place.
    pub fn answer_artifacts(&self, result: Value) -> (Value, Vec<(String, Vec<u8>)>) {
        take_images(self.scrub_json(result))
    }

    fn scrub_json(&self, value: Value) -> Value {
        if self.scrub.is_empty() {
            return value;
        }
        match value {
            Value::String(text) => Value::String(self.scrub_text(&text)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.scrub_json(v)).collect()),
            // keys too: a tool may answer with a secret as a key
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (self.scrub_text(&k), self.scrub_json(v))).collect())
            }
            other => other,
        }
    }

    /// The attempt budget of a queued call of `toolset.tool`: `max_attempts` of its retry policy
    /// (`mcp.call.<toolset>.<tool>`), so that the bus retries it as long as the policy says (a
    /// message's own budget bounds its attempts).
    pub fn max_attempts(&self, toolset: &str, tool: &str) -> i32 {
        let policy = self.breakers.policies().retry(&model::policy::mcp_call_key(toolset, tool));
        i32::try_from(policy.max_attempts).unwrap_or(i32::MAX).clamp(1, model::message::MAX_ATTEMPTS_LIMIT)
    }

    /// Names of the enabled toolsets.
    pub fn toolsets(&self) -> impl Iterator<Item = &str> {
        self.toolsets.keys().map(String::as_str)
    }

    fn session(&self, toolset: &str) -> Result<&Arc<Session>, GatewayError> {
        self.toolsets.get(toolset).ok_or_else(|| GatewayError::UnknownToolset(toolset.to_owned()))
    }

    /// The tools of `toolset` (cached per session until the server announces a change).
    pub async fn tools(&self, toolset: &str) -> Result<Arc<Vec<crate::ToolInfo>>, GatewayError> {
        let session = self.session(toolset)?;
        let client = session.client().await?;
        Ok(client.tools(Duration::from_millis(session.config.timeout_ms)).await?)
    }

    /// How many times `toolset`'s session has been opened (1 until it drops and reconnects).
    pub fn connects(&self, toolset: &str) -> u64 {
        self.toolsets.get(toolset).map_or(0, |s| s.lock_reconnect().connects)
    }

    /// Pings every toolset in parallel (connecting where needed), each within `timeout`.
    pub async fn health(&self, timeout: Duration) -> Vec<ToolsetHealth> {
        futures_util::future::join_all(self.toolsets.values().map(|session| Self::ping_session(session, timeout))).await
    }

    /// Pings one toolset; `None` when it is not configured.
    pub async fn health_of(&self, toolset: &str, timeout: Duration) -> Option<ToolsetHealth> {
        let session = self.toolsets.get(toolset)?;
        Some(Self::ping_session(session, timeout).await)
    }

    async fn ping_session(session: &Session, timeout: Duration) -> ToolsetHealth {
        {
            let started = Instant::now();
            let transport = session.config.transport().map_or("none", |t| t.name());
            let answer = tokio::time::timeout(timeout, async {
                let client = session.client().await?;
                let result = client.ping(timeout).await;
                if let Err(err) = &result
                    && err.kind() == ErrorKind::Transport
                {
                    session.forget(&client).await;
                }
                result
            })
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    toolset: session.name.clone(),
                    what: "ping".into(),
                    after_ms: timeout.as_millis() as u64,
                })
            });
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let (error, error_kind) = match &answer {
                Ok(_) => (None, None),
                Err(err) => (Some(err.to_string()), Some(err.kind().as_str())),
            };
            ToolsetHealth {
                toolset: session.name.clone(),
                transport,
                ok: answer.is_ok(),
                latency_ms,
                error,
                error_kind,
            }
        }
    }

    /// A whole call for a caller that waits (the HTTP API, the CLI): attempts under the retry
    /// policy of `mcp.call.<toolset>.<tool>`, each through [`Gateway::call_once`].
    /// `on_attempt` sees every attempt (to record its `mcp_call_succeeded|failed` event).
    pub async fn call(
        &self,
        policies: &resilience::Policies,
        call: &McpCall,
        context: &CallContext,
        mut on_attempt: impl FnMut(&Attempt),
    ) -> Result<GatewayAnswer, GatewayError> {
        let policy = policies.retry(&model::policy::mcp_call_key(&call.toolset, &call.tool));
        let started = Instant::now();
        let mut attempt = context.attempt.max(1);
        loop {
            let context = CallContext { attempt, ..context.clone() };
            let attempted = self.attempt(call, &context).await.settled().await;
            on_attempt(&attempted);
            let outcome = attempted.outcome;
            let kind = match &outcome {
                Ok(answer) if answer.is_error => ErrorKind::ToolError,
                Ok(_) => return outcome,
                Err(err) => err.kind(),
            };
            // a tool error is an answer too: retried only when the policy lists `tool_error`
            match policy.decide(kind, attempt, started.elapsed(), rand::random::<f64>()) {
                model::retry::RetryDecision::RetryAfter(delay) => {
                    tracing::debug!(toolset = %call.toolset, tool = %call.tool, attempt, kind = %kind, delay_ms = delay.as_millis() as u64, "retrying the MCP call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                model::retry::RetryDecision::GiveUp(_) => return outcome,
            }
        }
    }

    /// One attempt: breaker → call on the toolset's session → artifacts → metrics. The answer
    /// comes back while its artifact files are still being written; readers of the store wait for
    /// them, [`Gateway::flush`] waits for all.
    pub async fn call_once(&self, call: &McpCall, context: &CallContext) -> Result<GatewayAnswer, GatewayError> {
        self.attempt(call, context).await.outcome
    }

    /// One attempt, with the fields of its `mcp_call_succeeded|failed` event; its artifact writes
    /// may still be in flight ([`Attempt::settled`] waits for them).
    pub async fn attempt(&self, call: &McpCall, context: &CallContext) -> Attempt {
        let mut detail = json!({ "toolset": call.toolset, "tool": call.tool, "attempt": context.attempt });
        let mut written = Vec::with_capacity(2);
        let outcome = self.run_attempt(call, context, &mut detail, &mut written).await;
        if let Err(err) = &outcome {
            detail["error_kind"] = json!(err.kind().as_str());
        }
        Attempt { outcome, detail, written }
    }

    /// Waits until every artifact write behind an answer has ended (before a process exits).
    pub async fn flush(&self) {
        self.artifacts.flush().await;
    }

    async fn run_attempt(
        &self,
        call: &McpCall,
        context: &CallContext,
        detail: &mut Value,
        written: &mut Vec<artifacts::Written>,
    ) -> Result<GatewayAnswer, GatewayError> {
        let session = self.session(&call.toolset)?;
        let breaker_key = model::policy::mcp_breaker_key(&call.toolset, &call.tool, 0);
        let labels = [("toolset", call.toolset.clone()), ("tool", call.tool.clone())];
        let stamp = self.stamps.next(chrono::Utc::now());
        let artifact_dir = model::artifact::mcp_call_dir(&call.toolset, &stamp)
            .map_err(|_| GatewayError::UnknownToolset(call.toolset.clone()))?;
        detail["artifacts"] = json!(artifact_dir);
        let request = json!({ "toolset": call.toolset, "tool": call.tool, "params": self.scrub_json(redact(&call.params)), "trace_id": context.trace_id, "message_id": context.message_id, "attempt": context.attempt });
        // request.json is written while the call is in flight
        written.push(self.artifacts.put_all_behind(&artifact_dir, vec![json_file(mcp_files::REQUEST, &request)]).await);
        metrics::counter!(model::metrics::MCP_CALLS_TOTAL, &labels).increment(1);
        let started = Instant::now();
        let outcome = async {
            let permit = self.breakers.acquire(&breaker_key)?;
            let timeout = Duration::from_millis(session.config.timeout_ms_for(&call.tool));
            let (result, client) = match session.client().await {
                Ok(client) => (client.call(&call.tool, call.params.clone(), timeout).await, Some(client)),
                Err(err) => (Err(err), None),
            };
            let breaker_outcome = match &result {
                Ok(answer) if answer.is_error => model::breaker::Outcome::Failure(ErrorKind::ToolError),
                Ok(_) => model::breaker::Outcome::Success,
                Err(err) => model::breaker::Outcome::Failure(err.kind()),
            };
            self.breakers.record(&breaker_key, permit, breaker_outcome);
            if let (Err(err), Some(client)) = (&result, &client)
                && err.kind() == ErrorKind::Transport
            {
                session.forget(client).await;
            }
            Ok::<_, GatewayError>(result?)
        }
        .await;
        let (latency_ms, kind) = match &outcome {
            Ok(answer) => (answer.latency.as_secs_f64() * 1000.0, answer.is_error.then_some(ErrorKind::ToolError)),
            Err(err) => (started.elapsed().as_secs_f64() * 1000.0, Some(err.kind())),
        };
        metrics::histogram!(model::metrics::MCP_LATENCY_MS, &labels).record(latency_ms);
        detail["latency_ms"] = json!((latency_ms * 1000.0).round() / 1000.0);
        if let Some(kind) = kind {
            detail["error_kind"] = json!(kind.as_str());
        }
        if let Some(kind) = kind {
            metrics::counter!(model::metrics::MCP_FAIL_TOTAL, "toolset" => call.toolset.clone(), "tool" => call.tool.clone(), "kind" => kind.as_str()).increment(1);
        }
        let mut summary = json!({
            "trace_id": context.trace_id, "message_id": context.message_id, "toolset": call.toolset, "tool": call.tool,
            "status": if kind.is_some() { "failed" } else { "ok" }, "error_kind": kind.map(ErrorKind::as_str),
            "latency_ms": latency_ms, "attempt": context.attempt, "breaker_key": breaker_key,
        });
        match outcome {
            Ok(answer) => {
                let (result, images) = self.answer_artifacts(answer.result);
                let names: Vec<String> = images.iter().map(|(name, _)| name.clone()).collect();
                summary["images"] = json!(names);
                let mut files = vec![json_file(mcp_files::SUMMARY, &summary), json_file(mcp_files::RESPONSE, &result)];
                if answer.is_error {
                    files.push(json_file(mcp_files::ERROR, &json!({ "kind": "tool_error", "result": result })));
                }
                files.extend(images);
                written.push(self.artifacts.put_all_behind(&artifact_dir, files).await);
                Ok(GatewayAnswer {
                    result,
                    is_error: answer.is_error,
                    latency_ms,
                    artifact_dir,
                    images: names,
                    artifacts_error: None,
                })
            }
            Err(err) => {
                let error = json!({ "kind": err.kind().as_str(), "error": self.scrub_text(&err.to_string()) });
                written.push(
                    self.artifacts
                        .put_all_behind(
                            &artifact_dir,
                            vec![json_file(mcp_files::SUMMARY, &summary), json_file(mcp_files::ERROR, &error)],
                        )
                        .await,
                );
                Err(err)
            }
        }
    }
}

/// Largest image kept from one answer (decoded bytes); larger ones are dropped with a note.
const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;

/// Takes the base64 images out of an answer (`content[].type == "image"`) as files to write beside
/// the JSON (`image-<n>.<ext>`), leaving `{"type": "image", "mimeType", "file", "bytes"}` in their place.
fn take_images(mut result: Value) -> (Value, Vec<(String, Vec<u8>)>) {
    use base64::Engine as _;
    let mut files = Vec::new();
    let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) else {
        return (result, files);
    };
    for item in content.iter_mut() {
        if item.get("type").and_then(Value::as_str) != Some("image") {
            continue;
        }
        let Some(data) = item.get("data").and_then(Value::as_str) else { continue };
        let mime = item.get("mimeType").and_then(Value::as_str).unwrap_or("application/octet-stream").to_owned();
        let ext = match mime.as_str() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            "image/svg+xml" => "svg",
            _ => "bin",
        };
        match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) if bytes.len() <= MAX_IMAGE_BYTES => {
                let name = format!("image-{}.{ext}", files.len());
                *item = json!({ "type": "image", "mimeType": mime, "file": name, "bytes": bytes.len() });
                files.push((name, bytes));
            }
            Ok(bytes) => {
                *item = json!({ "type": "image", "mimeType": mime, "dropped": format!("{} bytes is over the {MAX_IMAGE_BYTES}-byte limit", bytes.len()) });
            }
            Err(err) => {
                *item = json!({ "type": "image", "mimeType": mime, "dropped": format!("not base64: {err}") });
            }
        }
    }
    (result, files)
}

/// A JSON artifact file, pretty-printed.
fn json_file(name: &str, value: &Value) -> (String, Vec<u8>) {
    (name.to_owned(), serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"null".to_vec()))
}

/// Runs `mcp_call` messages through the gateway (the bus decides retries by the error kind).
pub struct GatewayHandler {
    gateway: Arc<Gateway>,
    max_inline_bytes: usize,
}

impl GatewayHandler {
    /// A handler over `gateway`; results larger than `max_inline_bytes` are returned as a link to
    /// their `response.json` artifact.
    pub fn new(gateway: Arc<Gateway>, max_inline_bytes: usize) -> Self {
        Self { gateway, max_inline_bytes }
    }
}

impl worker::Handler for GatewayHandler {
    fn handle(
        &self,
        message: model::Message,
    ) -> BoxFuture<'static, Result<worker::HandlerOutput, worker::HandlerError>> {
        let gateway = self.gateway.clone();
        let max_inline = self.max_inline_bytes;
        Box::pin(async move {
            let call: McpCall = serde_json::from_value(message.payload.clone()).map_err(|e| {
                worker::HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!("mcp_call payload must be {{toolset, tool, params}}: {e}"),
                )
            })?;
            let context = CallContext {
                trace_id: Some(message.trace_id.clone()),
                message_id: Some(message.id.to_string()),
                attempt: message.attempts.max(1) as u32,
            };
            // the artifacts are waited for: the event must say whether they were written, and a
            // large result links to its response.json
            let Attempt { outcome, detail, .. } = gateway.attempt(&call, &context).await.settled().await;
            match outcome {
                Ok(answer) if answer.is_error => {
                    let message = match &answer.artifacts_error {
                        None => format!(
                            "tool {}.{} reported an error (see {}/error.json)",
                            call.toolset, call.tool, answer.artifact_dir
                        ),
                        Some(why) => {
                            let text: String = answer.result.to_string().chars().take(2000).collect();
                            format!("tool {}.{} reported an error ({why}): {text}", call.toolset, call.tool)
                        }
                    };
                    Err(worker::HandlerError::new(ErrorKind::ToolError, message).with_detail(detail))
                }
                Ok(answer) => {
                    // a result whose response.json could not be written stays inline, whatever its size
                    let inline =
                        answer.artifacts_error.is_some() || model::message::payload_size(&answer.result) <= max_inline;
                    let result = json!({ "ok": true, "latency_ms": answer.latency_ms, "artifacts": answer.artifact_dir, "images": answer.images, "result": if inline { answer.result } else { Value::Null } });
                    let result_url = (!inline).then(|| format!("{}/{}", answer.artifact_dir, mcp_files::RESPONSE));
                    Ok(worker::HandlerOutput { result: Some(result), result_url, detail: Some(detail) })
                }
                Err(err) => {
                    let failure =
                        worker::HandlerError::new(err.kind(), gateway.scrub_text(&err.to_string())).with_detail(detail);
                    Err(match &err {
                        // retried once the breaker lets a probe through, not sooner
                        GatewayError::Open(open) => {
                            failure.with_retry_after(Duration::from_millis(open.retry_in_ms.saturating_add(20)))
                        }
                        _ => failure,
                    })
                }
            }
        })
    }
}
