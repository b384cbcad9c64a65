//! The MCP client against real servers: server-everything over stdio, streamable HTTP and
//! WebSocket (through supergateway).

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
