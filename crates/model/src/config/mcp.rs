//! `configs/mcp.json`: the MCP toolsets and how to reach each (WebSocket, streamable HTTP or stdio).
//!
//! Invariant: a valid toolset has exactly one of `url` and `command`; its name is a safe path and
//! policy-key segment.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPath, Validate, check_range};

/// URLs of toolsets.
pub use url::Url;

/// The text that replaces secret values in anything shown or written.
pub const REDACTED: &str = "***";

/// `configs/mcp.json`: the MCP toolsets COGO connects to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Toolsets by name. The name appears in policy keys (`mcp.call.<toolset>.<tool>`) and artifact
    /// paths, so it uses letters, digits, `_` and `-` only.
    pub toolsets: BTreeMap<String, Toolset>,
}

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toolset {
    /// Endpoint: `ws://`/`wss://` for WebSocket (subprotocol `mcp`), `http://`/`https://` for
    /// streamable HTTP. Exactly one of `url` and `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Program to start as a stdio MCP server (no shell is involved). Exactly one of `url` and `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments of `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment of `command` (values are secrets: redacted when shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Extra HTTP headers for `url` (values are secrets: redacted when shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Time limit of one call, in ms (1 to 600000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Optional channel name passed to servers that multiplex (e.g. a Figma plugin channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Per-tool settings by tool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolSettings>,
    /// Whether COGO connects to this toolset.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Settings of one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    /// Time limit of one call of this tool, in ms (1 to 600000); overrides the toolset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_true() -> bool {
    true
}

/// How to reach a toolset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket with subprotocol `mcp`.
    WebSocket(url::Url),
    /// Streamable HTTP.
    Http(url::Url),
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
    },
}

impl Transport {
    /// `websocket`, `http` or `stdio`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::WebSocket(_) => "websocket",
            Self::Http(_) => "http",
            Self::Stdio { .. } => "stdio",
        }
    }
}

impl Toolset {
    /// The transport; `None` only for a toolset that failed validation.
    pub fn transport(&self) -> Option<Transport> {
        match (&self.url, &self.command) {
            (Some(url), None) => {
                let url = url::Url::parse(url).ok()?;
                match url.scheme() {
                    "ws" | "wss" => Some(Transport::WebSocket(url)),
                    "http" | "https" => Some(Transport::Http(url)),
                    _ => None,
                }
            }
            (None, Some(command)) => Some(Transport::Stdio { command: command.clone(), args: self.args.clone() }),
            _ => None,
        }
    }

    /// A toolset reached at `url` (`ws://…`, `http://…`) with a call time limit.
    pub fn at_url(url: impl Into<String>, timeout_ms: u64) -> Self {
        Self {
            url: Some(url.into()),
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            headers: BTreeMap::new(),
            timeout_ms,
            channel: None,
            tools: BTreeMap::new(),
            enabled: true,
        }
    }

    /// The time limit of one call of `tool`, in ms.
    pub fn timeout_ms_for(&self, tool: &str) -> u64 {
        self.tools.get(tool).and_then(|settings| settings.timeout_ms).unwrap_or(self.timeout_ms)
    }
}

impl McpConfig {
    /// A copy safe to show: env and header values and URL credentials replaced by `***`.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for toolset in copy.toolsets.values_mut() {
            toolset.env.values_mut().for_each(|value| *value = REDACTED.to_owned());
            toolset.headers.values_mut().for_each(|value| *value = REDACTED.to_owned());
            if let Some(url) = toolset.url.as_mut().and_then(|raw| url::Url::parse(raw).ok().map(|u| (raw, u))) {
                let (raw, mut parsed) = url;
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some(REDACTED));
                }
                if !parsed.username().is_empty() {
                    let _ = parsed.set_username(REDACTED);
                }
                if parsed.query().is_some() {
                    parsed.set_query(Some(REDACTED));
                }
                *raw = parsed.to_string();
            }
        }
        copy
    }
}

impl Validate for McpConfig {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        let toolsets = path.key("toolsets");
        for (name, toolset) in &self.toolsets {
            let here = toolsets.key(name);
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                here.problem(
                    problems,
                    format!("toolset name {name:?} is not allowed: use 1 to 64 letters, digits, '_' or '-'"),
                );
            }
            toolset.validate(&here, problems);
        }
    }
}

impl Validate for Toolset {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        match (&self.url, &self.command) {
            (Some(_), Some(_)) => path.problem(problems, "has both `url` and `command`: give exactly one"),
            (None, None) => path.problem(problems, "has neither `url` nor `command`: give exactly one"),
            (Some(raw), None) => {
                let here = path.key("url");
                match url::Url::parse(raw) {
                    Err(err) => here.problem(problems, format!("{raw:?} is not a valid URL: {err}")),
                    Ok(url) if !matches!(url.scheme(), "ws" | "wss" | "http" | "https") => here.problem(
                        problems,
                        format!(
                            "{raw:?} has scheme {:?}; use ws, wss (WebSocket), http or https (streamable HTTP)",
                            url.scheme()
                        ),
                    ),
                    Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                        here.problem(problems, format!("{raw:?} has no host"))
                    }
                    Ok(_) => {}
                }
                if !self.args.is_empty() {
                    path.key("args").problem(problems, "is only for `command` (stdio) toolsets");
                }
                if !self.env.is_empty() {
                    path.key("env").problem(problems, "is only for `command` (stdio) toolsets");
                }
            }
            (None, Some(command)) => {
                if command.trim().is_empty() {
                    path.key("command").problem(problems, "must not be empty");
                }
                if !self.headers.is_empty() {
                    path.key("headers").problem(problems, "is only for `url` toolsets");
                }
            }
        }
        check_range(&path.key("timeout_ms"), problems, Some(self.timeout_ms), 1, 600_000);
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                path.key("env").key(key).problem(problems, "is not a valid environment variable name");
            }
        }
        for (tool, settings) in &self.tools {
            let here = path.key("tools").key(tool);
            if tool.is_empty() || tool.len() > 128 {
                here.problem(problems, "tool name must be 1 to 128 bytes");
            }
            check_range(&here.key("timeout_ms"), problems, settings.timeout_ms, 1, 600_000);
        }
    }
}
