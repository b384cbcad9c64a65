//! `cogo gate chaos`: faults injected into real COGO processes on loopback, each scenario
//! judged by what must survive it: every message sent is completed or dead-lettered with its
//! reason (none lost), no completion is recorded twice, and the processes recover on their own.
//!
//! Scenarios (each a stage of the report, with its figures: faults injected, messages sent,
//! completed, dead-lettered, lost, duplicated, re-executed, time to recover):
//! - `worker-kill`: PostgreSQL, `cogo serve` and three noop workers; `kill -9` of a worker at a
//!   third and of another at two thirds of the drain (mid-claim and mid-completion: the drain
//!   never pauses); the first is replaced, the second is not.
//! - `postgres-restart`: the same, with a worker killed at 40 % and the PostgreSQL server
//!   restarted at 50 % (`pg_ctlcluster … restart`, local servers only).
//! - `sqlite-crash`: the embedded SQLite file, a noop worker process killed three times while
//!   this process enqueues into the same file; the file's integrity is checked after each crash.
//! - `mcp-restart`, `mcp-slow`, `mcp-flapping`: `cogo up` calling `server-everything` through a
//!   fault proxy while calls are enqueued: the server killed and started again; answers delayed
//!   past the tool timeout; every connection cut every half second.
//! - `artifacts-unwritable`: `cogo up` whose artifact directory is a small tmpfs, first full,
//!   then read-only: MCP calls still complete with their answers inline, the failure is counted.
//!
//! Reports go to `artifacts/gate-run/TS/chaos/` (`report.json`, each process's log); the exit
//! code is the verdict. A scenario that cannot run here (no local PostgreSQL to restart, no
//! permission to mount) is skipped with the reason, never passed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Abort, Api, Env, Proc, Stage, Status, abort, admin_token, short, until, write_json};
use crate::ExitWith;
use crate::args::{ChaosArgs, ChaosScenario, Global};

/// What a scenario measured.
#[derive(Debug, Clone, Default, Serialize)]
struct Figures {
    /// Faults injected (kills, restarts, outages).
    faults_injected: u32,
    /// Messages (or MCP calls) enqueued.
    sent: u64,
    /// Ended `done`.
    completed: u64,
    /// Ended in the dead-letter queue, with their reason.
    dead_lettered: u64,
    /// Neither: lost.
    lost: u64,
    /// Completions recorded more than once.
    duplicated: u64,
    /// Messages that ran more than once before their one completion (at-least-once).
    reexecuted: u64,
    /// Failed attempts seen (retried).
    failed_attempts: u64,
    /// Longest time from a fault to full recovery, in milliseconds.
    recover_ms: Option<u64>,
    /// What recovery meant for each fault.
    recoveries: Vec<String>,
}

/// One scenario's stage and figures.
#[derive(Debug, Serialize)]
struct Scenario {
    #[serde(flatten)]
    stage: Stage,
    figures: Figures,
}

/// `cogo gate chaos`.
pub async fn run(global: &Global, args: ChaosArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let stamps = model::artifact::TsAllocator::new(&model::new_id().simple().to_string()[24..]);
    let ts = stamps.next(started_at);
    let gate_dir_rel = model::artifact::run_dir(model::artifact::ArtifactFamily::GateRun, &ts)?;
    let dir_rel = format!("{gate_dir_rel}/chaos");
    let dir = global.data_dir.join(&dir_rel);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let env = Env::new(global)?;

    let mut scenarios = Vec::new();
    for (index, which) in args.scenarios.iter().enumerate() {
        let name = which.name();
        let mut stage = Stage::new(index as u8 + 1, name, format!("{dir_rel}/{name}"));
        let scenario_dir = dir.join(name);
        let outcome = match which {
            ChaosScenario::Distributed => {
                bus_scenario(&mut stage, &env, global, &scenario_dir, &args, BusFaults::None).await
            }
            ChaosScenario::WorkerKill => {
                bus_scenario(&mut stage, &env, global, &scenario_dir, &args, BusFaults::Kills).await
            }
            ChaosScenario::PostgresRestart => {
                bus_scenario(&mut stage, &env, global, &scenario_dir, &args, BusFaults::KillAndRestart).await
            }
            ChaosScenario::SqliteCrash => sqlite_scenario(&mut stage, &env, &scenario_dir, &args).await,
            ChaosScenario::McpRestart => mcp_scenario(&mut stage, &env, &scenario_dir, &args, McpFault::Restart).await,
            ChaosScenario::McpSlow => mcp_scenario(&mut stage, &env, &scenario_dir, &args, McpFault::Slow).await,
            ChaosScenario::McpFlapping => {
                mcp_scenario(&mut stage, &env, &scenario_dir, &args, McpFault::Flapping).await
            }
            ChaosScenario::ArtifactsUnwritable => artifacts_scenario(&mut stage, &env, &scenario_dir).await,
        };
        let (stage, figures) = match outcome {
            Ok(Outcome::Ran(figures)) => (stage.finish(), figures),
            Ok(Outcome::Skipped(reason)) => (stage.skip(reason), Figures::default()),
            Err(err) => {
                stage.abort(err);
                (stage.finish(), Figures::default())
            }
        };
        let scenario = Scenario { stage, figures };
        write_json(&scenario_dir.join("report.json"), &scenario);
        scenarios.push(scenario);
    }

    let failed = scenarios.iter().filter(|s| s.stage.status == Status::Failed).count();
    let verdict = if failed == 0 { "passed" } else { "failed" };
    let ran: Vec<&Figures> =
        scenarios.iter().filter(|s| s.stage.status != Status::Skipped).map(|s| &s.figures).collect();
    let totals = json!({
        "scenarios": scenarios.len(),
        "skipped": scenarios.iter().filter(|s| s.stage.status == Status::Skipped).count(),
        "faults_injected": ran.iter().map(|f| u64::from(f.faults_injected)).sum::<u64>(),
        "sent": ran.iter().map(|f| f.sent).sum::<u64>(),
        "completed": ran.iter().map(|f| f.completed).sum::<u64>(),
        "dead_lettered": ran.iter().map(|f| f.dead_lettered).sum::<u64>(),
        "lost": ran.iter().map(|f| f.lost).sum::<u64>(),
        "duplicated": ran.iter().map(|f| f.duplicated).sum::<u64>(),
        "reexecuted": ran.iter().map(|f| f.reexecuted).sum::<u64>(),
        "failed_attempts": ran.iter().map(|f| f.failed_attempts).sum::<u64>(),
        "max_recover_ms": ran.iter().filter_map(|f| f.recover_ms).max(),
    });
    let report = json!({
        "gate": "chaos",
        "verdict": verdict,
        "started_at": started_at,
        "duration_ms": started.elapsed().as_millis() as u64,
        "artifacts": dir_rel,
        "totals": totals,
        "scenarios": scenarios,
    });
    let stages: Vec<Stage> = scenarios.iter().map(|s| s.stage.clone()).collect();
    super::write_reports(&dir, &report, "cogo gate chaos", &stages, started.elapsed(), args.junit.as_deref())?;
    super::publish(global, &[dir_rel.as_str()]).await;

    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        for scenario in &scenarios {
            let stage = &scenario.stage;
            let f = &scenario.figures;
            let status = stage.status.label();
            write!(out, "{:<22} {status} {:>6.1} s", stage.name, stage.duration_ms as f64 / 1e3)?;
            match &stage.reason {
                Some(reason) => writeln!(out, "  ({reason})")?,
                None => writeln!(
                    out,
                    "  faults={} sent={} completed={} dead_lettered={} lost={} duplicated={} reexecuted={} failed_attempts={} recover_ms={}",
                    f.faults_injected,
                    f.sent,
                    f.completed,
                    f.dead_lettered,
                    f.lost,
                    f.duplicated,
                    f.reexecuted,
                    f.failed_attempts,
                    f.recover_ms.map_or("-".to_owned(), |ms| ms.to_string())
                )?,
            }
            for check in stage.checks.iter().filter(|c| !c.ok) {
                writeln!(out, "    {}: {}", check.name, check.detail)?;
            }
        }
        writeln!(
            out,
            "chaos: scenarios={} skipped={} faults_injected={} sent={} completed={} dead_lettered={} lost={} duplicated={} max_recover_ms={}",
            totals["scenarios"],
            totals["skipped"],
            totals["faults_injected"],
            totals["sent"],
            totals["completed"],
            totals["dead_lettered"],
            totals["lost"],
            totals["duplicated"],
            totals["max_recover_ms"]
        )?;
        writeln!(out, "chaos {verdict}; report: {}", dir.join("report.json").display())?;
    }
    drop(out);
    if failed > 0 {
        return Err(ExitWith(1, format!("{failed} chaos scenario(s) failed")).into());
    }
    Ok(())
}

