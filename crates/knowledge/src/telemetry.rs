//! The knowledge layer's metrics, emitted once per call or batch (never per chunk).

use std::time::Duration;

use model::metrics as names;

/// An embedding call of `count` texts took `elapsed`.
pub(crate) fn embedded(model: &str, count: usize, elapsed: Duration) {
    let model = model.to_owned();
    metrics::counter!(names::KNOWLEDGE_EMBEDDED_CHUNKS_TOTAL, "model" => model.clone()).increment(count as u64);
    metrics::histogram!(names::KNOWLEDGE_EMBED_LATENCY_MS, "model" => model).record(elapsed.as_secs_f64() * 1000.0);
}

/// A search in `mode` took `elapsed`.
pub(crate) fn searched(mode: &'static str, elapsed: Duration) {
    metrics::counter!(names::KNOWLEDGE_SEARCHES_TOTAL, "mode" => mode).increment(1);
    metrics::histogram!(names::KNOWLEDGE_SEARCH_LATENCY_MS, "mode" => mode).record(elapsed.as_secs_f64() * 1000.0);
}

/// The indexer finished documents with these outcomes.
pub(crate) fn documents(indexed: usize, unchanged: usize, deleted: usize, skipped: usize) {
    for (outcome, count) in [("indexed", indexed), ("unchanged", unchanged), ("deleted", deleted), ("skipped", skipped)]
    {
        if count > 0 {
            metrics::counter!(names::KNOWLEDGE_DOCUMENTS_TOTAL, "outcome" => outcome).increment(count as u64);
        }
    }
}
