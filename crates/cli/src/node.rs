//! `cogo up`, `cogo serve` and `cogo worker`: one process's parts wired together, and a graceful stop.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ExitWith;
use crate::args::{Global, ServeArgs, WorkerArgs};
use crate::settings::{database_url, load_configs_or_exit, open_store};

/// A role this binary can run: its queue and its handler.
pub(crate) struct Role {
    pub(crate) name: &'static str,
    pub(crate) service: &'static str,
    pub(crate) role: &'static str,
    /// The role needs the LLM.
    pub(crate) needs_llm: bool,
    /// The handler, or why it cannot run here (a missing model, no database).
    pub(crate) handler: fn(&RoleContext) -> Result<Arc<dyn worker::Handler>, String>,
}

/// What role handlers are built from.
pub(crate) struct RoleContext {
    pub(crate) gateway: Arc<mcp::Gateway>,
    /// The store; an edge worker has none (the roles that need one do not run there).
    pub(crate) store: Option<store::Store>,
    /// The embedder, when the model is installed (the knowledge roles need it).
    pub(crate) embedder: Option<Arc<dyn knowledge::Embedder>>,
    /// The LLM, when a role needs it and it loaded (or why not).
    pub(crate) llm: Result<Arc<dyn llm::LlmClient>, String>,
    /// agent_policy.json.
    pub(crate) policy: Arc<model::config::AgentPolicy>,
    /// Where artifacts go (decision records, generated code).
    pub(crate) artifacts: artifacts::Artifacts,
}

const NO_EMBEDDER: &str = "it needs the embedding model (scripts/models install)";

impl RoleContext {
    fn store(&self) -> Result<store::Store, String> {
        self.store.clone().ok_or_else(|| {
            "it needs the database, which an edge worker does not have: run it with --database-url".to_owned()
        })
    }

    fn embedder(&self) -> Result<Arc<dyn knowledge::Embedder>, String> {
        self.embedder.clone().ok_or_else(|| NO_EMBEDDER.to_owned())
    }

    fn llm(&self) -> Result<Arc<dyn llm::LlmClient>, String> {
        self.llm.clone()
    }

    fn orchestrator(&self) -> Result<Arc<agent::Orchestrator>, String> {
        let env = Arc::new(agent::bus::BusEnvironment::new(
            self.store()?,
            Some(self.gateway.clone()),
            self.policy.clone(),
            self.embedder.clone(),
        ));
        Ok(Arc::new(agent::Orchestrator::new(
            self.llm()?,
            env,
            self.policy.clone(),
            agent::DecisionLog::new(self.artifacts.clone()),
            self.embedder.clone(),
        )))
    }
}

/// Every role available in this build.
pub(crate) const ROLES: &[Role] = &[
    Role {
        name: "noop",
        service: "bus",
        role: "noop",
        needs_llm: false,
        handler: |_| Ok(Arc::new(worker::NoopHandler)),
    },
    Role {
        name: "gateway",
        service: "mcp",
        role: "gateway",
        needs_llm: false,
        handler: |ctx| {
            Ok(Arc::new(mcp::GatewayHandler::new(ctx.gateway.clone(), model::message::DEFAULT_MAX_RESULT_BYTES / 2)))
        },
    },
    Role {
        name: "indexing",
        service: "knowledge",
        role: "indexing",
        needs_llm: false,
        handler: |ctx| {
            Ok(Arc::new(knowledge::roles::IndexingHandler::new(ctx.store()?, ctx.embedder()?).with_llm(ctx.llm().ok())))
        },
    },
    Role {
        name: "graphrag",
        service: "knowledge",
        role: "graphrag",
        needs_llm: false,
        handler: |ctx| Ok(Arc::new(knowledge::roles::GraphRagHandler::new(ctx.store()?, ctx.embedder()?))),
    },
    Role {
        name: "orchestrator",
        service: agent::ORCHESTRATOR.0,
        role: agent::ORCHESTRATOR.1,
        needs_llm: true,
        handler: |ctx| Ok(Arc::new(agent::OrchestratorHandler::new(ctx.orchestrator()?))),
    },
    Role {
        name: "execution",
        service: agent::EXECUTION.0,
        role: agent::EXECUTION.1,
        needs_llm: false,
        handler: |ctx| Ok(Arc::new(agent::roles::execution::ExecutionHandler::new(ctx.policy.clone()))),
    },
    Role {
        name: "research",
        service: agent::RESEARCH.0,
        role: agent::RESEARCH.1,
        needs_llm: true,
        handler: |ctx| {
            Ok(Arc::new(agent::roles::research::ResearchHandler::new(ctx.store()?, ctx.embedder()?, ctx.llm()?)))
        },
    },
    Role {
        name: "codegen",
        service: agent::CODEGEN.0,
        role: agent::CODEGEN.1,
        needs_llm: true,
        handler: |ctx| {
            Ok(Arc::new(agent::roles::codegen::CodegenHandler::new(
                ctx.llm()?,
                ctx.policy.clone(),
                ctx.artifacts.clone(),
            )))
        },
    },
];

