//! `cogo gate unified`: the whole installation checked stage by stage, the way an operator would
//! check it, with a report an automated pipeline can read.
//!
//! 1. MCP ping of every enabled toolset of mcp.json.
//! 2. Local scenario: a fresh data dir, `cogo up` as its own process, the seed's end-to-end MCP
//!    scenario through the bus and a goal run, all checked through the HTTP API.
//! 3. Distributed scenario: a fresh PostgreSQL database, `cogo migrate`, `cogo serve` and three
//!    `cogo worker` processes; every message done exactly once, presence, per-process metrics,
//!    summary against the event log, clean stops.
//! 4. Docker scenario: the compose stack, where a Docker engine answers; otherwise skipped with
//!    the reason.
//!
//! Each stage writes its artifacts (`artifacts/gate-run/<ts>/`, `artifacts/full-scenario/<ts>/`,
//! `artifacts/docker-scenario/<ts>/`) and a `report.json`; the whole gate writes `report.json` and
//! `junit.xml` under `artifacts/gate-run/<ts>/`. The exit code is the verdict.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::ExitWith;
use crate::args::{GateArgs, Global};
use crate::settings::load_configs_or_exit;

pub(crate) mod chaos;
pub(crate) mod drain;
pub(crate) mod soak;

/// The goal of the local scenario: one the default model usually reaches (see docs/BENCHMARKS.md).
const GOAL: &str = "Navigate the browser to {pages}form.html and tell me the page title";
/// What its answer must contain.
const GOAL_ANSWER: &str = "COGO form page";
/// The page the end-to-end MCP scenario visits, and its title.
const PAGE_TITLE: &str = "COGO example page";

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    /// How the text reports print it (one width).
    fn label(self) -> &'static str {
        match self {
            Self::Passed => "passed ",
            Self::Failed => "FAILED ",
            Self::Skipped => "skipped",
        }
    }
}

/// One check of a stage.
#[derive(Debug, Clone, Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
    duration_ms: u64,
}

/// One stage's outcome.
#[derive(Debug, Clone, Serialize)]
struct Stage {
    stage: u8,
    name: &'static str,
    status: Status,
    /// Why it was skipped or could not run.
    reason: Option<String>,
    duration_ms: u64,
    /// Its artifacts directory, relative to the data dir.
    artifacts: String,
    checks: Vec<Check>,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    last: Option<Instant>,
}

impl Stage {
    fn new(stage: u8, name: &'static str, artifacts: String) -> Self {
        eprintln!("== stage {stage}: {name}");
        let now = Instant::now();
        Self {
            stage,
            name,
            status: Status::Passed,
            reason: None,
            duration_ms: 0,
            artifacts,
            checks: Vec::new(),
            started: Some(now),
            last: Some(now),
        }
    }

    /// Records a check; the time since the previous check is its duration.
    fn check(&mut self, name: impl Into<String>, result: Result<String, String>) -> bool {
        let name = name.into();
        let now = Instant::now();
        let duration_ms = self.last.map_or(0, |l| now.duration_since(l).as_millis() as u64);
        self.last = Some(now);
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(why) => (false, why),
        };
        if ok {
            eprintln!("  ok    {name}  {detail}");
        } else {
            eprintln!("  FAIL  {name}: {detail}");
            self.status = Status::Failed;
        }
        self.checks.push(Check { name, ok, detail, duration_ms });
        ok
    }

    fn skip(mut self, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        eprintln!("  skipped: {reason}");
        self.status = Status::Skipped;
        self.reason = Some(reason);
        self.finish()
    }

    fn finish(mut self) -> Self {
        self.duration_ms = self.started.map_or(0, |s| s.elapsed().as_millis() as u64);
        self
    }
}

/// The stage's fatal error: recorded as a failed check named after what was being done.
struct Abort(String, String);

impl Stage {
    fn abort(&mut self, Abort(name, why): Abort) {
        self.check(name, Err(why));
    }
}

fn abort(name: &str, why: impl std::fmt::Display) -> Abort {
    Abort(name.to_owned(), why.to_string())
}

