//! `cogo llm chat|bench`, and the one place the configured LLM client is built.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use llm::LlmClient;

use crate::ExitWith;
use crate::args::{Global, LlmArgs, LlmBenchArgs, LlmChatArgs, LlmCommand, LlmProviderKind, SchemaModeArg};

/// Runs an `llm` subcommand.
pub async fn run(global: &Global, command: LlmCommand) -> anyhow::Result<()> {
    match command {
        LlmCommand::Chat(args) => chat(global, args).await,
        LlmCommand::Bench(args) => bench(global, args).await,
    }
}

fn usage(err: llm::Error) -> anyhow::Error {
    anyhow::Error::new(ExitWith(2, format!("error: {err}")))
}

/// The GGUF file of the local provider.
pub fn local_model_path(global: &Global, args: &LlmArgs) -> std::path::PathBuf {
    args.model.clone().unwrap_or_else(|| llm::local::default_model_path(&crate::knowledge_cmd::models_dir(global)))
}

async fn load_local(path: std::path::PathBuf, args: &LlmArgs) -> anyhow::Result<llm::local::LocalModel> {
    let options = llm::local::LocalOptions { context: args.context, threads: args.threads, ..Default::default() };
    tokio::task::spawn_blocking(move || llm::local::LocalModel::load(&path, options))
        .await
        .context("the model loader stopped")?
        .map_err(usage)
}

fn openai(url: &str, args: &LlmArgs) -> anyhow::Result<llm::openai::OpenAiProvider> {
    let mut config = llm::openai::OpenAiConfig::new(url, &args.name);
    config.api_key = args.api_key.clone();
    config.schema_mode = match args.schema_mode {
        SchemaModeArg::JsonSchema => llm::openai::SchemaMode::JsonSchema,
        SchemaModeArg::JsonObject => llm::openai::SchemaMode::JsonObject,
    };
    llm::openai::OpenAiProvider::new(config).map_err(usage)
}

/// The endpoint of `--llm-provider openai`, or the usage error that asks for it.
fn configured_url(args: &LlmArgs) -> anyhow::Result<&str> {
    args.url
        .as_deref()
        .ok_or_else(|| ExitWith(2, "error: --llm-provider openai needs --llm-url (or COGO_LLM_URL)".into()).into())
}

/// The configured provider, guarded by the policies of `configs/`.
pub async fn client(global: &Global, args: &LlmArgs) -> anyhow::Result<Arc<dyn LlmClient>> {
    let provider: Arc<dyn llm::Provider> = match args.provider {
        LlmProviderKind::Local => Arc::new(load_local(local_model_path(global, args), args).await?),
        LlmProviderKind::Openai => Arc::new(openai(configured_url(args)?, args)?),
    };
    Ok(Arc::new(guard(global, provider)?))
}

fn guard(global: &Global, provider: Arc<dyn llm::Provider>) -> anyhow::Result<llm::Llm> {
    let configs = crate::settings::load_configs_or_exit(&global.config_dir)?;
    let policies = Arc::new(resilience::Policies::new(&configs.retry, &configs.breaker));
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    Ok(llm::Llm::new(provider, policies, breakers))
}

fn read_schema(value: &str) -> anyhow::Result<serde_json::Value> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).with_context(|| format!("reading the schema file {value}"))?
    };
    serde_json::from_str(&text).map_err(|err| ExitWith(2, format!("error: --schema is not JSON: {err}")).into())
}

async fn chat(global: &Global, args: LlmChatArgs) -> anyhow::Result<()> {
    let client = client(global, &args.llm).await?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(llm::Message::system(system.clone()));
    }
    messages.push(llm::Message::user(args.prompt.clone()));
    let mut request = llm::ChatRequest::new(messages);
    request.max_tokens = args.max_tokens;
    request.temperature = args.temperature;
    request.validate().map_err(usage)?;
    if let Some(schema) = &args.schema {
        let format = llm::JsonSchemaFormat { name: "answer".into(), schema: read_schema(schema)? };
        let answer = llm::structured(client.as_ref(), request, format).await.map_err(|err| match err {
            llm::Error::InvalidOutput { .. } | llm::Error::Invalid(_) => usage(err),
            other => anyhow::Error::new(other),
        })?;
        let printed = if args.json {
            serde_json::json!({"value": answer.value, "attempts": answer.attempts, "response": answer.response})
        } else {
            answer.value
        };
        writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&printed)?)?;
        return Ok(());
    }
    if args.json {
        let response = client.chat(request).await.map_err(usage_or_runtime)?;
        writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&response)?)?;
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        while let Some(piece) = rx.recv().await {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    });
    let response = client.chat_stream(request, tx).await.map_err(usage_or_runtime)?;
    let _ = printer.await;
    writeln!(std::io::stdout())?;
    eprintln!(
        "{} {}: {} prompt + {} generated tokens, first token {:.0} ms, {:.0} ms in all ({:?})",
        response.provider,
        response.model,
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.first_token_ms.unwrap_or(response.latency_ms),
        response.latency_ms,
        response.finish_reason
    );
    Ok(())
}

