//! The resilience runtime: breakers across processes, hot reload, and the allocation-free hot path.
#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use model::ErrorKind;
use model::breaker::Outcome;
use model::config::ConfigFile;
use resilience::{Breakers, Policies, ReloadOutcome};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn closed_path_allocates_nothing() {
    let policies = Arc::new(Policies::seed());
    let breakers = Breakers::new(policies.clone(), None);
    let key = "mcp.call.browser.browser_navigate.0";
    let policy_key = "mcp.call.browser.browser_navigate";
    // first use creates the breaker and fills the cache
    let permit = breakers.acquire_at(key, 0).expect("closed");
    breakers.record_at(key, permit, Outcome::Success, 0);
    let _ = policies.retry(policy_key);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..1000u64 {
        let permit = breakers.acquire_at(key, i).expect("closed");
        breakers.record_at(key, permit, Outcome::Success, i);
        std::hint::black_box(policies.retry(policy_key));
    }
    // other tests in this binary may allocate concurrently; this one runs alone in its process
    // under nextest, and the loop itself must add nothing
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0);
}

#[test]
fn open_breakers_fail_fast_with_the_key_and_the_time() {
    let breakers = Breakers::new(Arc::new(Policies::seed()), None);
    let key = "mcp.call.figma.get_file.0"; // seed: mcp.call.figma.* opens after 3 of 3 failures for 20 s
    for t in 0..3 {
        let permit = breakers.acquire_at(key, t).expect("closed");
        breakers.record_at(key, permit, Outcome::Failure(ErrorKind::ToolError), t);
    }
    let open = breakers.acquire_at(key, 1_000).expect_err("open");
    assert_eq!((open.key.as_str(), open.retry_in_ms), (key, 19_002));
    let text = open.to_string();
    assert!(text.starts_with("circuit mcp.call.figma.get_file.0 is open: calls fail fast until"), "{text}");
    // after the open time a probe goes through and its success closes the breaker
    let probe = breakers.acquire_at(key, 20_002).expect("probe");
    breakers.record_at(key, probe, Outcome::Success, 20_003);
    assert!(breakers.acquire_at(key, 20_004).is_ok());
    assert_eq!(breakers.states()[0].1, model::breaker::BreakerState::Closed);
}

