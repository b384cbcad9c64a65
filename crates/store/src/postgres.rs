//! The PostgreSQL backend: `FOR UPDATE SKIP LOCKED` claims, one statement per batch operation (the
//! state change and its events together), LISTEN/NOTIFY wake-ups and daily event partitions.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, SqlSafeStr};
use uuid::Uuid;

use model::event::{Event, NewEvent};
use model::presence::{Presence, PresenceStatus};
use model::{Intent, Message, MessageId, MessageStatus, NewMessage};

use crate::error::db;
use crate::lifecycle::push_text_filters;
use crate::lifecycle::{
    enqueued_message, message_event, parse_seq_cursor, parse_uuid_cursor, presence_event, truncate,
};
use crate::{ApiToken, Finished, McpCallRecord, SealedSecret};
use crate::{
    CircuitState, ClaimRequest, Completion, DeadLetter, Enqueued, Error, EventFilter, FailAction, Failure,
    MessageFilter, Outcome, Page, PageRequest, QueueStats, StoreOptions, Wakeups,
};

mod goals;
mod knowledge;

const BUS_CHANNEL: &str = "cogo_bus";

/// How a claim's transaction starts, in the same round trip:
/// - its statement keeps one generic plan (planning it anew for each claim cost more than running
///   it when the queue is nearly empty, and the generic plan claims a full batch as fast);
/// - its commit does not wait for the WAL flush. A claim lost in a server crash only puts its
///   messages back in the queue, as an expired lease would: the handler's result is then refused
///   and the message runs again (at least once, never lost).
const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL synchronous_commit = off";

pub(crate) const MIGRATIONS: [(i64, &str, &str); 10] = [
    (1, "bus", include_str!("../../../migrations/postgres/0001_bus.sql")),
    (2, "mcp events", include_str!("../../../migrations/postgres/0002_mcp_events.sql")),
    (3, "secrets", include_str!("../../../migrations/postgres/0003_secrets.sql")),
    (4, "api tokens", include_str!("../../../migrations/postgres/0004_api_tokens.sql")),
    (5, "knowledge", include_str!("../../../migrations/postgres/0005_knowledge.sql")),
    (6, "goals", include_str!("../../../migrations/postgres/0006_goals.sql")),
    (7, "edge tokens", include_str!("../../../migrations/postgres/0007_edge_tokens.sql")),
    (8, "hnsw graph", include_str!("../../../migrations/postgres/0008_hnsw_graph.sql")),
    (9, "gin fastupdate", include_str!("../../../migrations/postgres/0009_gin_fastupdate.sql")),
    (10, "hnsw halfvec", include_str!("../../../migrations/postgres/0010_hnsw_halfvec.sql")),
];

