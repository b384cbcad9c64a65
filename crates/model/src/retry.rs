//! The retry schedule: exponential backoff with jitter, capped, bounded by attempts and a deadline.
//!
//! Invariant: pure. The random number and elapsed time are passed in, so the schedule is testable
//! without sleeping; a delay never exceeds the cap and never overruns the deadline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::ErrorKind;

/// A set of error kinds (a bit set, so checks allocate nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorKinds(u16);

impl ErrorKinds {
    /// The empty set.
    pub const NONE: ErrorKinds = ErrorKinds(0);

    /// A set of the given kinds.
    pub fn of(kinds: &[ErrorKind]) -> Self {
        kinds.iter().fold(Self::NONE, |set, kind| set.with(*kind))
    }

    /// This set plus `kind`.
    pub fn with(self, kind: ErrorKind) -> Self {
        Self(self.0 | 1 << kind as u16)
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: ErrorKind) -> bool {
        self.0 & (1 << kind as u16) != 0
    }

    /// The kinds in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = ErrorKind> {
        ErrorKind::ALL.into_iter().filter(move |kind| self.contains(*kind))
    }
}

/// How the random part of a delay is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]` (AWS "full jitter"): spreads retries the most.
    #[default]
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
}

/// A resolved retry policy for one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry, before jitter.
    pub base_delay: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Random spread.
    pub jitter: Jitter,
    /// Error kinds that are retried.
    pub retry_on: ErrorKinds,
    /// Give up when the next attempt would start later than this after the first one.
    pub deadline: Option<Duration>,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Full,
            retry_on: ErrorKinds::of(&[
                ErrorKind::Transport,
                ErrorKind::Timeout,
                ErrorKind::RateLimited,
                ErrorKind::LeaseExpired,
            ]),
            deadline: Some(Duration::from_secs(300)),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop; the reason says why.
    GiveUp(GiveUpReason),
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The error kind is not retried by this policy.
    NotRetryable(ErrorKind),
    /// Every allowed attempt was made.
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The next attempt would start after the deadline.
    DeadlineExceeded,
}

impl GiveUpReason {
    /// A short, stable reason string for events and the dead-letter table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRetryable(_) => "not_retryable",
            Self::AttemptsExhausted { .. } => "max_attempts",
            Self::DeadlineExceeded => "deadline",
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempts + 1`, given `failed_attempts >= 1` failures so far
    /// and `random` uniform in `[0, 1)`.
    pub fn delay(&self, failed_attempts: u32, random: f64) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(64) as i32;
        let cap = self.max_delay.as_secs_f64();
        let raw = (self.base_delay.as_secs_f64() * self.factor.max(1.0).powi(exponent)).min(cap);
        let random = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.0 };
        let seconds = match self.jitter {
            Jitter::None => raw,
            Jitter::Full => raw * random,
            Jitter::Equal => raw / 2.0 + raw / 2.0 * random,
        };
        Duration::from_secs_f64(seconds.clamp(0.0, cap))
    }

    /// Decides after `attempts` attempts (the failed one included) that failed with `kind`,
    /// `elapsed` after the first attempt started.
    pub fn decide(&self, kind: ErrorKind, attempts: u32, elapsed: Duration, random: f64) -> RetryDecision {
        if !self.retry_on.contains(kind) {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable(kind));
        }
        if attempts >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts });
        }
        let delay = self.delay(attempts, random);
        if let Some(deadline) = self.deadline
            && elapsed + delay > deadline
        {
            return RetryDecision::GiveUp(GiveUpReason::DeadlineExceeded);
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests;

/// The bus's decision after a failed attempt of a message: the message's own attempt budget bounds
/// the attempts, the policy decides which kinds retry and how long to wait.
pub fn bus_decision(
    policy: &RetryPolicy,
    kind: ErrorKind,
    attempts: u32,
    max_attempts: u32,
    elapsed: Duration,
    random: f64,
) -> RetryDecision {
    let bounded = RetryPolicy { max_attempts, ..*policy };
    bounded.decide(kind, attempts, elapsed, random)
}
