use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use model::retry::{RetryPolicy, bus_decision};
use model::{ErrorKind, Intent, MessageStatus, NewMessage};
use serde_json::json;
use store::{
    ClaimRequest, Completion, Error, EventFilter, FailAction, Failure, MessageFilter, Outcome, PageRequest, Store,
};
use test_support::TestStore;

const LEASE: Duration = Duration::from_secs(30);

fn job(n: usize) -> NewMessage {
    NewMessage::new(
        "mcp",
        "gateway",
        Intent::new("mcp_call").expect("intent"),
        json!({"toolset": "everything", "tool": "echo", "params": {"n": n}}),
    )
}

fn claim(agent: &str, limit: u32) -> ClaimRequest {
    ClaimRequest::new("mcp", "gateway", agent, limit, LEASE)
}

async fn event_types(store: &Store, message: model::MessageId) -> Vec<String> {
    let filter = EventFilter { message_id: Some(message), ..EventFilter::default() };
    let page = store.events(&filter, &PageRequest::first(100)).await.expect("events");
    page.items.into_iter().map(|e| e.event_type).collect()
}

pub async fn lifecycle_emits_events_in_order(t: TestStore) {
    let s = &t.store;
    let enqueued = s.enqueue(job(1).with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")).await.expect("enqueue");
    assert!(enqueued.created);
    let id = enqueued.message.id;
    assert_eq!(enqueued.message.status, MessageStatus::Queued);
    assert_eq!(s.message(id).await.expect("read back"), enqueued.message, "enqueue returns what is stored");
    let before = chrono::Utc::now().timestamp_millis();
    let claimed = s.claim(&claim("w1", 10)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].status, claimed[0].attempts, claimed[0].claimed_by.as_deref()),
        (MessageStatus::Claimed, 1, Some("w1"))
    );
    assert_eq!(claimed[0].lease_until, Some(test_support::epoch() + chrono::Duration::seconds(30)));
    let outcomes = s.complete("w1", vec![Completion::new(id, Some(json!({"echo": "hi"})))]).await.expect("complete");
    assert_eq!(outcomes, vec![Outcome::Done]);
    let done = s.message(id).await.expect("message");
    assert_eq!((done.status, done.result), (MessageStatus::Done, Some(json!({"echo": "hi"}))));
    assert_eq!(done.lease_until, None);
    assert_eq!(event_types(s, id).await, ["mcp_call_scheduled", "mcp_call_claimed", "mcp_call_succeeded"]);
    // each event says who did what: the claim's agent and lease, the completion's duration
    let filter = EventFilter { message_id: Some(id), ..EventFilter::default() };
    let events = s.events(&filter, &PageRequest::first(10)).await.expect("events").items;
    let lease: Option<chrono::DateTime<chrono::Utc>> =
        serde_json::from_value(events[1].payload["lease_until"].clone()).expect("a time");
    assert_eq!(
        (&events[1].payload["agent_id"], &events[1].payload["attempt"], lease),
        (&json!("w1"), &json!(1), claimed[0].lease_until)
    );
    assert_eq!((&events[2].payload["agent_id"], &events[2].payload["duration_ms"]), (&json!("w1"), &json!(0)));
    assert_eq!(events.iter().map(|e| e.id).collect::<HashSet<_>>().len(), 3, "every event has its own id");
    let after = chrono::Utc::now().timestamp_millis();
    for event in &events[1..] {
        // UUIDv7 ids whose 48-bit prefix is the millisecond they were made in (system clock)
        let (secs, nanos) = event.id.0.get_timestamp().expect("a UUIDv7").to_unix();
        let made = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
        assert!((before..=after).contains(&made), "event id made at {made}, not in {before}..={after}");
        assert_eq!(event.id.0.get_variant(), uuid::Variant::RFC4122);
    }
    // the trace alone reconstructs the story
    let by_trace = EventFilter { trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()), ..EventFilter::default() };
    assert_eq!(s.events(&by_trace, &PageRequest::first(10)).await.expect("events").items.len(), 3);
    // a second completion is refused, not recorded twice
    assert_eq!(s.complete("w1", vec![Completion::new(id, None)]).await.expect("again"), vec![Outcome::LeaseLost]);
    assert_eq!(event_types(s, id).await.len(), 3);
}

pub async fn duplicate_enqueue_returns_the_existing_message(t: TestStore) {
    let s = &t.store;
    let first = s.enqueue(job(1).with_idempotency_key("k1")).await.expect("first");
    let second = s.enqueue(job(2).with_idempotency_key("k1")).await.expect("second");
    assert!(first.created && !second.created);
    assert_eq!(first.message.id, second.message.id);
    assert_eq!(second.message.payload["params"]["n"], 1, "the original is kept");
    // same key in another tenant is a different message
    let other = s.enqueue(job(3).with_idempotency_key("k1").with_tenant("acme")).await.expect("other tenant");
    assert!(other.created);
    // duplicates inside one batch
    let batch = s
        .enqueue_batch(vec![job(4).with_idempotency_key("k2"), job(5).with_idempotency_key("k2"), job(6)])
        .await
        .expect("batch");
    assert_eq!(batch.iter().map(|e| e.created).collect::<Vec<_>>(), [true, false, true]);
    assert_eq!(batch[0].message.id, batch[1].message.id);
    let all = s.messages(&MessageFilter::default(), &PageRequest::first(100)).await.expect("list");
    assert_eq!(all.items.len(), 4);
    let scheduled = EventFilter { event_type: Some("mcp_call_scheduled".into()), ..EventFilter::default() };
    assert_eq!(
        s.events(&scheduled, &PageRequest::first(100)).await.expect("events").items.len(),
        4,
        "one event per created message"
    );
}