#[derive(Debug, Clone)]
pub(crate) struct PgBus {
    pool: PgPool,
    options: StoreOptions,
    wakeups: Wakeups,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl PgBus {
    pub(crate) async fn open(url: &str, options: StoreOptions) -> Result<Self, Error> {
        let connect =
            PgConnectOptions::from_str(url).map_err(db("parsing the PostgreSQL URL"))?.application_name("cogo");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        let listener = probe_notifications(&pool, url).await?;
        let wakeups = Wakeups::default();
        spawn_listener(pool.clone(), wakeups.clone(), listener);
        Ok(Self { pool, options, wakeups })
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
            .run(&self.pool)
            .await
            .map_err(|source| Error::Migrate { backend: "postgres", source })?;
        self.ensure_partitions().await
    }

    pub(crate) async fn integrity_check(&self) -> Result<Vec<String>, Error> {
        let inconsistent: i64 = sqlx::query_scalar(crate::lifecycle::INCONSISTENT_MESSAGES)
            .fetch_one(&self.pool)
            .await
            .map_err(db("checking the messages' states"))?;
        Ok(if inconsistent > 0 {
            vec![format!("{inconsistent} messages whose status disagrees with their lease or completion")]
        } else {
            Vec::new()
        })
    }

    async fn ensure_partitions(&self) -> Result<(), Error> {
        let today = self.now().date_naive();
        for offset in -1..7i64 {
            let day = today + chrono::Duration::days(offset);
            // A day whose rows already sit in the default partition cannot get its own; those rows
            // stay where they are (still correct, only pruned row by row).
            if let Err(err) =
                sqlx::query("SELECT cogo_ensure_event_partitions($1, 1)").bind(day).execute(&self.pool).await
            {
                tracing::warn!(day = %day, error = %err, "could not create the bus_events partition");
            }
        }
        Ok(())
    }

    pub(crate) async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, Error> {
        let now = self.now();
        let n = messages.len();
        let mut ids = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut projects: Vec<Option<String>> = Vec::with_capacity(n);
        let mut services = Vec::with_capacity(n);
        let mut roles = Vec::with_capacity(n);
        let mut shards = Vec::with_capacity(n);
        let mut intents = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut traces = Vec::with_capacity(n);
        let mut parents: Vec<Option<Uuid>> = Vec::with_capacity(n);
        let mut keys: Vec<Option<String>> = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut max_attempts = Vec::with_capacity(n);
        let mut run_ats = Vec::with_capacity(n);
        for message in &messages {
            ids.push(model::new_id());
            tenants.push(message.tenant.clone());
            projects.push(message.project_id.clone());
            services.push(message.service.clone());
            roles.push(message.role.clone());
            shards.push(message.shard.clone());
            intents.push(message.intent.as_str().to_owned());
            payloads.push(message.payload.to_string());
            traces.push(
                message.trace_id.clone().unwrap_or_else(|| model::trace::TraceContext::new_root().trace_id_hex()),
            );
            parents.push(message.parent_id.map(|id| id.0));
            keys.push(message.idempotency_key.clone());
            priorities.push(message.priority);
            max_attempts.push(message.max_attempts);
            run_ats.push(message.run_at.unwrap_or(now));
        }
        let sql = r#"
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::uuid[], $11::text[], $12::int[], $13::int[], $14::timestamptz[])
        WITH ORDINALITY AS t(id, tenant, project_id, service, role, shard, intent, payload, trace_id, parent_id,
                             idempotency_key, priority, max_attempts, run_at, ord)
), ins AS (
    INSERT INTO agent_messages (id, created_at, tenant, project_id, service, role, shard, intent, payload, trace_id,
                                parent_id, idempotency_key, priority, status, attempts, max_attempts, run_at)
    SELECT id, $15, tenant, project_id, service, role, shard, intent, payload::jsonb, trace_id, parent_id,
           idempotency_key, priority, 'queued', 0, max_attempts, run_at
    FROM input ORDER BY ord
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, payload)
    SELECT cogo_uuid_v7(), $15, intent || '_scheduled', id, trace_id, tenant, service, role, shard,
           jsonb_build_object('priority', priority, 'run_at', run_at, 'max_attempts', max_attempts)
    FROM ins
), wake AS (
    SELECT pg_notify('cogo_bus', string_agg(DISTINCT service || '/' || role, ',')) FROM ins HAVING count(*) > 0
)
SELECT ins.id, (SELECT count(*) FROM wake) AS woken FROM ins"#;
        let rows = sqlx::query(sql)
            .bind(&ids)
            .bind(&tenants)
            .bind(&projects)
            .bind(&services)
            .bind(&roles)
            .bind(&shards)
            .bind(&intents)
            .bind(&payloads)
            .bind(&traces)
            .bind(&parents)
            .bind(&keys)
            .bind(&priorities)
            .bind(&max_attempts)
            .bind(&run_ats)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db("enqueueing messages"))?;
        // only ids come back: the stored rows are what was sent
        let inserted: std::collections::HashSet<Uuid> =
            rows.iter().filter_map(|row| row.try_get::<Uuid, _>("id").ok()).collect();
        let mut created: std::collections::HashMap<Uuid, Message> =
            std::collections::HashMap::with_capacity(rows.len());
        for (index, message) in messages.iter().enumerate() {
            if inserted.contains(&ids[index]) {
                let stored = enqueued_message(ids[index], now, message, traces[index].clone());
                created.insert(ids[index], stored);
            }
        }
        for service_role in services.iter().zip(&roles) {
            self.wakeups.notify_queue(service_role.0, service_role.1);
        }
        let mut out = Vec::with_capacity(n);
        for (index, message) in messages.iter().enumerate() {
            if let Some(stored) = created.remove(&ids[index]) {
                out.push(Enqueued { message: stored, created: true });
                continue;
            }
            // Not inserted: its idempotency key exists (possibly from this very batch).
            let key =
                message.idempotency_key.as_deref().ok_or(Error::Internal { what: "insert skipped without a key" })?;
            let row = sqlx::query("SELECT * FROM agent_messages WHERE tenant = $1 AND idempotency_key = $2")
                .bind(&message.tenant)
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .map_err(db("reading the message of a duplicate idempotency key"))?;
            out.push(Enqueued { message: message_from_row(&row)?, created: false });
        }
        Ok(out)
    }

    pub(crate) async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Message>, Error> {
        let now = self.now();
        let lease_until = now + chrono::Duration::microseconds(micros(request.lease));
        // Fair share: the tenants with queued work are found by a loose scan of the ready index;
        // each gets an equal share of the batch, in priority order within the tenant.
        let sql = r#"
WITH RECURSIVE tenants(tenant) AS (
    (SELECT tenant FROM agent_messages WHERE status = 'queued' AND service = $1 AND role = $2 ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT m.tenant FROM agent_messages m
            WHERE m.status = 'queued' AND m.service = $1 AND m.role = $2 AND m.tenant > t.tenant
            ORDER BY m.tenant LIMIT 1)
    FROM tenants t WHERE t.tenant IS NOT NULL
), live AS (
    SELECT tenant FROM tenants WHERE tenant IS NOT NULL LIMIT 256
), share AS (
    SELECT ceil($5::float8 / greatest(count(*), 1))::int AS n FROM live
), picked AS (
    SELECT p.id FROM live CROSS JOIN share CROSS JOIN LATERAL (
        SELECT id FROM agent_messages m
        WHERE m.status = 'queued' AND m.service = $1 AND m.role = $2 AND m.tenant = live.tenant
          AND m.shard = ANY($3) AND m.run_at <= $4
        ORDER BY m.priority DESC, m.run_at, m.id
        LIMIT share.n
        FOR UPDATE SKIP LOCKED
    ) p
    LIMIT $5
), upd AS (
    UPDATE agent_messages m
    SET status = 'claimed', attempts = m.attempts + 1, claimed_by = $6, claimed_at = $4, lease_until = $7
    FROM picked WHERE m.id = picked.id
    RETURNING m.*
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, payload)
    SELECT cogo_uuid_v7(), $4, intent || '_claimed', id, trace_id, tenant, service, role, shard,
           jsonb_build_object('attempt', attempts, 'agent_id', claimed_by, 'lease_until', lease_until)
    FROM upd
)
SELECT * FROM upd ORDER BY priority DESC, run_at, id"#;
        let mut tx = self.pool.begin_with(CLAIM_BEGIN).await.map_err(db("starting a claim"))?;
        let rows = sqlx::query(sql)
            .bind(&request.service)
            .bind(&request.role)
            .bind(request.shard_list())
            .bind(now)
            .bind(i64::from(request.limit))
            .bind(&request.agent_id)
            .bind(lease_until)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("claiming messages"))?;
        tx.commit().await.map_err(db("committing a claim"))?;
        rows.iter().map(message_from_row).collect()
    }

    pub(crate) async fn extend_leases(
        &self,
        agent_id: &str,
        ids: &[MessageId],
        lease: Duration,
    ) -> Result<Vec<MessageId>, Error> {
        let until = self.now() + chrono::Duration::microseconds(micros(lease));
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = sqlx::query(
            "UPDATE agent_messages SET lease_until = $1 WHERE id = ANY($2) AND status = 'claimed' AND claimed_by = $3 RETURNING id",
        )
        .bind(until)
        .bind(&ids)
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("extending leases"))?;
        rows.iter()
            .map(|row| row.try_get::<Uuid, _>("id").map(MessageId).map_err(db("reading extended leases")))
            .collect()
    }

    pub(crate) async fn complete(&self, agent_id: &str, completions: Vec<Completion>) -> Result<Vec<Outcome>, Error> {
        let now = self.now();
        let ids: Vec<Uuid> = completions.iter().map(|c| c.id.0).collect();
        let results: Vec<Option<String>> =
            completions.iter().map(|c| c.result.as_ref().map(Value::to_string)).collect();
        let urls: Vec<Option<String>> = completions.iter().map(|c| c.result_url.clone()).collect();
        let details: Vec<Option<String>> =
            completions.iter().map(|c| c.detail.as_ref().filter(|d| d.is_object()).map(Value::to_string)).collect();
        let sql = r#"
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $6::text[]) AS t(id, result, result_url, detail)
), upd AS (
    UPDATE agent_messages m
    SET status = 'done', done_at = $4, lease_until = NULL, result = input.result::jsonb, result_url = input.result_url
    FROM input WHERE m.id = input.id AND m.status = 'claimed' AND m.claimed_by = $5
    RETURNING m.id, m.intent, m.trace_id, m.tenant, m.service, m.role, m.shard, m.attempts, m.claimed_at, input.detail
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, payload)
    SELECT cogo_uuid_v7(), $4, intent || '_succeeded', id, trace_id, tenant, service, role, shard,
           coalesce(detail::jsonb, '{}'::jsonb) || jsonb_build_object('attempt', attempts, 'agent_id', $5::text,
                              'duration_ms', round(extract(epoch FROM ($4 - claimed_at)) * 1000))
    FROM upd
)
SELECT id FROM upd"#;
        let rows = sqlx::query(sql)
            .bind(&ids)
            .bind(&results)
            .bind(&urls)
            .bind(now)
            .bind(agent_id)
            .bind(&details)
            .fetch_all(&self.pool)
            .await
            .map_err(db("completing messages"))?;
        let done: std::collections::HashSet<Uuid> = rows.iter().filter_map(|row| row.try_get("id").ok()).collect();
        Ok(ids.iter().map(|id| if done.contains(id) { Outcome::Done } else { Outcome::LeaseLost }).collect())
    }

    pub(crate) async fn fail(&self, agent_id: &str, failures: Vec<Failure>) -> Result<Vec<Outcome>, Error> {
        let mut tx = self.pool.begin().await.map_err(db("starting a failure transaction"))?;
        let agents = vec![agent_id.to_owned(); failures.len()];
        let outcomes = fail_rows(&mut tx, self.now(), &failures, &agents).await?;
        tx.commit().await.map_err(db("committing failures"))?;
        self.wakeups.notify_all();
        Ok(outcomes)
    }

    pub(crate) async fn release(&self, agent_id: &str, ids: &[MessageId]) -> Result<Vec<MessageId>, Error> {
        let now = self.now();
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let sql = r#"
WITH upd AS (
    UPDATE agent_messages m
    SET status = 'queued', attempts = greatest(m.attempts - 1, 0), claimed_by = NULL, claimed_at = NULL,
        lease_until = NULL, run_at = $1
    WHERE m.id = ANY($2) AND m.status = 'claimed' AND m.claimed_by = $3
    RETURNING m.*
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, reason, payload)
    SELECT cogo_uuid_v7(), $1, intent || '_retry_scheduled', id, trace_id, tenant, service, role, shard, 'released',
           jsonb_build_object('agent_id', $3::text, 'run_at', run_at)
    FROM upd
), wake AS (
    SELECT pg_notify('cogo_bus', string_agg(DISTINCT service || '/' || role, ',')) FROM upd HAVING count(*) > 0
)
SELECT id, (SELECT count(*) FROM wake) AS woken FROM upd"#;
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(&ids)
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db("releasing messages"))?;
        rows.iter()
            .map(|row| row.try_get::<Uuid, _>("id").map(MessageId).map_err(db("reading released messages")))
            .collect()
    }

    pub(crate) async fn reap_expired(
        &self,
        limit: u32,
        decide: &(dyn Fn(&Message) -> FailAction + Sync),
    ) -> Result<u64, Error> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db("starting the lease reaper"))?;
        let rows = sqlx::query(
            "SELECT * FROM agent_messages WHERE status = 'claimed' AND lease_until < $1 \
             ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
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
        fail_rows(&mut tx, now, &failures, &agents).await?;
        tx.commit().await.map_err(db("committing reaped leases"))?;
        self.wakeups.notify_all();
        Ok(rows.len() as u64)
    }

    pub(crate) async fn requeue(&self, id: MessageId) -> Result<Message, Error> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db("starting a requeue"))?;
        let entry = sqlx::query("SELECT requeued_at FROM agent_messages_dlq WHERE message_id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the dead-letter entry"))?;
        let current = sqlx::query("SELECT * FROM agent_messages WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the message to requeue"))?
            .map(|row| message_from_row(&row))
            .transpose()?
            .ok_or(Error::NotFound { id })?;
        let Some(entry) = entry else {
            return Err(Error::Conflict {
                id,
                action: "requeue",
                status: format!("{} and not dead-lettered", current.status),
            });
        };
        let requeued_at: Option<DateTime<Utc>> = entry.try_get("requeued_at").map_err(db("reading requeued_at"))?;
        if requeued_at.is_some() {
            // Already requeued: idempotent.
            return Ok(current);
        }
        let row = sqlx::query(
            "UPDATE agent_messages SET status = 'queued', attempts = 0, run_at = $2, done_at = NULL, claimed_by = NULL, \
             claimed_at = NULL, lease_until = NULL WHERE id = $1 AND status = 'failed' RETURNING *",
        )
        .bind(id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("requeueing the message"))?
        .ok_or_else(|| Error::Conflict { id, action: "requeue", status: current.status.to_string() })?;
        let message = message_from_row(&row)?;
        sqlx::query("UPDATE agent_messages_dlq SET requeued_at = $2 WHERE message_id = $1")
            .bind(id.0)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("marking the dead-letter entry requeued"))?;
        insert_events(&mut tx, now, &[message_event(&message, model::Phase::Requeued, Some("operator"), Value::Null)])
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(BUS_CHANNEL)
            .bind(format!("{}/{}", message.service, message.role))
            .execute(&mut *tx)
            .await
            .map_err(db("notifying workers"))?;
        tx.commit().await.map_err(db("committing a requeue"))?;
        self.wakeups.notify_queue(&message.service, &message.role);
        Ok(message)
    }

    pub(crate) async fn cancel(&self, id: MessageId, reason: &str) -> Result<Message, Error> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db("starting a cancel"))?;
        let row = sqlx::query(
            "UPDATE agent_messages SET status = 'failed', done_at = $2, last_error = $3, last_error_at = $2 \
             WHERE id = $1 AND status = 'queued' RETURNING *",
        )
        .bind(id.0)
        .bind(now)
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
        let row = sqlx::query("SELECT * FROM agent_messages WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a message"))?
            .ok_or(Error::NotFound { id })?;
        message_from_row(&row)
    }

    pub(crate) async fn messages(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>, Error> {
        let limit = page.effective_limit();
        let mut query = QueryBuilder::new("SELECT * FROM agent_messages WHERE true");
        push_message_filter(&mut query, filter);
        if let Some(after) = &page.after {
            query.push(" AND id < ").push_bind(parse_uuid_cursor(after)?);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db("listing messages"))?;
        let items = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() == limit as usize).then(|| items.last().map(|m| m.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    pub(crate) async fn events(&self, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>, Error> {
        let limit = page.effective_limit();
        let mut query = QueryBuilder::new("SELECT * FROM bus_events WHERE true");
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
            query.push(" AND created_at >= ").push_bind(v);
        }
        if let Some(v) = filter.until {
            query.push(" AND created_at < ").push_bind(v);
        }
        if let Some(after) = &page.after {
            query.push(" AND seq > ").push_bind(parse_seq_cursor(after)?);
        }
        query.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db("listing events"))?;
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
        let mut query = QueryBuilder::new("SELECT d.* FROM agent_messages_dlq d WHERE true");
        push_text_filters(
            &mut query,
            &[
                ("d.tenant", filter.tenant.as_deref()),
                ("d.service", filter.service.as_deref()),
                ("d.role", filter.role.as_deref()),
                ("d.intent", filter.intent.as_deref()),
            ],
        );
        if filter.status == Some(MessageStatus::Failed) {
            query.push(" AND d.requeued_at IS NULL");
        }
        if let Some(after) = &page.after {
            query.push(" AND d.message_id < ").push_bind(parse_uuid_cursor(after)?);
        }
        query.push(" ORDER BY d.message_id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db("listing dead letters"))?;
        let items = rows
            .iter()
            .map(|row| -> Result<DeadLetter, sqlx::Error> {
                Ok(DeadLetter {
                    message_id: MessageId(row.try_get("message_id")?),
                    dead_lettered_at: row.try_get("dead_lettered_at")?,
                    tenant: row.try_get("tenant")?,
                    service: row.try_get("service")?,
                    role: row.try_get("role")?,
                    intent: row.try_get("intent")?,
                    reason: row.try_get("reason")?,
                    last_error: row.try_get("last_error")?,
                    original: row.try_get("original")?,
                    requeued_at: row.try_get("requeued_at")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("reading dead letters"))?;
        let next = (items.len() == limit as usize).then(|| items.last().map(|d| d.message_id.to_string())).flatten();
        Ok(Page { items, next })
    }

    pub(crate) async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db("starting an event append"))?;
        insert_events(&mut tx, self.now(), &events).await?;
        tx.commit().await.map_err(db("committing events"))?;
        self.wakeups.events().notify_waiters();
        Ok(())
    }

    pub(crate) async fn presence_online(&self, presence: &Presence) -> Result<(), Error> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db("starting a presence update"))?;
        sqlx::query(
            "INSERT INTO agent_presence (agent_id, service, roles, shard, host, version, status, started_at, last_heartbeat, capabilities) \
             VALUES ($1, $2, $3, $4, $5, $6, 'online', $7, $8, $9) \
             ON CONFLICT (agent_id) DO UPDATE SET service = EXCLUDED.service, roles = EXCLUDED.roles, shard = EXCLUDED.shard, \
             host = EXCLUDED.host, version = EXCLUDED.version, status = 'online', last_heartbeat = EXCLUDED.last_heartbeat, \
             capabilities = EXCLUDED.capabilities",
        )
        .bind(&presence.agent_id)
        .bind(&presence.service)
        .bind(serde_json::to_value(&presence.roles).unwrap_or(Value::Null))
        .bind(&presence.shard)
        .bind(&presence.host)
        .bind(&presence.version)
        .bind(presence.started_at)
        .bind(now)
        .bind(&presence.capabilities)
        .execute(&mut *tx)
        .await
        .map_err(db("registering presence"))?;
        let event = presence_event(model::event::AGENT_ONLINE, presence, None);
        insert_events(&mut tx, now, &[event]).await?;
        tx.commit().await.map_err(db("committing presence"))
    }

    pub(crate) async fn presence_heartbeat(&self, agent_id: &str) -> Result<bool, Error> {
        let now = self.now();
        let sql = r#"
WITH upd AS (
    UPDATE agent_presence SET last_heartbeat = $2 WHERE agent_id = $1 AND status = 'online'
    RETURNING agent_id, service, shard, roles
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, tenant, service, role, shard, payload)
    SELECT cogo_uuid_v7(), $2, 'agent_heartbeat', 'default', service, coalesce(roles->>0, ''), shard,
           jsonb_build_object('agent_id', agent_id)
    FROM upd
)
SELECT count(*) AS n FROM upd"#;
        let n: i64 = sqlx::query_scalar(sql)
            .bind(agent_id)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(db("recording a heartbeat"))?;
        Ok(n > 0)
    }

    pub(crate) async fn presence_offline(&self, agent_id: &str, reason: &str) -> Result<(), Error> {
        self.mark_offline("agent_id = $1", agent_id, reason, self.now()).await.map(drop)
    }

    pub(crate) async fn presence_mark_stale(&self, timeout: Duration) -> Result<Vec<String>, Error> {
        let cut = self.now() - chrono::Duration::microseconds(micros(timeout));
        let sql = r#"
WITH upd AS (
    UPDATE agent_presence SET status = 'offline' WHERE status = 'online' AND last_heartbeat < $1
    RETURNING agent_id, service, shard, roles
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, tenant, service, role, shard, reason, payload)
    SELECT cogo_uuid_v7(), $2, 'agent_offline', 'default', service, coalesce(roles->>0, ''), shard, 'stale',
           jsonb_build_object('agent_id', agent_id)
    FROM upd
)
SELECT agent_id FROM upd"#;
        sqlx::query_scalar(sql)
            .bind(cut)
            .bind(self.now())
            .fetch_all(&self.pool)
            .await
            .map_err(db("marking stale agents offline"))
    }

    async fn mark_offline(
        &self,
        condition: &str,
        agent_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, Error> {
        let sql = format!(
            r#"
WITH upd AS (
    UPDATE agent_presence SET status = 'offline', last_heartbeat = $2 WHERE {condition} AND status = 'online'
    RETURNING agent_id, service, shard, roles
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, tenant, service, role, shard, reason, payload)
    SELECT cogo_uuid_v7(), $2, 'agent_offline', 'default', service, coalesce(roles->>0, ''), shard, $3,
           jsonb_build_object('agent_id', agent_id)
    FROM upd
)
SELECT count(*) FROM upd"#
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(agent_id)
            .bind(now)
            .bind(reason)
            .fetch_one(&self.pool)
            .await
            .map_err(db("marking an agent offline"))?;
        Ok(n as u64)
    }

    pub(crate) async fn presence(&self) -> Result<Vec<Presence>, Error> {
        let rows = sqlx::query("SELECT * FROM agent_presence ORDER BY last_heartbeat DESC LIMIT 1000")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing agents"))?;
        rows.iter()
            .map(|row| -> Result<Presence, Error> {
                let read = db("reading agent presence");
                let status: String = row.try_get("status").map_err(db("reading agent presence"))?;
                let roles: Value = row.try_get("roles").map_err(db("reading agent presence"))?;
                Ok(Presence {
                    agent_id: row.try_get("agent_id").map_err(db("reading agent presence"))?,
                    service: row.try_get("service").map_err(db("reading agent presence"))?,
                    roles: serde_json::from_value(roles)
                        .map_err(|e| Error::Corrupt { what: "agent roles", detail: e.to_string() })?,
                    shard: row.try_get("shard").map_err(db("reading agent presence"))?,
                    host: row.try_get("host").map_err(db("reading agent presence"))?,
                    version: row.try_get("version").map_err(db("reading agent presence"))?,
                    status: PresenceStatus::parse(&status)
                        .ok_or(Error::Corrupt { what: "agent status", detail: status.clone() })?,
                    started_at: row.try_get("started_at").map_err(db("reading agent presence"))?,
                    last_heartbeat: row.try_get("last_heartbeat").map_err(db("reading agent presence"))?,
                    capabilities: row.try_get("capabilities").map_err(read)?,
                })
            })
            .collect()
    }

    pub(crate) async fn record_circuit(&self, state: &CircuitState) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO circuit_states (key, agent_id, state, open_until, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key, agent_id) DO UPDATE SET state = EXCLUDED.state, open_until = EXCLUDED.open_until, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(&state.key)
        .bind(&state.agent_id)
        .bind(&state.state)
        .bind(state.open_until)
        .bind(state.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db("recording a circuit state"))
        .map(drop)
    }

    pub(crate) async fn mcp_calls(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<McpCallRecord>, Error> {
        let rows = sqlx::query(
            "SELECT event_type = 'mcp_call_failed' AS failed, \
               coalesce(payload ->> 'toolset', '?') || '.' || coalesce(payload ->> 'tool', '?') AS tool, \
               payload ->> 'error_kind' AS error_kind, (payload ->> 'latency_ms')::float8 AS latency_ms, created_at, seq \
             FROM bus_events WHERE event_type IN ('mcp_call_succeeded', 'mcp_call_failed') AND created_at >= $1 \
             ORDER BY created_at DESC LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading MCP call events"))?;
        rows.iter()
            .map(|row| crate::lifecycle::mcp_call_record(row, row.try_get("created_at")?))
            .collect::<Result<_, _>>()
            .map_err(db("reading MCP call events"))
    }

    pub(crate) async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Finished>, Error> {
        let rows = sqlx::query(
            "SELECT service, role, count(*) FILTER (WHERE status = 'done') AS done, \
               count(*) FILTER (WHERE status = 'failed') AS failed \
             FROM agent_messages WHERE status IN ('done', 'failed') AND done_at >= $1 GROUP BY service, role",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting finished messages"))?;
        rows.iter().map(crate::lifecycle::finished).collect::<Result<_, _>>().map_err(db("counting finished messages"))
    }

    pub(crate) async fn create_api_token(&self, token: &ApiToken) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant, name, hash, created_at, revoked_at, roles) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(&token.tenant)
        .bind(&token.name)
        .bind(&token.hash)
        .bind(token.created_at)
        .bind(token.revoked_at)
        .bind(token.roles.as_ref().map(|roles| roles.join(",")))
        .execute(&self.pool)
        .await
        .map_err(db("storing an API token"))?;
        Ok(())
    }

    pub(crate) async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, Error> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading an API token"))?;
        row.as_ref().map(api_token).transpose().map_err(db("reading an API token"))
    }

    pub(crate) async fn api_tokens(&self) -> Result<Vec<ApiToken>, Error> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY tenant, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing API tokens"))?;
        rows.iter().map(api_token).collect::<Result<_, _>>().map_err(db("listing API tokens"))
    }

    pub(crate) async fn revoke_api_token(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(self.now())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("revoking an API token"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn put_secret(&self, secret: &SealedSecret) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO secrets (name, key_id, nonce, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (name) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, \
               ciphertext = EXCLUDED.ciphertext, updated_at = EXCLUDED.updated_at",
        )
        .bind(&secret.name)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(secret.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db("storing a secret"))?;
        Ok(())
    }

    pub(crate) async fn secret(&self, name: &str) -> Result<Option<SealedSecret>, Error> {
        let row = sqlx::query("SELECT * FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a secret"))?;
        row.as_ref().map(sealed_secret).transpose().map_err(db("reading a secret"))
    }

    pub(crate) async fn secrets(&self) -> Result<Vec<SealedSecret>, Error> {
        let rows = sqlx::query("SELECT * FROM secrets ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing secrets"))?;
        rows.iter().map(sealed_secret).collect::<Result<_, _>>().map_err(db("listing secrets"))
    }

    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("removing a secret"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn circuits(&self) -> Result<Vec<CircuitState>, Error> {
        let rows = sqlx::query("SELECT * FROM circuit_states ORDER BY key, agent_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing circuit states"))?;
        rows.iter()
            .map(|row| -> Result<CircuitState, sqlx::Error> {
                Ok(CircuitState {
                    key: row.try_get("key")?,
                    agent_id: row.try_get("agent_id")?,
                    state: row.try_get("state")?,
                    open_until: row.try_get("open_until")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(db("reading circuit states"))
    }

    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let now = self.now();
        let rows = sqlx::query(
            "SELECT service, role, \
               count(*) FILTER (WHERE status = 'queued' AND run_at <= $1) AS ready, \
               count(*) FILTER (WHERE status = 'queued' AND run_at > $1) AS delayed, \
               count(*) FILTER (WHERE status = 'claimed') AS claimed, \
               min(run_at) FILTER (WHERE status = 'queued' AND run_at <= $1) AS oldest \
             FROM (SELECT service, role, status, run_at FROM agent_messages WHERE status = 'queued' \
                   UNION ALL \
                   SELECT service, role, status, run_at FROM agent_messages WHERE status = 'claimed') AS open \
             GROUP BY service, role ORDER BY service, role",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db("computing queue statistics"))?;
        rows.iter()
            .map(|row| -> Result<QueueStats, sqlx::Error> {
                let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
                Ok(QueueStats {
                    service: row.try_get("service")?,
                    role: row.try_get("role")?,
                    ready: row.try_get("ready")?,
                    delayed: row.try_get("delayed")?,
                    claimed: row.try_get("claimed")?,
                    oldest_ready_age_ms: oldest.map(|at| (now - at).num_milliseconds().max(0)),
                    done_last_minute: 0,
                    failed_last_minute: 0,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(db("reading queue statistics"))
    }

    pub(crate) async fn prune(&self, older_than: Duration) -> Result<u64, Error> {
        let now = self.now();
        let cut = now - chrono::Duration::microseconds(micros(older_than));
        let messages = sqlx::query("DELETE FROM agent_messages WHERE status IN ('done', 'failed') AND done_at < $1 AND id NOT IN (SELECT message_id FROM agent_messages_dlq WHERE requeued_at IS NULL)")
            .bind(cut)
            .execute(&self.pool)
            .await
            .map_err(db("pruning finished messages"))?
            .rows_affected();
        // Whole days older than the cut go as partitions; the rest row by row. One process at a
        // time drops partitions (the others skip that part this round), so two processes never
        // race to count or drop the same partition.
        let mut tx = self.pool.begin().await.map_err(db("pruning old events"))?;
        let mut removed = messages;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("taking the pruning lock"))?;
        if locked {
            let partitions: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE p.relname = 'bus_events' AND c.relname ~ '^bus_events_[0-9]{8}$' AND to_date(substr(c.relname, 12), 'YYYYMMDD') + 1 <= $1::date",
            )
            .bind(cut)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("finding old event partitions"))?;
            for partition in partitions {
                let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM \"{partition}\"")))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("counting an old event partition"))?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE \"{partition}\"")))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("dropping an old event partition"))?;
                removed += count as u64;
            }
        }
        tx.commit().await.map_err(db("dropping old event partitions"))?;
        removed += sqlx::query("DELETE FROM bus_events WHERE created_at < $1")
            .bind(cut)
            .execute(&self.pool)
            .await
            .map_err(db("pruning old events"))?
            .rows_affected();
        self.ensure_partitions().await?;
        Ok(removed)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("pinging PostgreSQL")).map(drop)
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The advisory lock key that lets one process at a time drop old event partitions ("cogoprun").
const PRUNE_LOCK: i64 = 0x636f_676f_7072_756e;

