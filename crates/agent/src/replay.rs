//! `cogo replay`: the orchestrator run again against a trace's records — every model answer
//! served from the recording by prompt hash, every step's outcome from its evaluation record, the
//! tools and the context as they were — and its decisions compared with the recorded ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use llm::{ChatRequest, ChatResponse, FinishReason, LlmClient, Usage};
use model::config::AgentPolicy;
use model::goal::{Goal, GoalStatus, GoalUpdate};

use crate::Error;
use crate::decisions::{Decision, DecisionKind, DecisionLog};
use crate::orchestrator::{Dispatch, Environment, Orchestrator, Outcome, StepOutcome};
use crate::registry::ToolEntry;
use crate::state::{ContextItem, GoalState};

/// Model answers from a recording, by prompt hash, in order.
#[derive(Debug)]
pub struct ReplayLlm {
    provider: String,
    model: String,
    answers: Mutex<HashMap<String, VecDeque<String>>>,
}

impl ReplayLlm {
    /// The answers recorded in `decisions`.
    pub fn new(decisions: &[Decision]) -> Self {
        let mut answers: HashMap<String, VecDeque<String>> = HashMap::new();
        let mut provider = "replay".to_owned();
        let mut model = "recorded".to_owned();
        for call in decisions.iter().flat_map(|d| d.llm.iter()) {
            provider.clone_from(&call.provider);
            model.clone_from(&call.model);
            answers.entry(call.prompt_hash.clone()).or_default().push_back(call.content.clone());
        }
        Self { provider, model, answers: Mutex::new(answers) }
    }
}

impl LlmClient for ReplayLlm {
    fn provider(&self) -> &str {
        &self.provider
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn constrains_output(&self) -> bool {
        true
    }
    fn chat<'a>(&'a self, request: ChatRequest) -> BoxFuture<'a, Result<ChatResponse, llm::Error>> {
        Box::pin(async move {
            let hash = request.prompt_hash();
            let answer =
                self.answers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&hash).and_then(VecDeque::pop_front);
            let Some(content) = answer else {
                return Err(llm::Error::Provider {
                    provider: "replay".into(),
                    kind: model::ErrorKind::Protocol,
                    message: format!(
                        "the recording has no model answer for prompt {hash}: the replay took another path"
                    ),
                });
            };
            Ok(ChatResponse {
                provider: self.provider.clone(),
                model: self.model.clone(),
                content,
                tool_calls: Vec::new(),
                finish_reason: FinishReason::Stop,
                usage: Usage::default(),
                latency_ms: 0.0,
                first_token_ms: None,
                prompt_hash: hash,
            })
        })
    }
    fn chat_stream<'a>(
        &'a self,
        request: ChatRequest,
        _deltas: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'a, Result<ChatResponse, llm::Error>> {
        self.chat(request)
    }
}

/// The environment as recorded.
struct ReplayEnvironment {
    goal: Mutex<Goal>,
    registries: Mutex<VecDeque<Vec<ToolEntry>>>,
    last_registry: Mutex<Vec<ToolEntry>>,
    context: Vec<ContextItem>,
    messages: HashMap<String, String>,
    outcomes: HashMap<String, StepOutcome>,
}

impl Environment for ReplayEnvironment {
    fn load<'a>(&'a self, _goal_id: &'a str) -> BoxFuture<'a, Result<Goal, Error>> {
        Box::pin(async move { Ok(self.goal.lock().unwrap_or_else(|e| e.into_inner()).clone()) })
    }

    fn save<'a>(&'a self, goal_id: &'a str, update: GoalUpdate) -> BoxFuture<'a, Result<Goal, Error>> {
        Box::pin(async move {
            let mut goal = self.goal.lock().unwrap_or_else(|e| e.into_inner());
            if goal.version != update.expected_version
                || !(goal.status == update.status || goal.status.can_become(update.status))
            {
                return Err(Error::Store(store::Error::GoalConflict {
                    id: goal_id.to_owned(),
                    detail: format!("{} cannot become {}", goal.status, update.status),
                }));
            }
            goal.status = update.status;
            goal.state = update.state;
            goal.answer = update.answer;
            goal.error = update.error;
            goal.version += 1;
            Ok(goal.clone())
        })
    }

