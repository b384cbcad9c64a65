//! The policy files of `configs/` (mcp.json, retry_policy.json, circuit_breaker.json,
//! route_policies.json, agent_policy.json) as `model::config::parse` reads them.
//!
//! Properties: a parse returns a value or errors that name the file; a parsed value written back as
//! JSON parses again to the same value; a parsed policy resolves every key to a schedule whose
//! delays stay under its cap and within its deadline.
#![no_main]

use std::fmt::Debug;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use model::config::{self, AgentPolicy, BreakerFile, ConfigFile, McpConfig, RetryFile, RoutePolicies, Validate};
use model::retry::RetryDecision;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(mcp) = check::<McpConfig>("mcp.json", text) {
        let redacted = mcp.redacted();
        for (name, toolset) in &mcp.toolsets {
            let _ = toolset.transport();
            let _ = toolset.timeout_ms_for(name);
        }
        assert_eq!(redacted.toolsets.len(), mcp.toolsets.len());
    }
    if let Some(retry) = check::<RetryFile>("retry_policy.json", text) {
        let rules = retry.compile();
        for key in keys(retry.policies.keys()) {
            let policy = rules.resolve(&key);
            let _ = rules.explain(&key);
            for attempt in [0, 1, 2, 7, 64, u32::MAX] {
                for random in [0.0, 0.5, 1.0, f64::NAN] {
                    assert!(policy.delay(attempt, random) <= policy.max_delay, "{key}: a delay above its cap");
                    for kind in model::ErrorKind::ALL {
                        let elapsed = Duration::from_millis(1500);
                        if let RetryDecision::RetryAfter(delay) = policy.decide(kind, attempt, elapsed, random)
                            && let Some(deadline) = policy.deadline
                        {
                            assert!(elapsed + delay <= deadline, "{key}: a retry past the deadline");
                        }
                    }
                }
            }
        }
    }
    if let Some(breaker) = check::<BreakerFile>("circuit_breaker.json", text) {
        let rules = breaker.compile();
        for key in keys(breaker.breakers.keys()) {
            let resolved = rules.resolve(&key);
            let _ = rules.explain(&key);
            let mut circuit = model::breaker::CircuitBreaker::new(resolved);
            for now in 0..8u64 {
                let (permit, _) = circuit.try_acquire(now * 10_000);
                if let Ok(permit) = permit {
                    let outcome = if now % 3 == 0 {
                        model::breaker::Outcome::Success
                    } else {
                        model::breaker::Outcome::Failure(model::ErrorKind::Timeout)
                    };
                    circuit.record(now * 10_000 + 1, permit, outcome);
                }
                let (calls, failures) = circuit.window();
                assert!(failures <= calls, "{key}: more failures than calls in the window");
            }
        }
    }
    if let Some(routes) = check::<RoutePolicies>("route_policies.json", text) {
        for rule in &routes.routes {
            for method in ["GET", "POST", &rule.method] {
                let _ = routes.decide(method, &rule.path);
                let _ = routes.decide(method, "/api/goals/0195/cancel");
            }
            let _ = routes.methods_for(&rule.path);
        }
    }
    if let Some(agent) = check::<AgentPolicy>("agent_policy.json", text) {
        for pattern in agent.approval.iter().chain(&agent.deny) {
            let _ = agent.needs_approval(pattern);
            let _ = agent.denies(pattern);
            let _ = config::agent::tool_matches(pattern, "browser.browser_navigate");
        }
    }
    for file in ConfigFile::ALL {
        let _ = file.check(file.file_name(), text);
    }
});

/// Parses `text` as `T`: errors must name the file and say something; a value must survive being
/// written back.
fn check<T>(label: &str, text: &str) -> Option<T>
where
    T: DeserializeOwned + Serialize + Validate + PartialEq + Debug,
{
    match config::parse::<T>(label, text) {
        Ok(value) => {
            let written = serde_json::to_string_pretty(&value).expect("a parsed config serialises");
            let again = config::parse::<T>(label, &written)
                .unwrap_or_else(|errors| panic!("{label} written back does not parse: {errors:?}\n{written}"));
            assert_eq!(again, value, "{label} changed when written back and parsed again:\n{written}");
            Some(value)
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "{label}: rejected without an error");
            for error in &errors {
                assert_eq!(error.file, label);
                assert!(!error.problem.is_empty(), "{label}: an error without a problem: {error:?}");
                let _ = error.to_string();
            }
            None
        }
    }
}

/// The keys a policy file names, and a few it does not.
fn keys<'a>(named: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut keys: Vec<String> = named.map(|key| key.replace('*', "x")).take(16).collect();
    keys.extend(["mcp.call.browser.browser_navigate", "llm.call.local", "default", ""].map(str::to_owned));
    keys
}
