//! `GET /api/edge/connect`: the edge workers' WebSocket. An edge worker (behind NAT, outbound
//! connections only) says hello with the queues it serves; the server then claims, extends,
//! completes, fails and releases on its behalf under the agent id `edge:<token id>:<name>`, with
//! the store's lease checks, and pushes a wake frame when a served queue may have work. The worker
//! is present (`agent_presence`) while connected and offline once its last connection ends; its
//! leases outlive a dropped connection and expire as any worker's would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{Semaphore, mpsc};

use model::edge::{self, ClientFrame, QueueRef, ServerFrame, WireAction, WireOutcome};
use model::presence::{Presence, PresenceStatus};

use crate::{ApiError, AppState, ErrorCode, Scope};

/// How long a worker has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings the worker and renews its presence.
const PING_EVERY: Duration = Duration::from_secs(10);
/// A worker silent this long (no frame, no pong) is disconnected.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// Requests of one connection served at once; more wait (the socket is not read meanwhile).
const REQUESTS_AT_ONCE: usize = 32;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(edge::CONNECT_PATH, get(connect))
}

/// Upgrades to the edge protocol; only an edge worker token (one that names roles) may.
pub(crate) async fn connect(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Scope::Edge { token_id, roles } = scope else {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} takes only an edge worker token: make one with `cogo tokens create --edge --roles …`",
                edge::CONNECT_PATH
            ),
        )
        .into_response();
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{} is a WebSocket (an edge worker connects with `cogo worker --server`): {rejection}",
                    edge::CONNECT_PATH
                ),
            )
            .into_response();
        }
    };
    upgrade
        .max_message_size(edge::MAX_FRAME_BYTES)
        .max_frame_size(edge::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(state, token_id, roles, socket))
}

/// Live connections per edge agent id in this process: the worker goes offline when its last
/// one ends (a reconnect may overlap the end of the connection it replaces).
fn live() -> &'static Mutex<HashMap<String, usize>> {
    static LIVE: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

fn lock_live() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
    live().lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts one live connection of an agent for as long as it is held.
struct LiveConnection {
    agent_id: String,
}

impl LiveConnection {
    fn open(agent_id: &str) -> Self {
        *lock_live().entry(agent_id.to_owned()).or_default() += 1;
        metrics::gauge!(model::metrics::EDGE_CONNECTIONS_OPEN).increment(1.0);
        Self { agent_id: agent_id.to_owned() }
    }

    /// Ends this one; true when it was the agent's last.
    fn close(self) -> bool {
        let mut live = lock_live();
        let last = match live.get_mut(&self.agent_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                live.remove(&self.agent_id);
                true
            }
        };
        metrics::gauge!(model::metrics::EDGE_CONNECTIONS_OPEN).decrement(1.0);
        std::mem::forget(self);
        last
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        // only reached when `close` was not called (a panicking task): keep the count right
        let mut live = lock_live();
        if let Some(count) = live.get_mut(&self.agent_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.remove(&self.agent_id);
            }
        }
        metrics::gauge!(model::metrics::EDGE_CONNECTIONS_OPEN).decrement(1.0);
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame)
        .unwrap_or_else(|_| r#"{"type":"error","message":"encoding failed","transient":true}"#.to_owned());
    socket.send(WsMessage::Text(text.into())).await
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.chars().take(120).collect::<String>().into() };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}

/// Refuses a connection with an error frame and a close frame naming the problem.
async fn refuse(mut socket: WebSocket, message: String) {
    tracing::warn!(reason = %message, "edge worker refused");
    let _ = send(&mut socket, &ServerFrame::Error { id: None, message: message.clone(), transient: false }).await;
    close(socket, close_code::POLICY, &message).await;
}