/// Applies failures (retry or dead-letter) to claimed rows held by the given agents, with events.
async fn fail_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    now: DateTime<Utc>,
    failures: &[Failure],
    agents: &[String],
) -> Result<Vec<Outcome>, Error> {
    let ids: Vec<Uuid> = failures.iter().map(|f| f.id.0).collect();
    let kinds: Vec<&str> = failures.iter().map(|f| f.kind.as_str()).collect();
    let errors: Vec<String> = failures.iter().map(|f| truncate(&f.error, 4000)).collect();
    let retry_us: Vec<Option<i64>> = failures
        .iter()
        .map(|f| match f.action {
            FailAction::Retry { after } => Some(micros(after)),
            FailAction::DeadLetter { .. } => None,
        })
        .collect();
    let reasons: Vec<Option<String>> = failures
        .iter()
        .map(|f| match &f.action {
            FailAction::Retry { .. } => None,
            FailAction::DeadLetter { reason } => Some(reason.clone()),
        })
        .collect();
    let details: Vec<Option<String>> =
        failures.iter().map(|f| f.detail.as_ref().filter(|d| d.is_object()).map(Value::to_string)).collect();
    let sql = r#"
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $8::text[])
        AS t(id, kind, error, retry_us, reason, agent_id, detail)
), upd AS (
    UPDATE agent_messages m SET
        status = CASE WHEN input.retry_us IS NULL THEN 'failed' ELSE 'queued' END,
        run_at = CASE WHEN input.retry_us IS NULL THEN m.run_at ELSE $7 + input.retry_us * interval '1 microsecond' END,
        done_at = CASE WHEN input.retry_us IS NULL THEN $7 ELSE NULL END,
        claimed_by = NULL, claimed_at = NULL, lease_until = NULL,
        last_error = input.error, last_error_at = $7
    FROM input WHERE m.id = input.id AND m.status = 'claimed' AND m.claimed_by = input.agent_id
    RETURNING m.*, input.kind AS fail_kind, input.retry_us, input.reason AS fail_reason, input.agent_id AS fail_agent,
        input.detail AS fail_detail
), dlq AS (
    INSERT INTO agent_messages_dlq (message_id, dead_lettered_at, tenant, service, role, intent, reason, last_error, original)
    SELECT id, $7, tenant, service, role, intent, coalesce(fail_reason, 'failed'), last_error,
           to_jsonb(upd) - 'fail_kind' - 'retry_us' - 'fail_reason' - 'fail_agent' - 'fail_detail'
    FROM upd WHERE retry_us IS NULL
    ON CONFLICT (message_id) DO UPDATE SET dead_lettered_at = EXCLUDED.dead_lettered_at, reason = EXCLUDED.reason,
        last_error = EXCLUDED.last_error, original = EXCLUDED.original, requeued_at = NULL
), ev AS (
    INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, reason, payload)
    SELECT cogo_uuid_v7(), $7, e.event_type, e.id, e.trace_id, e.tenant, e.service, e.role, e.shard, e.reason, e.payload
    FROM (
        SELECT 1 AS step, id, intent || '_failed' AS event_type, trace_id, tenant, service, role, shard, fail_kind AS reason,
               coalesce(fail_detail::jsonb, '{}'::jsonb)
                 || jsonb_build_object('attempt', attempts, 'kind', fail_kind, 'error', last_error, 'agent_id', fail_agent) AS payload
        FROM upd
        UNION ALL
        SELECT 2, id, intent || CASE WHEN retry_us IS NULL THEN '_dead_lettered' ELSE '_retry_scheduled' END,
               trace_id, tenant, service, role, shard, coalesce(fail_reason, fail_kind),
               jsonb_build_object('attempt', attempts, 'max_attempts', max_attempts, 'run_at', run_at)
        FROM upd
        ORDER BY id, step
    ) e
), wake AS (
    SELECT pg_notify('cogo_bus', string_agg(DISTINCT service || '/' || role, ',')) FROM upd
    WHERE retry_us IS NOT NULL HAVING count(*) > 0
)
SELECT id, retry_us, run_at, (SELECT count(*) FROM wake) AS woken FROM upd"#;
    let rows = sqlx::query(sql)
        .bind(&ids)
        .bind(&kinds)
        .bind(&errors)
        .bind(&retry_us)
        .bind(&reasons)
        .bind(agents)
        .bind(now)
        .bind(&details)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("recording failed attempts"))?;
    let mut applied = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get("id").map_err(db("reading failed attempts"))?;
        let retry: Option<i64> = row.try_get("retry_us").map_err(db("reading failed attempts"))?;
        let run_at: DateTime<Utc> = row.try_get("run_at").map_err(db("reading failed attempts"))?;
        applied.insert(id, if retry.is_some() { Outcome::Retrying { run_at } } else { Outcome::DeadLettered });
    }
    Ok(ids.iter().map(|id| applied.get(id).copied().unwrap_or(Outcome::LeaseLost)).collect())
}

