//! The execution and codegen roles, run as the bus runs them.

use model::ErrorKind;
use serde_json::json;
use worker::Handler;

use super::{local_llm, policy};

fn message(intent: &str, payload: serde_json::Value) -> model::Message {
    let now = chrono::Utc::now();
    model::Message {
        id: model::MessageId(uuid_v7()),
        created_at: now,
        tenant: "default".into(),
        project_id: None,
        service: "agent".into(),
        role: intent.into(),
        shard: String::new(),
        intent: model::Intent::new(intent).expect("intent"),
        payload,
        trace_id: "0123456789abcdef0123456789abcdef".into(),
        parent_id: None,
        idempotency_key: None,
        priority: 0,
        status: model::MessageStatus::Claimed,
        attempts: 1,
        max_attempts: 1,
        run_at: now,
        claimed_by: None,
        claimed_at: None,
        lease_until: None,
        done_at: None,
        last_error: None,
        last_error_at: None,
        result: None,
        result_url: None,
    }
}

fn uuid_v7() -> uuid::Uuid {
    model::new_id()
}

#[tokio::test]
async fn execution_runs_only_allowed_commands_without_a_shell() {
    let policy = policy(|p| {
        p.commands.get_mut("python3").expect("python3").timeout_ms = 300;
    });
    let handler = agent::roles::execution::ExecutionHandler::new(policy);
    // arguments reach the program as they are: no shell expands them
    let out = handler
        .handle(message("execute", json!({"command": "echo", "args": ["$(id)", "; rm -rf /", "`x`"]})))
        .await
        .expect("echo runs");
    let result = out.result.expect("result");
    assert_eq!(result["stdout"], "$(id) ; rm -rf / `x`\n");
    assert_eq!(result["exit_code"], 0);
    // not on the allowlist
    let refused =
        handler.handle(message("execute", json!({"command": "sh", "args": ["-c", "id"]}))).await.expect_err("sh");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert!(refused.message.contains("not allowed") && refused.message.contains("echo"), "{}", refused.message);
    // too many arguments, a NUL, unknown fields
    let many = handler
        .handle(message("execute", json!({"command": "date", "args": ["a", "b", "c"]})))
        .await
        .expect_err("many");
    assert!(many.message.contains("at most 2 arguments"), "{}", many.message);
    let nul =
        handler.handle(message("execute", json!({"command": "echo", "args": ["a\u{0}b"]}))).await.expect_err("nul");
    assert!(nul.message.contains("args[0]"), "{}", nul.message);
    let extra = handler.handle(message("execute", json!({"command": "echo", "shell": true}))).await.expect_err("extra");
    assert!(extra.message.contains("unknown field"), "{}", extra.message);
    // a command that runs too long is killed and says so
    let slow = handler
        .handle(message("execute", json!({"command": "python3", "args": ["import time; time.sleep(5)"]})))
        .await
        .expect_err("timeout");
    assert_eq!(slow.kind, ErrorKind::Timeout);
    assert!(slow.message.contains("longer than 300 ms"), "{}", slow.message);
    // a failing command is a tool error with its stderr
    let failing = handler
        .handle(message("execute", json!({"command": "python3", "args": ["import sys; sys.exit('broken')"]})))
        .await
        .expect_err("exit 1");
    assert_eq!(failing.kind, ErrorKind::ToolError);
    assert!(failing.message.contains("exited with 1") && failing.message.contains("broken"), "{}", failing.message);
    // the environment is empty but PATH
    let env = handler
        .handle(message("execute", json!({"command": "python3", "args": ["import os; print(sorted(os.environ))"]})))
        .await
        .expect("env");
    let stdout = env.result.expect("result")["stdout"].as_str().unwrap_or_default().to_owned();
    assert!(!stdout.contains("HOME") && stdout.contains("PATH"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_delivers_code_that_the_checker_accepts_or_says_why_not() {
    let scratch = super::Scratch::new();
    let policy = policy(|_| {});
    let handler = agent::roles::codegen::CodegenHandler::new(
        local_llm(),
        policy,
        artifacts::Artifacts::local(&scratch.0).expect("artifact store"),
    );
    let msg =
        message("codegen", json!({"task": "A Python function add(a, b) that returns a + b", "language": "python"}));
    match handler.handle(msg.clone()).await {
        Ok(out) => {
            let result = out.result.expect("result");
            let path = scratch.0.join(result["path"].as_str().expect("path"));
            assert!(
                result["path"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(&format!("artifacts/codegen/{}/", msg.trace_id))
            );
            let code = std::fs::read_to_string(&path).expect("the artifact");
            assert_eq!(result["bytes"], code.len());
            // the delivered file really compiles
            let check = std::process::Command::new("/usr/bin/python3")
                .args(["-m", "py_compile"])
                .arg(&path)
                .output()
                .expect("python3");
            assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        }
        Err(err) => {
            assert_eq!(err.kind, ErrorKind::ToolError, "{err}");
            assert!(err.message.contains("does not pass /usr/bin/python3"), "{}", err.message);
        }
    }
    // unknown languages and bad payloads are refused before the model is asked
    let unknown =
        handler.handle(message("codegen", json!({"task": "x", "language": "cobol"}))).await.expect_err("cobol");
    assert!(unknown.message.contains("cobol") && unknown.message.contains("python"), "{}", unknown.message);
    let empty = handler.handle(message("codegen", json!({"task": " "}))).await.expect_err("empty");
    assert_eq!(empty.kind, ErrorKind::InvalidInput);
}
