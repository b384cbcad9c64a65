//! Metric names: the exact Prometheus names of the brief, in one place.
//!
//! Invariant: labels are bounded (toolset, tool, kind, key, service, role); never ids or tenants.

/// MCP calls made, by `toolset`, `tool`.
pub const MCP_CALLS_TOTAL: &str = "cogo_mcp_calls_total";
/// MCP calls failed, by `toolset`, `tool`, `kind`.
pub const MCP_FAIL_TOTAL: &str = "cogo_mcp_fail_total";
/// MCP call latency histogram in milliseconds, by `toolset`, `tool`.
pub const MCP_LATENCY_MS: &str = "cogo_mcp_latency_ms";
/// Circuit breakers open now.
pub const CIRCUIT_OPEN_CURRENT: &str = "cogo_circuit_open_current";
/// Breaker openings, by `key`.
pub const CIRCUIT_OPEN_TOTAL: &str = "cogo_circuit_open_total";
/// Breaker closings, by `key`.
pub const CIRCUIT_CLOSE_TOTAL: &str = "cogo_circuit_close_total";
/// Messages enqueued, by `service`, `role`.
pub const BUS_ENQUEUED_TOTAL: &str = "cogo_bus_enqueued_total";
/// Messages claimed, by `service`, `role`.
pub const BUS_CLAIMED_TOTAL: &str = "cogo_bus_claimed_total";
/// Messages completed successfully, by `service`, `role`.
pub const BUS_SUCCEEDED_TOTAL: &str = "cogo_bus_succeeded_total";
/// Attempts failed (retried or not), by `service`, `role`.
pub const BUS_FAILED_TOTAL: &str = "cogo_bus_failed_total";
/// Messages moved to the dead-letter queue, by `service`, `role`.
pub const BUS_DEAD_LETTERED_TOTAL: &str = "cogo_bus_dead_lettered_total";
/// Messages waiting, by `service`, `role` (gauge).
pub const BUS_QUEUE_DEPTH: &str = "cogo_bus_queue_depth";
/// Age of the oldest ready message in seconds, by `service`, `role` (gauge).
pub const BUS_OLDEST_QUEUED_AGE_SECONDS: &str = "cogo_bus_oldest_queued_age_seconds";
/// Enqueue → claim latency histogram in milliseconds, by `service`, `role`.
pub const BUS_CLAIM_LATENCY_MS: &str = "cogo_bus_claim_latency_ms";
/// Expired leases taken back by the reaper, by `service`, `role`.
pub const BUS_LEASES_EXPIRED_TOTAL: &str = "cogo_bus_leases_expired_total";
/// LLM calls, by `provider`, `model`, `outcome`.
pub const LLM_CALLS_TOTAL: &str = "cogo_llm_calls_total";
/// LLM latency histogram in milliseconds, by `provider`, `model`.
pub const LLM_LATENCY_MS: &str = "cogo_llm_latency_ms";
/// LLM tokens, by `provider`, `model`, `direction`.
pub const LLM_TOKENS_TOTAL: &str = "cogo_llm_tokens_total";
/// Policy files reloaded, by `file`, `outcome`.
pub const CONFIG_RELOADS_TOTAL: &str = "cogo_config_reloads_total";
/// Artifact writes that failed (a full or read-only disk), by `family` (`mcp`: the MCP call's files); the
/// work they belong to goes on without them.
pub const ARTIFACT_WRITE_FAILURES_TOTAL: &str = "cogo_artifact_write_failures_total";
/// Artifact files written, by `family` and `backend` (`local`, `s3`).
pub const ARTIFACT_WRITES_TOTAL: &str = "cogo_artifact_writes_total";
/// Artifact write latency histogram in milliseconds, by `backend`.
pub const ARTIFACT_WRITE_LATENCY_MS: &str = "cogo_artifact_write_latency_ms";