    fn tools<'a>(&'a self, _tenant: &'a str) -> BoxFuture<'a, Result<Vec<ToolEntry>, Error>> {
        Box::pin(async move {
            let next = self.registries.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let mut last = self.last_registry.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tools) = next {
                *last = tools;
            }
            Ok(last.clone())
        })
    }

    fn retrieve<'a>(&'a self, _tenant: &'a str, _query: &'a str) -> BoxFuture<'a, Vec<ContextItem>> {
        Box::pin(async move { self.context.clone() })
    }

    fn dispatch<'a>(&'a self, step: Dispatch<'a>) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            let step_key = step.key.rsplit(':').next().unwrap_or_default().to_owned();
            self.messages
                .get(&step_key)
                .cloned()
                .ok_or_else(|| Error::Diverged(format!("step {step_key} was not run in the recording")))
        })
    }

    fn poll<'a>(&'a self, message_id: &'a str) -> BoxFuture<'a, Result<Option<StepOutcome>, Error>> {
        Box::pin(async move {
            self.outcomes
                .get(message_id)
                .cloned()
                .map(Some)
                .ok_or_else(|| Error::Diverged(format!("no recorded outcome for message {message_id}")))
        })
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn timed(&self) -> bool {
        false
    }
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The trace.
    pub trace_id: String,
    /// Decisions in the recording (tool registry snapshots not counted).
    pub recorded: usize,
    /// Decisions the replay made (likewise).
    pub replayed: usize,
    /// Whether they are the same, one by one.
    pub identical: bool,
    /// The first difference, when not.
    pub first_difference: Option<String>,
    /// The goal's status in the recording.
    pub recorded_status: GoalStatus,
    /// The goal's status in the replay.
    pub replayed_status: GoalStatus,
}

