//! The LLM layer's metrics: one sample per provider attempt.

use std::time::Duration;

use model::metrics as names;

use crate::Usage;

/// An attempt against `provider`/`model` ended with `outcome` (`ok`, an error kind, or
/// `invalid_output`) after `elapsed`, having used `usage`.
pub(crate) fn call(provider: &str, model: &str, outcome: &str, elapsed: Duration, usage: Usage) {
    let (provider, model) = (provider.to_owned(), model.to_owned());
    metrics::counter!(names::LLM_CALLS_TOTAL, "provider" => provider.clone(), "model" => model.clone(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!(names::LLM_LATENCY_MS, "provider" => provider.clone(), "model" => model.clone())
        .record(elapsed.as_secs_f64() * 1000.0);
    if usage.prompt_tokens > 0 {
        metrics::counter!(names::LLM_TOKENS_TOTAL, "provider" => provider.clone(), "model" => model.clone(), "direction" => "in")
            .increment(usage.prompt_tokens);
    }
    if usage.completion_tokens > 0 {
        metrics::counter!(names::LLM_TOKENS_TOTAL, "provider" => provider, "model" => model, "direction" => "out")
            .increment(usage.completion_tokens);
    }
}

/// An answer failed schema validation (counted as `outcome="invalid_output"`, on top of the
/// attempt's own `ok`).
pub(crate) fn invalid_output(provider: &str, model: &str) {
    metrics::counter!(names::LLM_CALLS_TOTAL, "provider" => provider.to_owned(), "model" => model.to_owned(), "outcome" => "invalid_output")
        .increment(1);
}
