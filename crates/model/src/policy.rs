//! Policy keys and their resolution: exact key, then wildcards from most to least specific, then
//! `default`.
//!
//! Invariant: a key is dot-separated segments of ASCII letters, digits, `_` and `-`; a wildcard is
//! `*` as the last segment and matches one or more further segments. Resolution is deterministic:
//! among wildcards, more literal segments win.

use std::collections::HashMap;

/// The rule name used for the fallback.
pub const DEFAULT_RULE: &str = "default";

/// The policy key of an MCP tool call: `mcp.call.<toolset>.<tool>`.
pub fn mcp_call_key(toolset: &str, tool: &str) -> String {
    format!("mcp.call.{toolset}.{tool}")
}

/// The breaker key of an MCP tool call on one instance: `mcp.call.<toolset>.<tool>.<instance>`.
pub fn mcp_breaker_key(toolset: &str, tool: &str, instance: u32) -> String {
    format!("mcp.call.{toolset}.{tool}.{instance}")
}

/// The policy key of an LLM call: `llm.call.<provider>`.
pub fn llm_call_key(provider: &str) -> String {
    format!("llm.call.{provider}")
}

/// Checks a rule key (wildcards allowed) and says what is wrong.
pub fn validate_rule_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("policy key must not be empty".into());
    }
    if key.len() > 256 {
        return Err(format!("policy key is {} bytes; at most 256", key.len()));
    }
    let segments: Vec<&str> = key.split('.').collect();
    for (index, segment) in segments.iter().enumerate() {
        if *segment == "*" {
            if index + 1 != segments.len() {
                return Err(format!("policy key {key:?}: '*' may only be the last segment"));
            }
            continue;
        }
        if segment.is_empty() {
            return Err(format!("policy key {key:?} has an empty segment"));
        }
        if let Some(bad) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
            return Err(format!("policy key {key:?} contains {bad:?}; segments use letters, digits, '_' and '-'"));
        }
    }
    Ok(())
}

/// Named rules compiled for lookup.
#[derive(Debug, Clone)]
pub struct RuleSet<R> {
    default: R,
    exact: HashMap<String, R>,
    /// `(prefix with trailing '.', literal segment count, name, rule)`, most specific first.
    wildcards: Vec<(String, usize, String, R)>,
}

impl<R> RuleSet<R> {
    /// Compiles rules; keys must have passed [`validate_rule_key`].
    pub fn new(default: R, rules: impl IntoIterator<Item = (String, R)>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (name, rule) in rules {
            if name == "*" {
                wildcards.push((String::new(), 0, name, rule));
            } else if let Some(prefix) = name.strip_suffix('*') {
                let literal = prefix.matches('.').count();
                wildcards.push((prefix.to_owned(), literal, name, rule));
            } else {
                exact.insert(name, rule);
            }
        }
        wildcards.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.2.cmp(&b.2)));
        Self { default, exact, wildcards }
    }

    /// The rules that apply to `key`, most specific first, ending with `default`.
    pub fn chain<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a R)> + 'a {
        let exact = self.exact.get_key_value(key).map(|(name, rule)| (name.as_str(), rule));
        let wildcards = self
            .wildcards
            .iter()
            .filter(move |(prefix, ..)| key.len() > prefix.len() && key.starts_with(prefix.as_str()))
            .map(|(_, _, name, rule)| (name.as_str(), rule));
        exact.into_iter().chain(wildcards).chain(std::iter::once((DEFAULT_RULE, &self.default)))
    }

    /// The most specific rule for `key`.
    pub fn most_specific<'a>(&'a self, key: &'a str) -> (&'a str, &'a R) {
        self.chain(key).next().unwrap_or((DEFAULT_RULE, &self.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(set: &'a RuleSet<u8>, key: &'a str) -> Vec<&'a str> {
        set.chain(key).map(|(name, _)| name).collect()
    }

    #[test]
    fn resolves_exact_then_wildcards_by_specificity_then_default() {
        let set = RuleSet::new(
            0u8,
            [
                ("mcp.call.*".to_owned(), 1),
                ("mcp.call.browser.*".to_owned(), 2),
                ("mcp.call.browser.browser_navigate".to_owned(), 3),
                ("*".to_owned(), 4),
            ],
        );
        assert_eq!(
            names(&set, "mcp.call.browser.browser_navigate"),
            ["mcp.call.browser.browser_navigate", "mcp.call.browser.*", "mcp.call.*", "*", "default"]
        );
        assert_eq!(names(&set, "mcp.call.figma.get_file"), ["mcp.call.*", "*", "default"]);
        assert_eq!(names(&set, "mcp.call.browser.get_title.0"), ["mcp.call.browser.*", "mcp.call.*", "*", "default"]);
        assert_eq!(names(&set, "llm.call.local"), ["*", "default"]);
        // a wildcard needs at least one more segment
        assert_eq!(names(&set, "mcp.call."), ["*", "default"]);
        assert_eq!(set.most_specific("mcp.call.browser.x"), ("mcp.call.browser.*", &2));
    }

    #[test]
    fn key_validation_names_the_problem() {
        assert!(validate_rule_key("mcp.call.browser.*").is_ok());
        assert!(validate_rule_key("mcp.call.browser.get_title.0").is_ok());
        for (key, problem) in
            [("", "empty"), ("mcp..x", "empty segment"), ("mcp.*.x", "last segment"), ("mcp.call/x", "contains '/'")]
        {
            let error = validate_rule_key(key).expect_err(key);
            assert!(error.contains(problem), "{key}: {error}");
        }
    }
}
