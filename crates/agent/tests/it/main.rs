//! The orchestrator and the roles against real parts: the example MCP servers (Playwright on
//! Chromium, figma offline), the local model (SmolLM2 in-process), MiniLM for ranking, the bus on
//! SQLite and PostgreSQL.

mod goals;
mod roles;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use model::config::AgentPolicy;
use model::config::mcp::Toolset;
use model::goal::{Goal, GoalStatus};
use tokio::sync::watch;

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("cogo-agent-{}", model::new_id().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The seed agent policy, changed by `edit`.
pub(crate) fn policy(edit: impl FnOnce(&mut AgentPolicy)) -> Arc<AgentPolicy> {
    let mut policy: AgentPolicy =
        model::config::parse("agent_policy.json", model::config::ConfigFile::Agent.seed()).expect("seed policy");
    edit(&mut policy);
    Arc::new(policy)
}

/// The local model under the seed policies.
pub(crate) fn local_llm() -> Arc<dyn llm::LlmClient> {
    let model = llm::local::LocalModel::load(&test_support::llm_model(), llm::local::LocalOptions::default())
        .expect("the local model loads");
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    Arc::new(llm::Llm::new(Arc::new(model), policies, breakers))
}

/// MiniLM, for ranking tools and retrieval.
pub(crate) fn embedder() -> Arc<dyn knowledge::Embedder> {
    Arc::new(knowledge::MiniLm::load(&knowledge::embed::minilm_dir(&test_support::models_dir())).expect("MiniLM loads"))
}

/// Every part a goal needs, in this process: the gateway and the roles on the bus, the
/// orchestrator, presence so the registry sees the roles.
pub(crate) struct Node {
    pub(crate) store: store::Store,
    pub(crate) data_dir: PathBuf,
    pub(crate) orchestrator: Arc<agent::Orchestrator>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub(crate) async fn start(
        store: store::Store,
        data_dir: &Path,
        toolsets: BTreeMap<String, Toolset>,
        policy: Arc<AgentPolicy>,
        llm: Arc<dyn llm::LlmClient>,
    ) -> Self {
        let policies = Arc::new(resilience::Policies::seed());
        let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
        let gateway = Arc::new(mcp::Gateway::new(
            toolsets,
            breakers,
            artifacts::Artifacts::local(data_dir).expect("artifact store"),
            "t",
        ));
        let embedder = embedder();
        let env = Arc::new(agent::bus::BusEnvironment::new(
            store.clone(),
            Some(gateway.clone()),
            policy.clone(),
            Some(embedder.clone()),
        ));
        let orchestrator = Arc::new(
            agent::Orchestrator::new(
                llm.clone(),
                env,
                policy.clone(),
                agent::DecisionLog::new(artifacts::Artifacts::local(data_dir).expect("artifact store")),
                Some(embedder),
            )
            .with_max_poll(Duration::from_millis(100)),
        );
        let retry: worker::RetryResolver = {
            let policies = policies.clone();
            Arc::new(move |message: &model::Message| policies.retry(&worker::policy_key(message)))
        };
        let agent_id = format!("test-{}", &model::new_id().simple().to_string()[20..]);
        let handlers: Vec<(&str, &str, Arc<dyn worker::Handler>)> = vec![
            ("mcp", "gateway", Arc::new(mcp::GatewayHandler::new(gateway.clone(), 32 * 1024))),
            ("agent", "orchestrator", Arc::new(agent::OrchestratorHandler::new(orchestrator.clone()))),
            ("agent", "execution", Arc::new(agent::roles::execution::ExecutionHandler::new(policy.clone()))),
            (
                "agent",
                "codegen",
                Arc::new(agent::roles::codegen::CodegenHandler::new(
                    llm.clone(),
                    policy.clone(),
                    artifacts::Artifacts::local(data_dir).expect("artifact store"),
                )),
            ),
        ];
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (service, role, handler) in handlers {
            let mut config = worker::RuntimeConfig::new(service, role, &agent_id);
            config.concurrency = 4;
            config.poll_interval = Duration::from_millis(200);
            let runtime = worker::Runtime::new(store.clone(), config, handler, retry.clone());
            tasks.push(tokio::spawn(runtime.run(shutdown_rx.clone())));
        }
        let now = chrono::Utc::now();
        store
            .presence_online(&model::presence::Presence {
                agent_id: agent_id.clone(),
                service: "test".into(),
                roles: vec!["gateway".into(), "orchestrator".into(), "execution".into(), "codegen".into()],
                shard: String::new(),
                host: "localhost".into(),
                version: "test".into(),
                status: model::presence::PresenceStatus::Online,
                started_at: now,
                last_heartbeat: now,
                capabilities: serde_json::json!({}),
            })
            .await
            .expect("presence");
        Self { store, data_dir: data_dir.to_path_buf(), orchestrator, shutdown, tasks }
    }

    /// Waits until the goal ends or waits for an approval.
    pub(crate) async fn settle(&self, goal: &Goal, limit: Duration) -> Goal {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let current = self.store.goal(&goal.id).await.expect("goal");
            if current.status.is_final() || current.status == GoalStatus::AwaitingApproval {
                return current;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "goal {} still {} after {limit:?}",
                goal.id,
                current.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an answered approval has taken effect, then until the goal ends or waits again.
    pub(crate) async fn resume(&self, goal: &Goal, limit: Duration) -> Goal {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let current = self.store.goal(&goal.id).await.expect("goal");
            if current.status != GoalStatus::AwaitingApproval {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "goal {} did not resume", goal.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.settle(goal, limit).await
    }

    pub(crate) async fn decisions(&self, goal: &Goal) -> Vec<agent::Decision> {
        let artifacts = artifacts::Artifacts::local(&self.data_dir).expect("artifact store");
        agent::DecisionLog::new(artifacts).read(&goal.trace_id).await.expect("decisions")
    }

    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The example servers `cogo up` runs, on free ports.
pub(crate) fn launcher(run_dir: &Path) -> mcp::examples::Launcher {
    let servers = test_support::mcp_servers_dir();
    mcp::examples::Launcher::new(servers.parent().expect("mcp-servers"), run_dir)
}