/// `cogo gate unified`.
pub async fn unified(global: &Global, args: GateArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let configs = load_configs_or_exit(&global.config_dir)?;
    let stamps = model::artifact::TsAllocator::new(&model::new_id().simple().to_string()[24..]);
    let ts = stamps.next(started_at);
    let gate_dir_rel = model::artifact::run_dir(model::artifact::ArtifactFamily::GateRun, &ts)?;
    let gate_dir = global.data_dir.join(&gate_dir_rel);
    std::fs::create_dir_all(&gate_dir).with_context(|| format!("creating {}", gate_dir.display()))?;
    let wanted = |n: u8| args.stages.contains(&n);
    let env = Env::new(global)?;

    // the example MCP servers serve stages 1 to 3 (started once, stopped at the end)
    let mut examples_error = None;
    let examples = if !args.no_examples && (wanted(1) || wanted(2) || wanted(3)) {
        eprintln!("starting the example MCP servers");
        match crate::mcp_cmd::examples_launcher(global, &args.examples) {
            Ok(launcher) => match launcher.start_all(crate::mcp_cmd::example_ports(&args.examples)).await {
                Ok(servers) => Some(servers),
                Err(err) => {
                    examples_error = Some(format!(
                        "the example MCP servers did not start: {err} (stop what holds their ports, or pass --no-examples to use servers already running)"
                    ));
                    None
                }
            },
            Err(err) => {
                examples_error = Some(err.to_string());
                None
            }
        }
    } else {
        None
    };
    let pages_url = examples
        .as_ref()
        .map(|s| s.pages_url.clone())
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/", args.examples.pages_port));

    let mut stages = Vec::new();
    if wanted(1) {
        let mut stage = Stage::new(1, "mcp-ping", gate_dir_rel.clone());
        if let Some(why) = &examples_error {
            stage.check("example MCP servers", Err(why.clone()));
        }
        mcp_ping(&mut stage, &configs, &gate_dir).await;
        stages.push(stage.finish());
    }
    if wanted(2) {
        let dir_rel = model::artifact::run_dir(model::artifact::ArtifactFamily::FullScenario, &ts)?;
        let mut stage = Stage::new(2, "local-scenario", dir_rel.clone());
        if let Some(why) = &examples_error {
            stage.check("example MCP servers", Err(why.clone()));
        }
        if let Err(err) = local_scenario(&mut stage, &env, &global.data_dir.join(&dir_rel), &pages_url).await {
            stage.abort(err);
        }
        write_json(&global.data_dir.join(&dir_rel).join("report.json"), &stage);
        stages.push(stage.finish());
    }
    if wanted(3) {
        let dir_rel = format!("{gate_dir_rel}/distributed");
        let mut stage = Stage::new(3, "distributed-scenario", dir_rel.clone());
        if let Err(err) =
            distributed_scenario(&mut stage, &env, global, &global.data_dir.join(&dir_rel), &pages_url, &args).await
        {
            stage.abort(err);
        }
        write_json(&global.data_dir.join(&dir_rel).join("report.json"), &stage);
        stages.push(stage.finish());
    }
    drop(examples);
    if wanted(4) {
        let dir_rel = model::artifact::run_dir(model::artifact::ArtifactFamily::DockerScenario, &ts)?;
        let dir = global.data_dir.join(&dir_rel);
        let stage = Stage::new(4, "docker-scenario", dir_rel);
        let stage = docker_scenario(stage, &dir, &args.compose_file).await;
        write_json(&dir.join("report.json"), &stage);
        stages.push(stage);
    }

    let failed = stages.iter().filter(|s| s.status == Status::Failed).count();
    let verdict = if failed == 0 { "passed" } else { "failed" };
    let report = json!({
        "gate": "unified",
        "verdict": verdict,
        "started_at": started_at,
        "duration_ms": started.elapsed().as_millis() as u64,
        "artifacts": gate_dir_rel,
        "stages": stages,
    });
    write_reports(&gate_dir, &report, "cogo gate unified", &stages, started.elapsed(), args.junit.as_deref())?;
    let mut run_dirs: Vec<&str> = vec![gate_dir_rel.as_str()];
    run_dirs.extend(stages.iter().map(|s| s.artifacts.as_str()).filter(|d| !d.starts_with(gate_dir_rel.as_str())));
    publish(global, &run_dirs).await;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        for stage in &stages {
            let status = stage.status.label();
            let ok = stage.checks.iter().filter(|c| c.ok).count();
            write!(out, "stage {} {:<22} {status} {:>6.1} s", stage.stage, stage.name, stage.duration_ms as f64 / 1e3)?;
            match (&stage.reason, stage.status) {
                (Some(reason), _) => writeln!(out, "  ({reason})")?,
                (None, _) => writeln!(out, "  ({ok} of {} checks)", stage.checks.len())?,
            }
            for check in stage.checks.iter().filter(|c| !c.ok) {
                writeln!(out, "    {}: {}", check.name, check.detail)?;
            }
        }
        writeln!(out, "gate {verdict}; report: {}", gate_dir.join("report.json").display())?;
    }
    drop(out);
    if failed > 0 {
        return Err(ExitWith(1, format!("{failed} stage(s) failed")).into());
    }
    Ok(())
}

/// What every child process gets: this binary, absolute config and model directories.
struct Env {
    exe: PathBuf,
    config_dir: PathBuf,
    models_dir: PathBuf,
    http: reqwest::Client,
}

impl Env {
    fn new(global: &Global) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the cogo binary")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(Self {
            exe,
            config_dir: absolute(&global.config_dir),
            models_dir: absolute(&crate::knowledge_cmd::models_dir(global)),
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().context("HTTP client")?,
        })
    }
}

/// `report.json` and `junit.xml` in `dir`, and the JUnit report also at `junit_path` when asked.
fn write_reports(
    dir: &Path,
    report: &Value,
    suite_name: &str,
    stages: &[Stage],
    elapsed: Duration,
    junit_path: Option<&Path>,
) -> anyhow::Result<()> {
    write_json(&dir.join("report.json"), report);
    let junit = junit(suite_name, stages, elapsed);
    std::fs::write(dir.join("junit.xml"), &junit).with_context(|| format!("writing {}", dir.display()))?;
    if let Some(path) = junit_path {
        std::fs::write(path, &junit).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// With `--artifacts-url` naming a shared store, copies the run's directories (written on this
/// host's data dir) there, so every server serves them; says where, or why not (the verdict
/// stands either way).
async fn publish(global: &Global, dirs: &[&str]) {
    if global.artifacts_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        return;
    }
    let store = match crate::settings::artifacts_for_reading(global) {
        Ok(store) if store.local_root() == std::fs::canonicalize(&global.data_dir).ok().as_deref() => return,
        Ok(store) => store,
        Err(err) => {
            eprintln!("warning: the run's artifacts were not copied to the artifact store: {err}");
            return;
        }
    };
    let mut copied = 0;
    for dir in dirs {
        let local = global.data_dir.join(dir);
        if !local.is_dir() {
            continue;
        }
        match store.upload_dir(&local, dir).await {
            Ok(n) => copied += n,
            Err(err) => eprintln!("warning: {dir} was not copied to the artifact store: {err}"),
        }
    }
    eprintln!("{copied} artifact files copied to {}", store.location());
}

fn write_json(path: &Path, value: &impl Serialize) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if let Err(err) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), error = %err, "could not write a gate artifact");
    }
}

// ---------------------------------------------------------------- stage 1