/// Replays `goal` (as stored, with its recorded `decisions`) under `policy`.
pub async fn replay(
    goal: &Goal,
    decisions: Vec<Decision>,
    policy: Arc<AgentPolicy>,
    embedder: Option<Arc<dyn knowledge::Embedder>>,
) -> Result<ReplayReport, Error> {
    if decisions.is_empty() {
        return Err(Error::Invalid(format!(
            "trace {} has no decision records: was it run by an orchestrator with this data dir?",
            goal.trace_id
        )));
    }
    let stored = GoalState::from_value(&goal.state, policy.budget).map_err(Error::Invalid)?;
    let mut fresh = goal.clone();
    fresh.status = GoalStatus::Queued;
    fresh.state = GoalState { budget: stored.budget, ..GoalState::default() }.to_value();
    fresh.answer = None;
    fresh.error = None;
    fresh.version = 1;
    let registries: VecDeque<Vec<ToolEntry>> = decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::Registry)
        .filter_map(|d| d.output.get("tools").cloned())
        .filter_map(|tools| serde_json::from_value::<Vec<ToolEntry>>(tools).ok())
        .map(|tools| tools.into_iter().filter(|t| t.name != "respond").collect())
        .collect();
    let context: Vec<ContextItem> = decisions
        .iter()
        .find(|d| d.kind == DecisionKind::Plan)
        .and_then(|d| d.inputs.get("context_items").cloned())
        .and_then(|items| serde_json::from_value(items).ok())
        .unwrap_or_default();
    let mut messages = HashMap::new();
    let mut outcomes = HashMap::new();
    for decision in decisions.iter().filter(|d| d.kind == DecisionKind::Evaluate) {
        let key = decision.inputs.get("key").and_then(Value::as_str);
        let id = decision.inputs.get("message_id").and_then(Value::as_str);
        let outcome =
            decision.inputs.get("outcome").cloned().and_then(|o| serde_json::from_value::<StepOutcome>(o).ok());
        if let (Some(key), Some(id), Some(outcome)) = (key, id, outcome) {
            messages.insert(key.to_owned(), id.to_owned());
            outcomes.insert(id.to_owned(), outcome);
        }
    }
    let approvals: Vec<(String, bool, String, String)> = decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::Approval && d.output.get("approved").is_some())
        .filter_map(|d| {
            let key = d.inputs.get("step_key")?.as_str()?.to_owned();
            let approved = d.output.get("approved")?.as_bool()?;
            let by = d.output.get("by").and_then(Value::as_str).unwrap_or("operator").to_owned();
            let reason = d.output.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
            Some((key, approved, by, reason))
        })
        .collect();
    let env = Arc::new(ReplayEnvironment {
        goal: Mutex::new(fresh),
        registries: Mutex::new(registries),
        last_registry: Mutex::new(Vec::new()),
        context,
        messages,
        outcomes,
    });
    let llm = Arc::new(ReplayLlm::new(&decisions));
    let orchestrator = Orchestrator::new(llm, env.clone(), policy, DecisionLog::discard(), embedder)
        .with_max_poll(std::time::Duration::from_millis(10));
    let mut made = Vec::new();
    let mut status = GoalStatus::Queued;
    // one run per pause for approval in the recording, and one more
    for _ in 0..=approvals.len() + 1 {
        let (outcome, decisions) = match orchestrator.run(&goal.id, None).await {
            Ok(done) => done,
            Err(Error::Llm(err)) => {
                return Ok(diverged(goal, &decisions_without_registry(&decisions), &made, err.to_string()));
            }
            Err(Error::Diverged(why)) => {
                return Ok(diverged(goal, &decisions_without_registry(&decisions), &made, why));
            }
            Err(err) => return Err(err),
        };
        made.extend(decisions);
        status = outcome.status();
        if outcome != Outcome::AwaitingApproval {
            break;
        }
        // the operator's recorded answers
        let mut current = env.goal.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = GoalState::from_value(&current.state, stored.budget).map_err(Error::Invalid)?;
        for (key, approved, by, reason) in &approvals {
            if let Some(approval) = state.approvals.get_mut(key)
                && approval.decision.is_none()
            {
                approval.decision = Some(crate::state::ApprovalDecision {
                    approved: *approved,
                    by: by.clone(),
                    reason: reason.clone(),
                    at: Utc::now(),
                });
            }
        }
        current.state = state.to_value();
        current.version += 1;
    }
    let recorded = decisions_without_registry(&decisions);
    let replayed: Vec<&Decision> = made.iter().filter(|d| d.kind != DecisionKind::Registry).collect();
    let first_difference = recorded.iter().zip(&replayed).find(|(a, b)| a.essence() != b.essence()).map(|(a, b)| {
        format!(
            "decision {} ({} {}): recorded {} but replayed {}",
            a.n,
            a.kind.as_str(),
            a.step.as_deref().unwrap_or(""),
            a.output,
            b.output
        )
    });
    let first_difference = first_difference.or_else(|| {
        (recorded.len() != replayed.len())
            .then(|| format!("the recording has {} decisions, the replay made {}", recorded.len(), replayed.len()))
    });
    Ok(ReplayReport {
        trace_id: goal.trace_id.clone(),
        recorded: recorded.len(),
        replayed: replayed.len(),
        identical: first_difference.is_none() && status == goal.status,
        first_difference,
        recorded_status: goal.status,
        replayed_status: status,
    })
}

fn decisions_without_registry(decisions: &[Decision]) -> Vec<&Decision> {
    decisions.iter().filter(|d| d.kind != DecisionKind::Registry).collect()
}

fn diverged(goal: &Goal, recorded: &[&Decision], made: &[Decision], why: String) -> ReplayReport {
    ReplayReport {
        trace_id: goal.trace_id.clone(),
        recorded: recorded.len(),
        replayed: made.iter().filter(|d| d.kind != DecisionKind::Registry).count(),
        identical: false,
        first_difference: Some(why),
        recorded_status: goal.status,
        replayed_status: GoalStatus::Running,
    }
}
