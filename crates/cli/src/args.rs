//! The command line. Every process setting is a flag with a `COGO_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// COGO: an enterprise agent platform in one binary.
///
/// `cogo up` runs everything embedded on one machine (SQLite in the data dir). For the distributed
/// mode run `cogo serve` and any number of `cogo worker` processes against one PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "cogo", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Directory of the policy files (mcp.json, retry_policy.json, circuit_breaker.json,
    /// route_policies.json). Missing files fall back to the shipped seed defaults.
    #[arg(long, global = true, env = "COGO_CONFIG_DIR", default_value = "configs")]
    pub config_dir: PathBuf,
    /// Directory for the embedded database and artifacts.
    #[arg(long, global = true, env = "COGO_DATA_DIR", default_value = ".cogo")]
    pub data_dir: PathBuf,
    /// Database: postgres://USER@HOST/DB for the distributed mode; default sqlite://DATA_DIR/cogo.db.
    #[arg(long, global = true, env = "COGO_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "COGO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Where artifacts go: s3://BUCKET/PREFIX (S3-compatible storage every process reaches; endpoint,
    /// region and credentials from the standard AWS_* variables) or file:///DIR; default the data dir.
    #[arg(long, global = true, env = "COGO_ARTIFACTS_URL")]
    pub artifacts_url: Option<String>,
    /// Directory of local model files (embeddings, LLM); default DATA_DIR/models.
    #[arg(long, global = true, env = "COGO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Log filter (tracing syntax, e.g. `info,store=debug`); RUST_LOG is used when unset.
    #[arg(long, global = true, env = "COGO_LOG")]
    pub log: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything embedded: SQLite, the HTTP API and every worker role, in one process.
    Up(ServeArgs),
    /// Run the HTTP API and maintenance (distributed mode: workers run separately).
    Serve(ServeArgs),
    /// Run worker roles against the database.
    Worker(WorkerArgs),
    /// Check policy files, print their JSON Schemas or the configuration reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show which retry and breaker rules apply to a key.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Report what is present and what is missing, with the fix.
    Doctor(DoctorArgs),
    /// Apply database migrations.
    Migrate,
    /// Put a message on the bus.
    Enqueue(EnqueueArgs),
    /// List messages.
    Messages(MessagesArgs),
    /// The dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// List processes (presence).
    Agents,
    /// Secrets, sealed in the store under the master key (COGO_MASTER_KEY or DATA_DIR/master.key).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// API tokens that see one tenant's messages, events, traces and dead letters.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Show what happened in a trace: its messages and their events, in order.
    Trace {
        /// Trace id (32 lower-case hex digits).
        trace_id: String,
        /// Print JSON lines instead of a timeline.
        #[arg(long)]
        json: bool,
    },
    /// Talk to the MCP toolsets of mcp.json: ping, list tools, call a tool.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Benchmarks that print JSON figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Index a file or directory into the knowledge base (only changed files are re-indexed).
    Index(IndexArgs),
    /// Search the knowledge base (hybrid full text + vectors; --graphrag adds graph evidence).
    Search(SearchArgs),
    /// Walk the knowledge graph: neighbours, paths, typed patterns.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Evaluate retrieval quality or the orchestrator on the goal suite.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Give the orchestrator a goal and follow it to the end (exit code: 0 achieved, 1 failed or
    /// cancelled, 4 waiting for an approval).
    Run(RunArgs),
    /// Check a whole installation stage by stage; the exit code is the verdict.
    #[command(subcommand)]
    Gate(GateCommand),
    /// Goals: list, show, approve or reject a waiting step, cancel.
    #[command(subcommand)]
    Goals(GoalsCommand),
    /// Re-run the orchestrator on a finished trace against its recorded tool results and model
    /// answers, and compare the decisions (exit code 1 when they differ).
    Replay {
        /// Trace id (32 lower-case hex digits).
        trace_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the configured LLM (local GGUF model or OpenAI-compatible endpoint), or measure it.
    #[command(subcommand)]
    Llm(LlmCommand),
}

