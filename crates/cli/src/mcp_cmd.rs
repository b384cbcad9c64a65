//! `cogo mcp ping|tools|call`: the MCP toolsets of mcp.json from the command line.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::ExitWith;
use crate::args::{ExamplesArgs, Global, McpCommand};
use crate::settings::load_configs_or_exit;

fn toolset<'a>(configs: &'a crate::settings::Configs, name: &str) -> anyhow::Result<&'a model::config::mcp::Toolset> {
    configs.mcp.toolsets.get(name).ok_or_else(|| {
        let known: Vec<&str> = configs.mcp.toolsets.keys().map(String::as_str).collect();
        ExitWith(2, format!("error: no toolset {name:?} in mcp.json; configured: {}", known.join(", "))).into()
    })
}

/// The example servers' launcher: `--mcp-servers`, else `mcp-servers/` found from the current
/// directory; PID and log files under `<data dir>/run/mcp`.
pub fn examples_launcher(global: &Global, args: &ExamplesArgs) -> anyhow::Result<mcp::examples::Launcher> {
    let dir = args.mcp_servers.clone().or_else(mcp::examples::default_servers_dir).ok_or_else(|| {
        ExitWith(
            2,
            "error: no mcp-servers directory found: run from the COGO checkout or pass --mcp-servers DIR".to_owned(),
        )
    })?;
    Ok(mcp::examples::Launcher::new(dir, global.data_dir.join("run").join("mcp")))
}

/// The ports asked for.
pub fn example_ports(args: &ExamplesArgs) -> mcp::examples::ExamplePorts {
    mcp::examples::ExamplePorts { browser: args.browser_port, figma: args.figma_port, pages: args.pages_port }
}

/// One line per example server, for banners.
pub fn describe_examples(servers: &mcp::examples::ExampleServers) -> String {
    let toolsets: Vec<String> =
        servers.toolsets.iter().map(|(name, t)| format!("{name} {}", t.url.as_deref().unwrap_or_default())).collect();
    format!("{}  pages {}", toolsets.join("  "), servers.pages_url)
}

