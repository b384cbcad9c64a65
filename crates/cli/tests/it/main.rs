//! The `cogo` binary, run as a user would: exit codes, messages, generated docs.

mod dashboard;
mod gate;

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
        "agents", "bench", "llm",
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
        ("secrets", &["axum", "rmcp", "clap", "anyhow", "server", "worker", "mcp", "sqlx"]),
        ("llm", &["axum", "rmcp", "clap", "anyhow", "store", "server", "worker", "mcp", "sqlx", "knowledge"]),
        ("agent", &["axum", "rmcp", "clap", "anyhow", "server", "sqlx"]),
        ("artifacts", &["axum", "rmcp", "clap", "anyhow", "store", "server", "worker", "mcp", "sqlx", "aws-lc-rs"]),
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

/// One HTTP/1.1 request over a plain socket (`Connection: close`); returns the whole answer.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

/// Secrets: set from stdin and never printed; sealed in the store; handed to stdio MCP servers;
/// scrubbed from tool answers, artifacts and logs; a wrong master key is refused at start-up.
#[test]
fn secrets_are_sealed_never_shown_and_reach_stdio_servers_scrubbed() {
    let data = tempfile::tempdir().expect("data dir");
    let configs = tempfile::tempdir().expect("config dir");
    let value = "sk-live-3f9c2a7be1d04c58";
    let data_dir = data.path().to_str().expect("path");
    let set = |name: &str, input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cogo"))
            .args(["--data-dir", data_dir, "secrets", "set", name])
            .env_remove("COGO_DATABASE_URL")
            .env_remove("COGO_MASTER_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cogo secrets set");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.as_bytes()).expect("value");
        child.wait_with_output().expect("output")
    };
    let stored = set("COGO_TEST_API_TOKEN", &format!("{value}\n"));
    assert!(stored.status.success(), "{}", text(&stored));
    assert!(text(&stored).contains("stored secret COGO_TEST_API_TOKEN") && !text(&stored).contains(value));
    let bad = set("lower-case", "x");
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("secret name \"lower-case\" is not allowed"), "{}", text(&bad));
    let list = cogo(&["--data-dir", data_dir, "secrets", "list"]);
    assert!(text(&list).contains("COGO_TEST_API_TOKEN") && !text(&list).contains(value), "{}", text(&list));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("master.key")).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // a stdio MCP server gets the secret in its environment; its answer comes back scrubbed
    let mcp = serde_json::json!({ "toolsets": { "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"] } } });
    std::fs::write(configs.path().join("mcp.json"), mcp.to_string()).expect("mcp.json");
    let port = test_support::free_port();
    let log = data.path().join("up.log");
    let mut up = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args(["--data-dir", data_dir, "--config-dir", configs.path().to_str().expect("path")])
        .args(["--log", "debug", "up", "--no-examples", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("COGO_DATABASE_URL")
        .env_remove("COGO_MASTER_KEY")
        .env_remove("COGO_TEST_API_TOKEN")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(data.path().join("up.err")).expect("log"))
        .spawn()
        .expect("cogo up");
    let token_path = data.path().join("admin-token");
    let mut ready = false;
    for _ in 0..100 {
        if token_path.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ready,
        "cogo up did not start: {}",
        std::fs::read_to_string(data.path().join("up.err")).unwrap_or_default()
    );
    let admin = std::fs::read_to_string(&token_path).expect("token").trim().to_owned();
    let answer = http(port, "POST", "/api/mcp/everything/get-env", &[("x-admin-token", &admin)], "{}");
    let _ = up.kill();
    let _ = up.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("COGO_TEST_API_TOKEN"), "the server saw the secret's name: {answer}");
    assert!(!answer.contains(value), "the value is scrubbed from the answer: {answer}");
    let mut seen = String::new();
    for entry in walk(&data.path().join("artifacts")) {
        seen.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
    }
    assert!(seen.contains("COGO_TEST_API_TOKEN") && !seen.contains(value), "artifacts are scrubbed");
    for file in ["up.log", "up.err"] {
        let logged = std::fs::read_to_string(data.path().join(file)).unwrap_or_default();
        assert!(!logged.contains(value), "{file} holds the secret");
    }
    // another master key is refused, naming the key to use
    let wrong = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args(["--data-dir", data_dir, "--config-dir", configs.path().to_str().expect("path")])
        .args(["up", "--no-examples", "--listen", "127.0.0.1:0"])
        .env_remove("COGO_DATABASE_URL")
        .env("COGO_MASTER_KEY", "11".repeat(32))
        .output()
        .expect("cogo up");
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("set COGO_MASTER_KEY to the key it was sealed with"), "{}", text(&wrong));
    let removed = cogo(&["--data-dir", data_dir, "secrets", "rm", "COGO_TEST_API_TOKEN"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!text(&cogo(&["--data-dir", data_dir, "secrets", "list"])).contains("COGO_TEST_API_TOKEN"));
    assert_eq!(cogo(&["--data-dir", data_dir, "secrets", "rm", "COGO_TEST_API_TOKEN"]).status.code(), Some(1));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn tenant_tokens_are_shown_once_listed_without_secret_and_revoked() {
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = data.path().to_str().expect("path");
    let created = cogo(&["--data-dir", data_dir, "tokens", "create", "--tenant", "acme", "--name", "ci"]);
    assert!(created.status.success(), "{}", text(&created));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(token.starts_with("cogo_") && token.len() == 5 + 12 + 1 + 48, "{token}");
    let id = &token[5..17];
    let list = text(&cogo(&["--data-dir", data_dir, "tokens", "list"]));
    assert!(list.contains(id) && list.contains("acme") && list.contains("active"), "{list}");
    assert!(!list.contains(&token[18..]), "the secret part is never listed");
    let bad = cogo(&["--data-dir", data_dir, "tokens", "create", "--tenant", "a b"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(cogo(&["--data-dir", data_dir, "tokens", "revoke", id]).status.success());
    assert!(text(&cogo(&["--data-dir", data_dir, "tokens", "list"])).contains("revoked"));
    assert_eq!(cogo(&["--data-dir", data_dir, "tokens", "revoke", id]).status.code(), Some(1));
}

/// `--tls-cert/--tls-key` serve HTTPS: a client that trusts the certificate gets answers; plain
/// HTTP on that port gets none; a missing certificate file stops start-up with exit code 2.
#[test]
fn the_api_serves_https_with_the_given_certificate() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("dir");
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).expect("cert");
    std::fs::write(&key, issued.signing_key.serialize_pem()).expect("key");
    let port = test_support::free_port();
    let data = dir.path().join("data");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args(["--data-dir", data.to_str().expect("path"), "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--tls-cert", cert.to_str().expect("path"), "--tls-key", key.to_str().expect("path")])
        .env_remove("COGO_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cogo serve");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issued.cert.der().clone()).expect("trust the certificate");
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut answer = String::new();
    for _ in 0..100 {
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut connection = rustls::ClientConnection::new(config.clone(), name).expect("client");
        let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("send");
        let _ = tls.read_to_string(&mut answer);
        break;
    }
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"status\":\"ok\""), "{answer}");
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain.set_read_timeout(Some(std::time::Duration::from_secs(15))).expect("timeout");
    let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut refused = Vec::new();
    let _ = plain.read_to_end(&mut refused);
    assert!(!String::from_utf8_lossy(&refused).contains("200 OK"), "plain HTTP is not served");
    // outbound HTTPS (the OpenAI-compatible provider): certificates are verified against the
    // system's roots, so the self-signed one is refused until SSL_CERT_FILE trusts it; then the
    // request goes through TLS and COGO's API answers it (404: it is no LLM endpoint)
    let chat = |trust: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
        command
            .args(["llm", "chat", "hi", "--llm-provider", "openai", "--llm-name", "m"])
            .args(["--llm-url", &format!("https://localhost:{port}/v1")])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if trust {
            command.env("SSL_CERT_FILE", &cert);
        }
        let out = command.output().expect("cogo llm chat");
        (out.status.code(), text(&out))
    };
    let (code, untrusted) = chat(false);
    assert_ne!(code, Some(0), "{untrusted}");
    assert!(untrusted.to_ascii_lowercase().contains("certificate") && !untrusted.contains("panicked"), "{untrusted}");
    let (code, trusted) = chat(true);
    assert_ne!(code, Some(0), "{trusted}");
    assert!(trusted.contains("404") && !trusted.to_ascii_lowercase().contains("certificate"), "{trusted}");
    let _ = serve.kill();
    let _ = serve.wait();
    let missing = cogo(&[
        "--data-dir",
        data.to_str().expect("path"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        key.to_str().expect("path"),
    ]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("TLS certificate /nonexistent/cert.pem"), "{}", text(&missing));
}

