use serde_json::json;

use super::*;

#[test]
fn event_types_follow_intent_underscore_phase() {
    let intent = Intent::new("mcp_call").expect("valid");
    let names: Vec<String> = Phase::ALL.iter().map(|phase| intent.event_type(*phase)).collect();
    assert_eq!(
        names,
        [
            "mcp_call_retry_scheduled",
            "mcp_call_scheduled",
            "mcp_call_claimed",
            "mcp_call_succeeded",
            "mcp_call_failed",
            "mcp_call_requeued",
            "mcp_call_dead_lettered"
        ]
    );
    for (name, phase) in names.iter().zip(Phase::ALL) {
        assert_eq!(split_event_type(name), Some(("mcp_call", phase)), "{name}");
    }
    assert_eq!(split_event_type("research_retry_scheduled"), Some(("research", Phase::RetryScheduled)));
    assert_eq!(split_event_type("agent_online"), None);
    assert_eq!(split_event_type("_scheduled"), None);
    assert!(crate::event::is_valid_event_type("agent_online"));
    assert!(crate::event::is_valid_event_type("codegen_dead_lettered"));
    assert!(!crate::event::is_valid_event_type("Codegen_done"));
}

#[test]
fn intents_are_validated() {
    assert!(Intent::new("mcp_call").is_ok());
    for bad in ["", "MCP", "1abc", "mcp-call", "mcp call", &"a".repeat(65)] {
        assert!(Intent::new(bad).is_err(), "{bad:?}");
    }
    let parsed: Result<NewMessage, _> =
        serde_json::from_value(json!({"service": "mcp", "role": "gateway", "intent": "Bad!"}));
    assert!(parsed.expect_err("bad intent").to_string().contains("lower-case"));
}

#[test]
fn status_transitions_follow_the_lifecycle() {
    use MessageStatus::*;
    let allowed: Vec<(MessageStatus, MessageStatus)> = MessageStatus::ALL
        .iter()
        .flat_map(|a| MessageStatus::ALL.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a.can_become(*b))
        .collect();
    assert_eq!(
        allowed,
        [(Queued, Claimed), (Queued, Failed), (Claimed, Queued), (Claimed, Done), (Claimed, Failed), (Failed, Queued)]
    );
    for status in MessageStatus::ALL {
        assert_eq!(MessageStatus::parse(status.as_str()), Some(status));
    }
}

#[test]
fn new_message_validation_names_the_field() {
    let ok = NewMessage::new("mcp", "gateway", Intent::new("mcp_call").expect("intent"), json!({"toolset": "browser"}));
    assert_eq!(ok.validate(1024), Ok(()));
    let cases = [
        (ok.clone().with_tenant(""), "tenant must not be empty"),
        (ok.clone().with_shard("a/b"), "shard contains '/'"),
        (ok.clone().with_trace_id("xyz"), "trace_id must be 32"),
        (ok.clone().with_idempotency_key(""), "idempotency_key must be 1 to 256"),
        (ok.clone().with_priority(5000), "priority must be within"),
        (ok.clone().with_max_attempts(0), "max_attempts must be within"),
        (NewMessage { payload: json!("x".repeat(2000)), ..ok.clone() }, "payload is 2002 bytes"),
    ];
    for (message, expected) in cases {
        let error = message.validate(1024).expect_err(expected).to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn new_message_json_round_trips_and_rejects_unknown_fields() {
    let text = r#"{"tenant":"acme","service":"mcp","role":"gateway","shard":"gateway","intent":"mcp_call",
        "payload":{"toolset":"browser","tool":"browser_navigate","params":{"url":"http://127.0.0.1/"}},
        "idempotency_key":"k1","priority":5,"max_attempts":4}"#;
    let message: NewMessage = serde_json::from_str(text).expect("valid");
    assert_eq!(message.tenant, "acme");
    let back: NewMessage = serde_json::from_value(serde_json::to_value(&message).expect("json")).expect("round trip");
    assert_eq!(back, message);
    let defaults: NewMessage = serde_json::from_str(r#"{"service":"s","role":"r","intent":"noop"}"#).expect("defaults");
    assert_eq!((defaults.tenant.as_str(), defaults.max_attempts, defaults.priority), ("default", 3, 0));
    let unknown = serde_json::from_str::<NewMessage>(r#"{"service":"s","role":"r","intent":"noop","colour":1}"#);
    assert!(unknown.expect_err("unknown").to_string().contains("unknown field `colour`"));
}

/// The stored/API JSON of a message is a contract: this golden text must only change on purpose.
#[test]
fn message_json_is_stable() {
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").expect("time").with_timezone(&chrono::Utc);
    let message = Message {
        id: "019ab5e0-0000-7000-8000-000000000001".parse().expect("id"),
        created_at: at,
        tenant: "default".into(),
        project_id: None,
        service: "mcp".into(),
        role: "gateway".into(),
        shard: "gateway".into(),
        intent: Intent::new("mcp_call").expect("intent"),
        payload: json!({"toolset": "browser", "tool": "browser_navigate", "params": {}}),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        parent_id: None,
        idempotency_key: Some("k".into()),
        priority: 0,
        status: MessageStatus::Queued,
        attempts: 0,
        max_attempts: 3,
        run_at: at,
        claimed_by: None,
        claimed_at: None,
        lease_until: None,
        done_at: None,
        last_error: None,
        last_error_at: None,
        result: None,
        result_url: None,
    };
    let expected = r#"{"id":"019ab5e0-0000-7000-8000-000000000001","created_at":"2026-11-24T12:00:00Z","tenant":"default","project_id":null,"service":"mcp","role":"gateway","shard":"gateway","intent":"mcp_call","payload":{"toolset":"browser","tool":"browser_navigate","params":{}},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","parent_id":null,"idempotency_key":"k","priority":0,"status":"queued","attempts":0,"max_attempts":3,"run_at":"2026-11-24T12:00:00Z","claimed_by":null,"claimed_at":null,"lease_until":null,"done_at":null,"last_error":null,"last_error_at":null,"result":null,"result_url":null}"#;
    assert_eq!(serde_json::to_string(&message).expect("json"), expected);
    let back: Message = serde_json::from_str(expected).expect("parse");
    assert_eq!(back, message);
}

#[test]
fn error_kinds_round_trip() {
    for kind in ErrorKind::ALL {
        assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        assert_eq!(serde_json::to_value(kind).expect("json"), json!(kind.as_str()));
    }
}
