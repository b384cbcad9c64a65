//! Goals end to end: plan → select → execute on the bus → evaluate → answer, with the real
//! browser and the local model; failure and replanning; approvals; replay.

use std::collections::BTreeMap;
use std::time::Duration;

use model::config::agent::Budget;
use model::goal::GoalStatus;
use serde_json::Value;

use super::{Node, Scratch, launcher, local_llm, policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_goal_reports_the_page_title_and_replays_identically() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let pages = launcher.pages(test_support::free_port()).await.expect("page server");
    let browser = launcher.browser(test_support::free_port()).await.expect("browser toolset");
    let mut toolset = mcp::examples::websocket_toolset(browser.port(), 45_000);
    toolset.enabled = true;
    let t = test_support::sqlite().await;
    let policy = policy(|_| {});
    let node = Node::start(
        t.store.clone(),
        &scratch.0,
        BTreeMap::from([("browser".to_owned(), toolset)]),
        policy.clone(),
        local_llm(),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/", pages.port());
    let goal =
        agent::submit(&t.store, "default", &format!("Open the page {url} and report its title"), Budget::default())
            .await
            .expect("submit");
    let done = node.settle(&goal, Duration::from_secs(300)).await;
    assert_eq!(done.status, GoalStatus::Succeeded, "{done:?}");
    let answer = done.answer.clone().unwrap_or_default();
    assert!(answer.contains("COGO example page"), "the answer holds the page's title: {answer}\n{done:?}");

    // every step went over the bus with the goal's trace and a key derived from the goal and step
    let messages = t
        .store
        .messages(
            &store::MessageFilter { trace_id: Some(goal.trace_id.clone()), ..Default::default() },
            &store::PageRequest::first(100),
        )
        .await
        .expect("messages")
        .items;
    let steps: Vec<&model::Message> = messages.iter().filter(|m| m.intent.as_str() == "mcp_call").collect();
    assert!(!steps.is_empty());
    for step in &steps {
        let key = step.idempotency_key.as_deref().unwrap_or_default();
        assert!(key.starts_with(&format!("goal:{}:r", goal.id)), "{key}");
        assert_eq!(step.payload["tool"], "browser_navigate", "{}", step.payload);
        assert_eq!(step.payload["params"]["url"], url.as_str(), "the URL is copied, never made up");
    }

    // the decisions tell the story, each with its model, prompt hash and output
    let decisions = node.decisions(&goal).await;
    let kinds: Vec<&str> = decisions.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"registry"), "{kinds:?}");
    assert!(kinds.contains(&"plan") && kinds.contains(&"select") && kinds.contains(&"evaluate"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"answer"), "{kinds:?}");
    let plan = decisions.iter().find(|d| d.kind.as_str() == "plan").expect("plan");
    assert_eq!(plan.llm.first().map(|c| c.prompt_hash.len()), Some(64));
    assert!(plan.llm.iter().all(|c| c.model.contains("SmolLM2")), "{:?}", plan.llm);
    let files = std::fs::read_dir(scratch.0.join(agent::DecisionLog::relative(&goal.trace_id))).expect("dir").count();
    assert_eq!(files, decisions.len());
    let state = agent::GoalState::from_value(&done.state, Budget::default()).expect("state");
    assert_eq!(state.decisions as usize, decisions.len());

    // replay reproduces every decision from the records alone
    let report =
        agent::replay::replay(&done, decisions.clone(), policy, Some(super::embedder())).await.expect("replay");
    assert!(report.identical, "{report:?}");
    assert_eq!(report.replayed, decisions.iter().filter(|d| d.kind.as_str() != "registry").count());
    // a tampered record is found
    let mut tampered = decisions;
    if let Some(select) = tampered.iter_mut().find(|d| d.kind.as_str() == "evaluate") {
        select.inputs["outcome"]["ok"] = Value::Bool(false);
    }
    let report =
        agent::replay::replay(&done, tampered, super::policy(|_| {}), Some(super::embedder())).await.expect("replay");
    assert!(!report.identical && report.first_difference.is_some(), "{report:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_whose_tool_keeps_failing_ends_with_a_clear_failure() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let figma = launcher.figma(test_support::free_port()).await.expect("figma toolset");
    let t = test_support::sqlite().await;
    let node = Node::start(
        t.store.clone(),
        &scratch.0,
        BTreeMap::from([("figma".to_owned(), mcp::examples::websocket_toolset(figma.port(), 30_000))]),
        policy(|_| {}),
        local_llm(),
    )
    .await;
    let budget = Budget { max_replans: 1, ..Budget::default() };
    let goal =
        agent::submit(&t.store, "default", "Get the Figma file with key cogoOffline123 and list its frames", budget)
            .await
            .expect("submit");
    let done = node.settle(&goal, Duration::from_secs(300)).await;
    assert_eq!(done.status, GoalStatus::Failed, "{done:?}");
    let error = done.error.clone().unwrap_or_default();
    assert!(error.contains("failed") && error.contains("replan budget (1) is spent"), "{error}");
    let state = agent::GoalState::from_value(&done.state, budget).expect("state");
    assert_eq!(state.used.replans, 1, "it replanned once before giving up");
    let decisions = node.decisions(&goal).await;
    assert!(decisions.iter().any(|d| d.kind.as_str() == "replan"));
    assert_eq!(decisions.last().map(|d| d.kind.as_str()), Some("finish"));
    node.stop().await;
}