fn with_models(command: &mut Command) -> &mut Command {
    let models = std::env::var("COGO_MODELS_DIR").unwrap_or_else(|_| repo().join(".cogo/models").display().to_string());
    command.env("COGO_MODELS_DIR", models).env_remove("COGO_LLM_MODEL").env_remove("COGO_LLM_PROVIDER")
}

#[test]
fn llm_chat_streams_text_and_answers_json_of_a_schema() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command).args(["llm", "chat", "Name a colour.", "--max-tokens", "12"]);
    let output = command.output().expect("running cogo");
    assert!(output.status.success(), "{}", text(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).trim().is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("local SmolLM2-135M-Instruct.Q4_1") && stderr.contains("generated tokens"), "{stderr}");

    let schema = r#"{"type":"object","properties":{"ok":{"type":"boolean"},"why":{"type":"string","maxLength":60}},"required":["ok","why"],"additionalProperties":false}"#;
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command).args(["llm", "chat", "Is water wet?", "--schema", schema]);
    let output = command.output().expect("running cogo");
    assert!(output.status.success(), "{}", text(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(value["ok"].is_boolean() && value["why"].is_string(), "{value}");
}

#[test]
fn llm_errors_say_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    command.args(["llm", "chat", "hi", "--models-dir"]).arg(dir.path()).env_remove("COGO_LLM_MODEL");
    let output = command.output().expect("running cogo");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("scripts/models install"), "{}", text(&output));

    let output = cogo(&["llm", "chat", "hi", "--llm-provider", "openai"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--llm-url"), "{}", text(&output));

    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command).args(["llm", "chat", "hi", "--schema", "{not json"]);
    let output = command.output().expect("running cogo");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--schema is not JSON"), "{}", text(&output));

    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command).args(["llm", "chat", "hi", "--temperature", "9"]);
    let output = command.output().expect("running cogo");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("temperature"), "{}", text(&output));
}