/// The hello, checked: the queues must be few, well named and within the token's roles.
fn check_hello(frame: ClientFrame, roles: &[String]) -> Result<(String, String, String, Vec<QueueRef>), String> {
    let ClientFrame::Hello { version, name, host, software, queues } = frame else {
        return Err("the first frame must be a hello".to_owned());
    };
    if !(edge::MIN_PROTOCOL_VERSION..=edge::PROTOCOL_VERSION).contains(&version) {
        return Err(format!(
            "protocol version {version} is not spoken here (this server speaks {} to {}): run the same COGO version on the worker, upgrading servers first",
            edge::MIN_PROTOCOL_VERSION,
            edge::PROTOCOL_VERSION
        ));
    }
    if !edge::valid_name(&name) {
        return Err(format!("worker name {name:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    if queues.is_empty() || queues.len() > edge::MAX_QUEUES {
        return Err(format!("a worker serves 1 to {} queues, not {}", edge::MAX_QUEUES, queues.len()));
    }
    for queue in &queues {
        if !roles.contains(&queue.role) {
            return Err(format!(
                "this edge token may serve roles {}, not {:?}: make a token with `cogo tokens create --edge --roles …`",
                roles.join(","),
                queue.role
            ));
        }
        if queue.shards.len() > 64 || queue.shards.iter().any(|s| s.len() > 64) {
            return Err(format!("queue {}/{} names too many or too long shards", queue.service, queue.role));
        }
    }
    let host: String = host.chars().take(255).collect();
    let software: String = software.chars().take(64).collect();
    Ok((name, host, software, queues))
}

async fn session(state: AppState, token_id: String, roles: Vec<String>, mut socket: WebSocket) {
    // the hello
    let first = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(WsMessage::Text(text)))) => serde_json::from_str::<ClientFrame>(&text)
            .map_err(|e| format!("the first frame must be a hello of edge protocol {}: {e}", edge::PROTOCOL_VERSION)),
        Ok(Some(Ok(_))) => Err("the first frame must be a JSON text frame".to_owned()),
        Ok(Some(Err(_)) | None) => return,
        Err(_) => Err(format!("no hello within {} s", HELLO_TIMEOUT.as_secs())),
    };
    let (name, host, software, queues) = match first.and_then(|frame| check_hello(frame, &roles)) {
        Ok(hello) => hello,
        Err(why) => return refuse(socket, why).await,
    };
    let agent_id = edge::agent_id(&token_id, &name);
    let presence = Presence {
        agent_id: agent_id.clone(),
        service: "edge".to_owned(),
        roles: queues.iter().map(|q| q.role.clone()).collect(),
        shard: String::new(),
        host,
        version: software,
        status: PresenceStatus::Online,
        started_at: state.store.clock().now(),
        last_heartbeat: state.store.clock().now(),
        capabilities: serde_json::json!({
            "edge": true,
            "server": state.agent_id.as_ref(),
            "queues": queues.iter().map(|q| format!("{}/{}", q.service, q.role)).collect::<Vec<_>>(),
        }),
    };
    if let Err(err) = state.store.presence_online(&presence).await {
        tracing::warn!(agent_id, error = %err, "edge worker not registered: the database is unavailable");
        let message = "the server's database is unavailable: the worker reconnects and tries again".to_owned();
        let _ = send(&mut socket, &ServerFrame::Error { id: None, message: message.clone(), transient: true }).await;
        return close(socket, close_code::AGAIN, &message).await;
    }
    let welcome = ServerFrame::Welcome { agent_id: agent_id.clone(), now: state.store.clock().now() };
    if send(&mut socket, &welcome).await.is_err() {
        // gone before it was welcomed: not present (unless another connection of it is live)
        if !lock_live().contains_key(&agent_id) {
            let _ = state.store.presence_offline(&agent_id, "disconnected").await;
        }
        return;
    }
    let connection = LiveConnection::open(&agent_id);
    tracing::info!(agent_id, queues = ?presence.capabilities["queues"], "edge worker connected");
    let (out, mut outgoing) = mpsc::channel::<ServerFrame>(256);
    let mut side_tasks = tokio::task::JoinSet::new();
    let mut wakes = tokio::task::JoinSet::new();
    for queue in &queues {
        let notify = state.store.wakeups().queue(&queue.service, &queue.role);
        let (out, service, role) = (out.clone(), queue.service.clone(), queue.role.clone());
        wakes.spawn(async move {
            loop {
                notify.notified().await;
                // a full channel already holds frames that make the worker look again
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    out.try_send(ServerFrame::Wake { service: service.clone(), role: role.clone() })
                {
                    return;
                }
            }
        });
    }
    // a revoked token ends its live connections too, within a ping or two
    let (revoked_tx, mut revoked) = tokio::sync::oneshot::channel::<()>();
    {
        let (store, token_id) = (state.store.clone(), token_id.clone());
        wakes.spawn(async move {
            loop {
                tokio::time::sleep(PING_EVERY).await;
                match store.api_token(&token_id).await {
                    Ok(Some(token)) if token.revoked_at.is_none() => {}
                    Ok(_) => {
                        let _ = revoked_tx.send(());
                        return;
                    }
                    // the database is away: the token is checked again next time
                    Err(_) => {}
                }
            }
        });
    }
    let context = Arc::new(Context { state: state.clone(), agent_id: agent_id.clone(), queues });
    let permits = Arc::new(Semaphore::new(REQUESTS_AT_ONCE));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut stopping = std::pin::pin!(crate::shutting_down());
    let end = loop {
        tokio::select! {
            biased;
            () = &mut stopping => break (close_code::RESTART, "the server is stopping: reconnect".to_owned()),
            Ok(()) = &mut revoked => {
                let message = "the edge token was revoked".to_owned();
                let _ = send(&mut socket, &ServerFrame::Error { id: None, message: message.clone(), transient: false }).await;
                break (close_code::POLICY, message);
            }
            Some(frame) = outgoing.recv() => {
                if send(&mut socket, &frame).await.is_err() {
                    break (close_code::ABNORMAL, "sending failed".to_owned());
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break (close_code::AWAY, format!("nothing heard for {} s", SILENCE_LIMIT.as_secs()));
                }
                if socket.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break (close_code::ABNORMAL, "sending failed".to_owned());
                }
                let (store, agent_id, presence) = (state.store.clone(), agent_id.clone(), presence.clone());
                side_tasks.spawn(async move {
                    // back online if an overlapping connection's end marked the worker offline
                    if let Ok(false) = store.presence_heartbeat(&agent_id).await {
                        let _ = store.presence_online(&presence).await;
                    }
                });
            }
            incoming = socket.recv() => {
                last_heard = tokio::time::Instant::now();
                let text = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Binary(_))) => break (close_code::UNSUPPORTED, "frames are JSON text".to_owned()),
                    Some(Ok(WsMessage::Close(_))) | None => break (close_code::NORMAL, String::new()),
                    Some(Err(err)) => break (close_code::ABNORMAL, format!("reading failed: {err}")),
                };
                let frame = match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(frame) => frame,
                    Err(err) => {
                        let message = format!("a frame is not a request of protocol {}: {err}", edge::PROTOCOL_VERSION);
                        let _ = send(&mut socket, &ServerFrame::Error { id: None, message: message.clone(), transient: false }).await;
                        break (close_code::POLICY, message);
                    }
                };
                // requests run side by side; past the limit, the socket waits
                let Ok(permit) = permits.clone().acquire_owned().await else { break (close_code::ERROR, String::new()) };
                let (context, out) = (context.clone(), out.clone());
                side_tasks.spawn(async move {
                    let reply = context.serve(frame).await;
                    let _ = out.send(reply).await;
                    drop(permit);
                });
            }
        }
        while side_tasks.try_join_next().is_some() {}
    };
    // the replies of requests already under way still go out, briefly
    drop(out);
    wakes.abort_all();
    while wakes.join_next().await.is_some() {}
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = outgoing.recv().await {
            if send(&mut socket, &frame).await.is_err() {
                break;
            }
        }
    });
    let _ = drained.await;
    side_tasks.abort_all();
    let (code, reason) = end;
    close(socket, code, &reason).await;
    if connection.close()
        && let Err(err) = state.store.presence_offline(&agent_id, "disconnected").await
    {
        tracing::warn!(agent_id, error = %err, "edge worker not marked offline; presence marks it stale later");
    }
    tracing::info!(agent_id, code, reason, "edge worker disconnected");
}

