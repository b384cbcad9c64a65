//! Process settings: logging, the database URL, the store, and the policy files (loaded once, here).

use std::path::Path;

use anyhow::Context;
use model::config::{BreakerFile, ConfigError, ConfigFile, McpConfig, RetryFile, RoutePolicies, parse};

use crate::ExitWith;
use crate::args::{Global, LogFormat};

/// Sets up `tracing`: human or JSON lines on stderr, filtered by `--log`, else `RUST_LOG`, else
/// `info` (`warn` for sqlx and rmcp).
pub fn init_logging(global: &Global) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match &global.log {
        Some(filter) => EnvFilter::try_new(filter).with_context(|| format!("invalid --log filter {filter:?}"))?,
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rmcp=warn,llama-cpp-2=warn,llama_cpp_2=error")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Human => builder.compact().init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// The database URL: `--database-url`, else SQLite in the data dir.
pub fn database_url(global: &Global) -> String {
    match &global.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", global.data_dir.join("cogo.db").display()),
    }
}

/// Opens and migrates the store.
pub async fn open_store(global: &Global) -> anyhow::Result<store::Store> {
    let url = database_url(global);
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&global.data_dir)
            .with_context(|| format!("creating the data directory {}", global.data_dir.display()))?;
    }
    let store = store::Store::open(&url, store::StoreOptions::default())
        .await
        .with_context(|| format!("opening the database {}", store::redact_url(&url)))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Opens the artifact store (`--artifacts-url`, else the data directory) and checks it takes a
/// write, so a wrong bucket, endpoint or credential stops the process at start with the reason.
pub async fn open_artifacts(global: &Global, instance: &str) -> anyhow::Result<artifacts::Artifacts> {
    let artifacts = artifacts::Artifacts::open(global.artifacts_url.as_deref(), &global.data_dir)
        .map_err(|err| ExitWith(2, format!("error: {err}")))?;
    artifacts.probe(instance).await.map_err(|err| {
        ExitWith(
            2,
            format!(
                "error: {err}\n  check --artifacts-url (COGO_ARTIFACTS_URL) and, for S3, AWS_ENDPOINT_URL, AWS_REGION and the credentials"
            ),
        )
    })?;
    Ok(artifacts)
}

/// The artifact store for reading (no probe): commands that only show what is there.
pub fn artifacts_for_reading(global: &Global) -> anyhow::Result<artifacts::Artifacts> {
    Ok(artifacts::Artifacts::open(global.artifacts_url.as_deref(), &global.data_dir)
        .map_err(|err| ExitWith(2, format!("error: {err}")))?)
}

/// The five policy files, validated.
#[derive(Debug, Clone)]
pub struct Configs {
    /// mcp.json.
    pub mcp: McpConfig,
    /// retry_policy.json.
    pub retry: RetryFile,
    /// circuit_breaker.json.
    pub breaker: BreakerFile,
    /// route_policies.json.
    pub routes: RoutePolicies,
    /// agent_policy.json.
    pub agent: model::config::AgentPolicy,
    /// Files that were missing and came from the seed defaults.
    pub from_seed: Vec<ConfigFile>,
}

/// Reads one file of `dir`, or the seed default when the file does not exist.
pub fn read_config(dir: &Path, file: ConfigFile) -> Result<(String, String, bool), ConfigError> {
    let path = dir.join(file.file_name());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path.display().to_string(), text, false)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok((format!("{} (seed default)", file.file_name()), file.seed().to_owned(), true))
        }
        Err(err) => Err(ConfigError {
            file: path.display().to_string(),
            path: String::new(),
            problem: format!("cannot read: {err}"),
            line: None,
            column: None,
        }),
    }
}

/// Loads and validates every policy file; all problems of all files are reported together.
pub fn load_configs(dir: &Path) -> Result<Configs, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut from_seed = Vec::new();
    let mut load = |file: ConfigFile| -> Option<(String, String)> {
        match read_config(dir, file) {
            Ok((label, text, seeded)) => {
                if seeded {
                    from_seed.push(file);
                }
                Some((label, text))
            }
            Err(err) => {
                errors.push(err);
                None
            }
        }
    };
    let texts: Vec<Option<(String, String)>> = ConfigFile::ALL.iter().map(|f| load(*f)).collect();
    fn typed<T: serde::de::DeserializeOwned + model::config::Validate>(
        source: &Option<(String, String)>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let (label, text) = source.as_ref()?;
        parse::<T>(label, text).map_err(|e| errors.extend(e)).ok()
    }
    let mcp = typed::<McpConfig>(&texts[0], &mut errors);
    let retry = typed::<RetryFile>(&texts[1], &mut errors);
    let breaker = typed::<BreakerFile>(&texts[2], &mut errors);
    let routes = typed::<RoutePolicies>(&texts[3], &mut errors);
    let agent = typed::<model::config::AgentPolicy>(&texts[4], &mut errors);
    match (mcp, retry, breaker, routes, agent) {
        (Some(mcp), Some(retry), Some(breaker), Some(routes), Some(agent)) if errors.is_empty() => {
            Ok(Configs { mcp, retry, breaker, routes, agent, from_seed })
        }
        _ => Err(errors),
    }
}

/// Loads the configs or fails with exit code 2 and every problem listed.
pub fn load_configs_or_exit(dir: &Path) -> anyhow::Result<Configs> {
    load_configs(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::Error::new(ExitWith(
            2,
            format!("error: invalid configuration in {}:\n{}", dir.display(), lines.join("\n")),
        ))
    })
}
