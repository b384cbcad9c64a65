//! The router, called directly (no sockets), and served on 127.0.0.1 for the abuse tests.

mod abuse;
mod knowledge;
mod mcp;
mod shared_limits;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use model::config::{ConfigFile, RoutePolicies, parse};

/// The app over `store` with the seed route policies, an admin and a reader token, and `mcp`.
fn state(store: &store::Store, mcp: Option<Arc<server::McpApi>>) -> server::AppState {
    let routes: RoutePolicies = parse("route_policies.json", ConfigFile::Routes.seed()).expect("seed routes");
    server::AppState {
        store: store.clone(),
        routes: Arc::new(routes),
        admin_token: Some(Arc::from("admin-secret")),
        api_tokens: Arc::new(vec!["reader-token".to_owned()]),
        metrics: Arc::new(|| "# TYPE cogo_bus_claimed_total counter\n".to_owned()),
        agent_id: Arc::from("agent-test"),
        mcp,
        knowledge: None,
        goals: Some(Arc::new(server::GoalsApi {
            artifacts: artifacts::Artifacts::local(&std::env::temp_dir().join("cogo-server-tests"))
                .expect("artifact store"),
            budget: model::config::agent::Budget::default(),
        })),
        shared_limits: None,
    }
}

async fn app() -> (axum::Router, test_support::TestStore) {
    let t = test_support::sqlite().await;
    (server::router(state(&t.store, None), server::Limits::default()), t)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

const TOKEN: (&str, &str) = ("authorization", "Bearer reader-token");
const ADMIN: (&str, &str) = ("x-admin-token", "admin-secret");

#[tokio::test]
async fn health_is_public_and_carries_security_headers() {
    let (app, _t) = app().await;
    let (status, headers, body) = call(&app, "GET", "/healthz", &[]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers["content-security-policy"].to_str().unwrap_or_default().contains("default-src 'self'"));
    let (status, _, body) = call(&app, "GET", "/readyz", &[]).await;
    assert_eq!((status, body["backend"].as_str()), (StatusCode::OK, Some("sqlite")));
    let (status, headers, _) = call(&app, "GET", "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap_or_default().starts_with("text/plain"));
}

#[tokio::test]
async fn deny_by_default_and_tokens() {
    let (app, t) = app().await;
    // not in the allowlist: 404 JSON
    let (status, _, body) = call(&app, "GET", "/api/secret", &[TOKEN]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // token routes
    let (status, _, body) = call(&app, "GET", "/api/messages", &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, _, _) = call(&app, "GET", "/api/messages", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(&app, "GET", "/api/messages", &[TOKEN]).await;
    assert_eq!((status, body["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, _, _) = call(&app, "GET", "/api/messages", &[ADMIN]).await;
    assert_eq!(status, StatusCode::OK, "the admin token opens token routes");
    // admin routes: a reader token is not enough
    let id = t
        .store
        .enqueue(model::NewMessage::new("s", "r", model::Intent::new("noop").expect("i"), json!({})))
        .await
        .expect("enqueue")
        .message
        .id;
    let uri = format!("/api/dlq/{id}/requeue");
    let (status, _, _) = call(&app, "POST", &uri, &[TOKEN]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = call(&app, "POST", &uri, &[ADMIN]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("not dead-lettered"));
}

#[tokio::test]
async fn bad_input_gets_clear_400s() {
    let (app, _t) = app().await;
    for (uri, fragment) in [
        ("/api/messages?status=lost", "status \"lost\" is not one of"),
        ("/api/messages?colour=red", "unknown field `colour`"),
        ("/api/messages?limit=-1", "bad query string"),
        ("/api/messages/not-a-uuid", "is not a message id"),
        ("/api/messages?after=zzz", "invalid page cursor"),
        ("/api/traces/XYZ", "32 lower-case hex"),
        ("/api/events?since=yesterday", "bad query string"),
    ] {
        let (status, _, body) = call(&app, "GET", uri, &[TOKEN]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["code"], "invalid_request");
        assert!(body["message"].as_str().unwrap_or_default().contains(fragment), "{uri}: {body}");
    }
    let (status, _, body) = call(&app, "GET", &format!("/api/messages/{}", model::MessageId::new()), &[TOKEN]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn summary_reports_bus_circuits_and_agents() {
    let (app, t) = app().await;
    t.store
        .enqueue_batch(
            (0..3)
                .map(|n| {
                    model::NewMessage::new(
                        "mcp",
                        "gateway",
                        model::Intent::new("mcp_call").expect("i"),
                        json!({"n": n}),
                    )
                })
                .collect(),
        )
        .await
        .expect("enqueue");
    t.store
        .record_circuit(&store::CircuitState {
            key: "mcp.call.everything.echo.0".into(),
            agent_id: "a1".into(),
            state: "half_open".into(),
            open_until: None,
            updated_at: test_support::epoch(),
        })
        .await
        .expect("circuit");
    let (status, _, body) = call(&app, "GET", "/api/metrics/summary", &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK);
    let summary = &body["summary"];
    assert_eq!(summary["bus"]["ready"], 3);
    assert_eq!(
        summary["circuits"],
        json!({"openByKey": {}, "openCount": 0, "halfOpenKeys": ["mcp.call.everything.echo.0"]})
    );
    assert_eq!(summary["agents"]["online"], 0);
}

#[tokio::test]
async fn live_events_arrive_on_the_sse_stream() {
    let (app, t) = app().await;
    let request = Request::builder()
        .uri("/api/events/stream?service=mcp")
        .header(TOKEN.0, TOKEN.1)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let store = t.store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store
            .enqueue(model::NewMessage::new("mcp", "gateway", model::Intent::new("mcp_call").expect("i"), json!({})))
            .await
            .expect("enqueue");
    });
    let started = std::time::Instant::now();
    let mut text = String::new();
    while !text.contains("mcp_call_scheduled") {
        let frame =
            tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.expect("an event within 10 s");
        let frame = frame.expect("open stream").expect("frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "live events appear promptly, not after a long poll"
    );
    assert!(text.contains("event: mcp_call_scheduled") && text.contains("id: ") && text.contains("data: {"), "{text}");
    let (status, _, body) = call(&app, "GET", "/api/events/stream?after=abc", &[TOKEN]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_client_and_per_token() {
    let t = test_support::sqlite().await;
    let limits = server::Limits { rate_per_second: 1, rate_burst: 2, ..server::Limits::default() };
    let app = server::router(state(&t.store, None), limits);
    let from = |ip: [u8; 4], token: Option<&str>| {
        let mut request = Request::builder().uri("/api/agents");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut request = request.body(Body::empty()).expect("request");
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(server::ClientAddr(std::net::SocketAddr::from((ip, 40000)))));
        request
    };
    for _ in 0..2 {
        let response = app.clone().oneshot(from([10, 0, 0, 1], Some("reader-token"))).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.clone().oneshot(from([10, 0, 0, 1], Some("reader-token"))).await.expect("response");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(wait >= 1, "Retry-After {wait}");
    let body: Value =
        serde_json::from_slice(&refused.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(body["code"], "rate_limited", "{body}");
    // the same token from another address is still over its own limit
    let same_token = app.clone().oneshot(from([10, 0, 0, 2], Some("reader-token"))).await.expect("response");
    assert_eq!(same_token.status(), StatusCode::TOO_MANY_REQUESTS);
    // another address without that token has its own bucket (the route then asks for a token)
    let other = app.clone().oneshot(from([10, 0, 0, 3], None)).await.expect("response");
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
}

/// The OpenAPI document, the router and the route policies agree: every documented operation is a
/// route of the router and allowed by a policy; every policy route is documented, except the ones
/// that are not built yet (and those reach the router's fallback).
#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let (app, _t) = app().await;
    let (status, _, doc) = call(&app, "GET", "/api/openapi.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = std::collections::BTreeSet::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            assert_ne!(operation["x-cogo-access"], "denied", "{method} {path} is documented but denied");
            assert!(operation["responses"].as_object().is_some_and(|r| r.contains_key("400")), "{method} {path}");
            let template = path.replace("{path}", "*").replace('{', ":").replace('}', "");
            documented.insert((method.to_ascii_uppercase(), template));
            if path == "/api/events/stream" {
                continue; // a stream that stays open
            }
            let concrete: String = path
                .split('/')
                .map(|s| {
                    if s == "{path}" {
                        "mcp"
                    } else if s.starts_with('{') {
                        "x"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let (_, _, body) = call(&app, &method.to_ascii_uppercase(), &concrete, &[ADMIN]).await;
            assert_ne!(body["message"], "no such route", "{method} {path} is documented but not routed");
        }
    }
    let not_built: [(&str, &str); 0] = [];
    let policies: RoutePolicies = parse("route_policies.json", ConfigFile::Routes.seed()).expect("seed routes");
    for route in &policies.routes {
        let key = (route.method.clone(), route.path.clone());
        if not_built.contains(&(route.method.as_str(), route.path.as_str())) {
            assert!(!documented.contains(&key), "{key:?} is built now: take it off the not-built list");
            continue;
        }
        assert!(documented.contains(&key), "{} {} is allowed by the policies but not documented", key.0, key.1);
    }
    // schemas are shared through components
    assert!(
        doc["components"]["schemas"].as_object().is_some_and(|s| s.contains_key("Message")),
        "{}",
        doc["components"]
    );
}

/// A tenant token sees only its tenant's messages, events, traces and dead letters, and nothing
/// that cannot be limited to a tenant; a revoked or made-up token is refused.
#[tokio::test]
async fn tenant_tokens_see_only_their_tenant() {
    let (app, t) = app().await;
    let (text, row) = secrets::tokens::generate("acme", "ci", test_support::epoch());
    t.store.create_api_token(row.clone()).await.expect("token");
    let bearer = format!("Bearer {}", text.as_str());
    let tenant_token = ("authorization", bearer.as_str());
    let intent = model::Intent::new("mcp_call").expect("intent");
    let mut ids = Vec::new();
    for tenant in ["acme", "globex"] {
        let mut message = model::NewMessage::new("mcp", "gateway", intent.clone(), json!({"tenant": tenant}));
        message.tenant = tenant.into();
        ids.push(t.store.enqueue(message).await.expect("enqueue").message);
    }
    let (status, _, page) = call(&app, "GET", "/api/messages", &[tenant_token]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let tenants: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|m| m["tenant"].as_str()).collect();
    assert_eq!(tenants, ["acme"]);
    let (_, _, asked) = call(&app, "GET", "/api/messages?tenant=globex", &[tenant_token]).await;
    let asked: Vec<&str> =
        asked["items"].as_array().expect("items").iter().filter_map(|m| m["tenant"].as_str()).collect();
    assert_eq!(asked, ["acme"], "asking for another tenant still yields only the token's own");
    let (status, _, _) = call(&app, "GET", &format!("/api/messages/{}", ids[1].id), &[tenant_token]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's message does not exist for this token");
    let (status, _, _) = call(&app, "GET", &format!("/api/messages/{}", ids[0].id), &[tenant_token]).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, events) = call(&app, "GET", "/api/events", &[tenant_token]).await;
    assert!(events["items"].as_array().expect("items").iter().all(|e| e["tenant"] == "acme"), "{events}");
    let (_, _, trace) = call(&app, "GET", &format!("/api/traces/{}", ids[1].trace_id), &[tenant_token]).await;
    assert_eq!(
        (trace["messages"].as_array().map(Vec::len), trace["events"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    // cross-tenant views are refused to a tenant token; the static reader token still sees them
    for path in ["/api/metrics/summary", "/api/agents", "/api/mcp/config"] {
        let (status, _, body) = call(&app, "GET", path, &[tenant_token]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("tenant acme"), "{body}");
    }
    let (status, _, _) = call(&app, "GET", "/api/metrics/summary", &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK);
    // a made-up token with the right shape, and a revoked one, are refused
    let fake = format!("Bearer cogo_{}_{}", row.id, "0".repeat(48));
    let (status, _, _) = call(&app, "GET", "/api/messages", &[("authorization", fake.as_str())]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(t.store.revoke_api_token(&row.id).await.expect("revoke"));
    let fresh = server::router(state(&t.store, None), server::Limits::default());
    let (status, _, _) = call(&fresh, "GET", "/api/messages", &[tenant_token]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token is refused");
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response =
        app.clone().oneshot(request.body(Body::from(body.to_string())).expect("request")).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn goals_are_submitted_read_approved_and_scoped() {
    let (app, t) = app().await;
    // submitting needs the admin token and a valid body
    let (status, _) = send(&app, "POST", "/api/goals", &[TOKEN], json!({"goal": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "   "})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("goal: must not be empty"), "{body}");
    let (status, body) =
        send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "x", "budget": {"max_steps": 0}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("budget.max_steps"), "{body}");
    let (status, body) = send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "x", "extra": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, goal) = send(
        &app,
        "POST",
        "/api/goals",
        &[ADMIN],
        json!({"goal": "Open the test page and report its title", "tenant": "acme", "budget": {"max_replans": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{goal}");
    assert_eq!(goal["status"], "queued");
    assert_eq!(goal["state"]["budget"]["max_replans"], 1);
    let id = goal["id"].as_str().expect("id").to_owned();
    // the goal's message is on the bus for the orchestrator, under the goal's trace
    let messages = t
        .store
        .messages(
            &store::MessageFilter { trace_id: goal["trace_id"].as_str().map(str::to_owned), ..Default::default() },
            &store::PageRequest::first(10),
        )
        .await
        .expect("messages");
    assert_eq!(messages.items.len(), 1);
    assert_eq!((messages.items[0].service.as_str(), messages.items[0].role.as_str()), ("agent", "orchestrator"));
    assert_eq!(messages.items[0].payload, json!({"goal_id": id}));
    // read and list
    let (status, _, read) = call(&app, "GET", &format!("/api/goals/{id}"), &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((read["goal"]["id"].as_str(), read["decisions"].as_array().map(Vec::len)), (Some(id.as_str()), Some(0)));
    let (status, _, list) = call(&app, "GET", "/api/goals?status=queued", &[TOKEN]).await;
    assert_eq!((status, list["goals"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, _, _) = call(&app, "GET", "/api/goals?status=bogus", &[TOKEN]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(&app, "GET", "/api/goals/not-an-id", &[TOKEN]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(&app, "GET", "/api/goals/01a21103-fa61-700f-93ee-8e564cd0c5a0", &[TOKEN]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // no approval was asked for: a 409 (the goal's state) naming what is pending
    let (status, body) =
        send(&app, "POST", &format!("/api/goals/{id}/approvals/r1.s1"), &[ADMIN], json!({"approve": true})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("pending: none"), "{body}");
    // empty filters are refused; whole numbers may be written as 50.0
    let (status, _, body) = call(&app, "GET", "/api/goals?tenant=", &[TOKEN]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("tenant must be 1 to 128"), "{body}");
    let (status, body) = send(
        &app,
        "POST",
        "/api/goals",
        &[ADMIN],
        json!({"goal": "x", "budget": {"max_steps": 5.0, "max_tokens": 1000}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "x", "budget": {"max_steps": 2.5}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("2.5 is not a whole number"), "{body}");
    let (status, body) = send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "x", "budget": [null]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("budget must be an object"), "{body}");
    let (status, body) = send(&app, "POST", "/api/goals", &[ADMIN], json!({"goal": "a\u{1}b"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // another tenant's token does not see the goal
    let (text, row) = secrets::tokens::generate("globex", "ci", test_support::epoch());
    t.store.create_api_token(row).await.expect("token");
    let bearer = format!("Bearer {}", text.as_str());
    let (status, _, _) = call(&app, "GET", &format!("/api/goals/{id}"), &[("authorization", bearer.as_str())]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, list) = call(&app, "GET", "/api/goals", &[("authorization", bearer.as_str())]).await;
    assert_eq!(list["goals"].as_array().map(Vec::len), Some(0), "{list}");
    // cancel, then nothing more can change it
    let (status, cancelled) = send(&app, "POST", &format!("/api/goals/{id}/cancel"), &[ADMIN], json!({})).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{cancelled}");
    let (status, body) = send(&app, "POST", &format!("/api/goals/{id}/cancel"), &[ADMIN], json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

/// The dashboard's page and assets are public, revalidated with their ETag, and load nothing from
/// elsewhere; unknown assets are 404s.
#[tokio::test]
async fn the_dashboard_is_served_with_etags() {
    let (app, _t) = app().await;
    let (status, headers, body) = call(&app, "GET", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap_or_default().starts_with("text/html"));
    assert!(body.as_str().unwrap_or_default().contains("/assets/app.js"));
    let csp = headers["content-security-policy"].to_str().unwrap_or_default().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("img-src 'self' blob:"), "{csp}");
    for (asset, media) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let (status, headers, _) = call(&app, "GET", &format!("/assets/{asset}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(headers["content-type"].to_str().unwrap_or_default().starts_with(media), "{asset}");
        assert_eq!(headers["cache-control"], "no-cache", "{asset}");
        let etag = headers["etag"].to_str().expect("etag").to_owned();
        let (status, _, _) = call(&app, "GET", &format!("/assets/{asset}"), &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{asset}");
    }
    let (status, _, body) = call(&app, "GET", "/assets/../Cargo.toml", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = call(&app, "GET", "/assets/secrets.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap_or_default().contains("no dashboard asset"), "{body}");
    // API answers are still never stored
    let (_, headers, _) = call(&app, "GET", "/healthz", &[]).await;
    assert_eq!(headers["cache-control"], "no-store");
}

/// MCP calls over time: equal buckets for all tools or one; bad windows, bucket counts and tool
/// names are refused with the reason.
#[tokio::test]
async fn mcp_series_buckets_calls_over_time() {
    let (app, t) = app().await;
    let intent = model::Intent::new("mcp_call").expect("intent");
    let id = t
        .store
        .enqueue(model::NewMessage::new("mcp", "gateway", intent, json!({"toolset": "everything", "tool": "echo"})))
        .await
        .expect("enqueue")
        .message
        .id;
    let claimed = t
        .store
        .claim(&store::ClaimRequest::new("mcp", "gateway", "w", 1, std::time::Duration::from_secs(30)))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let completion = store::Completion {
        detail: Some(json!({"toolset": "everything", "tool": "echo", "latency_ms": 7.5})),
        ..store::Completion::new(id, None)
    };
    t.store.complete("w", vec![completion]).await.expect("complete");
    let since =
        (test_support::epoch() - chrono::Duration::minutes(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, _, body) =
        call(&app, "GET", &format!("/api/metrics/mcp/series?since={since}&buckets=30"), &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = &body["series"];
    assert_eq!(series["bucketMs"], 60_000);
    let buckets = series["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 30);
    assert_eq!(buckets.iter().map(|b| b["calls"].as_u64().unwrap_or(0)).sum::<u64>(), 1);
    assert_eq!(buckets[29]["p50"], 7.5);
    let (_, _, body) =
        call(&app, "GET", &format!("/api/metrics/mcp/series?since={since}&tool=everything.other"), &[TOKEN]).await;
    assert_eq!(
        body["series"]["buckets"].as_array().map(|b| b.iter().map(|x| x["calls"].as_u64().unwrap_or(0)).sum::<u64>()),
        Some(0)
    );
    for (query, says) in [
        ("buckets=0", "buckets is 0"),
        ("buckets=241", "buckets is 241"),
        ("tool=a%20b", "tool is <toolset>.<tool>"),
        ("since=2999-01-01T00:00:00Z", "must be in the past"),
        ("since=yesterday", "bad query string"),
        ("window=1h", "bad query string"),
    ] {
        let (status, _, body) = call(&app, "GET", &format!("/api/metrics/mcp/series?{query}"), &[TOKEN]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(says), "{query}: {body}");
    }
    let (status, _, _) = call(&app, "GET", "/api/metrics/mcp/series", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// `cogo serve --minimal`: health, metrics, summaries and artifacts, under the same security; every
/// other route is 404 and its OpenAPI document names only what it serves.
#[tokio::test]
async fn the_minimal_server_serves_only_its_routes() {
    let t = test_support::sqlite().await;
    let app = server::minimal_router(state(&t.store, None), server::Limits::default());
    for (uri, headers, want) in [
        ("/healthz", &[][..], StatusCode::OK),
        ("/readyz", &[][..], StatusCode::OK),
        ("/api/metrics/summary", &[TOKEN][..], StatusCode::OK),
        ("/api/metrics/summary", &[][..], StatusCode::UNAUTHORIZED),
        ("/api/metrics/mcp/summary", &[TOKEN][..], StatusCode::OK),
        ("/api/metrics/mcp/events", &[TOKEN][..], StatusCode::OK),
        ("/api/messages", &[TOKEN][..], StatusCode::NOT_FOUND),
        ("/api/goals", &[TOKEN][..], StatusCode::NOT_FOUND),
        ("/", &[][..], StatusCode::NOT_FOUND),
    ] {
        let (status, headers, body) = call(&app, "GET", uri, headers).await;
        assert_eq!(status, want, "GET {uri}: {body}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "GET {uri}");
    }
    let (status, _, body) = call(&app, "GET", "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call(&app, "POST", "/api/mcp/enqueue", &[ADMIN]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    let (status, _, doc) = call(&app, "GET", "/api/openapi.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let mut served: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object().expect("ops").keys().map(move |method| (method.clone(), path.clone())).collect::<Vec<_>>()
        })
        .collect();
    served.sort();
    let mut want: Vec<(String, String)> =
        server::MINIMAL_ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    want.sort();
    assert_eq!(served, want);
}