pub async fn concurrent_duplicate_enqueue_creates_one_row(t: TestStore) {
    let mut tasks = Vec::new();
    for n in 0..16 {
        let s = t.store.clone();
        tasks.push(tokio::spawn(async move { s.enqueue(job(n).with_idempotency_key("same")).await }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let enqueued = task.await.expect("join").expect("enqueue");
        created += usize::from(enqueued.created);
        ids.insert(enqueued.message.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
}

pub async fn sixteen_concurrent_claimers_never_share_a_message(t: TestStore) {
    for round in 0..3usize {
        let total = 200 + round * 150;
        let batch = (round * 7 % 13 + 1) as u32;
        let messages: Vec<NewMessage> = (0..total).map(job).collect();
        t.store.enqueue_batch(messages).await.expect("enqueue");
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let s = t.store.clone();
            tasks.push(tokio::spawn(async move {
                let agent = format!("w{worker}");
                let mut seen = Vec::new();
                loop {
                    let claimed = s.claim(&claim(&agent, batch)).await.expect("claim");
                    if claimed.is_empty() {
                        return seen;
                    }
                    let completions = claimed.iter().map(|m| Completion::new(m.id, None)).collect();
                    let outcomes = s.complete(&agent, completions).await.expect("complete");
                    assert!(outcomes.iter().all(|o| *o == Outcome::Done));
                    seen.extend(claimed.into_iter().map(|m| m.id));
                }
            }));
        }
        let mut counts: HashMap<model::MessageId, usize> = HashMap::new();
        for task in tasks {
            for id in task.await.expect("join") {
                *counts.entry(id).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), total, "round {round}: every message claimed");
        assert!(counts.values().all(|c| *c == 1), "round {round}: a message was claimed twice");
    }
    let succeeded = EventFilter { event_type: Some("mcp_call_succeeded".into()), ..EventFilter::default() };
    let mut page = PageRequest::first(1000);
    let mut n = 0;
    loop {
        let got = t.store.events(&succeeded, &page).await.expect("events");
        if got.items.is_empty() {
            break;
        }
        n += got.items.len();
        page.after = got.next;
    }
    assert_eq!(n, 200 + 350 + 500);
}

fn decide_with(policy: RetryPolicy) -> impl Fn(&model::Message) -> FailAction + Sync {
    move |m| {
        FailAction::from_decision(bus_decision(
            &policy,
            ErrorKind::LeaseExpired,
            m.attempts as u32,
            m.max_attempts as u32,
            Duration::ZERO,
            0.5,
        ))
    }
}

pub async fn expired_leases_are_reclaimed_and_counted(t: TestStore) {
    let s = &t.store;
    let id = s.enqueue(job(1).with_max_attempts(2)).await.expect("enqueue").message.id;
    assert_eq!(s.claim(&claim("dead-worker", 1)).await.expect("claim").len(), 1);
    let policy = RetryPolicy {
        base_delay: Duration::from_secs(1),
        jitter: model::retry::Jitter::None,
        ..RetryPolicy::default()
    };
    // not yet expired
    assert_eq!(s.reap_expired(100, &decide_with(policy)).await.expect("reap"), 0);
    t.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(s.reap_expired(100, &decide_with(policy)).await.expect("reap"), 1);
    let back = s.message(id).await.expect("message");
    assert_eq!((back.status, back.attempts, back.claimed_by.clone()), (MessageStatus::Queued, 1, None));
    assert!(back.last_error.as_deref().is_some_and(|e| e.contains("dead-worker")));
    // the late worker's completion is refused
    assert_eq!(
        s.complete("dead-worker", vec![Completion::new(id, None)]).await.expect("late"),
        vec![Outcome::LeaseLost]
    );
    // second expiry exhausts max_attempts = 2
    t.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(s.claim(&claim("w2", 1)).await.expect("claim").len(), 1);
    t.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(s.reap_expired(100, &decide_with(policy)).await.expect("reap"), 1);
    assert_eq!(s.message(id).await.expect("message").status, MessageStatus::Failed);
    assert_eq!(
        event_types(s, id).await,
        [
            "mcp_call_scheduled",
            "mcp_call_claimed",
            "mcp_call_failed",
            "mcp_call_retry_scheduled",
            "mcp_call_claimed",
            "mcp_call_failed",
            "mcp_call_dead_lettered"
        ]
    );
}

pub async fn retry_waits_for_its_backoff(t: TestStore) {
    let s = &t.store;
    let id = s.enqueue(job(1)).await.expect("enqueue").message.id;
    s.claim(&claim("w", 1)).await.expect("claim");
    let failure = Failure {
        id,
        kind: ErrorKind::Timeout,
        error: "tool timed out after 30000 ms".into(),
        action: FailAction::Retry { after: Duration::from_secs(2) },
        detail: None,
    };
    let outcome = s.fail("w", vec![failure]).await.expect("fail");
    assert_eq!(outcome, vec![Outcome::Retrying { run_at: test_support::epoch() + chrono::Duration::seconds(2) }]);
    assert!(s.claim(&claim("w", 1)).await.expect("claim").is_empty(), "not before run_at");
    t.clock.advance(chrono::Duration::milliseconds(1999));
    assert!(s.claim(&claim("w", 1)).await.expect("claim").is_empty());
    t.clock.advance(chrono::Duration::milliseconds(1));
    let again = s.claim(&claim("w", 1)).await.expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("tool timed out after 30000 ms"));
    let events = s
        .events(&EventFilter { message_id: Some(id), ..EventFilter::default() }, &PageRequest::first(10))
        .await
        .expect("events");
    let retry = events.items.iter().find(|e| e.event_type == "mcp_call_retry_scheduled").expect("retry event");
    assert_eq!(retry.reason.as_deref(), Some("timeout"));
    assert_eq!(retry.trace_id.as_deref(), Some(again[0].trace_id.as_str()));
}

pub async fn dead_letters_after_max_attempts_and_requeues_once(t: TestStore) {
    let s = &t.store;
    let id = s.enqueue(job(1).with_max_attempts(2)).await.expect("enqueue").message.id;
    let policy =
        RetryPolicy { jitter: model::retry::Jitter::None, base_delay: Duration::ZERO, ..RetryPolicy::default() };
    for attempt in 1..=2 {
        let claimed = s.claim(&claim("w", 1)).await.expect("claim");
        assert_eq!(claimed[0].attempts, attempt);
        let decision = bus_decision(&policy, ErrorKind::Transport, attempt as u32, 2, Duration::ZERO, 0.0);
        let failure = Failure {
            id,
            kind: ErrorKind::Transport,
            error: format!("connection reset (attempt {attempt})"),
            action: FailAction::from_decision(decision),
            detail: None,
        };
        let outcome = s.fail("w", vec![failure]).await.expect("fail");
        assert_eq!(outcome[0] == Outcome::DeadLettered, attempt == 2);
    }
    let failed = s.message(id).await.expect("message");
    assert_eq!(failed.status, MessageStatus::Failed);
    let open = MessageFilter { status: Some(MessageStatus::Failed), ..MessageFilter::default() };
    let dlq = s.dead_letters(&open, &PageRequest::first(10)).await.expect("dlq");
    assert_eq!(dlq.items.len(), 1);
    assert_eq!(
        (dlq.items[0].reason.as_str(), dlq.items[0].last_error.as_deref()),
        ("max_attempts", Some("connection reset (attempt 2)"))
    );
    assert_eq!(dlq.items[0].original["id"], json!(id.to_string()));
    // requeue: fresh attempt series, idempotent
    let requeued = s.requeue(id).await.expect("requeue");
    assert_eq!((requeued.status, requeued.attempts), (MessageStatus::Queued, 0));
    let again = s.requeue(id).await.expect("requeue twice");
    assert_eq!(again.id, id);
    assert_eq!(s.messages(&MessageFilter::default(), &PageRequest::first(10)).await.expect("list").items.len(), 1);
    let types = event_types(s, id).await;
    assert_eq!(types.iter().filter(|t| *t == "mcp_call_requeued").count(), 1);
    assert_eq!(types.last().map(String::as_str), Some("mcp_call_requeued"));
    assert!(s.dead_letters(&open, &PageRequest::first(10)).await.expect("dlq").items.is_empty());
    // it can be claimed again
    assert_eq!(s.claim(&claim("w", 1)).await.expect("claim")[0].attempts, 1);
    // errors
    let fresh = s.enqueue(job(2)).await.expect("enqueue").message.id;
    assert!(matches!(s.requeue(fresh).await, Err(Error::Conflict { action: "requeue", .. })));
    assert!(matches!(s.requeue(model::MessageId::new()).await, Err(Error::NotFound { .. })));
}

pub async fn cancel_only_queued_messages(t: TestStore) {
    let s = &t.store;
    let a = s.enqueue(job(1)).await.expect("a").message.id;
    let cancelled = s.cancel(a, "operator asked").await.expect("cancel");
    assert_eq!(cancelled.status, MessageStatus::Failed);
    assert_eq!(cancelled.last_error.as_deref(), Some("cancelled: operator asked"));
    assert!(s.claim(&claim("w", 5)).await.expect("claim").is_empty());
    let b = s.enqueue(job(2)).await.expect("b").message.id;
    s.claim(&claim("w", 5)).await.expect("claim");
    let err = s.cancel(b, "too late").await.expect_err("claimed");
    assert_eq!(err.to_string(), format!("cannot cancel message {b}: it is claimed"));
    assert_eq!(event_types(s, a).await, ["mcp_call_scheduled", "mcp_call_failed"]);
}

pub async fn bad_input_is_rejected_with_clear_errors(t: TestStore) {
    let s = &t.store;
    let huge = NewMessage { payload: json!("x".repeat(2 * 1024 * 1024)), ..job(0) };
    let err = s.enqueue_batch(vec![job(1), huge]).await.expect_err("oversize");
    let chain = format!("{err}: {}", std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default());
    assert!(chain.contains("message 1 of the batch") && chain.contains("payload is 2097154 bytes"), "{chain}");
    assert!(
        s.messages(&MessageFilter::default(), &PageRequest::first(10)).await.expect("list").items.is_empty(),
        "all or nothing"
    );
    let err = s.enqueue(job(1).with_tenant("a b")).await.expect_err("bad tenant");
    assert!(std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default().contains("tenant contains ' '"));
    let id = s.enqueue(job(1)).await.expect("ok").message.id;
    s.claim(&claim("w", 1)).await.expect("claim");
    let big = json!("y".repeat(100 * 1024));
    let err = s.complete("w", vec![Completion::new(id, Some(big))]).await.expect_err("result too large");
    assert!(err.to_string().contains("over the inline limit") && err.to_string().contains("result_url"), "{err}");
    assert_eq!(s.message(id).await.expect("still claimed").status, MessageStatus::Claimed);
    let bad = PageRequest { after: Some("not-a-cursor".into()), limit: 10 };
    assert!(matches!(s.messages(&MessageFilter::default(), &bad).await, Err(Error::BadCursor { .. })));
    assert!(matches!(s.events(&EventFilter::default(), &bad).await, Err(Error::BadCursor { .. })));
    assert!(matches!(s.message(model::MessageId::new()).await, Err(Error::NotFound { .. })));
    // the JSON form of a new message refuses unknown fields and bad intents
    let parsed = serde_json::from_value::<NewMessage>(
        json!({"service": "mcp", "role": "gateway", "intent": "mcp_call", "prio": 1}),
    );
    assert!(parsed.is_err());
}

pub async fn listing_filters_and_pages(t: TestStore) {
    let s = &t.store;
    let mut batch: Vec<NewMessage> = (0..25).map(job).collect();
    batch.extend((0..5).map(|n| job(n).with_tenant("acme")));
    s.enqueue_batch(batch).await.expect("enqueue");
    let mut seen = HashSet::new();
    let mut page = PageRequest::first(10);
    let mut pages = 0;
    loop {
        let got = s
            .messages(&MessageFilter { tenant: Some("default".into()), ..MessageFilter::default() }, &page)
            .await
            .expect("page");
        pages += 1;
        for m in &got.items {
            assert_eq!(m.tenant, "default");
            assert!(seen.insert(m.id));
        }
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (25, 3));
    let acme = s
        .messages(
            &MessageFilter {
                tenant: Some("acme".into()),
                status: Some(MessageStatus::Queued),
                ..MessageFilter::default()
            },
            &PageRequest::first(100),
        )
        .await
        .expect("acme");
    assert_eq!(acme.items.len(), 5);
    let none = s
        .messages(
            &MessageFilter { intent: Some("research".into()), ..MessageFilter::default() },
            &PageRequest::first(100),
        )
        .await
        .expect("none");
    assert!(none.items.is_empty());
    let later =
        MessageFilter { since: Some(test_support::epoch() + chrono::Duration::seconds(1)), ..MessageFilter::default() };
    assert!(s.messages(&later, &PageRequest::first(100)).await.expect("since").items.is_empty());
}

pub async fn priority_orders_claims_and_shards_route(t: TestStore) {
    let s = &t.store;
    s.enqueue_batch(vec![
        job(1).with_priority(0),
        job(2).with_priority(10),
        job(3).with_priority(-5),
        job(4).with_priority(10),
    ])
    .await
    .expect("enqueue");
    let claimed = s.claim(&claim("w", 10)).await.expect("claim");
    let order: Vec<i64> = claimed.iter().map(|m| m.payload["params"]["n"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(order, [2, 4, 1, 3]);
    s.enqueue(job(5).with_shard("browser-01")).await.expect("sharded");
    assert!(s.claim(&claim("w", 10)).await.expect("unsharded worker").is_empty());
    assert!(s.claim(&claim("w", 10).with_shards(&["browser-02"])).await.expect("other shard").is_empty());
    assert_eq!(s.claim(&claim("w", 10).with_shards(&["browser-01"])).await.expect("right shard").len(), 1);
}

pub async fn presence_online_heartbeat_offline_and_stale(t: TestStore) {
    let s = &t.store;
    let presence = |id: &str| model::presence::Presence {
        agent_id: id.into(),
        service: "cogo".into(),
        roles: vec!["gateway".into(), "research".into()],
        shard: String::new(),
        host: "host-a".into(),
        version: "0.1.0".into(),
        status: model::presence::PresenceStatus::Online,
        started_at: test_support::epoch(),
        last_heartbeat: test_support::epoch(),
        capabilities: json!({"toolsets": ["browser"]}),
    };
    s.presence_online(&presence("a1")).await.expect("online a1");
    s.presence_online(&presence("a2")).await.expect("online a2");
    t.clock.advance(chrono::Duration::seconds(20));
    assert!(s.presence_heartbeat("a1").await.expect("heartbeat"));
    assert!(!s.presence_heartbeat("nobody").await.expect("unknown"));
    t.clock.advance(chrono::Duration::seconds(15));
    // a2's last heartbeat is 35 s old, a1's 15 s
    assert_eq!(s.presence_mark_stale(Duration::from_secs(30)).await.expect("stale"), vec!["a2".to_owned()]);
    s.presence_offline("a1", "shutdown").await.expect("offline");
    let all = s.presence().await.expect("list");
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|p| p.status == model::presence::PresenceStatus::Offline));
    assert_eq!(
        all.iter().find(|p| p.agent_id == "a1").map(|p| p.roles.clone()),
        Some(vec!["gateway".to_owned(), "research".to_owned()])
    );
    let types: Vec<String> = s
        .events(&EventFilter::default(), &PageRequest::first(100))
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["agent_online", "agent_online", "agent_heartbeat", "agent_offline", "agent_offline"]);
    assert!(!s.presence_heartbeat("a1").await.expect("offline heartbeat"), "an offline agent must re-register");
}

pub async fn release_returns_work_without_counting_an_attempt(t: TestStore) {
    let s = &t.store;
    let id = s.enqueue(job(1)).await.expect("enqueue").message.id;
    s.claim(&claim("w", 1)).await.expect("claim");
    assert_eq!(s.release("w", &[id]).await.expect("release"), vec![id]);
    assert_eq!(s.release("w", &[id]).await.expect("release again"), vec![]);
    let again = s.claim(&claim("w2", 1)).await.expect("claim");
    assert_eq!(again[0].attempts, 1);
    assert_eq!(s.extend_leases("w", &[id], LEASE).await.expect("not mine"), vec![]);
    t.clock.advance(chrono::Duration::seconds(20));
    assert_eq!(s.extend_leases("w2", &[id], LEASE).await.expect("mine"), vec![id]);
    assert_eq!(
        s.message(id).await.expect("m").lease_until,
        Some(test_support::epoch() + chrono::Duration::seconds(50))
    );
}

pub async fn circuits_and_queue_stats_are_visible_to_another_store(t: TestStore) {
    let other = t.reopen().await;
    t.store
        .record_circuit(&store::CircuitState {
            key: "mcp.call.figma.get_file.0".into(),
            agent_id: "a1".into(),
            state: "open".into(),
            open_until: Some(test_support::epoch() + chrono::Duration::seconds(20)),
            updated_at: test_support::epoch(),
        })
        .await
        .expect("record");
    let seen = other.circuits().await.expect("circuits");
    assert_eq!((seen.len(), seen[0].state.as_str()), (1, "open"));
    t.store.enqueue_batch((0..3).map(job).collect()).await.expect("enqueue");
    t.store.enqueue(job(9).with_run_at(test_support::epoch() + chrono::Duration::seconds(60))).await.expect("delayed");
    let claimed = t.store.claim(&claim("w", 2)).await.expect("claim");
    t.store.complete("w", vec![Completion::new(claimed[0].id, None)]).await.expect("complete");
    t.clock.advance(chrono::Duration::seconds(5));
    let stats = other.queue_stats().await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].ready, stats[0].delayed, stats[0].claimed, stats[0].oldest_ready_age_ms),
        (1, 1, 1, Some(5000))
    );
    assert_eq!((stats[0].done_last_minute, stats[0].failed_last_minute), (1, 0), "the last minute's throughput");
    // a minute later the completion no longer counts as throughput
    t.clock.advance(chrono::Duration::seconds(61));
    let later = other.queue_stats().await.expect("stats");
    assert_eq!((later[0].done_last_minute, later[0].claimed), (0, 1));
    other.close().await;
}

