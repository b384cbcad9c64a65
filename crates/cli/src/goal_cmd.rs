//! `cogo run`, `cogo goals …`, `cogo replay` and `cogo eval goals`: goals from the terminal.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use agent::{Decision, DecisionKind, DecisionLog};
use model::config::agent::Budget;
use model::goal::{Goal, GoalStatus};

use crate::ExitWith;
use crate::args::{EvalGoalsArgs, Global, GoalsCommand, RunArgs};
use crate::node::{DEFAULT_LEASE, NodeOptions, ROLES, start_node, stop};
use crate::settings::{load_configs_or_exit, open_store};

/// Exit code of `cogo run` when the goal waits for an approval.
pub const EXIT_AWAITING_APPROVAL: u8 = 4;

fn agent_error(err: agent::Error) -> anyhow::Error {
    match err {
        agent::Error::Invalid(why) => ExitWith(2, format!("error: {why}")).into(),
        agent::Error::Conflict(why) => ExitWith(1, format!("error: {why}")).into(),
        agent::Error::Store(store::Error::GoalNotFound { id }) => {
            ExitWith(1, format!("error: goal {id} not found (cogo goals list shows the goals)")).into()
        }
        other => anyhow::Error::new(other),
    }
}

/// One line about a decision, for the story of a goal.
pub fn describe(decision: &Decision) -> String {
    let step = decision.step.as_deref().unwrap_or("");
    let output = &decision.output;
    let text = match decision.kind {
        DecisionKind::Registry => decision.why.clone(),
        DecisionKind::Plan | DecisionKind::Replan => match output.get("steps").and_then(Value::as_array) {
            Some(steps) => steps
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.get("id").and_then(Value::as_str).unwrap_or("?"),
                        s.get("description").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(" | "),
            None => decision.why.clone(),
        },
        DecisionKind::Select => match output.get("tool").and_then(Value::as_str) {
            Some(tool) => format!("{step} → {tool} {}", output.get("params").cloned().unwrap_or(Value::Null)),
            None => format!("{step} → no tool: {}", decision.why),
        },
        DecisionKind::Approval => match output.get("approved").and_then(Value::as_bool) {
            Some(true) => format!("{step} approved"),
            Some(false) => format!("{step} rejected"),
            None => format!("{step} waits for an operator: {}", decision.why),
        },
        DecisionKind::Evaluate => format!(
            "{step} {}: {}",
            if output.get("passed").and_then(Value::as_bool) == Some(true) { "passed" } else { "failed" },
            decision.why
        ),
        DecisionKind::Answer => output.get("answer").and_then(Value::as_str).unwrap_or("").to_owned(),
        DecisionKind::Finish => decision.why.clone(),
    };
    let model =
        decision.llm.last().map(|c| format!("  [{} {}]", c.model, &c.prompt_hash[..12.min(c.prompt_hash.len())]));
    format!("{:<9} {}{}", decision.kind.as_str(), text, model.unwrap_or_default())
}

fn budget(configured: Budget, steps: Option<u32>, replans: Option<u32>, seconds: Option<u64>) -> Budget {
    Budget {
        max_steps: steps.unwrap_or(configured.max_steps),
        max_replans: replans.unwrap_or(configured.max_replans),
        max_seconds: seconds.unwrap_or(configured.max_seconds),
        max_tokens: configured.max_tokens,
    }
}

