//! Test helpers: every test gets its own database with the real migrations (a temporary SQLite
//! file, or a fresh PostgreSQL database dropped afterwards) and a clock it steps by hand.
//!
//! Invariant: nothing here is used outside tests; PostgreSQL is never skipped — when it cannot be
//! reached the test fails and says how to start it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::clock::ManualClock;
use sqlx::Connection;
use store::{Store, StoreOptions};

/// The PostgreSQL server tests use: `COGO_TEST_DATABASE_URL`, or the local `test` database.
pub fn postgres_admin_url() -> String {
    std::env::var("COGO_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fixed starting instant for manual clocks.
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// A store for one test, with its clock and whatever keeps its database alive.
pub struct TestStore {
    /// The store.
    pub store: Store,
    /// The clock the store uses.
    pub clock: Arc<ManualClock>,
    /// The URL of the store's database (to open a second store on it).
    pub url: String,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, database: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, database } = self {
            let (admin_url, database) = (admin_url.clone(), database.clone());
            // Drop the database from a separate runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    runtime.block_on(async move {
                        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

impl TestStore {
    /// Opens another store on the same database (a second process, as far as the bus can tell).
    pub async fn reopen(&self) -> Store {
        let options = StoreOptions::default().with_clock(self.clock.clone());
        Store::open(&self.url, options).await.expect("reopening the test database")
    }
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("cogo.db").display());
    let clock = Arc::new(ManualClock::new(epoch()));
    let store = Store::open(&url, StoreOptions::default().with_clock(clock.clone())).await.expect("opening SQLite");
    store.migrate().await.expect("migrating SQLite");
    TestStore { store, clock, url, _guard: Guard::Sqlite(dir) }
}

/// A fresh PostgreSQL database with the real migrations.
pub async fn postgres() -> TestStore {
    postgres_on(
        &postgres_admin_url(),
        "Start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) or set COGO_TEST_DATABASE_URL.",
    )
    .await
}

/// The Redis server the shared rate-limit tests use: `COGO_TEST_REDIS_URL`, or the local one.
pub fn redis_url() -> String {
    std::env::var("COGO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The S3-compatible server the artifact store tests use: `COGO_TEST_S3_ENDPOINT`, or the moto
/// server `scripts/s3 start` runs on port 9310 (with the bucket `cogo-test`).
pub fn s3_endpoint() -> String {
    std::env::var("COGO_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9310".to_owned())
}

/// A fresh place on the test S3 server: `s3://cogo-test/<unique prefix>`.
pub fn s3_url() -> String {
    format!("s3://cogo-test/t-{}", model::new_id().simple())
}

/// The `AWS_*` settings that reach the test S3 server (its credentials are not checked), as
/// variable names and values: for a child process's environment or an in-process store.
pub fn s3_settings() -> Vec<(String, String)> {
    s3_settings_at(&s3_endpoint())
}

/// [`s3_settings`] with another endpoint (one where nothing listens, for failure tests).
pub fn s3_settings_at(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "cogo-test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "cogo-test-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The PostgreSQL server with pgvector the knowledge tests use: `COGO_TEST_PGVECTOR_URL`, or the
/// one `scripts/pgvector start` runs on port 5433.
pub fn pgvector_admin_url() -> String {
    std::env::var("COGO_TEST_PGVECTOR_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".to_owned())
}

/// A fresh database with the real migrations on the PostgreSQL server that has pgvector.
pub async fn postgres_vector() -> TestStore {
    postgres_on(&pgvector_admin_url(), "Start it with scripts/pgvector start or set COGO_TEST_PGVECTOR_URL.").await
}

async fn postgres_on(admin_url: &str, hint: &str) -> TestStore {
    let admin_url = admin_url.to_owned();
    let database = format!("cogo_t_{}", model::new_id().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|err| {
        panic!("PostgreSQL is required for this test and is not reachable at {admin_url}: {err}. {hint}")
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    let url = match admin_url.rfind('/') {
        Some(slash) => format!("{}/{database}", &admin_url[..slash]),
        None => panic!("the test database URL must end with /DATABASE"),
    };
    let clock = Arc::new(ManualClock::new(epoch()));
    let guard = Guard::Postgres { admin_url, database };
    let store = Store::open(&url, StoreOptions::default().with_clock(clock.clone()).with_max_connections(20))
        .await
        .expect("opening PostgreSQL");
    store.migrate().await.expect("migrating PostgreSQL");
    TestStore { store, clock, url, _guard: guard }
}

/// The directory of the local models installed by `scripts/models install` (`COGO_MODELS_DIR`, or
/// `.cogo/models` at the repository root).
pub fn models_dir() -> std::path::PathBuf {
    let dir = std::env::var("COGO_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cogo/models"));
    assert!(
        dir.join("all-MiniLM-L6-v2/model.safetensors").is_file(),
        "the embedding model is not installed in {}: run scripts/models install",
        dir.display()
    );
    dir
}

/// The example MCP servers installed by `scripts/mcp-servers install` (`mcp-servers/node_modules`).
pub fn mcp_servers_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mcp-servers/node_modules");
    assert!(
        dir.join("@modelcontextprotocol/server-everything/dist/index.js").is_file(),
        "the example MCP servers are not installed: run scripts/mcp-servers install"
    );
    dir
}

/// The entry point of `@modelcontextprotocol/server-everything`.
pub fn everything_js() -> String {
    mcp_servers_dir().join("@modelcontextprotocol/server-everything/dist/index.js").display().to_string()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The HTTP server on loopback `port` answers `GET path` with 200. Never panics. A bare TCP
/// connect is not enough to tell a server listens: to a just-freed ephemeral port, a connect can
/// reach itself (a TCP simultaneous open), and that socket then holds the port the server wanted.
pub fn http_ready(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    if stream.local_addr().is_ok_and(|local| local.port() == port) {
        return false; // connected to itself
    }
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && (answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"))
}

/// A server process stopped (by PID) when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
}

impl ServerProcess {
    /// Stops the server now (SIGKILL), e.g. to test a server that dies mid-call.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(mut command: std::process::Command, port: u16) -> ServerProcess {
    command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = command.spawn().expect("starting an example MCP server (is node installed?)");
    ServerProcess { child, port }
}

/// `server-everything` over streamable HTTP at `http://127.0.0.1:PORT/mcp`.
pub fn start_everything_http() -> ServerProcess {
    let port = free_port();
    let mut command = std::process::Command::new("node");
    command.arg(everything_js()).arg("streamableHttp").env("PORT", port.to_string());
    spawn(command, port)
}

/// `server-everything` (stdio) behind `supergateway` as WebSocket at `ws://127.0.0.1:PORT/message`.
pub fn start_everything_ws() -> ServerProcess {
    start_everything_ws_on(free_port())
}

/// Like [`start_everything_ws`], on a port chosen by the caller (a server that comes back).
pub fn start_everything_ws_on(port: u16) -> ServerProcess {
    let mut command = std::process::Command::new(mcp_servers_dir().join(".bin/supergateway"));
    command
        .args(["--stdio", &format!("node {}", everything_js()), "--outputTransport", "ws", "--messagePath", "/message"])
        .args(["--port", &port.to_string(), "--logLevel", "none"]);
    spawn(command, port)
}

/// The local LLM installed by `scripts/models install` (SmolLM2-135M-Instruct, GGUF), or
/// `COGO_LLM_MODEL`.
pub fn llm_model() -> std::path::PathBuf {
    let path = std::env::var("COGO_LLM_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| models_dir().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.is_file(), "the local LLM is not installed at {}: run scripts/models install", path.display());
    path
}

/// The python of the virtualenv `scripts/llm-server install` made (`COGO_LLM_SERVER_PYTHON`, or
/// the default place under the repository's `target/`).
pub fn llm_server_python() -> std::path::PathBuf {
    std::env::var("COGO_LLM_SERVER_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/venvs/llama-cpp-python-0.3.36-portable/bin/python")
    })
}

/// llama-cpp-python's OpenAI-compatible server (installed by `scripts/llm-server install`)
/// serving the local LLM at `http://127.0.0.1:PORT/v1`, with tool calls (ChatML function
/// calling). Waits until it answers.
pub fn start_openai_compatible_server() -> ServerProcess {
    let port = free_port();
    let python = llm_server_python();
    assert!(
        python.is_file(),
        "llama-cpp-python's server is not installed at {}: run scripts/llm-server install",
        python.display()
    );
    let mut command = std::process::Command::new(python);
    command
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(llm_model())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048", "--n_threads", "1"])
        .args(["--chat_format", "chatml-function-calling", "--model_alias", "smollm2"]);
    command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = command.spawn().expect("starting llama-cpp-python's server (run scripts/llm-server install)");
    let mut server = ServerProcess { child, port };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("llama-cpp-python's server exited with {status}: run scripts/llm-server install");
        }
        if http_ready(port, "/v1/models") {
            return server;
        }
        assert!(std::time::Instant::now() < deadline, "llama-cpp-python's server did not listen within 90 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
