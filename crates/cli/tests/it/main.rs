//! The `cogo` binary, run as a user would: exit codes, messages, generated docs.

use std::path::Path;
use std::process::{Command, Output};

fn cogo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args(args)
        .env_remove("COGO_DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("running cogo")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("repository root")
}

#[test]
fn help_describes_every_subcommand() {
    let help = text(&cogo(&["--help"]));
    for command in [
        "up", "serve", "worker", "config", "policy", "doctor", "migrate", "enqueue", "messages", "dlq", "events",
        "agents", "bench",
    ] {
        assert!(help.contains(&format!("  {command} ")), "cogo --help lacks {command}");
        let sub = cogo(&[command, "--help"]);
        assert!(sub.status.success(), "cogo {command} --help failed");
        assert!(text(&sub).contains("Usage: cogo"), "cogo {command} --help");
    }
}

#[test]
fn shipped_configs_pass_the_check() {
    let dir = repo().join("configs");
    let output = cogo(&["config", "check", dir.to_str().expect("path")]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("configuration is valid"));
}

/// Each broken variant fails with exit code 2 and names the file, the key path and the problem.
#[test]
fn broken_configs_fail_with_exit_code_2_and_say_where() {
    let seed = |name: &str| std::fs::read_to_string(repo().join("configs").join(name)).expect("seed file");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "mcp.json",
            seed("mcp.json").replace(
                "\"timeout_ms\": 30000,\n      \"tools\"",
                "\"timeout_ms\": 30000, \"colour\": 1,\n      \"tools\"",
            ),
            "toolsets.browser.colour: unknown field `colour`",
        ),
        (
            "mcp.json",
            seed("mcp.json").replace("\"timeout_ms\": 45000 }", "\"timeout_ms\": \"slow\" }"),
            "toolsets.browser.tools.browser_navigate.timeout_ms: invalid type: string \"slow\"",
        ),
        (
            "mcp.json",
            seed("mcp.json").replace("ws://localhost:3007", "ws//localhost:3007"),
            "toolsets.figma.url: \"ws//localhost:3007\" is not a valid URL",
        ),
        (
            "mcp.json",
            seed("mcp.json").replace("\"toolsets\": {", "\"toolsets\": {\"browser\": {\"url\": \"ws://x\"},"),
            "toolsets.browser: duplicate key \"browser\"",
        ),
        (
            "retry_policy.json",
            seed("retry_policy.json").replace("\"max_attempts\": 4", "\"max_attempts\": 0"),
            "policies[\"mcp.call.browser.browser_navigate\"].max_attempts: 0 is out of range",
        ),
        (
            "retry_policy.json",
            seed("retry_policy.json").replace("\"jitter\": \"full\"", "\"jitter\": \"chaotic\""),
            "default.jitter: unknown variant `chaotic`",
        ),
        (
            "circuit_breaker.json",
            seed("circuit_breaker.json").replace("\"failure_rate_threshold\": 0.5", "\"failure_rate_threshold\": 2"),
            "default.failure_rate_threshold: 2 is out of range",
        ),
        (
            "circuit_breaker.json",
            seed("circuit_breaker.json").replace("\"mcp.call.browser.get_title.0\"", "\"mcp.call.*.get_title\""),
            "breakers[\"mcp.call.*.get_title\"]: policy key \"mcp.call.*.get_title\": '*' may only be the last segment",
        ),
        (
            "route_policies.json",
            seed("route_policies.json").replace(
                "\"method\": \"GET\", \"path\": \"/healthz\"",
                "\"method\": \"FETCH\", \"path\": \"/healthz\"",
            ),
            "routes[0].method: \"FETCH\" is not a method",
        ),
        (
            "route_policies.json",
            seed("route_policies.json").replace("\"default\": \"deny\"", "\"default\": \"allow\""),
            "route_policies.json:2:20: default: unknown variant `allow`",
        ),
        (
            "route_policies.json",
            "{\"routes\": [".to_owned(),
            "route_policies.json:1:12: (top level): EOF while parsing a list",
        ),
    ];
    for (file, content, expected) in cases {
        let dir = tempfile::tempdir().expect("dir");
        for name in ["mcp.json", "retry_policy.json", "circuit_breaker.json", "route_policies.json"] {
            std::fs::write(dir.path().join(name), seed(name)).expect("copy");
        }
        assert_ne!(content, seed(file), "the variant for {expected:?} must change the file");
        std::fs::write(dir.path().join(file), &content).expect("write");
        let output = cogo(&["config", "check", dir.path().to_str().expect("path")]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(2), "{expected}: {shown}");
        assert!(shown.contains(expected), "expected {expected:?} in:\n{shown}");
        assert!(shown.contains(&dir.path().join(file).display().to_string()), "names the file: {shown}");
    }
}

