//! Events (`bus_events`): the append-only record of everything that happened, in order.
//!
//! Invariant: lifecycle event types follow `<intent>_<phase>`; every other type is one of the fixed
//! presence and circuit names below.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{EventId, MessageId};

/// A process came online.
pub const AGENT_ONLINE: &str = "agent_online";
/// A process is still alive.
pub const AGENT_HEARTBEAT: &str = "agent_heartbeat";
/// A process stopped, cleanly or detected as dead.
pub const AGENT_OFFLINE: &str = "agent_offline";
/// A circuit breaker opened.
pub const CIRCUIT_OPENED: &str = "circuit_opened";
/// A circuit breaker let probe calls through.
pub const CIRCUIT_HALF_OPEN: &str = "circuit_half_open";
/// A circuit breaker closed again.
pub const CIRCUIT_CLOSED: &str = "circuit_closed";

/// Event types that are not message lifecycle events.
pub const SYSTEM_EVENT_TYPES: [&str; 6] =
    [AGENT_ONLINE, AGENT_HEARTBEAT, AGENT_OFFLINE, CIRCUIT_OPENED, CIRCUIT_HALF_OPEN, CIRCUIT_CLOSED];

/// Whether `event_type` is a valid COGO event type.
pub fn is_valid_event_type(event_type: &str) -> bool {
    SYSTEM_EVENT_TYPES.contains(&event_type) || crate::message::split_event_type(event_type).is_some()
}

/// One row of `bus_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Insertion order within the store (pagination cursor).
    pub seq: i64,
    /// UUIDv7.
    pub id: EventId,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// `<intent>_<phase>`, or a presence or circuit type.
    pub event_type: String,
    /// The message concerned, if any.
    pub message_id: Option<MessageId>,
    /// The trace it belongs to, if any.
    pub trace_id: Option<String>,
    /// Tenant concerned.
    pub tenant: String,
    /// Service concerned.
    pub service: String,
    /// Role concerned.
    pub role: String,
    /// Shard concerned.
    pub shard: String,
    /// Short reason (error kind, `cancelled`, breaker key…).
    pub reason: Option<String>,
    /// Details.
    pub payload: Value,
}

/// An event to append; the store gives it an id and time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    /// Event type.
    pub event_type: String,
    /// The message concerned.
    pub message_id: Option<MessageId>,
    /// The trace.
    pub trace_id: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// Service.
    pub service: String,
    /// Role.
    pub role: String,
    /// Shard.
    pub shard: String,
    /// Short reason.
    pub reason: Option<String>,
    /// Details (JSON null when none).
    pub payload: Value,
}

impl NewEvent {
    /// A system event (presence, circuit) for `service/role`.
    pub fn system(event_type: &str, service: &str, role: &str) -> Self {
        Self {
            event_type: event_type.to_owned(),
            tenant: crate::message::DEFAULT_TENANT.to_owned(),
            service: service.to_owned(),
            role: role.to_owned(),
            ..Self::default()
        }
    }

    /// Sets the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }
}