async fn mcp_ping(stage: &mut Stage, configs: &crate::settings::Configs, dir: &Path) {
    let results = crate::mcp_cmd::ping_toolsets(configs, None, Duration::from_secs(10)).await;
    if results.is_empty() {
        stage.check("toolsets", Err("mcp.json configures no enabled toolset".to_owned()));
    }
    let mut lines = Vec::new();
    for (name, elapsed, result) in results {
        let transport = configs
            .mcp
            .toolsets
            .get(&name)
            .map(|t| t.url.clone().unwrap_or_else(|| t.command.clone().unwrap_or_default()));
        let where_ = transport.unwrap_or_default();
        match result {
            Ok(rtt) => {
                lines.push(
                    json!({"toolset": name, "ok": true, "endpoint": where_, "latency_ms": rtt.as_secs_f64() * 1e3}),
                );
                stage.check(
                    format!("ping {name}"),
                    Ok(format!(
                        "{where_}: {:.2} ms (connect + ping {} ms)",
                        rtt.as_secs_f64() * 1e3,
                        elapsed.as_millis()
                    )),
                );
            }
            Err(err) => {
                lines.push(json!({"toolset": name, "ok": false, "endpoint": where_, "error": err.to_string(), "kind": err.kind().as_str()}));
                stage.check(format!("ping {name}"), Err(format!("toolset {name} ({where_}) did not answer: {err}")));
            }
        }
    }
    write_json(&dir.join("mcp-ping.json"), &lines);
}

// ---------------------------------------------------------------- processes

