//! Decision records: every plan, selection, evaluation, replan, approval and answer of a goal as
//! `artifacts/decisions/<trace_id>/<n>.json`, with its inputs, the context ids it saw, the model
//! calls it made (model, prompt hash, answer, tokens) and its output.
//!
//! Invariant: a record is written whole (temporary file, then rename) before the state that
//! follows from it is saved; a resumed run rewrites the same `n`, never leaves a gap.

use std::path::{Path, PathBuf};

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

/// Where a trace's decisions live.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    root: PathBuf,
}

impl DecisionLog {
    /// Records under `data_dir/artifacts/decisions/`.
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("artifacts").join("decisions") }
    }

    /// A log that writes nothing (replays).
    pub fn discard() -> Self {
        Self { root: PathBuf::new() }
    }

    fn dir(&self, trace_id: &str) -> Result<PathBuf, Error> {
        if !model::trace::is_valid_trace_id(trace_id) {
            return Err(Error::Invalid(format!("trace id {trace_id:?}: must be 32 lower-case hex digits")));
        }
        Ok(self.root.join(trace_id))
    }

    /// The directory of `trace_id`'s records, relative to the data dir.
    pub fn relative(trace_id: &str) -> String {
        format!("artifacts/decisions/{trace_id}")
    }

    /// Writes `decision` whole; returns its path.
    pub async fn write(&self, decision: &Decision) -> Result<Option<PathBuf>, Error> {
        if self.root.as_os_str().is_empty() {
            return Ok(None);
        }
        let dir = self.dir(&decision.trace_id)?;
        let text = serde_json::to_string_pretty(decision).map_err(|e| Error::Decisions(e.to_string()))?;
        let path = dir.join(format!("{}.json", decision.n));
        let temporary = dir.join(format!(".{}.json.tmp", decision.n));
        let write = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&temporary, text.as_bytes()).await?;
            tokio::fs::rename(&temporary, &path).await
        };
        write.await.map_err(|e| Error::Decisions(format!("writing {}: {e}", path.display())))?;
        Ok(Some(path))
    }

    /// Every record of `trace_id`, in order (empty when there are none).
    pub fn read(&self, trace_id: &str) -> Result<Vec<Decision>, Error> {
        let dir = self.dir(trace_id)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::Decisions(format!("reading {}: {err}", dir.display()))),
        };
        let mut decisions = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else { continue };
            if stem.parse::<u32>().is_err() {
                continue;
            }
            if decisions.len() >= MAX_DECISIONS {
                return Err(Error::Decisions(format!("more than {MAX_DECISIONS} records in {}", dir.display())));
            }
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| Error::Decisions(format!("reading {}: {e}", entry.path().display())))?;
            let decision: Decision = serde_json::from_str(&text)
                .map_err(|e| Error::Decisions(format!("{} is not a decision record: {e}", entry.path().display())))?;
            decisions.push(decision);
        }
        decisions.sort_by_key(|d| d.n);
        Ok(decisions)
    }
}