/// How a scenario ended when it did not abort.
enum Outcome {
    Ran(Figures),
    Skipped(String),
}

/// Records the verdicts every scenario shares: none lost, none completed twice.
fn judge(stage: &mut Stage, figures: &Figures) {
    stage.check(
        "nothing lost",
        if figures.lost == 0 {
            Ok(format!(
                "{} sent: {} completed, {} dead-lettered with their reason",
                figures.sent, figures.completed, figures.dead_lettered
            ))
        } else {
            Err(format!("{} of {} messages neither completed nor dead-lettered", figures.lost, figures.sent))
        },
    );
    stage.check(
        "no completion recorded twice",
        if figures.duplicated == 0 {
            Ok(format!("{} re-executed after a fault, each completed once", figures.reexecuted))
        } else {
            Err(format!("{} messages have more than one completion", figures.duplicated))
        },
    );
}

// ---------------------------------------------------------------- bus scenarios

/// Counts what became of the messages of `tenant`: done, dead-lettered, completions per message
/// (`<intent>_succeeded` events), re-executions.
async fn tally(store: &store::Store, tenant: &str, success_event: &str, sent: u64) -> Result<Figures, String> {
    let mut figures = Figures { sent, ..Figures::default() };
    let mut seen = std::collections::HashSet::new();
    let filter = store::MessageFilter {
        tenant: Some(tenant.to_owned()),
        status: Some(model::MessageStatus::Done),
        ..Default::default()
    };
    let mut page = store::PageRequest::first(1000);
    loop {
        let got = store.messages(&filter, &page).await.map_err(|e| format!("reading messages: {e}"))?;
        for message in &got.items {
            figures.completed += 1;
            if message.attempts > 1 {
                figures.reexecuted += 1;
            }
            seen.insert(message.id);
        }
        match got.next {
            Some(next) if !got.items.is_empty() => page = store::PageRequest { after: Some(next), limit: 1000 },
            _ => break,
        }
    }
    let dlq_filter = store::MessageFilter { tenant: Some(tenant.to_owned()), ..Default::default() };
    let mut page = store::PageRequest::first(1000);
    loop {
        let got = store.dead_letters(&dlq_filter, &page).await.map_err(|e| format!("reading dead letters: {e}"))?;
        for entry in &got.items {
            if seen.insert(entry.message_id) {
                figures.dead_lettered += 1;
            }
        }
        match got.next {
            Some(next) if !got.items.is_empty() => page = store::PageRequest { after: Some(next), limit: 1000 },
            _ => break,
        }
    }
    figures.lost = sent.saturating_sub(seen.len() as u64);
    let mut per_message: HashMap<model::MessageId, u32> = HashMap::new();
    let event_filter = store::EventFilter {
        tenant: Some(tenant.to_owned()),
        event_type: Some(success_event.to_owned()),
        ..Default::default()
    };
    let mut page = store::PageRequest::first(1000);
    loop {
        let got = store.events(&event_filter, &page).await.map_err(|e| format!("reading events: {e}"))?;
        for event in &got.items {
            if let Some(id) = event.message_id {
                *per_message.entry(id).or_default() += 1;
            }
        }
        match got.next {
            Some(next) if !got.items.is_empty() => page = store::PageRequest { after: Some(next), limit: 1000 },
            _ => break,
        }
    }
    figures.duplicated = per_message.values().filter(|n| **n > 1).count() as u64;
    Ok(figures)
}

/// Enqueues `total` noop messages for `tenant` in batches of 500.
pub(super) async fn enqueue_noops(store: &store::Store, tenant: &str, from: usize, total: usize) -> Result<(), String> {
    let intent = model::Intent::new("noop").map_err(|e| e.to_string())?;
    for chunk in (from..from + total).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|n| {
                model::NewMessage::new("bus", "noop", intent.clone(), json!({ "n": n }))
                    .with_tenant(tenant)
                    .with_idempotency_key(format!("chaos-{n}"))
            })
            .collect();
        store.enqueue_batch(batch).await.map_err(|e| format!("enqueueing: {e}"))?;
    }
    Ok(())
}

/// The payload of mixed message `n`: most complete at once; some work a few milliseconds, some
/// fail their first attempt (and are retried), one in fifty is refused for good (dead-lettered).
fn mixed_payload(n: usize) -> Value {
    if n % 50 == 13 {
        json!({ "n": n, "fail": "invalid_input" })
    } else if n % 20 == 7 {
        json!({ "n": n, "fail_attempts": 1 })
    } else if n % 10 == 1 {
        json!({ "n": n, "sleep_ms": n % 20 })
    } else {
        json!({ "n": n })
    }
}

/// Mixed messages among the first `total` that are refused for good.
fn mixed_refusals(total: usize) -> u64 {
    (0..total).filter(|n| n % 50 == 13).count() as u64
}

/// Enqueues `total` mixed noop messages (see [`mixed_payload`]) for `tenant` in batches of 500.
async fn enqueue_mixed(store: &store::Store, tenant: &str, total: usize) -> Result<(), String> {
    let intent = model::Intent::new("noop").map_err(|e| e.to_string())?;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|n| {
                model::NewMessage::new("bus", "noop", intent.clone(), mixed_payload(*n))
                    .with_tenant(tenant)
                    .with_idempotency_key(format!("mixed-{n}"))
            })
            .collect();
        store.enqueue_batch(batch).await.map_err(|e| format!("enqueueing: {e}"))?;
    }
    Ok(())
}

