//! One queue's runtime: the claim loop, handler tasks, the lease heartbeat and the batched completer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use model::{Message, MessageId};
use store::{ClaimRequest, Completion, FailAction, Failure, Outcome, Store};

use crate::queue::{Queue, QueueError};
use crate::{Handler, HandlerError, HandlerOutput, RetryResolver};

/// Settings of one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Service served.
    pub service: String,
    /// Role served.
    pub role: String,
    /// Shards served besides the unsharded queue.
    pub shards: Vec<String>,
    /// This process's agent id.
    pub agent_id: String,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Most messages claimed in one statement. Each claim asks for what the handlers finish in
    /// about `CLAIM_AHEAD` at their recent rate, at least the free handler slots, at most this: a
    /// deep queue of fast jobs is claimed in large batches, slow jobs are not hoarded by one process.
    pub batch: u32,
    /// Lease length; heartbeats extend it every third of it.
    pub lease: Duration,
    /// Fallback poll when no wake-up comes.
    pub poll_interval: Duration,
    /// Claim loops running side by side (a claim overlaps the previous batch's completion).
    pub claimers: usize,
    /// How long in-flight work may take to finish on shutdown before it is released.
    pub shutdown_deadline: Duration,
}

impl RuntimeConfig {
    /// Defaults for `service/role` run by `agent_id`.
    pub fn new(service: &str, role: &str, agent_id: &str) -> Self {
        Self {
            service: service.to_owned(),
            role: role.to_owned(),
            shards: Vec::new(),
            agent_id: agent_id.to_owned(),
            concurrency: 16,
            batch: 500,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            claimers: 2,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

/// Counters of one runtime.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Messages claimed.
    pub claimed: AtomicU64,
    /// Messages completed.
    pub succeeded: AtomicU64,
    /// Attempts failed.
    pub failed: AtomicU64,
    /// Results refused because the lease was lost.
    pub lease_lost: AtomicU64,
    /// Claim statements issued.
    pub claim_queries: AtomicU64,
    /// Handler calls finished (either way).
    pub handled: AtomicU64,
}

/// How much work, at the handlers' recent rate, one claim loop asks for at a time.
const CLAIM_AHEAD: Duration = Duration::from_millis(50);

/// The size of the next claim: what the handlers finish in `CLAIM_AHEAD` at their recent rate,
/// at least the free handler slots, at most `max`.
#[derive(Debug)]
struct ClaimSizer {
    max: u32,
    last: std::time::Instant,
    last_handled: u64,
    /// Messages a second, smoothed over the last claims.
    rate: f64,
}

impl ClaimSizer {
    fn new(max: u32) -> Self {
        Self { max: max.max(1), last: std::time::Instant::now(), last_handled: 0, rate: 0.0 }
    }

    /// The next claim's size, given the handlers' total so far and the free slots now.
    fn next(&mut self, handled: u64, free: usize) -> u32 {
        self.next_at(std::time::Instant::now(), handled, free)
    }

    fn next_at(&mut self, now: std::time::Instant, handled: u64, free: usize) -> u32 {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        if elapsed > 0.0 {
            let recent = handled.saturating_sub(self.last_handled) as f64 / elapsed;
            self.rate = (self.rate + recent) / 2.0;
        }
        self.last = now;
        self.last_handled = handled;
        let ahead = (self.rate * CLAIM_AHEAD.as_secs_f64()).ceil().min(f64::from(self.max)) as u32;
        ahead.max(u32::try_from(free).unwrap_or(u32::MAX)).clamp(1, self.max)
    }
}

enum Finished {
    Done(MessageId, HandlerOutput),
    Failed(Box<Message>, HandlerError),
}

/// A running queue consumer.
pub struct Runtime {
    queue: Arc<dyn Queue>,
    config: RuntimeConfig,
    handler: Arc<dyn Handler>,
    retry: RetryResolver,
    stats: Arc<RuntimeStats>,
}

impl Runtime {
    /// A runtime on `store`; nothing runs until [`Runtime::run`].
    pub fn new(store: Store, config: RuntimeConfig, handler: Arc<dyn Handler>, retry: RetryResolver) -> Self {
        Self::on_queue(Arc::new(store), config, handler, retry)
    }

    /// A runtime on any queue (an edge worker's connection to a server); nothing runs until
    /// [`Runtime::run`].
    pub fn on_queue(
        queue: Arc<dyn Queue>,
        config: RuntimeConfig,
        handler: Arc<dyn Handler>,
        retry: RetryResolver,
    ) -> Self {
        Self { queue, config, handler, retry, stats: Arc::new(RuntimeStats::default()) }
    }

    /// The counters, shared.
    pub fn stats(&self) -> Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` turns true, then drains gracefully.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let config = self.config.clone();
        // the queue's counters exist from the start at 0, so `increase()` sees their first step
        let labels = [("service", config.service.clone()), ("role", config.role.clone())];
        for name in [
            model::metrics::BUS_CLAIMED_TOTAL,
            model::metrics::BUS_SUCCEEDED_TOTAL,
            model::metrics::BUS_FAILED_TOTAL,
            model::metrics::BUS_DEAD_LETTERED_TOTAL,
        ] {
            metrics::counter!(name, &labels).increment(0);
        }
        let in_flight: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let (finished_tx, finished_rx) = mpsc::unbounded_channel::<Finished>();
        let completer = tokio::spawn(completer(
            self.queue.clone(),
            config.clone(),
            finished_rx,
            in_flight.clone(),
            self.retry.clone(),
            self.stats.clone(),
        ));
        let (heartbeat_stop, heartbeat_stop_rx) = watch::channel(false);
        let heartbeat =
            tokio::spawn(heartbeat(self.queue.clone(), config.clone(), in_flight.clone(), heartbeat_stop_rx));
        tracing::info!(service = %config.service, role = %config.role, agent_id = %config.agent_id, concurrency = config.concurrency, claimers = config.claimers, "worker runtime started");
        let context = Arc::new(LoopContext {
            queue: self.queue.clone(),
            config: config.clone(),
            handler: self.handler.clone(),
            stats: self.stats.clone(),
            in_flight: in_flight.clone(),
            permits: permits.clone(),
            finished: finished_tx,
        });
        let loops: Vec<_> =
            (0..config.claimers.max(1)).map(|_| tokio::spawn(claim_loop(context.clone(), shutdown.clone()))).collect();
        let mut handler_sets = Vec::new();
        for claim_loop in loops {
            if let Ok(set) = claim_loop.await {
                handler_sets.push(set);
            }
        }
        // graceful stop: wait for handlers up to the deadline, then release the rest
        let all = config.concurrency.max(1) as u32;
        let drained = tokio::time::timeout(config.shutdown_deadline, permits.acquire_many(all)).await.is_ok();
        // handlers still running past the deadline are stopped; their messages are released below
        for set in &mut handler_sets {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        drop(context);
        let _ = completer.await;
        let _ = heartbeat_stop.send(true);
        let _ = heartbeat.await;
        let leftover: Vec<MessageId> = lock(&in_flight).drain().collect();
        if !leftover.is_empty() {
            match self.queue.release(&config.agent_id, &leftover).await {
                Ok(released) => tracing::warn!(count = released.len(), "released unfinished messages at shutdown"),
                Err(err) => {
                    tracing::error!(error = %err, "could not release messages at shutdown; their leases will expire")
                }
            }
        }
        tracing::info!(service = %config.service, role = %config.role, drained, "worker runtime stopped");
    }
}

/// What the claim loops of one runtime share.
struct LoopContext {
    queue: Arc<dyn Queue>,
    config: RuntimeConfig,
    handler: Arc<dyn Handler>,
    stats: Arc<RuntimeStats>,
    in_flight: Arc<Mutex<HashSet<MessageId>>>,
    permits: Arc<Semaphore>,
    finished: mpsc::UnboundedSender<Finished>,
}

/// One claim loop: claims a batch when its buffer is empty and hands messages to free handler
/// slots. Returns its handler tasks when shutdown begins.
async fn claim_loop(context: Arc<LoopContext>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinSet<()> {
    let config = &context.config;
    let labels = [("service", config.service.clone()), ("role", config.role.clone())];
    let wake = context.queue.wakeup(&config.service, &config.role);
    let shard_refs: Vec<&str> = config.shards.iter().map(String::as_str).collect();
    let mut backoff = Duration::from_millis(50);
    let mut sizer = ClaimSizer::new(config.batch);
    let mut handlers = tokio::task::JoinSet::new();
    // Claimed messages wait here for a free handler slot: claiming a whole batch at once keeps
    // claims few even when handlers are fewer than the batch (their leases are heartbeated).
    let mut buffer: std::collections::VecDeque<Message> = std::collections::VecDeque::new();
    while !*shutdown.borrow() {
        while handlers.try_join_next().is_some() {}
        if buffer.is_empty() {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let size = sizer.next(context.stats.handled.load(Ordering::Relaxed), context.permits.available_permits());
            let request = ClaimRequest::new(&config.service, &config.role, &config.agent_id, size, config.lease)
                .with_shards(&shard_refs);
            context.stats.claim_queries.fetch_add(1, Ordering::Relaxed);
            let claimed = match context.queue.claim(&request).await {
                Ok(claimed) => {
                    backoff = Duration::from_millis(50);
                    claimed
                }
                Err(err) => {
                    tracing::warn!(service = %config.service, role = %config.role, error = %err, transient = err.transient, "claiming failed, backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let count = claimed.len() as u64;
            context.stats.claimed.fetch_add(count, Ordering::Relaxed);
            metrics::counter!(model::metrics::BUS_CLAIMED_TOTAL, &labels).increment(count);
            let now = context.queue.now();
            let histogram = metrics::histogram!(model::metrics::BUS_CLAIM_LATENCY_MS, &labels);
            let mut held = lock(&context.in_flight);
            for message in claimed {
                let waited_ms =
                    (now - message.run_at.max(message.created_at)).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                histogram.record(waited_ms.max(0.0));
                held.insert(message.id);
                buffer.push_back(message);
            }
        }
        // hand buffered messages to free handler slots, waiting for one when all are busy
        let permit = match context.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tokio::select! {
                    permit = context.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => continue,
                }
            }
        };
        let Some(message) = buffer.pop_front() else {
            drop(permit);
            continue;
        };
        let handler = context.handler.clone();
        let finished = context.finished.clone();
        let stats = context.stats.clone();
        handlers.spawn(async move {
            let id = message.id;
            let copy = message.clone();
            let outcome = handler.handle(message).await;
            stats.handled.fetch_add(1, Ordering::Relaxed);
            let _ = finished.send(match outcome {
                Ok(output) => Finished::Done(id, output),
                Err(error) => Finished::Failed(Box::new(copy), error),
            });
            drop(permit);
        });
    }
    handlers
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records handler outcomes in batches: whatever finished while the previous batch was written goes
/// in the next statement.
async fn completer(
    queue: Arc<dyn Queue>,
    config: RuntimeConfig,
    mut finished: mpsc::UnboundedReceiver<Finished>,
    in_flight: Arc<Mutex<HashSet<MessageId>>>,
    retry: RetryResolver,
    stats: Arc<RuntimeStats>,
) {
    let labels = [("service", config.service.clone()), ("role", config.role.clone())];
    // SQLite has one writer: concurrent writes only shrink batches, so write one at a time there
    let concurrent_writes = queue.concurrent_writes().max(1);
    let writers = Arc::new(Semaphore::new(concurrent_writes));
    // one statement records up to a claim's worth of outcomes
    let most = (config.batch as usize).clamp(256, 2_000);
    let mut buffer = Vec::with_capacity(most);
    while finished.recv_many(&mut buffer, most).await > 0 {
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        let now = queue.now();
        for item in buffer.drain(..) {
            match item {
                Finished::Done(id, output) => completions.push(Completion {
                    id,
                    result: output.result,
                    result_url: output.result_url,
                    detail: output.detail,
                }),
                Finished::Failed(message, error) => {
                    let policy = retry(&message);
                    let elapsed = (now - message.created_at).to_std().unwrap_or_default();
                    let decision = match model::retry::bus_decision(
                        &policy,
                        error.kind,
                        message.attempts.max(0) as u32,
                        message.max_attempts.max(1) as u32,
                        elapsed,
                        rand::random::<f64>(),
                    ) {
                        // not before the handler says a retry can succeed (an open breaker)
                        model::retry::RetryDecision::RetryAfter(delay) => model::retry::RetryDecision::RetryAfter(
                            error.retry_after.map_or(delay, |after| delay.max(after)),
                        ),
                        other => other,
                    };
                    failures.push(Failure {
                        id: message.id,
                        kind: error.kind,
                        error: error.message,
                        action: FailAction::from_decision(decision),
                        detail: error.detail,
                    });
                }
            }
        }
        let ids: Vec<MessageId> = completions.iter().map(|c| c.id).chain(failures.iter().map(|f| f.id)).collect();
        // a few writes in flight at once: the next batch forms while this one is written
        let Ok(permit) = writers.clone().acquire_owned().await else { break };
        let (queue, agent_id, labels, stats, in_flight) =
            (queue.clone(), config.agent_id.clone(), labels.clone(), stats.clone(), in_flight.clone());
        tokio::spawn(async move {
            record_outcomes(queue.as_ref(), &agent_id, &labels, &stats, completions, failures).await;
            let mut held = lock(&in_flight);
            for id in ids {
                held.remove(&id);
            }
            drop(permit);
        });
    }
    let _ = writers.acquire_many(concurrent_writes as u32).await;
}

async fn record_outcomes(
    queue: &dyn Queue,
    agent_id: &str,
    labels: &[(&'static str, String); 2],
    stats: &RuntimeStats,
    completions: Vec<Completion>,
    failures: Vec<Failure>,
) {
    if !completions.is_empty() {
        let count = completions.len();
        match with_retries(|| queue.complete(agent_id, completions.clone())).await {
            Ok(outcomes) => {
                let lost = outcomes.iter().filter(|o| **o == Outcome::LeaseLost).count() as u64;
                stats.succeeded.fetch_add(count as u64 - lost, Ordering::Relaxed);
                stats.lease_lost.fetch_add(lost, Ordering::Relaxed);
                metrics::counter!(model::metrics::BUS_SUCCEEDED_TOTAL, labels).increment(count as u64 - lost);
                if lost > 0 {
                    tracing::warn!(
                        count = lost,
                        "completions refused: leases were lost (the messages were or will be retried)"
                    );
                }
            }
            Err(err) => {
                tracing::error!(count, error = %err, "could not record completions; their leases will expire and they will be retried")
            }
        }
    }
    if !failures.is_empty() {
        let count = failures.len() as u64;
        let dead = failures.iter().filter(|f| matches!(f.action, FailAction::DeadLetter { .. })).count() as u64;
        match with_retries(|| queue.fail(agent_id, failures.clone())).await {
            Ok(_) => {
                stats.failed.fetch_add(count, Ordering::Relaxed);
                metrics::counter!(model::metrics::BUS_FAILED_TOTAL, labels).increment(count);
                if dead > 0 {
                    metrics::counter!(model::metrics::BUS_DEAD_LETTERED_TOTAL, labels).increment(dead);
                }
            }
            Err(err) => {
                tracing::error!(count, error = %err, "could not record failures; their leases will expire and they will be retried")
            }
        }
    }
}

/// Retries a queue call on transient errors (a dropped connection must not lose a result): six
/// tries over about 1.2 s, then every 2 s for up to half a minute in all.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut delay = Duration::from_millis(20);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Err(err) if err.transient && tokio::time::Instant::now() + delay < give_up => {
                tracing::warn!(error = %err, "store call failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Extends the leases of in-flight messages every third of the lease.
async fn heartbeat(
    queue: Arc<dyn Queue>,
    config: RuntimeConfig,
    in_flight: Arc<Mutex<HashSet<MessageId>>>,
    mut stop: watch::Receiver<bool>,
) {
    let every = (config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let ids: Vec<MessageId> = lock(&in_flight).iter().copied().collect();
        if ids.is_empty() {
            continue;
        }
        match queue.extend_leases(&config.agent_id, &ids, config.lease).await {
            Ok(kept) if kept.len() < ids.len() => {
                tracing::warn!(
                    lost = ids.len() - kept.len(),
                    "leases lost while handlers still run; their results will be refused"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "extending leases failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_follow_the_handlers_rate_between_the_free_slots_and_the_most() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut sizer = ClaimSizer { max: 500, last: start, last_handled: 0, rate: 0.0 };
        // nothing measured yet: the free slots
        assert_eq!(sizer.next_at(at(0), 0, 16), 16);
        // fast handlers (2,000 in 10 ms): the rate climbs, claims grow to the most
        assert_eq!(sizer.next_at(at(10), 2_000, 16), 500);
        assert_eq!(sizer.next_at(at(20), 4_000, 16), 500);
        // slow handlers (2 in a second): back to the free slots, never fewer than one
        let mut slow = ClaimSizer { max: 500, last: start, last_handled: 0, rate: 0.0 };
        assert_eq!(slow.next_at(at(1_000), 2, 4), 4);
        assert_eq!(slow.next_at(at(2_000), 4, 0), 1);
        // a medium rate (4,000 a second): about 50 ms of work
        let mut medium = ClaimSizer { max: 500, last: start, last_handled: 0, rate: 4_000.0 };
        assert_eq!(medium.next_at(at(1_000), 4_000, 8), 200);
        // never more than the most, whatever the free slots
        let mut small = ClaimSizer::new(8);
        assert_eq!(small.next_at(at(5), 0, 64), 8);
        assert_eq!(ClaimSizer::new(0).next_at(at(5), 0, 0), 1);
    }
}