pub async fn prune_removes_only_old_finished_work(t: TestStore) {
    let s = &t.store;
    let ids: Vec<_> =
        s.enqueue_batch((0..3).map(job).collect()).await.expect("enqueue").into_iter().map(|e| e.message.id).collect();
    s.claim(&claim("w", 1)).await.expect("claim");
    s.complete("w", vec![Completion::new(ids[0], None)]).await.expect("complete");
    t.clock.advance(chrono::Duration::days(3));
    let removed = s.prune(Duration::from_secs(2 * 86_400)).await.expect("prune");
    assert!(removed >= 4, "1 message + its 3 events + scheduled events of the others, got {removed}");
    assert!(matches!(s.message(ids[0]).await, Err(Error::NotFound { .. })));
    assert_eq!(s.message(ids[1]).await.expect("queued stays").status, MessageStatus::Queued);
}

pub async fn enqueue_wakes_a_waiting_worker(t: TestStore) {
    let waiter_store = t.reopen().await;
    let notify = waiter_store.wakeups().queue("mcp", "gateway");
    let local = t.store.wakeups().queue("mcp", "gateway");
    let waiter = tokio::spawn(async move {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        tokio::time::timeout(Duration::from_secs(10), notified).await.is_ok()
    });
    let local_waiter = tokio::spawn(async move {
        let notified = local.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        tokio::time::timeout(Duration::from_secs(10), notified).await.is_ok()
    });
    // give the waiters (and, on PostgreSQL, the other store's LISTEN) time to register
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.store.enqueue(job(1)).await.expect("enqueue");
    assert!(local_waiter.await.expect("join"), "the enqueuing store wakes its own workers");
    if t.store.kind() == store::BackendKind::Postgres {
        assert!(waiter.await.expect("join"), "PostgreSQL wakes workers in other processes through NOTIFY");
    } else {
        // SQLite has one process: other processes fall back to polling.
        waiter.abort();
    }
    waiter_store.close().await;
}

