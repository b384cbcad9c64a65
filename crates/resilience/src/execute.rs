//! Running one call under its policies: breaker check, per-attempt timeout, retries with backoff
//! and jitter, an overall deadline. Used around in-process calls (MCP tools, LLM requests).

use std::future::Future;
use std::time::Duration;

use model::ErrorKind;
use model::breaker::Outcome;
use model::retry::RetryDecision;

use crate::{BreakerOpen, Breakers, Policies};

/// Why a guarded call failed in the end.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: std::error::Error + 'static> {
    /// The breaker refused the call (no attempt was made, or a retry was refused).
    #[error(transparent)]
    Open(#[from] BreakerOpen),
    /// The last attempt failed and no further attempt is allowed.
    #[error("{key}: gave up after {attempts} attempt(s) ({reason}): {kind}")]
    Failed {
        /// The policy key.
        key: String,
        /// Attempts made.
        attempts: u32,
        /// The last error's kind.
        kind: ErrorKind,
        /// Why no retry followed (`not_retryable`, `max_attempts`, `deadline`).
        reason: &'static str,
        /// The last error.
        #[source]
        source: E,
    },
}

impl<E: std::error::Error + 'static> CallError<E> {
    /// The kind of the last failure (`transport` for an open breaker: the upstream is unhealthy).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Open(_) => ErrorKind::Transport,
            Self::Failed { kind, .. } => *kind,
        }
    }
}

/// What one attempt reports on failure: its kind (which decides retry) and the error.
#[derive(Debug)]
pub struct AttemptError<E> {
    /// How it failed.
    pub kind: ErrorKind,
    /// The error.
    pub error: E,
}

/// A timed-out attempt, when the caller's error type cannot say so itself.
pub trait TimeoutError {
    /// The error that stands for "no answer within `after`".
    fn timeout(after: Duration) -> Self;
}

/// Runs `attempt` (called with the attempt number, from 1) under the retry policy of `policy_key`
/// and the breaker `breaker_key`. Each attempt is limited by the policy's timeout; between attempts
/// the policy's backoff is slept (tokio time, so tests can pause it).
pub async fn execute<T, E, F, Fut>(
    policies: &Policies,
    breakers: &Breakers,
    policy_key: &str,
    breaker_key: &str,
    mut attempt: F,
) -> Result<T, CallError<E>>
where
    E: std::error::Error + TimeoutError + 'static,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, AttemptError<E>>>,
{
    let policy = policies.retry(policy_key);
    let started = tokio::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        let permit = breakers.acquire(breaker_key)?;
        attempts += 1;
        let result = match tokio::time::timeout(policy.timeout, attempt(attempts)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError { kind: ErrorKind::Timeout, error: E::timeout(policy.timeout) }),
        };
        match result {
            Ok(value) => {
                breakers.record(breaker_key, permit, Outcome::Success);
                return Ok(value);
            }
            Err(AttemptError { kind, error }) => {
                breakers.record(breaker_key, permit, Outcome::Failure(kind));
                match policy.decide(kind, attempts, started.elapsed(), rand::random::<f64>()) {
                    RetryDecision::RetryAfter(delay) => {
                        tracing::debug!(key = policy_key, attempt = attempts, kind = %kind, delay_ms = delay.as_millis() as u64, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    RetryDecision::GiveUp(reason) => {
                        return Err(CallError::Failed {
                            key: policy_key.to_owned(),
                            attempts,
                            kind,
                            reason: reason.as_str(),
                            source: error,
                        });
                    }
                }
            }
        }
    }
}
