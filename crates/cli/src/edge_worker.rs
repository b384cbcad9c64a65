//! `cogo worker --server URL --token T`: an edge worker. It has no database: its runtimes claim,
//! heartbeat and complete through one outbound WebSocket to the server (`edge::EdgeQueue`), so it
//! runs behind NAT or a firewall. Roles that read the store themselves (indexing, graphrag,
//! research, orchestrator) do not run here.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::ExitWith;
use crate::args::{Global, WorkerArgs};
use crate::node::{Role, RoleContext};
use crate::settings::load_configs_or_exit;

/// How long the first connection may take before the worker starts anyway (and keeps trying).
const FIRST_CONNECT: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn run(global: &Global, args: WorkerArgs, roles: Vec<&'static Role>) -> anyhow::Result<()> {
    let server = args.server.clone().unwrap_or_default();
    let token = zeroize::Zeroizing::new(args.token.clone().unwrap_or_default());
    let metrics = crate::node::metrics_render()?;
    let configs = load_configs_or_exit(&global.config_dir)?;
    let policies = Arc::new(resilience::Policies::new(&configs.retry, &configs.breaker));
    let host = crate::node::host_name();
    let name = args.worker_name.clone().unwrap_or_else(|| {
        let host: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
            .take(48)
            .collect();
        format!("{host}-{}", &model::new_id().simple().to_string()[26..])
    });
    // breakers work locally; their transitions are recorded through the server (forwarded once the
    // link is up, kept in order meanwhile)
    let (transitions, transitions_rx) = tokio::sync::mpsc::unbounded_channel();
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), Some(transitions)));
    let instance = name.rsplit('-').next().unwrap_or("0").to_owned();
    // the edge host's own store: its data dir, or the shared object store when it can reach one
    let artifacts = crate::settings::open_artifacts(global, &instance).await?;
    let gateway = Arc::new(mcp::Gateway::new(configs.mcp.toolsets.clone(), breakers, artifacts.clone(), &instance));
    let llm = if roles.iter().any(|r| r.needs_llm) {
        crate::llm_cmd::client(global, &args.llm).await.map_err(|err| format!("the LLM did not load: {err:#}"))
    } else {
        Err("no LLM is configured for this process".to_owned())
    };
    let context = RoleContext {
        gateway: gateway.clone(),
        store: None,
        embedder: None,
        llm,
        policy: Arc::new(configs.agent.clone()),
        artifacts: artifacts.clone(),
    };
    let mut handlers = Vec::new();
    for role in &roles {
        match (role.handler)(&context) {
            Ok(handler) => handlers.push((*role, handler)),
            Err(why) => {
                return Err(
                    ExitWith(2, format!("error: role {} cannot run on an edge worker: {why}", role.name)).into()
                );
            }
        }
    }
    drop(context);
    let queues = roles
        .iter()
        .map(|r| model::edge::QueueRef {
            service: r.service.to_owned(),
            role: r.role.to_owned(),
            shards: args.shards.clone(),
        })
        .collect();
    let options = edge::EdgeOptions {
        server: server.clone(),
        token,
        name,
        host,
        queues,
        ca_cert: args.ca_cert.clone(),
        request_timeout: std::time::Duration::from_secs(30),
    };
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(crate::node::bind(addr).await?),
        None => None,
    };
    let queue = match edge::EdgeQueue::start(options, FIRST_CONNECT).await {
        Ok(queue) => queue,
        Err(err @ (edge::Error::Refused(_) | edge::Error::Token | edge::Error::Name(_))) => {
            return Err(ExitWith(1, format!("error: {err}")).into());
        }
        Err(err) => return Err(ExitWith(2, format!("error: {err}")).into()),
    };
    let agent_id = queue.agent_id().to_owned();
    let forwarder = tokio::spawn(forward_transitions(queue.clone(), transitions_rx));
    let retry: worker::RetryResolver = {
        let policies = policies.clone();
        Arc::new(move |message: &model::Message| policies.retry(&worker::policy_key(message)))
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (role, handler) in handlers {
        let mut config = worker::RuntimeConfig::new(role.service, role.role, &agent_id);
        config.concurrency = args.concurrency.max(1);
        config.lease = std::time::Duration::from_millis(args.lease_ms);
        config.shards = args.shards.clone();
        let runtime = worker::Runtime::on_queue(Arc::new(queue.clone()), config, handler, retry.clone());
        tasks.push(tokio::spawn(runtime.run(shutdown_rx.clone())));
    }
    let metrics_endpoint = match metrics_listener {
        Some(listener) => {
            let bound = listener.local_addr().context("reading the bound address")?;
            let state = queue.state();
            // ready while connected to the server
            let ready: crate::node::Readiness = Arc::new(move || {
                let connected = matches!(&*state.borrow(), edge::LinkState::Connected { .. });
                Box::pin(async move { if connected { Ok(()) } else { Err("not connected to the server") } })
            });
            tokio::spawn(crate::node::serve_worker_metrics(listener, metrics, ready));
            Some(bound)
        }
        None => None,
    };
    let signal = crate::node::wait_for_signal();
    let mut out = std::io::stdout().lock();
    let state = match &*queue.state().borrow() {
        edge::LinkState::Connected { .. } => "connected",
        _ => "connecting",
    };
    writeln!(
        out,
        "COGO worker {agent_id} running roles {} through {} ({state}, edge worker)",
        args.roles.join(","),
        server
    )?;
    if let Some(bound) = metrics_endpoint {
        writeln!(out, "  metrics    http://{bound}/metrics  (health: /healthz /readyz)")?;
    }
    writeln!(out, "  artifacts  {}", artifacts.location())?;
    out.flush()?;
    drop(out);
    // stop on a signal, or when the server refuses the worker for good (a revoked token)
    let mut link = queue.state();
    let refused = async move {
        match link.wait_for(|s| matches!(s, edge::LinkState::Refused(_))).await {
            Ok(state) => match &*state {
                edge::LinkState::Refused(why) => why.clone(),
                _ => String::new(),
            },
            Err(_) => std::future::pending().await,
        }
    };
    let refused = tokio::select! {
        () = signal => None,
        why = refused => Some(why),
    };
    tracing::info!("stopping: no new work is claimed; in-flight work finishes or is released");
    let _ = shutdown.send(true);
    for task in tasks {
        let _ = task.await;
    }
    artifacts.flush().await;
    // the last transitions go out once the breakers (owned by the gateway) are gone
    drop(gateway);
    if tokio::time::timeout(std::time::Duration::from_secs(5), forwarder).await.is_err() {
        tracing::warn!("circuit transitions still pending at shutdown were not recorded");
    }
    drop(queue);
    tracing::info!("stopped");
    match refused {
        Some(why) => Err(ExitWith(1, format!("error: the server refused this edge worker: {why}")).into()),
        None => Ok(()),
    }
}

/// Sends each circuit transition of this worker's breakers to the server, in order; a transient
/// failure (the link is down) is retried every second for up to a minute, a refusal is logged.
async fn forward_transitions(
    queue: edge::EdgeQueue,
    mut transitions: tokio::sync::mpsc::UnboundedReceiver<resilience::TransitionRecord>,
) {
    while let Some(record) = transitions.recv().await {
        let mut attempts = 0;
        loop {
            match queue.record_circuit(&record.key, record.transition, record.open_until).await {
                Ok(()) => break,
                Err(err) if err.transient && attempts < 60 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(err) => {
                    tracing::warn!(key = %record.key, error = %err.message, "a circuit transition was not recorded");
                    break;
                }
            }
        }
    }
}
