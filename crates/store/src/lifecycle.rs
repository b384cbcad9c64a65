//! What both backends share: lifecycle events built from messages, cursors, bounded text.

use serde_json::Value;
use uuid::Uuid;

use model::Message;
use model::event::NewEvent;
use model::presence::Presence;

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