/// PostgreSQL connections are killed while workers run: every message still completes exactly once.
pub async fn connection_killed_mid_run_loses_nothing(t: TestStore) {
    let total = 400;
    t.store.enqueue_batch((0..total).map(job).collect()).await.expect("enqueue");
    let killer_store = t.reopen().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let url = t.url.clone();
        tokio::spawn(async move {
            let database = url.rsplit('/').next().unwrap_or_default().to_owned();
            let mut kills = 0;
            let admin =
                Store::open(&test_support::postgres_admin_url(), store::StoreOptions::default()).await.expect("admin");
            drop(admin);
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&test_support::postgres_admin_url())
                .await
                .expect("admin conn");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && kills < 6 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name = 'cogo' AND state = 'active'",
                )
                .bind(&database)
                .fetch_one(&mut conn)
                .await
                .unwrap_or(0);
                kills += usize::from(n > 0);
            }
            kills
        })
    };
    let mut workers = Vec::new();
    for worker in 0..4 {
        let s = t.store.clone();
        workers.push(tokio::spawn(async move {
            let agent = format!("w{worker}");
            let mut done = 0usize;
            let mut idle = 0;
            while idle < 20 {
                let claimed = match s.claim(&claim(&agent, 5)).await {
                    Ok(c) => c,
                    Err(e) => {
                        assert!(e.is_transient() || matches!(e, Error::Database { .. }), "{e}");
                        continue;
                    }
                };
                if claimed.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                idle = 0;
                let completions: Vec<Completion> = claimed.iter().map(|m| Completion::new(m.id, None)).collect();
                if let Ok(outcomes) = s.complete(&agent, completions).await {
                    done += outcomes.iter().filter(|o| **o == Outcome::Done).count();
                }
            }
            done
        }));
    }
    let mut completed = 0;
    for w in workers {
        completed += w.await.expect("join");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _kills = killer.await.expect("join");
    // anything whose claim or completion was cut off is reclaimed after its lease
    t.clock.advance(chrono::Duration::seconds(31));
    let policy = RetryPolicy {
        base_delay: Duration::ZERO,
        jitter: model::retry::Jitter::None,
        max_attempts: 100,
        ..RetryPolicy::default()
    };
    let decide = move |m: &model::Message| {
        FailAction::from_decision(bus_decision(
            &policy,
            ErrorKind::LeaseExpired,
            m.attempts as u32,
            100,
            Duration::ZERO,
            0.0,
        ))
    };
    killer_store.reap_expired(1000, &decide).await.expect("reap");
    loop {
        let claimed = killer_store.claim(&claim("sweeper", 100)).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        let outcomes = killer_store
            .complete("sweeper", claimed.iter().map(|m| Completion::new(m.id, None)).collect())
            .await
            .expect("complete");
        completed += outcomes.iter().filter(|o| **o == Outcome::Done).count();
    }
    let done = killer_store
        .messages(
            &MessageFilter { status: Some(MessageStatus::Done), ..MessageFilter::default() },
            &PageRequest::first(1000),
        )
        .await
        .expect("done");
    assert_eq!(done.items.len(), total, "lost messages");
    assert_eq!(completed, total, "a completion was counted twice or lost");
    let succeeded = EventFilter { event_type: Some("mcp_call_succeeded".into()), ..EventFilter::default() };
    let events = killer_store.events(&succeeded, &PageRequest::first(1000)).await.expect("events");
    let unique: HashSet<_> = events.items.iter().filter_map(|e| e.message_id).collect();
    assert_eq!((events.items.len(), unique.len()), (total, total));
    killer_store.close().await;
}

