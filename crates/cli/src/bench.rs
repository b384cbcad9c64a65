//! `cogo bench bus` and `cogo bench resilience`: figures printed as JSON, measured on real stores.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::args::{BenchBackend, BenchBusArgs, BenchCommand, BenchGatewayArgs, BenchJson, Global};

pub async fn run(global: &Global, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Bus(args) => bus(global, args).await,
        BenchCommand::Resilience(args) => resilience(args),
        BenchCommand::Gateway(args) => gateway(global, args).await,
        BenchCommand::Search(args) => crate::knowledge_bench::search(global, args).await,
        BenchCommand::Ingest(args) => crate::knowledge_bench::ingest(global, args).await,
        BenchCommand::Graph(args) => crate::knowledge_bench::graph(global, args).await,
        BenchCommand::Soak(args) => crate::gate::soak::run(global, args).await,
        BenchCommand::Drain(args) => crate::gate::drain::run(global, args).await,
    }
}

pub fn print_report(report: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

pub fn spread(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    json!({ "p50": percentile(samples, 0.5), "p95": percentile(samples, 0.95), "p99": percentile(samples, 0.99) })
}

pub fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The global options with the data dir moved to `work/data` (the artifact store of a benchmark,
/// unless `--artifacts-url` names another).
fn scratch_artifacts(global: &Global, work: &std::path::Path) -> Global {
    let mut scoped = global.clone();
    scoped.data_dir = work.join("data");
    scoped
}

/// `bench gateway`: server-everything behind supergateway (WebSocket) on loopback; `echo` called
/// directly with rmcp and through the gateway, alternately (overhead = the paired difference); calls/s through the gateway at
/// concurrency 1, 8 and 64 on one session; enqueue→succeeded through the bus and the gateway worker.
async fn gateway(global: &Global, args: BenchGatewayArgs) -> anyhow::Result<()> {
    let _metrics = crate::node::metrics_render()?;
    let servers_dir = args
        .mcp_servers
        .clone()
        .or_else(mcp::examples::default_servers_dir)
        .context("no mcp-servers directory found: run from the COGO checkout or pass --mcp-servers DIR")?;
    let work = tempfile::Builder::new().prefix("cogo-bench-gw-").tempdir().context("creating a scratch directory")?;
    let launcher = mcp::examples::Launcher::new(servers_dir, work.path().join("run"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    eprintln!("bench: starting server-everything over WebSocket on 127.0.0.1:{port}");
    let server = launcher.everything(port).await?;
    let toolset = mcp::examples::websocket_toolset(server.port(), 30_000);
    let timeout = Duration::from_secs(30);
    let calls = args.calls.max(10);
    let echo = |n: usize| json!({ "message": format!("bench {n}") });
    // 1. overhead: direct rmcp call vs. the same call through the gateway, alternating
    let direct = mcp::McpClient::connect("everything", &toolset, timeout).await?;
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    // a scratch directory, or the store of --artifacts-url (to measure the gateway writing to S3)
    let artifacts = crate::settings::open_artifacts(&scratch_artifacts(global, work.path()), "bench").await?;
    let gateway = Arc::new(mcp::Gateway::new(
        [("everything".to_owned(), toolset.clone())].into_iter().collect(),
        breakers,
        artifacts.clone(),
        "bench",
    ));
    let call = |n: usize| mcp::McpCall { toolset: "everything".into(), tool: "echo".into(), params: echo(n) };
    let context = mcp::CallContext { attempt: 1, ..Default::default() };
    for n in 0..50 {
        direct.call("echo", echo(n), timeout).await?;
        gateway.call_once(&call(n), &context).await?;
    }
    eprintln!("bench: {calls} echo calls direct and through the gateway, alternating");
    let (mut direct_ms, mut gateway_ms) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for n in 0..calls {
        let started = Instant::now();
        direct.call("echo", echo(n), timeout).await?;
        direct_ms.push(elapsed_ms(started));
        let started = Instant::now();
        gateway.call_once(&call(n), &context).await?;
        gateway_ms.push(elapsed_ms(started));
    }
    direct.close().await;
    // the artifacts are written behind the answers: how long the last of them took to land
    let in_flight = artifacts.in_flight();
    let started = Instant::now();
    gateway.flush().await;
    let flush_ms = elapsed_ms(started);
    // the overhead of each call is its gateway time minus the direct call made right before it
    let mut overhead_ms: Vec<f64> = gateway_ms.iter().zip(&direct_ms).map(|(g, d)| g - d).collect();
    let overhead = spread(&mut overhead_ms);
    let direct_spread = spread(&mut direct_ms);
    let gateway_spread = spread(&mut gateway_ms);
    // the file system's share: one call's artifact files (a directory and three small files)
    let mut artifact_fs_ms = Vec::with_capacity(500);
    let fs_dir = work.path().join("fs-probe");
    for n in 0..500 {
        let started = Instant::now();
        let dir = fs_dir.join(n.to_string());
        std::fs::create_dir_all(&dir)?;
        for name in ["request.json", "summary.json", "response.json"] {
            std::fs::write(dir.join(name), [b' '; 300])?;
        }
        artifact_fs_ms.push(elapsed_ms(started));
    }
    let artifact_fs = spread(&mut artifact_fs_ms);
    // 2. calls in flight on one session
    let mut calls_per_s = serde_json::Map::new();
    let mut answered_per_s = serde_json::Map::new();
    let mut gateway_calls = 50 + calls;
    for concurrency in [1usize, 8, 64] {
        let total = calls.max(concurrency * 10);
        eprintln!("bench: {total} gateway calls at concurrency {concurrency}");
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (gateway, next, context) = (gateway.clone(), next.clone(), context.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= total {
                            return Ok::<_, mcp::GatewayError>(());
                        }
                        let call = mcp::McpCall {
                            toolset: "everything".into(),
                            tool: "echo".into(),
                            params: json!({ "message": format!("bench {n}") }),
                        };
                        gateway.call_once(&call, &context).await?;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.context("a bench task panicked")??;
        }
        // how fast the session answers, and how fast calls finish with every artifact written
        let answered = started.elapsed();
        gateway.flush().await;
        calls_per_s.insert(concurrency.to_string(), json!((total as f64 / started.elapsed().as_secs_f64()).round()));
        answered_per_s.insert(concurrency.to_string(), json!((total as f64 / answered.as_secs_f64()).round()));
        gateway_calls += total;
    }
    // 3. end to end through the bus
    let scratch = scratch_database(global, args.backend, POSTGRES_ADMIN).await?;
    let end_to_end = gateway_end_to_end(&scratch.url, toolset, artifacts.clone(), calls.min(1000)).await;
    if let Some((admin, database)) = &scratch.cleanup
        && let Err(err) = store::drop_postgres_database(admin, database).await
    {
        tracing::warn!(error = %err, database, "could not drop the scratch database");
    }
    drop(server);
    let (end_to_end_ms, end_to_end_calls) = end_to_end?;
    // every call left its summary.json
    let made = gateway_calls + END_TO_END_WARMUP + end_to_end_calls;
    let written = artifacts
        .walk("artifacts/mcp/everything", 8 * made)
        .await?
        .iter()
        .filter(|f| f.path.ends_with("/summary.json"))
        .count();
    anyhow::ensure!(written == made, "{written} calls left their artifacts, expected {made}");
    let report = json!({
        "backend": match args.backend { BenchBackend::Sqlite => "sqlite", BenchBackend::Postgres => "postgres" },
        "transport": "websocket",
        "tool": "everything.echo",
        "calls": calls,
        "overhead_ms": overhead,
        "direct_ms": direct_spread,
        "gateway_ms": gateway_spread,
        "artifact_fs_ms": artifact_fs,
        "artifacts_in_flight_after_calls": in_flight,
        "artifacts_flush_ms": (flush_ms * 1000.0).round() / 1000.0,
        "artifacts_written": written,
        "calls_per_s": calls_per_s,
        "calls_per_s_answered": answered_per_s,
        "end_to_end_ms": end_to_end_ms,
        "end_to_end_calls": end_to_end_calls,
        "includes": "gateway: breaker, session, artifacts handed to the writer (request/response/summary written behind the answer, at most 256 calls in flight), metrics; calls_per_s: until every call's artifacts are written (calls_per_s_answered: until the last answer); end to end: enqueue, wake-up, claim, gateway call, artifacts written, completion with events",
    });
    print_report(&report, args.json)
}

/// Calls through the bus before the measured ones.
const END_TO_END_WARMUP: usize = 20;

/// Enqueues `calls` echo calls one at a time (each after the previous finished) and measures
/// enqueue→done from the stored timestamps.
async fn gateway_end_to_end(
    url: &str,
    toolset: model::config::mcp::Toolset,
    artifacts: artifacts::Artifacts,
    calls: usize,
) -> anyhow::Result<(serde_json::Value, usize)> {
    let store = store::Store::open(url, store::StoreOptions::default()).await?;
    store.migrate().await?;
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    let gateway = Arc::new(mcp::Gateway::new(
        [("everything".to_owned(), toolset)].into_iter().collect(),
        breakers,
        artifacts,
        "e2e",
    ));
    let handler = Arc::new(mcp::GatewayHandler::new(gateway, 64 * 1024));
    let retry: worker::RetryResolver = Arc::new(move |m: &model::Message| policies.retry(&worker::policy_key(m)));
    let mut config = worker::RuntimeConfig::new("mcp", "gateway", "bench-gateway");
    config.poll_interval = Duration::from_millis(500);
    let runtime = worker::Runtime::new(store.clone(), config, handler, retry);
    let stats = runtime.stats();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runtime.run(stopped));
    let intent = model::Intent::new("mcp_call").context("intent")?;
    eprintln!("bench: {calls} calls enqueued one at a time through the bus");
    let mut ids = Vec::with_capacity(calls);
    for n in 0..calls + END_TO_END_WARMUP {
        let payload = json!({ "toolset": "everything", "tool": "echo", "params": { "message": format!("e2e {n}") } });
        let id = store.enqueue(model::NewMessage::new("mcp", "gateway", intent.clone(), payload)).await?.message.id;
        let started = Instant::now();
        while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed)
            + stats.failed.load(std::sync::atomic::Ordering::Relaxed)
            <= n as u64
        {
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("call {n} did not finish within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // the first ones warm the session and the caches
        if n >= END_TO_END_WARMUP {
            ids.push(id);
        }
    }
    stop.send(true).ok();
    task.await.ok();
    let mut latencies = Vec::with_capacity(ids.len());
    for id in ids {
        let message = store.message(id).await?;
        anyhow::ensure!(
            message.status == model::MessageStatus::Done,
            "call {id} ended {:?}: {:?}",
            message.status,
            message.last_error
        );
        let done = message.done_at.context("a done message has done_at")?;
        latencies.push((done - message.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    store.close().await;
    let count = latencies.len();
    Ok((spread(&mut latencies), count))
}

/// CPU time (µs) used so far by local processes whose name starts with `prefix`, from /proc; `None`
/// where /proc is unavailable. Used to report database CPU per job when the server is local.
fn cpu_micros(prefix: &str) -> Option<u64> {
    let ticks_per_s = 100u64; // USER_HZ on Linux
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        // processes only: `self` and `thread-self` are this process again (counted twice before)
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = match std::fs::read_to_string(entry.path().join("stat")) {
            Ok(stat) => stat,
            Err(_) => continue,
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // fields after the name: state is 0, utime is 11, stime is 12
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        total += (utime + stime) * 1_000_000 / ticks_per_s;
    }
    Some(total)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[index.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

/// A database made for one run and dropped after it.
pub struct Scratch {
    /// Its URL.
    pub url: String,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Drops the PostgreSQL database (a SQLite scratch file goes with its directory).
    pub async fn cleanup(&self) {
        if let Some((admin, database)) = &self.cleanup
            && let Err(err) = store::drop_postgres_database(admin, database).await
        {
            tracing::warn!(database = %database, error = %err, "could not drop the scratch database");
        }
    }
}

/// The admin URL of the bus's PostgreSQL (the local `test` database).
pub const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The admin URL of the PostgreSQL with pgvector that `scripts/pgvector start` runs.
pub const PGVECTOR_ADMIN: &str = "postgres://postgres@127.0.0.1:5433/postgres";

/// The URL of `database` on the same PostgreSQL server as `admin` (which names its database last).
pub fn sibling_database_url(admin: &str, database: &str) -> anyhow::Result<String> {
    let (base, _) = admin.rsplit_once('/').context("--database-url must end with /DATABASE")?;
    Ok(format!("{base}/{database}"))
}

/// A scratch database: a temporary SQLite file, or a new database on the PostgreSQL server of
/// `--database-url` (default `default_admin`).
pub async fn scratch_database(global: &Global, backend: BenchBackend, default_admin: &str) -> anyhow::Result<Scratch> {
    let tag = model::new_id().simple().to_string()[20..].to_owned();
    match backend {
        BenchBackend::Sqlite => {
            let dir =
                tempfile::Builder::new().prefix("cogo-bench-").tempdir().context("creating a scratch directory")?;
            Ok(Scratch {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                cleanup: None,
                _dir: Some(dir),
            })
        }
        BenchBackend::Postgres => {
            let admin = global.database_url.clone().unwrap_or_else(|| default_admin.to_owned());
            let database = format!("cogo_bench_{tag}");
            store::create_postgres_database(&admin, &database)
                .await
                .context("creating a scratch database (needs CREATEDB)")?;
            Ok(Scratch { url: sibling_database_url(&admin, &database)?, cleanup: Some((admin, database)), _dir: None })
        }
    }
}

async fn bus(global: &Global, args: BenchBusArgs) -> anyhow::Result<()> {
    let _metrics = crate::node::metrics_render()?;
    let scratch = scratch_database(global, args.backend, POSTGRES_ADMIN).await?;
    let result = bus_on(&scratch.url, &args).await;
    if let Some((admin, database)) = &scratch.cleanup
        && let Err(err) = store::drop_postgres_database(admin, database).await
    {
        tracing::warn!(error = %err, database, "could not drop the scratch database");
    }
    let report = result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

async fn bus_on(url: &str, args: &BenchBusArgs) -> anyhow::Result<serde_json::Value> {
    let options = store::StoreOptions::default().with_max_connections((args.concurrency as u32 / 2).clamp(4, 16));
    let store = store::Store::open(url, options).await?;
    store.migrate().await?;
    let jobs = args.jobs.max(1);
    let job = |n: usize| {
        model::NewMessage::new(
            "bench",
            "noop",
            model::Intent::new("noop").unwrap_or_else(|_| unreachable!("static intent")),
            json!({ "n": n }),
        )
    };
    // 1. bulk enqueue
    eprintln!("bench: enqueueing {jobs} jobs in batches of 1000");
    let started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        store.enqueue_batch(chunk.iter().map(|n| job(*n)).collect()).await?;
    }
    let enqueue_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    // 2. drain with the real worker runtime
    eprintln!("bench: draining with {} handlers, batch {}", args.concurrency, args.batch);
    let seen: Arc<Mutex<HashMap<model::MessageId, u32>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        let latencies = latencies.clone();
        move |message: model::Message| -> BoxFuture<Result<worker::HandlerOutput, worker::HandlerError>> {
            let waited = (chrono::Utc::now() - message.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            *seen.lock().unwrap_or_else(|p| p.into_inner()).entry(message.id).or_default() += 1;
            latencies.lock().unwrap_or_else(|p| p.into_inner()).push(waited);
            Box::pin(async { Ok(worker::HandlerOutput::default()) })
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut config = worker::RuntimeConfig::new("bench", "noop", "bench-agent");
    config.concurrency = args.concurrency.max(1);
    config.batch = args.batch.max(1);
    config.poll_interval = Duration::from_millis(500);
    let retry: worker::RetryResolver = Arc::new(|_m: &model::Message| model::retry::RetryPolicy::default());
    let runtime = worker::Runtime::new(store.clone(), config, Arc::new(handler), retry);
    let stats = runtime.stats();
    let database_cpu_before = if url.starts_with("postgres") { cpu_micros("postgres") } else { None };
    let own_cpu_before = cpu_micros("cogo");
    let started = Instant::now();
    let task = tokio::spawn(runtime.run(stopped));
    while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed) < jobs as u64 {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("drain did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    let per_job = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if a >= b => Some(((a - b) as f64 / jobs as f64 * 10.0).round() / 10.0),
        _ => None,
    };
    let database_cpu_us_per_job =
        per_job(database_cpu_before, if url.starts_with("postgres") { cpu_micros("postgres") } else { None });
    let cogo_cpu_us_per_job = per_job(own_cpu_before, cpu_micros("cogo"));
    let claim_queries = stats.claim_queries.load(std::sync::atomic::Ordering::Relaxed);
    // 3. single enqueue, one at a time, while workers wait
    latencies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let singles = 1000.min(jobs);
    eprintln!("bench: {singles} single enqueues, measuring enqueue→claim with idle workers");
    let mut enqueue_times = Vec::with_capacity(singles);
    for n in 0..singles {
        let t = Instant::now();
        store.enqueue(job(jobs + n)).await?;
        enqueue_times.push(t.elapsed().as_secs_f64() * 1000.0);
        // spacing so each job is claimed by a waiting worker, not in a batch
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let single_elapsed: f64 = enqueue_times.iter().sum::<f64>() / 1000.0;
    while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed) < (jobs + singles) as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).ok();
    task.await.ok();
    let mut latency = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    latency.sort_by(|a, b| a.total_cmp(b));
    enqueue_times.sort_by(|a, b| a.total_cmp(b));
    let (duplicates, lost) = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let duplicates: u32 = seen.values().map(|c| c - 1).sum();
        (duplicates, (jobs + singles).saturating_sub(seen.len()))
    };
    store.close().await;
    Ok(json!({
        "backend": if url.starts_with("sqlite") { "sqlite" } else { "postgres" },
        "jobs": jobs,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "enqueue_per_s": enqueue_per_s.round(),
        "drain_per_s": drain_per_s.round(),
        "single_enqueue_per_s": (singles as f64 / single_elapsed).round(),
        "single_enqueue_p50_ms": percentile(&enqueue_times, 0.5),
        "latency_ms": { "p50": percentile(&latency, 0.5), "p95": percentile(&latency, 0.95), "p99": percentile(&latency, 0.99) },
        "claim_queries": claim_queries,
        "drain_cpu_us_per_job": { "postgres": database_cpu_us_per_job, "cogo": cogo_cpu_us_per_job },
        "lost": lost,
        "duplicates": duplicates,
        "events_recorded": true,
    }))
}

fn resilience(args: BenchJson) -> anyhow::Result<()> {
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = resilience::Breakers::new(policies.clone(), None);
    let key = "mcp.call.browser.browser_navigate.0";
    let policy_key = "mcp.call.browser.browser_navigate";
    let iterations: u64 = 2_000_000;
    // warm: create the breaker and fill the policy cache
    for i in 0..1000 {
        let permit = breakers.acquire_at(key, i).map_err(|e| anyhow::anyhow!("{e}"))?;
        breakers.record_at(key, permit, model::breaker::Outcome::Success, i);
        std::hint::black_box(policies.retry(policy_key));
    }
    let started = Instant::now();
    for i in 0..iterations {
        let permit = breakers.acquire_at(key, i).map_err(|e| anyhow::anyhow!("{e}"))?;
        breakers.record_at(key, permit, model::breaker::Outcome::Success, i);
        std::hint::black_box(policies.retry(policy_key));
    }
    let ns = started.elapsed().as_nanos() as f64 / iterations as f64;
    let report = json!({ "ns_per_check": (ns * 10.0).round() / 10.0, "iterations": iterations, "includes": "breaker acquire + record + retry policy lookup" });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sibling_database_url;

    #[test]
    fn a_sibling_database_lives_on_the_admin_urls_server() {
        let url = sibling_database_url("postgres://postgres@127.0.0.1:5433/postgres", "cogo_bench_x").expect("a URL");
        assert_eq!(url, "postgres://postgres@127.0.0.1:5433/cogo_bench_x");
        let err = sibling_database_url("postgres:", "cogo_bench_x").expect_err("no database part");
        assert!(err.to_string().contains("--database-url must end with /DATABASE"), "{err}");
    }
}