#[test]
fn goal_eval_runs_the_suite_and_reports_json() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command)
        .current_dir(repo())
        .args(["--log", "warn", "eval", "goals", "--only", "browser-title-short", "--json"])
        .env_remove("COGO_DATABASE_URL");
    let output = command.output().expect("running cogo");
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["goals"], 1, "{report}");
    let row = &report["rows"][0];
    assert_eq!(row["id"], "browser-title-short");
    assert!(report["success_rate"].is_number() && row["seconds"].is_number() && row["steps"].is_number(), "{report}");
    assert!(row["status"].as_str().is_some_and(|s| s == "succeeded" || s == "failed"), "{report}");
    // a broken suite is a usage error naming the file
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = dir.path().join("suite.json");
    std::fs::write(&suite, r#"{"goals": [{"id": "x"}]}"#).expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command).args(["eval", "goals", "--suite"]).arg(&suite);
    let output = command.output().expect("running cogo");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("is not a goal suite") && text(&output).contains("missing field"),
        "{}",
        text(&output)
    );
}

/// `cogo worker` with `roles` on the data dir `data` and configs `configs`.
fn worker_process(configs: &Path, data: &Path, roles: &str) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
    with_models(&mut command)
        .arg("--config-dir")
        .arg(configs)
        .arg("--data-dir")
        .arg(data)
        .args(["--log", "warn", "worker", "--roles", roles, "--lease-ms", "2000", "--concurrency", "2"])
        .env_remove("COGO_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting cogo worker")
}