/// Every live worker (and the server) online in `GET /api/agents`, the edge worker among them.
async fn presence_check(api: &Api<'_>, live: &[&str]) -> Result<String, String> {
    let agents = api.get("/api/agents").await?;
    let agents = agents["agents"].as_array().cloned().unwrap_or_default();
    let online = |agent: &Value| agent["status"] == "online";
    let missing: Vec<&str> =
        live.iter().copied().filter(|id| !agents.iter().any(|a| a["agent_id"] == *id && online(a))).collect();
    if !missing.is_empty() {
        return Err(format!("not online in /api/agents: {}", missing.join(", ")));
    }
    let servers = agents.iter().filter(|a| a["service"] != "worker" && a["service"] != "edge" && online(a)).count();
    let edge = agents.iter().filter(|a| a["service"] == "edge" && online(a)).count();
    if servers == 0 || edge == 0 {
        return Err(format!("{servers} servers and {edge} edge workers online in /api/agents"));
    }
    Ok(format!("{} workers online ({edge} at the edge) and {servers} server", live.len()))
}

/// Events of `event_type` for `tenant` that `keep` keeps.
async fn count_events(
    store: &store::Store,
    tenant: &str,
    event_type: &str,
    keep: impl Fn(&model::event::Event) -> bool,
) -> Result<i64, String> {
    let filter = store::EventFilter {
        tenant: Some(tenant.to_owned()),
        event_type: Some(event_type.to_owned()),
        ..Default::default()
    };
    let mut page = store::PageRequest::first(1000);
    let mut total = 0i64;
    loop {
        let got =
            store.events(&filter, &page).await.map_err(|e| format!("reading events: {}", model::with_causes(&e)))?;
        total += got.items.iter().filter(|event| keep(event)).count() as i64;
        // an event page always has a cursor (to follow new events): a short page is the last
        match got.next {
            Some(next) if got.items.len() == 1000 => page.after = Some(next),
            _ => return Ok(total),
        }
    }
}