pub async fn a_flooding_tenant_does_not_starve_another(t: TestStore) {
    let s = &t.store;
    s.enqueue_batch((0..300).map(|n| job(n).with_tenant("flood")).collect()).await.expect("flood");
    s.enqueue_batch((0..4).map(|n| job(1000 + n).with_tenant("quiet")).collect()).await.expect("quiet");
    let first = s.claim(&claim("w", 10)).await.expect("claim");
    let quiet = first.iter().filter(|m| m.tenant == "quiet").count();
    assert_eq!((first.len() >= 9, quiet), (true, 4), "the quiet tenant's 4 messages come in the first batch");
    // priority still orders within a tenant
    s.enqueue(job(2000).with_tenant("flood").with_priority(100)).await.expect("urgent");
    let next = s.claim(&claim("w", 1)).await.expect("claim");
    assert_eq!(next[0].payload["params"]["n"], 2000);
}

pub async fn follow_events_streams_new_events(t: TestStore) {
    use futures_util::StreamExt;
    let s = &t.store;
    s.enqueue(job(1)).await.expect("before");
    let cursor = s.latest_event_cursor().await.expect("cursor");
    let stream = s.follow_events(EventFilter::default(), cursor, Duration::from_millis(50));
    tokio::pin!(stream);
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.enqueue(job(2)).await.expect("after");
        })
    };
    let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("item")
        .expect("ok");
    writer.await.expect("join");
    assert_eq!(batch.len(), 1, "only events after the cursor");
    assert_eq!(batch[0].payload["priority"], 0);
    assert_eq!(batch[0].event_type, "mcp_call_scheduled");
}

