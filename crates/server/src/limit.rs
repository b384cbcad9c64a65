//! Rate limits and body limits: a token bucket per client address and one per token (hashed, never
//! kept in clear), a stricter bucket of failed authentications per client address, and the body
//! size limit. A request over a rate gets 429 with `Retry-After`; a body over the limit gets 413
//! naming the limit, whether declared (`Content-Length`) or found while reading (chunked).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::shared_limit::{Shared, SharedRateLimits};
use crate::{ApiError, ErrorCode};

/// How many requests pass between sweeps of idle buckets.
const SWEEP_EVERY: u64 = 4096;

/// The buckets of one server: in Redis when shared limits are set (see [`crate::shared_limit`]),
/// in memory otherwise and whenever Redis cannot be asked.
pub(crate) struct RateLimits {
    clients: DefaultKeyedRateLimiter<u64>,
    tokens: DefaultKeyedRateLimiter<u64>,
    requests: AtomicU64,
    per_second: u32,
    burst: u32,
    shared: Option<SharedRateLimits>,
}

impl RateLimits {
    /// `None` when `per_second` is 0 (no limit).
    pub(crate) fn new(per_second: u32, burst: u32, shared: Option<SharedRateLimits>) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            clients: RateLimiter::keyed(quota),
            tokens: RateLimiter::keyed(quota),
            requests: AtomicU64::new(0),
            per_second,
            burst: burst.get(),
            shared,
        })
    }

    /// Asks Redis about the client's and the token's buckets; `None` when it cannot answer.
    async fn check_shared(
        shared: &SharedRateLimits,
        per_second: u32,
        burst: u32,
        client: Option<IpAddr>,
        token: Option<String>,
    ) -> Option<Result<(), u64>> {
        let client = client.map(|ip| ip.to_string()).unwrap_or_default();
        match shared.check(per_second, burst, &client, token.as_deref()).await {
            Shared::Allowed => Some(Ok(())),
            Shared::Wait(seconds) => Some(Err(seconds)),
            Shared::Unavailable => None,
        }
    }

    /// `Err(seconds to wait)` when the client or the token is over its rate.
    fn check(&self, client: u64, token: Option<u64>) -> Result<(), u64> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.clients.retain_recent();
            self.tokens.retain_recent();
        }
        let now = DefaultClock::default().now();
        let wait = |not_until: governor::NotUntil<_>| not_until.wait_time_from(now).as_secs().max(1);
        self.clients.check_key(&client).map_err(wait)?;
        if let Some(token) = token {
            self.tokens.check_key(&token).map_err(wait)?;
        }
        Ok(())
    }
}