async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    now: DateTime<Utc>,
    events: &[NewEvent],
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::new(
        "INSERT INTO bus_events (id, created_at, event_type, message_id, trace_id, tenant, service, role, shard, reason, payload) ",
    );
    query.push_values(events, |mut row, event| {
        row.push_bind(model::new_id())
            .push_bind(now)
            .push_bind(event.event_type.clone())
            .push_bind(event.message_id.map(|id| id.0))
            .push_bind(event.trace_id.clone())
            .push_bind(event.tenant.clone())
            .push_bind(event.service.clone())
            .push_bind(event.role.clone())
            .push_bind(event.shard.clone())
            .push_bind(event.reason.clone())
            .push_bind(event.payload.clone());
    });
    query.build().execute(&mut **tx).await.map_err(db("appending events")).map(drop)
}

fn push_message_filter(query: &mut QueryBuilder<sqlx::Postgres>, filter: &MessageFilter) {
    push_text_filters(
        query,
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
        query.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = filter.until {
        query.push(" AND created_at < ").push_bind(v);
    }
}

fn message_from_row(row: &PgRow) -> Result<Message, Error> {
    let read = || -> Result<Message, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let intent: String = row.try_get("intent")?;
        Ok(Message {
            id: MessageId(row.try_get("id")?),
            created_at: row.try_get("created_at")?,
            tenant: row.try_get("tenant")?,
            project_id: row.try_get("project_id")?,
            service: row.try_get("service")?,
            role: row.try_get("role")?,
            shard: row.try_get("shard")?,
            intent: Intent::new(intent.clone())
                .map_err(|e| sqlx::Error::Decode(format!("intent {intent:?}: {e}").into()))?,
            payload: row.try_get("payload")?,
            trace_id: row.try_get("trace_id")?,
            parent_id: row.try_get::<Option<Uuid>, _>("parent_id")?.map(MessageId),
            idempotency_key: row.try_get("idempotency_key")?,
            priority: row.try_get("priority")?,
            status: MessageStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("status {status:?}").into()))?,
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
    };
    read().map_err(|e| Error::Corrupt { what: "message", detail: e.to_string() })
}

