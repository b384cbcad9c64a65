//! The edge worker's link to its server: one outbound WebSocket (`wss://` in production) over which
//! a worker with no database of its own serves its queues. [`EdgeQueue`] implements
//! [`worker::Queue`], so the same runtime that runs on the store runs here: the server claims,
//! extends, completes, fails and releases on the worker's behalf (see `model::edge` for the
//! protocol).
//!
//! Invariants:
//! - the link reconnects with backoff (100 ms doubling to 10 s, with jitter) until the worker
//!   stops; a request made while it is down waits for it up to the request timeout and then fails
//!   as transient, so the runtime retries it;
//! - a request whose answer is lost with the connection fails as transient; sending a completion
//!   twice is harmless (the server's lease check records it once);
//! - claimed messages whose caller gave up waiting are released at once, not left to their lease;
//! - a refused token or hello ends the link for good, with the server's reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, client::IntoClientRequest, http};

use model::edge::{self, ClientFrame, QueueRef, ServerFrame, WireAction, WireCompletion, WireFailure, WireOutcome};
use model::{Message, MessageId};
use store::{ClaimRequest, Completion, FailAction, Failure, Outcome};
use worker::{Queue, QueueError};

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not usable.
    #[error("server URL {url:?}: {why}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The token does not have the shape of a COGO token.
    #[error(
        "the token is not a COGO edge worker token (cogo_<id>_<secret>): make one with `cogo tokens create --edge --roles …`"
    )]
    Token,
    /// The worker name is not usable.
    #[error("worker name {0:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    /// The CA certificate file could not be used.
    #[error("CA certificate {path}: {why}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The server refused the worker (token, roles, version): retrying will not help.
    #[error("the server refused this edge worker: {0}")]
    Refused(String),
}

/// How to reach the server and what to serve.
#[derive(Clone)]
pub struct EdgeOptions {
    /// The server's base URL (`https://cogo.example`, `http://127.0.0.1:8080`) or the full
    /// `ws(s)://…/api/edge/connect` URL.
    pub server: String,
    /// The edge worker token (`cogo tokens create --edge`).
    pub token: zeroize::Zeroizing<String>,
    /// The worker's name, unique per token.
    pub name: String,
    /// Its host name, for presence.
    pub host: String,
    /// Queues it serves.
    pub queues: Vec<QueueRef>,
    /// A PEM file of CA certificates trusted besides the system's (a private CA, a self-signed
    /// server).
    pub ca_cert: Option<PathBuf>,
    /// How long a request may wait for the link and its answer before it fails as transient.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for EdgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeOptions")
            .field("server", &self.server)
            .field("token", &"***")
            .field("name", &self.name)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

/// The state of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting (again).
    Connecting,
    /// Connected; the server acts as this agent.
    Connected {
        /// The agent id the server claims under.
        agent_id: String,
    },
    /// Refused for good (a revoked token, a role the token does not name): the reason.
    Refused(String),
    /// Stopped (the queue was dropped).
    Stopped,
}

struct Pending {
    frame: ClientFrame,
    reply: oneshot::Sender<Result<ServerFrame, QueueError>>,
}

struct Inner {
    requests: mpsc::Sender<Pending>,
    wakeups: Mutex<HashMap<(String, String), Arc<Notify>>>,
    next_id: AtomicU64,
    state: watch::Receiver<LinkState>,
    request_timeout: Duration,
    agent_id: String,
    /// The server's clock minus this host's, in microseconds (from the last welcome): retry
    /// deadlines and claim ages are reckoned by the server's clock.
    clock_offset_us: std::sync::atomic::AtomicI64,
}

/// A [`worker::Queue`] served by a COGO server over the edge protocol.
#[derive(Clone)]
pub struct EdgeQueue {
    inner: Arc<Inner>,
}

/// The agent id the server will act under for `token` and `name` (`edge:<token id>:<name>`).
pub fn agent_id_for(token: &str, name: &str) -> Result<String, Error> {
    let rest = token.strip_prefix("cogo_").ok_or(Error::Token)?;
    let (id, secret) = rest.split_once('_').ok_or(Error::Token)?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(id, 12) && hex(secret, 48)) {
        return Err(Error::Token);
    }
    if !edge::valid_name(name) {
        return Err(Error::Name(name.to_owned()));
    }
    Ok(edge::agent_id(id, name))
}