/// Lease of claimed messages unless a worker sets its own.
pub(crate) const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Installs the Prometheus recorder once per process and returns its renderer.
pub fn metrics_render() -> anyhow::Result<server::MetricsRender> {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    if HANDLE.get().is_none() {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_ms".into()),
                &model::metrics::LATENCY_BUCKETS_MS,
            )
            .context("configuring histogram buckets")?
            .install_recorder()
            .context("installing the Prometheus recorder")?;
        let _ = HANDLE.set(handle);
        // `# HELP` lines: counters end in `_total`, latency histograms in `_ms`, the rest are gauges
        for (name, help) in model::metrics::HELP {
            if name.ends_with("_total") {
                metrics::describe_counter!(name, help);
            } else if name.ends_with("_ms") {
                metrics::describe_histogram!(name, help);
            } else {
                metrics::describe_gauge!(name, help);
            }
        }
    }
    let handle = HANDLE.get().cloned().context("the Prometheus recorder is missing")?;
    Ok(Arc::new(move || {
        crate::process_metrics::update();
        handle.render()
    }))
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

pub(crate) struct Node {
    pub(crate) store: store::Store,
    policies: Arc<resilience::Policies>,
    /// The process's MCP gateway: one session per toolset, shared by the gateway role and the API.
    gateway: Arc<mcp::Gateway>,
    pub(crate) agent_id: String,
    /// The embedding model, when installed.
    pub(crate) embedder: Option<Arc<dyn knowledge::Embedder>>,
    /// Where this process's artifacts go.
    pub(crate) artifacts: artifacts::Artifacts,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Records circuit transitions; ends once the gateway (holding the breakers) is gone.
    recorder: JoinHandle<()>,
    _watcher: Option<notify_guard::Guard>,
}

mod notify_guard {
    /// Keeps the policy file watcher alive.
    pub struct Guard(#[allow(dead_code)] pub Box<dyn std::any::Any + Send>);
}

/// How a node runs its roles.
pub(crate) struct NodeOptions<'a> {
    pub(crate) concurrency: usize,
    pub(crate) shards: &'a [String],
    /// The LLM for the roles that need one.
    pub(crate) llm: Option<&'a crate::args::LlmArgs>,
    /// An LLM already loaded (instead of loading one from `llm`).
    pub(crate) llm_client: Option<Arc<dyn llm::LlmClient>>,
    /// Lease of claimed messages.
    pub(crate) lease: std::time::Duration,
    /// Toolsets that replace mcp.json's of the same name (example servers started by the command).
    pub(crate) toolsets: std::collections::BTreeMap<String, model::config::mcp::Toolset>,
    /// Load the embedding model (knowledge routes and roles); the minimal server does not.
    pub(crate) embedder: bool,
}

