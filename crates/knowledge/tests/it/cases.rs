//! The knowledge behaviour every backend must show.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use knowledge::graph::{PatternStep, TraversalLimits};
use knowledge::search::{SearchMode, SearchRequest, Searcher};
use knowledge::{Indexer, InlineDocument, MiniLm};
use store::knowledge::{Direction, KnowledgeFilter, KnowledgeScope, NewChunk, NewDocument};
use test_support::TestStore;

fn model() -> Arc<MiniLm> {
    static MODEL: OnceLock<Arc<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = knowledge::embed::minilm_dir(&test_support::models_dir());
            Arc::new(MiniLm::load(&dir).expect("loading all-MiniLM-L6-v2"))
        })
        .clone()
}

fn no_progress(_: knowledge::Progress) {}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A small project: docs that link to each other and name code, and the code they name.
fn corpus(dir: &Path) {
    write(
        dir,
        "docs/bus.md",
        "# The bus\n\nWorkers claim messages with a lease. When a lease expires the reaper puts the message back.\n\nSee [leases](leases.md) and the function `claim_batch`.\n\n## Dead letters\n\nA message that fails too often moves to the dead-letter queue, where an operator can requeue it.\n",
    );
    write(
        dir,
        "docs/leases.md",
        "# Leases\n\nA lease gives one worker the exclusive right to work on a message until it expires. Workers extend leases while they work.\n",
    );
    write(
        dir,
        "docs/breaker.md",
        "# Circuit breaker\n\nAfter too many failures the circuit opens and calls fail fast. After a pause a few probe calls go through half-open.\n",
    );
    write(
        dir,
        "src/bus.rs",
        "use store::lease::Lease;\n\n/// Claims ready messages for a worker.\npub fn claim_batch(limit: usize) -> Vec<u64> {\n    Vec::with_capacity(limit)\n}\n\npub struct Reaper {\n    interval: u64,\n}\n",
    );
    write(
        dir,
        "site/index.html",
        "<html><head><title>Gardening</title></head><body><h1>Tomatoes</h1><p>Water tomato plants deeply twice a week and give them full sun.</p></body></html>",
    );
    write(dir, "logo.png", "not indexed");
    write(dir, "node_modules/x/readme.md", "# skipped directory");
}

fn scope() -> KnowledgeScope {
    KnowledgeScope::new("acme", "platform")
}

async fn top_source(searcher: &Searcher<MiniLm>, query: &str, mode: SearchMode) -> String {
    let mut request = SearchRequest::new(query);
    request.mode = mode;
    let hits = searcher.search("acme", &request).await.expect("search");
    hits.first().map(|h| h.chunk.source.clone()).unwrap_or_default()
}

pub async fn indexes_searches_and_reindexes_only_what_changed(test: TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("proj");
    corpus(&root);
    let indexer = Indexer::new(test.store.clone(), model());
    let report = indexer.index_path(&scope(), &root, &no_progress).await.expect("index");
    assert_eq!(report.indexed, 5, "{report:?}");
    assert_eq!(report.seen, 5, "png and node_modules are not documents: {report:?}");
    assert!(report.chunks >= 6 && report.embedded > 0, "{report:?}");
    assert_eq!(report.model, "sentence-transformers/all-MiniLM-L6-v2");

    let searcher = Searcher::new(test.store.clone(), model());
    // full text is exact about words; vectors find meaning without shared words
    assert_eq!(top_source(&searcher, "dead-letter queue requeue", SearchMode::Fulltext).await, "proj/docs/bus.md");
    assert_eq!(
        top_source(&searcher, "how should I look after my vegetable garden", SearchMode::Vector).await,
        "proj/site/index.html"
    );
    assert_eq!(
        top_source(&searcher, "fail fast after repeated errors", SearchMode::Hybrid).await,
        "proj/docs/breaker.md"
    );

    // every hit points at its exact text and carries the retrievers' scores
    let hits = searcher.search("acme", &SearchRequest::new("lease expires reaper")).await.expect("search");
    assert!(!hits.is_empty());
    for hit in &hits {
        let file = std::fs::read_to_string(dir.path().join(&hit.chunk.source)).expect("source file");
        assert_eq!(&file[hit.chunk.start as usize..hit.chunk.end as usize], hit.chunk.text, "offsets of {hit:?}");
        assert!(hit.fulltext.is_some() || hit.vector.is_some());
        assert!(hit.score <= hits[0].score);
        assert!(hit.score >= 0.7 * hits[0].score, "threshold 0.7 relative to the best");
    }

    // nothing changed: nothing embedded or written
    let again = indexer.index_path(&scope(), &root, &no_progress).await.expect("reindex");
    assert_eq!((again.indexed, again.unchanged, again.embedded, again.deleted), (0, 5, 0, 0), "{again:?}");

    // one file changed (one paragraph added), one vanished
    let bus = std::fs::read_to_string(root.join("docs/bus.md")).expect("read");
    std::fs::write(
        root.join("docs/bus.md"),
        format!("{bus}\n## Priorities\n\nHigher priority messages are claimed first.\n"),
    )
    .expect("write");
    std::fs::remove_file(root.join("site/index.html")).expect("remove");
    let changed = indexer.index_path(&scope(), &root, &no_progress).await.expect("reindex");
    assert_eq!((changed.indexed, changed.unchanged, changed.deleted), (1, 3, 1), "{changed:?}");
    assert!(changed.reused >= 1, "unchanged chunks keep their embeddings: {changed:?}");
    assert!(changed.embedded >= 1 && changed.embedded < 4, "{changed:?}");
    let mut request = SearchRequest::new("tomato garden sun water");
    request.threshold = 0.0;
    let hits = searcher.search("acme", &request).await.expect("search");
    assert!(hits.iter().all(|h| h.chunk.source != "proj/site/index.html"), "deleted documents are gone: {hits:?}");
    let stats = test
        .store
        .knowledge_stats(&KnowledgeFilter { tenant: "acme".into(), ..Default::default() })
        .await
        .expect("stats");
    assert_eq!(stats.documents, 4);
    assert_eq!(stats.embedding_dim, Some(384));
    // vanished documents took their entities with them
    let gone = test
        .store
        .knowledge_find_entities(
            &KnowledgeFilter { tenant: "acme".into(), ..Default::default() },
            "proj/site/index.html",
            None,
            5,
        )
        .await
        .expect("entities");
    assert!(gone.is_empty(), "{gone:?}");
}

