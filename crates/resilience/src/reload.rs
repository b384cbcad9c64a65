//! Hot reload of `retry_policy.json` and `circuit_breaker.json`: a changed file is parsed and
//! validated; only a valid one replaces the rules in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use model::config::{BreakerFile, ConfigFile, RetryFile, parse};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Policies;

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file was valid and is now in force.
    Applied(ConfigFile),
    /// The file was invalid; the last good rules stay. The errors say why.
    Rejected(ConfigFile, Vec<String>),
}

/// Reloads one policy file into `policies`.
pub fn reload_file(policies: &Policies, dir: &Path, file: ConfigFile) -> ReloadOutcome {
    let path = dir.join(file.file_name());
    let label = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => return ReloadOutcome::Rejected(file, vec![format!("{label}: cannot read: {err}")]),
    };
    let result = match file {
        ConfigFile::Retry => parse::<RetryFile>(&label, &text).map(|f| policies.replace_retry(&f)),
        ConfigFile::Breaker => parse::<BreakerFile>(&label, &text).map(|f| policies.replace_breaker(&f)),
        _ => return ReloadOutcome::Rejected(file, vec![format!("{label}: not a policy file")]),
    };
    let outcome = match result {
        Ok(()) => ReloadOutcome::Applied(file),
        Err(errors) => ReloadOutcome::Rejected(file, errors.iter().map(ToString::to_string).collect()),
    };
    let label_outcome = if matches!(outcome, ReloadOutcome::Applied(_)) { "applied" } else { "rejected" };
    metrics::counter!(model::metrics::CONFIG_RELOADS_TOTAL, "file" => file.file_name(), "outcome" => label_outcome)
        .increment(1);
    match &outcome {
        ReloadOutcome::Applied(_) => tracing::info!(file = file.file_name(), "policy file reloaded"),
        ReloadOutcome::Rejected(_, errors) => {
            tracing::error!(file = file.file_name(), errors = %errors.join("; "), "policy file rejected; the last good policy stays in force")
        }
    }
    outcome
}

/// Watches `dir` and reloads the policy files when they change. Returns a receiver of outcomes
/// (for tests and logs) and keeps watching while the returned guard lives.
pub fn watch_policies(
    policies: Arc<Policies>,
    dir: PathBuf,
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<ReloadOutcome>), notify::Error> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<ConfigFile>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_access() {
                return;
            }
            for path in event.paths {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if let Some(file) =
                    ConfigFile::parse(name).filter(|f| matches!(f, ConfigFile::Retry | ConfigFile::Breaker))
                {
                    let _ = raw_tx.send(file);
                }
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            // an editor's save is several events: settle, then reload each touched file once
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut files = vec![first];
            while let Ok(more) = raw_rx.try_recv() {
                if !files.contains(&more) {
                    files.push(more);
                }
            }
            for file in files {
                let outcome = reload_file(&policies, &dir, file);
                if out_tx.send(outcome).is_err() {
                    // nobody listens for outcomes; keep reloading
                }
            }
        }
    });
    Ok((watcher, out_rx))
}
