//! Circuit breakers by key, in memory for speed; transitions go to a recorder that writes the
//! `circuit_*` events, the `circuit_states` row and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use model::breaker::{BreakerState, CircuitBreaker, Outcome, Rejected, Transition};

use crate::Policies;

/// Permission to make one call through a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit(model::breaker::Permit);

/// The breaker refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit {key} is open: calls fail fast until {retry_at} (in {retry_in_ms} ms), then a probe is let through")]
pub struct BreakerOpen {
    /// The breaker key.
    pub key: String,
    /// When the next probe may go through.
    pub retry_at: DateTime<Utc>,
    /// Milliseconds until then.
    pub retry_in_ms: u64,
}

/// A transition, for the recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRecord {
    /// Breaker key.
    pub key: String,
    /// What happened.
    pub transition: Transition,
    /// Wall-clock time of the transition.
    pub at: DateTime<Utc>,
    /// For an opening: when probing may start.
    pub open_until: Option<DateTime<Utc>>,
}

struct Entry {
    breaker: Mutex<CircuitBreaker>,
    generation: std::sync::atomic::AtomicU64,
}

/// The breakers of one process.
pub struct Breakers {
    policies: Arc<Policies>,
    map: RwLock<HashMap<String, Arc<Entry>>>,
    started: Instant,
    started_wall: DateTime<Utc>,
    transitions: Option<mpsc::UnboundedSender<TransitionRecord>>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers").field("count", &self.len()).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Breakers {
    /// Breakers configured by `policies`; transitions are sent to `transitions` when given.
    pub fn new(policies: Arc<Policies>, transitions: Option<mpsc::UnboundedSender<TransitionRecord>>) -> Self {
        // the gauge exists from the start, at 0, so "no open circuit" is visible, not absent
        metrics::gauge!(model::metrics::CIRCUIT_OPEN_CURRENT).set(0.0);
        Self { policies, map: RwLock::default(), started: Instant::now(), started_wall: Utc::now(), transitions }
    }

    /// The policies the breakers (and the retries around them) follow.
    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// Milliseconds since these breakers were created (their monotonic clock).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn wall(&self, ms: u64) -> DateTime<Utc> {
        self.started_wall + chrono::Duration::milliseconds(ms as i64)
    }

    /// Number of breakers created so far.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        if let Some(entry) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return entry.clone();
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    breaker: Mutex::new(CircuitBreaker::new(self.policies.breaker(key))),
                    generation: std::sync::atomic::AtomicU64::new(self.policies.generation()),
                })
            })
            .clone()
    }

    fn with_breaker<T>(&self, key: &str, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let entry = self.entry(key);
        let generation = self.policies.generation();
        let mut breaker = lock(&entry.breaker);
        if entry.generation.load(std::sync::atomic::Ordering::Relaxed) != generation {
            breaker.reconfigure(self.policies.breaker(key));
            entry.generation.store(generation, std::sync::atomic::Ordering::Relaxed);
        }
        f(&mut breaker)
    }

    /// Asks to call through breaker `key` now.
    pub fn acquire(&self, key: &str) -> Result<Permit, BreakerOpen> {
        self.acquire_at(key, self.now_ms())
    }

    /// Asks to call through breaker `key` at monotonic time `now_ms` (tests step it by hand).
    pub fn acquire_at(&self, key: &str, now_ms: u64) -> Result<Permit, BreakerOpen> {
        let (permit, transition) = self.with_breaker(key, |b| b.try_acquire(now_ms));
        if let Some(transition) = transition {
            self.emit(key, transition, now_ms, None);
        }
        permit.map(Permit).map_err(|Rejected { retry_at_ms }| BreakerOpen {
            key: key.to_owned(),
            retry_at: self.wall(retry_at_ms),
            retry_in_ms: retry_at_ms.saturating_sub(now_ms),
        })
    }

    /// Records the outcome of a call made with `permit`.
    pub fn record(&self, key: &str, permit: Permit, outcome: Outcome) {
        self.record_at(key, permit, outcome, self.now_ms());
    }

    /// Records an outcome at monotonic time `now_ms`.
    pub fn record_at(&self, key: &str, permit: Permit, outcome: Outcome, now_ms: u64) {
        let (transition, state) = self.with_breaker(key, |b| (b.record(now_ms, permit.0, outcome), b.state()));
        if let Some(transition) = transition {
            let until = match state {
                BreakerState::Open { until_ms } => Some(self.wall(until_ms)),
                _ => None,
            };
            self.emit(key, transition, now_ms, until);
        }
    }

    /// The state of every breaker.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, BreakerState)> =
            map.iter().map(|(key, entry)| (key.clone(), lock(&entry.breaker).state())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn emit(&self, key: &str, transition: Transition, now_ms: u64, open_until: Option<DateTime<Utc>>) {
        let labels = [("key", key.to_owned())];
        match transition {
            Transition::Opened => {
                metrics::counter!(model::metrics::CIRCUIT_OPEN_TOTAL, &labels).increment(1);
                tracing::warn!(key, "circuit opened");
            }
            Transition::Closed => {
                metrics::counter!(model::metrics::CIRCUIT_CLOSE_TOTAL, &labels).increment(1);
                tracing::info!(key, "circuit closed");
            }
            Transition::HalfOpened => tracing::info!(key, "circuit half-open: probing"),
        }
        let open = self.states().iter().filter(|(_, s)| matches!(s, BreakerState::Open { .. })).count();
        metrics::gauge!(model::metrics::CIRCUIT_OPEN_CURRENT).set(open as f64);
        if let Some(sender) = &self.transitions {
            let _ =
                sender.send(TransitionRecord { key: key.to_owned(), transition, at: self.wall(now_ms), open_until });
        }
    }
}

