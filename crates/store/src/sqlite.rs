//! The SQLite backend (embedded mode): one writer connection (writes never contend for the file
//! lock inside a process), several readers under WAL, `BEGIN IMMEDIATE` so writers from another
//! process wait instead of failing, and in-process wake-ups.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, SqlSafeStr, Sqlite};
use uuid::Uuid;

use model::event::{Event, NewEvent};
use model::presence::{Presence, PresenceStatus};
use model::{Intent, Message, MessageId, MessageStatus, NewMessage};

use crate::error::db;
use crate::lifecycle::push_text_filters;
use crate::lifecycle::{
    enqueued_message, message_event, parse_seq_cursor, parse_uuid_cursor, presence_event, truncate, with_detail,
};
use crate::{ApiToken, Finished, McpCallRecord, SealedSecret};
use crate::{
    CircuitState, ClaimRequest, Completion, DeadLetter, Enqueued, Error, EventFilter, FailAction, Failure,
    MessageFilter, Outcome, Page, PageRequest, QueueStats, StoreOptions, Wakeups,
};

pub(crate) const MIGRATIONS: [(i64, &str, &str); 7] = [
    (1, "bus", include_str!("../../../migrations/sqlite/0001_bus.sql")),
    (2, "mcp events", include_str!("../../../migrations/sqlite/0002_mcp_events.sql")),
    (3, "secrets", include_str!("../../../migrations/sqlite/0003_secrets.sql")),
    (4, "api tokens", include_str!("../../../migrations/sqlite/0004_api_tokens.sql")),
    (5, "knowledge", include_str!("../../../migrations/sqlite/0005_knowledge.sql")),
    (6, "goals", include_str!("../../../migrations/sqlite/0006_goals.sql")),
    (7, "edge tokens", include_str!("../../../migrations/sqlite/0007_edge_tokens.sql")),
];

mod goals;
mod knowledge;

type Tx = sqlx::Transaction<'static, Sqlite>;

#[derive(Debug, Clone)]
pub(crate) struct SqliteBus {
    writer: SqlitePool,
    reader: SqlitePool,
    options: StoreOptions,
    wakeups: Wakeups,
    vectors: std::sync::Arc<knowledge::VectorCache>,
    /// The checkpointer's connection (none in memory).
    checkpoints: Option<SqlitePool>,
    /// Held by every clone; the checkpointer stops once the last clone is gone.
    _alive: std::sync::Arc<()>,
}

/// How often the checkpointer looks at the WAL file (a `stat`, no query, while nothing changes).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL size, in pages, past which the writer checkpoints by itself (SQLite's default is 1,000;
/// the checkpointer normally keeps the WAL far below this).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Copies the WAL into the database file from a connection of its own, whenever the WAL changed
/// since its last pass (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer or readers).
/// The writer, which every write waits on, thus never copies pages or waits on `fsync` for a
/// checkpoint. Stops when the store is closed or dropped.
async fn checkpointer(pool: SqlitePool, wal: std::path::PathBuf, alive: std::sync::Weak<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpointed = None;
    loop {
        tick.tick().await;
        if alive.strong_count() == 0 || pool.is_closed() {
            break;
        }
        // read before the checkpoint: a commit during it shows as a change on the next pass
        let seen = std::fs::metadata(&wal).ok().map(|m| (m.len(), m.modified().ok()));
        if seen.is_none() || seen == checkpointed {
            continue;
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            Ok(_) => checkpointed = seen,
            Err(_) if pool.is_closed() => break,
            Err(error) => tracing::warn!(%error, wal = %wal.display(), "checkpointing the SQLite WAL failed; retrying"),
        }
    }
    pool.close().await;
}

fn us(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default()
}

fn dur_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 4)
}

