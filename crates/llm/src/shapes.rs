//! The three answer shapes the orchestrator asks models for — a tool choice, a step plan and a
//! verdict — as JSON Schemas (every free string bounded by `maxLength`, so a small model under a
//! grammar always finishes) and as Rust types, with the rule-based checks a schema cannot say.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ChatRequest, JsonSchemaFormat, Message};

/// Most steps in a plan.
pub const MAX_PLAN_STEPS: usize = 6;
/// Most dependencies of one step.
pub const MAX_DEPENDENCIES: usize = 3;
/// Longest free text in an answer.
pub const MAX_TEXT: usize = 200;
/// Longest description or criteria of a plan step.
pub const MAX_STEP_TEXT: usize = 120;
/// The ids a plan's steps may have: `s1` to `s6`, in order (a small model copes far better with a
/// short fixed list than with free strings).
pub const STEP_IDS: [&str; MAX_PLAN_STEPS] = ["s1", "s2", "s3", "s4", "s5", "s6"];

/// A choice of one tool among `names` (offer only the few most likely: a small model picks
/// better among three than among thirty).
pub fn tool_choice_format(names: &[&str]) -> JsonSchemaFormat {
    JsonSchemaFormat {
        name: "tool_choice".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "tool": {"type": "string", "enum": names},
                "reason": {"type": "string", "maxLength": MAX_TEXT}
            },
            "required": ["tool", "reason"],
            "additionalProperties": false
        }),
    }
}

/// A plan of 1 to [`MAX_PLAN_STEPS`] steps with success criteria and dependencies. Ids come from
/// [`STEP_IDS`]; the whole answer is bounded (about 600 tokens at most), so a model that starts to
/// repeat itself still finishes.
pub fn plan_format() -> JsonSchemaFormat {
    JsonSchemaFormat {
        name: "plan".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_PLAN_STEPS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "enum": STEP_IDS},
                            "description": {"type": "string", "minLength": 1, "maxLength": MAX_STEP_TEXT},
                            "success_criteria": {"type": "string", "minLength": 1, "maxLength": MAX_STEP_TEXT},
                            "depends_on": {"type": "array", "maxItems": MAX_DEPENDENCIES, "items": {"type": "string", "enum": STEP_IDS}}
                        },
                        "required": ["id", "description", "success_criteria", "depends_on"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["steps"],
            "additionalProperties": false
        }),
    }
}

/// A verdict on a result: did it meet the criteria, and why.
pub fn verdict_format() -> JsonSchemaFormat {
    JsonSchemaFormat {
        name: "verdict".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "reason": {"type": "string", "maxLength": MAX_TEXT}
            },
            "required": ["ok", "reason"],
            "additionalProperties": false
        }),
    }
}

/// The request for choosing a tool for `step` among `tools` (name, description).
pub fn tool_choice_request(tools: &[(&str, &str)], step: &str) -> (ChatRequest, JsonSchemaFormat) {
    let catalogue: String = tools.iter().map(|(name, what)| format!("- {name}: {what}\n")).collect();
    let names: Vec<&str> = tools.iter().map(|(name, _)| *name).collect();
    let mut request = ChatRequest::new(vec![
        Message::system(format!("Pick the one tool that does the step. Tools:\n{catalogue}")),
        Message::user(format!("Step: {step}")),
    ]);
    request.max_tokens = 200;
    (request, tool_choice_format(&names))
}

/// The request for planning `goal`, with retrieved `context` (may be empty).
pub fn plan_request(goal: &str, context: &str) -> (ChatRequest, JsonSchemaFormat) {
    let mut user = format!("Goal: {goal}");
    if !context.is_empty() {
        user = format!("Context:\n{context}\n\n{user}");
    }
    let mut request = ChatRequest::new(vec![
        Message::system(
            "Break the goal into a few short steps (at most six). Number them s1, s2, s3 in order. Each step has a description, success criteria, and the ids of earlier steps it depends on.",
        ),
        Message::user(user),
    ]);
    request.max_tokens = 900;
    (request, plan_format())
}

/// The request for judging `result` against `criteria`.
pub fn verdict_request(criteria: &str, result: &str) -> (ChatRequest, JsonSchemaFormat) {
    let mut request = ChatRequest::new(vec![
        Message::system("Judge whether the result meets the success criteria."),
        Message::user(format!("Criteria: {criteria}\nResult: {result}")),
    ]);
    request.max_tokens = 200;
    (request, verdict_format())
}