/// Writes transitions to the store (event and state row together) until the sender side closes.
pub async fn record_transitions(
    store: store::Store,
    agent_id: String,
    mut transitions: mpsc::UnboundedReceiver<TransitionRecord>,
) {
    while let Some(record) = transitions.recv().await {
        if let Err(err) = record_transition(&store, &agent_id, &record).await {
            tracing::warn!(key = %record.key, error = %err, "could not record a circuit transition");
        }
    }
}

/// Records one transition of `agent_id`'s breaker: its `circuit_*` event and the circuit's state
/// (the edge routes call this for an edge worker's breakers).
pub async fn record_transition(
    store: &store::Store,
    agent_id: &str,
    record: &TransitionRecord,
) -> Result<(), store::Error> {
    let state = match record.transition {
        Transition::Opened => "open",
        Transition::HalfOpened => "half_open",
        Transition::Closed => "closed",
    };
    let event = model::event::NewEvent::system(record.transition.event_type(), "resilience", "breaker")
        .with_reason(record.key.clone())
        .with_payload(serde_json::json!({ "key": record.key, "agent_id": agent_id, "state": state, "open_until": record.open_until }));
    let row = store::CircuitState {
        key: record.key.clone(),
        agent_id: agent_id.to_owned(),
        state: state.to_owned(),
        open_until: record.open_until,
        updated_at: record.at,
    };
    store.append_events(vec![event]).await?;
    store.record_circuit(&row).await
}

/// One open breaker key across processes.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenCircuit {
    /// Processes where it is open.
    pub agents: Vec<String>,
    /// The latest time any of them will probe again.
    pub open_until: Option<DateTime<Utc>>,
}

/// `summary.circuits` of the metrics summary.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitSummary {
    /// Open breakers by key.
    pub open_by_key: BTreeMap<String, OpenCircuit>,
    /// How many keys are open.
    pub open_count: usize,
    /// Keys half-open in some process (probing), not open in any.
    #[serde(default)]
    pub half_open_keys: Vec<String>,
}

/// Summarizes recorded breaker states of every process.
pub fn summarize(states: &[store::CircuitState]) -> CircuitSummary {
    let mut open_by_key: BTreeMap<String, OpenCircuit> = BTreeMap::new();
    for state in states.iter().filter(|s| s.state == "open") {
        let entry =
            open_by_key.entry(state.key.clone()).or_insert(OpenCircuit { agents: Vec::new(), open_until: None });
        entry.agents.push(state.agent_id.clone());
        entry.open_until = entry.open_until.max(state.open_until);
    }
    let mut half_open_keys: Vec<String> = states
        .iter()
        .filter(|s| s.state == "half_open" && !open_by_key.contains_key(&s.key))
        .map(|s| s.key.clone())
        .collect();
    half_open_keys.sort_unstable();
    half_open_keys.dedup();
    CircuitSummary { open_count: open_by_key.len(), open_by_key, half_open_keys }
}