/// The summary's per-queue figures of the last minute equal the counts in the event log.
async fn summary_check(api: &Api<'_>, store: &store::Store, tenant: &str) -> Result<String, String> {
    let succeeded = count_events(store, tenant, "noop_succeeded", |_| true).await?;
    let dead = count_events(store, tenant, "noop_dead_lettered", |_| true).await?;
    let mut last = String::new();
    // the summary is cached briefly: ask until it has caught up
    for _ in 0..20 {
        let summary = api.get("/api/metrics/summary").await?;
        let queue = summary["summary"]["bus"]["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["service"] == "bus" && q["role"] == "noop").cloned())
            .unwrap_or_default();
        let (done, failed) = (queue["done_last_minute"].as_i64(), queue["failed_last_minute"].as_i64());
        if done == Some(succeeded) && failed == Some(dead) {
            return Ok(format!(
                "bus/noop: {succeeded} done and {dead} dead-lettered in the summary and in the event log"
            ));
        }
        last = format!(
            "summary bus/noop done {done:?}, failed {failed:?}; event log {succeeded} noop_succeeded, {dead} noop_dead_lettered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// Messages of bus/noop not finished yet, or `None` when the store does not answer.
pub(super) async fn open_noops(store: &store::Store) -> Option<i64> {
    let stats = store.queue_stats().await.ok()?;
    Some(stats.iter().filter(|q| q.service == "bus" && q.role == "noop").map(|q| q.ready + q.delayed + q.claimed).sum())
}

/// Messages still claimed by `agent` (a process that was killed).
async fn held_by(store: &store::Store, tenant: &str, agent: &str) -> Option<usize> {
    let filter = store::MessageFilter {
        tenant: Some(tenant.to_owned()),
        status: Some(model::MessageStatus::Claimed),
        ..Default::default()
    };
    let mut held = 0;
    let mut page = store::PageRequest::first(1000);
    loop {
        let got = store.messages(&filter, &page).await.ok()?;
        held += got.items.iter().filter(|m| m.claimed_by.as_deref() == Some(agent)).count();
        match got.next {
            Some(next) if !got.items.is_empty() => page = store::PageRequest { after: Some(next), limit: 1000 },
            _ => return Some(held),
        }
    }
}

/// `cogo migrate` as its own process, with the database arguments of `common`.
async fn migrate(env: &Env, dir: &Path, common: &[String]) -> Result<(), Abort> {
    let mut args = common.to_vec();
    args.push("migrate".into());
    let mut migrate = Proc::spawn(env, dir, "migrate", &args)?;
    let status = migrate.child.wait().await.map_err(|e| abort("cogo migrate", e))?;
    if !status.success() {
        return Err(abort("cogo migrate", format!("exited with {status}: {}", migrate.tail())));
    }
    Ok(())
}

/// A noop worker process with a short lease (a killed worker's work comes back quickly).
async fn noop_worker(env: &Env, dir: &Path, name: &str, common: &[String]) -> Result<(Proc, String), Abort> {
    let mut args = common.to_vec();
    args.extend(["worker", "--roles", "noop", "--lease-ms", "2000"].map(str::to_owned));
    let mut worker = Proc::spawn(env, dir, name, &args)?;
    let banner = worker.wait_for_line("COGO worker", Duration::from_secs(60)).await?;
    let agent = banner.split_whitespace().next().unwrap_or_default().to_owned();
    Ok((worker, agent))
}

/// SIGKILL, and wait for it to be gone.
async fn kill9(proc: &mut Proc) {
    let _ = proc.child.start_kill();
    let _ = proc.child.wait().await;
}

/// The command that restarts the local PostgreSQL server, when this machine has one and `url`
/// points at it.
fn postgres_restart_command(url: &str) -> Result<Vec<String>, String> {
    let host = url.split('@').nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "") {
        return Err(format!("PostgreSQL at {host} is not on this machine: only a local server is restarted"));
    }
    let versions = std::fs::read_dir("/etc/postgresql")
        .map_err(|_| "no local PostgreSQL cluster (no /etc/postgresql) to restart".to_owned())?;
    let mut versions: Vec<String> =
        versions.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    let version = versions.pop().ok_or("no local PostgreSQL cluster to restart")?;
    let which = std::process::Command::new("pg_ctlcluster").arg("--help").output();
    if which.is_err() {
        return Err("pg_ctlcluster is not installed: cannot restart the local PostgreSQL".to_owned());
    }
    Ok(vec!["pg_ctlcluster".into(), "--skip-systemctl-redirect".into(), version, "main".into(), "restart".into()])
}

/// The faults of a bus scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BusFaults {
    /// `distributed`: none.
    None,
    /// `worker-kill`: two workers killed, one replaced.
    Kills,
    /// `postgres-restart`: a worker killed halfway, then PostgreSQL restarted.
    KillAndRestart,
}

/// An edge worker token for the noop role, made by `cogo tokens create --edge` as its own process.
async fn edge_token(env: &Env, dir: &Path, common: &[String]) -> Result<String, Abort> {
    let mut args = common.to_vec();
    args.extend(["tokens", "create", "--edge", "--roles", "noop", "--name", "chaos edge worker"].map(str::to_owned));
    let mut maker = Proc::spawn(env, dir, "edge-token", &args)?;
    let status = maker.child.wait().await.map_err(|e| abort("cogo tokens create --edge", e))?;
    let token = std::fs::read_to_string(&maker.stdout).unwrap_or_default().trim().to_owned();
    // the token is shown once: keep it out of the scenario's files
    let _ = std::fs::remove_file(&maker.stdout);
    if !status.success() || !token.starts_with("cogo_") {
        return Err(abort("cogo tokens create --edge", format!("exited with {status}: {}", maker.tail())));
    }
    Ok(token)
}

/// `distributed`, `worker-kill` and `postgres-restart`: one server, two workers on PostgreSQL and
/// an edge worker drain mixed messages, through the faults of `faults`.
async fn bus_scenario(
    stage: &mut Stage,
    env: &Env,
    global: &Global,
    dir: &Path,
    args: &ChaosArgs,
    faults: BusFaults,
) -> Result<Outcome, Abort> {
    let admin_url = match &global.database_url {
        Some(url) if url.starts_with("postgres") => url.clone(),
        _ => crate::bench::POSTGRES_ADMIN.to_owned(),
    };
    let restart = if faults == BusFaults::KillAndRestart {
        match postgres_restart_command(&admin_url) {
            Ok(command) => Some(command),
            Err(why) => return Ok(Outcome::Skipped(why)),
        }
    } else {
        None
    };
    let scratch_global = Global { database_url: Some(admin_url.clone()), ..global.clone() };
    let scratch = crate::bench::scratch_database(&scratch_global, crate::args::BenchBackend::Postgres, &admin_url)
        .await
        .map_err(|e| abort("fresh database", format!("{e:#} on {}", store::redact_url(&admin_url))))?;
    stage.check("fresh database", Ok(store::redact_url(&scratch.url)));
    let outcome = bus_run(stage, env, dir, args, &scratch.url, faults, restart).await;
    scratch.cleanup().await;
    outcome
}

async fn bus_run(
    stage: &mut Stage,
    env: &Env,
    dir: &Path,
    args: &ChaosArgs,
    url: &str,
    faults: BusFaults,
    restart: Option<Vec<String>>,
) -> Result<Outcome, Abort> {
    let common = vec![
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
        "--database-url".to_owned(),
        url.to_owned(),
    ];
    migrate(env, dir, &common).await?;
    let token = admin_token();
    let mut serve_args = common.clone();
    serve_args.extend(["serve", "--listen", "127.0.0.1:0", "--admin-token", &token].map(str::to_owned));
    let mut serve = Proc::spawn(env, dir, "serve", &serve_args)?;
    let base = serve.address("health", Duration::from_secs(60)).await?;
    let edge_token = edge_token(env, dir, &common).await?;

    // the work first, so the faults fall mid-drain
    let tenant = "chaos";
    let total = args.messages as usize;
    let store = store::Store::open(url, store::StoreOptions::default()).await.map_err(|e| abort("store", e))?;
    let enqueue_started = Instant::now();
    if let Err(e) = enqueue_mixed(&store, tenant, total).await {
        store.close().await;
        return Err(abort("enqueue", e));
    }
    stage.check(
        "enqueued",
        Ok(format!(
            "{total} mixed noop messages ({} refused for good, some retried, some slow) in {} ms",
            mixed_refusals(total),
            enqueue_started.elapsed().as_millis()
        )),
    );
    // the three start together, so the drain is shared from its beginning; the third is an
    // edge worker, with no database, served by `cogo serve` over its WebSocket
    let started = Instant::now();
    let mut spawned = Vec::new();
    for n in 1..=3 {
        let mut worker_args = common.clone();
        worker_args.extend(["worker", "--roles", "noop", "--lease-ms", "2000"].map(str::to_owned));
        if n == 3 {
            worker_args.extend(["--server", &base, "--token", &edge_token, "--name", "chaos-edge"].map(str::to_owned));
        }
        spawned.push(Proc::spawn(env, dir, &format!("worker-{n}"), &worker_args)?);
    }
    let mut workers = Vec::new();
    for mut worker in spawned {
        let banner = worker.wait_for_line("COGO worker", Duration::from_secs(60)).await?;
        let agent = banner.split_whitespace().next().unwrap_or_default().to_owned();
        workers.push((worker, agent));
    }
    stage.check(
        "processes started",
        Ok(format!("cogo serve, 2 noop workers on PostgreSQL and edge worker {} (lease 2 s)", workers[2].1)),
    );

    // the faults, by progress of the drain
    enum Fault {
        Kill { worker: usize, replace: bool },
        RestartPostgres,
    }
    let plan: Vec<(f64, Fault)> = match faults {
        BusFaults::None => Vec::new(),
        BusFaults::Kills => vec![
            (1.0 / 3.0, Fault::Kill { worker: 0, replace: true }),
            (2.0 / 3.0, Fault::Kill { worker: 1, replace: false }),
        ],
        BusFaults::KillAndRestart => {
            vec![(0.4, Fault::Kill { worker: 0, replace: false }), (0.5, Fault::RestartPostgres)]
        }
    };
    let mut figures = Figures { sent: total as u64, ..Figures::default() };
    let mut pending: std::collections::VecDeque<(f64, Fault)> = plan.into();
    // (what, when, agent whose leases must come back or progress mark)
    let mut orphans: Vec<(String, Instant, String)> = Vec::new();
    let mut restarted: Option<(Instant, i64)> = None;
    let mut recover_ms: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last_open = total as i64;
    loop {
        let open = open_noops(&store).await;
        if let Some(open) = open {
            last_open = open;
        }
        let done_fraction = 1.0 - last_open as f64 / total.max(1) as f64;
        while pending.front().is_some_and(|(at, _)| done_fraction >= *at) {
            let Some((_, fault)) = pending.pop_front() else { break };
            figures.faults_injected += 1;
            match fault {
                Fault::Kill { worker, replace } => {
                    let (proc, agent) = &mut workers[worker];
                    kill9(proc).await;
                    let held = held_by(&store, tenant, agent).await.unwrap_or(0);
                    stage.check(
                        format!("kill -9 {}", proc.name),
                        Ok(format!("at {:.0} % done, holding {held} claimed messages", done_fraction * 100.0)),
                    );
                    orphans.push((proc.name.clone(), Instant::now(), agent.clone()));
                    if replace {
                        // started without waiting for its banner: the drain goes on meanwhile
                        let name = format!("{}-replacement", proc.name);
                        let mut worker_args = common.clone();
                        worker_args.extend(["worker", "--roles", "noop", "--lease-ms", "2000"].map(str::to_owned));
                        workers.push((Proc::spawn(env, dir, &name, &worker_args)?, String::new()));
                    }
                }
                Fault::RestartPostgres => {
                    let command = restart.clone().unwrap_or_default();
                    let Some((program, rest)) = command.split_first() else { continue };
                    let at = Instant::now();
                    let result = tokio::process::Command::new(program).args(rest).output().await;
                    let took = at.elapsed().as_millis();
                    match result {
                        Ok(output) if output.status.success() => {
                            stage.check(
                                "PostgreSQL restarted",
                                Ok(format!(
                                    "`{}` at {:.0} % done, {took} ms",
                                    command.join(" "),
                                    done_fraction * 100.0
                                )),
                            );
                            restarted = Some((at, last_open));
                        }
                        Ok(output) => {
                            stage.check(
                                "PostgreSQL restarted",
                                Err(format!(
                                    "`{}` failed ({}): {}",
                                    command.join(" "),
                                    output.status,
                                    String::from_utf8_lossy(&output.stderr).trim()
                                )),
                            );
                        }
                        Err(e) => {
                            stage.check("PostgreSQL restarted", Err(format!("`{}`: {e}", command.join(" "))));
                        }
                    }
                }
            }
        }
        // recovery: a killed worker's claims all taken back and finished; after a restart,
        // completions going on again
        let mut still = Vec::new();
        for (name, at, agent) in orphans.drain(..) {
            match held_by(&store, tenant, &agent).await {
                Some(0) => {
                    let ms = at.elapsed().as_millis() as u64;
                    figures.recoveries.push(format!("{name}'s claims back and finished {ms} ms after the kill"));
                    recover_ms.push(ms);
                }
                _ => still.push((name, at, agent)),
            }
        }
        orphans = still;
        if let Some((at, open_then)) = restarted
            && open.is_some_and(|open| open < open_then)
        {
            let ms = at.elapsed().as_millis() as u64;
            figures.recoveries.push(format!("completions resumed {ms} ms after the restart began"));
            recover_ms.push(ms);
            restarted = None;
        }
        if open == Some(0) && pending.is_empty() && orphans.is_empty() && restarted.is_none() {
            break;
        }
        if Instant::now() > deadline {
            stage.check(
                "drained",
                Err(format!(
                    "{last_open} messages still open after {} s; faults not injected: {}; workers not recovered: {}",
                    started.elapsed().as_secs(),
                    pending.len(),
                    orphans.iter().map(|o| o.0.as_str()).collect::<Vec<_>>().join(", ")
                )),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_ms = started.elapsed().as_millis() as u64;
    figures.recover_ms = recover_ms.iter().copied().max();
    let counted = until(Duration::from_secs(30), || {
        let store = &store;
        async move { Ok(tally(store, tenant, "noop_succeeded", total as u64).await.ok()) }
    })
    .await;
    let problems = store.integrity_check().await;
    match counted {
        Ok(counted) => {
            figures = Figures {
                faults_injected: figures.faults_injected,
                recover_ms: figures.recover_ms,
                recoveries: figures.recoveries,
                ..counted
            };
        }
        Err(e) => {
            store.close().await;
            return Err(abort("counting", e));
        }
    }
    stage.check(
        "drained",
        if figures.completed + figures.dead_lettered == total as u64 {
            Ok(format!(
                "{total} messages in {drain_ms} ms ({:.0} msg/s) through {} faults",
                total as f64 / (drain_ms.max(1) as f64 / 1000.0),
                figures.faults_injected
            ))
        } else {
            Err(format!("{} of {total} finished", figures.completed + figures.dead_lettered))
        },
    );
    judge(stage, &figures);
    let refusals = mixed_refusals(total);
    stage.check(
        "refused messages dead-lettered",
        if figures.dead_lettered >= refusals {
            Ok(format!(
                "{} dead letters: the {refusals} refused for good, {} out of attempts after faults",
                figures.dead_lettered,
                figures.dead_lettered - refusals
            ))
        } else {
            Err(format!("{} dead letters, fewer than the {refusals} refused for good", figures.dead_lettered))
        },
    );
    let api = Api { http: &env.http, base: base.clone(), token: token.clone() };
    let live: Vec<&str> = workers
        .iter_mut()
        .filter_map(|(proc, agent)| proc.child.try_wait().ok().flatten().is_none().then_some(agent.as_str()))
        .filter(|agent| !agent.is_empty())
        .collect();
    stage.check("presence shows each process", presence_check(&api, &live).await);
    let by_edge = count_events(&store, tenant, "noop_succeeded", |event| {
        event.payload["agent_id"].as_str().is_some_and(|agent| agent.starts_with("edge:"))
    })
    .await;
    stage.check(
        "the edge worker did its share",
        match by_edge {
            Ok(0) => Err("no completion came from the edge worker".to_owned()),
            Ok(n) => Ok(format!("{n} of {} completions through its WebSocket", figures.completed)),
            Err(e) => Err(e),
        },
    );
    if drain_ms < 45_000 {
        stage.check("the summary matches the event log", summary_check(&api, &store, tenant).await);
    } else {
        stage.check(
            "the summary matches the event log",
            Ok(format!(
                "not compared: the drain took {} s, longer than the summary's one-minute window",
                drain_ms / 1000
            )),
        );
    }
    store.close().await;
    stage.check(
        "message states consistent",
        match problems {
            Ok(problems) if problems.is_empty() => Ok("every status agrees with its lease and completion".into()),
            Ok(problems) => Err(problems.join("; ")),
            Err(e) => Err(e.to_string()),
        },
    );
    let mut stops = Vec::new();
    for (worker, _) in workers {
        if worker.child.id().is_some() {
            stops.push(worker.stop(Duration::from_secs(30)).await);
        }
    }
    stops.push(serve.stop(Duration::from_secs(30)).await);
    let stopped: Result<Vec<String>, String> = stops.into_iter().collect();
    stage.check("survivors stop on SIGTERM", stopped.map(|s| s.join(", ")));
    Ok(Outcome::Ran(figures))
}

/// `sqlite-crash`: a worker killed mid-transaction three times while this process writes into
/// the same file.
async fn sqlite_scenario(stage: &mut Stage, env: &Env, dir: &Path, args: &ChaosArgs) -> Result<Outcome, Abort> {
    let data = dir.join("data");
    let _ = std::fs::create_dir_all(&data);
    let url = format!("sqlite://{}", data.join("cogo.db").display());
    let common = vec!["--data-dir".to_owned(), data.display().to_string()];
    migrate(env, dir, &common).await?;
    let store = store::Store::open(&url, store::StoreOptions::default()).await.map_err(|e| abort("store", e))?;
    let mut worker = noop_worker(env, dir, "worker", &common).await?;
    stage.check("processes started", Ok("a noop worker on the SQLite file (lease 2 s)".into()));

    let tenant = "chaos";
    let total = (args.messages as usize).min(20_000);
    let step = total.div_ceil(20).max(1);
    let started = Instant::now();
    let mut figures = Figures { sent: total as u64, ..Figures::default() };
    let mut sent = 0;
    let mut kills = 0;
    let mut recover_ms = Vec::new();
    let mut integrity = Vec::new();
    // enqueue in twenty steps while the worker drains; kill it after steps 5, 10 and 15
    while sent < total {
        let n = step.min(total - sent);
        if let Err(e) = enqueue_noops(&store, tenant, sent, n).await {
            store.close().await;
            return Err(abort("enqueue", e));
        }
        sent += n;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if sent.is_multiple_of(step * 5) && sent < total {
            kills += 1;
            figures.faults_injected += 1;
            let at = Instant::now();
            kill9(&mut worker.0).await;
            match store.integrity_check().await {
                Ok(problems) if problems.is_empty() => integrity.push(format!("ok after kill {kills}")),
                Ok(problems) => integrity.push(format!("after kill {kills}: {}", problems.join("; "))),
                Err(e) => integrity.push(format!("after kill {kills}: {e}")),
            }
            let agent = worker.1.clone();
            worker = noop_worker(env, dir, &format!("worker-after-kill-{kills}"), &common).await?;
            // the dead worker's claims come back after its lease and are finished by the new one
            let back = until(Duration::from_secs(60), || {
                let store = &store;
                let agent = agent.clone();
                async move { Ok(held_by(store, tenant, &agent).await.filter(|n| *n == 0)) }
            })
            .await;
            match back {
                Ok(_) => {
                    let ms = at.elapsed().as_millis() as u64;
                    figures.recoveries.push(format!("kill {kills}: claims back and finished after {ms} ms"));
                    recover_ms.push(ms);
                }
                Err(e) => figures.recoveries.push(format!("kill {kills}: claims not taken back: {e}")),
            }
        }
    }
    let drained = until(Duration::from_secs(120), || {
        let store = &store;
        async move { Ok(open_noops(store).await.filter(|open| *open == 0)) }
    })
    .await;
    let drain_ms = started.elapsed().as_millis() as u64;
    let counted = tally(&store, tenant, "noop_succeeded", total as u64).await;
    let stopped = worker.0.stop(Duration::from_secs(30)).await;
    let final_integrity = store.integrity_check().await;
    store.close().await;
    let counted = counted.map_err(|e| abort("counting", e))?;
    figures = Figures {
        faults_injected: figures.faults_injected,
        recover_ms: recover_ms.iter().copied().max(),
        recoveries: figures.recoveries,
        ..counted
    };
    stage.check(
        "drained",
        drained.map(|_| format!("{total} messages in {drain_ms} ms through {kills} kills of the writer")),
    );
    judge(stage, &figures);
    let bad: Vec<&String> = integrity.iter().filter(|line| !line.starts_with("ok")).collect();
    stage.check(
        "the file stays consistent after each crash",
        if bad.is_empty() {
            Ok(format!("PRAGMA integrity_check and the message states: {}", integrity.join(", ")))
        } else {
            Err(bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; "))
        },
    );
    stage.check(
        "and at the end",
        match final_integrity {
            Ok(problems) if problems.is_empty() => Ok("ok".into()),
            Ok(problems) => Err(problems.join("; ")),
            Err(e) => Err(e.to_string()),
        },
    );
    stage.check("worker stops on SIGTERM", stopped);
    Ok(Outcome::Ran(figures))
}

// ---------------------------------------------------------------- MCP scenarios

/// What the fault proxy does to the bytes between COGO and the MCP server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ProxyMode {
    /// Forward as they come.
    Pass,
    /// Hold every chunk this long before forwarding it (both directions).
    Delay(Duration),
    /// Cut every connection and refuse new ones.
    Down,
}

/// A TCP proxy on loopback between COGO and an MCP server, whose mode the scenario switches.
struct FaultProxy {
    port: u16,
    mode: Arc<watch::Sender<ProxyMode>>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, receiver) = watch::channel(ProxyMode::Pass);
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if *receiver.borrow() == ProxyMode::Down {
                    drop(client);
                    continue;
                }
                counter.fetch_add(1, Ordering::Relaxed);
                let mode = receiver.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pump(client_read, server_write, mode.clone()) => {}
                        _ = pump(server_read, client_write, mode) => {}
                    }
                });
            }
        });
        Ok(Self { port, mode: Arc::new(mode), connections, task })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction, honouring the mode; returns when either side closes or the proxy goes down.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let current = *mode.borrow();
                match current {
                    ProxyMode::Down => return,
                    ProxyMode::Delay(delay) => tokio::time::sleep(delay).await,
                    ProxyMode::Pass => {}
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == ProxyMode::Down {
                    return;
                }
            }
        }
    }
}

