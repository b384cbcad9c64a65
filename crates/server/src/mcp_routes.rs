//! The MCP routes of the seed: direct calls, ping, enqueue, configuration, health, and the MCP
//! metrics (summary from the store's events, the events themselves, artifacts, snapshots).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get, routing::post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use model::event::NewEvent;

use crate::error::ApiPath;
use crate::routes::query;
use crate::{ApiError, AppState, ErrorCode};

/// What the MCP routes need besides the store.
pub struct McpApi {
    /// The gateway of this process.
    pub gateway: Arc<mcp::Gateway>,
    /// Retry policies for direct calls.
    pub policies: Arc<resilience::Policies>,
    /// The MCP configuration (shown redacted).
    pub config: model::config::McpConfig,
    /// The artifact store (the data directory's `artifacts/`, or the shared object store).
    pub artifacts: artifacts::Artifacts,
}

impl std::fmt::Debug for McpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpApi").field("gateway", &self.gateway).finish()
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/mcp/enqueue", post(enqueue))
        .route("/api/mcp/config", get(config))
        .route("/api/mcp/health", get(health))
        .route("/api/mcp/ping/{toolset}/{tool}", get(ping))
        .route("/api/mcp/{toolset}/{tool}", post(call))
        .route("/api/metrics/mcp/summary", get(summary))
        .route("/api/metrics/mcp/series", get(series))
        .route("/api/metrics/mcp/events", get(events))
        .route("/api/metrics/mcp/artifacts/summary", get(artifacts_summary))
        .route("/api/metrics/snapshot", post(snapshot))
        .route("/api/artifacts/{*path}", get(artifact))
}

fn api(state: &AppState) -> Result<&Arc<McpApi>, ApiError> {
    state.mcp.as_ref().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the MCP gateway is not running here"))
}

pub(crate) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|rejection| match rejection {
        JsonRejection::BytesRejection(_) => ApiError::new(ErrorCode::PayloadTooLarge, "request body too large"),
        other => ApiError::new(ErrorCode::InvalidRequest, format!("bad JSON body: {}", other.body_text())),
    })
}

fn known_toolset(api: &McpApi, toolset: &str) -> Result<(), ApiError> {
    if api.gateway.toolsets().any(|t| t == toolset) {
        return Ok(());
    }
    let known: Vec<&str> = api.gateway.toolsets().collect();
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no enabled MCP toolset {toolset:?}; configured: {}", known.join(", ")),
    ))
}

fn valid_tool(tool: &str) -> Result<(), ApiError> {
    let ok = !tool.is_empty()
        && tool.len() <= 128
        && tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidRequest, "a tool name is 1-128 letters, digits, '_', '-', '.' or '/'"))
    }
}

/// Body of a direct call.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallBody {
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    params: Value,
}

/// `POST /api/mcp/:toolset/:tool` → `{ok, result, error, latency_ms}`; each attempt is recorded as
/// an `mcp_call_succeeded|failed` event.
async fn call(
    State(state): State<AppState>,
    ApiPath((toolset, tool)): ApiPath<(String, String)>,
    payload: Result<Json<CallBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    known_toolset(api, &toolset)?;
    valid_tool(&tool)?;
    let params = body(payload)?.params;
    if !(params.is_object() || params.is_null()) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "params must be a JSON object"));
    }
    let trace_id = model::trace::TraceContext::new_root().trace_id_hex();
    let context = mcp::CallContext { trace_id: Some(trace_id.clone()), message_id: None, attempt: 1 };
    let request = mcp::McpCall { toolset, tool, params };
    let mut events = Vec::new();
    let outcome = api
        .gateway
        .call(&api.policies, &request, &context, |attempt| {
            let phase = if attempt.succeeded() { model::Phase::Succeeded } else { model::Phase::Failed };
            let mut event = NewEvent::system(&model::message::event_type("mcp_call", phase), "mcp", "gateway");
            event.trace_id = Some(trace_id.clone());
            event.reason = attempt.detail["error_kind"].as_str().map(str::to_owned);
            event.payload = attempt.detail.clone();
            events.push(event);
        })
        .await;
    if let Err(err) = state.store.append_events(events).await {
        tracing::warn!(error = %err, "could not record the events of a direct MCP call");
    }
    let answer = match outcome {
        Ok(answer) => json!({
            "ok": !answer.is_error,
            "result": answer.result,
            "error": answer.is_error.then_some("the tool reported an error (isError: true)"),
            "latency_ms": answer.latency_ms,
            "trace_id": trace_id,
            "artifacts": answer.artifact_dir,
        }),
        Err(err) => json!({
            "ok": false,
            "result": null,
            "error": api.gateway.scrub_text(&err.to_string()),
            "error_kind": err.kind().as_str(),
            "latency_ms": null,
            "trace_id": trace_id,
        }),
    };
    Ok(Json(answer))
}