/// Follows `goal` until it ends or waits for an approval, printing its decisions and step events.
async fn follow(
    store: &store::Store,
    log: &DecisionLog,
    goal: &Goal,
    print: bool,
    limit: Duration,
) -> anyhow::Result<Goal> {
    let started = Instant::now();
    let mut shown = 0u32;
    let mut after = None;
    loop {
        let current = store.goal(&goal.id).await?;
        if print {
            let mut out = std::io::stdout().lock();
            let fresh: Vec<Decision> =
                log.read(&goal.trace_id).await.map_err(agent_error)?.into_iter().filter(|d| d.n > shown).collect();
            for decision in &fresh {
                writeln!(out, "  {:>5.1}s  {}", started.elapsed().as_secs_f64(), describe(decision))?;
                shown = decision.n;
            }
            let filter = store::EventFilter { trace_id: Some(goal.trace_id.clone()), ..Default::default() };
            let page = store.events(&filter, &store::PageRequest { after: after.clone(), limit: 200 }).await?;
            if page.next.is_some() {
                after = page.next.clone();
            }
            for event in page.items.iter().filter(|e| !e.event_type.starts_with("goal_")) {
                let tool = event.payload.get("tool").and_then(Value::as_str).unwrap_or("");
                let reason = event.reason.as_deref().unwrap_or("");
                writeln!(
                    out,
                    "  {:>5.1}s  event     {} {tool} {reason}",
                    started.elapsed().as_secs_f64(),
                    event.event_type
                )?;
            }
            out.flush()?;
        }
        if current.status.is_final() || current.status == GoalStatus::AwaitingApproval {
            return Ok(current);
        }
        if started.elapsed() > limit {
            return Err(ExitWith(
                1,
                format!(
                    "error: goal {} did not end within {} s (it goes on: cogo goals show {})",
                    goal.id,
                    limit.as_secs(),
                    goal.id
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `cogo run GOAL`.
pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<()> {
    let configs = load_configs_or_exit(&global.config_dir)?;
    let budget = budget(configs.agent.budget, args.max_steps, args.max_replans, args.max_seconds);
    // the model must load, or no orchestrator would take the goal
    let llm = crate::llm_cmd::client(global, &args.llm).await?;
    let examples = if args.examples {
        let launcher = crate::mcp_cmd::examples_launcher(global, &args.example_ports)?;
        let servers = launcher
            .start_all(crate::mcp_cmd::example_ports(&args.example_ports))
            .await
            .map_err(|e| ExitWith(1, format!("error: example MCP servers: {e}")))?;
        Some(servers)
    } else {
        None
    };
    let toolsets = examples.as_ref().map(|s| s.toolsets.clone()).unwrap_or_default();
    let roles: Vec<&crate::node::Role> = ROLES.iter().filter(|r| r.name != "noop").collect();
    let options = NodeOptions {
        concurrency: 4,
        shards: &[],
        llm: Some(&args.llm),
        llm_client: Some(llm),
        lease: DEFAULT_LEASE,
        toolsets,
        embedder: true,
    };
    let node = start_node(global, "cogo-run", &roles, options).await?;
    let goal = match agent::submit(&node.store, &args.tenant, &args.goal, budget).await {
        Ok(goal) => goal,
        Err(err) => {
            stop(node).await;
            return Err(agent_error(err));
        }
    };
    if !args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "goal {}  trace {}", goal.id, goal.trace_id)?;
        if let Some(servers) = &examples {
            writeln!(out, "  MCP       {}", crate::mcp_cmd::describe_examples(servers))?;
        }
    }
    let log = DecisionLog::new(node.artifacts.clone());
    let limit = Duration::from_secs(budget.max_seconds + 60);
    let followed = follow(&node.store, &log, &goal, !args.json, limit).await;
    stop(node).await;
    drop(examples);
    let done = followed?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&done)?)?;
    } else {
        match done.status {
            GoalStatus::Succeeded => writeln!(out, "succeeded: {}", done.answer.as_deref().unwrap_or(""))?,
            GoalStatus::AwaitingApproval => {
                let state = agent::GoalState::from_value(&done.state, budget).unwrap_or_default();
                for (key, approval) in state.approvals.iter().filter(|(_, a)| a.decision.is_none()) {
                    writeln!(
                        out,
                        "waiting for approval of {} {}: cogo goals approve {} {key}  (or reject)",
                        approval.tool, approval.params, done.id
                    )?;
                }
            }
            status => writeln!(out, "{status}: {}", done.error.as_deref().unwrap_or(""))?,
        }
        writeln!(out, "story: cogo trace {}", done.trace_id)?;
    }
    drop(out);
    match done.status {
        GoalStatus::Succeeded => Ok(()),
        GoalStatus::AwaitingApproval => Err(ExitWith(EXIT_AWAITING_APPROVAL, String::new()).into()),
        _ => Err(ExitWith(1, String::new()).into()),
    }
}

/// `cogo goals …`.
pub async fn goals(global: &Global, command: GoalsCommand) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    let result = goals_on(&store, command).await;
    store.close().await;
    result
}