/// The WebSocket URL of a server URL.
fn connect_url(server: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Url { url: server.to_owned(), why: why.to_owned() };
    let (scheme, rest) =
        server.split_once("://").ok_or_else(|| bad("it needs a scheme: https://, http://, wss:// or ws://"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => return Err(bad(&format!("scheme {other} is not one of https, http, wss, ws"))),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("it names no host"));
    }
    if rest.contains(['?', '#', '@']) {
        return Err(bad("it may not carry a query, a fragment or credentials (the token goes in --token)"));
    }
    let rest = rest.trim_end_matches('/');
    let url = if rest.ends_with(edge::CONNECT_PATH) {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{rest}{}", edge::CONNECT_PATH)
    };
    url.as_str().into_client_request().map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

fn tls_config(ca_cert: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_cert {
        let ca_error = |why: String| Error::CaCert { path: path.clone(), why };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in it".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Url { url: String::new(), why: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl EdgeQueue {
    /// Starts the link and waits for its first outcome, up to `first_wait`: a refusal is an
    /// error; an unreachable server is not (the link keeps trying, and requests wait for it).
    pub async fn start(options: EdgeOptions, first_wait: Duration) -> Result<Self, Error> {
        let agent_id = agent_id_for(&options.token, &options.name)?;
        let url = connect_url(&options.server)?;
        let tls = if url.starts_with("wss://") { Some(tls_config(options.ca_cert.as_ref())?) } else { None };
        let (requests, requests_rx) = mpsc::channel(1024);
        let (state_tx, state) = watch::channel(LinkState::Connecting);
        let inner = Arc::new(Inner {
            requests,
            wakeups: Mutex::default(),
            next_id: AtomicU64::new(1),
            state: state.clone(),
            request_timeout: options.request_timeout,
            agent_id,
            clock_offset_us: std::sync::atomic::AtomicI64::new(0),
        });
        let link = Link { url, tls, options, inner: Arc::downgrade(&inner), state: state_tx };
        tokio::spawn(link.run(requests_rx));
        let mut watching = state;
        let first = tokio::time::timeout(first_wait, watching.wait_for(|s| *s != LinkState::Connecting)).await;
        if let Ok(Ok(state)) = first
            && let LinkState::Refused(why) = &*state
        {
            return Err(Error::Refused(why.clone()));
        }
        Ok(Self { inner })
    }

    /// The agent id the server acts under.
    pub fn agent_id(&self) -> &str {
        &self.inner.agent_id
    }

    /// The link's state, to watch.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.inner.state.clone()
    }

    async fn call(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<ServerFrame, QueueError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let timeout = self.inner.request_timeout;
        let asked = async {
            if let LinkState::Refused(why) = &*self.inner.state.borrow() {
                return Err(QueueError::permanent(format!("the server refused this edge worker: {why}")));
            }
            self.inner
                .requests
                .send(Pending { frame: make(id), reply })
                .await
                .map_err(|_| QueueError::permanent("the edge link has stopped"))?;
            answer.await.map_err(|_| QueueError::transient("the connection to the server was lost"))?
        };
        let frame = tokio::time::timeout(timeout, asked).await.map_err(|_| {
            QueueError::transient(format!("no answer from the server within {} s (reconnecting)", timeout.as_secs()))
        })??;
        match frame {
            ServerFrame::Error { message, transient, .. } => Err(QueueError { message, transient }),
            other => Ok(other),
        }
    }
}

impl EdgeQueue {
    /// Records a transition of one of this worker's circuit breakers on the server (its event and
    /// the circuit's state, under this worker's agent id). `open_until` is on this host's clock and
    /// is sent on the server's.
    pub async fn record_circuit(
        &self,
        key: &str,
        transition: model::breaker::Transition,
        open_until: Option<DateTime<Utc>>,
    ) -> Result<(), QueueError> {
        let offset = chrono::Duration::microseconds(self.inner.clock_offset_us.load(Ordering::Relaxed));
        let open_until = open_until.map(|at| at + offset);
        match self.call(|id| ClientFrame::Circuit { id, key: key.to_owned(), transition, open_until }).await? {
            ServerFrame::Recorded { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(frame: &ServerFrame) -> QueueError {
    QueueError::permanent(format!("the server answered with an unexpected frame: {frame:?}"))
}

fn outcome(wire: WireOutcome) -> Outcome {
    match wire {
        WireOutcome::Done => Outcome::Done,
        WireOutcome::Retrying { run_at } => Outcome::Retrying { run_at },
        WireOutcome::DeadLettered => Outcome::DeadLettered,
        WireOutcome::LeaseLost => Outcome::LeaseLost,
    }
}

fn outcomes(frame: ServerFrame, expected: usize) -> Result<Vec<Outcome>, QueueError> {
    match frame {
        ServerFrame::Outcomes { outcomes, .. } if outcomes.len() == expected => {
            Ok(outcomes.into_iter().map(outcome).collect())
        }
        other => Err(unexpected(&other)),
    }
}

fn lease_ms(lease: Duration) -> u64 {
    (lease.as_millis() as u64).clamp(edge::MIN_LEASE_MS, edge::MAX_LEASE_MS)
}

impl Queue for EdgeQueue {
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Message>, QueueError>> {
        Box::pin(async move {
            let frame = self
                .call(|id| ClientFrame::Claim {
                    id,
                    service: request.service.clone(),
                    role: request.role.clone(),
                    shards: request.shards.iter().filter(|s| !s.is_empty()).cloned().collect(),
                    limit: request.limit.clamp(1, edge::MAX_CLAIM),
                    lease_ms: lease_ms(request.lease),
                })
                .await?;
            match frame {
                ServerFrame::Claimed { messages, .. } => Ok(messages),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn extend_leases<'a>(
        &'a self,
        _agent_id: &'a str,
        ids: &'a [MessageId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>> {
        Box::pin(async move {
            let mut kept = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(edge::MAX_ITEMS) {
                let frame =
                    self.call(|id| ClientFrame::Extend { id, ids: chunk.to_vec(), lease_ms: lease_ms(lease) }).await?;
                match frame {
                    ServerFrame::Ids { ids, .. } => kept.extend(ids),
                    other => return Err(unexpected(&other)),
                }
            }
            Ok(kept)
        })
    }

    fn complete<'a>(
        &'a self,
        _agent_id: &'a str,
        completions: Vec<Completion>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>> {
        Box::pin(async move {
            let mut all = Vec::with_capacity(completions.len());
            for chunk in completions.chunks(edge::MAX_ITEMS) {
                let wire: Vec<WireCompletion> = chunk
                    .iter()
                    .map(|c| WireCompletion {
                        id: c.id,
                        result: c.result.clone(),
                        result_url: c.result_url.clone(),
                        detail: c.detail.clone(),
                    })
                    .collect();
                let count = wire.len();
                all.extend(outcomes(self.call(|id| ClientFrame::Complete { id, completions: wire }).await?, count)?);
            }
            Ok(all)
        })
    }

    fn fail<'a>(
        &'a self,
        _agent_id: &'a str,
        failures: Vec<Failure>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, QueueError>> {
        Box::pin(async move {
            let mut all = Vec::with_capacity(failures.len());
            for chunk in failures.chunks(edge::MAX_ITEMS) {
                let wire: Vec<WireFailure> = chunk
                    .iter()
                    .map(|f| WireFailure {
                        id: f.id,
                        kind: f.kind,
                        error: f.error.clone(),
                        action: match &f.action {
                            FailAction::Retry { after } => WireAction::RetryAfterMs(after.as_millis() as u64),
                            FailAction::DeadLetter { reason } => WireAction::DeadLetter(reason.clone()),
                        },
                        detail: f.detail.clone(),
                    })
                    .collect();
                let count = wire.len();
                all.extend(outcomes(self.call(|id| ClientFrame::Fail { id, failures: wire }).await?, count)?);
            }
            Ok(all)
        })
    }

    fn release<'a>(
        &'a self,
        _agent_id: &'a str,
        ids: &'a [MessageId],
    ) -> BoxFuture<'a, Result<Vec<MessageId>, QueueError>> {
        Box::pin(async move {
            let mut released = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(edge::MAX_ITEMS) {
                match self.call(|id| ClientFrame::Release { id, ids: chunk.to_vec() }).await? {
                    ServerFrame::Ids { ids, .. } => released.extend(ids),
                    other => return Err(unexpected(&other)),
                }
            }
            Ok(released)
        })
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.inner.clock_offset_us.load(Ordering::Relaxed))
    }

    fn wakeup(&self, service: &str, role: &str) -> Arc<Notify> {
        wakeup(&self.inner.wakeups, service, role)
    }

    fn concurrent_writes(&self) -> usize {
        4
    }
}

fn wakeup(map: &Mutex<HashMap<(String, String), Arc<Notify>>>, service: &str, role: &str) -> Arc<Notify> {
    let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry((service.to_owned(), role.to_owned())).or_default().clone()
}

/// How often the worker pings the server; silence three times as long ends the connection.
const PING_EVERY: Duration = Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Stream>>;

/// A byte stream the WebSocket runs on (TCP, or TLS over TCP).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection attempt failed.
enum Failed {
    /// Try again after a backoff.
    Transient(String),
    /// Retrying will not help.
    Refused(String),
}

/// The connection task: connects, says hello, serves requests, reconnects.
struct Link {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    options: EdgeOptions,
    inner: std::sync::Weak<Inner>,
    state: watch::Sender<LinkState>,
}

impl Link {
    async fn run(self, mut requests: mpsc::Receiver<Pending>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let _ = self.state.send_replace(LinkState::Connecting);
            match self.open().await {
                Ok((socket, agent_id)) => {
                    backoff = Duration::from_millis(100);
                    metrics::counter!(model::metrics::EDGE_CONNECTS_TOTAL).increment(1);
                    tracing::info!(server = %self.url, agent_id, "edge worker connected");
                    let _ = self.state.send_replace(LinkState::Connected { agent_id });
                    let why = self.serve(socket, &mut requests).await;
                    match why {
                        None => {
                            let _ = self.state.send_replace(LinkState::Stopped);
                            return;
                        }
                        Some(why) => tracing::warn!(server = %self.url, reason = %why, "edge link lost; reconnecting"),
                    }
                    // wake the claim loops so they ask again once the link is back
                    self.wake_all();
                }
                Err(Failed::Refused(why)) => {
                    tracing::error!(server = %self.url, reason = %why, "the server refused this edge worker");
                    let _ = self.state.send_replace(LinkState::Refused(why.clone()));
                    // requests still queued get the reason
                    requests.close();
                    while let Some(pending) = requests.recv().await {
                        let _ = pending
                            .reply
                            .send(Err(QueueError::permanent(format!("the server refused this edge worker: {why}"))));
                    }
                    return;
                }
                Err(Failed::Transient(why)) => {
                    tracing::warn!(server = %self.url, reason = %why, retry_in_ms = backoff.as_millis() as u64, "edge worker cannot reach its server");
                }
            }
            if self.inner.strong_count() == 0 {
                let _ = self.state.send_replace(LinkState::Stopped);
                return;
            }
            let jitter = backoff.mul_f64(rand::random::<f64>() * 0.25);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    fn wake_all(&self) {
        if let Some(inner) = self.inner.upgrade() {
            let map = inner.wakeups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for notify in map.values() {
                notify.notify_waiters();
            }
        }
    }

    async fn open(&self) -> Result<(Socket, String), Failed> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| Failed::Refused(e.to_string()))?;
        let bearer = http::HeaderValue::from_str(&format!("Bearer {}", self.options.token.as_str()))
            .map_err(|_| Failed::Refused("the token has characters a header cannot carry".to_owned()))?;
        request.headers_mut().insert(http::header::AUTHORIZATION, bearer);
        let host = request.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = request.uri().port_u16().unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| Failed::Transient(format!("connecting to {host}:{port} took over 10 s")))?
            .map_err(|e| Failed::Transient(format!("connecting to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| Failed::Refused(format!("{host} is not a TLS server name: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| {
                    // a certificate this worker does not trust will not become trusted by retrying
                    let untrusted = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
                    if untrusted {
                        Failed::Refused(format!(
                            "the certificate of {host}:{port} is not trusted ({e}): pass its CA with --ca-cert"
                        ))
                    } else {
                        Failed::Transient(format!("TLS with {host}:{port}: {e}"))
                    }
                })?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(edge::MAX_FRAME_BYTES))
            .max_frame_size(Some(edge::MAX_FRAME_BYTES));
        let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        let (mut socket, _response) = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
            Err(_) => return Err(Failed::Transient("the WebSocket handshake took over 10 s".to_owned())),
            Ok(Ok(done)) => done,
            Ok(Err(tungstenite::Error::Http(response))) => return Err(http_refusal(&response)),
            Ok(Err(err)) => return Err(Failed::Transient(format!("WebSocket handshake: {err}"))),
        };
        let hello = ClientFrame::Hello {
            version: edge::PROTOCOL_VERSION,
            name: self.options.name.clone(),
            host: self.options.host.clone(),
            software: env!("CARGO_PKG_VERSION").to_owned(),
            queues: self.options.queues.clone(),
        };
        let text = serde_json::to_string(&hello).map_err(|e| Failed::Refused(e.to_string()))?;
        socket
            .send(WsMessage::Text(text.into()))
            .await
            .map_err(|e| Failed::Transient(format!("sending the hello: {e}")))?;
        let answer = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Text(text))) => return Ok(text),
                    Some(Ok(WsMessage::Close(frame))) => {
                        return Err(Failed::Transient(format!(
                            "the server closed the connection: {}",
                            frame.map(|f| f.reason.to_string()).unwrap_or_default()
                        )));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(Failed::Transient(format!("reading the welcome: {e}"))),
                    None => return Err(Failed::Transient("the server closed the connection".to_owned())),
                }
            }
        })
        .await
        .map_err(|_| Failed::Transient("no welcome within 15 s".to_owned()))??;
        match serde_json::from_str::<ServerFrame>(&answer) {
            Ok(ServerFrame::Welcome { agent_id, now }) => {
                let offset = (now - Utc::now()).num_microseconds().unwrap_or(0);
                if let Some(inner) = self.inner.upgrade() {
                    inner.clock_offset_us.store(offset, Ordering::Relaxed);
                }
                if offset.abs() > 5_000_000 {
                    tracing::warn!(
                        offset_ms = offset / 1000,
                        "this host's clock differs from the server's; the server's is used"
                    );
                }
                Ok((socket, agent_id))
            }
            Ok(ServerFrame::Error { message, transient: true, .. }) => Err(Failed::Transient(message)),
            Ok(ServerFrame::Error { message, transient: false, .. }) => Err(Failed::Refused(message)),
            Ok(other) => Err(Failed::Refused(format!("the server answered the hello with {other:?}"))),
            Err(e) => Err(Failed::Refused(format!("the server's answer to the hello is not of this protocol: {e}"))),
        }
    }

    /// Serves requests on one connection; `None` once the queue is gone (stop), else why the
    /// connection ended.
    async fn serve(&self, mut socket: Socket, requests: &mut mpsc::Receiver<Pending>) -> Option<String> {
        // request id → (a claim?, where the answer goes)
        let mut pending: HashMap<u64, oneshot::Sender<Result<ServerFrame, QueueError>>> = HashMap::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let why = loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(Pending { frame, reply }) = request else {
                        let _ = socket.close(None).await;
                        return None;
                    };
                    // the caller gave up: sending it now would claim work nobody handles
                    if reply.is_closed() {
                        continue;
                    }
                    let id = request_id(&frame);
                    let Ok(text) = serde_json::to_string(&frame) else {
                        let _ = reply.send(Err(QueueError::permanent("a request could not be encoded")));
                        continue;
                    };
                    if let Err(e) = socket.send(WsMessage::Text(text.into())).await {
                        let _ = reply.send(Err(QueueError::transient(format!("the connection to the server was lost: {e}"))));
                        break format!("sending failed: {e}");
                    }
                    pending.insert(id, reply);
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > PING_EVERY * 3 {
                        break format!("nothing heard from the server for {} s", last_heard.elapsed().as_secs());
                    }
                    if let Err(e) = socket.send(WsMessage::Ping(Default::default())).await {
                        break format!("sending failed: {e}");
                    }
                }
                incoming = socket.next() => {
                    last_heard = tokio::time::Instant::now();
                    let text = match incoming {
                        Some(Ok(WsMessage::Text(text))) => text,
                        Some(Ok(WsMessage::Close(frame))) => {
                            break format!("the server closed the connection: {}", frame.map(|f| f.reason.to_string()).unwrap_or_default());
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break format!("reading failed: {e}"),
                        None => break "the server closed the connection".to_owned(),
                    };
                    match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(ServerFrame::Wake { service, role }) => {
                            if let Some(inner) = self.inner.upgrade() {
                                wakeup(&inner.wakeups, &service, &role).notify_waiters();
                            }
                        }
                        Ok(ServerFrame::Error { id: None, message, .. }) => {
                            tracing::warn!(server = %self.url, %message, "the server reports a problem with this link");
                        }
                        Ok(frame) => {
                            let Some(id) = reply_id(&frame) else { continue };
                            let Some(reply) = pending.remove(&id) else { continue };
                            if let Err(Ok(ServerFrame::Claimed { messages, .. })) = reply.send(Ok(frame)) {
                                // claimed for a caller that stopped waiting: give them back now
                                self.release_orphans(messages.into_iter().map(|m| m.id).collect());
                            }
                        }
                        Err(e) => break format!("the server sent a frame not of this protocol: {e}"),
                    }
                }
            }
        };
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(QueueError::transient("the connection to the server was lost")));
        }
        Some(why)
    }

    fn release_orphans(&self, ids: Vec<MessageId>) {
        let Some(inner) = self.inner.upgrade() else { return };
        let queue = EdgeQueue { inner };
        tokio::spawn(async move {
            let agent = queue.agent_id().to_owned();
            if let Err(err) = queue.release(&agent, &ids).await {
                tracing::warn!(count = ids.len(), error = %err, "claimed messages nobody waited for stay leased until their lease ends");
            }
        });
    }
}

