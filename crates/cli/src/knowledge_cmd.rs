//! `cogo index`, `cogo search`, `cogo graph` and `cogo eval retrieval`: the knowledge layer from
//! the command line, with progress on standard error and results on standard output.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use knowledge::graph::{PatternStep, TraversalLimits};
use knowledge::search::{Fusion, SearchMode, SearchRequest, Searcher};
use store::knowledge::{Direction, KnowledgeFilter, KnowledgeScope};

use crate::ExitWith;
use crate::args::{EmbeddingArgs, EvalCommand, Global, GraphCommand, IndexArgs, KnowledgeScopeArgs, SearchArgs};
use crate::settings::open_store;

/// The models directory: `--models-dir`/`COGO_MODELS_DIR`, else `DATA_DIR/models`.
pub fn models_dir(global: &Global) -> std::path::PathBuf {
    global.models_dir.clone().unwrap_or_else(|| global.data_dir.join("models"))
}

/// The embedder configured: an OpenAI-compatible endpoint when `--embeddings-url` is set, else
/// all-MiniLM-L6-v2 in this process (an error saying how to install it when it is missing).
pub fn embedder(global: &Global, args: &EmbeddingArgs) -> anyhow::Result<Arc<dyn knowledge::Embedder>> {
    let usage = |err: knowledge::Error| anyhow::Error::new(ExitWith(2, format!("error: {err}")));
    if let Some(url) = &args.embeddings_url {
        let provider = knowledge::OpenAiEmbedder::new(
            url,
            args.embeddings_api_key.clone(),
            &args.embeddings_model,
            args.embeddings_dim,
            Duration::from_secs(60),
        )
        .map_err(usage)?;
        return Ok(Arc::new(provider));
    }
    let dir = knowledge::embed::minilm_dir(&models_dir(global));
    Ok(Arc::new(knowledge::MiniLm::load(&dir).map_err(usage)?))
}

fn scope(args: &KnowledgeScopeArgs) -> anyhow::Result<KnowledgeScope> {
    for (what, value) in [("tenant", &args.tenant), ("project", &args.project)] {
        if value.is_empty() || value.len() > 128 {
            return Err(ExitWith(2, format!("error: --{what} must be 1 to 128 characters")).into());
        }
    }
    Ok(KnowledgeScope::new(args.tenant.clone(), args.project.clone()))
}

fn knowledge_error(err: knowledge::Error) -> anyhow::Error {
    let code = match &err {
        knowledge::Error::Invalid(_) | knowledge::Error::ModelMissing { .. } => 2,
        knowledge::Error::Store(store::Error::InvalidKnowledge { .. } | store::Error::NoVectorExtension { .. }) => 2,
        _ => 1,
    };
    ExitWith(code, format!("error: {err}")).into()
}

/// A progress line on standard error: a bar on a terminal, a line every few seconds otherwise.
pub fn progress_printer(what: &'static str) -> impl Fn(knowledge::Progress) + Send + Sync {
    let terminal = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |progress: knowledge::Progress| {
        let finished = progress.done == progress.total;
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !terminal && !finished && last.elapsed() < Duration::from_secs(5) {
            return;
        }
        *last = std::time::Instant::now();
        let width = 30;
        let filled = (progress.done * width).checked_div(progress.total).unwrap_or(width).min(width);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
        let line = format!("{what} [{bar}] {}/{} documents, {} chunks", progress.done, progress.total, progress.chunks);
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

pub async fn index(global: &Global, args: IndexArgs) -> anyhow::Result<()> {
    let scope = scope(&args.scope)?;
    if !args.path.exists() {
        return Err(ExitWith(2, format!("error: {} does not exist", args.path.display())).into());
    }
    let embedder = embedder(global, &args.embedding)?;
    let store = open_store(global).await?;
    let mut indexer = knowledge::Indexer::new(store.clone(), embedder);
    if args.llm_extraction {
        let client = crate::llm_cmd::client(global, &args.llm).await?;
        indexer = indexer.with_llm_extraction(
            knowledge::LlmExtractor::new(client).with_max_chunks(args.llm_extraction_chunks as usize),
        );
    }
    indexer.prepare(args.rebuild).await.map_err(knowledge_error)?;
    let progress = progress_printer("indexing");
    let report = indexer.index_path(&scope, &args.path, &progress).await.map_err(knowledge_error)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "indexed {} of {} documents into {}/{} ({} unchanged, {} deleted, {} skipped): {} chunks, {} embedded, {} embeddings reused, {} ms with {}",
            report.indexed,
            report.seen,
            scope.tenant,
            scope.project,
            report.unchanged,
            report.deleted,
            report.skipped.len(),
            report.chunks,
            report.embedded,
            report.reused,
            report.elapsed_ms,
            report.model
        )?;
        if let Some(llm) = &report.llm {
            writeln!(
                out,
                "  LLM extraction with {}: {} chunks, {} entities, {} relations kept, {} chunks failed{}",
                llm.model,
                llm.chunks,
                llm.entities,
                llm.relations,
                llm.failed,
                llm.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
            )?;
        }
        for skipped in &report.skipped {
            writeln!(out, "  skipped {}: {}", skipped.source, skipped.reason)?;
        }
    }
    store.close().await;
    Ok(())
}