/// HTTP connections the API server holds open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "cogo_http_connections_open";
/// HTTP connections refused on arrival, by `reason` (`per_client`, `total`, `tls_handshakes`).
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "cogo_http_connections_refused_total";
/// HTTP connections closed because the client read nothing for the write timeout.
pub const HTTP_WRITE_TIMEOUTS_TOTAL: &str = "cogo_http_write_timeouts_total";
/// Resident memory of this process in bytes (`VmRSS`).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "cogo_process_resident_memory_bytes";
/// Heap bytes allocated and in use (glibc `mallinfo2`: arenas plus mmapped blocks), all of it.
pub const PROCESS_HEAP_BYTES: &str = "cogo_process_heap_bytes";
/// Heap bytes malloc holds free in its arenas, not returned to the system (`mallinfo2` fordblks).
pub const PROCESS_HEAP_FREE_BYTES: &str = "cogo_process_heap_free_bytes";
/// Heap bytes held by the embedded SQLite (page caches, statements), part of the heap above.
pub const SQLITE_MEMORY_BYTES: &str = "cogo_sqlite_memory_bytes";
/// Open file descriptors of this process.
pub const PROCESS_OPEN_FDS: &str = "cogo_process_open_fds";
/// Rate-limit checks that Redis could not answer (the server used its own buckets instead).
pub const RATE_LIMIT_REDIS_ERRORS_TOTAL: &str = "cogo_rate_limit_redis_errors_total";
/// Edge workers connected to this server.
pub const EDGE_CONNECTIONS_OPEN: &str = "cogo_edge_connections_open";
/// Requests of edge workers served, by `op` (`claim`, `extend`, `complete`, `fail`, `release`) and
/// `outcome` (`ok`, `refused`, `error`).
pub const EDGE_REQUESTS_TOTAL: &str = "cogo_edge_requests_total";
/// Times this edge worker connected to its server (the first time included).
pub const EDGE_CONNECTS_TOTAL: &str = "cogo_edge_connects_total";

/// Knowledge searches, by `mode` (`fulltext`, `vector`, `hybrid`, `graphrag`).
pub const KNOWLEDGE_SEARCHES_TOTAL: &str = "cogo_knowledge_searches_total";
/// Knowledge search latency histogram in milliseconds, by `mode`.
pub const KNOWLEDGE_SEARCH_LATENCY_MS: &str = "cogo_knowledge_search_latency_ms";
/// Chunks embedded, by `model`.
pub const KNOWLEDGE_EMBEDDED_CHUNKS_TOTAL: &str = "cogo_knowledge_embedded_chunks_total";
/// Embedding call latency histogram in milliseconds, by `model`.
pub const KNOWLEDGE_EMBED_LATENCY_MS: &str = "cogo_knowledge_embed_latency_ms";
/// Documents indexed, by `outcome` (`indexed`, `unchanged`, `deleted`, `skipped`).
pub const KNOWLEDGE_DOCUMENTS_TOTAL: &str = "cogo_knowledge_documents_total";
/// Chunks sent to an LLM for graph extraction, by `outcome` (`ok`, `failed`).
pub const KNOWLEDGE_LLM_EXTRACTIONS_TOTAL: &str = "cogo_knowledge_llm_extractions_total";

/// Goals finished, by `status` (`succeeded`, `failed`, `cancelled`) and paused (`awaiting_approval`).
pub const GOALS_TOTAL: &str = "cogo_goals_total";
/// Goal steps judged, by `target` (`mcp`, `role`, `respond`) and `outcome` (`succeeded`, `failed`).
pub const GOAL_STEPS_TOTAL: &str = "cogo_goal_steps_total";
/// Replans after a failed step.
pub const GOAL_REPLANS_TOTAL: &str = "cogo_goal_replans_total";
/// Time from a goal's first run to its end, in milliseconds, by `status`.
pub const GOAL_DURATION_MS: &str = "cogo_goal_duration_ms";