pub(crate) async fn start_node(
    global: &Global,
    service: &str,
    roles: &[&Role],
    options: NodeOptions<'_>,
) -> anyhow::Result<Node> {
    let NodeOptions { concurrency, shards, llm: llm_args, llm_client, lease, toolsets: extra_toolsets, embedder } =
        options;
    let configs = load_configs_or_exit(&global.config_dir)?;
    let store = open_store(global).await?;
    let policies = Arc::new(resilience::Policies::new(&configs.retry, &configs.breaker));
    let watcher = if global.config_dir.is_dir() {
        match resilience::watch_policies(policies.clone(), global.config_dir.clone()) {
            Ok((watcher, _outcomes)) => Some(notify_guard::Guard(Box::new(watcher))),
            Err(err) => {
                tracing::warn!(error = %err, "policy files will not reload on change");
                None
            }
        }
    } else {
        tracing::info!(dir = %global.config_dir.display(), "config directory not found: the seed defaults apply");
        None
    };
    let agent_id = format!("{}-{}", host_name(), &model::new_id().simple().to_string()[20..]);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let retry: worker::RetryResolver = {
        let policies = policies.clone();
        Arc::new(move |message: &model::Message| policies.retry(&worker::policy_key(message)))
    };
    let presence = model::presence::Presence {
        agent_id: agent_id.clone(),
        service: service.to_owned(),
        roles: roles.iter().map(|r| r.name.to_owned()).collect(),
        shard: shards.join(","),
        host: host_name(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        status: model::presence::PresenceStatus::Online,
        started_at: chrono::Utc::now(),
        last_heartbeat: chrono::Utc::now(),
        capabilities: serde_json::json!({ "roles": roles.iter().map(|r| r.name).collect::<Vec<_>>(), "backend": store.kind().name() }),
    };
    let mut tasks = Vec::new();
    let (transitions, transitions_rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(resilience::record_transitions(store.clone(), agent_id.clone(), transitions_rx));
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), Some(transitions)));
    let instance = agent_id.rsplit('-').next().unwrap_or("0");
    let opened = crate::secrets_cmd::open_all(global, &store).await?;
    let mut toolsets = configs.mcp.toolsets.clone();
    toolsets.extend(extra_toolsets);
    let toolsets = crate::secrets_cmd::with_secret_env(toolsets, &opened);
    let artifacts = crate::settings::open_artifacts(global, instance).await?;
    let gateway = Arc::new(
        mcp::Gateway::new(toolsets, breakers, artifacts.clone(), instance)
            .with_scrubbed_values(opened.iter().map(|(_, value)| value.to_string())),
    );
    drop(opened);
    let embedder = if embedder { load_embedder(global) } else { None };
    let llm = match (llm_client, llm_args) {
        (Some(client), _) => Ok(client),
        (None, Some(args)) if roles.iter().any(|r| r.needs_llm) => {
            crate::llm_cmd::client(global, args).await.map_err(|err| format!("the LLM did not load: {err:#}"))
        }
        (None, _) => Err("no LLM is configured for this process".to_owned()),
    };
    let role_context = RoleContext {
        gateway: gateway.clone(),
        store: Some(store.clone()),
        embedder: embedder.clone(),
        llm,
        policy: Arc::new(configs.agent.clone()),
        artifacts: artifacts.clone(),
    };
    let maintenance =
        worker::Maintenance::new(store.clone(), worker::MaintenanceConfig::default(), presence, retry.clone());
    tasks.push(tokio::spawn(maintenance.run(shutdown_rx.clone())));
    let trim = std::env::var("COGO_MALLOC_TRIM_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(MALLOC_TRIM_SECS);
    tasks.push(tokio::spawn(crate::process_metrics::trim_every(
        std::time::Duration::from_secs(trim),
        shutdown_rx.clone(),
    )));
    for role in roles {
        let handler = match (role.handler)(&role_context) {
            Ok(handler) => handler,
            Err(why) => {
                tracing::warn!(role = role.name, "role not started: {why}");
                continue;
            }
        };
        let mut config = worker::RuntimeConfig::new(role.service, role.role, &agent_id);
        config.concurrency = concurrency.max(1);
        config.lease = lease;
        config.shards = shards.to_vec();
        let runtime = worker::Runtime::new(store.clone(), config, handler, retry.clone());
        tasks.push(tokio::spawn(runtime.run(shutdown_rx.clone())));
    }
    // the breakers (and with them the transition channel) close when the gateway goes
    drop(role_context);
    Ok(Node { store, policies, gateway, agent_id, embedder, artifacts, shutdown, tasks, recorder, _watcher: watcher })
}

/// The process's embedder (MiniLM from the models directory), shared by the knowledge roles and
/// routes. Without it those answer 503 or do not start, and say how to install it; the rest runs.
pub(crate) fn load_embedder(global: &Global) -> Option<Arc<dyn knowledge::Embedder>> {
    let dir = knowledge::embed::minilm_dir(&crate::knowledge_cmd::models_dir(global));
    match knowledge::MiniLm::load(&dir) {
        Ok(model) => Some(Arc::new(model)),
        Err(err) => {
            tracing::warn!(error = %err, "knowledge search, ingest and roles are off");
            None
        }
    }
}

