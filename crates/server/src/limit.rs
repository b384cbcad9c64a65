//! Rate limits: a token bucket per client address and one per token (hashed, never kept in clear);
//! a request over either gets 429 with `Retry-After`.

use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{ApiError, ErrorCode};

/// How many requests pass between sweeps of idle buckets.
const SWEEP_EVERY: u64 = 4096;

/// The buckets of one server.
pub(crate) struct RateLimits {
    clients: DefaultKeyedRateLimiter<u64>,
    tokens: DefaultKeyedRateLimiter<u64>,
    requests: AtomicU64,
}

impl RateLimits {
    /// `None` when `per_second` is 0 (no limit).
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
        Some(Self {
            clients: RateLimiter::keyed(quota),
            tokens: RateLimiter::keyed(quota),
            requests: AtomicU64::new(0),
        })
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

/// The token a request carries (admin header or bearer), hashed.
fn token_key(request: &Request) -> Option<u64> {
    let headers = request.headers();
    let admin = headers.get("x-admin-token").and_then(|v| v.to_str().ok());
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    admin.or(bearer).map(hashed)
}

/// The middleware: 429 with `Retry-After` over the rate of the client address or the token.
pub(crate) async fn rate_limit(
    State(limits): State<Option<Arc<RateLimits>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limits) = limits else { return next.run(request).await };
    let client = request.extensions().get::<ConnectInfo<crate::ClientAddr>>().map(|info| info.0.0.ip());
    if let Err(wait) = limits.check(hashed(client), token_key(&request)) {
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests: retry after {wait} s (limits apply per client address and per token)"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_then_refusal_then_other_keys_still_pass() {
        let limits = super::RateLimits::new(1, 3).expect("limits");
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
        assert!(super::RateLimits::new(0, 10).is_none(), "0 turns limits off");
    }
}