/// Every metric name above, for documentation and naming checks.
pub const ALL: [&str; 44] = [
    MCP_CALLS_TOTAL,
    MCP_FAIL_TOTAL,
    MCP_LATENCY_MS,
    CIRCUIT_OPEN_CURRENT,
    CIRCUIT_OPEN_TOTAL,
    CIRCUIT_CLOSE_TOTAL,
    BUS_ENQUEUED_TOTAL,
    BUS_CLAIMED_TOTAL,
    BUS_SUCCEEDED_TOTAL,
    BUS_FAILED_TOTAL,
    BUS_DEAD_LETTERED_TOTAL,
    BUS_QUEUE_DEPTH,
    BUS_OLDEST_QUEUED_AGE_SECONDS,
    BUS_CLAIM_LATENCY_MS,
    BUS_LEASES_EXPIRED_TOTAL,
    LLM_CALLS_TOTAL,
    LLM_LATENCY_MS,
    LLM_TOKENS_TOTAL,
    CONFIG_RELOADS_TOTAL,
    ARTIFACT_WRITE_FAILURES_TOTAL,
    ARTIFACT_WRITES_TOTAL,
    ARTIFACT_WRITE_LATENCY_MS,
    HTTP_CONNECTIONS_OPEN,
    HTTP_CONNECTIONS_REFUSED_TOTAL,
    HTTP_WRITE_TIMEOUTS_TOTAL,
    RATE_LIMIT_REDIS_ERRORS_TOTAL,
    EDGE_CONNECTIONS_OPEN,
    EDGE_REQUESTS_TOTAL,
    EDGE_CONNECTS_TOTAL,
    PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_HEAP_BYTES,
    PROCESS_HEAP_FREE_BYTES,
    SQLITE_MEMORY_BYTES,
    PROCESS_OPEN_FDS,
    KNOWLEDGE_SEARCHES_TOTAL,
    KNOWLEDGE_SEARCH_LATENCY_MS,
    KNOWLEDGE_EMBEDDED_CHUNKS_TOTAL,
    KNOWLEDGE_EMBED_LATENCY_MS,
    KNOWLEDGE_DOCUMENTS_TOTAL,
    KNOWLEDGE_LLM_EXTRACTIONS_TOTAL,
    GOALS_TOTAL,
    GOAL_STEPS_TOTAL,
    GOAL_REPLANS_TOTAL,
    GOAL_DURATION_MS,
];

