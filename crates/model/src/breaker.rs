//! The circuit breaker state machine: closed → open → half-open → closed | open.
//!
//! Invariant: pure and allocation-free after construction. Time is a monotonic millisecond count
//! passed in; the rolling window is a fixed ring buffer bounded by count and by age. A breaker lets
//! at most `half_open_probes` calls through while half-open.

use std::fmt;

use crate::message::ErrorKind;
use crate::retry::ErrorKinds;

/// A resolved breaker configuration for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open when failures / requests in the window reach this (0 < t <= 1).
    pub failure_rate_threshold: f64,
    /// The rate counts only once the window holds this many outcomes.
    pub min_requests: u32,
    /// The window keeps at most this many most recent outcomes.
    pub window_size: u32,
    /// The window forgets outcomes older than this (ms).
    pub window_ms: u64,
    /// How long the breaker stays open before probing (ms).
    pub open_ms: u64,
    /// Probe calls allowed while half-open; that many successes close the breaker.
    pub half_open_probes: u32,
    /// Error kinds that count as failures (others are recorded as neither).
    pub failure_kinds: ErrorKinds,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            min_requests: 5,
            window_size: 20,
            window_ms: 60_000,
            open_ms: 30_000,
            half_open_probes: 1,
            failure_kinds: ErrorKinds::of(&[
                ErrorKind::Transport,
                ErrorKind::Timeout,
                ErrorKind::RateLimited,
                ErrorKind::ToolError,
                ErrorKind::LeaseExpired,
            ]),
        }
    }
}

/// The visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls fail fast until `until_ms`.
    Open {
        /// When probing may start.
        until_ms: u64,
    },
    /// A few probe calls go through.
    HalfOpen {
        /// Probes handed out and not yet recorded.
        in_flight: u32,
        /// Probes that succeeded.
        successes: u32,
    },
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// A state change, for events and metrics (and, from an edge worker, on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// closed|half-open → open.
    Opened,
    /// open → half-open.
    HalfOpened,
    /// half-open → closed.
    Closed,
}

impl Transition {
    /// The event type of this transition.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Opened => crate::event::CIRCUIT_OPENED,
            Self::HalfOpened => crate::event::CIRCUIT_HALF_OPEN,
            Self::Closed => crate::event::CIRCUIT_CLOSED,
        }
    }
}

/// What to record after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed with this kind.
    Failure(ErrorKind),
}

/// Permission to make one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// A normal call.
    Normal,
    /// A half-open probe: its outcome decides the breaker's next state.
    Probe,
}

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When the next probe may go through (monotonic ms, same clock as the input).
    pub retry_at_ms: u64,
}

/// One breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Ring of `(at_ms, failed)`, capacity `window_size`.
    ring: Vec<(u64, bool)>,
    head: usize,
    len: usize,
    failures: u32,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let capacity = config.window_size.max(1) as usize;
        Self { config, state: BreakerState::Closed, ring: vec![(0, false); capacity], head: 0, len: 0, failures: 0 }
    }

    /// Applies a new configuration (a policy reload): the state stays, the window starts afresh.
    pub fn reconfigure(&mut self, config: BreakerConfig) {
        self.ring = vec![(0, false); config.window_size.max(1) as usize];
        self.config = config;
        self.clear();
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (as of the last call; `try_acquire` moves open → half-open when due).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Outcomes and failures in the window.
    pub fn window(&self) -> (u32, u32) {
        (self.len as u32, self.failures)
    }

    /// Asks to make a call at `now_ms`. May move open → half-open (returned as a transition).
    pub fn try_acquire(&mut self, now_ms: u64) -> (Result<Permit, Rejected>, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (Ok(Permit::Normal), None),
            BreakerState::Open { until_ms } if now_ms < until_ms => (Err(Rejected { retry_at_ms: until_ms }), None),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen { in_flight: 1, successes: 0 };
                (Ok(Permit::Probe), Some(Transition::HalfOpened))
            }
            BreakerState::HalfOpen { in_flight, successes } => {
                if in_flight + successes < self.config.half_open_probes.max(1) {
                    self.state = BreakerState::HalfOpen { in_flight: in_flight + 1, successes };
                    (Ok(Permit::Probe), None)
                } else {
                    (Err(Rejected { retry_at_ms: now_ms.saturating_add(1) }), None)
                }
            }
        }
    }

    /// Records the outcome of a call made with `permit`.
    pub fn record(&mut self, now_ms: u64, permit: Permit, outcome: Outcome) -> Option<Transition> {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure(kind) => self.config.failure_kinds.contains(kind),
        };
        match (self.state, permit) {
            (BreakerState::HalfOpen { in_flight, successes }, Permit::Probe) => {
                if failed {
                    self.trip(now_ms);
                    return Some(Transition::Opened);
                }
                let successes = successes + 1;
                if successes >= self.config.half_open_probes.max(1) {
                    self.state = BreakerState::Closed;
                    self.clear();
                    return Some(Transition::Closed);
                }
                self.state = BreakerState::HalfOpen { in_flight: in_flight.saturating_sub(1), successes };
                None
            }
            (BreakerState::Closed, _) => {
                self.push(now_ms, failed);
                self.expire(now_ms);
                if self.len as u32 >= self.config.min_requests.max(1)
                    && f64::from(self.failures) >= self.config.failure_rate_threshold * self.len as f64
                    && self.failures > 0
                {
                    self.trip(now_ms);
                    return Some(Transition::Opened);
                }
                None
            }
            // A late outcome of a call permitted in an earlier state changes nothing.
            _ => None,
        }
    }

    fn trip(&mut self, now_ms: u64) {
        self.state = BreakerState::Open { until_ms: now_ms.saturating_add(self.config.open_ms) };
        self.clear();
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.failures = 0;
    }

    fn push(&mut self, now_ms: u64, failed: bool) {
        let capacity = self.ring.len();
        if self.len == capacity {
            let (_, old_failed) = self.ring[self.head];
            self.failures -= u32::from(old_failed);
            self.head = (self.head + 1) % capacity;
            self.len -= 1;
        }
        let tail = (self.head + self.len) % capacity;
        self.ring[tail] = (now_ms, failed);
        self.len += 1;
        self.failures += u32::from(failed);
    }

    fn expire(&mut self, now_ms: u64) {
        let capacity = self.ring.len();
        while self.len > 0 {
            let (at_ms, failed) = self.ring[self.head];
            if now_ms.saturating_sub(at_ms) <= self.config.window_ms {
                break;
            }
            self.failures -= u32::from(failed);
            self.head = (self.head + 1) % capacity;
            self.len -= 1;
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open until monotonic {} ms", self.retry_at_ms)
    }
}

#[cfg(test)]
mod tests;
