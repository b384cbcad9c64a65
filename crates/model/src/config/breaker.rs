//! `configs/circuit_breaker.json`: breaker rules by key (policy key plus instance).
//!
//! Invariant: like retry rules, absent fields are inherited along the resolution chain, so every key
//! resolves to a complete, valid breaker configuration.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPath, Validate, check_range};
use crate::breaker::BreakerConfig;
use crate::message::ErrorKind;
use crate::policy::{RuleSet, validate_rule_key};
use crate::retry::ErrorKinds;

/// `configs/circuit_breaker.json`: when calls to a failing upstream are stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// The fallback rule.
    #[serde(default)]
    pub default: BreakerRule,
    /// Rules by breaker key (`mcp.call.browser.get_title.0`) or wildcard (`mcp.call.browser.*`).
    #[serde(default)]
    pub breakers: BTreeMap<String, BreakerRule>,
}

/// A breaker rule; absent fields are inherited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerRule {
    /// Open when failures / requests in the window reach this fraction (greater than 0, at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<f64>,
    /// The rate counts only once the window holds this many calls (1 to 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// The window keeps at most this many most recent calls (1 to 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_size: Option<u32>,
    /// The window forgets calls older than this, in ms (1 to 86400000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// How long the breaker stays open before it lets probes through, in ms (1 to 86400000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ms: Option<u64>,
    /// Probe calls let through while half-open; that many successes close it (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Error kinds that count as failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kinds: Option<Vec<ErrorKind>>,
}

impl BreakerRule {
    /// The built-in defaults, written as a complete rule.
    pub fn builtin() -> Self {
        let c = BreakerConfig::default();
        Self {
            failure_rate_threshold: Some(c.failure_rate_threshold),
            min_requests: Some(c.min_requests),
            window_size: Some(c.window_size),
            window_ms: Some(c.window_ms),
            open_ms: Some(c.open_ms),
            half_open_probes: Some(c.half_open_probes),
            failure_kinds: Some(c.failure_kinds.iter().collect()),
        }
    }

    fn fill_from(&mut self, other: &BreakerRule) {
        fn take<T: Clone>(slot: &mut Option<T>, other: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(other);
            }
        }
        take(&mut self.failure_rate_threshold, &other.failure_rate_threshold);
        take(&mut self.min_requests, &other.min_requests);
        take(&mut self.window_size, &other.window_size);
        take(&mut self.window_ms, &other.window_ms);
        take(&mut self.open_ms, &other.open_ms);
        take(&mut self.half_open_probes, &other.half_open_probes);
        take(&mut self.failure_kinds, &other.failure_kinds);
    }

    fn into_config(self) -> BreakerConfig {
        let builtin = BreakerConfig::default();
        BreakerConfig {
            failure_rate_threshold: self.failure_rate_threshold.unwrap_or(builtin.failure_rate_threshold),
            min_requests: self.min_requests.unwrap_or(builtin.min_requests),
            window_size: self.window_size.unwrap_or(builtin.window_size),
            window_ms: self.window_ms.unwrap_or(builtin.window_ms),
            open_ms: self.open_ms.unwrap_or(builtin.open_ms),
            half_open_probes: self.half_open_probes.unwrap_or(builtin.half_open_probes),
            failure_kinds: self.failure_kinds.map_or(builtin.failure_kinds, |kinds| ErrorKinds::of(&kinds)),
        }
    }
}

/// Breaker rules compiled for lookup.
#[derive(Debug, Clone)]
pub struct BreakerRules(RuleSet<BreakerRule>);

impl BreakerFile {
    /// Compiles the rules for lookup.
    pub fn compile(&self) -> BreakerRules {
        BreakerRules(RuleSet::new(self.default.clone(), self.breakers.clone()))
    }
}

impl BreakerRules {
    /// The complete configuration for `key`.
    pub fn resolve(&self, key: &str) -> BreakerConfig {
        let mut merged = BreakerRule::default();
        for (_, rule) in self.0.chain(key) {
            merged.fill_from(rule);
        }
        merged.into_config()
    }

    /// Which rule supplies each field for `key`.
    pub fn explain(&self, key: &str) -> Vec<super::FieldSource> {
        let builtin = serde_json::to_value(BreakerRule::builtin()).unwrap_or_default();
        super::explain_chain(self.0.chain(key), &builtin)
    }

    /// The rules that apply to `key`, most specific first.
    pub fn chain<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a BreakerRule)> + 'a {
        self.0.chain(key)
    }
}

impl Validate for BreakerFile {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        self.default.validate(&path.key("default"), problems);
        let breakers = path.key("breakers");
        for (key, rule) in &self.breakers {
            let here = breakers.key(key);
            if let Err(problem) = validate_rule_key(key) {
                here.problem(problems, problem);
            }
            rule.validate(&here, problems);
        }
    }
}

impl Validate for BreakerRule {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        if let Some(rate) = self.failure_rate_threshold
            && !(rate > 0.0 && rate <= 1.0)
        {
            path.key("failure_rate_threshold")
                .problem(problems, format!("{rate} is out of range: must be greater than 0 and at most 1"));
        }
        check_range(&path.key("min_requests"), problems, self.min_requests, 1, 10_000);
        check_range(&path.key("window_size"), problems, self.window_size, 1, 10_000);
        check_range(&path.key("window_ms"), problems, self.window_ms, 1, 86_400_000);
        check_range(&path.key("open_ms"), problems, self.open_ms, 1, 86_400_000);
        check_range(&path.key("half_open_probes"), problems, self.half_open_probes, 1, 100);
        if let (Some(min), Some(size)) = (self.min_requests, self.window_size)
            && min > size
        {
            path.key("min_requests")
                .problem(problems, format!("{min} is larger than window_size {size}: the breaker could never open"));
        }
        if self.failure_kinds.as_ref().is_some_and(Vec::is_empty) {
            path.key("failure_kinds").problem(problems, "is empty: the breaker could never open");
        }
    }
}