/// A free port on loopback.
fn free_port() -> Result<u16, Abort> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| abort("free port", e))
}

/// A copy of the policy files where the `everything` toolset goes through `port` with a 1 s
/// timeout, retried quickly and often, its breaker reopening after 1 s.
fn chaos_configs(from: &Path, to: &Path, port: u16) -> Result<(), Abort> {
    let _ = std::fs::create_dir_all(to);
    if let Ok(entries) = std::fs::read_dir(from) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let _ = std::fs::copy(&path, to.join(entry.file_name()));
            }
        }
    }
    let write = |name: &str, value: Value| {
        std::fs::write(to.join(name), serde_json::to_vec_pretty(&value).unwrap_or_default())
            .map_err(|e| abort("chaos configs", format!("{name}: {e}")))
    };
    write(
        "mcp.json",
        json!({ "toolsets": { "everything": { "url": format!("ws://127.0.0.1:{port}/"), "timeout_ms": 1000 } } }),
    )?;
    let read = |name: &str| -> Value {
        std::fs::read_to_string(to.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(json!({}))
    };
    let mut retry = read("retry_policy.json");
    retry["policies"]["mcp.call.everything.*"] = json!({
        "max_attempts": 15, "base_delay_ms": 100, "max_delay_ms": 1000, "timeout_ms": 1000, "deadline_ms": 120000
    });
    write("retry_policy.json", retry)?;
    let mut breakers = read("circuit_breaker.json");
    breakers["breakers"]["mcp.call.everything.*"] = json!({ "min_requests": 5, "open_ms": 1000 });
    write("circuit_breaker.json", breakers)?;
    Ok(())
}