/// Seconds between two returns of the heap's free pages to the system (`COGO_MALLOC_TRIM_SECS`
/// overrides it; 0 turns it off).
const MALLOC_TRIM_SECS: u64 = 30;

pub(crate) async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|err| {
        let port = listen.port();
        let hint = if err.kind() == std::io::ErrorKind::AddrInUse {
            let holder = match port_holder(port) {
                Some(holder) => format!("{holder} holds it"),
                None => format!("`ss -ltnp 'sport = :{port}'` shows which process holds it"),
            };
            format!("port {port} is already in use: {holder}; stop that process or pass --listen 127.0.0.1:0 for a free port")
        } else {
            format!("{err}")
        };
        anyhow::Error::new(ExitWith(1, format!("error: cannot listen on {listen}: {hint}")))
    })
}

/// The process listening on TCP `port` ("pid 1234 (cogo serve …)"), found through /proc: the
/// listening socket's inode in /proc/net/tcp{,6}, then the process whose descriptors hold it.
/// `None` where /proc does not say (another OS, or a process of another user).
fn port_holder(port: u16) -> Option<String> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = *fields.get(3)? == "0A";
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let command: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .take(4)
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            return Some(format!("pid {pid} ({})", command.join(" ").chars().take(120).collect::<String>()));
        }
    }
    None
}

/// Whether a worker is ready: `Err` says why not.
pub(crate) type Readiness =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), &'static str>> + Send + Sync>;

/// A worker's own endpoint: `/metrics`, `/healthz`, and `/readyz` (503 with the reason while
/// `ready` says it is not).
pub(crate) async fn serve_worker_metrics(
    listener: tokio::net::TcpListener,
    metrics: server::MetricsRender,
    ready: Readiness,
) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready();
                async move {
                    match ready.await {
                        Ok(()) => (axum::http::StatusCode::OK, "ready"),
                        Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        );
    server::serve(listener, app, server::Limits::default(), std::future::pending()).await;
}