async fn open_in_one_process_shows_in_the_other(t: test_support::TestStore) {
    let other = t.reopen().await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(resilience::record_transitions(t.store.clone(), "agent-a".into(), rx));
    let breakers = Breakers::new(Arc::new(Policies::seed()), Some(tx));
    let key = "mcp.call.figma.get_document_info.0";
    for t in 0..3 {
        let permit = breakers.acquire_at(key, t).expect("closed");
        breakers.record_at(key, permit, Outcome::Failure(ErrorKind::Timeout), t);
    }
    drop(breakers); // closes the channel: the recorder finishes what it has
    recorder.await.expect("recorder");
    let summary = resilience::summarize(&other.circuits().await.expect("circuits"));
    assert_eq!(summary.open_count, 1);
    assert_eq!(summary.open_by_key[key].agents, vec!["agent-a".to_owned()]);
    let json = serde_json::to_value(&summary).expect("json");
    assert!(json["openByKey"][key]["openUntil"].is_string(), "{json}");
    let events = other
        .events(
            &store::EventFilter { event_type: Some("circuit_opened".into()), ..Default::default() },
            &store::PageRequest::first(10),
        )
        .await
        .expect("events");
    assert_eq!((events.items.len(), events.items[0].reason.as_deref()), (1, Some(key)));
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_open_in_one_process_shows_in_the_other() {
    open_in_one_process_shows_in_the_other(test_support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_open_in_one_process_shows_in_the_other() {
    open_in_one_process_shows_in_the_other(test_support::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_files_reload_and_bad_edits_are_rejected() {
    let dir = tempfile::tempdir().expect("dir");
    for file in ConfigFile::ALL {
        std::fs::write(dir.path().join(file.file_name()), file.seed()).expect("write");
    }
    let policies = Arc::new(Policies::seed());
    let breakers = Breakers::new(policies.clone(), None);
    assert_eq!(policies.retry("mcp.call.browser.browser_navigate").max_attempts, 4);
    let (_watcher, mut outcomes) =
        resilience::watch_policies(policies.clone(), dir.path().to_path_buf()).expect("watch");
    // a bad edit is rejected and the last good policy stays
    std::fs::write(dir.path().join("retry_policy.json"), r#"{"default": {"max_attempts": 0}}"#).expect("write");
    match next(&mut outcomes).await {
        ReloadOutcome::Rejected(ConfigFile::Retry, errors) => {
            assert!(errors[0].contains("default.max_attempts: 0 is out of range"), "{errors:?}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(policies.retry("mcp.call.browser.browser_navigate").max_attempts, 4);
    // a good edit applies without a restart
    let edited = ConfigFile::Retry.seed().replace("\"max_attempts\": 4", "\"max_attempts\": 7");
    std::fs::write(dir.path().join("retry_policy.json"), edited).expect("write");
    loop {
        if next(&mut outcomes).await == ReloadOutcome::Applied(ConfigFile::Retry)
            && policies.retry("mcp.call.browser.browser_navigate").max_attempts == 7
        {
            break;
        }
    }
    // breakers pick up a new breaker file, keeping their state
    let key = "mcp.call.browser.get_title.0";
    let _ = breakers.acquire_at(key, 0);
    let edited = ConfigFile::Breaker.seed().replace("\"open_ms\": 10000", "\"open_ms\": 12345");
    std::fs::write(dir.path().join("circuit_breaker.json"), edited).expect("write");
    loop {
        if next(&mut outcomes).await == ReloadOutcome::Applied(ConfigFile::Breaker)
            && policies.breaker(key).open_ms == 12345
        {
            break;
        }
    }
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ReloadOutcome>) -> ReloadOutcome {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("reload within 10 s").expect("outcome")
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum CallFailure {
    #[error("connection refused")]
    Refused,
    #[error("tool said no")]
    Tool,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl resilience::TimeoutError for CallFailure {
    fn timeout(after: Duration) -> Self {
        CallFailure::Timeout(after)
    }
}

fn retry_file(text: &str) -> Arc<Policies> {
    let retry = model::config::parse::<model::config::RetryFile>("retry_policy.json", text).expect("retry");
    let breaker = model::config::parse::<model::config::BreakerFile>(
        "circuit_breaker.json",
        r#"{"default": {"min_requests": 50, "window_size": 50}}"#,
    )
    .expect("breaker");
    Arc::new(Policies::new(&retry, &breaker))
}

/// Time is paused: the backoff sleeps advance tokio's clock instantly, nothing really waits.
#[tokio::test(start_paused = true)]
async fn execute_retries_transient_failures_with_backoff() {
    let policies = retry_file(
        r#"{"default": {"max_attempts": 4, "base_delay_ms": 100, "factor": 2, "jitter": "none", "timeout_ms": 1000}}"#,
    );
    let breakers = Breakers::new(policies.clone(), None);
    let started = tokio::time::Instant::now();
    let result = resilience::execute(&policies, &breakers, "mcp.call.x.y", "mcp.call.x.y.0", |n| async move {
        if n < 3 {
            Err(resilience::AttemptError { kind: ErrorKind::Transport, error: CallFailure::Refused })
        } else {
            Ok(n)
        }
    })
    .await;
    assert_eq!(result.expect("third attempt succeeds"), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(300), "100 ms then 200 ms of backoff");
}

#[tokio::test(start_paused = true)]
async fn execute_gives_up_on_non_retryable_kinds_and_times_out_slow_attempts() {
    let policies =
        retry_file(r#"{"default": {"max_attempts": 3, "base_delay_ms": 10, "jitter": "none", "timeout_ms": 500}}"#);
    let breakers = Breakers::new(policies.clone(), None);
    let err = resilience::execute(&policies, &breakers, "k.a", "k.a.0", |_| async {
        Err::<(), _>(resilience::AttemptError { kind: ErrorKind::ToolError, error: CallFailure::Tool })
    })
    .await
    .expect_err("tool errors are not retried by default");
    assert_eq!(err.to_string(), "k.a: gave up after 1 attempt(s) (not_retryable): tool_error");
    let err = resilience::execute(&policies, &breakers, "k.b", "k.b.0", |_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), resilience::AttemptError<CallFailure>>(())
    })
    .await
    .expect_err("slow attempts time out");
    match err {
        resilience::CallError::Failed { attempts, kind, source, .. } => {
            assert_eq!(
                (attempts, kind, source),
                (3, ErrorKind::Timeout, CallFailure::Timeout(Duration::from_millis(500)))
            );
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn execute_fails_fast_when_the_breaker_is_open() {
    let policies = Arc::new(Policies::seed());
    let breakers = Breakers::new(policies.clone(), None);
    let key = "mcp.call.figma.get_file";
    for _ in 0..3 {
        let _ = resilience::execute(&policies, &breakers, key, "mcp.call.figma.get_file.0", |_| async {
            Err::<(), _>(resilience::AttemptError { kind: ErrorKind::ToolError, error: CallFailure::Tool })
        })
        .await;
    }
    let calls = AtomicUsize::new(0);
    let err = resilience::execute(&policies, &breakers, key, "mcp.call.figma.get_file.0", |_| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok::<(), resilience::AttemptError<CallFailure>>(()) }
    })
    .await
    .expect_err("open");
    assert!(matches!(err, resilience::CallError::Open(_)), "{err}");
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no call reaches an open breaker");
}

/// A breaker opened in another OS process shows up in this process's summary (PostgreSQL and SQLite).
async fn open_in_another_os_process(t: test_support::TestStore) {
    let key = "mcp.call.browser.get_title.0";
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_resilience-probe"))
        .args([t.url.as_str(), key, "other-process"])
        .status()
        .expect("running the probe process");
    assert!(status.success());
    let summary = resilience::summarize(&t.store.circuits().await.expect("circuits"));
    assert_eq!(summary.open_count, 1);
    assert_eq!(summary.open_by_key[key].agents, vec!["other-process".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_open_in_another_os_process() {
    open_in_another_os_process(test_support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_open_in_another_os_process() {
    open_in_another_os_process(test_support::postgres().await).await;
}