/// Sample inputs for the three shapes (ten each): used by the tests and by `cogo llm bench`.
pub mod samples {
    /// Tools to choose among.
    pub const TOOLS: [(&str, &str); 4] = [
        ("browser_navigate", "Open a URL in the web browser."),
        ("browser_take_screenshot", "Take a screenshot of the current browser page."),
        ("get_figma_file", "Read a Figma design file by its key."),
        ("search_knowledge", "Search the indexed documents for a question."),
    ];
    /// Steps to choose a tool for.
    pub const STEPS: [&str; 10] = [
        "Open the page http://localhost:8080/index.html",
        "Capture an image of what the browser shows",
        "Read the design file with key abc123",
        "Find what the docs say about retries",
        "Go to https://example.com",
        "Take a picture of the page",
        "Look up the Figma file for the login screen",
        "Search the documentation for the dead-letter queue",
        "Navigate the browser to the dashboard",
        "Find documents that mention circuit breakers",
    ];
    /// Goals to plan.
    pub const GOALS: [&str; 10] = [
        "Open the local test page and report its title",
        "Take a screenshot of example.com",
        "Summarise what the docs say about the message bus",
        "Check whether the figma toolset is reachable",
        "Find the dead-letter queue's size and requeue old messages",
        "Index the docs folder and search it for retries",
        "Compare the titles of two web pages",
        "Write a Python function that adds two numbers",
        "List the tools of the browser toolset",
        "Explain the circuit breaker settings",
    ];
    /// (criteria, result) pairs to judge.
    pub const VERDICTS: [(&str, &str); 10] = [
        ("the page title is reported", "The page title is 'COGO test page'."),
        ("the page title is reported", "error: connection refused"),
        ("a screenshot file exists", "saved screenshot.png (34 KB)"),
        ("the search returns documents", "0 results"),
        ("the tool list is not empty", "tools: browser_navigate, browser_click"),
        ("the figma file is read", "figma: transport error, toolset offline"),
        ("the function adds two numbers", "def add(a, b): return a + b"),
        ("the queue is drained", "depth 0, oldest age 0 s"),
        ("the index holds the docs", "indexed 12 documents, 140 chunks"),
        ("the answer cites a source", "Retries back off exponentially [docs/retry.md]."),
    ];
}

/// A tool choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolChoice {
    /// The tool picked.
    pub tool: String,
    /// Why.
    pub reason: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The step's id, unique in the plan.
    pub id: String,
    /// What to do.
    pub description: String,
    /// How to tell it worked.
    pub success_criteria: String,
    /// Steps that must finish first.
    pub depends_on: Vec<String>,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Its steps.
    pub steps: Vec<PlanStep>,
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the result meets the criteria.
    pub ok: bool,
    /// Why.
    pub reason: String,
}

impl Plan {
    /// Parses a schema-valid value.
    pub fn from_value(value: Value) -> Result<Self, String> {
        serde_json::from_value(value).map_err(|err| format!("not a plan: {err}"))
    }

    /// What the schema cannot check: unique ids, dependencies on steps that exist, no cycles.
    /// Returns the steps in an order that runs every dependency first.
    pub fn check(&self) -> Result<Vec<&PlanStep>, String> {
        let mut ids = HashSet::new();
        for step in &self.steps {
            if !ids.insert(step.id.as_str()) {
                return Err(format!("step id {:?} is used twice", step.id));
            }
        }
        for step in &self.steps {
            for dep in &step.depends_on {
                if !ids.contains(dep.as_str()) {
                    return Err(format!("step {:?} depends on {:?}, which is not in the plan", step.id, dep));
                }
                if dep == &step.id {
                    return Err(format!("step {:?} depends on itself", step.id));
                }
            }
        }
        // Kahn's algorithm, keeping the plan's order among ready steps
        let mut remaining: HashMap<&str, usize> =
            self.steps.iter().map(|s| (s.id.as_str(), s.depends_on.iter().collect::<HashSet<_>>().len())).collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while order.len() < self.steps.len() {
            let Some(next) = self.steps.iter().find(|s| remaining.get(s.id.as_str()) == Some(&0)) else {
                return Err("the steps' dependencies form a cycle".into());
            };
            remaining.remove(next.id.as_str());
            for step in &self.steps {
                if step.depends_on.iter().any(|d| d == &next.id)
                    && let Some(count) = remaining.get_mut(step.id.as_str())
                {
                    *count = count.saturating_sub(1);
                }
            }
            order.push(next);
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, deps: &[&str]) -> PlanStep {
        PlanStep {
            id: id.into(),
            description: "d".into(),
            success_criteria: "c".into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn plan_check_orders_and_rejects() {
        let plan = Plan { steps: vec![step("b", &["a"]), step("a", &[]), step("c", &["a", "b"])] };
        let order: Vec<&str> = plan.check().expect("no error").iter().map(|s| s.id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        let cycle = Plan { steps: vec![step("a", &["b"]), step("b", &["a"])] };
        assert!(cycle.check().expect_err("an error").contains("cycle"));
        let missing = Plan { steps: vec![step("a", &["z"])] };
        assert!(missing.check().expect_err("an error").contains("\"z\""));
        let twice = Plan { steps: vec![step("a", &[]), step("a", &[])] };
        assert!(twice.check().expect_err("an error").contains("twice"));
        let own = Plan { steps: vec![step("a", &["a"])] };
        assert!(own.check().expect_err("an error").contains("itself"));
    }

    #[test]
    fn the_schemas_are_valid_and_bound_every_string() {
        for format in [tool_choice_format(&["a", "b"]), plan_format(), verdict_format()] {
            assert!(jsonschema::validator_for(&format.schema).is_ok(), "{}", format.name);
            let text = format.schema.to_string();
            assert_eq!(
                text.matches("\"type\":\"string\"").count(),
                text.matches("maxLength").count() + text.matches("\"enum\"").count(),
                "{}: every free string has a maxLength",
                format.name
            );
        }
    }
}
