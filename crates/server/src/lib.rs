//! COGO's HTTP API: the routes over the store, guarded by the route policies (deny by default),
//! the admin token, security headers, body limits and timeouts; errors as `{code, message}`.
//!
//! Invariants: a route missing from `route_policies.json` answers 404 whether or not it exists in
//! code; 5xx bodies never carry internals (the real error is logged); tokens are compared in
//! constant time and never logged.

mod error;
mod mcp_routes;
mod routes;
mod security;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use error::{ApiError, ErrorCode};
pub use mcp_routes::McpApi;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 2 * 1024 * 1024, request_timeout: Duration::from_secs(30) }
    }
}

/// The whole application router.
pub fn router(state: AppState, limits: Limits) -> Router {
    routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, security::guard))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn(security::headers))
}
