//! The HTTP API's request bodies and query strings, through the real router (`server::router`) over
//! a fresh SQLite store, called in-process with `tower::ServiceExt::oneshot` (no sockets, no model,
//! no network: the MCP toolset has no transport and the embedder hashes words).
//!
//! Input: byte 0 chooses the route (`% ROUTES.len()`) and the token (`/ ROUTES.len() % 4`: admin,
//! admin, reader, none); each `{}` of the route's path takes one line (percent-encoded; `@goal` and
//! `@trace` stand for a goal created at start-up); the rest is the JSON body of a POST or the query
//! string of a GET.
//! Properties: no answer is a 5xx; every error answer is JSON `{code, message}`.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

/// Method and path; `{}` takes a line of the input, a trailing `?` the rest as the query string.
const ROUTES: [(&str, &str); 32] = [
    ("POST", "/api/mcp/enqueue"),
    ("POST", "/api/mcp/fuzz/{}"),
    ("POST", "/api/mcp/{}/{}"),
    ("POST", "/api/goals"),
    ("POST", "/api/goals/{}/approvals/{}"),
    ("POST", "/api/goals/{}/cancel"),
    ("POST", "/api/knowledge/ingest"),
    ("POST", "/api/dlq/{}/requeue"),
    ("POST", "/api/metrics/snapshot"),
    ("GET", "/api/messages?"),
    ("GET", "/api/messages/{}"),
    ("GET", "/api/events?"),
    ("GET", "/api/dlq?"),
    ("GET", "/api/traces/{}"),
    ("GET", "/api/goals?"),
    ("GET", "/api/goals/{}"),
    ("GET", "/api/knowledge/search?"),
    ("GET", "/api/knowledge/graphrag?"),
    ("GET", "/api/knowledge/graph/neighbors?"),
    ("GET", "/api/knowledge/graph/path?"),
    ("GET", "/api/knowledge/stats?"),
    ("GET", "/api/metrics/mcp/summary?"),
    ("GET", "/api/metrics/mcp/series?"),
    ("GET", "/api/metrics/mcp/events?"),
    ("GET", "/api/metrics/mcp/artifacts/summary"),
    ("GET", "/api/artifacts/{*}"),
    ("GET", "/api/mcp/ping/{}/{}"),
    ("GET", "/api/mcp/config"),
    ("GET", "/api/agents"),
    ("GET", "/api/metrics/summary"),
    ("PUT", "/api/goals"),
    ("DELETE", "/api/messages/{}"),
];

const ADMIN_TOKEN: &str = "fuzz-admin-token";
const READER_TOKEN: &str = "fuzz-reader-token";

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let (method, template) = ROUTES[usize::from(*selector) % ROUTES.len()];
    let token = usize::from(*selector) / ROUTES.len() % 4;
    let app = app();
    let (uri, body) = request_parts(template, rest, app);
    let mut request = Request::builder().method(method).uri(&uri);
    request = match token {
        0 | 1 => request.header("x-admin-token", ADMIN_TOKEN),
        2 => request.header("authorization", format!("Bearer {READER_TOKEN}")),
        _ => request,
    };
    if method != "GET" {
        request = request.header("content-type", "application/json");
    }
    let Ok(request) = request.body(Body::from(body)) else { return };
    let (status, answer) = runtime().block_on(async {
        let response = app.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        (status, bytes)
    });
    let text = String::from_utf8_lossy(&answer);
    assert!(!status.is_server_error(), "{method} {uri} answered {status}: {text}");
    if status.is_client_error() {
        let error: Value = serde_json::from_slice(&answer).unwrap_or_else(|err| {
            panic!("{method} {uri} answered {status} with a body that is not JSON ({err}): {text}")
        });
        let fields = error.as_object().map(|map| map.keys().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(fields, Some(vec!["code", "message"]), "{method} {uri} answered {status}: {text}");
        assert!(error["code"].is_string() && error["message"].is_string(), "{method} {uri}: {text}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            panic!("{method} {uri} was rate limited with rate limits off");
        }
    }
});

/// The URI (path parameters from the first lines, the query string from the rest of a GET) and the
/// body (the rest of a POST).
fn request_parts(template: &str, mut rest: &[u8], app: &App) -> (String, Vec<u8>) {
    let mut uri = String::new();
    let mut parts = template.split('{');
    uri.push_str(parts.next().unwrap_or_default());
    for part in parts {
        let (wildcard, tail) = match part.strip_prefix("*}") {
            Some(tail) => (true, tail),
            None => (false, part.strip_prefix('}').unwrap_or(part)),
        };
        let line = match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let line: &[u8] = match line {
            b"@goal" => app.goal_id.as_bytes(),
            b"@trace" => app.trace_id.as_bytes(),
            other => other,
        };
        encode(&mut uri, line, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (wildcard && b == b'/'));
        uri.push_str(tail);
    }
    if let Some(path) = uri.strip_suffix('?') {
        let mut query = path.to_owned();
        query.push('?');
        // what a URI may carry in its query as it is (`%` too: bad escapes are the parser's problem)
        encode(&mut query, rest, |b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b));
        return (query, Vec::new());
    }
    (uri, rest.to_vec())
}

