//! Edge workers against a real server on loopback: the worker runtime on an `EdgeQueue`, through a
//! real WebSocket, the server doing the store work on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use edge::{EdgeOptions, EdgeQueue, LinkState};
use model::config::{ConfigFile, RoutePolicies, parse};
use model::edge::QueueRef;
use model::{ErrorKind, Message, MessageStatus};
use worker::{Handler, HandlerError, HandlerOutput, Runtime, RuntimeConfig};

const ADMIN: &str = "admin-secret";

/// A server on 127.0.0.1 over `store`; ends with the test.
async fn serve(store: &store::Store) -> std::net::SocketAddr {
    let routes: RoutePolicies = parse("route_policies.json", ConfigFile::Routes.seed()).expect("seed routes");
    let state = server::AppState {
        store: store.clone(),
        routes: Arc::new(routes),
        admin_token: Some(Arc::from(ADMIN)),
        api_tokens: Arc::new(vec!["reader-token".to_owned()]),
        metrics: Arc::new(String::new),
        agent_id: Arc::from("server-test"),
        mcp: None,
        knowledge: None,
        goals: None,
        shared_limits: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = server::router(state, server::Limits::default());
    tokio::spawn(server::serve(listener, app, server::Limits::default(), std::future::pending()));
    addr
}

async fn edge_token(store: &store::Store, roles: &[&str]) -> (String, String) {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let (text, row) = secrets::tokens::generate_edge(&roles, "test", chrono::Utc::now());
    let id = row.id.clone();
    store.create_api_token(row).await.expect("store token");
    (text.to_string(), id)
}

fn options(server: String, token: &str, name: &str, role: &str) -> EdgeOptions {
    EdgeOptions {
        server,
        token: zeroize::Zeroizing::new(token.to_owned()),
        name: name.to_owned(),
        host: "test-host".to_owned(),
        queues: vec![QueueRef { service: "bus".into(), role: role.into(), shards: vec![] }],
        ca_cert: None,
        request_timeout: Duration::from_secs(10),
    }
}

async fn enqueue(store: &store::Store, from: usize, count: usize) {
    let intent = model::Intent::new("noop").expect("intent");
    let batch = (from..from + count)
        .map(|n| {
            model::NewMessage::new("bus", "noop", intent.clone(), json!({ "n": n }))
                .with_idempotency_key(format!("edge-{n}"))
        })
        .collect();
    store.enqueue_batch(batch).await.expect("enqueue");
}

async fn count(store: &store::Store, status: MessageStatus) -> usize {
    let filter = store::MessageFilter { status: Some(status), ..Default::default() };
    let mut page = store::PageRequest::first(1000);
    let mut total = 0;
    loop {
        let got = store.messages(&filter, &page).await.expect("messages");
        total += got.items.len();
        match got.next {
            Some(next) => page.after = Some(next),
            None => return total,
        }
    }
}

async fn events_of(store: &store::Store, event_type: &str) -> usize {
    let filter = store::EventFilter { event_type: Some(event_type.to_owned()), ..Default::default() };
    let mut page = store::PageRequest::first(1000);
    let mut total = 0;
    loop {
        let got = store.events(&filter, &page).await.expect("events");
        total += got.items.len();
        // an event page always has a cursor (to follow new events): a short page is the last
        match got.next {
            Some(next) if got.items.len() == 1000 => page.after = Some(next),
            _ => return total,
        }
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A noop handler that fails the first attempt of every tenth message (a transient failure, so
/// it is retried) and sends every hundred-and-first to the dead letters (not retryable).
struct Mixed;

impl Handler for Mixed {
    fn handle(&self, message: Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        Box::pin(async move {
            let n = message.payload["n"].as_u64().unwrap_or(0);
            if n % 101 == 100 {
                return Err(HandlerError::new(ErrorKind::InvalidInput, "refused for good"));
            }
            if n % 10 == 3 && message.attempts <= 1 {
                return Err(HandlerError::new(ErrorKind::Transport, "first attempt fails"));
            }
            Ok(HandlerOutput { result: Some(json!({ "n": n })), ..HandlerOutput::default() })
        })
    }
}

fn runtime(queue: &EdgeQueue, poll: Duration) -> Runtime {
    let mut config = RuntimeConfig::new("bus", "noop", queue.agent_id());
    config.lease = Duration::from_secs(5);
    config.poll_interval = poll;
    config.shutdown_deadline = Duration::from_secs(5);
    // no delay: the test store's clock stands still, so a delayed retry would never come due
    let retry: worker::RetryResolver = Arc::new(|_: &Message| model::retry::RetryPolicy {
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        ..model::retry::RetryPolicy::default()
    });
    Runtime::on_queue(Arc::new(queue.clone()), config, Arc::new(Mixed), retry)
}

/// Everything an edge worker claims completes once through the server, with its events, its
/// retries and dead letters; the worker is present while connected and offline after.
async fn drains_through_the_server(t: test_support::TestStore) {
    let store = &t.store;
    let addr = serve(store).await;
    let (token, token_id) = edge_token(store, &["noop"]).await;
    enqueue(store, 0, 600).await;
    let queue = EdgeQueue::start(options(format!("http://{addr}"), &token, "pc-1", "noop"), Duration::from_secs(10))
        .await
        .expect("connects");
    assert_eq!(queue.agent_id(), format!("edge:{token_id}:pc-1"));
    let (stop, stopped) = watch::channel(false);
    // a long poll: work enqueued later is found through the server's wake frames
    let running = tokio::spawn(runtime(&queue, Duration::from_secs(3600)).run(stopped));
    wait_until("the first 600 finished", Duration::from_secs(60), || async {
        count(store, MessageStatus::Done).await + count(store, MessageStatus::Failed).await == 600
    })
    .await;
    let presence = store.presence().await.expect("presence");
    let me = presence.iter().find(|p| p.agent_id == queue.agent_id()).expect("the edge worker is present");
    assert_eq!((me.service.as_str(), me.status), ("edge", model::presence::PresenceStatus::Online));
    assert_eq!(me.capabilities["server"], "server-test");
    enqueue(store, 600, 50).await;
    wait_until("work enqueued later, woken", Duration::from_secs(30), || async {
        count(store, MessageStatus::Done).await + count(store, MessageStatus::Failed).await == 650
    })
    .await;
    let _ = stop.send(true);
    running.await.expect("runtime stops");
    drop(queue);
    let dead = (0..650).filter(|n| n % 101 == 100).count();
    let letters =
        store.dead_letters(&store::MessageFilter::default(), &store::PageRequest::first(3)).await.expect("dlq");
    assert_eq!(count(store, MessageStatus::Failed).await, dead, "{letters:?}");
    assert_eq!(count(store, MessageStatus::Done).await, 650 - dead);
    assert_eq!(events_of(store, "noop_succeeded").await, 650 - dead, "one success event per completion");
    let retried = (0..650).filter(|n| n % 10 == 3 && n % 101 != 100).count();
    assert_eq!(events_of(store, "noop_failed").await, retried + dead, "one failure event per failed attempt");
    assert!(store.integrity_check().await.expect("integrity").is_empty());
    wait_until("offline once disconnected", Duration::from_secs(10), || async {
        store
            .presence()
            .await
            .expect("presence")
            .iter()
            .any(|p| p.agent_id.starts_with("edge:") && p.status == model::presence::PresenceStatus::Offline)
    })
    .await;
}

#[tokio::test]
async fn drains_through_the_server_on_sqlite() {
    drains_through_the_server(test_support::sqlite().await).await;
}

#[tokio::test]
async fn drains_through_the_server_on_postgres() {
    drains_through_the_server(test_support::postgres().await).await;
}

/// Wrong tokens and wrong hellos are refused with the reason, for good.
#[tokio::test]
async fn refusals_name_the_reason() {
    let t = test_support::sqlite().await;
    let store = &t.store;
    let addr = serve(store).await;
    let server = format!("http://{addr}");
    let (gateway_token, _) = edge_token(store, &["gateway"]).await;
    let refused = |result: Result<EdgeQueue, edge::Error>| match result {
        Err(edge::Error::Refused(why)) => why,
        Err(other) => panic!("not a refusal: {other}"),
        Ok(_) => panic!("accepted"),
    };
    let why =
        refused(EdgeQueue::start(options(server.clone(), &gateway_token, "pc", "noop"), Duration::from_secs(10)).await);
    assert!(why.contains("may serve roles gateway") && why.contains("noop"), "{why}");
    // a tenant token is not an edge token
    let (tenant_text, tenant_row) = secrets::tokens::generate("acme", "t", chrono::Utc::now());
    store.create_api_token(tenant_row).await.expect("store");
    let why =
        refused(EdgeQueue::start(options(server.clone(), &tenant_text, "pc", "noop"), Duration::from_secs(10)).await);
    assert!(why.contains("403"), "{why}");
    // an unknown token
    let unknown = format!("cogo_{}_{}", "0".repeat(12), "1".repeat(48));
    let why = refused(EdgeQueue::start(options(server.clone(), &unknown, "pc", "noop"), Duration::from_secs(10)).await);
    assert!(why.contains("401"), "{why}");
    // a revoked token
    let (token, id) = edge_token(store, &["noop"]).await;
    assert!(store.revoke_api_token(&id).await.expect("revoke"));
    let why = refused(EdgeQueue::start(options(server.clone(), &token, "pc", "noop"), Duration::from_secs(10)).await);
    assert!(why.contains("401"), "{why}");
    // the edge token reaches nothing else
    let (token, _) = edge_token(store, &["noop"]).await;
    let answer = raw_http(
        addr,
        &format!("GET /api/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("/api/edge/connect"), "{answer}");
    // the admin token is not an edge token either, and a plain GET is told what the route is
    let answer = raw_http(
        addr,
        &format!("GET /api/edge/connect HTTP/1.1\r\nHost: x\r\nx-admin-token: {ADMIN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("cogo tokens create --edge"), "{answer}");
    let answer = raw_http(
        addr,
        &format!(
            "GET /api/edge/connect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("WebSocket"), "{answer}");
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TCP forwarder that can cut every connection through it.
struct Cutter {
    addr: std::net::SocketAddr,
    cut: watch::Sender<u64>,
}

impl Cutter {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, cuts) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// A cut connection: the worker reconnects and finishes; nothing is lost, nothing recorded twice.
#[tokio::test]
async fn survives_cut_connections() {
    let t = test_support::sqlite().await;
    // the system clock: leases of claims lost with a connection must really expire
    let store = &store::Store::open(&t.url, store::StoreOptions::default()).await.expect("reopen");
    let addr = serve(store).await;
    let cutter = Cutter::start(addr).await;
    let (token, _) = edge_token(store, &["noop"]).await;
    enqueue(store, 0, 2000).await;
    let queue =
        EdgeQueue::start(options(format!("http://{}", cutter.addr), &token, "pc-cut", "noop"), Duration::from_secs(10))
            .await
            .expect("connects");
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(runtime(&queue, Duration::from_millis(500)).run(stopped));
    let mut state = queue.state();
    for round in 0..3 {
        wait_until("progress before the cut", Duration::from_secs(60), || async {
            count(store, MessageStatus::Done).await > 400 * (round + 1)
        })
        .await;
        cutter.cut();
        state.wait_for(|s| *s == LinkState::Connecting).await.expect("notices the cut");
        state.wait_for(|s| matches!(s, LinkState::Connected { .. })).await.expect("reconnects");
    }
    // the server's reaper: claims whose answers were lost with a connection come back
    let reaper = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let retry = |_: &Message| store::FailAction::Retry { after: Duration::ZERO };
                let _ = store.reap_expired(500, &retry).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    wait_until("all 2000 finished", Duration::from_secs(120), || async {
        count(store, MessageStatus::Done).await + count(store, MessageStatus::Failed).await == 2000
    })
    .await;
    reaper.abort();
    let _ = stop.send(true);
    running.await.expect("runtime stops");
    let dead = (0..2000).filter(|n| n % 101 == 100).count();
    assert_eq!(events_of(store, "noop_succeeded").await, 2000 - dead, "each completion recorded once");
    assert!(store.integrity_check().await.expect("integrity").is_empty());
}

/// Bad frames end the connection with an error that says what is wrong.
#[tokio::test]
async fn bad_frames_are_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message as WsMessage, client::IntoClientRequest};
    let t = test_support::sqlite().await;
    let addr = serve(&t.store).await;
    let (token, _) = edge_token(&t.store, &["noop"]).await;
    let connect = || async {
        let mut request = format!("ws://{addr}/api/edge/connect").into_client_request().expect("request");
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        tokio_tungstenite::connect_async(request).await.expect("upgrade").0
    };
    let first_text = |mut socket: tokio_tungstenite::WebSocketStream<_>| async move {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => return (text.to_string(), socket),
                Some(Ok(_)) => continue,
                other => panic!("no answer: {other:?}"),
            }
        }
    };
    for (frame, expected) in [
        ("not json", "the first frame must be"),
        (
            r#"{"type":"claim","id":1,"service":"bus","role":"noop","limit":1,"lease_ms":1000}"#,
            "the first frame must be a hello",
        ),
        (
            r#"{"type":"hello","version":9,"name":"pc","host":"h","software":"0","queues":[{"service":"bus","role":"noop"}]}"#,
            "protocol version 9",
        ),
        (
            r#"{"type":"hello","version":1,"name":"a b","host":"h","software":"0","queues":[{"service":"bus","role":"noop"}]}"#,
            "worker name",
        ),
        (r#"{"type":"hello","version":1,"name":"pc","host":"h","software":"0","queues":[]}"#, "1 to 32 queues"),
    ] {
        let mut socket = connect().await;
        socket.send(WsMessage::Text(frame.into())).await.expect("send");
        let (text, _) = first_text(socket).await;
        assert!(text.contains(expected) && text.contains(r#""transient":false"#), "{frame} → {text}");
    }
    // after a good hello: requests out of bounds are refused one by one; garbage ends the link
    let mut socket = connect().await;
    let hello = r#"{"type":"hello","version":1,"name":"pc","host":"h","software":"0","queues":[{"service":"bus","role":"noop"}]}"#;
    socket.send(WsMessage::Text(hello.into())).await.expect("send");
    let (welcome, mut socket) = first_text(socket).await;
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
    for (frame, expected) in [
        (
            r#"{"type":"claim","id":1,"service":"mcp","role":"gateway","limit":1,"lease_ms":1000}"#,
            "mcp/gateway was not named in the hello",
        ),
        (r#"{"type":"claim","id":2,"service":"bus","role":"noop","limit":100000,"lease_ms":1000}"#, "limit 100000"),
        (r#"{"type":"claim","id":3,"service":"bus","role":"noop","limit":1,"lease_ms":1}"#, "lease_ms 1 "),
        (r#"{"type":"hello","version":1,"name":"pc","host":"h","software":"0","queues":[]}"#, "already said"),
        (r#"{"type":"circuit","id":4,"key":"a b","transition":"opened"}"#, "breaker key"),
        (r#"{"type":"circuit","id":5,"key":"","transition":"closed"}"#, "breaker key"),
    ] {
        socket.send(WsMessage::Text(frame.into())).await.expect("send");
        let (text, rest) = first_text(socket).await;
        socket = rest;
        assert!(text.contains(expected) && text.contains(r#""transient":false"#), "{frame} → {text}");
    }
    socket.send(WsMessage::Text(r#"{"type":"steal","id":9}"#.into())).await.expect("send");
    let (text, mut socket) = first_text(socket).await;
    assert!(text.contains("not a request of protocol 2"), "{text}");
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1008));
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("not closed with a reason: {other:?}"),
        }
    }
}

/// An edge worker's circuit transitions are recorded by the server under the worker's agent id:
/// the `circuit_*` events in order and the circuit's latest state, which the summary counts.
#[tokio::test]
async fn circuit_transitions_are_recorded_under_the_workers_agent_id() {
    let t = test_support::sqlite().await;
    let store = &t.store;
    let addr = serve(store).await;
    let (token, _) = edge_token(store, &["gateway"]).await;
    let mut options = options(format!("http://{addr}"), &token, "pc-c", "noop");
    options.queues = vec![QueueRef { service: "mcp".into(), role: "gateway".into(), shards: vec![] }];
    let queue = EdgeQueue::start(options, Duration::from_secs(10)).await.expect("connects");
    let agent = queue.agent_id().to_owned();
    let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    let key = "mcp.call.figma.get_figma_data";
    queue.record_circuit(key, model::breaker::Transition::Opened, Some(until)).await.expect("opened");
    let circuits = store.circuits().await.expect("circuits");
    let row = circuits.iter().find(|c| c.agent_id == agent).expect("the worker's circuit");
    assert_eq!((row.key.as_str(), row.state.as_str()), (key, "open"));
    // sent on the server's clock (the test store's clock stands still at its epoch)
    let on_server = until + (worker::Queue::now(&queue) - chrono::Utc::now());
    assert!(row.open_until.is_some_and(|at| (at - on_server).num_seconds().abs() <= 1), "{row:?}");
    queue.record_circuit(key, model::breaker::Transition::HalfOpened, None).await.expect("half open");
    queue.record_circuit(key, model::breaker::Transition::Closed, None).await.expect("closed");
    let circuits = store.circuits().await.expect("circuits");
    let row = circuits.iter().find(|c| c.agent_id == agent).expect("the worker's circuit");
    assert_eq!(row.state, "closed");
    let page = store
        .events(&store::EventFilter { service: Some("resilience".into()), ..Default::default() }, &Default::default())
        .await
        .expect("events");
    let seen: Vec<(&str, &str)> = page
        .items
        .iter()
        .filter(|e| e.payload["agent_id"] == agent.as_str())
        .map(|e| (e.event_type.as_str(), e.payload["key"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(seen, [("circuit_opened", key), ("circuit_half_open", key), ("circuit_closed", key)]);
    let err = queue.record_circuit("has space", model::breaker::Transition::Opened, None).await.expect_err("bad key");
    assert!(!err.transient && err.message.contains("breaker key"), "{}", err.message);
}
