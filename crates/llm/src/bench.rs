//! `cogo llm bench`: prompt and generation speed, time to first token and the JSON-validity rate
//! under constraints, measured the same way for every provider (non-streamed calls for token
//! rates, a streamed call for the first token), so a local model and an OpenAI-compatible server
//! running the same file can be compared side by side.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::shapes::{self, samples};
use crate::{ChatRequest, Error, LlmClient, Message};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Repetitions of each timing (the median is reported).
    pub runs: usize,
    /// Prompts per answer shape for the validity rate (at most 10).
    pub samples: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { runs: 3, samples: 10 }
    }
}

/// Validity of one answer shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShapeResult {
    /// Answers that matched the schema (after at most one repair).
    pub valid: usize,
    /// Valid at the first try.
    pub first_try: usize,
    /// Prompts asked.
    pub total: usize,
}

/// The figures of one provider and model.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Prompt tokens read per second (a ~500-token prompt).
    pub prompt_tokens_per_s: f64,
    /// Tokens generated per second, free text.
    pub generation_tokens_per_s: f64,
    /// Tokens generated per second under a JSON-schema constraint.
    pub constrained_tokens_per_s: f64,
    /// Median time to the first streamed token of a short prompt, in milliseconds.
    pub time_to_first_token_ms: f64,
    /// Answers matching their schema / answers asked, over the three shapes.
    pub json_valid_rate: f64,
    /// Per shape: `tool_choice`, `plan`, `verdict`.
    pub shapes: BTreeMap<String, ShapeResult>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Every timed prompt starts differently, so no provider can answer it from a cache of the last one.
fn long_prompt(run: usize) -> String {
    let mut text = format!("Request {run}. Summarise these notes in one sentence.\n");
    let notes = samples::GOALS.iter().chain(samples::STEPS.iter());
    for (i, note) in notes.cycle().take(60).enumerate() {
        text.push_str(&format!("{i}. {note}.\n"));
    }
    text
}

/// Runs the benchmark against `client`; `progress` hears what is running.
pub async fn run(client: &dyn LlmClient, options: BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchReport, Error> {
    let runs = options.runs.max(1);
    let short = |run: usize| {
        ChatRequest::new(vec![Message::user(format!(
            "Request {run}. Write a short story about a robot who learns to paint."
        ))])
    };

    progress("prompt processing");
    let mut prompt_rates = Vec::new();
    for run in 0..runs {
        let mut request = ChatRequest::new(vec![Message::user(long_prompt(run))]);
        request.max_tokens = 1;
        let response = client.chat(request).await?;
        prompt_rates.push(response.usage.prompt_tokens as f64 / (response.latency_ms / 1000.0));
    }

    progress("time to first token");
    let mut first_tokens = Vec::new();
    let mut prefill = Vec::new();
    for run in 0..runs {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut request = short(100 + run);
        request.max_tokens = 8;
        let response = client.chat_stream(request, tx).await?;
        let _ = drain.await;
        first_tokens.push(response.first_token_ms.unwrap_or(response.latency_ms));
        let mut request = short(200 + run);
        request.max_tokens = 1;
        prefill.push(client.chat(request).await?.latency_ms);
    }
    let prefill_ms = median(prefill);

    progress("generation");
    let mut generation_rates = Vec::new();
    for run in 0..runs {
        let mut request = short(300 + run);
        request.max_tokens = 128;
        let response = client.chat(request).await?;
        let generated = response.usage.completion_tokens.saturating_sub(1) as f64;
        let ms = (response.latency_ms - prefill_ms).max(1.0);
        generation_rates.push(generated / (ms / 1000.0));
    }

    let mut shapes_out: BTreeMap<String, ShapeResult> = BTreeMap::new();
    let mut constrained_tokens = 0u64;
    let mut constrained_ms = 0.0;
    let count = options.samples.clamp(1, 10);
    let mut cases: Vec<(&str, ChatRequest, crate::JsonSchemaFormat)> = Vec::new();
    for step in samples::STEPS.iter().take(count) {
        let (request, format) = shapes::tool_choice_request(&samples::TOOLS, step);
        cases.push(("tool_choice", request, format));
    }
    for goal in samples::GOALS.iter().take(count) {
        let (request, format) = shapes::plan_request(goal, "");
        cases.push(("plan", request, format));
    }
    for (criteria, result) in samples::VERDICTS.iter().take(count) {
        let (request, format) = shapes::verdict_request(criteria, result);
        cases.push(("verdict", request, format));
    }
    let total = cases.len();
    for (i, (shape, request, format)) in cases.into_iter().enumerate() {
        progress(&format!("structured output {}/{total} ({shape})", i + 1));
        let entry = shapes_out.entry(shape.to_owned()).or_default();
        entry.total += 1;
        match crate::structured(client, request, format).await {
            Ok(answer) => {
                entry.valid += 1;
                if answer.attempts == 1 {
                    entry.first_try += 1;
                }
                constrained_tokens += answer.response.usage.completion_tokens;
                constrained_ms += (answer.response.latency_ms - prefill_ms).max(1.0);
            }
            Err(Error::InvalidOutput { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    let valid: usize = shapes_out.values().map(|s| s.valid).sum();
    Ok(BenchReport {
        provider: client.provider().to_owned(),
        model: client.model().to_owned(),
        prompt_tokens_per_s: median(prompt_rates),
        generation_tokens_per_s: median(generation_rates),
        constrained_tokens_per_s: if constrained_ms > 0.0 {
            constrained_tokens as f64 / (constrained_ms / 1000.0)
        } else {
            0.0
        },
        time_to_first_token_ms: median(first_tokens),
        json_valid_rate: valid as f64 / total.max(1) as f64,
        shapes: shapes_out,
    })
}
