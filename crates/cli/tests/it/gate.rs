//! `cogo gate unified` where it must fail or skip: a broken MCP server fails stage 1 naming it, and
//! the docker stage says why it cannot run. (The whole gate runs for real in the test command.)

use std::process::Command;

#[test]
fn a_broken_mcp_server_fails_stage_1_by_name_and_docker_says_why_it_skips() {
    let data = tempfile::tempdir().expect("data dir");
    let configs = tempfile::tempdir().expect("config dir");
    let dead = test_support::free_port();
    let mcp = serde_json::json!({ "toolsets": {
        "everything": { "command": "node", "args": [test_support::everything_js(), "stdio"] },
        "broken": { "url": format!("ws://127.0.0.1:{dead}/message") }
    }});
    std::fs::write(configs.path().join("mcp.json"), mcp.to_string()).expect("mcp.json");
    let junit = data.path().join("gate.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args([
            "--data-dir",
            data.path().to_str().expect("path"),
            "--config-dir",
            configs.path().to_str().expect("path"),
        ])
        .args([
            "gate",
            "unified",
            "--stages",
            "1,4",
            "--no-examples",
            "--json",
            "--junit",
            junit.to_str().expect("path"),
        ])
        .args(["--compose-file", "no-such-compose.yml"])
        .env_remove("COGO_DATABASE_URL")
        .output()
        .expect("cogo gate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["verdict"], "failed");
    let stages = report["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    assert_eq!((stages[0]["name"].as_str(), stages[0]["status"].as_str()), (Some("mcp-ping"), Some("failed")));
    let checks = stages[0]["checks"].as_array().expect("checks");
    let broken = checks.iter().find(|c| c["name"] == "ping broken").expect("a check per toolset");
    assert_eq!(broken["ok"], false);
    let detail = broken["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("toolset broken") && detail.contains(&format!("127.0.0.1:{dead}")), "{detail}");
    assert!(checks.iter().any(|c| c["name"] == "ping everything" && c["ok"] == true), "{checks:?}");
    // stage 4 is skipped with its reason (no Docker engine answers here, or no compose file)
    assert_eq!(stages[1]["status"], "skipped", "{}", stages[1]);
    let reason = stages[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Docker") || reason.contains("no-such-compose.yml"), "{reason}");
    // the reports on disk: report.json and junit.xml under artifacts/gate-run/<ts>/, and --junit
    let dir = data.path().join(report["artifacts"].as_str().expect("artifacts dir"));
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json")).expect("JSON");
    assert_eq!(on_disk["verdict"], "failed");
    assert!(dir.join("mcp-ping.json").is_file());
    let xml = std::fs::read_to_string(&junit).expect("--junit file");
    assert_eq!(xml, std::fs::read_to_string(dir.join("junit.xml")).expect("junit.xml"));
    assert!(xml.contains("<failure message=\"toolset broken") && xml.contains("<skipped message="), "{xml}");
    assert!(stderr.contains("FAIL  ping broken"), "progress names the failure: {stderr}");
}

#[test]
fn a_taken_port_is_named_with_the_process_holding_it() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = holder.local_addr().expect("addr").port();
    let data = tempfile::tempdir().expect("data dir");
    let out = Command::new(env!("CARGO_BIN_EXE_cogo"))
        .args(["--data-dir", data.path().to_str().expect("path")])
        .args(["serve", "--minimal", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("COGO_DATABASE_URL")
        .output()
        .expect("cogo serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", std::process::id())), "names this test process: {stderr}");
    drop(holder);
}