async fn approval_round(t: test_support::TestStore) {
    let scratch = Scratch::new();
    // only the execution role's tool, which the policy says needs an approval
    let policy = policy(|p| {
        p.approval = vec!["execute".into()];
        p.commands.retain(|name, _| name == "echo");
    });
    let node = Node::start(t.store.clone(), &scratch.0, BTreeMap::new(), policy, local_llm()).await;
    let goal = agent::submit(&t.store, "default", "Print the word hello with the echo command", Budget::default())
        .await
        .expect("submit");
    let paused = node.settle(&goal, Duration::from_secs(300)).await;
    assert_eq!(paused.status, GoalStatus::AwaitingApproval, "{paused:?}");
    let state = agent::GoalState::from_value(&paused.state, Budget::default()).expect("state");
    let (key, approval) = state.approvals.iter().next().expect("an approval is asked");
    assert_eq!(approval.tool, "execute");
    // nothing ran before the approval
    let executed = |store: store::Store, trace: String| async move {
        store
            .messages(
                &store::MessageFilter { trace_id: Some(trace), intent: Some("execute".into()), ..Default::default() },
                &store::PageRequest::first(10),
            )
            .await
            .expect("messages")
            .items
    };
    assert!(executed(t.store.clone(), goal.trace_id.clone()).await.is_empty());
    // a wrong step key is refused with what is pending
    let wrong = agent::decide(&t.store, &goal.id, "r9.s9", true, "tester", "").await.expect_err("wrong key");
    assert!(wrong.to_string().contains(&format!("pending: {key}")), "{wrong}");
    agent::decide(&t.store, &goal.id, key, true, "tester", "fine").await.expect("approve");
    let again = agent::decide(&t.store, &goal.id, key, false, "tester", "").await.expect_err("twice");
    assert!(again.to_string().contains("already approved by tester"), "{again}");
    // every later command step asks again; approve each until the goal ends
    let mut done = node.resume(&goal, Duration::from_secs(300)).await;
    let mut approved = 1;
    while done.status == GoalStatus::AwaitingApproval {
        let state = agent::GoalState::from_value(&done.state, Budget::default()).expect("state");
        for (key, _) in state.approvals.iter().filter(|(_, a)| a.decision.is_none()) {
            agent::decide(&t.store, &goal.id, key, true, "tester", "").await.expect("approve");
            approved += 1;
        }
        done = node.resume(&goal, Duration::from_secs(300)).await;
    }
    assert!(done.status.is_final(), "{done:?}");
    let ran = executed(t.store.clone(), goal.trace_id.clone()).await;
    assert_eq!(ran.len(), approved, "each approved command ran, once");
    assert!(ran.iter().all(|m| m.payload["command"] == "echo" && m.attempts == 1), "{ran:?}");

    // a rejection ends the goal, naming who rejected
    let goal = agent::submit(&t.store, "default", "Print the word hello with the echo command", Budget::default())
        .await
        .expect("submit");
    let paused = node.settle(&goal, Duration::from_secs(300)).await;
    assert_eq!(paused.status, GoalStatus::AwaitingApproval);
    let state = agent::GoalState::from_value(&paused.state, Budget::default()).expect("state");
    let key = state.approvals.keys().next().expect("asked").clone();
    agent::decide(&t.store, &goal.id, &key, false, "tester", "not today").await.expect("reject");
    let done = node.resume(&goal, Duration::from_secs(120)).await;
    assert_eq!(done.status, GoalStatus::Failed);
    assert!(done.error.as_deref().unwrap_or_default().contains("rejected by tester: not today"), "{done:?}");
    assert!(executed(t.store.clone(), goal.trace_id.clone()).await.is_empty(), "a rejected command never runs");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_pauses_the_goal_until_an_operator_answers_on_sqlite() {
    approval_round(test_support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_pauses_the_goal_until_an_operator_answers_on_postgres() {
    approval_round(test_support::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_a_goal_and_bad_goals_are_refused() {
    let t = test_support::sqlite().await;
    let empty = agent::submit(&t.store, "default", "", Budget::default()).await.expect_err("empty");
    assert!(empty.to_string().contains("goal: must not be empty"), "{empty}");
    let bad_budget = agent::submit(&t.store, "default", "x", Budget { max_steps: 0, ..Budget::default() })
        .await
        .expect_err("budget");
    assert!(bad_budget.to_string().contains("budget.max_steps"), "{bad_budget}");
    let bad_tenant = agent::submit(&t.store, "a b", "x", Budget::default()).await.expect_err("tenant");
    assert!(bad_tenant.to_string().contains("tenant"), "{bad_tenant}");
    let goal = agent::submit(&t.store, "default", "something", Budget::default()).await.expect("submit");
    let cancelled = agent::approvals::cancel(&t.store, &goal.id, "tester").await.expect("cancel");
    assert_eq!(cancelled.status, GoalStatus::Cancelled);
    // an orchestrator that picks up a cancelled goal does nothing with it
    let scratch = Scratch::new();
    let node = Node::start(t.store.clone(), &scratch.0, BTreeMap::new(), policy(|_| {}), local_llm()).await;
    let (outcome, decisions) = node.orchestrator.run(&goal.id, None).await.expect("run");
    assert_eq!((outcome, decisions.len()), (agent::Outcome::Cancelled, 0));
    node.stop().await;
}
