//! Abuse of the HTTP API through a real TCP listener served by `server::serve`, as `cogo serve`
//! serves it: token guessing, oversized and malformed bodies, slow clients, header injection, path
//! traversal and cross-tenant reads. Attacks at the byte level are written on raw TCP streams.
//! Every test ends by checking that the server still answers a normal request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: (&str, &str) = ("x-admin-token", "admin-secret");
const READER: (&str, &str) = ("authorization", "Bearer reader-token");
/// The address most requests come from; others (127.0.0.2, …) are other clients.
const CLIENT: [u8; 4] = [127, 0, 0, 1];

/// A server on 127.0.0.1 for one test, with a data directory of its own; stopped when dropped.
struct Served {
    addr: SocketAddr,
    data_dir: PathBuf,
    t: test_support::TestStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Limits for tests that are not about rate limits: those off.
fn limits() -> server::Limits {
    server::Limits { rate_per_second: 0, auth_failures_per_second: 0, ..server::Limits::default() }
}

#[derive(Clone, Copy, PartialEq)]
enum Routes {
    All,
    Minimal,
}

/// Serves the whole router over `t` with an MCP gateway (no toolsets) and goals whose data
/// directory is a fresh one, as `cogo serve` does.
async fn serve(t: test_support::TestStore, limits: server::Limits) -> Served {
    serve_with(t, limits, Routes::All, None).await
}

async fn serve_with(
    t: test_support::TestStore,
    limits: server::Limits,
    routes: Routes,
    knowledge: Option<Arc<server::KnowledgeApi>>,
) -> Served {
    let data_dir = std::env::temp_dir().join(format!("cogo-abuse-{}", model::new_id().simple()));
    std::fs::create_dir_all(data_dir.join("artifacts/mcp")).expect("data dir");
    let config: model::config::McpConfig = serde_json::from_value(json!({ "toolsets": {} })).expect("mcp config");
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    let gateway = Arc::new(mcp::Gateway::new(
        config.toolsets.clone(),
        breakers,
        artifacts::Artifacts::local(&data_dir).expect("artifact store"),
        "abuse",
    ));
    let mut state = crate::state(
        &t.store,
        Some(Arc::new(server::McpApi {
            gateway,
            policies,
            config,
            artifacts: artifacts::Artifacts::local(&data_dir).expect("artifact store"),
        })),
    );
    state.goals = Some(Arc::new(server::GoalsApi {
        artifacts: artifacts::Artifacts::local(&data_dir).expect("artifact store"),
        budget: model::config::agent::Budget::default(),
    }));
    state.knowledge = knowledge;
    let app = match routes {
        Routes::All => server::router(state, limits),
        Routes::Minimal => server::minimal_router(state, limits),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    Served { addr, data_dir, t, stop: Some(stop) }
}

/// One answer read off a connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The status line and headers as sent.
    head: String,
    /// Header names (lower case) and values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `{code, message}` with this code and a message that says something.
    fn assert_error(&self, status: u16, code: &str, context: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{context}: {}", self.text());
        assert_eq!(body["code"], code, "{context}: {}", self.text());
        assert!(body["message"].as_str().is_some_and(|m| m.len() > 5), "{context}: {}", self.text());
        assert!(self.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{context}");
    }
}

/// What reading a connection came to.
#[derive(Debug)]
enum Read {
    Reply(Reply),
    /// The server closed the connection (or reset it) before a whole answer.
    Closed,
    /// Nothing more within the time given.
    Silent,
}

impl Read {
    fn reply(self, context: &str) -> Reply {
        match self {
            Read::Reply(reply) => reply,
            other => panic!("{context}: no answer ({other:?})"),
        }
    }
}

/// A raw HTTP/1.1 client connection.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
    ended: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self::open_from(CLIENT, addr).await
    }

    /// A connection from another loopback address (another client, as far as the server can tell).
    async fn open_from(from: [u8; 4], addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((from, 0))).expect("binding the client address");
        let stream = socket.connect(addr).await.expect("connecting to the server");
        Self { stream, buffer: Vec::new(), ended: false }
    }

    /// Writes `bytes`; false once the server has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next whole answer, or what happened instead within `within`.
    async fn read(&mut self, within: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(reply) = self.take_reply() {
                return Read::Reply(reply);
            }
            if self.ended {
                return Read::Closed;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Read::Silent,
                Ok(Ok(0) | Err(_)) => self.ended = true,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Every byte that arrives within `within` (for streams that do not end).
    async fn read_for(&mut self, within: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        std::mem::take(&mut self.buffer)
    }

    /// Whether the server closes the connection within `within` (whatever it sends before).
    async fn closes_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A whole answer at the start of the buffer, taken off it.
    fn take_reply(&mut self) -> Option<Reply> {
        let end = find(&self.buffer, b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let (body, used) = if let Some(length) = get("content-length") {
            let length: usize = length.parse().ok()?;
            (self.buffer.get(end..end + length)?.to_vec(), length)
        } else if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            dechunk(&self.buffer[end..])?
        } else if self.ended {
            (self.buffer[end..].to_vec(), self.buffer.len() - end)
        } else {
            return None;
        };
        self.buffer.drain(..end + used);
        Some(Reply { status, head, headers, body })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A whole chunked body at the start of `data`: the body and the bytes it took.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find(&data[at..], b"\r\n")? + at;
        let size = std::str::from_utf8(&data[at..line_end]).ok()?.split(';').next()?.trim().to_owned();
        let size = usize::from_str_radix(&size, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return Some((body, find(&data[at..], b"\r\n")? + at + 2));
        }
        body.extend_from_slice(data.get(at..at + size)?);
        at += size + 2;
    }
}

/// The bytes of a request: `Host`, `Connection: close`, the headers, and the body with its length.
fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request from `from` on a connection of its own; its answer.
async fn http_from(
    from: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if body.is_some() {
        all.push(("Content-Type", "application/json"));
    }
    let mut conn = Conn::open_from(from, addr).await;
    conn.send(&request_bytes(method, path, &all, body.map(str::as_bytes))).await;
    conn.read(Duration::from_secs(30)).await.reply(&format!("{method} {path}"))
}

async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    http_from(CLIENT, addr, method, path, headers, body).await
}

/// Raw bytes on a connection of their own; the first answer (or what came instead) within 10 s.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Read {
    let mut conn = Conn::open(addr).await;
    conn.send(bytes).await;
    conn.read(Duration::from_secs(10)).await
}

