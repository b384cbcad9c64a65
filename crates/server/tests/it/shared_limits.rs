//! Rate limits shared through a real Redis (`COGO_TEST_REDIS_URL`, or the local one): two
//! servers using one Redis allow together what one would; when Redis goes away each falls back to
//! its own buckets and keeps serving, and shares again once Redis is back.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

/// A server's router with request limits `per_second`/`burst` kept in `shared`.
fn server(store: &store::Store, shared: server::SharedRateLimits, per_second: u32, burst: u32) -> axum::Router {
    let mut state = crate::state(store, None);
    state.shared_limits = Some(shared);
    let limits = server::Limits { rate_per_second: per_second, rate_burst: burst, ..server::Limits::default() };
    server::router(state, limits)
}

fn request(ip: [u8; 4], token: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().uri("/api/agents");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(Body::empty()).expect("request");
    request.extensions_mut().insert(axum::extract::ConnectInfo(server::ClientAddr(SocketAddr::from((ip, 40000)))));
    request
}

/// Sends `n` requests (with `token`, if any), alternating between the servers; the statuses.
async fn alternate(
    servers: &[&axum::Router],
    n: usize,
    token: Option<&str>,
    ip: impl Fn(usize) -> [u8; 4],
) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let response = servers[i % servers.len()].clone().oneshot(request(ip(i), token)).await.expect("response");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
            assert!(wait >= 1, "Retry-After {wait}");
        }
        statuses.push(response.status());
    }
    statuses
}

/// Requests that got past the rate limits (a request without a token then gets 401).
fn allowed(statuses: &[StatusCode]) -> usize {
    statuses.iter().filter(|s| **s != StatusCode::TOO_MANY_REQUESTS).count()
}

async fn connect(url: &str, prefix: &str) -> server::SharedRateLimits {
    server::SharedRateLimits::connect(url, prefix).await.unwrap_or_else(|e| {
        panic!("Redis is required for this test: {e} (set COGO_TEST_REDIS_URL or start redis-server)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_redis_allow_together_what_one_would() {
    let t = test_support::sqlite().await;
    let prefix = format!("cogo-test-{}", model::new_id().simple());
    let url = test_support::redis_url();
    // burst 4 at 1/s: 4 requests at once, then one a second
    let a = server(&t.store, connect(&url, &prefix).await, 1, 4);
    let b = server(&t.store, connect(&url, &prefix).await, 1, 4);

    // one client address, alternating servers: 4 (or 5 if a second passed) of 12, not 8
    let statuses = alternate(&[&a, &b], 12, Some("reader-token"), |_| [10, 0, 0, 1]).await;
    assert!((4..=5).contains(&allowed(&statuses)), "one client across two servers: {statuses:?}");
    assert!(statuses[..4].iter().all(|s| *s == StatusCode::OK), "the burst is allowed: {statuses:?}");

    // one token from many addresses, alternating: the token's bucket is shared too
    let prefix2 = format!("{prefix}-token");
    let (c, d) =
        (server(&t.store, connect(&url, &prefix2).await, 1, 4), server(&t.store, connect(&url, &prefix2).await, 1, 4));
    let statuses = alternate(&[&c, &d], 12, Some("reader-token"), |i| [10, 0, 1, i as u8]).await;
    assert!((4..=5).contains(&allowed(&statuses)), "one token across two servers: {statuses:?}");

    // another prefix is another set of buckets
    let e = server(&t.store, connect(&url, &format!("{prefix}-other")).await, 1, 4);
    assert_eq!(allowed(&alternate(&[&e], 4, Some("reader-token"), |_| [10, 0, 0, 1]).await), 4);

    // nothing is stored in clear: the keys are hashes
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("keys");
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| !k.contains("10.0.0.1") && !k.contains("reader-token")), "{keys:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut conn).await.expect("pttl");
    assert!(ttl > 0 && ttl < 10_000, "keys expire once their bucket is full again: {ttl} ms");
}

/// A TCP forwarder to Redis that the test can cut and bring back on the same port.
struct Forwarder {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Forwarder {
    async fn start(target: &str) -> Self {
        let mut forwarder = Self { addr: SocketAddr::from(([127, 0, 0, 1], 0)), task: None, target: target.to_owned() };
        forwarder.resume().await;
        forwarder
    }

    async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("binding the forwarder");
        self.addr = listener.local_addr().expect("address");
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                open.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_server_keeps_serving_on_its_own_buckets_and_shares_again_after() {
    let t = test_support::sqlite().await;
    let prefix = format!("cogo-test-{}", model::new_id().simple());
    let redis_url = test_support::redis_url();
    let target = redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let mut forwarder = Forwarder::start(&target).await;
    let a = server(&t.store, connect(&forwarder.url(), &prefix).await, 1, 3);
    let b = server(&t.store, connect(&redis_url, &prefix).await, 1, 3);
    assert_eq!(allowed(&alternate(&[&a, &b], 6, None, |_| [10, 0, 0, 1]).await), 3, "shared while Redis answers");

    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // server a cannot reach Redis: its own buckets (full, burst 3) let the client in, then limit it
    let statuses = alternate(&[&a], 6, None, |_| [10, 0, 0, 2]).await;
    assert!(
        statuses[..3].iter().all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
        "a server without Redis still serves: {statuses:?}"
    );
    assert!(allowed(&statuses) <= 4, "and still limits on its own: {statuses:?}");

    // Redis back: once its pause after the error is over, server a shares the buckets again. A
    // fresh address spends its burst on server b (through Redis); shared, server a refuses it.
    forwarder.resume().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for fresh in 3u8.. {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let on_b = alternate(&[&b], 3, None, |_| [10, 0, 0, fresh]).await;
        assert_eq!(allowed(&on_b), 3, "{on_b:?}");
        let on_a = alternate(&[&a], 1, None, |_| [10, 0, 0, fresh]).await;
        if on_a[0] == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "server a never used Redis again ({on_a:?})");
    }
}

#[tokio::test]
async fn a_wrong_or_unreachable_redis_is_a_clear_start_up_error() {
    let err = server::SharedRateLimits::connect("http://127.0.0.1:6379", "cogo").await.expect_err("not redis");
    assert!(err.to_string().contains("not a Redis URL"), "{err}");
    let err =
        server::SharedRateLimits::connect("redis://:hunter2@127.0.0.1:1", "cogo").await.expect_err("nothing there");
    let text = err.to_string();
    assert!(text.contains("did not answer") && text.contains("COGO_REDIS_URL"), "{text}");
    assert!(!text.contains("hunter2"), "the password is hidden: {text}");
}
