//! Rate limits shared by every server replica: the request buckets (per client address, per
//! token) kept in Redis when `COGO_REDIS_URL` is set, so N replicas behind a load balancer allow
//! what one would, not N times as much.
//!
//! The buckets are GCRA (the same rule as the in-memory limiter): one Lua script checks the
//! client's and the token's bucket and spends both or neither, on the Redis server's clock, so the
//! replicas' clocks do not matter. Keys are `<prefix>:rl:client:<sha256>` and
//! `<prefix>:rl:token:<sha256>` and expire once their bucket is full again; no address or token
//! is stored in clear.
//!
//! Invariant: Redis going away never stops the API. A failed or slow (over
//! [`RESPONSE_TIMEOUT`]) call falls back to this process's in-memory buckets for
//! [`RETRY_AFTER_ERROR`], is logged and counted (`cogo_rate_limit_redis_errors_total`), and the
//! connection is re-made in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Longest a rate-limit call to Redis may take before the request falls back to local buckets.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long after a Redis error the local buckets are used before Redis is tried again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// Longest the first connection may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// GCRA over every key given, all or nothing. ARGV: emission interval and burst tolerance in
/// microseconds. Returns 0 when allowed, else the microseconds to wait.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wait = 0
local next_tat = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local over = new_tat - now - tolerance
  if over > wait then wait = over end
  next_tat[i] = new_tat
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', next_tat[i]), 'PX', math.ceil((next_tat[i] - now) / 1000) + 1000)
end
return 0
";

/// Why the shared rate limits could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SharedLimitError {
    /// The URL is not a Redis URL.
    #[error("COGO_REDIS_URL {url} is not a Redis URL (redis://[:password@]host[:port][/db]): {detail}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// Redis did not answer.
    #[error(
        "Redis at {url} did not answer ({detail}): start it, fix COGO_REDIS_URL, or unset it to keep rate limits in memory"
    )]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        detail: String,
    },
}

/// Request buckets in Redis, shared by every server that uses the same Redis and prefix.
#[derive(Clone)]
pub struct SharedRateLimits {
    connection: redis::aio::ConnectionManager,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
    /// Where the limits live, for logs (password hidden).
    url: Arc<str>,
    /// Until when (ms since `started`) Redis is skipped after an error.
    skip_until_ms: Arc<AtomicU64>,
    started: Instant,
}

impl std::fmt::Debug for SharedRateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimits").field("url", &self.url).field("prefix", &self.prefix).finish()
    }
}

/// What one check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// Within the rate.
    Allowed,
    /// Over it: seconds to wait (at least 1).
    Wait(u64),
    /// Redis could not be asked: use the local buckets.
    Unavailable,
}

impl SharedRateLimits {
    /// Connects to `url` (checked with a `PING`) and keeps buckets under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SharedLimitError> {
        let shown = store::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| SharedLimitError::Url { url: shown.clone(), detail: e.to_string() })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let unreachable = |detail: String| SharedLimitError::Unreachable { url: shown.clone(), detail };
        let mut connection =
            tokio::time::timeout(CONNECT_TIMEOUT, redis::aio::ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| unreachable(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())))?
                .map_err(|e| unreachable(e.to_string()))?;
        let pong: String =
            redis::cmd("PING").query_async(&mut connection).await.map_err(|e| unreachable(e.to_string()))?;
        if pong != "PONG" {
            return Err(unreachable(format!("PING answered {pong:?}")));
        }
        Ok(Self {
            connection,
            script: Arc::new(redis::Script::new(SCRIPT)),
            prefix: Arc::from(prefix),
            url: Arc::from(shown),
            skip_until_ms: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        })
    }

    /// Where the limits live (password hidden).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Spends one request from the client's bucket and the token's (both or neither).
    pub(crate) async fn check(&self, per_second: u32, burst: u32, client: &str, token: Option<&str>) -> Shared {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return Shared::Unavailable;
        }
        let interval_us = 1_000_000.0 / f64::from(per_second.max(1));
        let tolerance_us = interval_us * f64::from(burst.max(1));
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.key("client", client)).arg(interval_us.round() as u64).arg(tolerance_us.round() as u64);
        if let Some(token) = token {
            invocation.key(self.key("token", token));
        }
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, invocation.invoke_async::<i64>(&mut connection)).await;
        match answer {
            Ok(Ok(0)) => Shared::Allowed,
            Ok(Ok(wait_us)) => Shared::Wait((wait_us as u64).div_ceil(1_000_000).max(1)),
            Ok(Err(err)) => self.failed(now_ms, &err.to_string()),
            Err(_) => self.failed(now_ms, &format!("no answer within {} ms", RESPONSE_TIMEOUT.as_millis())),
        }
    }

    fn failed(&self, now_ms: u64, detail: &str) -> Shared {
        let until = now_ms + RETRY_AFTER_ERROR.as_millis() as u64;
        let previous = self.skip_until_ms.swap(until, Ordering::Relaxed);
        metrics::counter!(model::metrics::RATE_LIMIT_REDIS_ERRORS_TOTAL).increment(1);
        // one warning per outage, not one per request
        if previous <= now_ms.saturating_sub(RETRY_AFTER_ERROR.as_millis() as u64) {
            tracing::warn!(
                redis = %self.url,
                error = %detail,
                "shared rate limits unavailable: this server uses its own buckets until Redis answers again"
            );
        }
        Shared::Unavailable
    }

    fn key(&self, kind: &str, value: &str) -> String {
        let digest = Sha256::digest(value.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("{}:rl:{kind}:{hex}", self.prefix)
    }
}