/// Which LLM answers.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// Provider: `local` runs a GGUF model in this process; `openai` calls an OpenAI-compatible
    /// chat completions endpoint (OpenAI, vLLM, Ollama, llama.cpp's server).
    #[arg(long = "llm-provider", env = "COGO_LLM_PROVIDER", value_enum, default_value_t = LlmProviderKind::Local)]
    pub provider: LlmProviderKind,
    /// GGUF file of the local model; default MODELS_DIR/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf.
    #[arg(long = "llm-model", env = "COGO_LLM_MODEL")]
    pub model: Option<PathBuf>,
    /// Context length of the local model, in tokens.
    #[arg(long = "llm-context", env = "COGO_LLM_CONTEXT", default_value_t = 4096)]
    pub context: u32,
    /// CPU threads of the local model (default: every core).
    #[arg(long = "llm-threads", env = "COGO_LLM_THREADS")]
    pub threads: Option<u32>,
    /// Base URL of the OpenAI-compatible endpoint, e.g. `https://api.openai.com/v1`.
    #[arg(long = "llm-url", env = "COGO_LLM_URL")]
    pub url: Option<String>,
    /// Model name at that endpoint.
    #[arg(long = "llm-name", env = "COGO_LLM_NAME", default_value = "gpt-4o-mini")]
    pub name: String,
    /// Its API key (keep it in `cogo secrets`; it is never printed).
    #[arg(long = "llm-api-key", env = "COGO_LLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How the endpoint takes a JSON Schema: `json_schema` (OpenAI, vLLM, llama.cpp's server,
    /// Ollama) or `json_object` (llama-cpp-python's server).
    #[arg(long = "llm-schema-mode", env = "COGO_LLM_SCHEMA_MODE", value_enum, default_value_t = SchemaModeArg::JsonSchema)]
    pub schema_mode: SchemaModeArg,
}

/// LLM providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProviderKind {
    /// A GGUF model in this process (llama.cpp).
    Local,
    /// An OpenAI-compatible endpoint.
    Openai,
}

/// How an OpenAI-compatible endpoint takes a JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaModeArg {
    /// `response_format: {"type": "json_schema", ...}`.
    JsonSchema,
    /// `response_format: {"type": "json_object", "schema": ...}`.
    JsonObject,
}

/// LLM commands.
#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Ask one question; the answer streams to standard output.
    Chat(LlmChatArgs),
    /// Prompt and generation tokens/s, time to first token, memory and the JSON-validity rate
    /// under constraints, for the configured model (and any --model or --peer beside it).
    Bench(LlmBenchArgs),
}