/// What serving one request needs.
struct Context {
    state: AppState,
    agent_id: String,
    queues: Vec<QueueRef>,
}

fn lease(lease_ms: u64) -> Result<Duration, String> {
    if (edge::MIN_LEASE_MS..=edge::MAX_LEASE_MS).contains(&lease_ms) {
        Ok(Duration::from_millis(lease_ms))
    } else {
        Err(format!("lease_ms {lease_ms} is outside {}..={}", edge::MIN_LEASE_MS, edge::MAX_LEASE_MS))
    }
}

fn count(len: usize, what: &str) -> Result<(), String> {
    if len > edge::MAX_ITEMS {
        Err(format!("{len} {what} in one request; at most {}", edge::MAX_ITEMS))
    } else {
        Ok(())
    }
}

fn wire_outcome(outcome: store::Outcome) -> WireOutcome {
    match outcome {
        store::Outcome::Done => WireOutcome::Done,
        store::Outcome::Retrying { run_at } => WireOutcome::Retrying { run_at },
        store::Outcome::DeadLettered => WireOutcome::DeadLettered,
        store::Outcome::LeaseLost => WireOutcome::LeaseLost,
    }
}

/// A store failure as the worker sees it: what to do, no internals.
fn store_error(id: u64, op: &str, agent_id: &str, err: &store::Error) -> ServerFrame {
    let transient = err.is_transient() || matches!(err, store::Error::Database { .. });
    tracing::warn!(agent_id, op, error = %err, transient, "edge request failed");
    let message = if transient {
        format!("{op} failed: the server's database is unavailable; retry")
    } else {
        format!("{op} failed: {}", model::with_causes(err))
    };
    ServerFrame::Error { id: Some(id), message, transient }
}

