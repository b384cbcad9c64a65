//! A goal: what an operator asked the orchestrator to achieve, kept durable in the store (`goals`)
//! so a restarted orchestrator resumes it where it stopped.
//!
//! Invariant: a goal moves only along `queued → running → (awaiting_approval → running)* →
//! succeeded | failed | cancelled`; a finished goal never changes again. Every write carries the
//! version it read (optimistic concurrency), so two writers never overwrite each other.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted goal text, in characters.
pub const MAX_GOAL_CHARS: usize = 2_000;

/// Lifecycle state of a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GoalStatus {
    /// Waiting for an orchestrator.
    Queued,
    /// An orchestrator is working on it.
    Running,
    /// Paused until an operator approves or rejects a step.
    AwaitingApproval,
    /// Achieved.
    Succeeded,
    /// Not achieved (a step failed beyond the replan budget, the budget ran out, or a step was rejected).
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

impl GoalStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [GoalStatus; 6] =
        [Self::Queued, Self::Running, Self::AwaitingApproval, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == value)
    }

    /// Whether the goal has ended (it never changes again).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Whether the lifecycle allows moving from `self` to `next` (staying is allowed while open).
    pub fn can_become(self, next: GoalStatus) -> bool {
        use GoalStatus::*;
        if self.is_final() {
            return false;
        }
        match (self, next) {
            (_, Queued) => self == Queued,
            (_, Cancelled) => true,
            (Queued | Running | AwaitingApproval, Running) => true,
            (Running | AwaitingApproval, AwaitingApproval) => true,
            (Running, Succeeded | Failed) => true,
            (AwaitingApproval, Failed) => true,
            _ => false,
        }
    }
}

impl fmt::Display for GoalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A goal as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Goal {
    /// UUIDv7.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// 32 hex digits: every message, event and decision of the goal carries it.
    pub trace_id: String,
    /// What to achieve, in the operator's words.
    pub goal: String,
    /// Lifecycle state.
    pub status: GoalStatus,
    /// The orchestrator's working state: plans, steps and their results, budget used, pending
    /// approvals. Its shape belongs to the orchestrator.
    pub state: Value,
    /// The final answer, once succeeded.
    pub answer: Option<String>,
    /// Why it failed, once failed or cancelled.
    pub error: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; a write names the version it read.
    pub version: i64,
}

/// A goal to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGoal {
    /// Owning tenant.
    pub tenant: String,
    /// What to achieve.
    pub goal: String,
    /// Initial state (budget and options).
    pub state: Value,
}

impl NewGoal {
    /// Checks the goal text and tenant; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        crate::message::validate_name(&self.tenant, false).map_err(|e| format!("tenant: {e}"))?;
        let text = self.goal.trim();
        if text.is_empty() {
            return Err("goal: must not be empty".into());
        }
        let chars = self.goal.chars().count();
        if chars > MAX_GOAL_CHARS {
            return Err(format!("goal: {chars} characters, over the limit of {MAX_GOAL_CHARS}"));
        }
        if self.goal.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err("goal: contains control characters".into());
        }
        Ok(())
    }
}

/// A change to a goal, applied only if the goal is still at `expected_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct GoalUpdate {
    /// The version the writer read.
    pub expected_version: i64,
    /// The new status (must be allowed by [`GoalStatus::can_become`]).
    pub status: GoalStatus,
    /// The new state.
    pub state: Value,
    /// The answer, if any.
    pub answer: Option<String>,
    /// The error, if any.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_allows_only_forward_moves() {
        use GoalStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(AwaitingApproval));
        assert!(AwaitingApproval.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(Running.can_become(Running));
        assert!(!Queued.can_become(Succeeded));
        assert!(!Succeeded.can_become(Running));
        assert!(!Failed.can_become(Cancelled));
        assert!(!Running.can_become(Queued));
        for status in GoalStatus::ALL {
            assert_eq!(GoalStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let goal = |text: &str| NewGoal { tenant: "default".into(), goal: text.into(), state: Value::Null };
        assert!(goal("open the page").validate().is_ok());
        assert!(goal("  ").validate().expect_err("empty").contains("empty"));
        assert!(goal(&"x".repeat(MAX_GOAL_CHARS + 1)).validate().expect_err("long").contains("limit"));
        assert!(goal("a\u{0}b").validate().expect_err("control").contains("control"));
        let bad_tenant = NewGoal { tenant: "".into(), goal: "x".into(), state: Value::Null };
        assert!(bad_tenant.validate().expect_err("tenant").contains("tenant"));
    }
}
