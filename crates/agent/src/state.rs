//! The orchestrator's working state of one goal, kept in `goals.state` and saved before anything
//! it decides is acted on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::config::agent::Budget;

/// Everything the orchestrator knows about a goal between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GoalState {
    /// The goal's limits.
    #[serde(default)]
    pub budget: Budget,
    /// What has been spent.
    #[serde(default)]
    pub used: Used,
    /// Decision records written so far (the next is `decisions + 1`).
    #[serde(default)]
    pub decisions: u32,
    /// Context retrieved for planning (once per goal).
    #[serde(default)]
    pub context: Option<Vec<ContextItem>>,
    /// The tools offered, as found at the first run (names; the details are in the decision).
    #[serde(default)]
    pub registry: Option<u32>,
    /// Plans, oldest first; the last is current.
    #[serde(default)]
    pub plans: Vec<PlanRun>,
    /// Approvals asked for, by step key.
    #[serde(default)]
    pub approvals: BTreeMap<String, Approval>,
}

/// Spent budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Used {
    /// Steps dispatched.
    pub steps: u32,
    /// Replans made.
    pub replans: u32,
    /// Model tokens, prompt and completion.
    pub tokens: u64,
    /// When the goal first ran.
    pub started_at: Option<DateTime<Utc>>,
    /// Orchestrator runs (more than one after a restart or an approval).
    pub runs: u32,
}

/// A retrieved piece of context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextItem {
    /// The chunk's id.
    pub chunk_id: i64,
    /// Its document.
    pub source: String,
    /// Its text (clipped).
    pub text: String,
    /// Its rank score.
    pub score: f32,
    /// How GraphRAG reached it (empty for a direct hit).
    #[serde(default)]
    pub via: String,
}

/// One plan and how its steps went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRun {
    /// 1 for the first plan, +1 per replan.
    pub revision: u32,
    /// Its steps, in the plan's order.
    pub steps: Vec<StepRun>,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Tool chosen and arguments made; about to be dispatched.
    Selected,
    /// Waiting for an operator.
    AwaitingApproval,
    /// On the bus.
    Dispatched,
    /// Done and judged good.
    Succeeded,
    /// Failed (call failed, criteria not met, no fitting tool, or rejected).
    Failed,
    /// Not run: the plan was replaced.
    Skipped,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// `s1` … `s6`.
    pub id: String,
    /// What to do.
    pub description: String,
    /// How to tell it worked.
    pub success_criteria: String,
    /// Steps that must succeed first.
    pub depends_on: Vec<String>,
    /// Where it is.
    pub status: StepStatus,
    /// The tool chosen.
    #[serde(default)]
    pub tool: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub params: Option<Value>,
    /// The step's message on the bus.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The result, as text for the model (clipped).
    #[serde(default)]
    pub output: Option<String>,
    /// Link to a large result.
    #[serde(default)]
    pub result_url: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl StepRun {
    /// A planned step, not started.
    pub fn pending(step: &llm::shapes::PlanStep) -> Self {
        Self {
            id: step.id.clone(),
            description: step.description.clone(),
            success_criteria: step.success_criteria.clone(),
            depends_on: step.depends_on.clone(),
            status: StepStatus::Pending,
            tool: None,
            params: None,
            message_id: None,
            output: None,
            result_url: None,
            error: None,
        }
    }

    /// The step's key within the goal: `r<revision>.<id>`.
    pub fn key(revision: u32, id: &str) -> String {
        format!("r{revision}.{id}")
    }
}

/// An approval asked of an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The tool the step would call.
    pub tool: String,
    /// With these arguments.
    pub params: Value,
    /// When it was asked.
    pub requested_at: DateTime<Utc>,
    /// The answer, once given.
    #[serde(default)]
    pub decision: Option<ApprovalDecision>,
}

/// An operator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// Approved or rejected.
    pub approved: bool,
    /// Who answered.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl GoalState {
    /// The state of a goal, or a fresh one with `budget` when it has none yet.
    pub fn from_value(value: &Value, budget: Budget) -> Result<Self, String> {
        if value.is_null() || value.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(Self { budget, ..Self::default() });
        }
        serde_json::from_value(value.clone()).map_err(|err| format!("the goal's state cannot be read: {err}"))
    }

    /// As stored.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The current plan.
    pub fn plan(&self) -> Option<&PlanRun> {
        self.plans.last()
    }

    /// The current plan, to change.
    pub fn plan_mut(&mut self) -> Option<&mut PlanRun> {
        self.plans.last_mut()
    }

    /// Results of every succeeded step of every plan, oldest first: `(description, tool, output)`.
    pub fn done(&self) -> Vec<(&str, &str, &str)> {
        self.plans
            .iter()
            .flat_map(|p| p.steps.iter())
            .filter(|s| s.status == StepStatus::Succeeded)
            .map(|s| (s.description.as_str(), s.tool.as_deref().unwrap_or(""), s.output.as_deref().unwrap_or("")))
            .collect()
    }
}
