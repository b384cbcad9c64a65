//! The orchestrator loop: plan → select → execute → evaluate → replan, one goal at a time per
//! bus message, its state saved before each thing it decides is acted on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use llm::shapes::{self, Plan, ToolChoice, Verdict};
use llm::{ChatRequest, JsonSchemaFormat, LlmClient, Message};
use model::config::AgentPolicy;
use model::config::agent::JudgeMode;
use model::goal::{Goal, GoalStatus, GoalUpdate};

use crate::decisions::{Decision, DecisionKind, DecisionLog, LlmCall};
use crate::registry::{self, Candidate, Target, ToolEntry};
use crate::state::{Approval, ContextItem, GoalState, PlanRun, StepRun, StepStatus};
use crate::{Error, clip};

/// Longest step output kept for the model, in characters.
pub const MAX_OUTPUT_CHARS: usize = 2_000;
/// Tools offered to the model for one step (plus `respond` when earlier results exist).
pub const CANDIDATES: usize = 3;

/// How a goal's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Achieved.
    Succeeded,
    /// Not achieved.
    Failed,
    /// Paused for an operator.
    AwaitingApproval,
    /// Stopped by an operator.
    Cancelled,
}

impl Outcome {
    fn of(status: GoalStatus) -> Option<Self> {
        match status {
            GoalStatus::Succeeded => Some(Self::Succeeded),
            GoalStatus::Failed => Some(Self::Failed),
            GoalStatus::Cancelled => Some(Self::Cancelled),
            GoalStatus::AwaitingApproval => Some(Self::AwaitingApproval),
            GoalStatus::Queued | GoalStatus::Running => None,
        }
    }

    /// The goal status it leaves.
    pub fn status(self) -> GoalStatus {
        match self {
            Self::Succeeded => GoalStatus::Succeeded,
            Self::Failed => GoalStatus::Failed,
            Self::AwaitingApproval => GoalStatus::AwaitingApproval,
            Self::Cancelled => GoalStatus::Cancelled,
        }
    }
}

/// A finished step's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// It completed (`done`).
    pub ok: bool,
    /// Its result.
    #[serde(default)]
    pub result: Option<Value>,
    /// Link to a large result.
    #[serde(default)]
    pub result_url: Option<String>,
    /// Its last error.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the loop reads from and acts on: the store and the bus in a live run, the records in a replay.
pub trait Environment: Send + Sync {
    /// The goal as stored.
    fn load<'a>(&'a self, goal_id: &'a str) -> BoxFuture<'a, Result<Goal, Error>>;
    /// Writes the goal if it is still at the update's version.
    fn save<'a>(&'a self, goal_id: &'a str, update: GoalUpdate) -> BoxFuture<'a, Result<Goal, Error>>;
    /// The tools on offer to `tenant`, with their health.
    fn tools<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<ToolEntry>, Error>>;
    /// Context for planning.
    fn retrieve<'a>(&'a self, tenant: &'a str, query: &'a str) -> BoxFuture<'a, Vec<ContextItem>>;
    /// Enqueues a step under `key` (idempotent); returns its message id.
    fn dispatch<'a>(&'a self, step: Dispatch<'a>) -> BoxFuture<'a, Result<String, Error>>;
    /// The outcome of a step's message, once it has finished.
    fn poll<'a>(&'a self, message_id: &'a str) -> BoxFuture<'a, Result<Option<StepOutcome>, Error>>;
    /// The clock.
    fn now(&self) -> DateTime<Utc>;
    /// Whether the time budget applies (not in a replay).
    fn timed(&self) -> bool {
        true
    }
}

/// A step to put on the bus.
#[derive(Debug, Clone)]
pub struct Dispatch<'a> {
    /// The goal.
    pub goal: &'a Goal,
    /// The goal's message (the step's parent).
    pub parent: Option<model::MessageId>,
    /// Its idempotency key.
    pub key: String,
    /// Where it goes.
    pub target: &'a Target,
    /// Its arguments.
    pub params: &'a Value,
}

/// The orchestrator: the model, the environment, the policy and the decision log.
pub struct Orchestrator {
    llm: Arc<dyn LlmClient>,
    env: Arc<dyn Environment>,
    policy: Arc<AgentPolicy>,
    decisions: DecisionLog,
    embedder: Option<Arc<dyn knowledge::Embedder>>,
    tool_vectors: Mutex<HashMap<String, Vec<f32>>>,
    max_poll: Duration,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("model", &self.llm.model()).finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator. `embedder` ranks tools by meaning; without it, by shared words.
    pub fn new(
        llm: Arc<dyn LlmClient>,
        env: Arc<dyn Environment>,
        policy: Arc<AgentPolicy>,
        decisions: DecisionLog,
        embedder: Option<Arc<dyn knowledge::Embedder>>,
    ) -> Self {
        Self {
            llm,
            env,
            policy,
            decisions,
            embedder,
            tool_vectors: Mutex::new(HashMap::new()),
            max_poll: Duration::from_millis(500),
        }
    }

    /// The same orchestrator, polling step messages at most every `max_poll`.
    pub fn with_max_poll(mut self, max_poll: Duration) -> Self {
        self.max_poll = max_poll.max(Duration::from_millis(10));
        self
    }

    /// Runs goal `goal_id` until it ends or pauses; `message` is the goal's bus message. Returns
    /// the outcome and the decisions made in this run.
    pub async fn run(
        &self,
        goal_id: &str,
        message: Option<model::MessageId>,
    ) -> Result<(Outcome, Vec<Decision>), Error> {
        let goal = self.env.load(goal_id).await?;
        if let Some(outcome) = Outcome::of(goal.status).filter(|_| goal.status.is_final()) {
            return Ok((outcome, Vec::new()));
        }
        let state = GoalState::from_value(&goal.state, self.policy.budget).map_err(Error::Invalid)?;
        let recorder = Arc::new(Recorder::new(self.llm.clone()));
        let mut run = Run { orch: self, goal, state, recorder, message, made: Vec::new() };
        let outcome = run.drive().await?;
        Ok((outcome, run.made))
    }

    /// Similarity of `query` to each of `texts` (embeddings when there is an embedder, words otherwise).
    async fn text_similarities(&self, query: &str, texts: &[String]) -> Vec<f64> {
        if texts.is_empty() {
            return Vec::new();
        }
        if let Some(embedder) = &self.embedder {
            let mut all = vec![query.to_owned()];
            all.extend(texts.iter().cloned());
            match embedder.embed(all).await {
                Ok(vectors) if vectors.len() == texts.len() + 1 => {
                    return vectors[1..].iter().map(|v| registry::cosine(&vectors[0], v)).collect();
                }
                Ok(_) => tracing::warn!("the embedder returned a wrong number of vectors; comparing words"),
                Err(err) => tracing::warn!(error = %err, "embedding failed; comparing words"),
            }
        }
        texts.iter().map(|t| registry::lexical_similarity(query, t)).collect()
    }