/// The server still answers: a public route, and a token route from a client address of its own.
async fn assert_still_serves(addr: SocketAddr) {
    let health = http(addr, "GET", "/healthz", &[], None).await;
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    let summary = http_from([127, 0, 0, 200], addr, "GET", "/api/metrics/summary", &[READER], None).await;
    assert_eq!(summary.status, 200, "{}", summary.text());
}

/// Wrong tokens from one client address (admin header, bearer, tenant-token shaped) are never let
/// in, and after a small burst they are answered 429 with `Retry-After` without being checked,
/// even with the general rate limit off; the right token from another address still works, and
/// from the guesser's address once its wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_is_throttled_per_client_address() {
    let rate_off = server::Limits { auth_failures_per_second: 1, auth_failure_burst: 5, ..limits() };
    let defaults = server::Limits::default();
    assert!(defaults.auth_failures_per_second > 0 && defaults.auth_failure_burst <= 20, "on by default");
    for (limits, guesses) in [(rate_off, 60), (defaults, 60)] {
        let served = serve(test_support::sqlite().await, limits).await;
        let addr = served.addr;
        // a real tenant token: its id shows in listings, so its secret is what gets guessed
        let (tenant_token, row) = secrets::tokens::generate("acme", "ci", test_support::epoch());
        served.t.store.create_api_token(row.clone()).await.expect("token");
        let requeue = format!("/api/dlq/{}/requeue", model::MessageId::new());
        let started = Instant::now();
        let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
        let (mut last_checked, mut retry_after) = (None, 0);
        for n in 0..guesses {
            let (method, path, header) = match n % 3 {
                0 => ("POST", requeue.as_str(), ("x-admin-token", format!("guess-{n}"))),
                1 => ("GET", "/api/messages", ("authorization", format!("Bearer guess-{n}"))),
                _ => ("GET", "/api/messages", ("authorization", format!("Bearer cogo_{}_{n:048}", row.id))),
            };
            let reply = http(addr, method, path, &[(header.0, header.1.as_str())], None).await;
            *answers.entry(reply.status).or_default() += 1;
            match reply.status {
                401 => {
                    reply.assert_error(401, "unauthorized", &format!("guess {n}"));
                    last_checked = Some((method, path, header));
                }
                429 => {
                    reply.assert_error(429, "rate_limited", &format!("guess {n}"));
                    assert!(reply.json()["message"].as_str().is_some_and(|m| m.contains("failed authentications")));
                    retry_after = reply.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
                    assert!(retry_after >= 1, "Retry-After {retry_after}");
                }
                other => panic!("guess {n} was answered {other}: {}", reply.text()),
            }
        }
        let checked = answers.get(&401).copied().unwrap_or(0);
        let allowed = u64::from(limits.auth_failure_burst)
            + started.elapsed().as_secs() * u64::from(limits.auth_failures_per_second)
            + 1;
        assert!(checked as u64 <= allowed, "{checked} guesses were checked ({answers:?}), at most {allowed} may be");
        assert!(answers.get(&429).copied().unwrap_or(0) >= guesses - allowed as usize, "{answers:?}");
        // while it waits, not even the right token from that address is checked: no oracle
        let right = http(addr, "GET", "/api/messages", &[READER], None).await;
        right.assert_error(429, "rate_limited", "the right token from the guessing address");
        // a token it already got wrong is not a new guess: checked (and refused) as before
        let (method, path, header) = last_checked.expect("some guesses were checked");
        let again = http(addr, method, path, &[(header.0, header.1.as_str())], None).await;
        again.assert_error(401, "unauthorized", "a wrong token sent again");
        // public routes do not look at tokens
        let health = http(addr, "GET", "/healthz", &[("authorization", "Bearer guess-x")], None).await;
        assert_eq!(health.status, 200);
        // another client address has its own allowance: every right token works there
        let other = [127, 0, 0, 2];
        let tenant_bearer = format!("Bearer {}", tenant_token.as_str());
        for (headers, want) in
            [(vec![READER], 200), (vec![("authorization", tenant_bearer.as_str())], 200), (vec![ADMIN], 200)]
        {
            let reply = http_from(other, addr, "GET", "/api/messages", &headers, None).await;
            assert_eq!(reply.status, want, "{headers:?}: {}", reply.text());
        }
        let admin = http_from(other, addr, "POST", &requeue, &[ADMIN], None).await;
        admin.assert_error(404, "not_found", "the admin token from another address passes the guard");
        if limits.auth_failures_per_second == 1 && limits.rate_per_second == 0 {
            // once its wait is over, the guesser's address may use its right token again
            tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
            let later = http(addr, "GET", "/api/messages", &[READER], None).await;
            assert_eq!(later.status, 200, "{}", later.text());
        }
        assert_still_serves(addr).await;
    }
}

/// What a body is, its content type, the body, the status it must get and what the message says.
type BodyCase<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

/// A `POST /api/goals` with the admin token and `content_type`, on a connection of its own.
fn goal_request(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut headers = vec![ADMIN];
    if let Some(kind) = content_type {
        headers.push(("Content-Type", kind));
    }
    request_bytes("POST", "/api/goals", &headers, Some(body))
}