/// The HTTP server's graceful shutdown: on Ctrl-C or SIGTERM, live event streams end too.
/// Resolves on Ctrl-C or SIGTERM, then ends the live event streams. The signal handlers are
/// installed when this is called, not when the future is first polled, so a signal that comes
/// while the server is busy accepting is never left to its default action (death).
fn stop_serving() -> impl std::future::Future<Output = ()> + Send + 'static {
    let signal = wait_for_signal();
    async move {
        signal.await;
        server::begin_shutdown();
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed at the call (inside a runtime), so
/// the process never dies of a signal that arrives before the future is polled.
pub fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        if let (Some(mut term), Some(mut interrupt)) = handlers {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn stop(node: Node) {
    tracing::info!("stopping: no new work is claimed; in-flight work finishes or is released");
    let Node { store, gateway, shutdown, tasks, recorder, artifacts, .. } = node;
    let _ = shutdown.send(true);
    for task in tasks {
        let _ = task.await;
    }
    // artifact files still being written behind an answer land before the process exits
    artifacts.flush().await;
    // the last transitions are recorded once the breakers (owned by the gateway) are dropped
    drop(gateway);
    if tokio::time::timeout(std::time::Duration::from_secs(5), recorder).await.is_err() {
        tracing::warn!("circuit transitions still pending at shutdown were not recorded");
    }
    store.close().await;
    tracing::info!("stopped");
}

async fn run_with_server(global: &Global, args: ServeArgs, roles: Vec<&Role>, mode: &str) -> anyhow::Result<()> {
    let metrics = metrics_render()?;
    let configs = load_configs_or_exit(&global.config_dir)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(server::tls::server_config(cert, key).map_err(|e| ExitWith(2, format!("error: {e}")))?)
        }
        _ => None,
    };
    let shared_limits = match args.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Some(
            server::SharedRateLimits::connect(url, &args.redis_prefix)
                .await
                .map_err(|e| ExitWith(2, format!("error: {e}")))?,
        ),
        None => None,
    };
    let listener = bind(args.listen).await?;
    // before the banner: whoever reads it may signal at once
    let stop_signal = stop_serving();
    let examples =
        if mode == "embedded" && !args.no_examples { Some(start_examples(global, &args).await) } else { None };
    let address = listener.local_addr().context("reading the bound address")?;
    let options = NodeOptions {
        concurrency: args.concurrency,
        shards: &[],
        llm: Some(&args.llm),
        llm_client: None,
        lease: DEFAULT_LEASE,
        toolsets: Default::default(),
        embedder: !args.minimal,
    };
    let node = start_node(global, "cogo", &roles, options).await?;
    let state = server::AppState {
        store: node.store.clone(),
        routes: Arc::new(configs.routes),
        admin_token: args.admin_token.filter(|t| !t.is_empty()).map(Arc::from),
        api_tokens: Arc::new(args.api_tokens.into_iter().filter(|t| !t.is_empty()).collect()),
        metrics,
        agent_id: Arc::from(node.agent_id.as_str()),
        mcp: Some(Arc::new(server::McpApi {
            gateway: node.gateway.clone(),
            policies: node.policies.clone(),
            config: configs.mcp.clone(),
            artifacts: node.artifacts.clone(),
        })),
        knowledge: node.embedder.clone().map(|embedder| Arc::new(server::KnowledgeApi { embedder })),
        goals: (!args.minimal)
            .then(|| Arc::new(server::GoalsApi { artifacts: node.artifacts.clone(), budget: configs.agent.budget })),
        shared_limits: shared_limits.clone(),
    };
    let token_note = if state.admin_token.is_some() {
        "admin token set"
    } else {
        "no admin token: mutating routes are refused (set COGO_ADMIN_TOKEN)"
    };
    let limits = server::Limits {
        rate_per_second: args.rate_limit,
        rate_burst: args.rate_burst,
        auth_failures_per_second: args.auth_failure_rate,
        auth_failure_burst: args.auth_failure_burst,
        max_connections_per_client: args.max_connections_per_client,
        max_connections: args.max_connections,
        write_timeout: std::time::Duration::from_secs(args.write_timeout_secs),
        ..server::Limits::default()
    };
    let app = if args.minimal { server::minimal_router(state, limits) } else { server::router(state, limits) };
    let mode = if args.minimal { "minimal server: health, metrics, summaries, artifacts" } else { mode };
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "COGO {} is up ({mode}, {} store: {})",
            env!("CARGO_PKG_VERSION"),
            node.store.kind().name(),
            store::redact_url(&database_url(global))
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if !args.minimal {
            writeln!(out, "  dashboard  {scheme}://{address}/  (it asks for the admin or an API token)")?;
        }
        writeln!(out, "  API        {scheme}://{address}/api/metrics/summary  (OpenAPI: /api/openapi.json)")?;
        writeln!(out, "  health     {scheme}://{address}/healthz  {scheme}://{address}/readyz")?;
        writeln!(out, "  metrics    {scheme}://{address}/metrics")?;
        writeln!(
            out,
            "  agent      {}  roles: {}",
            node.agent_id,
            if roles.is_empty() {
                "none (workers run separately)".to_owned()
            } else {
                roles.iter().map(|r| r.name).collect::<Vec<_>>().join(",")
            }
        )?;
        match &examples {
            Some(Ok(servers)) => writeln!(out, "  MCP        {}", crate::mcp_cmd::describe_examples(servers))?,
            Some(Err(why)) => writeln!(out, "  MCP        example servers not started: {why}")?,
            None => {}
        }
        writeln!(out, "  security   {token_note}")?;
        match (&shared_limits, args.rate_limit) {
            (_, 0) => writeln!(out, "  limits     request rate limits off")?,
            (Some(shared), _) => writeln!(
                out,
                "  limits     {}/s per client and per token, shared through Redis at {}",
                args.rate_limit,
                shared.url()
            )?,
            (None, _) => writeln!(out, "  limits     {}/s per client and per token, in this process", args.rate_limit)?,
        }
        writeln!(out, "  artifacts  {}", node.artifacts.location())?;
        writeln!(out, "  policies   {} (reloaded on change)", global.config_dir.display())?;
        writeln!(out, "Press Ctrl-C to stop.")?;
        out.flush()?;
    }
    let _policies = node.policies.clone();
    match tls {
        Some(config) => {
            let listener = server::tls::TlsListener::new(listener, config).context("starting TLS")?;
            server::serve(listener, app, limits, stop_signal).await;
        }
        None => {
            // answers go out as soon as they are written (no Nagle delay on small frames)
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            server::serve(listener, app, limits, stop_signal).await
        }
    }
    stop(node).await;
    drop(examples);
    Ok(())
}