/// `cogo llm chat`.
#[derive(Debug, Args)]
pub struct LlmChatArgs {
    /// The question.
    pub prompt: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Answer as JSON of this JSON Schema (a file, or the schema itself); the answer is validated.
    #[arg(long)]
    pub schema: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Sampling temperature (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Print the whole response (text, token counts, timings) as JSON instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `cogo llm bench`.
#[derive(Debug, Args)]
pub struct LlmBenchArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Repetitions of each timing.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Prompts per answer shape for the validity rate (1 to 10).
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Another GGUF file to measure in this process after the configured model (repeatable).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// An OpenAI-compatible endpoint to measure beside it (e.g. llama-cpp-python's server running
    /// the same file); uses --llm-name, --llm-api-key and --llm-schema-mode.
    #[arg(long)]
    pub peer: Option<String>,
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// Which tenant and project a knowledge command works in.
#[derive(Debug, Clone, Args)]
pub struct KnowledgeScopeArgs {
    /// Tenant.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Project.
    #[arg(long, default_value = "default")]
    pub project: String,
}

/// Where embeddings come from.
#[derive(Debug, Clone, Args)]
pub struct EmbeddingArgs {
    /// OpenAI-compatible embeddings endpoint (e.g. `https://api.openai.com/v1`); default: MiniLM in-process.
    #[arg(long, env = "COGO_EMBEDDINGS_URL")]
    pub embeddings_url: Option<String>,
    /// Model name at that endpoint.
    #[arg(long, env = "COGO_EMBEDDINGS_MODEL", default_value = "text-embedding-3-small")]
    pub embeddings_model: String,
    /// Its dimension.
    #[arg(long, env = "COGO_EMBEDDINGS_DIM", default_value_t = 1536)]
    pub embeddings_dim: usize,
    /// Its API key.
    #[arg(long, env = "COGO_EMBEDDINGS_API_KEY", hide_env_values = true)]
    pub embeddings_api_key: Option<String>,
}

/// Options of `index`.
#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    /// File or directory.
    pub path: PathBuf,
    #[command(flatten)]
    pub scope: KnowledgeScopeArgs,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    /// Empty the index first (needed after changing the embedding model).
    #[arg(long)]
    pub rebuild: bool,
    /// Also extract entities and relations from the text with the LLM of the `--llm-*` options
    /// (only for new or changed documents; what the text does not name is dropped). Slow with a
    /// local model: a few seconds a chunk.
    #[arg(long)]
    pub llm_extraction: bool,
    /// Chunks of each document sent to the LLM with `--llm-extraction` (the rest keep their
    /// structural graph).
    #[arg(long, default_value_t = knowledge::llm_extract::DEFAULT_MAX_CHUNKS as u32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub llm_extraction_chunks: u32,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `search`.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Tenant.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only sources starting with this.
    #[arg(long)]
    pub source_prefix: Option<String>,
    /// hybrid, fulltext or vector.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// weighted or rrf.
    #[arg(long, default_value = "weighted")]
    pub fusion: String,
    /// Weight of the vector score (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Number of hits.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Drop hits under this fraction of the best score.
    #[arg(long, default_value_t = 0.7)]
    pub threshold: f32,
    /// Add evidence reached through the knowledge graph (GraphRAG).
    #[arg(long)]
    pub graphrag: bool,
    /// Graph hops for --graphrag.
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cogo graph …`.
#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Entities within DEPTH hops of an entity.
    Neighbors {
        /// Entity name (a source like docs/bus.md, a symbol, a section source#heading).
        name: String,
        /// Only entities of this kind as the start.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        scope: KnowledgeScopeArgs,
        /// Hops (1 to 6).
        #[arg(long, default_value_t = 1)]
        depth: usize,
        /// out, in or both.
        #[arg(long, default_value = "both")]
        direction: String,
        /// Only these relation kinds (repeatable).
        #[arg(long)]
        relation: Vec<String>,
        /// Most relations followed per entity.
        #[arg(long, default_value_t = 50)]
        fan_out: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A shortest path between two entities.
    Path {
        /// Start entity name.
        from: String,
        /// End entity name.
        to: String,
        #[command(flatten)]
        scope: KnowledgeScopeArgs,
        /// Most hops (1 to 6).
        #[arg(long, default_value_t = 4)]
        depth: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Paths from an entity that follow a typed pattern, e.g. `>references:symbol <defines:document`.
    Pattern {
        /// Start entity name.
        start: String,
        /// Steps: `[>|<|-]RELATION[:KIND]`, `*` for any relation.
        #[arg(required = true)]
        steps: Vec<String>,
        #[command(flatten)]
        scope: KnowledgeScopeArgs,
        /// Most paths.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `cogo eval …`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Recall@10, nDCG@10 and MRR of full-text, vector and hybrid search on a BEIR-format dataset,
    /// indexed into a scratch database.
    Retrieval(EvalRetrievalArgs),
    /// Run the goal suite end to end (the example MCP servers, the configured model, a scratch
    /// data dir) and print success rate, steps, replans and time per goal.
    Goals(EvalGoalsArgs),
}

/// Options of `eval retrieval`.
#[derive(Debug, Clone, Args)]
pub struct EvalRetrievalArgs {
    /// Directory with corpus.jsonl, queries.jsonl and qrels/test.tsv (or qrels.tsv).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Scratch database backend.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Hybrid score threshold (fraction of the best hit; 0 keeps all hits, as rank metrics expect).
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Ping every enabled toolset (or one) with MCP `ping`, in parallel; exit 1 if any fails.
    Ping {
        /// Only this toolset.
        toolset: Option<String>,
        /// Time limit per toolset in ms (connection included).
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tools of a toolset.
    Tools {
        /// Toolset name.
        toolset: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call a tool and print its result; exit 1 when the tool reports an error.
    Call {
        /// Toolset name.
        toolset: String,
        /// Tool name.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Time limit in ms (default: the toolset's or tool's timeout from mcp.json).
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Act as the client under test of the MCP conformance suite (`scripts/mcp-conformance`):
    /// the scenario comes from `MCP_CONFORMANCE_SCENARIO`, the server URL is the argument.
    Conformance {
        /// The scenario server's URL (streamable HTTP).
        url: String,
    },
    /// Run the example MCP servers (page server, browser, figma) on loopback until stopped.
    Examples {
        /// Where they come from and listen.
        #[command(flatten)]
        args: ExamplesArgs,
        /// Stop the example servers recorded in the data dir's PID files, then exit.
        #[arg(long)]
        stop: bool,
    },
}

/// Where the example MCP servers come from and listen.
#[derive(Debug, Clone, Args)]
pub struct ExamplesArgs {
    /// The project's `mcp-servers/` directory (installed by `scripts/mcp-servers install`).
    #[arg(long, env = "COGO_MCP_SERVERS")]
    pub mcp_servers: Option<PathBuf>,
    /// Port of the browser toolset (WebSocket).
    #[arg(long, default_value_t = 3004)]
    pub browser_port: u16,
    /// Port of the figma toolset (WebSocket).
    #[arg(long, default_value_t = 3007)]
    pub figma_port: u16,
    /// Port of the page server the browser visits.
    #[arg(long, default_value_t = 3010)]
    pub pages_port: u16,
}

/// Options of `up` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "COGO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin token for mutating routes (x-admin-token). Unset: admin routes are refused.
    #[arg(long, env = "COGO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Comma-separated API tokens for read routes.
    #[arg(long, env = "COGO_API_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub api_tokens: Vec<String>,
    /// Handlers running at once per role (up only).
    #[arg(long, env = "COGO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Requests per second allowed to one client address and, separately, to one token; 0 turns
    /// rate limiting off. Over it the API answers 429 with Retry-After.
    #[arg(long, env = "COGO_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// Requests a client or token may make at once above the steady rate.
    #[arg(long, env = "COGO_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,
    /// Wrong tokens per second allowed to one client address (an IPv6 /64 counts as one),
    /// whatever --rate-limit says; over it, requests from there that carry a token get 429 with
    /// Retry-After before the token is checked. 0 turns this limit off.
    #[arg(long, env = "COGO_AUTH_FAILURE_RATE", default_value_t = 1)]
    pub auth_failure_rate: u32,
    /// Wrong tokens a client address may send at once above --auth-failure-rate.
    #[arg(long, env = "COGO_AUTH_FAILURE_BURST", default_value_t = 10)]
    pub auth_failure_burst: u32,
    /// Connections one client address (an IPv6 /64 counts as one) may hold open at once; one
    /// more is answered 429 and closed. 0: no limit.
    #[arg(long, env = "COGO_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,
    /// Connections the API holds open at once, all clients together; one more is answered 503
    /// and closed. 0: no limit.
    #[arg(long, env = "COGO_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Keep the request rate limits in this Redis (`redis://HOST:PORT/DB`, with a password
    /// `redis://:PASSWORD@HOST:PORT/DB`) so that
    /// every server replica using it shares them; unset: in memory, per process. If Redis stops
    /// answering, each server falls back to its own limits until it is back.
    #[arg(long, env = "COGO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of the rate-limit keys in Redis (replicas that share limits use the same one).
    #[arg(long, env = "COGO_REDIS_PREFIX", default_value = "cogo")]
    pub redis_prefix: String,
    /// Seconds a write may wait on a client that reads nothing before its connection is closed.
    #[arg(long, env = "COGO_WRITE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "COGO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "COGO_TLS_KEY", requires = "tls_cert", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
    /// Do not start the example MCP servers (up only).
    #[arg(long, env = "COGO_NO_EXAMPLES")]
    pub no_examples: bool,
    /// The lightweight server (serve only): health, metrics, summaries and artifacts; no MCP
    /// calls, goals, knowledge or models.
    #[arg(long, env = "COGO_MINIMAL")]
    pub minimal: bool,
    /// Example MCP servers (up only).
    #[command(flatten)]
    pub examples: ExamplesArgs,
    /// The LLM of the orchestrator, research and codegen roles (up only).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// Options of `worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Roles to run, comma-separated (available: gateway, indexing, graphrag, orchestrator,
    /// execution, research, codegen, noop).
    #[arg(long, env = "COGO_ROLES", value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// Shards to serve besides the unsharded queue.
    #[arg(long, env = "COGO_SHARDS", value_delimiter = ',')]
    pub shards: Vec<String>,
    /// Handlers running at once per role.
    #[arg(long, env = "COGO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "COGO_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Lease of claimed messages in milliseconds; a process that dies holds its work this long.
    #[arg(long, env = "COGO_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub lease_ms: u64,
    /// Run as an edge worker of this server (its base URL, https:// in production): no database,
    /// only an outbound WebSocket; the server claims and completes on the worker's behalf.
    #[arg(long, env = "COGO_SERVER", requires = "token")]
    pub server: Option<String>,
    /// The edge worker token (`cogo tokens create --edge --roles …`); with --server.
    #[arg(long, env = "COGO_EDGE_TOKEN", hide_env_values = true, requires = "server")]
    pub token: Option<String>,
    /// The edge worker's name, unique per token (default: the host name and a random suffix).
    #[arg(long = "name", id = "worker_name", env = "COGO_WORKER_NAME", requires = "server")]
    pub worker_name: Option<String>,
    /// PEM file of CA certificates trusted besides the system's, for a server with a private or
    /// self-signed certificate; with --server.
    #[arg(long, env = "COGO_CA_CERT", requires = "server")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The LLM of the orchestrator, research and codegen roles.
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// Options of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What to achieve, in plain words.
    pub goal: String,
    /// Tenant that owns the goal.
    #[arg(long, default_value = model::message::DEFAULT_TENANT)]
    pub tenant: String,
    /// Most steps dispatched over all plans (default from agent_policy.json).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Most replans (default from agent_policy.json).
    #[arg(long)]
    pub max_replans: Option<u32>,
    /// Most seconds (default from agent_policy.json).
    #[arg(long)]
    pub max_seconds: Option<u64>,
    /// Start the example MCP servers (browser, figma, everything) for this run.
    #[arg(long)]
    pub examples: bool,
    /// Example MCP servers (with --examples).
    #[command(flatten)]
    pub example_ports: ExamplesArgs,
    /// Print the final goal as JSON instead of the story.
    #[arg(long)]
    pub json: bool,
    /// The LLM.
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `goals` subcommands.
#[derive(Debug, Subcommand)]
pub enum GoalsCommand {
    /// List goals, newest first.
    List {
        /// Only this status (queued, running, awaiting_approval, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one goal: status, plan, steps, approvals, answer.
    Show {
        /// Goal id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a step that waits for an operator (the goal resumes).
    Approve {
        /// Goal id.
        id: String,
        /// Step key (`r1.s2`, from `cogo goals show`).
        step: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a step that waits for an operator (the goal fails).
    Reject {
        /// Goal id.
        id: String,
        /// Step key (`r1.s2`).
        step: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Cancel a goal that has not ended.
    Cancel {
        /// Goal id.
        id: String,
    },
}

/// Gates.
#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// 1 MCP ping of every toolset, 2 local scenario (embedded), 3 distributed scenario
    /// (PostgreSQL of COGO_DATABASE_URL, separate processes), 4 docker scenario (skipped where no
    /// Docker engine answers). Reports and artifacts under DATA_DIR/artifacts/gate-run/TS/;
    /// exit code 0 passed, 1 a stage failed.
    Unified(GateArgs),
    /// Faults injected into real COGO processes on loopback (workers killed with SIGKILL,
    /// PostgreSQL restarted, SQLite writers crashed, MCP servers killed, slowed and cut, the
    /// artifact disk full and read-only); each scenario reports messages sent, completed, lost and
    /// duplicated and the time to recover. Reports under DATA_DIR/artifacts/gate-run/TS/chaos/;
    /// exit code 0 passed, 1 a scenario failed.
    Chaos(ChaosArgs),
}

/// Options of `gate chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "distributed,worker-kill,postgres-restart,sqlite-crash,mcp-restart,mcp-slow,mcp-flapping,artifacts-unwritable"
    )]
    pub scenarios: Vec<ChaosScenario>,
    /// Messages of the bus scenarios (the SQLite one sends at most 20,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub messages: u32,
    /// MCP calls of each MCP scenario.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(8..=10_000))]
    pub calls: u32,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the JUnit XML report to this file.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

/// A fault scenario of `gate chaos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChaosScenario {
    /// PostgreSQL: a server, two noop workers and an edge worker drain mixed messages, no fault.
    Distributed,
    /// PostgreSQL: the same, with two workers killed with SIGKILL mid-drain.
    WorkerKill,
    /// PostgreSQL: the same, with a worker killed and then the local server restarted mid-drain.
    PostgresRestart,
    /// SQLite: the worker process killed three times mid-transaction.
    SqliteCrash,
    /// The MCP server killed with SIGKILL and started again during calls.
    McpRestart,
    /// The MCP server's answers slower than the tool timeout for 3 s.
    McpSlow,
    /// Every connection to the MCP server cut every 500 ms for 3 s.
    McpFlapping,
    /// The artifact directory full, then read-only, during MCP calls.
    ArtifactsUnwritable,
}

impl ChaosScenario {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Distributed => "distributed",
            Self::WorkerKill => "worker-kill",
            Self::PostgresRestart => "postgres-restart",
            Self::SqliteCrash => "sqlite-crash",
            Self::McpRestart => "mcp-restart",
            Self::McpSlow => "mcp-slow",
            Self::McpFlapping => "mcp-flapping",
            Self::ArtifactsUnwritable => "artifacts-unwritable",
        }
    }
}

