//! `cogo bench search|ingest|graph`: the knowledge layer measured on scratch databases with the
//! real model. Corpora are generated from a fixed seed; their embeddings are computed by MiniLM
//! once and cached under DATA_DIR/bench-cache (the cache is keyed by model, seed and size). Text
//! is drawn from the model's own vocabulary of whole words with Zipf's law, as in natural text.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use knowledge::search::{SearchRequest, Searcher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use store::knowledge::{EntityKey, KnowledgeFilter, KnowledgeScope, NewChunk, NewDocument, NewRelation};

use crate::args::{BenchBackend, BenchGraphArgs, BenchSearchArgs, Global};
use crate::bench::{PGVECTOR_ADMIN, elapsed_ms, print_report, scratch_database, spread};

const WORDS: &str = "lease message worker queue claim retry backoff breaker circuit open closed probe tenant project \
    token secret vault policy route admin metric latency histogram counter gauge event stream trace span artifact \
    snapshot gateway toolset tool session transport socket websocket stdio request response timeout deadline error \
    failure success outcome dead letter requeue cancel priority shard fairness presence heartbeat agent node cluster \
    region database table index vector embedding chunk document source heading section graph entity relation path \
    neighbour search query rank fusion score threshold recall precision model prompt plan step goal orchestrator \
    decision evaluation budget cost throughput storage object bucket file directory archive checksum hash digest \
    migration schema column row transaction commit rollback lock wait notify listen poll interval schedule reaper \
    expiry renewal owner lock-free contention backlog burst limit quota rate window bucket sliding fixed adaptive \
    cache eviction memory disk network packet bandwidth encryption certificate handshake cipher signature identity \
    permission role allowlist deny audit log record rotation retention compaction partition replica failover";

