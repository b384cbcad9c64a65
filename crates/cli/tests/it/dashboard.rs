//! The dashboard in a real headless Chromium against a running `cogo up` with real data: MCP calls
//! to a real server, a dead letter, indexed documents and a goal that waits for an operator (the
//! local model plans it). The browser part is `tests/dashboard/browser.mjs` (playwright-core).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "dashboard-test-admin-token";

/// Stops `cogo up` when the test ends, however it ends.
pub(crate) struct Up(pub(crate) Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A JSON request to the server; returns the status and the parsed body.
fn call(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let bearer = format!("Bearer {ADMIN}");
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let answer = super::http(port, method, path, &[("Authorization", &bearer)], &body);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = answer.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

/// Polls `probe` until it returns a value or `limit` passes.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dashboard_views_render_live_data_in_chromium() {
    let node_modules = test_support::mcp_servers_dir();
    let node_dir = node_modules.parent().expect("mcp-servers").to_path_buf();
    assert!(
        node_modules.join("playwright-core").is_dir(),
        "playwright-core is missing: run scripts/mcp-servers install"
    );
    let configs = tempfile::tempdir().expect("configs");
    let data = tempfile::tempdir().expect("data");
    let mcp = json!({ "toolsets": { "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"], "timeout_ms": 20000 } } });
    std::fs::write(configs.path().join("mcp.json"), mcp.to_string()).expect("mcp.json");
    std::fs::write(
        configs.path().join("agent_policy.json"),
        r#"{"approval": ["execute"], "commands": {"uname": {"path": "/usr/bin/uname", "max_args": 4}}}"#,
    )
    .expect("agent_policy.json");
    let port = test_support::free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    super::with_models(&mut command)
        .arg("--config-dir")
        .arg(configs.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(["--log", "warn", "up", "--no-examples", "--concurrency", "4", "--rate-limit", "0"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-token", ADMIN])
        .env_remove("COGO_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut up = Up(command.spawn().expect("starting cogo up"));
    wait_for("the server", Duration::from_secs(120), || {
        assert!(up.0.try_wait().expect("cogo up").is_none(), "cogo up exited early");
        test_support::http_ready(port, "/readyz").then_some(())
    });

    // MCP calls to a real server, one of them failing
    for i in 0..3 {
        let (status, answer) =
            call(port, "POST", "/api/mcp/everything/echo", &json!({ "params": { "message": format!("hello {i}") } }));
        assert_eq!((status, &answer["ok"]), (200, &json!(true)), "{answer}");
    }
    let (_, failed) = call(port, "POST", "/api/mcp/everything/no_such_tool", &json!({ "params": {} }));
    assert_eq!(failed["ok"], json!(false), "{failed}");
    // documents to search
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/goals/docs");
    let documents: Vec<Value> = ["breakers.md", "bus.md"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(docs.join(name)).expect("doc");
            json!({ "source": format!("docs/{name}"), "text": text })
        })
        .collect();
    let (status, answer) = call(port, "POST", "/api/knowledge/ingest", &json!({ "documents": documents }));
    assert!(status == 200 || status == 201, "{status} {answer}");
    // a dead letter: a call to a toolset nobody serves, one attempt allowed
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("sqlite://{}", data.path().join("cogo.db").display());
    let dead = runtime.block_on(async {
        let store = store::Store::open(&url, store::StoreOptions::default()).await.expect("store");
        let intent = model::Intent::new("mcp_call").expect("intent");
        let message =
            model::NewMessage::new("mcp", "gateway", intent, json!({ "toolset": "nope", "tool": "x", "params": {} }))
                .with_max_attempts(1);
        let id = store.enqueue(message).await.expect("enqueue").message.id.to_string();
        store.close().await;
        id
    });
    wait_for("the dead letter", Duration::from_secs(60), || {
        let (_, page) = call(port, "GET", "/api/dlq", &Value::Null);
        page["items"].as_array()?.iter().any(|d| d["message_id"] == json!(dead)).then_some(())
    });
    // a goal that waits for an operator
    let (status, submitted) =
        call(port, "POST", "/api/goals", &json!({ "goal": "Report the operating system name with the uname command" }));
    assert_eq!(status, 201, "{submitted}");
    let goal = submitted["goal"]["id"].as_str().or(submitted["id"].as_str()).expect("goal id").to_owned();
    wait_for("the goal to ask for approval", Duration::from_secs(300), || {
        let (_, detail) = call(port, "GET", &format!("/api/goals/{goal}"), &Value::Null);
        let status = detail["goal"]["status"].as_str()?.to_owned();
        assert!(
            !["succeeded", "failed", "cancelled"].contains(&status.as_str()),
            "the goal ended without asking: {detail}"
        );
        (status == "awaiting_approval").then_some(())
    });

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let output = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/browser.mjs"))
        .env("COGO_URL", format!("http://127.0.0.1:{port}"))
        .env("COGO_TOKEN", ADMIN)
        .env("COGO_SHOTS", &shots)
        .env("COGO_NODE_DIR", &node_dir)
        .env("COGO_DEAD_LETTER", &dead)
        .env("COGO_GOAL", &goal)
        .env("COGO_PID", up.0.id().to_string())
        .output()
        .expect("running node");
    let report = super::text(&output);
    eprintln!("browser report: {report}\nscreenshots in {}", shots.display());
    assert!(output.status.success(), "the browser checks failed: {report}");
    for view in [
        "token",
        "overview",
        "mcp",
        "events",
        "dlq",
        "goals",
        "goal",
        "artifacts",
        "knowledge",
        "phone-overview",
        "unreachable",
    ] {
        assert!(shots.join(format!("{view}.png")).is_file(), "no screenshot of {view}");
    }
    drop(up);
}
