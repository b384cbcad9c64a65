//! The MCP routes against a real MCP server (server-everything over stdio): direct calls, ping,
//! enqueue, configuration, health, and the MCP figures computed from the store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    app: axum::Router,
    t: test_support::TestStore,
    data_dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn fixture() -> Fixture {
    fixture_on(None).await
}

/// The routes over a gateway writing to `store`, or to the fixture's data dir.
async fn fixture_on(store: Option<artifacts::Artifacts>) -> Fixture {
    let t = test_support::sqlite().await;
    let data_dir = std::env::temp_dir().join(format!("cogo-api-mcp-{}", model::new_id().simple()));
    let store = store.unwrap_or_else(|| artifacts::Artifacts::local(&data_dir).expect("artifact store"));
    let config: model::config::McpConfig = serde_json::from_value(json!({ "toolsets": {
        "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"], "env": { "API_KEY": "sk-very-secret" } }
    }}))
    .expect("mcp config");
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    let gateway = Arc::new(mcp::Gateway::new(config.toolsets.clone(), breakers, store.clone(), "api"));
    let mcp = server::McpApi { gateway, policies, config, artifacts: store };
    let state = super::state(&t.store, Some(Arc::new(mcp)));
    Fixture { app: server::router(state, server::Limits::default()), t, data_dir }
}

pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response =
        app.clone().oneshot(request.body(Body::from(body.to_owned())).expect("request")).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(!text.contains("sk-very-secret"), "a secret leaked into a response: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

use super::{ADMIN, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_answer_and_show_up_in_the_mcp_figures() {
    let f = fixture().await;
    let (status, body) =
        send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], r#"{"params": {"message": "via the API"}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert!(body["result"].to_string().contains("via the API"), "{body}");
    assert!(body["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{body}");
    let trace_id = body["trace_id"].as_str().expect("trace id").to_owned();
    // a tool the server does not have: the answer says so, it is not a 5xx
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/no-such-tool", &[ADMIN], "{}").await;
    assert_eq!((status, body["ok"].as_bool()), (StatusCode::OK, Some(false)), "{body}");
    // the summary comes from the store's events
    let (status, body) = send(&f.app, "GET", "/api/metrics/mcp/summary", &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let echo = &body["mcp"]["detail"]["everything.echo"];
    assert_eq!((echo["calls"].as_u64(), echo["fails"].as_u64()), (Some(1), Some(0)), "{body}");
    assert!(echo["p50"].as_f64().is_some() && body["mcp"]["calls"].as_u64() == Some(2), "{body}");
    assert_eq!(body["mcp"]["detail"]["everything.no-such-tool"]["fails"].as_u64(), Some(1), "{body}");
    let (_, whole) = send(&f.app, "GET", "/api/metrics/summary", &[TOKEN], "").await;
    assert_eq!(whole["summary"]["mcp"]["calls"].as_u64(), Some(2), "{whole}");
    let (_, events) = send(&f.app, "GET", &format!("/api/metrics/mcp/events?trace_id={trace_id}"), &[TOKEN], "").await;
    let types: Vec<&str> =
        events["items"].as_array().expect("items").iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(types, ["mcp_call_succeeded"], "{events}");
    let (_, artifacts) = send(&f.app, "GET", "/api/metrics/mcp/artifacts/summary", &[TOKEN], "").await;
    assert_eq!(artifacts["artifacts"]["toolsets"]["everything"]["calls"].as_u64(), Some(2), "{artifacts}");
    // a snapshot artifact holds the same summary
    let (status, snapshot) = send(&f.app, "POST", "/api/metrics/snapshot", &[ADMIN], "").await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    let path = f.data_dir.join(snapshot["path"].as_str().expect("path")).join("summary.json");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("snapshot file")).expect("json");
    assert_eq!(written["summary"]["mcp"]["calls"].as_u64(), Some(2));
}

/// With the artifacts on S3-compatible storage (a real moto server): the gateway's files, the
/// listing, the file download, the artifacts summary and a metrics snapshot all go through the
/// bucket, another process's handle on the same bucket sees them, and nothing lands on local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_on_s3_are_written_listed_served_and_summed() {
    let url = test_support::s3_url();
    let store = artifacts::Artifacts::s3_with_settings(&url, test_support::s3_settings()).expect("s3 store");
    store.probe("api").await.expect("the test S3 server answers (scripts/s3 start)");
    let f = fixture_on(Some(store)).await;
    let (status, body) =
        send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], r#"{"params": {"message": "to the bucket"}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dir = body["artifacts"].as_str().expect("artifact dir").to_owned();
    let (_, failed) = send(&f.app, "POST", "/api/mcp/everything/no-such-tool", &[ADMIN], "{}").await;
    assert_eq!(failed["ok"], false, "{failed}");
    let api_dir = dir.trim_start_matches("artifacts/");
    let (status, listing) = send(&f.app, "GET", &format!("/api/artifacts/{api_dir}"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let names: Vec<&str> =
        listing["entries"].as_array().expect("entries").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["request.json", "response.json", "summary.json"], "{listing}");
    let (status, response) =
        send(&f.app, "GET", &format!("/api/artifacts/{api_dir}/response.json"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(response.to_string().contains("to the bucket"), "{response}");
    let (status, request) = send(&f.app, "GET", &format!("/api/artifacts/{api_dir}/request.json"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(request["params"]["message"], "to the bucket", "{request}");
    let (status, _) = send(&f.app, "GET", &format!("/api/artifacts/{api_dir}/nope.json"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, summary) = send(&f.app, "GET", "/api/metrics/mcp/artifacts/summary", &[TOKEN], "").await;
    let everything = &summary["artifacts"]["toolsets"]["everything"];
    assert_eq!((everything["calls"].as_u64(), everything["errors"].as_u64()), (Some(2), Some(1)), "{summary}");
    assert_eq!(summary["store"], "s3", "{summary}");
    let (status, snapshot) = send(&f.app, "POST", "/api/metrics/snapshot", &[ADMIN], "").await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    let snapshot_dir = snapshot["path"].as_str().expect("path").trim_start_matches("artifacts/").to_owned();
    let (status, written) =
        send(&f.app, "GET", &format!("/api/artifacts/{snapshot_dir}/summary.json"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert_eq!(written["summary"]["mcp"]["calls"].as_u64(), Some(2), "{written}");
    // another process on the same bucket and prefix reads the same files
    let other = artifacts::Artifacts::s3_with_settings(&url, test_support::s3_settings()).expect("s3 store");
    let bytes = other.get(&format!("{dir}/summary.json"), 1 << 20).await.expect("summary from the bucket");
    let call_summary: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(call_summary["status"], "ok", "{call_summary}");
    assert!(!f.data_dir.join("artifacts").exists(), "nothing is written to the local disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_refuse_bad_input_and_missing_admin() {
    let f = fixture().await;
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/echo", &[TOKEN], "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/echo", &[], "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], "{oops").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], r#"{"params": [1]}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("params must be a JSON object"), "{body}");
    let (status, body) =
        send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], r#"{"params": {}, "extra": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/nowhere/echo", &[ADMIN], "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("configured: everything"), "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/bad%20tool", &[ADMIN], "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let big = format!(r#"{{"params": {{"message": "{}"}}}}"#, "x".repeat(3 * 1024 * 1024));
    let (status, body) = send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_health_config_and_enqueue() {
    let f = fixture().await;
    let (status, body) = send(&f.app, "GET", "/api/mcp/ping/everything/echo", &[TOKEN], "").await;
    assert_eq!((status, body["ok"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let (_, body) = send(&f.app, "GET", "/api/mcp/ping/everything/no-such-tool", &[TOKEN], "").await;
    assert_eq!(body["ok"], false, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("has no tool \"no-such-tool\""), "{body}");
    let (status, body) = send(&f.app, "GET", "/api/mcp/health", &[TOKEN], "").await;
    assert_eq!((status, body["ok"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    assert_eq!(body["toolsets"][0]["toolset"], "everything");
    // the configuration is shown with its secrets redacted (send() also checks every answer)
    let (status, body) = send(&f.app, "GET", "/api/mcp/config", &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["toolsets"]["everything"]["env"]["API_KEY"], "***", "{body}");
    // enqueue: a message for the gateway role; an idempotency key makes a repeat return the same id
    let request =
        r#"{"toolset": "everything", "tool": "echo", "params": {"message": "queued"}, "idempotency_key": "k-1"}"#;
    let (status, first) = send(&f.app, "POST", "/api/mcp/enqueue", &[ADMIN], request).await;
    assert_eq!((status, first["duplicate"].as_bool()), (StatusCode::CREATED, Some(false)), "{first}");
    let (status, again) = send(&f.app, "POST", "/api/mcp/enqueue", &[ADMIN], request).await;
    assert_eq!(
        (status, again["duplicate"].as_bool(), &again["id"]),
        (StatusCode::OK, Some(true), &first["id"]),
        "{again}"
    );
    let id: model::MessageId = first["id"].as_str().expect("id").parse().expect("uuid");
    let message = f.t.store.message(id).await.expect("stored");
    assert_eq!(
        (message.service.as_str(), message.role.as_str(), message.intent.as_str()),
        ("mcp", "gateway", "mcp_call")
    );
    assert_eq!(message.payload["params"]["message"], "queued");
    let (status, body) =
        send(&f.app, "POST", "/api/mcp/enqueue", &[ADMIN], r#"{"toolset": "nowhere", "tool": "echo"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = send(&f.app, "POST", "/api/mcp/enqueue", &[ADMIN], r#"{"tool": "echo"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("toolset"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_download_by_path_and_traversal_is_refused() {
    let f = fixture().await;
    let (_, body) =
        send(&f.app, "POST", "/api/mcp/everything/echo", &[ADMIN], r#"{"params": {"message": "keep me"}}"#).await;
    let dir = body["artifacts"].as_str().expect("artifact dir").trim_start_matches("artifacts/").to_owned();
    let (status, listing) = send(&f.app, "GET", &format!("/api/artifacts/{dir}"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let names: Vec<&str> =
        listing["entries"].as_array().expect("entries").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["request.json", "response.json", "summary.json"], "{listing}");
    let (status, response) = send(&f.app, "GET", &format!("/api/artifacts/{dir}/response.json"), &[TOKEN], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(response.to_string().contains("keep me"), "{response}");
    // no token, no artifact
    let (status, _) = send(&f.app, "GET", &format!("/api/artifacts/{dir}/response.json"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // traversal and odd names are refused; a file outside the artifacts dir is never read
    std::fs::write(f.data_dir.join("outside.json"), r#"{"secret": "outside"}"#).expect("outside file");
    for path in [
        "/api/artifacts/mcp/../outside.json",
        "/api/artifacts/mcp/%2e%2e/%2e%2e/outside.json",
        "/api/artifacts/mcp/..%2F..%2Foutside.json",
        "/api/artifacts/../../etc/passwd",
        "/api/artifacts/secrets/x",
        "/api/artifacts/mcp/.hidden",
        "/api/artifacts/mcp//x",
    ] {
        let (status, body) = send(&f.app, "GET", path, &[TOKEN], "").await;
        assert!(matches!(status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND), "{path}: {status} {body}");
        assert!(!body.to_string().contains("outside\""), "{path} leaked a file: {body}");
    }
    // a symbolic link out of the artifacts dir is not followed
    #[cfg(unix)]
    {
        let link = f.data_dir.join("artifacts/mcp/escape");
        std::os::unix::fs::symlink(&f.data_dir, &link).expect("symlink");
        let (status, body) = send(&f.app, "GET", "/api/artifacts/mcp/escape/outside.json", &[TOKEN], "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, _) = send(&f.app, "GET", "/api/artifacts/mcp/everything/nope/response.json", &[TOKEN], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
