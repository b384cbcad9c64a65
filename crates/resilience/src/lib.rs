//! The resilience runtime: retry policies and circuit breakers looked up by key on the hot path,
//! reloaded from their files without a restart, with every breaker transition recorded in the store
//! so summaries see all processes.
//!
//! Invariants:
//! - a lookup on the hot path (a key seen before, a closed breaker) takes no allocation;
//! - a policy file that fails validation never replaces the last good one;
//! - every transition yields exactly one `circuit_*` event and one `circuit_states` update.

mod breakers;
mod execute;
mod policies;
mod reload;

pub use breakers::{
    BreakerOpen, Breakers, CircuitSummary, OpenCircuit, Permit, TransitionRecord, record_transition,
    record_transitions, summarize,
};
pub use execute::{AttemptError, CallError, TimeoutError, execute};
pub use policies::Policies;
pub use reload::{ReloadOutcome, watch_policies};
