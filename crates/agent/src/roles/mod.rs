//! The worker roles the orchestrator dispatches to (besides the MCP `gateway` and the knowledge
//! `indexing` and `graphrag` roles, which live with what they own): `execution`, `research` and
//! `codegen`. They never import each other.

pub mod codegen;
pub mod execution;
pub mod research;

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Most bytes of a command's stdout or stderr kept.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024;

/// What a program did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ran {
    /// Exit code (`None` when killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Its standard output (clipped).
    pub stdout: String,
    /// Its standard error (clipped).
    pub stderr: String,
    /// It ran out of time and was killed.
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
}

async fn capture(mut reader: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_CAPTURE_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs `program` with `args` — no shell, an empty environment but `PATH`, stdin closed, in `dir` —
/// and kills it (and waits for it) after `timeout`.
pub(crate) async fn run_program(
    program: &str,
    args: &[String],
    dir: &std::path::Path,
    timeout: Duration,
) -> std::io::Result<Ran> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().map(|s| tokio::spawn(capture(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(capture(s)));
    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => {
            let _ = child.kill().await;
            (None, true)
        }
    };
    let stdout = match stdout {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    let stderr = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    Ok(Ran { code, stdout, stderr, timed_out, elapsed: started.elapsed() })
}