async fn goals_on(store: &store::Store, command: GoalsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        GoalsCommand::List { status, limit, json } => {
            let statuses = match status {
                Some(name) => vec![GoalStatus::parse(&name).ok_or_else(|| {
                    let known: Vec<&str> = GoalStatus::ALL.iter().map(|s| s.as_str()).collect();
                    ExitWith(
                        2,
                        format!("error: --status {name:?} is not a goal status; use one of {}", known.join(", ")),
                    )
                })?],
                None => Vec::new(),
            };
            let goals = store.goals(&store::goals::GoalFilter { statuses, limit, ..Default::default() }).await?;
            for goal in &goals {
                if json {
                    writeln!(out, "{}", serde_json::to_string(goal)?)?;
                } else {
                    writeln!(
                        out,
                        "{}  {:<17} {}  {}",
                        goal.id,
                        goal.status.as_str(),
                        goal.created_at.format("%Y-%m-%d %H:%M:%S"),
                        goal.goal
                    )?;
                }
            }
        }
        GoalsCommand::Show { id, json } => {
            let goal = store.goal(&id).await.map_err(|e| agent_error(e.into()))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&goal)?)?;
                return Ok(());
            }
            writeln!(out, "goal {}  {}  trace {}", goal.id, goal.status, goal.trace_id)?;
            writeln!(out, "  {}", goal.goal)?;
            let state = agent::GoalState::from_value(&goal.state, Budget::default()).unwrap_or_default();
            writeln!(
                out,
                "  used: {} of {} steps, {} of {} replans, {} tokens",
                state.used.steps,
                state.budget.max_steps,
                state.used.replans,
                state.budget.max_replans,
                state.used.tokens
            )?;
            for plan in &state.plans {
                writeln!(out, "  plan r{}", plan.revision)?;
                for step in &plan.steps {
                    writeln!(
                        out,
                        "    {} {:?} {} → {} {}",
                        step.id,
                        step.status,
                        step.description,
                        step.tool.as_deref().unwrap_or("-"),
                        step.error.as_deref().unwrap_or("")
                    )?;
                }
            }
            for (key, approval) in &state.approvals {
                let answer = match &approval.decision {
                    Some(d) => format!("{} by {}", if d.approved { "approved" } else { "rejected" }, d.by),
                    None => "waiting".into(),
                };
                writeln!(out, "  approval {key}: {} {} — {answer}", approval.tool, approval.params)?;
            }
            if let Some(answer) = &goal.answer {
                writeln!(out, "  answer: {answer}")?;
            }
            if let Some(error) = &goal.error {
                writeln!(out, "  error: {error}")?;
            }
        }
        GoalsCommand::Approve { id, step, reason } => decide_on(store, &id, &step, true, &reason, &mut out).await?,
        GoalsCommand::Reject { id, step, reason } => decide_on(store, &id, &step, false, &reason, &mut out).await?,
        GoalsCommand::Cancel { id } => {
            let goal = agent::approvals::cancel(store, &id, "cli").await.map_err(agent_error)?;
            writeln!(out, "goal {} {}", goal.id, goal.status)?;
        }
    }
    Ok(())
}

async fn decide_on(
    store: &store::Store,
    id: &str,
    step: &str,
    approved: bool,
    reason: &str,
    out: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    let goal = agent::decide(store, id, step, approved, "cli", reason).await.map_err(agent_error)?;
    writeln!(
        out,
        "step {step} of goal {} {}; the goal is {}",
        goal.id,
        if approved { "approved" } else { "rejected" },
        goal.status
    )?;
    Ok(())
}

/// `cogo replay TRACE_ID`.
pub async fn replay(global: &Global, trace_id: &str, json: bool) -> anyhow::Result<()> {
    if !model::trace::is_valid_trace_id(trace_id) {
        return Err(ExitWith(2, format!("error: {trace_id:?} is not a trace id (32 lower-case hex digits)")).into());
    }
    let configs = load_configs_or_exit(&global.config_dir)?;
    let store = open_store(global).await?;
    let found = store
        .goals(&store::goals::GoalFilter { trace_id: Some(trace_id.to_owned()), limit: 1, ..Default::default() })
        .await;
    store.close().await;
    let goal = found?.into_iter().next().ok_or_else(|| ExitWith(1, format!("error: no goal has trace {trace_id}")))?;
    if !goal.status.is_final() {
        return Err(
            ExitWith(1, format!("error: goal {} is {}: replay a goal that has ended", goal.id, goal.status)).into()
        );
    }
    let decisions =
        DecisionLog::new(crate::settings::artifacts_for_reading(global)?).read(trace_id).await.map_err(agent_error)?;
    let embedder = crate::node::load_embedder(global);
    let report =
        agent::replay::replay(&goal, decisions, Arc::new(configs.agent), embedder).await.map_err(agent_error)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else if report.identical {
        writeln!(
            out,
            "replayed {} decisions of trace {trace_id}: identical (goal {})",
            report.replayed, report.replayed_status
        )?;
    } else {
        writeln!(
            out,
            "replay of trace {trace_id} differs: {} (recorded {} decisions, {}; replayed {}, {})",
            report.first_difference.as_deref().unwrap_or("the outcome differs"),
            report.recorded,
            report.recorded_status,
            report.replayed,
            report.replayed_status
        )?;
    }
    drop(out);
    if report.identical { Ok(()) } else { Err(ExitWith(1, String::new()).into()) }
}