/// Options of `gate unified`.
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the JUnit XML report to this file.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Stages to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4", value_parser = clap::value_parser!(u8).range(1..=4))]
    pub stages: Vec<u8>,
    /// Use the MCP servers already running instead of starting the example servers.
    #[arg(long)]
    pub no_examples: bool,
    /// The example MCP servers.
    #[command(flatten)]
    pub examples: ExamplesArgs,
    /// Messages the distributed scenario's workers drain.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub messages: u32,
    /// Compose file of the docker scenario.
    #[arg(long, default_value = "docker-compose.ci.yml")]
    pub compose_file: PathBuf,
}

/// Options of `eval goals`.
#[derive(Debug, Clone, Args)]
pub struct EvalGoalsArgs {
    /// The goal suite (JSON).
    #[arg(long, default_value = "eval/goals/suite.json")]
    pub suite: PathBuf,
    /// Only goals whose id contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Print one JSON object with `success_rate` and a row per goal.
    #[arg(long)]
    pub json: bool,
    /// The LLM.
    #[command(flatten)]
    pub llm: LlmArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the policy files of DIR (default: --config-dir); exit 2 when any is invalid.
    Check {
        /// Directory to check.
        dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of one file (mcp, retry_policy, circuit_breaker, route_policies) or all.
    Schema {
        /// File name; all files when omitted.
        file: Option<String>,
    },
    /// Print the reference of every COGO_* variable and config key (Markdown).
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Explain which rules apply to KEY (e.g. mcp.call.browser.browser_navigate) and why.
    Explain {
        /// Policy or breaker key.
        key: String,
    },
}

/// Options of `doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `enqueue`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Service (e.g. mcp).
    #[arg(long)]
    pub service: String,
    /// Role (e.g. gateway).
    #[arg(long)]
    pub role: String,
    /// Intent (e.g. mcp_call).
    #[arg(long)]
    pub intent: String,
    /// Payload JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Tenant.
    #[arg(long, env = "COGO_TENANT", default_value = "default")]
    pub tenant: String,
    /// Shard.
    #[arg(long, default_value = "")]
    pub shard: String,
    /// Idempotency key (a duplicate returns the existing message).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Priority (higher first, -1000..=1000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Attempts before dead-lettering.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i32,
    /// Enqueue this many copies (in batches of 1000; not with --idempotency-key).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub count: u32,
}

