//! COGO's HTTP API: the routes over the store, guarded by the route policies (deny by default),
//! the admin token, security headers, body limits and timeouts; errors as `{code, message}`.
//!
//! Invariants: a route missing from `route_policies.json` answers 404 whether or not it exists in
//! code; 5xx bodies never carry internals (the real error is logged); tokens are compared in
//! constant time and never logged.

mod dashboard;
mod error;
mod goal_routes;
mod knowledge_routes;
mod limit;
mod mcp_routes;
mod openapi;
mod routes;
mod security;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use error::{ApiError, ErrorCode};
pub use goal_routes::GoalsApi;
pub use knowledge_routes::KnowledgeApi;
pub use mcp_routes::McpApi;
pub use routes::MINIMAL_ROUTES;
pub use security::Scope;

/// Renders the Prometheus text of this process.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the server needs.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: store::Store,
    /// The route allowlist.
    pub routes: Arc<model::config::RoutePolicies>,
    /// The admin token (`x-admin-token`); `None` refuses every admin route.
    pub admin_token: Option<Arc<str>>,
    /// API tokens accepted for `token` routes (the admin token is accepted too).
    pub api_tokens: Arc<Vec<String>>,
    /// Prometheus rendering.
    pub metrics: MetricsRender,
    /// This process's agent id.
    pub agent_id: Arc<str>,
    /// The MCP gateway for the MCP routes (`None`: they answer 503).
    pub mcp: Option<Arc<McpApi>>,
    /// The knowledge layer for the knowledge routes (`None`: search and ingest answer 503).
    pub knowledge: Option<Arc<KnowledgeApi>>,
    /// The goal routes (`None`: they answer 503).
    pub goals: Option<Arc<GoalsApi>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("agent_id", &self.agent_id)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Limits on every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Requests per second allowed to one client address and, separately, to one token
    /// (0 turns rate limiting off).
    pub rate_per_second: u32,
    /// Requests a client or token may make at once above the steady rate.
    pub rate_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            rate_per_second: 100,
            rate_burst: 200,
        }
    }
}

/// The address of the client of a connection, over plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The process's stop signal for long-lived answers (the live event stream).
fn shutdown_signal() -> &'static tokio::sync::watch::Sender<bool> {
    static SIGNAL: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    SIGNAL.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// Ends every live event stream of this process: call it when the server starts its graceful
/// shutdown, or the shutdown waits for clients that never hang up.
pub fn begin_shutdown() {
    shutdown_signal().send_replace(true);
}

/// Resolves once [`begin_shutdown`] was called.
pub(crate) async fn shutting_down() {
    let mut stopped = shutdown_signal().subscribe();
    let _ = stopped.wait_for(|stopping| *stopping).await;
}

/// The whole application router. Serve it with
/// `into_make_service_with_connect_info::<ClientAddr>()` so rate limits apply per client address.
pub fn router(state: AppState, limits: Limits) -> Router {
    layered(routes::router(state.clone()), state, limits)
}

/// The lightweight server (`cogo serve --minimal`): health, metrics, summaries and artifacts
/// ([`MINIMAL_ROUTES`]) under the same security layers; every other route answers 404.
pub fn minimal_router(state: AppState, limits: Limits) -> Router {
    layered(routes::minimal_router(state.clone()), state, limits)
}

fn layered(routes: Router, state: AppState, limits: Limits) -> Router {
    let limiter = limit::RateLimits::new(limits.rate_per_second, limits.rate_burst).map(Arc::new);
    let tokens = Arc::new(security::TokenCache::default());
    routes
        .layer(axum::middleware::from_fn_with_state((state, tokens), security::guard))
        .layer(axum::middleware::from_fn_with_state(limiter, limit::rate_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn(security::headers))
}