/// The goal suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    /// Documents indexed before the goals run (relative to the suite file).
    #[serde(default)]
    documents: Option<String>,
    goals: Vec<SuiteGoal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteGoal {
    id: String,
    /// The goal; `{pages}` becomes the example page server's address.
    goal: String,
    expect: Expect,
    /// Approve every step that asks (otherwise reject).
    #[serde(default = "yes")]
    approve: bool,
    #[serde(default)]
    max_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `succeeded` or `failed`.
    status: GoalStatus,
    /// The answer holds one of these (case-insensitive), when succeeded.
    #[serde(default)]
    answer_contains: Vec<String>,
    /// A step used one of these tools.
    #[serde(default)]
    tools: Vec<String>,
}

/// One goal's row.
#[derive(Debug, Serialize)]
struct Row {
    id: String,
    passed: bool,
    status: GoalStatus,
    expected: GoalStatus,
    steps: u32,
    replans: u32,
    tokens: u64,
    seconds: f64,
    tools: Vec<String>,
    answer: Option<String>,
    error: Option<String>,
    why: Option<String>,
    trace_id: String,
}

/// `cogo eval goals`.
pub async fn eval_goals(global: &Global, args: EvalGoalsArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.suite)
        .map_err(|e| ExitWith(2, format!("error: reading the goal suite {}: {e}", args.suite.display())))?;
    let suite: Suite = serde_json::from_str(&text)
        .map_err(|e| ExitWith(2, format!("error: {} is not a goal suite: {e}", args.suite.display())))?;
    let configs = load_configs_or_exit(&global.config_dir)?;
    let llm = crate::llm_cmd::client(global, &args.llm).await?;
    let scratch = tempfile::tempdir().context("making a scratch data dir")?;
    let mut scoped = global.clone();
    scoped.data_dir = scratch.path().to_path_buf();
    scoped.database_url = None;
    scoped.artifacts_url = None;
    if scoped.models_dir.is_none() {
        scoped.models_dir = Some(crate::knowledge_cmd::models_dir(global));
    }
    let ports = crate::args::ExamplesArgs {
        mcp_servers: None,
        browser_port: free_port()?,
        figma_port: free_port()?,
        pages_port: free_port()?,
    };
    let launcher = crate::mcp_cmd::examples_launcher(&scoped, &ports)?;
    let servers = launcher
        .start_all(crate::mcp_cmd::example_ports(&ports))
        .await
        .map_err(|e| ExitWith(1, format!("error: example MCP servers: {e}")))?;
    let roles: Vec<&crate::node::Role> = ROLES.iter().filter(|r| r.name != "noop").collect();
    let options = NodeOptions {
        concurrency: 4,
        shards: &[],
        llm: Some(&args.llm),
        llm_client: Some(llm),
        lease: DEFAULT_LEASE,
        toolsets: servers.toolsets.clone(),
        embedder: true,
    };
    let node = start_node(&scoped, "cogo-eval", &roles, options).await?;
    let outcome = run_suite(&node, &suite, &args, &configs.agent.budget, &servers.pages_url).await;
    stop(node).await;
    drop(servers);
    let rows = outcome?;
    let passed = rows.iter().filter(|r| r.passed).count();
    let success_rate = if rows.is_empty() { 0.0 } else { passed as f64 / rows.len() as f64 };
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = json!({
            "suite": args.suite.display().to_string(),
            "model": crate::llm_cmd::local_model_path(global, &args.llm).file_name().map(|n| n.to_string_lossy().into_owned()),
            "goals": rows.len(),
            "passed": passed,
            "success_rate": success_rate,
            "mean_seconds": rows.iter().map(|r| r.seconds).sum::<f64>() / rows.len().max(1) as f64,
            "rows": rows,
        });
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "{:<26} {:<6} {:<11} {:>5} {:>7} {:>7}  tools",
            "goal", "pass", "status", "steps", "replans", "seconds"
        )?;
        for row in &rows {
            writeln!(
                out,
                "{:<26} {:<6} {:<11} {:>5} {:>7} {:>7.1}  {}{}",
                row.id,
                if row.passed { "yes" } else { "NO" },
                row.status.as_str(),
                row.steps,
                row.replans,
                row.seconds,
                row.tools.join(","),
                row.why.as_deref().map(|w| format!("  ({w})")).unwrap_or_default()
            )?;
        }
        writeln!(out, "success rate {:.0}% ({passed}/{})", success_rate * 100.0, rows.len())?;
    }
    Ok(())
}