    async fn similarities(&self, text: &str, tools: &[ToolEntry]) -> Vec<f64> {
        if let Some(embedder) = &self.embedder {
            let missing: Vec<String> = {
                let cache = self.tool_vectors.lock().unwrap_or_else(|e| e.into_inner());
                tools.iter().map(registry::tool_text).filter(|t| !cache.contains_key(t)).collect()
            };
            let mut texts = vec![text.to_owned()];
            texts.extend(missing.iter().cloned());
            match embedder.embed(texts).await {
                Ok(vectors) if vectors.len() == missing.len() + 1 => {
                    let mut cache = self.tool_vectors.lock().unwrap_or_else(|e| e.into_inner());
                    for (text, vector) in missing.into_iter().zip(vectors.iter().skip(1)) {
                        cache.insert(text, vector.clone());
                    }
                    let query = &vectors[0];
                    return tools
                        .iter()
                        .map(|t| cache.get(&registry::tool_text(t)).map(|v| registry::cosine(query, v)).unwrap_or(0.0))
                        .collect();
                }
                Ok(_) => tracing::warn!("the embedder returned a wrong number of vectors; ranking tools by words"),
                Err(err) => tracing::warn!(error = %err, "embedding failed; ranking tools by words"),
            }
        }
        tools.iter().map(|t| registry::lexical_similarity(text, &registry::tool_text(t))).collect()
    }
}

/// Keeps every model answer of the current decision, for its record.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Arc<dyn LlmClient>,
    calls: Mutex<Vec<LlmCall>>,
}

impl Recorder {
    fn new(inner: Arc<dyn LlmClient>) -> Self {
        Self { inner, calls: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Vec<LlmCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn keep(&self, response: &llm::ChatResponse) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(LlmCall {
            provider: response.provider.clone(),
            model: response.model.clone(),
            prompt_hash: response.prompt_hash.clone(),
            content: response.content.clone(),
            prompt_tokens: response.usage.prompt_tokens,
            completion_tokens: response.usage.completion_tokens,
            latency_ms: response.latency_ms,
        });
    }
}

impl LlmClient for Recorder {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn constrains_output(&self) -> bool {
        self.inner.constrains_output()
    }
    fn chat<'a>(&'a self, request: ChatRequest) -> BoxFuture<'a, Result<llm::ChatResponse, llm::Error>> {
        Box::pin(async move {
            let response = self.inner.chat(request).await?;
            self.keep(&response);
            Ok(response)
        })
    }
    fn chat_stream<'a>(
        &'a self,
        request: ChatRequest,
        deltas: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'a, Result<llm::ChatResponse, llm::Error>> {
        Box::pin(async move {
            let response = self.inner.chat_stream(request, deltas).await?;
            self.keep(&response);
            Ok(response)
        })
    }
}

struct Run<'o> {
    orch: &'o Orchestrator,
    goal: Goal,
    state: GoalState,
    recorder: Arc<Recorder>,
    message: Option<model::MessageId>,
    made: Vec<Decision>,
}

/// What a decision is about.
struct About<'a> {
    kind: DecisionKind,
    step: Option<&'a str>,
    inputs: Value,
    output: Value,
    why: String,
}

enum Flow {
    Continue,
    End(Outcome),
}

