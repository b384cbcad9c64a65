//! COGO's durable state: the bus (messages, leases, dead letters, events, presence, circuit states)
//! on SQLite (embedded) and PostgreSQL (distributed), behind one `Store`.
//!
//! Invariants:
//! - a message's state change and its event are written in one transaction;
//! - a message is held by at most one live lease; completion and failure are accepted only from the
//!   lease holder, so a completion is never recorded twice;
//! - every time comparison uses the injected clock, never the database's.

mod error;
pub mod goals;
pub mod knowledge;
mod lifecycle;
mod mcp_window;
mod postgres;
mod sqlite;
mod types;
mod vector_index;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use model::clock::{Clock, SystemClock};
use model::event::{Event, NewEvent};
use model::presence::Presence;
use model::{Message, MessageId, NewMessage};

pub use error::Error;
pub use types::*;
pub use wake::Wakeups;

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest accepted payload (bytes of JSON).
    pub max_payload_bytes: usize,
    /// Largest inline result (bytes of JSON); larger results must go to an artifact.
    pub max_result_bytes: usize,
    /// Connections to open (PostgreSQL; SQLite uses one writer and this many readers).
    pub max_connections: u32,
    /// The clock every time rule uses.
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_payload_bytes: model::message::DEFAULT_MAX_PAYLOAD_BYTES,
            max_result_bytes: model::message::DEFAULT_MAX_RESULT_BYTES,
            max_connections: 8,
            clock: Arc::new(SystemClock),
        }
    }
}

impl StoreOptions {
    /// Uses `clock` for every time rule.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the connection count.
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// One SQLite file (embedded mode).
    Sqlite,
    /// PostgreSQL (distributed mode).
    Postgres,
}

impl BackendKind {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteBus),
    Postgres(postgres::PgBus),
}

/// The bus and its companions on one database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// The MCP call records of the last summary window, refreshed incrementally.
    mcp_window: Arc<tokio::sync::Mutex<mcp_window::McpWindow>>,
}

macro_rules! dispatch {
    ($self:ident, $bus:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($bus) => $call,
            Backend::Postgres($bus) => $call,
        }
    };
}

