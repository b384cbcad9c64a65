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
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "COGO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "COGO_TLS_KEY", requires = "tls_cert", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
    /// Do not start the example MCP servers (up only).
    #[arg(long, env = "COGO_NO_EXAMPLES")]
    pub no_examples: bool,
    /// Example MCP servers (up only).
    #[command(flatten)]
    pub examples: ExamplesArgs,
}

/// Options of `worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Roles to run, comma-separated (available: gateway, noop).
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
    /// Claim batch size.
    #[arg(long, default_value_t = 50)]
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
    /// Make a token for one tenant and print it once (only its hash is kept).
    Create {
        /// The tenant it sees.
        #[arg(long)]
        tenant: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, tenants, names, state; never the tokens).
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