pub async fn tenants_projects_and_sources_are_isolated(test: TestStore) {
    let indexer = Indexer::new(test.store.clone(), model());
    let doc = |source: &str, text: &str| InlineDocument { source: source.into(), text: text.into(), kind: None };
    indexer
        .index_inline(
            &KnowledgeScope::new("acme", "one"),
            vec![doc("a/secret.md", "# Launch codes\n\nThe launch code is kept in the vault.")],
            &no_progress,
        )
        .await
        .expect("index");
    indexer
        .index_inline(
            &KnowledgeScope::new("acme", "two"),
            vec![doc("b/notes.md", "# Launch plan\n\nThe launch happens on Monday.")],
            &no_progress,
        )
        .await
        .expect("index");
    indexer
        .index_inline(
            &KnowledgeScope::new("globex", "one"),
            vec![doc("a/secret.md", "# Launch codes\n\nGlobex keeps its launch code elsewhere.")],
            &no_progress,
        )
        .await
        .expect("index");
    let searcher = Searcher::new(test.store.clone(), model());
    let mut request = SearchRequest::new("launch code");
    request.threshold = 0.0;
    for mode in [SearchMode::Fulltext, SearchMode::Vector, SearchMode::Hybrid] {
        request.mode = mode;
        let hits = searcher.search("globex", &request).await.expect("search");
        assert_eq!(hits.len(), 1, "{mode:?}: {hits:?}");
        assert_eq!(hits[0].chunk.scope.tenant, "globex");
        let hits = searcher.search("acme", &request).await.expect("search");
        assert!(hits.iter().all(|h| h.chunk.scope.tenant == "acme") && hits.len() == 2, "{mode:?}: {hits:?}");
        request.project = Some("two".into());
        let hits = searcher.search("acme", &request).await.expect("search");
        assert!(hits.iter().all(|h| h.chunk.scope.project == "two") && hits.len() == 1, "{mode:?}: {hits:?}");
        request.project = None;
        request.source_prefix = Some("a/".into());
        let hits = searcher.search("acme", &request).await.expect("search");
        assert!(hits.iter().all(|h| h.chunk.source.starts_with("a/")) && hits.len() == 1, "{mode:?}: {hits:?}");
        request.source_prefix = None;
    }
    // chunks of another tenant are not handed out by id either
    let hits = searcher.search("acme", &SearchRequest::new("launch")).await.expect("search");
    let ids: Vec<i64> = hits.iter().map(|h| h.chunk.id).collect();
    assert!(test.store.knowledge_chunks("globex", &ids).await.expect("chunks").is_empty());
}