impl Store {
    /// Opens `url`: `sqlite://PATH` (created if missing), `sqlite::memory:`, or `postgres://…`.
    /// Does not migrate; call [`Store::migrate`].
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, Error> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteBus::open(url, options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgBus::open(url, options).await?)
        } else {
            return Err(Error::BadUrl { url: redact_url(url) });
        };
        Ok(Self { backend, mcp_window: Arc::default() })
    }

    /// Which database this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies every pending migration of this backend's history.
    pub async fn migrate(&self) -> Result<(), Error> {
        dispatch!(self, bus => bus.migrate().await)
    }

    /// Checks what a crash could have broken and returns the problems found (none when healthy):
    /// on SQLite the file itself (`PRAGMA integrity_check`, foreign keys), on both backends that
    /// every message's status agrees with its lease and completion columns. PostgreSQL checks
    /// its own pages; a crash cannot leave it half-written.
    pub async fn integrity_check(&self) -> Result<Vec<String>, Error> {
        dispatch!(self, bus => bus.integrity_check().await)
    }

    /// The clock of this store.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        dispatch!(self, bus => &bus.options().clock)
    }

    /// Where workers wait for new work.
    pub fn wakeups(&self) -> &Wakeups {
        dispatch!(self, bus => bus.wakeups())
    }

    /// Puts one message on the bus. A message whose idempotency key exists for its tenant is not
    /// created again: the existing one is returned with `created: false`.
    pub async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, Error> {
        let mut out = self.enqueue_batch(vec![message]).await?;
        out.pop().ok_or(Error::Internal { what: "enqueue returned no row" })
    }

    /// Puts many messages on the bus in one transaction (all or none), in order.
    pub async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, Error> {
        let max = dispatch!(self, bus => bus.options().max_payload_bytes);
        for (index, message) in messages.iter().enumerate() {
            message.validate(max).map_err(|source| Error::InvalidMessage { index, source })?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.enqueue_batch(messages).await)
    }

    /// Claims up to `request.limit` ready messages with a lease.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Message>, Error> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.claim(request).await)
    }

    /// Extends the leases `agent_id` holds on `ids`; returns the ids still held (the others were lost).
    pub async fn extend_leases(
        &self,
        agent_id: &str,
        ids: &[MessageId],
        lease: Duration,
    ) -> Result<Vec<MessageId>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.extend_leases(agent_id, ids, lease).await)
    }

    /// Completes messages held by `agent_id`. Returns the outcome of each, in order: a completion
    /// of a message whose lease was lost is refused, never recorded twice.
    pub async fn complete(&self, agent_id: &str, completions: Vec<Completion>) -> Result<Vec<Outcome>, Error> {
        let max = dispatch!(self, bus => bus.options().max_result_bytes);
        for completion in &completions {
            if let Some(result) = &completion.result {
                let size = model::message::payload_size(result);
                if size > max {
                    return Err(Error::ResultTooLarge { id: completion.id, size, max });
                }
            }
        }
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.complete(agent_id, completions).await)
    }

    /// Records failed attempts of messages held by `agent_id`: each goes back to the queue with its
    /// delay or to the dead-letter queue, as its action says.
    pub async fn fail(&self, agent_id: &str, failures: Vec<Failure>) -> Result<Vec<Outcome>, Error> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.fail(agent_id, failures).await)
    }

    /// Gives messages back to the queue without counting an attempt (graceful shutdown).
    pub async fn release(&self, agent_id: &str, ids: &[MessageId]) -> Result<Vec<MessageId>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.release(agent_id, ids).await)
    }

    /// Takes back messages whose lease expired: each is retried (counted as a failed attempt of kind
    /// `lease_expired`) or dead-lettered, as `decide` says. Returns how many were taken back.
    pub async fn reap_expired(
        &self,
        limit: u32,
        decide: &(dyn Fn(&Message) -> FailAction + Sync),
    ) -> Result<u64, Error> {
        dispatch!(self, bus => bus.reap_expired(limit, decide).await)
    }

    /// Puts a dead-lettered message back on the queue with a fresh attempt series. Idempotent:
    /// requeueing a message that is already back returns it unchanged.
    pub async fn requeue(&self, id: MessageId) -> Result<Message, Error> {
        dispatch!(self, bus => bus.requeue(id).await)
    }

    /// Cancels a queued message (it ends `failed` with reason `cancelled`).
    pub async fn cancel(&self, id: MessageId, reason: &str) -> Result<Message, Error> {
        dispatch!(self, bus => bus.cancel(id, reason).await)
    }

    /// One message.
    pub async fn message(&self, id: MessageId) -> Result<Message, Error> {
        dispatch!(self, bus => bus.message(id).await)
    }

    /// Messages matching `filter`, newest first, one page.
    pub async fn messages(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>, Error> {
        dispatch!(self, bus => bus.messages(filter, page).await)
    }

    /// Events matching `filter`, in order (oldest first), one page after `page.after`.
    pub async fn events(&self, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>, Error> {
        dispatch!(self, bus => bus.events(filter, page).await)
    }

    /// Follows events matching `filter` after cursor `after` (None: from the oldest): yields pages
    /// of new events as they are written, waking on local writes and NOTIFY, polling every
    /// `poll` otherwise. The stream ends only when the store fails.
    pub fn follow_events(
        &self,
        filter: EventFilter,
        after: Option<String>,
        poll: Duration,
    ) -> impl futures_util::Stream<Item = Result<Vec<Event>, Error>> + Send + use<> {
        let store = self.clone();
        futures_util::stream::unfold((store, filter, after, false), move |(store, filter, cursor, failed)| async move {
            if failed {
                return None;
            }
            let wake = store.wakeups().events();
            loop {
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match store.events(&filter, &PageRequest { after: cursor.clone(), limit: 500 }).await {
                    Err(err) => return Some((Err(err), (store, filter, cursor, true))),
                    Ok(page) if !page.items.is_empty() => {
                        return Some((Ok(page.items), (store.clone(), filter, page.next, false)));
                    }
                    Ok(_) => {
                        tokio::select! {
                            _ = &mut notified => {}
                            _ = tokio::time::sleep(poll) => {}
                        }
                    }
                }
            }
        })
    }

    /// The cursor just after the newest event (to follow only what happens from now on).
    pub async fn latest_event_cursor(&self) -> Result<Option<String>, Error> {
        let mut after = None;
        loop {
            let page =
                self.events(&EventFilter::default(), &PageRequest { after: after.clone(), limit: MAX_PAGE }).await?;
            if page.items.is_empty() {
                return Ok(after);
            }
            after = page.next;
        }
    }

    /// Dead-letter entries, newest first.
    pub async fn dead_letters(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<DeadLetter>, Error> {
        dispatch!(self, bus => bus.dead_letters(filter, page).await)
    }

    /// Appends events that belong to no message state change (presence, circuits).
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        dispatch!(self, bus => bus.append_events(events).await)
    }

    /// Registers a process as online (or refreshes it) and records `agent_online`.
    pub async fn presence_online(&self, presence: &Presence) -> Result<(), Error> {
        dispatch!(self, bus => bus.presence_online(presence).await)
    }

    /// Refreshes a process's heartbeat. Returns false when its row is gone or offline.
    pub async fn presence_heartbeat(&self, agent_id: &str) -> Result<bool, Error> {
        dispatch!(self, bus => bus.presence_heartbeat(agent_id).await)
    }

    /// Marks a process offline and records `agent_offline` with `reason`.
    pub async fn presence_offline(&self, agent_id: &str, reason: &str) -> Result<(), Error> {
        dispatch!(self, bus => bus.presence_offline(agent_id, reason).await)
    }

    /// Marks offline every online process whose heartbeat is older than `timeout`; returns their ids.
    pub async fn presence_mark_stale(&self, timeout: Duration) -> Result<Vec<String>, Error> {
        dispatch!(self, bus => bus.presence_mark_stale(timeout).await)
    }

    /// Stores a sealed secret, replacing one of the same name.
    pub async fn put_secret(&self, secret: SealedSecret) -> Result<(), Error> {
        dispatch!(self, bus => bus.put_secret(&secret).await)
    }

    /// The sealed secret `name`, if any.
    pub async fn secret(&self, name: &str) -> Result<Option<SealedSecret>, Error> {
        dispatch!(self, bus => bus.secret(name).await)
    }

    /// Every sealed secret, by name.
    pub async fn secrets(&self) -> Result<Vec<SealedSecret>, Error> {
        dispatch!(self, bus => bus.secrets().await)
    }

    /// Removes the secret `name`; false when there was none.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, Error> {
        dispatch!(self, bus => bus.delete_secret(name).await)
    }

    /// Stores a new API token.
    pub async fn create_api_token(&self, token: ApiToken) -> Result<(), Error> {
        dispatch!(self, bus => bus.create_api_token(&token).await)
    }

    /// The API token `id`, revoked or not.
    pub async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, Error> {
        dispatch!(self, bus => bus.api_token(id).await)
    }

    /// Every API token, by tenant and id.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>, Error> {
        dispatch!(self, bus => bus.api_tokens().await)
    }

    /// Revokes the API token `id`; false when there is no such token or it was already revoked.
    pub async fn revoke_api_token(&self, id: &str) -> Result<bool, Error> {
        dispatch!(self, bus => bus.revoke_api_token(id).await)
    }

    /// Stores a new goal (status `queued`, version 1) with a fresh id and trace id.
    pub async fn create_goal(&self, goal: model::goal::NewGoal) -> Result<model::goal::Goal, Error> {
        goal.validate().map_err(|detail| Error::InvalidGoal { detail })?;
        let now = self.clock().now();
        let goal = model::goal::Goal {
            id: model::new_id().to_string(),
            tenant: goal.tenant,
            trace_id: model::trace::TraceContext::new_root().trace_id_hex(),
            goal: goal.goal,
            status: model::goal::GoalStatus::Queued,
            state: goal.state,
            answer: None,
            error: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        dispatch!(self, bus => bus.insert_goal(&goal).await)?;
        Ok(goal)
    }

    /// The goal `id`.
    pub async fn goal(&self, id: &str) -> Result<model::goal::Goal, Error> {
        dispatch!(self, bus => bus.goal(id).await)?.ok_or_else(|| Error::GoalNotFound { id: id.to_owned() })
    }

    /// Goals matching `filter`, newest first.
    pub async fn goals(&self, filter: &goals::GoalFilter) -> Result<Vec<model::goal::Goal>, Error> {
        dispatch!(self, bus => bus.goals(filter).await)
    }

    /// Applies `update` if the goal is still at its expected version and the lifecycle allows the
    /// new status; returns the goal as written (version bumped). A stale version or a forbidden
    /// move is a `GoalConflict`, and nothing is written.
    pub async fn update_goal(&self, id: &str, update: model::goal::GoalUpdate) -> Result<model::goal::Goal, Error> {
        dispatch!(self, bus => bus.update_goal(id, &update).await)
    }

    /// Every known process, newest heartbeat first.
    pub async fn presence(&self) -> Result<Vec<Presence>, Error> {
        dispatch!(self, bus => bus.presence().await)
    }

    /// Records a breaker's state in this process.
    pub async fn record_circuit(&self, state: &CircuitState) -> Result<(), Error> {
        dispatch!(self, bus => bus.record_circuit(state).await)
    }

    /// Every recorded breaker state.
    pub async fn circuits(&self) -> Result<Vec<CircuitState>, Error> {
        dispatch!(self, bus => bus.circuits().await)
    }

    /// MCP call figures (calls, failures, p50/p95, per `<toolset>.<tool>`) from the
    /// `mcp_call_succeeded|failed` events since `since` (at most [`MCP_SUMMARY_MAX_EVENTS`], newest).
    ///
    /// The records are kept between calls: a call reads only the events recorded since the
    /// previous one (see `mcp_window`), so polling the summary costs what happened since the last
    /// poll, not the whole window.
    pub async fn mcp_summary(&self, since: chrono::DateTime<chrono::Utc>) -> Result<McpSummary, Error> {
        let window = self.mcp_window(since, true).await?.ok_or(Error::Internal { what: "the MCP window" })?;
        Ok(window.summary(since))
    }

    /// The records window brought up to date. A summary (`slide`) moves its start to `since`; a
    /// series reads through it only when `since` falls inside it, else straight from the events.
    async fn mcp_window(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        slide: bool,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, mcp_window::McpWindow>>, Error> {
        let mut window = self.mcp_window.lock().await;
        let (from, replace) = window.next_read(since);
        if replace && !slide {
            return Ok(None);
        }
        let start = if slide { since } else { window.start().unwrap_or(since) };
        let read = dispatch!(self, bus => bus.mcp_calls(from, MCP_SUMMARY_MAX_EVENTS).await)?;
        window.absorb(start, replace, read, MCP_SUMMARY_MAX_EVENTS as usize);
        Ok(Some(window))
    }

    /// MCP calls from `since` until now in `buckets` equal buckets, for `tool` or for all.
    pub async fn mcp_series(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        tool: Option<&str>,
        buckets: usize,
    ) -> Result<McpSeries, Error> {
        let records: Vec<McpCallRecord> = match self.mcp_window(since, false).await? {
            Some(window) => window.since(since).into_iter().cloned().collect(),
            None => dispatch!(self, bus => bus.mcp_calls(since, MCP_SUMMARY_MAX_EVENTS).await)?,
        };
        Ok(McpSeries::from_records(&records, tool, since, self.clock().now(), buckets))
    }

    /// Queue depth, oldest age and the last minute's throughput (done, failed) per service and role.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let since = self.clock().now() - chrono::Duration::minutes(1);
        let (stats, finished) = tokio::try_join!(async { dispatch!(self, bus => bus.queue_stats().await) }, async {
            dispatch!(self, bus => bus.finished_since(since).await)
        })?;
        Ok(QueueStats::with_throughput(stats, finished))
    }

    /// Deletes finished messages and events older than `older_than`; returns rows removed.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, Error> {
        dispatch!(self, bus => bus.prune(older_than).await)
    }

    /// Records the embedding model of the knowledge index (on PostgreSQL also creates the vector
    /// table and its HNSW index). An index built with another model is refused unless `reset`,
    /// which empties the index first.
    pub async fn knowledge_prepare(&self, model: &str, dim: usize, reset: bool) -> Result<(), Error> {
        dispatch!(self, bus => bus.kb_prepare(model, dim, reset).await)
    }

    /// Refreshes the planner's statistics of the knowledge tables (PostgreSQL `ANALYZE`, SQLite
    /// `PRAGMA optimize`): after a large ingest, before autovacuum gets to it, graph walks and
    /// searches would otherwise be planned for empty tables.
    pub async fn knowledge_analyze(&self) -> Result<(), Error> {
        dispatch!(self, bus => bus.kb_analyze().await)
    }

    /// The documents of a scope, by source.
    pub async fn knowledge_documents(
        &self,
        scope: &knowledge::KnowledgeScope,
    ) -> Result<Vec<knowledge::StoredDocument>, Error> {
        dispatch!(self, bus => bus.kb_documents(scope).await)
    }

    /// Embeddings already stored for chunks with these content hashes (to skip embedding them again).
    pub async fn knowledge_embeddings_by_hash(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<f32>>, Error> {
        dispatch!(self, bus => bus.kb_embeddings_by_hash(hashes).await)
    }

    /// Writes a document with its chunks, embeddings, entities, relations and mentions, replacing
    /// an earlier version of the same source, in one transaction. Returns the document's id.
    pub async fn knowledge_put_document(&self, document: knowledge::NewDocument) -> Result<i64, Error> {
        dispatch!(self, bus => bus.kb_put_document(document).await)
    }

    /// Deletes documents (and what was derived from them) by source; returns how many.
    pub async fn knowledge_delete_documents(
        &self,
        scope: &knowledge::KnowledgeScope,
        sources: &[String],
    ) -> Result<u64, Error> {
        dispatch!(self, bus => bus.kb_delete_documents(scope, sources).await)
    }

    /// Full-text search: the best `limit` chunks for the words of `query` (any of them), best first,
    /// ranked by BM25 on both backends. On a large index (20,000 chunks or more), when the query
    /// also has rarer words, chunks with only common words (each in more than 1 % of the chunks)
    /// are not candidates; see
    /// [`Store::knowledge_fulltext_every_match`].
    pub async fn knowledge_fulltext(
        &self,
        filter: &knowledge::KnowledgeFilter,
        query: &str,
        limit: usize,
    ) -> Result<Vec<knowledge::ScoredChunk>, Error> {
        check_fulltext(filter, query)?;
        dispatch!(self, bus => bus.kb_fulltext(filter, query, limit, true).await)
    }

    /// Full-text search ranking every chunk that has any word of the query, common words too:
    /// slower on large indexes; measures what [`Store::knowledge_fulltext`]'s pruning changes.
    pub async fn knowledge_fulltext_every_match(
        &self,
        filter: &knowledge::KnowledgeFilter,
        query: &str,
        limit: usize,
    ) -> Result<Vec<knowledge::ScoredChunk>, Error> {
        check_fulltext(filter, query)?;
        dispatch!(self, bus => bus.kb_fulltext(filter, query, limit, false).await)
    }

    /// Vector search: the `limit` chunks nearest to `vector` by cosine similarity, best first.
    /// `exact` scans every vector instead of using the index (to measure the index's recall).
    pub async fn knowledge_vector(
        &self,
        filter: &knowledge::KnowledgeFilter,
        vector: &[f32],
        limit: usize,
        exact: bool,
    ) -> Result<Vec<knowledge::ScoredChunk>, Error> {
        check_knowledge_filter(filter)?;
        if vector.is_empty() || limit == 0 || vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidKnowledge {
                detail: format!(
                    "a vector search needs a non-empty query of finite numbers and a limit above 0 \
                     (got {} dimensions, limit {limit})",
                    vector.len()
                ),
            });
        }
        dispatch!(self, bus => bus.kb_vector(filter, vector, limit, exact).await)
    }

    /// Chunks by id, with their documents; only those of `tenant` (order not kept).
    pub async fn knowledge_chunks(&self, tenant: &str, ids: &[i64]) -> Result<Vec<knowledge::StoredChunk>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.kb_chunks(tenant, ids).await)
    }

    /// Entities named exactly `name` (of `kind`, if given) within the filter's tenant and project.
    pub async fn knowledge_find_entities(
        &self,
        filter: &knowledge::KnowledgeFilter,
        name: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<knowledge::Entity>, Error> {
        check_knowledge_filter(filter)?;
        dispatch!(self, bus => bus.kb_find_entities(filter, name, kind, limit).await)
    }

    /// Entities by id; only those of `tenant`.
    pub async fn knowledge_entities(&self, tenant: &str, ids: &[i64]) -> Result<Vec<knowledge::Entity>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.kb_entities(tenant, ids).await)
    }

    /// Relations touching `ids` in `direction` (of `kinds`, all when empty), at most `limit`.
    pub async fn knowledge_edges(
        &self,
        tenant: &str,
        ids: &[i64],
        direction: knowledge::Direction,
        kinds: &[String],
        limit: usize,
    ) -> Result<Vec<knowledge::Edge>, Error> {
        if ids.len() > knowledge::limits::MAX_FRONTIER {
            return Err(Error::InvalidKnowledge {
                detail: format!(
                    "a graph step from {} entities, over the limit of {}: lower the depth or fan-out",
                    ids.len(),
                    knowledge::limits::MAX_FRONTIER
                ),
            });
        }
        dispatch!(self, bus => bus.kb_edges(tenant, ids, direction, kinds, limit).await)
    }

    /// (chunk, entity) pairs: the entities these chunks mention.
    pub async fn knowledge_chunk_entities(&self, chunk_ids: &[i64]) -> Result<Vec<(i64, i64)>, Error> {
        if chunk_ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.kb_chunk_entities(chunk_ids).await)
    }

    /// (entity, chunk) pairs: chunks that mention these entities, at most `limit`.
    pub async fn knowledge_entity_chunks(&self, entity_ids: &[i64], limit: usize) -> Result<Vec<(i64, i64)>, Error> {
        if entity_ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self, bus => bus.kb_entity_chunks(entity_ids, limit).await)
    }

    /// What the index holds within the filter.
    pub async fn knowledge_stats(
        &self,
        filter: &knowledge::KnowledgeFilter,
    ) -> Result<knowledge::KnowledgeStats, Error> {
        check_knowledge_filter(filter)?;
        dispatch!(self, bus => bus.kb_stats(filter).await)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, bus => bus.ping().await)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        dispatch!(self, bus => bus.close().await)
    }
}
/// Checks a full-text search's filter and the length of its query.
fn check_fulltext(filter: &knowledge::KnowledgeFilter, query: &str) -> Result<(), Error> {
    check_knowledge_filter(filter)?;
    if query.chars().count() > knowledge::limits::MAX_QUERY_CHARS {
        return Err(Error::InvalidKnowledge {
            detail: format!("the query is over {} characters", knowledge::limits::MAX_QUERY_CHARS),
        });
    }
    Ok(())
}