/// A handler's detail fields reach the succeeded and failed events (the store's own fields win),
/// and the MCP summary is computed from them.
pub async fn handler_detail_reaches_events_and_the_mcp_summary(t: TestStore) {
    let s = &t.store;
    let first = s.enqueue(job(1)).await.expect("enqueue").message.id;
    let second = s.enqueue(job(2).with_max_attempts(1)).await.expect("enqueue").message.id;
    s.claim(&claim("w", 2)).await.expect("claim");
    let completion = Completion {
        detail: Some(json!({"toolset": "browser", "tool": "browser_navigate", "latency_ms": 12.5, "attempt": 99})),
        ..Completion::new(first, None)
    };
    assert_eq!(s.complete("w", vec![completion]).await.expect("complete"), vec![Outcome::Done]);
    let failure = Failure {
        id: second,
        kind: ErrorKind::ToolError,
        error: "the tool reported an error".into(),
        action: FailAction::DeadLetter { reason: "not_retryable".into() },
        detail: Some(
            json!({"toolset": "browser", "tool": "browser_navigate", "latency_ms": 40.0, "error_kind": "tool_error"}),
        ),
    };
    assert_eq!(s.fail("w", vec![failure]).await.expect("fail"), vec![Outcome::DeadLettered]);
    let events = s.events(&EventFilter::default(), &PageRequest::first(20)).await.expect("events");
    let succeeded = events.items.iter().find(|e| e.event_type == "mcp_call_succeeded").expect("succeeded");
    assert_eq!(
        (succeeded.payload["tool"].as_str(), succeeded.payload["latency_ms"].as_f64()),
        (Some("browser_navigate"), Some(12.5))
    );
    assert_eq!(succeeded.payload["attempt"], 1, "the store's own fields win");
    let failed = events.items.iter().find(|e| e.event_type == "mcp_call_failed").expect("failed");
    assert_eq!(
        (failed.payload["toolset"].as_str(), failed.payload["kind"].as_str()),
        (Some("browser"), Some("tool_error"))
    );
    let summary = s.mcp_summary(test_support::epoch() - chrono::Duration::hours(1)).await.expect("summary");
    assert_eq!((summary.total.calls, summary.total.fails), (2, 1));
    let tool = &summary.detail["browser.browser_navigate"];
    assert_eq!((tool.calls, tool.fails, tool.p50, tool.p95), (2, 1, Some(40.0), Some(40.0)));
    assert_eq!(tool.fails_by_kind.get("tool_error"), Some(&1));
    // the summary keeps its records between calls and reads only what is new: a third call shows
    let third = s.enqueue(job(3)).await.expect("enqueue").message.id;
    s.claim(&claim("w", 1)).await.expect("claim");
    let completion = Completion {
        detail: Some(json!({"toolset": "browser", "tool": "browser_back", "latency_ms": 5.0})),
        ..Completion::new(third, None)
    };
    assert_eq!(s.complete("w", vec![completion]).await.expect("complete"), vec![Outcome::Done]);
    let grown = s.mcp_summary(test_support::epoch() - chrono::Duration::hours(1)).await.expect("summary");
    assert_eq!((grown.total.calls, grown.total.fails), (3, 1), "{grown:?}");
    assert_eq!(grown.detail["browser.browser_back"].calls, 1);
    assert_eq!(grown.detail["browser.browser_navigate"].calls, 2, "nothing counted twice");
    let again = s.mcp_summary(test_support::epoch() - chrono::Duration::hours(1)).await.expect("summary");
    assert_eq!(again, grown, "a call with nothing new changes nothing");
    // a window that starts later sees nothing
    let later = s.mcp_summary(test_support::epoch() + chrono::Duration::hours(1)).await.expect("summary");
    assert_eq!(later.total.calls, 0);
    // over time: every bucket is there, the calls (recorded now) in the last one
    let since = test_support::epoch() - chrono::Duration::minutes(10);
    let series = s.mcp_series(since, None, 10).await.expect("series");
    assert_eq!((series.buckets.len(), series.bucket_ms), (10, 60_000));
    assert_eq!(series.buckets.iter().map(|b| b.calls).sum::<u64>(), 3);
    let last = series.buckets.last().expect("last");
    assert_eq!((last.calls, last.fails, last.p95), (3, 1, Some(40.0)));
    assert_eq!(series.buckets[0].start, since);
    let one = s.mcp_series(since, Some("browser.other_tool"), 10).await.expect("series");
    assert_eq!(one.buckets.iter().map(|b| b.calls).sum::<u64>(), 0);
}

