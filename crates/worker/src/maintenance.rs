//! Maintenance every process runs: reap expired leases, mark silent agents offline, prune old work,
//! keep this process's presence heartbeat. Safe to run in many processes at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use model::presence::Presence;
use store::{FailAction, Store};

use crate::RetryResolver;

/// Maintenance settings.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often to look for expired leases and stale agents.
    pub reap_interval: Duration,
    /// How often this process heartbeats.
    pub heartbeat_interval: Duration,
    /// An agent silent this long is marked offline.
    pub stale_after: Duration,
    /// Finished messages and events older than this are removed (None: keep).
    pub retention: Option<Duration>,
    /// How often to prune.
    pub prune_interval: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            reap_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(45),
            retention: Some(Duration::from_secs(7 * 86_400)),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// The maintenance loop of one process.
pub struct Maintenance {
    store: Store,
    config: MaintenanceConfig,
    presence: Presence,
    retry: RetryResolver,
}

impl Maintenance {
    /// Maintenance for the process described by `presence`.
    pub fn new(store: Store, config: MaintenanceConfig, presence: Presence, retry: RetryResolver) -> Self {
        Self { store, config, presence, retry }
    }

    /// One reaper pass: returns how many expired leases were taken back.
    pub async fn reap_once(&self) -> Result<u64, store::Error> {
        let retry = self.retry.clone();
        let decide = move |message: &model::Message| -> FailAction {
            let policy = retry(message);
            FailAction::from_decision(model::retry::bus_decision(
                &policy,
                model::ErrorKind::LeaseExpired,
                message.attempts.max(0) as u32,
                message.max_attempts.max(1) as u32,
                Duration::ZERO,
                rand::random::<f64>(),
            ))
        };
        let mut total = 0;
        loop {
            let n = self.store.reap_expired(500, &decide).await?;
            total += n;
            if n < 500 {
                break;
            }
        }
        if total > 0 {
            tracing::warn!(count = total, "expired leases taken back");
            metrics::counter!(model::metrics::BUS_LEASES_EXPIRED_TOTAL).increment(total);
        }
        Ok(total)
    }

    /// Registers presence, runs until `shutdown`, then says offline.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        if let Err(err) = this.store.presence_online(&this.presence).await {
            tracing::error!(error = %err, "could not register presence");
        }
        let mut reap = tokio::time::interval(this.config.reap_interval);
        let mut beat = tokio::time::interval(this.config.heartbeat_interval);
        let mut prune = tokio::time::interval(this.config.prune_interval);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = reap.tick() => {
                    if let Err(err) = this.reap_once().await {
                        tracing::warn!(error = %err, "lease reaper failed");
                    }
                    match this.store.presence_mark_stale(this.config.stale_after).await {
                        Ok(stale) if !stale.is_empty() => tracing::warn!(agents = ?stale, "agents stopped heartbeating; marked offline"),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "stale agent sweep failed"),
                    }
                    match this.store.queue_stats().await {
                        Ok(stats) => for queue in stats {
                            let labels = [("service", queue.service.clone()), ("role", queue.role.clone())];
                            metrics::gauge!(model::metrics::BUS_QUEUE_DEPTH, &labels).set((queue.ready + queue.delayed) as f64);
                            metrics::gauge!(model::metrics::BUS_OLDEST_QUEUED_AGE_SECONDS, &labels)
                                .set(queue.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0);
                        },
                        Err(err) => tracing::debug!(error = %err, "queue statistics failed"),
                    }
                }
                _ = beat.tick() => {
                    match this.store.presence_heartbeat(&this.presence.agent_id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("presence row was marked offline; registering again");
                            let _ = this.store.presence_online(&this.presence).await;
                        }
                        Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
                    }
                }
                _ = prune.tick() => {
                    if let Some(retention) = this.config.retention {
                        match this.store.prune(retention).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "pruned old messages and events"),
                            Err(err) => tracing::warn!(error = %err, "pruning failed"),
                        }
                    }
                }
            }
        }
        if let Err(err) = this.store.presence_offline(&this.presence.agent_id, "shutdown").await {
            tracing::warn!(error = %err, "could not record going offline");
        }
    }
}