fn parse_mode(mode: &str) -> anyhow::Result<SearchMode> {
    match mode {
        "hybrid" => Ok(SearchMode::Hybrid),
        "fulltext" => Ok(SearchMode::Fulltext),
        "vector" => Ok(SearchMode::Vector),
        other => Err(ExitWith(2, format!("error: --mode {other:?}: use hybrid, fulltext or vector")).into()),
    }
}

fn parse_direction(direction: &str) -> anyhow::Result<Direction> {
    match direction {
        "out" => Ok(Direction::Out),
        "in" => Ok(Direction::In),
        "both" => Ok(Direction::Both),
        other => Err(ExitWith(2, format!("error: --direction {other:?}: use out, in or both")).into()),
    }
}

fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max).collect::<String>()) }
}

pub async fn search(global: &Global, args: SearchArgs) -> anyhow::Result<()> {
    let fusion = match args.fusion.as_str() {
        "weighted" => Fusion::Weighted,
        "rrf" => Fusion::Rrf,
        other => return Err(ExitWith(2, format!("error: --fusion {other:?}: use weighted or rrf")).into()),
    };
    let request = SearchRequest {
        query: args.query.clone(),
        project: args.project.clone(),
        source_prefix: args.source_prefix.clone(),
        mode: parse_mode(&args.mode)?,
        fusion,
        alpha: args.alpha,
        top_k: args.top_k,
        threshold: args.threshold,
    };
    let embedder = embedder(global, &args.embedding)?;
    let store = open_store(global).await?;
    let searcher = Searcher::new(store.clone(), embedder);
    let mut out = std::io::stdout().lock();
    if args.graphrag {
        let limits = TraversalLimits { depth: args.depth, ..TraversalLimits::default() };
        let evidence = searcher.graphrag(&args.tenant, &request, limits, 30).await.map_err(knowledge_error)?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&evidence)?)?;
        } else {
            for (rank, item) in evidence.iter().enumerate() {
                let via = if item.via.is_empty() {
                    "search hit".to_owned()
                } else {
                    item.via
                        .iter()
                        .map(|s| format!("{} -{}-> {}", s.from, s.relation, s.to))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                writeln!(
                    out,
                    "{:>2}. {:.3}  {} [{}..{}]  via {via}",
                    rank + 1,
                    item.score,
                    item.chunk.source,
                    item.chunk.start,
                    item.chunk.end
                )?;
                writeln!(out, "    {}", snippet(&item.chunk.text, 160))?;
            }
        }
    } else {
        let hits = searcher.search(&args.tenant, &request).await.map_err(knowledge_error)?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&hits)?)?;
        } else if hits.is_empty() {
            writeln!(out, "no hits (is anything indexed for tenant {}? `cogo index PATH`)", args.tenant)?;
        } else {
            for (rank, hit) in hits.iter().enumerate() {
                let heading = hit.chunk.heading.as_deref().map(|h| format!(" § {h}")).unwrap_or_default();
                let parts = [
                    hit.fulltext.map(|t| format!("text #{}", t.rank)),
                    hit.vector.map(|v| format!("vector #{} {:.3}", v.rank, v.score)),
                ];
                let parts: Vec<String> = parts.into_iter().flatten().collect();
                writeln!(
                    out,
                    "{:>2}. {:.3}  {}{heading} [{}..{}]  ({})",
                    rank + 1,
                    hit.score,
                    hit.chunk.source,
                    hit.chunk.start,
                    hit.chunk.end,
                    parts.join(", ")
                )?;
                writeln!(out, "    {}", snippet(&hit.chunk.text, 160))?;
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn find_one(
    store: &store::Store,
    scope: &KnowledgeScope,
    name: &str,
    kind: Option<&str>,
) -> anyhow::Result<store::knowledge::Entity> {
    let filter =
        KnowledgeFilter { tenant: scope.tenant.clone(), project: Some(scope.project.clone()), source_prefix: None };
    let found = store.knowledge_find_entities(&filter, name, kind, 10).await.context("finding the entity")?;
    match found.as_slice() {
        [] => Err(ExitWith(1, format!("error: no entity named {name:?} in {}/{}", scope.tenant, scope.project)).into()),
        [one] => Ok(one.clone()),
        many => Err(ExitWith(
            2,
            format!(
                "error: {name:?} names {} entities ({}): pass --kind",
                many.len(),
                many.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
        .into()),
    }
}

pub async fn graph(global: &Global, command: GraphCommand) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    let mut out = std::io::stdout().lock();
    match command {
        GraphCommand::Neighbors { name, kind, scope: scope_args, depth, direction, relation, fan_out, json } => {
            let scope = scope(&scope_args)?;
            let start = find_one(&store, &scope, &name, kind.as_deref()).await?;
            let limits = TraversalLimits { depth, fan_out, ..TraversalLimits::default() };
            let graph = knowledge::graph::neighbourhood(
                &store,
                &scope.tenant,
                &[start.id],
                parse_direction(&direction)?,
                &relation,
                limits,
            )
            .await
            .map_err(knowledge_error)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&graph)?)?;
            } else {
                let names: std::collections::HashMap<i64, &str> =
                    graph.nodes.iter().map(|n| (n.entity.id, n.entity.name.as_str())).collect();
                for node in graph.nodes.iter().filter(|n| n.depth > 0) {
                    writeln!(out, "{} {:<8} {}", node.depth, node.entity.kind, node.entity.name)?;
                }
                writeln!(
                    out,
                    "{} entities, {} relations{}",
                    graph.nodes.len().saturating_sub(1),
                    graph.edges.len(),
                    if graph.truncated { " (cut short by the limits)" } else { "" }
                )?;
                for edge in graph.edges.iter().take(50) {
                    writeln!(
                        out,
                        "  {} -{}-> {}",
                        names.get(&edge.source).unwrap_or(&"?"),
                        edge.kind,
                        names.get(&edge.target).unwrap_or(&"?")
                    )?;
                }
            }
        }
        GraphCommand::Path { from, to, scope: scope_args, depth, json } => {
            let scope = scope(&scope_args)?;
            let start = find_one(&store, &scope, &from, None).await?;
            let end = find_one(&store, &scope, &to, None).await?;
            let limits = TraversalLimits { depth, ..TraversalLimits::default() };
            let path = knowledge::graph::shortest_path(&store, &scope.tenant, start.id, end.id, &[], limits)
                .await
                .map_err(knowledge_error)?;
            match (path, json) {
                (Some(path), true) => writeln!(out, "{}", serde_json::to_string(&path)?)?,
                (Some(path), false) => {
                    let mut line = path.nodes.first().map(|n| n.name.clone()).unwrap_or_default();
                    for (edge, node) in path.edges.iter().zip(path.nodes.iter().skip(1)) {
                        let arrow = if edge.target == node.id {
                            format!(" -{}-> ", edge.kind)
                        } else {
                            format!(" <-{}- ", edge.kind)
                        };
                        line.push_str(&arrow);
                        line.push_str(&node.name);
                    }
                    writeln!(out, "{line}")?;
                }
                (None, _) => {
                    return Err(
                        ExitWith(1, format!("error: no path of at most {depth} hops from {from:?} to {to:?}")).into()
                    );
                }
            }
        }
        GraphCommand::Pattern { start, steps, scope: scope_args, limit, json } => {
            let scope = scope(&scope_args)?;
            let pattern =
                steps.iter().map(|s| PatternStep::parse(s)).collect::<Result<Vec<_>, _>>().map_err(knowledge_error)?;
            let begin = find_one(&store, &scope, &start, None).await?;
            let paths = knowledge::graph::match_pattern(&store, &scope.tenant, &[begin.id], &pattern, 100, limit)
                .await
                .map_err(knowledge_error)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&paths)?)?;
            } else {
                for path in &paths {
                    writeln!(out, "{}", path.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(" → "))?;
                }
                writeln!(out, "{} paths", paths.len())?;
            }
        }
    }
    store.close().await;
    Ok(())
}