pub async fn graph_traversal_follows_structure(test: TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("proj");
    corpus(&root);
    Indexer::new(test.store.clone(), model()).index_path(&scope(), &root, &no_progress).await.expect("index");
    // what a large ingest does before the next walks: fresh planner statistics, nothing else changes
    test.store.knowledge_analyze().await.expect("statistics refreshed");
    let filter = KnowledgeFilter { tenant: "acme".into(), project: Some("platform".into()), source_prefix: None };
    let find = |name: &'static str| {
        let store = test.store.clone();
        let filter = filter.clone();
        async move {
            store.knowledge_find_entities(&filter, name, None, 5).await.expect("find").into_iter().next().expect(name)
        }
    };
    let bus_doc = find("proj/docs/bus.md").await;
    let claim = find("claim_batch").await;
    let code = find("proj/src/bus.rs").await;
    assert_eq!(claim.kind, "symbol");

    // neighbours of the bus doc: its sections, the leases doc it links to, the symbol it names
    let one_hop = knowledge::graph::neighbourhood(
        &test.store,
        "acme",
        &[bus_doc.id],
        Direction::Out,
        &[],
        TraversalLimits { depth: 1, ..Default::default() },
    )
    .await
    .expect("neighbours");
    let names: Vec<&str> = one_hop.nodes.iter().map(|n| n.entity.name.as_str()).collect();
    for expected in ["proj/docs/leases.md", "claim_batch", "proj/docs/bus.md#The bus"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    // two hops either way reach the code file that defines the symbol
    let two_hops = knowledge::graph::neighbourhood(
        &test.store,
        "acme",
        &[bus_doc.id],
        Direction::Both,
        &[],
        TraversalLimits::default(),
    )
    .await
    .expect("2-hop");
    let reached = two_hops.nodes.iter().find(|n| n.entity.id == code.id).expect("the code file is two hops away");
    assert_eq!(reached.depth, 2);
    // fan-out limits cut the walk and say so
    let cut = knowledge::graph::neighbourhood(
        &test.store,
        "acme",
        &[bus_doc.id],
        Direction::Both,
        &[],
        TraversalLimits { depth: 2, fan_out: 1, max_nodes: 2 },
    )
    .await
    .expect("limited");
    assert!(cut.nodes.len() <= 2 && cut.truncated, "{cut:?}");

    // shortest path: doc -references-> claim_batch <-defines- code
    let path = knowledge::graph::shortest_path(
        &test.store,
        "acme",
        bus_doc.id,
        code.id,
        &[],
        TraversalLimits { depth: 4, ..Default::default() },
    )
    .await
    .expect("path")
    .expect("connected");
    let kinds: Vec<&str> = path.edges.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["references", "defines"]);
    assert_eq!(path.nodes.first().map(|n| n.id), Some(bus_doc.id));
    assert_eq!(path.nodes.last().map(|n| n.id), Some(code.id));
    // the gardening page is not connected to the code
    let garden = find("proj/site/index.html").await;
    let none = knowledge::graph::shortest_path(
        &test.store,
        "acme",
        garden.id,
        code.id,
        &[],
        TraversalLimits { depth: 4, ..Default::default() },
    )
    .await
    .expect("path");
    assert!(none.is_none());

    // typed pattern: documents that reference a symbol some file defines
    let pattern = [
        PatternStep::parse(">references:symbol").expect("step"),
        PatternStep::parse("<defines:document").expect("step"),
    ];
    let paths =
        knowledge::graph::match_pattern(&test.store, "acme", &[bus_doc.id], &pattern, 50, 10).await.expect("pattern");
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(
        paths[0].nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        vec!["proj/docs/bus.md", "claim_batch", "proj/src/bus.rs"]
    );
    // other tenants see nothing of it
    let foreign = knowledge::graph::neighbourhood(
        &test.store,
        "globex",
        &[bus_doc.id],
        Direction::Both,
        &[],
        TraversalLimits::default(),
    )
    .await
    .expect("foreign");
    assert!(foreign.edges.is_empty() && foreign.nodes.is_empty(), "{foreign:?}");
    // bad limits are refused
    let err = knowledge::graph::neighbourhood(
        &test.store,
        "acme",
        &[bus_doc.id],
        Direction::Both,
        &[],
        TraversalLimits { depth: 9, ..Default::default() },
    )
    .await
    .expect_err("depth 9");
    assert!(err.to_string().contains("depth"), "{err}");
}

pub async fn graphrag_returns_evidence_with_provenance(test: TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("proj");
    corpus(&root);
    Indexer::new(test.store.clone(), model()).index_path(&scope(), &root, &no_progress).await.expect("index");
    let searcher = Searcher::new(test.store.clone(), model());
    let mut request = SearchRequest::new("which function claims messages for workers");
    request.mode = SearchMode::Fulltext;
    request.source_prefix = Some("proj/docs/".into());
    request.top_k = 1;
    let evidence = searcher.graphrag("acme", &request, TraversalLimits::default(), 20).await.expect("graphrag");
    assert!(!evidence.is_empty());
    assert!(evidence[0].via.is_empty(), "the search hit itself comes first: {evidence:?}");
    // the graph adds the code that defines the symbol the hit names, saying how it got there
    let from_graph =
        evidence.iter().find(|e| e.chunk.source == "proj/src/bus.rs").expect("code reached through the graph");
    assert!(!from_graph.via.is_empty());
    assert_eq!(from_graph.via[0].relation, "mentions");
    assert!(from_graph.score < evidence[0].score);
    for window in evidence.windows(2) {
        assert!(window[0].score >= window[1].score);
    }
}

pub async fn an_index_refuses_another_model_until_rebuilt(test: TestStore) {
    let indexer = Indexer::new(test.store.clone(), model());
    indexer
        .index_inline(
            &scope(),
            vec![InlineDocument { source: "a.md".into(), text: "# A\n\nalpha".into(), kind: None }],
            &no_progress,
        )
        .await
        .expect("index");
    let err = test.store.knowledge_prepare("other-model", 768, false).await.expect_err("another model").to_string();
    assert!(err.contains("all-MiniLM-L6-v2") && err.contains("other-model") && err.contains("--rebuild"), "{err}");
    test.store.knowledge_prepare("other-model", 768, true).await.expect("rebuild");
    let stats = test
        .store
        .knowledge_stats(&KnowledgeFilter { tenant: "acme".into(), ..Default::default() })
        .await
        .expect("stats");
    assert_eq!(
        (stats.documents, stats.embedding_dim, stats.embedding_model.as_deref()),
        (0, Some(768), Some("other-model"))
    );
    // and back: the real model's index works again after its own rebuild
    indexer.prepare(true).await.expect("rebuild for MiniLM");
    indexer
        .index_inline(
            &scope(),
            vec![InlineDocument { source: "a.md".into(), text: "# A\n\nalpha".into(), kind: None }],
            &no_progress,
        )
        .await
        .expect("index again");
}

