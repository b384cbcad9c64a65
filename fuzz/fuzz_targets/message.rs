//! What the bus accepts from outside: a `model::NewMessage` as JSON (the enqueue input of the CLI and
//! the API) with its validation, W3C `traceparent` headers, and the naming rules of model (names,
//! intents, event types, statuses, policy keys, goals, artifact path segments, message ids).
//!
//! Properties: validation accepts only what the naming rules allow; a valid message survives a JSON
//! round trip and its payload size is its JSON length; a parsed `traceparent` written back parses to
//! the same context; every `parse` of a name gives back the name it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::goal::{GoalStatus, NewGoal};
use model::message::{self, MAX_NAME_LEN, NewMessage, Phase};
use model::presence::PresenceStatus;
use model::trace::TraceContext;
use model::{ErrorKind, Intent, MessageId, MessageStatus};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    new_message(text);
    goal(text);
    for line in text.lines().take(8) {
        traceparent(line);
        names(line);
    }
});

/// The enqueue input: JSON, then validation under two payload limits.
fn new_message(text: &str) {
    let Ok(message) = serde_json::from_str::<NewMessage>(text) else { return };
    let size = message::payload_size(&message.payload);
    assert_eq!(size, serde_json::to_vec(&message.payload).map(|bytes| bytes.len()).unwrap_or(usize::MAX));
    for limit in [message::DEFAULT_MAX_PAYLOAD_BYTES, 64] {
        match message.validate(limit) {
            Ok(()) => {
                assert!(size <= limit, "a payload of {size} bytes passed the limit of {limit}");
                for name in [&message.tenant, &message.service, &message.role] {
                    assert!(message::validate_name(name, false).is_ok(), "{name:?} passed validation");
                }
                assert!(message::PRIORITY_RANGE.contains(&message.priority));
                if let Some(trace) = &message.trace_id {
                    assert!(model::trace::is_valid_trace_id(trace));
                }
                let written = serde_json::to_string(&message).expect("a message serialises");
                let again: NewMessage = serde_json::from_str(&written).expect("a written message parses");
                assert_eq!(again, message, "a message changed in a JSON round trip: {written}");
                let queued = message.to_queued(MessageId::new(), chrono::DateTime::UNIX_EPOCH, "t".into());
                assert_eq!(queued.status, MessageStatus::Queued);
            }
            Err(invalid) => assert!(!invalid.problem.is_empty() && !invalid.to_string().is_empty()),
        }
    }
}

/// A goal as the API and the CLI submit it: the whole text is the goal, the first line the tenant.
fn goal(text: &str) {
    let tenant = text.lines().next().unwrap_or_default().to_owned();
    let goal = NewGoal { tenant, goal: text.to_owned(), state: serde_json::Value::Null };
    if goal.validate().is_ok() {
        assert!(!goal.goal.trim().is_empty());
        assert!(goal.goal.chars().count() <= model::goal::MAX_GOAL_CHARS);
        assert!(!goal.goal.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    }
}

/// A `traceparent` header: what parses is written back as the same context.
fn traceparent(line: &str) {
    let Ok(context) = TraceContext::parse(line) else { return };
    assert_ne!(context.trace_id, [0; 16]);
    assert_ne!(context.parent_id, [0; 8]);
    let written = context.to_string();
    assert_eq!(TraceContext::parse(&written), Ok(context), "{line:?} → {written:?}");
    assert!(model::trace::is_valid_trace_id(&context.trace_id_hex()));
    let trimmed = line.trim();
    if trimmed.starts_with("00-") {
        assert_eq!(written, trimmed, "a version-00 header is written back as it came");
    }
}

/// Names, intents, event types, statuses, policy keys and artifact path segments.
fn names(line: &str) {
    match message::validate_name(line, true) {
        Ok(()) => {
            assert!(line.len() <= MAX_NAME_LEN);
            assert!(line.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        }
        Err(problem) => assert!(!problem.to_string().is_empty()),
    }
    if let Ok(intent) = Intent::new(line) {
        assert_eq!(intent.as_str(), line);
        let json = serde_json::to_string(&intent).expect("an intent serialises");
        assert_eq!(serde_json::from_str::<Intent>(&json).ok().as_ref(), Some(&intent));
        for phase in Phase::ALL {
            let event_type = intent.event_type(phase);
            assert!(model::event::is_valid_event_type(&event_type), "{event_type}");
            let split = message::split_event_type(&event_type);
            // `<x>_retry` + `scheduled` reads as `<x>` + `retry_scheduled`: the one ambiguity of the
            // naming rule, harmless because splitting only checks that an event type is valid
            let ambiguous = phase == Phase::Scheduled && line.ends_with("_retry");
            if !ambiguous {
                assert_eq!(split, Some((line, phase)), "{event_type}");
            }
        }
    } else {
        assert!(serde_json::from_str::<Intent>(&serde_json::to_string(line).unwrap_or_default()).is_err());
    }
    if let Some((intent, phase)) = message::split_event_type(line) {
        assert_eq!(message::event_type(intent, phase), line);
    }
    if let Some(status) = MessageStatus::parse(line) {
        assert_eq!(status.as_str(), line);
    }
    if let Some(status) = GoalStatus::parse(line) {
        assert_eq!(status.as_str(), line);
    }
    if let Some(status) = PresenceStatus::parse(line) {
        assert_eq!(status.as_str(), line);
    }
    if let Some(kind) = ErrorKind::parse(line) {
        assert_eq!(kind.as_str(), line);
    }
    if model::policy::validate_rule_key(line).is_ok() {
        assert!(!line.is_empty() && line.len() <= 256);
        let segments: Vec<&str> = line.split('.').collect();
        for (index, segment) in segments.iter().enumerate() {
            let wildcard = *segment == "*" && index + 1 == segments.len();
            assert!(
                wildcard
                    || (!segment.is_empty()
                        && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))),
                "{line:?} passed as a policy key"
            );
        }
    }
    if model::artifact::safe_segment(line).is_ok() {
        assert!(!line.contains(['/', '\\', '\0']) && line != "." && line != "..", "{line:?} passed as a segment");
    }
    if let Ok(id) = line.parse::<MessageId>() {
        assert_eq!(id.to_string().parse::<MessageId>().ok(), Some(id));
    }
}