/// Sealed secrets are stored opaque, replaced by name, listed by name and removed.
pub async fn sealed_secrets_are_stored_replaced_and_removed(t: TestStore) {
    let s = &t.store;
    let sealed = |name: &str, byte: u8| store::SealedSecret {
        name: name.into(),
        key_id: "k1".into(),
        nonce: vec![byte; 24],
        ciphertext: vec![byte, 0, 255, byte],
        updated_at: test_support::epoch(),
    };
    s.put_secret(sealed("B_TOKEN", 1)).await.expect("put");
    s.put_secret(sealed("A_TOKEN", 2)).await.expect("put");
    assert_eq!(s.secret("B_TOKEN").await.expect("get"), Some(sealed("B_TOKEN", 1)));
    s.put_secret(sealed("B_TOKEN", 3)).await.expect("replace");
    assert_eq!(s.secret("B_TOKEN").await.expect("get"), Some(sealed("B_TOKEN", 3)));
    let names: Vec<String> = s.secrets().await.expect("list").into_iter().map(|x| x.name).collect();
    assert_eq!(names, ["A_TOKEN", "B_TOKEN"]);
    assert!(s.delete_secret("A_TOKEN").await.expect("delete"));
    assert!(!s.delete_secret("A_TOKEN").await.expect("delete again"));
    assert_eq!(s.secret("A_TOKEN").await.expect("get"), None);
    assert!(!format!("{:?}", sealed("X", 9)).contains("ciphertext"), "Debug shows no sealed bytes");
}

/// API tokens are stored by id with their hash, listed, and revoked once.
pub async fn api_tokens_are_stored_listed_and_revoked_once(t: TestStore) {
    let s = &t.store;
    let token = |id: &str, tenant: &str| store::ApiToken {
        id: id.into(),
        tenant: tenant.into(),
        name: "ci".into(),
        hash: vec![7; 32],
        created_at: test_support::epoch(),
        revoked_at: None,
        roles: None,
    };
    s.create_api_token(token("b2", "beta")).await.expect("create");
    s.create_api_token(token("a1", "acme")).await.expect("create");
    assert!(s.create_api_token(token("a1", "acme")).await.is_err(), "ids are unique");
    assert_eq!(s.api_token("a1").await.expect("get"), Some(token("a1", "acme")));
    let ids: Vec<String> = s.api_tokens().await.expect("list").into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["a1", "b2"]);
    assert!(s.revoke_api_token("a1").await.expect("revoke"));
    assert!(!s.revoke_api_token("a1").await.expect("revoke again"));
    assert!(!s.revoke_api_token("zz").await.expect("revoke unknown"));
    assert_eq!(s.api_token("a1").await.expect("get").and_then(|t| t.revoked_at), Some(test_support::epoch()));
    assert!(!format!("{:?}", token("x", "y")).contains("hash"), "Debug shows no hash");
    // an edge worker token keeps the roles it names
    let edge = store::ApiToken { roles: Some(vec!["noop".into(), "gateway".into()]), ..token("e1", "") };
    s.create_api_token(edge.clone()).await.expect("create edge token");
    assert_eq!(s.api_token("e1").await.expect("get"), Some(edge));
}

