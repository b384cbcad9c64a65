//! The configuration reference (`docs/REFERENCE.md`), generated from the command line definition
//! and the JSON Schemas of the policy files, so it cannot drift from the code.

use std::collections::BTreeMap;
use std::fmt::Write;

use clap::CommandFactory;
use serde_json::Value;

use model::config::ConfigFile;

/// The whole reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("# COGO configuration reference\n\n");
    out.push_str("Generated from the code by `cogo config reference`; a test fails when this file is out of date.\n");
    out.push_str("Precedence: defaults < policy files < `COGO_*` environment variables < command-line flags.\n\n");
    out.push_str(
        "## Environment variables\n\n| variable | flag | used by | default | meaning |\n|---|---|---|---|---|\n",
    );
    let mut vars: BTreeMap<String, (String, Vec<String>, String, String)> = BTreeMap::new();
    collect_env(&crate::args::Cli::command(), "cogo", &mut vars);
    for (env, (flag, commands, default, help)) in &vars {
        let used_by =
            if commands.len() > 6 || commands == &["cogo"] { "all commands".to_owned() } else { commands.join(", ") };
        let _ = writeln!(
            out,
            "| `{env}` | `--{flag}` | {used_by} | {default} | {} |",
            help.replace('|', "\\|").replace('\n', " ")
        );
    }
    out.push_str("\n`RUST_LOG` sets the log filter when `COGO_LOG` is unset.\n");
    out.push_str(
        "\nRead from the environment only (no flag):\n\n| variable | used by | meaning |\n|---|---|---|\n\
         | `COGO_MASTER_KEY` | every command that opens secrets | 64 hex digits: the key secrets are sealed with; unset, `DATA_DIR/master.key` (mode 0600) is used or created |\n\
         | `COGO_CHROMIUM` | the example browser server | the Chromium binary (default `/usr/bin/chromium`) |\n\
         | `SSL_CERT_FILE`, `SSL_CERT_DIR` | outbound HTTPS (LLM, embeddings, streamable-HTTP MCP) | extra CA certificates besides the system's roots |\n",
    );
    for file in ConfigFile::ALL {
        let schema = file.schema();
        let _ = writeln!(out, "\n## `configs/{}`\n", file.file_name());
        if let Some(description) = schema.get("description").and_then(Value::as_str) {
            let _ = writeln!(out, "{}\n", description.replace('\n', " "));
        }
        let _ = writeln!(out, "Schema: `cogo config schema {}`.\n", file.short_name());
        out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
        let mut rows = Vec::new();
        walk(&schema, "", &defs, &mut rows, 0);
        for (path, kind, default, description) in rows {
            let _ = writeln!(
                out,
                "| `{path}` | {kind} | {default} | {} |",
                description.replace('|', "\\|").replace('\n', " ")
            );
        }
    }
    out
}

fn collect_env(
    command: &clap::Command,
    name: &str,
    vars: &mut BTreeMap<String, (String, Vec<String>, String, String)>,
) {
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
        let flag = arg.get_long().unwrap_or(arg.get_id().as_str()).to_owned();
        let default = arg.get_default_values().iter().filter_map(|v| v.to_str()).collect::<Vec<_>>().join(",");
        let default = if default.is_empty() { "—".to_owned() } else { format!("`{default}`") };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let entry = vars.entry(env.to_owned()).or_insert_with(|| (flag, Vec::new(), default, help));
        if !entry.1.contains(&name.to_owned()) {
            entry.1.push(name.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_env(sub, &format!("{name} {}", sub.get_name()), vars);
    }
}

fn resolve<'a>(node: &'a Value, defs: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name).unwrap_or(node),
        None => node,
    }
}

fn type_name(node: &Value, defs: &Value) -> String {
    if let Some(options) = node.get("anyOf").or_else(|| node.get("oneOf")).and_then(Value::as_array) {
        let names: Vec<String> = options.iter().map(|o| type_name(o, defs)).filter(|n| n != "null").collect();
        return names.join(" or ");
    }
    let node = resolve(node, defs);
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ");
    }
    if let Some(options) = node.get("oneOf").and_then(Value::as_array) {
        let values: Vec<String> =
            options.iter().filter_map(|o| o.get("const").and_then(Value::as_str)).map(|v| format!("`{v}`")).collect();
        if !values.is_empty() {
            return values.join(", ");
        }
    }
    match node.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("array of {}", node.get("items").map(|i| type_name(i, defs)).unwrap_or_default())
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => {
            types.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect::<Vec<_>>().join(" or ")
        }
        _ => "object".to_owned(),
    }
}

fn walk(node: &Value, path: &str, defs: &Value, rows: &mut Vec<(String, String, String, String)>, depth: usize) {
    if depth > 8 {
        return;
    }
    let node = match node.get("anyOf").and_then(Value::as_array) {
        Some(options) => options
            .iter()
            .find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
            .map_or(node, |o| resolve(o, defs)),
        None => resolve(node, defs),
    };
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (key, child) in properties {
            let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            let resolved = resolve(child, defs);
            let description = child
                .get("description")
                .or_else(|| resolved.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let default = child.get("default").map_or("—".to_owned(), |d| format!("`{d}`"));
            rows.push((child_path.clone(), type_name(child, defs), default, description.to_owned()));
            walk(child, &child_path, defs, rows, depth + 1);
        }
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        let placeholder = match path.rsplit('.').next() {
            Some("toolsets") => "<toolset>",
            Some("tools") => "<tool>",
            Some("policies") | Some("breakers") => "<key>",
            _ => "<name>",
        };
        walk(extra, &format!("{path}.{placeholder}"), defs, rows, depth + 1);
    }
    if let Some(items) = node.get("items").filter(|v| v.is_object()) {
        walk(items, &format!("{path}[]"), defs, rows, depth + 1);
    }
}