/// Starts the example MCP servers for `cogo up`; a failure is reported, not fatal.
async fn start_examples(global: &Global, args: &ServeArgs) -> Result<mcp::examples::ExampleServers, String> {
    let launcher = crate::mcp_cmd::examples_launcher(global, &args.examples).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    match launcher.start_all(crate::mcp_cmd::example_ports(&args.examples)).await {
        Ok(servers) => {
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "example MCP servers ready");
            Ok(servers)
        }
        Err(err) => {
            tracing::warn!(error = %err, "example MCP servers not started");
            Err(err.to_string())
        }
    }
}

/// The embedded admin token: `--admin-token`, else the one kept in the data dir (created on first
/// use, readable only by its owner), so a laptop install is protected without extra steps.
fn embedded_admin_token(
    global: &Global,
    given: Option<String>,
) -> anyhow::Result<(String, Option<std::path::PathBuf>)> {
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        return Ok((token, None));
    }
    let path = global.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_owned();
        if token.len() >= 32 {
            return Ok((token, Some(path)));
        }
    }
    std::fs::create_dir_all(&global.data_dir).with_context(|| format!("creating {}", global.data_dir.display()))?;
    let token: String = rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{token}")?;
    Ok((token, Some(path)))
}

pub async fn up(global: &Global, mut args: ServeArgs) -> anyhow::Result<()> {
    if args.minimal {
        return Err(ExitWith(2, "error: --minimal is for `cogo serve`; `cogo up` runs everything".to_owned()).into());
    }
    let (token, path) = embedded_admin_token(global, args.admin_token.take())?;
    args.admin_token = Some(token);
    if let Some(path) = path {
        writeln!(
            std::io::stdout(),
            "Admin token: in {} (send it as x-admin-token or Authorization: Bearer)",
            path.display()
        )?;
    }
    run_with_server(global, args, ROLES.iter().collect(), "embedded").await
}

pub async fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    run_with_server(global, args, Vec::new(), "server").await
}

pub async fn worker(global: &Global, args: WorkerArgs) -> anyhow::Result<()> {
    let mut roles = Vec::new();
    for name in &args.roles {
        let role = ROLES.iter().find(|r| r.name == name.as_str()).ok_or_else(|| {
            let known: Vec<&str> = ROLES.iter().map(|r| r.name).collect();
            ExitWith(2, format!("error: unknown role {name:?}; this build runs: {}", known.join(", ")))
        })?;
        roles.push(role);
    }
    if args.server.is_some() {
        return crate::edge_worker::run(global, args, roles).await;
    }
    let metrics = metrics_render()?;
    let options = NodeOptions {
        concurrency: args.concurrency,
        shards: &args.shards,
        llm: Some(&args.llm),
        llm_client: None,
        lease: std::time::Duration::from_millis(args.lease_ms),
        toolsets: Default::default(),
        embedder: true,
    };
    // a taken port stops the worker before it claims anything
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let node = start_node(global, "worker", &roles, options).await?;
    let metrics_endpoint = match metrics_listener {
        Some(listener) => {
            let bound = listener.local_addr().context("reading the bound address")?;
            let store = node.store.clone();
            let ready: Readiness = Arc::new(move || {
                let store = store.clone();
                Box::pin(async move { store.ping().await.map_err(|_| "database unavailable") })
            });
            tokio::spawn(serve_worker_metrics(listener, metrics, ready));
            Some(bound)
        }
        None => None,
    };
    let signal = wait_for_signal();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "COGO worker {} running roles {} on {}",
        node.agent_id,
        args.roles.join(","),
        store::redact_url(&database_url(global))
    )?;
    if let Some(bound) = metrics_endpoint {
        writeln!(out, "  metrics    http://{bound}/metrics  (health: /healthz /readyz)")?;
    }
    writeln!(out, "  artifacts  {}", node.artifacts.location())?;
    out.flush()?;
    drop(out);
    signal.await;
    stop(node).await;
    Ok(())
}
