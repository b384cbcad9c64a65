//! The knowledge routes with the real embedding model: ingest (admin), search and GraphRAG
//! (token), graph walks, and tenant isolation.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::{ADMIN, TOKEN, call, state};

async fn knowledge_app() -> (axum::Router, test_support::TestStore) {
    let t = test_support::sqlite().await;
    let dir = knowledge::embed::minilm_dir(&test_support::models_dir());
    let embedder: Arc<dyn knowledge::Embedder> = Arc::new(knowledge::MiniLm::load(&dir).expect("model"));
    let mut state = state(&t.store, None);
    state.knowledge = Some(Arc::new(server::KnowledgeApi { embedder }));
    (server::router(state, server::Limits::default()), t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_search_graph_and_isolation() {
    let (app, t) = knowledge_app().await;
    let documents = json!({
        "tenant": "acme",
        "project": "docs",
        "documents": [
            { "source": "bus.md", "text": "# Bus\n\nWorkers claim messages with a lease; see [leases](leases.md) and `claim_batch`.\n" },
            { "source": "leases.md", "text": "# Leases\n\nA lease expires unless the worker extends it.\n" },
            { "source": "bus.rs", "text": "pub fn claim_batch() {}\n" }
        ]
    });
    let body = documents.to_string();
    // ingest needs the admin token
    let (status, _) = crate::mcp::send(&app, "POST", "/api/knowledge/ingest", &[TOKEN], &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, report) = crate::mcp::send(&app, "POST", "/api/knowledge/ingest", &[ADMIN], &body).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["indexed"], 3);

    let (status, _, found) =
        call(&app, "GET", "/api/knowledge/search?tenant=acme&query=lease%20expires&threshold=0", &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let hits = found["hits"].as_array().expect("hits");
    assert_eq!(hits[0]["chunk"]["source"], "leases.md", "{found}");
    assert!(hits[0]["chunk"]["start"].is_number() && hits[0]["score"].is_number());

    let (status, _, evidence) = call(
        &app,
        "GET",
        "/api/knowledge/graphrag?tenant=acme&query=workers%20claim%20messages&mode=fulltext&top_k=1",
        &[TOKEN],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{evidence}");
    let sources: Vec<&str> = evidence["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(|e| e["chunk"]["source"].as_str())
        .collect();
    assert!(sources.contains(&"bus.rs"), "the code is reached through the graph: {evidence}");

    let (status, _, graph) = call(
        &app,
        "GET",
        "/api/knowledge/graph/neighbors?tenant=acme&name=bus.md&kind=document&direction=out",
        &[TOKEN],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{graph}");
    assert!(graph["graph"]["nodes"].as_array().expect("nodes").iter().any(|n| n["name"] == "leases.md"), "{graph}");
    let (status, _, path) =
        call(&app, "GET", "/api/knowledge/graph/path?tenant=acme&from=bus.md&to=bus.rs", &[TOKEN]).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    assert_eq!(path["path"]["edges"].as_array().map(Vec::len), Some(2), "{path}");
    let (status, _, stats) = call(&app, "GET", "/api/knowledge/stats?tenant=acme", &[TOKEN]).await;
    assert_eq!((status, stats["documents"].as_i64()), (StatusCode::OK, Some(3)));

    // a tenant token sees only its tenant, whatever it asks for
    let (text, row) = secrets::tokens::generate("globex", "ci", test_support::epoch());
    t.store.create_api_token(row).await.expect("token");
    let bearer = format!("Bearer {}", text.as_str());
    let (status, _, found) = call(
        &app,
        "GET",
        "/api/knowledge/search?tenant=acme&query=lease&threshold=0",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!((found["tenant"].as_str(), found["hits"].as_array().map(Vec::len)), (Some("globex"), Some(0)));
    let (status, _, _) = call(
        &app,
        "GET",
        "/api/knowledge/graph/neighbors?tenant=acme&name=bus.md",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // bad input: named, never a 500
    for uri in [
        "/api/knowledge/search?tenant=acme",
        "/api/knowledge/search?tenant=acme&query=x&top_k=0",
        "/api/knowledge/search?tenant=acme&query=x&alpha=2",
        "/api/knowledge/search?tenant=acme&query=x&mode=semantic",
        "/api/knowledge/graph/neighbors?tenant=acme&name=bus.md&depth=9",
    ] {
        let (status, _, body) = call(&app, "GET", uri, &[TOKEN]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {body}");
    }
    let (status, body) =
        crate::mcp::send(&app, "POST", "/api/knowledge/ingest", &[ADMIN], r#"{"documents": []}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = crate::mcp::send(
        &app,
        "POST",
        "/api/knowledge/ingest",
        &[ADMIN],
        r#"{"documents": [{"source": "x", "text": "y", "kind": "pdfx"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn without_the_model_the_routes_say_how_to_install_it() {
    let (app, _t) = crate::app().await;
    let (status, _, body) = call(&app, "GET", "/api/knowledge/search?query=x", &[TOKEN]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("scripts/models install")), "{body}");
}
