//! `configs/agent_policy.json`: what the orchestrator and the worker roles may do — the default
//! budget of a goal, the tools that need an operator's approval or are never offered, how results
//! are judged, the commands the `execution` role may run and the checkers `codegen` uses.
//!
//! Invariant: deny by default. A tool matching `deny` is never offered; a command not listed is
//! never run; commands run without a shell, from an absolute path, with a timeout.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPath, Validate, check_range};

/// `configs/agent_policy.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// The budget of a goal that names none.
    #[serde(default)]
    pub budget: Budget,
    /// Tool patterns (`toolset.tool`, `toolset.*`, or a role's tool such as `execute`) that pause
    /// the goal until an operator approves the call.
    #[serde(default)]
    pub approval: Vec<String>,
    /// Tool patterns never offered to the planner.
    #[serde(default)]
    pub deny: Vec<String>,
    /// How a step's result is judged.
    #[serde(default)]
    pub judge: JudgeMode,
    /// Commands the `execution` role may run, by name.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandRule>,
    /// Checkers the `codegen` role runs on generated code, by language.
    #[serde(default)]
    pub codegen: BTreeMap<String, Checker>,
}

/// Limits on one goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Most steps dispatched over all plans (1–100).
    pub max_steps: u32,
    /// Most replans after a failed step (0–10).
    pub max_replans: u32,
    /// Most wall-clock seconds from the goal's first run (1–86400).
    pub max_seconds: u64,
    /// Most model tokens, prompt and completion (100–10,000,000).
    pub max_tokens: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self { max_steps: 12, max_replans: 2, max_seconds: 600, max_tokens: 60_000 }
    }
}

impl Budget {
    /// Checks the ranges; problems are recorded under `path`.
    pub fn check(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        check_range(&path.key("max_steps"), problems, Some(self.max_steps), 1, 100);
        check_range(&path.key("max_replans"), problems, Some(self.max_replans), 0, 10);
        check_range(&path.key("max_seconds"), problems, Some(self.max_seconds), 1, 86_400);
        check_range(&path.key("max_tokens"), problems, Some(self.max_tokens), 100, 10_000_000);
    }
}

/// How a step's result is judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMode {
    /// A step passes when its call succeeded and its criteria checks pass; the model's verdict is
    /// recorded beside them but does not decide (for small models, whose verdicts are noisy).
    #[default]
    Advisory,
    /// The model's verdict must also say the criteria are met.
    Required,
}

/// One allowed command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRule {
    /// Absolute path of the program (no lookup in `PATH`, no shell).
    pub path: String,
    /// Arguments always passed first.
    #[serde(default)]
    pub fixed_args: Vec<String>,
    /// Most arguments a call may add (0–64).
    #[serde(default = "default_max_args")]
    pub max_args: usize,
    /// Kill the command after this many milliseconds (1–600000).
    #[serde(default = "default_command_timeout")]
    pub timeout_ms: u64,
    /// What the command is for (shown to the planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_max_args() -> usize {
    8
}

fn default_command_timeout() -> u64 {
    10_000
}

/// A checker for generated code: a program that gets the file's path as its last argument and
/// exits 0 when the code is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checker {
    /// Absolute path of the program.
    pub path: String,
    /// Arguments before the file's path.
    #[serde(default)]
    pub args: Vec<String>,
    /// The source file's extension (`py`, `rs`).
    pub extension: String,
    /// Kill the checker after this many milliseconds (1–600000).
    #[serde(default = "default_command_timeout")]
    pub timeout_ms: u64,
}

/// Whether `tool` (`toolset.tool` or a role tool name) matches `pattern` (exact, `prefix*`, or `*`).
pub fn tool_matches(pattern: &str, tool: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => tool.starts_with(prefix),
        None => pattern == tool,
    }
}

impl AgentPolicy {
    /// Whether `tool` needs an operator's approval.
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.approval.iter().any(|p| tool_matches(p, tool))
    }

    /// Whether `tool` is never offered.
    pub fn denies(&self, tool: &str) -> bool {
        self.deny.iter().any(|p| tool_matches(p, tool))
    }
}

fn check_program(path: &KeyPath, problems: &mut Vec<(String, String)>, program: &str) {
    if !program.starts_with('/') {
        path.problem(problems, format!("{program:?} must be an absolute path (no PATH lookup, no shell)"));
    }
}

fn check_pattern(path: &KeyPath, problems: &mut Vec<(String, String)>, pattern: &str) {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if pattern.is_empty()
        || body.contains('*')
        || !body.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        path.problem(
            problems,
            format!("{pattern:?} is not a tool pattern: use toolset.tool, toolset.* or a role tool such as execute"),
        );
    }
}

impl Validate for AgentPolicy {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        self.budget.check(&path.key("budget"), problems);
        for (index, pattern) in self.approval.iter().enumerate() {
            check_pattern(&path.key("approval").index(index), problems, pattern);
        }
        for (index, pattern) in self.deny.iter().enumerate() {
            check_pattern(&path.key("deny").index(index), problems, pattern);
        }
        for (name, rule) in &self.commands {
            let here = path.key("commands").key(name);
            if crate::message::validate_name(name, false).is_err() {
                here.problem(problems, "a command name is ASCII letters, digits, '-', '_' and '.'");
            }
            check_program(&here.key("path"), problems, &rule.path);
            check_range(&here.key("max_args"), problems, Some(rule.max_args), 0, 64);
            check_range(&here.key("timeout_ms"), problems, Some(rule.timeout_ms), 1, 600_000);
        }
        for (language, checker) in &self.codegen {
            let here = path.key("codegen").key(language);
            check_program(&here.key("path"), problems, &checker.path);
            check_range(&here.key("timeout_ms"), problems, Some(checker.timeout_ms), 1, 600_000);
            if checker.extension.is_empty() || !checker.extension.chars().all(|c| c.is_ascii_alphanumeric()) {
                here.key("extension").problem(problems, format!("{:?} is not a file extension", checker.extension));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, parse};

    #[test]
    fn the_seed_parses_and_matches_patterns() {
        let policy: AgentPolicy = parse("agent_policy.json", ConfigFile::Agent.seed()).expect("seed");
        assert!(policy.commands.values().all(|c| c.path.starts_with('/')));
        assert!(tool_matches("figma.*", "figma.get_figma_data"));
        assert!(!tool_matches("figma.*", "browser.browser_navigate"));
        assert!(tool_matches("execute", "execute") && !tool_matches("execute", "executes"));
    }

    #[test]
    fn problems_name_the_key() {
        let cases = [
            (r#"{"budget": {"max_steps": 0}}"#, "budget.max_steps", "out of range"),
            (r#"{"commands": {"ls": {"path": "ls"}}}"#, "commands.ls.path", "absolute path"),
            (r#"{"approval": ["a*b"]}"#, "approval[0]", "not a tool pattern"),
            (r#"{"judge": "maybe"}"#, "judge", "unknown variant"),
            (
                r#"{"codegen": {"python": {"path": "/usr/bin/python3", "extension": "p/y"}}}"#,
                "codegen.python.extension",
                "not a file extension",
            ),
        ];
        for (text, path, problem) in cases {
            let errors = parse::<AgentPolicy>("agent_policy.json", text).expect_err(text);
            assert!(errors.iter().any(|e| e.path == path && e.problem.contains(problem)), "{text}: {errors:?}");
        }
    }
}