/// `GET /api/mcp/ping/:toolset/:tool` → `{ok, latency_ms, error}`: an MCP ping of the toolset, and
/// the tool must be one it lists.
async fn ping(
    State(state): State<AppState>,
    ApiPath((toolset, tool)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    known_toolset(api, &toolset)?;
    valid_tool(&tool)?;
    let started = std::time::Instant::now();
    let health = api.gateway.health_of(&toolset, Duration::from_secs(5)).await;
    let mut error = health.as_ref().and_then(|h| h.error.clone());
    if error.is_none() {
        match api.gateway.tools(&toolset).await {
            Ok(tools) if tools.iter().any(|t| t.name == tool) => {}
            Ok(_) => error = Some(format!("toolset {toolset} has no tool {tool:?}")),
            Err(err) => error = Some(err.to_string()),
        }
    }
    Ok(Json(json!({
        "ok": error.is_none(),
        "latency_ms": health.map(|h| h.latency_ms).unwrap_or_else(|| started.elapsed().as_secs_f64() * 1000.0),
        "error": error,
    })))
}

/// Body of `POST /api/mcp/enqueue`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueBody {
    toolset: String,
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"), length(min = 1, max = 128))]
    tool: String,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    params: Value,
    #[serde(default)]
    shard: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = -1000, max = 1000))]
    priority: Option<i32>,
}

/// An optional whole number that JSON may write as `7` or `7.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i32>, D::Error> {
    let value: Option<f64> = serde::Deserialize::deserialize(deserializer)?;
    value
        .map(|v| {
            if v.fract() == 0.0 && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) {
                Ok(v as i32)
            } else {
                Err(serde::de::Error::custom(format!("{v} is not a whole number")))
            }
        })
        .transpose()
}

/// `POST /api/mcp/enqueue` → the message id: an `mcp_call` for `service=mcp, role=gateway`.
async fn enqueue(
    State(state): State<AppState>,
    payload: Result<Json<EnqueueBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let request = body(payload)?;
    if let Some(api) = state.mcp.as_ref() {
        known_toolset(api, &request.toolset)?;
    }
    valid_tool(&request.tool)?;
    if !(request.params.is_object() || request.params.is_null()) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "params must be a JSON object"));
    }
    let intent = model::Intent::new("mcp_call").map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let payload = json!({ "toolset": request.toolset, "tool": request.tool, "params": request.params });
    let mut message = model::NewMessage::new("mcp", "gateway", intent, payload);
    if let Some(api) = state.mcp.as_ref() {
        // the bus retries the call as long as its retry policy says
        message.max_attempts = api.gateway.max_attempts(&request.toolset, &request.tool);
    }
    message.shard = request.shard.unwrap_or_default();
    message.idempotency_key = request.idempotency_key;
    if let Some(tenant) = request.tenant {
        message.tenant = tenant;
    }
    if let Some(priority) = request.priority {
        message.priority = priority;
    }
    let enqueued = state.store.enqueue(message).await?;
    let status = if enqueued.created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((
        status,
        Json(json!({
            "id": enqueued.message.id,
            "trace_id": enqueued.message.trace_id,
            "status": enqueued.message.status,
            "duplicate": !enqueued.created,
        })),
    ))
}

/// `GET /api/mcp/config`: mcp.json with env and header values and URL credentials redacted.
async fn config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(serde_json::to_value(api(&state)?.config.redacted()).unwrap_or(Value::Null)))
}

/// `GET /api/mcp/health`: every toolset pinged in parallel.
async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let toolsets = api(&state)?.gateway.health(Duration::from_secs(5)).await;
    Ok(Json(json!({ "ok": toolsets.iter().all(|t| t.ok), "toolsets": toolsets })))
}

/// Window of the MCP figures.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowQuery {
    /// Start of the window (default: 24 hours ago).
    since: Option<DateTime<Utc>>,
}

pub(crate) fn default_since(state: &AppState) -> DateTime<Utc> {
    state.store.clock().now() - chrono::Duration::hours(24)
}