#[test]
fn goal_survives_kill_9_of_the_orchestrator_without_repeating_a_step() {
    let configs = tempfile::tempdir().expect("configs");
    let data = tempfile::tempdir().expect("data");
    // commands without approval: the goal runs through on its own
    std::fs::write(
        configs.path().join("agent_policy.json"),
        r#"{"approval": [], "commands": {"echo": {"path": "/bin/echo", "max_args": 8}}}"#,
    )
    .expect("policy");
    std::fs::write(configs.path().join("mcp.json"), r#"{"toolsets": {}}"#).expect("mcp.json");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("sqlite://{}", data.path().join("cogo.db").display());
    let store = runtime.block_on(async {
        let store = store::Store::open(&url, store::StoreOptions::default()).await.expect("store");
        store.migrate().await.expect("migrate");
        store
    });
    let mut execution = worker_process(configs.path(), data.path(), "execution");
    let mut first = worker_process(configs.path(), data.path(), "orchestrator");
    let goal = runtime
        .block_on(agent::submit(
            &store,
            "default",
            "Print the word one with echo, then print the word two with echo, then print the word three with echo",
            model::config::agent::Budget::default(),
        ))
        .expect("submit");
    // kill the orchestrator as soon as a first step has succeeded and the goal is still running
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let current = runtime.block_on(store.goal(&goal.id)).expect("goal");
        let state = agent::GoalState::from_value(&current.state, Default::default()).expect("state");
        let succeeded = state
            .plans
            .iter()
            .flat_map(|p| p.steps.iter())
            .filter(|s| s.status == agent::StepStatus::Succeeded)
            .count();
        if succeeded >= 1 {
            assert_eq!(current.status, model::goal::GoalStatus::Running, "the goal is still running when it is killed");
            break;
        }
        assert!(!current.status.is_final(), "the goal ended before the kill: {current:?}");
        assert!(std::time::Instant::now() < deadline, "no step succeeded in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    let mut second = worker_process(configs.path(), data.path(), "orchestrator");
    let done = loop {
        let current = runtime.block_on(store.goal(&goal.id)).expect("goal");
        if current.status.is_final() {
            break current;
        }
        assert!(std::time::Instant::now() < deadline, "the goal did not end after the restart: {current:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = second.kill();
    let _ = execution.kill();
    let _ = second.wait();
    let _ = execution.wait();
    let messages = runtime
        .block_on(store.messages(
            &store::MessageFilter { trace_id: Some(goal.trace_id.clone()), ..Default::default() },
            &store::PageRequest::first(100),
        ))
        .expect("messages")
        .items;
    let goal_runs: Vec<&model::Message> = messages.iter().filter(|m| m.intent.as_str() == "goal").collect();
    assert_eq!(goal_runs.len(), 1);
    assert!(goal_runs[0].attempts >= 2, "the goal's message was taken back after the kill: {:?}", goal_runs[0]);
    let steps: Vec<&model::Message> = messages.iter().filter(|m| m.intent.as_str() == "execute").collect();
    assert!(!steps.is_empty());
    let mut keys: Vec<&str> = steps.iter().filter_map(|m| m.idempotency_key.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), steps.len(), "one message per step");
    assert!(steps.iter().all(|m| m.attempts == 1), "no step ran twice: {steps:?}");
    let state = agent::GoalState::from_value(&done.state, Default::default()).expect("state");
    assert!(state.used.runs >= 2, "{:?}", state.used);
    // each step that ran is recorded against exactly one message
    let dispatched: Vec<String> =
        state.plans.iter().flat_map(|p| p.steps.iter()).filter_map(|s| s.message_id.clone()).collect();
    assert_eq!(dispatched.len(), steps.len(), "{dispatched:?}");
}

/// `/metrics` of a live `cogo up`, read by a Prometheus text-format parser: every seed metric name
/// is there with its type and help text, and the counters count the calls made.
#[test]
fn metrics_parse_as_prometheus_text_with_the_seed_names() {
    let data = tempfile::tempdir().expect("data dir");
    let configs = tempfile::tempdir().expect("config dir");
    let mcp = serde_json::json!({ "toolsets": { "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"] } } });
    std::fs::write(configs.path().join("mcp.json"), mcp.to_string()).expect("mcp.json");
    let port = test_support::free_port();
    let mut up = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args([
            "--data-dir",
            data.path().to_str().expect("path"),
            "--config-dir",
            configs.path().to_str().expect("path"),
        ])
        .args(["up", "--no-examples", "--listen", &format!("127.0.0.1:{port}"), "--admin-token", "metrics-admin"])
        .env_remove("COGO_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data.path().join("up.err")).expect("log"))
        .spawn()
        .expect("cogo up");
    let ready = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        test_support::http_ready(port, "/healthz")
    });
    let admin = [("x-admin-token", "metrics-admin")];
    let calls: Vec<String> = (0..3)
        .map(|n| {
            http(port, "POST", "/api/mcp/everything/echo", &admin, &format!(r#"{{"params": {{"message": "m{n}"}}}}"#))
        })
        .collect();
    let failed = http(port, "POST", "/api/mcp/everything/no-such-tool", &admin, "{}");
    let answer = http(port, "GET", "/metrics", &[], "");
    let _ = up.kill();
    let _ = up.wait();
    assert!(
        ready,
        "cogo up did not start: {}",
        std::fs::read_to_string(data.path().join("up.err")).unwrap_or_default()
    );
    assert!(calls.iter().all(|c| c.starts_with("HTTP/1.1 200")), "{calls:?}");
    assert!(failed.starts_with("HTTP/1.1"), "{failed}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let sample = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => 1.0,
            })
            .sum::<f64>()
    };
    assert_eq!(sample("cogo_mcp_calls_total", &[("toolset", "everything"), ("tool", "echo")]), 3.0, "{body}");
    assert!(sample("cogo_mcp_fail_total", &[("toolset", "everything"), ("tool", "no-such-tool")]) >= 1.0, "{body}");
    let latency =
        scrape.samples.iter().find(|s| s.metric == "cogo_mcp_latency_ms" && s.labels.get("tool") == Some("echo"));
    match latency.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(3.0), "+Inf bucket counts every call: {body}")
        }
        other => panic!("cogo_mcp_latency_ms is not a histogram: {other:?}\n{body}"),
    }
    // every seed family the process registers carries HELP, and the always-present ones are here
    for name in [
        "cogo_mcp_calls_total",
        "cogo_mcp_fail_total",
        "cogo_mcp_latency_ms",
        "cogo_circuit_open_current",
        "cogo_bus_claimed_total",
        "cogo_bus_succeeded_total",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "{name} missing from /metrics:\n{body}");
        assert!(scrape.docs.contains_key(name), "{name} has no # HELP:\n{body}");
    }
    for sample in &scrape.samples {
        // a histogram's _sum and _count lines come out as samples of their own
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.metric.strip_suffix(suffix))
            .filter(|base| model::metrics::ALL.contains(base))
            .unwrap_or(&sample.metric);
        assert!(model::metrics::ALL.contains(&family), "{} is not a seed metric name", sample.metric);
    }
}