pub async fn goals_are_durable_versioned_and_follow_their_lifecycle(t: TestStore) {
    use model::goal::{GoalStatus, GoalUpdate, NewGoal};
    let store = &t.store;
    let created = store
        .create_goal(NewGoal { tenant: "acme".into(), goal: "report the title".into(), state: json!({"budget": 3}) })
        .await
        .expect("create");
    assert_eq!((created.status, created.version), (GoalStatus::Queued, 1));
    assert!(model::trace::is_valid_trace_id(&created.trace_id), "{}", created.trace_id);
    let read = store.goal(&created.id).await.expect("read");
    assert_eq!(read, created);

    let update =
        |version, status, state| GoalUpdate { expected_version: version, status, state, answer: None, error: None };
    let running =
        store.update_goal(&created.id, update(1, GoalStatus::Running, json!({"steps": ["s1"]}))).await.expect("start");
    assert_eq!((running.status, running.version), (GoalStatus::Running, 2));
    assert_eq!(running.state, json!({"steps": ["s1"]}));
    // a writer holding an old version is refused and nothing is written
    let stale = store.update_goal(&created.id, update(1, GoalStatus::Running, json!({}))).await.expect_err("stale");
    assert!(matches!(stale, store::Error::GoalConflict { .. }) && stale.to_string().contains("version 2"), "{stale}");
    // the lifecycle: running cannot go back to queued
    let back = store.update_goal(&created.id, update(2, GoalStatus::Queued, json!({}))).await.expect_err("back");
    assert!(back.to_string().contains("cannot become queued"), "{back}");
    let mut done = update(2, GoalStatus::Succeeded, json!({"steps": ["s1"], "done": true}));
    done.answer = Some("The title is X".into());
    let done = store.update_goal(&created.id, done).await.expect("finish");
    assert_eq!(done.answer.as_deref(), Some("The title is X"));
    let after = store.update_goal(&created.id, update(3, GoalStatus::Failed, json!({}))).await.expect_err("final");
    assert!(matches!(after, store::Error::GoalConflict { .. }), "{after}");
    assert_eq!(store.goal(&created.id).await.expect("read").version, 3);

    // listing: newest first, filters, paging
    let other = store
        .create_goal(NewGoal { tenant: "other".into(), goal: "second".into(), state: json!({}) })
        .await
        .expect("create");
    let third = store
        .create_goal(NewGoal { tenant: "acme".into(), goal: "third".into(), state: json!({}) })
        .await
        .expect("create");
    let acme = store
        .goals(&store::goals::GoalFilter { tenant: Some("acme".into()), limit: 10, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(acme.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(), [third.id.as_str(), created.id.as_str()]);
    let open = store
        .goals(&store::goals::GoalFilter {
            statuses: vec![GoalStatus::Queued, GoalStatus::Running],
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("open");
    assert_eq!(open.len(), 2, "{open:?}");
    let page = store
        .goals(&store::goals::GoalFilter { before: Some(third.id.clone()), limit: 1, ..Default::default() })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(), [other.id.as_str()]);
    let by_trace = store
        .goals(&store::goals::GoalFilter { trace_id: Some(other.trace_id.clone()), limit: 5, ..Default::default() })
        .await
        .expect("by trace");
    assert_eq!(by_trace.len(), 1);

    // bad input names the problem
    let empty = store
        .create_goal(NewGoal { tenant: "acme".into(), goal: " ".into(), state: json!({}) })
        .await
        .expect_err("empty");
    assert!(empty.to_string().contains("goal: must not be empty"), "{empty}");
    let missing = store.goal("nope").await.expect_err("missing");
    assert!(matches!(missing, store::Error::GoalNotFound { .. }), "{missing}");
    let huge = json!({"blob": "x".repeat(store::goals::MAX_GOAL_STATE_BYTES)});
    let too_big = store.update_goal(&third.id, update(1, GoalStatus::Running, huge)).await.expect_err("too big");
    assert!(too_big.to_string().contains("over the limit"), "{too_big}");
    assert_eq!(store.goal(&third.id).await.expect("read").version, 1);
}

pub async fn integrity_check_finds_torn_message_states(t: TestStore) {
    let s = &t.store;
    assert_eq!(s.integrity_check().await.expect("check"), Vec::<String>::new(), "a fresh store is healthy");
    let first = s.enqueue(job(1)).await.expect("enqueue").message.id;
    s.enqueue(job(2)).await.expect("enqueue");
    s.claim(&claim("w1", 1)).await.expect("claim");
    s.complete("w1", vec![Completion::new(first, None)]).await.expect("complete");
    s.claim(&claim("w1", 1)).await.expect("claim");
    assert_eq!(s.integrity_check().await.expect("check"), Vec::<String>::new(), "every lifecycle step is consistent");
    // what a torn write would leave behind: a claim without its holder
    let sql = "UPDATE agent_messages SET claimed_by = NULL WHERE status = 'claimed'";
    if t.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&t.url).await.expect("second connection");
        sqlx::query(sql).execute(&pool).await.expect("break a claim");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&t.url).await.expect("second connection");
        sqlx::query(sql).execute(&pool).await.expect("break a claim");
        pool.close().await;
    }
    let problems = s.integrity_check().await.expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("1 messages whose status disagrees"), "{problems:?}");
}
