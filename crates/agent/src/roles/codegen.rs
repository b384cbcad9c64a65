//! The `codegen` role (`service=agent, role=codegen, intent=codegen`): the model writes code for a
//! task, a real checker from the policy (e.g. `python3 -m py_compile`) checks it in a temporary
//! directory — one repair round with the checker's complaint — and the code is delivered as an
//! artifact, `artifacts/codegen/<trace_id>/<message_id>.<ext>`. Payload:
//! `{"task": "…", "language": "python"}`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use llm::{ChatRequest, JsonSchemaFormat, LlmClient, Message};
use model::ErrorKind;
use model::config::AgentPolicy;
use worker::{HandlerError, HandlerOutput};

use super::run_program;
use crate::clip;

/// Longest generated source, in characters.
pub const MAX_CODE_CHARS: usize = 4_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    task: String,
    #[serde(default = "default_language")]
    language: String,
}

fn default_language() -> String {
    "python".into()
}

/// Writes and checks code.
pub struct CodegenHandler {
    llm: Arc<dyn LlmClient>,
    policy: Arc<AgentPolicy>,
    artifacts: artifacts::Artifacts,
}

impl CodegenHandler {
    /// Asking `llm`, checking with `policy`'s checkers, writing under `artifacts/codegen/` of `artifacts`.
    pub fn new(llm: Arc<dyn LlmClient>, policy: Arc<AgentPolicy>, artifacts: artifacts::Artifacts) -> Self {
        Self { llm, policy, artifacts }
    }
}

fn code_request(task: &str, language: &str, complaint: Option<(&str, &str)>) -> (ChatRequest, JsonSchemaFormat) {
    let mut messages = vec![
        Message::system(format!(
            "You write short, complete {language} source files. Answer with the whole file in the code field."
        )),
        Message::user(format!("Task: {task}")),
    ];
    if let Some((code, error)) = complaint {
        messages.push(Message::assistant(json!({"code": code}).to_string()));
        messages.push(Message::user(format!("The checker rejected it:\n{}\nFix the file.", clip(error, 1_000))));
    }
    let mut request = ChatRequest::new(messages);
    request.max_tokens = 900;
    let format = JsonSchemaFormat {
        name: "source_file".into(),
        schema: json!({"type": "object", "properties": {"code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_CHARS}}, "required": ["code"], "additionalProperties": false}),
    };
    (request, format)
}

impl worker::Handler for CodegenHandler {
    fn handle(&self, message: model::Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let llm = self.llm.clone();
        let policy = self.policy.clone();
        let artifacts = self.artifacts.clone();
        Box::pin(async move {
            let request: Request = serde_json::from_value(message.payload.clone()).map_err(|e| {
                HandlerError::new(ErrorKind::InvalidInput, format!("codegen payload must be {{task, language?}}: {e}"))
            })?;
            if request.task.trim().is_empty() || request.task.chars().count() > 2_000 {
                return Err(HandlerError::new(ErrorKind::InvalidInput, "task: must be 1 to 2000 characters"));
            }
            let Some(checker) = policy.codegen.get(&request.language) else {
                let known: Vec<&str> = policy.codegen.keys().map(String::as_str).collect();
                return Err(HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "language {:?} has no checker in agent_policy.json; known: {}",
                        request.language,
                        known.join(", ")
                    ),
                ));
            };
            let scratch = tempfile::tempdir()
                .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("making a scratch directory: {e}")))?;
            let file = scratch.path().join(format!("main.{}", checker.extension));
            let mut complaint: Option<(String, String)> = None;
            let mut attempts = 0;
            let (code, checked) = loop {
                attempts += 1;
                let (chat, format) = code_request(
                    &request.task,
                    &request.language,
                    complaint.as_ref().map(|(c, e)| (c.as_str(), e.as_str())),
                );
                let answer = llm::structured(llm.as_ref(), chat, format)
                    .await
                    .map_err(|e| HandlerError::new(e.kind(), e.to_string()))?;
                let code = answer.value.get("code").and_then(Value::as_str).unwrap_or_default().to_owned();
                tokio::fs::write(&file, &code)
                    .await
                    .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("writing the source: {e}")))?;
                let mut args = checker.args.clone();
                args.push(file.display().to_string());
                let ran = run_program(&checker.path, &args, scratch.path(), Duration::from_millis(checker.timeout_ms))
                    .await
                    .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("starting {}: {e}", checker.path)))?;
                if ran.code == Some(0) {
                    break (code, ran);
                }
                let error = format!("{}{}", ran.stderr, ran.stdout).replace(&scratch.path().display().to_string(), ".");
                if attempts >= 2 {
                    return Err(HandlerError::new(
                        ErrorKind::ToolError,
                        format!(
                            "the generated {} does not pass {}: {}",
                            request.language,
                            checker.path,
                            clip(error.trim(), 500)
                        ),
                    )
                    .with_detail(json!({"attempts": attempts})));
                }
                complaint = Some((code, error));
            };
            let relative = format!("artifacts/codegen/{}/{}.{}", message.trace_id, message.id, checker.extension);
            artifacts
                .put(&relative, code.clone().into_bytes())
                .await
                .map_err(|e| HandlerError::new(ErrorKind::Transport, format!("writing the artifact: {e}")))?;
            let result = json!({
                "language": request.language,
                "path": relative,
                "bytes": code.len(),
                "checked_by": checker.path,
                "attempts": attempts,
                "check_ms": checked.elapsed.as_secs_f64() * 1000.0,
                "code": clip(&code, 8_000),
            });
            let detail = json!({"language": request.language, "attempts": attempts, "path": relative});
            Ok(HandlerOutput { result: Some(result), result_url: None, detail: Some(detail) })
        })
    }
}