async fn run_suite(
    node: &crate::node::Node,
    suite: &Suite,
    args: &EvalGoalsArgs,
    configured: &Budget,
    pages_url: &str,
) -> anyhow::Result<Vec<Row>> {
    if let (Some(documents), Some(embedder)) = (&suite.documents, &node.embedder) {
        let base = args.suite.parent().unwrap_or(Path::new("."));
        let indexer = knowledge::Indexer::new(node.store.clone(), embedder.clone());
        indexer.prepare(false).await.map_err(|e| anyhow::anyhow!("preparing the index: {e}"))?;
        let scope =
            store::knowledge::KnowledgeScope::new(model::message::DEFAULT_TENANT.to_owned(), "default".to_owned());
        indexer
            .index_path(&scope, &base.join(documents), &|_| {})
            .await
            .map_err(|e| anyhow::anyhow!("indexing the suite's documents: {e}"))?;
    }
    let log = DecisionLog::new(node.artifacts.clone());
    let mut rows = Vec::new();
    let print = !args.json;
    for case in suite.goals.iter().filter(|g| args.only.as_deref().is_none_or(|only| g.id.contains(only))) {
        let text = case.goal.replace("{pages}", pages_url);
        let budget = budget(*configured, None, None, case.max_seconds.or(Some(configured.max_seconds.min(300))));
        if print {
            eprintln!("goal {}: {text}", case.id);
        }
        let started = Instant::now();
        let mut goal =
            agent::submit(&node.store, model::message::DEFAULT_TENANT, &text, budget).await.map_err(agent_error)?;
        let limit = Duration::from_secs(budget.max_seconds + 60);
        loop {
            goal = follow(&node.store, &log, &goal, false, limit).await?;
            if goal.status != GoalStatus::AwaitingApproval {
                break;
            }
            let state = agent::GoalState::from_value(&goal.state, budget).unwrap_or_default();
            let pending: Vec<String> =
                state.approvals.iter().filter(|(_, a)| a.decision.is_none()).map(|(k, _)| k.clone()).collect();
            for key in pending {
                agent::decide(&node.store, &goal.id, &key, case.approve, "eval", "goal suite")
                    .await
                    .map_err(agent_error)?;
            }
        }
        let state = agent::GoalState::from_value(&goal.state, budget).unwrap_or_default();
        let tools: Vec<String> = state
            .plans
            .iter()
            .flat_map(|p| p.steps.iter())
            .filter(|s| s.status == agent::StepStatus::Succeeded)
            .filter_map(|s| s.tool.clone())
            .collect();
        let mut why = None;
        if goal.status != case.expect.status {
            why = Some(format!("expected {}", case.expect.status));
        } else if goal.status == GoalStatus::Succeeded && !case.expect.answer_contains.is_empty() {
            let answer = goal.answer.clone().unwrap_or_default().to_lowercase();
            let evidence = state.done().iter().map(|(_, _, o)| o.to_lowercase()).collect::<Vec<_>>().join("\n");
            if !case.expect.answer_contains.iter().any(|w| answer.contains(&w.to_lowercase())) {
                why = Some(if case.expect.answer_contains.iter().any(|w| evidence.contains(&w.to_lowercase())) {
                    "the results hold the fact but the answer does not".to_owned()
                } else {
                    format!("the answer lacks {:?}", case.expect.answer_contains)
                });
            }
        }
        if why.is_none() && !case.expect.tools.is_empty() && !tools.iter().any(|t| case.expect.tools.contains(t)) {
            why = Some(format!("no step used {:?}", case.expect.tools));
        }
        let row = Row {
            id: case.id.clone(),
            passed: why.is_none(),
            status: goal.status,
            expected: case.expect.status,
            steps: state.used.steps,
            replans: state.used.replans,
            tokens: state.used.tokens,
            seconds: started.elapsed().as_secs_f64(),
            tools,
            answer: goal.answer.clone(),
            error: goal.error.clone(),
            why,
            trace_id: goal.trace_id.clone(),
        };
        if print {
            eprintln!(
                "  {} in {:.1} s{}",
                row.status,
                row.seconds,
                row.why.as_deref().map(|w| format!(" — {w}")).unwrap_or_default()
            );
        }
        rows.push(row);
    }
    Ok(rows)
}