fn hashed(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The token a request carries (admin header or bearer).
fn token_value(request: &Request) -> Option<&str> {
    let headers = request.headers();
    let admin = headers.get("x-admin-token").and_then(|v| v.to_str().ok());
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    admin.or(bearer)
}

/// The client address of a request, if it came through [`crate::serve`] (or axum's connect info).
pub(crate) fn client_ip(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo<crate::ClientAddr>>().map(|info| info.0.0.ip())
}

/// A 429 answer with `Retry-After: wait`.
pub(crate) fn too_many(wait: u64, message: String) -> Response {
    let mut response = ApiError::new(ErrorCode::RateLimited, message).into_response();
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The middleware: 429 with `Retry-After` over the rate of the client address or the token.
pub(crate) async fn rate_limit(
    State(limits): State<Option<Arc<RateLimits>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limits) = limits else { return next.run(request).await };
    let client = client_ip(&request);
    // the in-memory buckets need no copy of the token; Redis is asked only when limits are shared
    let shared = match &limits.shared {
        Some(shared) => {
            let token = token_value(&request).map(str::to_owned);
            RateLimits::check_shared(shared, limits.per_second, limits.burst, client, token).await
        }
        None => None,
    };
    let outcome = shared.unwrap_or_else(|| limits.check(hashed(client), token_value(&request).map(hashed)));
    if let Err(wait) = outcome {
        return too_many(
            wait,
            format!("too many requests: retry after {wait} s (limits apply per client address and per token)"),
        );
    }
    next.run(request).await
}

/// Failed authentications a client address remembers (a wrong token sent again is not counted again).
const RECENT_FAILURES: usize = 8;

/// Above this many tracked client addresses, the ones back to a full allowance are forgotten.
const SWEEP_FAILING_AT: usize = 10_000;

/// Most client addresses tracked; past it (after a sweep) new addresses go untracked, and a
/// warning says so.
const MAX_FAILING_CLIENTS: usize = 100_000;

/// Failed authentications per client address: a token bucket refilled at a steady rate, spent by
/// each token that is checked and found wrong. While it is empty no new token from that address
/// is checked at all, so a guesser learns nothing however fast it sends.
pub(crate) struct AuthFailures {
    per_second: f64,
    burst: f64,
    keys: std::collections::hash_map::RandomState,
    clients: std::sync::Mutex<FailingClients>,
}

#[derive(Default)]
struct FailingClients {
    by_key: HashMap<u64, Failing>,
    swept: Option<Instant>,
}

/// One client address's allowance of failures.
struct Failing {
    /// Checks of new tokens left; refilled at `per_second` up to `burst`.
    allowance: f64,
    /// When `allowance` was last refilled.
    at: Instant,
    /// Keyed hashes of the tokens that failed lately, newest at `recent[(next - 1) % N]`.
    recent: [u64; RECENT_FAILURES],
    /// How many of `recent` are filled, up to the ring's length.
    filled: usize,
    next: usize,
}

impl Failing {
    fn refill(&mut self, now: Instant, per_second: f64, burst: f64) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * per_second;
        self.allowance = (self.allowance + gained).min(burst);
        self.at = now;
    }

    fn failed_before(&self, credential: u64) -> bool {
        self.recent[..self.filled].contains(&credential)
    }

    fn remember(&mut self, credential: u64) {
        self.recent[self.next] = credential;
        self.next = (self.next + 1) % RECENT_FAILURES;
        self.filled = (self.filled + 1).min(RECENT_FAILURES);
    }
}

/// A token check that [`AuthFailures::begin`] let through; hand it back to [`AuthFailures::end`].
#[derive(Debug)]
pub(crate) struct Attempt {
    client: u64,
    credential: u64,
    /// Whether it spent the allowance (a new token from a tracked client).
    counted: bool,
}

