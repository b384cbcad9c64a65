//! The MCP client against real servers: server-everything over stdio, streamable HTTP and
//! WebSocket (through supergateway).

mod examples;

use std::time::Duration;

use mcp::McpClient;
use model::config::mcp::Toolset;
use serde_json::json;

fn toolset(json: serde_json::Value) -> Toolset {
    serde_json::from_value(json).expect("toolset")
}

fn stdio() -> Toolset {
    toolset(json!({ "command": "node", "args": [test_support::everything_js(), "stdio"] }))
}

/// Waits for real readiness: an MCP session that answers, not an open port.
async fn connect_when_ready(name: &str, config: &Toolset) -> McpClient {
    let mut last = None;
    for _ in 0..100 {
        match McpClient::connect(name, config, Duration::from_secs(5)).await {
            Ok(client) => match client.ping(Duration::from_secs(2)).await {
                Ok(_) => return client,
                Err(err) => last = Some(err.to_string()),
            },
            Err(err) => last = Some(err.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("MCP server {name} never became ready: {last:?}");
}

async fn echo_and_sum(client: &McpClient) {
    let tools = client.tools(Duration::from_secs(10)).await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"get-sum"), "{names:?}");
    let echo = tools.iter().find(|t| t.name == "echo").expect("echo");
    assert_eq!(echo.input_schema["properties"]["message"]["type"], "string");
    let answer = client.call("echo", json!({"message": "hello cogo"}), Duration::from_secs(10)).await.expect("echo");
    assert!(!answer.is_error);
    assert!(answer.result.to_string().contains("hello cogo"), "{}", answer.result);
    let sum = client.call("get-sum", json!({"a": 2, "b": 40}), Duration::from_secs(10)).await.expect("get-sum");
    assert!(sum.result.to_string().contains("42"), "{}", sum.result);
    let rtt = client.ping(Duration::from_secs(5)).await.expect("ping");
    assert!(rtt < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_echo_sum_ping_and_concurrent_calls() {
    let client = connect_when_ready("everything", &stdio()).await;
    assert_eq!(client.transport(), "stdio");
    echo_and_sum(&client).await;
    // many calls in flight on one session
    let calls = (0..32).map(|n| client.call("get-sum", json!({"a": n, "b": 1}), Duration::from_secs(20)));
    let answers = futures_util::future::join_all(calls).await;
    for (n, answer) in answers.into_iter().enumerate() {
        let text = answer.expect("concurrent call").result.to_string();
        assert!(text.contains(&format!("{}", n + 1)), "call {n}: {text}");
    }
    client.close().await;
}

/// server-everything registers more tools once the session is initialized and says so with
/// `notifications/tools/list_changed`: the cached list is dropped and the next listing is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_cached_until_the_server_announces_a_change() {
    let client = connect_when_ready("everything", &stdio()).await;
    for _ in 0..100 {
        if client.tool_list_changes() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.tool_list_changes() > 0, "the server announced its new tools");
    let first = client.tools(Duration::from_secs(10)).await.expect("tools/list");
    let again = client.tools(Duration::from_secs(10)).await.expect("tools/list");
    assert!(std::sync::Arc::ptr_eq(&first, &again), "the second listing comes from the cache");
    let names: Vec<&str> = first.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"simulate-research-query"), "tools registered after initialize are listed: {names:?}");
    // asking the server directly gives the same list
    let listed = client.list_tools(Duration::from_secs(10)).await.expect("tools/list");
    assert_eq!(listed.len(), first.len());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_echo_sum_ping() {
    let server = test_support::start_everything_http();
    let config = toolset(json!({ "url": format!("http://127.0.0.1:{}/mcp", server.port) }));
    let client = connect_when_ready("everything-http", &config).await;
    assert_eq!(client.transport(), "http");
    echo_and_sum(&client).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_sum_ping() {
    let server = test_support::start_everything_ws();
    let config = toolset(json!({ "url": format!("ws://127.0.0.1:{}/message", server.port) }));
    let client = connect_when_ready("everything-ws", &config).await;
    assert_eq!(client.transport(), "websocket");
    echo_and_sum(&client).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_map_to_kinds() {
    let client = connect_when_ready("everything", &stdio()).await;
    // a slow tool hits its timeout
    let err = client
        .call("trigger-long-running-operation", json!({"duration": 5, "steps": 5}), Duration::from_millis(300))
        .await
        .expect_err("timeout");
    assert_eq!(err.kind(), model::ErrorKind::Timeout);
    assert!(err.to_string().contains("tools/call trigger-long-running-operation got no answer within 300 ms"), "{err}");
    // arguments must be an object
    let err = client.call("echo", json!([1, 2]), Duration::from_secs(5)).await.expect_err("bad arguments");
    assert_eq!(err.kind(), model::ErrorKind::InvalidInput);
    // an unknown tool is the server's answer, not a transport problem
    match client.call("no-such-tool", json!({}), Duration::from_secs(5)).await {
        Ok(answer) => assert!(answer.is_error, "{}", answer.result),
        Err(err) => assert_eq!(err.kind(), model::ErrorKind::Protocol, "{err}"),
    }
    client.close().await;
    // nothing listens: a transport error
    let config = toolset(json!({ "url": format!("ws://127.0.0.1:{}/message", test_support::free_port()) }));
    let err = McpClient::connect("nowhere", &config, Duration::from_secs(5)).await.expect_err("refused");
    assert_eq!(err.kind(), model::ErrorKind::Transport);
    assert!(err.to_string().starts_with("connecting to MCP toolset nowhere over websocket"), "{err}");
    let missing = toolset(json!({ "command": "/nonexistent/mcp-server" }));
    let err = McpClient::connect("missing", &missing, Duration::from_secs(5)).await.expect_err("no program");
    assert!(err.to_string().contains("starting \"/nonexistent/mcp-server\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_breaks_the_session_with_a_transport_error() {
    let mut server = test_support::start_everything_ws();
    let config = toolset(json!({ "url": format!("ws://127.0.0.1:{}/message", server.port) }));
    let client = connect_when_ready("everything-ws", &config).await;
    server.kill();
    let err = client.call("echo", json!({"message": "x"}), Duration::from_secs(5)).await.expect_err("server gone");
    assert!(matches!(err.kind(), model::ErrorKind::Transport | model::ErrorKind::Timeout), "{err}");
}

/// The seed's end-to-end scenario on the embedded store: enqueue {toolset, tool, params} → the
/// gateway worker claims it → breaker → MCP call → artifacts → the message completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_worker_runs_mcp_calls_from_the_bus() {
    use std::sync::Arc;
    let t = test_support::sqlite().await;
    let data_dir = tempfile_dir();
    let toolsets = [("everything".to_owned(), stdio())].into_iter().collect();
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    let gateway = Arc::new(mcp::Gateway::new(
        toolsets,
        breakers,
        artifacts::Artifacts::local(&data_dir).expect("artifact store"),
        "test",
    ));
    let handler = mcp::GatewayHandler::new(gateway, 64 * 1024);
    let retry: worker::RetryResolver = Arc::new(move |m: &model::Message| policies.retry(&worker::policy_key(m)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = worker::RuntimeConfig {
        poll_interval: Duration::from_millis(100),
        ..worker::RuntimeConfig::new("mcp", "gateway", "agent-gw")
    };
    let task = tokio::spawn(worker::Runtime::new(t.store.clone(), config, Arc::new(handler), retry).run(stopped));
    let intent = model::Intent::new("mcp_call").expect("intent");
    let echo = model::NewMessage::new(
        "mcp",
        "gateway",
        intent.clone(),
        json!({"toolset": "everything", "tool": "echo", "params": {"message": "through the bus", "api_key": "s3cret"}}),
    );
    let echo_id = t.store.enqueue(echo).await.expect("enqueue").message.id;
    let unknown =
        model::NewMessage::new("mcp", "gateway", intent, json!({"toolset": "nope", "tool": "echo", "params": {}}));
    let unknown_id = t.store.enqueue(unknown).await.expect("enqueue").message.id;
    let mut done = None;
    for _ in 0..200 {
        let message = t.store.message(echo_id).await.expect("message");
        let other = t.store.message(unknown_id).await.expect("message");
        if message.status.is_final() && other.status.is_final() {
            done = Some((message, other));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (message, other) = done.expect("both messages finish within 10 s");
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(message.status, model::MessageStatus::Done, "{:?}", message.last_error);
    let result = message.result.expect("result");
    assert!(result["result"].to_string().contains("through the bus"), "{result}");
    let dir = data_dir.join(result["artifacts"].as_str().expect("artifact dir"));
    for file in ["request.json", "response.json", "summary.json"] {
        assert!(dir.join(file).is_file(), "{file} missing in {}", dir.display());
    }
    let request = std::fs::read_to_string(dir.join("request.json")).expect("request");
    assert!(!request.contains("s3cret") && request.contains("***"), "secrets are redacted: {request}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(
        (summary["status"].as_str(), summary["breaker_key"].as_str()),
        (Some("ok"), Some("mcp.call.everything.echo.0"))
    );
    assert_eq!(summary["trace_id"].as_str(), Some(message.trace_id.as_str()));
    // an unknown toolset is bad input: dead-lettered at once, not retried
    assert_eq!((other.status, other.attempts), (model::MessageStatus::Failed, 1));
    assert!(other.last_error.as_deref().unwrap_or_default().contains("unknown or disabled MCP toolset \"nope\""));
    let events = t
        .store
        .events(&store::EventFilter { message_id: Some(echo_id), ..Default::default() }, &store::PageRequest::first(10))
        .await
        .expect("events");
    let types: Vec<&str> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["mcp_call_scheduled", "mcp_call_claimed", "mcp_call_succeeded"]);
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cogo-gateway-{}", model::new_id().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn redaction_covers_nested_secret_keys() {
    let value = json!({"url": "http://x", "headers": {"Authorization": "Bearer t"}, "list": [{"password": "p"}], "apiKey": "k"});
    let redacted = mcp::redact(&value);
    assert_eq!(
        redacted,
        json!({"url": "http://x", "headers": {"Authorization": "***"}, "list": [{"password": "***"}], "apiKey": "***"})
    );
}

/// Found by the `mcp_frame` fuzz target: a secret used as an object key was kept, and a secret
/// containing `***` could be made whole again by its own replacement.
#[test]
fn scrubbed_values_leave_no_trace_in_keys_or_after_replacement() {
    use std::sync::Arc;
    let retry = model::config::parse::<model::config::RetryFile>("retry_policy.json", "{}").expect("retry");
    let breaker = model::config::parse::<model::config::BreakerFile>("circuit_breaker.json", "{}").expect("breaker");
    let breakers = Arc::new(resilience::Breakers::new(Arc::new(resilience::Policies::new(&retry, &breaker)), None));
    let gateway = mcp::Gateway::new(
        Default::default(),
        breakers,
        artifacts::Artifacts::local(&tempfile_dir()).expect("artifact store"),
        "t",
    )
    .with_scrubbed_values(["tent".to_owned(), "x***".to_owned()]);
    let (kept, images) = gateway.answer_artifacts(json!({"result": {"content": "intent", "xx***": 1}}));
    assert!(images.is_empty());
    assert_eq!(kept, json!({"result": {"con***": "in***", "***": 1}}));
    assert_eq!(gateway.scrub_text("a xx*** b"), "a *** b");
}

/// A toolset that is down opens its breaker after the threshold; calls then fail fast; once the
/// server is back, a half-open probe closes it. Every transition is recorded in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_a_dead_toolset_and_a_probe_closes_it() {
    use std::sync::Arc;
    let t = test_support::sqlite().await;
    let port = test_support::free_port();
    let config = toolset(json!({ "url": format!("ws://127.0.0.1:{port}/message"), "timeout_ms": 5000 }));
    let retry = model::config::parse::<model::config::RetryFile>("retry_policy.json", "{}").expect("retry");
    let breaker = model::config::parse::<model::config::BreakerFile>(
        "circuit_breaker.json",
        r#"{"default": {"min_requests": 3, "window_size": 10, "open_ms": 300, "half_open_probes": 1}}"#,
    )
    .expect("breaker");
    let policies = Arc::new(resilience::Policies::new(&retry, &breaker));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(resilience::record_transitions(t.store.clone(), "agent-gw".into(), rx));
    let breakers = Arc::new(resilience::Breakers::new(policies, Some(tx)));
    let data_dir = tempfile_dir();
    let gateway = mcp::Gateway::new(
        [("flaky".to_owned(), config)].into_iter().collect(),
        breakers.clone(),
        artifacts::Artifacts::local(&data_dir).expect("artifact store"),
        "t",
    );
    let call = mcp::McpCall { toolset: "flaky".into(), tool: "echo".into(), params: json!({"message": "x"}) };
    let context = mcp::CallContext::default();
    for _ in 0..3 {
        let err = gateway.call_once(&call, &context).await.expect_err("nothing listens");
        assert_eq!(err.kind(), model::ErrorKind::Transport, "{err}");
    }
    let open = gateway.call_once(&call, &context).await.expect_err("open breaker");
    assert!(matches!(open, mcp::GatewayError::Open(_)), "{open}");
    assert!(open.to_string().contains("circuit mcp.call.flaky.echo.0 is open"), "{open}");
    // the server comes back; after the open time a probe goes through and closes the breaker
    let _server = test_support::start_everything_ws_on(port);
    let mut answered = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(answer) = gateway.call_once(&call, &context).await {
            answered = Some(answer);
            break;
        }
    }
    let answer = answered.expect("the toolset answers again");
    assert!(answer.result.to_string().contains('x'));
    assert_eq!(breakers.states()[0].1, model::breaker::BreakerState::Closed);
    drop(gateway);
    drop(breakers);
    recorder.await.expect("recorder");
    let events = t.store.events(&store::EventFilter::default(), &store::PageRequest::first(100)).await.expect("events");
    let types: Vec<&str> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types.first(), Some(&"circuit_opened"), "{types:?}");
    assert_eq!(types.last(), Some(&"circuit_closed"), "{types:?}");
    assert!(types.contains(&"circuit_half_open"), "{types:?}");
    let circuits = t.store.circuits().await.expect("circuits");
    assert_eq!((circuits.len(), circuits[0].state.as_str()), (1, "closed"));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Artifacts on S3: a call writes its files to the bucket; when the bucket cannot be reached (after
/// the store's retries), the call still answers, and says why its artifacts are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_write_artifacts_to_s3_and_answer_when_the_bucket_is_unreachable() {
    use std::sync::Arc;
    let gateway_on = |store: artifacts::Artifacts| {
        let breakers = Arc::new(resilience::Breakers::new(Arc::new(resilience::Policies::seed()), None));
        mcp::Gateway::new([("everything".to_owned(), stdio())].into_iter().collect(), breakers, store, "s3")
    };
    let call = mcp::McpCall { toolset: "everything".into(), tool: "echo".into(), params: json!({"message": "s3"}) };
    let url = test_support::s3_url();
    let store = artifacts::Artifacts::s3_with_settings(&url, test_support::s3_settings()).expect("store");
    let answer = gateway_on(store.clone()).call_once(&call, &mcp::CallContext::default()).await.expect("call");
    assert_eq!(answer.artifacts_error, None);
    let files = store.list(&answer.artifact_dir).await.expect("listing");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["request.json", "response.json", "summary.json"]);
    let response = store.get(&format!("{}/response.json", answer.artifact_dir), 1 << 20).await.expect("response");
    assert!(String::from_utf8_lossy(&response).contains("Echo: s3"));
    // nothing listens on port 9 of loopback
    let settings = test_support::s3_settings_at("http://127.0.0.1:9");
    let unreachable = artifacts::Artifacts::s3_with_settings(&url, settings).expect("store");
    let gateway = gateway_on(unreachable);
    let attempt = gateway.attempt(&call, &mcp::CallContext::default()).await;
    assert_eq!(attempt.written.len(), 2, "request.json, then the rest, in flight behind the answer");
    let attempt = attempt.settled().await;
    assert!(attempt.detail["artifacts_error"].is_string(), "{}", attempt.detail);
    let answer = attempt.outcome.expect("call");
    assert!(answer.result.to_string().contains("Echo: s3"), "{}", answer.result);
    let why = answer.artifacts_error.expect("the missing artifacts are explained");
    assert!(why.contains("could not write the artifacts") && why.contains("127.0.0.1:9"), "{why}");
    assert!(!why.contains("cogo-test-secret"), "{why}");
}
