//! The live environment: goals in the store, steps on the bus, tools from the MCP gateway and the
//! roles online, health and figures from the store, context from the knowledge index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use model::config::AgentPolicy;
use model::goal::{Goal, GoalUpdate};
use model::{Intent, MessageStatus, NewMessage};

use crate::orchestrator::{Dispatch, Environment, StepOutcome};
use crate::registry::{self, Target, ToolEntry};
use crate::state::ContextItem;
use crate::{Error, clip};

/// How long listing one toolset's tools may take.
pub const TOOLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Context chunks retrieved for planning.
pub const CONTEXT_CHUNKS: usize = 4;

/// The live environment.
pub struct BusEnvironment {
    store: store::Store,
    gateway: Option<Arc<mcp::Gateway>>,
    policy: Arc<AgentPolicy>,
    embedder: Option<Arc<dyn knowledge::Embedder>>,
}

impl BusEnvironment {
    /// Over `store`; MCP tools from `gateway`; context from the knowledge index when `embedder` is set.
    pub fn new(
        store: store::Store,
        gateway: Option<Arc<mcp::Gateway>>,
        policy: Arc<AgentPolicy>,
        embedder: Option<Arc<dyn knowledge::Embedder>>,
    ) -> Self {
        Self { store, gateway, policy, embedder }
    }

    async fn mcp_tools(&self) -> Vec<ToolEntry> {
        let Some(gateway) = &self.gateway else { return Vec::new() };
        let toolsets: Vec<String> = gateway.toolsets().map(str::to_owned).collect();
        let listed = futures_util::future::join_all(toolsets.iter().map(|toolset| async move {
            (toolset.clone(), tokio::time::timeout(TOOLS_TIMEOUT, gateway.tools(toolset)).await)
        }))
        .await;
        let mut tools = Vec::new();
        for (toolset, answer) in listed {
            match answer {
                Ok(Ok(list)) => {
                    for tool in list.iter() {
                        tools.push(ToolEntry {
                            name: format!("{toolset}.{}", tool.name),
                            description: clip(tool.description.as_deref().unwrap_or(""), 300),
                            input_schema: tool.input_schema.clone(),
                            target: Target::Mcp { toolset: toolset.clone(), tool: tool.name.clone() },
                            breaker_open: false,
                            calls: 0,
                            success_rate: None,
                            p95_ms: None,
                            needs_approval: false,
                        });
                    }
                }
                Ok(Err(err)) => tracing::warn!(toolset, error = %err, "toolset left out of the registry"),
                Err(_) => tracing::warn!(toolset, "toolset left out of the registry: tools/list timed out"),
            }
        }
        tools
    }
}

/// Roles with a live process, from presence.
async fn online_roles(store: &store::Store) -> Result<HashSet<String>, Error> {
    Ok(store
        .presence()
        .await?
        .into_iter()
        .filter(|p| p.status == model::presence::PresenceStatus::Online)
        .flat_map(|p| p.roles)
        .collect())
}

impl Environment for BusEnvironment {
    fn load<'a>(&'a self, goal_id: &'a str) -> BoxFuture<'a, Result<Goal, Error>> {
        Box::pin(async move { Ok(self.store.goal(goal_id).await?) })
    }

    fn save<'a>(&'a self, goal_id: &'a str, update: GoalUpdate) -> BoxFuture<'a, Result<Goal, Error>> {
        Box::pin(async move { Ok(self.store.update_goal(goal_id, update).await?) })
    }

    fn tools<'a>(&'a self, _tenant: &'a str) -> BoxFuture<'a, Result<Vec<ToolEntry>, Error>> {
        Box::pin(async move {
            let mut tools = self.mcp_tools().await;
            let roles = online_roles(&self.store).await?;
            tools.extend(registry::role_tools(&roles, &self.policy));
            // health: breakers open in any process
            let now = Utc::now();
            let open: Vec<String> = self
                .store
                .circuits()
                .await?
                .into_iter()
                .filter(|c| c.state == "open" && c.open_until.is_none_or(|until| until > now))
                .map(|c| c.key)
                .collect();
            // figures of the last day
            let summary = self.store.mcp_summary(now - chrono::Duration::hours(24)).await?;
            for tool in &mut tools {
                if let Target::Mcp { toolset, tool: name } = &tool.target {
                    let key = model::policy::mcp_call_key(toolset, name);
                    tool.breaker_open =
                        open.iter().any(|k| k.strip_prefix(&key).is_some_and(|rest| rest.starts_with('.')));
                    if let Some(figures) = summary.detail.get(&format!("{toolset}.{name}")) {
                        tool.calls = figures.calls;
                        if figures.calls > 0 {
                            tool.success_rate = Some(1.0 - figures.fails as f64 / figures.calls as f64);
                        }
                        tool.p95_ms = figures.p95;
                    }
                }
            }
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(tools)
        })
    }