/// What is done to the MCP server mid-run.
#[derive(Debug, Clone, Copy)]
enum McpFault {
    /// `kill -9` of the server (its whole process group), started again 2 s later.
    Restart,
    /// Answers held 700 ms each way for 3 s (the tool timeout is 1 s).
    Slow,
    /// Every connection cut every 500 ms for 3 s.
    Flapping,
}

/// `cogo up` calling `server-everything` through a fault proxy, with its API.
pub(super) struct McpRig {
    pub(super) up: Proc,
    pub(super) base: String,
    token: String,
    env: Env,
    everything: mcp::examples::ExampleProcess,
    launcher: mcp::examples::Launcher,
    proxy: FaultProxy,
}

/// Starts `server-everything`, the fault proxy in front of it and `cogo up` (rate limits off)
/// with policy files that send the `everything` toolset through the proxy.
pub(super) async fn mcp_rig(env: &Env, dir: &Path, data: &Path) -> Result<McpRig, Abort> {
    let servers = mcp::examples::default_servers_dir()
        .filter(|dir| mcp::examples::installed(dir))
        .ok_or_else(|| {
            abort(
                "example MCP servers",
                "not installed (looked in COGO_MCP_SERVERS, then mcp-servers/ here and above): run `scripts/mcp-servers install` in the checkout",
            )
        })?;
    let launcher = mcp::examples::Launcher::new(servers, dir.join("run")).ready_within(Duration::from_secs(60));
    let port = free_port()?;
    let everything = launcher.everything(port).await.map_err(|e| abort("server-everything", e))?;
    let proxy = FaultProxy::start(port).await.map_err(|e| abort("fault proxy", e))?;
    let configs = dir.join("configs");
    chaos_configs(&env.config_dir, &configs, proxy.port)?;
    let env =
        Env { exe: env.exe.clone(), config_dir: configs, models_dir: env.models_dir.clone(), http: env.http.clone() };
    let token = admin_token();
    let up = Proc::spawn(
        &env,
        dir,
        "up",
        &[
            "--data-dir".into(),
            data.display().to_string(),
            "up".into(),
            "--no-examples".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin-token".into(),
            token.clone(),
            "--rate-limit".into(),
            "0".into(),
        ],
    )?;
    let mut rig = McpRig { up, base: String::new(), token, env, everything, launcher, proxy };
    rig.base = rig.up.address("health", Duration::from_secs(120)).await?;
    Ok(rig)
}

