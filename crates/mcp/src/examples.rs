//! The example MCP servers that `cogo up` and the tests start: a local page server, the browser
//! (`@playwright/mcp` on Debian's Chromium) and figma (`figma-developer-mcp`, offline) served as
//! WebSocket by `supergateway`, and `server-everything` as a WebSocket echo service.
//!
//! Invariants: every server listens on loopback only (Node's `listen` is made to bind
//! `127.0.0.1` by a preload); each runs in its own process group, recorded in a PID file and
//! stopped by it (the whole group, so the browser goes too); a server counts as started only once
//! it answers an MCP `ping` (the page server: an HTTP 200).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::config::mcp::Toolset;

/// The seed's ports: browser 3004, figma 3007 (`configs/mcp.json`); the page server 3010.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExamplePorts {
    /// Browser toolset (WebSocket).
    pub browser: u16,
    /// Figma toolset (WebSocket).
    pub figma: u16,
    /// The page server the browser visits (HTTP).
    pub pages: u16,
}

impl Default for ExamplePorts {
    fn default() -> Self {
        Self { browser: 3004, figma: 3007, pages: 3010 }
    }
}

/// Why an example server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// The npm packages are not installed.
    #[error("the example MCP servers are not installed in {dir}: run `scripts/mcp-servers install`")]
    NotInstalled {
        /// Where they were looked for.
        dir: PathBuf,
    },
    /// A program is missing.
    #[error("{program} is needed for the example MCP servers but was not found: run `scripts/mcp-servers install`")]
    Missing {
        /// The program.
        program: String,
    },
    /// The port is taken.
    #[error(
        "port {port} for the example server {name} is in use: stop the other example servers (`scripts/mcp-servers stop`) or choose other ports"
    )]
    PortInUse {
        /// Server name.
        name: String,
        /// The port.
        port: u16,
    },
    /// The process could not be started or its files written.
    #[error("starting the example server {name}: {detail}")]
    Spawn {
        /// Server name.
        name: String,
        /// What failed.
        detail: String,
    },
    /// The server did not become ready in time.
    #[error("the example server {name} did not become ready within {after_s} s: {detail} (its log: {log})")]
    NotReady {
        /// Server name.
        name: String,
        /// The limit.
        after_s: u64,
        /// The last failure or the exit status.
        detail: String,
        /// Its log file.
        log: String,
    },
}

/// Where the example servers come from and where their PID and log files go.
#[derive(Debug, Clone)]
pub struct Launcher {
    servers_dir: PathBuf,
    run_dir: PathBuf,
    chromium: PathBuf,
    ready_within: Duration,
}

/// One running example server; stopped (its whole process group) when dropped.
#[derive(Debug)]
pub struct ExampleProcess {
    name: String,
    port: u16,
    child: Child,
    pid_file: PathBuf,
}

