//! `configs/retry_policy.json`: retry rules by policy key.
//!
//! Invariant: a field missing from a rule is inherited from the next less specific matching rule,
//! ending at `default` and then the built-in defaults, so every key resolves to a complete policy.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPath, Validate, check_range};
use crate::message::ErrorKind;
use crate::policy::{RuleSet, validate_rule_key};
use crate::retry::{ErrorKinds, Jitter, RetryPolicy};

/// `configs/retry_policy.json`: how calls and bus messages are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// The fallback rule for keys no other rule matches.
    #[serde(default)]
    pub default: RetryRule,
    /// Rules by policy key: exact keys (`mcp.call.browser.browser_navigate`) or wildcards ending in
    /// `*` (`mcp.call.browser.*`). The most specific match wins field by field.
    #[serde(default)]
    pub policies: BTreeMap<String, RetryRule>,
}

/// A retry rule; absent fields are inherited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Attempts in all, the first included (1 to 100; 1 = never retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry in ms, before jitter (0 to 3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay_ms: Option<u64>,
    /// Growth of the delay per attempt (1.0 to 10.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Upper bound of any delay in ms (1 to 86400000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Random spread: `none`, `full` (uniform in [0, delay]) or `equal` (uniform in [delay/2, delay]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// Error kinds that are retried: `transport`, `timeout`, `rate_limited`, `protocol`, `tool_error`,
    /// `invalid_input`, `internal`, `lease_expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<ErrorKind>>,
    /// Give up when the next attempt would start later than this many ms after the first (0 = no
    /// deadline; at most 86400000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Time limit of one attempt in ms (1 to 3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl RetryRule {
    /// The built-in defaults, written as a complete rule.
    pub fn builtin() -> Self {
        let p = RetryPolicy::default();
        Self {
            max_attempts: Some(p.max_attempts),
            base_delay_ms: Some(p.base_delay.as_millis() as u64),
            factor: Some(p.factor),
            max_delay_ms: Some(p.max_delay.as_millis() as u64),
            jitter: Some(p.jitter),
            retry_on: Some(p.retry_on.iter().collect()),
            deadline_ms: Some(p.deadline.map_or(0, |d| d.as_millis() as u64)),
            timeout_ms: Some(p.timeout.as_millis() as u64),
        }
    }

    fn fill_from(&mut self, other: &RetryRule) {
        fn take<T: Clone>(slot: &mut Option<T>, other: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(other);
            }
        }
        take(&mut self.max_attempts, &other.max_attempts);
        take(&mut self.base_delay_ms, &other.base_delay_ms);
        take(&mut self.factor, &other.factor);
        take(&mut self.max_delay_ms, &other.max_delay_ms);
        take(&mut self.jitter, &other.jitter);
        take(&mut self.retry_on, &other.retry_on);
        take(&mut self.deadline_ms, &other.deadline_ms);
        take(&mut self.timeout_ms, &other.timeout_ms);
    }

    fn into_policy(self) -> RetryPolicy {
        let builtin = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(builtin.max_attempts),
            base_delay: self.base_delay_ms.map_or(builtin.base_delay, Duration::from_millis),
            factor: self.factor.unwrap_or(builtin.factor),
            max_delay: self.max_delay_ms.map_or(builtin.max_delay, Duration::from_millis),
            jitter: self.jitter.unwrap_or(builtin.jitter),
            retry_on: self.retry_on.map_or(builtin.retry_on, |kinds| ErrorKinds::of(&kinds)),
            deadline: match self.deadline_ms {
                None => builtin.deadline,
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            },
            timeout: self.timeout_ms.map_or(builtin.timeout, Duration::from_millis),
        }
    }
}

/// Retry rules compiled for lookup.
#[derive(Debug, Clone)]
pub struct RetryRules(RuleSet<RetryRule>);

impl RetryFile {
    /// Compiles the rules for lookup.
    pub fn compile(&self) -> RetryRules {
        RetryRules(RuleSet::new(self.default.clone(), self.policies.clone()))
    }
}

impl RetryRules {
    /// The complete policy for `key`.
    pub fn resolve(&self, key: &str) -> RetryPolicy {
        let mut merged = RetryRule::default();
        for (_, rule) in self.0.chain(key) {
            merged.fill_from(rule);
        }
        merged.into_policy()
    }

    /// Which rule supplies each field for `key`.
    pub fn explain(&self, key: &str) -> Vec<super::FieldSource> {
        let builtin = serde_json::to_value(RetryRule::builtin()).unwrap_or_default();
        super::explain_chain(self.0.chain(key), &builtin)
    }

    /// The rules that apply to `key`, most specific first.
    pub fn chain<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a RetryRule)> + 'a {
        self.0.chain(key)
    }
}

impl Validate for RetryFile {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        self.default.validate(&path.key("default"), problems);
        let policies = path.key("policies");
        for (key, rule) in &self.policies {
            let here = policies.key(key);
            if let Err(problem) = validate_rule_key(key) {
                here.problem(problems, problem);
            }
            rule.validate(&here, problems);
        }
    }
}

impl Validate for RetryRule {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        check_range(&path.key("max_attempts"), problems, self.max_attempts, 1, 100);
        check_range(&path.key("base_delay_ms"), problems, self.base_delay_ms, 0, 3_600_000);
        check_range(&path.key("max_delay_ms"), problems, self.max_delay_ms, 1, 86_400_000);
        check_range(&path.key("deadline_ms"), problems, self.deadline_ms, 0, 86_400_000);
        check_range(&path.key("timeout_ms"), problems, self.timeout_ms, 1, 3_600_000);
        if let Some(factor) = self.factor
            && !(1.0..=10.0).contains(&factor)
        {
            path.key("factor").problem(problems, format!("{factor} is out of range: must be between 1 and 10"));
        }
        if let (Some(base), Some(max)) = (self.base_delay_ms, self.max_delay_ms)
            && base > max
        {
            path.key("max_delay_ms").problem(problems, format!("{max} is smaller than base_delay_ms {base}"));
        }
    }
}