impl McpRig {
    /// The API of its `cogo up`, with the admin token.
    pub(super) fn api(&self) -> Api<'_> {
        Api { http: &self.env.http, base: self.base.clone(), token: self.token.clone() }
    }
}

/// Enqueues `echo` calls one every `pace`; `during(n)` runs before call `n` is sent.
async fn echo_calls(api: &Api<'_>, label: &str, calls: usize, pace: Duration) -> Result<Vec<(String, String)>, Abort> {
    let mut sent = Vec::with_capacity(calls);
    for n in 0..calls {
        let text = format!("chaos-{label}-{n}");
        let enqueued = api
            .post(
                "/api/mcp/enqueue",
                json!({"toolset": "everything", "tool": "echo", "params": {"message": text}, "tenant": "chaos", "idempotency_key": text}),
            )
            .await
            .map_err(|e| abort("enqueue MCP calls", e))?;
        sent.push((enqueued["id"].as_str().unwrap_or_default().to_owned(), text));
        tokio::time::sleep(pace).await;
    }
    Ok(sent)
}

/// Waits for every call to finish; each one's final message JSON.
async fn finish_all(api: &Api<'_>, sent: &[(String, String)], limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut finished = Vec::with_capacity(sent.len());
    for (id, _) in sent {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        match super::finished_message(api, id, left).await {
            Ok(message) => finished.push(message),
            Err(_) => finished.push(api.get(&format!("/api/messages/{id}")).await.unwrap_or(Value::Null)),
        }
    }
    finished
}

