//! Operator actions on goals: submitting one, answering an approval, cancelling.

use chrono::Utc;
use serde_json::json;

use model::config::agent::Budget;
use model::goal::{Goal, GoalStatus, GoalUpdate, NewGoal};
use model::{Intent, NewMessage};

use crate::Error;
use crate::state::{ApprovalDecision, GoalState};

/// Attempts a goal message gets (a killed orchestrator's lease expiry counts as one).
pub const GOAL_MAX_ATTEMPTS: i32 = 10;

/// Puts a goal's message on the bus for the orchestrator, under `key` (idempotent).
pub async fn schedule(store: &store::Store, goal: &Goal, key: String) -> Result<(), Error> {
    let intent = Intent::new(Intent::GOAL).map_err(|e| Error::Invalid(e.to_string()))?;
    let (service, role) = crate::ORCHESTRATOR;
    let mut message = NewMessage::new(service, role, intent, json!({"goal_id": goal.id}));
    message.tenant = goal.tenant.clone();
    message.trace_id = Some(goal.trace_id.clone());
    message.idempotency_key = Some(key);
    message.max_attempts = GOAL_MAX_ATTEMPTS;
    store.enqueue(message).await?;
    Ok(())
}

/// Creates a goal for `tenant` with `budget` and schedules it.
pub async fn submit(store: &store::Store, tenant: &str, goal: &str, budget: Budget) -> Result<Goal, Error> {
    let mut problems = Vec::new();
    budget.check(&model::config::KeyPath::root().key("budget"), &mut problems);
    if let Some((path, problem)) = problems.first() {
        return Err(Error::Invalid(format!("{path}: {problem}")));
    }
    let state = GoalState { budget, ..GoalState::default() };
    let goal = store
        .create_goal(NewGoal { tenant: tenant.to_owned(), goal: goal.to_owned(), state: state.to_value() })
        .await
        .map_err(|err| match err {
            store::Error::InvalidGoal { detail } => Error::Invalid(detail),
            other => Error::Store(other),
        })?;
    if let Err(err) = schedule(store, &goal, format!("goal:{}:run", goal.id)).await {
        // without its message nobody would run it: say so on the goal
        let update = GoalUpdate {
            expected_version: goal.version,
            status: GoalStatus::Cancelled,
            state: goal.state.clone(),
            answer: None,
            error: Some(format!("could not be scheduled: {err}")),
        };
        let _ = store.update_goal(&goal.id, update).await;
        return Err(err);
    }
    Ok(goal)
}

/// Answers the approval asked for step `step_key` (`r1.s2`) of goal `goal_id`. When the goal is
/// paused, schedules its next run.
pub async fn decide(
    store: &store::Store,
    goal_id: &str,
    step_key: &str,
    approved: bool,
    by: &str,
    reason: &str,
) -> Result<Goal, Error> {
    for _ in 0..5 {
        let goal = store.goal(goal_id).await?;
        if goal.status.is_final() {
            return Err(Error::Conflict(format!("goal {goal_id} is {}: nothing to approve", goal.status)));
        }
        let mut state = GoalState::from_value(&goal.state, Budget::default()).map_err(Error::Invalid)?;
        let pending: Vec<String> =
            state.approvals.iter().filter(|(_, a)| a.decision.is_none()).map(|(k, _)| k.clone()).collect();
        let Some(approval) = state.approvals.get_mut(step_key) else {
            // the goal is not in a state that asks this: a conflict, not a malformed request
            return Err(Error::Conflict(format!(
                "goal {goal_id} asks no approval for step {step_key:?}; pending: {}",
                if pending.is_empty() { "none".to_owned() } else { pending.join(", ") }
            )));
        };
        if let Some(decision) = &approval.decision {
            return Err(Error::Conflict(format!(
                "step {step_key} of goal {goal_id} was already {} by {}",
                if decision.approved { "approved" } else { "rejected" },
                decision.by
            )));
        }
        approval.decision =
            Some(ApprovalDecision { approved, by: by.to_owned(), reason: crate::clip(reason, 500), at: Utc::now() });
        let update = GoalUpdate {
            expected_version: goal.version,
            status: goal.status,
            state: state.to_value(),
            answer: goal.answer.clone(),
            error: goal.error.clone(),
        };
        match store.update_goal(goal_id, update).await {
            Ok(updated) => {
                if updated.status == GoalStatus::AwaitingApproval {
                    schedule(store, &updated, format!("goal:{goal_id}:approval:{step_key}")).await?;
                }
                return Ok(updated);
            }
            Err(store::Error::GoalConflict { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Conflict(format!("goal {goal_id} keeps changing; try again")))
}

/// Cancels goal `goal_id`: a running orchestrator stops at its next check.
pub async fn cancel(store: &store::Store, goal_id: &str, by: &str) -> Result<Goal, Error> {
    for _ in 0..5 {
        let goal = store.goal(goal_id).await?;
        if goal.status.is_final() {
            return Err(Error::Conflict(format!("goal {goal_id} is already {}", goal.status)));
        }
        let update = GoalUpdate {
            expected_version: goal.version,
            status: GoalStatus::Cancelled,
            state: goal.state.clone(),
            answer: None,
            error: Some(format!("cancelled by {by}")),
        };
        match store.update_goal(goal_id, update).await {
            Ok(goal) => {
                metrics::counter!(model::metrics::GOALS_TOTAL, "status" => "cancelled").increment(1);
                return Ok(goal);
            }
            Err(store::Error::GoalConflict { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Conflict(format!("goal {goal_id} keeps changing; try again")))
}
