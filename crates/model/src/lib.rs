//! COGO's vocabulary: the standard types every other crate speaks.
//!
//! Invariant: this crate does no IO. Clocks, random numbers and file contents are passed in, so the
//! state machines here (message lifecycle, retry schedule, circuit breaker, policy resolution) are pure
//! and testable without sleeping.

pub mod artifact;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod edge;
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

/// An error with its causes, for messages: `"error sending request: … : invalid peer certificate:
/// UnknownIssuer"` (many errors, reqwest's among them, leave the cause out of their own text). A
/// cause already quoted by the text before it is not repeated.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_appended_once() {
        let err = Outer(std::io::Error::other("invalid peer certificate: UnknownIssuer"));
        assert_eq!(super::with_causes(&err), "error sending request: invalid peer certificate: UnknownIssuer");
        let plain = std::io::Error::other("refused");
        assert_eq!(super::with_causes(&plain), "refused");
    }
}
