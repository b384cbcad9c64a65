//! The gateway: an MCP call goes breaker check → call on the toolset's session → artifacts →
//! metrics, and comes back with a result or an error kind. `GatewayHandler` runs it for
//! `mcp_call` messages claimed from the bus (`service=mcp, role=gateway`); the bus does the retries.
//!
//! Invariants: one long-lived session per toolset, replaced after a transport failure; every call
//! leaves `request.json`, `summary.json` and `response.json` or `error.json` under
//! `artifacts/mcp/<toolset>/<ts>/`, with secrets redacted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    toolsets: BTreeMap<String, Toolset>,
    sessions: Mutex<HashMap<String, Arc<McpClient>>>,
    breakers: Arc<resilience::Breakers>,
    data_dir: PathBuf,
    stamps: TsAllocator,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("toolsets", &self.toolsets.keys().collect::<Vec<_>>()).finish()
    }
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
    /// A gateway over the enabled toolsets; artifacts go under `data_dir/artifacts/`.
    pub fn new(
        toolsets: BTreeMap<String, Toolset>,
        breakers: Arc<resilience::Breakers>,
        data_dir: PathBuf,
        instance: &str,
    ) -> Self {
        let toolsets = toolsets.into_iter().filter(|(_, t)| t.enabled).collect();
        Self { toolsets, sessions: Mutex::default(), breakers, data_dir, stamps: TsAllocator::new(instance) }
    }

    async fn session(&self, name: &str, config: &Toolset) -> Result<Arc<McpClient>, Error> {
        let mut sessions = self.sessions.lock().await;
        if let Some(client) = sessions.get(name).filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(McpClient::connect(name, config, Duration::from_millis(config.timeout_ms)).await?);
        sessions.insert(name.to_owned(), client.clone());
        Ok(client)
    }

    async fn forget(&self, name: &str) {
        if let Some(client) = self.sessions.lock().await.remove(name) {
            tracing::warn!(
                toolset = name,
                "dropping the MCP session after a transport failure; the next call reconnects"
            );
            drop(client);
        }
    }

    /// One attempt: breaker → call → artifacts → metrics.
    pub async fn call_once(&self, call: &McpCall, context: &CallContext) -> Result<GatewayAnswer, GatewayError> {
        let config =
            self.toolsets.get(&call.toolset).ok_or_else(|| GatewayError::UnknownToolset(call.toolset.clone()))?;
        let breaker_key = model::policy::mcp_breaker_key(&call.toolset, &call.tool, 0);
        let labels = [("toolset", call.toolset.clone()), ("tool", call.tool.clone())];
        let stamp = self.stamps.next(chrono::Utc::now());
        let artifact_dir = model::artifact::mcp_call_dir(&call.toolset, &stamp)
            .map_err(|_| GatewayError::UnknownToolset(call.toolset.clone()))?;
        let dir = self.data_dir.join(&artifact_dir);
        let request = json!({ "toolset": call.toolset, "tool": call.tool, "params": redact(&call.params), "trace_id": context.trace_id, "message_id": context.message_id, "attempt": context.attempt });
        write_json(&dir, mcp_files::REQUEST, &request).await;
        metrics::counter!(model::metrics::MCP_CALLS_TOTAL, &labels).increment(1);
        let outcome = async {
            let permit = self.breakers.acquire(&breaker_key)?;
            let timeout = Duration::from_millis(config.timeout_ms_for(&call.tool));
            let result = match self.session(&call.toolset, config).await {
                Ok(client) => client.call(&call.tool, call.params.clone(), timeout).await,
                Err(err) => Err(err),
            };
            let breaker_outcome = match &result {
                Ok(answer) if answer.is_error => model::breaker::Outcome::Failure(ErrorKind::ToolError),
                Ok(_) => model::breaker::Outcome::Success,
                Err(err) => model::breaker::Outcome::Failure(err.kind()),
            };
            self.breakers.record(&breaker_key, permit, breaker_outcome);
            if let Err(err) = &result
                && err.kind() == ErrorKind::Transport
            {
                self.forget(&call.toolset).await;
            }
            Ok::<_, GatewayError>(result?)
        }
        .await;
        let (status, latency_ms, kind) = match &outcome {
            Ok(answer) => {
                ("ok", answer.latency.as_secs_f64() * 1000.0, answer.is_error.then_some(ErrorKind::ToolError))
            }
            Err(err) => ("error", 0.0, Some(err.kind())),
        };
        metrics::histogram!(model::metrics::MCP_LATENCY_MS, &labels).record(latency_ms);
        if let Some(kind) = kind {
            metrics::counter!(model::metrics::MCP_FAIL_TOTAL, "toolset" => call.toolset.clone(), "tool" => call.tool.clone(), "kind" => kind.as_str()).increment(1);
        }
        let summary = json!({
            "trace_id": context.trace_id, "message_id": context.message_id, "toolset": call.toolset, "tool": call.tool,
            "status": if kind.is_some() { "failed" } else { status }, "error_kind": kind.map(ErrorKind::as_str),
            "latency_ms": latency_ms, "attempt": context.attempt, "breaker_key": breaker_key,
        });
        write_json(&dir, mcp_files::SUMMARY, &summary).await;
        match outcome {
            Ok(answer) => {
                write_json(&dir, mcp_files::RESPONSE, &answer.result).await;
                if answer.is_error {
                    write_json(&dir, mcp_files::ERROR, &json!({ "kind": "tool_error", "result": answer.result })).await;
                }
                Ok(GatewayAnswer { result: answer.result, is_error: answer.is_error, latency_ms, artifact_dir })
            }
            Err(err) => {
                write_json(&dir, mcp_files::ERROR, &json!({ "kind": err.kind().as_str(), "error": err.to_string() }))
                    .await;
                Err(err)
            }
        }
    }
}

async fn write_json(dir: &std::path::Path, name: &str, value: &Value) {
    let write = async {
        tokio::fs::create_dir_all(dir).await?;
        let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        tokio::fs::write(dir.join(name), text).await
    };
    if let Err(err) = write.await {
        // an artifact that cannot be written must not fail the call; it is logged
        tracing::warn!(dir = %dir.display(), file = name, error = %err, "could not write an MCP artifact");
    }
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
            match gateway.call_once(&call, &context).await {
                Ok(answer) if answer.is_error => Err(worker::HandlerError::new(
                    ErrorKind::ToolError,
                    format!(
                        "tool {}.{} reported an error (see {}/error.json)",
                        call.toolset, call.tool, answer.artifact_dir
                    ),
                )),
                Ok(answer) => {
                    let inline = model::message::payload_size(&answer.result) <= max_inline;
                    let result = json!({ "ok": true, "latency_ms": answer.latency_ms, "artifacts": answer.artifact_dir, "result": if inline { answer.result } else { Value::Null } });
                    let result_url = (!inline).then(|| format!("{}/{}", answer.artifact_dir, mcp_files::RESPONSE));
                    Ok(worker::HandlerOutput { result: Some(result), result_url })
                }
                Err(err) => Err(worker::HandlerError::new(err.kind(), err.to_string())),
            }
        })
    }
}