/// Appends `bytes`, percent-encoding those `keep` refuses.
fn encode(out: &mut String, bytes: &[u8], keep: impl Fn(u8) -> bool) {
    for &byte in bytes {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The router, a goal to refer to, and what keeps the store alive.
struct App {
    router: axum::Router,
    goal_id: String,
    trace_id: String,
    _store: test_support::TestStore,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
    })
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| runtime().block_on(start()))
}

/// The application as `cogo serve` wires it, over a fresh SQLite store in the temporary directory
/// (scripts/fuzz points TMPDIR at a scratch directory it removes), with rate limits off.
async fn start() -> App {
    let store = test_support::sqlite().await;
    let data_dir = std::env::temp_dir().join(format!("cogo-fuzz-http-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).expect("a data directory");
    let routes: model::config::RoutePolicies =
        model::config::parse("route_policies.json", model::config::ConfigFile::Routes.seed()).expect("seed routes");
    let retry: model::config::RetryFile = model::config::parse("retry", "{}").expect("empty retry file");
    let breaker: model::config::BreakerFile = model::config::parse("breaker", "{}").expect("empty breaker file");
    let policies = Arc::new(resilience::Policies::new(&retry, &breaker));
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    // a toolset without a usable transport: its calls fail at once, with no process and no socket
    let toolsets: std::collections::BTreeMap<String, model::config::mcp::Toolset> =
        [("fuzz".to_owned(), model::config::mcp::Toolset::at_url("unix:/nowhere", 1_000))].into();
    let artifacts = artifacts::Artifacts::local(&data_dir).expect("an artifact store");
    let gateway = Arc::new(mcp::Gateway::new(toolsets.clone(), breakers, artifacts.clone(), "fuzz"));
    let state = server::AppState {
        store: store.store.clone(),
        routes: Arc::new(routes),
        admin_token: Some(Arc::from(ADMIN_TOKEN)),
        api_tokens: Arc::new(vec![READER_TOKEN.to_owned()]),
        metrics: Arc::new(String::new),
        agent_id: Arc::from("agent-fuzz"),
        mcp: Some(Arc::new(server::McpApi {
            gateway,
            policies,
            config: model::config::McpConfig { toolsets },
            artifacts: artifacts.clone(),
        })),
        knowledge: Some(Arc::new(server::KnowledgeApi { embedder: Arc::new(HashEmbedder) })),
        goals: Some(Arc::new(server::GoalsApi { artifacts, budget: model::config::agent::Budget::default() })),
        shared_limits: None,
    };
    let limits = server::Limits { rate_per_second: 0, ..server::Limits::default() };
    let router = server::router(state, limits);
    let request = Request::builder()
        .method("POST")
        .uri("/api/goals")
        .header("x-admin-token", ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(Body::from(r#"{"goal": "report the title of https://example.com"}"#))
        .expect("a goal request");
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let bytes = response.into_body().collect().await.expect("a goal answer").to_bytes();
    let goal: Value = serde_json::from_slice(&bytes).expect("a goal as JSON");
    let (goal_id, trace_id) = (goal["id"].as_str(), goal["trace_id"].as_str());
    let (Some(goal_id), Some(trace_id)) = (goal_id, trace_id) else { panic!("no goal created: {goal}") };
    App { router, goal_id: goal_id.to_owned(), trace_id: trace_id.to_owned(), _store: store }
}

/// Unit vectors from the bytes of a text: enough for the index and search paths, no model.
#[derive(Debug)]
struct HashEmbedder;

impl knowledge::Embedder for HashEmbedder {
    fn model(&self) -> &str {
        "fuzz/byte-hash"
    }

    fn dim(&self) -> usize {
        8
    }

    fn embed<'a>(&'a self, texts: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<f32>>, knowledge::Error>> {
        Box::pin(async move {
            Ok(texts
                .iter()
                .map(|text| {
                    let mut vector = [1.0f32; 8];
                    for (index, byte) in text.bytes().enumerate() {
                        vector[(index + usize::from(byte)) % 8] += f32::from(byte) / 255.0;
                    }
                    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
                    vector.iter().map(|v| v / norm).collect()
                })
                .collect())
        })
    }
}