/// A `cogo` child process with its output in files; killed if still running when dropped.
struct Proc {
    name: String,
    child: tokio::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(env: &Env, dir: &Path, name: &str, args: &[String]) -> Result<Self, Abort> {
        let _ = std::fs::create_dir_all(dir);
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&stdout).map_err(|e| abort(name, format!("creating {}: {e}", stdout.display())))?;
        let err =
            std::fs::File::create(&stderr).map_err(|e| abort(name, format!("creating {}: {e}", stderr.display())))?;
        let child = tokio::process::Command::new(&env.exe)
            .arg("--config-dir")
            .arg(&env.config_dir)
            .arg("--models-dir")
            .arg(&env.models_dir)
            .args(args)
            // the gate names the database, data dir and address of each process itself
            .env_remove("COGO_DATABASE_URL")
            .env_remove("COGO_DATA_DIR")
            .env_remove("COGO_LISTEN")
            .env_remove("COGO_METRICS_ADDR")
            .env_remove("COGO_ROLES")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| abort(name, format!("starting {}: {e}", env.exe.display())))?;
        Ok(Self { name: name.to_owned(), child, stdout, stderr })
    }

    /// Waits for a line of its standard output that starts with `prefix` (after spaces) and
    /// returns the rest of it; fails with the end of its log if it exits or takes too long.
    async fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> Result<String, Abort> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(rest) = text.lines().find_map(|l| l.trim_start().strip_prefix(prefix)) {
                return Ok(rest.trim().to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(abort(&self.name, format!("exited ({status}) before it was ready: {}", self.tail())));
            }
            if Instant::now() > deadline {
                return Err(abort(&self.name, format!("not ready after {} s: {}", limit.as_secs(), self.tail())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address its banner printed for `label` (e.g. `health`): `http://HOST:PORT`.
    async fn address(&mut self, label: &str, limit: Duration) -> Result<String, Abort> {
        let rest = self.wait_for_line(label, limit).await?;
        let url = rest.split_whitespace().next().unwrap_or_default();
        let base = url.strip_prefix("http://").and_then(|r| r.split('/').next()).unwrap_or_default();
        if base.is_empty() {
            return Err(abort(&self.name, format!("could not read its address from {rest:?}")));
        }
        Ok(format!("http://{base}"))
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        if tail.is_empty() { "(no output)".to_owned() } else { tail.join(" | ") }
    }

    /// SIGTERM, then waits up to `limit`: the exit status, or an error if it had to be killed.
    async fn stop(mut self, limit: Duration) -> Result<String, String> {
        let Some(pid) = self.child.id() else {
            return Err(format!("{} had already exited: {}", self.name, self.tail()));
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(format!("{} stopped cleanly", self.name)),
            Ok(Ok(status)) => Err(format!("{} exited with {status}: {}", self.name, self.tail())),
            Ok(Err(err)) => Err(format!("{}: {err}", self.name)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!("{} did not stop within {} s of SIGTERM and was killed", self.name, limit.as_secs()))
            }
        }
    }
}

/// The API as the gate calls it.
struct Api<'a> {
    http: &'a reqwest::Client,
    base: String,
    token: String,
}

impl Api<'_> {
    /// One request with the admin token; a 429 is waited out (its `Retry-After`) up to 5 times.
    /// The status and the body as text.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        for _ in 0..5 {
            let mut request =
                self.http.request(method.clone(), format!("{}{path}", self.base)).header("x-admin-token", &self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
            let status = response.status().as_u16();
            if status == 429 {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait.clamp(1, 10))).await;
                continue;
            }
            let text = response.text().await.map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
            return Ok((status, text));
        }
        Err(format!("{method} {path}: still rate limited after 5 tries"))
    }

    /// [`Self::request`] with the body read as JSON (text that is not JSON becomes a string).
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
        let (status, text) = self.request(method, path, body.as_ref()).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        match self.send(reqwest::Method::GET, path, None).await? {
            (200, value) => Ok(value),
            (status, value) => Err(format!("GET {path}: {status} {}", short(&value))),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        match self.send(reqwest::Method::POST, path, Some(body)).await? {
            (200..=202, value) => Ok(value),
            (status, value) => Err(format!("POST {path}: {status} {}", short(&value))),
        }
    }

    async fn text(&self, path: &str) -> Result<String, String> {
        match self.request(reqwest::Method::GET, path, None).await? {
            (200..=299, text) => Ok(text),
            (status, _) => Err(format!("GET {path}: {status}")),
        }
    }

    /// Every item of a listing, following `next` cursors (at most `max` items).
    async fn all(&self, path: &str, max: usize) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &after {
                Some(cursor) => format!("{path}{sep}limit=1000&after={cursor}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.get(&page_path).await?;
            let got = page["items"].as_array().cloned().unwrap_or_default();
            let full = got.len() == 1000;
            items.extend(got);
            match page["next"].as_str() {
                Some(next) if full && items.len() < max => after = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().take(300).collect()
}

fn admin_token() -> String {
    rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls `probe` every 200 ms until it returns `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("still not there after {} s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a message to finish; its final JSON.
async fn finished_message(api: &Api<'_>, id: &str, limit: Duration) -> Result<Value, String> {
    until(limit, || async move {
        let message = api.get(&format!("/api/messages/{id}")).await?;
        Ok(match message["status"].as_str() {
            Some("done" | "failed") => Some(message),
            _ => None,
        })
    })
    .await
    .map_err(|e| format!("message {id}: {e}"))
}

/// The text of a finished MCP call's answer: inline, or the response artifact it links to.
async fn result_text(api: &Api<'_>, message: &Value) -> String {
    match (message["result"]["result"].is_null(), message["result_url"].as_str()) {
        (true, Some(url)) => api.text(&format!("/api/{}", url.trim_matches('/'))).await.unwrap_or_default(),
        _ => message["result"]["result"].to_string(),
    }
}

/// The event types of a trace, in order.
async fn trace_events(api: &Api<'_>, trace_id: &str) -> Result<Vec<Value>, String> {
    api.all(&format!("/api/events?trace_id={trace_id}"), 10_000).await
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["event_type"].as_str().map(str::to_owned)).collect()
}

/// Samples of a metric family in a Prometheus text exposition, parsed with a text-format parser.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("/metrics does not parse: {e}"))?;
    let mut total = None;
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        if labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)) {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            *total.get_or_insert(0.0) += value;
        }
    }
    total.ok_or_else(|| format!("no sample of {name} with {labels:?}"))
}

// ---------------------------------------------------------------- stage 2

async fn local_scenario(stage: &mut Stage, env: &Env, dir: &Path, pages_url: &str) -> Result<(), Abort> {
    let data = dir.join("data");
    let token = admin_token();
    let data_arg = data.display().to_string();
    let mut up = Proc::spawn(
        env,
        dir,
        "up",
        &[
            "--data-dir".into(),
            data_arg,
            "up".into(),
            "--no-examples".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin-token".into(),
            token.clone(),
        ],
    )?;
    let base = up.address("health", Duration::from_secs(120)).await?;
    stage.check("cogo up started", Ok(format!("{base} with a fresh data dir")));
    let api = Api { http: &env.http, base, token };
    let ready = api.get("/readyz").await.map_err(|e| abort("readyz", e))?;
    stage.check("ready", if ready["backend"] == "sqlite" { Ok("SQLite".into()) } else { Err(short(&ready)) });

    // every role of the embedded default runs (the orchestrator needs the local model)
    let agents = api.get("/api/agents").await.map_err(|e| abort("agents", e))?;
    let roles: Vec<String> = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["roles"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let up_log = std::fs::read_to_string(&up.stderr).unwrap_or_default();
    // "… role not started: WHY role=\"NAME\"" → "NAME: WHY"
    let not_started: Vec<String> = up_log
        .lines()
        .filter_map(|l| l.split_once("role not started: ").map(|(_, rest)| rest))
        .map(|rest| match rest.rsplit_once(" role=") {
            Some((why, role)) => format!("{}: {why}", role.trim_matches('"')),
            None => rest.to_owned(),
        })
        .collect();
    let orchestrator = not_started.iter().all(|line| !line.starts_with("orchestrator:"));
    stage.check(
        "roles started",
        if not_started.is_empty() {
            Ok(format!("{} roles: {}", roles.len(), roles.join(", ")))
        } else {
            Err(not_started.join("; "))
        },
    );

    // the seed's scenario: enqueue → gateway role → breaker/retry → MCP WebSocket → artifacts,
    // metrics, events → summary
    let enqueued = api
        .post(
            "/api/mcp/enqueue",
            json!({"toolset": "browser", "tool": "browser_navigate", "params": {"url": pages_url}}),
        )
        .await
        .map_err(|e| abort("enqueue browser_navigate", e))?;
    let id = enqueued["id"].as_str().unwrap_or_default().to_owned();
    let trace = enqueued["trace_id"].as_str().unwrap_or_default().to_owned();
    stage.check("enqueue an MCP call", if id.is_empty() { Err(short(&enqueued)) } else { Ok(format!("message {id}")) });
    let message = finished_message(&api, &id, Duration::from_secs(90)).await.map_err(|e| abort("MCP call done", e))?;
    let result_text = result_text(&api, &message).await;
    stage.check(
        "MCP call done",
        if message["status"] == "done" && result_text.contains(PAGE_TITLE) {
            Ok(format!("browser_navigate reached {pages_url} ({PAGE_TITLE:?} in the result)"))
        } else {
            Err(format!("status {} result {}", message["status"], short(&Value::String(result_text))))
        },
    );
    let events = trace_events(&api, &trace).await.map_err(|e| abort("events", e))?;
    let seen = types(&events);
    let wanted = ["mcp_call_scheduled", "mcp_call_claimed", "mcp_call_succeeded"];
    let in_order =
        wanted.iter().try_fold(0usize, |from, t| seen[from..].iter().position(|s| s == t).map(|p| from + p + 1));
    stage.check(
        "events of the trace",
        if in_order.is_some() {
            Ok(seen.join(" → "))
        } else {
            Err(format!("expected {wanted:?} in order, got {seen:?}"))
        },
    );
    write_json(&dir.join("events.json"), &events);
    let artifact_check = match message["result"]["artifacts"].as_str() {
        Some(call_dir) => {
            let route = format!("/api/{}/{}", call_dir.trim_matches('/'), model::artifact::mcp_files::SUMMARY);
            match api.get(&route).await {
                Ok(summary) if summary["trace_id"] == trace.as_str() => Ok(format!("{route} names the trace")),
                Ok(summary) => Err(format!("{route} does not name trace {trace}: {}", short(&summary))),
                Err(e) => Err(e),
            }
        }
        None => Err(format!("the result names no artifacts directory: {}", short(&message["result"]))),
    };
    stage.check("artifacts", artifact_check);

    // a tool error (figma runs offline) is recorded, not retried
    let figma = api
        .post("/api/mcp/enqueue", json!({"toolset": "figma", "tool": "get_figma_data", "params": {"fileKey": "gate"}}))
        .await
        .map_err(|e| abort("enqueue figma", e))?;
    let figma_id = figma["id"].as_str().unwrap_or_default().to_owned();
    let failed =
        finished_message(&api, &figma_id, Duration::from_secs(60)).await.map_err(|e| abort("tool error", e))?;
    let figma_trace = failed["trace_id"].as_str().unwrap_or_default().to_owned();
    let figma_events = trace_events(&api, &figma_trace).await.unwrap_or_default();
    let kinds: Vec<String> = figma_events
        .iter()
        .filter(|e| e["event_type"] == "mcp_call_failed")
        .map(|e| e["payload"]["error_kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    stage.check(
        "tool error recorded",
        if failed["status"] == "failed" && kinds == ["tool_error"] {
            Ok("figma get_figma_data: one mcp_call_failed (tool_error), not retried".to_owned())
        } else {
            Err(format!(
                "status {}, failed attempts by kind {kinds:?}, error {}",
                failed["status"],
                short(&failed["last_error"])
            ))
        },
    );

    // metrics of this process, parsed as Prometheus text
    let metrics = api.text("/metrics").await.map_err(|e| abort("metrics", e))?;
    let _ = std::fs::write(dir.join("metrics.txt"), &metrics);
    stage.check(
        "metrics",
        metric_sum(&metrics, "cogo_mcp_calls_total", &[("toolset", "browser")]).and_then(|calls| {
            let fails = metric_sum(&metrics, "cogo_mcp_fail_total", &[("toolset", "figma")])?;
            if calls >= 1.0 && fails >= 1.0 {
                Ok(format!("cogo_mcp_calls_total{{toolset=\"browser\"}} {calls}, cogo_mcp_fail_total{{toolset=\"figma\"}} {fails}"))
            } else {
                Err(format!("calls {calls}, fails {fails}"))
            }
        }),
    );
    let summary = api.get("/api/metrics/summary").await.map_err(|e| abort("summary", e))?;
    write_json(&dir.join("summary.json"), &summary);
    let mcp = &summary["summary"]["mcp"];
    let calls = mcp["calls"].as_i64().unwrap_or_default();
    let fails = mcp["fails"].as_i64().unwrap_or_default();
    stage.check(
        "summary",
        if calls >= 2 && fails >= 1 {
            Ok(format!("MCP calls {calls}, fails {fails}, agents online {}", summary["summary"]["agents"]["online"]))
        } else {
            Err(format!("expected at least 2 calls and 1 failure: {}", short(mcp)))
        },
    );
    let dashboard = api.text("/").await;
    stage.check(
        "dashboard",
        match dashboard {
            Ok(html) if html.contains("<html") => Ok("served at /".into()),
            Ok(_) => Err("/ is not the dashboard page".into()),
            Err(e) => Err(e),
        },
    );

    // a goal: plan → tool → verdict with the local model
    if !orchestrator {
        stage.check(
            "goal ran to its end",
            Err("not run: the orchestrator role did not start (see roles started)".to_owned()),
        );
        stage.check("cogo up stops on SIGTERM", up.stop(Duration::from_secs(30)).await);
        return Ok(());
    }
    let goal_text = GOAL.replace("{pages}", pages_url);
    let budget = json!({"max_replans": 1, "max_seconds": 180});
    let goal =
        api.post("/api/goals", json!({"goal": goal_text, "budget": budget})).await.map_err(|e| abort("goal", e))?;
    let goal_id = goal["id"].as_str().unwrap_or_default().to_owned();
    let goal_trace = goal["trace_id"].as_str().unwrap_or_default().to_owned();
    let api_ref = &api;
    let goal_id_ref = goal_id.as_str();
    let done = until(Duration::from_secs(240), || async move {
        let goal = api_ref.get(&format!("/api/goals/{goal_id_ref}")).await?;
        Ok(match goal["goal"]["status"].as_str() {
            Some("succeeded" | "failed" | "cancelled" | "awaiting_approval") => Some(goal),
            _ => None,
        })
    })
    .await;
    // the platform is judged, not the small model: the goal must run its loop to an end (a plan,
    // steps over the bus under the goal's trace, decision records); whether the model reached the
    // answer is reported with it
    let check = match done {
        Ok(goal) => {
            write_json(&dir.join("goal.json"), &goal);
            let g = &goal["goal"];
            let decisions = goal["decisions"].as_array().map_or(0, Vec::len);
            let events = trace_events(&api, &goal_trace).await.unwrap_or_default();
            let step_events = events
                .iter()
                .filter(|e| {
                    e["event_type"].as_str().is_some_and(|t| !t.starts_with("goal_") && t.ends_with("_scheduled"))
                })
                .count();
            let outcome = match (g["status"].as_str(), g["answer"].as_str()) {
                (Some("succeeded"), Some(answer)) if answer.contains(GOAL_ANSWER) => {
                    format!("succeeded with the right answer: {}", answer.chars().take(100).collect::<String>())
                }
                (Some("succeeded"), answer) => {
                    format!("succeeded, answer without {GOAL_ANSWER:?}: {}", answer.unwrap_or(""))
                }
                (status, _) => format!(
                    "{}: {} (the small model did not reach the answer; see docs/BENCHMARKS.md)",
                    status.unwrap_or("?"),
                    short(&g["error"])
                ),
            };
            match g["status"].as_str() {
                Some("succeeded" | "failed") if decisions > 0 && step_events > 0 => {
                    Ok(format!("{decisions} decisions, {step_events} step(s) over the bus; {outcome}"))
                }
                Some("succeeded" | "failed") => Err(format!(
                    "ended without its records: {decisions} decisions, {step_events} steps over the bus; {outcome}"
                )),
                _ => Err(format!("{goal_text:?} ended {outcome}")),
            }
        }
        Err(e) => Err(format!("goal {goal_id}: {e}")),
    };
    stage.check("goal ran to its end", check);
    stage.check("cogo up stops on SIGTERM", up.stop(Duration::from_secs(30)).await);
    Ok(())
}

// ---------------------------------------------------------------- stage 3

async fn distributed_scenario(
    stage: &mut Stage,
    env: &Env,
    global: &Global,
    dir: &Path,
    pages_url: &str,
    args: &GateArgs,
) -> Result<(), Abort> {
    let admin_url = match &global.database_url {
        Some(url) if url.starts_with("postgres") => url.clone(),
        _ => crate::bench::POSTGRES_ADMIN.to_owned(),
    };
    let scratch_global = Global { database_url: Some(admin_url.clone()), ..global.clone() };
    let scratch = crate::bench::scratch_database(&scratch_global, crate::args::BenchBackend::Postgres, &admin_url)
        .await
        .map_err(|e| {
            abort(
                "fresh database",
                format!(
                    "{e:#} on {} (set COGO_DATABASE_URL to a PostgreSQL server where this role may CREATE DATABASE)",
                    store::redact_url(&admin_url)
                ),
            )
        })?;
    stage.check("fresh database", Ok(store::redact_url(&scratch.url)));
    let outcome = distributed_run(stage, env, dir, pages_url, args, &scratch.url).await;
    scratch.cleanup().await;
    outcome
}

async fn distributed_run(
    stage: &mut Stage,
    env: &Env,
    dir: &Path,
    pages_url: &str,
    args: &GateArgs,
    url: &str,
) -> Result<(), Abort> {
    let data = dir.join("data").display().to_string();
    let common = |extra: &[&str]| -> Vec<String> {
        let mut all = vec!["--data-dir".to_owned(), data.clone(), "--database-url".to_owned(), url.to_owned()];
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        all
    };
    let mut migrate = Proc::spawn(env, dir, "migrate", &common(&["migrate"]))?;
    let status = migrate.child.wait().await.map_err(|e| abort("cogo migrate", e))?;
    if !status.success() {
        return Err(abort("cogo migrate", format!("exited with {status}: {}", migrate.tail())));
    }
    stage.check("cogo migrate", Ok("applied by its own process".into()));

    let token = admin_token();
    let mut serve =
        Proc::spawn(env, dir, "serve", &common(&["serve", "--listen", "127.0.0.1:0", "--admin-token", &token]))?;
    let base = serve.address("health", Duration::from_secs(60)).await?;
    let api = Api { http: &env.http, base: base.clone(), token };
    let mut workers = Vec::new();
    for (name, roles) in [("worker-noop-1", "noop"), ("worker-noop-2", "noop"), ("worker-gateway", "gateway")] {
        let mut worker =
            Proc::spawn(env, dir, name, &common(&["worker", "--roles", roles, "--metrics-addr", "127.0.0.1:0"]))?;
        let metrics = worker.address("metrics", Duration::from_secs(60)).await?;
        workers.push((worker, metrics));
    }
    stage.check("processes started", Ok(format!("cogo serve at {base} and 3 workers (2 noop, 1 gateway)")));

    // presence: the server and every worker, online
    let agents = until(Duration::from_secs(20), || {
        let api = &api;
        async move {
            let agents = api.get("/api/agents").await?;
            let list = agents["agents"].as_array().cloned().unwrap_or_default();
            let online = list.iter().filter(|a| a["status"] == "online").count();
            Ok((online >= 4).then_some(list))
        }
    })
    .await;
    stage.check(
        "presence",
        agents.map(|list| {
            let names: Vec<String> =
                list.iter().map(|a| format!("{} ({})", a["service"].as_str().unwrap_or("?"), a["roles"])).collect();
            format!("{} online: {}", list.len(), names.join(", "))
        }),
    );

    // the work: noop messages straight into the store, then MCP calls through the API, one at a
    // time (the browser toolset drives one page: concurrent navigations abort each other)
    let tenant = "gate";
    let total = args.messages as usize;
    let started = Instant::now();
    let store = store::Store::open(url, store::StoreOptions::default()).await.map_err(|e| abort("store", e))?;
    let drained = enqueue_and_drain(&store, tenant, total).await;
    // closed on every path, before the database goes
    store.close().await;
    drained?;
    let drain_ms = started.elapsed().as_millis() as u64;
    stage.check(
        "enqueued and drained",
        Ok(format!(
            "{total} noop messages for tenant {tenant} over 2 workers in {drain_ms} ms ({:.0}/s)",
            total as f64 / (drain_ms.max(1) as f64 / 1e3)
        )),
    );
    let mut mcp_ok = Vec::new();
    for n in 0..3 {
        let enqueued = api
            .post(
                "/api/mcp/enqueue",
                json!({"toolset": "browser", "tool": "browser_navigate", "params": {"url": pages_url}, "tenant": tenant, "idempotency_key": format!("gate-mcp-{n}")}),
            )
            .await
            .map_err(|e| abort("enqueue MCP calls", e))?;
        let id = enqueued["id"].as_str().unwrap_or_default().to_owned();
        let outcome = match finished_message(&api, &id, Duration::from_secs(60)).await {
            Ok(message) if message["status"] == "done" && result_text(&api, &message).await.contains(PAGE_TITLE) => {
                Ok(id)
            }
            Ok(message) => Err(format!("message {id} ended {}: {}", message["status"], short(&message["last_error"]))),
            Err(e) => Err(e),
        };
        mcp_ok.push(outcome);
    }
    let mcp_ok: Result<Vec<String>, String> = mcp_ok.into_iter().collect();
    stage.check(
        "MCP calls through the gateway worker",
        mcp_ok.map(|ids| format!("{} done, one after another", ids.len())),
    );

    // exactly once: every message done, one success event each (read through the API)
    let done = api.all(&format!("/api/messages?tenant={tenant}&status=done"), total + 10).await;
    let events = api.all(&format!("/api/events?tenant={tenant}&event_type=noop_succeeded"), total * 2 + 10).await;
    stage.check(
        "every message done exactly once",
        match (done, events) {
            (Ok(done), Ok(events)) => {
                let mut per_message = std::collections::HashMap::new();
                for event in &events {
                    *per_message.entry(event["message_id"].as_str().unwrap_or_default().to_owned()).or_insert(0u32) +=
                        1;
                }
                let twice = per_message.values().filter(|n| **n > 1).count();
                if done.len() == total + 3 && per_message.len() == total && twice == 0 {
                    Ok(format!("{} done, {} noop_succeeded events, none twice", done.len(), events.len()))
                } else {
                    Err(format!(
                        "{} of {} done, {} messages with a success event, {twice} with more than one",
                        done.len(),
                        total + 3,
                        per_message.len()
                    ))
                }
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
    );
    // the summary agrees with the event log
    let summary = api.get("/api/metrics/summary").await.unwrap_or_else(|e| json!({ "error": e }));
    write_json(&dir.join("summary.json"), &summary);
    let noop_done: i64 = summary["summary"]["bus"]["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["service"] == "bus" && q["role"] == "noop")
        .filter_map(|q| q["done_last_minute"].as_i64().or(q["doneLastMinute"].as_i64()))
        .sum();
    stage.check(
        "summary matches the event log",
        if noop_done as usize == total {
            Ok(format!("bus/noop done in the last minute: {noop_done}"))
        } else {
            Err(format!("summary says {noop_done} noop messages done, the event log {total}"))
        },
    );

    // each worker's own /metrics
    let mut completed = 0.0;
    let mut scraped = Vec::new();
    for (worker, metrics) in &workers {
        match env.http.get(format!("{metrics}/metrics")).send().await {
            Ok(response) => {
                let text = response.text().await.unwrap_or_default();
                let _ = std::fs::write(dir.join(format!("{}.metrics.txt", worker.name)), &text);
                match metric_sum(&text, model::metrics::BUS_SUCCEEDED_TOTAL, &[]) {
                    Ok(n) => {
                        completed += n;
                        scraped.push(format!("{} {n}", worker.name));
                    }
                    Err(e) => scraped.push(format!("{}: {e}", worker.name)),
                }
            }
            Err(e) => scraped.push(format!("{}: {e}", worker.name)),
        }
    }
    stage.check(
        "worker metrics",
        if completed as usize == total + 3 {
            Ok(format!("{}: {}", model::metrics::BUS_SUCCEEDED_TOTAL, scraped.join(", ")))
        } else {
            Err(format!(
                "completions over the workers' /metrics: {completed}, expected {}: {}",
                total + 3,
                scraped.join(", ")
            ))
        },
    );

    // clean stops: SIGTERM, exit 0, presence offline
    let mut stops = Vec::new();
    for (worker, _) in workers {
        stops.push(worker.stop(Duration::from_secs(30)).await);
    }
    let stopped: Result<Vec<String>, String> = stops.into_iter().collect();
    stage.check("workers stop on SIGTERM", stopped.map(|s| s.join(", ")));
    let offline = api
        .get("/api/agents")
        .await
        .map(|agents| {
            agents["agents"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|a| a["service"] == "worker" && a["status"] == "offline")
                .count()
        })
        .unwrap_or_default();
    stage.check(
        "presence after the stop",
        if offline == 3 { Ok("3 workers offline".into()) } else { Err(format!("{offline} of 3 workers offline")) },
    );
    stage.check("cogo serve stops on SIGTERM", serve.stop(Duration::from_secs(30)).await);
    Ok(())
}

/// Enqueues `total` noop messages for `tenant` in batches and waits until no queue has open work.
async fn enqueue_and_drain(store: &store::Store, tenant: &str, total: usize) -> Result<(), Abort> {
    let intent = model::Intent::new("noop").map_err(|e| abort("enqueue", e))?;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|n| {
                model::NewMessage::new("bus", "noop", intent.clone(), json!({ "n": n }))
                    .with_tenant(tenant)
                    .with_idempotency_key(format!("gate-{n}"))
            })
            .collect();
        store.enqueue_batch(batch).await.map_err(|e| abort("enqueue", e))?;
    }
    until(Duration::from_secs(120), || async move {
        let stats = store.queue_stats().await.map_err(|e| e.to_string())?;
        let open: i64 = stats.iter().map(|q| q.ready + q.delayed + q.claimed).sum();
        Ok((open == 0).then_some(()))
    })
    .await
    .map_err(|e| abort("drained", format!("the queues did not empty: {e}")))
}

// ---------------------------------------------------------------- stage 4

async fn docker_scenario(mut stage: Stage, dir: &Path, compose_file: &Path) -> Stage {
    let _ = std::fs::create_dir_all(dir);
    let run = |args: &'static [&'static str]| async move {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("docker").args(args).stdin(std::process::Stdio::null()).output(),
        )
        .await;
        match output {
            Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("no output").to_owned()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within 20 s".to_owned()),
        }
    };
    let engine = match run(&["info", "--format", "{{.ServerVersion}}"]).await {
        Ok(version) => version,
        Err(why) => return stage.skip(format!("no Docker engine answers here (`docker info`: {why})")),
    };
    if let Err(why) = run(&["compose", "version"]).await {
        return stage.skip(format!("Docker {engine} answers but the compose plugin is missing ({why})"));
    }
    if !compose_file.is_file() {
        return stage
            .skip(format!("{} not found (run from the COGO checkout or pass --compose-file)", compose_file.display()));
    }
    let file = compose_file.display().to_string();
    let log = dir.join("compose.log");
    // the stack's secrets: the operator's where set, otherwise fresh ones for this run only
    let secrets: Vec<(&str, String)> = [("COGO_ADMIN_TOKEN", 24), ("COGO_MASTER_KEY", 32), ("POSTGRES_PASSWORD", 16)]
        .into_iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .map(|(name, bytes)| (name, (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()))
        .collect();
    let mut compose = tokio::process::Command::new("docker");
    compose
        .args(["compose", "-f", &file, "up", "--build", "--abort-on-container-exit", "--exit-code-from", "gate"])
        .envs(secrets.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(1800), compose.output()).await;
    let result = match output {
        Ok(Ok(out)) => {
            let mut text = out.stdout.clone();
            text.extend_from_slice(&out.stderr);
            let _ = std::fs::write(&log, &text);
            if out.status.success() {
                Ok(format!("the compose stack's gate passed (Docker {engine})"))
            } else {
                Err(format!("docker compose up exited with {} (see {})", out.status, log.display()))
            }
        }
        Ok(Err(err)) => Err(format!("docker compose: {err}")),
        Err(_) => Err("docker compose up took over 30 minutes".to_owned()),
    };
    stage.check("compose stack", result);
    let _ = tokio::process::Command::new("docker")
        .args(["compose", "-f", &file, "down", "-v"])
        .envs(secrets.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await;
    stage.finish()
}

// ---------------------------------------------------------------- JUnit

fn xml(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The report as JUnit XML: a test suite per stage, a test case per check; a skipped stage is one
/// skipped case carrying its reason.
fn junit(suite_name: &str, stages: &[Stage], elapsed: Duration) -> String {
    let tests: usize = stages.iter().map(|s| s.checks.len().max(1)).sum();
    let failures: usize = stages.iter().map(|s| s.checks.iter().filter(|c| !c.ok).count()).sum();
    let skipped = stages.iter().filter(|s| s.status == Status::Skipped).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        xml(suite_name),
        elapsed.as_secs_f64()
    );
    for stage in stages {
        let suite = format!("{} {}", stage.stage, stage.name);
        let failed = stage.checks.iter().filter(|c| !c.ok).count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" skipped=\"{}\" time=\"{:.3}\">\n",
            xml(&suite),
            stage.checks.len().max(1),
            usize::from(stage.status == Status::Skipped),
            stage.duration_ms as f64 / 1e3
        ));
        if stage.status == Status::Skipped {
            out.push_str(&format!(
                "    <testcase classname=\"gate.{}\" name=\"{}\" time=\"0\"><skipped message=\"{}\"/></testcase>\n",
                xml(stage.name),
                xml(stage.name),
                xml(stage.reason.as_deref().unwrap_or_default())
            ));
        }
        for check in &stage.checks {
            out.push_str(&format!(
                "    <testcase classname=\"gate.{}\" name=\"{}\" time=\"{:.3}\">",
                xml(stage.name),
                xml(&check.name),
                check.duration_ms as f64 / 1e3
            ));
            if check.ok {
                out.push_str(&format!("<system-out>{}</system-out>", xml(&check.detail)));
            } else {
                out.push_str(&format!("<failure message=\"{}\"/>", xml(&check.detail)));
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(status: Status, checks: &[(&str, bool, &str)]) -> Stage {
        Stage {
            stage: 1,
            name: "mcp-ping",
            status,
            reason: (status == Status::Skipped).then(|| "no <engine> & \"docker\"".to_owned()),
            duration_ms: 1500,
            artifacts: "artifacts/gate-run/x".into(),
            checks: checks
                .iter()
                .map(|(name, ok, detail)| Check {
                    name: (*name).into(),
                    ok: *ok,
                    detail: (*detail).into(),
                    duration_ms: 10,
                })
                .collect(),
            started: None,
            last: None,
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let stages = [
            stage(Status::Failed, &[("ping browser", true, "1 ms"), ("ping figma", false, "refused <a&b>")]),
            stage(Status::Skipped, &[]),
        ];
        let xml = junit("cogo gate unified", &stages, Duration::from_millis(2500));
        assert!(xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\" time=\"2.500\""), "{xml}");
        assert!(xml.contains("<failure message=\"refused &lt;a&amp;b&gt;\"/>"), "{xml}");
        assert!(xml.contains("<skipped message=\"no &lt;engine&gt; &amp; &quot;docker&quot;\"/>"), "{xml}");
        assert_eq!(xml.matches("<testcase").count(), 3);
    }

    #[test]
    fn metrics_are_read_with_a_text_format_parser() {
        let text = "# HELP cogo_mcp_calls_total MCP calls.\n# TYPE cogo_mcp_calls_total counter\ncogo_mcp_calls_total{toolset=\"browser\",tool=\"a\"} 2\ncogo_mcp_calls_total{toolset=\"browser\",tool=\"b\"} 3\ncogo_mcp_calls_total{toolset=\"figma\",tool=\"c\"} 7\n";
        assert_eq!(metric_sum(text, "cogo_mcp_calls_total", &[("toolset", "browser")]), Ok(5.0));
        assert!(metric_sum(text, "cogo_mcp_calls_total", &[("toolset", "nope")]).is_err());
    }
}
