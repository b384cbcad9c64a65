//! The route handlers: health, Prometheus, messages, events, traces, dead letters, agents, summary.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use model::{MessageId, MessageStatus};
use store::{EventFilter, MessageFilter, PageRequest};

use crate::error::ApiPath;
use crate::{ApiError, AppState, ErrorCode, Scope};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/api/messages", get(messages))
        .route("/api/messages/{id}", get(message))
        .route("/api/events", get(events))
        .route("/api/events/stream", get(event_stream))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/dlq", get(dead_letters))
        .route("/api/dlq/{id}/requeue", post(requeue))
        .route("/api/agents", get(agents))
        .route("/api/metrics/summary", get(summary))
        .route("/api/openapi.json", get(crate::openapi::openapi))
        .merge(crate::mcp_routes::router())
        .merge(crate::knowledge_routes::router())
        .merge(crate::goal_routes::router())
        .merge(crate::edge_routes::router())
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(Extension(std::sync::Arc::new(SummaryCache::default())))
        .with_state(state)
}

/// The routes of `cogo serve --minimal`: health, metrics, summaries and artifacts, nothing that
/// changes state or calls out. Paths as in the OpenAPI document.
pub const MINIMAL_ROUTES: [(&str, &str); 10] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/metrics/summary"),
    ("get", "/api/metrics/mcp/summary"),
    ("get", "/api/metrics/mcp/series"),
    ("get", "/api/metrics/mcp/events"),
    ("get", "/api/metrics/mcp/artifacts/summary"),
    ("get", "/api/artifacts/{path}"),
    ("get", "/api/openapi.json"),
];

/// The lightweight server's router: [`MINIMAL_ROUTES`] only; everything else is 404.
pub(crate) fn minimal_router(state: AppState) -> Router {
    use crate::mcp_routes as mcp;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/api/metrics/summary", get(summary))
        .route("/api/metrics/mcp/summary", get(mcp::summary))
        .route("/api/metrics/mcp/series", get(mcp::series))
        .route("/api/metrics/mcp/events", get(mcp::events))
        .route("/api/metrics/mcp/artifacts/summary", get(mcp::artifacts_summary))
        .route("/api/artifacts/{*path}", get(mcp::artifact))
        .route("/api/openapi.json", get(crate::openapi::openapi_minimal))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route (this is the minimal server)") })
        .layer(Extension(std::sync::Arc::new(SummaryCache::default())))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|err| {
        tracing::warn!(error = %err, "readiness check failed");
        ApiError::new(ErrorCode::Unavailable, "the database does not answer")
    })?;
    Ok(Json(json!({ "status": "ready", "backend": state.store.kind().name() })))
}

async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], (state.metrics)())
}

/// Largest page a listing serves.
const MAX_PAGE: u32 = 1000;

fn page(after: Option<String>, limit: Option<u32>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit > MAX_PAGE {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit {limit} is over the maximum of {MAX_PAGE}"),
        ));
    }
    Ok(PageRequest { after, limit })
}

pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|rejection| {
        ApiError::new(ErrorCode::InvalidRequest, format!("bad query string: {}", rejection.body_text()))
    })
}

fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    id.parse().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, format!("{id:?} is not a message id (a UUID)")))
}

/// Query of message and dead-letter listings.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageQuery {
    tenant: Option<String>,
    service: Option<String>,
    role: Option<String>,
    #[schemars(with = "Option<MessageStatus>")]
    status: Option<String>,
    intent: Option<String>,
    trace_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// The `next` cursor of the previous page (a message id).
    #[schemars(
        regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        length(min = 36, max = 36)
    )]
    after: Option<String>,
    /// Items per page (at most 1000).
    #[schemars(range(max = 1000))]
    limit: Option<u32>,
}

impl MessageQuery {
    fn split(self) -> Result<(MessageFilter, PageRequest), ApiError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("status {s:?} is not one of queued, claimed, done, failed"),
                )
            })?),
        };
        let filter = MessageFilter {
            tenant: self.tenant,
            service: self.service,
            role: self.role,
            status,
            intent: self.intent,
            trace_id: self.trace_id,
            since: self.since,
            until: self.until,
        };
        Ok((filter, page(self.after, self.limit)?))
    }
}

async fn messages(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<MessageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (mut filter, page) = query(q)?.split()?;
    limit_to(&scope, &mut filter.tenant);
    Ok(Json(state.store.messages(&filter, &page).await?))
}

/// A tenant token's listings are limited to its tenant, whatever the query asks.
pub(crate) fn limit_to(scope: &Scope, tenant: &mut Option<String>) {
    if let Some(only) = scope.tenant() {
        *tenant = Some(only.to_owned());
    }
}

async fn message(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let message = state.store.message(parse_id(&id)?).await?;
    if scope.tenant().is_some_and(|tenant| tenant != message.tenant) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no message {id}")));
    }
    Ok(Json(message))
}

/// Query of event listings.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    tenant: Option<String>,
    service: Option<String>,
    role: Option<String>,
    event_type: Option<String>,
    #[schemars(
        regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        length(min = 36, max = 36)
    )]
    message_id: Option<String>,
    trace_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// The `next` cursor of the previous page (an event sequence number).
    #[schemars(pattern(r"^[0-9]{1,18}$"))]
    after: Option<String>,
    /// Items per page (at most 1000).
    #[schemars(range(max = 1000))]
    limit: Option<u32>,
}

impl EventQuery {
    /// The store's filter and page.
    pub(crate) fn split(self) -> Result<(EventFilter, PageRequest), ApiError> {
        let filter = EventFilter {
            tenant: self.tenant,
            service: self.service,
            role: self.role,
            event_type: self.event_type,
            message_id: self.message_id.as_deref().map(parse_id).transpose()?,
            trace_id: self.trace_id,
            since: self.since,
            until: self.until,
        };
        Ok((filter, page(self.after, self.limit)?))
    }
}