pub async fn run(global: &Global, command: McpCommand) -> anyhow::Result<()> {
    if let McpCommand::Examples { args, stop } = &command {
        return examples(global, args, *stop).await;
    }
    let configs = load_configs_or_exit(&global.config_dir)?;
    let mut out = std::io::stdout().lock();
    match command {
        McpCommand::Examples { .. } => {}
        McpCommand::Conformance { url } => conformance(&url).await?,
        McpCommand::Ping { toolset: only, timeout_ms, json } => {
            if let Some(name) = &only {
                toolset(&configs, name)?;
            }
            let timeout = Duration::from_millis(timeout_ms.max(1));
            let results = ping_toolsets(&configs, only.as_deref(), timeout).await;
            let mut failed = 0;
            for (name, elapsed, result) in &results {
                let line = match result {
                    Ok(rtt) => {
                        json!({"toolset": name, "ok": true, "latency_ms": rtt.as_secs_f64() * 1000.0, "connect_and_ping_ms": elapsed.as_millis() as u64, "error": null})
                    }
                    Err(err) => {
                        failed += 1;
                        json!({"toolset": name, "ok": false, "latency_ms": null, "error": err.to_string(), "kind": err.kind().as_str()})
                    }
                };
                if json {
                    writeln!(out, "{line}")?;
                } else if line["ok"] == true {
                    writeln!(
                        out,
                        "ok    {name:<16} ping {:.2} ms (connect + ping {} ms)",
                        line["latency_ms"].as_f64().unwrap_or_default(),
                        elapsed.as_millis()
                    )?;
                } else {
                    writeln!(out, "FAIL  {name:<16} {}", line["error"].as_str().unwrap_or_default())?;
                }
            }
            if failed > 0 {
                return Err(ExitWith(1, format!("{failed} of {} toolset(s) did not answer", results.len())).into());
            }
        }
        McpCommand::Tools { toolset: name, json } => {
            let config = toolset(&configs, &name)?;
            let timeout = Duration::from_millis(config.timeout_ms);
            let client = mcp::McpClient::connect(&name, config, timeout).await?;
            let tools = client.tools(timeout).await;
            client.close().await;
            for tool in tools?.iter() {
                if json {
                    writeln!(out, "{}", serde_json::to_string(tool)?)?;
                } else {
                    writeln!(
                        out,
                        "{:<32} {}",
                        tool.name,
                        tool.description.as_deref().unwrap_or_default().lines().next().unwrap_or_default()
                    )?;
                }
            }
        }
        McpCommand::Call { toolset: name, tool, params, timeout_ms } => {
            let config = toolset(&configs, &name)?;
            let params: serde_json::Value = serde_json::from_str(&params)
                .map_err(|e| ExitWith(2, format!("error: --params is not valid JSON: {e}")))?;
            let timeout = Duration::from_millis(timeout_ms.unwrap_or_else(|| config.timeout_ms_for(&tool)));
            let client = mcp::McpClient::connect(&name, config, timeout).await?;
            let answer = client.call(&tool, params, timeout).await;
            client.close().await;
            let answer = answer?;
            writeln!(out, "{}", serde_json::to_string_pretty(&answer.result)?)?;
            if answer.is_error {
                return Err(ExitWith(
                    1,
                    format!("tool {name}.{tool} reported an error ({} ms)", answer.latency.as_millis()),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Connects to every enabled toolset of mcp.json (or only `only`) and pings it, all at once:
/// name, time to connect and ping, and the ping's round trip or the error.
pub async fn ping_toolsets(
    configs: &crate::settings::Configs,
    only: Option<&str>,
    timeout: Duration,
) -> Vec<(String, Duration, Result<Duration, mcp::Error>)> {
    let pings = configs.mcp.toolsets.iter().filter(|(name, t)| t.enabled && only.is_none_or(|o| o == *name)).map(
        |(name, config)| async move {
            let started = std::time::Instant::now();
            let result = async {
                let client = mcp::McpClient::connect(name, config, timeout).await?;
                let rtt = client.ping(timeout).await;
                client.close().await;
                rtt
            }
            .await;
            (name.clone(), started.elapsed(), result)
        },
    );
    futures_util::future::join_all(pings).await
}

async fn examples(global: &Global, args: &ExamplesArgs, stop: bool) -> anyhow::Result<()> {
    let launcher = examples_launcher(global, args)?;
    if stop {
        let stopped = launcher.stop_recorded();
        let names = if stopped.is_empty() { "none were running".to_owned() } else { stopped.join(", ") };
        writeln!(std::io::stdout(), "stopped example MCP servers: {names}")?;
        return Ok(());
    }
    let started = std::time::Instant::now();
    let servers = launcher.start_all(example_ports(args)).await.map_err(|e| ExitWith(1, format!("error: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "example MCP servers ready in {} ms", started.elapsed().as_millis())?;
        writeln!(out, "  {}", describe_examples(&servers))?;
        writeln!(out, "Press Ctrl-C to stop.")?;
        out.flush()?;
    }
    crate::node::wait_for_signal().await;
    drop(servers);
    Ok(())
}

/// The client side of the MCP conformance suite's scenarios that COGO's client covers.
async fn conformance(url: &str) -> anyhow::Result<()> {
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let timeout = Duration::from_secs(20);
    let toolset = model::config::mcp::Toolset::at_url(url, 20_000);
    let client = mcp::McpClient::connect("conformance", &toolset, timeout).await?;
    let outcome = async {
        match scenario.as_str() {
            "initialize" => {
                client.tools(timeout).await?;
            }
            "tools_call" => {
                let tools = client.tools(timeout).await?;
                anyhow::ensure!(tools.iter().any(|t| t.name == "add_numbers"), "the server lists no add_numbers tool");
                let answer = client.call("add_numbers", json!({ "a": 2, "b": 3 }), timeout).await?;
                anyhow::ensure!(!answer.is_error, "add_numbers reported an error: {}", answer.result);
                writeln!(std::io::stdout(), "{}", answer.result)?;
            }
            "sse-retry" => {
                // list first, as a client does: the standalone GET stream the client opens after
                // `initialized` then reaches the scenario before the call (the scenario answers a
                // pending call on whichever GET comes next); the answer arrives on the stream the
                // client reopens with Last-Event-ID
                let tools = client.tools(timeout).await?;
                anyhow::ensure!(
                    tools.iter().any(|t| t.name == "test_reconnection"),
                    "the server lists no test_reconnection tool"
                );
                let answer = client.call("test_reconnection", json!({}), timeout).await?;
                anyhow::ensure!(!answer.is_error, "test_reconnection reported an error: {}", answer.result);
            }
            other => {
                return Err(
                    ExitWith(2, format!("error: scenario {other:?} is not covered by COGO's MCP client")).into()
                );
            }
        }
        Ok(())
    }
    .await;
    client.close().await;
    outcome
}