/// `GET /api/metrics/mcp/summary`: calls, failures, p50/p95 overall and per `<toolset>.<tool>`.
pub(crate) async fn summary(
    State(state): State<AppState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let since = query(q)?.since.unwrap_or_else(|| default_since(&state));
    Ok(Json(json!({ "mcp": state.store.mcp_summary(since).await? })))
}

/// Window, tool and resolution of the MCP figures over time.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesQuery {
    /// Start of the window (default: one hour ago).
    since: Option<DateTime<Utc>>,
    /// Only this `<toolset>.<tool>` (default: every tool).
    #[schemars(length(min = 1, max = 200), pattern(r"^[A-Za-z0-9_.-]+$"))]
    tool: Option<String>,
    /// Number of equal buckets from `since` to now (default 60).
    #[schemars(range(min = 1, max = 240))]
    buckets: Option<u32>,
}

/// `GET /api/metrics/mcp/series`: calls, failures and p50/p95 latency over time, in equal
/// buckets, for one tool or all.
pub(crate) async fn series(
    State(state): State<AppState>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    let now = state.store.clock().now();
    let since = q.since.unwrap_or_else(|| now - chrono::Duration::hours(1));
    if since >= now {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("since ({since}) must be in the past")));
    }
    let buckets = q.buckets.unwrap_or(60);
    if !(1..=store::MCP_SERIES_MAX_BUCKETS as u32).contains(&buckets) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("buckets is {buckets}; it must be 1 to {}", store::MCP_SERIES_MAX_BUCKETS),
        ));
    }
    if let Some(tool) = &q.tool
        && (tool.is_empty()
            || tool.len() > 200
            || !tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "tool is <toolset>.<tool>: 1 to 200 letters, digits, '_', '.' or '-'",
        ));
    }
    let series = state.store.mcp_series(since, q.tool.as_deref(), buckets as usize).await?;
    Ok(Json(json!({ "series": series })))
}

/// `GET /api/metrics/mcp/events`: the events of the MCP service (calls, retries, dead letters),
/// with the filters of `/api/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    axum::extract::Extension(scope): axum::extract::Extension<crate::Scope>,
    q: Result<Query<crate::routes::EventQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (mut filter, page) = query(q)?.split()?;
    crate::routes::limit_to(&scope, &mut filter.tenant);
    filter.service = Some("mcp".into());
    Ok(Json(state.store.events(&filter, &page).await?))
}

/// The most artifact files one artifacts summary looks at.
const MAX_ARTIFACT_FILES: usize = 200_000;

/// `GET /api/metrics/mcp/artifacts/summary`: per toolset, the call directories, their files and
/// bytes, and the newest (from the artifact store, wherever it is).
pub(crate) async fn artifacts_summary(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let files = api.artifacts.walk("artifacts/mcp", MAX_ARTIFACT_FILES).await.map_err(artifact_error)?;
    Ok(Json(json!({ "artifacts": artifact_counts(&files), "store": api.artifacts.backend().as_str() })))
}

/// Per toolset: calls (directories), files with errors and images, bytes, and the newest call.
fn artifact_counts(files: &[artifacts::StoredFile]) -> Value {
    #[derive(Default)]
    struct Toolset<'a> {
        calls: std::collections::BTreeSet<&'a str>,
        errors: u64,
        images: u64,
        bytes: u64,
    }
    let mut toolsets: std::collections::BTreeMap<&str, Toolset<'_>> = std::collections::BTreeMap::new();
    for file in files {
        // artifacts/mcp/<toolset>/<ts>/<name>
        let mut parts = file.path.splitn(5, '/').skip(2);
        let (Some(toolset), Some(call), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let entry = toolsets.entry(toolset).or_default();
        entry.calls.insert(call);
        entry.bytes += file.bytes;
        entry.errors += u64::from(name == model::artifact::mcp_files::ERROR);
        entry.images += u64::from(name.starts_with("image-"));
    }
    let (mut calls, mut bytes) = (0u64, 0u64);
    let mut out = serde_json::Map::new();
    for (name, t) in toolsets {
        calls += t.calls.len() as u64;
        bytes += t.bytes;
        out.insert(
            name.to_owned(),
            json!({ "calls": t.calls.len(), "errors": t.errors, "images": t.images, "bytes": t.bytes, "latest": t.calls.last() }),
        );
    }
    json!({ "calls": calls, "bytes": bytes, "toolsets": out })
}

