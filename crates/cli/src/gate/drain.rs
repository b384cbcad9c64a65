//! `cogo bench drain`: how fast separate `cogo worker` processes drain one PostgreSQL queue, for
//! each process count asked (1, 2 and 4 by default). N noop messages are enqueued first, then the
//! processes start together; the rate is taken from the store's own timestamps (first claim to
//! last completion), so process start-up does not count. Each run has a fresh database and reports
//! each process's share, so an unfair split shows. With `--modes edge` the workers are edge workers
//! of one `cogo serve` (each with its own token), so the figures show what the WebSocket costs.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{Abort, Env, Proc};
use crate::args::{BenchDrainArgs, DrainMode, Global};

/// `cogo bench drain`.
pub async fn run(global: &Global, args: BenchDrainArgs) -> anyhow::Result<()> {
    let env = Env::new(global)?;
    let dir = tempfile::Builder::new().prefix("cogo-drain-").tempdir().context("creating a scratch directory")?;
    let mut runs = Vec::new();
    for mode in &args.modes {
        for processes in args.workers.iter().map(|&k| usize::from(k)) {
            let label = mode_name(*mode);
            eprintln!(
                "drain: {} messages, {processes} {label} worker process(es), concurrency {} each",
                args.messages, args.concurrency
            );
            let scratch = crate::bench::scratch_database(
                global,
                crate::args::BenchBackend::Postgres,
                crate::bench::POSTGRES_ADMIN,
            )
            .await?;
            let dir = dir.path().join(format!("{label}-k{processes}"));
            let run = one(&env, &dir, &scratch.url, processes, *mode, &args).await;
            scratch.cleanup().await;
            let run = run.map_err(|Abort(what, why)| anyhow::anyhow!("{what}: {why}"))?;
            eprintln!(
                "  {processes} {label} process(es): {:.0} messages/s, drained in {:.2} s, shares {}",
                run["per_second"].as_f64().unwrap_or_default(),
                run["drain_s"].as_f64().unwrap_or_default(),
                run["shares"]
            );
            runs.push(run);
        }
    }
    let report = json!({ "bench": "drain", "backend": "postgres", "messages": args.messages, "concurrency": args.concurrency, "runs": runs });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "{:>6} {:>9} {:>12} {:>9}  shares", "mode", "processes", "messages/s", "drain_s")?;
        for run in &runs {
            writeln!(
                out,
                "{:>6} {:>9} {:>12.0} {:>9.2}  {}",
                run["mode"].as_str().unwrap_or_default(),
                run["processes"],
                run["per_second"].as_f64().unwrap_or_default(),
                run["drain_s"].as_f64().unwrap_or_default(),
                run["shares"]
            )?;
        }
    }
    Ok(())
}

fn mode_name(mode: DrainMode) -> &'static str {
    match mode {
        DrainMode::Direct => "direct",
        DrainMode::Edge => "edge",
    }
}

async fn one(
    env: &Env,
    dir: &std::path::Path,
    url: &str,
    processes: usize,
    mode: DrainMode,
    args: &BenchDrainArgs,
) -> Result<serde_json::Value, Abort> {
    let abort = |what: &str, why: String| Abort(what.to_owned(), why);
    let store =
        store::Store::open(url, store::StoreOptions::default()).await.map_err(|e| abort("store", e.to_string()))?;
    store.migrate().await.map_err(|e| abort("migrate", e.to_string()))?;
    let enqueued_at = Instant::now();
    super::chaos::enqueue_noops(&store, "drain", 0, args.messages as usize).await.map_err(|e| abort("enqueue", e))?;
    let enqueue_s = enqueued_at.elapsed().as_secs_f64();
    let common =
        ["--data-dir".to_owned(), dir.join("data").display().to_string(), "--database-url".to_owned(), url.to_owned()];
    // edge workers reach the queue through one server, each with its own token
    let mut server = None;
    let mut edge = Vec::new();
    if mode == DrainMode::Edge {
        let mut serve_args = common.to_vec();
        serve_args.extend(["serve", "--listen", "127.0.0.1:0"].map(str::to_owned));
        let mut serve = Proc::spawn(env, dir, "serve", &serve_args)?;
        let base = serve.address("health", Duration::from_secs(60)).await?;
        for n in 1..=processes {
            let (text, row) = secrets::tokens::generate_edge(&["noop".to_owned()], "bench drain", chrono::Utc::now());
            store.create_api_token(row).await.map_err(|e| abort("edge token", e.to_string()))?;
            edge.push(
                ["--server", &base, "--token", text.as_str(), "--name", &format!("drain-{n}")].map(str::to_owned),
            );
        }
        server = Some(serve);
    }
    let mut workers = Vec::new();
    for n in 1..=processes {
        let mut worker_args = common.to_vec();
        worker_args
            .extend(["worker", "--roles", "noop", "--concurrency", &args.concurrency.to_string()].map(str::to_owned));
        if let Some(edge_args) = edge.get(n - 1) {
            worker_args.extend(edge_args.iter().cloned());
        }
        workers.push(Proc::spawn(env, dir, &format!("worker-{n}"), &worker_args)?);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match super::chaos::open_noops(&store).await {
            Some(0) => break,
            _ if Instant::now() > deadline => {
                store.close().await;
                return Err(abort("drain", "messages still open after 600 s".into()));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for worker in workers.into_iter().chain(server) {
        if let Err(why) = worker.stop(Duration::from_secs(30)).await {
            tracing::warn!("{why}");
        }
    }
    // the store's timestamps: first claim to last completion, and who did what
    let filter = store::MessageFilter {
        tenant: Some("drain".into()),
        status: Some(model::MessageStatus::Done),
        ..Default::default()
    };
    let mut page = store::PageRequest::first(1000);
    let (mut first, mut last, mut done) = (None, None, 0usize);
    let mut shares: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let got = store.messages(&filter, &page).await.map_err(|e| abort("reading the results", e.to_string()))?;
        for message in &got.items {
            done += 1;
            if let Some(claimed) = message.claimed_at {
                first = Some(first.map_or(claimed, |f: chrono::DateTime<chrono::Utc>| f.min(claimed)));
            }
            last = last.max(message.done_at);
            *shares.entry(message.claimed_by.clone().unwrap_or_default()).or_default() += 1;
        }
        match got.next {
            Some(cursor) => page = store::PageRequest { after: Some(cursor), ..page },
            None => break,
        }
    }
    store.close().await;
    if done != args.messages as usize {
        return Err(abort("results", format!("{done} of {} messages done", args.messages)));
    }
    let (Some(first), Some(last)) = (first, last) else { return Err(abort("results", "no timestamps".into())) };
    let drain_s = ((last - first).num_microseconds().unwrap_or(0) as f64 / 1e6).max(1e-6);
    let mut shares: Vec<usize> = shares.into_values().collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    Ok(json!({
        "mode": mode_name(mode),
        "processes": processes,
        "drain_s": (drain_s * 1000.0).round() / 1000.0,
        "per_second": (f64::from(args.messages) / drain_s).round(),
        "enqueue_s": (enqueue_s * 1000.0).round() / 1000.0,
        "shares": shares,
    }))
}