/// The figures of a run of MCP calls: done with the right answer, dead-lettered, lost (still
/// open or answered with another call's text), completions per message, failed attempts.
async fn mcp_tally(api: &Api<'_>, sent: &[(String, String)], finished: &[Value]) -> Result<Figures, Abort> {
    let mut figures = Figures { sent: sent.len() as u64, ..Figures::default() };
    let mut wrong = Vec::new();
    for ((id, text), message) in sent.iter().zip(finished) {
        match message["status"].as_str() {
            Some("done") => {
                let answer = message["result"]["result"].to_string();
                if answer.contains(&format!("{text}\"")) || answer.contains(&format!("{text}\\\"")) {
                    figures.completed += 1;
                } else {
                    wrong.push(format!("{id}: {}", short(&message["result"])));
                    figures.lost += 1;
                }
                if message["attempts"].as_i64().unwrap_or(1) > 1 {
                    figures.reexecuted += 1;
                }
            }
            Some("dead") | Some("failed") => figures.dead_lettered += 1,
            _ => figures.lost += 1,
        }
    }
    if !wrong.is_empty() {
        return Err(abort("answers", format!("calls answered with another call's text: {}", wrong.join("; "))));
    }
    let succeeded = api
        .all("/api/events?tenant=chaos&event_type=mcp_call_succeeded", sent.len() * 4 + 10)
        .await
        .map_err(|e| abort("events", e))?;
    let mut per_message: HashMap<String, u32> = HashMap::new();
    for event in &succeeded {
        *per_message.entry(event["message_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    figures.duplicated = per_message.values().filter(|n| **n > 1).count() as u64;
    let failed = api
        .all("/api/events?tenant=chaos&event_type=mcp_call_failed", sent.len() * 20 + 10)
        .await
        .map_err(|e| abort("events", e))?;
    figures.failed_attempts = failed.len() as u64;
    Ok(figures)
}

/// When a message finished (`done_at`), for recovery times.
fn done_at(message: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    message["done_at"].as_str().and_then(|t| t.parse().ok())
}

/// `mcp-restart`, `mcp-slow` and `mcp-flapping`.
async fn mcp_scenario(
    stage: &mut Stage,
    env: &Env,
    dir: &Path,
    args: &ChaosArgs,
    fault: McpFault,
) -> Result<Outcome, Abort> {
    let data = dir.join("data");
    let mut rig = mcp_rig(env, dir, &data).await?;
    stage.check("cogo up started", Ok(format!("{} calling server-everything through a fault proxy", rig.base)));
    let calls = args.calls as usize;
    let label = match fault {
        McpFault::Restart => "restart",
        McpFault::Slow => "slow",
        McpFault::Flapping => "flapping",
    };
    // the fault starts after a quarter of the calls, in the background while calls go on
    let pace = Duration::from_millis(100);
    let fault_at = calls / 4;
    let first = echo_calls(&rig.api(), label, fault_at, pace).await?;
    let fault_started = chrono::Utc::now();
    let fault_instant = Instant::now();
    let mut faults = 0u32;
    let (second, fault_ended) = match fault {
        McpFault::Restart => {
            rig.everything.kill();
            faults += 1;
            let api = rig.api();
            let down_label = format!("{label}-down");
            let during = echo_calls(&api, &down_label, (calls / 4).max(1), pace);
            let (during, ()) = tokio::join!(during, tokio::time::sleep(Duration::from_secs(2)));
            let during = during?;
            let port = rig.everything.port();
            rig.everything =
                rig.launcher.everything(port).await.map_err(|e| abort("restarting server-everything", e))?;
            stage.check(
                "server killed and started again",
                Ok(format!("kill -9, back and answering pings after {} ms", fault_instant.elapsed().as_millis())),
            );
            (during, chrono::Utc::now())
        }
        McpFault::Slow | McpFault::Flapping => {
            let proxy_mode = rig.proxy.mode.clone();
            let injector = async move {
                let until = Instant::now() + Duration::from_secs(3);
                let mut flips = 0u32;
                match fault {
                    McpFault::Slow => {
                        proxy_mode.send_replace(ProxyMode::Delay(Duration::from_millis(700)));
                        tokio::time::sleep_until(until.into()).await;
                        flips = 1;
                    }
                    _ => {
                        while Instant::now() < until {
                            proxy_mode.send_replace(ProxyMode::Down);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            proxy_mode.send_replace(ProxyMode::Pass);
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            flips += 1;
                        }
                    }
                }
                proxy_mode.send_replace(ProxyMode::Pass);
                (flips, chrono::Utc::now())
            };
            let api = rig.api();
            let during_label = format!("{label}-during");
            let during = echo_calls(&api, &during_label, (calls / 4).max(1), pace);
            let (during, (flips, ended)) = tokio::join!(during, injector);
            faults += flips;
            stage.check(
                match fault {
                    McpFault::Slow => "answers held 700 ms each way for 3 s (tool timeout 1 s)",
                    _ => "every connection cut every 500 ms for 3 s",
                },
                Ok(format!(
                    "{flips} faults; {} connections through the proxy",
                    rig.proxy.connections.load(Ordering::Relaxed)
                )),
            );
            (during?, ended)
        }
    };
    let rest = calls.saturating_sub(first.len() + second.len());
    let third = echo_calls(&rig.api(), &format!("{label}-after"), rest, pace).await?;
    let sent: Vec<(String, String)> = first.into_iter().chain(second).chain(third).collect();
    let api = rig.api();
    let finished = finish_all(&api, &sent, Duration::from_secs(120)).await;
    let mut figures = mcp_tally(&api, &sent, &finished).await?;
    figures.faults_injected = faults;
    // recovery: the first call finished after the fault ended, measured from the fault's end
    let first_after = finished.iter().filter_map(done_at).filter(|t| *t >= fault_ended).min();
    if let Some(first_after) = first_after {
        let ms = (first_after - fault_ended).num_milliseconds().max(0) as u64;
        figures.recoveries.push(format!(
            "first answer {ms} ms after the fault ended ({} ms after it began)",
            (first_after - fault_started).num_milliseconds()
        ));
        figures.recover_ms = Some(ms);
    }
    stage.check(
        "every call finished",
        if figures.completed + figures.dead_lettered == sent.len() as u64 {
            Ok(format!(
                "{} calls: {} done with their own answer, {} failed attempts retried",
                sent.len(),
                figures.completed,
                figures.failed_attempts
            ))
        } else {
            Err(format!("{} of {} calls still open", figures.lost, sent.len()))
        },
    );
    judge(stage, &figures);
    stage.check(
        "no call dead-lettered",
        if figures.dead_lettered == 0 {
            Ok("the retry policy outlasted the fault".into())
        } else {
            Err(format!("{} calls ended in the dead-letter queue", figures.dead_lettered))
        },
    );
    stage.check(
        "failures were seen and retried",
        if figures.failed_attempts > 0 {
            Ok(format!("{} failed attempts", figures.failed_attempts))
        } else {
            Err("no attempt failed: the fault did not reach the calls".into())
        },
    );
    stage.check("cogo up stops on SIGTERM", rig.up.stop(Duration::from_secs(30)).await);
    Ok(Outcome::Ran(figures))
}

// ---------------------------------------------------------------- artifacts

/// A small tmpfs mounted over a directory, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mounting a {size} tmpfs needs root with CAP_SYS_ADMIN: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { path: path.to_path_buf() })
    }

    fn remount(&self, mode: &str) -> Result<(), String> {
        let output = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("remount {mode}: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    /// Writes a file until the disk refuses; the bytes written.
    fn fill(&self) -> Result<u64, String> {
        let mut file =
            std::fs::File::create(self.path.join("filler")).map_err(|e| format!("creating the filler: {e}"))?;
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => return Ok(written),
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => return Ok(written),
                Err(e) => return Err(format!("filling the disk: {e}")),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// `artifacts-unwritable`: MCP calls while the artifact directory is full, then read-only.
async fn artifacts_scenario(stage: &mut Stage, env: &Env, dir: &Path) -> Result<Outcome, Abort> {
    let data = dir.join("data");
    let disk = match SmallDisk::mount(&data.join("artifacts"), "1m") {
        Ok(disk) => disk,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let rig = mcp_rig(env, dir, &data).await?;
    stage.check("cogo up started", Ok(format!("{} with artifacts on a 1 MiB tmpfs", rig.base)));
    let api = rig.api();
    let pace = Duration::from_millis(50);
    let mut sent = echo_calls(&api, "before", 5, pace).await?;
    let mut figures = Figures::default();

    let filled = disk.fill().map_err(|e| abort("disk full", e))?;
    figures.faults_injected += 1;
    let full = echo_calls(&api, "disk-full", 10, pace).await?;
    let full_done = finish_all(&api, &full, Duration::from_secs(60)).await;
    let _ = std::fs::remove_file(disk.path.join("filler"));
    stage.check("artifact disk full", Ok(format!("{filled} bytes of filler, then 10 calls")));
    sent.extend(full.iter().cloned());

    disk.remount("ro").map_err(|e| abort("read-only", e))?;
    figures.faults_injected += 1;
    let read_only = echo_calls(&api, "read-only", 10, pace).await?;
    let read_only_done = finish_all(&api, &read_only, Duration::from_secs(60)).await;
    disk.remount("rw").map_err(|e| abort("read-write", e))?;
    stage.check("artifact disk read-only", Ok("remounted read-only, then 10 calls".into()));
    sent.extend(read_only.iter().cloned());

    let fault_ended = chrono::Utc::now();
    let after = echo_calls(&api, "after", 5, pace).await?;
    sent.extend(after.iter().cloned());
    let finished = finish_all(&api, &sent, Duration::from_secs(60)).await;
    let counted = mcp_tally(&api, &sent, &finished).await?;
    figures = Figures { faults_injected: figures.faults_injected, ..counted };

    // during the faults: answers inline, the failure in the event and the counter
    let unwritten: Vec<&Value> = full_done.iter().chain(&read_only_done).collect();
    let inline = unwritten.iter().filter(|m| m["status"] == "done" && !m["result"]["result"].is_null()).count();
    stage.check(
        "answers kept inline while the disk refused",
        if inline == unwritten.len() {
            Ok(format!("{inline} of {} calls done with their answer in the message", unwritten.len()))
        } else {
            Err(format!("{inline} of {} calls done with their answer inline", unwritten.len()))
        },
    );
    let events =
        api.all("/api/events?tenant=chaos&event_type=mcp_call_succeeded", 200).await.map_err(|e| abort("events", e))?;
    let reported = events.iter().filter(|e| e["payload"]["artifacts_error"].is_string()).count();
    let example =
        events.iter().find_map(|e| e["payload"]["artifacts_error"].as_str().map(str::to_owned)).unwrap_or_default();
    stage.check(
        "the failure is recorded",
        if reported >= unwritten.len() {
            Ok(format!("{reported} events carry artifacts_error, e.g. {example:?}"))
        } else {
            Err(format!("{reported} events carry artifacts_error, expected {}", unwritten.len()))
        },
    );
    let metrics = api.text("/metrics").await.map_err(|e| abort("metrics", e))?;
    let counted = super::metric_sum(&metrics, model::metrics::ARTIFACT_WRITE_FAILURES_TOTAL, &[("family", "mcp")]);
    stage.check(
        "and counted",
        match counted {
            Ok(n) if n >= unwritten.len() as f64 => {
                Ok(format!("{} {n}", model::metrics::ARTIFACT_WRITE_FAILURES_TOTAL))
            }
            Ok(n) => Err(format!(
                "{} is {n}, expected at least {}",
                model::metrics::ARTIFACT_WRITE_FAILURES_TOTAL,
                unwritten.len()
            )),
            Err(e) => Err(e),
        },
    );
    // recovery: the calls after the disk came back have their artifacts again
    let after_done = finish_all(&api, &after, Duration::from_secs(30)).await;
    let mut written = 0;
    for message in &after_done {
        let dir = message["result"]["artifacts"].as_str().unwrap_or_default();
        let route = format!("/api/{}/{}", dir.trim_matches('/'), model::artifact::mcp_files::SUMMARY);
        if !dir.is_empty() && api.text(&route).await.is_ok() {
            written += 1;
        }
    }
    if let Some(first) = after_done.iter().filter_map(done_at).min() {
        let ms = (first - fault_ended).num_milliseconds().max(0) as u64;
        figures.recover_ms = Some(ms);
        figures
            .recoveries
            .push(format!("artifacts written again for the first call after the disk came back ({ms} ms)"));
    }
    stage.check(
        "artifacts written again once the disk is back",
        if written == after.len() {
            Ok(format!("{written} calls with their summary.json"))
        } else {
            Err(format!("{written} of {} calls with their summary.json", after.len()))
        },
    );
    judge(stage, &figures);
    stage.check("cogo up stops on SIGTERM", rig.up.stop(Duration::from_secs(30)).await);
    drop(disk);
    Ok(Outcome::Ran(figures))
}
