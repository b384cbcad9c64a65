//! The gateway against the example servers `cogo up` runs: the browser (Playwright on Chromium),
//! figma (offline: every call is a tool error) and server-everything over WebSocket, started by
//! `mcp::examples` on free loopback ports and waited for with an MCP ping.

use std::sync::Arc;
use std::time::Duration;

use mcp::examples::{Launcher, websocket_toolset};
use serde_json::json;

fn launcher(run_dir: &std::path::Path) -> Launcher {
    let servers = test_support::mcp_servers_dir();
    Launcher::new(servers.parent().expect("mcp-servers"), run_dir)
}

struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("cogo-examples-{}", model::new_id().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gateway(
    toolsets: Vec<(&str, model::config::mcp::Toolset)>,
    policies: Arc<resilience::Policies>,
    data_dir: &std::path::Path,
) -> (mcp::Gateway, Arc<resilience::Breakers>) {
    let breakers = Arc::new(resilience::Breakers::new(policies, None));
    let toolsets = toolsets.into_iter().map(|(name, t)| (name.to_owned(), t)).collect();
    (
        mcp::Gateway::new(
            toolsets,
            breakers.clone(),
            artifacts::Artifacts::local(data_dir).expect("artifact store"),
            "t",
        ),
        breakers,
    )
}

fn call(toolset: &str, tool: &str, params: serde_json::Value) -> mcp::McpCall {
    mcp::McpCall { toolset: toolset.into(), tool: tool.into(), params }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_navigates_to_a_local_page_and_leaves_a_png_artifact() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let pages = launcher.pages(test_support::free_port()).await.expect("page server");
    let browser = launcher.browser(test_support::free_port()).await.expect("browser toolset");
    let mut toolset = websocket_toolset(browser.port(), 45_000);
    toolset.enabled = true;
    let (gateway, _) = gateway(vec![("browser", toolset)], Arc::new(resilience::Policies::seed()), &scratch.0);
    let context = mcp::CallContext { attempt: 1, ..Default::default() };
    let url = format!("http://127.0.0.1:{}/", pages.port());
    let answer = gateway
        .call_once(&call("browser", "browser_navigate", json!({ "url": url })), &context)
        .await
        .expect("navigate");
    assert!(!answer.is_error, "{}", answer.result);
    assert!(answer.result.to_string().contains("Page Title: COGO example page"), "{}", answer.result);
    let shot =
        gateway.call_once(&call("browser", "browser_take_screenshot", json!({})), &context).await.expect("screenshot");
    assert!(!shot.is_error, "{}", shot.result);
    assert_eq!(shot.images, ["image-0.png"], "{}", shot.result);
    // the files are written behind the answer; read straight from the disk, they are there once flushed
    gateway.flush().await;
    let dir = scratch.0.join(&shot.artifact_dir);
    let png = std::fs::read(dir.join("image-0.png")).expect("the PNG beside the JSON");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "a real PNG, {} bytes", png.len());
    let response = std::fs::read_to_string(dir.join("response.json")).expect("response.json");
    assert!(response.contains("\"file\": \"image-0.png\""), "{response}");
    assert!(!response.contains("iVBORw0KGgo"), "the base64 image is not kept in the JSON");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["images"], json!(["image-0.png"]));
    // the browser's session is shared: one connect for both calls
    assert_eq!(gateway.connects("browser"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figma_offline_tool_errors_are_recorded_and_open_the_breaker() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let figma = launcher.figma(test_support::free_port()).await.expect("figma toolset");
    // the seed policies: figma's breaker opens after 3 calls with half of them failed; tool errors count
    let (gateway, breakers) = gateway(
        vec![("figma", websocket_toolset(figma.port(), 30_000))],
        Arc::new(resilience::Policies::seed()),
        &scratch.0,
    );
    let context = mcp::CallContext { attempt: 1, ..Default::default() };
    let get = call("figma", "get_figma_data", json!({ "fileKey": "cogoOffline123" }));
    for n in 0..3 {
        let answer = gateway.call_once(&get, &context).await.expect("an answer, which is a tool error");
        assert!(answer.is_error, "call {n}: {}", answer.result);
        gateway.flush().await;
        let error =
            std::fs::read_to_string(scratch.0.join(&answer.artifact_dir).join("error.json")).expect("error.json");
        assert!(error.contains("\"kind\": \"tool_error\"") && error.contains("Figma API"), "{error}");
    }
    let refused = gateway.call_once(&get, &context).await.expect_err("the breaker is open");
    assert!(matches!(refused, mcp::GatewayError::Open(_)), "{refused}");
    assert!(refused.to_string().contains("mcp.call.figma.get_figma_data.0"), "{refused}");
    assert!(matches!(breakers.states()[0].1, model::breaker::BreakerState::Open { .. }));
    // a tool error is not retried by the seed policy: the direct call gives up after one attempt
    let policies = resilience::Policies::seed();
    let (fresh, _) = self::gateway(
        vec![("figma", websocket_toolset(figma.port(), 30_000))],
        Arc::new(resilience::Policies::seed()),
        &scratch.0,
    );
    let started = std::time::Instant::now();
    let mut attempts = Vec::new();
    let answer =
        fresh.call(&policies, &get, &context, |a| attempts.push(a.detail.clone())).await.expect("a tool-error answer");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        (attempts[0]["error_kind"].as_str(), attempts[0]["tool"].as_str()),
        (Some("tool_error"), Some("get_figma_data"))
    );
    assert!(answer.is_error && started.elapsed() < Duration::from_secs(1), "no retry with backoff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_hits_its_per_tool_timeout() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let everything = launcher.everything(test_support::free_port()).await.expect("everything");
    let mut toolset = websocket_toolset(everything.port(), 30_000);
    toolset.tools.insert(
        "trigger-long-running-operation".into(),
        serde_json::from_value(json!({ "timeout_ms": 300 })).expect("tool settings"),
    );
    let (gateway, _) = gateway(vec![("everything", toolset)], Arc::new(resilience::Policies::seed()), &scratch.0);
    let context = mcp::CallContext { attempt: 1, ..Default::default() };
    let slow = call("everything", "trigger-long-running-operation", json!({ "duration": 5, "steps": 5 }));
    let err = gateway.call_once(&slow, &context).await.expect_err("timeout");
    assert_eq!(err.kind(), model::ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("within 300 ms"), "{err}");
    // other tools keep the toolset's limit, on the same session
    let echo = gateway
        .call_once(&call("everything", "echo", json!({ "message": "still here" })), &context)
        .await
        .expect("echo");
    assert!(echo.result.to_string().contains("still here"));
    assert_eq!(gateway.connects("everything"), 1, "a timeout does not drop the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_pings_every_toolset_in_parallel() {
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let everything = launcher.everything(test_support::free_port()).await.expect("everything");
    let nowhere = websocket_toolset(test_support::free_port(), 1_000);
    let (gateway, _) = gateway(
        vec![("everything", websocket_toolset(everything.port(), 5_000)), ("nowhere", nowhere)],
        Arc::new(resilience::Policies::seed()),
        &scratch.0,
    );
    let health = gateway.health(Duration::from_secs(3)).await;
    let by_name: std::collections::BTreeMap<_, _> = health.iter().map(|h| (h.toolset.as_str(), h)).collect();
    assert!(by_name["everything"].ok, "{health:?}");
    assert!(!by_name["nowhere"].ok && by_name["nowhere"].error_kind == Some("transport"), "{health:?}");
    // right after a failed connect, the next attempt waits for its backoff and says so
    let again = gateway.health(Duration::from_secs(3)).await;
    let nowhere = again.iter().find(|h| h.toolset == "nowhere").expect("nowhere");
    assert!(nowhere.error.as_deref().unwrap_or_default().contains("reconnecting in"), "{nowhere:?}");
}

/// A server killed mid-call: the call fails with a transport error (or times out), the bus retries
/// it, the gateway reconnects to the restarted server and the message succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_is_retried_through_the_bus_and_reconnected() {
    let t = test_support::postgres().await;
    let scratch = Scratch::new();
    let launcher = launcher(&scratch.0.join("run"));
    let port = test_support::free_port();
    let mut server = launcher.everything(port).await.expect("everything");
    let mut toolset = websocket_toolset(port, 20_000);
    toolset.enabled = true;
    let retry = model::config::parse::<model::config::RetryFile>(
        "retry_policy.json",
        r#"{"default": {"max_attempts": 4, "base_delay_ms": 300, "jitter": "none"}}"#,
    )
    .expect("retry");
    let breaker = model::config::parse::<model::config::BreakerFile>("circuit_breaker.json", "{}").expect("breaker");
    let policies = Arc::new(resilience::Policies::new(&retry, &breaker));
    let (gateway, _) = gateway(vec![("everything", toolset)], policies.clone(), &scratch.0);
    let gateway = Arc::new(gateway);
    let handler = mcp::GatewayHandler::new(gateway.clone(), 64 * 1024);
    let resolver: worker::RetryResolver = Arc::new(move |m: &model::Message| policies.retry(&worker::policy_key(m)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = worker::RuntimeConfig {
        poll_interval: Duration::from_millis(100),
        ..worker::RuntimeConfig::new("mcp", "gateway", "agent-gw")
    };
    let task = tokio::spawn(worker::Runtime::new(t.store.clone(), config, Arc::new(handler), resolver).run(stopped));
    let intent = model::Intent::new("mcp_call").expect("intent");
    let slow = json!({ "toolset": "everything", "tool": "trigger-long-running-operation", "params": { "duration": 2, "steps": 2 } });
    let id = t.store.enqueue(model::NewMessage::new("mcp", "gateway", intent, slow)).await.expect("enqueue").message.id;
    // wait until the call is in flight, then kill the server and bring it back on the same port
    for _ in 0..100 {
        if t.store.message(id).await.expect("message").status == model::MessageStatus::Claimed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let _back = launcher.everything(port).await.expect("everything again");
    let mut message = t.store.message(id).await.expect("message");
    for _ in 0..300 {
        if message.status.is_final() {
            break;
        }
        // the store's clock is the test's: move it on so the retry's backoff passes
        t.clock.advance(chrono::Duration::milliseconds(100));
        tokio::time::sleep(Duration::from_millis(50)).await;
        message = t.store.message(id).await.expect("message");
    }
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(message.status, model::MessageStatus::Done, "{:?}", message.last_error);
    assert!(message.attempts >= 2, "a retry after the failed attempt: {} attempt(s)", message.attempts);
    assert!(gateway.connects("everything") >= 2, "the session reconnected");
    let events = t
        .store
        .events(&store::EventFilter { message_id: Some(id), ..Default::default() }, &store::PageRequest::first(20))
        .await
        .expect("events");
    let types: Vec<&str> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"mcp_call_retry_scheduled"), "{types:?}");
    assert_eq!(types.last(), Some(&"mcp_call_succeeded"), "{types:?}");
    let retry = events.items.iter().find(|e| e.event_type == "mcp_call_retry_scheduled").expect("retry event");
    assert!(matches!(retry.reason.as_deref(), Some("transport" | "timeout")), "{:?}", retry.reason);
    assert!(
        events.items.iter().all(|e| e.trace_id.as_deref() == Some(message.trace_id.as_str())),
        "every event carries the trace"
    );
    // the summary, computed from the store, shows the failed attempt and the success
    let summary = t.store.mcp_summary(test_support::epoch() - chrono::Duration::hours(1)).await.expect("summary");
    let tool = &summary.detail["everything.trigger-long-running-operation"];
    assert_eq!((tool.calls, tool.fails), (message.attempts as u64, message.attempts as u64 - 1), "{summary:?}");
    assert!(tool.p50.is_some_and(|ms| ms > 0.0), "{summary:?}");
}