pub async fn bad_writes_and_queries_get_clear_errors(test: TestStore) {
    let indexer = Indexer::new(test.store.clone(), model());
    indexer.prepare(false).await.expect("prepare");
    let chunk = |dim: usize| NewChunk {
        heading: None,
        text: "x".into(),
        start: 0,
        end: 1,
        content_hash: "h".into(),
        embedding: vec![0.1; dim],
    };
    let document = |chunks: Vec<NewChunk>| NewDocument {
        scope: scope(),
        source: "bad.md".into(),
        kind: "text".into(),
        title: None,
        content_hash: "x".into(),
        bytes: 1,
        chunks,
        entities: vec![],
        relations: vec![],
        mentions: vec![],
    };
    let err = test.store.knowledge_put_document(document(vec![chunk(12)])).await.expect_err("dimension").to_string();
    assert!(err.contains("12-dimensional") && err.contains("384"), "{err}");
    let mut twice = document(vec![chunk(384)]);
    twice.entities =
        vec![store::knowledge::EntityKey::new("symbol", "a"), store::knowledge::EntityKey::new("symbol", "a")];
    let err = test.store.knowledge_put_document(twice).await.expect_err("duplicate entity").to_string();
    assert!(err.contains("listed twice"), "{err}");
    // vector queries: the wrong dimension, a NaN, an empty vector and a zero limit, on both paths
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    for exact in [false, true] {
        let err = test.store.knowledge_vector(&filter, &[0.1; 12], 10, exact).await.expect_err("12 dims").to_string();
        assert!(err.contains("12-dimensional query against a 384-dimensional index"), "{err}");
        let mut nan = vec![0.1; 384];
        nan[7] = f32::NAN;
        for (vector, limit) in [(nan, 10), (Vec::new(), 10), (vec![0.1; 384], 0)] {
            let err = test.store.knowledge_vector(&filter, &vector, limit, exact).await.expect_err("bad").to_string();
            assert!(err.contains("non-empty query of finite numbers and a limit above 0"), "{err}");
        }
    }
    let mut dangling = document(vec![chunk(384)]);
    dangling.relations = vec![store::knowledge::NewRelation { source: 0, target: 3, kind: "x".into() }];
    let err = test.store.knowledge_put_document(dangling).await.expect_err("dangling relation").to_string();
    assert!(err.contains("relation"), "{err}");
    // nothing half-written
    let stats = test
        .store
        .knowledge_stats(&KnowledgeFilter { tenant: "acme".into(), ..Default::default() })
        .await
        .expect("stats");
    assert_eq!((stats.documents, stats.chunks, stats.entities), (0, 0, 0));

    let searcher = Searcher::new(test.store.clone(), model());
    let err = searcher.search("", &SearchRequest::new("x")).await.expect_err("no tenant").to_string();
    assert!(err.contains("tenant"), "{err}");
    let err = searcher.search("acme", &SearchRequest::new("x".repeat(3000))).await.expect_err("long").to_string();
    assert!(err.contains("2000"), "{err}");
    // query syntax never reaches the database's parser
    for query in ["\"unbalanced", "NEAR(a b", "a & | ! b", "*", "'); DROP TABLE knowledge_chunks; --"] {
        let mut request = SearchRequest::new(query);
        request.mode = SearchMode::Fulltext;
        searcher.search("acme", &request).await.unwrap_or_else(|err| panic!("{query:?}: {err}"));
    }
    let err = indexer
        .index_inline(
            &scope(),
            vec![InlineDocument { source: String::new(), text: "x".into(), kind: None }],
            &no_progress,
        )
        .await
        .expect_err("empty source")
        .to_string();
    assert!(err.contains("source"), "{err}");
    let err = serde_json::from_str::<InlineDocument>(r#"{"source": "x", "text": "y", "kind": "pdfx"}"#)
        .expect_err("bad kind")
        .to_string();
    assert!(err.contains("pdfx"), "{err}");
}

pub async fn the_fast_vector_search_agrees_with_the_exact_one(test: TestStore) {
    let documents: Vec<InlineDocument> = (0..120)
        .map(|i| InlineDocument {
            source: format!("n/{i}.txt"),
            text: format!(
                "Note {i}: the {} {} of {} is measured in {}.",
                ["red", "blue", "green", "old", "new", "fast"][i % 6],
                ["server", "queue", "lease", "worker", "cache"][i % 5],
                ["tenant", "project", "cluster", "region"][i % 4],
                ["seconds", "bytes", "messages"][i % 3]
            ),
            kind: None,
        })
        .collect();
    Indexer::new(test.store.clone(), model()).index_inline(&scope(), documents, &no_progress).await.expect("index");
    let searcher = Searcher::new(test.store.clone(), model());
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    let mut agree = 0;
    for query in ["blue queue", "old worker region", "fast cache bytes", "green lease tenant", "new server seconds"] {
        let vector = searcher.embed_query(query).await.expect("embed");
        let exact: Vec<i64> = test
            .store
            .knowledge_vector(&filter, &vector, 10, true)
            .await
            .expect("exact")
            .iter()
            .map(|h| h.chunk_id)
            .collect();
        let fast: Vec<i64> = test
            .store
            .knowledge_vector(&filter, &vector, 10, false)
            .await
            .expect("fast")
            .iter()
            .map(|h| h.chunk_id)
            .collect();
        assert_eq!(exact.len(), 10);
        agree += fast.iter().filter(|id| exact.contains(id)).count();
    }
    assert!(agree >= 48, "recall@10 of the index against exact search: {agree}/50");
}

pub async fn retrieval_evaluation_scores_the_shipped_dataset(test: TestStore) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/retrieval/cogo");
    let dataset = knowledge::eval::Dataset::load(&dir).expect("the shipped dataset loads");
    let report = knowledge::eval::evaluate(
        &test.store,
        model(),
        &KnowledgeScope::new("eval", "cogo"),
        &dataset,
        0.0,
        &no_progress,
    )
    .await
    .expect("evaluate");
    assert_eq!(report.modes.len(), 3);
    for mode in &report.modes {
        assert!((0.0..=1.0).contains(&mode.recall_at_10) && (0.0..=1.0).contains(&mode.ndcg_at_10), "{mode:?}");
        // a real model on a set written for it finds most answers; a broken pipeline finds none
        assert!(mode.recall_at_10 > 0.5, "{mode:?}");
    }
}