    fn retrieve<'a>(&'a self, tenant: &'a str, query: &'a str) -> BoxFuture<'a, Vec<ContextItem>> {
        Box::pin(async move {
            let Some(embedder) = &self.embedder else { return Vec::new() };
            let searcher = knowledge::Searcher::new(self.store.clone(), embedder.clone());
            let mut request = knowledge::search::SearchRequest::new(clip(query, 2_000));
            request.top_k = CONTEXT_CHUNKS;
            request.threshold = 0.0;
            match searcher
                .graphrag(tenant, &request, knowledge::graph::TraversalLimits::default(), CONTEXT_CHUNKS)
                .await
            {
                Ok(evidence) => evidence
                    .into_iter()
                    .map(|e| ContextItem {
                        chunk_id: e.chunk.id,
                        source: e.chunk.source.clone(),
                        text: clip(&e.chunk.text, 600),
                        score: e.score,
                        via: e
                            .via
                            .iter()
                            .map(|p| format!("{} -{}-> {}", p.from, p.relation, p.to))
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
                    .collect(),
                Err(err) => {
                    tracing::info!(error = %err, "no context retrieved for the goal");
                    Vec::new()
                }
            }
        })
    }

    fn dispatch<'a>(&'a self, step: Dispatch<'a>) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            let (service, role, intent, payload, max_attempts) = match step.target {
                Target::Mcp { toolset, tool } => (
                    "mcp",
                    "gateway",
                    Intent::MCP_CALL,
                    json!({"toolset": toolset, "tool": tool, "params": step.params}),
                    // retried as long as the call's retry policy says
                    self.gateway.as_ref().map(|gateway| gateway.max_attempts(toolset, tool)),
                ),
                // commands may have side effects: one attempt
                Target::Role { service, role, intent } => {
                    let once = intent == Intent::EXECUTE;
                    (service.as_str(), role.as_str(), intent.as_str(), step.params.clone(), once.then_some(1))
                }
                Target::Respond => return Err(Error::Invalid("respond steps are not dispatched".into())),
            };
            let intent = Intent::new(intent).map_err(|e| Error::Invalid(format!("intent: {e}")))?;
            let mut message = NewMessage::new(service, role, intent, payload);
            message.tenant = step.goal.tenant.clone();
            message.trace_id = Some(step.goal.trace_id.clone());
            message.parent_id = step.parent;
            message.idempotency_key = Some(step.key);
            if let Some(max) = max_attempts {
                message.max_attempts = max;
            }
            let enqueued = self.store.enqueue(message).await?;
            Ok(enqueued.message.id.to_string())
        })
    }

    fn poll<'a>(&'a self, message_id: &'a str) -> BoxFuture<'a, Result<Option<StepOutcome>, Error>> {
        Box::pin(async move {
            let id: model::MessageId =
                message_id.parse().map_err(|_| Error::Invalid(format!("message id {message_id:?}")))?;
            let message = self.store.message(id).await?;
            Ok(match message.status {
                MessageStatus::Done => {
                    Some(StepOutcome { ok: true, result: message.result, result_url: message.result_url, error: None })
                }
                MessageStatus::Failed => Some(StepOutcome {
                    ok: false,
                    result: message.result,
                    result_url: message.result_url,
                    error: Some(message.last_error.unwrap_or_else(|| "failed".into())),
                }),
                MessageStatus::Queued | MessageStatus::Claimed => None,
            })
        })
    }

    fn now(&self) -> DateTime<Utc> {
        self.store.clock().now()
    }
}

/// Counts of the registry's tools by where they go (for logs).
pub fn describe(tools: &[ToolEntry]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for tool in tools {
        let kind = match tool.target {
            Target::Mcp { .. } => "mcp",
            Target::Role { .. } => "role",
            Target::Respond => "respond",
        };
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

/// The JSON of a registry for display.
pub fn registry_json(tools: &[ToolEntry]) -> Value {
    json!(
        tools
            .iter()
            .map(|t| json!({"name": t.name, "breaker_open": t.breaker_open, "needs_approval": t.needs_approval}))
            .collect::<Vec<_>>()
    )
}
