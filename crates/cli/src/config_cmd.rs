//! `cogo config check|schema|reference` and `cogo policy explain`.

use std::io::Write;

use model::config::ConfigFile;

use crate::ExitWith;
use crate::args::{ConfigCommand, Global, PolicyCommand};
use crate::settings::{load_configs, read_config};

pub fn run(global: &Global, command: ConfigCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        ConfigCommand::Check { dir } => {
            let dir = dir.unwrap_or_else(|| global.config_dir.clone());
            if !dir.is_dir() {
                return Err(ExitWith(2, format!("error: {} is not a directory: pass the directory that holds mcp.json and the other policy files", dir.display())).into());
            }
            match load_configs(&dir) {
                Ok(configs) => {
                    for file in ConfigFile::ALL {
                        let origin =
                            if configs.from_seed.contains(&file) { "missing: the seed default applies" } else { "ok" };
                        writeln!(out, "{}: {origin}", dir.join(file.file_name()).display())?;
                    }
                    writeln!(
                        out,
                        "configuration is valid ({} toolsets, {} retry rules, {} breaker rules, {} routes)",
                        configs.mcp.toolsets.len(),
                        configs.retry.policies.len(),
                        configs.breaker.breakers.len(),
                        configs.routes.routes.len()
                    )?;
                    Ok(())
                }
                Err(errors) => {
                    let lines: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
                    Err(ExitWith(
                        2,
                        format!("{}\n{} problem(s) found; nothing was changed", lines.join("\n"), errors.len()),
                    )
                    .into())
                }
            }
        }
        ConfigCommand::Schema { file } => {
            let schema = match file {
                Some(name) => {
                    let file = ConfigFile::parse(&name).ok_or_else(|| {
                        ExitWith(2, format!("error: unknown config file {name:?}: use mcp, retry_policy, circuit_breaker or route_policies"))
                    })?;
                    file.schema()
                }
                None => serde_json::Value::Object(
                    ConfigFile::ALL.iter().map(|f| (f.file_name().to_owned(), f.schema())).collect(),
                ),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&schema)?)?;
            Ok(())
        }
        ConfigCommand::Reference => {
            write!(out, "{}", crate::reference::markdown())?;
            Ok(())
        }
    }
}

pub fn policy(global: &Global, command: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Explain { key } = command;
    if let Err(problem) = model::policy::validate_rule_key(&key) {
        return Err(ExitWith(2, format!("error: {problem}")).into());
    }
    let mut texts = Vec::new();
    for file in [ConfigFile::Retry, ConfigFile::Breaker] {
        let (label, text, _) = read_config(&global.config_dir, file).map_err(|e| ExitWith(2, format!("error: {e}")))?;
        texts.push((label, text));
    }
    let retry = model::config::parse::<model::config::RetryFile>(&texts[0].0, &texts[0].1)
        .map_err(|e| ExitWith(2, e.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n")))?;
    let breaker = model::config::parse::<model::config::BreakerFile>(&texts[1].0, &texts[1].1)
        .map_err(|e| ExitWith(2, e.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n")))?;
    let policies = resilience::Policies::new(&retry, &breaker);
    let mut out = std::io::stdout().lock();
    writeln!(out, "key: {key}")?;
    for (title, label, (chain, fields)) in [
        ("retry", &texts[0].0, policies.explain_retry(&key)),
        ("circuit breaker", &texts[1].0, policies.explain_breaker(&key)),
    ] {
        writeln!(out, "\n{title} ({label})")?;
        writeln!(out, "  rules that match, most specific first: {}", chain.join(" → "))?;
        for field in fields {
            writeln!(out, "  {:<24} {:<40} from {}", field.field, field.value.to_string(), field.from)?;
        }
    }
    Ok(())
}