impl ExampleProcess {
    /// Server name (`browser`, `figma`, `pages`, `everything`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the whole process group at once (a crash, for tests), without waiting for cleanup.
    pub fn kill(&mut self) {
        signal_group(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// Stops the process group: SIGTERM, then SIGKILL after two seconds.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = std::fs::remove_file(&self.pid_file);
            return;
        }
        signal_group(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// The example servers `cogo up` runs, with the toolsets that reach them.
#[derive(Debug)]
pub struct ExampleServers {
    /// The running servers.
    pub processes: Vec<ExampleProcess>,
    /// `browser` and `figma`, as in the seed `configs/mcp.json`.
    pub toolsets: BTreeMap<String, Toolset>,
    /// The page server's address, for `browser_navigate`.
    pub pages_url: String,
}

impl Launcher {
    /// Servers installed under `servers_dir` (the project's `mcp-servers/`), PID and log files in
    /// `run_dir`. Chromium is `COGO_CHROMIUM` or `/usr/bin/chromium`.
    pub fn new(servers_dir: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        let chromium =
            std::env::var_os("COGO_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        Self {
            servers_dir: servers_dir.into(),
            run_dir: run_dir.into(),
            chromium,
            ready_within: Duration::from_secs(60),
        }
    }

    /// How long a server may take to answer its first ping (60 s by default).
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_within = limit;
        self
    }

    fn module(&self, relative: &str) -> Result<PathBuf, ExampleError> {
        let path = self.servers_dir.join("node_modules").join(relative);
        if path.is_file() { Ok(path) } else { Err(ExampleError::NotInstalled { dir: self.servers_dir.clone() }) }
    }

    fn check_port(name: &str, port: u16) -> Result<(), ExampleError> {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => Ok(()),
            Err(_) => Err(ExampleError::PortInUse { name: name.to_owned(), port }),
        }
    }

    fn spawn(&self, name: &str, port: u16, program: &str, args: &[String]) -> Result<ExampleProcess, ExampleError> {
        Self::check_port(name, port)?;
        let spawn_error = |detail: String| ExampleError::Spawn { name: name.to_owned(), detail };
        std::fs::create_dir_all(&self.run_dir).map_err(|e| spawn_error(format!("{}: {e}", self.run_dir.display())))?;
        let log_path = self.run_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| spawn_error(format!("{}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| spawn_error(e.to_string()))?;
        let preload = self.servers_dir.join("loopback.cjs");
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.run_dir)
            .env("NODE_OPTIONS", format!("--require {}", preload.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ExampleError::Missing { program: program.to_owned() },
            _ => spawn_error(format!("{program}: {e}")),
        })?;
        let pid_file = self.run_dir.join(format!("{name}.pid"));
        std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(|e| spawn_error(e.to_string()))?;
        tracing::debug!(name, port, pid = child.id(), "example server started");
        Ok(ExampleProcess { name: name.to_owned(), port, child, pid_file })
    }

    /// A stdio MCP server behind `supergateway` as WebSocket at `ws://127.0.0.1:PORT/`.
    fn websocket(&self, name: &str, port: u16, stdio_command: String) -> Result<ExampleProcess, ExampleError> {
        let gateway = self.module("supergateway/dist/index.js")?;
        let args = [
            gateway.display().to_string(),
            "--stdio".into(),
            stdio_command,
            "--outputTransport".into(),
            "ws".into(),
            "--port".into(),
            port.to_string(),
            "--messagePath".into(),
            "/".into(),
            "--logLevel".into(),
            "none".into(),
        ];
        self.spawn(name, port, "node", &args)
    }

    /// The page server on `127.0.0.1:PORT`, ready when it answers.
    pub async fn pages(&self, port: u16) -> Result<ExampleProcess, ExampleError> {
        let script = self.servers_dir.join("page-server.cjs");
        if !script.is_file() {
            return Err(ExampleError::NotInstalled { dir: self.servers_dir.clone() });
        }
        let mut process = self.spawn("pages", port, "node", &[script.display().to_string(), port.to_string()])?;
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(process);
            }
            self.still_starting(&mut process, started, "no answer on its port".into())?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The browser toolset: `@playwright/mcp`, headless Chromium without sandbox or background
    /// networking, at `ws://127.0.0.1:PORT/`; screenshots and traces go to `run_dir/browser/`.
    pub async fn browser(&self, port: u16) -> Result<ExampleProcess, ExampleError> {
        let cli = self.module("@playwright/mcp/cli.js")?;
        if !self.chromium.is_file() {
            return Err(ExampleError::Missing { program: self.chromium.display().to_string() });
        }
        let output = self.run_dir.join("browser");
        let command = format!(
            "node {} --headless --no-sandbox --isolated --executable-path {} --timeout-settle 50 --output-dir {}",
            cli.display(),
            self.chromium.display(),
            output.display()
        );
        let process = self.websocket("browser", port, command)?;
        self.ready(process).await
    }

    /// The figma toolset: `figma-developer-mcp` without network or telemetry (every call is a
    /// tool error) at `ws://127.0.0.1:PORT/`.
    pub async fn figma(&self, port: u16) -> Result<ExampleProcess, ExampleError> {
        let cli = self.module("figma-developer-mcp/dist/bin.js")?;
        let command =
            format!("node {} --stdio --no-telemetry --skip-image-downloads --figma-api-key offline", cli.display());
        let process = self.websocket("figma", port, command)?;
        self.ready(process).await
    }

    /// `server-everything` (echo, get-sum…) at `ws://127.0.0.1:PORT/`.
    pub async fn everything(&self, port: u16) -> Result<ExampleProcess, ExampleError> {
        let entry = self.module("@modelcontextprotocol/server-everything/dist/index.js")?;
        let process = self.websocket("everything", port, format!("node {} stdio", entry.display()))?;
        self.ready(process).await
    }

    /// The page server, browser and figma on `ports`, each ready.
    pub async fn start_all(&self, ports: ExamplePorts) -> Result<ExampleServers, ExampleError> {
        let (pages, browser, figma) =
            tokio::try_join!(self.pages(ports.pages), self.browser(ports.browser), self.figma(ports.figma))?;
        let toolsets = [("browser", &browser), ("figma", &figma)]
            .into_iter()
            .map(|(name, process)| (name.to_owned(), websocket_toolset(process.port, 30_000)))
            .collect();
        Ok(ExampleServers {
            processes: vec![pages, browser, figma],
            toolsets,
            pages_url: format!("http://127.0.0.1:{}/", ports.pages),
        })
    }

    fn still_starting(
        &self,
        process: &mut ExampleProcess,
        started: Instant,
        detail: String,
    ) -> Result<(), ExampleError> {
        let not_ready = |detail: String| ExampleError::NotReady {
            name: process.name.clone(),
            after_s: self.ready_within.as_secs(),
            detail,
            log: self.run_dir.join(format!("{}.log", process.name)).display().to_string(),
        };
        if let Ok(Some(status)) = process.child.try_wait() {
            return Err(not_ready(format!("it exited ({status})")));
        }
        if started.elapsed() > self.ready_within {
            return Err(not_ready(detail));
        }
        Ok(())
    }

    /// Waits until the server answers an MCP ping over its WebSocket.
    async fn ready(&self, mut process: ExampleProcess) -> Result<ExampleProcess, ExampleError> {
        let config = websocket_toolset(process.port, 5_000);
        let started = Instant::now();
        loop {
            let detail = match crate::McpClient::connect(&process.name, &config, Duration::from_secs(5)).await {
                Ok(client) => {
                    let answer = client.ping(Duration::from_secs(5)).await;
                    client.close().await;
                    match answer {
                        Ok(_) => return Ok(process),
                        Err(err) => err.to_string(),
                    }
                }
                Err(err) => err.to_string(),
            };
            self.still_starting(&mut process, started, detail)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the servers recorded by PID files in `run_dir` (left by `scripts/mcp-servers start`
    /// or a process that did not stop cleanly). Returns the names stopped.
    pub fn stop_recorded(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else { return stopped };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pid") {
                continue;
            }
            let pid = std::fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                std::thread::sleep(Duration::from_millis(200));
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                stopped.push(path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
            }
            let _ = std::fs::remove_file(&path);
        }
        stopped.sort();
        stopped
    }
}

/// The toolset entry for a WebSocket example server on `127.0.0.1:port`.
pub fn websocket_toolset(port: u16, timeout_ms: u64) -> Toolset {
    Toolset::at_url(format!("ws://127.0.0.1:{port}/"), timeout_ms)
}

/// The project's `mcp-servers/` directory: `COGO_MCP_SERVERS`, else `mcp-servers` in the current
/// directory or one of its parents.
pub fn default_servers_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("COGO_MCP_SERVERS") {
        return Some(PathBuf::from(dir));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|dir| dir.join("mcp-servers")).find(|dir| dir.join("package.json").is_file())
}

/// True when `dir` holds installed example servers.
pub fn installed(dir: &Path) -> bool {
    dir.join("node_modules/supergateway/dist/index.js").is_file()
}
