//! Decision records: every plan, selection, evaluation, replan, approval and answer of a goal as
//! `artifacts/decisions/<trace_id>/<n>.json`, with its inputs, the context ids it saw, the model
//! calls it made (model, prompt hash, answer, tokens) and its output.
//!
//! Invariant: a record is written whole (one artifact write: a renamed temporary file on disk, one
//! PUT on object storage) before the state that
//! follows from it is saved; a resumed run rewrites the same `n`, never leaves a gap.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Most records read back for one trace.
pub const MAX_DECISIONS: usize = 10_000;

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The tools on offer (registry snapshot).
    Registry,
    /// Retrieval and the first plan.
    Plan,
    /// A tool and its arguments for a step.
    Select,
    /// An operator's approval asked for or answered.
    Approval,
    /// A step's result judged.
    Evaluate,
    /// A new plan after a failure.
    Replan,
    /// The final answer.
    Answer,
    /// The goal ended without success (budget, rejection, no plan).
    Finish,
}

impl DecisionKind {
    /// The spelling in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Plan => "plan",
            Self::Select => "select",
            Self::Approval => "approval",
            Self::Evaluate => "evaluate",
            Self::Replan => "replan",
            Self::Answer => "answer",
            Self::Finish => "finish",
        }
    }
}

/// One model call made for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// SHA-256 of the prompt, schema and tools.
    pub prompt_hash: String,
    /// The model's answer, as generated.
    pub content: String,
    /// Prompt size.
    pub prompt_tokens: u64,
    /// Answer size.
    pub completion_tokens: u64,
    /// Wall time.
    pub latency_ms: f64,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Position in the goal's story, from 1.
    pub n: u32,
    /// What was decided.
    pub kind: DecisionKind,
    /// The goal's trace.
    pub trace_id: String,
    /// The goal.
    pub goal_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The plan it belongs to.
    #[serde(default)]
    pub plan_revision: Option<u32>,
    /// The step it is about.
    #[serde(default)]
    pub step: Option<String>,
    /// What it was decided from.
    pub inputs: Value,
    /// Retrieved chunks it saw.
    #[serde(default)]
    pub context_ids: Vec<i64>,
    /// Model calls, in order.
    #[serde(default)]
    pub llm: Vec<LlmCall>,
    /// What was decided.
    pub output: Value,
    /// Why, in a sentence.
    pub why: String,
}

impl Decision {
    /// The parts a replay must reproduce: kind, plan, step and output.
    pub fn essence(&self) -> (DecisionKind, Option<u32>, Option<&str>, &Value) {
        (self.kind, self.plan_revision, self.step.as_deref(), &self.output)
    }
}

/// Where a trace's decisions live: the artifact store (on disk or shared object storage).
#[derive(Debug, Clone)]
pub struct DecisionLog {
    artifacts: Option<artifacts::Artifacts>,
}

impl DecisionLog {
    /// Records under `artifacts/decisions/` of `artifacts`.
    pub fn new(artifacts: artifacts::Artifacts) -> Self {
        Self { artifacts: Some(artifacts) }
    }

    /// A log that writes nothing (replays).
    pub fn discard() -> Self {
        Self { artifacts: None }
    }

    fn dir(trace_id: &str) -> Result<String, Error> {
        if !model::trace::is_valid_trace_id(trace_id) {
            return Err(Error::Invalid(format!("trace id {trace_id:?}: must be 32 lower-case hex digits")));
        }
        Ok(Self::relative(trace_id))
    }

    /// The directory of `trace_id`'s records, in the artifact layout.
    pub fn relative(trace_id: &str) -> String {
        format!("artifacts/decisions/{trace_id}")
    }

    /// Writes `decision` whole (one file, never seen half-written); returns its artifact path.
    pub async fn write(&self, decision: &Decision) -> Result<Option<String>, Error> {
        let Some(artifacts) = &self.artifacts else { return Ok(None) };
        let path = format!("{}/{}.json", Self::dir(&decision.trace_id)?, decision.n);
        let text = serde_json::to_vec_pretty(decision).map_err(|e| Error::Decisions(e.to_string()))?;
        artifacts.put(&path, text).await.map_err(|e| Error::Decisions(e.to_string()))?;
        Ok(Some(path))
    }

    /// Every record of `trace_id`, in order (empty when there are none).
    pub async fn read(&self, trace_id: &str) -> Result<Vec<Decision>, Error> {
        use futures_util::{StreamExt, TryStreamExt};
        let dir = Self::dir(trace_id)?;
        let Some(artifacts) = &self.artifacts else { return Ok(Vec::new()) };
        let files = artifacts.walk(&dir, MAX_DECISIONS + 1).await.map_err(|e| Error::Decisions(e.to_string()))?;
        let records: Vec<String> = files
            .into_iter()
            .filter(|file| {
                file.path
                    .rsplit('/')
                    .next()
                    .and_then(|name| name.strip_suffix(".json"))
                    .is_some_and(|stem| stem.parse::<u32>().is_ok())
            })
            .map(|file| file.path)
            .collect();
        if records.len() > MAX_DECISIONS {
            return Err(Error::Decisions(format!("more than {MAX_DECISIONS} records in {dir}")));
        }
        let mut decisions: Vec<Decision> = futures_util::stream::iter(records)
            .map(|path| async move {
                let bytes =
                    artifacts.get(&path, MAX_RECORD_BYTES).await.map_err(|e| Error::Decisions(e.to_string()))?;
                serde_json::from_slice::<Decision>(&bytes)
                    .map_err(|e| Error::Decisions(format!("{path} is not a decision record: {e}")))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        decisions.sort_by_key(|d| d.n);
        Ok(decisions)
    }
}

/// Largest decision record read back.
const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;
