//! The policy files of `configs/`: typed loading, validation with precise errors, JSON Schemas and the
//! seed defaults.
//!
//! Invariant: a file is accepted only whole. Any problem (syntax, duplicate key, unknown key, wrong
//! type, out-of-range value, bad URL) rejects it with errors naming the file, the key path and the
//! problem; callers keep their last good configuration.

pub mod agent;
pub mod breaker;
pub mod mcp;
pub mod retry;
pub mod routes;

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

pub use agent::AgentPolicy;
pub use breaker::BreakerFile;
pub use mcp::McpConfig;
pub use retry::RetryFile;
pub use routes::RoutePolicies;

/// Largest accepted config file, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The five policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFile {
    /// `mcp.json`.
    Mcp,
    /// `retry_policy.json`.
    Retry,
    /// `circuit_breaker.json`.
    Breaker,
    /// `route_policies.json`.
    Routes,
    /// `agent_policy.json`.
    Agent,
}

impl ConfigFile {
    /// Every file, in load order.
    pub const ALL: [ConfigFile; 5] = [Self::Mcp, Self::Retry, Self::Breaker, Self::Routes, Self::Agent];

    /// The file name inside the config directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Mcp => "mcp.json",
            Self::Retry => "retry_policy.json",
            Self::Breaker => "circuit_breaker.json",
            Self::Routes => "route_policies.json",
            Self::Agent => "agent_policy.json",
        }
    }

    /// The short name used on the command line (`cogo config schema mcp`).
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Mcp => "mcp",
            Self::Retry => "retry_policy",
            Self::Breaker => "circuit_breaker",
            Self::Routes => "route_policies",
            Self::Agent => "agent_policy",
        }
    }

    /// Finds a file by short name or file name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|file| file.short_name() == name || file.file_name() == name)
    }

    /// The shipped seed default of this file.
    pub fn seed(self) -> &'static str {
        match self {
            Self::Mcp => include_str!("../../../configs/mcp.json"),
            Self::Retry => include_str!("../../../configs/retry_policy.json"),
            Self::Breaker => include_str!("../../../configs/circuit_breaker.json"),
            Self::Routes => include_str!("../../../configs/route_policies.json"),
            Self::Agent => include_str!("../../../configs/agent_policy.json"),
        }
    }

    /// The JSON Schema (draft 2020-12) of this file.
    pub fn schema(self) -> serde_json::Value {
        let schema = match self {
            Self::Mcp => schemars::schema_for!(McpConfig),
            Self::Retry => schemars::schema_for!(RetryFile),
            Self::Breaker => schemars::schema_for!(BreakerFile),
            Self::Routes => schemars::schema_for!(RoutePolicies),
            Self::Agent => schemars::schema_for!(AgentPolicy),
        };
        schema.to_value()
    }

    /// Parses and validates `text` as this file, discarding the typed value.
    pub fn check(self, label: &str, text: &str) -> Result<(), Vec<ConfigError>> {
        match self {
            Self::Mcp => parse::<McpConfig>(label, text).map(drop),
            Self::Retry => parse::<RetryFile>(label, text).map(drop),
            Self::Breaker => parse::<BreakerFile>(label, text).map(drop),
            Self::Routes => parse::<RoutePolicies>(label, text).map(drop),
            Self::Agent => parse::<AgentPolicy>(label, text).map(drop),
        }
    }
}

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// Key path inside the file (`toolsets.figma.url`, `routes[2].method`); empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        let path = if self.path.is_empty() { "(top level)" } else { &self.path };
        write!(f, ": {path}: {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Semantic checks that types alone cannot express.
pub trait Validate {
    /// Appends every problem found; `path` is where this value sits.
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>);
}

/// A key path under construction: `a.b["c.d"][3]`.
#[derive(Debug, Clone, Default)]
pub struct KeyPath(String);

impl KeyPath {
    /// The top level.
    pub fn root() -> Self {
        Self::default()
    }

    /// A child object key; keys that are not plain identifiers are quoted.
    pub fn key(&self, key: &str) -> Self {
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut out = self.0.clone();
        if plain {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        } else {
            out.push_str(&format!("[{key:?}]"));
        }
        Self(out)
    }

    /// A child array index.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Records a problem at this path.
    pub fn problem(&self, problems: &mut Vec<(String, String)>, problem: impl Into<String>) {
        problems.push((self.0.clone(), problem.into()));
    }
}