impl SqliteBus {
    pub(crate) async fn open(url: &str, options: StoreOptions) -> Result<Self, Error> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(db("parsing the SQLite URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32768");
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        // A pool of one connection, which it hands on without pinging it first (a SQLite connection
        // is a handle on a file, not a socket that can go stale).
        let one = || {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
        };
        // On a file the writer leaves checkpoints to the checkpointer; it checkpoints itself only
        // past `WRITER_CHECKPOINT_PAGES` (should the checkpointer fall behind).
        let writer_options = if memory {
            connect.clone()
        } else {
            connect.clone().pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
        };
        let writer = one()
            .after_connect(|connection, _| {
                Box::pin(async move { sqlx::query(BATCH_TABLE).execute(connection).await.map(drop) })
            })
            .connect_with(writer_options)
            .await
            .map_err(db("opening the SQLite database"))?;
        let alive = std::sync::Arc::new(());
        let mut checkpoints = None;
        let reader = if memory {
            writer.clone()
        } else {
            let pool = one().connect_with(connect.clone()).await.map_err(db("opening the SQLite checkpointer"))?;
            let wal = std::path::PathBuf::from(format!("{}-wal", connect.get_filename().display()));
            tokio::spawn(checkpointer(pool.clone(), wal, std::sync::Arc::downgrade(&alive)));
            checkpoints = Some(pool);
            SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 16))
                // each reader keeps a smaller page cache than the writer: up to 16 of them, and
                // memory must stay bounded (8 MiB each, 32 MiB for the writer)
                .connect_with(connect.read_only(true).pragma("cache_size", "-8192"))
                .await
                .map_err(db("opening SQLite readers"))?
        };
        Ok(Self {
            writer,
            reader,
            options,
            wakeups: Wakeups::default(),
            vectors: Default::default(),
            checkpoints,
            _alive: alive,
        })
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub(crate) fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    fn now(&self) -> DateTime<Utc> {
        self.options.clock.now()
    }

    async fn begin(&self, what: &'static str) -> Result<Tx, Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db(what))
    }

    pub(crate) async fn migrate(&self) -> Result<(), Error> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.writer)
            .await
            .map_err(|source| Error::Migrate { backend: "sqlite", source })
    }

    pub(crate) async fn integrity_check(&self) -> Result<Vec<String>, Error> {
        let mut problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.writer)
            .await
            .map_err(db("checking the database file's integrity"))?;
        problems.retain(|line| line != "ok");
        let foreign: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&self.writer)
            .await
            .map_err(db("checking the database's foreign keys"))?;
        if !foreign.is_empty() {
            problems.push(format!("{} rows break a foreign key", foreign.len()));
        }
        let inconsistent: i64 = sqlx::query_scalar(crate::lifecycle::INCONSISTENT_MESSAGES)
            .fetch_one(&self.writer)
            .await
            .map_err(db("checking the messages' states"))?;
        if inconsistent > 0 {
            problems.push(format!("{inconsistent} messages whose status disagrees with their lease or completion"));
        }
        Ok(problems)
    }

    pub(crate) async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, Error> {
        let now = self.now();
        let ids: Vec<Uuid> = messages.iter().map(|_| model::new_id()).collect();
        let traces: Vec<String> = messages
            .iter()
            .map(|m| m.trace_id.clone().unwrap_or_else(|| model::trace::TraceContext::new_root().trace_id_hex()))
            .collect();
        let mut tx = self.begin("starting an enqueue").await?;
        let mut created: HashMap<Uuid, Message> = HashMap::with_capacity(messages.len());
        // 17 columns a row: 500 rows stay far below SQLite's bind limit.
        for (chunk_index, chunk) in messages.chunks(500).enumerate() {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO agent_messages (id, created_at, tenant, project_id, service, role, shard, intent, payload, \
                 trace_id, parent_id, idempotency_key, priority, status, attempts, max_attempts, run_at) ",
            );
            query.push_values(chunk.iter().enumerate(), |mut row, (offset, message)| {
                row.push_bind(ids[chunk_index * 500 + offset])
                    .push_bind(us(now))
                    .push_bind(message.tenant.clone())
                    .push_bind(message.project_id.clone())
                    .push_bind(message.service.clone())
                    .push_bind(message.role.clone())
                    .push_bind(message.shard.clone())
                    .push_bind(message.intent.as_str().to_owned())
                    .push_bind(message.payload.to_string())
                    .push_bind(traces[chunk_index * 500 + offset].clone())
                    .push_bind(message.parent_id.map(|id| id.0))
                    .push_bind(message.idempotency_key.clone())
                    .push_bind(message.priority)
                    .push_bind("queued")
                    .push_bind(0)
                    .push_bind(message.max_attempts)
                    .push_bind(us(message.run_at.unwrap_or(now)));
            });
            query.push(
                " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
            );
            let rows = query.build().fetch_all(&mut *tx).await.map_err(db("enqueueing messages"))?;
            // only ids come back: the stored rows are what was sent
            let inserted: HashSet<Uuid> = rows.iter().filter_map(|row| row.try_get::<Uuid, _>("id").ok()).collect();
            for (offset, message) in chunk.iter().enumerate() {
                let index = chunk_index * 500 + offset;
                if inserted.contains(&ids[index]) {
                    created.insert(ids[index], enqueued_message(ids[index], now, message, traces[index].clone()));
                }
            }
        }
        let mut events = Vec::with_capacity(created.len());
        let mut out = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            if let Some(stored) = created.remove(&ids[index]) {
                let payload = serde_json::json!({ "priority": stored.priority, "run_at": stored.run_at, "max_attempts": stored.max_attempts });
                events.push(message_event(&stored, model::Phase::Scheduled, None, payload));
                out.push(Enqueued { message: stored, created: true });
                continue;
            }
            let key =
                message.idempotency_key.as_deref().ok_or(Error::Internal { what: "insert skipped without a key" })?;
            let row = sqlx::query("SELECT * FROM agent_messages WHERE tenant = ? AND idempotency_key = ?")
                .bind(&message.tenant)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("reading the message of a duplicate idempotency key"))?;
            out.push(Enqueued { message: message_from_row(&row)?, created: false });
        }
        insert_events(&mut tx, now, &events).await?;
        tx.commit().await.map_err(db("committing an enqueue"))?;
        let queues: HashSet<(&str, &str)> =
            out.iter().map(|e| (e.message.service.as_str(), e.message.role.as_str())).collect();
        for (service, role) in queues {
            self.wakeups.notify_queue(service, role);
        }
        self.wakeups.events().notify_waiters();
        Ok(out)
    }

    pub(crate) async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Message>, Error> {
        let now = self.now();
        let lease_until = us(now) + dur_us(request.lease);
        let shards = serde_json::to_string(&request.shard_list()).unwrap_or_else(|_| "[\"\"]".into());
        // the event payload spells the lease's end as every other event does (RFC 3339)
        let lease_text = serde_json::to_value(at(lease_until)).ok().and_then(|v| v.as_str().map(str::to_owned));
        let mut tx = self.begin("starting a claim").await?;
        // One command for the whole claim (see `CLAIM`): the writer thread runs its statements
        // back to back while it holds the write lock, with no round trip to tokio between them.
        let claimed: String = sqlx::query(CLAIM)
            .bind(&request.service)
            .bind(&request.role)
            .bind(us(now))
            .bind(&shards)
            .bind(i64::from(request.limit))
            .bind(&request.agent_id)
            .bind(lease_until)
            .bind(lease_text)
            .bind(event_suffix(model::Phase::Claimed))
            .bind(unix_ms())
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db("claiming messages"))?;
        tx.commit().await.map_err(db("committing a claim"))?;
        let mut messages = messages_from_json(&claimed)?;
        messages.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(messages)
    }

    pub(crate) async fn extend_leases(
        &self,
        agent_id: &str,
        ids: &[MessageId],
        lease: Duration,
    ) -> Result<Vec<MessageId>, Error> {
        let until = us(self.now()) + dur_us(lease);
        let mut tx = self.begin("starting a lease extension").await?;
        let rows = sqlx::query(
            "UPDATE agent_messages SET lease_until = ?1 WHERE id IN (SELECT unhex(value) FROM json_each(?2)) \
             AND status = 'claimed' AND claimed_by = ?3 RETURNING id",
        )
        .bind(until)
        .bind(id_array(ids))
        .bind(agent_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("extending leases"))?;
        tx.commit().await.map_err(db("committing lease extensions"))?;
        rows.iter()
            .map(|row| row.try_get::<Uuid, _>("id").map(MessageId).map_err(db("reading extended leases")))
            .collect()
    }

    pub(crate) async fn complete(&self, agent_id: &str, completions: Vec<Completion>) -> Result<Vec<Outcome>, Error> {
        let now = self.now();
        let input: Vec<CompletionJson<'_>> = completions
            .iter()
            .map(|c| CompletionJson {
                id: c.id.0.simple().to_string(),
                result: c.result.as_ref().map(Value::to_string),
                result_url: c.result_url.as_deref(),
                detail: c.detail.as_ref().filter(|d| d.is_object()),
            })
            .collect();
        let input = serde_json::to_string(&input).map_err(|_| Error::Internal { what: "encoding completions" })?;
        let mut tx = self.begin("starting a completion").await?;
        // one command for the whole completion, as for a claim (see `COMPLETE`)
        let done: String = sqlx::query(COMPLETE)
            .bind(&input)
            .bind(agent_id)
            .bind(us(now))
            .bind(event_suffix(model::Phase::Succeeded))
            .bind(unix_ms())
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db("completing messages"))?;
        tx.commit().await.map_err(db("committing completions"))?;
        self.wakeups.events().notify_waiters();
        let done: Vec<String> = serde_json::from_str(&done)
            .map_err(|e| Error::Corrupt { what: "message", detail: format!("completed ids: {e}") })?;
        let done = done
            .iter()
            .map(|hex| {
                Uuid::parse_str(hex).map_err(|e| Error::Corrupt { what: "message", detail: format!("id {hex:?}: {e}") })
            })
            .collect::<Result<HashSet<Uuid>, Error>>()?;
        Ok(completions
            .iter()
            .map(|c| if done.contains(&c.id.0) { Outcome::Done } else { Outcome::LeaseLost })
            .collect())
    }

    pub(crate) async fn fail(&self, agent_id: &str, failures: Vec<Failure>) -> Result<Vec<Outcome>, Error> {
        let now = self.now();
        let mut tx = self.begin("starting a failure").await?;
        let agents = vec![agent_id.to_owned(); failures.len()];
        let (outcomes, retried) = fail_rows(&mut tx, now, &failures, &agents).await?;
        tx.commit().await.map_err(db("committing failures"))?;
        for (service, role) in retried {
            self.wakeups.notify_queue(&service, &role);
        }
        self.wakeups.events().notify_waiters();
        Ok(outcomes)
    }

    pub(crate) async fn release(&self, agent_id: &str, ids: &[MessageId]) -> Result<Vec<MessageId>, Error> {
        let now = self.now();
        let mut tx = self.begin("starting a release").await?;
        let rows = sqlx::query(
            "UPDATE agent_messages SET status = 'queued', attempts = max(attempts - 1, 0), claimed_by = NULL, \
             claimed_at = NULL, lease_until = NULL, run_at = ?1 \
             WHERE id IN (SELECT unhex(value) FROM json_each(?2)) AND status = 'claimed' AND claimed_by = ?3 RETURNING *",
        )
        .bind(us(now))
        .bind(id_array(ids))
        .bind(agent_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("releasing messages"))?;
        let messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        let events: Vec<NewEvent> = messages
            .iter()
            .map(|m| {
                let payload = serde_json::json!({ "agent_id": agent_id, "run_at": m.run_at });
                message_event(m, model::Phase::RetryScheduled, Some("released"), payload)
            })
            .collect();
        insert_events(&mut tx, now, &events).await?;
        tx.commit().await.map_err(db("committing a release"))?;
        for message in &messages {
            self.wakeups.notify_queue(&message.service, &message.role);
        }
        Ok(messages.into_iter().map(|m| m.id).collect())
    }

    pub(crate) async fn reap_expired(
        &self,
        limit: u32,
        decide: &(dyn Fn(&Message) -> FailAction + Sync),
    ) -> Result<u64, Error> {
        let now = self.now();
        let mut tx = self.begin("starting the lease reaper").await?;
        let rows = sqlx::query(
            "SELECT * FROM agent_messages WHERE status = 'claimed' AND lease_until < ? ORDER BY lease_until LIMIT ?",
        )
        .bind(us(now))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding expired leases"))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut failures = Vec::with_capacity(rows.len());
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            let message = message_from_row(row)?;
            let holder = message.claimed_by.clone().unwrap_or_default();
            failures.push(Failure {
                id: message.id,
                kind: model::ErrorKind::LeaseExpired,
                error: format!("lease held by {holder} expired"),
                action: decide(&message),
                detail: None,
            });
            agents.push(holder);
        }
        let (_, retried) = fail_rows(&mut tx, now, &failures, &agents).await?;
        tx.commit().await.map_err(db("committing reaped leases"))?;
        for (service, role) in retried {
            self.wakeups.notify_queue(&service, &role);
        }
        Ok(rows.len() as u64)
    }

    pub(crate) async fn requeue(&self, id: MessageId) -> Result<Message, Error> {
        let now = self.now();
        let mut tx = self.begin("starting a requeue").await?;
        let current = sqlx::query("SELECT * FROM agent_messages WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the message to requeue"))?
            .map(|row| message_from_row(&row))
            .transpose()?
            .ok_or(Error::NotFound { id })?;
        let entry: Option<Option<i64>> =
            sqlx::query_scalar("SELECT requeued_at FROM agent_messages_dlq WHERE message_id = ?")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("reading the dead-letter entry"))?;
        match entry {
            None => {
                return Err(Error::Conflict {
                    id,
                    action: "requeue",
                    status: format!("{} and not dead-lettered", current.status),
                });
            }
            Some(Some(_)) => return Ok(current),
            Some(None) => {}
        }
        let row = sqlx::query(
            "UPDATE agent_messages SET status = 'queued', attempts = 0, run_at = ?2, done_at = NULL, claimed_by = NULL, \
             claimed_at = NULL, lease_until = NULL WHERE id = ?1 AND status = 'failed' RETURNING *",
        )
        .bind(id.0)
        .bind(us(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("requeueing the message"))?
        .ok_or_else(|| Error::Conflict { id, action: "requeue", status: current.status.to_string() })?;
        let message = message_from_row(&row)?;
        sqlx::query("UPDATE agent_messages_dlq SET requeued_at = ? WHERE message_id = ?")
            .bind(us(now))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db("marking the dead-letter entry requeued"))?;
        insert_events(&mut tx, now, &[message_event(&message, model::Phase::Requeued, Some("operator"), Value::Null)])
            .await?;
        tx.commit().await.map_err(db("committing a requeue"))?;
        self.wakeups.notify_queue(&message.service, &message.role);
        Ok(message)
    }

    pub(crate) async fn cancel(&self, id: MessageId, reason: &str) -> Result<Message, Error> {
        let now = self.now();
        let mut tx = self.begin("starting a cancel").await?;
        let row = sqlx::query(
            "UPDATE agent_messages SET status = 'failed', done_at = ?2, last_error = ?3, last_error_at = ?2 \
             WHERE id = ?1 AND status = 'queued' RETURNING *",
        )
        .bind(id.0)
        .bind(us(now))
        .bind(format!("cancelled: {reason}"))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cancelling the message"))?;
        let Some(row) = row else {
            drop(tx);
            let current = self.message(id).await?;
            return Err(Error::Conflict { id, action: "cancel", status: current.status.to_string() });
        };
        let message = message_from_row(&row)?;
        let payload = serde_json::json!({ "reason": reason });
        insert_events(&mut tx, now, &[message_event(&message, model::Phase::Failed, Some("cancelled"), payload)])
            .await?;
        tx.commit().await.map_err(db("committing a cancel"))?;
        Ok(message)
    }

    pub(crate) async fn message(&self, id: MessageId) -> Result<Message, Error> {
        let row = sqlx::query("SELECT * FROM agent_messages WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading a message"))?
            .ok_or(Error::NotFound { id })?;
        message_from_row(&row)
    }

    pub(crate) async fn messages(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>, Error> {
        let limit = page.effective_limit();
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM agent_messages WHERE 1");
        push_text_filters(
            &mut query,
            &[
                ("tenant", filter.tenant.as_deref()),
                ("service", filter.service.as_deref()),
                ("role", filter.role.as_deref()),
                ("intent", filter.intent.as_deref()),
                ("trace_id", filter.trace_id.as_deref()),
            ],
        );
        if let Some(v) = filter.status {
            query.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.since {
            query.push(" AND created_at >= ").push_bind(us(v));
        }
        if let Some(v) = filter.until {
            query.push(" AND created_at < ").push_bind(us(v));
        }
        if let Some(after) = &page.after {
            query.push(" AND id < ").push_bind(parse_uuid_cursor(after)?);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.reader).await.map_err(db("listing messages"))?;
        let items = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() == limit as usize).then(|| items.last().map(|m| m.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    pub(crate) async fn events(&self, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>, Error> {
        let limit = page.effective_limit();
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM bus_events WHERE 1");
        push_text_filters(
            &mut query,
            &[
                ("tenant", filter.tenant.as_deref()),
                ("service", filter.service.as_deref()),
                ("role", filter.role.as_deref()),
                ("event_type", filter.event_type.as_deref()),
                ("trace_id", filter.trace_id.as_deref()),
            ],
        );
        if let Some(v) = &filter.message_id {
            query.push(" AND message_id = ").push_bind(v.0);
        }
        if let Some(v) = filter.since {
            query.push(" AND created_at >= ").push_bind(us(v));
        }
        if let Some(v) = filter.until {
            query.push(" AND created_at < ").push_bind(us(v));
        }
        if let Some(after) = &page.after {
            query.push(" AND seq > ").push_bind(parse_seq_cursor(after)?);
        }
        query.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.reader).await.map_err(db("listing events"))?;
        let items = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
        let next = items.last().map(|e| e.seq.to_string()).or_else(|| page.after.clone());
        Ok(Page { items, next })
    }

    pub(crate) async fn dead_letters(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, Error> {
        let limit = page.effective_limit();
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM agent_messages_dlq WHERE 1");
        push_text_filters(
            &mut query,
            &[
                ("tenant", filter.tenant.as_deref()),
                ("service", filter.service.as_deref()),
                ("role", filter.role.as_deref()),
                ("intent", filter.intent.as_deref()),
            ],
        );
        if filter.status == Some(MessageStatus::Failed) {
            query.push(" AND requeued_at IS NULL");
        }
        if let Some(after) = &page.after {
            query.push(" AND message_id < ").push_bind(parse_uuid_cursor(after)?);
        }
        query.push(" ORDER BY message_id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.reader).await.map_err(db("listing dead letters"))?;
        let items = rows
            .iter()
            .map(|row| -> Result<DeadLetter, Error> {
                let read = || -> Result<DeadLetter, sqlx::Error> {
                    let original: String = row.try_get("original")?;
                    Ok(DeadLetter {
                        message_id: MessageId(row.try_get("message_id")?),
                        dead_lettered_at: at(row.try_get("dead_lettered_at")?),
                        tenant: row.try_get("tenant")?,
                        service: row.try_get("service")?,
                        role: row.try_get("role")?,
                        intent: row.try_get("intent")?,
                        reason: row.try_get("reason")?,
                        last_error: row.try_get("last_error")?,
                        original: serde_json::from_str(&original).unwrap_or(Value::String(original)),
                        requeued_at: row.try_get::<Option<i64>, _>("requeued_at")?.map(at),
                    })
                };
                read().map_err(db("reading dead letters"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() == limit as usize).then(|| items.last().map(|d| d.message_id.to_string())).flatten();
        Ok(Page { items, next })
    }

    pub(crate) async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), Error> {
        let mut tx = self.begin("starting an event append").await?;
        insert_events(&mut tx, self.now(), &events).await?;
        tx.commit().await.map_err(db("committing events"))?;
        self.wakeups.events().notify_waiters();
        Ok(())
    }

    pub(crate) async fn presence_online(&self, presence: &Presence) -> Result<(), Error> {
        let now = self.now();
        let mut tx = self.begin("starting a presence update").await?;
        sqlx::query(
            "INSERT INTO agent_presence (agent_id, service, roles, shard, host, version, status, started_at, last_heartbeat, capabilities) \
             VALUES (?, ?, ?, ?, ?, ?, 'online', ?, ?, ?) \
             ON CONFLICT (agent_id) DO UPDATE SET service = excluded.service, roles = excluded.roles, shard = excluded.shard, \
             host = excluded.host, version = excluded.version, status = 'online', last_heartbeat = excluded.last_heartbeat, \
             capabilities = excluded.capabilities",
        )
        .bind(&presence.agent_id)
        .bind(&presence.service)
        .bind(serde_json::to_string(&presence.roles).unwrap_or_else(|_| "[]".into()))
        .bind(&presence.shard)
        .bind(&presence.host)
        .bind(&presence.version)
        .bind(us(presence.started_at))
        .bind(us(now))
        .bind(presence.capabilities.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("registering presence"))?;
        insert_events(&mut tx, now, &[presence_event(model::event::AGENT_ONLINE, presence, None)]).await?;
        tx.commit().await.map_err(db("committing presence"))
    }

    /// Runs a presence `UPDATE … RETURNING *` (binding `time`, then `agent_id` when given) and
    /// records one `event_type` event per changed row, in one transaction.
    async fn update_presence(
        &self,
        what: &'static str,
        sql: &'static str,
        time: i64,
        agent_id: Option<&str>,
        event_type: &str,
        reason: Option<&str>,
    ) -> Result<Vec<Presence>, Error> {
        let now = self.now();
        let mut tx = self.begin(what).await?;
        let mut query = sqlx::query(sql).bind(time);
        if let Some(agent_id) = agent_id {
            query = query.bind(agent_id);
        }
        let rows = query.fetch_all(&mut *tx).await.map_err(db(what))?;
        let presences = rows.iter().map(presence_from_row).collect::<Result<Vec<_>, _>>()?;
        let events: Vec<NewEvent> = presences.iter().map(|p| presence_event(event_type, p, reason)).collect();
        insert_events(&mut tx, now, &events).await?;
        tx.commit().await.map_err(db(what))?;
        Ok(presences)
    }

    pub(crate) async fn presence_heartbeat(&self, agent_id: &str) -> Result<bool, Error> {
        let sql = "UPDATE agent_presence SET last_heartbeat = ? WHERE agent_id = ? AND status = 'online' RETURNING *";
        let now = us(self.now());
        let changed = self
            .update_presence("recording a heartbeat", sql, now, Some(agent_id), model::event::AGENT_HEARTBEAT, None)
            .await?;
        Ok(!changed.is_empty())
    }

    pub(crate) async fn presence_offline(&self, agent_id: &str, reason: &str) -> Result<(), Error> {
        let sql = "UPDATE agent_presence SET status = 'offline', last_heartbeat = ? \
                   WHERE agent_id = ? AND status = 'online' RETURNING *";
        let now = us(self.now());
        self.update_presence(
            "marking an agent offline",
            sql,
            now,
            Some(agent_id),
            model::event::AGENT_OFFLINE,
            Some(reason),
        )
        .await
        .map(drop)
    }

    pub(crate) async fn presence_mark_stale(&self, timeout: Duration) -> Result<Vec<String>, Error> {
        let sql =
            "UPDATE agent_presence SET status = 'offline' WHERE status = 'online' AND last_heartbeat < ? RETURNING *";
        let cut = us(self.now()) - dur_us(timeout);
        let stale = self
            .update_presence("marking stale agents offline", sql, cut, None, model::event::AGENT_OFFLINE, Some("stale"))
            .await?;
        Ok(stale.into_iter().map(|p| p.agent_id).collect())
    }

    pub(crate) async fn presence(&self) -> Result<Vec<Presence>, Error> {
        let rows = sqlx::query("SELECT * FROM agent_presence ORDER BY last_heartbeat DESC LIMIT 1000")
            .fetch_all(&self.reader)
            .await
            .map_err(db("listing agents"))?;
        rows.iter().map(presence_from_row).collect()
    }

    pub(crate) async fn record_circuit(&self, state: &CircuitState) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO circuit_states (key, agent_id, state, open_until, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (key, agent_id) DO UPDATE SET state = excluded.state, open_until = excluded.open_until, \
             updated_at = excluded.updated_at",
        )
        .bind(&state.key)
        .bind(&state.agent_id)
        .bind(&state.state)
        .bind(state.open_until.map(us))
        .bind(us(state.updated_at))
        .execute(&self.writer)
        .await
        .map_err(db("recording a circuit state"))
        .map(drop)
    }

    pub(crate) async fn mcp_calls(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<McpCallRecord>, Error> {
        let rows = sqlx::query(
            "SELECT event_type = 'mcp_call_failed' AS failed, \
               coalesce(payload ->> '$.toolset', '?') || '.' || coalesce(payload ->> '$.tool', '?') AS tool, \
               payload ->> '$.error_kind' AS error_kind, CAST(payload ->> '$.latency_ms' AS REAL) AS latency_ms, created_at, seq \
             FROM bus_events WHERE event_type IN ('mcp_call_succeeded', 'mcp_call_failed') AND created_at >= ?1 \
             ORDER BY created_at DESC LIMIT ?2",
        )
        .bind(us(since))
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(db("reading MCP call events"))?;
        rows.iter()
            .map(|row| crate::lifecycle::mcp_call_record(row, at(row.try_get("created_at")?)))
            .collect::<Result<_, _>>()
            .map_err(db("reading MCP call events"))
    }

    pub(crate) async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Finished>, Error> {
        let rows = sqlx::query(
            "SELECT service, role, sum(status = 'done') AS done, sum(status = 'failed') AS failed \
             FROM agent_messages WHERE status IN ('done', 'failed') AND done_at >= ?1 GROUP BY service, role",
        )
        .bind(us(since))
        .fetch_all(&self.reader)
        .await
        .map_err(db("counting finished messages"))?;
        rows.iter().map(crate::lifecycle::finished).collect::<Result<_, _>>().map_err(db("counting finished messages"))
    }

    pub(crate) async fn create_api_token(&self, token: &ApiToken) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant, name, hash, created_at, revoked_at, roles) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(&token.tenant)
        .bind(&token.name)
        .bind(&token.hash)
        .bind(us(token.created_at))
        .bind(token.revoked_at.map(us))
        .bind(token.roles.as_ref().map(|roles| roles.join(",")))
        .execute(&self.writer)
        .await
        .map_err(db("storing an API token"))?;
        Ok(())
    }

    pub(crate) async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, Error> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading an API token"))?;
        row.as_ref().map(api_token).transpose().map_err(db("reading an API token"))
    }

    pub(crate) async fn api_tokens(&self) -> Result<Vec<ApiToken>, Error> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY tenant, id")
            .fetch_all(&self.reader)
            .await
            .map_err(db("listing API tokens"))?;
        rows.iter().map(api_token).collect::<Result<_, _>>().map_err(db("listing API tokens"))
    }

    pub(crate) async fn revoke_api_token(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(us(self.now()))
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db("revoking an API token"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn put_secret(&self, secret: &SealedSecret) -> Result<(), Error> {
        let now = us(secret.updated_at);
        sqlx::query(
            "INSERT INTO secrets (name, key_id, nonce, ciphertext, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, \
               ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(&secret.name)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(db("storing a secret"))?;
        Ok(())
    }

    pub(crate) async fn secret(&self, name: &str) -> Result<Option<SealedSecret>, Error> {
        let row = sqlx::query("SELECT * FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading a secret"))?;
        row.as_ref().map(sealed_secret).transpose().map_err(db("reading a secret"))
    }

    pub(crate) async fn secrets(&self) -> Result<Vec<SealedSecret>, Error> {
        let rows = sqlx::query("SELECT * FROM secrets ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db("listing secrets"))?;
        rows.iter().map(sealed_secret).collect::<Result<_, _>>().map_err(db("listing secrets"))
    }

    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM secrets WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db("removing a secret"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn circuits(&self) -> Result<Vec<CircuitState>, Error> {
        let rows = sqlx::query("SELECT * FROM circuit_states ORDER BY key, agent_id")
            .fetch_all(&self.reader)
            .await
            .map_err(db("listing circuit states"))?;
        rows.iter()
            .map(|row| -> Result<CircuitState, sqlx::Error> {
                Ok(CircuitState {
                    key: row.try_get("key")?,
                    agent_id: row.try_get("agent_id")?,
                    state: row.try_get("state")?,
                    open_until: row.try_get::<Option<i64>, _>("open_until")?.map(at),
                    updated_at: at(row.try_get("updated_at")?),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(db("reading circuit states"))
    }

    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let now = us(self.now());
        let rows = sqlx::query(
            "SELECT service, role, \
               sum(status = 'queued' AND run_at <= ?1) AS ready, \
               sum(status = 'queued' AND run_at > ?1) AS delayed, \
               sum(status = 'claimed') AS claimed, \
               min(CASE WHEN status = 'queued' AND run_at <= ?1 THEN run_at END) AS oldest \
             FROM (SELECT service, role, status, run_at FROM agent_messages WHERE status = 'queued' \
                   UNION ALL \
                   SELECT service, role, status, run_at FROM agent_messages WHERE status = 'claimed') \
             GROUP BY service, role ORDER BY service, role",
        )
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(db("computing queue statistics"))?;
        rows.iter()
            .map(|row| -> Result<QueueStats, sqlx::Error> {
                let oldest: Option<i64> = row.try_get("oldest")?;
                Ok(QueueStats {
                    service: row.try_get("service")?,
                    role: row.try_get("role")?,
                    ready: row.try_get("ready")?,
                    delayed: row.try_get("delayed")?,
                    claimed: row.try_get("claimed")?,
                    oldest_ready_age_ms: oldest.map(|o| ((now - o) / 1000).max(0)),
                    done_last_minute: 0,
                    failed_last_minute: 0,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(db("reading queue statistics"))
    }

    pub(crate) async fn prune(&self, older_than: Duration) -> Result<u64, Error> {
        let cut = us(self.now()) - dur_us(older_than);
        let mut tx = self.begin("starting a prune").await?;
        let messages = sqlx::query(
            "DELETE FROM agent_messages WHERE status IN ('done', 'failed') AND done_at < ? \
             AND id NOT IN (SELECT message_id FROM agent_messages_dlq WHERE requeued_at IS NULL)",
        )
        .bind(cut)
        .execute(&mut *tx)
        .await
        .map_err(db("pruning finished messages"))?
        .rows_affected();
        let events = sqlx::query("DELETE FROM bus_events WHERE created_at < ?")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(db("pruning old events"))?
            .rows_affected();
        tx.commit().await.map_err(db("committing a prune"))?;
        Ok(messages + events)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(db("pinging SQLite")).map(drop)
    }

    pub(crate) async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.close().await;
        }
    }
}

/// Applies failures to claimed rows held by the given agents; returns outcomes and retried queues.
async fn fail_rows(
    tx: &mut Tx,
    now: DateTime<Utc>,
    failures: &[Failure],
    agents: &[String],
) -> Result<(Vec<Outcome>, HashSet<(String, String)>), Error> {
    let mut outcomes = Vec::with_capacity(failures.len());
    let mut events = Vec::with_capacity(failures.len() * 2);
    let mut retried = HashSet::new();
    for (failure, agent) in failures.iter().zip(agents) {
        let error = truncate(&failure.error, 4000);
        let (status, run_at, done_at) = match &failure.action {
            FailAction::Retry { after } => ("queued", Some(us(now) + dur_us(*after)), None),
            FailAction::DeadLetter { .. } => ("failed", None, Some(us(now))),
        };
        let row = sqlx::query(
            "UPDATE agent_messages SET status = ?1, run_at = coalesce(?2, run_at), done_at = ?3, claimed_by = NULL, \
             claimed_at = NULL, lease_until = NULL, last_error = ?4, last_error_at = ?5 \
             WHERE id = ?6 AND status = 'claimed' AND claimed_by = ?7 RETURNING *",
        )
        .bind(status)
        .bind(run_at)
        .bind(done_at)
        .bind(&error)
        .bind(us(now))
        .bind(failure.id.0)
        .bind(agent)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("recording a failed attempt"))?;
        let Some(row) = row else {
            outcomes.push(Outcome::LeaseLost);
            continue;
        };
        let message = message_from_row(&row)?;
        let kind = failure.kind.as_str();
        events.push(message_event(
            &message,
            model::Phase::Failed,
            Some(kind),
            with_detail(
                serde_json::json!({ "attempt": message.attempts, "kind": kind, "error": error, "agent_id": agent }),
                failure.detail.as_ref(),
            ),
        ));
        let next = serde_json::json!({ "attempt": message.attempts, "max_attempts": message.max_attempts, "run_at": message.run_at });
        match &failure.action {
            FailAction::Retry { .. } => {
                events.push(message_event(&message, model::Phase::RetryScheduled, Some(kind), next));
                retried.insert((message.service.clone(), message.role.clone()));
                outcomes.push(Outcome::Retrying { run_at: message.run_at });
            }
            FailAction::DeadLetter { reason } => {
                sqlx::query(
                    "INSERT INTO agent_messages_dlq (message_id, dead_lettered_at, tenant, service, role, intent, reason, last_error, original) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (message_id) DO UPDATE SET dead_lettered_at = excluded.dead_lettered_at, reason = excluded.reason, \
                     last_error = excluded.last_error, original = excluded.original, requeued_at = NULL",
                )
                .bind(message.id.0)
                .bind(us(now))
                .bind(&message.tenant)
                .bind(&message.service)
                .bind(&message.role)
                .bind(message.intent.as_str())
                .bind(reason)
                .bind(&message.last_error)
                .bind(serde_json::to_string(&message).unwrap_or_default())
                .execute(&mut **tx)
                .await
                .map_err(db("writing a dead letter"))?;
                events.push(message_event(&message, model::Phase::DeadLettered, Some(reason), next));
                outcomes.push(Outcome::DeadLettered);
            }
        }
    }
    insert_events(tx, now, &events).await?;
    Ok((outcomes, retried))
}

/// An event as `insert_events` hands it to SQLite (one element of a JSON array).
#[derive(serde::Serialize)]
struct EventRow<'a> {
    i: String,
    t: &'a str,
    m: Option<String>,
    tr: Option<&'a str>,
    te: &'a str,
    s: &'a str,
    r: &'a str,
    sh: &'a str,
    re: Option<&'a str>,
    p: String,
}

/// The head of every event append: `bus_events`' columns in the order each `SELECT` gives them.
macro_rules! insert_bus_events {
    () => {
        "INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, \
         reason, payload) "
    };
}

/// Appends events in one statement whatever their number: they travel as one JSON array bound to
/// one parameter, so the statement's text never changes (prepared once, cached) and the writer
/// does not bind eleven values a row. `jsonb_each` hands each element over in SQLite's binary
/// JSON, so the fields are read without printing and parsing each element again.
async fn insert_events(tx: &mut Tx, now: DateTime<Utc>, events: &[NewEvent]) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .map(|event| EventRow {
            i: model::new_id().simple().to_string(),
            t: &event.event_type,
            m: event.message_id.map(|id| id.0.simple().to_string()),
            tr: event.trace_id.as_deref(),
            te: &event.tenant,
            s: &event.service,
            r: &event.role,
            sh: &event.shard,
            re: event.reason.as_deref(),
            p: event.payload.to_string(),
        })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|_| Error::Internal { what: "encoding events" })?;
    sqlx::query(concat!(
        insert_bus_events!(),
        "SELECT unhex(value ->> 'i'), ?1, value ->> 't', unhex(value ->> 'm'), value ->> 'tr', value ->> 'te', \
                value ->> 's', value ->> 'r', value ->> 'sh', value ->> 're', value ->> 'p' \
         FROM jsonb_each(?2) ORDER BY key"
    ))
    .bind(us(now))
    .bind(rows)
    .execute(&mut **tx)
    .await
    .map_err(db("appending events"))?;
    Ok(())
}

/// A message row as one JSON object (`id` and `parent_id` as hex), read back as a `StoredMessage` by `messages_from_json`.
macro_rules! message_json {
    () => {
        "json_object('id', hex(id), 'created_at', created_at, 'tenant', tenant, \
         'project_id', project_id, 'service', service, 'role', role, 'shard', shard, 'intent', intent, \
         'payload', payload, 'trace_id', trace_id, 'parent_id', nullif(hex(parent_id), ''), \
         'idempotency_key', idempotency_key, 'priority', priority, 'status', status, 'attempts', attempts, \
         'max_attempts', max_attempts, 'run_at', run_at, 'claimed_by', claimed_by, 'claimed_at', claimed_at, \
         'lease_until', lease_until, 'done_at', done_at, 'last_error', last_error, 'last_error_at', last_error_at, \
         'result', result, 'result_url', result_url)"
    };
}

/// A new event id in SQL, as `model::new_id` makes them (UUIDv7: 48 bits of milliseconds, the
/// version, 74 random bits with the variant), from the parameter `$unix_ms`: the system clock's
/// milliseconds (see `unix_ms`).
macro_rules! new_event_id {
    ($unix_ms:literal) => {
        concat!(
            "unhex(printf('%012x%04x%016x', ",
            $unix_ms,
            ", 28672 + abs(random() % 4096), (random() & 4611686018427387903) | -9223372036854775808))"
        )
    };
}

/// The system clock's milliseconds since the Unix epoch, as the ids of `model::new_id` carry them
/// (the store's clock, which tests may set, dates the rows; ids always come from the system clock).
fn unix_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The writer connection's scratch table: the messages one claim or completion works on.
const BATCH_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS batch (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, \
     result TEXT, result_url TEXT, detail TEXT)";

/// A claim, as one command of several statements that share their numbered parameters: ?1 service,
/// ?2 role, ?3 now (µs), ?4 shards (JSON array), ?5 limit, ?6 agent id, ?7 lease end (µs), ?8 lease
/// end (RFC 3339), ?9 the claimed event type's suffix, ?10 the system clock's milliseconds (event
/// ids). The rows come back as one JSON array.
///
/// Fair share: the tenants with queued work (a loose scan of the ready index, at most 256) each get
/// an equal share of the batch, in priority order within the tenant; tenants take their shares in
/// name order until the batch is full.
const CLAIM: &str = concat!(
    "DELETE FROM temp.batch; \
     WITH RECURSIVE tenants(tenant) AS ( \
       SELECT (SELECT tenant FROM agent_messages WHERE status = 'queued' AND service = ?1 AND role = ?2 ORDER BY tenant LIMIT 1) \
       UNION ALL \
       SELECT (SELECT m.tenant FROM agent_messages m WHERE m.status = 'queued' AND m.service = ?1 AND m.role = ?2 \
               AND m.tenant > t.tenant ORDER BY m.tenant LIMIT 1) \
       FROM tenants t WHERE t.tenant IS NOT NULL), \
     ranked AS MATERIALIZED (SELECT tenant, row_number() OVER (ORDER BY tenant) AS k FROM tenants \
       WHERE tenant IS NOT NULL LIMIT 256), \
     share(n) AS MATERIALIZED (SELECT (?5 + count(*) - 1) / max(count(*), 1) FROM ranked) \
     INSERT INTO temp.batch (id) SELECT q.id FROM ranked r, agent_messages q \
     WHERE q.id IN (SELECT id FROM agent_messages WHERE status = 'queued' AND service = ?1 AND role = ?2 \
         AND tenant = r.tenant AND run_at <= ?3 AND shard IN (SELECT value FROM json_each(?4)) \
         ORDER BY priority DESC, run_at, id LIMIT (SELECT n FROM share)) \
     ORDER BY r.k, q.priority DESC, q.run_at, q.id LIMIT ?5; \
     UPDATE agent_messages SET status = 'claimed', attempts = attempts + 1, claimed_by = ?6, claimed_at = ?3, \
       lease_until = ?7 WHERE id IN (SELECT id FROM temp.batch); ",
    insert_bus_events!(),
    "SELECT ",
    new_event_id!("?10"),
    ", ?3, m.intent || ?9, m.id, m.trace_id, m.tenant, m.service, m.role, m.shard, NULL, \
       json_object('agent_id', ?6, 'attempt', m.attempts, 'lease_until', ?8) \
     FROM temp.batch b CROSS JOIN agent_messages m ON m.id = b.id ORDER BY m.priority DESC, m.run_at, m.id; \
     SELECT json_group_array(",
    message_json!(),
    ") FROM (SELECT m.* FROM temp.batch b CROSS JOIN agent_messages m ON m.id = b.id \
       ORDER BY m.priority DESC, m.run_at, m.id)"
);

/// A completion, as one command like `CLAIM`: ?1 the completions (a JSON array of
/// `CompletionJson`), ?2 agent id, ?3 now (µs), ?4 the succeeded event type's suffix, ?5 the system
/// clock's milliseconds (event ids). Only messages
/// still claimed by the agent are completed; their ids come back as one JSON array of hex. Each
/// event's payload carries the handler's `detail` fields, the store's own fields winning.
const COMPLETE: &str = concat!(
    "DELETE FROM temp.batch; \
     INSERT OR IGNORE INTO temp.batch (id, result, result_url, detail) \
     SELECT m.id, j.value ->> 'result', j.value ->> 'result_url', j.value -> 'detail' \
     FROM jsonb_each(?1) j CROSS JOIN agent_messages m ON m.id = unhex(j.value ->> 'id') \
     WHERE m.status = 'claimed' AND m.claimed_by = ?2 ORDER BY j.key; ",
    insert_bus_events!(),
    "SELECT ",
    new_event_id!("?5"),
    ", ?3, m.intent || ?4, m.id, m.trace_id, m.tenant, m.service, m.role, m.shard, NULL, \
       json_patch(coalesce(b.detail, '{}'), \
         json_object('agent_id', ?2, 'attempt', m.attempts, 'duration_ms', (?3 - m.claimed_at) / 1000)) \
     FROM temp.batch b CROSS JOIN agent_messages m ON m.id = b.id ORDER BY b.n; \
     UPDATE agent_messages SET status = 'done', done_at = ?3, lease_until = NULL, \
       result = (SELECT result FROM temp.batch b WHERE b.id = agent_messages.id), \
       result_url = (SELECT result_url FROM temp.batch b WHERE b.id = agent_messages.id) \
     WHERE id IN (SELECT id FROM temp.batch); \
     SELECT json_group_array(hex(id)) FROM temp.batch"
);

/// A message row as stored: one object of `message_json!` (ids as hex) or one row read by
/// `message_from_row`. The JSON columns stay text until `into_message` parses them.
#[derive(serde::Deserialize)]
struct StoredMessage {
    id: Uuid,
    created_at: i64,
    tenant: String,
    project_id: Option<String>,
    service: String,
    role: String,
    shard: String,
    intent: String,
    payload: String,
    trace_id: String,
    parent_id: Option<Uuid>,
    idempotency_key: Option<String>,
    priority: i32,
    status: String,
    attempts: i32,
    max_attempts: i32,
    run_at: i64,
    claimed_by: Option<String>,
    claimed_at: Option<i64>,
    lease_until: Option<i64>,
    done_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    result: Option<String>,
    result_url: Option<String>,
}

impl StoredMessage {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            created_at: row.try_get("created_at")?,
            tenant: row.try_get("tenant")?,
            project_id: row.try_get("project_id")?,
            service: row.try_get("service")?,
            role: row.try_get("role")?,
            shard: row.try_get("shard")?,
            intent: row.try_get("intent")?,
            payload: row.try_get("payload")?,
            trace_id: row.try_get("trace_id")?,
            parent_id: row.try_get("parent_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            priority: row.try_get("priority")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            run_at: row.try_get("run_at")?,
            claimed_by: row.try_get("claimed_by")?,
            claimed_at: row.try_get("claimed_at")?,
            lease_until: row.try_get("lease_until")?,
            done_at: row.try_get("done_at")?,
            last_error: row.try_get("last_error")?,
            last_error_at: row.try_get("last_error_at")?,
            result: row.try_get("result")?,
            result_url: row.try_get("result_url")?,
        })
    }

    fn into_message(self) -> Result<Message, Error> {
        let corrupt = |detail: String| Error::Corrupt { what: "message", detail };
        let json = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| corrupt(format!("{what} is not JSON: {e}")))
        };
        Ok(Message {
            id: MessageId(self.id),
            created_at: at(self.created_at),
            intent: Intent::new(self.intent.clone()).map_err(|e| corrupt(format!("intent {:?}: {e}", self.intent)))?,
            payload: json("payload", &self.payload)?,
            parent_id: self.parent_id.map(MessageId),
            status: MessageStatus::parse(&self.status).ok_or_else(|| corrupt(format!("status {:?}", self.status)))?,
            run_at: at(self.run_at),
            claimed_at: self.claimed_at.map(at),
            lease_until: self.lease_until.map(at),
            done_at: self.done_at.map(at),
            last_error_at: self.last_error_at.map(at),
            result: self.result.as_deref().map(|r| json("result", r)).transpose()?,
            tenant: self.tenant,
            project_id: self.project_id,
            service: self.service,
            role: self.role,
            shard: self.shard,
            trace_id: self.trace_id,
            idempotency_key: self.idempotency_key,
            priority: self.priority,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            claimed_by: self.claimed_by,
            last_error: self.last_error,
            result_url: self.result_url,
        })
    }
}

/// The messages of a JSON array of `message_json!` objects.
fn messages_from_json(text: &str) -> Result<Vec<Message>, Error> {
    let rows: Vec<StoredMessage> = serde_json::from_str(text)
        .map_err(|e| Error::Corrupt { what: "message", detail: format!("messages as JSON: {e}") })?;
    rows.into_iter().map(StoredMessage::into_message).collect()
}

/// One completion as `COMPLETE` reads it (`detail` only when it is an object: other details add
/// no fields to the event).
#[derive(serde::Serialize)]
struct CompletionJson<'a> {
    id: String,
    result: Option<String>,
    result_url: Option<&'a str>,
    detail: Option<&'a Value>,
}

/// `_<phase>`, appended to an intent in SQL to spell a lifecycle event's type.
fn event_suffix(phase: model::Phase) -> String {
    model::message::event_type("", phase)
}

fn id_array(ids: &[MessageId]) -> String {
    Value::Array(ids.iter().map(|id| Value::String(id.0.simple().to_string())).collect()).to_string()
}

fn message_from_row(row: &SqliteRow) -> Result<Message, Error> {
    StoredMessage::from_row(row).map_err(|e| Error::Corrupt { what: "message", detail: e.to_string() })?.into_message()
}

fn event_from_row(row: &SqliteRow) -> Result<Event, Error> {
    let read = || -> Result<Event, sqlx::Error> {
        let payload: String = row.try_get("payload")?;
        Ok(Event {
            seq: row.try_get("seq")?,
            id: model::EventId(row.try_get("id")?),
            created_at: at(row.try_get("created_at")?),
            event_type: row.try_get("event_type")?,
            message_id: row.try_get::<Option<Uuid>, _>("message_id")?.map(MessageId),
            trace_id: row.try_get("trace_id")?,
            tenant: row.try_get("tenant")?,
            service: row.try_get("service")?,
            role: row.try_get("role")?,
            shard: row.try_get("shard")?,
            reason: row.try_get("reason")?,
            payload: serde_json::from_str(&payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        })
    };
    read().map_err(|e| Error::Corrupt { what: "event", detail: e.to_string() })
}

fn presence_from_row(row: &SqliteRow) -> Result<Presence, Error> {
    let read = || -> Result<Presence, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let roles: String = row.try_get("roles")?;
        let capabilities: String = row.try_get("capabilities")?;
        Ok(Presence {
            agent_id: row.try_get("agent_id")?,
            service: row.try_get("service")?,
            roles: serde_json::from_str(&roles).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            shard: row.try_get("shard")?,
            host: row.try_get("host")?,
            version: row.try_get("version")?,
            status: PresenceStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("status {status:?}").into()))?,
            started_at: at(row.try_get("started_at")?),
            last_heartbeat: at(row.try_get("last_heartbeat")?),
            capabilities: serde_json::from_str(&capabilities).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        })
    };
    read().map_err(|e| Error::Corrupt { what: "agent presence", detail: e.to_string() })
}

fn sealed_secret(row: &SqliteRow) -> Result<SealedSecret, sqlx::Error> {
    Ok(SealedSecret {
        name: row.try_get("name")?,
        key_id: row.try_get("key_id")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        updated_at: at(row.try_get("updated_at")?),
    })
}

fn api_token(row: &SqliteRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        created_at: at(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(at),
        roles: crate::types::roles_column(row.try_get("roles")?),
    })
}
