//! The `execution` role (`service=agent, role=execution, intent=execute`): runs one command from the
//! policy's allowlist — by absolute path, no shell, no interpolation, an empty environment, a
//! timeout, bounded output. Payload: `{"command": "echo", "args": ["hello"]}`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use model::ErrorKind;
use model::config::AgentPolicy;
use worker::{HandlerError, HandlerOutput};

use super::run_program;

/// Longest argument accepted, in bytes.
pub const MAX_ARG_BYTES: usize = 4_096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    command: String,
    #[serde(default)]
    args: Vec<String>,
}

/// Runs allowlisted commands.
pub struct ExecutionHandler {
    policy: Arc<AgentPolicy>,
}

impl ExecutionHandler {
    /// Commands allowed by `policy`.
    pub fn new(policy: Arc<AgentPolicy>) -> Self {
        Self { policy }
    }
}

impl worker::Handler for ExecutionHandler {
    fn handle(&self, message: model::Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let policy = self.policy.clone();
        Box::pin(async move {
            let request: Request = serde_json::from_value(message.payload.clone()).map_err(|e| {
                HandlerError::new(ErrorKind::InvalidInput, format!("execute payload must be {{command, args}}: {e}"))
            })?;
            let Some(rule) = policy.commands.get(&request.command) else {
                let allowed: Vec<&str> = policy.commands.keys().map(String::as_str).collect();
                return Err(HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "command {:?} is not allowed; agent_policy.json allows: {}",
                        request.command,
                        if allowed.is_empty() { "nothing".to_owned() } else { allowed.join(", ") }
                    ),
                ));
            };
            if request.args.len() > rule.max_args {
                return Err(HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} takes at most {} arguments, got {}",
                        request.command,
                        rule.max_args,
                        request.args.len()
                    ),
                ));
            }
            if let Some((i, _)) =
                request.args.iter().enumerate().find(|(_, a)| a.len() > MAX_ARG_BYTES || a.contains('\0'))
            {
                return Err(HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!("args[{i}]: longer than {MAX_ARG_BYTES} bytes or holds a NUL character"),
                ));
            }
            let mut args = rule.fixed_args.clone();
            args.extend(request.args.iter().cloned());
            let scratch = tempfile::tempdir()
                .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("making a working directory: {e}")))?;
            let ran = run_program(&rule.path, &args, scratch.path(), Duration::from_millis(rule.timeout_ms))
                .await
                .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("starting {}: {e}", rule.path)))?;
            let result = json!({
                "command": request.command,
                "exit_code": ran.code,
                "stdout": ran.stdout,
                "stderr": ran.stderr,
                "timed_out": ran.timed_out,
                "duration_ms": ran.elapsed.as_secs_f64() * 1000.0,
            });
            let detail = json!({"command": request.command, "exit_code": ran.code, "duration_ms": ran.elapsed.as_secs_f64() * 1000.0});
            if ran.timed_out {
                return Err(HandlerError::new(
                    ErrorKind::Timeout,
                    format!("{} ran longer than {} ms and was killed", request.command, rule.timeout_ms),
                )
                .with_detail(detail));
            }
            if ran.code != Some(0) {
                return Err(HandlerError::new(
                    ErrorKind::ToolError,
                    format!(
                        "{} exited with {}: {}",
                        request.command,
                        ran.code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into()),
                        crate::clip(ran.stderr.trim(), 500)
                    ),
                )
                .with_detail(detail));
            }
            Ok(HandlerOutput { result: Some(result), result_url: None, detail: Some(detail) })
        })
    }
}