/// Options of `messages`.
#[derive(Debug, Clone, Args)]
pub struct MessagesArgs {
    /// Only this status (queued, claimed, done, failed).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only this trace.
    #[arg(long)]
    pub trace: Option<String>,
    /// How many (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages not yet requeued.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Requeue a dead-lettered message (idempotent).
    Requeue {
        /// Message id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they happen (Ctrl-C to stop).
    Tail {
        /// Only this trace.
        #[arg(long)]
        trace: Option<String>,
        /// Start from the oldest event instead of new ones only.
        #[arg(long)]
        from_start: bool,
        /// Exit after printing what exists (do not follow).
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bus throughput and latency: bulk enqueue, drain with C workers, enqueue→claim latency.
    Bus(BenchBusArgs),
    /// Cost of a breaker check plus a policy lookup on the hot path.
    Resilience(BenchJson),
    /// MCP gateway overhead over a direct rmcp call, end-to-end latency through the bus, calls/s.
    Gateway(BenchGatewayArgs),
    /// Hybrid search latency and ANN recall@10 over N chunks embedded by the real model.
    Search(BenchSearchArgs),
    /// Ingest rate (chunk, embed, write) with the real model.
    Ingest(BenchSearchArgs),
    /// 2-hop graph query latency over N relations.
    Graph(BenchGraphArgs),
    /// Mixed traffic against a real `cogo up` for a chosen time: memory must stay flat, latency
    /// must not drift, nothing may fail or stay unfinished (exit code 1 otherwise).
    Soak(BenchSoakArgs),
    /// Drain rate of 1, 2, 4… separate `cogo worker` processes on one PostgreSQL queue (a fresh
    /// database each), from the store's timestamps, with each process's share.
    Drain(BenchDrainArgs),
}

/// Options of `bench drain`.
#[derive(Debug, Clone, Args)]
pub struct BenchDrainArgs {
    /// Worker process counts to measure, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1u16, 2, 4], value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Vec<u16>,
    /// Noop messages per run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub messages: u32,
    /// Handlers at once in each worker process.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How the workers reach the queue, one run each per process count: `direct` (their own
    /// PostgreSQL connections) and `edge` (edge workers of one `cogo serve`, over its WebSocket).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "direct,edge")]
    pub modes: Vec<DrainMode>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// How `bench drain` workers reach the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainMode {
    /// `cogo worker --database-url`.
    Direct,
    /// `cogo worker --server --token`, through one `cogo serve`.
    Edge,
}

/// Options of `bench soak`.
#[derive(Debug, Clone, Args)]
pub struct BenchSoakArgs {
    /// Seconds of traffic (reported in six windows of at least 5 s).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=604_800))]
    pub duration: u64,
    /// Operations a second (MCP calls enqueued, noop batches, API reads).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub rate: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bench search` and `bench ingest`.
#[derive(Debug, Clone, Args)]
pub struct BenchSearchArgs {
    /// Scratch database backend (postgres: the server of --database-url, default the pgvector one on port 5433).
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Chunks in the index.
    #[arg(long, default_value_t = 10_000)]
    pub chunks: usize,
    /// Queries measured.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// `bench search` only: keep the index between runs (a database named by the chunk count,
    /// `cogo_bench_search_N` on PostgreSQL, `bench-cache/search-N.db` in the data dir on SQLite)
    /// and search the kept one when it holds the same corpus, instead of writing it again.
    #[arg(long)]
    pub reuse: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bench graph`.
#[derive(Debug, Clone, Args)]
pub struct BenchGraphArgs {
    /// Scratch database backend.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Relations in the graph.
    #[arg(long, default_value_t = 100_000)]
    pub edges: usize,
    /// Queries measured.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bench gateway`.
#[derive(Debug, Clone, Args)]
pub struct BenchGatewayArgs {
    /// Backend of the end-to-end run.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Calls per measurement.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// The project's `mcp-servers/` directory.
    #[arg(long, env = "COGO_MCP_SERVERS")]
    pub mcp_servers: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bench bus`.
#[derive(Debug, Clone, Args)]
pub struct BenchBusArgs {
    /// Backend to measure.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent handlers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Most messages one claim takes (the runtime asks for what its handlers finish in about
    /// 50 ms, at least the free handler slots, at most this).
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Bus benchmark backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackend {
    /// A temporary SQLite file.
    Sqlite,
    /// A temporary database on the PostgreSQL server of --database-url (default: local `test`).
    Postgres,
}

/// `--json` only.
#[derive(Debug, Clone, Args)]
pub struct BenchJson {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; the value is read from standard input (one trailing newline is dropped) and
    /// never printed. Example: `printf %s "$TOKEN" | cogo secrets set FIGMA_API_KEY`.
    Set {
        /// Name: upper-case letters, digits and '_' (it becomes an environment variable).
        name: String,
    },
    /// List secret names, the key that sealed each and when it changed (never values).
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it once (only its hash is kept): a tenant token (--tenant) or an
    /// edge worker token (--edge --roles).
    Create {
        /// The tenant it sees.
        #[arg(long, required_unless_present = "edge", conflicts_with = "edge")]
        tenant: Option<String>,
        /// An edge worker token: it reaches only the edge workers' WebSocket, for --roles.
        #[arg(long, requires = "roles")]
        edge: bool,
        /// Roles the edge worker may serve, comma-separated.
        #[arg(long, value_delimiter = ',', requires = "edge")]
        roles: Vec<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, tenants or edge roles, names, state; never the tokens).
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (the API refuses it within 10 seconds).
    Revoke {
        /// The token id (the part after `cogo_`).
        id: String,
    },
}
