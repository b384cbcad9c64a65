//! What both backends share: lifecycle events built from messages, cursors, bounded text.

use serde_json::Value;
use uuid::Uuid;

use model::event::NewEvent;
use model::presence::Presence;
use model::{Message, MessageId, NewMessage};

use crate::Error;

pub(crate) fn message_event(message: &Message, phase: model::Phase, reason: Option<&str>, payload: Value) -> NewEvent {
    NewEvent {
        event_type: message.intent.event_type(phase),
        message_id: Some(message.id),
        trace_id: Some(message.trace_id.clone()),
        tenant: message.tenant.clone(),
        service: message.service.clone(),
        role: message.role.clone(),
        shard: message.shard.clone(),
        reason: reason.map(str::to_owned),
        payload,
    }
}

/// `payload` with the handler's `detail` fields added (the store's own fields win).
pub(crate) fn with_detail(mut payload: Value, detail: Option<&Value>) -> Value {
    if let (Some(Value::Object(extra)), Value::Object(fields)) = (detail, &mut payload) {
        for (key, value) in extra {
            fields.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    payload
}

pub(crate) fn presence_event(event_type: &str, presence: &Presence, reason: Option<&str>) -> NewEvent {
    NewEvent {
        event_type: event_type.to_owned(),
        tenant: model::message::DEFAULT_TENANT.to_owned(),
        service: presence.service.clone(),
        role: presence.roles.first().cloned().unwrap_or_default(),
        shard: presence.shard.clone(),
        reason: reason.map(str::to_owned),
        payload: serde_json::json!({ "agent_id": presence.agent_id, "host": presence.host, "version": presence.version, "roles": presence.roles }),
        ..NewEvent::default()
    }
}

pub(crate) fn parse_uuid_cursor(cursor: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(cursor).map_err(|_| Error::BadCursor { cursor: cursor.chars().take(80).collect() })
}

pub(crate) fn parse_seq_cursor(cursor: &str) -> Result<i64, Error> {
    cursor.parse().map_err(|_| Error::BadCursor { cursor: cursor.chars().take(80).collect() })
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The stored form of a message just enqueued, built from what was inserted (no read back).
/// Both backends keep microseconds, so times are truncated to match a later read.
pub(crate) fn enqueued_message(
    id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
    message: &NewMessage,
    trace_id: String,
) -> Message {
    use chrono::SubsecRound;
    let mut stored = message.to_queued(MessageId(id), now.trunc_subsecs(6), trace_id);
    stored.run_at = stored.run_at.trunc_subsecs(6);
    stored
}

/// Appends ` AND <column> = <value>` for every text filter that is set.
pub(crate) fn push_text_filters<DB: sqlx::Database>(
    query: &mut sqlx::QueryBuilder<DB>,
    filters: &[(&str, Option<&str>)],
) where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    for (column, value) in filters {
        if let Some(value) = value {
            query.push(" AND ").push(*column).push(" = ").push_bind((*value).to_owned());
        }
    }
}

/// An MCP call record from a row of the backends' MCP-call query (columns `tool`, `failed`,
/// `error_kind`, `latency_ms`).
pub(crate) fn mcp_call_record<'r, R: sqlx::Row>(
    row: &'r R,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<crate::McpCallRecord, sqlx::Error>
where
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::McpCallRecord {
        tool: row.try_get("tool")?,
        failed: row.try_get("failed")?,
        error_kind: row.try_get("error_kind")?,
        latency_ms: row.try_get("latency_ms")?,
        at,
        seq: row.try_get("seq")?,
    })
}

/// A row of `service, role, done, failed` (both backends' finished-messages query).
pub(crate) fn finished<'r, R: sqlx::Row>(row: &'r R) -> Result<crate::Finished, sqlx::Error>
where
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::Finished {
        service: row.try_get("service")?,
        role: row.try_get("role")?,
        done: row.try_get("done")?,
        failed: row.try_get("failed")?,
    })
}

/// Counts the messages whose status disagrees with their columns: claimed without a holder or a
/// lease, done without its completion time. A crash mid-transaction must never leave one.
pub(crate) const INCONSISTENT_MESSAGES: &str = "SELECT COUNT(*) FROM agent_messages \
     WHERE (status = 'claimed' AND (claimed_by IS NULL OR lease_until IS NULL)) \
     OR (status = 'done' AND done_at IS NULL)";