/// Bodies over `Limits::max_body_bytes` (declared, lied about, chunked) are 413 naming the limit;
/// malformed JSON (100,000 levels deep, huge numbers, invalid UTF-8, duplicate keys, wrong content
/// types) is a 400 naming the problem; nothing is a 5xx and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_are_refused_with_the_reason() {
    const LIMIT: usize = 256 * 1024;
    let limits = server::Limits { max_body_bytes: LIMIT, request_timeout: Duration::from_secs(5), ..limits() };
    let served = serve(test_support::sqlite().await, limits).await;
    let addr = served.addr;
    let json = Some("application/json");
    let padded = format!(r#"{{"goal": "{}"}}"#, "a".repeat(LIMIT));
    let deep_arrays = format!(r#"{{"goal": "x", "budget": {}}}"#, "[".repeat(100_000));
    let deep_objects = format!(r#"{{"goal": "x", "budget": {}}}"#, r#"{"a":"#.repeat(50_000));
    let long_number = format!(r#"{{"goal": "x", "budget": {{"max_steps": {}}}}}"#, "9".repeat(100_000));
    let cases: Vec<BodyCase<'_>> = vec![
        ("a body over the limit", json, padded.clone().into_bytes(), 413, "limit of 262144 bytes"),
        ("raw bytes over the limit", None, vec![0xff; LIMIT + 1], 413, "limit of 262144 bytes"),
        ("100,000 nested arrays", json, deep_arrays.into_bytes(), 400, "recursion limit"),
        ("50,000 nested objects", json, deep_objects.into_bytes(), 400, "recursion limit"),
        ("100,000 brackets alone", json, "[".repeat(100_000).into_bytes(), 400, "bad JSON body"),
        (
            "a number beyond f64",
            json,
            br#"{"goal": "x", "budget": {"max_steps": 1e400}}"#.to_vec(),
            400,
            "out of range",
        ),
        ("a 100,000-digit number", json, long_number.into_bytes(), 400, "out of range"),
        (
            "a number beyond u64",
            json,
            br#"{"goal": "x", "budget": {"max_tokens": 184467440737095516160000}}"#.to_vec(),
            400,
            "budget",
        ),
        ("a negative count", json, br#"{"goal": "x", "budget": {"max_steps": -1}}"#.to_vec(), 400, "budget"),
        ("NaN", json, br#"{"goal": "x", "budget": {"max_steps": NaN}}"#.to_vec(), 400, "bad JSON body"),
        ("invalid UTF-8", json, b"{\"goal\": \"\xff\xfe\"}".to_vec(), 400, "bad JSON body"),
        ("overlong UTF-8", json, b"{\"goal\": \"\xc0\xaf\"}".to_vec(), 400, "bad JSON body"),
        ("a lone surrogate", json, br#"{"goal": "\ud800x"}"#.to_vec(), 400, "hex escape"),
        ("a NUL in the goal", json, br#"{"goal": "a\u0000b"}"#.to_vec(), 400, "goal"),
        ("duplicate keys", json, br#"{"goal": "x", "goal": "y"}"#.to_vec(), 400, "duplicate field"),
        ("trailing JSON", json, br#"{"goal": "x"} {"goal": "y"}"#.to_vec(), 400, "trailing"),
        ("an empty body", json, Vec::new(), 400, "bad JSON body"),
        ("an array", json, b"[]".to_vec(), 400, "bad JSON body"),
        ("null", json, b"null".to_vec(), 400, "bad JSON body"),
        ("an unknown field", json, br#"{"goal": "x", "admin": true}"#.to_vec(), 400, "unknown field"),
        ("no content type", None, br#"{"goal": "x"}"#.to_vec(), 400, "Content-Type"),
        ("text/plain", Some("text/plain"), br#"{"goal": "x"}"#.to_vec(), 400, "Content-Type"),
        ("a form", Some("application/x-www-form-urlencoded"), b"goal=x".to_vec(), 400, "Content-Type"),
        ("multipart", Some("multipart/form-data; boundary=x"), b"--x\r\n\r\nx\r\n--x--".to_vec(), 400, "Content-Type"),
        ("XML", Some("application/xml"), b"<goal>x</goal>".to_vec(), 400, "Content-Type"),
        ("JSON in UTF-16", json, b"\xff\xfe{\x00}\x00".to_vec(), 400, "bad JSON body"),
    ];
    let tried = cases.len();
    for (name, content_type, body, status, says) in cases {
        let reply = raw(addr, &goal_request(content_type, &body)).await.reply(name);
        let code = if status == 413 { "payload_too_large" } else { "invalid_request" };
        reply.assert_error(status, code, name);
        let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(says), "{name}: {message:?} should say {says:?}");
        assert!(message.len() < 2_000, "{name}: the message does not echo the body ({} bytes)", message.len());
    }

    // declared over the limit but barely sent: refused at once, not after waiting for the body
    let mut conn = Conn::open(addr).await;
    let head = format!(
        "POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"goal\"",
        LIMIT + 1
    );
    conn.send(head.as_bytes()).await;
    let started = Instant::now();
    let reply = conn.read(Duration::from_secs(3)).await.reply("a declared length over the limit");
    reply.assert_error(413, "payload_too_large", "a declared length over the limit");
    assert!(started.elapsed() < Duration::from_secs(2), "answered before the body: {:?}", started.elapsed());

    // chunked over the limit (no length declared): 413 naming the limit, found while reading
    let mut conn = Conn::open(addr).await;
    conn.send(b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
    for _ in 0..(LIMIT / 0x4000 + 4) {
        if !conn.send(chunk.as_bytes()).await {
            break;
        }
    }
    conn.send(b"0\r\n\r\n").await;
    let reply = conn.read(Duration::from_secs(10)).await.reply("chunked over the limit");
    reply.assert_error(413, "payload_too_large", "chunked over the limit");
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("262144"), "{}", reply.text());

    // chunked within the limit is a body like any other
    let body = br#"{"goal": "sent in chunks"}"#;
    let mut chunked = b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for part in body.chunks(7) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(addr, &chunked).await.reply("chunked within the limit");
    assert_eq!(reply.status, 201, "{}", reply.text());

    // a length that lies low: the declared bytes are the body, the rest is a broken second request
    let mut lying = b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"goal\": \"".to_vec();
    lying.extend(std::iter::repeat_n(b'a', LIMIT + 1024));
    let mut conn = Conn::open(addr).await;
    conn.send(&lying).await;
    let first = conn.read(Duration::from_secs(5)).await.reply("a length that lies low");
    first.assert_error(400, "invalid_request", "the declared 9 bytes");
    match conn.read(Duration::from_secs(5)).await {
        Read::Reply(second) => assert_eq!(second.status, 400, "the rest is no request: {}", second.head),
        Read::Closed => {}
        Read::Silent => panic!("the rest of a lying body left the connection hanging"),
    }

    // framing the server cannot trust: refused, never a 2xx or 5xx
    let framings: [&[u8]; 6] = [
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"goal\": \"x\"}\r\n0\r\n\r\n",
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Length: 13\r\nContent-Length: 14\r\n\r\n{\"goal\": \"x\"}",
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    ];
    // both a length and a transfer encoding (RFC 9112 §6.3): framed by the transfer encoding
    // alone, and the connection closed after the answer, so nothing can be smuggled behind it
    let mut conn = Conn::open(addr).await;
    let mut smuggled = framings[0].to_vec();
    smuggled.extend_from_slice(b"GET /api/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader-token\r\n\r\n");
    conn.send(&smuggled).await;
    let reply = conn.read(Duration::from_secs(5)).await.reply("Content-Length and Transfer-Encoding");
    assert!(matches!(reply.status, 201 | 400), "{}", reply.head);
    assert_eq!(reply.header("connection"), Some("close"), "{}", reply.head);
    assert!(matches!(conn.read(Duration::from_secs(5)).await, Read::Closed), "a request was smuggled behind it");
    for (n, framing) in framings.iter().enumerate().skip(1) {
        match raw(addr, framing).await {
            Read::Reply(reply) => assert!((400..500).contains(&reply.status), "framing {n}: {}", reply.head),
            Read::Closed => {}
            Read::Silent => panic!("framing {n} left the connection hanging"),
        }
    }
    // a limit above axum's own default (2 MiB) is the limit: a 2.5 MiB body is read and judged
    let big = server::Limits { max_body_bytes: 3 * 1024 * 1024, ..limits };
    let roomy = serve(test_support::sqlite().await, big).await;
    let long_goal = format!(r#"{{"goal": "{}"}}"#, "g".repeat(2_500_000));
    let reply = raw(roomy.addr, &goal_request(json, long_goal.as_bytes())).await.reply("a 2.5 MiB body");
    reply.assert_error(400, "invalid_request", "a 2.5 MiB body under a 3 MiB limit");
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("goal"), "{}", reply.text());
    eprintln!("tried {} bodies, 6 byte-level cases and {} framings", tried, framings.len());
    assert_still_serves(addr).await;
}

/// A client that sends its headers or its body a byte at a time, or nothing at all, holds its
/// connection no longer than the limits (header read timeout, request timeout), and many such
/// connections do not keep a normal request from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_in_bounded_time() {
    let second = Duration::from_secs(1);
    let limits = server::Limits { header_read_timeout: second, request_timeout: second, ..limits() };
    let served = serve(test_support::sqlite().await, limits).await;
    let addr = served.addr;
    let bound = Duration::from_millis(3_500);

    // headers a byte every 50 ms (250 bytes would take 12.5 s): closed after about a second
    let mut conn = Conn::open(addr).await;
    let slow_head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n", "a".repeat(200));
    let started = Instant::now();
    let mut closed = false;
    for byte in slow_head.as_bytes() {
        if !conn.send(&[*byte]).await || conn.closes_within(Duration::from_millis(50)).await {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "the slow head was read to the end ({took:?})");
    assert!(took >= Duration::from_millis(900) && took < bound, "closed after {took:?}");
    let sent = String::from_utf8_lossy(&conn.buffer).into_owned();
    assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "nothing but a 408: {sent:?}");

    // a connection that sends nothing, and one idle after an answer, are closed too
    let mut silent = Conn::open(addr).await;
    let started = Instant::now();
    assert!(silent.closes_within(bound).await, "a silent connection stays open");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
    let mut kept = Conn::open(addr).await;
    kept.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(kept.read(bound).await.reply("keep-alive").status, 200);
    assert!(kept.closes_within(bound).await, "an idle kept-alive connection stays open");

    // a body a byte every 100 ms: 408 as JSON naming the limit, then the connection closes
    let mut conn = Conn::open(addr).await;
    conn.send(b"POST /api/goals HTTP/1.1\r\nHost: x\r\nx-admin-token: admin-secret\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n").await;
    let started = Instant::now();
    let reply = loop {
        conn.send(b" ").await;
        match conn.read(Duration::from_millis(100)).await {
            Read::Silent if started.elapsed() < Duration::from_secs(10) => continue,
            other => break other.reply("a trickled body"),
        }
    };
    let took = started.elapsed();
    reply.assert_error(408, "timeout", "a trickled body");
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("1 s"), "{}", reply.text());
    assert!(took >= Duration::from_millis(900) && took < bound, "408 after {took:?}");
    assert!(conn.closes_within(bound).await, "the connection of a timed-out body stays open");

    // the body of an unauthenticated request is not waited for
    let mut conn = Conn::open(addr).await;
    conn.send(b"POST /api/goals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
        .await;
    let started = Instant::now();
    conn.read(bound).await.reply("no token").assert_error(401, "unauthorized", "no token");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());

    // 200 idle connections (half silent, half with half a head) do not stop a normal request
    let mut idle = Vec::new();
    for n in 0..200 {
        let mut conn = Conn::open(addr).await;
        if n % 2 == 1 {
            conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        }
        idle.push(conn);
    }
    let started = Instant::now();
    assert_still_serves(addr).await;
    assert!(started.elapsed() < Duration::from_secs(2), "a normal request took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut still_open = 0;
    for conn in &mut idle {
        if !conn.closes_within(Duration::from_millis(500)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle connections left open after the header read timeout");
    assert_still_serves(addr).await;
}

/// A client address over its share of connections is answered 429 and closed, any client once
/// the server is full 503, both as JSON naming the limit; a closed connection gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_refused_and_places_come_back() {
    let limits = server::Limits { max_connections_per_client: 4, max_connections: 6, ..limits() };
    let served = serve(test_support::sqlite().await, limits).await;
    let addr = served.addr;
    let second = Duration::from_secs(5);
    // a kept-alive connection with one answer read, so the server has surely admitted it
    async fn admitted(from: [u8; 4], addr: SocketAddr) -> Conn {
        let mut conn = Conn::open_from(from, addr).await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(conn.read(Duration::from_secs(5)).await.reply("admitted").status, 200);
        conn
    }
    let mut mine = Vec::new();
    for _ in 0..4 {
        mine.push(admitted(CLIENT, addr).await);
    }
    let mut fifth = Conn::open(addr).await;
    fifth.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let reply = fifth.read(second).await.reply("a fifth connection from one address");
    reply.assert_error(429, "rate_limited", "a fifth connection from one address");
    assert!(reply.text().contains("max_connections_per_client"), "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(fifth.closes_within(second).await, "a refused connection stays open");

    // another address still gets in, up to the total
    let others = [admitted([127, 0, 0, 2], addr).await, admitted([127, 0, 0, 2], addr).await];
    let mut full = Conn::open_from([127, 0, 0, 3], addr).await;
    let reply = full.read(second).await.reply("a connection over the total");
    reply.assert_error(503, "unavailable", "a connection over the total");
    assert!(reply.text().contains("max_connections"), "{}", reply.text());

    // a closed connection gives its place back
    drop(mine.pop());
    drop(others);
    let deadline = Instant::now() + second;
    loop {
        let mut again = Conn::open(addr).await;
        again.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        match again.read(second).await {
            Read::Reply(reply) if reply.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no place came back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(mine);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_still_serves(addr).await;
}

/// A client that sends requests and reads none of the answers (pipelined, with a tiny receive
/// buffer) has its connection closed once a write has waited for the write timeout, instead of
/// holding a connection and its answers for ever; a slow but reading client is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off_after_the_write_timeout() {
    let limits = server::Limits { write_timeout: Duration::from_secs(1), ..limits() };
    let served = serve(test_support::sqlite().await, limits).await;
    let addr = served.addr;
    let one = http(addr, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(one.status, 200);
    // enough answers to outgrow every socket buffer on the way (a few MiB on loopback)
    let requests = (32 * 1024 * 1024 / one.body.len()).clamp(100, 20_000);
    let whole = requests * one.body.len();

    let connect = |receive_buffer: u32| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(receive_buffer).expect("receive buffer");
        let stream = socket.connect(addr).await.expect("connecting");
        Conn { stream, buffer: Vec::new(), ended: false }
    };
    let pipelined = "GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);

    let mut stalled = connect(4096).await;
    stalled.send(pipelined.as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(stalled.closes_within(Duration::from_secs(20)).await, "a client reading nothing kept its connection");
    assert!(stalled.buffer.len() < whole, "every answer was delivered ({} bytes)", stalled.buffer.len());

    // a client reading slowly (a pause of 300 ms now and then, under the timeout) gets everything
    let mut slow = connect(65536).await;
    let few = 30;
    slow.send("GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(few).as_bytes()).await;
    let mut replies = 0;
    while replies < few {
        match slow.read(Duration::from_secs(10)).await {
            Read::Reply(reply) => {
                assert_eq!(reply.status, 200);
                replies += 1;
                if replies % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            other => panic!("a slow reader lost its connection after {replies} answers: {other:?}"),
        }
    }
    assert_still_serves(addr).await;
}

/// CR, LF and NUL in header values (request id, trace context, Host, tokens), malformed header
/// lines, too large or too many headers: refused with a 4xx or ignored, never a 5xx, and never
/// reflected into an answer's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_is_refused_or_ignored_never_reflected() {
    let served = serve(test_support::sqlite().await, limits()).await;
    let addr = served.addr;
    let get = |target: &str, extra: &[u8]| {
        let mut bytes = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
        bytes.extend_from_slice(extra);
        bytes.extend_from_slice(b"\r\n");
        bytes
    };
    let token = "Authorization: Bearer reader-token\r\n";
    let with_token = |extra: &str| format!("{token}{extra}").into_bytes();
    let many: String = (0..150).map(|n| format!("X-Many-{n}: v\r\n")).collect();
    // (what, request, the status it must get; None: any 4xx or being ignored with a 200)
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "CRLF after a request id",
            get("/api/messages", &with_token("X-Request-Id: a\r\nSet-Cookie: injected=1\r\n")),
            Some(200),
        ),
        (
            "bare CR in a request id",
            get("/api/messages", &with_token("X-Request-Id: a\rSet-Cookie: injected=1\r\n")),
            Some(400),
        ),
        (
            "bare LF in a request id",
            get("/api/messages", &with_token("X-Request-Id: a\nSet-Cookie: injected=1\r\n")),
            None,
        ),
        ("NUL in a request id", get("/api/messages", &with_token("X-Request-Id: a\0injected\r\n")), Some(400)),
        (
            "CRLF in traceparent",
            get(
                "/api/messages",
                &with_token("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nInjected: 1\r\n"),
            ),
            Some(200),
        ),
        ("bare CR in traceparent", get("/api/messages", &with_token("traceparent: 00-\rinjected: 1\r\n")), Some(400)),
        ("NUL in traceparent", get("/api/messages", &with_token("traceparent: 00-\0-injected\r\n")), Some(400)),
        ("a control byte in tracestate", get("/api/messages", &with_token("tracestate: injected=\x01\r\n")), Some(400)),
        (
            "CRLF in Host",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nSet-Cookie: injected=1\r\nConnection: close\r\n\r\n".to_vec(),
            Some(200),
        ),
        (
            "bare CR in Host",
            b"GET /healthz HTTP/1.1\r\nHost: x\rinjected: 1\r\nConnection: close\r\n\r\n".to_vec(),
            Some(400),
        ),
        ("NUL in Host", b"GET /healthz HTTP/1.1\r\nHost: x\0injected\r\nConnection: close\r\n\r\n".to_vec(), Some(400)),
        ("no Host", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), None),
        (
            "two Hosts",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: injected\r\nConnection: close\r\n\r\n".to_vec(),
            None,
        ),
        (
            "a 10 KiB Host",
            format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", "h".repeat(10_240)).into_bytes(),
            None,
        ),
        ("a folded header", get("/healthz", b"X-Folded: a\r\n injected: 1\r\n"), None),
        ("a space in a header name", get("/healthz", b"X Injected: 1\r\n"), Some(400)),
        ("a header without a colon", get("/healthz", b"Injected\r\n"), Some(400)),
        ("a non-ASCII header name", get("/healthz", "X-\u{2028}Injected: 1\r\n".as_bytes()), Some(400)),
        ("CRLF in the request target", b"GET /healthz\r\nInjected: 1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Some(400)),
        ("NUL in the method", b"G\0ET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), Some(400)),
        (
            "an unknown HTTP version",
            b"GET /healthz HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            Some(400),
        ),
        ("encoded CRLF in a path id", get("/api/messages/%0d%0aSet-Cookie:%20injected=1", token.as_bytes()), Some(400)),
        (
            "encoded CRLF in a query",
            get("/api/messages?status=%0d%0aSet-Cookie:%20injected", token.as_bytes()),
            Some(400),
        ),
        ("encoded CRLF in an unknown path", get("/api/%0d%0aSet-Cookie:%20injected", token.as_bytes()), Some(404)),
        (
            "encoded CRLF after a wrong method",
            b"DELETE /api/messages%0d%0aSet-Cookie:injected HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            Some(404),
        ),
        (
            "a cursor with an injection",
            get("/api/events/stream", &with_token("Last-Event-ID: 1 OR 1=1 injected\r\n")),
            Some(400),
        ),
        ("non-UTF-8 in a bearer", get("/api/messages", b"Authorization: Bearer \xff\xfeinjected\r\n"), Some(401)),
        ("non-UTF-8 in the admin token", get("/api/messages", b"x-admin-token: \xc3\x28injected\r\n"), Some(401)),
        (
            "two Authorization headers",
            get("/api/messages", b"Authorization: Bearer wrong\r\nAuthorization: Bearer reader-token\r\n"),
            None,
        ),
        ("a 60 KiB header", get("/healthz", format!("X-Big: {}\r\n", "b".repeat(60 * 1024)).as_bytes()), Some(200)),
        ("a 500 KiB header", get("/healthz", format!("X-Big: {}\r\n", "b".repeat(500 * 1024)).as_bytes()), Some(431)),
        ("150 headers", get("/healthz", many.as_bytes()), Some(431)),
        ("a 70 KB request target", get(&format!("/healthz?{}", "q".repeat(70_000)), b""), Some(414)),
    ];
    let tried = cases.len();
    for (what, request, want) in cases {
        let reply = match raw(addr, &request).await {
            Read::Reply(reply) => reply,
            Read::Closed if want.is_none_or(|status| status >= 400) => continue,
            other => panic!("{what}: {other:?}"),
        };
        match want {
            Some(status) => assert_eq!(reply.status, status, "{what}: {}", reply.head),
            None => assert!(reply.status == 200 || (400..500).contains(&reply.status), "{what}: {}", reply.head),
        }
        let head = reply.head.to_ascii_lowercase();
        assert!(!head.contains("injected") && !head.contains("set-cookie"), "{what}: reflected into {head}");
        for (name, value) in &reply.headers {
            assert!(
                !name.contains('\0') && !value.contains('\0') && !value.contains('\r'),
                "{what}: {name}: {value:?}"
            );
        }
        // hyper answers what it cannot parse itself (bare, no body); whatever reached the router
        // (it carries the security headers) is a JSON error
        if reply.status >= 400 && reply.header("x-content-type-options").is_some() {
            assert!(
                reply.json()["code"].is_string() && reply.json()["message"].is_string(),
                "{what}: {}",
                reply.text()
            );
        }
    }
    eprintln!("tried {tried} header attacks");
    assert_still_serves(addr).await;
}

/// Fills the artifacts directory: a real call's files, a secret beside `artifacts/`, and
/// symbolic links that point out of it (a directory, a file, whole families).
fn plant_artifacts(data_dir: &Path) -> String {
    let call = data_dir.join("artifacts/mcp/everything/20260101T000000.000Z-1-abuse");
    std::fs::create_dir_all(&call).expect("call dir");
    std::fs::write(call.join("response.json"), r#"{"marker": "ARTIFACT-OK"}"#).expect("artifact");
    std::fs::write(data_dir.join("secret.txt"), "TOP-SECRET-CONTENT").expect("secret");
    std::os::unix::fs::symlink(data_dir, data_dir.join("artifacts/mcp/evil")).expect("symlink to the data dir");
    std::os::unix::fs::symlink(data_dir.join("secret.txt"), call.join("leak.json")).expect("symlink to a file");
    std::os::unix::fs::symlink("/", data_dir.join("artifacts/gate-run")).expect("symlink to /");
    std::os::unix::fs::symlink("/etc", data_dir.join("artifacts/decisions")).expect("symlink to /etc");
    "mcp/everything/20260101T000000.000Z-1-abuse".to_owned()
}

/// `..`, encoded and double-encoded dots and slashes, absolute paths, backslashes, NUL and
/// symbolic links out of the artifacts directory: 400 or 404 with a JSON error, never the file;
/// the same for the dashboard's assets and the other routes that take a path, on the whole and
/// the minimal server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_never_reaches_a_file_outside_the_artifacts() {
    let mut tried = 0;
    for routes in [Routes::All, Routes::Minimal] {
        let served = serve_with(test_support::sqlite().await, limits(), routes, None).await;
        let addr = served.addr;
        let call = plant_artifacts(&served.data_dir);
        let ok = http(addr, "GET", &format!("/api/artifacts/{call}/response.json"), &[READER], None).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert!(ok.text().contains("ARTIFACT-OK"));
        let listing = http(addr, "GET", &format!("/api/artifacts/{call}"), &[READER], None).await;
        assert_eq!(listing.status, 200, "{}", listing.text());
        let secret = served.data_dir.join("secret.txt").display().to_string();
        let attacks = [
            "/api/artifacts/../secret.txt".to_owned(),
            "/api/artifacts/mcp/../../secret.txt".to_owned(),
            "/api/artifacts/mcp/everything/../../../secret.txt".to_owned(),
            "/api/artifacts/%2e%2e/secret.txt".to_owned(),
            "/api/artifacts/mcp/%2e%2e/%2e%2e/secret.txt".to_owned(),
            "/api/artifacts/mcp/%2e%2e%2f%2e%2e%2fsecret.txt".to_owned(),
            "/api/artifacts/mcp%2f..%2f..%2fsecret.txt".to_owned(),
            "/api/artifacts/mcp/%252e%252e/%252e%252e/secret.txt".to_owned(),
            "/api/artifacts/mcp/%252e%252e%252f%252e%252e%252fsecret.txt".to_owned(),
            "/api/artifacts/mcp/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt".to_owned(),
            "/api/artifacts/mcp/..%5c..%5csecret.txt".to_owned(),
            "/api/artifacts/mcp\\..\\..\\secret.txt".to_owned(),
            "/api/artifacts/%2fetc%2fpasswd".to_owned(),
            "/api/artifacts//etc/passwd".to_owned(),
            format!("/api/artifacts/{secret}"),
            "/api/artifacts/mcp/%00/../../secret.txt".to_owned(),
            format!("/api/artifacts/{call}/response.json%00.png"),
            "/api/artifacts/mcp/.hidden".to_owned(),
            "/api/artifacts/mcp/evil/secret.txt".to_owned(),
            "/api/artifacts/mcp/evil".to_owned(),
            format!("/api/artifacts/{call}/leak.json"),
            "/api/artifacts/gate-run/etc/passwd".to_owned(),
            "/api/artifacts/gate-run".to_owned(),
            "/api/artifacts/decisions/passwd".to_owned(),
            "/api/artifacts/decisions".to_owned(),
            "/api/artifacts/secret.txt".to_owned(),
            "/api/artifacts/mcp/a/b/c/d/e/f/g/h/i".to_owned(),
        ];
        for path in &attacks {
            let reply = raw(addr, &request_bytes("GET", path, &[READER], None)).await;
            let reply = match reply {
                Read::Reply(reply) => reply,
                Read::Closed => continue,
                Read::Silent => panic!("{path}: no answer"),
            };
            let text = reply.text();
            assert!(!text.contains("TOP-SECRET") && !text.contains("root:x:0:0"), "{path} leaked: {text}");
            assert!(reply.json().get("entries").is_none(), "{path} listed a directory: {text}");
            assert!(matches!(reply.status, 400 | 404), "{path}: {} {text}", reply.status);
            let code = if reply.status == 400 { "invalid_request" } else { "not_found" };
            reply.assert_error(reply.status, code, path);
        }
        tried += attacks.len();
        if routes == Routes::All {
            let others = [
                "/assets/../../Cargo.toml",
                "/assets/%2e%2e/%2e%2e/Cargo.toml",
                "/assets/..%2f..%2fCargo.toml",
                "/assets/%2fetc%2fpasswd",
                "/api/messages/..%2f..%2fetc%2fpasswd",
                "/api/traces/..%2f..%2fetc%2fpasswd",
                "/api/goals/..%2f..%2fetc%2fpasswd",
                "/api/mcp/ping/..%2f..%2f/etc%2fpasswd",
            ];
            for path in others {
                let reply = raw(addr, &request_bytes("GET", path, &[READER], None)).await.reply(path);
                assert!(!reply.text().contains("root:x:0:0") && !reply.text().contains("[workspace]"), "{path}");
                assert!(matches!(reply.status, 400 | 404), "{path}: {} {}", reply.status, reply.text());
                assert!(reply.json()["code"].is_string(), "{path}: {}", reply.text());
            }
            tried += others.len();
        }
        assert_still_serves(addr).await;
    }
    eprintln!("tried {tried} traversals");
}

/// Two tenants' messages, events, dead letters, goals, documents and an MCP call's artifacts;
/// tenant A's token, asking with B's ids and B's name on every route that takes them, sees none of
/// B's data (404 for B's ids, its own data for B's name, 403 where it may not look), while its own
/// data still reads; a tenant token on admin routes is refused.
async fn cross_tenant_check(t: test_support::TestStore) {
    let dir = knowledge::embed::minilm_dir(&test_support::models_dir());
    let embedder: Arc<dyn knowledge::Embedder> = Arc::new(knowledge::MiniLm::load(&dir).expect("model"));
    let knowledge_api = Arc::new(server::KnowledgeApi { embedder: embedder.clone() });
    let served = serve_with(t, limits(), Routes::All, Some(knowledge_api)).await;
    let (addr, store) = (served.addr, served.t.store.clone());
    let call = plant_artifacts(&served.data_dir);
    std::fs::write(served.data_dir.join("artifacts").join(&call).join("request.json"), "GLOBEX-SECRET-ARTIFACT")
        .expect("artifact");
    let mut bearers = Vec::new();
    for tenant in ["acme", "globex"] {
        let (text, row) = secrets::tokens::generate(tenant, "ci", test_support::epoch());
        store.create_api_token(row).await.expect("token");
        bearers.push(format!("Bearer {}", text.as_str()));
    }
    // per tenant: a queued message, a dead letter, a goal, two documents that link
    let intent = model::Intent::new("mcp_call").expect("intent");
    let (mut messages, mut dead, mut goals) = (Vec::new(), Vec::new(), Vec::new());
    for tenant in ["acme", "globex"] {
        let marker = format!("{}-SECRET", tenant.to_uppercase());
        let mut message = model::NewMessage::new("mcp", "gateway", intent.clone(), json!({"secret": marker}));
        message.tenant = tenant.into();
        messages.push(store.enqueue(message).await.expect("enqueue").message);
        let mut doomed =
            model::NewMessage::new("abuse", "dead", model::Intent::new("noop").expect("i"), json!({"secret": marker}));
        doomed.tenant = tenant.into();
        dead.push(store.enqueue(doomed).await.expect("enqueue").message);
        let goal = agent::submit(&store, tenant, &format!("{marker} goal"), model::config::agent::Budget::default())
            .await
            .expect("goal");
        goals.push(goal);
        let documents = vec![
            knowledge::InlineDocument {
                source: format!("{tenant}-plans.md"),
                text: format!("# Plans\n\n{marker} plans for rockets; see [fuel]({tenant}-fuel.md).\n"),
                kind: None,
            },
            knowledge::InlineDocument {
                source: format!("{tenant}-fuel.md"),
                text: format!("# Fuel\n\n{marker} fuel for rockets.\n"),
                kind: None,
            },
        ];
        knowledge::Indexer::new(store.clone(), embedder.clone())
            .index_inline(
                &store::knowledge::KnowledgeScope::new(tenant.to_owned(), "docs".to_owned()),
                documents,
                &|_| {},
            )
            .await
            .expect("index");
    }
    let claimed =
        store.claim(&store::ClaimRequest::new("abuse", "dead", "w", 10, Duration::from_secs(30))).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let failures = claimed
        .iter()
        .map(|message| store::Failure {
            id: message.id,
            kind: model::ErrorKind::InvalidInput,
            error: "dead on purpose".into(),
            action: store::FailAction::DeadLetter { reason: "not_retryable".into() },
            detail: None,
        })
        .collect();
    store.fail("w", failures).await.expect("fail");
    let a = ("authorization", bearers[0].as_str());
    let b_message = &messages[1];
    let (b_id, b_trace, b_goal, b_dead) = (b_message.id, b_message.trace_id.clone(), goals[1].id.clone(), dead[1].id);
    let leaks = |text: &str| text.contains("GLOBEX-SECRET") || text.contains(r#""tenant":"globex""#);

    // listings and reads that name B: 200 with only A's data
    let listings = [
        "/api/messages".to_owned(),
        "/api/messages?tenant=globex".to_owned(),
        format!("/api/messages?trace_id={b_trace}"),
        "/api/events".to_owned(),
        "/api/events?tenant=globex".to_owned(),
        format!("/api/events?message_id={b_id}"),
        format!("/api/events?trace_id={b_trace}"),
        "/api/metrics/mcp/events?tenant=globex".to_owned(),
        format!("/api/traces/{b_trace}"),
        "/api/dlq".to_owned(),
        "/api/dlq?tenant=globex".to_owned(),
        "/api/dlq?tenant=globex&status=failed".to_owned(),
        "/api/goals".to_owned(),
        "/api/goals?tenant=globex".to_owned(),
        "/api/knowledge/search?tenant=globex&query=GLOBEX-SECRET%20plans&threshold=0".to_owned(),
        "/api/knowledge/search?query=rockets%20fuel&mode=fulltext&threshold=0&top_k=100".to_owned(),
        "/api/knowledge/graphrag?tenant=globex&query=plans%20for%20rockets&threshold=0".to_owned(),
        "/api/knowledge/stats?tenant=globex".to_owned(),
        "/api/knowledge/stats?tenant=globex&project=docs".to_owned(),
    ];
    for path in &listings {
        let reply = http(addr, "GET", path, &[a], None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(!leaks(&reply.text()), "{path} leaked tenant globex: {}", reply.text());
    }
    let events = http(addr, "GET", &format!("/api/events?message_id={b_id}"), &[a], None).await;
    assert_eq!(events.json()["items"].as_array().map(Vec::len), Some(0), "{}", events.text());
    let trace = http(addr, "GET", &format!("/api/traces/{b_trace}"), &[a], None).await.json();
    assert_eq!(
        (trace["messages"].as_array().map(Vec::len), trace["events"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    let stats = http(addr, "GET", "/api/knowledge/stats?tenant=globex", &[a], None).await.json();
    assert_eq!(stats["documents"], 2, "A's own two documents: {stats}");
    // B's ids and B's entities: not found
    let b_ids = [
        format!("/api/messages/{b_id}"),
        format!("/api/messages/{b_dead}"),
        format!("/api/goals/{b_goal}"),
        "/api/knowledge/graph/neighbors?tenant=globex&name=globex-plans.md".to_owned(),
        "/api/knowledge/graph/neighbors?name=globex-plans.md&kind=document&depth=6".to_owned(),
        "/api/knowledge/graph/path?tenant=globex&from=globex-plans.md&to=globex-fuel.md".to_owned(),
        "/api/knowledge/graph/path?from=acme-plans.md&to=globex-fuel.md".to_owned(),
    ];
    for path in &b_ids {
        let reply = http(addr, "GET", path, &[a], None).await;
        reply.assert_error(404, "not_found", path);
        assert!(!leaks(&reply.text()), "{path}: {}", reply.text());
    }
    // the live stream from the start, asked for B: only A's events
    let mut stream = Conn::open(addr).await;
    stream.send(&request_bytes("GET", "/api/events/stream?tenant=globex&after=0", &[a], None)).await;
    let streamed = String::from_utf8_lossy(&stream.read_for(Duration::from_millis(1_500)).await).into_owned();
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    assert!(
        streamed.contains("ACME-SECRET") || streamed.contains(r#""tenant":"acme""#),
        "A's events stream: {streamed}"
    );
    assert!(!leaks(&streamed), "the stream leaked tenant globex: {streamed}");
    drop(stream);
    // what a tenant token may not touch at all: admin routes, and views across tenants
    let goal_body = r#"{"goal": "x", "tenant": "globex"}"#;
    let refused: [(&str, String, Option<&str>); 18] = [
        ("POST", format!("/api/dlq/{b_dead}/requeue"), None),
        ("POST", format!("/api/goals/{b_goal}/cancel"), Some("{}")),
        ("POST", format!("/api/goals/{b_goal}/approvals/r1.s1"), Some(r#"{"approve": true}"#)),
        ("POST", "/api/goals".to_owned(), Some(goal_body)),
        (
            "POST",
            "/api/mcp/enqueue".to_owned(),
            Some(r#"{"toolset": "everything", "tool": "echo", "tenant": "globex"}"#),
        ),
        ("POST", "/api/mcp/everything/echo".to_owned(), Some("{}")),
        (
            "POST",
            "/api/knowledge/ingest".to_owned(),
            Some(r#"{"tenant": "globex", "documents": [{"source": "x", "text": "y"}]}"#),
        ),
        ("POST", "/api/metrics/snapshot".to_owned(), None),
        ("GET", format!("/api/artifacts/{call}/request.json"), None),
        ("GET", "/api/artifacts/mcp".to_owned(), None),
        ("GET", "/api/metrics/mcp/artifacts/summary".to_owned(), None),
        ("GET", "/api/metrics/summary".to_owned(), None),
        ("GET", "/api/metrics/mcp/summary".to_owned(), None),
        ("GET", "/api/metrics/mcp/series".to_owned(), None),
        ("GET", "/api/agents".to_owned(), None),
        ("GET", "/api/mcp/config".to_owned(), None),
        ("GET", "/api/mcp/health".to_owned(), None),
        ("GET", "/api/mcp/ping/everything/echo".to_owned(), None),
    ];
    for (method, path, body) in &refused {
        let reply = http(addr, method, path, &[a], *body).await;
        reply.assert_error(403, "forbidden", &format!("{method} {path}"));
        assert!(!leaks(&reply.text()) && !reply.text().contains("GLOBEX-SECRET-ARTIFACT"), "{path}");
    }
    // a tenant token in the admin header is no admin token
    let as_admin =
        http(addr, "POST", &format!("/api/dlq/{b_dead}/requeue"), &[("x-admin-token", &bearers[0][7..])], None).await;
    as_admin.assert_error(401, "unauthorized", "a tenant token as the admin token");
    // nothing of B changed
    assert_eq!(store.message(b_dead).await.expect("B's dead letter").status, model::MessageStatus::Failed);
    assert_eq!(store.goal(&b_goal).await.expect("B's goal").status, goals[1].status);

    // A's own data still reads, and B's token reads B's
    for path in [
        format!("/api/messages/{}", messages[0].id),
        format!("/api/goals/{}", goals[0].id),
        "/api/knowledge/graph/neighbors?name=acme-plans.md&kind=document&direction=out".to_owned(),
    ] {
        let reply = http(addr, "GET", &path, &[a], None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    let dlq = http(addr, "GET", "/api/dlq", &[a], None).await.json();
    assert_eq!(dlq["items"].as_array().map(Vec::len), Some(1), "A's own dead letter: {dlq}");
    let found = http(addr, "GET", "/api/knowledge/search?query=plans%20for%20rockets&threshold=0", &[a], None).await;
    assert!(found.text().contains("ACME-SECRET"), "A finds its own documents: {}", found.text());
    let b = ("authorization", bearers[1].as_str());
    assert_eq!(http(addr, "GET", &format!("/api/messages/{b_id}"), &[b], None).await.status, 200);
    eprintln!("tried {} cross-tenant requests", listings.len() + b_ids.len() + refused.len() + 2);
    assert_still_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_access_is_refused_sqlite() {
    cross_tenant_check(test_support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_access_is_refused_postgres() {
    cross_tenant_check(test_support::postgres_vector().await).await;
}