fn event_from_row(row: &PgRow) -> Result<Event, Error> {
    let read = || -> Result<Event, sqlx::Error> {
        Ok(Event {
            seq: row.try_get("seq")?,
            id: model::EventId(row.try_get("id")?),
            created_at: row.try_get("created_at")?,
            event_type: row.try_get("event_type")?,
            message_id: row.try_get::<Option<Uuid>, _>("message_id")?.map(MessageId),
            trace_id: row.try_get("trace_id")?,
            tenant: row.try_get("tenant")?,
            service: row.try_get("service")?,
            role: row.try_get("role")?,
            shard: row.try_get("shard")?,
            reason: row.try_get("reason")?,
            payload: row.try_get("payload")?,
        })
    };
    read().map_err(|e| Error::Corrupt { what: "event", detail: e.to_string() })
}

/// How long the start-up probe waits for its own notification.
const NOTIFY_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The bus listener, LISTENing on `cogo_bus`, once a notification sent through the pool has come
/// back on it: behind a transaction pooler LISTEN/NOTIFY silently delivers nothing (wake-ups would
/// wait for the 2-second poll, and the pooler breaks prepared statements too), so that is a
/// start-up error naming the fix rather than a slow, flaky bus.
async fn probe_notifications(pool: &PgPool, url: &str) -> Result<PgListener, Error> {
    let failed = |detail: String| Error::NoNotifications { url: crate::redact_url(url), detail };
    let mut listener = PgListener::connect_with(pool).await.map_err(db("opening the bus listener connection"))?;
    let channel = format!("cogo_probe_{}", model::new_id().simple());
    listener.listen_all([BUS_CHANNEL, channel.as_str()]).await.map_err(|e| failed(format!("LISTEN failed: {e}")))?;
    sqlx::raw_sql(AssertSqlSafe(format!("NOTIFY {channel}, 'probe'")))
        .execute(pool)
        .await
        .map_err(|e| failed(format!("NOTIFY failed: {e}")))?;
    let deadline = tokio::time::Instant::now() + NOTIFY_PROBE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, listener.try_recv()).await {
            Ok(Ok(Some(notification))) if notification.channel() == channel => break,
            // a bus notification from another process: keep waiting for ours
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Err(failed("the listening connection was closed".into())),
            Ok(Err(e)) => return Err(failed(format!("the listening connection failed: {e}"))),
            Err(_) => {
                return Err(failed(format!(
                    "a notification sent through the pool did not arrive within {} s",
                    NOTIFY_PROBE_TIMEOUT.as_secs()
                )));
            }
        }
    }
    listener.unlisten(&channel).await.map_err(|e| failed(format!("UNLISTEN failed: {e}")))?;
    Ok(listener)
}