fn check_knowledge_filter(filter: &knowledge::KnowledgeFilter) -> Result<(), Error> {
    if filter.tenant.is_empty() {
        return Err(Error::InvalidKnowledge { detail: "a knowledge query must name its tenant".into() });
    }
    if filter.source_prefix.as_ref().is_some_and(|p| p.len() > 2048) {
        return Err(Error::InvalidKnowledge { detail: "the source prefix is over 2048 bytes".into() });
    }
    Ok(())
}

fn check_database_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::BadUrl { url: format!("database name {name:?} (use 1 to 63 of a-z, 0-9, _)") });
    }
    Ok(())
}

async fn admin_statement(admin_url: &str, sql: String) -> Result<(), Error> {
    use sqlx::Connection;
    let mut connection =
        sqlx::PgConnection::connect(admin_url).await.map_err(error::db("connecting to PostgreSQL as administrator"))?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut connection)
        .await
        .map_err(error::db("running an administrative statement"))?;
    connection.close().await.map_err(error::db("closing an administrative connection"))
}

/// Creates database `name` on the PostgreSQL server of `admin_url` (benchmarks, tests, gates).
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<(), Error> {
    check_database_name(name)?;
    admin_statement(admin_url, format!("CREATE DATABASE \"{name}\"")).await
}

