//! The orchestrator and the worker roles it drives.
//!
//! A goal is a durable row (`goals`) plus a `goal` message on the bus (`service=agent,
//! role=orchestrator`). The orchestrator role claims the message and runs the loop: **plan** (the
//! model decomposes the goal, over retrieved context, into steps with success criteria and
//! dependencies) → **select** (the tool registry built from MCP `tools/list` and the roles online,
//! open breakers excluded, ranked by similarity, success rate and p95 latency; arguments validated
//! against the tool's schema) → **execute** (each step a bus message with the goal's `trace_id` and
//! a deterministic `idempotency_key`; independent steps in parallel) → **evaluate** (criteria
//! checks plus the model's verdict) → **replan** on failure, within the goal's budget. Every
//! decision is written to `artifacts/decisions/<trace_id>/<n>.json` with its inputs, context ids,
//! model, prompt hash and output; `replay` re-runs the loop against those records.
//!
//! Invariants:
//! - the goal's state is saved before anything it decides is acted on, and a step's message is
//!   enqueued under a key derived from the goal and the step, so a restarted orchestrator resumes
//!   where the last one stopped and never runs a finished step again;
//! - the orchestrator never waits on a human while holding a lease: a goal awaiting approval ends
//!   its message, and the approval enqueues the next one;
//! - every model answer the loop acts on was validated against its schema.

pub mod approvals;
pub mod bus;
pub mod decisions;
pub mod orchestrator;
pub mod registry;
pub mod replay;
pub mod roles;
pub mod state;

use model::ErrorKind;

pub use approvals::{decide, submit};
pub use decisions::{Decision, DecisionKind, DecisionLog};
pub use orchestrator::{Orchestrator, OrchestratorHandler, Outcome};
pub use registry::{Target, ToolEntry};
pub use state::{GoalState, StepRun, StepStatus};

/// The bus address of the orchestrator role.
pub const ORCHESTRATOR: (&str, &str) = ("agent", "orchestrator");
/// The bus address of the execution role.
pub const EXECUTION: (&str, &str) = ("agent", "execution");
/// The bus address of the research role.
pub const RESEARCH: (&str, &str) = ("agent", "research");
/// The bus address of the codegen role.
pub const CODEGEN: (&str, &str) = ("agent", "codegen");

/// What can go wrong in the orchestrator and the roles.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The model failed.
    #[error(transparent)]
    Llm(#[from] llm::Error),
    /// A request is wrong (the message names what and where).
    #[error("{0}")]
    Invalid(String),
    /// The operation does not fit the goal's state (already decided, not waiting, finished).
    #[error("{0}")]
    Conflict(String),
    /// A decision record could not be written or read.
    #[error("decision records: {0}")]
    Decisions(String),
    /// A replay took another path than the recording.
    #[error("replay diverged: {0}")]
    Diverged(String),
}

impl Error {
    /// The error's kind, as the bus's retry policy sees it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(err) if err.is_transient() => ErrorKind::Transport,
            Self::Store(_) | Self::Decisions(_) => ErrorKind::Internal,
            Self::Llm(err) => err.kind(),
            Self::Invalid(_) | Self::Conflict(_) => ErrorKind::InvalidInput,
            Self::Diverged(_) => ErrorKind::Protocol,
        }
    }
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