impl Run<'_> {
    fn env(&self) -> &dyn Environment {
        self.orch.env.as_ref()
    }

    /// Saves the state with `status`; an operator's approvals and cancellation that arrived
    /// meanwhile are merged in, never overwritten.
    async fn save(&mut self, status: GoalStatus, answer: Option<String>, error: Option<String>) -> Result<Flow, Error> {
        for _ in 0..5 {
            let update = GoalUpdate {
                expected_version: self.goal.version,
                status,
                state: self.state.to_value(),
                answer: answer.clone(),
                error: error.clone(),
            };
            match self.env().save(&self.goal.id, update).await {
                Ok(goal) => {
                    self.goal = goal;
                    return Ok(Flow::Continue);
                }
                Err(Error::Store(store::Error::GoalConflict { .. })) => {
                    let current = self.env().load(&self.goal.id).await?;
                    if current.status == GoalStatus::Cancelled {
                        self.goal = current;
                        return Ok(Flow::End(Outcome::Cancelled));
                    }
                    if current.status.is_final() {
                        return Err(Error::Conflict(format!(
                            "goal {} ended elsewhere ({})",
                            current.id, current.status
                        )));
                    }
                    self.merge_approvals(&current);
                    self.goal = current;
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict(format!("goal {} keeps changing under the orchestrator", self.goal.id)))
    }

    fn merge_approvals(&mut self, current: &Goal) {
        if let Ok(stored) = GoalState::from_value(&current.state, self.state.budget) {
            for (key, approval) in stored.approvals {
                if approval.decision.is_some() {
                    self.state.approvals.insert(key, approval);
                }
            }
        }
    }

    /// Writes a decision record with the model calls made since the last one.
    async fn decide(&mut self, about: About<'_>) -> Result<(), Error> {
        let llm = self.recorder.take();
        self.state.used.tokens += llm.iter().map(|c| c.prompt_tokens + c.completion_tokens).sum::<u64>();
        let n = self.state.decisions + 1;
        let decision = Decision {
            n,
            kind: about.kind,
            trace_id: self.goal.trace_id.clone(),
            goal_id: self.goal.id.clone(),
            at: self.env().now(),
            plan_revision: self.state.plan().map(|p| p.revision),
            step: about.step.map(str::to_owned),
            inputs: mcp::redact(&about.inputs),
            context_ids: self.state.context.iter().flatten().map(|c| c.chunk_id).collect(),
            llm,
            output: mcp::redact(&about.output),
            why: about.why,
        };
        self.orch.decisions.write(&decision).await?;
        self.state.decisions = n;
        self.made.push(decision);
        Ok(())
    }

    async fn end(&mut self, outcome: Outcome, answer: Option<String>, error: Option<String>) -> Result<Outcome, Error> {
        if outcome == Outcome::Failed {
            let why = error.clone().unwrap_or_default();
            self.decide(About {
                kind: DecisionKind::Finish,
                step: None,
                inputs: json!({"used": self.state.used}),
                output: json!({"status": "failed", "error": why}),
                why: why.clone(),
            })
            .await?;
        }
        if let Flow::End(other) = self.save(outcome.status(), answer, error).await? {
            return Ok(other);
        }
        metrics::counter!(model::metrics::GOALS_TOTAL, "status" => outcome.status().as_str()).increment(1);
        if outcome != Outcome::AwaitingApproval
            && let Some(started) = self.state.used.started_at
        {
            let elapsed = (self.env().now() - started).num_milliseconds().max(0) as f64;
            metrics::histogram!(model::metrics::GOAL_DURATION_MS, "status" => outcome.status().as_str())
                .record(elapsed);
        }
        Ok(outcome)
    }

    async fn drive(&mut self) -> Result<Outcome, Error> {
        self.state.used.runs += 1;
        let now = self.env().now();
        self.state.used.started_at.get_or_insert(now);
        if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
            return Ok(outcome);
        }
        let mut tools = self.registry().await?;
        loop {
            // an operator may have cancelled or answered an approval meanwhile
            let current = self.env().load(&self.goal.id).await?;
            if current.status == GoalStatus::Cancelled {
                return Ok(Outcome::Cancelled);
            }
            self.merge_approvals(&current);
            if let Some(why) = self.over_budget() {
                return self.end(Outcome::Failed, None, Some(why)).await;
            }
            if self.state.plans.is_empty() {
                match self.plan(None).await? {
                    Some(plan) => self.state.plans.push(plan),
                    None => {
                        let why = "no valid plan could be made for the goal (see the plan decision)".to_owned();
                        return self.end(Outcome::Failed, None, Some(why)).await;
                    }
                }
                if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
                    return Ok(outcome);
                }
            }
            let Some(plan) = self.state.plan().cloned() else { continue };
            if plan.steps.iter().all(|s| s.status == StepStatus::Succeeded) {
                return self.answer().await;
            }
            // approvals answered
            if let Some(flow) = self.take_approvals(&plan).await? {
                return Ok(flow);
            }
            // select the ready steps, in the plan's order
            let succeeded: HashSet<String> =
                plan.steps.iter().filter(|s| s.status == StepStatus::Succeeded).map(|s| s.id.clone()).collect();
            let ready: Vec<String> = plan
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Pending && s.depends_on.iter().all(|d| succeeded.contains(d)))
                .map(|s| s.id.clone())
                .collect();
            for id in &ready {
                self.select(id, &tools).await?;
            }
            if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
                return Ok(outcome);
            }
            // dispatch what is selected
            if let Some(outcome) = self.dispatch_selected().await? {
                return Ok(outcome);
            }
            // wait for what is on the bus and judge it
            if let Some(outcome) = self.wait_and_evaluate().await? {
                return Ok(outcome);
            }
            let plan = self.state.plan().cloned().unwrap_or(PlanRun { revision: 0, steps: Vec::new() });
            let failed: Vec<&StepRun> = plan.steps.iter().filter(|s| s.status == StepStatus::Failed).collect();
            if let Some(first) = failed.first() {
                let why = format!(
                    "step {} ({}) failed: {}",
                    first.id,
                    first.description,
                    first.error.as_deref().unwrap_or("no reason recorded")
                );
                if self.state.used.replans >= self.state.budget.max_replans {
                    let spent = format!("{why}; the replan budget ({}) is spent", self.state.budget.max_replans);
                    return self.end(Outcome::Failed, None, Some(spent)).await;
                }
                if let Some(outcome) = self.check_rejection(&plan).await? {
                    return Ok(outcome);
                }
                tools = self.registry().await?;
                match self.plan(Some(&why)).await? {
                    Some(mut next) => {
                        self.state.used.replans += 1;
                        metrics::counter!(model::metrics::GOAL_REPLANS_TOTAL).increment(1);
                        next.revision = plan.revision + 1;
                        if let Some(current) = self.state.plan_mut() {
                            for step in &mut current.steps {
                                if matches!(step.status, StepStatus::Pending | StepStatus::Selected) {
                                    step.status = StepStatus::Skipped;
                                }
                            }
                        }
                        self.state.plans.push(next);
                    }
                    None => {
                        let why = format!("{why}; no valid new plan could be made");
                        return self.end(Outcome::Failed, None, Some(why)).await;
                    }
                }
                if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
                    return Ok(outcome);
                }
                continue;
            }
            let plan = self.state.plan().cloned().unwrap_or(PlanRun { revision: 0, steps: Vec::new() });
            let waiting = plan.steps.iter().any(|s| s.status == StepStatus::AwaitingApproval);
            let moving = plan
                .steps
                .iter()
                .any(|s| matches!(s.status, StepStatus::Pending | StepStatus::Selected | StepStatus::Dispatched));
            if waiting && !plan.steps.iter().any(|s| s.status == StepStatus::Dispatched) {
                return self.end(Outcome::AwaitingApproval, None, None).await;
            }
            if !moving && !waiting && !plan.steps.iter().all(|s| s.status == StepStatus::Succeeded) {
                let why = "the plan cannot go on: its remaining steps depend on steps that did not succeed".to_owned();
                return self.end(Outcome::Failed, None, Some(why)).await;
            }
        }
    }

    fn over_budget(&self) -> Option<String> {
        let budget = &self.state.budget;
        let used = &self.state.used;
        if used.tokens >= budget.max_tokens {
            return Some(format!("token budget exhausted: {} of {} used", used.tokens, budget.max_tokens));
        }
        if self.env().timed()
            && let Some(started) = used.started_at
        {
            let elapsed = (self.env().now() - started).num_seconds();
            if elapsed >= budget.max_seconds as i64 {
                return Some(format!("time budget exhausted: {elapsed} s of {} s", budget.max_seconds));
            }
        }
        None
    }

    /// The tools on offer now, recorded.
    async fn registry(&mut self) -> Result<Vec<ToolEntry>, Error> {
        let mut tools = self.env().tools(&self.goal.tenant).await?;
        let policy = &self.orch.policy;
        tools.retain(|t| !policy.denies(&t.name));
        for tool in &mut tools {
            tool.needs_approval = policy.needs_approval(&tool.name);
        }
        tools.push(registry::respond_tool());
        let open: Vec<&str> = tools.iter().filter(|t| t.breaker_open).map(|t| t.name.as_str()).collect();
        let why = format!("{} tools on offer, {} with an open breaker", tools.len(), open.len());
        self.decide(About {
            kind: DecisionKind::Registry,
            step: None,
            inputs: json!({"tenant": self.goal.tenant}),
            output: json!({"tools": tools}),
            why,
        })
        .await?;
        Ok(tools)
    }

    fn context_text(&self) -> String {
        self.state
            .context
            .iter()
            .flatten()
            .take(4)
            .map(|c| format!("[{}] {}", c.source, clip(&c.text, 300)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn done_text(&self, max_each: usize) -> String {
        self.state
            .done()
            .iter()
            .map(|(description, tool, output)| format!("- {description} ({tool}): {}", clip(output, max_each)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines of `results` most like `query` (at most three), to choose the evidence among.
    async fn evidence_lines(&self, query: &str, results: &str) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for line in results.lines().map(|l| l.trim().trim_start_matches("- ").trim()) {
            if line.len() >= 3
                && !line.starts_with('#')
                && line != "---"
                && !lines.iter().any(|l| l == line)
                && lines.len() < 200
            {
                lines.push(clip(line, 200));
            }
        }
        // the URL's placeholder words ("web page URL") must not pick the `URL:` line
        if let Some(index) = labelled_answer(&registry::drop_urls(query), &lines) {
            return vec![lines[index].clone()];
        }
        let query = registry::without_urls(query);
        let scores = self.orch.text_similarities(&query, &lines).await;
        let mut ranked: Vec<(f64, String)> = scores.into_iter().zip(lines).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        // a clear winner is the only choice: a small model picks among near-equals at random
        if let [(first, _), (second, _), ..] = ranked.as_slice()
            && first - second >= 0.2
        {
            ranked.truncate(1);
        }
        ranked.into_iter().take(3).map(|(_, line)| line).collect()
    }

    /// The distinct outputs of the succeeded tool steps, for an answer (what earlier `respond`
    /// steps wrote is derived from these, not evidence of its own).
    fn results_text(&self, max_each: usize) -> String {
        let mut seen = HashSet::new();
        self.state
            .done()
            .iter()
            .filter(|(_, tool, _)| *tool != "respond")
            .map(|(_, _, output)| output.trim())
            .filter(|output| !output.is_empty() && seen.insert(*output))
            .map(|output| clip(output, max_each))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Plans the goal; with `failure`, replans after it. `None` when the model gave no valid plan.
    async fn plan(&mut self, failure: Option<&str>) -> Result<Option<PlanRun>, Error> {
        if self.state.context.is_none() {
            let found = self.env().retrieve(&self.goal.tenant, &self.goal.goal).await;
            self.state.context = Some(found);
        }
        let mut context = self.context_text();
        if let Some(failure) = failure {
            let done = self.done_text(200);
            context = format!(
                "{context}\nDone so far:\n{}\nWhat went wrong: {failure}\nPlan only what remains, another way.",
                if done.is_empty() { "nothing".to_owned() } else { done }
            );
        }
        let (mut request, format) = shapes::plan_request(&self.goal.goal, context.trim());
        let kind = if failure.is_some() { DecisionKind::Replan } else { DecisionKind::Plan };
        let mut rejected = Vec::new();
        let mut errors = Vec::new();
        // one repair round inside `structured`; when that fails too, ask once more afresh
        for _ in 0..2 {
            match llm::structured(self.recorder.as_ref(), request.clone(), format.clone()).await {
                Ok(answer) => {
                    rejected.extend(answer.rejected.iter().map(|(out, why)| json!({"output": out, "error": why})));
                    let checked = Plan::from_value(answer.value.clone()).and_then(|plan| {
                        let (plan, fixes) = normalize_plan(plan);
                        if !fixes.is_empty() {
                            rejected.push(json!({"output": answer.value, "repaired": fixes}));
                        }
                        plan.check()?;
                        if let Some(why) = off_goal(&self.goal.goal, &plan) {
                            return Err(why);
                        }
                        Ok(plan)
                    });
                    match checked {
                        Ok(plan) => {
                            let run = PlanRun { revision: 1, steps: plan.steps.iter().map(StepRun::pending).collect() };
                            self.decide(About {
                                kind,
                                step: None,
                                inputs: json!({"goal": self.goal.goal, "context": context.trim(), "context_items": self.state.context, "failure": failure, "rejected": rejected}),
                                output: answer.value,
                                why: format!("{} steps", run.steps.len()),
                            })
                            .await?;
                            return Ok(Some(run));
                        }
                        Err(why) => {
                            rejected.push(json!({"output": answer.value, "error": why}));
                            request
                                .messages
                                .push(Message::user(format!("That plan is not valid: {why}. Write the plan again.")));
                            errors.push(why);
                        }
                    }
                }
                Err(err @ llm::Error::InvalidOutput { .. }) => {
                    request
                        .messages
                        .push(Message::user(format!("That answer was not valid: {err}. Write the plan again.")));
                    errors.push(err.to_string());
                }
                Err(err) => return Err(err.into()),
            }
        }
        // the model could not plan: the goal itself becomes the one step, so tool selection (by
        // similarity to the goal, then the model's pick among few) still has a chance
        let step = shapes::PlanStep {
            id: "s1".to_owned(),
            description: clip(&self.goal.goal, 300),
            success_criteria: "the result answers the goal".to_owned(),
            depends_on: Vec::new(),
        };
        let output = json!({"steps": [step]});
        self.decide(About {
            kind,
            step: None,
            inputs: json!({"goal": self.goal.goal, "context": context.trim(), "failure": failure, "rejected": rejected}),
            output,
            why: format!("no valid plan from the model ({}): the goal itself is the one step", errors.join("; ")),
        })
        .await?;
        Ok(Some(PlanRun { revision: 1, steps: vec![StepRun::pending(&step)] }))
    }

    fn step_mut(&mut self, id: &str) -> Option<&mut StepRun> {
        self.state.plan_mut().and_then(|p| p.steps.iter_mut().find(|s| s.id == id))
    }

    fn step(&self, id: &str) -> Option<&StepRun> {
        self.state.plan().and_then(|p| p.steps.iter().find(|s| s.id == id))
    }

    fn step_key(&self, id: &str) -> String {
        StepRun::key(self.state.plan().map(|p| p.revision).unwrap_or(0), id)
    }

    /// Chooses a tool and its arguments for step `id`, or fails the step saying why.
    async fn select(&mut self, id: &str, tools: &[ToolEntry]) -> Result<(), Error> {
        let Some(step) = self.step(id).cloned() else { return Ok(()) };
        let have_results = !self.state.done().is_empty();
        let offered: Vec<ToolEntry> =
            tools.iter().filter(|t| t.target != Target::Respond || have_results).cloned().collect();
        let query = registry::without_urls(&format!("{} {}", step.description, step.success_criteria));
        let failed_here: HashSet<String> = self
            .state
            .plans
            .iter()
            .flat_map(|p| p.steps.iter())
            .filter(|s| s.status == StepStatus::Failed)
            .filter_map(|s| s.tool.clone())
            .collect();
        let similarities: Vec<f64> = self
            .orch
            .similarities(&query, &offered)
            .await
            .into_iter()
            .zip(&offered)
            .map(|(similarity, tool)| {
                // a tool that already failed for this goal sinks: the replan should try another way
                let penalty = if failed_here.contains(&tool.name) { 0.3 } else { 1.0 };
                ((similarity + registry::fit_bonus(&step.description, tool)) * penalty).min(1.0)
            })
            .collect();
        let ranked = registry::rank(&offered, &similarities);
        let excluded: Vec<&str> = offered.iter().filter(|t| t.breaker_open).map(|t| t.name.as_str()).collect();
        let mut candidates: Vec<Candidate> = ranked.iter().take(CANDIDATES).cloned().collect();
        if have_results
            && !candidates.iter().any(|c| c.name == "respond")
            && let Some(respond) = ranked.iter().find(|c| c.name == "respond")
        {
            candidates.push(respond.clone());
        }
        let inputs = json!({"step": step.description, "criteria": step.success_criteria, "candidates": candidates, "excluded_open_breaker": excluded, "failed_before": failed_here});
        let reporting = have_results && registry::is_reporting_step(&step.description);
        if reporting && let Some(respond) = offered.iter().find(|t| t.target == Target::Respond).cloned() {
            self.decide(About {
                kind: DecisionKind::Select,
                step: Some(id),
                inputs,
                output: json!({"tool": respond.name, "target": respond.target, "params": {}, "needs_approval": false}),
                why: "a reporting step: answered from the results of earlier steps".to_owned(),
            })
            .await?;
            if let Some(s) = self.step_mut(id) {
                s.tool = Some(respond.name.clone());
                s.params = Some(json!({}));
                s.status = StepStatus::Selected;
            }
            return Ok(());
        }
        if candidates.is_empty() {
            let why = "no tool can do this step: every fitting tool is denied or its breaker is open".to_owned();
            self.fail_selection(id, inputs, why).await?;
            return Ok(());
        }
        // the tool
        let (tool_name, reason) = if candidates.len() == 1 {
            (candidates[0].name.clone(), "the only candidate".to_owned())
        } else {
            let catalogue: Vec<(String, String)> = candidates
                .iter()
                .filter_map(|c| offered.iter().find(|t| t.name == c.name))
                .map(|t| (t.name.clone(), clip(&t.description, 160)))
                .collect();
            let pairs: Vec<(&str, &str)> = catalogue.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
            let (request, format) =
                shapes::tool_choice_request(&pairs, &format!("{} (goal: {})", step.description, self.goal.goal));
            match llm::structured(self.recorder.as_ref(), request, format).await {
                Ok(answer) => match serde_json::from_value::<ToolChoice>(answer.value) {
                    Ok(choice) => (choice.tool, choice.reason),
                    Err(err) => {
                        self.fail_selection(id, inputs, format!("the tool choice cannot be read: {err}")).await?;
                        return Ok(());
                    }
                },
                Err(err @ llm::Error::InvalidOutput { .. }) => {
                    self.fail_selection(id, inputs, err.to_string()).await?;
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            }
        };
        let Some(tool) = offered.iter().find(|t| t.name == tool_name).cloned() else {
            self.fail_selection(id, inputs, format!("the model chose {tool_name:?}, which is not offered")).await?;
            return Ok(());
        };
        // its arguments
        let params = match self.arguments(&step, &tool).await? {
            Ok(params) => params,
            Err(why) => {
                self.fail_selection(id, inputs, format!("arguments for {}: {why}", tool.name)).await?;
                return Ok(());
            }
        };
        let needs_approval = tool.needs_approval;
        let key = self.step_key(id);
        self.decide(About {
            kind: DecisionKind::Select,
            step: Some(id),
            inputs,
            output: json!({"tool": tool.name, "target": tool.target, "params": params, "needs_approval": needs_approval}),
            why: reason,
        })
        .await?;
        let now = self.env().now();
        if needs_approval {
            self.state.approvals.entry(key.clone()).or_insert(Approval {
                tool: tool.name.clone(),
                params: params.clone(),
                requested_at: now,
                decision: None,
            });
            self.decide(About {
                kind: DecisionKind::Approval,
                step: Some(id),
                inputs: json!({"tool": tool.name, "params": params, "step_key": key}),
                output: json!({"requested": true}),
                why: format!("policy: {} needs an operator's approval", tool.name),
            })
            .await?;
        }
        if let Some(step) = self.step_mut(id) {
            step.tool = Some(tool.name.clone());
            step.params = Some(params);
            step.status = if needs_approval { StepStatus::AwaitingApproval } else { StepStatus::Selected };
        }
        Ok(())
    }

    async fn fail_selection(&mut self, id: &str, inputs: Value, why: String) -> Result<(), Error> {
        self.decide(About {
            kind: DecisionKind::Select,
            step: Some(id),
            inputs,
            output: json!({"tool": null, "error": why}),
            why: why.clone(),
        })
        .await?;
        if let Some(step) = self.step_mut(id) {
            step.status = StepStatus::Failed;
            step.error = Some(why);
        }
        metrics::counter!(model::metrics::GOAL_STEPS_TOTAL, "target" => "none", "outcome" => "failed").increment(1);
        Ok(())
    }

    /// The arguments of `tool` for `step`: none asked for when it takes none; otherwise the model
    /// fills the tool's schema (bounded for the grammar), and the answer is checked against the
    /// tool's own schema.
    async fn arguments(&mut self, step: &StepRun, tool: &ToolEntry) -> Result<Result<Value, String>, Error> {
        let empty = tool.input_schema.get("properties").and_then(Value::as_object).is_none_or(|p| p.is_empty());
        if empty {
            return Ok(Ok(json!({})));
        }
        let mut bounded = registry::bounded_schema(&tool.input_schema);
        // an address is copied, never made up: URL arguments may only be URLs the goal, the step
        // or the context name
        let mut seen = HashSet::new();
        let mut urls = registry::urls_in(&format!("{} {} {}", step.description, self.goal.goal, self.context_text()));
        urls.retain(|u| seen.insert(u.clone()));
        if !urls.is_empty()
            && let Some(props) = bounded.get_mut("properties").and_then(Value::as_object_mut)
        {
            for (name, prop) in props.iter_mut() {
                let key = name.to_lowercase();
                if (key == "url" || key == "uri" || key == "href") && prop.get("type") == Some(&json!("string")) {
                    *prop = json!({"type": "string", "enum": urls});
                }
            }
        }
        let mut user = format!("Goal: {}\nStep: {}\n", self.goal.goal, step.description);
        let context = self.context_text();
        if !context.is_empty() {
            user.push_str(&format!("Context:\n{context}\n"));
        }
        let done = self.done_text(300);
        if !done.is_empty() {
            user.push_str(&format!("Earlier results:\n{done}\n"));
        }
        user.push_str(&format!("Tool: {}: {}\nArguments:", tool.name, clip(&tool.description, 300)));
        let mut request = ChatRequest::new(vec![
            Message::system(
                "Fill in the arguments of the tool call as JSON. Copy exact values (URLs, names, numbers, keys) from the goal, the step, the context and earlier results.",
            ),
            Message::user(user),
        ]);
        request.max_tokens = 300;
        let format = JsonSchemaFormat { name: "arguments".into(), schema: bounded };
        let value = match llm::structured(self.recorder.as_ref(), request, format).await {
            Ok(answer) => answer.value,
            Err(err @ llm::Error::InvalidOutput { .. }) => return Ok(Err(err.to_string())),
            Err(err) => return Err(err.into()),
        };
        match jsonschema::validator_for(&tool.input_schema) {
            Ok(validator) => {
                let problems: Vec<String> =
                    validator.iter_errors(&value).take(3).map(|e| format!("{}: {e}", e.instance_path())).collect();
                if !problems.is_empty() {
                    return Ok(Err(format!("do not match the tool's schema: {}", problems.join("; "))));
                }
            }
            Err(err) => return Ok(Err(format!("the tool's schema is not usable: {err}"))),
        }
        Ok(Ok(value))
    }

    /// Applies answered approvals; ends the goal when a step was rejected.
    async fn take_approvals(&mut self, plan: &PlanRun) -> Result<Option<Outcome>, Error> {
        for step in plan.steps.iter().filter(|s| s.status == StepStatus::AwaitingApproval) {
            let key = StepRun::key(plan.revision, &step.id);
            let Some(decision) = self.state.approvals.get(&key).and_then(|a| a.decision.clone()) else { continue };
            self.decide(About {
                kind: DecisionKind::Approval,
                step: Some(&step.id),
                inputs: json!({"step_key": key, "tool": step.tool}),
                output: json!({"approved": decision.approved, "by": decision.by, "reason": decision.reason}),
                why: if decision.approved {
                    "approved by an operator".into()
                } else {
                    "rejected by an operator".into()
                },
            })
            .await?;
            if decision.approved {
                if let Some(s) = self.step_mut(&step.id) {
                    s.status = StepStatus::Selected;
                }
            } else {
                let why = format!(
                    "step {} ({}) was rejected by {}{}",
                    step.id,
                    step.tool.as_deref().unwrap_or("?"),
                    decision.by,
                    if decision.reason.is_empty() { String::new() } else { format!(": {}", decision.reason) }
                );
                if let Some(s) = self.step_mut(&step.id) {
                    s.status = StepStatus::Failed;
                    s.error = Some(why.clone());
                }
                return Ok(Some(self.end(Outcome::Failed, None, Some(why)).await?));
            }
        }
        Ok(None)
    }

    async fn check_rejection(&mut self, plan: &PlanRun) -> Result<Option<Outcome>, Error> {
        let rejected = plan.steps.iter().find(|s| s.error.as_deref().is_some_and(|e| e.contains("was rejected by")));
        match rejected {
            Some(step) => {
                let why = step.error.clone().unwrap_or_default();
                Ok(Some(self.end(Outcome::Failed, None, Some(why)).await?))
            }
            None => Ok(None),
        }
    }

    /// Puts every selected step on the bus (saved first); `respond` steps are answered here.
    async fn dispatch_selected(&mut self) -> Result<Option<Outcome>, Error> {
        let Some(plan) = self.state.plan().cloned() else { return Ok(None) };
        // selected steps, and dispatched ones whose enqueue a stopped run may not have made
        let todo = plan.steps.iter().filter(|s| {
            s.status == StepStatus::Selected
                || (s.status == StepStatus::Dispatched
                    && s.message_id.is_none()
                    && s.tool.as_deref() != Some("respond"))
        });
        for step in todo {
            let again = step.status == StepStatus::Dispatched;
            if !again && self.state.used.steps >= self.state.budget.max_steps {
                let why = format!(
                    "step budget exhausted: {} steps of {} dispatched",
                    self.state.used.steps, self.state.budget.max_steps
                );
                return Ok(Some(self.end(Outcome::Failed, None, Some(why)).await?));
            }
            let tool_name = step.tool.clone().unwrap_or_default();
            let Some(tool) = self.find_tool(&tool_name) else {
                if let Some(s) = self.step_mut(&step.id) {
                    s.status = StepStatus::Failed;
                    s.error = Some(format!("tool {tool_name} is no longer on offer"));
                }
                continue;
            };
            if !again {
                self.state.used.steps += 1;
            }
            if tool.target == Target::Respond {
                let output = self.respond(&step.description).await?;
                if let Some(s) = self.step_mut(&step.id) {
                    s.status = StepStatus::Dispatched;
                    s.output = Some(output.clone());
                }
                continue;
            }
            let key = format!("goal:{}:{}", self.goal.id, StepRun::key(plan.revision, &step.id));
            // saved before the enqueue: a restart finds the step dispatched and re-enqueues under the
            // same key, which returns the same message
            if let Some(s) = self.step_mut(&step.id) {
                s.status = StepStatus::Dispatched;
            }
            if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
                return Ok(Some(outcome));
            }
            let params = step.params.clone().unwrap_or_else(|| json!({}));
            let id = self
                .env()
                .dispatch(Dispatch {
                    goal: &self.goal,
                    parent: self.message,
                    key,
                    target: &tool.target,
                    params: &params,
                })
                .await?;
            if let Some(s) = self.step_mut(&step.id) {
                s.message_id = Some(id);
            }
        }
        if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
            return Ok(Some(outcome));
        }
        Ok(None)
    }

    fn find_tool(&self, name: &str) -> Option<ToolEntry> {
        if name == "respond" {
            return Some(registry::respond_tool());
        }
        self.made
            .iter()
            .rev()
            .find(|d| d.kind == DecisionKind::Registry)
            .and_then(|d| d.output.get("tools"))
            .and_then(|tools| serde_json::from_value::<Vec<ToolEntry>>(tools.clone()).ok())
            .and_then(|tools| tools.into_iter().find(|t| t.name == name))
    }

    /// The `respond` tool: an answer to the step from the results so far.
    async fn respond(&mut self, step: &str) -> Result<String, Error> {
        let results = self.results_text(800);
        let lines = self.evidence_lines(&format!("{} {step}", self.goal.goal), &results).await;
        let (request, format) = answer_request(&self.goal.goal, Some(step), &results, &lines);
        match llm::structured(self.recorder.as_ref(), request, format).await {
            Ok(answer) => Ok(answer_text(&answer.value)),
            Err(err @ llm::Error::InvalidOutput { .. }) => Ok(format!("(no answer: {err})")),
            Err(err) => Err(err.into()),
        }
    }

    /// Waits for the dispatched steps, then judges each, in the plan's order.
    async fn wait_and_evaluate(&mut self) -> Result<Option<Outcome>, Error> {
        let Some(plan) = self.state.plan().cloned() else { return Ok(None) };
        let dispatched: Vec<StepRun> =
            plan.steps.iter().filter(|s| s.status == StepStatus::Dispatched).cloned().collect();
        if dispatched.is_empty() {
            return Ok(None);
        }
        let mut outcomes: HashMap<String, StepOutcome> = HashMap::new();
        let mut interval = Duration::from_millis(20);
        let mut last_check = std::time::Instant::now();
        loop {
            for step in &dispatched {
                if outcomes.contains_key(&step.id) {
                    continue;
                }
                match &step.message_id {
                    Some(id) => {
                        if let Some(outcome) = self.env().poll(id).await? {
                            outcomes.insert(step.id.clone(), outcome);
                        }
                    }
                    // answered here (`respond`)
                    None => {
                        outcomes.insert(
                            step.id.clone(),
                            StepOutcome {
                                ok: true,
                                result: step.output.clone().map(Value::String),
                                result_url: None,
                                error: None,
                            },
                        );
                    }
                }
            }
            if outcomes.len() == dispatched.len() {
                break;
            }
            if let Some(why) = self.over_budget() {
                return Ok(Some(
                    self.end(Outcome::Failed, None, Some(format!("{why} while steps were running"))).await?,
                ));
            }
            if last_check.elapsed() >= Duration::from_secs(2) {
                last_check = std::time::Instant::now();
                if self.env().load(&self.goal.id).await?.status == GoalStatus::Cancelled {
                    return Ok(Some(Outcome::Cancelled));
                }
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(self.orch.max_poll);
        }
        for step in &dispatched {
            let Some(outcome) = outcomes.remove(&step.id) else { continue };
            self.evaluate(step, outcome).await?;
        }
        if let Flow::End(outcome) = self.save(GoalStatus::Running, None, None).await? {
            return Ok(Some(outcome));
        }
        Ok(None)
    }

    /// Judges one finished step: the call must have succeeded with a non-empty result; the model's
    /// verdict on the success criteria is recorded, and decides when the policy says so.
    async fn evaluate(&mut self, step: &StepRun, outcome: StepOutcome) -> Result<(), Error> {
        let text = outcome.result.as_ref().map(result_text).map(|t| without_code_blocks(&t)).unwrap_or_default();
        let output = clip(&text, MAX_OUTPUT_CHARS);
        let mut checks = Vec::new();
        let call_ok = outcome.ok;
        checks.push(json!({"check": "the call succeeded", "passed": call_ok}));
        let non_empty = !text.trim().is_empty() || outcome.result_url.is_some();
        checks.push(json!({"check": "the result is not empty", "passed": non_empty}));
        let http_error = http_error_status(&text);
        checks.push(json!({"check": "the result reports no HTTP error status", "passed": http_error.is_none()}));
        let mut verdict = Value::Null;
        let mut judged_ok = true;
        if call_ok && non_empty {
            let (request, format) = shapes::verdict_request(&step.success_criteria, &clip(&text, 1_500));
            match llm::structured(self.recorder.as_ref(), request, format).await {
                Ok(answer) => {
                    if let Ok(v) = serde_json::from_value::<Verdict>(answer.value.clone()) {
                        judged_ok = v.ok;
                    }
                    verdict = answer.value;
                }
                Err(err @ llm::Error::InvalidOutput { .. }) => {
                    judged_ok = false;
                    verdict = json!({"error": err.to_string()});
                }
                Err(err) => return Err(err.into()),
            }
        }
        let required = self.orch.policy.judge == JudgeMode::Required;
        let passed = call_ok && non_empty && http_error.is_none() && (judged_ok || !required);
        let error = if passed {
            None
        } else if !call_ok {
            Some(outcome.error.clone().unwrap_or_else(|| "the call failed".into()))
        } else if !non_empty {
            Some("the call returned nothing".into())
        } else if let Some(status) = http_error {
            Some(format!("the result reports HTTP status {status}"))
        } else {
            Some(format!(
                "the result does not meet the criteria: {}",
                verdict.get("reason").and_then(Value::as_str).unwrap_or("the judge said no")
            ))
        };
        let key = self.step_key(&step.id);
        let why = match &error {
            None if judged_ok => "the call succeeded and the judge agrees the criteria are met".to_owned(),
            None => "the call succeeded; the judge disagreed, but its verdict is advisory".to_owned(),
            Some(e) => e.clone(),
        };
        self.decide(About {
            kind: DecisionKind::Evaluate,
            step: Some(&step.id),
            inputs: json!({"key": key, "message_id": step.message_id, "tool": step.tool, "criteria": step.success_criteria, "outcome": outcome}),
            output: json!({"passed": passed, "checks": checks, "verdict": verdict, "judge": if required { "required" } else { "advisory" }}),
            why,
        })
        .await?;
        let target = match step.tool.as_deref() {
            Some("respond") => "respond",
            Some(name) if name.contains('.') => "mcp",
            _ => "role",
        };
        metrics::counter!(model::metrics::GOAL_STEPS_TOTAL, "target" => target, "outcome" => if passed { "succeeded" } else { "failed" })
            .increment(1);
        if let Some(s) = self.step_mut(&step.id) {
            s.status = if passed { StepStatus::Succeeded } else { StepStatus::Failed };
            s.output = Some(output);
            s.result_url = outcome.result_url;
            s.error = error;
        }
        Ok(())
    }

    /// The final answer from the results.
    async fn answer(&mut self) -> Result<Outcome, Error> {
        let results = self.results_text(800);
        let lines = self.evidence_lines(&self.goal.goal, &results).await;
        let (request, format) = answer_request(&self.goal.goal, None, &results, &lines);
        let answer = match llm::structured(self.recorder.as_ref(), request, format).await {
            Ok(answer) => answer_text(&answer.value),
            Err(err @ llm::Error::InvalidOutput { .. }) => {
                // the steps succeeded: their results are the answer
                tracing::warn!(error = %err, "the model's answer was invalid; the step results stand in");
                self.done_text(300)
            }
            Err(err) => return Err(err.into()),
        };
        self.decide(About {
            kind: DecisionKind::Answer,
            step: None,
            inputs: json!({"results": self.done_text(600)}),
            output: json!({"answer": answer}),
            why: "every step of the plan succeeded".into(),
        })
        .await?;
        self.end(Outcome::Succeeded, Some(answer), None).await
    }
}

/// Repairs what a small model gets wrong in a plan's structure: a repeated id gets the next free
/// one, and a dependency on itself, on a later step or on a step that does not exist becomes a
/// dependency on the step before it (plans are written in order). Returns the fixes made.
pub fn normalize_plan(mut plan: Plan) -> (Plan, Vec<String>) {
    let mut fixes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for index in 0..plan.steps.len() {
        if seen.contains(&plan.steps[index].id)
            && let Some(free) = shapes::STEP_IDS.iter().find(|id| !plan.steps.iter().any(|s| s.id == **id))
        {
            fixes.push(format!("the second {} became {free}", plan.steps[index].id));
            plan.steps[index].id = (*free).to_owned();
        }
        let id = plan.steps[index].id.clone();
        let previous = seen.last().cloned();
        let mut depends: Vec<String> = Vec::new();
        for dep in std::mem::take(&mut plan.steps[index].depends_on) {
            if seen.contains(&dep) {
                if !depends.contains(&dep) {
                    depends.push(dep);
                }
            } else {
                fixes.push(format!("{id} depended on {dep}, which does not come before it"));
                if let Some(previous) = &previous
                    && !depends.contains(previous)
                {
                    depends.push(previous.clone());
                }
            }
        }
        plan.steps[index].depends_on = depends;
        seen.push(id);
    }
    (plan, fixes)
}

/// A result line `Label: value` whose label names what the goal asks for (`Page Title: …` for
/// "report its title") gains 0.25 per label word found in the goal, up to 0.5.
fn label_bonus(goal: &str, line: &str) -> f64 {
    let Some((label, _)) = line.split_once(':') else { return 0.0 };
    if label.len() > 40 {
        return 0.0;
    }
    let goal = goal.to_lowercase();
    let goal_words: HashSet<&str> = goal.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() >= 3).collect();
    let hits = label
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && goal_words.contains(w))
        .count();
    (0.25 * hits as f64).min(0.5)
}

/// The one line whose label names more of what is asked than any other line's, if there is one.
fn labelled_answer(goal: &str, lines: &[String]) -> Option<usize> {
    let bonuses: Vec<f64> = lines.iter().map(|line| label_bonus(goal, line)).collect();
    let best = bonuses.iter().copied().fold(0.0, f64::max);
    (best > 0.0 && bonuses.iter().filter(|b| **b == best).count() == 1)
        .then(|| bonuses.iter().position(|b| *b == best))
        .flatten()
}

/// Words too common to tell whether a step is about the goal.
const COMMON_WORDS: [&str; 16] = [
    "with", "that", "this", "from", "then", "than", "into", "onto", "when", "what", "which", "there", "their", "them",
    "step", "about",
];

/// Why `plan` is not about the goal, if it is not: fewer than half of its steps share a word (of
/// four letters or more, common words aside) with the goal. Small models copy the retrieved
/// context into the plan instead of planning the goal. (The failure of a replan is not counted:
/// its words, like "failed", would match anything.)
fn off_goal(goal: &str, plan: &Plan) -> Option<String> {
    fn words(text: &str) -> HashSet<String> {
        text.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4 && !COMMON_WORDS.contains(w))
            .map(str::to_owned)
            .collect()
    }
    let wanted = words(goal);
    if wanted.is_empty() || plan.steps.is_empty() {
        return None;
    }
    let related = plan
        .steps
        .iter()
        .filter(|s| !words(&format!("{} {}", s.description, s.success_criteria)).is_disjoint(&wanted))
        .count();
    (related * 2 < plan.steps.len()).then(|| {
        format!(
            "only {related} of {} steps are about the goal; every step must work towards: {}",
            plan.steps.len(),
            clip(goal, 200)
        )
    })
}

/// The request for an answer to the goal (or to one `step`) from `results`.
fn answer_request(goal: &str, step: Option<&str>, results: &str, lines: &[String]) -> (ChatRequest, JsonSchemaFormat) {
    let ask = match step {
        Some(step) => format!("Results:\n{results}\n\nGoal: {goal}\nTask: {step}\nDo the task using the results."),
        None => format!("Results:\n{results}\n\nGoal: {goal}\nAnswer the goal in one sentence using the results."),
    };
    let mut request = ChatRequest::new(vec![
        Message::system(
            "You answer from tool results. First copy the one line of the results that answers the goal as evidence, then answer with the exact values (titles, names, numbers) it holds.",
        ),
        Message::user(ask),
    ]);
    request.max_tokens = 200;
    // the evidence is one of the results' lines, word for word: the answer is grounded in them
    let evidence = if lines.is_empty() {
        json!({"type": "string", "maxLength": 200})
    } else {
        json!({"type": "string", "enum": lines})
    };
    let format = JsonSchemaFormat {
        name: "answer".into(),
        schema: json!({"type": "object", "properties": {"evidence": evidence, "answer": {"type": "string", "minLength": 1, "maxLength": 200}}, "required": ["evidence", "answer"], "additionalProperties": false}),
    };
    (request, format)
}

/// The text of an answer: the model's words, and the line of the results it rests on.
fn answer_text(value: &Value) -> String {
    let answer = value.get("answer").and_then(Value::as_str).unwrap_or_default().trim();
    let evidence = value.get("evidence").and_then(Value::as_str).unwrap_or_default().trim();
    if evidence.is_empty() || answer.contains(evidence) {
        answer.to_owned()
    } else {
        format!("{answer} (evidence: {evidence})")
    }
}

/// The first HTTP error status (400–599) a result reports (`HTTP status: 404 Not Found`).
fn http_error_status(text: &str) -> Option<u16> {
    text.match_indices("HTTP status: ").find_map(|(at, label)| {
        let rest = &text[at + label.len()..];
        let code: u16 = rest.get(..3)?.parse().ok()?;
        (400..600).contains(&code).then_some(code)
    })
}

/// `text` without fenced code blocks (a tool's echo of the code it ran tells the model nothing).
fn without_code_blocks(text: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside && !line.trim_start().starts_with("### Ran ") {
            out.push(line);
        }
    }
    out.join("\n")
}

/// A step result as text for the model: MCP content text, a role's answer, a command's output.
pub fn result_text(result: &Value) -> String {
    if let Some(text) = result.as_str() {
        return text.to_owned();
    }
    if let Some(content) = result.pointer("/result/content").and_then(Value::as_array) {
        let texts: Vec<&str> = content.iter().filter_map(|c| c.get("text").and_then(Value::as_str)).collect();
        if !texts.is_empty() {
            return texts.join("\n");
        }
    }
    if let Some(answer) = result.get("answer").and_then(Value::as_str) {
        let sources: Vec<&str> = result
            .get("citations")
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(|c| c.get("source").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        return if sources.is_empty() { answer.to_owned() } else { format!("{answer} [{}]", sources.join(", ")) };
    }
    if let Some(stdout) = result.get("stdout").and_then(Value::as_str) {
        return stdout.to_owned();
    }
    if let Some(path) = result.get("path").and_then(Value::as_str) {
        return format!("code written to {path} and checked");
    }
    result.to_string()
}

/// Runs `goal` messages (`service=agent, role=orchestrator`).
pub struct OrchestratorHandler {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorHandler {
    /// A handler over `orchestrator`.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

impl worker::Handler for OrchestratorHandler {
    fn handle(
        &self,
        message: model::Message,
    ) -> BoxFuture<'static, Result<worker::HandlerOutput, worker::HandlerError>> {
        let orchestrator = self.orchestrator.clone();
        Box::pin(async move {
            let Some(goal_id) = message.payload.get("goal_id").and_then(Value::as_str).map(str::to_owned) else {
                return Err(worker::HandlerError::new(
                    model::ErrorKind::InvalidInput,
                    "goal payload must be {\"goal_id\": \"…\"}",
                ));
            };
            match orchestrator.run(&goal_id, Some(message.id)).await {
                Ok((outcome, decisions)) => {
                    let detail = json!({"goal_id": goal_id, "status": outcome.status(), "decisions": decisions.len()});
                    Ok(worker::HandlerOutput { result: Some(detail.clone()), result_url: None, detail: Some(detail) })
                }
                Err(err) => {
                    tracing::warn!(goal = %goal_id, error = %err, "goal run failed");
                    Err(worker::HandlerError::new(err.kind(), err.to_string()).with_detail(json!({"goal_id": goal_id})))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm::shapes::PlanStep;

    fn step(id: &str, deps: &[&str]) -> PlanStep {
        PlanStep {
            id: id.into(),
            description: format!("do {id}"),
            success_criteria: "done".into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn normalize_plan_turns_bad_dependencies_into_order() {
        let plan = Plan { steps: vec![step("s1", &["s1"]), step("s2", &["s2"]), step("s3", &["s1", "s4"])] };
        let (plan, fixes) = normalize_plan(plan);
        let deps: Vec<Vec<String>> = plan.steps.iter().map(|s| s.depends_on.clone()).collect();
        assert_eq!(deps, vec![vec![], vec!["s1".to_owned()], vec!["s1".to_owned(), "s2".to_owned()]]);
        assert_eq!(fixes.len(), 3, "{fixes:?}");
        assert!(plan.check().is_ok());
        let twice = Plan { steps: vec![step("s1", &[]), step("s1", &["s1"])] };
        let (twice, fixes) = normalize_plan(twice);
        assert_eq!(twice.steps[1].id, "s2");
        assert_eq!(twice.steps[1].depends_on, ["s1"]);
        assert!(fixes[0].contains("became s2"), "{fixes:?}");
        let fine = Plan { steps: vec![step("s1", &[]), step("s2", &["s1"])] };
        assert!(normalize_plan(fine).1.is_empty());
    }

    #[test]
    fn result_labels_that_name_what_is_asked_weigh_in() {
        let goal = "Open the page and report its title";
        assert_eq!(label_bonus(goal, "Page Title: COGO example page"), 0.5);
        assert_eq!(label_bonus(goal, "Page URL: x"), 0.25);
        assert_eq!(label_bonus(goal, "no label here"), 0.0);
        assert_eq!(label_bonus(goal, "Console: 1 errors"), 0.0);
        let output = "### Page\n- Page URL: http://127.0.0.1:38311/\n- Page Title: COGO example page\n- Console: 1 errors, 0 warnings\n### Snapshot\n- [Snapshot](browser/page-2026-12-06T03-03-55-850Z.yml)";
        let lines: Vec<String> = output.lines().map(|l| l.trim().trim_start_matches("- ").trim().to_owned()).collect();
        let query = registry::drop_urls("Open the page http://127.0.0.1:38311/ and report its title");
        assert_eq!(labelled_answer(&query, &lines).map(|i| lines[i].as_str()), Some("Page Title: COGO example page"));
    }

    #[test]
    fn plans_that_copy_the_context_are_off_goal() {
        let plan = |texts: &[&str]| Plan {
            steps: texts
                .iter()
                .enumerate()
                .map(|(i, t)| shapes::PlanStep {
                    id: format!("s{}", i + 1),
                    description: (*t).to_owned(),
                    success_criteria: "1".to_owned(),
                    depends_on: Vec::new(),
                })
                .collect(),
        };
        let goal = "Report the operating system name with the uname command";
        let copied = plan(&[
            "A failed message is retried with exponential backoff and full jitter.",
            "A failed circuit breaker is retried with exponential backoff.",
        ]);
        let why = off_goal(goal, &copied).expect("off goal");
        assert!(why.contains("only 0 of 2 steps"), "{why}");
        assert_eq!(off_goal(goal, &plan(&["Run uname to get the system name", "Report it"])), None);
        let page = "Open the page and report its title";
        assert!(off_goal(page, &plan(&["Take a screenshot instead"])).is_some());
        assert_eq!(off_goal(page, &plan(&["Open the page", "Take a screenshot", "Report the title"])), None);
    }

    #[test]
    fn result_text_reads_each_kind_of_result() {
        let mcp = json!({"ok": true, "result": {"content": [{"type": "text", "text": "Page Title: X"}]}});
        assert_eq!(result_text(&mcp), "Page Title: X");
        let research = json!({"answer": "Retries back off.", "citations": [{"source": "docs/retry.md"}]});
        assert_eq!(result_text(&research), "Retries back off. [docs/retry.md]");
        assert_eq!(result_text(&json!({"stdout": "hi\n", "exit_code": 0})), "hi\n");
        assert_eq!(result_text(&json!("plain")), "plain");
    }

    #[test]
    fn result_checks_see_http_errors_and_drop_code() {
        assert_eq!(http_error_status("- Page URL: x\n- HTTP status: 404 Not Found"), Some(404));
        assert_eq!(http_error_status("- HTTP status: 200 OK"), None);
        assert_eq!(http_error_status("no status"), None);
        let text = "### Ran Playwright code\n```js\nawait page.goto('x');\n```\n### Page\n- Page Title: T";
        assert_eq!(without_code_blocks(text), "### Page\n- Page Title: T");
        assert_eq!(
            registry::urls_in("Open http://127.0.0.1:8/ and (https://a.b/c)."),
            ["http://127.0.0.1:8/", "https://a.b/c"]
        );
    }
}