/// Drops database `name` on the PostgreSQL server of `admin_url`, closing its connections.
pub async fn drop_postgres_database(admin_url: &str, name: &str) -> Result<(), Error> {
    check_database_name(name)?;
    admin_statement(admin_url, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

/// Bytes of heap the embedded SQLite holds now in this process, across every connection (page
/// caches, statements, schemas): `sqlite3_memory_used()`.
#[allow(unsafe_code)]
pub fn sqlite_memory_used() -> i64 {
    // SAFETY: sqlite3_memory_used takes no argument, only reads SQLite's own counters (under its
    // mutex) and is callable from any thread at any time, before or after SQLite is initialised.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// A database URL with its password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}

#[cfg(test)]
mod migration_tests {
    /// Every file in `migrations/<backend>/` is embedded, in order (a new file must be listed).
    #[test]
    fn every_migration_file_is_embedded() {
        for (backend, embedded) in
            [("sqlite", &crate::sqlite::MIGRATIONS[..]), ("postgres", &crate::postgres::MIGRATIONS[..])]
        {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("migrations dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(files.len(), embedded.len(), "{backend}: {files:?}");
            for (file, (version, _, sql)) in files.iter().zip(embedded.iter()) {
                assert!(file.starts_with(&format!("{version:04}_")), "{backend}: {file} is not version {version}");
                let text = std::fs::read_to_string(dir.join(file)).expect("read");
                assert_eq!(&text, sql, "{backend}: {file} is embedded as written");
            }
        }
    }
}
