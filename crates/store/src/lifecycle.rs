//! What both backends share: lifecycle events built from messages, cursors, bounded text.

use serde_json::Value;
use uuid::Uuid;

use model::event::NewEvent;
use model::presence::Presence;
use model::{Message, MessageId, MessageStatus, NewMessage};

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
pub(crate) fn enqueued_message(
    id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
    message: &NewMessage,
    trace_id: String,
    run_at: chrono::DateTime<chrono::Utc>,
) -> Message {
    use chrono::SubsecRound;
    // both backends keep microseconds: the returned message equals what a later read returns
    let (now, run_at) = (now.trunc_subsecs(6), run_at.trunc_subsecs(6));
    Message {
        id: MessageId(id),
        created_at: now,
        tenant: message.tenant.clone(),
        project_id: message.project_id.clone(),
        service: message.service.clone(),
        role: message.role.clone(),
        shard: message.shard.clone(),
        intent: message.intent.clone(),
        payload: message.payload.clone(),
        trace_id,
        parent_id: message.parent_id,
        idempotency_key: message.idempotency_key.clone(),
        priority: message.priority,
        status: MessageStatus::Queued,
        attempts: 0,
        max_attempts: message.max_attempts,
        run_at,
        claimed_by: None,
        claimed_at: None,
        lease_until: None,
        done_at: None,
        last_error: None,
        last_error_at: None,
        result: None,
        result_url: None,
    }
}