/// Parses and validates one config file. `label` names the file in errors.
pub fn parse<T: DeserializeOwned + Validate>(label: &str, text: &str) -> Result<T, Vec<ConfigError>> {
    let error = |path: String, problem: String, line: Option<usize>, column: Option<usize>| ConfigError {
        file: label.to_owned(),
        path,
        problem,
        line,
        column,
    };
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![error(
            String::new(),
            format!("file is {} bytes; the limit is {MAX_CONFIG_BYTES}", text.len()),
            None,
            None,
        )]);
    }
    // 1. syntax and duplicate keys (serde would silently keep the last duplicate)
    let mut duplicates = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let scan = DuplicateScan { path: KeyPath::root(), found: &mut duplicates };
    if let Err(err) = scan.deserialize(&mut deserializer).and_then(|()| deserializer.end()) {
        return Err(vec![error(String::new(), strip_position(&err), nonzero(err.line()), nonzero(err.column()))]);
    }
    if !duplicates.is_empty() {
        return Err(duplicates.into_iter().map(|(path, problem)| error(path, problem, None, None)).collect());
    }
    // 2. types and unknown keys, with the path of the first problem
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(err) => {
            let path = format_path(err.path());
            let inner = err.into_inner();
            return Err(vec![error(path, strip_position(&inner), nonzero(inner.line()), nonzero(inner.column()))]);
        }
    };
    // 3. ranges, URLs, cross-field rules
    let mut problems = Vec::new();
    value.validate(&KeyPath::root(), &mut problems);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems.into_iter().map(|(path, problem)| error(path, problem, None, None)).collect())
    }
}

fn nonzero(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) if err.line() > 0 => text[..at].to_owned(),
        _ => text,
    }
}

fn format_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = KeyPath::root();
    for segment in path.iter() {
        out = match segment {
            Segment::Map { key } => out.key(key),
            Segment::Seq { index } => out.index(*index),
            Segment::Enum { variant } => out.key(variant),
            Segment::Unknown => out,
        };
    }
    out.0
}

/// Walks any JSON document and records keys that appear twice in one object.
struct DuplicateScan<'a> {
    path: KeyPath,
    found: &'a mut Vec<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for DuplicateScan<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateScan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq.next_element_seed(DuplicateScan { path: self.path.index(index), found: &mut *self.found })?.is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.path.key(&key);
            if !seen.insert(key.clone()) {
                self.found.push((path.0.clone(), format!("duplicate key {key:?}: each key may appear once")));
            }
            map.next_value_seed(DuplicateScan { path, found: &mut *self.found })?;
        }
        Ok(())
    }
}

/// Checks an integer setting against an inclusive range.
pub(crate) fn check_range<T: PartialOrd + fmt::Display + Copy>(
    path: &KeyPath,
    problems: &mut Vec<(String, String)>,
    value: Option<T>,
    min: T,
    max: T,
) {
    if let Some(value) = value
        && (value < min || value > max)
    {
        path.problem(problems, format!("{value} is out of range: must be between {min} and {max}"));
    }
}

/// Where one resolved field of a policy came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldSource {
    /// Field name.
    pub field: String,
    /// Its resolved value.
    pub value: serde_json::Value,
    /// The rule that set it (`default` or a key), or `built-in`.
    pub from: String,
}

/// Explains a resolution chain field by field: the first rule in the chain that sets a field wins;
/// fields no rule sets come from `builtin`.
pub fn explain_chain<'a, R: serde::Serialize + 'a>(
    chain: impl Iterator<Item = (&'a str, &'a R)>,
    builtin: &serde_json::Value,
) -> Vec<FieldSource> {
    let rules: Vec<(&str, serde_json::Value)> =
        chain.map(|(name, rule)| (name, serde_json::to_value(rule).unwrap_or_default())).collect();
    let Some(fields) = builtin.as_object() else { return Vec::new() };
    fields
        .iter()
        .map(|(field, fallback)| {
            let found = rules
                .iter()
                .find_map(|(name, rule)| rule.get(field).filter(|v| !v.is_null()).map(|v| (*name, v.clone())));
            let (from, value) = found.unwrap_or(("built-in", fallback.clone()));
            FieldSource { field: field.clone(), value, from: from.to_owned() }
        })
        .collect()
}

#[cfg(test)]
mod tests;
