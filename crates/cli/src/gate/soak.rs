//! `cogo bench soak`: mixed traffic against a real `cogo up` for a chosen time, in windows, to
//! show that memory stays flat and latency does not drift.
//!
//! The traffic, spread over each second at `--rate` operations a second: MCP `echo` calls
//! enqueued through the API (answered by `server-everything`), batches of noop messages written
//! to the store, and reads (summary, messages, events, agents, `/metrics`). Each window records
//! operations, errors, API latency p50/p99, the server's resident memory (median of a sample a
//! second), its heap in use and heap held free (from its `/metrics`), SQLite's share, and open
//! file descriptors. The verdict compares the last window with the second (the first warms up):
//! the heap in use outside SQLite may grow by at most 5 % or 16 MiB (more is a leak), resident
//! memory by at most 15 % or 32 MiB plus what SQLite's page caches took, p50 latency by at most 2x + 2 ms, no request may fail, and every message
//! must be done at the end.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use super::chaos::{McpRig, mcp_rig};
use crate::ExitWith;
use crate::args::{BenchSoakArgs, Global};

/// One window of the run.
#[derive(Debug, Clone, Default, Serialize)]
struct Window {
    /// Seconds since the start at the window's end.
    at_s: u64,
    /// Operations done.
    ops: u64,
    /// Requests that failed (transport error or a 4xx/5xx answer).
    errors: u64,
    /// API latency percentiles in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    /// The server's resident memory, MiB: the median of one sample a second over the window
    /// (a single sample would land before or after the server's periodic `malloc_trim`).
    rss_mib: f64,
    /// Its heap in use (malloc's count, `cogo_process_heap_bytes`), MiB; -1 when unknown.
    heap_mib: f64,
    /// Heap malloc holds free, not returned to the system (`cogo_process_heap_free_bytes`), MiB.
    heap_free_mib: f64,
    /// The part of the heap its SQLite holds (`cogo_sqlite_memory_bytes`), MiB; -1 when unknown.
    sqlite_mib: f64,
    /// Its open file descriptors.
    open_fds: u64,
    /// The operation with the highest p99 in the window and that p99 (ms): where a drift comes from.
    slowest: String,
    /// Messages not finished at the window's end.
    open_messages: i64,
}

/// `cogo bench soak`.
pub async fn run(global: &Global, args: BenchSoakArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let stamps = model::artifact::TsAllocator::new(&model::new_id().simple().to_string()[24..]);
    let ts = stamps.next(started_at);
    let gate_dir_rel = model::artifact::run_dir(model::artifact::ArtifactFamily::GateRun, &ts)?;
    let dir = global.data_dir.join(&gate_dir_rel).join("soak");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let env = super::Env::new(global)?;
    let data = dir.join("data");
    let mut rig =
        mcp_rig(&env, &dir, &data).await.map_err(|super::Abort(what, why)| anyhow::anyhow!("{what}: {why}"))?;
    let pid = rig.up.child.id().context("cogo up exited at once")?;
    let store =
        store::Store::open(&format!("sqlite://{}", data.join("cogo.db").display()), store::StoreOptions::default())
            .await
            .context("opening the soak's SQLite file")?;
    eprintln!(
        "soak: {} s of mixed traffic at {} ops/s against {} (pid {pid}); windows of {} s",
        args.duration,
        args.rate,
        rig.base,
        window_secs(args.duration)
    );
    let outcome = soak(&rig, &store, pid, &args).await;
    let open_at_end = super::until(Duration::from_secs(60), || {
        let store = &store;
        async move {
            let stats = store.queue_stats().await.map_err(|e| e.to_string())?;
            let open: i64 = stats.iter().map(|q| q.ready + q.delayed + q.claimed).sum();
            Ok((open == 0).then_some(()))
        }
    })
    .await;
    let failed_messages = store
        .messages(
            &store::MessageFilter { status: Some(model::MessageStatus::Failed), ..Default::default() },
            &store::PageRequest::first(1000),
        )
        .await
        .map(|p| p.items.len())
        .unwrap_or(0);
    store.close().await;
    let stopped = stop(&mut rig).await;
    let (windows, enqueued) = outcome?;

    let verdict = judge(&windows, open_at_end.is_ok(), failed_messages, &stopped);
    let report = json!({
        "bench": "soak",
        "started_at": started_at,
        "duration_s": args.duration,
        "rate": args.rate,
        "messages_enqueued": enqueued,
        "windows": windows,
        "checks": verdict.iter().map(|(name, result)| json!({"name": name, "ok": result.is_ok(), "detail": result.clone().unwrap_or_else(|e| e)})).collect::<Vec<_>>(),
        "passed": verdict.iter().all(|(_, r)| r.is_ok()),
    });
    super::write_json(&dir.join("report.json"), &report);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "{:>6} {:>7} {:>6} {:>8} {:>8} {:>8} {:>5} {:>6}",
            "at_s", "ops", "errors", "p50_ms", "p99_ms", "rss_mib", "fds", "open"
        )?;
        for w in &windows {
            writeln!(
                out,
                "{:>6} {:>7} {:>6} {:>8.2} {:>8.2} {:>8.1} {:>5} {:>6}",
                w.at_s, w.ops, w.errors, w.p50_ms, w.p99_ms, w.rss_mib, w.open_fds, w.open_messages
            )?;
        }
        for (name, result) in &verdict {
            match result {
                Ok(detail) => writeln!(out, "  ok    {name}: {detail}")?,
                Err(detail) => writeln!(out, "  FAIL  {name}: {detail}")?,
            }
        }
        writeln!(out, "soak report: {}", dir.join("report.json").display())?;
    }
    drop(out);
    if verdict.iter().any(|(_, r)| r.is_err()) {
        return Err(ExitWith(1, "the soak found drift, errors or unfinished work".to_owned()).into());
    }
    Ok(())
}

