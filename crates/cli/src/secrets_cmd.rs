//! `cogo secrets set|list|rm`, and opening the secrets when a node starts.

use std::io::{Read, Write};

use anyhow::Context;

use crate::ExitWith;
use crate::args::{Global, SecretsCommand, TokensCommand};
use crate::settings::open_store;

/// The vault of this data dir / database.
pub async fn vault(global: &Global) -> anyhow::Result<secrets::Vault> {
    let key = secrets::MasterKey::load(&global.data_dir).map_err(|e| ExitWith(2, format!("error: {e}")))?;
    Ok(secrets::Vault::new(open_store(global).await?, key))
}

fn secret_error(err: secrets::Error) -> anyhow::Error {
    let code = match err {
        secrets::Error::Store(_) | secrets::Error::Io { .. } => 1,
        _ => 2,
    };
    ExitWith(code, format!("error: {err}")).into()
}

pub async fn run(global: &Global, command: SecretsCommand) -> anyhow::Result<()> {
    let vault = vault(global).await?;
    let mut out = std::io::stdout().lock();
    match command {
        SecretsCommand::Set { name } => {
            let mut value = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut value).context("reading the value from standard input")?;
            let trimmed = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            vault.set(&name, trimmed).await.map_err(secret_error)?;
            writeln!(out, "stored secret {name} (sealed with master key {})", vault.key().fingerprint())?;
        }
        SecretsCommand::List { json } => {
            for info in vault.list().await.map_err(secret_error)? {
                if json {
                    let line =
                        serde_json::json!({ "name": info.name, "key_id": info.key_id, "updated_at": info.updated_at });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{:<40} key {}  updated {}", info.name, info.key_id, info.updated_at.to_rfc3339())?;
                }
            }
        }
        SecretsCommand::Rm { name } => {
            if !vault.remove(&name).await.map_err(secret_error)? {
                return Err(ExitWith(1, format!("error: no secret named {name}")).into());
            }
            writeln!(out, "removed secret {name}")?;
        }
    }
    Ok(())
}

/// Every stored secret, opened (none when there are none: no key file is created then).
pub async fn open_all(
    global: &Global,
    store: &store::Store,
) -> anyhow::Result<Vec<(String, zeroize::Zeroizing<String>)>> {
    if store.secrets().await?.is_empty() {
        return Ok(Vec::new());
    }
    let key = secrets::MasterKey::load(&global.data_dir).map_err(|e| ExitWith(2, format!("error: {e}")))?;
    let opened = secrets::Vault::new(store.clone(), key).open_all().await.map_err(secret_error)?;
    tracing::info!(count = opened.len(), "secrets opened for the processes this node starts");
    Ok(opened)
}

/// The toolsets with the secrets added to the environment of every stdio server. Precedence: a
/// toolset's own `env` in mcp.json, then this process's environment (inherited by the child), then
/// the stored secrets.
pub fn with_secret_env(
    mut toolsets: std::collections::BTreeMap<String, model::config::mcp::Toolset>,
    opened: &[(String, zeroize::Zeroizing<String>)],
) -> std::collections::BTreeMap<String, model::config::mcp::Toolset> {
    for toolset in toolsets.values_mut().filter(|t| t.command.is_some()) {
        for (name, value) in opened {
            if std::env::var_os(name).is_none() && !toolset.env.contains_key(name) {
                toolset.env.insert(name.clone(), value.to_string());
            }
        }
    }
    toolsets
}

pub async fn tokens(global: &Global, command: TokensCommand) -> anyhow::Result<()> {
    let store = open_store(global).await?;
    let mut out = std::io::stdout().lock();
    match command {
        TokensCommand::Create { tenant: None, edge: true, roles, name } => {
            let known: Vec<&str> = crate::node::ROLES.iter().map(|r| r.role).collect();
            if let Some(unknown) = roles.iter().find(|r| !known.contains(&r.as_str())) {
                return Err(ExitWith(
                    2,
                    format!("error: unknown role {unknown:?}; an edge worker token may name: {}", known.join(", ")),
                )
                .into());
            }
            let (text, row) = secrets::tokens::generate_edge(&roles, &name, chrono::Utc::now());
            let id = row.id.clone();
            store.create_api_token(row).await?;
            writeln!(out, "{}", text.as_str())?;
            eprintln!(
                "edge worker token {id} for roles {}: shown once, keep it; revoke with `cogo tokens revoke {id}`",
                roles.join(",")
            );
        }
        TokensCommand::Create { tenant, name, .. } => {
            let tenant = tenant.unwrap_or_default();
            if !secrets::tokens::valid_tenant(&tenant) {
                return Err(ExitWith(
                    2,
                    format!("error: tenant {tenant:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'"),
                )
                .into());
            }
            let (text, row) = secrets::tokens::generate(&tenant, &name, chrono::Utc::now());
            let id = row.id.clone();
            store.create_api_token(row).await?;
            writeln!(out, "{}", text.as_str())?;
            eprintln!("token {id} for tenant {tenant}: shown once, keep it; revoke with `cogo tokens revoke {id}`");
        }
        TokensCommand::List { json } => {
            for token in store.api_tokens().await? {
                let state = if token.revoked_at.is_some() { "revoked" } else { "active" };
                if json {
                    let line = serde_json::json!({ "id": token.id, "tenant": token.tenant, "roles": token.roles, "name": token.name, "state": state, "created_at": token.created_at, "revoked_at": token.revoked_at });
                    writeln!(out, "{line}")?;
                } else {
                    let sees = match &token.roles {
                        Some(roles) => format!("edge:{}", roles.join(",")),
                        None => token.tenant.clone(),
                    };
                    writeln!(out, "{:<14} {:<20} {:<8} {}", token.id, sees, state, token.name)?;
                }
            }
        }
        TokensCommand::Revoke { id } => {
            if !store.revoke_api_token(&id).await? {
                return Err(ExitWith(1, format!("error: no active token {id}")).into());
            }
            writeln!(out, "revoked token {id}")?;
        }
    }
    Ok(())
}
