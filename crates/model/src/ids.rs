//! Identifiers: UUIDv7 everywhere, so ids sort by creation time and need no global sequence.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A fresh UUIDv7 (time-ordered, random in the low bits).
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(new_id())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// The id of a message on the bus (`agent_messages.id`).
    MessageId
);
id_type!(
    /// The id of an event (`bus_events.id`).
    EventId
);