/// Words drawn with Zipf's law (the k-th most common with weight 1/k), like natural text.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    /// The whole words of the model's WordPiece vocabulary (about 20 000 English words, roughly in
    /// frequency order), or the built-in list when the model directory has no vocab.txt.
    fn load(global: &Global) -> Self {
        let path = knowledge::embed::minilm_dir(&crate::knowledge_cmd::models_dir(global)).join("vocab.txt");
        let mut words: Vec<String> = std::fs::read_to_string(path)
            .map(|text| {
                text.lines()
                    .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if words.len() < 1000 {
            words = WORDS.split_whitespace().map(str::to_owned).collect();
        }
        let mut total = 0.0;
        let cumulative = (0..words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = rng.random::<f64>() * total;
        let index = self.cumulative.partition_point(|c| *c < target).min(self.words.len() - 1);
        &self.words[index]
    }

    /// A content word: not among the 100 most common.
    fn content_word(&self, rng: &mut StdRng) -> &str {
        loop {
            let total = self.cumulative.last().copied().unwrap_or(1.0);
            let target = rng.random::<f64>() * total;
            let index = self.cumulative.partition_point(|c| *c < target).min(self.words.len() - 1);
            if index >= 100.min(self.words.len() / 2) {
                return &self.words[index];
            }
        }
    }
}

fn corpus_chunk(rng: &mut StdRng, words: &Vocabulary, sentences: std::ops::Range<usize>) -> String {
    let sentences = rng.random_range(sentences);
    let mut text = String::new();
    for _ in 0..sentences {
        let length = rng.random_range(6..16);
        for index in 0..length {
            let word = words.word(rng);
            if index == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push_str(". ");
    }
    text.trim_end().to_owned()
}

fn query_text(rng: &mut StdRng, words: &Vocabulary) -> String {
    let length = rng.random_range(3..7);
    (0..length).map(|_| words.content_word(rng).to_owned()).collect::<Vec<_>>().join(" ")
}

/// The in-process MiniLM (benchmarks measure the default model, whatever the environment says).
fn minilm(global: &Global) -> anyhow::Result<Arc<dyn knowledge::Embedder>> {
    let args = crate::args::EmbeddingArgs {
        embeddings_url: None,
        embeddings_model: String::new(),
        embeddings_dim: 0,
        embeddings_api_key: None,
    };
    crate::knowledge_cmd::embedder(global, &args)
}

/// Embeddings of `texts`, from the cache file when it holds them, else computed (and cached).
async fn cached_embeddings(
    global: &Global,
    embedder: &Arc<dyn knowledge::Embedder>,
    key: &str,
    texts: &[String],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let dim = embedder.dim();
    let dir = global.data_dir.join("bench-cache");
    let model = embedder.model().replace(['/', ':'], "_");
    let path = dir.join(format!("{model}-{key}-{}.f32", texts.len()));
    if let Ok(mut file) = std::fs::File::open(&path) {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).context("reading the embedding cache")?;
        if bytes.len() == texts.len() * dim * 4 {
            eprintln!("bench: {} embeddings from the cache {}", texts.len(), path.display());
            return Ok(bytes
                .chunks_exact(dim * 4)
                .map(|row| row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                .collect());
        }
    }
    eprintln!(
        "bench: embedding {} texts with {} (cached afterwards in {})",
        texts.len(),
        embedder.model(),
        path.display()
    );
    let started = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for (index, batch) in texts.chunks(512).enumerate() {
        out.extend(embedder.embed(batch.to_vec()).await.map_err(|e| anyhow::anyhow!("{e}"))?);
        if index % 10 == 9 {
            eprintln!(
                "bench: embedded {}/{} ({:.0}/s)",
                out.len(),
                texts.len(),
                out.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    std::fs::create_dir_all(&dir).context("creating the embedding cache directory")?;
    let mut file = std::fs::File::create(&path).context("writing the embedding cache")?;
    let mut bytes = Vec::with_capacity(texts.len() * dim * 4);
    for vector in &out {
        for value in vector {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    file.write_all(&bytes).context("writing the embedding cache")?;
    Ok(out)
}

async fn scratch_store(
    global: &Global,
    backend: BenchBackend,
) -> anyhow::Result<(crate::bench::Scratch, store::Store)> {
    let scratch = scratch_database(global, backend, PGVECTOR_ADMIN).await?;
    let store = store::Store::open(&scratch.url, store::StoreOptions::default().with_max_connections(8))
        .await
        .context("opening the scratch database")?;
    store.migrate().await.context("migrating the scratch database")?;
    Ok((scratch, store))
}

fn backend_name(backend: BenchBackend) -> &'static str {
    match backend {
        BenchBackend::Sqlite => "sqlite",
        BenchBackend::Postgres => "postgres",
    }
}

/// `bench search`: N chunks in 100-chunk documents, then hybrid searches with pre-embedded
/// queries (retrieval only), the query embedding time apart, and the ANN's recall@10 against an
/// exact scan.
pub async fn search(global: &Global, args: BenchSearchArgs) -> anyhow::Result<()> {
    let _metrics = crate::node::metrics_render()?;
    let embedder = minilm(global)?;
    let words = Vocabulary::load(global);
    let mut rng = StdRng::seed_from_u64(7);
    let chunks = args.chunks.max(100);
    // two sentences a chunk: the vectors are the model's, and embedding 100k short texts takes
    // minutes rather than the hour full-size chunks would (search cost depends on the count)
    let texts: Vec<String> = (0..chunks).map(|_| corpus_chunk(&mut rng, &words, 2..3)).collect();
    let vectors = cached_embeddings(global, &embedder, "zipf-s7", &texts).await?;
    let queries: Vec<String> = (0..args.queries.max(10) + WARM_UP).map(|_| query_text(&mut rng, &words)).collect();
    let query_vectors = embedder.embed(queries.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // one query at a time, as a search embeds it
    let mut embed_query = Vec::new();
    for query in queries.iter().take(50) {
        let started = Instant::now();
        embedder.embed(vec![query.clone()]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        embed_query.push(elapsed_ms(started));
    }

    let (scratch, store) = if args.reuse {
        (None, kept_store(global, args.backend, chunks).await?)
    } else {
        let (scratch, store) = scratch_store(global, args.backend).await?;
        (Some(scratch), store)
    };
    let result = async {
        let filter = KnowledgeFilter { tenant: "bench".into(), ..KnowledgeFilter::default() };
        let stats = store.knowledge_stats(&filter).await?;
        let kept = args.reuse
            && stats.chunks == chunks as i64
            && stats.embedding_model.as_deref() == Some(embedder.model());
        let writers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let write_s = if kept {
            eprintln!("bench: reusing the kept index of {chunks} chunks");
            None
        } else {
            store.knowledge_prepare(embedder.model(), embedder.dim(), true).await?;
            let started = Instant::now();
            write_corpus(&store, &texts, &vectors, writers).await?;
            store.knowledge_analyze().await?;
            Some(started.elapsed().as_secs_f64())
        };
        let searcher = Searcher::new(store.clone(), embedder.clone());
        // warm: the first vector search on SQLite loads the in-memory index
        let started = Instant::now();
        store.knowledge_vector(&filter, &query_vectors[0], 10, false).await?;
        let load_ms = elapsed_ms(started);
        // warm-up queries, apart from the measured ones: a serving node's pool and caches are warm
        for (query, query_vector) in queries.iter().zip(&query_vectors).take(WARM_UP) {
            let request = SearchRequest::new(query.clone());
            searcher
                .search_embedded("bench", &request, Some(query_vector.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.knowledge_fulltext(&filter, query, 50).await?;
            store.knowledge_vector(&filter, query_vector, 10, false).await?;
        }
        let measured: Vec<(&String, &Vec<f32>)> = queries.iter().zip(&query_vectors).skip(WARM_UP).collect();
        // each kind of search in its own pass, so one kind's reads (an exact scan reads every
        // vector) do not land in another's figures
        let mut hybrid = Vec::with_capacity(measured.len());
        for (query, query_vector) in &measured {
            let request = SearchRequest::new((*query).clone());
            let started = Instant::now();
            searcher
                .search_embedded("bench", &request, Some((*query_vector).clone()))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            hybrid.push(elapsed_ms(started));
        }
        let mut fulltext = Vec::with_capacity(measured.len());
        let mut pruned_top = Vec::with_capacity(measured.len());
        for (query, _) in &measured {
            let started = Instant::now();
            let pruned = store.knowledge_fulltext(&filter, query, 50).await?;
            fulltext.push(elapsed_ms(started));
            pruned_top.push(pruned.into_iter().take(10).map(|h| h.chunk_id).collect::<Vec<_>>());
        }
        let mut fulltext_every = Vec::with_capacity(measured.len());
        let (mut text_agree, mut text_wanted) = (0usize, 0usize);
        for ((query, _), pruned) in measured.iter().zip(&pruned_top) {
            let started = Instant::now();
            let every = store.knowledge_fulltext_every_match(&filter, query, 50).await?;
            fulltext_every.push(elapsed_ms(started));
            let best: Vec<i64> = every.iter().take(10).map(|h| h.chunk_id).collect();
            text_wanted += best.len();
            text_agree += pruned.iter().filter(|id| best.contains(id)).count();
        }
        let mut vector = Vec::with_capacity(measured.len());
        let mut fast_top = Vec::with_capacity(measured.len());
        for (_, query_vector) in &measured {
            let started = Instant::now();
            let fast = store.knowledge_vector(&filter, query_vector, 10, false).await?;
            vector.push(elapsed_ms(started));
            fast_top.push(fast.into_iter().map(|h| h.chunk_id).collect::<Vec<_>>());
        }
        let (mut agree, mut wanted) = (0usize, 0usize);
        for ((_, query_vector), fast) in measured.iter().zip(&fast_top) {
            let exact = store.knowledge_vector(&filter, query_vector, 10, true).await?;
            wanted += exact.len();
            agree += fast.iter().filter(|id| exact.iter().any(|e| e.chunk_id == **id)).count();
        }
        anyhow::Ok(json!({
            "bench": "search",
            "backend": backend_name(args.backend),
            "chunks": chunks,
            "queries": measured.len(),
            "warm_up_queries": WARM_UP,
            "model": embedder.model(),
            "hybrid_ms": spread(&mut hybrid),
            "fulltext_ms": spread(&mut fulltext),
            "fulltext_every_match_ms": spread(&mut fulltext_every),
            "fulltext_top10_agreement": if text_wanted == 0 { 0.0 } else { text_agree as f64 / text_wanted as f64 },
            "vector_ms": spread(&mut vector),
            "ann_recall_at_10": if wanted == 0 { 0.0 } else { agree as f64 / wanted as f64 },
            "embed_query_ms": spread(&mut embed_query),
            "index_load_ms": load_ms,
            "writers": writers,
            "write_chunks_per_s": write_s.map(|s| chunks as f64 / s),
            "index_reused": kept,
            "includes": "hybrid_ms: full text (50 candidates) and vector (50) concurrently, weighted fusion, chunks read back; the query's embedding is computed beforehand and reported as embed_query_ms; each kind of search runs in its own pass over the same queries, after warm-up queries that are not measured; fulltext_every_match_ms ranks every chunk with any query word (no pruning of common words) and fulltext_top10_agreement is the share of its top 10 the pruned search also returns; write_chunks_per_s: 100-chunk documents written by `writers` concurrent writers, null when a kept index was reused",
        }))
    }
    .await;
    store.close().await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    print_report(&result?, args.json)
}

/// Queries run before the measured ones in `bench search`.
const WARM_UP: usize = 20;

/// Writes the search bench's corpus as 100-chunk documents, `writers` at a time.
async fn write_corpus(
    store: &store::Store,
    texts: &[String],
    vectors: &[Vec<f32>],
    writers: usize,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let scope = KnowledgeScope::new("bench", "search");
    let documents = texts.chunks(100).zip(vectors.chunks(100)).enumerate().map(|(document, (texts, vectors))| {
        let mut offset = 0i64;
        let chunks = texts
            .iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (text, vector))| {
                let start = offset;
                offset += text.len() as i64 + 2;
                NewChunk {
                    heading: None,
                    text: text.clone(),
                    start,
                    end: start + text.len() as i64,
                    content_hash: format!("{document}-{i}"),
                    embedding: vector.clone(),
                }
            })
            .collect();
        NewDocument {
            scope: scope.clone(),
            source: format!("bench/{document:05}.txt"),
            kind: "text".into(),
            title: None,
            content_hash: format!("{document}"),
            bytes: offset,
            chunks,
            entities: vec![],
            relations: vec![],
            mentions: vec![],
        }
    });
    let mut writes = futures_util::stream::iter(documents.map(|document| store.knowledge_put_document(document)))
        .buffer_unordered(writers.max(1));
    let mut written = 0usize;
    while let Some(result) = writes.next().await {
        result?;
        written += 1;
        if written.is_multiple_of(100) {
            eprintln!("bench: wrote {} chunks", written * 100);
        }
    }
    Ok(())
}

/// The search bench's kept index (`--reuse`): a database named by the corpus's size, on the
/// PostgreSQL server or as a SQLite file in the data dir's `bench-cache`, left in place afterwards.
async fn kept_store(global: &Global, backend: BenchBackend, chunks: usize) -> anyhow::Result<store::Store> {
    let options = || store::StoreOptions::default().with_max_connections(8);
    let store = match backend {
        BenchBackend::Sqlite => {
            let dir = global.data_dir.join("bench-cache");
            std::fs::create_dir_all(&dir).context("creating the bench cache directory")?;
            let url = format!("sqlite://{}", dir.join(format!("search-{chunks}.db")).display());
            store::Store::open(&url, options()).await.context("opening the kept bench database")?
        }
        BenchBackend::Postgres => {
            let admin = global.database_url.clone().unwrap_or_else(|| PGVECTOR_ADMIN.to_owned());
            let database = format!("cogo_bench_search_{chunks}");
            let url = crate::bench::sibling_database_url(&admin, &database)?;
            match store::Store::open(&url, options()).await {
                Ok(store) => store,
                Err(_) => {
                    store::create_postgres_database(&admin, &database)
                        .await
                        .context("creating the kept bench database (needs CREATEDB)")?;
                    store::Store::open(&url, options()).await.context("opening the kept bench database")?
                }
            }
        }
    };
    store.migrate().await.context("migrating the kept bench database")?;
    Ok(store)
}

/// `bench ingest`: Markdown documents chunked, embedded by the model and written, end to end.
pub async fn ingest(global: &Global, args: BenchSearchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.reuse, "--reuse applies to `bench search` only: `bench ingest` measures writing the index");
    let _metrics = crate::node::metrics_render()?;
    let embedder = minilm(global)?;
    let words = Vocabulary::load(global);
    let mut rng = StdRng::seed_from_u64(11);
    let mut documents = Vec::new();
    let mut sections = 0;
    while sections < args.chunks.max(10) {
        let mut text = format!("# Note {}\n\n", documents.len());
        for section in 0..10 {
            text.push_str(&format!("## Part {section}\n\n{}\n\n", corpus_chunk(&mut rng, &words, 4..9)));
            sections += 1;
        }
        documents.push(knowledge::InlineDocument {
            source: format!("notes/{:05}.md", documents.len()),
            text,
            kind: None,
        });
    }
    let (scratch, store) = scratch_store(global, args.backend).await?;
    let result = async {
        let indexer = knowledge::Indexer::new(store.clone(), embedder.clone());
        let progress = crate::knowledge_cmd::progress_printer("ingesting");
        let started = Instant::now();
        let report = indexer
            .index_inline(&KnowledgeScope::new("bench", "ingest"), documents, &progress)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::Ok(json!({
            "bench": "ingest",
            "backend": backend_name(args.backend),
            "model": embedder.model(),
            "documents": report.indexed,
            "chunks": report.chunks,
            "embedded": report.embedded,
            "seconds": seconds,
            "chunks_per_s": report.chunks as f64 / seconds,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "includes": "chunking, embedding every chunk with the model (the bound), graph extraction, one transaction per document",
        }))
    }
    .await;
    store.close().await;
    scratch.cleanup().await;
    print_report(&result?, args.json)
}

/// `bench graph`: N relations among N/5 entities in 100-relation documents; 2-hop neighbourhoods
/// (both directions, fan-out 50) from random entities.
pub async fn graph(global: &Global, args: BenchGraphArgs) -> anyhow::Result<()> {
    let (scratch, store) = scratch_store(global, args.backend).await?;
    let result = async {
        store.knowledge_prepare("none", 1, false).await?;
        let entities = (args.edges / 5).max(10);
        let mut rng = StdRng::seed_from_u64(3);
        let scope = KnowledgeScope::new("bench", "graph");
        let started = Instant::now();
        for document in 0..args.edges.div_ceil(100) {
            let mut keys: Vec<EntityKey> = Vec::new();
            let mut index = std::collections::HashMap::new();
            let mut relations = Vec::new();
            for _ in 0..100 {
                let (a, b) = (rng.random_range(0..entities), rng.random_range(0..entities));
                if a == b {
                    continue;
                }
                let mut slot = |id: usize| {
                    *index.entry(id).or_insert_with(|| {
                        keys.push(EntityKey::new("symbol", format!("s{id}")));
                        keys.len() - 1
                    })
                };
                let (source, target) = (slot(a), slot(b));
                relations.push(NewRelation {
                    source,
                    target,
                    kind: ["calls", "imports", "defines"][rng.random_range(0..3)].into(),
                });
            }
            store
                .knowledge_put_document(NewDocument {
                    scope: scope.clone(),
                    source: format!("graph/{document:05}"),
                    kind: "code".into(),
                    title: None,
                    content_hash: format!("{document}"),
                    bytes: 0,
                    chunks: vec![],
                    entities: keys,
                    relations,
                    mentions: vec![],
                })
                .await?;
        }
        let write_s = started.elapsed().as_secs_f64();
        // as `cogo index` does after a large ingest: plans for the tables as they now are
        store.knowledge_analyze().await?;
        let filter = KnowledgeFilter { tenant: "bench".into(), ..KnowledgeFilter::default() };
        let mut samples = Vec::new();
        let mut reached = 0usize;
        for _ in 0..args.queries.max(10) {
            let name = format!("s{}", rng.random_range(0..entities));
            let Some(start) = store.knowledge_find_entities(&filter, &name, None, 1).await?.into_iter().next() else {
                continue;
            };
            let limits = knowledge::graph::TraversalLimits { depth: 2, fan_out: 50, max_nodes: 5_000 };
            let started = Instant::now();
            let graph = knowledge::graph::neighbourhood(
                &store,
                "bench",
                &[start.id],
                store::knowledge::Direction::Both,
                &[],
                limits,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            samples.push(elapsed_ms(started));
            reached += graph.nodes.len();
        }
        let queries = samples.len().max(1);
        anyhow::Ok(json!({
            "bench": "graph",
            "backend": backend_name(args.backend),
            "edges": args.edges,
            "entities": entities,
            "two_hop_ms": spread(&mut samples),
            "mean_nodes_reached": reached as f64 / queries as f64,
            "write_edges_per_s": args.edges as f64 / write_s,
            "includes": "two graph steps (relations both ways, fan-out 50 per entity) and reading the reached entities",
        }))
    }
    .await;
    store.close().await;
    scratch.cleanup().await;
    print_report(&result?, args.json)
}
