//! The worker runtime against real stores (SQLite and PostgreSQL).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::retry::{Jitter, RetryPolicy};
use model::{ErrorKind, Intent, Message, MessageStatus, NewMessage};
use serde_json::json;
use store::{MessageFilter, PageRequest, Store};
use test_support::TestStore;
use tokio::sync::watch;
use worker::{Handler, HandlerError, HandlerOutput, NoopHandler, RetryResolver, Runtime, RuntimeConfig};

fn instant_retry() -> RetryResolver {
    Arc::new(|_: &Message| RetryPolicy { base_delay: Duration::ZERO, jitter: Jitter::None, ..RetryPolicy::default() })
}

fn job(n: usize) -> NewMessage {
    NewMessage::new("test", "work", Intent::new("noop").expect("intent"), json!({ "n": n }))
}

async fn count(store: &Store, status: MessageStatus) -> usize {
    let filter = MessageFilter { status: Some(status), ..MessageFilter::default() };
    store.messages(&filter, &PageRequest::first(1000)).await.expect("list").items.len()
}

async fn wait_until(store: &Store, status: MessageStatus, n: usize) {
    for _ in 0..500 {
        if count(store, status).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {n} messages to be {status}");
}

fn config(concurrency: usize) -> RuntimeConfig {
    RuntimeConfig {
        concurrency,
        batch: 8,
        poll_interval: Duration::from_millis(200),
        ..RuntimeConfig::new("test", "work", "agent-1")
    }
}

async fn drains_all_messages(t: TestStore) {
    let (stop, stopped) = watch::channel(false);
    let runtime = Runtime::new(t.store.clone(), config(4), Arc::new(NoopHandler), instant_retry());
    let stats = runtime.stats();
    let task = tokio::spawn(runtime.run(stopped));
    t.store.enqueue_batch((0..120).map(job).collect()).await.expect("enqueue");
    wait_until(&t.store, MessageStatus::Done, 120).await;
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 120);
    // idle workers wait on wake-ups: a burst of 3 enqueues does not need polling
    assert!(stats.claim_queries.load(Ordering::Relaxed) < 120, "claims were batched");
}

async fn failing_handler_retries_then_dead_letters(t: TestStore) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handler = move |_m: Message| -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        seen.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Err(HandlerError::new(ErrorKind::Transport, "upstream refused the connection")) })
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(Runtime::new(t.store.clone(), config(2), Arc::new(handler), instant_retry()).run(stopped));
    let id = t.store.enqueue(job(1).with_max_attempts(3)).await.expect("enqueue").message.id;
    wait_until(&t.store, MessageStatus::Failed, 1).await;
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let message = t.store.message(id).await.expect("message");
    assert_eq!((message.attempts, message.last_error.as_deref()), (3, Some("upstream refused the connection")));
    // a kind the policy does not retry goes to the dead-letter queue at once
    let handler = |_m: Message| -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        Box::pin(async { Err(HandlerError::new(ErrorKind::InvalidInput, "params.url is missing")) })
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(Runtime::new(t.store.clone(), config(2), Arc::new(handler), instant_retry()).run(stopped));
    let id = t.store.enqueue(job(2).with_max_attempts(3)).await.expect("enqueue").message.id;
    wait_until(&t.store, MessageStatus::Failed, 2).await;
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(t.store.message(id).await.expect("message").attempts, 1);
}

async fn shutdown_releases_unfinished_work(t: TestStore) {
    let handler = |_m: Message| -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(HandlerOutput::default())
        })
    };
    let (stop, stopped) = watch::channel(false);
    let cfg = RuntimeConfig { shutdown_deadline: Duration::from_millis(200), ..config(2) };
    let task = tokio::spawn(Runtime::new(t.store.clone(), cfg, Arc::new(handler), instant_retry()).run(stopped));
    t.store.enqueue_batch((0..3).map(job).collect()).await.expect("enqueue");
    // the whole batch is claimed: two run, one waits in the buffer for a free slot
    wait_until(&t.store, MessageStatus::Claimed, 3).await;
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops within the deadline").expect("join");
    assert_eq!(count(&t.store, MessageStatus::Queued).await, 3, "released work is queued again");
    let all = t.store.messages(&MessageFilter::default(), &PageRequest::first(10)).await.expect("list");
    assert!(all.items.iter().all(|m| m.attempts == 0), "a release is not an attempt");
}

async fn a_retry_waits_as_long_as_the_handler_says(t: TestStore) {
    // an open breaker: failing fast again before it lets a probe through would only spend attempts
    let handler = |_m: Message| -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        Box::pin(async {
            Err(HandlerError::new(ErrorKind::Transport, "circuit is open").with_retry_after(Duration::from_secs(60)))
        })
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(Runtime::new(t.store.clone(), config(2), Arc::new(handler), instant_retry()).run(stopped));
    let id = t.store.enqueue(job(1).with_max_attempts(3)).await.expect("enqueue").message.id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        let message = t.store.message(id).await.expect("message");
        if message.last_error.is_some() && message.status == MessageStatus::Queued {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failure was not recorded: {message:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.send(true).expect("stop");
    task.await.expect("join");
    assert_eq!(message.attempts, 1, "one attempt, not a burst of fast failures");
    assert!(
        message.run_at >= test_support::epoch() + chrono::Duration::seconds(60),
        "the retry waits for the handler's 60 s, not the policy's zero delay: {}",
        message.run_at
    );
}

macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(test_support::sqlite().await).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(test_support::postgres().await).await } )* }
    };
}

both!(
    drains_all_messages,
    failing_handler_retries_then_dead_letters,
    shutdown_releases_unfinished_work,
    a_retry_waits_as_long_as_the_handler_says
);

#[test]
fn policy_keys_name_the_tool() {
    let mut message = NewMessage::new(
        "mcp",
        "gateway",
        Intent::new("mcp_call").expect("intent"),
        json!({"toolset": "browser", "tool": "browser_navigate"}),
    );
    let stored = |m: &NewMessage| {
        m.to_queued(model::MessageId::new(), test_support::epoch(), "4bf92f3577b34da6a3ce929d0e0e4736".into())
    };
    assert_eq!(worker::policy_key(&stored(&message)), "mcp.call.browser.browser_navigate");
    message.intent = Intent::new("research").expect("intent");
    assert_eq!(worker::policy_key(&stored(&message)), "bus.research");
}

#[allow(dead_code)]
fn handler_is_object_safe(_: &dyn Handler) {}