impl AuthFailures {
    /// `None` when `per_second` is 0 (no limit).
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = f64::from(NonZeroU32::new(per_second)?.get());
        Some(Self {
            per_second,
            burst: f64::from(burst.max(1)),
            keys: std::collections::hash_map::RandomState::new(),
            clients: std::sync::Mutex::default(),
        })
    }

    /// Before the tokens a request carries are checked: `Err(seconds to wait)` when its client
    /// address is out of failures and these tokens are not ones it already got wrong.
    pub(crate) fn begin(&self, client: Option<IpAddr>, credential: impl Hash) -> Result<Attempt, u64> {
        let client = self.keys.hash_one(client_block(client));
        let credential = self.keys.hash_one(credential);
        let now = Instant::now();
        let mut clients = self.lock();
        if !clients.by_key.contains_key(&client) && clients.by_key.len() >= SWEEP_FAILING_AT {
            self.sweep(&mut clients, now);
            if clients.by_key.len() >= MAX_FAILING_CLIENTS {
                tracing::warn!(
                    tracked = clients.by_key.len(),
                    "too many client addresses failing authentication to track; this one is not limited"
                );
                return Ok(Attempt { client, credential, counted: false });
            }
        }
        let entry = clients.by_key.entry(client).or_insert_with(|| Failing {
            allowance: self.burst,
            at: now,
            recent: [0; RECENT_FAILURES],
            filled: 0,
            next: 0,
        });
        entry.refill(now, self.per_second, self.burst);
        if entry.failed_before(credential) {
            return Ok(Attempt { client, credential, counted: false });
        }
        if entry.allowance >= 1.0 {
            entry.allowance -= 1.0;
            return Ok(Attempt { client, credential, counted: true });
        }
        let wait = ((1.0 - entry.allowance) / self.per_second).ceil();
        Err(Duration::from_secs_f64(wait).as_secs().max(1))
    }

    /// After the check: a right token gives back what it spent; a wrong one is remembered.
    pub(crate) fn end(&self, attempt: Attempt, verified: bool) {
        if !attempt.counted {
            return;
        }
        let mut clients = self.lock();
        let Some(entry) = clients.by_key.get_mut(&attempt.client) else { return };
        if verified {
            entry.allowance = (entry.allowance + 1.0).min(self.burst);
        } else {
            entry.remember(attempt.credential);
            if entry.allowance < 1.0 {
                tracing::warn!(
                    retry_after_s = ((1.0 - entry.allowance) / self.per_second).ceil(),
                    "a client address is over its failed authentications; its tokens are refused for now"
                );
            }
        }
    }

    /// Forgets the clients back to a full allowance, at most once a second.
    fn sweep(&self, clients: &mut FailingClients, now: Instant) {
        if clients.swept.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        clients.swept = Some(now);
        let (per_second, burst) = (self.per_second, self.burst);
        clients.by_key.retain(|_, entry| {
            entry.refill(now, per_second, burst);
            entry.allowance < burst
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailingClients> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What one client is, for the failures limit: an IPv4 address, or the /64 of an IPv6 one (one
/// host usually holds a whole /64).
pub(crate) fn client_block(client: Option<IpAddr>) -> Option<IpAddr> {
    client.map(|ip| match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    })
}

/// The answer to a body over the limit.
fn body_too_large(max: usize) -> Response {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than the limit of {max} bytes (max_body_bytes)"),
    )
    .into_response()
}

/// Refuses at once a request whose declared length (`Content-Length`) is over `max`, before
/// anything of its body is read.
pub(crate) async fn declared_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    if request.body().size_hint().lower() > max as u64 {
        return body_too_large(max);
    }
    next.run(request).await
}

/// Reads the body (at most `max` bytes) before the handler runs, so a body sent chunked, or
/// longer than it said, is refused with 413 naming the limit, and one that cannot be read (broken
/// chunking, a client that left) with 400. Runs after the guard: no body of an unauthenticated
/// request is read; the request timeout bounds a body that trickles.
pub(crate) async fn read_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) if bytes.len() + chunk.len() > max => return body_too_large(max),
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(err) => {
                return ApiError::new(ErrorCode::InvalidRequest, format!("the request body could not be read: {err}"))
                    .into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_then_refusal_then_other_keys_still_pass() {
        let limits = super::RateLimits::new(1, 3, None).expect("limits");
        for _ in 0..3 {
            assert!(limits.check(1, None).is_ok());
        }
        assert_eq!(limits.check(1, None), Err(1), "over the burst: wait at least a second");
        assert!(limits.check(2, None).is_ok(), "another client has its own bucket");
        // one token shared by many clients is limited on its own
        for client in 10..13 {
            assert!(limits.check(client, Some(7)).is_ok());
        }
        assert!(limits.check(20, Some(7)).is_err());
        assert!(super::RateLimits::new(0, 10, None).is_none(), "0 turns limits off");
    }

    #[test]
    fn failed_authentications_are_limited_per_client_and_repeats_are_free() {
        let failures = super::AuthFailures::new(1, 3).expect("limits");
        let guesser = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        for guess in 0..3 {
            let attempt = failures.begin(guesser, guess).expect("within the burst");
            failures.end(attempt, false);
        }
        assert_eq!(failures.begin(guesser, 99).map(|_| ()), Err(1), "a new guess waits at least a second");
        let again = failures.begin(guesser, 1).expect("a token already found wrong is not a new guess");
        failures.end(again, false);
        let other = failures.begin(Some(std::net::IpAddr::from([10, 0, 0, 2])), 99).expect("own allowance");
        failures.end(other, true);
        // a right token gives back what its check spent
        let client = Some(std::net::IpAddr::from([10, 0, 0, 3]));
        for _ in 0..10 {
            let attempt = failures.begin(client, "right").expect("never spent");
            failures.end(attempt, true);
        }
        // one IPv6 /64 is one client
        let first = Some("2001:db8::1".parse().expect("ip"));
        let second = Some("2001:db8::ffff:2".parse().expect("ip"));
        for guess in 0..3 {
            let attempt = failures.begin(first, guess).expect("within the burst");
            failures.end(attempt, false);
        }
        assert!(failures.begin(second, 7).is_err(), "the same /64");
        assert!(super::AuthFailures::new(0, 10).is_none(), "0 turns the limit off");
    }
}