/// The `# HELP` text of every metric, in the order of [`ALL`].
pub const HELP: [(&str, &str); 44] = [
    (MCP_CALLS_TOTAL, "MCP tool calls made (attempts), by toolset and tool."),
    (MCP_FAIL_TOTAL, "MCP tool calls that failed, by toolset, tool and error kind."),
    (MCP_LATENCY_MS, "MCP tool call latency in milliseconds, by toolset and tool."),
    (CIRCUIT_OPEN_CURRENT, "Circuit breakers open now in this process."),
    (CIRCUIT_OPEN_TOTAL, "Circuit breaker openings, by key."),
    (CIRCUIT_CLOSE_TOTAL, "Circuit breaker closings, by key."),
    (BUS_ENQUEUED_TOTAL, "Messages enqueued on the bus, by service and role."),
    (BUS_CLAIMED_TOTAL, "Messages claimed by workers, by service and role."),
    (BUS_SUCCEEDED_TOTAL, "Messages completed successfully, by service and role."),
    (BUS_FAILED_TOTAL, "Failed attempts (retried or dead-lettered), by service and role."),
    (BUS_DEAD_LETTERED_TOTAL, "Messages moved to the dead-letter queue, by service and role."),
    (BUS_QUEUE_DEPTH, "Messages waiting (ready or delayed), by service and role."),
    (BUS_OLDEST_QUEUED_AGE_SECONDS, "Age in seconds of the oldest ready message, by service and role."),
    (BUS_CLAIM_LATENCY_MS, "Enqueue to claim latency in milliseconds, by service and role."),
    (BUS_LEASES_EXPIRED_TOTAL, "Expired leases taken back by the reaper."),
    (LLM_CALLS_TOTAL, "LLM calls, by provider, model and outcome."),
    (LLM_LATENCY_MS, "LLM call latency in milliseconds, by provider and model."),
    (LLM_TOKENS_TOTAL, "LLM tokens, by provider, model and direction."),
    (CONFIG_RELOADS_TOTAL, "Policy file reloads, by file and outcome."),
    (
        ARTIFACT_WRITE_FAILURES_TOTAL,
        "Artifact writes that failed (full or read-only disk, unreachable store), by family.",
    ),
    (ARTIFACT_WRITES_TOTAL, "Artifact files written, by family and backend (local, s3)."),
    (ARTIFACT_WRITE_LATENCY_MS, "Artifact write latency in milliseconds, by backend."),
    (HTTP_CONNECTIONS_OPEN, "HTTP connections the API server holds open now."),
    (
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "HTTP connections refused on arrival, by reason (per_client, total, tls_handshakes).",
    ),
    (HTTP_WRITE_TIMEOUTS_TOTAL, "HTTP connections closed because the client read nothing for the write timeout."),
    (RATE_LIMIT_REDIS_ERRORS_TOTAL, "Rate-limit checks Redis could not answer (the server used its own buckets)."),
    (EDGE_CONNECTIONS_OPEN, "Edge workers connected to this server."),
    (EDGE_REQUESTS_TOTAL, "Edge worker requests served, by op and outcome (ok, refused, error)."),
    (EDGE_CONNECTS_TOTAL, "Times this edge worker connected to its server."),
    (PROCESS_RESIDENT_MEMORY_BYTES, "Resident memory of this process in bytes."),
    (PROCESS_HEAP_BYTES, "Heap bytes allocated and in use in this process (malloc's own count)."),
    (PROCESS_HEAP_FREE_BYTES, "Heap bytes malloc holds free in its arenas, not returned to the system."),
    (SQLITE_MEMORY_BYTES, "Heap bytes held by the embedded SQLite (page caches, statements)."),
    (PROCESS_OPEN_FDS, "Open file descriptors of this process."),
    (KNOWLEDGE_SEARCHES_TOTAL, "Knowledge searches, by mode (fulltext, vector, hybrid, graphrag)."),
    (KNOWLEDGE_SEARCH_LATENCY_MS, "Knowledge search latency in milliseconds, by mode."),
    (KNOWLEDGE_EMBEDDED_CHUNKS_TOTAL, "Texts turned into embeddings, by model."),
    (KNOWLEDGE_EMBED_LATENCY_MS, "Embedding call latency in milliseconds, by model."),
    (KNOWLEDGE_DOCUMENTS_TOTAL, "Documents seen by the indexer, by outcome (indexed, unchanged, deleted, skipped)."),
    (KNOWLEDGE_LLM_EXTRACTIONS_TOTAL, "Chunks sent to an LLM for graph extraction, by outcome (ok, failed)."),
    (GOALS_TOTAL, "Goals that ended or paused, by status."),
    (GOAL_STEPS_TOTAL, "Goal steps judged, by target kind and outcome."),
    (GOAL_REPLANS_TOTAL, "Replans made after a failed goal step."),
    (GOAL_DURATION_MS, "Time from a goal's first run to its end in milliseconds, by status."),
];

/// Bucket bounds (ms) for latency histograms: 0.1 ms to 60 s.
pub const LATENCY_BUCKETS_MS: [f64; 16] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 15000.0, 60000.0];

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_has_help_text_in_order() {
        let described: Vec<&str> = super::HELP.iter().map(|(name, _)| *name).collect();
        assert_eq!(described, super::ALL);
        assert!(super::HELP.iter().all(|(_, help)| help.ends_with('.') && help.len() > 20));
        assert!(super::ALL.iter().all(|n| n.starts_with("cogo_") && !n.contains("__")));
    }
}