fn window_secs(duration: u64) -> u64 {
    (duration / 6).max(5)
}

async fn stop(rig: &mut McpRig) -> Result<String, String> {
    let Some(pid) = rig.up.child.id() else { return Err("cogo up had already exited".into()) };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(Duration::from_secs(30), rig.up.child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok("cogo up stopped cleanly".into()),
        Ok(Ok(status)) => Err(format!("cogo up exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("cogo up did not stop within 30 s of SIGTERM".into()),
    }
}

/// The verdict: each check's name and outcome.
fn judge(
    windows: &[Window],
    drained: bool,
    failed_messages: usize,
    stopped: &Result<String, String>,
) -> Vec<(&'static str, Result<String, String>)> {
    let mut checks = Vec::new();
    let (Some(base), Some(last)) = (windows.get(1).or(windows.first()), windows.last()) else {
        return vec![("windows", Err("the run was too short for a window".into()))];
    };
    // a leak: the heap in use (malloc's own count) grows beyond SQLite's share, whose page caches
    // fill up to their fixed sizes as the database grows; allocator free space and those caches
    // show in the resident memory, which may grow by what SQLite took plus a margin
    let known = base.heap_mib >= 0.0 && last.heap_mib >= 0.0 && base.sqlite_mib >= 0.0 && last.sqlite_mib >= 0.0;
    let sqlite_growth = if known { (last.sqlite_mib - base.sqlite_mib).max(0.0) } else { 0.0 };
    if known {
        let (before, after) = (base.heap_mib - base.sqlite_mib, last.heap_mib - last.sqlite_mib);
        let growth = after - before;
        let allowed = (before * 0.05).max(16.0);
        checks.push((
            "no leak",
            if growth <= allowed {
                Ok(format!(
                    "heap in use outside SQLite {before:.1} MiB → {after:.1} MiB ({growth:+.1} MiB, allowed {allowed:.1}); SQLite {:.1} → {:.1} MiB",
                    base.sqlite_mib, last.sqlite_mib
                ))
            } else {
                Err(format!("the heap in use outside SQLite grew {growth:.1} MiB ({before:.1} → {after:.1}), more than {allowed:.1}: a leak"))
            },
        ));
    }
    let growth = last.rss_mib - base.rss_mib;
    let allowed = (base.rss_mib * 0.15).max(32.0) + sqlite_growth;
    checks.push((
        "memory flat",
        if growth <= allowed {
            Ok(format!(
                "{:.1} MiB → {:.1} MiB ({growth:+.1} MiB, allowed {allowed:.1} with SQLite's caches)",
                base.rss_mib, last.rss_mib
            ))
        } else {
            Err(format!("grew {growth:.1} MiB ({:.1} → {:.1}), more than {allowed:.1}", base.rss_mib, last.rss_mib))
        },
    ));
    let fd_growth = last.open_fds as i64 - base.open_fds as i64;
    checks.push((
        "file descriptors flat",
        if fd_growth <= 32 {
            Ok(format!("{} → {}", base.open_fds, last.open_fds))
        } else {
            Err(format!("{} → {} open file descriptors", base.open_fds, last.open_fds))
        },
    ));
    let limit = base.p50_ms * 2.0 + 2.0;
    checks.push((
        "latency does not drift",
        if last.p50_ms <= limit {
            Ok(format!(
                "p50 {:.2} → {:.2} ms, p99 {:.2} → {:.2} ms",
                base.p50_ms, last.p50_ms, base.p99_ms, last.p99_ms
            ))
        } else {
            Err(format!("p50 {:.2} → {:.2} ms (more than {limit:.2})", base.p50_ms, last.p50_ms))
        },
    ));
    let errors: u64 = windows.iter().map(|w| w.errors).sum();
    let ops: u64 = windows.iter().map(|w| w.ops).sum();
    checks.push((
        "no request failed",
        if errors == 0 { Ok(format!("{ops} operations")) } else { Err(format!("{errors} of {ops} operations failed")) },
    ));
    checks.push((
        "all work done",
        match (drained, failed_messages) {
            (true, 0) => Ok("no message open or failed at the end".into()),
            (false, _) => Err("messages still open 60 s after the traffic stopped".into()),
            (true, n) => Err(format!("{n} messages failed")),
        },
    ));
    checks.push(("clean stop", stopped.clone()));
    checks
}

/// Resident memory (MiB) and open descriptors of `pid`.
fn process_usage(pid: u32) -> (f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    (rss_kib / 1024.0, fds)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn soak(
    rig: &McpRig,
    store: &store::Store,
    pid: u32,
    args: &BenchSoakArgs,
) -> anyhow::Result<(Vec<Window>, u64)> {
    let api = rig.api();
    let intent = model::Intent::new("noop")?;
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let window = Duration::from_secs(window_secs(args.duration));
    let mut next_window = started + window;
    let tick = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut windows = Vec::new();
    let mut current = Window::default();
    let mut latencies: Vec<f64> = Vec::new();
    let mut by_op: std::collections::BTreeMap<&'static str, Vec<f64>> = std::collections::BTreeMap::new();
    let mut rss_samples: Vec<f64> = Vec::new();
    let mut next_rss_sample = started;
    let mut enqueued = 0u64;
    let mut n = 0u64;
    while Instant::now() < end {
        interval.tick().await;
        n += 1;
        let op_started = Instant::now();
        let ok = match n % 10 {
            0..=3 => {
                let text = format!("soak-{n}");
                api.post(
                    "/api/mcp/enqueue",
                    json!({"toolset": "everything", "tool": "echo", "params": {"message": text}, "tenant": "soak", "idempotency_key": text}),
                )
                .await
                .map(|_| enqueued += 1)
                .is_ok()
            }
            4 => api.get("/api/metrics/summary").await.is_ok(),
            5 => api.get("/api/messages?limit=50").await.is_ok(),
            6 => api.get("/api/events?limit=50").await.is_ok(),
            7 => api.text("/metrics").await.is_ok(),
            8 => {
                let batch = (0..20)
                    .map(|i| {
                        model::NewMessage::new("bus", "noop", intent.clone(), json!({ "n": n, "i": i }))
                            .with_tenant("soak")
                    })
                    .collect();
                store.enqueue_batch(batch).await.map(|_| enqueued += 20).is_ok()
            }
            _ => api.get("/api/agents").await.is_ok(),
        };
        let ms = op_started.elapsed().as_secs_f64() * 1e3;
        if n % 10 != 8 {
            latencies.push(ms);
        }
        let op = match n % 10 {
            0..=3 => "enqueue",
            4 => "summary",
            5 => "messages",
            6 => "events",
            7 => "metrics",
            8 => "store batch",
            _ => "agents",
        };
        by_op.entry(op).or_default().push(ms);
        current.ops += 1;
        if !ok {
            current.errors += 1;
        }
        if Instant::now() >= next_rss_sample {
            rss_samples.push(process_usage(pid).0);
            next_rss_sample += Duration::from_secs(1);
        }
        if Instant::now() >= next_window || Instant::now() >= end {
            latencies.sort_by(f64::total_cmp);
            current.p50_ms = (percentile(&latencies, 0.5) * 100.0).round() / 100.0;
            current.p99_ms = (percentile(&latencies, 0.99) * 100.0).round() / 100.0;
            let slowest = by_op
                .iter_mut()
                .map(|(op, samples)| {
                    samples.sort_by(f64::total_cmp);
                    (*op, percentile(samples, 0.99))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((op, p99)) = slowest {
                current.slowest = format!("{op} {p99:.1} ms");
            }
            by_op.clear();
            let (rss, fds) = process_usage(pid);
            rss_samples.push(rss);
            rss_samples.sort_by(f64::total_cmp);
            current.rss_mib = (percentile(&rss_samples, 0.5) * 10.0).round() / 10.0;
            rss_samples.clear();
            current.open_fds = fds;
            let metrics = api.text("/metrics").await.unwrap_or_default();
            let mib = |name: &str| {
                super::metric_sum(&metrics, name, &[]).map(|b| (b / 1048576.0 * 10.0).round() / 10.0).unwrap_or(-1.0)
            };
            current.heap_mib = mib(model::metrics::PROCESS_HEAP_BYTES);
            current.sqlite_mib = mib(model::metrics::SQLITE_MEMORY_BYTES);
            current.heap_free_mib = mib(model::metrics::PROCESS_HEAP_FREE_BYTES);
            current.open_messages = store
                .queue_stats()
                .await
                .map(|stats| stats.iter().map(|q| q.ready + q.delayed + q.claimed).sum())
                .unwrap_or(-1);
            current.at_s = started.elapsed().as_secs();
            eprintln!(
                "  {:>5} s  {:>6} ops  {:>3} errors  p50 {:>7.2} ms  p99 {:>7.2} ms  rss {:>7.1} MiB  heap {:>7.1} MiB (free {:>6.1})  sqlite {:>6.1} MiB  fds {:>4}  open {:>4}  slowest p99: {}",
                current.at_s,
                current.ops,
                current.errors,
                current.p50_ms,
                current.p99_ms,
                current.rss_mib,
                current.heap_mib,
                current.heap_free_mib,
                current.sqlite_mib,
                current.open_fds,
                current.open_messages,
                current.slowest
            );
            windows.push(std::mem::take(&mut current));
            latencies.clear();
            next_window += window;
        }
    }
    Ok((windows, enqueued))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(rss: f64, p50: f64) -> Window {
        Window {
            ops: 100,
            p50_ms: p50,
            p99_ms: p50 * 3.0,
            rss_mib: rss,
            heap_mib: 200.0,
            open_fds: 40,
            ..Window::default()
        }
    }

    #[test]
    fn the_verdict_flags_growth_drift_and_errors() {
        let ok = Ok("stopped".to_owned());
        let flat = [window(300.0, 2.0), window(310.0, 2.0), window(320.0, 2.5)];
        assert!(judge(&flat, true, 0, &ok).iter().all(|(_, r)| r.is_ok()));
        let growing = [window(300.0, 2.0), window(310.0, 2.0), window(400.0, 2.0)];
        assert!(judge(&growing, true, 0, &ok).iter().any(|(name, r)| *name == "memory flat" && r.is_err()));
        let mut leaking = flat.clone();
        leaking[2].heap_mib = 300.0;
        assert!(judge(&leaking, true, 0, &ok).iter().any(|(name, r)| *name == "no leak" && r.is_err()));
        assert!(judge(&flat, true, 0, &ok).iter().any(|(name, r)| *name == "no leak" && r.is_ok()));
        // SQLite's caches filling up are no leak, and count towards the memory allowed
        let mut caching = flat.clone();
        caching[2].heap_mib = 290.0;
        caching[2].sqlite_mib = 100.0;
        caching[2].rss_mib = 400.0;
        assert!(judge(&caching, true, 0, &ok).iter().all(|(_, r)| r.is_ok()), "{:?}", judge(&caching, true, 0, &ok));
        let drifting = [window(300.0, 2.0), window(300.0, 2.0), window(300.0, 7.0)];
        assert!(judge(&drifting, true, 0, &ok).iter().any(|(name, r)| *name == "latency does not drift" && r.is_err()));
        let mut failing = flat.clone();
        failing[2].errors = 1;
        assert!(judge(&failing, true, 0, &ok).iter().any(|(name, r)| *name == "no request failed" && r.is_err()));
        assert!(judge(&flat, false, 0, &ok).iter().any(|(name, r)| *name == "all work done" && r.is_err()));
        assert!(judge(&[], true, 0, &ok).iter().all(|(_, r)| r.is_err()));
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 51.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