impl Context {
    async fn serve(&self, frame: ClientFrame) -> ServerFrame {
        let (id, op) = match &frame {
            ClientFrame::Hello { .. } => (0, "hello"),
            ClientFrame::Claim { id, .. } => (*id, "claim"),
            ClientFrame::Extend { id, .. } => (*id, "extend"),
            ClientFrame::Complete { id, .. } => (*id, "complete"),
            ClientFrame::Fail { id, .. } => (*id, "fail"),
            ClientFrame::Release { id, .. } => (*id, "release"),
            ClientFrame::Circuit { id, .. } => (*id, "circuit"),
        };
        let reply = match self.run(frame).await {
            Ok(reply) => Ok(reply),
            Err(Refusal::Refused(message)) => {
                Err(ServerFrame::Error { id: Some(id), message: format!("{op} refused: {message}"), transient: false })
            }
            Err(Refusal::Store(err)) => Err(store_error(id, op, &self.agent_id, &err)),
        };
        let outcome = match &reply {
            Ok(_) => "ok",
            Err(ServerFrame::Error { transient: true, .. }) => "error",
            Err(_) => "refused",
        };
        metrics::counter!(model::metrics::EDGE_REQUESTS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
        reply.unwrap_or_else(|error| error)
    }

    async fn run(&self, frame: ClientFrame) -> Result<ServerFrame, Refusal> {
        let store = &self.state.store;
        let agent = self.agent_id.as_str();
        match frame {
            ClientFrame::Hello { .. } => Err(Refusal::Refused("the hello was already said".to_owned())),
            ClientFrame::Claim { id, service, role, shards, limit, lease_ms } => {
                let Some(queue) = self.queues.iter().find(|q| q.service == service && q.role == role) else {
                    return Err(Refusal::Refused(format!("{service}/{role} was not named in the hello")));
                };
                if shards.iter().any(|s| !s.is_empty() && !queue.shards.contains(s)) {
                    return Err(Refusal::Refused(format!("shards {shards:?} were not named in the hello")));
                }
                if limit == 0 || limit > edge::MAX_CLAIM {
                    return Err(Refusal::Refused(format!("limit {limit} is outside 1..={}", edge::MAX_CLAIM)));
                }
                let lease = lease(lease_ms).map_err(Refusal::Refused)?;
                let shard_refs: Vec<&str> = shards.iter().filter(|s| !s.is_empty()).map(String::as_str).collect();
                let request = store::ClaimRequest::new(&service, &role, agent, limit, lease).with_shards(&shard_refs);
                let messages = store.claim(&request).await?;
                Ok(ServerFrame::Claimed { id, messages })
            }
            ClientFrame::Extend { id, ids, lease_ms } => {
                count(ids.len(), "ids").map_err(Refusal::Refused)?;
                let lease = lease(lease_ms).map_err(Refusal::Refused)?;
                Ok(ServerFrame::Ids { id, ids: store.extend_leases(agent, &ids, lease).await? })
            }
            ClientFrame::Release { id, ids } => {
                count(ids.len(), "ids").map_err(Refusal::Refused)?;
                Ok(ServerFrame::Ids { id, ids: store.release(agent, &ids).await? })
            }
            ClientFrame::Complete { id, completions } => {
                count(completions.len(), "completions").map_err(Refusal::Refused)?;
                let completions = completions
                    .into_iter()
                    .map(|c| store::Completion {
                        id: c.id,
                        result: c.result,
                        result_url: c.result_url,
                        detail: c.detail,
                    })
                    .collect();
                let outcomes = store.complete(agent, completions).await?;
                Ok(ServerFrame::Outcomes { id, outcomes: outcomes.into_iter().map(wire_outcome).collect() })
            }
            ClientFrame::Circuit { id, key, transition, open_until } => {
                if !edge::valid_breaker_key(&key) {
                    return Err(Refusal::Refused(format!(
                        "breaker key {key:?} is not allowed: 1 to {} printable characters, no spaces",
                        edge::MAX_BREAKER_KEY
                    )));
                }
                let record = resilience::TransitionRecord { key, transition, at: chrono::Utc::now(), open_until };
                resilience::record_transition(store, agent, &record).await?;
                Ok(ServerFrame::Recorded { id })
            }
            ClientFrame::Fail { id, failures } => {
                count(failures.len(), "failures").map_err(Refusal::Refused)?;
                let failures = failures
                    .into_iter()
                    .map(|f| store::Failure {
                        id: f.id,
                        kind: f.kind,
                        error: f.error,
                        action: match f.action {
                            WireAction::RetryAfterMs(ms) => {
                                store::FailAction::Retry { after: Duration::from_millis(ms) }
                            }
                            WireAction::DeadLetter(reason) => store::FailAction::DeadLetter { reason },
                        },
                        detail: f.detail,
                    })
                    .collect();
                let outcomes = store.fail(agent, failures).await?;
                Ok(ServerFrame::Outcomes { id, outcomes: outcomes.into_iter().map(wire_outcome).collect() })
            }
        }
    }
}

/// Why a request was not served.
enum Refusal {
    /// The request breaks a rule (the worker's fault).
    Refused(String),
    /// The store failed.
    Store(store::Error),
}

impl From<store::Error> for Refusal {
    fn from(err: store::Error) -> Self {
        Self::Store(err)
    }
}