fn request_id(frame: &ClientFrame) -> u64 {
    match frame {
        ClientFrame::Hello { .. } => 0,
        ClientFrame::Claim { id, .. }
        | ClientFrame::Extend { id, .. }
        | ClientFrame::Complete { id, .. }
        | ClientFrame::Fail { id, .. }
        | ClientFrame::Release { id, .. }
        | ClientFrame::Circuit { id, .. } => *id,
    }
}

fn reply_id(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Claimed { id, .. }
        | ServerFrame::Ids { id, .. }
        | ServerFrame::Outcomes { id, .. }
        | ServerFrame::Recorded { id } => Some(*id),
        ServerFrame::Error { id, .. } => *id,
        ServerFrame::Welcome { .. } | ServerFrame::Wake { .. } => None,
    }
}

/// What an HTTP answer to the handshake means: a refused token or route is for good, a busy
/// server is not.
fn http_refusal(response: &http::Response<Option<Vec<u8>>>) -> Failed {
    let status = response.status();
    let body = response.body().as_deref().unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let text = format!("HTTP {}: {message}", status.as_u16());
    match status.as_u16() {
        401 | 403 => Failed::Refused(text),
        404 | 405 => Failed::Refused(format!("{text} (is the server COGO, of a version with edge workers?)")),
        _ => Failed::Transient(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_the_edge_route() {
        assert_eq!(connect_url("https://cogo.example").ok(), Some("wss://cogo.example/api/edge/connect".to_owned()));
        assert_eq!(connect_url("http://127.0.0.1:8080/").ok(), Some("ws://127.0.0.1:8080/api/edge/connect".to_owned()));
        assert_eq!(connect_url("ws://[::1]:9/api/edge/connect").ok(), Some("ws://[::1]:9/api/edge/connect".to_owned()));
        for bad in ["cogo.example", "ftp://x", "https://", "https://u:p@x", "http://x/?a=1"] {
            let err = connect_url(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn agent_ids_come_from_the_token_id_and_the_name() {
        let token = format!("cogo_{}_{}", "a".repeat(12), "b".repeat(48));
        assert_eq!(agent_id_for(&token, "pc-1").ok(), Some(format!("edge:{}:pc-1", "a".repeat(12))));
        assert!(matches!(agent_id_for("secret", "pc-1"), Err(Error::Token)));
        assert!(matches!(agent_id_for(&token, "a b"), Err(Error::Name(_))));
        let options = EdgeOptions {
            server: "http://x".into(),
            token: zeroize::Zeroizing::new(token.clone()),
            name: "pc".into(),
            host: "pc".into(),
            queues: vec![],
            ca_cert: None,
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{options:?}").contains(&token), "Debug hides the token");
    }
}
