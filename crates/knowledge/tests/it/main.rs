//! The knowledge conformance suite: every case runs with the real MiniLM model on SQLite and on
//! PostgreSQL with pgvector.

mod cases;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(test_support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(test_support::postgres_vector().await).await;
                }
            )*
        }
    };
}

conformance!(
    indexes_searches_and_reindexes_only_what_changed,
    tenants_projects_and_sources_are_isolated,
    graph_traversal_follows_structure,
    graphrag_returns_evidence_with_provenance,
    an_index_refuses_another_model_until_rebuilt,
    bad_writes_and_queries_get_clear_errors,
    the_fast_vector_search_agrees_with_the_exact_one,
    retrieval_evaluation_scores_the_shipped_dataset,
    pdf_files_are_indexed_by_their_text,
    llm_extraction_keeps_only_what_the_text_names,
    the_indexing_role_runs_llm_extraction_only_with_an_llm,
    full_text_prunes_common_words_but_keeps_the_best_hits,
    full_text_ranks_rare_words_above_common_ones,
    a_small_tenant_far_from_the_query_gets_full_results,
);

/// The bus's PostgreSQL has no pgvector: the knowledge index says so and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_pgvector_is_explained() {
    let test = test_support::postgres().await;
    let available: Option<String> = sqlx_free_probe(&test.url).await;
    let result = test.store.knowledge_prepare("m", 3, false).await;
    match available {
        Some(_) => assert!(result.is_ok(), "{result:?}"),
        None => {
            let err = result.expect_err("no pgvector").to_string();
            assert!(err.contains("pgvector"), "{err}");
        }
    }
}

/// Whether the server of `url` offers the vector extension (the bus server normally does not).
async fn sqlx_free_probe(url: &str) -> Option<String> {
    let output = tokio::process::Command::new("psql")
        .args([url, "-qAt", "-c", "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The OpenAI-compatible provider against a recorded exchange of the real API: the request it
/// sends and the response shape it accepts or rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embeddings_follow_the_recorded_contract() {
    cases::openai_contract().await;
}

/// An index made before the half-precision graph (`vector_cosine_ops`) is rebuilt on `halfvec` by
/// the migration, once, and searches through it find the nearest chunk first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_full_precision_hnsw_index_is_rebuilt_on_half_precision() {
    use store::knowledge::{KnowledgeFilter, KnowledgeScope, NewChunk, NewDocument};
    let test = test_support::postgres_vector().await;
    let store = &test.store;
    store.knowledge_prepare("synthetic-3d", 3, false).await.expect("prepare");
    let vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]];
    let chunks = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| NewChunk {
            heading: None,
            text: format!("chunk {i}"),
            start: 0,
            end: 7,
            content_hash: format!("{i}"),
            embedding: v.to_vec(),
        })
        .collect();
    let document = NewDocument {
        scope: KnowledgeScope::new("acme", "p"),
        source: "a.txt".into(),
        kind: "text".into(),
        title: None,
        content_hash: "h".into(),
        bytes: 7,
        chunks,
        entities: vec![],
        relations: vec![],
        mentions: vec![],
    };
    store.knowledge_put_document(document).await.expect("write");
    let definition =
        |url: String| async move { psql(&url, "SELECT pg_get_indexdef('knowledge_embeddings_hnsw'::regclass)").await };
    assert!(definition(test.url.clone()).await.contains("halfvec(3)"), "a new index is built on halfvec");
    // the index as an older version made it, and the migration not yet applied
    psql(
        &test.url,
        "DROP INDEX knowledge_embeddings_hnsw; \
         CREATE INDEX knowledge_embeddings_hnsw ON knowledge_embeddings USING hnsw (embedding vector_cosine_ops); \
         DELETE FROM _sqlx_migrations WHERE version = 10",
    )
    .await;
    assert!(!definition(test.url.clone()).await.contains("halfvec"));
    store.migrate().await.expect("migrate");
    assert!(definition(test.url.clone()).await.contains("halfvec(3)"), "the migration rebuilt the index");
    let filter = KnowledgeFilter { tenant: "acme".into(), ..Default::default() };
    for exact in [false, true] {
        let hits = store.knowledge_vector(&filter, &[0.5, 0.9, 0.0], 2, exact).await.expect("search");
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert!(hits[0].score > hits[1].score, "{hits:?}");
        let best = store.knowledge_chunks("acme", &[hits[0].chunk_id]).await.expect("chunks");
        assert_eq!(best[0].text, "chunk 2", "exact: {exact}");
    }
}

/// Runs `sql` with `psql` against `url` and returns what it printed (panics when it fails).
async fn psql(url: &str, sql: &str) -> String {
    let output = tokio::process::Command::new("psql")
        .args([url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .await
        .expect("psql runs");
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