#[test]
fn schema_and_policy_explain() {
    let output = cogo(&["config", "schema", "retry_policy"]);
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON schema");
    assert_eq!(schema["title"], "RetryFile");
    let bad = cogo(&["config", "schema", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("unknown config file \"nope\""));
    let dir = repo().join("configs");
    let explain =
        cogo(&["--config-dir", dir.to_str().expect("path"), "policy", "explain", "mcp.call.browser.browser_navigate"]);
    let shown = text(&explain);
    assert!(explain.status.success(), "{shown}");
    assert!(shown.contains("mcp.call.browser.browser_navigate → mcp.call.browser.* → mcp.call.* → default"), "{shown}");
    assert_eq!(cogo(&["policy", "explain", "bad..key"]).status.code(), Some(2));
}

#[test]
fn reference_doc_is_up_to_date() {
    let output = cogo(&["config", "reference"]);
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    let path = repo().join("docs").join("REFERENCE.md");
    if std::env::var_os("COGO_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("writing docs/REFERENCE.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/REFERENCE.md is out of date: run COGO_UPDATE_DOCS=1 cargo nextest run -p cli reference"
    );
    for needle in [
        "COGO_DATABASE_URL",
        "COGO_ADMIN_TOKEN",
        "toolsets.<toolset>.url",
        "policies.<key>.max_attempts",
        "routes[].access",
    ] {
        assert!(generated.contains(needle), "reference lacks {needle}");
    }
}

#[test]
fn bad_usage_gets_exit_code_2_and_a_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("path");
    let output = cogo(&["--data-dir", data, "enqueue", "--service", "s", "--role", "r", "--intent", "Bad-Intent"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--intent \"Bad-Intent\""), "{}", text(&output));
    let output = cogo(&[
        "--data-dir",
        data,
        "enqueue",
        "--service",
        "s",
        "--role",
        "r",
        "--intent",
        "noop",
        "--payload",
        "{oops",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--payload is not valid JSON"));
    let output = cogo(&["--data-dir", data, "worker", "--roles", "wizard"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("unknown role \"wizard\""));
    let output = cogo(&["--data-dir", data, "--database-url", "mysql://u:pw@h/db", "messages"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("unsupported database URL") && !text(&output).contains("pw@"), "{}", text(&output));
}

#[test]
fn enqueue_list_and_requeue_through_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("path");
    let first = cogo(&[
        "--data-dir",
        data,
        "enqueue",
        "--service",
        "bus",
        "--role",
        "noop",
        "--intent",
        "noop",
        "--idempotency-key",
        "k1",
    ]);
    assert!(first.status.success(), "{}", text(&first));
    let second = cogo(&[
        "--data-dir",
        data,
        "enqueue",
        "--service",
        "bus",
        "--role",
        "noop",
        "--intent",
        "noop",
        "--idempotency-key",
        "k1",
    ]);
    assert!(text(&second).contains("already enqueued"));
    let list = cogo(&["--data-dir", data, "messages", "--json"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1);
    let tail = cogo(&["--data-dir", data, "events", "tail", "--from-start", "--no-follow"]);
    assert!(String::from_utf8_lossy(&tail.stdout).contains("noop_scheduled"));
    let enqueued = text(&first);
    let trace_id = enqueued.split("trace ").nth(1).map(str::trim).expect("trace id printed");
    let trace = cogo(&["--data-dir", data, "trace", trace_id]);
    assert!(trace.status.success(), "{}", text(&trace));
    assert!(
        text(&trace).contains("1 message(s), 1 event(s)") && text(&trace).contains("noop_scheduled"),
        "{}",
        text(&trace)
    );
    let none = cogo(&["--data-dir", data, "trace", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(none.status.code(), Some(1));
    let requeue = cogo(&["--data-dir", data, "dlq", "requeue", "01a20e07-5b4b-774f-a660-71b6ca286531"]);
    assert_eq!(requeue.status.code(), Some(1));
    assert!(text(&requeue).contains("not found"), "{}", text(&requeue));
}

/// The dependency graph is architecture: forbidden edges fail the build.
#[test]
fn crate_boundaries_hold() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let deps = |name: &str| -> Vec<String> {
        let package = metadata["packages"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name)).expect(name);
        package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let forbidden: &[(&str, &[&str])] = &[
        ("model", &["tokio", "sqlx", "axum", "rmcp", "clap", "anyhow", "store", "worker", "server", "resilience"]),
        ("store", &["axum", "rmcp", "clap", "anyhow", "worker", "server", "resilience"]),
        ("worker", &["axum", "sqlx", "clap", "anyhow", "server", "rmcp"]),
        ("resilience", &["axum", "sqlx", "clap", "anyhow", "server", "worker", "rmcp"]),
        ("server", &["sqlx", "clap", "anyhow", "worker", "rmcp"]),
        ("mcp", &["sqlx", "axum", "clap", "anyhow", "store", "server"]),
        ("cli", &["rmcp", "sqlx"]),
        ("test-support", &["axum", "clap", "anyhow"]),
    ];
    for (krate, banned) in forbidden {
        let actual = deps(krate);
        for b in *banned {
            assert!(!actual.iter().any(|d| d == b), "{krate} must not depend on {b}");
        }
    }
}

#[test]
fn mcp_ping_tools_and_call_against_a_real_server() {
    let dir = tempfile::tempdir().expect("dir");
    let config = serde_json::json!({ "toolsets": {
        "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"], "timeout_ms": 20000 },
        "nowhere": { "url": format!("ws://127.0.0.1:{}/message", test_support::free_port()) }
    }});
    std::fs::write(dir.path().join("mcp.json"), config.to_string()).expect("write");
    let configs = dir.path().to_str().expect("path");
    let ping = cogo(&["--config-dir", configs, "mcp", "ping", "everything", "--json"]);
    assert!(ping.status.success(), "{}", text(&ping));
    let line: serde_json::Value = serde_json::from_slice(&ping.stdout).expect("json");
    assert_eq!((line["toolset"].as_str(), line["ok"].as_bool()), (Some("everything"), Some(true)));
    let all = cogo(&["--config-dir", configs, "mcp", "ping"]);
    assert_eq!(all.status.code(), Some(1), "one toolset is down: {}", text(&all));
    assert!(text(&all).contains("FAIL  nowhere") && text(&all).contains("ok    everything"), "{}", text(&all));
    let tools = cogo(&["--config-dir", configs, "mcp", "tools", "everything"]);
    assert!(tools.status.success() && text(&tools).contains("get-sum"), "{}", text(&tools));
    let call =
        cogo(&["--config-dir", configs, "mcp", "call", "everything", "get-sum", "--params", r#"{"a": 20, "b": 22}"#]);
    assert!(call.status.success() && text(&call).contains("42"), "{}", text(&call));
    let unknown = cogo(&["--config-dir", configs, "mcp", "tools", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown).contains("no toolset \"nope\""), "{}", text(&unknown));
    let bad = cogo(&["--config-dir", configs, "mcp", "call", "everything", "echo", "--params", "{oops"]);
    assert_eq!(bad.status.code(), Some(2));
}
