//! COGO's HTTP API: the routes over the store, guarded by the route policies (deny by default),
//! the admin token, security headers, body limits and timeouts; errors as `{code, message}`;
//! [`serve`], which serves them with a bound on how long a client may take to send a request.
//!
//! Invariants: a route missing from `route_policies.json` answers 404 whether or not it exists in
//! code; 5xx bodies never carry internals (the real error is logged); tokens are compared in
//! constant time and never logged; a client address that keeps sending wrong tokens has its tokens
//! refused unchecked for a while.

mod conn;
mod dashboard;
mod edge_routes;
mod error;
mod goal_routes;
mod knowledge_routes;
mod limit;
mod mcp_routes;
mod openapi;
mod routes;
mod security;
pub mod shared_limit;
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
pub use shared_limit::{SharedLimitError, SharedRateLimits};

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
    /// Request rate limits shared with other replicas through Redis (`None`: in memory).
    pub shared_limits: Option<SharedRateLimits>,
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
    /// Largest request body, with `Content-Length` or chunked (a larger one is answered 413).
    pub max_body_bytes: usize,
    /// Longest a request may take once its head has arrived, reading its body included (408).
    pub request_timeout: Duration,
    /// Longest a connection may take to send a request's head (request line and headers), and
    /// so also the longest a kept-alive connection may stay idle: past it the connection is
    /// closed without an answer. Applies only to connections served by [`serve`].
    pub header_read_timeout: Duration,
    /// Requests per second allowed to one client address and, separately, to one token
    /// (0 turns rate limiting off).
    pub rate_per_second: u32,
    /// Requests a client or token may make at once above the steady rate.
    pub rate_burst: u32,
    /// Failed authentications per second allowed to one client address (an IPv4 address or an
    /// IPv6 /64), whatever the rate limit above: a request carrying a token (admin header or
    /// bearer) that is wrong counts, a wrong token sent again does not. Over it, every request
    /// from that address that carries a token is answered 429 with `Retry-After` before its token
    /// is checked, so guessing learns nothing. 0 turns this limit off.
    pub auth_failures_per_second: u32,
    /// Failed authentications a client address may make at once above the steady rate.
    pub auth_failure_burst: u32,
    /// Connections one client address (an IPv4 address or an IPv6 /64) may hold open at once;
    /// one more is answered 429 and closed. 0: no limit. Applies only to [`serve`].
    pub max_connections_per_client: usize,
    /// Connections the server holds open at once, all clients together; one more is answered
    /// 503 and closed. 0: no limit. Applies only to [`serve`].
    pub max_connections: usize,
    /// Longest a write to a client may wait while the client reads nothing (its socket buffers
    /// full); past it the connection is closed. A quiet connection is not affected. Applies only
    /// to [`serve`].
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            rate_per_second: 100,
            rate_burst: 200,
            auth_failures_per_second: 1,
            auth_failure_burst: 10,
            max_connections_per_client: 256,
            max_connections: 4096,
            write_timeout: Duration::from_secs(30),
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

/// The layers every router gets, innermost first: the body is read (after the guard, so an
/// unauthenticated client never has its body read), the guard, rate limits, the early refusal of
/// a declared body over the limit, the request timeout, security headers.
fn layered(routes: Router, state: AppState, limits: Limits) -> Router {
    let limiter =
        limit::RateLimits::new(limits.rate_per_second, limits.rate_burst, state.shared_limits.clone()).map(Arc::new);
    let guard = security::Guard {
        app: state,
        tokens: Arc::new(security::TokenCache::default()),
        failures: limit::AuthFailures::new(limits.auth_failures_per_second, limits.auth_failure_burst).map(Arc::new),
    };
    routes
        .layer(axum::middleware::from_fn_with_state(limits.max_body_bytes, limit::read_body))
        .layer(axum::middleware::from_fn_with_state(guard, security::guard))
        .layer(axum::middleware::from_fn_with_state(limiter, limit::rate_limit))
        .layer(axum::middleware::from_fn_with_state(limits.max_body_bytes, limit::declared_body))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, security::headers))
}

/// Serves `app` on `listener` (plain TCP, or [`tls::TlsListener`]) until `shutdown` resolves;
/// then stops accepting, lets the open connections finish the request they are on, and returns.
///
/// HTTP/1.1 as `axum::serve` does, plus what it lacks: every request carries its client's
/// address (`ConnectInfo<ClientAddr>`, for the rate limits), and a connection that takes longer
/// than [`Limits::header_read_timeout`] to send a request's head, or stays idle that long between
/// requests, is closed, so slow or silent clients cannot hold connections open for ever. A client
/// over [`Limits::max_connections_per_client`], or any client once the server holds
/// [`Limits::max_connections`], is answered 429 or 503 and closed; a write that waits on a client
/// that reads nothing for [`Limits::write_timeout`] closes its connection.
pub async fn serve<L, F>(mut listener: L, app: Router, limits: Limits, shutdown: F)
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    F: std::future::Future<Output = ()>,
{
    use tower::ServiceExt as _;
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let gate = conn::ConnectionGate::new(limits.max_connections_per_client, limits.max_connections);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // the stop signal first: a steady stream of connections must not keep it unpolled
        let (io, client) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let permit = match gate.admit(client) {
            Ok(permit) => permit,
            Err(refused) => {
                metrics::counter!(model::metrics::HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => refused.label())
                    .increment(1);
                tracing::debug!(%client, reason = refused.label(), "connection refused");
                let (per_client, total) = gate.limits();
                conn::refuse(io, &refused.answer(per_client, total));
                continue;
            }
        };
        let io = conn::Guarded::new(io, permit, limits.write_timeout);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(ClientAddr(client)));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let mut stop = stop.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            // with upgrades: the edge workers' WebSocket
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(%client, error = %err, "connection closed on an error");
            }
        });
    }
    drop(listener);
    stopping.send_replace(true);
    while connections.join_next().await.is_some() {}
}