/// Listens for `cogo_bus` notifications from every process and wakes local waiters, starting with
/// `first` (already listening). Reconnects with backoff; after a reconnect every queue is woken,
/// since notifications may have been missed.
fn spawn_listener(pool: PgPool, wakeups: Wakeups, first: PgListener) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut first = Some(first);
        loop {
            let connected = match first.take() {
                Some(listener) => Ok(listener),
                None => PgListener::connect_with(&pool).await,
            };
            let mut listener = match connected {
                Ok(listener) => listener,
                Err(err) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %err, "bus listener could not connect, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Err(err) = listener.listen(BUS_CHANNEL).await {
                tracing::warn!(error = %err, "bus listener could not LISTEN, retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            wakeups.notify_all();
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => wakeups.notify_from_payload(notification.payload()),
                    Ok(None) => {
                        // connection lost and re-established by the listener: catch up
                        wakeups.notify_all();
                    }
                    Err(err) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %err, "bus listener failed, reconnecting");
                        break;
                    }
                }
            }
        }
    });
}

fn sealed_secret(row: &PgRow) -> Result<SealedSecret, sqlx::Error> {
    Ok(SealedSecret {
        name: row.try_get("name")?,
        key_id: row.try_get("key_id")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn api_token(row: &PgRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        roles: crate::types::roles_column(row.try_get("roles")?),
    })
}
