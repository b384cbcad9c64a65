//! Presence (`agent_presence`): one row per live process, so operators see who is working.
//!
//! Invariant: a process is `online` only while its heartbeat is younger than the stale timeout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether a process is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Heartbeating.
    Online,
    /// Stopped cleanly or presumed dead.
    Offline,
}

impl PresenceStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "online" => Some(Self::Online),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

/// One row of `agent_presence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Presence {
    /// Unique per process run.
    pub agent_id: String,
    /// Service it runs (`cogo`, `worker`…).
    pub service: String,
    /// Roles it handles.
    pub roles: Vec<String>,
    /// Shard it serves (empty: any).
    pub shard: String,
    /// Host name.
    pub host: String,
    /// COGO version.
    pub version: String,
    /// Online or offline.
    pub status: PresenceStatus,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Last sign of life.
    pub last_heartbeat: DateTime<Utc>,
    /// What it can do (free-form JSON).
    pub capabilities: Value,
}