/// An artifact store failure as an API error: what the client may know, the rest in the log.
fn artifact_error(err: artifacts::ArtifactError) -> ApiError {
    match err {
        artifacts::ArtifactError::NotFound(path) => ApiError::new(ErrorCode::NotFound, format!("no artifact {path}")),
        artifacts::ArtifactError::InvalidPath { .. } => {
            ApiError::new(ErrorCode::InvalidRequest, "an artifact path is <family>/<name>/…: plain names only")
        }
        artifacts::ArtifactError::TooLarge { path, limit } => {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("artifact {path} is larger than {limit} bytes"))
        }
        other => {
            tracing::error!(error = %other, "artifact store failure");
            ApiError::new(ErrorCode::Unavailable, "the artifact store did not answer; see the server log")
        }
    }
}

/// `POST /api/metrics/snapshot`: writes the summary and this process's Prometheus text to
/// `artifacts/metrics/<ts>/` and answers with the path.
async fn snapshot(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let summary = crate::routes::summary_value(&state).await?;
    let stamp = model::artifact::TsAllocator::new(&state.agent_id).next(Utc::now());
    let relative = format!("artifacts/metrics/{stamp}");
    let prometheus = (state.metrics)();
    let text = serde_json::to_vec_pretty(&summary)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "internal error; see the server log"))?;
    let files = vec![("summary.json".to_owned(), text), ("metrics.prom".to_owned(), prometheus.into_bytes())];
    api.artifacts.put_all(&relative, files).await.map_err(|err| {
        tracing::error!(error = %err, "could not write a metrics snapshot");
        ApiError::new(ErrorCode::Unavailable, "the snapshot could not be written; see the server log")
    })?;
    Ok((axum::http::StatusCode::CREATED, Json(json!({ "path": relative, "files": ["summary.json", "metrics.prom"] }))))
}

/// Artifact families that may be read through the API.
const ARTIFACT_FAMILIES: [&str; 7] =
    ["mcp", "metrics", "gate-run", "full-scenario", "docker-scenario", "decisions", "codegen"];

/// Largest artifact file served.
const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;

/// `GET /api/artifacts/<family>/…`: a file's bytes, or a directory's listing. Every segment must be
/// a plain name (no `..`, no separators, no hidden names) and the resolved path must stay inside
/// the artifacts directory (symbolic links included).
pub(crate) async fn artifact(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
) -> Result<axum::response::Response, ApiError> {
    let api = api(&state)?;
    let segments: Vec<&str> = path.split('/').collect();
    let refused =
        || ApiError::new(ErrorCode::InvalidRequest, "an artifact path is <family>/<name>/…: plain names only");
    if segments.len() > 8
        || !ARTIFACT_FAMILIES.contains(&segments[0])
        || segments.iter().any(|s| s.starts_with('.') || model::artifact::safe_segment(s).is_err())
    {
        return Err(refused());
    }
    let relative = format!("artifacts/{path}");
    match api.artifacts.size(&relative).await.map_err(artifact_error)? {
        Some(size) if size > MAX_ARTIFACT_BYTES => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("artifact {path} is larger than {MAX_ARTIFACT_BYTES} bytes"),
        )),
        Some(_) => {
            let bytes = api.artifacts.get(&relative, MAX_ARTIFACT_BYTES).await.map_err(artifact_error)?;
            let kind = match path.rsplit_once('.').map(|(_, ext)| ext) {
                Some("json") => "application/json",
                Some("png") => "image/png",
                Some("jpg") => "image/jpeg",
                Some("gif") => "image/gif",
                Some("webp") => "image/webp",
                Some("prom" | "txt" | "log") => "text/plain; charset=utf-8",
                _ => "application/octet-stream",
            };
            Ok(([(axum::http::header::CONTENT_TYPE, kind)], bytes).into_response())
        }
        None => {
            let entries = api.artifacts.list(&relative).await.map_err(|err| match err {
                artifacts::ArtifactError::NotFound(_) => {
                    ApiError::new(ErrorCode::NotFound, format!("no artifact {path}"))
                }
                other => artifact_error(other),
            })?;
            let files: Vec<Value> =
                entries.iter().map(|e| json!({ "name": e.name, "dir": e.dir, "bytes": e.bytes })).collect();
            Ok(Json(json!({ "path": path, "entries": files })).into_response())
        }
    }
}
