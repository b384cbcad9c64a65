//! COGO's vocabulary: the standard types every other crate speaks.
//!
//! Invariant: this crate does no IO. Clocks, random numbers and file contents are passed in, so the
//! state machines here (message lifecycle, retry schedule, circuit breaker, policy resolution) are pure
//! and testable without sleeping.

pub mod artifact;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod event;
pub mod goal;
pub mod ids;
pub mod message;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod retry;
pub mod trace;

pub use ids::{EventId, MessageId, new_id};
pub use message::{ErrorKind, Intent, Message, MessageStatus, NewMessage, Phase};