pub async fn eval(global: &Global, command: EvalCommand) -> anyhow::Result<()> {
    let args = match command {
        EvalCommand::Retrieval(args) => args,
        EvalCommand::Goals(args) => return crate::goal_cmd::eval_goals(global, args).await,
    };
    let dataset = knowledge::eval::Dataset::load(&args.dataset).map_err(knowledge_error)?;
    let embedder = embedder(global, &args.embedding)?;
    let scratch = crate::bench::scratch_database(global, args.backend, crate::bench::PGVECTOR_ADMIN).await?;
    let store = store::Store::open(&scratch.url, store::StoreOptions::default())
        .await
        .context("opening the scratch database")?;
    store.migrate().await.context("migrating the scratch database")?;
    let name = args.dataset.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    let progress = progress_printer("indexing the corpus");
    let report = knowledge::eval::evaluate(
        &store,
        embedder.clone(),
        &KnowledgeScope::new("eval", name.clone()),
        &dataset,
        args.threshold,
        &progress,
    )
    .await
    .map_err(knowledge_error);
    store.close().await;
    scratch.cleanup().await;
    let report = report?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["dataset"] = name.into();
        value["model"] = embedder.model().into();
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "{name}: {} documents, {} queries, model {}",
            report.documents,
            report.queries,
            embedder.model()
        )?;
        writeln!(out, "{:<10} {:>10} {:>9} {:>7} {:>9}", "mode", "recall@10", "nDCG@10", "MRR", "mean ms")?;
        for mode in &report.modes {
            writeln!(
                out,
                "{:<10} {:>10.3} {:>9.3} {:>7.3} {:>9.1}",
                mode.mode, mode.recall_at_10, mode.ndcg_at_10, mode.mrr, mode.mean_ms
            )?;
        }
    }
    Ok(())
}