/// A minimal HTTP server that answers one request with a recorded OpenAI embeddings response.
async fn recorded_server(status: u16, body: String) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let handle = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let n = socket.read(&mut buffer).await.expect("read");
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length || n == 0 {
                    break;
                }
            }
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write");
        String::from_utf8_lossy(&request).into_owned()
    });
    (url, handle)
}

pub async fn openai_contract() {
    use knowledge::Embedder;
    // the response shape of POST /v1/embeddings (OpenAI API reference), with a 3-dimensional model
    let recorded = r#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.0,3.0,4.0]},{"object":"embedding","index":0,"embedding":[1.0,0.0,0.0]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}}"#;
    let (url, server) = recorded_server(200, recorded.into()).await;
    let provider = knowledge::OpenAiEmbedder::new(
        &url,
        Some("sk-test-secret".into()),
        "text-embedding-3-small",
        3,
        std::time::Duration::from_secs(5),
    )
    .expect("provider");
    assert!(!format!("{provider:?}").contains("sk-test-secret"), "the key is never printed");
    let vectors = provider.embed(vec!["first".into(), "second".into()]).await.expect("embed");
    assert_eq!(vectors, vec![vec![1.0, 0.0, 0.0], vec![0.0, 0.6, 0.8]], "ordered by index and normalised");
    let request = server.await.expect("server");
    assert!(request.starts_with("POST /v1/embeddings HTTP/1.1"), "{request}");
    assert!(request.to_ascii_lowercase().contains("authorization: bearer sk-test-secret"), "{request}");
    let body: serde_json::Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").expect("body") + 4..]).expect("json body");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["input"], serde_json::json!(["first", "second"]));

    // answers that break the contract are refused, never passed on
    for (status, body, expected) in [
        (200, r#"{"data":[{"index":0,"embedding":[1.0,2.0]}]}"#, "2 dimensions"),
        (200, r#"{"data":[]}"#, "got 0"),
        (200, r#"{"unexpected":true}"#, "not the OpenAI shape"),
        (401, r#"{"error":{"message":"Incorrect API key provided"}}"#, "401"),
    ] {
        let (url, _server) = recorded_server(status, body.into()).await;
        let provider =
            knowledge::OpenAiEmbedder::new(&url, None, "m", 3, std::time::Duration::from_secs(5)).expect("provider");
        let err = provider.embed(vec!["x".into()]).await.expect_err(expected).to_string();
        assert!(err.contains(expected), "{err}");
    }
    assert!(knowledge::OpenAiEmbedder::new("ftp://x", None, "m", 3, std::time::Duration::from_secs(1)).is_err());
}

/// PDF files are indexed by the text of their pages (a real PDF printed by Chromium); broken ones and
/// files that only claim to be PDFs are skipped with the reason, and nothing crashes.
pub async fn pdf_files_are_indexed_by_their_text(test: TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("proj");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runbook.pdf");
    std::fs::create_dir_all(root.join("manuals")).expect("mkdir");
    std::fs::copy(&fixture, root.join("manuals/runbook.pdf")).expect("copy the fixture");
    let real = std::fs::read(&fixture).expect("fixture");
    std::fs::write(root.join("manuals/truncated.pdf"), &real[..real.len() / 3]).expect("write");
    std::fs::write(root.join("manuals/empty.pdf"), b"%PDF-1.7\n").expect("write");
    std::fs::write(root.join("manuals/renamed.pdf"), b"just text with the wrong name").expect("write");
    let indexer = Indexer::new(test.store.clone(), model());
    let report = indexer.index_path(&scope(), &root, &no_progress).await.expect("index");
    assert_eq!((report.seen, report.indexed), (4, 1), "{report:?}");
    let reason = |name: &str| {
        report.skipped.iter().find(|s| s.source == format!("proj/manuals/{name}")).map(|s| s.reason.clone())
    };
    assert!(reason("renamed.pdf").is_some_and(|r| r.contains("not a PDF file")), "{report:?}");
    for broken in ["truncated.pdf", "empty.pdf"] {
        let why = reason(broken).unwrap_or_else(|| panic!("{broken} skipped: {report:?}"));
        assert!(why.starts_with("not a readable PDF") || why.contains("has no text"), "{broken}: {why}");
    }

    let searcher = Searcher::new(test.store.clone(), model());
    assert_eq!(top_source(&searcher, "half-open probe", SearchMode::Fulltext).await, "proj/manuals/runbook.pdf");
    assert_eq!(
        top_source(&searcher, "what to do when a tool server keeps failing", SearchMode::Vector).await,
        "proj/manuals/runbook.pdf"
    );
    let mut request = SearchRequest::new("Zürich naïve retries");
    request.mode = SearchMode::Fulltext;
    request.threshold = 0.0;
    let hits = searcher.search("acme", &request).await.expect("search");
    let hit = hits.first().expect("a hit on the second page's accented words");
    assert!(hit.chunk.text.contains("Zürich") && hit.chunk.text.contains("naïve"), "{}", hit.chunk.text);
    // the title is the first line; the reader may split a large heading's first letter off (kerning)
    let title = hit.chunk.title.clone().expect("a title").replace(' ', "");
    assert_eq!(title, "Circuitbreakerrunbook");
    // the text of both pages, in order
    let all = test
        .store
        .knowledge_chunks("acme", &hits.iter().map(|h| h.chunk.id).collect::<Vec<_>>())
        .await
        .expect("chunks");
    assert!(all.iter().all(|c| c.source == "proj/manuals/runbook.pdf"));

    // unchanged PDFs are not read again; the broken ones are still skipped with their reasons
    let again = indexer.index_path(&scope(), &root, &no_progress).await.expect("reindex");
    assert_eq!((again.indexed, again.unchanged, again.skipped.len()), (0, 1, 3), "{again:?}");
}

/// An LLM under the seed policies (retries and breaker of `llm.call.<provider>`).
fn guarded(provider: Arc<dyn llm::Provider>) -> Arc<dyn llm::LlmClient> {
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    Arc::new(llm::Llm::new(provider, policies, breakers))
}

/// With an LLM configured, entities and relations come from the text too (the real local model):
/// only names the text holds are kept, each linked to its document and chunk; unchanged documents
/// are not sent again; a model that cannot be reached costs nothing but its entities.
pub async fn llm_extraction_keeps_only_what_the_text_names(test: TestStore) {
    let text = "# Platform team\n\nAlice Johnson leads the platform team at Acme Corporation in Berlin. The team runs \
the COGO gateway, which calls the Figma server and the Playwright browser through circuit breakers.\n\n## Storage\n\n\
The gateway writes its artifacts to Amazon S3. PostgreSQL stores the message bus.\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("proj");
    write(&root, "team.md", text);
    let local = llm::local::LocalModel::load(&test_support::llm_model(), llm::local::LocalOptions::default())
        .expect("the local model loads");
    let extractor = knowledge::LlmExtractor::new(guarded(Arc::new(local)));
    let indexer = Indexer::new(test.store.clone(), model()).with_llm_extraction(extractor);
    let report = indexer.index_path(&scope(), &root, &no_progress).await.expect("index");
    let llm = report.llm.clone().expect("an LLM report");
    assert_eq!((llm.chunks, llm.failed), (2, 0), "{llm:?}");
    assert!(llm.entities >= 1, "the model names someone or something in this text: {llm:?}");
    assert!(llm.model.starts_with("local/SmolLM2"), "{llm:?}");

    let filter = KnowledgeFilter { tenant: "acme".into(), project: Some("platform".into()), source_prefix: None };
    let document = test.store.knowledge_find_entities(&filter, "proj/team.md", None, 5).await.expect("find");
    let document = document.into_iter().find(|e| e.kind == "document").expect("the document entity");
    let around = knowledge::graph::neighbourhood(
        &test.store,
        "acme",
        &[document.id],
        Direction::Out,
        &[],
        TraversalLimits { depth: 1, ..Default::default() },
    )
    .await
    .expect("neighbours");
    let found: Vec<_> =
        around.nodes.iter().filter(|n| knowledge::llm_extract::KINDS.contains(&n.entity.kind.as_str())).collect();
    assert_eq!(found.len(), llm.entities, "{around:?}");
    for node in &found {
        assert!(
            text.to_lowercase().contains(&node.entity.name.to_lowercase()),
            "{} is not in the text",
            node.entity.name
        );
        assert!(
            around.edges.iter().any(|e| e.source == document.id && e.target == node.entity.id && e.kind == "mentions"),
            "{} is linked to its document",
            node.entity.name
        );
    }
    // the structural graph is still there
    assert!(around.nodes.iter().any(|n| n.entity.name == "proj/team.md#Platform team"));
    // nothing changed: nothing asked again
    let again = indexer.index_path(&scope(), &root, &no_progress).await.expect("reindex");
    assert_eq!((again.unchanged, again.llm.as_ref().map_or(0, |l| l.chunks)), (1, 0), "{again:?}");

    // a model nobody answers for: the document is indexed with its structure, the failure reported
    let unreachable = llm::openai::OpenAiProvider::new(llm::openai::OpenAiConfig::new("http://127.0.0.1:9/v1", "none"))
        .expect("provider");
    let indexer = Indexer::new(test.store.clone(), model())
        .with_llm_extraction(knowledge::LlmExtractor::new(guarded(Arc::new(unreachable))).with_max_chunks(1));
    write(&root, "other.md", "# Other\n\nBob Smith maintains the dashboard.\n");
    let report = indexer.index_path(&scope(), &root, &no_progress).await.expect("indexed all the same");
    let llm = report.llm.expect("an LLM report");
    assert_eq!((report.indexed, llm.chunks, llm.failed), (1, 0, 1), "{llm:?}");
    assert!(llm.first_error.as_deref().is_some_and(|e| e.contains("127.0.0.1:9")), "{llm:?}");
    let other = test.store.knowledge_find_entities(&filter, "proj/other.md#Other", None, 5).await.expect("find");
    assert_eq!(other.len(), 1, "the structural graph is written");
}

/// The `indexing` role: an `index` message may ask for LLM extraction; a worker without an LLM
/// refuses it as invalid input (not retried), and indexes the same documents without it.
pub async fn the_indexing_role_runs_llm_extraction_only_with_an_llm(test: TestStore) {
    use worker::Handler as _;
    let handler = knowledge::roles::IndexingHandler::new(test.store.clone(), model());
    let message = |llm_extraction: bool| {
        let store = test.store.clone();
        async move {
            let payload = serde_json::json!({
                "project": "platform",
                "documents": [{ "source": "notes/a.md", "text": "# A\n\nAlice Johnson runs the gateway.\n" }],
                "llm_extraction": llm_extraction
            });
            let new =
                model::NewMessage::new("knowledge", "indexing", model::Intent::new("index").expect("intent"), payload);
            store.enqueue(new).await.expect("enqueue").message
        }
    };
    let refused = handler.handle(message(true).await).await.expect_err("no LLM here");
    assert_eq!(refused.kind, model::ErrorKind::InvalidInput, "{}", refused.message);
    assert!(refused.message.contains("no LLM"), "{}", refused.message);
    let done = handler.handle(message(false).await).await.expect("indexed");
    assert_eq!(done.result.expect("a report")["indexed"], 1);
}

/// A document of plain-text chunks, one a text, all with the same 4-dimensional embedding.
fn text_document(scope: KnowledgeScope, source: String, texts: Vec<String>) -> NewDocument {
    NewDocument {
        scope,
        source,
        kind: "text".into(),
        title: None,
        content_hash: "h".into(),
        bytes: 1,
        chunks: texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| NewChunk {
                heading: None,
                end: text.len() as i64,
                text,
                start: 0,
                content_hash: format!("{i}"),
                embedding: vec![0.5, 0.5, 0.5, 0.5],
            })
            .collect(),
        entities: vec![],
        relations: vec![],
        mentions: vec![],
    }
}

/// 20,000 chunks of tenant `acme` (a few of tenant `other`): `alpha` in every chunk, `beta` in
/// 3 of 10, `kappa` in 40 and `sigma` in 20 (always with `alpha` and `beta`), `zeta` in 3.
async fn large_fulltext_corpus(test: &TestStore) -> Vec<i64> {
    let store = &test.store;
    store.knowledge_prepare("synthetic-4d", 4, false).await.expect("prepare");
    for document in 0..20 {
        let texts = (0..1000)
            .map(|i| {
                let n = document * 1000 + i;
                let mut text = format!("alpha word{} filler{}", n % 997, n % 89);
                let (kappa, sigma) = (n % 500 == 7, n % 1000 == 250);
                if n % 10 < 3 || kappa || sigma {
                    text.push_str(" beta");
                }
                if kappa {
                    text.push_str(" kappa");
                }
                if sigma {
                    text.push_str(" sigma");
                }
                if n % 7000 == 11 {
                    text.push_str(" zeta");
                }
                text
            })
            .collect();
        store
            .knowledge_put_document(text_document(scope(), format!("big/{document:02}.txt"), texts))
            .await
            .expect("write");
    }
    let other = KnowledgeScope::new("other", "platform");
    let texts = (0..50).map(|_| "alpha beta kappa sigma kappa sigma".to_owned()).collect();
    store.knowledge_put_document(text_document(other, "big/other.txt".into(), texts)).await.expect("write other");
    store.knowledge_analyze().await.expect("analyze");
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    store
        .knowledge_fulltext_every_match(&filter, "kappa sigma", 1000)
        .await
        .expect("rare")
        .iter()
        .map(|h| h.chunk_id)
        .collect()
}

pub async fn full_text_prunes_common_words_but_keeps_the_best_hits(test: TestStore) {
    let rare = large_fulltext_corpus(&test).await;
    assert_eq!(rare.len(), 60, "chunks of acme with kappa or sigma");
    let store = &test.store;
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    // every word counted: the 60 chunks with a rare word rank first, they also have alpha and beta
    let every: Vec<i64> = store
        .knowledge_fulltext_every_match(&filter, "alpha beta kappa sigma", 60)
        .await
        .expect("every match")
        .iter()
        .map(|h| h.chunk_id)
        .collect();
    let pruned = store.knowledge_fulltext(&filter, "alpha beta kappa sigma", 60).await.expect("pruned");
    let mut pruned_ids: Vec<i64> = pruned.iter().map(|h| h.chunk_id).collect();
    let (mut every_sorted, rare_sorted) = (every.clone(), {
        let mut r = rare.clone();
        r.sort();
        r
    });
    every_sorted.sort();
    pruned_ids.sort();
    assert_eq!(every_sorted, rare_sorted, "unpruned, the chunks with rare words rank first");
    assert_eq!(pruned_ids, rare_sorted, "pruned: the same chunks, none of tenant other");
    assert!(pruned.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    // a wider window than the rare words fill: common words are candidates again
    let wide = store.knowledge_fulltext(&filter, "alpha beta kappa sigma", 200).await.expect("wide");
    assert_eq!(wide.len(), 200, "the rare words find 60 of acme's chunks, fewer than the 200 wanted");
    assert!(rare.iter().all(|id| wide.iter().any(|h| h.chunk_id == *id)), "the rare chunks are among them");
    // the rare words find 3 chunks, fewer than wanted: common words stay candidates
    let few = store.knowledge_fulltext(&filter, "alpha zeta", 50).await.expect("few");
    assert_eq!(few.len(), 50);
    let with_zeta = store.knowledge_fulltext_every_match(&filter, "zeta", 50).await.expect("zeta");
    assert_eq!(with_zeta.len(), 3);
    assert!(with_zeta.iter().all(|z| few.iter().any(|h| h.chunk_id == z.chunk_id)), "the zeta chunks are among them");
    // another tenant's chunks never come back, whichever path the search takes
    let other = KnowledgeFilter { tenant: "other".into(), ..Default::default() };
    let theirs = store.knowledge_fulltext(&other, "alpha beta kappa sigma", 60).await.expect("other tenant");
    assert_eq!(theirs.len(), 50);
    assert!(theirs.iter().all(|h| !rare.contains(&h.chunk_id)));
    // a project filter that matches nothing
    let none = KnowledgeFilter { tenant: "acme".into(), project: Some("nope".into()), ..Default::default() };
    assert!(store.knowledge_fulltext(&none, "alpha beta kappa sigma", 10).await.expect("no project").is_empty());
}

/// Full text weighs a word by how rare it is (BM25 on both backends): one rare word outranks two
/// common ones, even in a long chunk, a shorter chunk with the same rare word ranks above a longer
/// one, and a query of words no chunk holds (on PostgreSQL, stop words) finds nothing.
pub async fn full_text_ranks_rare_words_above_common_ones(test: TestStore) {
    let store = &test.store;
    store.knowledge_prepare("synthetic-4d", 4, false).await.expect("prepare");
    // 40 chunks with the two common words, then the rare word: alone, with a common word, in a
    // long chunk
    let mut texts: Vec<String> = (0..40).map(|i| format!("harbour crane filler{i}")).collect();
    texts.push("lighthouse filler".into());
    texts.push("lighthouse harbour filler".into());
    texts.push(format!("lighthouse {}", (0..30).map(|i| format!("padding{i}")).collect::<Vec<_>>().join(" ")));
    let document = text_document(scope(), "docs/ranking.txt".into(), texts);
    store.knowledge_put_document(document).await.expect("write");
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    let hits = store.knowledge_fulltext(&filter, "harbour crane lighthouse", 50).await.expect("search");
    assert_eq!(hits.len(), 43, "every chunk has a query word");
    let ids: Vec<i64> = store
        .knowledge_fulltext_every_match(&filter, "lighthouse", 10)
        .await
        .expect("rare word")
        .iter()
        .map(|h| h.chunk_id)
        .collect();
    assert_eq!(ids.len(), 3);
    let texts_of = store
        .knowledge_chunks("acme", &hits.iter().take(3).map(|h| h.chunk_id).collect::<Vec<_>>())
        .await
        .expect("chunks");
    let text = |id: i64| texts_of.iter().find(|c| c.id == id).map(|c| c.text.clone()).expect("a top chunk");
    let mut first_two = vec![text(hits[0].chunk_id), text(hits[1].chunk_id)];
    first_two.sort();
    assert_eq!(first_two, ["lighthouse filler", "lighthouse harbour filler"], "the rare word first: {hits:?}");
    assert!(
        text(hits[2].chunk_id).starts_with("lighthouse padding0"),
        "the long chunk, still above the common words: {hits:?}"
    );
    assert!(hits[2].score > hits[3].score && hits[1].score > hits[2].score, "shorter ranks higher: {hits:?}");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    assert!(store.knowledge_fulltext(&filter, "the and of", 10).await.expect("stop words").is_empty());
}

/// A tenant with a small share of the graph, far from the query, gets as many hits as it asks for
/// (the fast search walks again until enough pass the filter), the same as the exact scan's, and
/// never another tenant's.
pub async fn a_small_tenant_far_from_the_query_gets_full_results(test: TestStore) {
    let store = &test.store;
    store.knowledge_prepare("synthetic-8d", 8, false).await.expect("prepare");
    // deterministic noise in [-1, 1)
    let noise = |i: usize, d: usize| (((i * 31 + d * 17) * 2_654_435_761) % 10_007) as f32 / 5_003.5 - 1.0;
    let unit = |mut v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let document = |tenant: &str, count: usize, base: [f32; 8]| NewDocument {
        scope: KnowledgeScope::new(tenant, "p"),
        source: format!("{tenant}.txt"),
        kind: "text".into(),
        title: None,
        content_hash: tenant.into(),
        bytes: 1,
        chunks: (0..count)
            .map(|i| NewChunk {
                heading: None,
                text: format!("{tenant} {i}"),
                start: 0,
                end: 1,
                content_hash: format!("{i}"),
                embedding: unit((0..8).map(|d| base[d] + 0.3 * noise(i, d)).collect()),
            })
            .collect(),
        entities: vec![],
        relations: vec![],
        mentions: vec![],
    };
    // 600 chunks of `big` around the query, 30 of `small` off to one side
    store.knowledge_put_document(document("big", 600, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])).await.expect("big");
    store.knowledge_put_document(document("small", 30, [0.3, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])).await.expect("small");
    store.knowledge_analyze().await.expect("analyze");
    let query = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let small = KnowledgeFilter { tenant: "small".into(), ..Default::default() };
    let fast = store.knowledge_vector(&small, &query, 20, false).await.expect("fast");
    let exact = store.knowledge_vector(&small, &query, 20, true).await.expect("exact");
    assert_eq!(fast.len(), 20, "{fast:?}");
    let ids = |hits: &[store::knowledge::ScoredChunk]| hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>();
    assert_eq!(ids(&fast), ids(&exact));
    assert!(fast.windows(2).all(|w| w[0].score >= w[1].score), "{fast:?}");
    let chunks = store.knowledge_chunks("small", &ids(&fast)).await.expect("chunks");
    assert_eq!(chunks.len(), 20, "every hit is the small tenant's");
    assert!(chunks.iter().all(|c| c.text.starts_with("small ")), "{chunks:?}");
    // the large tenant still gets its nearest by the plain walk
    let big = KnowledgeFilter { tenant: "big".into(), ..Default::default() };
    let fast = store.knowledge_vector(&big, &query, 20, false).await.expect("big fast");
    let exact = store.knowledge_vector(&big, &query, 20, true).await.expect("big exact");
    assert_eq!(ids(&fast), ids(&exact));
}