async fn events(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (mut filter, page) = query(q)?.split()?;
    limit_to(&scope, &mut filter.tenant);
    Ok(Json(state.store.events(&filter, &page).await?))
}

/// Query of the live event stream.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    tenant: Option<String>,
    service: Option<String>,
    role: Option<String>,
    event_type: Option<String>,
    trace_id: Option<String>,
    /// Start after this event sequence number (default: only new events).
    #[schemars(pattern(r"^[0-9]{1,18}$"))]
    after: Option<String>,
}

/// Server-sent events: one `data:` JSON event per bus event, `id:` = its sequence number, so a
/// client that reconnects with `Last-Event-ID` misses nothing.
async fn event_stream(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: axum::http::HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures_util::StreamExt;
    let q = query(q)?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let requested = last_event_id.or(q.after);
    if let Some(cursor) = &requested
        && cursor.parse::<i64>().is_err()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("event cursor {cursor:?} is not a sequence number"),
        ));
    }
    let cursor = match requested {
        Some(cursor) => Some(cursor),
        None => state.store.latest_event_cursor().await?,
    };
    let mut tenant = q.tenant;
    limit_to(&scope, &mut tenant);
    let filter = EventFilter {
        tenant,
        service: q.service,
        role: q.role,
        event_type: q.event_type,
        trace_id: q.trace_id,
        ..EventFilter::default()
    };
    let stream = state.store.follow_events(filter, cursor, std::time::Duration::from_millis(250)).flat_map(|batch| {
        let items: Vec<Result<SseEvent, std::convert::Infallible>> = match batch {
            Ok(events) => events
                .into_iter()
                .map(|event| {
                    let frame = SseEvent::default().id(event.seq.to_string()).event(event.event_type.clone());
                    Ok(frame.json_data(&event).unwrap_or_else(|_| SseEvent::default().comment("unserializable event")))
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "event stream stopped");
                vec![Ok(SseEvent::default()
                    .event("error")
                    .data("the event stream stopped; reconnect with Last-Event-ID"))]
            }
        };
        futures_util::stream::iter(items)
    });
    // a stopping server ends the stream, so graceful shutdown does not wait for the client
    let stream = stream.take_until(crate::shutting_down());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn trace(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    ApiPath(trace_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !model::trace::is_valid_trace_id(&trace_id) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "a trace id is 32 lower-case hex digits"));
    }
    let tenant = scope.tenant().map(str::to_owned);
    let filter = EventFilter { trace_id: Some(trace_id.clone()), tenant: tenant.clone(), ..EventFilter::default() };
    let events = state.store.events(&filter, &PageRequest::first(1000)).await?;
    let messages = state
        .store
        .messages(
            &MessageFilter { trace_id: Some(trace_id.clone()), tenant, ..MessageFilter::default() },
            &PageRequest::first(1000),
        )
        .await?;
    Ok(Json(json!({ "trace_id": trace_id, "messages": messages.items, "events": events.items })))
}

async fn dead_letters(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<MessageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (mut filter, page) = query(q)?.split()?;
    limit_to(&scope, &mut filter.tenant);
    filter.status = Some(filter.status.unwrap_or(MessageStatus::Failed));
    Ok(Json(state.store.dead_letters(&filter, &page).await?))
}

async fn requeue(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<impl IntoResponse, ApiError> {
    let message = state.store.requeue(parse_id(&id)?).await?;
    tracing::info!(message_id = %message.id, "requeued from the dead-letter queue by an operator");
    Ok(Json(message))
}

async fn agents(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "agents": state.store.presence().await? })))
}

/// How long a computed summary is served before it is computed again: callers that poll (the
/// dashboard, many at once) share one computation per interval.
const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last summary computed, shared by concurrent callers (one computes, the others wait for it).
#[derive(Debug, Default)]
pub(crate) struct SummaryCache(tokio::sync::Mutex<Option<(std::time::Instant, Value)>>);

async fn summary(
    State(state): State<AppState>,
    Extension(cache): Extension<std::sync::Arc<SummaryCache>>,
) -> Result<impl IntoResponse, ApiError> {
    let mut slot = cache.0.lock().await;
    if let Some((at, value)) = slot.as_ref()
        && at.elapsed() < SUMMARY_TTL
    {
        return Ok(Json(value.clone()));
    }
    let value = summary_value(&state).await?;
    *slot = Some((std::time::Instant::now(), value.clone()));
    Ok(Json(value))
}

/// The whole summary: MCP (last 24 hours), circuits, bus, agents, all from the store.
pub(crate) async fn summary_value(state: &AppState) -> Result<Value, ApiError> {
    let since = crate::mcp_routes::default_since(state);
    let (mcp, queues, circuits, agents) = tokio::try_join!(
        state.store.mcp_summary(since),
        state.store.queue_stats(),
        state.store.circuits(),
        state.store.presence()
    )?;
    let online = agents.iter().filter(|a| a.status == model::presence::PresenceStatus::Online).count();
    let ready: i64 = queues.iter().map(|q| q.ready).sum();
    let delayed: i64 = queues.iter().map(|q| q.delayed).sum();
    let claimed: i64 = queues.iter().map(|q| q.claimed).sum();
    let oldest = queues.iter().filter_map(|q| q.oldest_ready_age_ms).max();
    Ok(json!({
        "summary": {
            "mcp": mcp,
            "circuits": resilience::summarize(&circuits),
            "bus": { "ready": ready, "delayed": delayed, "claimed": claimed, "oldestReadyAgeMs": oldest, "queues": queues },
            "agents": { "online": online, "total": agents.len() },
        }
    }))
}