/// SIGTERM stops `cogo serve` cleanly even while a client holds the live event stream open.
#[test]
fn serve_stops_on_sigterm_with_an_event_stream_open() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().expect("data dir");
    let port = test_support::free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args([
            "--data-dir",
            data.path().to_str().expect("path"),
            "--config-dir",
            repo().join("configs").to_str().expect("path"),
        ])
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-tokens", "stream-reader"])
        .env_remove("COGO_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cogo serve");
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        test_support::http_ready(port, "/healthz")
    });
    assert!(ready, "cogo serve did not start");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer stream-reader\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
    let mut head = [0u8; 256];
    let n = stream.read(&mut head).expect("the stream's head");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = serve.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.is_some_and(|s| s.success()), "cogo serve did not stop within 15 s of SIGTERM: {status:?}");
    // the client sees its stream end rather than hang
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// An edge worker over HTTPS: refused without the server's CA, then (with `--ca-cert`) it drains
/// the work enqueued on the server's database and is ready on its probe endpoint; on SIGTERM it
/// finishes the work in hand and exits 0; started again, it stops with exit code 1 and the reason
/// once its token is revoked. Bad tokens and roles are named.
#[test]
fn an_edge_worker_drains_over_https_stops_gracefully_and_when_its_token_is_revoked() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let data_dir = data.to_str().expect("path");
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).expect("cert");
    std::fs::write(&key, issued.signing_key.serialize_pem()).expect("key");
    let bad_role = cogo(&["--data-dir", data_dir, "tokens", "create", "--edge", "--roles", "noop,nope"]);
    assert_eq!(bad_role.status.code(), Some(2), "{}", text(&bad_role));
    assert!(text(&bad_role).contains("\"nope\"") && text(&bad_role).contains("gateway"), "{}", text(&bad_role));
    let created = cogo(&["--data-dir", data_dir, "tokens", "create", "--edge", "--roles", "noop", "--name", "pc"]);
    assert!(created.status.success(), "{}", text(&created));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let id = token[5..17].to_owned();
    assert!(text(&cogo(&["--data-dir", data_dir, "tokens", "list"])).contains("edge:noop"));
    let port = test_support::free_port();
    let server = format!("https://localhost:{port}");
    // every process is stopped when the test ends, however it ends
    let _serve = dashboard::Up(
        Command::new(env!("CARGO_BIN_EXE_cogo"))
            .args(["--data-dir", data_dir, "serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--tls-cert", cert.to_str().expect("path"), "--tls-key", key.to_str().expect("path")])
            .env_remove("COGO_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cogo serve"),
    );
    assert!((0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let worker = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
        command
            .args(["--data-dir", dir.path().join("edge").to_str().expect("path"), "worker", "--roles"])
            .args(extra)
            .args(["--server", &server, "--token", &token])
            .env_remove("COGO_DATABASE_URL")
            .env_remove("SSL_CERT_FILE")
            .env("NO_COLOR", "1");
        command
    };
    // a role that reads the store, and a server whose certificate is not trusted: exit, named
    let out = worker(&["indexing"]).output().expect("worker");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot run on an edge worker"), "{}", text(&out));
    let out = worker(&["noop", "--name", "pc-1"]).output().expect("worker");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--ca-cert") && !text(&out).contains("panicked"), "{}", text(&out));
    // trusted: it connects and drains what the server's database holds
    let probe_port = test_support::free_port();
    let probes = format!("127.0.0.1:{probe_port}");
    let start = |extra: &[&str]| {
        let mut args = vec!["noop", "--name", "pc-1", "--ca-cert", cert.to_str().expect("path")];
        args.extend_from_slice(extra);
        let mut edge = dashboard::Up(
            worker(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("edge worker"),
        );
        let mut banner = String::new();
        let mut stdout = BufReader::new(edge.0.stdout.take().expect("stdout"));
        stdout.read_line(&mut banner).expect("banner");
        assert!(banner.starts_with(&format!("COGO worker edge:{id}:pc-1 running roles noop")), "{banner}");
        // keep reading: a closed pipe would fail the worker's next line (the metrics address)
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        edge
    };
    // its exit status within `limit`, and what it said on stderr
    let ended = |edge: &mut dashboard::Up, limit: std::time::Duration| {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            match edge.0.try_wait().expect("try_wait") {
                Some(status) => break status,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                }
                None => panic!("the edge worker did not stop within {limit:?}"),
            }
        };
        let mut said = String::new();
        if let Some(mut stderr) = edge.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        }
        (status, said)
    };
    let mut edge = start(&["--metrics-addr", &probes]);
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        test_support::http_ready(probe_port, "/readyz")
    });
    if !ready {
        let _ = edge.0.kill();
        let (_, said) = ended(&mut edge, std::time::Duration::from_secs(10));
        panic!("not ready while connected: {said}");
    }
    // noop messages enqueued on the server's database, and how many have a status
    let enqueue = |count: &str, payload: &str| {
        let args = ["enqueue", "--service", "bus", "--role", "noop", "--intent", "noop", "--count", count];
        let out = cogo(&[&["--data-dir", data_dir][..], &args[..], &["--payload", payload][..]].concat());
        assert!(out.status.success(), "{}", text(&out));
    };
    let count = |status: &str| {
        let listed = cogo(&["--data-dir", data_dir, "messages", "--status", status, "--limit", "100", "--json"]);
        String::from_utf8_lossy(&listed.stdout).lines().count()
    };
    enqueue("50", "{}");
    let done = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        count("done") == 50
    });
    assert!(done, "the edge worker did not finish the 50 messages");
    let agents = text(&cogo(&["--data-dir", data_dir, "messages", "--status", "done", "--limit", "1", "--json"]));
    assert!(agents.contains(&format!("edge:{id}:pc-1")), "completed by the edge worker: {agents}");
    // SIGTERM while it works: the work in hand finishes before it exits (a rolling restart)
    enqueue("4", r#"{"sleep_ms": 1500}"#);
    let claimed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        count("claimed") == 4
    });
    assert!(claimed, "the slow messages were not claimed");
    let term = Command::new("kill").args(["-TERM", &edge.0.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let (status, said) = ended(&mut edge, std::time::Duration::from_secs(30));
    assert!(status.success(), "{said}");
    assert_eq!(count("done"), 54, "the slow ones finished before the exit");
    let mut edge = start(&[]);
    // revoked: the live connection ends and the worker stops with the reason
    assert!(cogo(&["--data-dir", data_dir, "tokens", "revoke", &id]).status.success());
    let (status, said) = ended(&mut edge, std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("revoked") || said.contains("401"), "{said}");
}

/// The distributed mode's artifacts: `cogo serve` and a separate `cogo worker --roles gateway` on
/// one PostgreSQL, both with `--artifacts-url s3://…` (a real S3-compatible server). The worker's
/// MCP call writes its artifacts to the bucket, the server (another process, another data dir)
/// lists and serves them, and neither writes artifacts to its own disk. A bucket that does not
/// exist stops a worker at start with exit code 2 and what to check.
#[test]
fn artifacts_on_s3_are_shared_by_the_server_and_its_workers() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(test_support::postgres());
    let url = database.url.clone();
    let bucket = test_support::s3_url();
    let configs = tempfile::tempdir().expect("configs");
    let config = serde_json::json!({ "toolsets": {
        "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"], "timeout_ms": 20000 }
    }});
    std::fs::write(configs.path().join("mcp.json"), config.to_string()).expect("mcp.json");
    let (server_data, worker_data) = (tempfile::tempdir().expect("data"), tempfile::tempdir().expect("data"));
    let cogo_on = |data: &Path, artifacts: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cogo"));
        command
            .arg("--config-dir")
            .arg(configs.path())
            .arg("--data-dir")
            .arg(data)
            .args(["--database-url", &url, "--artifacts-url", artifacts, "--log", "warn"])
            .envs(test_support::s3_settings());
        command
    };
    // a bucket that is not there: the worker does not start, and says what to check
    let missing = format!("s3://no-such-bucket-{}", &model::new_id().simple().to_string()[20..]);
    let out = cogo_on(worker_data.path(), &missing).args(["worker", "--roles", "gateway"]).output().expect("worker");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--artifacts-url") && text(&out).contains("no-such-bucket"), "{}", text(&out));
    assert!(!text(&out).contains("cogo-test-secret"), "{}", text(&out));
    let doctor = cogo_on(worker_data.path(), &missing).arg("doctor").output().expect("doctor");
    assert!(!doctor.status.success() && text(&doctor).contains("no-such-bucket"), "{}", text(&doctor));
    let doctor = cogo_on(worker_data.path(), &bucket).arg("doctor").output().expect("doctor");
    assert!(
        text(&doctor).contains(&format!("{} at", bucket)) && text(&doctor).contains("writable"),
        "{}",
        text(&doctor)
    );
    let port = test_support::free_port();
    let _serve = dashboard::Up(
        cogo_on(server_data.path(), &bucket)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-tokens", "reader"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cogo serve"),
    );
    let _worker = dashboard::Up(
        cogo_on(worker_data.path(), &bucket)
            .args(["worker", "--roles", "gateway", "--concurrency", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cogo worker"),
    );
    assert!(
        (0..150).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            test_support::http_ready(port, "/readyz")
        }),
        "cogo serve did not start"
    );
    let payload = r#"{"toolset": "everything", "tool": "echo", "params": {"message": "written by the worker"}}"#;
    let enqueued = cogo_on(server_data.path(), &bucket)
        .args(["enqueue", "--service", "mcp", "--role", "gateway", "--intent", "mcp_call", "--payload", payload])
        .output()
        .expect("enqueue");
    assert!(enqueued.status.success(), "{}", text(&enqueued));
    let mut done = None;
    for _ in 0..300 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let listed = cogo_on(server_data.path(), &bucket)
            .args(["messages", "--status", "done", "--limit", "1", "--json"])
            .output()
            .expect("messages");
        if let Some(line) = String::from_utf8_lossy(&listed.stdout).lines().next() {
            done = Some(serde_json::from_str::<serde_json::Value>(line).expect("json"));
            break;
        }
    }
    let Some(done) = done else {
        let listed = cogo_on(server_data.path(), &bucket).args(["messages", "--json"]).output().expect("messages");
        panic!("the worker did not complete the MCP call: {}", text(&listed));
    };
    let dir = done["result"]["artifacts"].as_str().expect("an artifacts directory").to_owned();
    let dir = dir.trim_start_matches("artifacts/");
    let bearer = [("Authorization", "Bearer reader")];
    let listing = http(port, "GET", &format!("/api/artifacts/{dir}"), &bearer, "");
    assert!(listing.starts_with("HTTP/1.1 200"), "{listing}");
    assert!(listing.contains("request.json") && listing.contains("summary.json"), "{listing}");
    let response = http(port, "GET", &format!("/api/artifacts/{dir}/response.json"), &bearer, "");
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("written by the worker"), "{response}");
    let summary = http(port, "GET", "/api/metrics/mcp/artifacts/summary", &bearer, "");
    assert!(summary.contains(r#""store":"s3""#) && summary.contains(r#""everything""#), "{summary}");
    for data in [server_data.path(), worker_data.path()] {
        assert!(!data.join("artifacts/mcp").exists(), "artifacts written to the local disk of {}", data.display());
    }
}