fn usage_or_runtime(err: llm::Error) -> anyhow::Error {
    if matches!(err, llm::Error::Invalid(_) | llm::Error::ModelMissing { .. }) { usage(err) } else { err.into() }
}

/// Resident memory of this process in MiB (Linux), for the local model's footprint.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn bench(global: &Global, args: LlmBenchArgs) -> anyhow::Result<()> {
    if !(1..=10).contains(&args.samples) || !(1..=100).contains(&args.runs) {
        return Err(ExitWith(2, "error: --samples must be 1 to 10 and --runs 1 to 100".into()).into());
    }
    let options = llm::bench::BenchOptions { runs: args.runs, samples: args.samples };
    let progress = |what: &str| eprintln!("  {what}");
    let mut rows = Vec::new();
    // the configured provider, then extra local models, then the peer endpoint
    let mut targets: Vec<(String, Option<std::path::PathBuf>)> = Vec::new();
    match args.llm.provider {
        LlmProviderKind::Local => targets.push(("local".into(), Some(local_model_path(global, &args.llm)))),
        LlmProviderKind::Openai => targets.push(("openai".into(), None)),
    }
    for path in &args.models {
        targets.push(("local".into(), Some(path.clone())));
    }
    for (kind, path) in targets {
        let rss_before = rss_mib();
        let loading = Instant::now();
        let provider: Arc<dyn llm::Provider> = match path {
            Some(path) => {
                eprintln!("loading {}", path.display());
                Arc::new(load_local(path, &args.llm).await?)
            }
            None => Arc::new(openai(configured_url(&args.llm)?, &args.llm)?),
        };
        let load_ms = loading.elapsed().as_secs_f64() * 1000.0;
        eprintln!("measuring {kind} {}", provider.model());
        let client = guard(global, provider)?;
        let report = llm::bench::run(&client, options, &progress).await?;
        let rss = rss_mib().zip(rss_before).map(|(after, before)| (after - before).max(0.0));
        rows.push((report, Some(load_ms), rss));
    }
    if let Some(peer) = &args.peer {
        eprintln!("measuring the peer at {peer}");
        let client = guard(global, Arc::new(openai(peer, &args.llm)?))?;
        let report = llm::bench::run(&client, options, &progress).await?;
        rows.push((report, None, None));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let models: Vec<serde_json::Value> = rows
            .iter()
            .map(|(report, load_ms, rss)| {
                let mut value = serde_json::to_value(report).unwrap_or_default();
                value["load_ms"] = serde_json::json!(load_ms);
                value["rss_mib"] = serde_json::json!(rss);
                value
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({"models": models}))?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<10} {:<28} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9}",
        "provider", "model", "prompt t/s", "gen t/s", "json gen t/s", "ttft ms", "json ok", "rss MiB"
    )?;
    for (report, _, rss) in &rows {
        writeln!(
            out,
            "{:<10} {:<28} {:>10.0} {:>10.1} {:>12.1} {:>9.0} {:>8.0}% {:>9}",
            report.provider,
            report.model,
            report.prompt_tokens_per_s,
            report.generation_tokens_per_s,
            report.constrained_tokens_per_s,
            report.time_to_first_token_ms,
            report.json_valid_rate * 100.0,
            rss.map_or_else(|| "-".into(), |r| format!("{r:.0}")),
        )?;
        for (shape, result) in &report.shapes {
            writeln!(out, "    {shape:<12} valid {}/{} (first try {})", result.valid, result.total, result.first_try)?;
        }
    }
    Ok(())
}
